"""int8 / ternary quantization and packing exactly as firmware/BLOB.md "Tensor storage" says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.blob import quantize as quant
from engine.blob.quantize import (
    PackingError,
    dequantize_int8,
    pack_ternary,
    quantize_activation,
    quantize_int8,
    quantize_ternary,
    round_half_away,
    snr_db,
    unpack_ternary,
)
from engine.config.schema import ExperimentConfig, ModelConfig, TokenizerConfig

F32 = np.float32


def test_round_half_away_is_the_c_expression():
    v = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 0.0, -0.0, 126.5, 3.4999998],
                 dtype=F32)
    # (int)(v + ±0.5f): the float add rounds first, so 0.49999997f + 0.5f == 1.0f → 1
    assert round_half_away(v).tolist() == [1, -1, 2, 3, -3, 1, -1, 0, 0, 127, 3]


@pytest.mark.parametrize("group", [32, 64])
def test_int8_groups_never_straddle_rows_cols_172(group):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 172)).astype(F32)
    w[2, 160:] *= 100  # a large last group must not change any other group's scale
    q, s = quantize_int8(w, group)
    ng = math.ceil(172 / group)
    assert q.shape == (5, 172) and q.dtype == np.int8
    assert s.shape == (5, ng) and s.dtype == F32
    for r in range(5):
        for g in range(ng):
            chunk = w[r, g * group:(g + 1) * group]  # the last one is shorter (12 or 44)
            assert s[r, g] == np.max(np.abs(chunk)) / F32(127)
            expect = np.clip(round_half_away(chunk / s[r, g]), -127, 127)
            assert np.array_equal(q[r, g * group:(g + 1) * group], expect)
    assert np.abs(q).max() == 127
    w_hat = dequantize_int8(q, s, group)
    err = np.abs(w_hat - w)
    bound = np.repeat(s, group, axis=1)[:, :172] * F32(0.5) * F32(1.0001)
    assert np.all(err <= bound)
    assert snr_db(w, w_hat) > 35


def test_int8_zero_group_and_hand_example():
    w = np.zeros((2, 40), dtype=F32)
    w[0, :4] = [1.0, -2.0, 0.5, 0.01]
    q, s = quantize_int8(w, 32)
    assert s[0, 0] == F32(2.0) / F32(127) and s[0, 1] == 0 and s[1, 0] == 0
    assert q[0, :4].tolist() == [64, -127, 32, 1]  # 63.5 → 64, 31.75 → 32, 0.635 → 1
    assert not q[1].any() and not q[0, 32:].any()


def test_activation_quantization_is_one_row_of_int8():
    x = np.random.default_rng(1).normal(size=172).astype(F32)
    qx, sx = quantize_activation(x, 32)
    q, s = quantize_int8(x.reshape(1, -1), 32)
    assert np.array_equal(qx, q[0]) and np.array_equal(sx, s[0])


def test_ternary_packing_exact():
    t = np.array([[1, -1, 0, 1, -1], [0, 0, 0, 0, 1]], dtype=np.int8)
    packed = pack_ternary(t)
    # row 0: 01 | 10<<2 | 00<<4 | 01<<6 = 0x49, then 10 → 0x02; row 1: 0x00, 01 → 0x01
    assert packed.tolist() == [[0x49, 0x02], [0x00, 0x01]]
    assert np.array_equal(unpack_ternary(packed, 5), t)


def test_ternary_rejects_11_pairs_and_dirty_padding():
    with pytest.raises(PackingError, match="11"):
        unpack_ternary(np.array([[0x0C]], dtype=np.uint8), 4, "layers.0.attention.wq.weight")
    with pytest.raises(PackingError, match="padding"):
        unpack_ternary(np.array([[0x40]], dtype=np.uint8), 3)


def test_ternary_absmean():
    w = np.array([[0.1, -0.3, 0.02, 0.5], [-0.05, 0.0, 0.2, -0.9]], dtype=F32)
    t, s = quantize_ternary(w)
    assert s == F32(np.mean(np.abs(w.astype(np.float64))))
    assert t.tolist() == [[0, -1, 0, 1], [0, 0, 1, -1]]  # s = 0.25875
    z, s0 = quantize_ternary(np.zeros((2, 3), dtype=F32))
    assert s0 == 0 and not z.any()
    rng = np.random.default_rng(2)
    big = rng.normal(size=(64, 172)).astype(F32)
    tt, ss = quantize_ternary(big)
    assert np.array_equal(unpack_ternary(pack_ternary(tt), 172), tt)
    assert 3 < snr_db(big, quant.dequantize_ternary(tt, ss)) < 15


def test_snr_edges():
    w = np.ones(4, dtype=F32)
    assert snr_db(w, w) == math.inf
    assert abs(snr_db(w, w * F32(0.9)) - 20.0) < 1e-5


def test_report_covers_every_tensor():
    cfg = ExperimentConfig(model=ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
                                             hidden_dim=44, seq_len=8),
                           tokenizer=TokenizerConfig(kind="byte", vocab_size=256))
    from engine.config.layout import tensor_specs

    rng = np.random.default_rng(3)
    state = {s.name: rng.normal(size=(s.rows, s.cols)).astype(F32)
             for s in tensor_specs(cfg, "f32") if s.name != "rope"}
    rep = quant.quant_report(cfg, state, "ternary")
    names = {r.name: r for r in rep}
    assert names["tok_embeddings.weight"].qtype == "int8"
    assert names["layers.0.attention.wq.weight"].qtype == "ternary"
    assert names["norm.weight"].snr_db == math.inf
    assert sum(r.nbytes for r in rep) > 0


def test_torch_fake_quant_matches_numpy_and_passes_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 172)).astype(F32)
    for group in (32, 64):
        wt = torch.tensor(w, requires_grad=True)
        out = quant.fake_quant_int8(wt, group)
        assert np.array_equal(out.detach().numpy(), quant.roundtrip(w, "int8", group))
        out.sum().backward()
        assert torch.equal(wt.grad, torch.ones_like(wt))
    wt = torch.tensor(w, requires_grad=True)
    out = quant.fake_quant_ternary(wt)
    t, s = quantize_ternary(w)
    ref = quant.dequantize_ternary(t, s)
    assert np.allclose(out.detach().numpy(), ref, rtol=0, atol=1e-6)
    (out * 2).sum().backward()
    assert torch.equal(wt.grad, torch.full_like(wt, 2.0))
