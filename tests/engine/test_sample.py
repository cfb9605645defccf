"""engine.infer.f32math and engine.infer.sample: the firmware's float32 primitives and sampler, and
generate()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config.schema import ExperimentConfig
from engine.errors import UserError
from engine.infer.f32math import round_half_away, seq_sum, softmax_f32, tl_expf
from engine.infer.sample import Sampler, SamplingParams, XorShift64Star, generate
from engine.models import build_model

F32 = np.float32


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_model(arch: str = "transformer", seq_len: int = 32) -> torch.nn.Module:
    cfg = ExperimentConfig()
    m = cfg.model
    m.arch, m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len = arch, 32, 2, 4, 2, seq_len
    cfg.tokenizer.vocab_size = 64
    return build_model(cfg)


# ---- f32math ------------------------------------------------------------------------------------

def test_tl_expf_accuracy_and_reproducibility() -> None:
    x = np.linspace(-87.0, 88.0, 200_001, dtype=F32)
    got = tl_expf(x)
    assert got.dtype == F32
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got.astype(np.float64) - ref) / ref) < 1e-6
    assert np.array_equal(tl_expf(x).view(np.int32), got.view(np.int32))  # same bits every time
    assert tl_expf(F32(0.0)) == F32(1.0)
    assert tl_expf(F32(-200.0)) == tl_expf(F32(-87.0))  # clamped
    assert np.isfinite(tl_expf(F32(1e9)))


def test_tl_expf_follows_the_c_formula_step_by_step() -> None:
    """One value worked through the spec with numpy float32 scalars, op by op."""
    x = F32(-3.7)
    k = int(x * F32(1.44269504) + F32(-0.5))  # round_half_away of a negative value
    kf = F32(k)
    r = (x - kf * F32(0.693359375)) + kf * F32(2.12194440e-4)
    p = F32(0.00833333377) + r * F32(0.00138888892)
    for c in (0.0416666679, 0.166666672, 0.5, 1.0, 1.0):
        p = F32(c) + r * p
    assert tl_expf(x) == p * F32(2.0) ** k


def test_round_half_away() -> None:
    v = np.array([2.5, -2.5, 0.5, -0.5, 1.49, -1.49, 0.0, 126.5], dtype=F32)
    assert round_half_away(v).tolist() == [3, -3, 1, -1, 1, -1, 0, 127]
    # the float add rounds: 0.49999997f + 0.5f == 1.0f, so C gives 1 (exact rounding would give 0)
    assert round_half_away(F32(0.49999997)) == 1


def test_seq_sum_is_sequential() -> None:
    x = np.random.default_rng(0).standard_normal(10_000).astype(F32) * F32(1000)
    acc = F32(0.0)
    for v in x:
        acc = F32(acc + v)
    assert seq_sum(x) == acc
    assert np.cumsum(x, dtype=F32)[-1] == acc  # what the sampler relies on


def test_softmax_f32() -> None:
    x = np.array([1.0, 2.0, 3.0, -1.0], dtype=F32)
    p = softmax_f32(x)
    assert p.dtype == F32
    np.testing.assert_allclose(p, np.exp(x - 3) / np.exp(x - 3).sum(), rtol=1e-6)


# ---- RNG ----------------------------------------------------------------------------------------

def test_xorshift_known_values() -> None:
    """Derived by hand from the spec with Python ints (// and * powers of two instead of shifts).
    Seed 1, first output: s = 1; s ^= s >> 12 -> 1; s ^= s << 25 -> 2^25 + 1 = 33554433;
    s ^= s >> 27 -> 33554433; (33554433 * 0x2545F4914F6CDD1D mod 2^64) >> 32 = 1206177355."""
    rng = XorShift64Star(1)
    assert rng.next_u32() == 1206177355
    assert rng.state == 33554433
    assert [rng.next_u32() for _ in range(3)] == [2882512552, 3117485455, 1303648416]
    rng = XorShift64Star(1234)
    assert [rng.next_u32() for _ in range(4)] == [3159758022, 1306163061, 1764681998, 1393191135]
    rng = XorShift64Star(0)  # seed 0 -> 0x9E3779B97F4A7C15
    assert [rng.next_u32() for _ in range(2)] == [226735074, 1422150777]
    rng = XorShift64Star(1234)
    assert rng.random_f32() == F32((3159758022 >> 8) / 16777216)


# ---- Sampler ------------------------------------------------------------------------------------

def test_greedy_lowest_index_on_ties() -> None:
    s = Sampler(5, SamplingParams(temperature=0.0))
    assert s.sample(np.array([0.1, 3.0, -1.0, 3.0, 2.0], dtype=F32)) == 1
    state = s.rng.state
    s.sample(np.array([0.0, 1.0, 2.0, 3.0, 4.0], dtype=F32))
    assert s.rng.state == state  # greedy draws no random number


def test_one_random_number_per_token() -> None:
    params = SamplingParams(temperature=1.0, top_k=3, top_p=0.5, seed=7)
    s = Sampler(8, params)
    logits = np.random.default_rng(0).standard_normal(8).astype(F32)
    rng = XorShift64Star(7)
    for _ in range(5):
        s.sample(logits)
        rng.next_u32()
        assert s.rng.state == rng.state


def test_draw_walks_the_cdf_in_index_order() -> None:
    """No top-k/top-p: r = random_f32 * total, first index with r < running sum."""
    logits = np.array([0.5, -1.0, 2.0, 0.0, 1.0], dtype=F32)
    params = SamplingParams(temperature=0.7, top_k=0, top_p=1.0, seed=99)
    probs = softmax_f32(logits / F32(0.7))
    r = XorShift64Star(99).random_f32() * np.cumsum(probs, dtype=F32)[-1]
    acc, want = F32(0.0), len(probs) - 1
    for i, p in enumerate(probs):
        acc = F32(acc + p)
        if r < acc:
            want = i
            break
    assert Sampler(5, params).sample(logits) == want


def test_same_seed_same_stream_different_seeds_differ() -> None:
    logits = np.random.default_rng(1).standard_normal(64).astype(F32)

    def stream(seed: int) -> list[int]:
        s = Sampler(64, SamplingParams(temperature=1.0, top_p=0.95, seed=seed))
        return [s.sample(logits) for _ in range(50)]

    assert stream(5) == stream(5)
    assert stream(5) != stream(6)


def test_top_k_1_and_tiny_top_p_are_greedy() -> None:
    rng = np.random.default_rng(2)
    for seed in range(20):
        logits = rng.standard_normal(64).astype(F32)
        best = int(np.argmax(logits))
        one = SamplingParams(temperature=1.0, top_k=1, top_p=1.0, seed=seed)
        assert Sampler(64, one).sample(logits) == best
        assert Sampler(64, SamplingParams(temperature=1.0, top_p=1e-6, seed=seed)).sample(logits) == best


def test_top_p_keeps_the_shortest_prefix_reaching_p() -> None:
    # probabilities ~ [0.1, 0.2, 0.3, 0.4]: descending 3, 2, 1, 0 with sums 0.4, 0.7, 0.9, 1.0
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4])).astype(F32)
    picks = set()
    s = Sampler(4, SamplingParams(temperature=1.0, top_p=0.65, seed=3))
    for _ in range(300):
        picks.add(s.sample(logits))
    assert picks == {3, 2}
    # top-k cuts first, then top-p runs on the cut list
    s = Sampler(4, SamplingParams(temperature=1.0, top_k=3, top_p=0.95, seed=3))
    assert {s.sample(logits) for _ in range(300)} == {3, 2, 1}


def test_sampling_follows_the_distribution() -> None:
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4])).astype(F32)
    s = Sampler(4, SamplingParams(temperature=1.0, top_p=1.0, seed=11))
    counts = np.bincount([s.sample(logits) for _ in range(4000)], minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_repetition_penalty() -> None:
    logits = np.array([2.0, 1.9, -1.0, -1.05], dtype=F32)
    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.2)
    assert Sampler(4, greedy).sample(logits, seen=[0]) == 1  # 2.0 / 1.2 < 1.9
    assert Sampler(4, greedy).sample(logits, seen=[]) == 0
    # negative logits are multiplied (pushed further down), and each id counts once
    hot = np.array([-5.0, -5.0, -1.0, -1.05], dtype=F32)
    assert Sampler(4, greedy).sample(hot, seen=[2, 2, 2]) == 3
    assert logits[0] == F32(2.0)  # the caller's array is not modified
    # with sampling: a penalised token is drawn less often
    p = SamplingParams(temperature=1.0, top_p=1.0, repetition_penalty=3.0, seed=4)
    s_pen, s_free = Sampler(4, p), Sampler(4, SamplingParams(temperature=1.0, top_p=1.0, seed=4))
    pen = sum(s_pen.sample(logits, seen=[0]) == 0 for _ in range(500))
    free = sum(s_free.sample(logits) == 0 for _ in range(500))
    assert pen < free


# ---- generate -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_greedy_generate_matches_full_forward_argmax(arch: str) -> None:
    model = tiny_model(arch)
    prompt = [1, 5, 9]
    out = list(generate(model, prompt, SamplingParams(temperature=0.0, max_tokens=10)))
    assert len(out) == 10
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            logits, _ = model.eval()(torch.tensor([seq]))
            seq.append(int(torch.argmax(logits[0, -1])))
    assert out == seq[len(prompt):]


def test_generate_is_deterministic_and_streams() -> None:
    model = tiny_model()
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=42, max_tokens=20)
    a = list(generate(model, [1, 2], params))
    assert a == list(generate(model, [1, 2], params))
    assert a != list(generate(model, [1, 2], SamplingParams(temperature=1.0, top_p=0.9, seed=43,
                                                          max_tokens=20)))
    model.train()
    it = generate(model, [1, 2], params)
    next(it)
    assert torch.is_grad_enabled()  # no_grad does not leak out between tokens
    it.close()
    assert model.training  # mode restored


def test_generate_stops() -> None:
    model = tiny_model(seq_len=16)
    greedy = SamplingParams(temperature=0.0, max_tokens=100)
    full = list(generate(model, [1, 2, 3], greedy))
    assert len(full) == 16 - 3 + 1  # context full: the token sampled at position ctx - 1 is the last
    assert len(list(generate(model, [1, 2, 3], greedy, context_len=8))) == 8 - 3 + 1
    assert len(list(generate(model, list(range(16)), greedy))) == 1
    assert len(list(generate(model, [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=4)))) == 4
    eos = full[4]
    assert list(generate(model, [1, 2, 3], greedy, eos_id=eos)) == full[: full.index(eos)]
    bos = full[2]
    assert list(generate(model, [1, 2, 3], greedy, stop_ids=[bos])) == full[: full.index(bos)]
    calls = []
    stop = list(generate(model, [1, 2, 3], greedy, should_stop=lambda: len(calls.append(0) or calls) > 3))
    assert stop == full[:3]
    with pytest.raises(UserError, match="prompt is empty"):
        list(generate(model, [], greedy))
    with pytest.raises(UserError, match="17 tokens but the model's context holds 16"):
        list(generate(model, list(range(17)), greedy))


def test_gru_generate_has_no_context_limit_except_the_penalty_buffer() -> None:
    model = tiny_model("gru", seq_len=16)
    assert len(list(generate(model, [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=40)))) == 40
    pen = SamplingParams(temperature=0.0, max_tokens=40, repetition_penalty=1.3)
    assert len(list(generate(model, [1, 2, 3], pen))) == 16 - 3  # prompt + generated ids fill ctx


def test_sample_module_does_not_import_torch() -> None:
    code = "import sys, engine.infer.sample, engine.infer.f32math; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.strip() == "False"


def test_sampling_problems_name_each_bad_knob():
    from engine.infer.sample import sampling_problems

    assert sampling_problems(SamplingParams()) == {}
    bad = sampling_problems(SamplingParams(temperature=-1, top_k=-2, top_p=1.5,
                                           repetition_penalty=0, seed=-1, max_tokens=0))
    assert set(bad) == {"temperature", "top_k", "top_p", "repetition_penalty", "seed", "max_tokens"}
    assert "0..1" in bad["top_p"] and "1 = off" in bad["repetition_penalty"]
    assert sampling_problems(SamplingParams(temperature=float("nan"))).keys() == {"temperature"}
    # the config's number rules: top-p 0 is refused (1 is "off"), and generate refuses too
    assert "0 is outside 0..1, 0 excluded" in sampling_problems(SamplingParams(top_p=0))["top_p"]
    with pytest.raises(UserError, match="top_p: 0 is outside"):
        next(generate(tiny_model("transformer", seq_len=16), [1], SamplingParams(top_p=0)))


def test_generate_steps_on_one_thread_and_gives_the_count_back() -> None:
    """Each step runs with torch on one thread (tiny matmuls: waking a second costs more than it
    computes); between tokens, and after, the caller's thread count is what it set."""
    from engine.infer import sample

    model = tiny_model()
    seen: list[int] = []
    real_step = model.forward_step

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_step(*args, **kwargs)

    model.forward_step = spy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stream = generate(model, [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=6))
        next(stream)
        assert torch.get_num_threads() == 2  # the caller's code between tokens: untouched
        rest = list(stream)
        assert len(rest) == 5 and seen and set(seen) == {1}
        assert torch.get_num_threads() == 2 and sample._threads_users == 0
    finally:
        torch.set_num_threads(before)
