"""Test-only host side of firmware/PROTOCOL.md: a raw `Link` to a virtual board (its stdin/stdout, or
its pty through pyserial) that returns every line, @ERR included, and keeps the noise.

Framing, CRC and parsing are engine/device/protocol.py's, and the boards are engine/device's
processes; what stays here is what a conformance test needs and DeviceLink deliberately does not
offer: raw writes (broken frames), @ERR lines as values, not exceptions, and the noise seen so far.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from engine.device.boardproc import FIRMWARE, run_make
from engine.device.emulated import QEMU, RV_CC
from engine.device.protocol import Line, encode_line, parse_line
from engine.device.virtual import BOARD_BIN as BOARD
from engine.device.virtual import VirtualBoard

__all__ = ["BOARD", "FIRMWARE", "PORTABLE_BOARD", "Link", "PtyBoard", "StdioBoard", "needs_rv32"]

PORTABLE_BOARD = FIRMWARE / "build" / "host-portable" / "tinylm-board"  # -DTL_NO_SIMD: rv32/ESP32 kernels

needs_rv32 = pytest.mark.skipif(shutil.which(RV_CC) is None or shutil.which(QEMU) is None,
                                reason="rv32 toolchain / qemu not installed (CI installs them)")


@dataclass
class Link:
    """Reads lines from a file descriptor-like source, skipping noise (kept in `noise`)."""

    read_some: Callable[[float], bytes]  # read_some(timeout) -> bytes (b"" when nothing came)
    write: Callable[[bytes], None]
    buf: bytes = b""
    noise: list[bytes] = field(default_factory=list)
    next_id: int = 1

    def line(self, timeout: float = 10.0) -> bytes:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout}s (have {self.buf[:200]!r})")
            self.buf += self.read_some(min(left, 0.2))
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def msg(self, timeout: float = 10.0) -> Line:
        """Next protocol line; ProtocolError for a corrupted one."""
        while True:
            line = self.line(timeout)
            m = parse_line(line)
            if m is None:
                self.noise.append(line)
                continue
            return m

    def send(self, kind: str, **fields) -> int:
        if "id" not in fields:
            fields = {"id": self.next_id, **fields}
            self.next_id += 1
        self.write(encode_line(kind, **fields))
        return int(fields["id"])

    def call(self, kind: str, timeout: float = 10.0, **fields) -> Line:
        i = self.send(kind, **fields)
        while True:
            m = self.msg(timeout)
            if m.fields.get("id") == str(i):
                return m

    def generate(self, ids=None, hex=None, timeout: float = 60.0, **params):
        """Tokens of a GEN, and its END line."""
        fields = dict(params)
        if ids is not None:
            fields["ids"] = ",".join(str(t) for t in ids)
        if hex is not None:
            fields["hex"] = hex
        i = self.send("GEN", **fields)
        toks = []
        while True:
            m = self.msg(timeout)
            if m.fields.get("id") != str(i):
                continue
            if m.type == "TOK":
                assert m.int("i") == len(toks)
                toks.append(m.int("tok"))
            elif m.type == "END":
                return toks, m
            else:
                raise AssertionError(f"GEN answered {m}")


def build(*make_args: str) -> None:
    """A firmware target built through the engine's locked make (test workers share the tree)."""
    r = run_make(*make_args)
    assert r.returncode == 0, f"make {' '.join(make_args)} failed:\n{r.stderr[-2000:]}"


def _select_link(fileno: int, read: Callable[[int], bytes], out: IO[bytes]) -> Link:
    """A Link reading `read(n)` once `fileno` is readable, writing (and flushing) to `out`."""

    def read_some(timeout: float) -> bytes:
        r, _, _ = select.select([fileno], [], [], timeout)
        return read(65536) if r else b""

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    return Link(read_some, write)


class StdioBoard:
    """The virtual board on pipes (fast, for parity runs)."""

    def __init__(self, *args: str, binary: Path = BOARD) -> None:
        self.proc = subprocess.Popen([str(binary), "--stdio", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        fd = self.proc.stdout.fileno()
        self.link = _select_link(fd, lambda n: os.read(fd, n), self.proc.stdin)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "StdioBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PtyBoard(VirtualBoard):
    """engine's VirtualBoard (the host firmware on a pty); `open()` gives a pyserial-backed Link."""

    serial_port = None

    def open(self) -> Link:
        import serial

        self.serial_port = serial.Serial(self.port, 115200, timeout=0)
        return _select_link(self.serial_port.fileno(), self.serial_port.read, self.serial_port)

    def stop(self) -> None:
        if self.serial_port is not None:
            self.serial_port.close()
            self.serial_port = None
        super().stop()
