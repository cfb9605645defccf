"""A tiny host side of firmware/PROTOCOL.md for tests: framing, parsing, and a link to a virtual board
(a pty through pyserial, or the board's stdin/stdout)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARD = FIRMWARE / "build" / "host" / "tinylm-board"
PORTABLE_BOARD = FIRMWARE / "build" / "host-portable" / "tinylm-board"  # -DTL_NO_SIMD: rv32/ESP32 kernels
LINE_RE = re.compile(rb"^@([A-Z]+)((?: [a-z_]+=[A-Za-z0-9_.,:+-]*)*)\|([0-9A-F]{4})\r?$")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(kind: str, **fields) -> bytes:
    body = "@" + kind + "".join(f" {k}={v}" for k, v in fields.items())
    return f"{body}|{crc16(body.encode()):04X}\n".encode()


class CorruptLine(Exception):
    pass


@dataclass
class Msg:
    kind: str
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def int(self, key: str) -> int:
        return int(self.fields[key])


def parse(line: bytes) -> Msg | None:
    """A protocol line, None for noise; CorruptLine for an `@` line with a bad frame or CRC."""
    if not line.startswith(b"@"):
        return None
    m = LINE_RE.match(line.rstrip(b"\n"))
    if not m:
        raise CorruptLine(line)
    body = line[:line.rindex(b"|")]
    if crc16(body) != int(m.group(3), 16):
        raise CorruptLine(line)
    fields = dict(f.split("=", 1) for f in m.group(2).decode().split())
    return Msg(m.group(1).decode(), fields)


@dataclass
class Link:
    """Reads lines from a file descriptor-like source, skipping noise (kept in `noise`)."""

    read_some: object  # callable(timeout) -> bytes
    write: object  # callable(bytes)
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

    def msg(self, timeout: float = 10.0) -> Msg:
        while True:
            line = self.line(timeout)
            m = parse(line)
            if m is None:
                self.noise.append(line)
                continue
            return m

    def send(self, kind: str, **fields) -> int:
        if "id" not in fields:
            fields = {"id": self.next_id, **fields}
            self.next_id += 1
        self.write(frame(kind, **fields))
        return int(fields["id"])

    def call(self, kind: str, timeout: float = 10.0, **fields) -> Msg:
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
            if m.kind == "TOK":
                assert m.int("i") == len(toks)
                toks.append(m.int("tok"))
            elif m.kind == "END":
                return toks, m
            else:
                raise AssertionError(f"GEN answered {m}")


class StdioBoard:
    """The virtual board on pipes (fast, for parity runs)."""

    def __init__(self, *args: str, binary: Path = BOARD) -> None:
        self.proc = subprocess.Popen([str(binary), "--stdio", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        fd = self.proc.stdout.fileno()

        def read_some(timeout: float) -> bytes:
            r, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 65536) if r else b""

        def write(data: bytes) -> None:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

        self.link = Link(read_some, write)

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


class PtyBoard:
    """The virtual board serving a pseudo-terminal; `open()` gives a pyserial-backed Link."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(BOARD), *args], stdout=subprocess.PIPE)
        first = self.proc.stdout.readline().decode().strip()
        assert first.startswith("PTY /dev/"), first
        self.path = first.split(" ", 1)[1]
        self.port = None

    def open(self) -> Link:
        import serial

        self.port = serial.Serial(self.path, 115200, timeout=0)

        def read_some(timeout: float) -> bytes:
            r, _, _ = select.select([self.port.fileno()], [], [], timeout)
            return self.port.read(65536) if r else b""

        def write(data: bytes) -> None:
            self.port.write(data)
            self.port.flush()

        return Link(read_some, write)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "PtyBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chunk_crc(data: bytes) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


RV32_ELF = FIRMWARE / "build" / "rv32" / "tinylm-rv32.elf"
RV32_BLOB_ADDR = 0x84000000


class QemuBoard(StdioBoard):
    """The rv32 build under qemu-system-riscv32 -M virt (-icount shift=0: 1 instruction = 1 ns)."""

    def __init__(self, blob: Path) -> None:  # noqa: D107 - same link as StdioBoard
        cmd = ["qemu-system-riscv32", "-M", "virt", "-bios", "none", "-kernel", str(RV32_ELF),
               "-display", "none", "-monitor", "none", "-serial", "stdio", "-icount", "shift=0",
               "-device", f"loader,file={blob},addr={RV32_BLOB_ADDR:#x}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        fd = self.proc.stdout.fileno()

        def read_some(timeout: float) -> bytes:
            r, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 65536) if r else b""

        def write(data: bytes) -> None:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

        self.link = Link(read_some, write)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
