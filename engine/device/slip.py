"""SLIP framing (RFC 1055) as the ESP ROM serial bootloader and esptool use it: every packet is
wrapped in 0xC0, and 0xC0 / 0xDB inside it travel as 0xDB 0xDC / 0xDB 0xDD.

The decoder is incremental (bytes arrive from a pty in arbitrary pieces) and, like the ROM, drops
whatever arrives outside a frame (a terminal's stray bytes, a protocol line meant for the app). It
works on whole chunks (find/replace), not byte by byte: a 3 MB flash is 3 MB through here."""

from __future__ import annotations

import re

_VALID = re.compile(rb"(?:[^\xdb]|\xdb[\xdc\xdd])*\Z", re.DOTALL)
MAX_FRAME = 1 << 20  # longer than any ROM command (FLASH_DATA blocks are 1 KB); beyond it: noise


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def slip_unescape(body: bytes) -> bytes | None:
    """The packet inside one frame, or None for an invalid escape (the ROM discards the frame)."""
    if b"\xdb" not in body:
        return body
    if not _VALID.match(body):
        return None
    return body.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


class SlipDecoder:
    """`feed(data)` returns the packets completed by `data`."""

    def __init__(self) -> None:
        self._pending = b""
        self._in_frame = False

    def reset(self) -> None:
        """Forget a half-received frame (the client went away mid-packet)."""
        self._pending = b""
        self._in_frame = False

    def feed(self, data: bytes) -> list[bytes]:
        packets = []
        buf = self._pending + data
        start = 0
        while True:
            end = buf.find(b"\xc0", start)
            if end < 0:
                break
            if self._in_frame and end > start:
                packet = slip_unescape(buf[start:end])
                if packet is not None:
                    packets.append(packet)
            self._in_frame = True  # a C0 both ends a frame and may start the next one
            start = end + 1
        rest = buf[start:]
        self._pending = rest if self._in_frame and len(rest) <= MAX_FRAME else b""
        if len(rest) > MAX_FRAME:
            self._in_frame = False
        return packets
