"""Whether torch.compile pays for itself in this run, decided on the run's own steps.

Why: compiling fuses the elementwise work around the matmuls (RMSNorm, RoPE, SwiGLU, the residual
adds, the zero-fills of the backward), which is what a big step spends its memory bandwidth on. On
one 2-core AMD EPYC (torch 2.13, 2 threads) the host-7m shape at 64x512 went from 41.7 s to 25.5 s a
step after a 37 s compile, while at 16x256 it was no faster (2.31 vs 2.25 s) and the 260K model was
slower compiled (0.35 vs 0.31 s). So it is not assumed either way: with train.compile = "auto" the
run times a few of its own eager steps, compiles only when the rest of the run is long enough to
pay the compile back many times over, times a few compiled steps and keeps the faster. No step is
wasted: the trial steps are training steps. The verdict is cached with the kernel choice (same
machine, torch, threads and shape key), so the next run at this shape starts compiled, or never
tries.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

EAGER_WARMUP = 2  # eager steps not timed (allocator, autograd caches, the thread governor)
EAGER_TIMED = 3
COMPILED_WARMUP = 1  # after the compiling step: a step that may still compile the backward
COMPILED_TIMED = 3
MIN_REMAINING_S = 1800.0  # try only with >= 30 min of eager run left: a compile (25-60 s here)
# that loses then costs the run ~3 % once per machine and shape (the verdict is cached)
MIN_GAIN = 1.05  # keep compiled only when clearly faster (timings on a shared machine are noisy)


@dataclass
class CompileTrial:
    """Feed it each step's seconds; it says when to compile and whether to keep the result.

    States: "eager" (timing eager steps) -> "compiling" (the next step compiles) -> "compiled"
    (timing compiled steps) -> "done". `observe` returns "compile", "keep", "revert", "skip" or None.
    """

    min_remaining_s: float = MIN_REMAINING_S
    eager_warmup: int = EAGER_WARMUP  # a benchmark with 30-s steps asks for fewer
    eager_timed: int = EAGER_TIMED
    compiled_warmup: int = COMPILED_WARMUP
    compiled_timed: int = COMPILED_TIMED
    state: str = "eager"
    eager: list[float] = field(default_factory=list)
    compiled: list[float] = field(default_factory=list)
    compile_s: float = 0.0
    reason: str = ""
    _seen: int = 0

    def observe(self, seconds: float, remaining_steps: float) -> str | None:
        self._seen += 1
        if self.state == "eager":
            if not self._sample(self.eager, self.eager_warmup, self.eager_timed, seconds):
                return None
            left = remaining_steps * self.eager_s
            if left < self.min_remaining_s:
                self.state = "done"
                self.reason = (f"not tried: the rest of the run is ~{left:.0f} s eager, under the "
                               f"{self.min_remaining_s:.0f} s a compile must pay back in")
                return "skip"
            self.state = "compiling"
            return "compile"
        if self.state == "compiling":
            self.compile_s = seconds  # the first compiled step: compile time plus one step
            self.state = "compiled"
            self._seen = 0
            return None
        if self.state == "compiled":
            if not self._sample(self.compiled, self.compiled_warmup, self.compiled_timed, seconds):
                return None
            self.state = "done"
            keep = self.faster
            self.reason = (f"{'kept' if keep else 'dropped'}: {self.gain:.2f}x eager "
                           f"({self.compiled_s:.3f} vs {self.eager_s:.3f} s a step, median of "
                           f"{len(self.compiled)} and {len(self.eager)}), compile {self.compile_s:.1f} s")
            return "keep" if keep else "revert"
        return None

    def _sample(self, into: list[float], warmup: int, timed: int, seconds: float) -> bool:
        """Count a step's time after the phase's warm-up; True once the phase has all it needs."""
        if self._seen <= warmup:
            return False
        into.append(seconds)
        return len(into) >= timed

    @property
    def faster(self) -> bool:
        return self.gain >= MIN_GAIN

    @property
    def eager_s(self) -> float:
        return statistics.median(self.eager) if self.eager else 0.0

    @property
    def compiled_s(self) -> float:
        return statistics.median(self.compiled) if self.compiled else 0.0

    @property
    def gain(self) -> float:
        return self.eager_s / self.compiled_s if self.compiled_s > 0 else 0.0

    def record(self) -> dict[str, Any]:
        """For the kernels cache and meta.json."""
        return {"faster": self.faster, "gain": round(self.gain, 3),
                "eager_s": round(self.eager_s, 4), "compiled_s": round(self.compiled_s, 4),
                "compile_s": round(self.compile_s, 1)}
