"""Three-way chat latency: demo-260k (int8 blob) on the virtual board, PyTorch and the reference
beside it (engine/chat/threeway.py chat_turn, the path `tinylm chat` and the app take).

    .venv/bin/python bench/bench_chat.py [--turns 5] [--max-tokens 64] [--torch-threads N]

- cold turn: `--port virtual` (a board started for the turn), the checkpoint loaded inside the turn;
  torch is already imported (by the export before it), which a first `tinylm chat` also pays.
- warm turns: one long-lived DeviceLink (as the app keeps), model cached; median over the turns.
- per stream: time to first token (from the start of the streams), ms/token between the first and
  the last token (host clock), tok/s; the device also with the board's own clock (µs per @TOK).
- setup: tokenizer and blob checks, board start (cold) and @INFO, before the streams start.
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


def row(label: str, turns: list) -> str:
    def med(f):
        vals = [v for v in (f(t) for t in turns) if v is not None]
        return statistics.median(vals) if vals else float("nan")
    cells = [f"setup {med(lambda t: t.setup_s) * 1e3:7.1f} ms"]
    for name in STREAMS:
        ttft = med(lambda t, n=name: t.streams[n].first_token_s) * 1e3
        rate = med(lambda t, n=name: t.streams[n].tok_per_s)
        cells.append(f"{name} first {ttft:7.1f} ms {rate:7.1f} tok/s")
    board = med(lambda t: t.streams["device"].board_tok_per_s)
    return f"{label:<6} " + " | ".join(cells) + f" | board clock {board:,.0f} tok/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws_dir = Path(tmp)
        shutil.copytree(ROOT / "experiments" / "demo-260k", ws_dir / "experiments" / "demo")
        ws = load_workspace(ws_dir)
        exp = Store(ws.experiments).load("demo")
        params = SamplingParams(temperature=args.temperature, seed=7, max_tokens=args.max_tokens)
        blob, _ = export(exp, "int8", force=True)
        exp = Store(ws.experiments).load("demo")
        if args.torch_threads:
            import torch
            torch.set_num_threads(args.torch_threads)
        cold = chat_turn(exp, ws, PROMPT, params, quant="int8", port="virtual", record=False)
        print(f"demo-260k int8, {args.max_tokens} tokens, temperature {args.temperature}, "
              f"prompt {PROMPT!r}; device = reference: {cold.divergence is None}")
        print(row("cold", [cold]))
        with open_board(exp, "virtual", "int8", blob) as link:
            warm = [chat_turn(exp, ws, PROMPT, params, quant="int8", link=link, port="virtual",
                              record=False) for _ in range(args.turns)]
        print(row("warm", warm))
        assert all(t.divergence is None for t in warm)


if __name__ == "__main__":
    main()
