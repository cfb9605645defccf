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
    cfg = preset_config("esp32-260k")  # context 128 on device, integer mode (int8 KV cache)
    ram = budget.runtime_ram(cfg)
    assert ram["kv_cache"] == 2 * 5 * 128 * (32 + 4 * 4)
    assert ram["activations"] == 4 * (4 * 64 + 2 * 172 + 128 + 512)
    assert ram["total"] == sum(v for k, v in ram.items() if k != "total")
    f32 = budget.runtime_ram(apply_overrides(cfg, ["quant.int_attention=false"]))
    assert f32["kv_cache"] == 4 * 2 * 5 * 128 * 32
    assert f32["activations"] == 4 * (4 * 64 + 2 * 172 + 8 * 128 + 512)
    blocks = budget.blocks(ram)
    assert blocks == {"kv_cache": ram["kv_cache"], "activations": ram["activations"],
                      "scratch": ram["quant_scratch"] + ram["sampler"] + ram["tokens"]}
    assert sum(blocks.values()) + ram["io_buffers"] == ram["total"]


def test_boards_are_heap_regions_with_a_largest_block():
    esp32 = budget.board_named("esp32")
    assert esp32.largest_block < esp32.ram_bytes / 1.5  # four regions, none near the total
    assert esp32.largest_block < 160 * 1024  # the figure: ~110-160 KB
    s3, s3_bare = budget.board_named("esp32-s3"), budget.board_named("esp32-s3-nopsram")
    assert s3.largest_block > 8 * 1000 * 1000 > s3_bare.ram_bytes  # PSRAM is one big region
    assert budget.board_named("esp32-c3").largest_block < budget.board_named("esp32-c3").ram_bytes


def test_a_block_larger_than_every_region_does_not_fit():
    """A float KV cache at 128 tokens (160 KB in one piece): the ESP32's free total would hold it,
    its largest block does not; the verdict says so with both numbers, and integer mode is advised."""
    cfg = apply_overrides(preset_config("esp32-260k"), ["quant.int_attention=false"])
    b = budget.compute(cfg, "esp32")
    assert b.ram_total < b.board.ram_bytes and not b.fits
    assert b.placement.failed == "kv_cache" and b.placement.needed == 163_840
    assert b.verdict() == ("does not fit esp32: largest block 136.0 KB < needed 160.0 KB "
                           "(kv cache; 24.0 KB over)")
    assert any(a.startswith("quant.int_attention false → true") and a.endswith("then it fits")
               for a in b.advice)
    assert budget.compute(cfg, "esp32-s3").fits  # the KV cache goes to PSRAM
    assert budget.compute(cfg, "esp32-s3-nopsram").fits  # one 256 KB region
    assert budget.compute(preset_config("esp32-260k"), "esp32").fits  # integer mode: 60 KB


def test_verdict_and_advice_when_it_does_not_fit():
    cfg = apply_overrides(preset_config("esp32-260k"), ["device.context_len=0", "model.seq_len=1024",
                                                        "quant.int_attention=false"])
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
