"""engine.data: corpus checks, splitting, tokenizers, shard cache, batch loader, data report."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config.schema import ExperimentConfig, TokenizerConfig
from engine.data import (
    BatchLoader,
    ByteTokenizer,
    SentencePieceTokenizer,
    Stopped,
    Tokenizer,
    check_vocab,
    data_report,
    eval_batches,
    load_tokenizer,
    prepare,
    read_corpus,
    split_documents,
    train_sentencepiece,
    train_val_split,
)
from engine.data.corpus import resolve_format
from engine.data.shards import encode_documents
from engine.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "corpora" / "tinystories_slice.txt"
TRICKY = "Hi  there,\tfriend!\n\n  Two  spaces\tand tabs\t\there.\nEmoji: 😀 done.  \nNumbers 2024 \n"


@pytest.fixture(scope="module")
def slice_docs() -> list[str]:
    return split_documents(read_corpus(CORPUS), "auto")


@pytest.fixture(scope="module")
def sp512(tmp_path_factory, slice_docs) -> SentencePieceTokenizer:
    folder = tmp_path_factory.mktemp("tok")
    return SentencePieceTokenizer(train_sentencepiece(slice_docs, folder / "tokenizer", 512, "bpe",
                                                      20_000_000))


def small_cfg(**tok) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.seq_len = 64
    for k, v in tok.items():
        setattr(cfg.tokenizer, k, v)
    return cfg


# ---- corpus ----------------------------------------------------------------------------------------

def test_missing_corpus(tmp_path):
    with pytest.raises(UserError, match="does not exist.*data.corpus"):
        read_corpus(tmp_path / "nope.txt")


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \n"])
def test_empty_corpus(tmp_path, content):
    p = tmp_path / "c.txt"
    p.write_bytes(content)
    with pytest.raises(UserError, match="empty|only whitespace") as e:
        read_corpus(p)
    assert "text" in str(e.value)


@pytest.mark.parametrize("content", [b"PK\x03\x04\x00\x00binary zip", bytes(range(1, 32)) * 50])
def test_binary_corpus(tmp_path, content):
    p = tmp_path / "c.bin"
    p.write_bytes(content)
    with pytest.raises(UserError, match="binary") as e:
        read_corpus(p)
    assert "plain UTF-8 text" in str(e.value)


def test_latin1_corpus(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("Once upon a time.\nThe café was open.\n".encode("latin-1"))
    with pytest.raises(UserError) as e:
        read_corpus(p)
    msg = str(e.value)
    offset = len("Once upon a time.\nThe caf")
    assert "not UTF-8" in msg and f"byte offset {offset}" in msg and "line 2" in msg
    assert "iconv -f latin1 -t utf-8" in msg


def test_bom_and_crlf_are_normalized(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeffa b\r\n\r\nc d\r\n".encode("utf-8"))
    assert read_corpus(p) == "a b\n\nc d\n"
    assert split_documents(read_corpus(p), "text") == ["a b", "c d"]


def test_tinystories_split():
    text = ("\nStory one.\nLine two.\n<|endoftext|>\n\n  Story two.  \n<|endoftext|>\n\n"
            "<|endoftext|>\nEnd")
    assert split_documents(text, "tinystories") == ["Story one.\nLine two.", "Story two.", "End"]
    assert split_documents(text, "auto") == split_documents(text, "tinystories")
    assert resolve_format(text, "auto") == "tinystories"


def test_blank_line_split():
    text = "First para\nstill first.\n\n\nSecond.\n   \n  indented third\n\n"
    assert split_documents(text, "text") == ["First para\nstill first.", "Second.", "  indented third"]
    assert resolve_format(text, "auto") == "text"


def test_slice_has_369_stories(slice_docs):
    assert len(slice_docs) == 369 and all(d == d.strip() and d for d in slice_docs)


def test_split_deterministic_and_disjoint(slice_docs):
    train, val = train_val_split(slice_docs, 0.05, 1337)
    assert (train, val) == train_val_split(list(slice_docs), 0.05, 1337)
    assert len(val) == round(369 * 0.05) and len(train) + len(val) == 369
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(slice_docs)
    assert train == [d for d in slice_docs if d in set(train)]  # corpus order kept
    assert train_val_split(slice_docs, 0.05, 7)[1] != val  # the seed matters


def test_split_needs_two_docs():
    assert train_val_split(["a", "b"], 0.05, 0) in ((["a"], ["b"]), (["b"], ["a"]))
    with pytest.raises(UserError, match='at least 2.*add more text.*data.format = "text"'):
        train_val_split(["only one"], 0.05, 0)


# ---- tokenizers ------------------------------------------------------------------------------------

def test_sentencepiece_512_round_trip(sp512, slice_docs):
    assert isinstance(sp512, Tokenizer)
    assert sp512.vocab_size == 512 and (sp512.bos_id, sp512.eos_id) == (1, 2)
    for text in [TRICKY, slice_docs[0], slice_docs[-1], " leading space", "x", ""]:
        ids = sp512.encode(text)
        assert sp512.decode(ids) == text
        assert all(0 <= i < 512 for i in ids)
        assert sp512._sp.decode(ids) == text  # our byte table agrees with sentencepiece
    ids = sp512.encode("😀", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2
    assert [sp512.piece(i) for i in ids[1:-1]][-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


def test_decode_piece_streams_bytes(sp512):
    ids = sp512.encode(TRICKY, bos=True)
    out, prev = b"", None
    for i in ids:
        out += sp512.decode_piece(prev, i)
        prev = i
    assert out.decode("utf-8") == TRICKY
    emoji = [i for i in sp512.encode("😀") if sp512.piece(i).startswith("<0x")]
    assert [sp512.decode_piece(5, i) for i in emoji] == [b"\xf0", b"\x9f", b"\x98", b"\x80"]


def test_sentencepiece_training_is_deterministic_and_atomic(tmp_path, slice_docs, sp512):
    path = train_sentencepiece(slice_docs, tmp_path / "tokenizer", 512, "bpe", 20_000_000)
    assert path == tmp_path / "tokenizer.model" and (tmp_path / "tokenizer.vocab").exists()
    assert SentencePieceTokenizer(path).sha256 == sp512.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.model", "tokenizer.vocab"]
    assert len((tmp_path / "tokenizer.vocab").read_text().splitlines()) == 512


def test_sentencepiece_is_quiet(tmp_path):
    code = ("import sys; from pathlib import Path; from engine.data import train_sentencepiece as t; "
            "from engine.data import read_corpus, split_documents as s; "
            f"t(s(read_corpus({str(CORPUS)!r}), 'auto')[:40], Path({str(tmp_path)!r}) / 'tok', 400, "
            "'bpe', 10**7)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""


def test_vocab_too_large_for_tiny_corpus(tmp_path):
    docs = ["Once upon a time there was a cat.", "The cat sat on a mat."]
    with pytest.raises(UserError) as e:
        train_sentencepiece(docs, tmp_path / "tok", 4096, "bpe", 10**6)
    msg = str(e.value)
    assert "tokenizer.vocab_size = 4096 is too large" in msg and "at most" in msg
    most = int(msg.split("at most ")[1].split()[0])
    assert 259 < most < 4096
    assert not list(tmp_path.iterdir())  # nothing half-written
    path = train_sentencepiece(docs, tmp_path / "tok", most, "bpe", 10**6)  # the hint works
    assert SentencePieceTokenizer(path).vocab_size == most


def test_vocab_too_small(tmp_path, slice_docs):
    with pytest.raises(UserError, match=r"vocab_size = 256 is too small.*at least \d+.*byte"):
        train_sentencepiece(slice_docs[:20], tmp_path / "tok", 256, "bpe", 10**6)


def test_training_can_be_stopped(tmp_path, slice_docs):
    with pytest.raises(Stopped):
        train_sentencepiece(slice_docs, tmp_path / "tok", 512, "bpe", 10**7,
                            should_stop=lambda: True)
    assert not list(tmp_path.iterdir())


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(TRICKY, bos=True, eos=True)
    assert ids == list(TRICKY.encode()) and tok.decode(ids) == TRICKY
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.path) == (256, None, None, None)
    assert tok.decode_piece(None, 0xF0) == b"\xf0" and len(tok.sha256) == 64


def test_load_tokenizer(tmp_path, sp512):
    assert isinstance(load_tokenizer(tmp_path, TokenizerConfig(kind="byte", vocab_size=256)),
                      ByteTokenizer)
    with pytest.raises(UserError, match="tinylm train"):
        load_tokenizer(tmp_path, TokenizerConfig())
    (tmp_path / "tokenizer.model").write_bytes(b"Entry not found")
    with pytest.raises(UserError, match="not a sentencepiece model"):
        load_tokenizer(tmp_path, TokenizerConfig())


def test_vocab_mismatch_names_both_sizes(sp512):
    with pytest.raises(UserError) as e:
        check_vocab(sp512, 1024)
    msg = str(e.value)
    assert "512" in msg and "1024" in msg and "tokenizer.vocab_size = 512" in msg
    check_vocab(sp512, 512)
    with pytest.raises(UserError, match="256.*512"):
        check_vocab(ByteTokenizer(), 512)


# ---- shards ----------------------------------------------------------------------------------------

def test_prepare_caches_and_matches_direct_encode(tmp_path, monkeypatch):
    cfg = small_cfg()
    exp, cache = tmp_path / "exp", tmp_path / "cache"
    stages: list[str] = []
    p = prepare(exp, cfg, CORPUS, cache, on_progress=lambda s, f: stages.append(s))
    assert p.tokenizer_trained and not p.cache_hit and (exp / "tokenizer.model").exists()
    assert {"read corpus", "train tokenizer", "tokenize train", "tokenize val"} <= set(stages)
    assert p.cache_dir.parent == cache / "tokens" and p.corpus_format == "tinystories"
    assert (p.n_train_docs, p.n_val_docs) == (351, 18)
    assert p.train_tokens.dtype == np.uint16 and isinstance(p.train_tokens, np.memmap)

    train, val = train_val_split(split_documents(read_corpus(CORPUS), "auto"), 0.05, 1337)
    expect = []
    for d in train:
        expect += [1] + p.tokenizer.encode(d) + [2]
    assert np.array_equal(p.train_tokens, np.array(expect, dtype=np.uint16))
    assert np.array_equal(p.val_tokens, encode_documents(p.tokenizer, val))
    assert int(p.train_tokens.max()) < 512

    # cache hit: a second prepare tokenizes nothing
    mtimes = {f: f.stat().st_mtime_ns for f in p.cache_dir.iterdir()}
    import engine.data as data_mod
    monkeypatch.setattr(data_mod, "write_split", lambda *a, **k: pytest.fail("re-tokenized"))
    again = prepare(exp, cfg, CORPUS, cache)
    assert again.cache_hit and not again.tokenizer_trained
    assert {f: f.stat().st_mtime_ns for f in p.cache_dir.iterdir()} == mtimes
    assert np.array_equal(again.train_tokens, p.train_tokens)


def test_truncated_shard_is_rebuilt(tmp_path):
    cfg = small_cfg()
    p = prepare(tmp_path / "exp", cfg, CORPUS, tmp_path / "cache")
    good = np.array(p.train_tokens)
    del p
    bins = list((tmp_path / "cache" / "tokens").glob("*/train.bin"))
    assert len(bins) == 1
    with open(bins[0], "r+b") as fh:
        fh.truncate(1000)
    again = prepare(tmp_path / "exp", cfg, CORPUS, tmp_path / "cache")
    assert not again.cache_hit and np.array_equal(again.train_tokens, good)
    (bins[0].parent / "val.json").unlink()  # a crash between .bin and sidecar
    assert not prepare(tmp_path / "exp", cfg, CORPUS, tmp_path / "cache").cache_hit


def test_prepare_byte_tokenizer_and_format_in_key(tmp_path):
    cfg = small_cfg(kind="byte", vocab_size=256)
    p = prepare(tmp_path / "exp", cfg, CORPUS, tmp_path / "cache")
    assert p.tokenizer_path is None and not (tmp_path / "exp" / "tokenizer.model").exists()
    train, _ = train_val_split(split_documents(read_corpus(CORPUS), "auto"), 0.05, 1337)
    assert bytes(np.array(p.train_tokens, dtype=np.uint8)) == "".join(
        d + "\n\n" for d in train).encode()
    # the format decides where documents start, so it is part of the cache key
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(
        f"Story {i} begins here.\n\nIt has a second paragraph, number {i}." for i in range(40)))
    a = prepare(tmp_path / "exp", cfg, corpus, tmp_path / "cache")
    cfg.data.format = "text"
    b = prepare(tmp_path / "exp", cfg, corpus, tmp_path / "cache")
    assert (a.corpus_format, b.corpus_format) == ("tinystories", "text")
    assert a.cache_dir != b.cache_dir and not b.cache_hit
    assert a.n_train_docs + a.n_val_docs == 40 and b.n_train_docs + b.n_val_docs == 41
    with pytest.raises(UserError, match="1 document.*blank lines"):
        prepare(tmp_path / "exp", cfg, CORPUS, tmp_path / "cache")  # the slice has no blank lines


def test_prepare_stops(tmp_path):
    with pytest.raises(Stopped):
        prepare(tmp_path / "exp", small_cfg(kind="byte", vocab_size=256), CORPUS,
                tmp_path / "cache", should_stop=lambda: True)


def test_prepare_refuses_mismatched_tokenizer(tmp_path, sp512):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tokenizer.model").write_bytes(sp512.path.read_bytes())
    with pytest.raises(UserError, match="512.*1024"):
        prepare(exp, small_cfg(vocab_size=1024), CORPUS, tmp_path / "cache")


def test_prepare_corpus_too_small_for_seq_len(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("A tiny story.\n<|endoftext|>\nAnother tiny story.\n")
    with pytest.raises(UserError, match=r"too small: \d+ tokens.*seq_len\+1 = 65"):
        prepare(tmp_path / "exp", small_cfg(kind="byte", vocab_size=256), corpus, tmp_path / "c")


# ---- loader ----------------------------------------------------------------------------------------

TOKENS = (np.arange(10_000) % 500).astype(np.uint16)


def test_loader_batches_are_windows():
    x, y = BatchLoader(TOKENS, 4, 32, seed=1).next_batch()
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row in range(4):
        start = int(x[row, 0])
        assert np.array_equal(x[row].numpy() % 500, (np.arange(32) + start) % 500)


def test_loader_deterministic_and_resumable():
    a = BatchLoader(TOKENS, 4, 32, seed=3)
    first = [a.next_batch() for _ in range(3)]
    state = a.state_dict()
    assert all(type(v) is int for v in state.values())
    buf = io.BytesIO()
    torch.save(state, buf)  # what a checkpoint does with it
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    rest = [a.next_batch() for _ in range(2)]
    b = BatchLoader(TOKENS, 4, 32, seed=3)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(rest, [b.next_batch() for _ in range(2)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    c = BatchLoader(TOKENS, 4, 32, seed=3)
    assert torch.equal(c.next_batch()[0], first[0][0])
    assert not torch.equal(BatchLoader(TOKENS, 4, 32, seed=4).next_batch()[0], first[0][0])


def test_loader_ranks_differ():
    r0 = BatchLoader(TOKENS, 8, 32, seed=3, rank=0, world_size=2)
    r1 = BatchLoader(TOKENS, 8, 32, seed=3, rank=1, world_size=2)
    assert not torch.equal(r0.next_batch()[0], r1.next_batch()[0])
    r1b = BatchLoader(TOKENS, 8, 32, seed=3, rank=1, world_size=2)
    r1b.load_state_dict(r0.state_dict())  # every rank resumes from rank 0's state
    assert r1b.batches_drawn == 1 and r1b.rank == 1
    assert torch.equal(r1b.next_batch()[0], r1.next_batch()[0])


def test_loader_too_small_corpus():
    with pytest.raises(UserError, match=r"corpus too small: 50 tokens.*seq_len\+1 = 65.*model.seq_len"):
        BatchLoader(TOKENS[:50], 4, 64, seed=0)
    BatchLoader(TOKENS[:65], 4, 64, seed=0).next_batch()  # exactly one window is enough


def test_eval_batches_fixed_and_small_split():
    a = eval_batches(TOKENS, 4, 32, 5)
    b = eval_batches(TOKENS, 4, 32, 5)
    assert len(a) == 5 and all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    starts = sorted(int(x[r, 0]) for x, _ in a for r in range(4))
    assert len(set(starts)) == 20  # distinct windows
    small = eval_batches(TOKENS[:200], 4, 32, 5)  # 6 windows for 20 asked
    assert [x.shape[0] for x, _ in small] == [4, 2]
    assert len(eval_batches(TOKENS[:33], 4, 32, 5)) == 1
    with pytest.raises(UserError, match="validation split too small.*val_fraction"):
        eval_batches(TOKENS[:32], 4, 32, 5)


# ---- report and import hygiene ---------------------------------------------------------------------

def test_data_report_consistent_with_shards(tmp_path):
    cfg = small_cfg()
    exp = tmp_path / "exp"
    before = data_report(exp, cfg, CORPUS, params=1_000)
    assert not exp.exists()  # a report writes nothing into the experiment
    p = prepare(exp, cfg, CORPUS, tmp_path / "cache")
    r = data_report(exp, cfg, CORPUS, params=1_000)
    assert r["tokenizer"] == str(exp / "tokenizer.model")
    assert before["tokens"] == r["tokens"]  # the temp tokenizer is the one prepare trains
    assert (r["train_tokens"], r["val_tokens"]) == (len(p.train_tokens), len(p.val_tokens))
    assert r["tokens"] == r["train_tokens"] + r["val_tokens"]
    assert (r["documents"], r["train_documents"], r["val_documents"]) == (369, 351, 18)
    assert r["bytes_per_token"] == pytest.approx(r["bytes"] / r["tokens"])
    assert 1.5 < r["bytes_per_token"] < 4
    assert r["tokens_per_param"] == pytest.approx(r["train_tokens"] / 1_000)
    assert 0 < r["vocab_coverage"] <= 1 and r["vocab_used"] <= 512
    assert r["verdict"] == "plenty"  # ~130k train tokens for 1k params
    n = r["train_tokens"]
    assert data_report(exp, cfg, CORPUS, params=n)["verdict"] == "too little data"
    assert data_report(exp, cfg, CORPUS, params=n // 20)["verdict"] == "about right"


def test_import_does_not_load_torch_or_sentencepiece():
    code = "import sys, engine.data; print('torch' in sys.modules, 'sentencepiece' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr
