"""Which ports a board can be on: USB serial ports (labelled from their USB VID:PID), the pseudo
ports `virtual` and `rv32` (a board started for one command), and the boards `tinylm board` is
serving in this workspace. `tinylm ports` prints this list; the app's device screen shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .boards import running_boards

# USB VID:PID -> (label, how a reset reaches the chip). "dtr-rts": a USB-UART bridge wired to EN/IO0
# (esptool's classic sequences); "usb-jtag": the chip's own USB-Serial/JTAG peripheral (its own
# sequence, and the port re-enumerates); "none": native USB CDC of an app, no reset lines.
USB_IDS: dict[tuple[int, int], tuple[str, str]] = {
    (0x10C4, 0xEA60): ("CP210x USB-UART (Silicon Labs CP2102/CP2104)", "dtr-rts"),
    (0x10C4, 0xEA70): ("CP2105 dual USB-UART (Silicon Labs)", "dtr-rts"),
    (0x10C4, 0xEA71): ("CP2108 quad USB-UART (Silicon Labs)", "dtr-rts"),
    (0x1A86, 0x7523): ("CH340 USB-UART (WCH)", "dtr-rts"),
    (0x1A86, 0x5523): ("CH341 USB-UART (WCH)", "dtr-rts"),
    (0x1A86, 0x55D4): ("CH9102 USB-UART (WCH)", "dtr-rts"),
    (0x1A86, 0x55D3): ("CH343 USB-UART (WCH)", "dtr-rts"),
    (0x1A86, 0x55D2): ("CH342 dual USB-UART (WCH)", "dtr-rts"),
    (0x0403, 0x6001): ("FT232R USB-UART (FTDI)", "dtr-rts"),
    (0x0403, 0x6010): ("FT2232 dual USB-UART (FTDI; ESP-Prog, ESP-WROVER-KIT)", "dtr-rts"),
    (0x0403, 0x6011): ("FT4232 quad USB-UART (FTDI)", "dtr-rts"),
    (0x0403, 0x6014): ("FT232H USB-UART (FTDI)", "dtr-rts"),
    (0x0403, 0x6015): ("FT231X USB-UART (FTDI)", "dtr-rts"),
    (0x067B, 0x2303): ("PL2303 USB-UART (Prolific)", "dtr-rts"),
    (0x303A, 0x1001): ("Espressif USB-Serial/JTAG (ESP32-C3/C6/H2/S3 built-in USB)", "usb-jtag"),
    (0x303A, 0x0002): ("Espressif ESP32-S2/S3 native USB (ROM download mode)", "dtr-rts"),
    (0x303A, 0x4001): ("Espressif ESP32-S2/S3 native USB CDC (TinyUSB app)", "none"),
}
ESPRESSIF_VID = 0x303A

BOARD_LABELS = {  # a running `tinylm board`, by its registry kind
    "virtual": "virtual board (host firmware)",
    "rv32": "emulated rv32 board (qemu)",
    "download": "virtual ESP32 started in download mode (esptool flashes it)",
}
PSEUDO_PORTS = {
    "virtual": "virtual board: the host firmware on a pty, started for the command",
    "rv32": "emulated board: the rv32 firmware under qemu, started for the command",
}


@dataclass(frozen=True)
class PortInfo:
    device: str  # what --port takes
    kind: str  # "usb", "serial" (no USB id), "pseudo" (virtual / rv32), "board" (tinylm board)
    label: str  # what it is, for people
    vid: int | None = None
    pid: int | None = None
    serial_number: str = ""
    description: str = ""  # what the OS reports (product string)
    reset: str = ""  # "dtr-rts", "usb-jtag", "none" (real ports), "protocol" (@RESET)
    process: int | None = None  # the `tinylm board` serving it
    board: str = ""  # a `tinylm board`'s kind: "virtual", "rv32" or "download" (flashed by esptool)
    experiment: str = ""
    blob_sha: str = ""

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usb_id": self.usb_id}


def usb_label(vid: int | None, pid: int | None, description: str = "") -> tuple[str, str]:
    """(label, reset) for a USB id; unknown Espressif ids and other adapters get generic labels."""
    if vid is None or pid is None:
        return (description or "serial port", "dtr-rts")
    if (vid, pid) in USB_IDS:
        return USB_IDS[(vid, pid)]
    if vid == ESPRESSIF_VID:
        return (f"Espressif USB device {vid:04x}:{pid:04x}", "dtr-rts")
    return (f"USB serial {vid:04x}:{pid:04x}" + (f" ({description})" if description else ""),
            "dtr-rts")


def from_comport(p: Any) -> PortInfo:
    """A PortInfo from pyserial's ListPortInfo."""
    label, reset = usb_label(p.vid, p.pid, p.description if p.description != "n/a" else "")
    return PortInfo(device=p.device, kind="usb" if p.vid is not None else "serial", label=label,
                    vid=p.vid, pid=p.pid, serial_number=p.serial_number or "",
                    description=p.description if p.description != "n/a" else "", reset=reset)


def serial_ports() -> list[PortInfo]:
    """The machine's serial ports (pyserial's comports), sorted by device name."""
    from serial.tools.list_ports import comports

    return sorted((from_comport(p) for p in comports()), key=lambda i: i.device)


def list_ports(workspace_root: Path | None = None) -> list[PortInfo]:
    """USB/serial ports, then running `tinylm board`s of the workspace, then the pseudo ports."""
    ports = serial_ports()
    if workspace_root is not None:
        for b in running_boards(workspace_root):
            what = BOARD_LABELS.get(b.kind, f"{b.kind} board")
            ports.append(PortInfo(device=b.port, kind="board",
                                  label=f"{what} of `tinylm board` pid {b.pid}", reset="protocol",
                                  process=b.pid, experiment=b.experiment, blob_sha=b.blob_sha,
                                  board=b.kind))
    ports += [PortInfo(device=name, kind="pseudo", label=text, reset="protocol")
              for name, text in PSEUDO_PORTS.items()]
    return ports


def describe(port: str) -> PortInfo | None:
    """The serial port named `port` (resolving symlinks such as /dev/serial/by-id/...), or None."""
    import os

    real = os.path.realpath(port) if port.startswith("/") else port
    for info in serial_ports():
        if info.device in (port, real):
            return info
    return None
