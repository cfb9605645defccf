"""Sampling: the firmware's sampler in numpy, and a streaming generator of token ids.

Why the sampler is numpy float32 and not torch: the board samples with firmware/BLOB.md's "Sampler"
algorithm on float32 logits, and "same prompt, same seed → same text on PyTorch and on the board" is
only true if this side runs the same algorithm on the same bits: xorshift64* RNG, penalty, temperature,
tl_expf softmax, top-k / top-p with sequential float32 sums, one random number per token. torch is
imported only inside `generate`, so the TUI can import this module and stay fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from engine.errors import UserError

from .f32math import F32, softmax_f32
from .params import SAMPLING_FIELDS, SamplingParams, check_sampling, sampling_problems

__all__ = ["SAMPLING_FIELDS", "Sampler", "SamplingParams", "XorShift64Star", "check_sampling",
           "generate", "sampling_problems"]

MASK64 = (1 << 64) - 1
ZERO_SEED = 0x9E3779B97F4A7C15  # xorshift64* must not start from state 0
XS_MULT = 0x2545F4914F6CDD1D


class XorShift64Star:
    """BLOB.md's RNG: xorshift64* on a 64-bit state, the high 32 bits of the product as output."""

    def __init__(self, seed: int):
        self.state = (seed & MASK64) or ZERO_SEED

    def next_u32(self) -> int:
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & MASK64
        s ^= s >> 27
        self.state = s
        return ((s * XS_MULT) & MASK64) >> 32

    def random_f32(self) -> np.float32:
        """24 random bits / 2^24: exact in float32, in [0, 1)."""
        return F32(self.next_u32() >> 8) / F32(16777216.0)


class Sampler:
    """One token from float32 logits, exactly as the firmware does (BLOB.md "Sampler")."""

    def __init__(self, vocab_size: int, params: SamplingParams):
        self.vocab_size = vocab_size
        self.params = params
        self.rng = XorShift64Star(params.seed)

    def sample(self, logits: np.ndarray, seen: Iterable[int] = ()) -> int:
        """Next token id. `seen`: the prompt and the tokens generated so far (for the penalty)."""
        p = self.params
        x = np.array(logits, dtype=F32).reshape(-1)  # a copy: the caller's logits stay untouched
        if x.shape[0] != self.vocab_size:
            raise ValueError(f"logits have {x.shape[0]} entries, the vocabulary {self.vocab_size}")
        # parameters compared as the firmware's float32 values (1.00000001 is a penalty of 1.0f)
        pen, temperature = F32(p.repetition_penalty), F32(p.temperature)
        if pen != 1:
            ids = np.fromiter(set(seen), dtype=np.int64)
            if ids.size:
                v = x[ids]
                x[ids] = np.where(v > 0, v / pen, v * pen)
        if temperature == 0:
            return int(np.argmax(x))  # first (lowest) index among the maxima
        probs = softmax_f32(x / temperature)
        order = self._candidates(probs)
        kept = probs[order]
        cdf = np.cumsum(kept, dtype=F32)  # sequential running sum
        r = self.rng.random_f32() * cdf[-1]
        hit = np.flatnonzero(r < cdf)
        return int(order[hit[0]] if hit.size else order[-1])

    def _candidates(self, probs: np.ndarray) -> np.ndarray:
        """Token ids the draw is made from, in list order: top-k then top-p cut, by descending
        probability (ties: lower index first); all ids in index order when neither is active."""
        p, n = self.params, probs.shape[0]
        top_p = F32(p.top_p)
        use_k = 0 < p.top_k < n
        use_p = 0 < top_p < 1
        if not (use_k or use_p):
            return np.arange(n)
        order = np.argsort(-probs, kind="stable")  # descending; stable keeps lower index first
        if use_k:
            order = order[: p.top_k]
        if use_p:
            cdf = np.cumsum(probs[order], dtype=F32)
            reached = np.flatnonzero(cdf >= top_p)
            if reached.size:
                order = order[: reached[0] + 1]
        return order


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


def one_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run with torch on one CPU thread, then the count put back (it is process-wide).

    Why: one token's step is a few dozen matmuls of 64-288 columns, microseconds each, and two
    OpenMP threads spend longer waking and joining than computing: the demo-260k measured 56-71
    ms/token on 2 threads against 4-6 ms/token on 1 beside a busy core (bench/bench_chat.py's torch
    column). Calls may overlap (the app's chat and Samples tab): the first sets 1, the last restores.
    """
    import torch

    def run(*args: Any, **kwargs: Any) -> Any:
        global _threads_users, _threads_saved
        with _threads_lock:
            if _threads_users == 0:
                _threads_saved = torch.get_num_threads()
                torch.set_num_threads(1)
            _threads_users += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _threads_lock:
                _threads_users -= 1
                if _threads_users == 0:
                    torch.set_num_threads(_threads_saved)
    return run


def generate(model: Any, prompt_ids: list[int], params: SamplingParams, *,
             eos_id: int | None = None, should_stop: Callable[[], bool] | None = None,
             stop_ids: Iterable[int] = (), context_len: int | None = None) -> Iterator[int]:
    """Stream generated token ids, one at a time, with the firmware's stop rules (BLOB.md "Sampler").

    Stops after params.max_tokens tokens; when the sampled token is eos_id or in stop_ids (pass BOS
    there for sentencepiece vocabs, as the board stops on both; the stop token is not yielded); when
    should_stop() returns True (checked before each token); or when the context is full. Context
    (ctx = context_len, default and at most the model's seq_len): a transformer feeds positions
    0..ctx-1 and yields the token sampled at position ctx-1 last, so at most ctx - len(prompt) + 1
    tokens; a GRU has no limit, except that with a repetition penalty ≠ 1 it stops once prompt +
    generated ids fill ctx (the board's id buffer for the penalty). Deterministic for a given seed;
    temperature 0 is greedy.
    """
    import torch

    check_sampling(params)
    is_gru = getattr(getattr(model, "cfg", None), "arch", "transformer") == "gru"
    ctx = min(context_len or model.seq_len, model.seq_len)
    if not prompt_ids:
        raise UserError("the prompt is empty and this tokenizer has no BOS token to start from: "
                        "give a prompt of at least one character")
    if len(prompt_ids) > ctx:
        raise UserError(f"the prompt is {len(prompt_ids)} tokens but the model's context holds {ctx} "
                        f"(model.seq_len / device.context_len): shorten the prompt to at most {ctx} "
                        "tokens")
    stops = set(stop_ids) | ({eos_id} if eos_id is not None else set())
    id_buffer_limit = is_gru and params.repetition_penalty != 1.0
    device = next(model.parameters()).device
    sampler = Sampler(model.vocab_size, params)
    seen = set(prompt_ids)
    # no_grad around each call, not around the loop: grad mode is thread state, and a `with` that
    # spans `yield` would leak into the caller's code between tokens
    step = one_thread(torch.no_grad()(model.forward_step)) if device.type == "cpu" else \
        torch.no_grad()(model.forward_step)
    was_training = model.training
    model.eval()
    try:
        cache = model.init_cache(1, ctx)
        logits = step(torch.tensor([prompt_ids], dtype=torch.long, device=device), cache, 0)
        pos = len(prompt_ids)  # tokens fed so far; the next sampled token sits at index pos
        token = prompt_ids[-1]  # replaced by each sampled token before it is fed back
        for n in range(params.max_tokens):
            if n:  # feed the previous token only when another one is wanted
                if not is_gru and pos >= ctx:
                    return  # the token sampled at position ctx - 1 was the last
                logits = step(torch.tensor([[token]], dtype=torch.long, device=device), cache, pos)
                pos += 1
            if should_stop is not None and should_stop():
                return
            token = sampler.sample(logits[0, -1].float().cpu().numpy(), seen)
            if token in stops:
                return
            yield token
            seen.add(token)
            if id_buffer_limit and pos + 1 >= ctx:
                return
    finally:
        model.train(was_training)
