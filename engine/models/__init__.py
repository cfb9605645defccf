"""Model zoo: the llama-style transformer and the GRU LM, built from an experiment config.

Both share one interface, so train, sample, quant and the reference need not care which is which:
`forward(tokens, targets=None) -> (logits [B, T, V], loss | None)`,
`init_cache(batch_size, max_len)` and `forward_step(tokens, cache, start_pos) -> logits [B, T, V]`.
"""

from __future__ import annotations

import torch

from engine.config.schema import ExperimentConfig

from .gru import GRULM
from .transformer import Transformer

__all__ = ["GRULM", "Transformer", "build_model"]


def build_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """A freshly initialised model for cfg.model.arch with vocab = cfg.tokenizer.vocab_size."""
    vocab = cfg.tokenizer.vocab_size
    if cfg.model.arch == "transformer":
        return Transformer(cfg.model, vocab)
    if cfg.model.arch == "gru":
        return GRULM(cfg.model, vocab)
    raise ValueError(f"model.arch = {cfg.model.arch!r}: unknown; use 'transformer' or 'gru'")
