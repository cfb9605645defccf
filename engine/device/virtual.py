"""The virtual board: firmware/host built from the same C core, serving PROTOCOL.md on a pty.

`--port virtual` anywhere in the CLI starts one of these for the length of the command; `tinylm board`
starts one and keeps it running. The build is `make -C firmware host` (output in firmware/build/,
rebuilt only when a source changed).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from engine.errors import Failure, UserError

from .boardproc import FIRMWARE, BoardProcess, make_firmware

BOARD_BIN = FIRMWARE / "build" / "host" / "tinylm-board"


def build_virtual_board() -> Path:
    """Build (or confirm up to date) the host firmware; returns the binary."""
    return make_firmware("host", BOARD_BIN)


class VirtualBoard(BoardProcess):
    """`with VirtualBoard(blob) as vb: DeviceLink(vb.port)...` — a running host firmware."""

    def __init__(self, blob: Path | None = None, flash_image: Path | None = None,
                 offset: int = 0x110000, us_per_token: int = 0, boot_banner: bool = False,
                 board: str = "host", ram: int | None = None, extra: list[str] | None = None
                 ) -> None:
        super().__init__()
        if (blob is None) == (flash_image is None):
            raise UserError("give the virtual board a blob or a flash image (exactly one)")
        self.args = (["--blob", str(blob)] if blob is not None else
                     ["--flash-image", str(flash_image), "--offset", hex(offset)])
        if us_per_token:
            self.args += ["--us-per-token", str(us_per_token)]
        if boot_banner:
            self.args.append("--boot-banner")
        self.args += ["--board", board]
        if ram is not None:
            self.args += ["--ram", str(ram)]
        self.args += extra or []

    def start(self, timeout: float = 10.0) -> "VirtualBoard":
        binary = build_virtual_board()
        self.proc = subprocess.Popen([str(binary), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        line = first[0].strip() if first else ""
        if not line.startswith("PTY "):
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise Failure(f"the virtual board did not start ({line or 'no output'}): {err.strip()}")
        self.port = line.split(" ", 1)[1]
        return self
