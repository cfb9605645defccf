"""The sampling knobs and their rules, without numpy or torch (the app's Samples tab imports this
when its screen is built, and the app must start in well under a second).

The sampler that uses them is engine.infer.sample; the board takes the same values in @GEN
(firmware/PROTOCOL.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.schema import Bounds
from engine.errors import ConfigError

MASK64 = (1 << 64) - 1


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy (argmax, lowest index on ties)
    top_k: int = 0  # keep the k most likely tokens; 0 (or ≥ vocab) = off
    top_p: float = 0.9  # nucleus: smallest set reaching this probability; in (0, 1], 1 = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or output
    seed: int = 1234  # xorshift64* seed (taken mod 2^64; 0 is replaced by a fixed constant)
    max_tokens: int = 128  # stop after this many generated tokens


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "max_tokens")

# The rules, in the config's terms (engine/config/schema.py Bounds: the one number validator for
# config files, --set, command-line flags and the app's knobs), with what a good value looks like.
SAMPLING_RULES: dict[str, tuple[Bounds, str]] = {
    "temperature": (Bounds(ge=0), "0 = greedy; 0.6-1.0 reads well"),
    "top_k": (Bounds(ge=0), "0 = off, else how many tokens to keep"),
    "top_p": (Bounds(gt=0, le=1), "1 = off; 0.9 keeps the likeliest 90%"),
    "repetition_penalty": (Bounds(gt=0), "1 = off; 1.1-1.3 discourages repeats"),
    "seed": (Bounds(ge=0, le=MASK64), "any whole number up to 2^64-1"),
    "max_tokens": (Bounds(ge=1), "how many tokens to generate"),
}


def sampling_problems(params: SamplingParams) -> dict[str, str]:
    """Field name -> what is wrong with its value and what to use instead, for every field that the
    sampler (or the board's @GEN, firmware/PROTOCOL.md: plain non-negative decimals) would not take.
    Empty when all are usable. The app shows these next to its knobs; the CLI refuses with them."""
    out = {}
    for name, (bounds, hint) in SAMPLING_RULES.items():
        complaint = bounds.complaint(getattr(params, name))
        if complaint is not None:
            out[name] = f"{complaint} ({hint})"
    return out


def check_sampling(params: SamplingParams) -> None:
    """Refuse params no engine can sample with (ConfigError, exit 2): generate calls this, so a
    caller that skipped `sampling_problems` still gets a message, not a wrong sample."""
    problems = sampling_problems(params)
    if problems:
        raise ConfigError([f"{k}: {v}" for k, v in problems.items()], "sampling settings")
