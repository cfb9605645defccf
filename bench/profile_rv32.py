"""Where the rv32 instructions of a token go: the profile build of the firmware under qemu.

    .venv/bin/python bench/profile_rv32.py [ternary+int int8+int ...]

Builds `make -C firmware rv32-prof` (core/ with its TL_PROF marks compiled in, firmware/rv32/profile.c
as main), runs it under qemu-system-riscv32 -M virt -icount shift=0 on each stories260K blob of
bench_firmware.py and prints the mean instructions per token of each section over tokens 100..199
(greedy, the bench prompt): the same window as bench_firmware's rv32 column, so the totals match it
up to the few instructions each mark costs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_firmware import make_blobs  # noqa: E402

from engine.device.emulated import QEMU, RV32_BLOB_ADDR, projected_esp32c3  # noqa: E402

ELF = ROOT / "firmware" / "build" / "rv32" / "tinylm-rv32-prof.elf"


def profile(blob: Path) -> dict[str, int]:
    out = subprocess.run([QEMU, "-M", "virt", "-bios", "none", "-kernel", str(ELF), "-display", "none",
                          "-monitor", "none", "-serial", "stdio", "-icount", "shift=0",
                          "-device", f"loader,file={blob},addr={RV32_BLOB_ADDR:#x}"],
                         capture_output=True, text=True, timeout=1800, check=False).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            rows[parts[0]] = int(parts[1])
    if "total" not in rows:
        raise SystemExit(f"profile run failed: {out[-2000:]}")
    return rows


def main() -> None:
    wanted = sys.argv[1:] or ["ternary+int", "int8+int"]
    subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "rv32-prof"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        blobs = make_blobs(Path(tmp))
        results = {m: profile(blobs[m]) for m in wanted}
    sections = [k for k in next(iter(results.values())) if k not in ("total", "wall")]
    print(f"{'section':<10}" + "".join(f"{m:>14}" for m in wanted))
    for k in sections + ["total", "wall"]:
        print(f"{k:<10}" + "".join(f"{results[m][k]:>14,}" for m in wanted))
    for m in wanted:
        p = projected_esp32c3(results[m]["wall"])
        print(f"{m}: {p['tok_per_s']:.1f} tok/s projected on an ESP32-C3 (CPI {p['cpi']}, "
              f"{p['mhz']:.0f} MHz)")


if __name__ == "__main__":
    main()
