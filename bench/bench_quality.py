"""Quality per CPU minute: train the esp32-260k preset on the shipped TinyStories slice and report the
validation loss and bits per byte reached after 5 and 20 minutes of training time.

Usage: python bench/bench_quality.py [--minutes 20] [--name bench-quality] [--workspace DIR]
The run is an ordinary experiment (train subprocess, metrics.jsonl), stopped with SIGTERM at the time
budget; `elapsed_s` in metrics is training time (eval and checkpoint writes excluded).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config.presets import preset_config  # noqa: E402
from engine.config.schema import apply_overrides  # noqa: E402
from engine.store.experiments import Store  # noqa: E402
from engine.store.metrics import read_metrics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--name", default="bench-quality")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="tinylm-quality-"))
    (ws / "corpora").mkdir(parents=True, exist_ok=True)
    corpus = ws / "corpora" / "tinystories_slice.txt"
    if not corpus.exists():
        corpus.symlink_to(ROOT / "corpora" / "tinystories_slice.txt")
    cfg = apply_overrides(preset_config("esp32-260k"),
                          ["train.max_steps=1000000", "train.eval_every=100",
                           "train.ckpt_every=500", "train.log_every=25", "train.warmup_steps=100",
                           "train.lr=2e-3", "train.min_lr=2e-4", "train.eval_batches=20"] + args.set)
    store = Store(ws / "experiments")
    exp = store.create(args.name, cfg)
    proc = subprocess.Popen([sys.executable, "-m", "engine.train", str(exp.folder), "--workspace",
                             str(ws)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=open(exp.path("train.log"), "ab"), stderr=subprocess.STDOUT)
    budget = args.minutes * 60
    while proc.poll() is None:
        recs = read_metrics(exp.path("metrics.jsonl"))
        if recs and recs[-1]["elapsed_s"] >= budget:
            break
        time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    from engine.config.workspace import load_workspace
    from engine.data import prepare
    from engine.train.evaluate import bits_per_byte, validation_bytes

    w = load_workspace(ws)
    data = prepare(exp.folder, cfg, w.resolve(cfg.data.corpus), w.root / "cache")
    n_bytes, n_tokens = validation_bytes(cfg, w), len(data.val_tokens)
    evals = [r for r in read_metrics(exp.path("metrics.jsonl")) if r.get("val_loss") is not None]
    print(f"workspace {ws}, experiment {args.name}; {n_tokens} val tokens, {n_bytes} val bytes")
    for minutes in sorted({1, 2, 5, 10, 20, 30, 60, args.minutes}):
        if minutes > args.minutes + 0.01:
            break
        upto = [r for r in evals if r["elapsed_s"] <= minutes * 60]
        if not upto:
            continue
        best = min(r["val_loss"] for r in upto)
        last = upto[-1]
        print(f"{minutes:>4g} min: step {last['step']:>6}, tokens {last['tokens_seen']:>10,}, "
              f"best val loss {best:.4f}, bits/byte {bits_per_byte(best, n_tokens, n_bytes):.4f}, "
              f"perplexity {math.exp(best):.2f}")
    speeds = sorted(r["tok_per_s"] for r in read_metrics(exp.path("metrics.jsonl"))
                    if r.get("tok_per_s"))
    if speeds:
        print(f"training tok/s: min {speeds[0]:,.0f}, median {speeds[len(speeds) // 2]:,.0f}, "
              f"max {speeds[-1]:,.0f}")


if __name__ == "__main__":
    main()
