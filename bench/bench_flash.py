"""Flash throughput through esptool's Python API into the download-mode virtual board.

    .venv/bin/python bench/bench_flash.py            # stories260K f32 (1 MB) and int8 (0.3 MB)

- What is timed: `FlashResult.write_seconds`, i.e. inside esptool's write_flash (FLASH_BEGIN with its
  erase, every FLASH_DATA / FLASH_DEFL_DATA block acknowledged by the ROM emulator, and the
  SPI_FLASH_MD5 check); connecting, chip detection and the INFO check after the reset are not.
- KB/s = blob bytes (uncompressed) / that time, median of 3 flashes, compressed (zlib level 9, as
  esptool sends it) and not. ROM loader (no stub): 1 KB blocks, one round trip each.
- A pty moves bytes at memory speed and the board does not emulate a UART baud rate, so these
  figures are the cost of esptool + the Python ROM emulator, not of a real board: at 115200 baud a
  real ESP32 ROM writes ~10 KB/s uncompressed (460800: ~40 KB/s), more with compression.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.device.download_board import DownloadModeBoard  # noqa: E402
from engine.device.flash import flash_blob  # noqa: E402

DATA = ROOT / "tests" / "data" / "llama2c"  # stories260K + tok512, shipped


def make_blobs(tmp: Path) -> dict[str, Path]:
    from engine.blob.format import write_blob
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import load_vocab

    f, state = read_llama2c(DATA / "stories260K.bin")
    vocab = load_vocab(DATA / "tok512.model")
    cfg = config_from_llama2c(f, vocab)
    blobs = {}
    for quant in ("f32", "int8"):
        blobs[quant] = tmp / f"stories260K.{quant}.bin"
        write_blob(blobs[quant], cfg, state, vocab, quant)
    return blobs


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        blobs = make_blobs(Path(tmp))
        print(f"{'blob':<8} {'bytes':>9} {'mode':<12} {'KB/s (median of 3)':>18} "
              f"{'write s':>8} {'total s':>8}  verification")
        with DownloadModeBoard(chip="esp32") as board:
            for quant, blob in blobs.items():
                for compress in (False, True):
                    runs = [flash_blob(board.port, blob, board="esp32", compress=compress)
                            for _ in range(3)]
                    rate = statistics.median(r.kb_per_s for r in runs)
                    write_s = statistics.median(r.write_seconds for r in runs)
                    total_s = statistics.median(r.seconds for r in runs)
                    mode = "compressed" if compress else "raw"
                    print(f"{quant:<8} {blob.stat().st_size:>9,} {mode:<12} {rate:>18.1f} "
                          f"{write_s:>8.2f} {total_s:>8.2f}  {runs[-1].verification}")


if __name__ == "__main__":
    main()
