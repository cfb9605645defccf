"""engine.models.losses: the classifier + cross-entropy by row blocks is F.cross_entropy over the
whole logits array, in value and in both gradients, with ignored rows and a ragged last block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.config.schema import ExperimentConfig
from engine.models import build_model
from engine.models.losses import classifier_cross_entropy


def reference(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(h @ w.t(), t, ignore_index=-1)


@pytest.mark.parametrize("chunk", [7, 50, 512])  # ragged blocks, exactly one block, fewer rows
def test_loss_and_gradients_match_cross_entropy(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=g)
    w = torch.randn(33, 16, generator=g) * 3  # large logits: the max-shift must hold
    t = torch.randint(0, 33, (50,), generator=g)
    t[[3, 17, 18, 49]] = -1  # ignored rows: no loss, no gradient, not in the mean
    hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = reference(hr, wr, t)
    (ref * 2.5).backward()  # a non-unit upstream gradient must scale both
    hc, wc = h.clone().requires_grad_(), w.clone().requires_grad_()
    got = classifier_cross_entropy(hc, wc, t, chunk)
    (got * 2.5).backward()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hc.grad, hr.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(wc.grad, wr.grad, rtol=1e-5, atol=1e-7)
    assert hc.grad[[3, 17, 18, 49]].abs().max() == 0
    with torch.no_grad():  # evaluation: the same value, no gradients computed
        torch.testing.assert_close(classifier_cross_entropy(h, w, t, chunk), ref.detach(),
                                   rtol=1e-6, atol=1e-6)


def test_a_frozen_classifier_gets_no_gradient_and_costs_none() -> None:
    h = torch.randn(20, 8, requires_grad=True)
    w = torch.randn(11, 8)  # frozen (LoRA base, say)
    t = torch.randint(0, 11, (20,))
    classifier_cross_entropy(h, w, t, 6).backward()
    ref_h = h.detach().clone().requires_grad_()
    reference(ref_h, w, t).backward()
    torch.testing.assert_close(h.grad, ref_h.grad, rtol=1e-5, atol=1e-7)
    assert w.grad is None


def test_the_transformer_with_the_chunked_loss_trains_like_the_full_one() -> None:
    cfg = ExperimentConfig()
    m = cfg.model
    m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len = 32, 2, 4, 2, 40
    cfg.tokenizer.vocab_size = 64
    torch.manual_seed(0)
    full = build_model(cfg)
    chunked = build_model(cfg)
    chunked.load_state_dict(full.state_dict())
    chunked.loss_kernel = "chunked"
    x = torch.randint(0, 64, (3, 40))
    y = torch.roll(x, -1, 1)
    logits, loss_full = full(x, y)
    none, loss_chunked = chunked(x, y)
    assert logits is not None and logits.shape == (3, 40, 64)
    assert none is None  # the point: no [B*T, vocab] array
    torch.testing.assert_close(loss_chunked, loss_full, rtol=1e-6, atol=1e-6)
    loss_full.backward()
    loss_chunked.backward()
    for (name, a), b in zip(full.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    logits_only, no_loss = chunked(x)  # sampling still gets logits
    assert no_loss is None and logits_only.shape == (3, 40, 64)
