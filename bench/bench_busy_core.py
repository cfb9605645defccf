"""Training under a busy core: tokens/s of a real run (`python -m engine.train`, the esp32-260k
preset, 16x256) alone and beside a busy loop (`python -c "while True: pass"`), per thread policy.

Why: with 2 OpenMP threads spin-waiting on each other, a run that does ~22,000 tok/s alone fell to
~300 tok/s when another process took one core (design.md, 2026-11-28). The app, a virtual board, the
rv32 emulator or a second run all take CPU beside training.

    .venv/bin/python bench/bench_busy_core.py                    # 3 rounds, 15 s of training a run
    .venv/bin/python bench/bench_busy_core.py --rounds 5 --seconds 20 --policies today,engine

Policies (each run is a fresh experiment started as the runner starts one):
- today:   train.threads = 2, the inherited environment (what runs did before this benchmark)
- passive: train.threads = 2, OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning)
- one:     train.threads = 1
- engine:  train.threads = 0 (engine/train/runtime.py ThreadGovernor picks 2 or 1 threads by
  measured speed) and the environment engine/train/runner.py gives a run: the default
- adaptive-passive: the governor with OMP_WAIT_POLICY=PASSIVE

The machine is shared: runs are interleaved (each round runs every policy alone and busy, in turn),
and the figures are medians with min-max, plus the ratios the issue asks for: busy/alone of each
policy, and alone/today-alone. tok/s of a run = tokens trained between its first and last metrics
record divided by the training time between them (elapsed_s: evaluation and checkpoints excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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
from engine.train.runner import run_env  # noqa: E402

POLICIES = {
    "today": (2, {}),
    "passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "one": (1, {}),
    "adaptive-passive": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "engine": (0, None),  # None: run_env(), as the runner starts a run
}
OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def workspace(tmp: Path) -> Store:
    (tmp / "corpora").mkdir(parents=True)
    shutil.copy(ROOT / "corpora" / "tinystories_slice.txt", tmp / "corpora")
    return Store(tmp / "experiments")


def run_env_for(policy: str) -> dict[str, str]:
    threads, extra = POLICIES[policy]
    if extra is None:
        return run_env()
    env = {k: v for k, v in os.environ.items() if k not in OMP_KEYS}
    env["PYTHONPATH"] = str(ROOT)
    return env | extra


def one_run(store: Store, name: str, policy: str, busy: bool, seconds: float) -> float:
    """tok/s of one fresh run of `seconds` of training (after its first metrics record)."""
    threads = POLICIES[policy][0]
    cfg = apply_overrides(preset_config("esp32-260k"), [
        f"train.threads={threads}", "train.max_steps=100000", "train.log_every=2",
        "train.eval_every=100000", "train.ckpt_every=100000"])
    exp = store.create(name, cfg)
    if (store.root / "_tok" / "tokenizer.model").exists():  # the same tokenizer, trained once
        shutil.copy(store.root / "_tok" / "tokenizer.model", exp.path("tokenizer.model"))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    with open(exp.path("train.log"), "wb") as log:  # the run's log: its thread decisions
        proc = subprocess.Popen([sys.executable, "-m", "engine.train", str(exp.folder),
                                 "--workspace", str(store.root.parent)],
                                stdout=log, stderr=subprocess.STDOUT,
                                env=run_env_for(policy), start_new_session=True)
    try:
        metrics = exp.path("metrics.jsonl")
        deadline = time.monotonic() + 600
        while not read_metrics(metrics) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        started = time.monotonic()
        while time.monotonic() - started < seconds and proc.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    recs = read_metrics(exp.path("metrics.jsonl"))
    if not (store.root / "_tok").exists() and exp.path("tokenizer.model").exists():
        (store.root / "_tok").mkdir()
        shutil.copy(exp.path("tokenizer.model"), store.root / "_tok" / "tokenizer.model")
    if len(recs) < 2:  # under a collapse, fewer than two records in the time: one step's rate
        return float(recs[-1]["tok_per_s"]) if recs else 0.0
    first, last = recs[0], recs[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):8,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="training time measured per run")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--conditions", default="alone,busy", help="alone,busy or one of them")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = workspace(Path(tmp))
        n = 0
        for r in range(args.rounds):
            for policy in policies:
                for cond in args.conditions.split(","):
                    n += 1
                    rate = one_run(store, f"r{n}", policy, cond == "busy", args.seconds)
                    rates.setdefault((policy, cond), []).append(rate)
                    load = os.getloadavg()[0]  # how shared the machine was (ours: 1 to 2)
                    print(f"round {r + 1} {policy:16s} {cond:5s} {rate:9,.0f} tok/s  "
                          f"load {load:.1f}", flush=True)
    print(f"\n{'policy':16s} {'alone tok/s (min-max)':>26s} {'busy tok/s (min-max)':>26s}  busy/alone"
          "  alone/today")
    today = statistics.median(rates[("today", "alone")]) if ("today", "alone") in rates else None
    for policy in policies:
        alone, busy = rates.get((policy, "alone")), rates.get((policy, "busy"))
        ratio = (f"{statistics.median(busy) / statistics.median(alone):9.2f}" if alone and busy
                 else "        -")
        vs = f"{statistics.median(alone) / today:10.2f}" if today and alone else "         -"
        print(f"{policy:16s} {fmt(alone) if alone else '-':>26s} {fmt(busy) if busy else '-':>26s}"
              f"  {ratio}  {vs}")
    print(json.dumps({f"{p}/{c}": [round(x) for x in v] for (p, c), v in rates.items()}))


if __name__ == "__main__":
    main()
