"""Batches of training windows from a token array, reproducible and resumable.

Why windows are drawn the way they are: the i-th batch of a rank depends only on (seed, rank, i),
through its own numpy generator, so the loader's whole state is one counter. A checkpoint stores
that counter (plain ints, so `torch.load(weights_only=True)` reads it) and a resumed run draws
exactly the batches the uninterrupted run would have drawn. Ranks of a DDP run draw independent
streams; they move in lockstep, so every rank can load rank 0's state and keep its own rank.

Eval windows are fixed and non-overlapping, so val loss is comparable between evals and runs.
torch is imported inside functions only: importing the engine must not cost torch's ~2 s start-up.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from engine.errors import UserError

if TYPE_CHECKING:
    import torch

Batch = tuple["torch.Tensor", "torch.Tensor"]


@lru_cache(maxsize=1)
def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _to_batch(windows: np.ndarray) -> Batch:
    """(B, seq_len + 1) int array → (x, y) LongTensors; pinned only when a GPU will take them
    (pinning on a CPU-only machine is wasted work, and fails on some builds)."""
    import torch

    t = torch.from_numpy(windows.astype(np.int64))
    x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
    if _cuda_available():
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def _too_small(n_tokens: int, seq_len: int, what: str = "corpus", extra: str = "") -> UserError:
    return UserError(
        f"{what} too small: {n_tokens} tokens, one training window needs seq_len+1 = {seq_len + 1}; "
        f"add text{extra} or lower model.seq_len")


def _seed_words(*values: int) -> list[int]:
    return [v % (1 << 64) for v in values]  # SeedSequence wants non-negative words


class BatchLoader:
    """Random windows of `seq_len + 1` tokens: x = window[:-1], y = window[1:]."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size ({batch_size}) and seq_len ({seq_len}) must be ≥ 1")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if len(tokens) < seq_len + 1:
            raise _too_small(len(tokens), seq_len)
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_drawn = 0
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)

    def starts(self, index: int) -> np.ndarray:
        """Window starts of this rank's batch number `index` (pure: no state change)."""
        rng = np.random.default_rng(_seed_words(self.seed, self.rank, index))
        return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)

    def next_batch(self) -> Batch:
        starts = self.starts(self.batches_drawn)
        self.batches_drawn += 1
        return _to_batch(np.asarray(self.tokens[starts[:, None] + self._offsets]))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def __next__(self) -> Batch:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Plain ints only. `batch_size`, `seq_len` and `n_tokens` are recorded for diagnosis."""
        return {"seed": int(self.seed), "batches_drawn": int(self.batches_drawn),
                "batch_size": int(self.batch_size), "seq_len": int(self.seq_len),
                "n_tokens": int(len(self.tokens)), "world_size": int(self.world_size)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` stopped. The rank is not restored: each rank keeps its own, so a
        DDP run can restore every rank from the one state rank 0 saved."""
        self.seed = int(state["seed"])
        self.batches_drawn = int(state["batches_drawn"])


def eval_batches(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int) -> list[Batch]:
    """A fixed set of val batches, the same at every eval: up to `batch_size * n_batches`
    non-overlapping windows spread evenly over the split. A small split gives what it has (the last
    batch may be smaller than `batch_size`); a split without one whole window is a UserError."""
    n_windows = (len(tokens) - 1) // seq_len  # window k covers tokens[k*seq_len : (k+1)*seq_len + 1]
    if n_windows < 1:
        raise _too_small(len(tokens), seq_len, "validation split", ", raise data.val_fraction")
    want = max(1, batch_size * n_batches)
    if n_windows > want:
        picks = np.linspace(0, n_windows - 1, want).round().astype(np.int64)
    else:
        picks = np.arange(n_windows, dtype=np.int64)
    offsets = np.arange(seq_len + 1, dtype=np.int64)
    out: list[Batch] = []
    for i in range(0, len(picks), batch_size):
        starts = picks[i:i + batch_size] * seq_len
        out.append(_to_batch(np.asarray(tokens[starts[:, None] + offsets])))
    return out
