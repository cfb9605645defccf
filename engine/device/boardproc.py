"""What the virtual board (host build on a pty) and the emulated board (rv32 under qemu) share: a
firmware build through make, and a child process that is the board, stopped on exit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.errors import Failure, UserError

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def make_firmware(target: str, product: Path) -> Path:
    """`make -C firmware <target>` (rebuilds only what changed); returns the built file."""
    try:
        out = subprocess.run(["make", "-C", str(FIRMWARE), target], capture_output=True, text=True,
                             timeout=300)
    except FileNotFoundError as e:
        raise UserError(f"building the firmware ({target}) needs `make` and a C compiler "
                        "(apt-get install make gcc)") from e
    if out.returncode != 0:
        raise Failure(f"building the firmware ({target}) failed:\n{out.stderr[-2000:]}")
    return product


class BoardProcess:
    """A board that is a child process; `.port` is what DeviceLink opens."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = ""

    def start(self) -> "BoardProcess":
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "BoardProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
