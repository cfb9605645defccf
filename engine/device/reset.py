"""Board resets through DTR/RTS, exactly as esptool drives them (its sequences live in
esp_pylib.serial_reset, shared by esptool and esp-idf-monitor).

On an ESP32 dev board DTR drives IO0 (BOOT) and RTS drives EN (reset), both active low through the
auto-program transistors: asserting a line (pyserial `True`) pulls its pin LOW.
- into the app: EN pulsed low while IO0 stays high (DTR deasserted) — esptool's HardReset;
- into the ROM bootloader: EN released while IO0 is held low — esptool's ClassicReset, or the
  USB-Serial/JTAG sequence on chips that talk through their own USB peripheral (303a:1001).
Where there are no modem lines (a pty, socket://) the session sends `@RESET` instead.
"""

from __future__ import annotations

from typing import Any


def reset_into_app(ser: Any, usb_jtag: bool = False) -> None:
    """Restart the chip into its app. USB-Serial/JTAG chips drop off the bus while EN is low, so
    esptool holds it longer and waits for them to re-enumerate (the session then reopens the port)."""
    from esp_pylib.serial_reset import PIN_HIGH, hard_reset, set_dtr

    set_dtr(ser, PIN_HIGH)  # IO0 high: boot the app, not the ROM loader
    if usb_jtag:
        hard_reset(ser, hold_delay=0.2, post_release_delay=0.2)
    else:
        hard_reset(ser, hold_delay=0.1, post_release_delay=0.0)


def reset_into_bootloader(ser: Any, usb_jtag: bool = False) -> None:
    """Restart the chip into the ROM serial bootloader (download mode)."""
    from esp_pylib.serial_reset import (
        DEFAULT_RESET_DELAY,
        classic_bootloader_reset,
        usb_jtag_bootloader_reset,
    )

    if usb_jtag:
        usb_jtag_bootloader_reset(ser)
    else:
        classic_bootloader_reset(ser, enter_boot_delay=0.1, reset_delay=DEFAULT_RESET_DELAY)
