"""The classifier and its cross-entropy computed together, a block of rows at a time.

Why: `F.cross_entropy(h @ W.T, targets)` materialises logits for every token of the batch
([B*T, vocab]: 64 MB at 16x256 with vocab 4096, 512 MB at 64x512), then reads and writes that array
again for log-softmax, its backward and the gathered gradient. On a CPU those passes run at memory
speed, and the classifier GEMM itself is slowed by writing an output far larger than the cache.
Here a block of rows (512 by default) goes through GEMM -> softmax -> (p - onehot) -> the two
gradient GEMMs while its logits are still in cache, and the gradients of h and W are kept from the
forward for the backward, which only scales them. The maths is the same (tests compare loss and
gradients with F.cross_entropy); only the memory traffic differs. Which of the two a run uses is
measured per machine and shape (engine/train/kernels.py): a tiny vocabulary gains little.

Rows whose target is `ignore_index` (-1, as in llama2.c) add nothing to the loss or gradients, and
the mean is over the other rows, like F.cross_entropy(ignore_index=-1).
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 512  # 512 x vocab 4096 floats = 8 MB of logits: stays in this CPU's 32 MB L3


def _block_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Turn a block's logits into softmax probabilities in place; returns each row's
    -log p(target) = log(sum exp(z - max)) - (z_target - max)."""
    logits.sub_(logits.amax(-1, keepdim=True))
    z_target = logits.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)
    logits.exp_()
    sums = logits.sum(-1, keepdim=True)
    logits.div_(sums)
    return sums.squeeze(1).log() - z_target


class ClassifierCrossEntropy(torch.autograd.Function):
    """mean over valid rows of cross_entropy(h @ w.T, targets); h [N, D], w [V, D], targets [N]."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                chunk: int) -> torch.Tensor:
        valid = targets != -1
        count = valid.sum()
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dh = torch.empty_like(h) if need_h else None
        dw = torch.zeros_like(w) if need_w else None
        total = h.new_zeros(())
        for i in range(0, h.shape[0], chunk):
            j = min(h.shape[0], i + chunk)
            rows, t, ok = h[i:j], targets[i:j], valid[i:j]
            probs = rows @ w.t()
            losses = _block_losses(probs, t)
            # p - onehot(target) is d(loss_row)/d(logits); ignored rows have no gradient
            probs[torch.arange(j - i), t.clamp(min=0)] -= 1.0
            if not bool(ok.all()):
                probs[~ok] = 0.0
                losses[~ok] = 0.0
            total += losses.sum()
            if dh is not None:
                torch.mm(probs, w, out=dh[i:j])
            if dw is not None:
                dw.addmm_(probs.t(), rows)
        ctx.save_for_backward(dh, dw, count)
        return total / count.clamp(min=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_loss: torch.Tensor):  # type: ignore[override]
        dh, dw, count = ctx.saved_tensors
        scale = d_loss / count.clamp(min=1)
        return (dh * scale if dh is not None else None, dw * scale if dw is not None else None,
                None, None)


def _loss_only(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """The same mean loss without gradients (evaluation): still a block at a time."""
    valid = targets != -1
    total = h.new_zeros(())
    for i in range(0, h.shape[0], chunk):
        j = min(h.shape[0], i + chunk)
        losses = _block_losses(h[i:j] @ w.t(), targets[i:j])
        total += losses[valid[i:j]].sum()
    return total / valid.sum().clamp(min=1)


@torch.compiler.disable  # a python loop over blocks: run eagerly inside a compiled model
def classifier_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor,
                             chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """cross_entropy(h @ w.T, targets, ignore_index=-1) without the [N, V] logits array.

    h [N, D] and w [V, D] float32; targets [N] integer. Differentiable in h and w.
    """
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return ClassifierCrossEntropy.apply(h, w, targets, chunk)
    return _loss_only(h, w, targets, chunk)
