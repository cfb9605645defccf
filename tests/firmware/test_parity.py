"""The virtual board (firmware/core in C) produces exactly the token ids of engine/blob/reference.py, the
numpy oracle of BLOB.md: greedy and sampled, for f32 / int8 / ternary blobs of a random transformer,
a random GRU and stories260K (imported from llama2.c), 20 prompts x 64 tokens each; and the same for
int8 / ternary blobs in integer mode (BLOB.md flags bit 1), with both kernel builds."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_util import BOARD, FIRMWARE, PORTABLE_BOARD, StdioBoard, build, run_make

from engine.blob.reference import Reference
from engine.infer.sample import SamplingParams
from tests.conftest import random_state, tiny_cfg

pytestmark = pytest.mark.slow

N_PROMPTS, N_TOKENS = 20, 64
INT_STORIES_PROMPTS = 10
SAMPLED = dict(temp="0.8", topk=0, topp="0.9", rep=1)


def prompts(ref: Reference, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    bos = ref.vocab.bos_id
    out = []
    for _ in range(N_PROMPTS):
        n = int(rng.integers(1, 7))
        ids = [int(t) for t in rng.integers(3 if bos is not None else 0, ref.header.vocab_size, n)]
        out.append(([bos] if bos is not None else []) + ids)
    return out


# The numpy reference is most of this file's time (integer mode: ~1 s per 64 tokens), and several
# tests ask it the same question for another build of the board (SIMD, portable, sanitized): its
# answers are kept for the session, keyed by the blob file (path, mtime, size), so each is computed once.
_ANSWERS: dict[tuple, list[int]] = {}
_REFS: dict[tuple, Reference] = {}


def reference_for(path) -> Reference:
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _REFS:
        _REFS[key] = Reference(path)
    return _REFS[key]


def expected(ref: Reference, ids, params, n) -> list[int]:
    """Reference tokens as the board sends them: a final BOS/EOS stop token is not sent (BLOB.md)."""
    key = (id(ref), tuple(ids), repr(params), n)
    if key not in _ANSWERS:
        toks = list(ref.generate(ids, params, n))
        stops = {ref.vocab.bos_id, ref.vocab.eos_id} - {None}
        _ANSWERS[key] = toks[:-1] if toks and toks[-1] in stops else toks
    return list(_ANSWERS[key])


def run_parity(path, seed: int = 0, binary=BOARD, n_prompts: int = N_PROMPTS) -> None:
    ref = reference_for(path)
    with StdioBoard("--blob", str(path), binary=binary) as b:
        link = b.link
        assert link.msg()["model"] == "ok"
        for k, ids in enumerate(prompts(ref, seed)[:n_prompts]):
            want = expected(ref, ids, SamplingParams(temperature=0.0), N_TOKENS)
            got, end = link.generate(ids=ids, max=N_TOKENS, temp=0, topk=0, topp=0, rep=1, seed=0)
            assert got == want, f"greedy prompt {k} {ids}: board {got} reference {want}"
            s = 1000 + k
            params = SamplingParams(temperature=0.8, top_p=0.9, seed=s)
            want = expected(ref, ids, params, N_TOKENS)
            got, end = link.generate(ids=ids, max=N_TOKENS, seed=s, **SAMPLED)
            assert got == want, f"sampled prompt {k} {ids}: board {got} reference {want}"
            if len(got) < N_TOKENS:
                assert end["reason"] in ("eos", "ctx")
            assert end.int("n") == len(got)


@pytest.mark.parametrize("method", ["f32", "int8", "ternary"])
@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_random_model_parity(board, make_blob, arch, method):
    # seq_len 24 < prompt + 64 tokens: the context limit is exercised too
    run_parity(make_blob(arch, method, seed=11, tie=(arch == "gru")), seed=1)


@pytest.mark.parametrize("method", ["f32", "int8", "ternary"])
def test_stories260k_parity(board, stories_blob, method):
    run_parity(stories_blob(method), seed=2)


@pytest.fixture(scope="session")
def portable_board():
    build("host-portable")
    return PORTABLE_BOARD


@pytest.mark.parametrize("method", ["f32", "int8", "ternary"])
def test_portable_kernels_parity(portable_board, make_blob, stories_blob, method):
    """The host board built with -DTL_NO_SIMD runs the portable C kernels that rv32 and the ESP32
    run (the default host build uses the SSE2 ones): same ids as the reference too."""
    # the models and prompts of the tests above, so the reference's answers are reused
    run_parity(stories_blob(method), seed=2, binary=portable_board, n_prompts=6)
    run_parity(make_blob("transformer", method, seed=11, tie=False), seed=1, binary=portable_board,
               n_prompts=6)
    run_parity(make_blob("gru", method, seed=11), seed=1, binary=portable_board, n_prompts=4)


@pytest.mark.parametrize("method", ["f32", "int8", "ternary"])
def test_odd_shapes_parity(board, portable_board, blob_dir, method):
    """Shapes off the fast paths: head_dim 6 (not a multiple of 4), 42 hidden rows (not a multiple
    of the 4-row kernels), dim 24 < group 32 (only a short group), for both kernel sets."""
    from engine.blob.format import write_blob
    from engine.blob.vocab import byte_vocab

    cfg = tiny_cfg("transformer", seq_len=40, tie=False)
    cfg.model.dim, cfg.model.hidden_dim = 24, 42
    path = blob_dir / f"odd_{method}.blob"
    write_blob(path, cfg, random_state(cfg, 31), byte_vocab(), method)
    for binary in (board, portable_board):
        run_parity(path, seed=7, binary=binary, n_prompts=5)


def test_topk_and_repetition_penalty_parity(board, stories_blob):
    path = stories_blob("int8")
    ref = reference_for(path)
    with StdioBoard("--blob", str(path)) as b:
        assert b.link.msg()["model"] == "ok"
        for k, ids in enumerate(prompts(ref, 3)[:5]):
            params = SamplingParams(temperature=1.1, top_k=12, top_p=0.95, repetition_penalty=1.3, seed=k)
            want = expected(ref, ids, params, 48)
            got, _ = b.link.generate(ids=ids, max=48, temp="1.1", topk=12, topp="0.95", rep="1.3", seed=k)
            assert got == want


def test_text_prompt_encoding_matches_reference(board, stories_blob):
    """GEN hex=... is encoded on the board (llama2.c algorithm): same ids as Reference.encode."""
    path = stories_blob("f32")
    ref = reference_for(path)
    texts = ["Once upon a time", "The little dog said: \"Hi!\"", "naïve café ☃ 日本", "", "  two  spaces"]
    with StdioBoard("--blob", str(path)) as b:
        assert b.link.msg()["model"] == "ok"
        for text in texts:
            ids = ref.encode(text, bos=True)
            want = expected(ref, ids, SamplingParams(temperature=0.0), 12)
            got, _ = b.link.generate(hex=text.encode().hex(), max=12, temp=0)
            assert got == want, text


# ---- integer mode (BLOB.md flags bit 1: int8 KV cache + integer attention) -------------------------

def test_old_2bit_ternary_blobs_still_run(board, portable_board, make_blob, stories_blob):
    """Format 1.x blobs (2-bit ternary) load and run bit-exactly on this firmware, on the SIMD and the
    portable kernels, in float and integer mode; and they give the base-3 blob's tokens (same weights,
    same arithmetic: only the packing differs)."""
    old = stories_blob("ternary", int_attention=True, per_byte=4)
    new = stories_blob("ternary", int_attention=True)
    assert old.read_bytes()[4:6] == b"\x01\x00" and new.stat().st_size < old.stat().st_size
    run_parity(old, n_prompts=2)
    run_parity(make_blob("transformer", "ternary", per_byte=4), n_prompts=2)
    run_parity(make_blob("transformer", "ternary", int_attention=True, per_byte=4), seed=1,
               binary=portable_board, n_prompts=2)


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_mode_stories260k_parity(board, stories_blob, method):
    # 10 of the 20 prompts: the integer-mode reference is ~9 ms a token in numpy, and 20 prompts
    # were 40 s of the suite per method; the random-model tests below cover more shapes
    run_parity(stories_blob(method, int_attention=True), seed=2, n_prompts=INT_STORIES_PROMPTS)


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_mode_random_model_parity(board, make_blob, method):
    # seq_len 24 < prompt + 64 tokens: the context limit is exercised too
    run_parity(make_blob("transformer", method, seed=11, tie=False, int_attention=True), seed=1)
    # a longer context (more positions in the integer softmax)
    run_parity(make_blob("transformer", method, seed=14, seq_len=128, int_attention=True), seed=8,
               n_prompts=6)


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_mode_portable_kernels_parity(portable_board, make_blob, stories_blob, method):
    """The -DTL_NO_SIMD build (the rv32/ESP32 kernels) in integer mode: same ids as the reference."""
    run_parity(stories_blob(method, int_attention=True), seed=2, binary=portable_board,
               n_prompts=INT_STORIES_PROMPTS)
    run_parity(make_blob("transformer", method, seed=11, tie=False, int_attention=True), seed=1,
               binary=portable_board)


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_mode_odd_shapes_parity(board, portable_board, blob_dir, method):
    """Integer mode off the fast paths: head_dim 6, 42 hidden rows, dim 24 < group 32."""
    from engine.blob.format import write_blob
    from engine.blob.vocab import byte_vocab

    cfg = tiny_cfg("transformer", seq_len=40, tie=False)
    cfg.model.dim, cfg.model.hidden_dim = 24, 42
    path = blob_dir / f"odd_{method}_int.blob"
    write_blob(path, cfg, random_state(cfg, 31), byte_vocab(), method, int_attention=True)
    for binary in (board, portable_board):
        run_parity(path, seed=7, binary=binary, n_prompts=5)


@pytest.mark.parametrize("group", [32, 64])
def test_int_mode_wide_shapes_parity(board, portable_board, blob_dir, group):
    """Integer mode on matrices of several column blocks and row chunks (the portable ternary
    kernel's T2 tables cover 64 columns and 64 rows at a time): dim 144, hidden 150 (not a multiple
    of 4, so a row ends inside a packed byte), both group sizes."""
    from engine.blob.format import write_blob
    from engine.blob.vocab import byte_vocab

    cfg = tiny_cfg("transformer", seq_len=24, tie=False)
    cfg.model.dim, cfg.model.hidden_dim, cfg.model.n_heads, cfg.model.n_kv_heads = 144, 150, 8, 4
    cfg.quant.group_size = group
    for method in ("int8", "ternary"):
        path = blob_dir / f"wide_{method}_{group}_int.blob"
        write_blob(path, cfg, random_state(cfg, 41), byte_vocab(), method, int_attention=True)
        for binary in (board, portable_board):
            run_parity(path, seed=9, binary=binary, n_prompts=3)


def test_sanitized_portable_board_parity(blob_dir, stories_blob):
    """The portable kernels under ASan + UBSan (any report aborts the board, so the parity fails):
    integer mode on several column blocks and row chunks, and stories260K."""
    r = run_make("host-asan")
    assert r.returncode == 0, r.stdout + r.stderr
    binary = FIRMWARE / "build" / "host-asan" / "tinylm-board"
    from engine.blob.format import write_blob
    from engine.blob.vocab import byte_vocab

    cfg = tiny_cfg("transformer", seq_len=24, tie=False)
    cfg.model.dim, cfg.model.hidden_dim, cfg.model.n_heads, cfg.model.n_kv_heads = 144, 150, 8, 4
    for method in ("int8", "ternary"):
        path = blob_dir / f"asan_{method}_int.blob"
        write_blob(path, cfg, random_state(cfg, 43), byte_vocab(), method, int_attention=True)
        run_parity(path, seed=10, binary=binary, n_prompts=2)
        run_parity(stories_blob(method, int_attention=True), seed=2, binary=binary, n_prompts=2)


def test_int_mode_flag_leaves_float_blobs_alone(stories_blob):
    """Without the flag a blob is still format 1.0, byte for byte what it was: the flag only adds."""
    from engine.blob.format import read_blob

    for method in ("f32", "int8", "ternary"):
        h = read_blob(stories_blob(method)).header
        assert (h.version_minor, h.flags & 2) == (0, 0)
    h = read_blob(stories_blob("int8", int_attention=True)).header
    assert (h.version_minor, h.flags & 2) == (1, 2)
