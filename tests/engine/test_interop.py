"""llama2.c interop: v0/v1/v2 model files, tokenizer .bin, import as an experiment, bad files."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from engine.blob import llama2c as interop
from engine.blob.vocab import (
    VocabError,
    byte_vocab,
    from_sentencepiece,
    read_tokenizer_bin,
    tokenizer_bin_bytes,
)
from engine.config.schema import ExperimentConfig, ModelConfig, TokenizerConfig
from engine.errors import UserError
from engine.store.checkpoint import load_checkpoint
from engine.store.experiments import Store

F = np.float32
from tests.conftest import LLAMA2C as DATA  # noqa: E402

STORIES, TOK_MODEL, TOK_BIN = DATA / "stories260K.bin", DATA / "tok512.model", DATA / "tok512.bin"
pytestmark = pytest.mark.skipif(not STORIES.exists(), reason="tests/data/llama2c not present")


def small(tie: bool) -> tuple[ExperimentConfig, dict[str, np.ndarray]]:
    cfg = ExperimentConfig(model=ModelConfig(dim=16, n_layers=2, n_heads=4, n_kv_heads=2,
                                             hidden_dim=24, seq_len=8, tie_embeddings=tie),
                           tokenizer=TokenizerConfig(kind="byte", vocab_size=256))
    rng = np.random.default_rng(0)
    d, h, kv = 16, 24, 8
    st = {"tok_embeddings.weight": rng.normal(size=(256, d)).astype(F),
          "norm.weight": rng.normal(size=d).astype(F)}
    for i in range(2):
        p = f"layers.{i}."
        for name, shape in [("attention_norm", (d,)), ("ffn_norm", (d,)), ("attention.wq", (d, d)),
                            ("attention.wk", (kv, d)), ("attention.wv", (kv, d)),
                            ("attention.wo", (d, d)), ("feed_forward.w1", (h, d)),
                            ("feed_forward.w2", (d, h)), ("feed_forward.w3", (h, d))]:
            st[p + name + ".weight"] = rng.normal(size=shape).astype(F)
    if not tie:
        st["output.weight"] = rng.normal(size=(256, d)).astype(F)
    return cfg, st


def export_v12(cfg, st, version, group=8) -> bytes:
    """llama2.c export.py version1_export / version2_export, transcribed."""
    m = cfg.model
    shared = "output.weight" not in st
    head = struct.pack("<Ii", interop.MAGIC_AK42, version) + struct.pack(
        "<7i", m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, 256, m.seq_len)
    head += struct.pack("<B", int(shared)) + (struct.pack("<i", group) if version == 2 else b"")
    head += b"\0" * (256 - len(head))
    L = range(m.n_layers)
    norms = [st[f"layers.{i}.attention_norm.weight"] for i in L] + \
            [st[f"layers.{i}.ffn_norm.weight"] for i in L] + [st["norm.weight"]]
    mats = [st["tok_embeddings.weight"]]
    for k in ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1",
              "feed_forward.w2", "feed_forward.w3"):
        mats += [st[f"layers.{i}.{k}.weight"] for i in L]
    if not shared:
        mats.append(st["output.weight"])
    if version == 1:
        return head + b"".join(a.astype("<f4").tobytes() for a in norms + mats)
    qs, ss = [], []
    for w in mats:
        g = w.reshape(-1, group)
        s = (np.abs(g).max(axis=1) / F(127)).astype(F)
        qs.append(np.round(g / s[:, None]).astype(np.int8).tobytes())
        ss.append(s.tobytes())
    return head + b"".join(a.astype("<f4").tobytes() for a in norms) + b"".join(qs) + b"".join(ss)


def test_read_stories260k_and_export_is_byte_identical(tmp_path):
    fields, state = interop.read_llama2c(STORIES)
    assert (fields["dim"], fields["hidden_dim"], fields["n_layers"], fields["n_heads"],
            fields["n_kv_heads"], fields["vocab_size"], fields["seq_len"]) == (64, 172, 5, 8, 4, 512, 512)
    assert fields["shared_classifier"] and fields["version"] == 0 and "output.weight" not in state
    assert state["layers.4.feed_forward.w2.weight"].shape == (64, 172)
    cfg = interop.config_from_llama2c(fields, from_sentencepiece(TOK_MODEL))
    interop.write_llama2c_v0(tmp_path / "out.bin", cfg, state)
    assert (tmp_path / "out.bin").read_bytes() == STORIES.read_bytes()  # freq tables included
    fields2, state2 = interop.read_llama2c(tmp_path / "out.bin")
    assert fields2 == fields and state2.keys() == state.keys()
    assert all(np.array_equal(state[k].view(np.uint32), state2[k].view(np.uint32)) for k in state)


@pytest.mark.parametrize("tie", [True, False])
def test_v0_round_trip_small(tmp_path, tie):
    cfg, st = small(tie)
    interop.write_llama2c_v0(tmp_path / "m.bin", cfg, st)
    fields, back = interop.read_llama2c(tmp_path / "m.bin")
    assert fields["shared_classifier"] == tie and fields["vocab_size"] == 256
    assert back.keys() == st.keys() and all(np.array_equal(back[k], st[k]) for k in st)


@pytest.mark.parametrize("tie", [True, False])
def test_v1_and_v2(tmp_path, tie):
    cfg, st = small(tie)
    (tmp_path / "v1.bin").write_bytes(export_v12(cfg, st, 1))
    f1, s1 = interop.read_llama2c(tmp_path / "v1.bin")
    assert f1["version"] == 1 and f1["shared_classifier"] == tie
    assert all(np.array_equal(s1[k], st[k]) for k in st) and s1.keys() == st.keys()
    (tmp_path / "v2.bin").write_bytes(export_v12(cfg, st, 2))
    f2, s2 = interop.read_llama2c(tmp_path / "v2.bin")
    assert f2["version"] == 2 and f2["group_size"] == 8 and s2.keys() == st.keys()
    for k, w in st.items():
        if w.ndim == 1:
            assert np.array_equal(s2[k], w)
        else:
            g = w.reshape(-1, 8)
            s = np.abs(g).max(axis=1) / F(127)
            assert np.array_equal(s2[k].reshape(-1, 8), np.round(g / s[:, None]) * s[:, None])


def test_bad_files(tmp_path):
    p = tmp_path / "stories260K.bin"
    p.write_bytes(b"Entry not found")
    with pytest.raises(UserError, match=r"15-byte text file.*Entry not found.*[Dd]ownload"):
        interop.read_llama2c(p)
    p.write_bytes(struct.pack("<Ii", interop.MAGIC_AK42, 9) + b"\0" * 300)
    with pytest.raises(UserError, match="version 9"):
        interop.read_llama2c(p)
    p.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match="not a llama2.c model"):
        interop.read_llama2c(p)
    data = STORIES.read_bytes()
    p.write_bytes(data[:500_000])
    with pytest.raises(UserError, match=r"implies 1056540 bytes but the file has 500000.*truncated"):
        interop.read_llama2c(p)
    cfg, st = small(True)
    p.write_bytes(export_v12(cfg, st, 2)[:-4])
    with pytest.raises(UserError, match="bytes but the file has"):
        interop.read_llama2c(p)


def test_tokenizer_bin_round_trip(tmp_path):
    v_bin = read_tokenizer_bin(TOK_BIN, 512)
    assert v_bin == from_sentencepiece(TOK_MODEL)
    assert v_bin.pieces[403] == b" Once" and v_bin.pieces[3 + 10] == b"\n" and v_bin.pieces[1] == b"<s>"
    assert tokenizer_bin_bytes(v_bin) == TOK_BIN.read_bytes()
    interop.write_tokenizer_bin(tmp_path / "byte.bin", byte_vocab())
    assert read_tokenizer_bin(tmp_path / "byte.bin") == byte_vocab()
    (tmp_path / "cut.bin").write_bytes(TOK_BIN.read_bytes()[:3000])
    with pytest.raises(VocabError, match="truncated"):
        read_tokenizer_bin(tmp_path / "cut.bin")


def test_import_llama2c(tmp_path):
    store = Store(tmp_path / "experiments")
    exp = interop.import_llama2c(store, STORIES, TOK_MODEL, "stories260k")
    m = exp.config.model
    assert (m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len, m.tie_embeddings) == \
        (64, 172, 5, 8, 4, 512, True)
    assert exp.config.tokenizer.vocab_size == 512
    ck = load_checkpoint(exp.path("ckpt.pt"))
    assert ck["model_hash"] == exp.config.model_hash() and ck["step"] == 0
    _, state = interop.read_llama2c(STORIES)
    assert np.array_equal(ck["model"]["layers.0.attention.wq.weight"].numpy(),
                          state["layers.0.attention.wq.weight"])
    assert np.array_equal(ck["model"]["output.weight"].numpy(), state["tok_embeddings.weight"])
    assert exp.path("tokenizer.model").read_bytes() == TOK_MODEL.read_bytes()
    meta = store.load("stories260k").meta
    assert meta["source"]["sha256"] == hashlib.sha256(STORIES.read_bytes()).hexdigest()
    assert meta["parent"] == "llama2c:stories260K.bin"
    assert ck["tokenizer_sha256"] == hashlib.sha256(TOK_MODEL.read_bytes()).hexdigest()
    exp2 = interop.import_llama2c(store, STORIES, TOK_BIN, "from-bin")  # converted to a .model
    assert interop.load_vocab(exp2.path("tokenizer.model")) == interop.load_vocab(TOK_BIN, 512)
    import sentencepiece as spm

    text = "Once upon a time, there was a little girl named Lily.\nShe liked the park."
    ours = spm.SentencePieceProcessor(model_file=str(exp2.path("tokenizer.model")))
    assert ours.encode(text) == spm.SentencePieceProcessor(model_file=str(TOK_MODEL)).encode(text)


def test_import_vocab_mismatch(tmp_path):
    store = Store(tmp_path / "experiments")
    interop.write_tokenizer_bin(tmp_path / "byte.bin", byte_vocab())
    with pytest.raises(UserError, match=r"256 tokens.*vocabulary of 512"):
        interop.import_llama2c(store, STORIES, tmp_path / "byte.bin", "bad")
    assert not store.exists("bad")
