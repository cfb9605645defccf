"""Writer and reader of the weight blob (firmware/BLOB.md, versions 1.0, 1.1 and 2.0).

Why the writer takes every size from `blob_layout.layout`: the fit budget, this writer and the
firmware's boot report must agree to the byte, so none of them computes an offset on its own.
Why the reader checks so much: a blob travels (copied, flashed, downloaded) and a damaged one must
fail with a message that names the field and says what to do, never with an IndexError or garbage
text; the checks run in BLOB.md's order so the firmware and this reader report the same problem.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.config import layout as bl
from engine.config.schema import (
    ExperimentConfig,
    ModelConfig,
    QuantConfig,
    TokenizerConfig,
)
from engine.errors import UserError

from . import quantize as quant
from .vocab import NO_TOKEN, Vocab, VocabError, parse_section, section_bytes

F32 = np.float32
ARCH_NAMES = {v: k for k, v in bl.ARCH_IDS.items()}
QTYPE_NAMES = {v: k for k, v in bl.QTYPES.items()} | {bl.QTYPE_TERNARY5: "ternary"}
MIN_BLOB = bl.HEADER_BYTES + bl.TRAILER_BYTES  # 136
# header: magic, major, minor, header_bytes, arch, quant, group, dim, hidden, layers, heads, kv heads,
# vocab, seq_len, flags, eps, theta, n_tensors, table, vocab off, vocab bytes, data off, total, reserved,
# bos, eos
_HEADER = struct.Struct("<4sHHIIIIIIIIIIIIffIIIIII32sII")
_ENTRY = struct.Struct("<IIIIIIII")
assert _HEADER.size == bl.HEADER_BYTES and _ENTRY.size == bl.TABLE_ENTRY_BYTES
FLAG_TIED = 1
FLAG_INT_ATTENTION = 2  # BLOB.md "Integer mode": int8 KV cache + integer attention (format 1.1)


class BlobError(UserError):
    """A blob that fails one of BLOB.md's reader checks."""


@dataclass(frozen=True)
class BlobInfo:
    size: int
    sha256: str
    layout: bl.BlobLayout


@dataclass(frozen=True)
class BlobHeader:
    version_major: int
    version_minor: int
    arch: str
    quant: str
    group_size: int
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    flags: int
    norm_eps: float
    rope_theta: float
    n_tensors: int
    table_offset: int
    vocab_offset: int
    vocab_bytes: int
    data_offset: int
    total_len: int
    bos_id: int
    eos_id: int

    @property
    def tied(self) -> bool:
        return bool(self.flags & FLAG_TIED)

    @property
    def int_attention(self) -> bool:
        return bool(self.flags & FLAG_INT_ATTENTION)


@dataclass
class BlobTensor:
    """One tensor as stored: `raw` is its bytes in the blob; `scales`/`values` the decoded parts
    (int8: q int8 [rows, cols] + s [rows, n_groups]; ternary: t int8 [rows, cols] + s [1];
    f32: values float32 [rows, cols], no scales)."""

    name: str
    role: int
    qtype: str
    rows: int
    cols: int
    group: int
    offset: int
    nbytes: int
    raw: memoryview
    per_byte: int  # ternary packing: 4 (2-bit, qtype 2) or 5 (base-3, qtype 3); 4 for the others
    values: np.ndarray
    scales: np.ndarray
    _deq: np.ndarray | None = field(default=None, repr=False)

    def dequantize(self) -> np.ndarray:
        """float32 [rows, cols] as the firmware sees the weights (int8: q·s; ternary: t·s)."""
        if self._deq is None:
            if self.qtype == "f32":
                self._deq = self.values
            elif self.qtype == "int8":
                self._deq = quant.dequantize_int8(self.values, self.scales, self.group)
            else:
                self._deq = quant.dequantize_ternary(self.values, float(self.scales[0]))
        return self._deq


@dataclass
class Blob:
    header: BlobHeader
    tensors: dict[str, BlobTensor]  # blob order
    vocab: Vocab
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def config(self) -> ExperimentConfig:
        """An ExperimentConfig with the shapes of this blob (for `blob_layout` arithmetic)."""
        return _config_from_header(self.header)


# ---- helpers shared by writer and reader -----------------------------------------------------------

def rope_table(seq_len: int, head_dim: int, theta: float) -> np.ndarray:
    """[seq_len, head_dim]: cos/sin pairs computed in float64 and rounded once (BLOB.md)."""
    k = np.arange(head_dim // 2, dtype=np.float64)
    freq = float(theta) ** (-2.0 * k / head_dim)
    ang = np.arange(seq_len, dtype=np.float64)[:, None] * freq[None, :]
    table = np.empty((seq_len, head_dim), dtype=np.float64)
    table[:, 0::2] = np.cos(ang)
    table[:, 1::2] = np.sin(ang)
    return table.astype(F32)


def _config_from_header(h: BlobHeader) -> ExperimentConfig:
    model = ModelConfig(arch=h.arch, dim=h.dim, n_layers=h.n_layers, n_heads=h.n_heads or 1,
                        n_kv_heads=h.n_kv_heads or 1, hidden_dim=h.hidden_dim, seq_len=h.seq_len,
                        tie_embeddings=h.tied, norm_eps=h.norm_eps, rope_theta=h.rope_theta)
    kind = "byte" if h.bos_id == NO_TOKEN else "sentencepiece"
    return ExperimentConfig(model=model,
                            tokenizer=TokenizerConfig(kind=kind, vocab_size=h.vocab_size),
                            quant=QuantConfig(method=h.quant, group_size=h.group_size,
                                              int_attention=h.int_attention))


def _encode_tensor(spec: bl.TensorSpec, w: np.ndarray) -> bytes:
    if spec.qtype == "f32":
        return np.ascontiguousarray(w, dtype="<f4").tobytes()
    if spec.qtype == "int8":
        q, s = quant.quantize_int8(w, spec.group)
        return s.astype("<f4").tobytes() + q.astype(np.int8).tobytes()
    t, s = quant.quantize_ternary(w)
    pack = quant.pack_ternary5 if spec.per_byte == 5 else quant.pack_ternary
    return np.array([s], dtype="<f4").tobytes() + pack(t).tobytes()


def _state_array(state: dict[str, Any], spec: bl.TensorSpec, cfg: ExperimentConfig) -> np.ndarray:
    if spec.name not in state:
        raise UserError(f"tensor {spec.name} is missing from the weights: the checkpoint does not "
                        f"match config arch={cfg.model.arch!r}, n_layers={cfg.model.n_layers}; "
                        "export the checkpoint of this experiment")
    value = state[spec.name]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    w = np.asarray(value, dtype=F32)
    ok = w.shape == (spec.rows, spec.cols) or (spec.rows == 1 and w.shape == (spec.cols,))
    if not ok:
        raise UserError(f"tensor {spec.name} has shape {tuple(w.shape)} but the config expects "
                        f"({spec.rows}, {spec.cols}); the checkpoint belongs to another model shape "
                        "— check config.toml against the checkpoint (or re-import it)")
    return w.reshape(spec.rows, spec.cols)


# ---- writer -----------------------------------------------------------------------------------------

def build_blob(cfg: ExperimentConfig, state: dict[str, Any], vocab: Vocab, method: str,
               context_len: int | None = None, int_attention: bool = False,
               ternary_per_byte: int = bl.TERNARY_PER_BYTE) -> tuple[bytes, bl.BlobLayout]:
    """The blob's bytes and its layout. `context_len` (default cfg.context_len()) sets the rows of
    the RoPE table and the header's seq_len for a transformer. `int_attention` sets flags bit 1
    (BLOB.md "Integer mode", format 1.1: int8 KV cache, integer attention, SwiGLU and matmul
    accumulation); only for int8/ternary transformers. Without it the blob is a 1.0 blob.
    `ternary_per_byte` 5 (default) packs ternary matrices base-3 (format 2.0: ~20 % smaller); 4
    writes the 2-bit packing of 1.x, for firmware older than 2.0."""
    if method not in bl.QTYPES:
        raise UserError(f"quant method {method!r}: use one of {', '.join(bl.QTYPES)}")
    if int_attention and (method == "f32" or cfg.model.arch != "transformer"):
        raise UserError(f"int_attention needs an int8 or ternary transformer blob (this is "
                        f"{method} {cfg.model.arch}); set quant.int_attention = false or change "
                        "quant.method")
    if vocab.size != cfg.tokenizer.vocab_size:
        raise UserError(f"the tokenizer has {vocab.size} tokens but the config's "
                        f"tokenizer.vocab_size is {cfg.tokenizer.vocab_size}: the model's embedding "
                        "has that many rows; use the experiment's own tokenizer")
    m = cfg.model
    ctx = context_len or cfg.context_len()
    if m.arch == "transformer" and ctx > m.seq_len:
        raise UserError(f"context_len {ctx} is longer than model.seq_len {m.seq_len}; use at most "
                        f"{m.seq_len}")
    lay = bl.layout(cfg, method, piece_bytes=vocab.piece_bytes, context_len=ctx,
                    ternary_per_byte=ternary_per_byte)
    buf = bytearray(lay.total_bytes)
    is_tf = m.arch == "transformer"
    header = _HEADER.pack(
        bl.MAGIC, lay.version_major, 1 if int_attention else 0,
        bl.HEADER_BYTES, bl.ARCH_IDS[m.arch],
        bl.QTYPES[method], cfg.quant.group_size, m.dim, m.ffn_dim() if is_tf else 0, m.n_layers,
        m.n_heads if is_tf else 0, m.n_kv_heads if is_tf else 0, vocab.size,
        ctx if is_tf else m.seq_len,
        (FLAG_TIED if m.tie_embeddings else 0) | (FLAG_INT_ATTENTION if int_attention else 0),
        m.norm_eps,
        m.rope_theta if is_tf else 0.0, len(lay.tensors), lay.table_offset, lay.vocab_offset,
        lay.vocab_bytes, lay.data_offset, lay.total_bytes, b"\0" * 32,
        NO_TOKEN if vocab.bos_id is None else vocab.bos_id,
        NO_TOKEN if vocab.eos_id is None else vocab.eos_id)
    buf[0:bl.HEADER_BYTES] = header
    for role, (spec, off) in enumerate(zip(lay.tensors, lay.offsets, strict=True)):
        if spec.name == "rope":
            w = rope_table(spec.rows, spec.cols, m.rope_theta)
        else:
            w = _state_array(state, spec, cfg)
        data = _encode_tensor(spec, w)
        assert len(data) == spec.nbytes(), (spec, len(data))
        buf[off:off + len(data)] = data
        group = 0 if spec.qtype == "f32" else spec.group  # f32 has no scale groups
        entry = _ENTRY.pack(role, spec.qtype_id, spec.rows, spec.cols, group, off,
                            spec.nbytes(), 0)
        pos = lay.table_offset + role * bl.TABLE_ENTRY_BYTES
        buf[pos:pos + bl.TABLE_ENTRY_BYTES] = entry
    vsec = section_bytes(vocab)
    assert len(vsec) == lay.vocab_bytes
    buf[lay.vocab_offset:lay.vocab_offset + len(vsec)] = vsec
    end = lay.total_bytes
    struct.pack_into("<I", buf, end - 8, end)
    struct.pack_into("<I", buf, end - 4, zlib.crc32(bytes(buf[:end - 4])) & 0xFFFFFFFF)
    return bytes(buf), lay


def write_blob(path: str | Path, cfg: ExperimentConfig, state: dict[str, Any], vocab: Vocab,
               method: str, context_len: int | None = None, int_attention: bool = False,
               ternary_per_byte: int = bl.TERNARY_PER_BYTE) -> BlobInfo:
    """Write `path` atomically. `state` uses PyTorch/llama2.c names; output.weight is ignored when
    the classifier is tied. `int_attention`, `ternary_per_byte`: see build_blob."""
    data, lay = build_blob(cfg, state, vocab, method, context_len, int_attention, ternary_per_byte)
    atomic_write_bytes(path, data)
    return BlobInfo(len(data), hashlib.sha256(data).hexdigest(), lay)


# ---- reader -----------------------------------------------------------------------------------------

def _fail(msg: str) -> BlobError:
    return BlobError(msg)


def _check_header(h: BlobHeader, n: int) -> None:
    """Header values the shapes are derived from; each failure names the field."""
    redo = "the blob is damaged or was written by a buggy exporter; export it again"
    if h.arch not in bl.ARCH_IDS:
        raise _fail(f"arch is {h.arch} (0 transformer, 1 GRU are known); {redo}")
    if h.quant not in bl.QTYPES:
        raise _fail(f"quant is {h.quant} (0 f32, 1 int8, 2 ternary are known); {redo}")
    if h.group_size not in (32, 64):
        raise _fail(f"group_size is {h.group_size}, must be 32 or 64; {redo}")
    for name in ("dim", "n_layers", "vocab_size", "seq_len"):
        if getattr(h, name) <= 0:
            raise _fail(f"{name} is {getattr(h, name)}, must be > 0; {redo}")
    if h.vocab_size > 0xFFFF:
        raise _fail(f"vocab_size is {h.vocab_size}, more than 65535; {redo}")
    if h.arch == "transformer":
        if h.n_heads <= 0 or h.dim % h.n_heads or (h.dim // h.n_heads) % 2:
            raise _fail(f"n_heads is {h.n_heads}, which does not split dim {h.dim} into even-sized "
                        f"heads; {redo}")
        if h.n_kv_heads <= 0 or h.n_heads % h.n_kv_heads:
            raise _fail(f"n_kv_heads is {h.n_kv_heads}, which does not divide n_heads {h.n_heads}; "
                        f"{redo}")
        if h.hidden_dim <= 0:
            raise _fail(f"hidden_dim is {h.hidden_dim}, must be > 0; {redo}")
    elif h.int_attention:
        raise _fail(f"flags bit 1 (integer mode) is set on a {h.arch} blob (transformers only); "
                    f"{redo}")
    if h.table_offset != bl.HEADER_BYTES:
        raise _fail(f"table_offset is {h.table_offset}, must be {bl.HEADER_BYTES}; {redo}")
    table_end = h.table_offset + h.n_tensors * bl.TABLE_ENTRY_BYTES
    data_end = n - bl.TRAILER_BYTES
    if h.vocab_offset % bl.ALIGN or h.vocab_offset < table_end or \
            h.vocab_offset + h.vocab_bytes > h.data_offset:
        raise _fail(f"vocab_offset {h.vocab_offset} / vocab_bytes {h.vocab_bytes} do not fit between "
                    f"the tensor table (ends at {table_end}) and data_offset {h.data_offset}; {redo}")
    if h.data_offset % bl.ALIGN or h.data_offset > data_end:
        raise _fail(f"data_offset is {h.data_offset}, not 16-aligned inside the blob ({n} bytes); "
                    f"{redo}")


def _parse_header(data: bytes) -> BlobHeader:
    f = _HEADER.unpack_from(data, 0)
    return BlobHeader(
        version_major=f[1], version_minor=f[2], arch=ARCH_NAMES.get(f[4], f[4]),
        quant=QTYPE_NAMES.get(f[5], f[5]), group_size=f[6], dim=f[7], hidden_dim=f[8],
        n_layers=f[9], n_heads=f[10], n_kv_heads=f[11], vocab_size=f[12], seq_len=f[13],
        flags=f[14], norm_eps=float(F32(f[15])), rope_theta=float(F32(f[16])), n_tensors=f[17],
        table_offset=f[18], vocab_offset=f[19], vocab_bytes=f[20], data_offset=f[21],
        total_len=f[22], bos_id=f[24], eos_id=f[25])


def _must_be_f32(name: str) -> bool:
    return name.endswith("norm.weight") or "bias" in name or name == "rope"


def _read_tensor(data: bytes, h: BlobHeader, role: int, spec: bl.TensorSpec) -> BlobTensor:
    pos = h.table_offset + role * bl.TABLE_ENTRY_BYTES
    e_role, qt, rows, cols, group, off, nbytes, _ = _ENTRY.unpack_from(data, pos)
    where = f"tensor table entry {role} ({spec.name})"
    redo = "export the blob again"
    if e_role != role:
        raise _fail(f"{where}: role is {e_role}, expected {role} (tensors out of order); {redo}")
    if qt not in QTYPE_NAMES:
        raise _fail(f"{where}: qtype is {qt} (0 f32, 1 int8, 2 ternary, 3 base-3 ternary are known); "
                    f"{redo}")
    if qt == bl.QTYPE_TERNARY5 and h.version_major < 2:
        raise _fail(f"{where}: qtype 3 (base-3 ternary) needs blob format 2.0, the header says "
                    f"{h.version_major}.{h.version_minor}; {redo}")
    qtype = QTYPE_NAMES[qt]
    per_byte = 5 if qt == bl.QTYPE_TERNARY5 else 4
    if (rows, cols) != (spec.rows, spec.cols):
        raise _fail(f"{where}: shape is ({rows}, {cols}) but the header implies ({spec.rows}, "
                    f"{spec.cols}); {redo}")
    if _must_be_f32(spec.name) and qtype != "f32":
        raise _fail(f"{where}: qtype is {qtype}, but norms, biases and rope are always f32; {redo}")
    if spec.name == "tok_embeddings.weight" and qtype == "ternary":
        raise _fail(f"{where}: a ternary embedding has no lookup arithmetic (f32 or int8 only); "
                    f"{redo}")
    if h.int_attention and qtype == "f32" and not _must_be_f32(spec.name):
        raise _fail(f"{where}: qtype is f32, but flags bit 1 (integer mode) needs every matrix "
                    f"int8 or ternary; {redo}")
    if qtype == "int8" and group != h.group_size:
        raise _fail(f"{where}: group is {group} but int8 tensors use the header's group_size "
                    f"{h.group_size}; {redo}")
    if qtype == "ternary" and group != 0:
        raise _fail(f"{where}: group is {group}, ternary tensors have one scale (group 0); {redo}")
    real = bl.TensorSpec(spec.name, rows, cols, qtype, 0 if qtype != "int8" else group, per_byte)
    if off % bl.ALIGN or off < h.data_offset or off + nbytes > h.total_len - bl.TRAILER_BYTES:
        raise _fail(f"{where}: offset {off} (+{nbytes} bytes) is not 16-aligned inside the data "
                    f"area [{h.data_offset}, {h.total_len - bl.TRAILER_BYTES}); {redo}")
    if nbytes != real.nbytes():
        raise _fail(f"{where}: nbytes is {nbytes} but a {qtype} ({rows}, {cols}) tensor takes "
                    f"{real.nbytes()}; {redo}")
    raw = memoryview(data)[off:off + nbytes]
    if qtype == "f32":
        values = np.frombuffer(data, dtype="<f4", count=rows * cols, offset=off).reshape(rows, cols)
        scales = np.zeros(0, dtype=F32)
    elif qtype == "int8":
        ns = real.n_scales()
        scales = np.frombuffer(data, dtype="<f4", count=ns, offset=off).reshape(rows, -1)
        values = np.frombuffer(data, dtype=np.int8, count=rows * cols,
                               offset=off + 4 * ns).reshape(rows, cols)
    else:
        scales = np.frombuffer(data, dtype="<f4", count=1, offset=off)
        nb = (cols + per_byte - 1) // per_byte
        packed = np.frombuffer(data, dtype=np.uint8, count=rows * nb, offset=off + 4).reshape(rows, nb)
        unpack = quant.unpack_ternary5 if per_byte == 5 else quant.unpack_ternary
        try:
            values = unpack(packed, cols, spec.name)
        except quant.PackingError as e:
            raise _fail(str(e)) from e
    return BlobTensor(spec.name, role, qtype, rows, cols, group, off, nbytes, raw, per_byte,
                      values.astype(values.dtype.newbyteorder("=")), scales.astype(F32))


def read_blob(source: str | Path | bytes | bytearray | memoryview) -> Blob:
    """Parse and check a blob (BLOB.md "a reader checks, in this order"). Raises BlobError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "blob"
    else:
        path = Path(source)
        if not path.exists():
            raise BlobError(f"{path} does not exist: export the blob first (`tinylm export`)")
        data, name = path.read_bytes(), str(path)
    n = len(data)
    if n < MIN_BLOB:
        raise BlobError(f"{name}: {n} bytes, shorter than the smallest blob ({MIN_BLOB} bytes): the "
                        "file is truncated or empty; copy or export it again")
    if data[:4] != bl.MAGIC:
        hint = (" (this looks like a llama2.c checkpoint: import it with `tinylm import`)"
                if data[:4] == b"24ka" else "")
        raise BlobError(f"{name}: magic is {data[:4]!r}, not {bl.MAGIC!r}: not a tinylm weight blob"
                        f"{hint}; point at a model.<quant>.bin written by `tinylm export`")
    major, minor = struct.unpack_from("<HH", data, 4)
    if major > bl.VERSION_MAJOR:
        raise BlobError(f"{name}: blob format {major}.{minor} is newer than this engine "
                        f"({bl.VERSION_MAJOR}.x): update tinylm")
    if major < 1:
        raise BlobError(f"{name}: version_major is {major}, not a released blob format; export the "
                        "blob again")
    header_bytes = struct.unpack_from("<I", data, 8)[0]
    if header_bytes != bl.HEADER_BYTES:
        raise BlobError(f"{name}: header_bytes is {header_bytes}, must be {bl.HEADER_BYTES}; the blob "
                        "is damaged; export it again")
    total = struct.unpack_from("<I", data, 84)[0]
    trailer_total = struct.unpack_from("<I", data, n - 8)[0]
    if total != n or trailer_total != n:
        short = "truncated (an interrupted copy or flash?)" if total > n else "longer than written"
        raise BlobError(f"{name}: total_len in the header is {total} bytes, the trailer says "
                        f"{trailer_total}, the file has {n}: the file is {short}; copy or export it "
                        "again")
    crc = struct.unpack_from("<I", data, n - 4)[0]
    actual = zlib.crc32(data[:n - 4]) & 0xFFFFFFFF
    if crc != actual:
        raise BlobError(f"{name}: crc32 mismatch (stored {crc:08x}, computed {actual:08x}): some "
                        "bytes changed after export (bad copy, flash error); export or copy it again")
    h = _parse_header(data)
    try:
        _check_header(h, n)
    except BlobError as e:
        raise BlobError(f"{name}: {e}") from None
    cfg = _config_from_header(h)
    specs = bl.tensor_specs(cfg, "f32", context_len=h.seq_len)
    if h.n_tensors != len(specs):
        raise BlobError(f"{name}: n_tensors is {h.n_tensors} but the header's model "
                        f"({h.arch}, {h.n_layers} layers, tied={h.tied}) has {len(specs)}; export "
                        "the blob again")
    tensors: dict[str, BlobTensor] = {}
    try:
        for role, spec in enumerate(specs):
            tensors[spec.name] = _read_tensor(data, h, role, spec)
        vocab = parse_section(memoryview(data)[h.vocab_offset:h.vocab_offset + h.vocab_bytes],
                              h.vocab_size, h.bos_id, h.eos_id)
    except (BlobError, VocabError) as e:
        raise BlobError(f"{name}: {e}") from None
    return Blob(h, tensors, vocab, data)
