"""Quality per CPU minute: train the esp32-260k preset for a time budget and report the validation loss
and bits per byte reached; with `--llama2c DIR`, llama2.c's train.py trained side by side.

    python bench/bench_quality.py [--minutes 20] [--name bench-quality] [--workspace DIR] [--set k=v]
    python bench/bench_quality.py --llama2c ../llama2.c --minutes 5 \
        --corpus /work/shared/data/tinystories_c.txt --tokenizer /work/shared/data/llama2c/tok512.model

Alone, the run is an ordinary experiment (train subprocess, metrics.jsonl), stopped with SIGTERM at the
time budget; `elapsed_s` in metrics is training time (eval and checkpoint writes excluded); the
bench's own lr/warmup overrides apply.

Side by side (`--llama2c`), ours trains with the preset's defaults (plus `--set`) and is given the
budget as train.max_minutes, so its lr anneals in the budget's last fifth (`--step-schedule`: by max_steps
like the peer), and llama2.c's train.py gets the same data, tokenizer and, where it has the knob,
the same hyperparameters (shape, batch, seq_len, lr, warmup, max_iters = max_steps, weight decay,
betas, grad clip; its min_lr is fixed at 0). Its data is made by OUR code (the same train/val split
and token ids) and written in its shard format (uint16 .bin files under data/tok{V}/, shard 0 = val)
in a temp folder outside the repo, where its train.py runs as a subprocess: CPU, float32, no
compile, the same thread count. The two run back to back. Both are stopped on training time (each
side's own step times, evaluation excluded); llama2.c checkpoints only at its evals, so it evaluates
(2 batches: its own estimate is not what is compared) and checkpoints every `train.log_every` steps,
and is stopped at its first eval past the budget, as ours is stopped at its first metrics line past
it: both overshoot by at most that many steps. Then both final models are scored by the same
evaluator on the same val windows (ours: the model at the stop; llama2.c: its last checkpoint),
printed side by side with the CPU model and the load averages.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config.presets import preset_config  # noqa: E402
from engine.config.schema import ExperimentConfig, apply_overrides  # noqa: E402
from engine.store.experiments import Store  # noqa: E402
from engine.store.metrics import read_metrics  # noqa: E402
from engine.train.kernels import cpu_model  # noqa: E402

BENCH_OVERRIDES = ["train.max_steps=1000000", "train.eval_every=100", "train.ckpt_every=500",
                   "train.log_every=25", "train.warmup_steps=100", "train.lr=2e-3",
                   "train.min_lr=2e-4", "train.eval_batches=20"]


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def make_workspace(args: argparse.Namespace) -> Path:
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="tinylm-quality-"))
    (ws / "corpora").mkdir(parents=True, exist_ok=True)
    corpus = ws / "corpora" / "tinystories_slice.txt"
    if not corpus.exists():
        corpus.symlink_to(ROOT / "corpora" / "tinystories_slice.txt")
    return ws


def run_ours(ws: Path, name: str, cfg: ExperimentConfig, budget_s: float,
             tokenizer: Path | None) -> tuple[object, float]:
    """Train our experiment for `budget_s` seconds of training time; returns (experiment, wall s)."""
    store = Store(ws / "experiments")
    exp = store.create(name, cfg)
    if tokenizer is not None:
        shutil.copyfile(tokenizer, exp.path("tokenizer.model"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "engine.train", str(exp.folder), "--workspace",
                             str(ws)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=open(exp.path("train.log"), "ab"), stderr=subprocess.STDOUT)
    while proc.poll() is None:
        recs = read_metrics(exp.path("metrics.jsonl"))
        if recs and recs[-1]["elapsed_s"] >= budget_s:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return exp, time.perf_counter() - t0


def report_alone(ws: Path, exp, cfg: ExperimentConfig, minutes: float) -> None:
    from engine.config.workspace import load_workspace
    from engine.data import prepare
    from engine.train.evaluate import bits_per_byte, validation_bytes

    w = load_workspace(ws)
    data = prepare(exp.folder, cfg, w.resolve(cfg.data.corpus), w.root / "cache")
    n_bytes, n_tokens = validation_bytes(cfg, w), len(data.val_tokens)
    evals = [r for r in read_metrics(exp.path("metrics.jsonl")) if r.get("val_loss") is not None]
    print(f"workspace {ws}, experiment {exp.name}; {n_tokens} val tokens, {n_bytes} val bytes")
    for m in sorted({1, 2, 5, 10, 20, 30, 60, minutes}):
        if m > minutes + 0.01:
            break
        upto = [r for r in evals if r["elapsed_s"] <= m * 60]
        if not upto:
            continue
        best = min(r["val_loss"] for r in upto)
        last = upto[-1]
        print(f"{m:>4g} min: step {last['step']:>6}, tokens {last['tokens_seen']:>10,}, "
              f"best val loss {best:.4f}, bits/byte {bits_per_byte(best, n_tokens, n_bytes):.4f}, "
              f"perplexity {math.exp(best):.2f}")
    speeds = sorted(r["tok_per_s"] for r in read_metrics(exp.path("metrics.jsonl"))
                    if r.get("tok_per_s"))
    if speeds:
        print(f"training tok/s: min {speeds[0]:,.0f}, median {speeds[len(speeds) // 2]:,.0f}, "
              f"max {speeds[-1]:,.0f}")


# ---- llama2.c side by side --------------------------------------------------------------------

def write_llama2c_shards(folder: Path, vocab: int, train_tokens, val_tokens) -> Path:
    """Our token ids in llama2.c's pretokenized format: data/tok{V}/data00.bin (its val shard: it
    holds shard 0 out) and data01.bin (train), raw uint16."""
    import numpy as np

    out = folder / "data" / f"tok{vocab}"
    out.mkdir(parents=True, exist_ok=True)
    np.asarray(val_tokens, dtype=np.uint16).tofile(out / "data00.bin")
    np.asarray(train_tokens, dtype=np.uint16).tofile(out / "data01.bin")
    return out


def llama2c_args(cfg: ExperimentConfig, eval_interval: int) -> list[str]:
    """Its train.py flags (configurator.py `--key=value`), equal to ours where it has the knob."""
    m, t = cfg.model, cfg.train
    flags = dict(vocab_source="custom", vocab_size=cfg.tokenizer.vocab_size, dim=m.dim,
                 n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                 multiple_of=m.multiple_of, max_seq_len=m.seq_len, dropout=float(m.dropout),
                 batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
                 learning_rate=float(t.lr), max_iters=t.max_steps, warmup_iters=t.warmup_steps,
                 weight_decay=float(t.weight_decay), beta1=float(t.beta1), beta2=float(t.beta2),
                 grad_clip=float(t.grad_clip), device="cpu", dtype="float32", compile=False,
                 eval_interval=eval_interval, eval_iters=2, always_save_checkpoint=True,
                 log_interval=1, out_dir="out")
    return [f"--{k}={v}" for k, v in flags.items()]


ITER_RE = re.compile(r"^(\d+) \| loss ([\d.]+) \| lr \S+ \| ([\d.]+)ms")
EVAL_RE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def run_llama2c(peer: Path, work: Path, cfg: ExperimentConfig, budget_s: float, threads: int,
                eval_interval: int) -> dict:
    """Its train.py in `work` until its training time passes the budget and one more eval ran."""
    (work / "configurator.py").unlink(missing_ok=True)
    (work / "configurator.py").symlink_to(peer / "configurator.py")  # it exec()s it from the cwd
    log_path = work / "train.log"
    path = [str(peer)]
    shims = {  # its tinystories.py imports these only to download and pretokenize TinyStories
        "requests": "def get(*a, **k):\n    raise RuntimeError('no downloads in the bench')\n",
        "tqdm": "def tqdm(iterable=None, *a, **k):\n    return iterable\n"}
    for name, body in shims.items():
        if importlib.util.find_spec(name) is None:
            shim = work / "shim"
            shim.mkdir(exist_ok=True)
            (shim / f"{name}.py").write_text('"""Import-only stand-in: the bench never downloads '
                                             '(its data is prepared locally)."""\n' + body)
            if str(shim) not in path:
                path.append(str(shim))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(path)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", str(peer / "train.py"), *llama2c_args(cfg, eval_interval)],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    train_s, iters, evals, dts = 0.0, 0, [], []
    past_budget_eval = False
    with open(log_path, "w", buffering=1) as log:  # line-buffered: follow it with tail -f
        for line in proc.stdout:  # type: ignore[union-attr]
            log.write(line)
            if (mi := ITER_RE.match(line)) is not None:
                it, dt = int(mi.group(1)), float(mi.group(3)) / 1000
                if it % eval_interval == 0:  # this step's time includes the eval: not training
                    dt = sorted(dts[-20:])[len(dts[-20:]) // 2] if dts else 0.0
                else:
                    dts.append(dt)
                train_s += dt
                iters = it + 1
                if past_budget_eval:  # the eval's checkpoint is written before this step ran
                    break
            elif (me := EVAL_RE.match(line)) is not None:
                evals.append((int(me.group(1)), train_s, float(me.group(3))))
                if train_s >= budget_s:
                    past_budget_eval = True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"iters": iters, "train_s": train_s, "wall_s": time.perf_counter() - t0, "evals": evals,
            "ckpt": work / "out" / "ckpt.pt", "returncode": proc.returncode,
            "median_dt": sorted(dts)[len(dts) // 2] if dts else float("nan")}


def score(state: dict, cfg: ExperimentConfig, val_tokens, max_windows: int = 256) -> tuple[float, int]:
    """Mean loss of a state dict (ours or llama2.c's: the same names) over the first val windows."""
    import numpy as np
    import torch

    from engine.models import build_model

    model = build_model(cfg)
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise SystemExit(f"checkpoint lacks {sorted(missing)[:3]}")
    model.eval()
    tokens = np.asarray(val_tokens, dtype=np.int64)
    T = cfg.model.seq_len
    n = max(1, min(max_windows, (len(tokens) - 1) // T))
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, 16):
            starts = np.arange(i, min(n, i + 16)) * T
            win = torch.from_numpy(tokens[starts[:, None] + np.arange(T + 1)])
            _, loss = model(win[:, :-1], win[:, 1:])
            nats += loss.item() * win[:, 1:].numel()
            count += win[:, 1:].numel()
    return nats / count, count


def side_by_side(args: argparse.Namespace) -> None:
    import torch

    from engine.config.workspace import load_workspace
    from engine.data import prepare
    from engine.store.checkpoint import load_checkpoint
    from engine.train.evaluate import bits_per_byte, validation_bytes

    peer = Path(args.llama2c).expanduser().resolve()
    if not (peer / "train.py").is_file():
        raise SystemExit(f"no train.py in {peer}: pass a checkout of karpathy/llama2.c")
    ws = make_workspace(args)
    overrides = [f"train.threads={args.threads}"]
    if args.corpus:
        overrides.append(f"data.corpus={Path(args.corpus).resolve()}")
    cfg = apply_overrides(preset_config(args.preset), overrides + args.set)
    budget = args.minutes * 60
    print(f"{cpu_model()}; torch {torch.__version__}; {args.threads} threads; {args.preset} "
          f"defaults + {args.set or 'nothing'}; budget {args.minutes:g} min of training time; "
          f"peer {peer}")
    t = cfg.train
    print(f"shared hyperparameters: batch {t.batch_size}x{cfg.model.seq_len}, lr {t.lr:g} "
          f"(ours min_lr {t.min_lr:g}, llama2.c 0), warmup {t.warmup_steps}, max_steps "
          f"{t.max_steps}, wd {t.weight_decay:g}, betas {t.beta1:g}/{t.beta2:g}, clip {t.grad_clip:g}")

    # Ours is told the budget (train.max_minutes: its lr anneals in the last fifth and the run ends
    # itself); llama2.c has no such knob and keeps max_iters = max_steps. --step-schedule gives
    # ours the same step schedule instead.
    ours_cfg = cfg if args.step_schedule else apply_overrides(
        cfg, [f"train.max_minutes={args.minutes:g}", "train.max_steps=1000000"])
    print("ours' schedule: " + (f"by steps (max_steps {t.max_steps})" if args.step_schedule else
                                f"by the clock (train.max_minutes={args.minutes:g})")
          + f"; llama2.c's: max_iters {t.max_steps}")

    # our data, made once by our code (tokenizer copied in, split by our seed), shared by both sides
    store = Store(ws / "experiments")
    prep = store.create(f"{args.name}-data", cfg)
    if args.tokenizer:
        shutil.copyfile(args.tokenizer, prep.path("tokenizer.model"))
    w = load_workspace(ws)
    data = prepare(prep.folder, cfg, w.resolve(cfg.data.corpus), w.root / "cache")
    n_bytes, n_val = validation_bytes(cfg, w), len(data.val_tokens)
    work = Path(tempfile.mkdtemp(prefix="tinylm-llama2c-"))  # outside the repo
    write_llama2c_shards(work, cfg.tokenizer.vocab_size, data.train_tokens, data.val_tokens)
    print(f"data: {len(data.train_tokens):,} train / {n_val:,} val tokens (ours: {ws}, llama2.c "
          f"shards: {work}/data)")

    rows = []
    order = ["ours", "llama2c"] if not args.peer_first else ["llama2c", "ours"]
    results: dict[str, dict] = {}
    for side in order:
        before = load()
        if side == "ours":
            exp, wall = run_ours(ws, args.name, ours_cfg, budget, Path(args.tokenizer)
                                 if args.tokenizer else prep.path("tokenizer.model"))
            recs = read_metrics(exp.path("metrics.jsonl"))
            ck = load_checkpoint(exp.path("ckpt.pt"))
            loss, scored = score(ck["model"], cfg, data.val_tokens)
            evals = [r for r in recs if r.get("val_loss") is not None]
            speeds = sorted(r["tok_per_s"] for r in recs if r.get("tok_per_s"))
            results[side] = dict(steps=ck["step"], train_s=float(ck["elapsed_s"]), wall_s=wall,
                                 own_val=evals[-1]["val_loss"] if evals else float("nan"),
                                 loss=loss, tok_s=speeds[len(speeds) // 2] if speeds else 0.0,
                                 load=f"{before} -> {load()}")
            meta = Store(ws / "experiments").load(args.name).meta
            k = meta.get("kernels") or {}
            results[side]["kernels"] = (f"attention={k.get('attention')} ffn={k.get('ffn')} "
                                        f"adamw={k.get('optimizer')} ({k.get('source')})")
        else:
            r = run_llama2c(peer, work, cfg, budget, args.threads,
                            args.eval_interval or cfg.train.log_every)
            if not r["ckpt"].exists():
                raise SystemExit(f"llama2.c wrote no checkpoint (exit {r['returncode']}); see "
                                 f"{work / 'train.log'}")
            ck = torch.load(r["ckpt"], map_location="cpu", weights_only=False)
            loss, scored = score(ck["model"], cfg, data.val_tokens)
            tokens_per_iter = cfg.train.batch_size * cfg.model.seq_len * cfg.train.grad_accum
            results[side] = dict(steps=int(ck["iter_num"]), train_s=r["train_s"], wall_s=r["wall_s"],
                                 own_val=r["evals"][-1][2] if r["evals"] else float("nan"),
                                 loss=loss, tok_s=tokens_per_iter / r["median_dt"],
                                 load=f"{before} -> {load()}")
        rows.append(side)
    print(f"\nscored on the same {scored:,} val tokens (first {scored // cfg.model.seq_len} windows "
          f"of {cfg.model.seq_len}), {n_val:,} val tokens / {n_bytes:,} bytes in all")
    print(f"{'':8s} {'steps':>6s} {'train s':>8s} {'wall s':>7s} {'tok/s':>7s} {'own val':>8s} "
          f"{'val loss':>9s} {'bits/B':>7s}  load (1/5/15 min) before -> after")
    for side in rows:
        r = results[side]
        print(f"{side:8s} {r['steps']:>6d} {r['train_s']:>8.1f} {r['wall_s']:>7.1f} "
              f"{r['tok_s']:>7.0f} {r['own_val']:>8.4f} {r['loss']:>9.4f} "
              f"{bits_per_byte(r['loss'], n_val, n_bytes):>7.4f}  {r['load']}")
    a, b = results["ours"]["loss"], results["llama2c"]["loss"]
    print(f"ours - llama2.c val loss: {a - b:+.4f} ({'ours lower' if a < b else 'llama2.c lower'}); "
          f"ours kernels: {results['ours']['kernels']}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--name", default="bench-quality")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--preset", default="esp32-260k")
    p.add_argument("--llama2c", default=os.environ.get("LLAMA2C_DIR"),
                   help="a checkout of karpathy/llama2.c: train its train.py side by side")
    p.add_argument("--corpus", help="corpus file (default: the shipped slice)")
    p.add_argument("--tokenizer", help="a sentencepiece .model both sides use (default: trained)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-interval", type=int, default=0,
                   help="llama2.c's eval_interval (default: our train.log_every, so both overshoot "
                   "the budget by at most that many steps)")
    p.add_argument("--peer-first", action="store_true", help="run llama2.c first")
    p.add_argument("--step-schedule", action="store_true",
                   help="side by side: ours anneals by max_steps too, not by the time budget")
    p.add_argument("--keep", action="store_true", help="keep llama2.c's temp folder")
    args = p.parse_args()
    if args.llama2c:
        side_by_side(args)
        return
    ws = make_workspace(args)
    if args.corpus:
        args.set = [f"data.corpus={Path(args.corpus).resolve()}"] + args.set
    cfg = apply_overrides(preset_config(args.preset), BENCH_OVERRIDES + args.set)
    exp, _ = run_ours(ws, args.name, cfg, args.minutes * 60,
                      Path(args.tokenizer) if args.tokenizer else None)
    report_alone(ws, exp, cfg, args.minutes)


if __name__ == "__main__":
    main()
