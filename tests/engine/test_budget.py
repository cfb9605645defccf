from __future__ import annotations

from engine.config import budget
from engine.config.layout import layout
from engine.config.presets import preset_config
from engine.config.schema import apply_overrides


def test_stories260k_shape_counts():
    cfg = preset_config("esp32-260k")
    assert budget.param_count(cfg) == 260_032  # stories260K's published size
    b = budget.compute(cfg)
    assert b.blob_bytes["f32"] > b.blob_bytes["int8"] > b.blob_bytes["ternary"]
    # f32 blob = 4 bytes a parameter + rope table + vocab + headers
    assert 4 * 260_032 < b.blob_bytes["f32"] < 4 * 260_032 + 20_000


def test_ram_breakdown_matches_the_formula():
    cfg = preset_config("esp32-260k")  # context 128 on device
    ram = budget.runtime_ram(cfg)
    assert ram["kv_cache"] == 4 * 2 * 5 * 128 * 32
    assert ram["activations"] == 4 * (4 * 64 + 2 * 172 + 8 * 128 + 512)
    assert ram["total"] == sum(v for k, v in ram.items() if k != "total")


def test_verdict_and_advice_when_it_does_not_fit():
    cfg = apply_overrides(preset_config("esp32-260k"), ["device.context_len=0", "model.seq_len=1024"])
    b = budget.compute(cfg, "esp32")
    assert not b.fits and b.ram_over > 0
    assert "does not fit esp32" in b.verdict() and "over" in b.verdict()
    # the int8 KV cache of integer mode is the biggest single saving
    assert b.advice[0].startswith("quant.int_attention false → true")
    assert b.advice[1].startswith("device.context_len 1024 → 512")
    assert "then it fits" not in b.advice[0]  # 1024 tokens are too many even then
    # following an advice reduces the overflow by what it claims
    saved = int(b.advice[1].split("saves ")[1].split(" KB")[0].split(".")[0])
    fixed = budget.compute(apply_overrides(cfg, ["device.context_len=512"]), "esp32")
    assert abs((b.ram_total - fixed.ram_total) / 1024 - saved) < 1.5


def test_flash_overflow_advises_quantization():
    cfg = apply_overrides(preset_config("host-7m"), ["quant.method=f32"])
    b = budget.compute(cfg, "esp32")
    assert b.flash_over > 0
    assert any(a.startswith("quant.method f32 → int8") for a in b.advice)


def test_every_preset_fits_its_own_board():
    from engine.config.presets import PRESETS

    for name in PRESETS:
        b = budget.compute(preset_config(name))
        assert b.fits, (name, b.verdict())


def test_exact_piece_bytes_change_blob_size():
    cfg = preset_config("esp32-260k")
    a = layout(cfg, "int8", piece_bytes=1000).total_bytes
    b = layout(cfg, "int8", piece_bytes=2000).total_bytes
    assert 990 <= b - a <= 1010  # only the vocab section grows (plus alignment)
