"""engine/models/native_attention: the C++ causal attention gives SDPA's outputs and gradients (MHA
and grouped-query, positions not a multiple of its block, strided views, under torch.compile), a
model using it trains like one on SDPA, and a kernel that cannot be built or loaded says why."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.config.schema import ExperimentConfig
from engine.models import build_model
from engine.models import native_attention as N


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, T, H, D = q.shape
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, enable_gqa=True)
    return y.transpose(1, 2).reshape(B, T, H * D)


def outputs_and_grads(fn, q, k, v, g):
    y = fn(q, k, v)
    return (y, *torch.autograd.grad(y, (q, k, v), g))


@pytest.mark.parametrize(("B", "T", "H", "KV", "D"), [(3, 200, 4, 4, 16),  # 200: 3 blocks + 8
                                                     (2, 70, 6, 2, 48),   # grouped-query
                                                     (2, 1, 2, 1, 8)])    # a single position
def test_matches_sdpa_outputs_and_gradients(native_attention_kernel, B, T, H, KV, D) -> None:
    gen = torch.Generator().manual_seed(B * T + H)
    q = torch.randn(B, T, H, D, generator=gen, requires_grad=True)
    k, v = (torch.randn(B, T, KV, D, generator=gen, requires_grad=True) for _ in range(2))
    g = torch.randn(B, T, H * D, generator=gen)
    ours = outputs_and_grads(N.causal_attention, q, k, v, g)
    ref = outputs_and_grads(sdpa, q, k, v, g)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)


def test_reads_strided_views_of_a_fused_projection(native_attention_kernel) -> None:
    """q, k, v as the model makes them: slices of one [B, T, 3H, D] tensor, read without copies."""
    B, T, H, D = 2, 130, 3, 24
    qkv = torch.randn(B, T, 3 * H, D, requires_grad=True)
    g = torch.randn(B, T, H * D)
    views = (qkv[:, :, :H], qkv[:, :, H:2 * H], qkv[:, :, 2 * H:])
    assert not views[0].is_contiguous()
    y = N.causal_attention(*views)
    (dqkv,) = torch.autograd.grad(y, qkv, g)
    y_ref = sdpa(*views)
    (dqkv_ref,) = torch.autograd.grad(y_ref, qkv, g)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(dqkv, dqkv_ref, atol=2e-5, rtol=1e-4)


def test_causal_a_later_position_never_changes_an_earlier_output(native_attention_kernel) -> None:
    q, k, v = (torch.randn(1, 150, 2, 16) for _ in range(3))
    y = N.causal_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, 100:] += 5.0
    v2[:, 100:] -= 3.0
    y2 = N.causal_attention(q, k2, v2)
    assert torch.equal(y[:, :100], y2[:, :100])
    assert not torch.allclose(y[:, 100:], y2[:, 100:])


def test_torch_compile_keeps_the_op_and_its_gradients(native_attention_kernel) -> None:
    torch._dynamo.reset()
    q, k, v = (torch.randn(2, 90, 2, 16, requires_grad=True) for _ in range(3))
    g = torch.randn(2, 90, 32)

    def f(q, k, v):
        return N.causal_attention(q * 1.0, k, v) * 2.0

    eager = outputs_and_grads(f, q, k, v, g)
    compiled = outputs_and_grads(torch.compile(f, fullgraph=True, dynamic=False), q, k, v, g)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def tiny_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    m = cfg.model
    m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len = 48, 2, 6, 2, 96
    cfg.tokenizer.vocab_size = 64
    return cfg


def test_a_model_on_the_native_kernel_matches_sdpa(native_attention_kernel) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    x = torch.randint(0, 64, (3, 96))
    y = torch.roll(x, -1, 1)
    results = {}
    for kernel in ("native", "sdpa"):
        for layer in model.layers:
            layer.attention.kernel = kernel
        _, loss = model(x, y)
        results[kernel] = (loss, torch.autograd.grad(loss, list(model.parameters())))
        with torch.no_grad():  # inference through the same op
            results[kernel] += (model(x)[0],)
    (l1, g1, o1), (l2, g2, o2) = results["native"], results["sdpa"]
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_not_built_failed_and_bad_input_say_why(tmp_path, monkeypatch, native_attention_kernel) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(N._state, "loaded", False)
    assert "not built on this machine yet" in N.ensure(build=False)
    folder = N.cache_dir() / f"tinylm_attention_{N.build_key()}"
    folder.mkdir(parents=True)
    (folder / "FAILED").write_text("CalledProcessError: c++ not found\n")
    why = N.ensure(build=True)  # a failed build is not retried for the same key
    assert "failed on this machine before" in why and "c++ not found" in why and str(folder) in why
    assert not N.available()
    monkeypatch.setitem(N._state, "loaded", True)
    q = torch.randn(1, 8, 2, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float32 CPU tensor"):
        torch.ops.tinylm.causal_attention(q, q, q, 1 / math.sqrt(4), 64)
    with pytest.raises(RuntimeError, match="multiple of kv_heads"):
        x = torch.randn(1, 8, 3, 4)
        torch.ops.tinylm.causal_attention(x, x[:, :, :2], x[:, :, :2], 0.5, 64)


def test_a_compiled_model_uses_its_compiled_kernel(native_attention_kernel) -> None:
    """kernels.apply sets both: eager "blocked" (a python loop torch.compile cannot trace) and
    compiled "native"; fullgraph=True fails on any graph break, so the op must be the native one."""
    from engine.train import kernels as K

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    K.apply(model, K.Kernels("blocked", "fused", "fused", "chunked", compiled_attention="native"))
    assert all(layer.attention.compiled_kernel == "native" for layer in model.layers)
    x = torch.randint(0, 64, (2, 96))
    with torch.no_grad():
        eager = model(x)[0]  # blocked is a training kernel: inference runs SDPA
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(x)[0]
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_a_build_lock_left_by_a_killed_build_does_not_hang_the_next(tmp_path) -> None:
    """torch's build lock is a file it waits on forever: a run stopped mid-build left one, and the
    next long run hung in its calibration. Now a stale lock is removed, and a fresh one (another
    process building) is waited for until that process removes it."""
    import os
    import threading
    import time

    stale = tmp_path / "stale" / "lock"
    stale.parent.mkdir()
    stale.write_text("")
    old = time.time() - N.STALE_LOCK_S - 10
    os.utime(stale, (old, old))
    t0 = time.perf_counter()
    N.wait_for_other_build(stale)
    assert not stale.exists() and time.perf_counter() - t0 < 2

    fresh = tmp_path / "fresh" / "lock"
    fresh.parent.mkdir()
    fresh.write_text("")
    threading.Timer(1.0, fresh.unlink).start()  # the other build ends
    t0 = time.perf_counter()
    N.wait_for_other_build(fresh)
    assert 0.9 < time.perf_counter() - t0 < 10
    N.wait_for_other_build(tmp_path / "none" / "lock")  # no lock: returns at once
