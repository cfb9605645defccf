"""ADAPTER (h9, thin; replaced at merge by engine/device/ports.py `list_ports()`): the choices of the
Device tab's port picker.

Why here and not in engine/: the engine's port discovery (VID:PID labels, the registry of running
`tinylm board`s) is being written in parallel; this stands in for it with the same three sources the
picker needs today — `serial.tools.list_ports`, the pseudo ports that start a board for the session,
and a port the user types. No Textual import: it swaps out without touching a widget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import UserError

# USB bridges of ESP32 dev boards, by (VID, PID): what a person recognises in a list of /dev/ttyUSBn
USB_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x303A, 0x1001): "ESP32 USB-Serial/JTAG",
    (0x303A, 0x0002): "ESP32-S2/S3 native USB",
}
_SOCKET = re.compile(r"^socket://[A-Za-z0-9.\-_]+:(\d{1,5})$")


@dataclass(frozen=True)
class PortChoice:
    value: str  # what the session opens: a device path, socket://host:port, or a pseudo port name
    label: str  # one line in the picker
    kind: str  # "serial" | "socket" | "virtual" | "rv32" | "download"

    @property
    def pseudo(self) -> bool:
        """A board the session starts itself (and restarts when it dies)."""
        return self.kind in PSEUDO_KINDS


PSEUDO = (
    PortChoice("virtual", "virtual   host firmware on a pty", "virtual"),
    PortChoice("rv32", "rv32      firmware under qemu (instr/token)", "rv32"),
    PortChoice("download", "download  virtual ESP32 in download mode", "download"),
)
PSEUDO_KINDS = {p.kind for p in PSEUDO}


def serial_ports() -> list[PortChoice]:
    """The machine's serial ports, labelled with their USB bridge when it is a known one."""
    from serial.tools import list_ports

    found = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        bridge = USB_BRIDGES.get((p.vid, p.pid)) if p.vid is not None else None
        ids = f" {p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        what = bridge or (p.description if p.description not in ("", "n/a") else "serial port")
        found.append(PortChoice(p.device, f"{p.device}  {what}{ids}", "serial"))
    return found


def list_ports() -> list[PortChoice]:
    """Serial ports first (a plugged-in board is what people look for), then the pseudo ports."""
    return serial_ports() + list(PSEUDO)


def parse_typed(text: str) -> PortChoice:
    """A port the user typed: a pseudo port name, socket://host:port, or a device path."""
    text = text.strip()
    for p in PSEUDO:
        if text == p.value:
            return p
    if text.startswith("socket://"):
        m = _SOCKET.match(text)
        if not m or not 0 < int(m.group(1)) < 65536:
            raise UserError(f"'{text}' is not socket://host:port (e.g. socket://127.0.0.1:4444)")
        return PortChoice(text, text, "socket")
    if text.startswith(("/dev/", "/tmp/", "COM", "/")) and " " not in text:
        return PortChoice(text, text, "serial")
    raise UserError(f"'{text}' is not a port: type a device path (/dev/ttyUSB0), socket://host:port, "
                    "or one of virtual, rv32, download")
