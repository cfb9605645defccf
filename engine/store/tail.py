"""Incremental readers for files another process appends to (metrics.jsonl, train.log, device.log).

Why: the app follows a live run and must not re-read a whole file per refresh, and a reader may see
the writer mid-line (or a tail torn by kill -9). Each call returns only what was appended since the
last one, holds back an unfinished last line until its newline arrives, and notices when the file was
replaced (a resume rewrites metrics.jsonl atomically: new inode) or truncated, in which case the
chunk says `reset` and carries the whole new content, so the caller starts its curve again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Chunk:
    """What one read found: complete lines appended since the previous read."""

    lines: list[bytes] = field(default_factory=list)
    reset: bool = False  # the file was replaced or shrank: forget what was read before


class AppendReader:
    """Reads a file from a byte offset; `read()` returns the complete lines added since last time.

    `start_tail` limits the first read to the last N bytes (a log's tail, not its whole history);
    the first line of such a read is dropped as it is probably cut.
    """

    def __init__(self, path: str | Path, start_tail: int | None = None,
                 max_read: int = 8 << 20) -> None:
        self.path = Path(path)
        self.offset = 0
        self.max_read = max_read
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._start_tail = start_tail

    def read(self) -> Chunk:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._identity is None:
                return Chunk()
            self._forget()
            return Chunk(reset=True)
        reset = False
        identity = (st.st_dev, st.st_ino)
        if self._identity is not None and (identity != self._identity or st.st_size < self.offset):
            self._forget()
            reset = True
        first = self._identity is None
        self._identity = identity
        skip_first_line = False
        if first and self._start_tail is not None and st.st_size > self._start_tail:
            self.offset = st.st_size - self._start_tail
            skip_first_line = True
        if st.st_size == self.offset:
            return Chunk(reset=reset)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(min(st.st_size - self.offset, self.max_read))
        except FileNotFoundError:
            self._forget()
            return Chunk(reset=True)
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" when data ended with a newline
        if skip_first_line and lines:
            lines = lines[1:]
        return Chunk([ln for ln in lines if ln.strip()], reset)

    def _forget(self) -> None:
        self.offset = 0
        self._partial = b""
        self._identity = None


def parse_records(lines: list[bytes]) -> list[dict[str, Any]]:
    """JSON objects from metrics lines; a line that does not parse (torn by a kill) is skipped."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class MetricsTail:
    """metrics.jsonl records appended since the last call: `records, reset = tail.read()`."""

    def __init__(self, path: str | Path) -> None:
        self.reader = AppendReader(path)

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        chunk = self.reader.read()
        return parse_records(chunk.lines), chunk.reset


class TextTail:
    """Text lines (train.log, device.log) appended since the last call; bad UTF-8 is shown escaped.
    The first call returns at most the last `start_tail` bytes of what is already there."""

    def __init__(self, path: str | Path, start_tail: int = 64 << 10) -> None:
        self.reader = AppendReader(path, start_tail=start_tail)

    def read(self) -> tuple[list[str], bool]:
        chunk = self.reader.read()
        return [ln.decode("utf-8", "backslashreplace").rstrip("\r") for ln in chunk.lines], chunk.reset
