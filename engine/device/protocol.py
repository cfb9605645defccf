"""firmware/PROTOCOL.md on the host side: framing, CRC, parsing. Pure functions, no I/O, so the
fuzz-ish tests and the link share one implementation."""

from __future__ import annotations

import binascii
import re
import zlib
from dataclasses import dataclass, field

PROTO_VERSION = 1  # the `proto` this host speaks (READY and INFO carry the board's)
MAX_LINE = 512
_TYPE_RE = re.compile(rb"^@([A-Z]+)$")
_KEY_RE = re.compile(r"^[a-z_]+$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:+-]*$")


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection ("123456789" -> 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)  # the same CRC (poly 0x1021, MSB first), in C


@dataclass
class Line:
    type: str
    fields: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        """`line["code"]`: a field's raw text (KeyError when the line has no such field)."""
        return self.fields[key]

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.fields:
            if default is None:
                raise ProtocolError(f"@{self.type} line has no '{key}' field")
            return default
        try:
            return int(self.fields[key])
        except ValueError as e:
            raise ProtocolError(f"@{self.type} {key}={self.fields[key]!r} is not an integer") from e

    def bytes(self, key: str = "hex") -> bytes:
        try:
            return bytes.fromhex(self.fields.get(key, ""))
        except ValueError as e:
            raise ProtocolError(f"@{self.type} {key}= is not hex") from e

    def text(self, key: str = "hex") -> str:
        return self.bytes(key).decode("utf-8", "replace")


class ProtocolError(Exception):
    """A line that looks like protocol but is not valid (bad CRC, bad field)."""


class LineTooLong(ValueError):
    """encode_line: the framed line would exceed MAX_LINE (split it: @PROMPT for long prompts)."""


def chunk_crc(data: bytes) -> str:
    """The `crc` field of `@UPDATA`: CRC-32 (zlib) of the chunk bytes, 8 lowercase hex digits."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def encode_line(type_: str, **fields: object) -> bytes:
    """`encode_line("GEN", id=7, ids="1,2")` -> b"@GEN id=7 ids=1,2|ABCD\\n"."""
    parts = [f"@{type_}"]
    for k, v in fields.items():
        v = str(v)
        if not _KEY_RE.match(k) or not _VALUE_RE.match(v):
            raise ValueError(f"field {k}={v!r} cannot be sent (see PROTOCOL.md framing)")
        parts.append(f"{k}={v}")
    body = " ".join(parts).encode("ascii")
    line = body + b"|" + f"{crc16_ccitt(body):04X}".encode() + b"\n"
    if len(line) > MAX_LINE:
        raise LineTooLong(f"protocol line of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def parse_line(raw: bytes) -> Line | None:
    """None for noise (not starting with '@'); ProtocolError for a broken protocol line."""
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    if not raw.startswith(b"@"):
        return None
    body, sep, crc = raw.rpartition(b"|")
    if not sep or len(crc) != 4:
        raise ProtocolError(f"protocol line without a CRC: {raw[:60]!r}")
    try:
        want = int(crc, 16)
    except ValueError as e:
        raise ProtocolError(f"bad CRC digits in {raw[:60]!r}") from e
    if crc != crc.upper() or crc16_ccitt(body) != want:
        raise ProtocolError(f"CRC mismatch in {raw[:60]!r}")
    words = body.split(b" ")
    m = _TYPE_RE.match(words[0])
    if not m:
        raise ProtocolError(f"bad line type in {raw[:60]!r}")
    fields = {}
    for w in words[1:]:
        k, eq, v = w.decode("ascii", "replace").partition("=")
        if not eq or not _KEY_RE.match(k) or not _VALUE_RE.match(v):
            raise ProtocolError(f"bad field {w[:40]!r} in @{m.group(1).decode()}")
        fields[k] = v
    return Line(m.group(1).decode(), fields)
