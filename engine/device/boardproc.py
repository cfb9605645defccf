"""What the virtual board (host build on a pty) and the emulated board (rv32 under qemu) share: a
firmware build through make, and a child process that is the board, stopped on exit."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from engine.errors import Failure, UserError

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def run_make(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`make -C firmware ARGS`, one at a time per checkout: two processes asking for the same board
    at once (the app and a `tinylm board`, or two test workers) would otherwise run two compilers
    writing the same output file, and one of them could start a half-written binary. The second
    waits on an flock of firmware/build/.make.lock, then finds the build up to date."""
    lock_path = FIRMWARE / "build" / ".make.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(["make", "-C", str(FIRMWARE), *args], capture_output=True, text=True,
                              timeout=timeout)


def make_firmware(target: str, product: Path) -> Path:
    """`make -C firmware <target>` (rebuilds only what changed); returns the built file."""
    try:
        out = run_make(target)
    except FileNotFoundError as e:
        raise UserError(f"building the firmware ({target}) needs `make` and a C compiler "
                        "(apt-get install make gcc)") from e
    if out.returncode != 0:
        raise Failure(f"building the firmware ({target}) failed:\n{out.stderr[-2000:]}")
    return product


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn giving the child SIGTERM when this process dies (even by SIGKILL), for boards
    that cannot watch a pipe (qemu). Linux only, and only from the main thread: the kernel sends
    the signal when the *thread* that forked exits, so a board started from a worker thread would
    die with the worker."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None

    def preexec() -> None:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1

    return preexec


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
