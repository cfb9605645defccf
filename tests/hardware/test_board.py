"""A real board against the reference (`pytest -m hardware --port /dev/ttyUSB0`, firmware/README.md).

The Xtensa FPU's division, square root and denormals are checked by nothing else here: the parity
tests are how a board shows it computes the reference's bits, and when it does not they say at which
step the tokens diverged and how close the reference's top two logits were there (a near-tie means
a last-bit difference in one op flipped it; a wide margin means a real fault)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.config import budget
from engine.device.link import GenerationSummary, TokenEvent
from engine.infer.sample import SamplingParams

from .conftest import REPORT

pytestmark = pytest.mark.hardware

N_TOKENS = 48
PROMPTS = ["Once upon a time", "The little dog", "Lily and Tom went to the park. They saw"]


def _expected(ref, ids: list[int], params: SamplingParams, n: int) -> list[int]:
    toks = list(ref.generate(ids, params, n))
    stops = {ref.vocab.bos_id, ref.vocab.eos_id} - {None}
    return toks[:-1] if toks and toks[-1] in stops else toks


def _run(hw, ids: list[int], **kw) -> tuple[list[int], GenerationSummary]:
    events = list(hw.link.generate(prompt_ids=ids, max_tokens=N_TOKENS, **kw))
    summary = events[-1]
    assert isinstance(summary, GenerationSummary), events[-1]
    return [e.token for e in events if isinstance(e, TokenEvent)], summary


def divergence(ref, ids: list[int], got: list[int], want: list[int]) -> str:
    """Where the board left the reference: the step, both tokens, and the reference's margin there."""
    pairs = zip(got, want, strict=False)  # one may be shorter (an early eos)
    step = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(want)))
    ref.reset()
    logits = None
    for pos, tok in enumerate(ids + want[:step]):
        logits = ref.step(int(tok), pos)
    top = np.sort(np.asarray(logits, dtype=np.float64))[-2:] if logits is not None else [0, 0]
    margin = float(top[1] - top[0])
    kind = ("a near-tie: one op's last bit (FPU division, sqrt or denormals) flipped it"
            if margin < 1e-3 else "a wide margin: the board computed something else")
    b = got[step] if step < len(got) else "(ended)"
    r = want[step] if step < len(want) else "(ended)"
    return (f"diverged at generated token {step} (position {len(ids) + step}): board {b}, "
            f"reference {r}; the reference's top-2 logit margin there is {margin:.6f}, {kind}. "
            f"Board {got[:step + 3]}…, reference {want[:step + 3]}…")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_parity(hw, prompt):
    ids = hw.ref.encode(prompt, bos=True)
    want = _expected(hw.ref, ids, SamplingParams(temperature=0.0), N_TOKENS)
    got, summary = _run(hw, ids, temperature=0)
    assert got == want, divergence(hw.ref, ids, got, want)
    assert summary.tokens == len(got)


@pytest.mark.parametrize("seed", [1, 42])
def test_sampled_parity(hw, seed):
    ids = hw.ref.encode(PROMPTS[0], bos=True)
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=seed)
    want = _expected(hw.ref, ids, params, N_TOKENS)
    got, _ = _run(hw, ids, temperature=0.8, top_p=0.9, seed=seed)
    assert got == want, divergence(hw.ref, ids, got, want)


def test_speed_and_free_heap_are_reported(hw):
    ids = hw.ref.encode(PROMPTS[0], bos=True)
    _, summary = _run(hw, ids, temperature=0)
    info = hw.link.info()
    heap, block = int(info["heap"]), int(info.get("heap_block", 0))
    chip = budget.board_named(hw.chip)
    REPORT.append(f"{info['board']} ({hw.port}): {summary.tok_per_s:.1f} tok/s over {summary.tokens} "
                  f"tokens, prompt {summary.prompt_us / 1000:.1f} ms; model RAM {info['ram']} B; "
                  f"free heap after it {heap} B, largest free block {block} B (the budget assumes "
                  f"{chip.ram_bytes} B free before the model, largest region {chip.largest_block} B)")
    assert summary.tokens > 0 and summary.tok_per_s > 0
    assert heap > 0 and int(info["ram"]) == budget.runtime_ram(
        _blob_config(hw), hw.ref.header.quant, context_len=int(info["ctx"]))["total"]


def test_stop_ends_a_long_generation_within_a_token(hw):
    ids = hw.ref.encode(PROMPTS[0], bos=True)
    gen = hw.link.generate(prompt_ids=ids, max_tokens=10_000, temperature=0.8, seed=7)
    seen = 0
    for ev in gen:
        if isinstance(ev, TokenEvent):
            seen += 1
            if seen == 3:
                hw.link.stop()
        else:
            assert ev.reason in ("stop", "ctx", "eos") and ev.tokens < 10_000
            break
    again, _ = _run(hw, ids, temperature=0)  # the board takes the next command
    assert again


def test_reset_reboots_with_the_model(hw):
    t0 = time.monotonic()
    ready = hw.link.reset(timeout=30)
    assert ready.fields["model"] == "ok"
    REPORT.append(f"reset to @READY: {time.monotonic() - t0:.2f} s")
    assert hw.link.info()["blob_sha"] == hw.info["blob_sha"]


def _blob_config(hw):
    from engine.blob.format import read_blob

    return read_blob(hw.blob).config()
