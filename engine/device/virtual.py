"""The virtual board: firmware/host built from the same C core, serving PROTOCOL.md on a pty.

`--port virtual` anywhere in the CLI starts one of these for the length of the command; `tinylm board`
starts one and keeps it running. The build is `make -C firmware host` (output in firmware/build/,
rebuilt only when a source changed).

The firmware watches a pipe from this process (`--parent-fd`): when we end, even by SIGKILL, it ends
too instead of serving its pty to nobody. `link=PATH` keeps a symlink to the pty at PATH — a stable
name like /dev/serial/by-id/..., so a session re-opens a restarted board behind the same name.
"""

from __future__ import annotations

import os
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
                 board: str = "host", ram: int | None = None, extra: list[str] | None = None,
                 flood: int = 0, flood_rate: int = 0, chaos: int = 0, link: Path | None = None
                 ) -> None:
        super().__init__()
        self.link = Path(link) if link is not None else None
        self._parent_w = -1
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
        if flood:  # numbered `seq:N val:V` lines after each boot (firmware/README.md "Flood")
            self.args += ["--flood", str(flood), "--flood-rate", str(flood_rate)]
        if chaos:  # garbage, broken protocol lines and a boot banner every `chaos` tokens
            self.args += ["--chaos", str(chaos)]
        self.args += extra or []

    def start(self, timeout: float = 10.0) -> "VirtualBoard":
        binary = build_virtual_board()
        parent_r, self._parent_w = os.pipe()  # both ends close-on-exec: only the board gets one
        try:
            self.proc = subprocess.Popen([str(binary), *self.args, "--parent-fd", str(parent_r)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, text=True, pass_fds=(parent_r,))
        finally:
            os.close(parent_r)
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
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.port, tmp)
            os.replace(tmp, self.link)
        return self

    def stop(self) -> None:
        super().stop()
        if self._parent_w >= 0:
            os.close(self._parent_w)
            self._parent_w = -1
        if self.link is not None and self.port and self.link.is_symlink() and \
                os.readlink(self.link) == self.port:
            self.link.unlink(missing_ok=True)
