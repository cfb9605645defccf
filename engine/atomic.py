"""The one way the engine writes files: temp file in the same folder, fsync, rename.

A reader therefore sees either the old file or the new one, never half of either, and a crash or a
full disk mid-write leaves the previous version in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def _file_mode() -> int:
    """rw for everyone the umask allows, like open() would create (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call `write(fileobj)` on a temp file next to `path`, then atomically replace `path` with it.

    On any error the temp file is removed and `path` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _MODE)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sweep_temp_files(folder: str | os.PathLike[str], names: tuple[str, ...],
                     min_age_s: float = 0.0) -> list[str]:
    """Remove temp files a killed writer left behind for the given target names. Only call it while
    holding the lock that guards those targets, so no live writer's temp file is removed."""
    import time

    removed = []
    for path in Path(folder).glob(".*.tmp"):
        target = path.name[1:].rsplit(".", 2)[0]
        if target in names and time.time() - path.stat().st_mtime >= min_age_s:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
