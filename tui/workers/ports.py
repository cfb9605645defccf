"""The choices of the Device tab's port picker: the engine's `list_ports()` (USB labels, running
`tinylm board`s of the workspace, the pseudo ports `virtual` and `rv32`) plus the one pseudo port only
the app has — `download`, a virtual ESP32 in ROM download mode to flash through esptool — and a port
the user types.

Why a picker type of its own: the picker needs one line per port and to know what a port is for a
session (a pseudo port is a board the session starts and restarts; a serial port may reset when
opened; what is flashed through esptool); PortInfo says what the port is. No Textual import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.device.ports import PortInfo
from engine.device.ports import list_ports as engine_ports
from engine.errors import UserError

_SOCKET = re.compile(r"^socket://[A-Za-z0-9.\-_]+:(\d{1,5})$")


@dataclass(frozen=True)
class PortChoice:
    value: str  # what the session opens: a device path, socket://host:port, or a pseudo port name
    label: str  # one line in the picker
    kind: str  # "serial" | "socket" | "board" (a running `tinylm board`) | "virtual" | "rv32" | "download"

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


def from_info(info: PortInfo) -> PortChoice:
    """One picker line for a port the engine found (its pseudo ports are the app's PSEUDO)."""
    if info.kind == "board" and info.board == "download":
        # a ROM bootloader: flashed through esptool like a serial port, then it runs the firmware
        return PortChoice(info.device, f"{info.device}  ESP32 in download mode", "serial")
    if info.kind == "board":
        return PortChoice(info.device, f"{info.device}  {info.label}", "board")
    ids = f" {info.usb_id}" if info.usb_id else ""
    kind = "socket" if info.device.startswith("socket://") else "serial"
    return PortChoice(info.device, f"{info.device}  {info.label}{ids}", kind)


def list_ports(workspace_root: Path | None = None) -> list[PortChoice]:
    """Serial ports first (a plugged-in board is what people look for), then the workspace's running
    `tinylm board`s, then the pseudo ports."""
    found = [from_info(p) for p in engine_ports(workspace_root) if p.kind != "pseudo"]
    return found + list(PSEUDO)


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
