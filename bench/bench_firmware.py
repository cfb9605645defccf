"""Firmware speed: the host virtual board on stories260K-shaped blobs (f32 / int8 / ternary).

    .venv/bin/python bench/bench_firmware.py            # tokens/s, instructions/token, rv32 projection
    .venv/bin/python bench/bench_firmware.py --fuzz 60  # also run each libFuzzer harness >= 60 s

- flags: the CFLAGS of firmware/Makefile (the host board and the rv32 build use the same ones).
- tokens/s: wall clock of `tinylm-board --bench 200` (greedy, one thread), min / median / max of 3.
- instructions/token: valgrind --tool=callgrind, (Ir at 200 tokens - Ir at 100 tokens) / 100, so
  start-up and the prompt cancel out. Reference point: llama2.c run.c on stories260K, greedy, gcc -O3
  ~ 1.95 M instructions/token; targets f32 <= that, int8 <= 0.67x, ternary <= 0.5x.
- rv32: the same firmware cross-built for rv32imc (portable C kernels, soft-float), run on the
  emulated board (engine/device/emulated.py: qemu-system-riscv32 -icount shift=0, reached through
  DeviceLink over socket://); `ir` of each TOK line (minstret) averaged over tokens 100..199, projected
  to an ESP32-C3 at 160 MHz with its CPI by engine.device.emulated.projected_esp32c3.
- `+int` rows: the same int8 / ternary blob with flags bit 1 (firmware/BLOB.md "Integer mode": int8
  KV cache, integer attention, SwiGLU and matmul accumulation), i.e. with vs without the flag; the
  RAM column is the firmware's runtime RAM at the blob's full context (budget.runtime_ram).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.device.boardproc import FIRMWARE  # noqa: E402
from engine.device.emulated import CPI_C3, EmulatedBoard, projected_esp32c3  # noqa: E402
from engine.device.link import DeviceLink, TokenEvent  # noqa: E402
from engine.device.virtual import BOARD_BIN as BOARD  # noqa: E402

DATA = ROOT / "tests" / "data" / "llama2c"  # stories260K + tok512, shipped (tests/conftest.py LLAMA2C)
PROMPT = "1,403,407,261,378"  # <s> Once upon a time
LLAMA2C_IR = 1.95e6
TARGETS = {"f32": 1.0, "int8": 0.67, "ternary": 0.5}
FLASH_BYTES_PER_S = 40e6  # QSPI 80 MHz x 4 bit; the weights stream through the flash cache each token


def make_blobs(tmp: Path) -> dict[str, Path]:
    from engine.blob.format import write_blob
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import load_vocab

    f, state = read_llama2c(DATA / "stories260K.bin")
    vocab = load_vocab(DATA / "tok512.model")
    cfg = config_from_llama2c(f, vocab)
    out = {}
    for m in TARGETS:
        out[m] = tmp / f"stories260K_{m}.blob"
        write_blob(out[m], cfg, state, vocab, m)
        if m != "f32":  # the same blob in integer mode (flags bit 1)
            out[m + "+int"] = tmp / f"stories260K_{m}_int.blob"
            write_blob(out[m + "+int"], cfg, state, vocab, m, int_attention=True)
    return out


def runtime_ram_bytes(blob: Path) -> int:
    from engine.blob.format import read_blob
    from engine.config.budget import runtime_ram

    h = read_blob(blob).header
    return runtime_ram(read_blob(blob).config(), h.quant)["total"]


def cflags() -> str:
    m = re.search(r"^CFLAGS\s*:=\s*(.*)$", (FIRMWARE / "Makefile").read_text(), re.M)
    return m.group(1).strip() if m else "?"


def bench_wall(blob: Path, n: int = 200) -> list[float]:
    """tok/s of 3 runs, sorted (min, median, max)."""
    out = []
    for _ in range(3):
        r = subprocess.run([str(BOARD), "--blob", str(blob), "--bench", str(n), "--prompt-ids", PROMPT],
                           capture_output=True, text=True, check=True)
        out.append(float(re.search(r"tok_per_s=([\d.]+)", r.stdout).group(1)))
    return sorted(out)


def callgrind_ir(blob: Path, n: int, tmp: Path) -> int:
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p",
                        str(BOARD), "--blob", str(blob), "--bench", str(n), "--prompt-ids", PROMPT],
                       capture_output=True, text=True, check=True)
    return int(re.search(r"Collected\s*:\s*(\d+)", r.stderr).group(1))


def rv32_ir(blob: Path, n: int = 200) -> float | None:
    """Mean rv32 instructions/token over tokens 100..199 on the emulated board (None if no qemu)."""
    if shutil.which("qemu-system-riscv32") is None or shutil.which("riscv64-unknown-elf-gcc") is None:
        return None
    ids = [int(t) for t in PROMPT.split(",")]
    with EmulatedBoard(blob) as eb, DeviceLink(eb.port, timeout=600) as link:
        irs = [e.instructions for e in link.generate(prompt_ids=ids, max_tokens=n, temperature=0)
               if isinstance(e, TokenEvent)]
    tail = irs[100:200] if len(irs) >= 200 else irs[len(irs) // 2:]
    return sum(tail) / len(tail)


def run_fuzz(seconds: int) -> None:
    subprocess.run(["make", "-C", str(FIRMWARE), "fuzz"], check=True)
    seconds = max(seconds, 60)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("blob", "blob_portable", "protocol"):
            corpus = Path(tmp) / name
            shutil.copytree(FIRMWARE / "fuzz" / "corpus" / name.removesuffix("_portable"), corpus)
            env = {"TL_FUZZ_BLOB": str(FIRMWARE / "fuzz" / "corpus" / "blob" / "transformer_int8.blob")}
            r = subprocess.run([str(FIRMWARE / "build" / "fuzz" / f"fuzz_{name}"),
                                f"-max_total_time={seconds}", "-max_len=65536",
                                f"-artifact_prefix={tmp}/", str(corpus)],
                               capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"})
            runs = re.findall(r"Done (\d+) runs in (\d+) second", r.stderr)
            status = "ok" if r.returncode == 0 else f"FAILED (rc {r.returncode})"
            print(f"fuzz_{name}: {status}, {runs[-1][0] if runs else '?'} runs in "
                  f"{runs[-1][1] if runs else '?'} s")
            if r.returncode != 0:
                print(r.stderr[-3000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=0, metavar="SECONDS", help="run each fuzzer this long (>= 60)")
    ap.add_argument("--no-rv32", action="store_true", help="skip the qemu projection")
    args = ap.parse_args()
    subprocess.run(["make", "-C", str(FIRMWARE), "host"], check=True, capture_output=True)
    print(f"flags: {cflags()}  (host x86-64 gcc: SSE2 kernels; rv32: the same flags, portable C)")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        blobs = make_blobs(tmp)
        print(f"{'quant':12} {'blob B':>9} {'RAM B':>7} {'tok/s min/med/max':>20} {'instr/tok':>11} {'vs run.c':>9}"
              f" {'target':>10} {'rv32 ir/tok':>12} {'C3 ms/tok':>10} {'C3 tok/s':>9} {'flash ms':>9}")
        for m, blob in blobs.items():
            tps = bench_wall(blob)
            ir = (callgrind_ir(blob, 200, tmp) - callgrind_ir(blob, 100, tmp)) / 100
            ratio = ir / LLAMA2C_IR
            # the host targets are for the float-accumulating kernels; integer mode is for FPU-less
            # cores (the C3 column), its host figure is shown for completeness
            target_txt = "-" if "+int" in m else f"{TARGETS[m]:.2f}x {'ok' if ratio <= TARGETS[m] else 'MISS'}"
            rv = None if args.no_rv32 else rv32_ir(blob)
            size = blob.stat().st_size
            flash_ms = size / FLASH_BYTES_PER_S * 1e3
            if rv:
                proj = projected_esp32c3(rv)
                ms = proj["ms_per_token"]
                rv_txt = f"{rv / 1e6:10.2f} M {ms:10.1f} {1e3 / max(ms, flash_ms):9.2f}"
            else:
                rv_txt = f"{'-':>12} {'-':>10} {'-':>9}"
            tps_txt = "/".join(f"{v:.0f}" for v in (tps[0], statistics.median(tps), tps[-1]))
            print(f"{m:12} {size:9d} {runtime_ram_bytes(blob):7d} {tps_txt:>20} {ir / 1e6:9.3f} M"
                  f" {ratio:8.2f}x {target_txt:>10} {rv_txt} {flash_ms:9.2f}")
        print(f"\nreference: llama2.c run.c stories260K greedy gcc -O3 ~ {LLAMA2C_IR / 1e6:.2f} M instr/token;"
              f" C3 projection = rv32 instructions x CPI {CPI_C3} / 160 MHz, tok/s also bounded by"
              f" streaming the blob from flash at {FLASH_BYTES_PER_S / 1e6:.0f} MB/s (flash ms column);"
              f" +int = flags bit 1 (integer mode), product target >= 50 C3 tok/s")
    if args.fuzz:
        run_fuzz(args.fuzz)


if __name__ == "__main__":
    main()
