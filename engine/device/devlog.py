"""device.log: everything the board said (and what the host sent it), one line each with a host
timestamp, capped in size: past `max_bytes` the file becomes device.log.1 (replacing the previous
one) and a new one starts, so a board that prints all day cannot fill the disk.

    1764350000.123456 < I (312) cpu_start: Starting scheduler.
    1764350000.200001 > @GEN id=7 ids=1,403 max=3|9C01
    1764350003.000000 ! port lost: device disconnected
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 5 * 1024 * 1024


class DeviceLog:
    """Append-only, size-capped, thread-safe (the session's reader and writers share it)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None
        self._size = 0

    def open(self) -> "DeviceLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")
        self._size = self._fh.tell()
        return self

    def write(self, t: float, direction: str, raw: bytes) -> None:
        """One line; `direction` is "<" (board), ">" (host) or "!" (an event of the port)."""
        record = f"{t:.6f} {direction} ".encode() + raw.rstrip(b"\r\n") + b"\n"
        with self._lock:
            if self._fh is None:
                return
            if self._size + len(record) > self.max_bytes and self._size > 0:
                self._rotate()
            self._fh.write(record)
            self._size += len(record)

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fh = open(self.path, "ab")
        self._size = 0
