"""Blob writer/reader: sizes from blob_layout, exact storage, and every reader check of BLOB.md."""

from __future__ import annotations

import struct
import zlib
from functools import partial

import numpy as np
import pytest

from engine.blob import quantize as quant
from engine.blob.format import BlobError, build_blob, read_blob, rope_table, write_blob
from engine.blob.vocab import Vocab, byte_vocab, parse_section, section_bytes
from engine.config import budget
from engine.config import layout as bl
from engine.errors import UserError
from tests import conftest

F32 = np.float32


# tests/conftest.py's tiny model, with the context length and weight scale these tests use
tiny_cfg = partial(conftest.tiny_cfg, seq_len=16)
random_state = partial(conftest.random_state, scale=0.2)


def recrc(data: bytes) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
    return bytes(b)


@pytest.mark.parametrize("arch,tie", [("transformer", True), ("transformer", False), ("gru", True),
                                      ("gru", False)])
@pytest.mark.parametrize("method", ["f32", "int8", "ternary"])
def test_round_trip(tmp_path, arch, tie, method):
    cfg = tiny_cfg(arch, tie=tie)
    state = random_state(cfg)
    vocab = byte_vocab()
    info = write_blob(tmp_path / f"model.{method}.bin", cfg, state, vocab, method)
    lay = bl.layout(cfg, method, piece_bytes=vocab.piece_bytes)
    assert info.size == lay.total_bytes == (tmp_path / f"model.{method}.bin").stat().st_size
    # the fit budget estimates the byte vocab exactly, so budget == writer here
    assert budget.compute(cfg, "host").blob_bytes[method] == info.size
    blob = read_blob(tmp_path / f"model.{method}.bin")
    h = blob.header
    assert (h.arch, h.quant, h.dim, h.n_layers, h.vocab_size, h.tied) == (arch, method, 32, 2, 256, tie)
    assert blob.vocab == vocab and h.bos_id == 0xFFFFFFFF
    assert blob.sha256 == info.sha256
    for spec in lay.tensors:
        t = blob.tensors[spec.name]
        assert (t.qtype, t.rows, t.cols) == (spec.qtype, spec.rows, spec.cols)
        if spec.name == "rope":
            assert np.array_equal(t.values, rope_table(16, 8, 10000.0))
            continue
        w = state[spec.name].reshape(spec.rows, spec.cols)
        assert np.array_equal(t.dequantize(), quant.roundtrip(w, spec.qtype, spec.group)), spec.name


def test_int8_storage_is_scales_then_weights_with_short_groups():
    cfg = tiny_cfg()
    state = random_state(cfg, 1)
    data, lay = build_blob(cfg, state, byte_vocab(), "int8")
    i = [s.name for s in lay.tensors].index("layers.0.feed_forward.w2.weight")  # [32, 44]: 32 + 12
    spec, off = lay.tensors[i], lay.offsets[i]
    q, s = quant.quantize_int8(state[spec.name], 32)
    assert s.shape == (32, 2)
    assert data[off:off + spec.nbytes()] == s.astype("<f4").tobytes() + q.tobytes()
    entry = struct.unpack_from("<8I", data, bl.HEADER_BYTES + 32 * i)
    assert entry == (i, 1, 32, 44, 32, off, spec.nbytes(), 0)


def test_ternary_storage_and_precisions():
    cfg = tiny_cfg()
    state = random_state(cfg, 2)
    data, lay = build_blob(cfg, state, byte_vocab(), "ternary")
    q = {s.name: s.qtype for s in lay.tensors}
    assert q["tok_embeddings.weight"] == "int8" and q["layers.1.attention.wk.weight"] == "ternary"
    assert q["layers.0.ffn_norm.weight"] == q["rope"] == "f32"
    i = [s.name for s in lay.tensors].index("layers.1.feed_forward.w1.weight")
    spec, off = lay.tensors[i], lay.offsets[i]
    t, s = quant.quantize_ternary(state[spec.name])
    assert data[off:off + spec.nbytes()] == np.float32(s).tobytes() + quant.pack_ternary5(t).tobytes()
    assert struct.unpack_from("<HH", data, 4) == (2, 0)  # base-3 ternary is format 2.0
    entry = struct.unpack_from("<8I", data, bl.HEADER_BYTES + 32 * i)
    assert entry[1] == bl.QTYPE_TERNARY5 and entry[6] == 4 + spec.rows * ((spec.cols + 4) // 5)


def test_base3_packing_digits_and_round_trip():
    # weight j of a row is digit j%5 of byte j/5, digit = weight + 1; padding weights are 0 (digit 1)
    t = np.array([[1, -1, 0, 0, 1, -1, 1], [-1, -1, -1, -1, -1, 0, 0]], dtype=np.int8)
    packed = quant.pack_ternary5(t)
    assert packed.tolist() == [[2 + 0 * 3 + 1 * 9 + 1 * 27 + 2 * 81, 0 + 2 * 3 + 9 + 27 + 81], [0, 121]]
    assert np.array_equal(quant.unpack_ternary5(packed, 7), t)
    rng = np.random.default_rng(0)
    big = rng.integers(-1, 2, size=(9, 172)).astype(np.int8)
    assert np.array_equal(quant.unpack_ternary5(quant.pack_ternary5(big), 172), big)
    with pytest.raises(quant.PackingError, match="243"):
        quant.unpack_ternary5(np.array([[243]], dtype=np.uint8), 5)
    with pytest.raises(quant.PackingError, match="padding"):
        quant.unpack_ternary5(np.array([[4 + 9 * 12]], dtype=np.uint8), 2)  # weight 2 is -1, past 2 columns


def test_old_2bit_ternary_blob_still_reads_with_the_same_weights():
    cfg = tiny_cfg()
    state = random_state(cfg, 2)
    old, lay4 = build_blob(cfg, state, byte_vocab(), "ternary", ternary_per_byte=4)
    new, lay5 = build_blob(cfg, state, byte_vocab(), "ternary")
    assert struct.unpack_from("<HH", old, 4) == (1, 0) and len(new) < len(old)
    a, b = read_blob(old), read_blob(new)
    assert a.header.version_major == 1 and b.header.version_major == 2
    for name, t in a.tensors.items():
        assert np.array_equal(t.values, b.tensors[name].values), name
        assert t.per_byte == (4 if t.qtype == "ternary" else 4) and \
            b.tensors[name].per_byte == (5 if t.qtype == "ternary" else 4)


def test_vocab_section_round_trip_and_duplicates():
    pieces = (b"<unk>", b"<s>", b"</s>") + tuple(bytes([b]) for b in range(256)) + (b" ", b"a", b"ab")
    v = Vocab(pieces, tuple(float(-i) for i in range(len(pieces))), 1, 2, "sentencepiece")
    sec = section_bytes(v)
    assert len(sec) == bl.vocab_section_bytes(v.size, v.piece_bytes) and len(sec) % 16 == 0
    back = parse_section(sec, v.size, 1, 2)
    assert back == v
    ids = v.sorted_ids()
    # equal pieces sort by id: the byte piece " " (id 35) before the normal piece " " (id 259)
    assert ids.index(35) + 1 == ids.index(259)


# ---- bad inputs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good() -> bytes:
    cfg = tiny_cfg()
    return build_blob(cfg, random_state(cfg), byte_vocab(), "ternary")[0]


def test_truncated(good):
    with pytest.raises(BlobError, match=r"truncated"):
        read_blob(good[:-100])
    with pytest.raises(BlobError, match=r"136"):
        read_blob(good[:100])


def test_flipped_byte_fails_crc(good):
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    with pytest.raises(BlobError, match=r"crc32"):
        read_blob(bytes(bad))


def test_wrong_magic(good):
    with pytest.raises(BlobError, match=r"magic"):
        read_blob(b"XXXX" + good[4:])
    with pytest.raises(BlobError, match=r"llama2.c"):
        read_blob(b"24ka" + good[4:])


def test_future_major_version(good):
    bad = bytearray(good)
    struct.pack_into("<HH", bad, 4, 3, 1)
    with pytest.raises(BlobError, match=r"3\.1 is newer.*update tinylm"):
        read_blob(bytes(bad))
    struct.pack_into("<HH", bad, 4, 2, 7)  # a newer minor is fine
    assert read_blob(recrc(bytes(bad))).header.version_minor == 7
    struct.pack_into("<HH", bad, 4, 1, 1)  # base-3 ternary (qtype 3) is not part of format 1.x
    with pytest.raises(BlobError, match=r"qtype 3.*needs blob format 2\.0"):
        read_blob(recrc(bytes(bad)))


def test_header_sizes_that_disagree(good):
    bad = bytearray(good)
    struct.pack_into("<I", bad, 84, len(good) + 16)  # header total_len
    with pytest.raises(BlobError, match=r"total_len"):
        read_blob(bytes(bad))
    bad = bytearray(good)
    struct.pack_into("<I", bad, 64, 3)  # n_tensors
    with pytest.raises(BlobError, match=r"n_tensors is 3"):
        read_blob(recrc(bytes(bad)))
    bad = bytearray(good)
    struct.pack_into("<I", bad, 24, 33)  # dim 33 → shapes no longer match, heads do not split it
    with pytest.raises(BlobError, match=r"n_heads"):
        read_blob(recrc(bytes(bad)))
    bad = bytearray(good)
    struct.pack_into("<I", bad, 44, 300)  # vocab_size
    with pytest.raises(BlobError, match=r"tok_embeddings.weight.*\(300, 32\)"):
        read_blob(recrc(bytes(bad)))


def test_bad_table_entries(good):
    blob = read_blob(good)
    base = bl.HEADER_BYTES + 32 * blob.tensors["layers.0.attention.wq.weight"].role
    for field_off, value, words in [(0, 9, "role"), (4, 7, "qtype"), (8, 31, "shape"),
                                    (20, 8, "offset"), (24, 4, "nbytes"), (4, 0, "nbytes")]:
        bad = bytearray(good)
        struct.pack_into("<I", bad, base + field_off, value)
        with pytest.raises(BlobError, match=words):
            read_blob(recrc(bytes(bad)))
    bad = bytearray(good)
    struct.pack_into("<I", bad, bl.HEADER_BYTES + 4, 2)  # ternary embedding
    with pytest.raises(BlobError, match="embedding"):
        read_blob(recrc(bytes(bad)))


def test_ternary_11_pair_rejected():
    cfg = tiny_cfg()
    old = build_blob(cfg, random_state(cfg), byte_vocab(), "ternary", ternary_per_byte=4)[0]
    t = read_blob(old).tensors["layers.0.attention.wo.weight"]
    bad = bytearray(old)
    bad[t.offset + 4] = 0xFF
    with pytest.raises(BlobError, match=r"layers.0.attention.wo.weight.*11"):
        read_blob(recrc(bytes(bad)))


def test_base3_byte_over_242_rejected(good):
    t = read_blob(good).tensors["layers.0.attention.wo.weight"]
    bad = bytearray(good)
    bad[t.offset + 4] = 243
    with pytest.raises(BlobError, match=r"layers.0.attention.wo.weight.*243.*at most 242"):
        read_blob(recrc(bytes(bad)))


def test_bad_vocab_section(good):
    h = read_blob(good).header
    bad = bytearray(good)
    ids_at = h.vocab_offset + 8 + 8 * 256 + 4
    struct.pack_into("<H", bad, ids_at, 7)  # sorted_ids: 7 twice
    with pytest.raises(BlobError, match="sorted_ids"):
        read_blob(recrc(bytes(bad)))
    bad = bytearray(good)
    struct.pack_into("<I", bad, h.vocab_offset + 8 + 4 * 256 + 4 * 10, 10**6)  # an offset
    with pytest.raises(BlobError, match="offsets"):
        read_blob(recrc(bytes(bad)))


def test_writer_names_bad_shapes_and_vocab_sizes():
    cfg = tiny_cfg()
    state = random_state(cfg)
    state["layers.1.attention.wk.weight"] = np.zeros((32, 32), dtype=F32)
    with pytest.raises(UserError, match=r"layers.1.attention.wk.weight.*\(32, 32\).*\(16, 32\)"):
        build_blob(cfg, state, byte_vocab(), "int8")
    state = random_state(cfg)
    del state["norm.weight"]
    with pytest.raises(UserError, match="norm.weight is missing"):
        build_blob(cfg, state, byte_vocab(), "f32")
    v = Vocab(byte_vocab().pieces[:200], (0.0,) * 200, None, None, "byte")
    with pytest.raises(UserError, match=r"200 tokens.*vocab_size is 256"):
        build_blob(cfg, random_state(cfg), v, "f32")
    with pytest.raises(UserError, match="quant method"):
        build_blob(cfg, random_state(cfg), byte_vocab(), "int4")


# ---- flags bit 1: integer mode (format 1.1) ----------------------------------------------------------

@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_int_attention_flag_round_trip(tmp_path, method):
    """The flag sets bit 1 and minor 1 and changes nothing else but the CRC; the config read back
    from the header carries it, and the RAM budget counts the int8 KV cache (and, for ternary, the
    firmware's T2 lookup tables)."""
    cfg = tiny_cfg(tie=False)
    state = random_state(cfg, 3)
    plain, _ = build_blob(cfg, state, byte_vocab(), method)
    flagged, lay = build_blob(cfg, state, byte_vocab(), method, int_attention=True)
    assert len(plain) == len(flagged) == lay.total_bytes
    diff = [i for i in range(len(plain)) if plain[i] != flagged[i]]
    assert set(diff) <= {6, 52} | set(range(len(plain) - 4, len(plain)))  # minor, flags, crc
    h0, h1 = read_blob(plain).header, read_blob(flagged).header
    assert (h0.version_minor, h0.flags, h0.int_attention) == (0, 0, False)
    assert (h1.version_minor, h1.flags, h1.int_attention) == (1, 2, True)
    back = read_blob(flagged).config()
    assert back.quant.int_attention
    ram_f, ram_i = budget.runtime_ram(read_blob(plain).config()), budget.runtime_ram(back)
    m, ctx = cfg.model, 16
    assert ram_f["kv_cache"] == 4 * 2 * m.n_layers * ctx * m.kv_dim()
    assert ram_i["kv_cache"] == 2 * m.n_layers * ctx * (m.kv_dim() + 4 * m.n_kv_heads)
    assert ram_f["activations"] - ram_i["activations"] == 4 * (m.n_heads - 1) * ctx
    assert ram_i["t2_tables"] == (8320 if method == "ternary" else 0) and ram_f["t2_tables"] == 0
    assert ram_i["total"] - ram_i["t2_tables"] < ram_f["total"]
    path = tmp_path / "m.bin"
    info = write_blob(path, cfg, state, byte_vocab(), method, int_attention=True)
    assert path.read_bytes() == flagged and info.size == len(flagged)


def test_int_attention_only_for_quantized_transformers():
    with pytest.raises(UserError, match="int_attention"):
        build_blob(tiny_cfg(), random_state(tiny_cfg()), byte_vocab(), "f32", int_attention=True)
    with pytest.raises(UserError, match="int_attention"):
        build_blob(tiny_cfg("gru"), random_state(tiny_cfg("gru")), byte_vocab(), "int8",
                   int_attention=True)
    from engine.config.schema import validate

    cfg = tiny_cfg()
    cfg.quant.int_attention = True
    assert not [p for p in validate(cfg) if "int_attention" in p]
    cfg.quant.method = "f32"
    assert [p for p in validate(cfg) if "int_attention" in p]


def test_int_attention_reader_checks():
    """A reader rejects flags bit 1 on a GRU (header) and on a blob with an f32 matrix (table)."""
    def set_flag(data: bytes) -> bytes:
        b = bytearray(data)
        struct.pack_into("<I", b, 52, struct.unpack_from("<I", b, 52)[0] | 2)
        return recrc(bytes(b))

    gru, _ = build_blob(tiny_cfg("gru"), random_state(tiny_cfg("gru")), byte_vocab(), "int8")
    with pytest.raises(BlobError, match="flags bit 1"):
        read_blob(set_flag(gru))
    f32, _ = build_blob(tiny_cfg(), random_state(tiny_cfg()), byte_vocab(), "f32")
    with pytest.raises(BlobError, match="flags bit 1"):
        read_blob(set_flag(f32))
