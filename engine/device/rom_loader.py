"""The ESP ROM serial bootloader ("download mode") as a pure state machine: a decoded SLIP packet
in, response packets out, writes going to a `FlashImage`. No I/O of its own, so the pty server
(download_board.py) and unit tests drive the same object.

What it answers is what esptool 5 (no stub) asks of a real ESP32 / ESP32-S3 / ESP32-C3 ROM:

  SYNC                 8 replies with a non-zero value (a zero value would mean "stub running")
  READ_REG / WRITE_REG a register file: chip magic at 0x40001000, eFuses read 0 (no secure boot,
                       no flash encryption, chip revision 0), and the SPI0 peripheral: a write of
                       SPI_CMD_USR runs the command byte in USR2 (RDID 0x9F -> flash id, SFDP 0x5A,
                       status reads) and leaves the answer in W0
  GET_SECURITY_INFO    ESP32-S3 / -C3: 20 bytes with the chip id (9 / 5); ESP32: unsupported, so
                       esptool falls back to the magic register, as with a real ESP32
  SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE (accepted; a pty has no baud rate)
  FLASH_BEGIN / FLASH_DATA / FLASH_END, FLASH_DEFL_BEGIN / FLASH_DEFL_DATA / FLASH_DEFL_END (zlib)
                       BEGIN erases, DATA checks the 0xEF-xor checksum (0x07 on a mismatch), the
                       length and the sequence number, END leaves for the app
  SPI_FLASH_MD5        32 hex digits, as the ROM (not the stub) sends them
  READ_FLASH_SLOW      64 bytes per command
  MEM_BEGIN/DATA/END   refused (0x05): no code can run here, so the stub flasher cannot be
                       uploaded; use esptool with --no-stub (engine/device/flash.py always does)

Replies carry the ROM's 4 status bytes: status (0 ok, 1 failed), error code, 2 reserved.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from .flash_image import FlashImage

# ---- commands and error codes (esptool loader.py ESP_CMDS; util.py FatalError.WithResult) -----

FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, GET_SECURITY_INFO = 0x13, 0x14

E_INVALID = 0x05  # "The format of the received message is invalid"
E_FAILED = 0x06  # "Message is ok, but the running result is wrong"
E_CHECKSUM = 0x07  # "Checksum error"
E_WRITE = 0x08  # "Flash write error"
E_DEFLATE = 0x0B  # "Deflate failed error"

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + 32 * b"\x55"
SYNC_VALUE = 0x20120707  # any non-zero value: the ROM, not the stub, answered
CHIP_DETECT_MAGIC_REG = 0x40001000
SPI_CMD_USR = 1 << 18
CHECKSUM_SEED = 0xEF

COMMAND_NAMES = {FLASH_BEGIN: "FLASH_BEGIN", FLASH_DATA: "FLASH_DATA", FLASH_END: "FLASH_END",
                 MEM_BEGIN: "MEM_BEGIN", MEM_END: "MEM_END", MEM_DATA: "MEM_DATA", SYNC: "SYNC",
                 WRITE_REG: "WRITE_REG", READ_REG: "READ_REG", SPI_SET_PARAMS: "SPI_SET_PARAMS",
                 SPI_ATTACH: "SPI_ATTACH", READ_FLASH_SLOW: "READ_FLASH_SLOW",
                 CHANGE_BAUDRATE: "CHANGE_BAUDRATE", FLASH_DEFL_BEGIN: "FLASH_DEFL_BEGIN",
                 FLASH_DEFL_DATA: "FLASH_DEFL_DATA", FLASH_DEFL_END: "FLASH_DEFL_END",
                 SPI_FLASH_MD5: "SPI_FLASH_MD5", GET_SECURITY_INFO: "GET_SECURITY_INFO"}


@dataclass(frozen=True)
class Chip:
    """What tells one ROM from another on the wire (values from the chips' TRMs, as esptool's
    targets/ classes carry them)."""
    name: str  # engine/budget board name
    magic: int  # word at CHIP_DETECT_MAGIC_REG (ESP32 detection)
    chip_id: int | None  # GET_SECURITY_INFO chip id; None: the ROM has no such command
    spi_base: int  # SPI0 (flash) peripheral
    usr1: int  # register offsets inside it
    usr2: int
    miso_dlen: int
    w0: int
    addr_msb: bool  # the address register holds the address in its top bits
    begin_words: int  # FLASH_BEGIN / FLASH_DEFL_BEGIN parameter words (5: + "encrypted")
    flash_size: int  # the module's flash chip when a new image is made


CHIPS: dict[str, Chip] = {
    "esp32": Chip("esp32", 0x00F01D83, None, 0x3FF42000, 0x20, 0x24, 0x2C, 0x80, True, 4,
                  4 << 20),
    "esp32-s3": Chip("esp32-s3", 0x00000009, 9, 0x60002000, 0x1C, 0x20, 0x28, 0x58, False, 5,
                     8 << 20),
    "esp32-c3": Chip("esp32-c3", 0x1B31506F, 5, 0x60002000, 0x1C, 0x20, 0x28, 0x58, False, 5,
                     4 << 20),
}

# Winbond W25Q-style answers: RDID = manufacturer 0xEF, type 0x40, capacity log2(bytes)
FLASH_VENDOR, FLASH_TYPE = 0xEF, 0x40
SFDP_TABLE = (b"SFDP" + bytes([6, 1, 0, 0xFF]) + bytes([0, 6, 1, 0x10, 0x30, 0, 0, 0xFF])
              + bytes([0xEF, 0, 1, 3, 0x80, 0, 0, 0xFF]) + bytes(16))


def rom_checksum(data: bytes) -> int:
    """0xEF xor every byte (esptool ESPLoader.checksum), folded on big integers for speed."""
    if not data:
        return CHECKSUM_SEED
    width = 8
    while width < len(data) * 8:
        width *= 2
    x = int.from_bytes(data, "little")
    while width > 8:
        width //= 2
        x = (x >> width) ^ (x & ((1 << width) - 1))
    return x ^ CHECKSUM_SEED


@dataclass
class _Write:
    """One FLASH_BEGIN or FLASH_DEFL_BEGIN session."""
    offset: int
    size: int  # bytes erased (and, compressed, the most that may be inflated)
    blocks: int
    block_size: int
    inflate: "zlib._Decompress | None" = None
    next_seq: int = 0
    produced: int = 0  # compressed: bytes inflated and written so far
    last_block: bytes = b""


@dataclass
class Reply:
    """What one packet caused: responses to send, then maybe leave download mode."""
    packets: list[bytes] = field(default_factory=list)
    run_app: bool = False


class RomLoader:
    """`RomLoader(CHIPS["esp32"], FlashImage(path)).handle(packet) -> Reply`."""

    def __init__(self, chip: Chip, flash: FlashImage) -> None:
        self.chip = chip
        self.flash = flash
        self.regs: dict[int, int] = {CHIP_DETECT_MAGIC_REG: chip.magic}
        self.session: _Write | None = None
        self.flash_params_size = flash.size
        self.wrote = False  # something was erased or written since the last boot
        self.log: list[str] = []  # one line per refused command, for the board's stderr

    # ---- framing ---------------------------------------------------------------------------------

    @staticmethod
    def _response(op: int, val: int = 0, payload: bytes = b"", error: int = 0) -> bytes:
        body = payload + (bytes([1, error, 0, 0]) if error else bytes(4))
        return struct.pack("<BBHI", 1, op, len(body), val) + body

    def _fail(self, op: int, error: int, why: str) -> Reply:
        self.log.append(f"{COMMAND_NAMES.get(op, hex(op))}: {why}")
        return Reply([self._response(op, error=error)])

    def handle(self, packet: bytes) -> Reply:
        if len(packet) < 8 or packet[0] != 0:
            return Reply()  # not a request: the ROM ignores it
        op, size, chk = struct.unpack_from("<BHI", packet, 1)
        data = packet[8:]
        if size != len(data):
            return self._fail(op, E_INVALID, f"length field {size} but {len(data)} bytes")
        handler = self._HANDLERS.get(op)
        if handler is None:
            return self._fail(op, E_INVALID, "not a command this ROM runs")
        return handler(self, op, data, chk)

    # ---- link and registers ----------------------------------------------------------------------

    def _sync(self, op: int, data: bytes, chk: int) -> Reply:
        if data != SYNC_PAYLOAD:
            return self._fail(op, E_INVALID, "bad SYNC pattern")
        self.session = None
        return Reply([self._response(op, SYNC_VALUE)] * 8)

    def _read_reg(self, op: int, data: bytes, chk: int) -> Reply:
        if len(data) != 4:
            return self._fail(op, E_INVALID, "READ_REG takes one address")
        (addr,) = struct.unpack("<I", data)
        return Reply([self._response(op, self.regs.get(addr, 0))])

    def _write_reg(self, op: int, data: bytes, chk: int) -> Reply:
        if not data or len(data) % 16:
            return self._fail(op, E_INVALID, "WRITE_REG takes (addr, value, mask, delay) words")
        for addr, value, mask, _delay in struct.iter_unpack("<IIII", data):
            self.regs[addr] = (self.regs.get(addr, 0) & ~mask & 0xFFFFFFFF) | (value & mask)
            if addr == self.chip.spi_base and self.regs[addr] & SPI_CMD_USR:
                self._spi_user_command()
        return Reply([self._response(op)])

    def _spi_user_command(self) -> None:
        """Run the SPI flash command esptool set up in the SPI0 registers (run_spiflash_command)."""
        c = self.chip
        command = self.regs.get(c.spi_base + c.usr2, 0) & 0xFF
        bits = (self.regs.get(c.spi_base + c.miso_dlen, 0) & 0x3FF) + 1
        result = 0
        if command == 0x9F:  # RDID
            result = FLASH_VENDOR | FLASH_TYPE << 8 | (self.flash.size.bit_length() - 1) << 16
        elif command == 0x5A:  # read SFDP
            addr = self.regs.get(c.spi_base + 4, 0)
            if c.addr_msb:
                addr_len = ((self.regs.get(c.spi_base + c.usr1, 0) >> 26) & 0x3F) + 1
                addr >>= 32 - addr_len
            chunk = SFDP_TABLE[addr:addr + 4].ljust(4, b"\xff")
            result = int.from_bytes(chunk, "little") & ((1 << min(bits, 32)) - 1)
        self.regs[c.spi_base + c.w0] = result
        self.regs[c.spi_base] &= ~SPI_CMD_USR

    def _security_info(self, op: int, data: bytes, chk: int) -> Reply:
        if self.chip.chip_id is None:  # esptool's first probe on every ESP32: not worth a log line
            return Reply([self._response(op, error=E_INVALID)])
        payload = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0)
        return Reply([self._response(op, payload=payload)])

    def _accept(self, op: int, data: bytes, chk: int) -> Reply:
        """SPI_ATTACH, CHANGE_BAUDRATE: nothing to do on a virtual chip."""
        return Reply([self._response(op)])

    def _set_params(self, op: int, data: bytes, chk: int) -> Reply:
        if len(data) != 24:
            return self._fail(op, E_INVALID, "SPI_SET_PARAMS takes 6 words")
        self.flash_params_size = struct.unpack_from("<I", data, 4)[0]
        return Reply([self._response(op)])

    def _no_ram(self, op: int, data: bytes, chk: int) -> Reply:
        return self._fail(op, E_INVALID, "no RAM upload on the virtual board (the stub flasher "
                          "cannot run here): use esptool --no-stub")

    # ---- flash -----------------------------------------------------------------------------------

    def _begin(self, op: int, data: bytes, chk: int) -> Reply:
        words = self.chip.begin_words
        if len(data) != 4 * words:
            return self._fail(op, E_INVALID, f"{len(data)} parameter bytes, this ROM takes "
                              f"{4 * words}")
        size, blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if words == 5 and struct.unpack_from("<I", data, 16)[0]:
            return self._fail(op, E_FAILED, "encrypted writes are not emulated")
        if not block_size or not self.flash.in_range(offset, max(size, blocks * block_size)
                                                      if op == FLASH_BEGIN else size):
            return self._fail(op, E_INVALID, f"{size} bytes at {offset:#x} do not fit "
                              f"{self.flash.size} bytes of flash")
        if size:
            self.flash.erase(offset, size)
            self.wrote = True
        inflate = zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None
        self.session = _Write(offset, size, blocks, block_size, inflate)
        return Reply([self._response(op)])

    def _data(self, op: int, data: bytes, chk: int) -> Reply:
        s = self.session
        compressed = op == FLASH_DEFL_DATA
        if s is None or (s.inflate is not None) != compressed:
            return self._fail(op, E_INVALID, "no matching FLASH_BEGIN / FLASH_DEFL_BEGIN")
        if len(data) < 16:
            return self._fail(op, E_INVALID, "short data header")
        length, seq = struct.unpack_from("<II", data)
        block = data[16:]
        if length != len(block) or length > s.block_size:
            return self._fail(op, E_INVALID, f"block of {len(block)} bytes, header says {length}")
        if chk != rom_checksum(block):
            return self._fail(op, E_CHECKSUM, f"checksum {chk:#04x} != {rom_checksum(block):#04x}"
                              f" at seq {seq}")
        if seq + 1 == s.next_seq and block == s.last_block:
            return Reply([self._response(op)])  # a resend after a lost reply: already written
        if seq != s.next_seq or seq >= s.blocks:
            return self._fail(op, E_INVALID, f"seq {seq}, expected {s.next_seq} of {s.blocks}")
        if compressed:
            try:
                out = s.inflate.decompress(block)
            except zlib.error as e:
                return self._fail(op, E_DEFLATE, f"inflate: {e}")
            if s.produced + len(out) > s.size:
                return self._fail(op, E_DEFLATE, "inflates past the erased region")
            addr = s.offset + s.produced
            s.produced += len(out)
        else:
            out, addr = block, s.offset + seq * s.block_size
            if not self.flash.in_range(addr, len(out)):
                return self._fail(op, E_INVALID, f"block at {addr:#x} past the flash end")
        if out and not self.flash.program(addr, out):
            return self._fail(op, E_WRITE, f"read-back differs at {addr:#x} (not erased)")
        self.wrote = True
        s.next_seq += 1
        s.last_block = block
        if s.next_seq == s.blocks:
            self.flash.flush()
        return Reply([self._response(op)])

    def _end(self, op: int, data: bytes, chk: int) -> Reply:
        """FLASH_END / FLASH_DEFL_END: the ROM leaves download mode (reboot or run user code,
        the same thing here: the app starts from flash)."""
        if len(data) != 4:
            return self._fail(op, E_INVALID, "END takes one word")
        self.session = None
        self.flash.flush()
        return Reply([self._response(op)], run_app=True)

    def _md5(self, op: int, data: bytes, chk: int) -> Reply:
        if len(data) != 16:
            return self._fail(op, E_INVALID, "SPI_FLASH_MD5 takes 4 words")
        addr, size = struct.unpack_from("<II", data)
        if not self.flash.in_range(addr, size):
            return self._fail(op, E_INVALID, f"{size} bytes at {addr:#x} past the flash end")
        return Reply([self._response(op, payload=self.flash.md5(addr, size).encode())])

    def _read_slow(self, op: int, data: bytes, chk: int) -> Reply:
        if len(data) != 8:
            return self._fail(op, E_INVALID, "READ_FLASH_SLOW takes 2 words")
        addr, length = struct.unpack("<II", data)
        if length > 64 or not self.flash.in_range(addr, length):
            return self._fail(op, E_INVALID, f"{length} bytes at {addr:#x}")
        return Reply([self._response(op, payload=self.flash.read(addr, length).ljust(64, b"\xff"))])

    _HANDLERS = {SYNC: _sync, READ_REG: _read_reg, WRITE_REG: _write_reg,
                 GET_SECURITY_INFO: _security_info, SPI_ATTACH: _accept,
                 CHANGE_BAUDRATE: _accept, SPI_SET_PARAMS: _set_params, MEM_BEGIN: _no_ram,
                 MEM_DATA: _no_ram, MEM_END: _no_ram, FLASH_BEGIN: _begin,
                 FLASH_DEFL_BEGIN: _begin, FLASH_DATA: _data, FLASH_DEFL_DATA: _data,
                 FLASH_END: _end, FLASH_DEFL_END: _end, SPI_FLASH_MD5: _md5,
                 READ_FLASH_SLOW: _read_slow}
