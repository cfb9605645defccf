"""device.log: everything the board said (and what the host sent it), one line each with a host
timestamp, capped in size: past `max_bytes` the file becomes device.log.1 (replacing the previous
one) and a new one starts, so a board that prints all day cannot fill the disk.

    1764350000.123456 < I (312) cpu_start: Starting scheduler.
    1764350000.200001 > @GEN id=7 ids=1,403 max=3|9C01
    1764350003.000000 ! port lost: device disconnected
"""

from __future__ import annotations

import contextlib
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
        self.error = ""  # why writing stopped on its own (a full disk): the monitor goes on

    def open(self) -> "DeviceLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")
        self._size = self._fh.tell()
        self.error = ""
        return self

    def write(self, t: float, direction: str, raw: bytes) -> None:
        """One line; `direction` is "<" (board), ">" (host) or "!" (an event of the port)."""
        record = f"{t:.6f} {direction} ".encode() + raw.rstrip(b"\r\n") + b"\n"
        with self._lock:
            if self._fh is None:
                return
            try:
                if self._size + len(record) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._fh.write(record)
                self._size += len(record)
            except OSError as e:
                self._give_up(e)

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.flush()
                except OSError as e:
                    self._give_up(e)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.close()
                except OSError as e:  # the last buffered lines could not be written
                    self.error = f"closing {self.path} failed: {e.strerror or e}"
                self._fh = None

    def _give_up(self, e: OSError) -> None:
        """A full disk (or a vanished folder) stops saving, not the session's reader thread
        that called us: the file is closed and `error` says why."""
        self.error = f"saving to {self.path} stopped: {e.strerror or e}"
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):  # its buffer cannot be written either
                fh.close()

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fh = open(self.path, "ab")
        self._size = 0
