"""engine/store/format.py: the strings `tinylm list` and the app's table share."""

from __future__ import annotations

import time

from engine.config.presets import preset_config
from engine.config.schema import apply_overrides
from engine.store.experiments import Store
from engine.store.format import SUMMARY_COLUMNS, fmt_when, summary_columns


def test_summary_carries_preset_fit_blob_and_bits_per_byte(tmp_path):
    store = Store(tmp_path / "experiments")
    exp = store.create("a", preset_config("esp32-260k"), preset="esp32-260k")
    exp.update_meta(blobs={"int8": {"size": 300_000}}, tags=["x", "y"],
                    quant_reports={"int8": {"bits_per_byte": 1.23456}})
    big = apply_overrides(preset_config("esp32s3-1m"), ["device.board=esp32"])
    store.create("big", big)
    rows = {s.name: s for s in store.list()}
    cols = summary_columns(rows["a"])
    assert list(cols) == [k for k, _ in SUMMARY_COLUMNS]
    assert cols["model"] == "esp32-260k" and cols["params"] == "260K"
    assert cols["blob"] == "293.0 KB int8" and cols["fits"] == "✓ esp32"
    assert cols["bpb"] == "1.235" and cols["tags"] == "x, y"
    big_cols = summary_columns(rows["big"])
    assert big_cols["model"] == "transformer" and big_cols["blob"] == "- int8"
    assert big_cols["fits"] == "✗ esp32 RAM"
    exp.update_meta(eval={"bits_per_byte": 1.1})  # the float model's eval wins over the blob's
    assert summary_columns(store.summarize("a"))["bpb"] == "1.100"


def test_config_edit_by_hand_refreshes_the_cached_fit(tmp_path):
    store = Store(tmp_path / "experiments")
    exp = store.create("a", preset_config("esp32-260k"))
    assert store.summarize("a").fits is True
    text = exp.config_path.read_text().replace("context_len = 128", "context_len = 256")
    text = text.replace("dim = 64", "dim = 256")
    exp.config_path.write_text(text)
    s = store.summarize("a")
    assert s.fits is False and "RAM" in s.over


def test_when_is_the_hour_today_and_the_date_before():
    now = time.mktime((2026, 5, 4, 18, 0, 0, 0, 0, -1))
    assert fmt_when(now - 3600, now) == "17:00"
    assert fmt_when(now - 3 * 86400, now) == "2026-05-01"
    assert fmt_when(None, now) == "-"
