"""Does the serial monitor keep up, and how long until the first device token?

1. Monitor ingest: the virtual board floods N numbered lines (`--flood N`, `seq:12345 val:42`) as fast
   as the pty takes them; a BoardSession + Monitor (engine) and `tinylm monitor` (the CLI, writing to
   a pipe) read them. Lines/s from the first to the last line, and the lines lost, counted by sequence
   number (goal: >= 2,000 lines/s, none lost). Then a paced flood at 2,000 lines/s for a few seconds:
   still none lost. A pty pushes back on a slow reader (a real UART does not), so the full-speed
   figure is the host's ingest rate.
2. Chat latency: time from DeviceLink.generate() to the first TokenEvent on the virtual board
   (stories260K int8, a 5-token prompt), median and p90 of R runs — idle, and while the board floods
   2,000 noise lines/s between the tokens. `prompt_us` (board clock) splits it into prompt compute
   and host + pty round trip.

Usage: python bench/bench_monitor.py [N_LINES] [RUNS]
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.device.link import DeviceLink, GenerationSummary, TokenEvent  # noqa: E402
from engine.device.monitor import Monitor  # noqa: E402
from engine.device.session import BoardSession  # noqa: E402
from engine.device.virtual import VirtualBoard  # noqa: E402

PROMPT = [1, 403, 407, 261, 378]


def stories_blob(folder: Path) -> Path:
    from engine.blob.format import write_blob
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import load_vocab

    src = REPO / "tests" / "data" / "llama2c"
    f, state = read_llama2c(src / "stories260K.bin")
    vocab = load_vocab(src / "tok512.model")
    path = folder / "stories260K_int8.blob"
    write_blob(path, config_from_llama2c(f, vocab), state, vocab, "int8")
    return path


def seq_of(text: str) -> int | None:
    return int(text.split()[0][4:]) if text.startswith("seq:") else None


def engine_ingest(blob: Path, n: int, rate: int = 0) -> tuple[float, int, int]:
    """(lines/s, lines missing by seq, monitor's dropped counter) through Session + Monitor."""
    with VirtualBoard(blob, flood=n, flood_rate=rate) as vb, BoardSession(vb.port) as s, \
            Monitor(s) as m:
        seen: list[tuple[float, int]] = []
        deadline = time.monotonic() + 30 + (n / rate if rate else 0)
        while (not seen or seen[-1][1] < n - 1) and time.monotonic() < deadline:
            m.wait(0.2)
            seen += [(line.t, q) for line in m.take() if (q := seq_of(line.text)) is not None]
        dropped = m.stats().dropped
    missing = n - len({q for _, q in seen})
    span = seen[-1][0] - seen[0][0] if len(seen) > 1 else float("nan")
    return (len(seen) - 1) / span, missing, dropped


def cli_ingest(blob: Path, n: int) -> tuple[float, int]:
    """(lines/s, lines missing) through `tinylm monitor` printing to a pipe."""
    with VirtualBoard(blob, flood=n) as vb, tempfile.TemporaryDirectory() as ws:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", ws, "monitor", "--port",
                                 vb.port, "--no-save"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
        buf, seqs, t_first, t_last = b"", set(), 0.0, 0.0
        deadline = time.monotonic() + 60
        while (n - 1) not in seqs and time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], 0.2)[0]:
                continue
            buf += os.read(proc.stdout.fileno(), 1 << 16)
            *lines, buf = buf.split(b"\n")
            now = time.monotonic()
            for line in lines:
                if line.startswith(b"seq:"):
                    seqs.add(int(line.split()[0][4:]))
                    t_first = t_first or now
                    t_last = now
        proc.terminate()
        proc.wait(10)
    return (len(seqs) - 1) / (t_last - t_first), n - len(seqs)


def first_token_ms(blob: Path, runs: int, flood_rate: int = 0) -> tuple[list[float], list[float]]:
    """Milliseconds to the first TokenEvent, and the board's prompt_us (ms), per run."""
    flood = flood_rate * 3600 if flood_rate else 0
    with VirtualBoard(blob, flood=flood, flood_rate=flood_rate) as vb, DeviceLink(vb.port) as link:
        link.info()
        total, prompt = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            first = None
            for ev in link.generate(prompt_ids=PROMPT, max_tokens=4):
                if isinstance(ev, TokenEvent) and first is None:
                    first = time.perf_counter() - t0
                elif isinstance(ev, GenerationSummary):
                    prompt.append(ev.prompt_us / 1e3)
            total.append(1e3 * first)
    return total, prompt


def stats_ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs):.2f} ms, p90 {xs[int(0.9 * (len(xs) - 1))]:.2f} ms"


def main(n: int = 100_000, runs: int = 50) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        blob = stories_blob(Path(tmp))
        rate, missing, dropped = engine_ingest(blob, n)
        print(f"monitor ingest (engine, full speed): {rate:,.0f} lines/s over {n:,} lines, "
              f"{missing} missing by seq, dropped counter {dropped}")
        rate, missing = cli_ingest(blob, n)
        print(f"monitor ingest (tinylm monitor -> pipe): {rate:,.0f} lines/s, {missing} missing")
        rate, missing, dropped = engine_ingest(blob, 10_000, rate=2000)
        print(f"monitor paced at 2,000 lines/s: {rate:,.0f} lines/s received, {missing} missing, "
              f"dropped counter {dropped}")
        total, prompt = first_token_ms(blob, runs)
        print(f"first device token (stories260K int8, 5-token prompt, {runs} runs): {stats_ms(total)}"
              f"; board prompt compute median {statistics.median(prompt):.2f} ms")
        total, _ = first_token_ms(blob, runs, flood_rate=2000)
        print(f"first device token while the board prints 2,000 noise lines/s: {stats_ms(total)}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
