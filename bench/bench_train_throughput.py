"""Training throughput (tokens/s) of engine.models.Transformer vs llama2.c's own model.py.

Why: on a 2-core CPU the tiny model's step time is dominated by per-op overhead, not FLOPs, so the
layout of the forward pass matters. This measures forward + backward + AdamW step on random tokens,
fp32, 2 threads, for our model and for llama2.c's model.py Transformer, at the same shape, steps of
the two interleaved in one process so a noisy neighbour slows both alike. Each side trains as its
own train.py does: ours with the kernels `engine.train.kernels` measures for this machine and shape
(the calibration is run here, uncached, and its time printed), llama2.c with its configure_optimizers
(plain AdamW on a CPU). The load average is printed beside each figure: the machine is shared.

The peer is not part of this project: it is imported from a checkout the user gives.

    git clone https://github.com/karpathy/llama2.c ../llama2.c
    .venv/bin/python bench/bench_train_throughput.py --llama2c ../llama2.c           # 16x256, 64x512
    .venv/bin/python bench/bench_train_throughput.py --llama2c ../llama2.c --quick   # a short run
    .venv/bin/python bench/bench_train_throughput.py --llama2c ../llama2.c --preset host-7m
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.presets import preset_config  # noqa: E402
from engine.config.schema import ExperimentConfig  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.train import kernels as K  # noqa: E402

HOW_TO_GET_PEER = ("llama2.c's model.py is needed: `git clone https://github.com/karpathy/llama2.c DIR` "
                   "and pass `--llama2c DIR` (or set LLAMA2C_DIR)")


def load_llama2c(folder: str | None) -> ModuleType | None:
    """llama2.c's model.py imported from the user's checkout, or None (with the reason printed)."""
    if not folder:
        print(f"skipped: {HOW_TO_GET_PEER}")
        return None
    path = Path(folder).expanduser() / "model.py"
    if not path.is_file():
        print(f"skipped: no model.py in {folder}; {HOW_TO_GET_PEER}")
        return None
    spec = importlib.util.spec_from_file_location("llama2c_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cpu_model = K.cpu_model


# ---- harness -------------------------------------------------------------------------------------

def _config(preset: str, seq_len: int, batch: int) -> ExperimentConfig:
    cfg = preset_config(preset)
    cfg.model.seq_len, cfg.train.batch_size = seq_len, batch
    return cfg


def _peer_args(cfg: ExperimentConfig) -> dict:
    m = cfg.model
    return dict(dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                vocab_size=cfg.tokenizer.vocab_size, hidden_dim=m.ffn_dim(), multiple_of=m.multiple_of,
                max_seq_len=m.seq_len)


def _peer_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """llama2.c's configure_optimizers on a CPU: decay on matrices, plain (not fused) AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))


PEER: ModuleType | None = None  # llama2.c's model module, set by main()


def _ours(cfg: ExperimentConfig, kernels: K.Kernels) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build_model(cfg)
    K.apply(model, kernels)
    cfg.train.lr, cfg.train.weight_decay, cfg.train.beta1, cfg.train.beta2 = 1e-3, 0.1, 0.9, 0.95
    return model, K.adamw([p for p in model.parameters()], cfg, kernels, "cpu")


def _theirs(cfg: ExperimentConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = PEER.Transformer(PEER.ModelArgs(**_peer_args(cfg)))
    return model, _peer_optimizer(model)


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, kind: str):
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if kind == "llama2c":
            model(x, y)
            loss = model.last_loss
        else:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class Runner:
    """One model, its optimizer and a fixed random batch; `timed_step()` times one train step."""

    def __init__(self, kind: str, cfg: ExperimentConfig, kernels: K.Kernels, label: str = ""):
        torch.manual_seed(0)
        batch, seq = cfg.train.batch_size, cfg.model.seq_len
        self.kind, self.tokens, self.label = kind, batch * seq, label or kind
        model, opt = _ours(cfg, kernels) if kind == "ours" else _theirs(cfg)
        model.train()
        self.model, self.opt = model, opt
        self.step = _step_fn(model, opt, kind)
        g = torch.Generator().manual_seed(1)
        vocab = cfg.tokenizer.vocab_size
        self.x = torch.randint(0, vocab, (batch, seq), generator=g)
        self.y = torch.randint(0, vocab, (batch, seq), generator=g)

    def compile(self, on: bool = True) -> None:
        """Steps through torch.compile(model) (same parameters and optimizer), or eager again."""
        model = torch.compile(self.model, dynamic=False) if on else self.model
        self.step = _step_fn(model, self.opt, self.kind)

    def timed_step(self) -> float:
        t0 = time.perf_counter()
        self.step(self.x, self.y)
        return time.perf_counter() - t0


def compile_trial(runner: Runner, mode: str) -> str:
    """Ours as train.py runs it: with train.compile = "auto" a long run times eager steps, compiles,
    times compiled steps and keeps the faster (engine/train/compile_trial.py); here the payback
    threshold is 0 (the figure wanted is the steady state) and one timed step each side will do
    for steps of seconds. "on": compiled without asking."""
    from engine.train.compile_trial import CompileTrial

    if mode == "on":
        t0 = time.perf_counter()
        runner.compile()
        runner.timed_step()
        return f"ours compiled (first step {time.perf_counter() - t0:.1f} s)"
    runner.timed_step()  # the first step pays one-off costs: not an estimate
    eager = runner.timed_step()
    few = eager > 5.0
    trial = CompileTrial(min_remaining_s=0.0, eager_warmup=0 if few else 2,
                         eager_timed=1 if few else 3, compiled_warmup=0 if few else 1,
                         compiled_timed=1 if few else 3)
    while trial.state != "done":
        action = trial.observe(runner.timed_step(), remaining_steps=float("inf"))
        if action in ("compile", "revert"):
            runner.compile(action == "compile")
    return f"torch.compile trial for ours: {trial.reason}"


def load() -> str:
    """The 1/5/15-minute load averages: on a shared machine the figures mean little without them."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, 16x256 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats per model (default 3; 2 quick)")
    ap.add_argument("--preset", default="esp32-260k",
                    help="model shape(s), comma-separated presets (e.g. esp32-260k,host-7m)")
    ap.add_argument("--shapes", default="", help="BxT list, e.g. 16x256,64x512 (default both)")
    ap.add_argument("--steps", type=int, default=0, help="steps per repeat (default by shape)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="ours: auto = the trial train.py runs (keep compiled if faster)")
    ap.add_argument("--peer-compiled", action="store_true",
                    help="also time llama2.c's model under torch.compile (its train.py default)")
    ap.add_argument("--llama2c", default=os.environ.get("LLAMA2C_DIR"),
                    help="a checkout of karpathy/llama2.c (its model.py is the peer)")
    args = ap.parse_args(argv)
    global PEER
    PEER = load_llama2c(args.llama2c)
    if PEER is None:
        return
    torch.set_num_threads(args.threads)
    if args.shapes:
        settings = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    else:
        settings = [(16, 256)] if args.quick else [(16, 256), (64, 512)]
    repeats = args.repeats or (2 if args.quick else 3)
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; "
          f"peer {Path(args.llama2c).resolve()}")
    for preset in args.preset.split(","):
        for batch, seq in settings:
            cfg = _config(preset, seq, batch)
            t0 = time.perf_counter()
            cal = K.choose(cfg, None, threads=args.threads, device_kind="cpu", max_load=float("inf"))
            print(f"{preset} {batch}x{seq}: calibration {time.perf_counter() - t0:.1f} s -> "
                  f"{cal.kernels.label()} ({cal.reason}); load {load()}")
            runners = [Runner(kind, cfg, cal.kernels) for kind in ("llama2c", "ours")]
            if args.peer_compiled:
                peer_c = Runner("llama2c", cfg, cal.kernels, "llama2c+compile")
                t0 = time.perf_counter()
                peer_c.compile()
                peer_c.timed_step()
                print(f"{preset} {batch}x{seq}: llama2c+compile first step (compile) "
                      f"{time.perf_counter() - t0:.1f} s")
                runners.append(peer_c)
            if args.compile != "off":
                print(f"{preset} {batch}x{seq}: {compile_trial(runners[1], args.compile)}; "
                      f"load {load()}")
            warm = [r.timed_step() for r in runners for _ in range(2)]  # allocator, MKL, autograd
            steps = args.steps or max(1, min(20, int(10.0 / max(warm[-1], 1e-3))))
            if args.quick:
                steps = max(1, steps // 4)
            rates: dict[str, list[float]] = {r.label: [] for r in runners}
            ratios: list[float] = []
            # alternate single steps of the models, so a noisy neighbour slows all alike
            for _ in range(repeats):
                spent = {r.label: 0.0 for r in runners}
                for _ in range(steps):
                    for r in runners:
                        spent[r.label] += r.timed_step()
                for r in runners:
                    rates[r.label].append(steps * r.tokens / spent[r.label])
                ratios.append(rates["ours"][-1] / rates["llama2c"][-1])
            for label, rs in rates.items():
                print(f"{preset} {batch:>3}x{seq:<4} {label:15s} tok/s  min {min(rs):9.0f}  "
                      f"median {statistics.median(rs):9.0f}  max {max(rs):9.0f}")
            ours = statistics.median(rates["ours"])
            ratio = ours / statistics.median(rates["llama2c"])
            print(f"{preset} {batch:>3}x{seq:<4} ratio ours/llama2c: median {ratio:.3f} "
                  f"(per repeat {min(ratios):.3f}-{max(ratios):.3f}), {steps} steps x {repeats}; "
                  f"load {load()}")
            if args.peer_compiled:
                print(f"{preset} {batch:>3}x{seq:<4} ratio ours/llama2c+compile: median "
                      f"{ours / statistics.median(rates['llama2c+compile']):.3f}")


if __name__ == "__main__":
    main()
