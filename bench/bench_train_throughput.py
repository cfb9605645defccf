"""Training throughput (tokens/s) of engine.models.Transformer vs llama2.c's own model.py.

Why: on a 2-core CPU the tiny model's step time is dominated by per-op overhead, not FLOPs, so the
layout of the forward pass matters. This measures forward + backward + AdamW step on random tokens,
fp32, 2 threads, for our model and for llama2.c's model.py Transformer, at the same shape, steps of
the two interleaved in one process so a noisy neighbour slows both alike.

The peer is not part of this project: it is imported from a checkout the user gives.

    git clone https://github.com/karpathy/llama2.c ../llama2.c
    .venv/bin/python bench/bench_train_throughput.py --llama2c ../llama2.c           # 16x256, 64x512
    .venv/bin/python bench/bench_train_throughput.py --llama2c ../llama2.c --quick   # a short run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.schema import ExperimentConfig  # noqa: E402
from engine.models import build_model  # noqa: E402

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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- harness -------------------------------------------------------------------------------------

SHAPE = dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, hidden_dim=172)


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The same AdamW for both models: llama2.c's configure_optimizers on CPU (decay on matrices)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))


def _ours(seq_len: int) -> nn.Module:
    cfg = ExperimentConfig()
    m = cfg.model
    m.dim, m.n_layers, m.n_heads, m.n_kv_heads = SHAPE["dim"], SHAPE["n_layers"], SHAPE["n_heads"], SHAPE["n_kv_heads"]
    m.hidden_dim, m.seq_len = SHAPE["hidden_dim"], seq_len
    cfg.tokenizer.vocab_size = SHAPE["vocab_size"]
    return build_model(cfg)


PEER: ModuleType | None = None  # llama2.c's model module, set by main()


def _theirs(seq_len: int) -> nn.Module:
    return PEER.Transformer(PEER.ModelArgs(max_seq_len=seq_len, multiple_of=4, **SHAPE))


def _step_fn(model: nn.Module, kind: str):
    opt = _optimizer(model)

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

    def __init__(self, kind: str, batch: int, seq: int):
        torch.manual_seed(0)
        self.kind, self.tokens = kind, batch * seq
        self.model = (_ours if kind == "ours" else _theirs)(seq)
        self.model.train()
        self.step = _step_fn(self.model, kind)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(0, SHAPE["vocab_size"], (batch, seq), generator=g)
        self.y = torch.randint(0, SHAPE["vocab_size"], (batch, seq), generator=g)

    def timed_step(self) -> float:
        t0 = time.perf_counter()
        self.step(self.x, self.y)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, 16x256 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats per model (default 3; 2 quick)")
    ap.add_argument("--llama2c", default=os.environ.get("LLAMA2C_DIR"),
                    help="a checkout of karpathy/llama2.c (its model.py is the peer)")
    args = ap.parse_args(argv)
    global PEER
    PEER = load_llama2c(args.llama2c)
    if PEER is None:
        return
    torch.set_num_threads(args.threads)
    settings = [(16, 256, 5)] if args.quick else [(16, 256, 20), (64, 512, 4)]
    repeats = args.repeats or (2 if args.quick else 3)
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, "
          f"shape {SHAPE}; peer {Path(args.llama2c).resolve()}")
    for batch, seq, steps in settings:
        runners = [Runner(kind, batch, seq) for kind in ("llama2c", "ours")]
        for _ in range(2):  # warmup: allocator, MKL and autograd caches
            for r in runners:
                r.timed_step()
        rates: dict[str, list[float]] = {r.kind: [] for r in runners}
        # alternate single steps of the two models, so a noisy neighbour slows both alike
        for _ in range(repeats):
            spent = {r.kind: 0.0 for r in runners}
            for _ in range(steps):
                for r in runners:
                    spent[r.kind] += r.timed_step()
            for r in runners:
                rates[r.kind].append(steps * r.tokens / spent[r.kind])
        for kind, rs in rates.items():
            print(f"{batch:>3}x{seq:<4} {kind:8s} tok/s  min {min(rs):9.0f}  "
                  f"median {statistics.median(rs):9.0f}  max {max(rs):9.0f}")
        ratio = statistics.median(rates["ours"]) / statistics.median(rates["llama2c"])
        best = max(rates["ours"]) / max(rates["llama2c"])
        print(f"{batch:>3}x{seq:<4} ratio ours/llama2c: median {ratio:.3f}, best {best:.3f}")


if __name__ == "__main__":
    main()
