"""engine.reference: bit-exact against a scalar, C-like transcription of BLOB.md, plus the real
stories260K model (known greedy text), the tokenizer against sentencepiece, and the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.blob import reference as R
from engine.blob.format import build_blob, read_blob
from engine.blob.vocab import byte_vocab
from engine.config import layout as bl
from engine.config.schema import (
    ExperimentConfig,
    ModelConfig,
    QuantConfig,
    TokenizerConfig,
)
from engine.errors import UserError
from engine.infer.f32math import seq_sum, tl_expf
from engine.infer.sample import Sampler, SamplingParams, XorShift64Star
from tests.conftest import CORPUS, LLAMA2C

F = np.float32
KNOWN = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
         "park.")


# ---- a scalar transcription of BLOB.md "Arithmetic": one float32 op at a time, like the C ------------

def s_round(v):
    return int(v + (F(0.5) if v >= 0 else F(-0.5)))


def s_expf(x):
    x = min(max(F(x), F(-87.0)), F(88.0))
    k = s_round(x * F(1.44269504))
    r = (x - F(k) * F(0.693359375)) + F(k) * F(2.12194440e-4)
    p = F(1.0) + r * (F(1.0) + r * (F(0.5) + r * (F(0.166666672) + r * (
        F(0.0416666679) + r * (F(0.00833333377) + r * F(0.00138888892))))))
    return p * F(np.ldexp(F(1.0), k))


def s_quant(x, g):
    qs, ss = [], []
    for a in range(0, len(x), g):
        chunk = x[a:a + g]
        amax = max(abs(v) for v in chunk)
        s = amax / F(127.0)
        ss.append(s)
        qs += [0 if amax == 0 else max(-127, min(127, s_round(v / s))) for v in chunk]
    return qs, ss


def s_matmul(t, x, g):
    out = []
    if t.qtype == "f32":
        for r in range(t.rows):
            acc = F(0.0)
            for j in range(t.cols):
                acc = acc + t.values[r, j] * x[j]
            out.append(acc)
        return out
    qx, sx = s_quant(x, g)
    for r in range(t.rows):
        acc = F(0.0)
        for gi, a in enumerate(range(0, t.cols, g)):
            isum = sum(int(t.values[r, j]) * qx[j] for j in range(a, min(a + g, t.cols)))
            if t.qtype == "int8":
                acc = acc + (F(isum) * t.scales[r, gi]) * sx[gi]
            else:
                acc = acc + F(isum) * sx[gi]
        out.append(acc if t.qtype == "int8" else acc * t.scales[0])
    return out


def s_rmsnorm(x, w, eps):
    ss = F(0.0)
    for v in x:
        ss = ss + v * v
    ss = ss / F(len(x))
    ss = ss + eps
    r = F(1.0) / F(np.sqrt(ss))
    return [w[j] * (r * x[j]) for j in range(len(x))]


def s_embed(t, token):
    if t.qtype == "f32":
        return [t.values[token, j] for j in range(t.cols)]
    return [F(int(t.values[token, j])) * t.scales[token, j // t.group] for j in range(t.cols)]


def s_sigmoid(v):
    return F(1.0) / (F(1.0) + s_expf(-v))


class ScalarTransformer:
    def __init__(self, blob):
        self.b, self.h = blob, blob.header
        self.kc, self.vc = {}, {}

    def step(self, token, pos):
        h, T, g = self.h, self.b.tensors, self.h.group_size
        hd = h.dim // h.n_heads
        eps = F(h.norm_eps)
        x = s_embed(T["tok_embeddings.weight"], token)
        for i in range(h.n_layers):
            p = f"layers.{i}."
            xb = s_rmsnorm(x, T[p + "attention_norm.weight"].values[0], eps)
            q = s_matmul(T[p + "attention.wq.weight"], xb, g)
            k = s_matmul(T[p + "attention.wk.weight"], xb, g)
            v = s_matmul(T[p + "attention.wv.weight"], xb, g)
            rope = T["rope"].values[pos]
            for vec in (q, k):
                for a in range(0, len(vec), 2):
                    c, s = rope[a % hd], rope[a % hd + 1]
                    x0, x1 = vec[a], vec[a + 1]
                    vec[a], vec[a + 1] = x0 * c - x1 * s, x0 * s + x1 * c
            self.kc[i, pos], self.vc[i, pos] = k, v
            att = []
            for head in range(h.n_heads):
                kvh = head // (h.n_heads // h.n_kv_heads)
                scores = []
                for t in range(pos + 1):
                    acc = F(0.0)
                    for e in range(hd):
                        acc = acc + q[head * hd + e] * self.kc[i, t][kvh * hd + e]
                    scores.append(acc / F(np.sqrt(F(hd))))
                m = max(scores)
                ex = [s_expf(s - m) for s in scores]
                tot = F(0.0)
                for e in ex:
                    tot = tot + e
                pr = [e / tot for e in ex]
                for e in range(hd):
                    acc = F(0.0)
                    for t in range(pos + 1):
                        acc = acc + pr[t] * self.vc[i, t][kvh * hd + e]
                    att.append(acc)
            xb2 = s_matmul(T[p + "attention.wo.weight"], att, g)
            x = [x[j] + xb2[j] for j in range(len(x))]
            xb = s_rmsnorm(x, T[p + "ffn_norm.weight"].values[0], eps)
            hb = s_matmul(T[p + "feed_forward.w1.weight"], xb, g)
            hb2 = s_matmul(T[p + "feed_forward.w3.weight"], xb, g)
            hb = [(v / (F(1.0) + s_expf(-v))) * w for v, w in zip(hb, hb2)]
            xb = s_matmul(T[p + "feed_forward.w2.weight"], hb, g)
            x = [x[j] + xb[j] for j in range(len(x))]
        x = s_rmsnorm(x, T["norm.weight"].values[0], eps)
        cls = T["tok_embeddings.weight"] if h.tied else T["output.weight"]
        return np.array(s_matmul(cls, x, g), dtype=F)


class ScalarGRU:
    def __init__(self, blob):
        self.b, self.h = blob, blob.header
        self.hidden = [[F(0.0)] * self.h.dim for _ in range(self.h.n_layers)]

    def step(self, token, pos):
        h, T, g, d = self.h, self.b.tensors, self.h.group_size, self.h.dim
        x = s_embed(T["tok_embeddings.weight"], token)
        for i in range(h.n_layers):
            p = f"gru.{i}."
            hh = self.hidden[i]
            gi = [a + b for a, b in zip(s_matmul(T[p + "weight_ih_l0"], x, g),
                                        T[p + "bias_ih_l0"].values[0])]
            gh = [a + b for a, b in zip(s_matmul(T[p + "weight_hh_l0"], hh, g),
                                        T[p + "bias_hh_l0"].values[0])]
            new = []
            for j in range(d):
                r = s_sigmoid(gi[j] + gh[j])
                z = s_sigmoid(gi[d + j] + gh[d + j])
                n = F(2.0) * s_sigmoid(F(2.0) * (gi[2 * d + j] + r * gh[2 * d + j])) - F(1.0)
                new.append((F(1.0) - z) * n + z * hh[j])
            self.hidden[i] = x = new
        cls = T["tok_embeddings.weight"] if h.tied else T["output.weight"]
        return np.array(s_matmul(cls, x, g), dtype=F)


def tiny_blob(arch, method, tie=True, seed=0):
    model = ModelConfig(arch=arch, dim=40, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=72,
                        seq_len=8, tie_embeddings=tie)
    cfg = ExperimentConfig(model=model, tokenizer=TokenizerConfig(kind="byte", vocab_size=256),
                           quant=QuantConfig(group_size=32))
    rng = np.random.default_rng(seed)
    state = {s.name: (rng.normal(size=(s.rows, s.cols)) * (0.5 if s.rows > 1 else 1)).astype(F)
             for s in bl.tensor_specs(cfg, "f32") if s.name != "rope"}
    return read_blob(build_blob(cfg, state, byte_vocab(), method)[0])


def bits(a):
    return np.asarray(a, dtype=F).view(np.uint32)


@pytest.mark.parametrize("method,tie", [("f32", True), ("int8", False), ("ternary", True)])
def test_transformer_step_bit_exact_against_scalar(method, tie):
    blob = tiny_blob("transformer", method, tie)
    ref, scalar = R.Reference(blob), ScalarTransformer(blob)
    for pos, tok in enumerate([65, 3, 200]):
        assert np.array_equal(bits(ref.step(tok, pos)), bits(scalar.step(tok, pos))), pos


@pytest.mark.parametrize("method", ["f32", "int8"])
def test_gru_step_bit_exact_against_scalar(method):
    blob = tiny_blob("gru", method, tie=False, seed=1)
    ref, scalar = R.Reference(blob), ScalarGRU(blob)
    for pos, tok in enumerate([10, 255]):
        assert np.array_equal(bits(ref.step(tok, pos)), bits(scalar.step(tok, pos))), pos


def test_primitives_match_scalar_and_math():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=2000) * 30).astype(F)
    x[:4] = [-87.5, 88.5, 0.0, -0.0]
    got = tl_expf(x)
    assert np.array_equal(bits(got), bits([s_expf(v) for v in x]))
    ok = (x > -87) & (x < 88)
    assert np.max(np.abs(got[ok] / np.exp(x[ok].astype(np.float64)) - 1)) < 1e-6
    a = rng.normal(size=(3, 500)).astype(F)
    loop = []
    for row in a:
        acc = F(0.0)
        for v in row:
            acc = acc + v
        loop.append(acc)
    assert np.array_equal(bits(seq_sum(a, axis=1)), bits(loop))
    assert bits(seq_sum(np.array([-0.0, -0.0], dtype=F))) == bits(F(0.0))  # 0.0f + -0.0f = +0


# ---- sampler ------------------------------------------------------------------------------------------

def test_xorshift_definition():
    rng = XorShift64Star(0)
    s = 0x9E3779B97F4A7C15
    s ^= s >> 12
    s ^= (s << 25) & (2**64 - 1)
    s ^= s >> 27
    assert rng.next_u32() == ((s * 0x2545F4914F6CDD1D) % 2**64) >> 32
    vals = [XorShift64Star(7).random_f32() for _ in range(3)]
    assert all(0 <= v < 1 for v in vals)


def off(**kw) -> SamplingParams:
    """Sampler settings with every option off unless given: greedy, no top-k/top-p, no penalty."""
    return SamplingParams(**{"temperature": 0.0, "top_p": 1.0, "seed": 0, **kw})


def test_sampler_rules():
    logits = np.array([1.0, 3.0, 3.0, -2.0], dtype=F)
    assert Sampler(4, off()).sample(logits, []) == 1  # greedy: lowest index among maxima
    assert Sampler(3, off(repetition_penalty=1.5)).sample(np.array([2.0, -1.0, 1.9], dtype=F), [0, 0]) == 2
    assert Sampler(3, off(repetition_penalty=2.0)).sample(np.array([-2.0, -1.0, -1.2], dtype=F), [1]) == 2
    for seed in range(20):
        assert Sampler(4, off(temperature=1.0, top_k=1, seed=seed)).sample(logits, []) == 1
        assert Sampler(4, off(temperature=1.0, top_p=0.01, seed=seed)).sample(logits, []) == 1
    sampler = Sampler(4, off(temperature=1.0, seed=3))
    draws = [sampler.sample(logits, []) for _ in range(3000)]
    freq = np.bincount(draws, minlength=4) / 3000
    expect = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(freq, expect, atol=0.03)
    sampler = Sampler(4, off(temperature=1.0, top_k=2, seed=3))
    assert set(sampler.sample(logits, []) for _ in range(200)) == {1, 2}


# ---- stories260K: the real model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stories():
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import from_sentencepiece

    fields, state = read_llama2c(LLAMA2C / "stories260K.bin")
    vocab = from_sentencepiece(LLAMA2C / "tok512.model")
    cfg = config_from_llama2c(fields, vocab)
    refs = {m: R.Reference(build_blob(cfg, state, vocab, m)[0]) for m in ("f32", "int8", "ternary")}
    refs["int8_int"] = R.Reference(build_blob(cfg, state, vocab, "int8", int_attention=True)[0])
    return refs


def test_known_greedy_text(stories):
    ref = stories["f32"]
    ids = ref.encode("Once upon a time")
    assert ids == [1, 403, 407, 261, 378]
    out = list(ref.generate(ids, max_new_tokens=60))  # its speed: bench/bench_chat.py (reference)
    text = ref.decode_all(ids + out).decode("utf-8")
    assert text.startswith(KNOWN), text


def test_int8_agrees_with_f32(stories):
    """Teacher-forced: on the f32 greedy continuation, the int8 blob's argmax matches f32's choice
    at ≥ 95% of positions (measured 298/300 = 99.3% over these five prompts)."""
    f32, q8 = stories["f32"], stories["int8"]
    agree = total = 0
    for prompt in ("Once upon a time", "Lily and Tom went to the park", "The little dog",
                   "One day, a big bird", "Sam was sad because"):
        ids = f32.encode(prompt)
        seq = ids + list(f32.generate(ids, max_new_tokens=60, stop_ids=()))
        q8.reset()
        for pos, tok in enumerate(seq[:-1]):
            logits = q8.step(tok, pos)
            if pos >= len(ids) - 1:
                agree += int(np.argmax(logits)) == seq[pos + 1]
                total += 1
    assert agree / total >= 0.95, (agree, total)
    ids = q8.encode("Once upon a time")
    text = q8.decode_all(ids + list(q8.generate(ids, max_new_tokens=40)))
    assert text.decode().startswith(KNOWN)


def test_encode_matches_sentencepiece(stories):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(LLAMA2C / "tok512.model"))
    ref = stories["f32"]
    for text in ["Once upon a time", "Lily and Tom went to the park.", "The cat said, \"Hello!\"",
                 "It was 123 days, 4 hours.", "She's happy; he's not — why?", "Über café naïve 😀",
                 "a", "line one\nline two", "tab\tsep", "ü"]:
        assert ref.encode(text, bos=False) == sp.encode(text), text
        assert ref.encode(text) == [1] + sp.encode(text)
    assert ref.encode("") == [1] and ref.encode("", bos=False) == []
    assert ref.encode("hi", eos=True)[-1] == 2


def test_decode_rules(stories):
    ref = stories["f32"]
    assert ref.decode(1, 403) == b"Once" and ref.decode(403, 403) == b" Once"
    assert ref.decode(None, 1) == b"" and ref.decode(5, 2) == b""
    assert ref.decode(0, 3 + 0xC3) == b"\xc3"


def test_reference_refuses_bad_positions(stories):
    ref = stories["f32"]
    with pytest.raises(UserError, match="position 512"):
        ref.step(1, 512)
    with pytest.raises(UserError, match="token 600"):
        ref.step(600, 0)
    with pytest.raises(UserError, match="context_len 1000"):
        R.Reference(ref.blob, context_len=1000)
    small = R.Reference(ref.blob, context_len=8)
    assert len(list(small.generate([1], params=off(temperature=1.0, seed=4),
                                   stop_ids=()))) == 8


def test_encode_matches_a_tinylm_style_bpe_tokenizer(tmp_path):
    """Trained like engine/data/tokenizer.py (identity normalization, whitespace kept, byte
    fallback): run.c's merge loop reproduces sentencepiece exactly, spaces, tabs and emoji included.
    (A unigram model does not: sentencepiece encodes unigram with Viterbi, not merges.)"""
    import io

    import sentencepiece as spm

    from engine.blob.vocab import from_sentencepiece

    text = CORPUS.read_text(encoding="utf-8")[:300_000]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.split("\n")), model_writer=proto, vocab_size=512,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0, unk_id=0,
        bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=2)
    (tmp_path / "t.model").write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "t.model"))
    model = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=8)
    cfg = ExperimentConfig(model=model, tokenizer=TokenizerConfig(vocab_size=512))
    state = {s.name: np.zeros((s.rows, s.cols), F) for s in bl.tensor_specs(cfg, "f32")
             if s.name != "rope"}
    ref = R.Reference(build_blob(cfg, state, from_sentencepiece(tmp_path / "t.model"), "f32")[0])
    samples = [line for line in text[200_000:].split("\n") if line][:150]
    samples += ["  double  spaces ", "\ttab\n", "emoji 😀 and ünïcode", "“quotes”", " lead"]
    for s in samples:
        assert ref.encode(s, bos=False) == sp.encode(s), s


# ---- integer mode (BLOB.md flags bit 1): scalar transcriptions of "Integer mode" --------------------

ROOT = Path(__file__).resolve().parents[2]


def c_table(name):
    """A uint16 table literal of firmware/core/intmode.c."""
    import re

    src = (ROOT / "firmware" / "core" / "intmode.c").read_text()
    body = re.search(name + r"\[\d+\] = \{([^}]*)\}", src).group(1)
    return [int(v) for v in body.replace("\n", " ").split(",") if v.strip()]


def test_int_tables_match_c():
    assert c_table("TL_EXP2_LUT") == [int(v) for v in R.EXP2_LUT]
    assert c_table("TL_SIG_LUT") == [int(v) for v in R.SIG_LUT]
    assert R.EXP2_LUT[0] == 32768 and R.SIG_LUT[256] == 16384 and R.SIG_LUT[512] == 32768


def u32(x):
    return int(np.array([x], dtype=F).view(np.uint32)[0])


def s_E(x):
    return max((u32(x) >> 23) & 255, 1)


def s_M(x):
    u = u32(x)
    return (u & 0x7FFFFF) | (0x800000 if (u >> 23) & 255 else 0)


def s_m16(x):
    return s_M(x) >> 8


def s_pow2f(k):
    return F(0.0) if k < -126 else F(np.inf) if k > 127 else F(np.ldexp(1.0, k))


def s_floor_shift(v, sh, width=64):
    return v >> min(sh, width - 1)  # Python >> on ints is floor division by 2^sh


def s_qcore(m, top):
    return (m * (1065353216 // top) + (1 << 22)) >> 23


def s_iquant(x, g):
    qs, ss = [], []
    for a in range(0, len(x), g):
        chunk = [F(v) for v in x[a:a + g]]
        big = max(u32(v) & 0x7FFFFFFF for v in chunk)
        if big < 0x800000:
            qs += [0] * len(chunk)
            ss.append(F(0.0))
            continue
        amax = np.array([big], dtype=np.uint32).view(F)[0]
        ss.append(amax / F(127.0))
        ea, top = big >> 23, ((big & 0x7FFFFF) | 0x800000) >> 8
        for v in chunk:
            sh = ea - s_E(v) + 8
            k = s_qcore(0 if sh >= 32 else s_M(v) >> sh, top)
            qs.append(-k if u32(v) >> 31 else k)
    return qs, ss


def s_matmul_int(t, qx, sx, g):
    out = []
    n = t.cols
    for r in range(t.rows):
        isums = [sum(int(t.values[r, j]) * qx[j] for j in range(a, min(a + g, n))) for a in range(0, n, g)]
        if t.qtype == "int8":
            e = [s_E(t.scales[r, k]) + s_E(sx[k]) for k in range(len(isums))]
            b = max(e)
            acc = sum(s_floor_shift(i * s_m16(t.scales[r, k]) * s_m16(sx[k]), b - e[k])
                      for k, i in enumerate(isums))
            out.append(F(acc) * s_pow2f(b - 284))
        else:
            b = max(s_E(v) for v in sx)
            acc = sum(s_floor_shift(i * s_m16(sx[k]), b - s_E(sx[k])) for k, i in enumerate(isums))
            out.append((F(acc) * s_pow2f(b - 142)) * F(t.scales[0]))
    return out


def s_attention_head(q, kq, ks, vq, vs, hd):
    qq, (qs,) = s_iquant(q, hd)
    c = qs * (F(1.44269504) / np.sqrt(F(hd)))
    mc, ec = s_m16(c), s_E(c)
    z = []
    for t in range(len(ks)):
        dot = sum(qq[i] * kq[t][i] for i in range(hd))
        sh = max(276 - s_E(ks[t]) - ec, 0)
        z.append(min(max(s_floor_shift(dot * (s_m16(ks[t]) * mc), sh), -(1 << 30)), 1 << 30))
    zmax = max(z)
    e = []
    for zt in z:
        d = zmax - zt
        e.append(0 if d >> 8 >= 16 else int(R.EXP2_LUT[d & 255]) >> (d >> 8))
    r = (1 << 46) // sum(e)
    p = [(et * r) >> 31 for et in e]
    big = max(s_E(v) for v in vs)
    w = []
    for t, pt in enumerate(p):
        sh = 8 + big - s_E(vs[t])
        w.append(0 if sh >= 32 else (pt * s_m16(vs[t])) >> sh)
    return [F(sum(w[t] * vq[t][i] for t in range(len(w)))) * s_pow2f(big - 149) for i in range(hd)]


def s_swiglu_int(hb, hb2, g):
    qs, ss = [], []
    for a in range(0, len(hb), g):
        qa, (sa,) = s_iquant(hb[a:a + g], len(hb[a:a + g]))
        qb, (sb,) = s_iquant(hb2[a:a + g], len(hb[a:a + g]))
        la, sh = s_m16(sa), 134 - s_E(sa)
        y = []
        for j in range(len(qa)):
            t = qa[j] * la
            idx = t >> min(sh, 31) if sh >= 0 else (4096 if t > 0 else -4096 if t < 0 else 0)
            u = min(max(idx, -4096), 4095) + 4096
            i, f = u >> 4, u & 15
            sig = int(R.SIG_LUT[i]) + (((int(R.SIG_LUT[i + 1]) - int(R.SIG_LUT[i])) * f) >> 4)
            y.append(qa[j] * sig * qb[j])
        top = max(abs(v) for v in y)
        if top == 0:
            qs += [0] * len(y)
            ss.append(F(0.0))
            continue
        z = top.bit_length() - 16
        norm = (lambda v, z=z: v >> z) if z >= 0 else (lambda v, z=z: v << -z)
        qs += [(-1 if v < 0 else 1) * s_qcore(norm(abs(v)), norm(top)) for v in y]
        ss.append((F(top) * (sa * sb)) / F(4161536.0))
    return qs, ss


def test_int_primitives_match_scalar():
    rng = np.random.default_rng(5)
    for scale in (1e-3, 0.7, 40.0):
        x = (rng.normal(size=75) * scale).astype(F)
        x[3], x[40] = 0.0, -0.0
        q, s = R._iquant(x, 32)
        sq, ss = s_iquant(x, 32)
        assert list(q) == sq and bits(s).tolist() == bits(ss).tolist()
        assert np.all(np.abs(q) <= 127) and np.max(np.abs(q[:32])) == 127
        hb2 = (rng.normal(size=75) * scale).astype(F)
        q, s = R._swiglu_int(x, hb2, 32)
        sq, ss = s_swiglu_int(list(x), list(hb2), 32)
        assert list(q) == sq and bits(s).tolist() == bits(ss).tolist()
    zero_q, zero_s = R._iquant(np.zeros(8, F), 8)
    assert not zero_q.any() and zero_s[0] == 0
    big = np.array([2**62 + 3 * 2**37 + 1, -(2**40) - 1, 12345, 0], dtype=np.int64)
    for k in (-200, -140, -30, 0, 100, 200):  # (float)acc rounds to nearest even, then one multiply
        with np.errstate(over="ignore", invalid="ignore"):
            want = [F(int(v)) * s_pow2f(k) for v in big]
        assert bits(R._to_f32_scaled(big, np.full(4, k))).tolist() == bits(want).tolist()


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_matmul_and_attention_match_scalar(method):
    blob = read_blob(build_blob(tiny_blob("transformer", "f32").config(),
                                {n: t.values for n, t in tiny_blob("transformer", "f32").tensors.items()},
                                byte_vocab(), method, int_attention=True)[0])
    g = blob.header.group_size
    rng = np.random.default_rng(6)
    for name in ("layers.0.attention.wq.weight", "layers.1.feed_forward.w2.weight"):
        t = blob.tensors[name]
        qx, sx = R._iquant((rng.normal(size=t.cols) * 2).astype(F), g)
        got = R._Linear([t], g).int_call(qx, sx)[0]
        assert bits(got).tolist() == bits(s_matmul_int(t, list(qx), list(sx), g)).tolist(), name
    ref = R.Reference(blob)
    assert ref.int_mode
    for pos, tok in enumerate([65, 3, 200, 17, 99]):
        ref.step(tok, pos)
    q = (rng.normal(size=(ref.n_heads, ref.head_dim)) * 1.5).astype(F)
    got = ref._attention_int(q, 1, 4).reshape(ref.n_heads, ref.head_dim)
    for h in range(ref.n_heads):
        j = ref.kv_map[h]
        want = s_attention_head(list(q[h]), ref.kq[1, :5, j].tolist(), list(ref.ks[1, :5, j]),
                                ref.vq[1, :5, j].tolist(), list(ref.vs[1, :5, j]), ref.head_dim)
        assert bits(got[h]).tolist() == bits(want).tolist(), h


def test_int_mode_agrees_with_f32(stories):
    """Integer mode costs little quality: teacher-forced agreement with the f32 blob's greedy
    continuation within ~2% of plain int8's (measured 292/300 int mode, 298/300 int8 on these prompts;
    over engine.quant_eval.PROMPTS x 32 tokens it is 314/320 vs 311/320; the int8 K cache is most of
    the difference, the integer softmax/SwiGLU/matmul accumulation cost nothing measurable)."""
    f32, q8, qi = stories["f32"], stories["int8"], stories["int8_int"]
    score = {"int8": [0, 0], "int": [0, 0]}
    for prompt in ("Once upon a time", "Lily and Tom went to the park", "The little dog",
                   "One day, a big bird", "Sam was sad because"):
        ids = f32.encode(prompt)
        seq = ids + list(f32.generate(ids, max_new_tokens=60, stop_ids=()))
        for key, ref in (("int8", q8), ("int", qi)):
            ref.reset()
            for pos, tok in enumerate(seq[:-1]):
                logits = ref.step(tok, pos)
                if pos >= len(ids) - 1:
                    score[key][0] += int(np.argmax(logits)) == seq[pos + 1]
                    score[key][1] += 1
    assert score["int"][0] / score["int"][1] >= 0.95, score
    assert score["int"][0] >= score["int8"][0] - 9, score
    ids = qi.encode("Once upon a time")
    text = qi.decode_all(ids + list(qi.generate(ids, max_new_tokens=40)))
    assert text.decode().startswith(KNOWN)
