"""Low-rank adapters (LoRA) for the transformer's attention and feed-forward projections.

Why: fine-tuning a model on a new corpus with few trainable parameters (and a small optimizer state),
then folding the adapters back so the weights are a plain llama2.c state dict again: the blob writer,
quantizer and exporters never need to know LoRA existed.

A wrapped projection keeps its original weight as `<name>.base.weight` (frozen) and adds
`<name>.lora_A` [rank, in] (small random) and `<name>.lora_B` [out, rank] (zeros, so the model's
output is unchanged at the start). These names are stable, so a checkpoint taken with adapters loads
into `apply_lora(build_model(cfg), rank)` to resume. The wrapper's `.weight` is the effective weight
W + (B @ A) * alpha / rank: the transformer reads `.weight` to fuse q/k/v into one matmul, and at this
model size forming the d x d matrix costs less than two extra skinny matmuls per projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class LoRALinear(nn.Module):
    """y = x @ (W + (B @ A) * scale)^T with W frozen and only A, B trained."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank = {rank}: must be ≥ 1")
        self.base = base
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / peft do

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The effective weight (a fresh tensor: writing into it changes nothing)."""
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def merged(self) -> nn.Linear:
        """The base Linear with the adapter folded into its weight."""
        with torch.no_grad():
            self.base.weight.copy_(self.weight)
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _targets(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(full name, parent module, attribute) of every attention / ffn projection."""
    found = []
    for parent_name, parent in model.named_modules():
        for attr in TARGETS:
            child = parent._modules.get(attr)
            if isinstance(child, (nn.Linear, LoRALinear)):
                found.append((f"{parent_name}.{attr}" if parent_name else attr, parent, attr))
    return found


def apply_lora(model: nn.Module, rank: int, alpha: float | None = None) -> list[str]:
    """Wrap every wq wk wv wo w1 w2 w3 Linear with an adapter and freeze everything else.

    alpha defaults to rank (scale 1). Returns the names of the adapted modules. Idempotent on already
    wrapped modules. Raises ValueError when the model has no such projections (the GRU).
    """
    alpha = float(rank if alpha is None else alpha)
    targets = _targets(model)
    if not targets:
        raise ValueError("no attention / feed-forward projections to adapt: LoRA needs the transformer")
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for name, parent, attr in targets:
        child = getattr(parent, attr)
        if isinstance(child, nn.Linear):
            child = LoRALinear(child, rank, alpha)
            setattr(parent, attr, child)
        child.lora_A.requires_grad_(True)
        child.lora_B.requires_grad_(True)
        names.append(name)
    return names


def is_lora(model: nn.Module) -> bool:
    """True when the model carries adapters (its state dict has `.lora_A` / `.base.` names)."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight and drop it: the state dict has the plain llama2.c
    names again. All parameters are trainable afterwards, as in a freshly built model."""
    for _, parent, attr in _targets(model):
        child = getattr(parent, attr)
        if isinstance(child, LoRALinear):
            setattr(parent, attr, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors ({name: tensor}), e.g. to save a small fine-tune next to its base."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A" in k or ".lora_B" in k}
