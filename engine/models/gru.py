"""A stacked GRU language model: Embedding -> GRU layers -> linear classifier.

Why a GRU at all: its state is O(dim) per layer whatever the context length, so it fits boards with
too little RAM for a transformer's KV cache (ESP32-C3), and with a byte tokenizer it needs no vocab
tables. Each layer is its own single-layer `nn.GRU` (not one `nn.GRU(num_layers=n)`) so the state-dict
names are `gru.{i}.weight_ih_l0` etc., exactly what engine/config/layout.py and firmware/BLOB.md expect,
and the firmware runs one identical GRU cell per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.schema import ModelConfig


@dataclass
class GRUCache:
    """Hidden state of every layer, h: [n_layers, batch, dim], and the next position to feed."""

    h: torch.Tensor
    pos: int = 0
    max_len: int = 0


class GRULM(nn.Module):
    """`forward(tokens, targets)` -> (logits [B, T, V], mean loss or None), like the Transformer."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.seq_len = cfg.seq_len
        self.tok_embeddings = nn.Embedding(vocab_size, cfg.dim)
        self.gru = nn.ModuleList(nn.GRU(cfg.dim, cfg.dim, batch_first=True) for _ in range(cfg.n_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.dim, vocab_size, bias=False)
        # The GRUs keep PyTorch's uniform(±1/sqrt(dim)) init, which suits their gates. The embedding
        # (= classifier when tied) gets std 0.1, not llama2.c's 0.02: there is no norm before the
        # first GRU, and a 0.02 input barely moves the gates (one-batch overfitting is ~10x slower),
        # while the logits h·E stay small enough for a loss of ≈ ln(vocab) at start.
        nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=0.1)
        nn.init.normal_(self.output.weight, mean=0.0, std=0.1)
        if cfg.tie_embeddings:
            self.tok_embeddings.weight = self.output.weight  # one Parameter, as in the transformer

    def _run(self, tokens: torch.Tensor, h0: torch.Tensor | None
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.dropout(self.tok_embeddings(tokens))
        states = []
        for i, gru in enumerate(self.gru):
            x, h = gru(x, None if h0 is None else h0[i : i + 1])
            states.append(h)
            x = self.dropout(x)
        return self.output(x), states

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self._run(tokens, None)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def init_cache(self, batch_size: int, max_len: int) -> GRUCache:
        """Zero hidden states (PyTorch's default h0). max_len is only recorded: the state is O(1)."""
        p = self.output.weight
        h = torch.zeros(self.cfg.n_layers, batch_size, self.cfg.dim, dtype=p.dtype, device=p.device)
        return GRUCache(h=h, pos=0, max_len=max_len)

    def forward_step(self, tokens: torch.Tensor, cache: GRUCache, start_pos: int) -> torch.Tensor:
        """Logits [B, T, V] continuing from the cached state. A GRU cannot rewind, so start_pos must
        be where the cache left off."""
        if start_pos != cache.pos:
            raise ValueError(f"GRU cache is at position {cache.pos}, cannot continue at {start_pos}")
        logits, states = self._run(tokens, cache.h)
        cache.h = torch.cat(states)
        cache.pos += tokens.shape[1]
        return logits
