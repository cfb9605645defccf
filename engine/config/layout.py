"""Byte layout of the weight blob (firmware/BLOB.md), as pure arithmetic on shapes.

Why a module of its own: three places must agree on these numbers to the byte: the fit budget (before
any training), the blob writer, and the firmware's own report at boot. They all call this, so a change
to the format changes all three at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import ExperimentConfig

MAGIC = b"TLMB"
VERSION_MAJOR = 2  # the newest major this code reads and writes (BLOB.md "Versions")
VERSION_MINOR = 0
HEADER_BYTES = 128
TABLE_ENTRY_BYTES = 32
TRAILER_BYTES = 8  # total_len u32 + crc32 u32
ALIGN = 16  # every section and tensor starts on a 16-byte boundary (ESP32-S3 SIMD loads, mmap reads)

QTYPE_F32, QTYPE_INT8, QTYPE_TERNARY = 0, 1, 2
QTYPE_TERNARY5 = 3  # format 2.0: ternary packed base-3, 5 weights a byte (TensorSpec.per_byte == 5)
QTYPES = {"f32": QTYPE_F32, "int8": QTYPE_INT8, "ternary": QTYPE_TERNARY}
# ternary weights a byte: 5 (base-3, format 2.0, the default) or 4 (2-bit codes, format 1.x)
TERNARY_PER_BYTE = 5
ARCH_IDS = {"transformer": 0, "gru": 1}


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def n_groups(cols: int, group: int) -> int:
    """Scale groups per row. group 0 = one scale for the whole tensor (per-tensor ternary)."""
    return 1 if group == 0 else (cols + group - 1) // group


@dataclass(frozen=True)
class TensorSpec:
    name: str  # llama2.c / PyTorch state-dict name, e.g. "layers.0.attention.wq.weight"
    rows: int  # output features (1 for vectors)
    cols: int  # input features
    qtype: str  # "f32" | "int8" | "ternary"
    group: int  # scale group along a row; 0 = per-tensor scale (ternary only); unused for f32
    per_byte: int = 4  # ternary only: 4 (2-bit codes, qtype 2) or 5 (base-3, qtype 3, format 2.0)

    @property
    def qtype_id(self) -> int:
        """The table entry's qtype: a base-3 ternary tensor is qtype 3."""
        if self.qtype == "ternary" and self.per_byte == 5:
            return QTYPE_TERNARY5
        return QTYPES[self.qtype]

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    def n_scales(self) -> int:
        if self.qtype == "f32":
            return 0
        if self.group == 0:
            return 1
        return self.rows * n_groups(self.cols, self.group)

    def nbytes(self) -> int:
        """Scales (f32) first, so they stay 4-byte aligned, then the weights."""
        scales = 4 * self.n_scales()
        if self.qtype == "f32":
            return 4 * self.numel
        if self.qtype == "int8":
            return scales + self.numel
        # ternary: 4 (2-bit) or 5 (base-3) weights a byte, each row padded to whole bytes
        return scales + self.rows * ((self.cols + self.per_byte - 1) // self.per_byte)


def _qtype_for(name: str, method: str) -> str:
    """Default precision per tensor (see BLOB.md "Precision per tensor"): norms, biases and the RoPE
    table stay f32 (tiny, and errors there scale every activation); the embedding/classifier is
    int8 even in a ternary blob (it is the model's vocabulary: ternary there costs the most quality
    for the fewest bytes); every other matrix takes the blob's method."""
    if name.endswith("norm.weight") or "bias" in name or name == "rope":
        return "f32"
    if method == "ternary" and (name.startswith("tok_embeddings") or name.startswith("output")):
        return "int8"
    return method


def tensor_specs(cfg: ExperimentConfig, method: str | None = None,
                 context_len: int | None = None,
                 ternary_per_byte: int = TERNARY_PER_BYTE) -> list[TensorSpec]:
    """The blob's tensors, in blob order, for a config and quant method. `ternary_per_byte` 4 gives
    the 2-bit packing of format 1.x (what older firmware reads), 5 the base-3 packing of 2.0."""
    if ternary_per_byte not in (4, 5):
        raise ValueError(f"ternary_per_byte is {ternary_per_byte}: 4 or 5")
    m = cfg.model
    method = method or cfg.quant.method
    group = cfg.quant.group_size
    vocab = cfg.tokenizer.vocab_size
    shapes: list[tuple[str, int, int]] = [("tok_embeddings.weight", vocab, m.dim)]
    if m.arch == "transformer":
        hidden, kv_dim = m.ffn_dim(), m.kv_dim()
        for i in range(m.n_layers):
            p = f"layers.{i}."
            shapes += [
                (p + "attention_norm.weight", 1, m.dim),
                (p + "attention.wq.weight", m.dim, m.dim),
                (p + "attention.wk.weight", kv_dim, m.dim),
                (p + "attention.wv.weight", kv_dim, m.dim),
                (p + "attention.wo.weight", m.dim, m.dim),
                (p + "ffn_norm.weight", 1, m.dim),
                (p + "feed_forward.w1.weight", hidden, m.dim),
                (p + "feed_forward.w2.weight", m.dim, hidden),
                (p + "feed_forward.w3.weight", hidden, m.dim),
            ]
        shapes.append(("norm.weight", 1, m.dim))
        ctx = context_len or cfg.context_len()
        shapes.append(("rope", ctx, m.head_dim()))  # cos/sin pairs per position: exact on both sides
    else:
        for i in range(m.n_layers):
            p = f"gru.{i}."
            shapes += [
                (p + "weight_ih_l0", 3 * m.dim, m.dim),
                (p + "weight_hh_l0", 3 * m.dim, m.dim),
                (p + "bias_ih_l0", 1, 3 * m.dim),
                (p + "bias_hh_l0", 1, 3 * m.dim),
            ]
    if not m.tie_embeddings:
        shapes.append(("output.weight", vocab, m.dim))
    specs = []
    for name, rows, cols in shapes:
        q = _qtype_for(name, method)
        g = 0 if q in ("ternary", "f32") else group
        specs.append(TensorSpec(name, rows, cols, q, g, ternary_per_byte if q == "ternary" else 4))
    return specs


def vocab_section_bytes(vocab_size: int, piece_bytes: int) -> int:
    """max_len u32 + reserved u32, scores f32[V], offsets u32[V+1], sorted ids u16[V], piece bytes."""
    return align(8 + 4 * vocab_size + 4 * (vocab_size + 1) + align(2 * vocab_size, 4) + piece_bytes)


@dataclass(frozen=True)
class BlobLayout:
    tensors: list[TensorSpec]
    offsets: list[int]  # absolute offset of each tensor
    table_offset: int
    vocab_offset: int
    vocab_bytes: int
    data_offset: int
    total_bytes: int

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes() for t in self.tensors)

    @property
    def version_major(self) -> int:
        """2 when a tensor uses a 2.0 storage type (base-3 ternary), else 1: a blob that needs no
        2.0 feature stays readable by 1.x firmware."""
        return 2 if any(t.qtype_id == QTYPE_TERNARY5 for t in self.tensors) else 1


def layout(cfg: ExperimentConfig, method: str | None = None, piece_bytes: int | None = None,
           context_len: int | None = None, ternary_per_byte: int = TERNARY_PER_BYTE) -> BlobLayout:
    """Where everything goes. `piece_bytes` is the total UTF-8 length of all vocab pieces; when the
    tokenizer is not trained yet it is estimated (see `estimate_piece_bytes`)."""
    specs = tensor_specs(cfg, method, context_len, ternary_per_byte)
    vocab = cfg.tokenizer.vocab_size
    if piece_bytes is None:
        piece_bytes = estimate_piece_bytes(cfg)
    table_offset = HEADER_BYTES
    vocab_offset = align(table_offset + TABLE_ENTRY_BYTES * len(specs))
    vocab_bytes = vocab_section_bytes(vocab, piece_bytes)
    data_offset = align(vocab_offset + vocab_bytes)
    offsets, pos = [], data_offset
    for t in specs:
        offsets.append(pos)
        pos = align(pos + t.nbytes())
    total = pos + TRAILER_BYTES
    return BlobLayout(specs, offsets, table_offset, vocab_offset, vocab_bytes, data_offset, total)


def estimate_piece_bytes(cfg: ExperimentConfig) -> int:
    """Byte tokenizer: 256 one-byte pieces. Sentencepiece with byte fallback: 3 control pieces
    (~13 bytes), 256 one-byte pieces, and ~4.5 bytes per learned piece (tok512: 843 bytes exact,
    this gives 1,376; the budget becomes exact once the tokenizer exists)."""
    vocab = cfg.tokenizer.vocab_size
    if cfg.tokenizer.kind == "byte":
        return 256
    return 270 + int(4.5 * max(0, vocab - 259))
