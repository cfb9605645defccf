"""engine/device/emulated.py: the rv32 firmware under qemu, reached by DeviceLink over socket://,
answers INFO and generates the reference's greedy ids with instruction counts on every TOK line."""

from __future__ import annotations

import pytest
from protocol_util import needs_rv32

from engine.blob.reference import Reference
from engine.device.emulated import CPI_C3, EmulatedBoard, projected_esp32c3
from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.infer.sample import SamplingParams


def test_projection_arithmetic():
    p = projected_esp32c3(16e6)
    assert p["cpi"] == CPI_C3 == 1.3 and p["mhz"] == 160
    assert p["ms_per_token"] == pytest.approx(16e6 * 1.3 / 160e6 * 1e3)
    assert p["tok_per_s"] == pytest.approx(1e3 / p["ms_per_token"])
    with pytest.raises(ValueError):
        projected_esp32c3(0)


@needs_rv32
def test_emulated_board_int8_greedy_matches_reference(make_blob):
    path = make_blob("transformer", "int8", seed=21)
    ref = Reference(path)
    prompt = [72, 101, 108, 108, 111]
    want = list(ref.generate(prompt, SamplingParams(temperature=0.0), 16))
    with EmulatedBoard(path) as eb:
        assert eb.port.startswith("socket://127.0.0.1:")
        with DeviceLink(eb.port, timeout=20) as link:
            info = link.info()
            assert info["board"] == "rv32" and info["quant"] == "int8"
            assert int(info["blob_size"]) == path.stat().st_size
            events = list(link.generate(prompt_ids=prompt, max_tokens=16, temperature=0))
    toks = [e for e in events if isinstance(e, TokenEvent)]
    end = events[-1]
    assert isinstance(end, GenerationSummary) and end.tokens == len(toks)
    assert [t.token for t in toks] == want[:len(toks)] and len(toks) == len(want)
    assert all(t.instructions > 0 for t in toks)
    proj = projected_esp32c3(sum(t.instructions for t in toks) / len(toks))
    assert proj["tok_per_s"] > 0
