"""Three-way chat latency: demo-260k (int8 blob) on the virtual board, with PyTorch and
the reference beside it (engine/chat/threeway.py chat_turn: what `tinylm chat` and the
app run).

    .venv/bin/python bench/bench_chat.py [--turns 5] [--max-tokens 64] [--temperature 0]

- cold: `--port virtual`, a board started for the turn and the checkpoint loaded inside
  it (torch itself is already imported, by the export before it).
- warm: one long-lived DeviceLink, as the app keeps it; the model cached. Medians.
- setup: tokenizer/blob checks, board start (cold only) and @INFO, before the streams.
- per stream: first = time to first token from the start of the streams; tok/s from the
  first to the last token on the host clock; the board also by its own clock (µs summed
  over its @TOK lines). "to device token" = setup + device first: what a user waits.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.blob.export import export  # noqa: E402
from engine.chat.threeway import STREAMS, chat_turn, open_board  # noqa: E402
from engine.config.workspace import load_workspace  # noqa: E402
from engine.infer.sample import SamplingParams  # noqa: E402
from engine.store.experiments import Store  # noqa: E402

PROMPT = "Once upon a time"


def med(turns: list, f) -> float:
    vals = [v for v in (f(t) for t in turns) if v is not None]
    return statistics.median(vals) if vals else float("nan")


def row(label: str, turns: list) -> str:
    setup = med(turns, lambda t: t.setup_s) * 1e3
    wait = med(turns, lambda t: t.setup_s + t.streams["device"].first_token_s) * 1e3
    cells = [f"setup {setup:6.1f} ms", f"to device token {wait:6.1f} ms"]
    for name in STREAMS:
        first = med(turns, lambda t, n=name: t.streams[n].first_token_s) * 1e3
        rate = med(turns, lambda t, n=name: t.streams[n].tok_per_s)
        cells.append(f"{name} first {first:6.1f} ms {rate:7.1f} tok/s")
    board = med(turns, lambda t: t.streams["device"].board_tok_per_s)
    return f"{label:<5} " + " | ".join(cells) + f" | board clock {board:,.0f} tok/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = root / "experiments" / "demo"
        shutil.copytree(ROOT / "experiments" / "demo-260k", demo)
        ws = load_workspace(root)
        blob, _ = export(Store(ws.experiments).load("demo"), "int8", force=True)
        exp = Store(ws.experiments).load("demo")
        params = SamplingParams(temperature=args.temperature, seed=7,
                                max_tokens=args.max_tokens)
        cold = chat_turn(exp, ws, PROMPT, params, quant="int8", port="virtual",
                         record=False)
        with open_board(exp, "virtual", "int8", blob) as link:
            warm = [chat_turn(exp, ws, PROMPT, params, quant="int8", link=link,
                              port="virtual", record=False) for _ in range(args.turns)]
        same = all(t.divergence is None for t in [cold, *warm])
        print(f"demo-260k int8, {args.max_tokens} tokens, temperature "
              f"{args.temperature}, prompt {PROMPT!r}; device = reference: {same}")
        print(row("cold", [cold]))
        print(row("warm", warm))


if __name__ == "__main__":
    main()
