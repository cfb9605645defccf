"""The sampling knobs and their rules, without numpy or torch (the app's Samples tab imports this
when its screen is built, and the app must start in well under a second).

The sampler that uses them is engine.infer.sample; the board takes the same values in @GEN
(firmware/PROTOCOL.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MASK64 = (1 << 64) - 1


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy (argmax, lowest index on ties)
    top_k: int = 0  # keep the k most likely tokens; 0 (or ≥ vocab) = off
    top_p: float = 0.9  # nucleus: smallest set reaching this probability; ≥ 1 (or ≤ 0) = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or output
    seed: int = 1234  # xorshift64* seed (taken mod 2^64; 0 is replaced by a fixed constant)
    max_tokens: int = 128  # stop after this many generated tokens


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "max_tokens")


def sampling_problems(params: SamplingParams) -> dict[str, str]:
    """Field name -> what is wrong with its value and what to use instead, for every field that the
    sampler (or the board's @GEN, firmware/PROTOCOL.md: plain non-negative decimals) would not take.
    Empty when all are usable. The app shows these next to its knobs; the CLI refuses with them."""
    p, out = params, {}

    def bad(x: float) -> bool:
        return not math.isfinite(x)

    if bad(p.temperature) or p.temperature < 0:
        out["temperature"] = f"{p.temperature} is not ≥ 0 (0 = greedy; 0.6-1.0 reads well)"
    if p.top_k < 0:
        out["top_k"] = f"{p.top_k} is negative (0 = off, else how many tokens to keep)"
    if bad(p.top_p) or not 0 <= p.top_p <= 1:
        out["top_p"] = f"{p.top_p} is outside 0..1 (1 or 0 = off; 0.9 keeps the likeliest 90%)"
    if bad(p.repetition_penalty) or p.repetition_penalty <= 0:
        out["repetition_penalty"] = (f"{p.repetition_penalty} is not > 0 (1 = off; 1.1-1.3 "
                                     "discourages repeats)")
    if not 0 <= p.seed <= MASK64:
        out["seed"] = f"{p.seed} is not in 0..2^64-1"
    if p.max_tokens < 1:
        out["max_tokens"] = f"{p.max_tokens} is not ≥ 1"
    return out
