"""firmware/esp32/partitions*.csv read the way ESP-IDF's gen_esp32part.py reads them, so the host
writes the blob exactly where the firmware's `esp_partition_find(..., "model")` will look.

Columns: Name, Type, SubType, Offset, Size, Flags. Numbers are decimal or 0x-hex with an optional
K or M suffix; an empty offset follows the previous partition (app partitions aligned to 64 KB, data
to 4 KB); `#` starts a comment. Which file applies depends on the flash chip: partitions.csv for
4 MB, partitions-8MB.csv for 8 MB and more.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .boardproc import FIRMWARE

ESP32_DIR = FIRMWARE / "esp32"
TABLE_OFFSET = 0x8000  # the partition table itself: 0x8000..0x8FFF
MB = 1 << 20
_NUMBER = re.compile(r"^(0x[0-9a-fA-F]+|[0-9]+)([KkMm]?)$")


@dataclass(frozen=True)
class Partition:
    name: str
    type: str  # "app" / "data"
    subtype: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class PartitionTable:
    path: Path
    partitions: tuple[Partition, ...]

    def find(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise UserError(f"{self.path}: no partition named '{name}' (has "
                        f"{', '.join(p.name for p in self.partitions)})")

    def factory_app(self) -> Partition:
        for p in self.partitions:
            if p.type == "app" and p.subtype in ("factory", "ota_0"):
                return p
        raise UserError(f"{self.path}: no factory app partition to write --app to")

    @property
    def end(self) -> int:
        return max(p.end for p in self.partitions)


def parse_number(text: str, where: str) -> int:
    m = _NUMBER.match(text.strip())
    if not m:
        raise UserError(f"{where}: '{text}' is not a size or offset (decimal, 0x-hex, optional "
                        "K or M suffix)")
    value = int(m.group(1), 0)
    return value * {"": 1, "k": 1024, "m": MB}[m.group(2).lower()]


def parse_partition_csv(text: str, path: Path = Path("partitions.csv")) -> PartitionTable:
    parts: list[Partition] = []
    cursor = TABLE_OFFSET + 0x1000
    lines = [ln.split("#", 1)[0] for ln in text.splitlines()]
    for lineno, row in enumerate(csv.reader(lines), 1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        where = f"{path}:{lineno}"
        if len(cells) < 5:
            raise UserError(f"{where}: a partition needs name, type, subtype, offset, size")
        name, ptype, subtype, offset_s, size_s = cells[:5]
        align = 0x10000 if ptype == "app" else 0x1000
        offset = parse_number(offset_s, where) if offset_s else -(-cursor // align) * align
        size = parse_number(size_s, where)
        if offset < cursor or offset % 0x1000:
            raise UserError(f"{where}: '{name}' at {offset:#x} overlaps the previous partition or "
                            "is not 4 KB aligned")
        parts.append(Partition(name, ptype, subtype, offset, size))
        cursor = offset + size
    if not parts:
        raise UserError(f"{path}: no partitions")
    return PartitionTable(path, tuple(parts))


def table_for_flash(flash_size: int, folder: Path = ESP32_DIR) -> PartitionTable:
    """The partition table the firmware is built with for a flash chip of `flash_size` bytes."""
    if flash_size >= 8 * MB:
        path = folder / "partitions-8MB.csv"
    elif flash_size >= 4 * MB:
        path = folder / "partitions.csv"
    else:
        raise UserError(f"the board has {flash_size // 1024} KB of flash; the firmware's partition "
                        "tables need 4 MB (partitions.csv) or 8 MB (partitions-8MB.csv)")
    table = parse_partition_csv(path.read_text(), path)
    if table.end > flash_size:
        raise UserError(f"{path} ends at {table.end:#x}, past the {flash_size // MB} MB flash")
    return table
