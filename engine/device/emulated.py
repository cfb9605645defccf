"""The emulated board: the rv32 firmware (firmware/rv32) under qemu-system-riscv32 -M virt, its UART on
a local TCP socket, so `DeviceLink("socket://127.0.0.1:PORT")` talks to it exactly as to a real board.

    with EmulatedBoard(blob) as eb:
        with DeviceLink(eb.port) as link:
            link.info()

qemu runs with `-icount shift=0` (one instruction = 1 ns of virtual time), and the firmware reads
`minstret`, so every TOK line carries `ir` = instructions retired for that token: the input of
`projected_esp32c3`. The blob is loaded where the rv32 front end expects its model partition
(0x84000000, up to 0x2F0000 bytes, like the ESP32's). The build is `make -C firmware rv32`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from engine.errors import Failure, UserError

from .boardproc import FIRMWARE, BoardProcess, die_with_parent, make_firmware

RV32_ELF = FIRMWARE / "build" / "rv32" / "tinylm-rv32.elf"
RV32_BLOB_ADDR = 0x84000000  # firmware/rv32/virt.h TL_RV32_BLOB_ADDR
RV32_PART_SIZE = 0x2F0000  # firmware/rv32/virt.h TL_RV32_PART_SIZE
QEMU = "qemu-system-riscv32"
RV_CC = "riscv64-unknown-elf-gcc"

C3_HZ = 160e6
CPI_C3 = 1.3


def projected_esp32c3(instructions_per_token: float) -> dict:
    """ESP32-C3 speed projected from rv32 instructions per token (the `ir` of the emulated board).

    time/token = instructions × CPI / 160 MHz, with CPI = 1.3 — an assumption, not a measurement
    (firmware/README.md "Speed and the ESP32-C3 projection"). Why 1.3: the C3 is a single-issue,
    in-order RV32IMC core at 160 MHz; most instructions of this firmware are ALU ops and loads that
    hit SRAM or the flash cache in one cycle, plus extra cycles for taken branches, load-use stalls and
    multiplies, which puts integer-heavy loops at roughly 1.1-1.5 cycles per instruction. Caveats:
    the C3 has no FPU, so the rv32 build is soft-float and its count already includes the libgcc
    float routines; flash-cache misses (weights stream from flash every token) are not modeled.

    Returns {"instructions_per_token", "cpi", "mhz", "ms_per_token", "tok_per_s"}.
    """
    if instructions_per_token <= 0:
        raise ValueError("instructions_per_token must be > 0 (is `ir` counted? only the rv32 build "
                         "under qemu -icount reports it)")
    ms = instructions_per_token * CPI_C3 / C3_HZ * 1e3
    return {"instructions_per_token": float(instructions_per_token), "cpi": CPI_C3,
            "mhz": C3_HZ / 1e6, "ms_per_token": ms, "tok_per_s": 1e3 / ms}


def build_rv32() -> Path:
    """Build (or confirm up to date) the rv32 firmware; returns the ELF."""
    if shutil.which(RV_CC) is None:
        raise UserError("the emulated board needs the rv32 cross compiler: apt-get install "
                        "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    return make_firmware("rv32", RV32_ELF)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatedBoard(BoardProcess):
    """`with EmulatedBoard(blob) as eb: DeviceLink(eb.port)...` — the rv32 firmware under qemu."""

    def __init__(self, blob: Path) -> None:
        super().__init__()
        self.blob = Path(blob)
        self.tcp_port = 0

    def command(self, tcp_port: int) -> list[str]:
        return [QEMU, "-M", "virt", "-bios", "none", "-kernel", str(RV32_ELF),
                "-display", "none", "-monitor", "none", "-icount", "shift=0",
                "-device", f"loader,file={self.blob},addr={RV32_BLOB_ADDR:#x}",
                "-serial", f"tcp:127.0.0.1:{tcp_port},server=on,wait=off"]

    def start(self, timeout: float = 10.0) -> "EmulatedBoard":
        if not self.blob.is_file():
            raise UserError(f"blob {self.blob}: no such file")
        if self.blob.stat().st_size > RV32_PART_SIZE:
            raise UserError(f"blob {self.blob}: {self.blob.stat().st_size} bytes do not fit the "
                            f"emulated board's model partition ({RV32_PART_SIZE} bytes)")
        if shutil.which(QEMU) is None:
            raise UserError("the emulated board needs qemu: apt-get install qemu-system-misc")
        build_rv32()
        for _attempt in range(3):  # the free port can be taken between our probe and qemu's bind
            self.tcp_port = _free_port()
            self.proc = subprocess.Popen(self.command(self.tcp_port), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         preexec_fn=die_with_parent())
            if self._wait_listening(timeout):
                self.port = f"socket://127.0.0.1:{self.tcp_port}"
                return self
            err = self._stop_and_stderr()
            if "Address already in use" not in err:
                raise Failure(f"qemu did not start the emulated board: {err.strip()[-2000:]}")
        raise Failure("qemu could not bind a free local port for the emulated board")

    def _wait_listening(self, timeout: float) -> bool:
        """True once qemu's serial socket accepts a connection (then closed: the server takes the
        next client, the DeviceLink). The firmware's boot lines before that are dropped by qemu."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _stop_and_stderr(self) -> str:
        self.stop()
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
