"""A per-experiment run lock (pid + host + process start time) so two processes never train the
same experiment. A lock left by a dead process is stale: it is cleared, and the caller is told.

The process start time guards against pid reuse: after a reboot or a long uptime a new, unrelated
process can get the dead trainer's pid.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import LockHeld

LOCK_NAME = "run.lock"
_EMPTY_LOCK_GRACE_S = 10.0  # a lock file with no content yet is being written; older = crashed writer


def hostname() -> str:
    return socket.gethostname()


def process_start_time(pid: int) -> str | None:
    """Kernel start time of `pid` (clock ticks since boot), or None if unknown/not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parens: split after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, start_time: str | None = None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if Path(f"/proc/{pid}/stat").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":  # zombie: finished, waiting for its parent to reap it
            return False
    if start_time is not None:
        now = process_start_time(pid)
        if now is not None and now != start_time:
            return False
    return True


@dataclass
class LockInfo:
    pid: int
    host: str
    started: float
    start_time: str | None = None

    def is_alive(self) -> bool:
        """True when the holder is running; a lock from another host is assumed alive (can't check)."""
        if self.host != hostname():
            return True
        return pid_alive(self.pid, self.start_time)


def read_lock(folder: Path) -> LockInfo | None:
    path = folder / LOCK_NAME
    try:
        raw = path.read_text()
        data = json.loads(raw)
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started"]),
                        data.get("start_time"))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age < _EMPTY_LOCK_GRACE_S:  # being written right now by another process
            return LockInfo(-1, hostname(), time.time(), None)
        return LockInfo(0, hostname(), 0.0, None)  # unreadable and old: a crashed writer


class RunLock:
    """`with RunLock(folder, name): ...` holds the lock; `acquire`/`release` for longer lives."""

    def __init__(self, folder: Path, name: str, on_message: Callable[[str], None] | None = None,
                 pid: int | None = None) -> None:
        self.folder = Path(folder)
        self.name = name
        self.on_message = on_message or (lambda msg: None)
        self.pid = pid or os.getpid()
        self.held = False

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_if_stale()
                continue
            info = {"pid": self.pid, "host": hostname(), "started": time.time(),
                    "start_time": process_start_time(self.pid)}
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(info))
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return
        raise LockHeld(f"could not take the lock of '{self.name}' ({self.path}); another process "
                       "keeps taking it; try again")

    def _clear_if_stale(self) -> None:
        info = read_lock(self.folder)
        if info is None:
            return
        if info.is_alive():
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started))
            raise LockHeld(
                f"experiment '{self.name}' is already being run by pid {info.pid} on {info.host} "
                f"(since {since}); wait for it, or stop it with `tinylm stop {self.name}`"
            )
        self.on_message(f"cleared a stale lock on '{self.name}' left by pid {info.pid} on "
                        f"{info.host}, which is no longer running")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            info = read_lock(self.folder)
            if info is not None and info.pid == self.pid:
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
