"""A file standing in for a board's SPI flash chip: erase to 0xFF by 4 KB sector, program by AND
(a write can only clear bits, as on NOR flash), read, MD5.

The file is memory-mapped and written in place, the way flash is: an interrupted flash leaves the
blocks written so far plus erased sectors after them (a model partition the app reports as bad),
never a truncated or missing file, and the next flash simply rewrites the region. `flush()` pushes
the mapped pages to the file (msync); the board calls it at the end of every write session, before
an MD5, at FLASH_END and at least every `FLUSH_EVERY_S` while writing. Other processes (the app
started on the same image, a test that corrupts the file on purpose) see the page cache, so what
they read is what the board wrote, flushed or not.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from pathlib import Path

from ..atomic import atomic_write_with
from ..errors import UserError

SECTOR = 0x1000
FLUSH_EVERY_S = 0.5
FLASH_SIZES = (1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20)


def create_erased_image(path: Path, size: int) -> None:
    """A new flash image: `size` bytes of 0xFF (a chip fresh from the factory), written atomically."""
    chunk = b"\xff" * (1 << 20)

    def write(fh) -> None:
        left = size
        while left:
            fh.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))

    atomic_write_with(path, write)


class FlashImage:
    """`FlashImage(path)`: the flash chip of a virtual board; `size` is the chip size."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        if size not in FLASH_SIZES:
            raise UserError(f"flash image {self.path}: {size} bytes is not a flash chip size "
                            f"(1, 2, 4, 8 or 16 MB); give another file or a new path (a new image "
                            "is created erased)")
        self._fd = os.open(self.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, size)
        self.size = size
        self._dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._map.closed:
            return
        self.flush()
        self._map.close()
        os.close(self._fd)

    def in_range(self, offset: int, length: int) -> bool:
        return 0 <= offset and 0 <= length and offset + length <= self.size

    def erase(self, offset: int, length: int) -> None:
        """Erase every 4 KB sector touched by [offset, offset + length)."""
        start = offset // SECTOR * SECTOR
        end = min(-(-(offset + length) // SECTOR) * SECTOR, self.size)
        self._map[start:end] = b"\xff" * (end - start)
        self._touch()

    def program(self, offset: int, data: bytes) -> bool:
        """Write `data` as NOR flash does (AND into what is there); False when the read-back
        differs, i.e. the region was not erased first (the ROM's "flash write error")."""
        old = self._map[offset:offset + len(data)]
        if old == b"\xff" * len(data):
            new = data
        else:
            new = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(
                len(data), "little")
        self._map[offset:offset + len(data)] = new
        self._touch()
        return new == data

    def read(self, offset: int, length: int) -> bytes:
        return self._map[offset:offset + length]

    def md5(self, offset: int, length: int) -> str:
        self.flush()
        return hashlib.md5(self._map[offset:offset + length]).hexdigest()

    def flush(self) -> None:
        if self._dirty:
            self._map.flush()
            self._dirty = False
        self._last_flush = time.monotonic()

    def flush_if_due(self) -> None:
        """Flush when writes are pending and the last flush is FLUSH_EVERY_S old."""
        if self._dirty and time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _touch(self) -> None:
        self._dirty = True
        self.flush_if_due()
