"""Which CPU kernels a training run uses, chosen by measuring them on this machine at this shape.

Why: on a small CPU a tiny model's step is dominated by per-op overhead, and which of two equal
computations is faster depends on the CPU, the torch build, the thread count and the shape: the
block-causal attention kernel beats SDPA by 1.3x on one x86 machine and loses by 0.9x on another.
So the first training start on a (CPU, torch, threads, shape) key times the candidates for a few
seconds on random tokens and keeps the fastest; the result is cached in the workspace
(`.tinylm/kernels.json`), so later starts cost nothing, and a new CPU, torch or shape measures again.

Every candidate computes the same loss and gradients (tests/engine/test_kernels.py); only speed
differs. Calibration never fails a run: any error gives the default choice, with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.atomic import atomic_write_json
from engine.config.schema import ExperimentConfig
from engine.machine import cpu_model

log = logging.getLogger(__name__)

CACHE_FILE = Path(".tinylm") / "kernels.json"
CACHE_VERSION = 3  # 2: the loss kernel joined the choice; 3: the native attention kernel did
# BlockCausalAttention | F.scaled_dot_product_attention (GQA) | engine/models/native_attention.cpp
ATTENTION = ("blocked", "sdpa", "native")
COMPILED_ATTENTION = ("sdpa", "native")  # what torch.compile can trace (blocked is a python loop)
FFN = ("split", "fused")  # w1 and w3 as two matmuls | one matmul over the concatenated weights
OPTIMIZER = ("fused", "foreach", "loop")  # torch.optim.AdamW(fused=True) | (foreach=True) | neither
LOSS = ("full", "chunked")  # F.cross_entropy over all logits | classifier + loss by row blocks


@dataclass(frozen=True)
class Kernels:
    """One choice of kernels; all give the same maths."""

    attention: str = "blocked"
    ffn: str = "split"
    optimizer: str = "fused"
    loss: str = "full"
    compiled_attention: str = "sdpa"  # the attention of a torch.compile'd model

    def label(self) -> str:
        return (f"attention={self.attention} ffn={self.ffn} adamw={self.optimizer} loss={self.loss}"
                f" compiled_attention={self.compiled_attention}")


DEFAULT = Kernels()


@dataclass(frozen=True)
class Calibration:
    """What a run uses and why: `source` is "measured", "cache" or "default"."""

    kernels: Kernels
    source: str
    reason: str  # one line for train.log
    key: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)  # tokens/s (or steps/s) per candidate
    seconds: float = 0.0  # time the measurement took

    def summary(self) -> dict[str, Any]:
        """For meta.json: small and JSON-safe."""
        return {**asdict(self.kernels), "source": self.source, "reason": self.reason,
                "seconds": round(self.seconds, 2)}


# ---- cache key and file --------------------------------------------------------------------------

def calibration_key(cfg: ExperimentConfig, threads: int, torch_version: str,
                    cpu: str | None = None) -> dict[str, Any]:
    """Everything the ranking of kernels depends on (and nothing else: not lr, not data). The
    native attention kernel's build key is part of it: a new version of its source is a new
    build, which only a measurement (of a run long enough) makes; a cached "native" would
    otherwise fall back to SDPA until the cache was cleared."""
    from engine.models.native_attention import source_digest

    m = cfg.model
    return {"cpu": cpu if cpu is not None else cpu_model(), "torch": torch_version,
            "threads": threads, "dim": m.dim, "n_layers": m.n_layers, "n_heads": m.n_heads,
            "n_kv_heads": m.n_kv_heads, "hidden": m.ffn_dim(), "vocab": cfg.tokenizer.vocab_size,
            "batch": cfg.train.batch_size, "seq_len": m.seq_len,
            "native_source": source_digest()}


def key_string(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries by key string; a missing, unreadable or older-version file is empty."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def cached(path: Path, key: dict[str, Any]) -> Calibration | None:
    entry = read_cache(path).get(key_string(key))
    if not isinstance(entry, dict):
        return None
    try:
        kernels = Kernels(**entry["kernels"])
        check(kernels)
    except (KeyError, TypeError, ValueError):
        return None  # written by another version: measure again
    return Calibration(kernels, "cache", f"cached measurement of {entry.get('measured', '?')} "
                       f"({path})", key, dict(entry.get("rates", {})), 0.0)


def store(path: Path, cal: Calibration) -> None:
    entries = read_cache(path)
    entries[key_string(cal.key)] = {"kernels": asdict(cal.kernels), "rates": cal.rates,
                                    "seconds": round(cal.seconds, 2), "key": cal.key,
                                    "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"version": CACHE_VERSION, "entries": entries})


def compile_verdict(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The torch.compile trial's outcome cached for this key (engine/train/compile_trial.py)."""
    entry = read_cache(path).get(key_string(key))
    verdict = entry.get("compile") if isinstance(entry, dict) else None
    return verdict if isinstance(verdict, dict) and isinstance(verdict.get("faster"), bool) else None


def store_compile_verdict(path: Path, key: dict[str, Any], verdict: dict[str, Any]) -> None:
    """Add the trial's outcome to the key's entry (made here when kernels were not measured)."""
    entries = read_cache(path)
    entry = entries.setdefault(key_string(key), {"kernels": asdict(DEFAULT), "rates": {},
                                                 "seconds": 0.0, "key": key, "measured": "-"})
    entry["compile"] = {**verdict, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"version": CACHE_VERSION, "entries": entries})


def clear(path: Path) -> int:
    """Forget every measurement (the next run measures again); returns how many were dropped."""
    n = len(read_cache(path))
    path.unlink(missing_ok=True)
    return n


def check(k: Kernels) -> None:
    if (k.attention not in ATTENTION or k.ffn not in FFN or k.optimizer not in OPTIMIZER
            or k.loss not in LOSS or k.compiled_attention not in COMPILED_ATTENTION):
        raise ValueError(f"unknown kernels {k}")


# ---- applying a choice ---------------------------------------------------------------------------

def apply(model: Any, kernels: Kernels) -> None:
    """Set the transformer's kernel switches (a GRU has none: nothing to do). A native attention
    kernel that is not built here (a cache copied from another machine, a cleared build) leaves
    SDPA in use, with a warning."""
    if "native" in (kernels.attention, kernels.compiled_attention) and getattr(model, "layers", None):
        from engine.models import native_attention

        why = native_attention.ensure(build=False)
        if why:
            log.warning("kernels: native attention %s; SDPA is used", why)
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "attention") and hasattr(layer, "feed_forward"):
            layer.attention.kernel = kernels.attention
            layer.attention.compiled_kernel = kernels.compiled_attention
            layer.feed_forward.fused = kernels.ffn == "fused"
    if hasattr(model, "loss_kernel"):
        model.loss_kernel = kernels.loss


def optimizer_flags(kernels: Kernels, device_kind: str) -> dict[str, bool]:
    """AdamW keyword arguments: fused on CUDA always; on CPU whatever was measured fastest."""
    if device_kind == "cuda":
        return {"fused": True}
    return {"fused": kernels.optimizer == "fused", "foreach": kernels.optimizer == "foreach"}


def adamw(params: list, cfg: ExperimentConfig, kernels: Kernels, device_kind: str) -> Any:
    """llama2.c's AdamW (weight decay on matrices only) with the chosen implementation."""
    import torch

    t = cfg.train
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2),
                             **optimizer_flags(kernels, device_kind))


# ---- measuring -----------------------------------------------------------------------------------

RUN_SHARE = 0.01  # a long run may spend this share of its length measuring its kernels
BUDGET_MAX_S = 60.0


def measure(cfg: ExperimentConfig, *, budget_s: float = 5.0,
            on_progress: Callable[[int, int, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> tuple[Kernels, dict[str, float], str]:
    """Time the candidates on random tokens at the run's shape; returns (fastest, rates, why).

    The attention kernels are raced alone (forward + backward of the very function the model
    calls, on q, k, v shaped and strided like the model's): they differ by 10-40 %, which whole
    steps on a shared machine blur, and the fastest compile-able one is what a compiled run uses.
    Then the FFN and the loss kernels race as whole steps on the fastest attention, and AdamW alone.
    Steps of the candidates are interleaved, so a neighbour that takes a core slows all alike, and
    the median of each candidate's times counts. The time spent is `budget_s`, or up to RUN_SHARE
    of the run's estimated length (at most BUDGET_MAX_S) for a long run, so that it can time whole
    steps near the run's batch: a batch cut to one sequence ranks differently (host-7m: SDPA 1.12x
    faster than the block-causal kernel at 1x256, a tie at 10x256). If one step at the run's batch
    would still not let every candidate take three steps, the batch is cut.
    """
    import statistics

    import torch

    from engine.models import build_model
    from engine.models.transformer import causal_attention

    progress = on_progress or (lambda done, total, what: None)
    stop = should_stop or (lambda: False)
    m, vocab = cfg.model, cfg.tokenizer.vocab_size
    gen = torch.Generator().manual_seed(0)
    rng_state = torch.get_rng_state()  # model init below must not shift the run's random stream
    try:
        model = build_model(cfg)
    finally:
        torch.set_rng_state(rng_state)
    model.train()

    def make_batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, vocab, (b, m.seq_len + 1), generator=gen)
        return x[:, :-1], x[:, 1:]

    def fwd_bwd(k: Kernels, x: torch.Tensor, y: torch.Tensor) -> float:
        apply(model, k)
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return dt

    t_start = time.perf_counter()
    batch = cfg.train.batch_size
    x, y = make_batch(1)
    fwd_bwd(DEFAULT, x, y)  # the first call pays one-off costs: not an estimate
    one = fwd_bwd(DEFAULT, x, y)
    run_estimate_s = one * batch * max(cfg.train.max_steps, 1)
    if cfg.train.max_minutes:
        run_estimate_s = min(run_estimate_s, cfg.train.max_minutes * 60.0)
    budget_s = max(budget_s, min(BUDGET_MAX_S, RUN_SHARE * run_estimate_s))
    native_why = _native_attention(run_estimate_s, progress)
    t_start = time.perf_counter()  # a build is not measuring time
    attentions = [a for a in ATTENTION if a != "native" or not native_why]
    whole_steps = len(FFN) + len(LOSS)  # two races of whole steps, each a warm-up and 3+ rounds
    per_step_budget = budget_s * 0.6 / (whole_steps * 4)
    if one * batch > per_step_budget:
        batch = max(1, min(batch, int(per_step_budget / max(one, 1e-6))))
    x, y = make_batch(batch)
    hard_stop = t_start + 2 * budget_s  # a machine far busier than estimated: stop, use what we have

    def race(paths: dict[str, Callable[[], float]], seconds: float) -> tuple[dict[str, float], int]:
        """Median time of each path, run interleaved (alternating order) for three rounds or more."""
        times: dict[str, list[float]] = {name: [] for name in paths}
        for run in paths.values():  # warm-up each path once (allocator, autograd caches)
            run()
        start = time.perf_counter()
        rounds = 0
        order = list(paths)
        while rounds < 12 and not stop():
            now = time.perf_counter()
            if (rounds >= 3 and now - start > seconds) or (rounds >= 1 and now > hard_stop):
                break
            for name in (order if rounds % 2 == 0 else order[::-1]):
                times[name].append(paths[name]())
            rounds += 1
            progress(rounds, 3, "measuring kernels")
        if not all(times.values()):
            raise RuntimeError("stopped before every kernel was measured once")
        return {name: statistics.median(ts) for name, ts in times.items()}, rounds

    qkv = torch.randn(batch, m.seq_len, m.n_heads + 2 * m.n_kv_heads, m.head_dim(), generator=gen,
                      requires_grad=True)
    d_out = torch.randn(batch, m.seq_len, m.n_heads * m.head_dim(), generator=gen)

    def attention_path(kernel: str) -> Callable[[], float]:
        def run() -> float:
            q, k, v = qkv.split([m.n_heads, m.n_kv_heads, m.n_kv_heads], dim=2)
            t0 = time.perf_counter()
            causal_attention(kernel, q, k, v).backward(d_out)
            dt = time.perf_counter() - t0
            qkv.grad = None
            return dt
        return run

    att, _ = race({a: attention_path(a) for a in attentions}, budget_s * 0.2)
    best_att = min(att, key=lambda a: att[a])
    best_compiled = min((a for a in att if a in COMPILED_ATTENTION), key=lambda a: att[a])
    rates = {f"attention={a} fwd+bwd/s": batch / t for a, t in att.items()}

    def step_path(k: Kernels) -> Callable[[], float]:
        return lambda: fwd_bwd(k, x, y)

    ffn_paths = {f: Kernels(best_att, f, DEFAULT.optimizer) for f in FFN}
    ffn, rounds = race({f: step_path(k) for f, k in ffn_paths.items()}, budget_s * 0.4)
    best_ffn = min(ffn, key=lambda f: ffn[f])
    rates.update({f"ffn={f} tok/s": batch * m.seq_len / t for f, t in ffn.items()})
    # the loss kernel raced on the fastest path, whole steps: timed alone it ranked differently
    loss_paths = {name: Kernels(best_att, best_ffn, DEFAULT.optimizer, name) for name in LOSS}
    loss, _ = race({name: step_path(k) for name, k in loss_paths.items()}, budget_s * 0.4)
    best_loss = min(loss, key=lambda name: loss[name])
    rates.update({f"loss={name} tok/s": batch * m.seq_len / t for name, t in loss.items()})

    opt_rates = _measure_optimizer(model, cfg)
    best_opt = max(opt_rates, key=lambda name: opt_rates[name])
    rates.update({f"adamw={name} steps/s": r for name, r in opt_rates.items()})
    chosen = Kernels(best_att, best_ffn, best_opt, best_loss, best_compiled)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())

    def versus(best: str, default: str, times: dict[str, float]) -> str:
        return f"{best} ({times[default] / times[best]:.2f}x of {default})"

    why = (f"attention {versus(best_att, DEFAULT.attention, att)} alone, compiled {best_compiled}; "
           f"ffn {versus(best_ffn, DEFAULT.ffn, ffn)}, loss {versus(best_loss, 'full', loss)} in "
           f"whole steps at batch "
           f"{batch}x{m.seq_len}, {rounds} rounds; AdamW {best_opt} fastest; "
           f"{'native attention ' + native_why + '; ' if native_why else ''}load average {load}")
    return chosen, rates, why


def _native_attention(run_estimate_s: float, progress: Callable[[int, int, str], None]) -> str:
    """Load the native attention kernel, building it when the build costs at most RUN_SHARE of the
    run ("" when it is a candidate; else why it is not)."""
    from engine.models import native_attention

    build = RUN_SHARE * run_estimate_s >= native_attention.BUILD_SECONDS
    if build and not native_attention.available():
        progress(0, 3, "building the native attention kernel (once on this machine)")
    return native_attention.ensure(build=build)


def _measure_optimizer(model: Any, cfg: ExperimentConfig, steps: int = 5) -> dict[str, float]:
    """AdamW steps per second of each implementation on the model's own parameters (fake grads;
    the weights are scratch, thrown away after calibration)."""
    import statistics

    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    rates: dict[str, float] = {}
    opts = {name: adamw(params, cfg, Kernels(optimizer=name), "cpu") for name in OPTIMIZER}
    times: dict[str, list[float]] = {name: [] for name in OPTIMIZER}
    for rnd in range(steps + 1):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            if rnd:  # the first step allocates the state
                times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        rates[name] = 1.0 / statistics.median(ts)
    for p in params:
        p.grad = None
    return rates


def busy_load() -> float:
    """The 1-minute load average above which nothing is measured: more runnable processes than
    cores (beyond this one), when two spinning OpenMP threads crawl and timings rank kernels by
    who got a core, not by speed."""
    return (os.cpu_count() or 1) + 0.5


def choose(cfg: ExperimentConfig, cache_path: Path | None, *, threads: int, device_kind: str,
           autocast: bool = False, allow_measure: bool = True, force: bool = False,
           budget_s: float = 5.0, max_load: float | None = None,
           on_progress: Callable[[int, int, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Calibration:
    """The kernels for this run: cached, measured, or the default; never raises.

    Measured only for a CPU, float32 transformer run (elsewhere the kernels are not used or not
    worth it); `force` measures again even when the cache has this key. While the 1-minute load
    average is above `max_load` (default `busy_load()`) nothing is measured: the default is used.
    """
    import torch

    if cfg.model.arch != "transformer":
        return Calibration(DEFAULT, "default", f"model.arch = {cfg.model.arch}: no kernel choices")
    if device_kind != "cpu" or autocast:
        return Calibration(DEFAULT, "default", f"{device_kind}{' autocast' if autocast else ''}: "
                           "the block-causal kernel is CPU float32 only; SDPA is used")
    try:
        key = calibration_key(cfg, threads, torch.__version__)
    except (OSError, ValueError) as e:
        return Calibration(DEFAULT, "default", f"no calibration key ({e}); default kernels")
    if cache_path is not None and not force:
        hit = cached(cache_path, key)
        if hit is not None:
            return hit
    if not allow_measure:
        return Calibration(DEFAULT, "default", "not measured here (distributed run); default "
                           "kernels", key)
    load_now = os.getloadavg()[0]
    limit = busy_load() if max_load is None else max_load
    if load_now > limit:
        return Calibration(DEFAULT, "default", f"machine busy (load {load_now:.1f} on "
                           f"{os.cpu_count()} cores): timings now would rank kernels by who gets a "
                           "core, so default kernels; a quieter start measures", key)
    t0 = time.perf_counter()
    try:
        kernels, rates, why = measure(cfg, budget_s=budget_s, on_progress=on_progress,
                                      should_stop=should_stop)
    except (RuntimeError, ValueError, TypeError, MemoryError) as e:
        return Calibration(DEFAULT, "default", f"calibration failed ({type(e).__name__}: {e}); "
                           "default kernels", key, {}, time.perf_counter() - t0)
    cal = Calibration(kernels, "measured", why, key, {k: round(v, 1) for k, v in rates.items()},
                      time.perf_counter() - t0)
    if cache_path is not None:
        try:
            store(cache_path, cal)
        except OSError as e:
            return Calibration(kernels, "measured", f"{why}; not cached ({e})", key, cal.rates,
                               cal.seconds)
    return cal
