"""Where training runs. All CUDA-specific choices live here (device, bf16 autocast, DDP backend,
pinned memory), so the rest of the code never says "cuda" and never hard-codes a device.

No GPU is available to this project: the CUDA branches are written and reviewed, and the autocast
path is exercised on CPU with bfloat16 (the same torch API).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from engine.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: Any  # torch.device
    autocast_dtype: Any  # torch.dtype or None (plain f32)
    ddp_backend: str  # "nccl" on CUDA, "gloo" on CPU
    pin_memory: bool

    @property
    def kind(self) -> str:
        return self.device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def pick_runtime(device: str = "auto", dtype: str = "auto", local_rank: int = 0) -> Runtime:
    """`device` "auto" = CUDA when present, else CPU. `dtype` "auto" = bf16 autocast on CUDA
    (when supported), plain f32 on CPU (CPU bf16 autocast is slower for models this small)."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise UserError("train.device = 'cuda' but torch sees no CUDA device on this machine; "
                        "set train.device = 'auto' (or 'cpu')")
    use_cuda = device == "cuda" or (device == "auto" and has_cuda)
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        dev = torch.device("cpu")
    if dtype == "bfloat16" or (dtype == "auto" and use_cuda and torch.cuda.is_bf16_supported()):
        amp = torch.bfloat16
    else:
        amp = None
    return Runtime(dev, amp, "nccl" if use_cuda else "gloo", pin_memory=use_cuda)


@dataclass(frozen=True)
class Dist:
    """torchrun's environment: rank 0 is the only process that writes files."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ["WORLD_SIZE"]))


def init_distributed(dist: Dist, runtime: Runtime) -> None:
    import torch.distributed as td

    if dist.enabled and not td.is_initialized():
        td.init_process_group(backend=runtime.ddp_backend)


def auto_threads() -> int:
    """What train.threads = 0 means: all the cores this process may use; torchrun sets
    OMP_NUM_THREADS=1 per process, which we respect."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """0 = all cores (`auto_threads`); returns the count set."""
    import torch

    threads = threads or auto_threads()
    torch.set_num_threads(threads)
    return threads


class ThreadGovernor:
    """Picks the CPU thread count while a run trains, from the speed it measures.

    Why: torch's OpenMP threads wait on each other at the end of every parallel region, so when
    another process takes one of the cores (the app, a virtual board, a second run) a run with
    one thread per core slows to a crawl, while one thread fewer would keep going at nearly the
    one-core speed. Which count is faster changes as other processes come and go, so it is
    measured, not guessed: the steps are timed in windows of at least `window_s` seconds; the
    other count is tried for one window when the speed jumps (a process started or ended) and
    otherwise now and then, less often each time the try confirms the current count. A try of a
    count waits until `cost_ratio` times that count's last window length has passed since the last
    try (one step with all threads spin-waiting beside a busy core can take seconds), so tries
    take ~2 % of the time at most; only a sudden slow-down tries at once the other count, if that
    was faster when last measured.
    Deterministic given the times it is fed.
    """

    def __init__(self, max_threads: int, window_s: float = 0.5, max_backoff: int = 64,
                 cost_ratio: float = 40.0) -> None:
        self.choices = sorted({max_threads, max(1, max_threads - 1)}, reverse=True)
        self.threads = self.choices[0]
        self.window_s = window_s
        self.max_backoff = max_backoff
        self.cost_ratio = cost_ratio
        self._lengths: dict[int, float] = {}  # seconds of the last window at each count
        self._last_try = 0.0  # when the last try ended
        self.rates: dict[int, float] = {}  # tokens/s last measured (smoothed) per thread count
        self.backoff = 1  # windows before the next try: the other count is measured at once
        self._since = 0
        self._probing_from: int | None = None
        self._start: float | None = None
        self._tokens = 0

    @property
    def active(self) -> bool:
        return len(self.choices) > 1

    @property
    def probing(self) -> bool:
        """True while a window tries the other count (`threads` is then not the choice)."""
        return self._probing_from is not None

    def restart_window(self, now: float) -> None:
        """Forget the current window (after an evaluation or a checkpoint: not training time)."""
        self._start, self._tokens = now, 0

    def step(self, tokens: int, now: float) -> int:
        """Account one training step that ended at `now`; returns the thread count to use next."""
        if self._start is None:  # the first step carries start-up costs: not measured
            self.restart_window(now)
            return self.threads
        self._tokens += tokens
        if now - self._start < self.window_s:
            return self.threads
        length = now - self._start
        rate = self._tokens / length
        self.restart_window(now)
        self._lengths[self.threads] = length
        if self._probing_from is not None:  # this window tried the other count
            self._last_try = now
            self.rates[self.threads] = rate
            keep = self._probing_from
            best = max(self.rates, key=lambda n: self.rates[n])
            self.backoff = min(2 * self.backoff, self.max_backoff) if best == keep else 4
            self.threads, self._probing_from, self._since = best, None, 0
            return self.threads
        old = self.rates.get(self.threads)
        jumped = old is not None and not (0.7 * old <= rate <= 1.4 * old)
        self.rates[self.threads] = rate if old is None or jumped else 0.5 * (old + rate)
        self._since += 1
        if not self.active:
            return self.threads
        other = next(n for n in self.choices if n != self.threads)
        # a slow-down tries the other count at once if it was faster when last measured
        escape = jumped and rate < old and self.rates.get(other, float("inf")) > rate  # type: ignore[operator]
        affordable = now >= self._last_try + self.cost_ratio * self._lengths.get(other, 0.0)
        if escape or ((jumped or self._since >= self.backoff) and affordable):
            if jumped:
                self.backoff = 4
            self._probing_from, self.threads, self._since = self.threads, other, 0
        return self.threads
