"""engine.models: shapes and names against the blob layout, KV-cache decoding, the CPU attention
kernel against SDPA, training sanity, and LoRA."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config.budget import param_count
from engine.config.layout import tensor_specs
from engine.config.presets import PRESETS, preset_config
from engine.config.schema import ExperimentConfig
from engine.models import GRULM, Transformer, build_model
from engine.models.lora import apply_lora, is_lora, lora_state_dict, merge_lora
from engine.models.transformer import block_causal_attention, rope_table


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_cfg(arch: str = "transformer", **model: object) -> ExperimentConfig:
    cfg = ExperimentConfig()
    m = cfg.model
    m.arch, m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len = arch, 32, 2, 4, 2, 32
    for k, v in model.items():
        setattr(m, k, v)
    cfg.tokenizer.vocab_size = 64
    return cfg


# ---- structure ----------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", list(PRESETS))
def test_param_count_matches_budget(preset: str) -> None:
    cfg = preset_config(preset)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("tied", [True, False])
def test_state_dict_matches_blob_layout(preset: str, tied: bool) -> None:
    cfg = preset_config(preset)
    cfg.model.tie_embeddings = tied
    sd = build_model(cfg).state_dict()
    specs = {s.name: s for s in tensor_specs(cfg) if s.name != "rope"}
    names = set(sd) - ({"output.weight"} if tied else set())  # tied: one tensor, two state-dict keys
    assert names == set(specs)
    for name, spec in specs.items():
        t = sd[name]
        want = (spec.rows, spec.cols) if t.dim() == 2 else (spec.rows * spec.cols,)  # vectors: [1, n]
        assert tuple(t.shape) == want, name
    assert not any("rope" in k or "freqs" in k for k in sd)  # RoPE tables are non-persistent


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_tied_and_untied_classifier(arch: str) -> None:
    tied = build_model(tiny_cfg(arch, tie_embeddings=True))
    assert tied.output.weight is tied.tok_embeddings.weight
    untied = build_model(tiny_cfg(arch, tie_embeddings=False))
    assert untied.output.weight is not untied.tok_embeddings.weight


def test_build_model_picks_arch() -> None:
    assert isinstance(build_model(tiny_cfg("transformer")), Transformer)
    assert isinstance(build_model(tiny_cfg("gru")), GRULM)


def test_llama2c_init() -> None:
    model = build_model(preset_config("esp32-260k"))
    n_layers = 5
    wo = torch.cat([layer.attention.wo.weight.flatten() for layer in model.layers])
    w1 = torch.cat([layer.feed_forward.w1.weight.flatten() for layer in model.layers])
    assert wo.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layers), rel=0.05)
    assert w1.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(model.norm.weight == 1)


def test_rope_table_is_the_blob_formula() -> None:
    hd, n, theta = 8, 20, 10000.0
    cos, sin = rope_table(hd, n, theta)
    for p in (0, 1, 7, 19):
        for k in range(hd // 2):
            angle = p * theta ** (-2 * k / hd)  # float64, rounded once to float32
            assert cos[p, k].item() == torch.tensor(math.cos(angle), dtype=torch.float32).item()
            assert sin[p, k].item() == torch.tensor(math.sin(angle), dtype=torch.float32).item()


# ---- forward and decoding -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_loss_at_init_is_uniform(arch: str) -> None:
    cfg = tiny_cfg(arch)
    cfg.tokenizer.vocab_size = 512
    model = build_model(cfg)
    x, y = torch.randint(0, 512, (4, 32)), torch.randint(0, 512, (4, 32))
    logits, loss = model(x, y)
    assert logits.shape == (4, 32, 512)
    assert loss.item() == pytest.approx(math.log(512), abs=0.05)
    _, none = model(x)
    assert none is None


def test_ignore_index() -> None:
    model = build_model(tiny_cfg())
    x = torch.randint(0, 64, (2, 16))
    y = x.clone()
    y[:, 8:] = -1
    _, loss = model(x, y)
    logits, _ = model(x[:, :8])
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), y[:, :8].reshape(-1))
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_transformer_kv_cache_matches_full_forward(n_kv_heads: int) -> None:
    model = build_model(tiny_cfg(n_kv_heads=n_kv_heads)).eval()
    x = torch.randint(0, 64, (2, 30))
    with torch.no_grad():
        full, _ = model(x)
        cache = model.init_cache(2, 32)
        parts = [model.forward_step(x[:, :7], cache, 0)]  # prompt
        parts += [model.forward_step(x[:, t : t + 1], cache, t) for t in range(7, 20)]  # one by one
        parts.append(model.forward_step(x[:, 20:], cache, 20))  # a chunk again
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_transformer_cache_rewinds() -> None:
    """Re-running from an earlier position overwrites the cache (used for regenerate)."""
    model = build_model(tiny_cfg()).eval()
    x = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        full, _ = model(x)
        cache = model.init_cache(1, 32)
        model.forward_step(torch.randint(0, 64, (1, 12)), cache, 0)
        again = model.forward_step(x, cache, 0)
    torch.testing.assert_close(again, full, atol=1e-5, rtol=0)


def test_transformer_limits() -> None:
    model = build_model(tiny_cfg())
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError):
        model.init_cache(1, 33)
    cache = model.init_cache(1, 8)
    with pytest.raises(ValueError):
        model.forward_step(torch.zeros(1, 2, dtype=torch.long), cache, 7)


def test_gru_cache_matches_full_forward() -> None:
    model = build_model(tiny_cfg("gru", n_layers=3)).eval()
    x = torch.randint(0, 64, (3, 25))
    with torch.no_grad():
        full, _ = model(x)
        cache = model.init_cache(3, 32)
        parts = [model.forward_step(x[:, :5], cache, 0)]
        parts += [model.forward_step(x[:, t : t + 1], cache, t) for t in range(5, 25)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        model.forward_step(x[:, :1], cache, 3)  # a GRU cannot rewind


@pytest.mark.parametrize("T,n_kv_heads", [(100, 2), (64, 4), (37, 1), (1, 2)])
def test_block_causal_attention_matches_sdpa(T: int, n_kv_heads: int) -> None:
    """The CPU training kernel: same outputs and gradients as SDPA, block sizes not dividing T."""
    B, H, hd = 3, 4, 8
    q = torch.randn(B, T, H, hd, requires_grad=True)
    k = torch.randn(B, T, n_kv_heads, hd, requires_grad=True)
    v = torch.randn(B, T, n_kv_heads, hd, requires_grad=True)
    g = torch.randn(B, T, H * hd)
    ours = block_causal_attention(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    ).transpose(1, 2).reshape(B, T, H * hd)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_training_path_matches_sdpa_path() -> None:
    model = build_model(tiny_cfg())
    x, y = torch.randint(0, 64, (2, 32)), torch.randint(0, 64, (2, 32))
    _, loss = model(x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for layer in model.layers:
        layer.attention.kernel = "sdpa"
    _, loss2 = model(x, y)
    grads2 = torch.autograd.grad(loss2, list(model.parameters()))
    torch.testing.assert_close(loss, loss2)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_bf16_autocast_on_cpu_trains() -> None:
    model = build_model(tiny_cfg())
    x = torch.randint(0, 64, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_overfits_one_batch(arch: str) -> None:
    model = build_model(tiny_cfg(arch))
    x = torch.randint(0, 64, (4, 32))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(100):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


def test_dropout_is_training_only() -> None:
    model = build_model(tiny_cfg(dropout=0.5))
    x = torch.randint(0, 64, (2, 16))
    model.eval()
    a, _ = model(x)
    b, _ = model(x)
    torch.testing.assert_close(a, b)
    model.train()
    c, _ = model(x)
    assert not torch.allclose(a, c)


# ---- LoRA ---------------------------------------------------------------------------------------

def test_lora_starts_as_identity_and_trains_only_adapters() -> None:
    model = build_model(tiny_cfg())
    x = torch.randint(0, 64, (2, 16))
    before, _ = model(x)
    names = apply_lora(model, rank=4)
    assert len(names) == 2 * 7 and "layers.0.attention.wq" in names and "layers.1.feed_forward.w3" in names
    assert is_lora(model)
    after, _ = model(x)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert set(lora_state_dict(model)) == {n for n in model.state_dict() if "lora_" in n}


def test_lora_merge_gives_same_logits_and_plain_names() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg)
    plain_names = set(model.state_dict())
    apply_lora(model, rank=4, alpha=8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 64, (4, 32))
    for _ in range(5):
        _, loss = model(x, torch.roll(x, -1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        adapted, _ = model(x)
        assert not torch.allclose(adapted, build_model(cfg).eval()(x)[0])  # it did learn something

        # a checkpoint with adapters resumes into a fresh model with adapters
        resumed = build_model(cfg)
        apply_lora(resumed, rank=4, alpha=8)
        resumed.load_state_dict(model.state_dict())
        torch.testing.assert_close(resumed.eval()(x)[0], adapted, atol=1e-6, rtol=0)

        merge_lora(model)
        merged, _ = model(x)
    assert not is_lora(model)
    assert set(model.state_dict()) == plain_names
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert all(p.requires_grad for p in model.parameters())
    fresh = build_model(cfg)
    fresh.load_state_dict(model.state_dict())  # loads as a plain llama2.c model


def test_lora_needs_the_transformer() -> None:
    with pytest.raises(ValueError):
        apply_lora(build_model(tiny_cfg("gru")), rank=4)
