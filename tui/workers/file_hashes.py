"""The files of an experiment folder with their sizes, and their sha256 computed once per version.

Why a cache keyed by (path, size, mtime): the Overview tab lists checkpoints and blobs of up to many
MB, and is rebuilt whenever the folder changes (a run writes ckpt.pt every few hundred steps); only
files whose size or mtime moved are hashed again. Hashing reads in 1 MB blocks and checks
`should_stop` between them, so leaving the screen ends it. No Textual import.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BLOCK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    mtime_ns: int


def list_files(folder: Path) -> list[FileEntry]:
    """Regular files directly in `folder`, by name; hidden files (locks, atomic-write temps) left
    out, and a sub-folder (chats/) listed as one entry of size 0."""
    out = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            st = e.stat()
        except FileNotFoundError:
            continue  # removed between scandir and stat
        if e.is_dir():
            out.append(FileEntry(e.name + "/", 0, st.st_mtime_ns))
        elif e.is_file():
            out.append(FileEntry(e.name, st.st_size, st.st_mtime_ns))
    return sorted(out, key=lambda f: f.name)


class HashCache:
    """sha256 by (path, size, mtime_ns); thread-safe; shared by every screen of the process."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, entry: FileEntry) -> str | None:
        with self._lock:
            return self._known.get((str(path), entry.size, entry.mtime_ns))

    def compute(self, path: Path, entry: FileEntry,
                should_stop: Callable[[], bool] = lambda: False) -> str | None:
        """The file's sha256, or None if stopped, gone, or changed while being read."""
        known = self.get(path, entry)
        if known is not None:
            return known
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(BLOCK):
                    if should_stop():
                        return None
                    h.update(block)
            st = os.stat(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            return None  # rewritten meanwhile: the next listing hashes the new version
        digest = h.hexdigest()
        with self._lock:
            self._known[(str(path), entry.size, entry.mtime_ns)] = digest
        return digest


HASHES = HashCache()
