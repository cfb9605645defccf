"""The blob's vocabulary: pieces as raw bytes + merge scores, built from any tokenizer we accept.

Why a vocabulary of its own: the firmware encodes and decodes text with nothing but this table, so
the pieces must already be the surface bytes (sentencepiece's `▁` → space, `<0xAB>` → the byte 0xAB)
and the lookup order must be fixed in the file (`sorted_ids`), not left to a hash table on the board.

Three sources make the same `Vocab`: a sentencepiece `.model`, a llama2.c tokenizer `.bin` (what its
`tokenizer.py` exports) and the 256-byte tokenizer. Sentencepiece vocabularies must use llama2.c's id
layout (unk 0, bos 1, eos 2, then the 256 byte-fallback pieces at ids 3..258), because the firmware's
byte fallback for a character with no piece is `id = byte + 3`. See firmware/BLOB.md
"Vocabulary section".
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.config.layout import align, vocab_section_bytes
from engine.errors import UserError

NO_TOKEN = 0xFFFFFFFF  # bos_id / eos_id in the blob when the tokenizer has none (byte tokenizer)
BYTE_OFFSET = 3  # sentencepiece byte-fallback pieces: id = byte + 3
N_CONTROL = 3  # <unk>, <s>, </s>
_BYTE_PIECE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


class VocabError(UserError):
    """A tokenizer file or a blob's vocabulary section that cannot be used."""


@dataclass(frozen=True)
class Vocab:
    """Pieces (surface bytes) and float32 scores, indexed by token id."""

    pieces: tuple[bytes, ...]
    scores: tuple[float, ...]  # exactly representable in float32
    bos_id: int | None
    eos_id: int | None
    kind: str  # "sentencepiece" (bos/eos, byte fallback at 3..258, merges) or "byte"

    @property
    def size(self) -> int:
        return len(self.pieces)

    @property
    def piece_bytes(self) -> int:
        """Total length of all pieces: what `blob_layout.layout(piece_bytes=...)` needs."""
        return sum(len(p) for p in self.pieces)

    @property
    def max_token_len(self) -> int:
        return max((len(p) for p in self.pieces), default=0)

    def is_control(self, token: int) -> bool:
        """<unk>, <s>, </s>: never produced by encoding text, decoded as nothing."""
        return self.kind == "sentencepiece" and 0 <= token < N_CONTROL

    def is_byte_piece(self, token: int) -> bool:
        return self.kind == "sentencepiece" and BYTE_OFFSET <= token < BYTE_OFFSET + 256

    def sorted_ids(self) -> list[int]:
        """Ids by piece bytes (memcmp order; a prefix sorts first); equal pieces by ascending id, so
        the last of a run of equal pieces is the highest id (the normal piece, not the byte one)."""
        return sorted(range(self.size), key=lambda i: (self.pieces[i], i))


def _f32(x: float) -> float:
    return float(np.float32(x))


def _check_sentencepiece_layout(pieces: list[bytes], is_byte: list[bool], source: str) -> None:
    """The firmware's byte fallback (`byte + 3`) only works with llama2.c's id layout."""
    for b in range(256):
        i = BYTE_OFFSET + b
        if i >= len(pieces) or not is_byte[i] or pieces[i] != bytes([b]):
            raise VocabError(
                f"{source}: token {i} should be the byte-fallback piece <0x{b:02X}> but is "
                f"{pieces[i] if i < len(pieces) else 'missing'!r}: the firmware maps a character with "
                "no piece to id byte + 3, which needs a sentencepiece model trained with "
                "byte_fallback=True, unk_id=0, bos_id=1, eos_id=2 (tinylm trains it so; retrain the "
                "tokenizer with `tinylm new`, or use the byte tokenizer)")


def from_sentencepiece(path: str | Path) -> Vocab:
    """Vocab of a sentencepiece `.model` file."""
    import sentencepiece as spm

    path = Path(path)
    if not path.exists():
        raise VocabError(f"{path} does not exist: give the tokenizer.model of the experiment")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise VocabError(f"{path} is not a sentencepiece model ({e}); give a .model file written by "
                         "sentencepiece, or a llama2.c tokenizer .bin") from e
    if sp.bos_id() != 1 or sp.eos_id() != 2 or sp.unk_id() != 0:
        raise VocabError(f"{path}: special ids are unk {sp.unk_id()}, bos {sp.bos_id()}, eos "
                         f"{sp.eos_id()}; the blob needs llama2.c's layout unk 0, bos 1, eos 2 — "
                         "retrain the tokenizer with those ids")
    pieces, scores, is_byte = [], [], []
    for i in range(sp.vocab_size()):
        text = sp.id_to_piece(i)
        byte = sp.is_byte(i)
        if byte:
            m = _BYTE_PIECE.match(text.encode())
            piece = bytes([int(m.group(1), 16)]) if m else text.encode()
        elif sp.is_control(i) or sp.is_unknown(i):
            piece = text.encode()
        else:
            piece = text.replace("\u2581", " ").encode("utf-8")
        pieces.append(piece)
        scores.append(_f32(sp.get_score(i)))
        is_byte.append(byte)
    _check_sentencepiece_layout(pieces, is_byte, str(path))
    return Vocab(tuple(pieces), tuple(scores), 1, 2, "sentencepiece")


def byte_vocab() -> Vocab:
    """The byte tokenizer: token id = byte value, no BOS/EOS, no merges."""
    return Vocab(tuple(bytes([b]) for b in range(256)), (0.0,) * 256, None, None, "byte")


# ---- llama2.c tokenizer .bin -----------------------------------------------------------------------

def parse_tokenizer_bin(data: bytes, source: str = "tokenizer.bin",
                        vocab_size: int | None = None) -> Vocab:
    """llama2.c's format: i32 max_token_length, then per token f32 score, i32 len, bytes. The token
    count is not stored: read `vocab_size` tokens, or up to the end of the file."""
    if len(data) < 4:
        raise VocabError(f"{source} is {len(data)} bytes, too short for a llama2.c tokenizer .bin "
                         "(truncated?); export it again with llama2.c's tokenizer.py")
    raw: list[bytes] = []
    scores: list[float] = []
    pos = 4
    while pos < len(data) and (vocab_size is None or len(raw) < vocab_size):
        if pos + 8 > len(data):
            raise VocabError(f"{source}: token {len(raw)} is cut off at byte {pos} of {len(data)} "
                             "(truncated file); download or export it again")
        score, n = struct.unpack_from("<fi", data, pos)
        if n < 0 or pos + 8 + n > len(data):
            raise VocabError(f"{source}: token {len(raw)} claims {n} bytes at byte {pos}, past the end "
                             f"of the {len(data)}-byte file (truncated, or not a tokenizer .bin)")
        raw.append(data[pos + 8:pos + 8 + n])
        scores.append(score)
        pos += 8 + n
    if vocab_size is not None and len(raw) < vocab_size:
        raise VocabError(f"{source} holds {len(raw)} tokens but the model has a vocabulary of "
                         f"{vocab_size}: use the tokenizer the model was trained with")
    if len(raw) == 256 and all(p == bytes([i]) for i, p in enumerate(raw)):
        return Vocab(tuple(raw), tuple(scores), None, None, "byte")
    pieces = list(raw)
    is_byte = [False] * len(raw)
    for i, p in enumerate(raw):
        m = _BYTE_PIECE.match(p)
        if m and BYTE_OFFSET <= i < BYTE_OFFSET + 256:
            pieces[i], is_byte[i] = bytes([int(m.group(1), 16)]), True
    if len(raw) < N_CONTROL or raw[1].strip() != b"<s>" or raw[2].strip() != b"</s>":
        raise VocabError(f"{source}: tokens 1 and 2 are not <s> and </s>; the blob needs llama2.c's "
                         "sentencepiece layout (unk 0, bos 1, eos 2, bytes 3..258)")
    pieces[1], pieces[2] = b"<s>", b"</s>"
    _check_sentencepiece_layout(pieces, is_byte, source)
    return Vocab(tuple(pieces), tuple(scores), 1, 2, "sentencepiece")


def read_tokenizer_bin(path: str | Path, vocab_size: int | None = None) -> Vocab:
    path = Path(path)
    if not path.exists():
        raise VocabError(f"{path} does not exist")
    return parse_tokenizer_bin(path.read_bytes(), str(path), vocab_size)


def tokenizer_bin_bytes(vocab: Vocab) -> bytes:
    """The llama2.c `.bin` run.c reads: bos/eos as "\\n<s>\\n"/"\\n</s>\\n" and byte pieces as
    "<0xAB>" text, exactly as llama2.c's tokenizer.py exports them."""
    out = []
    for i, (piece, score) in enumerate(zip(vocab.pieces, vocab.scores, strict=True)):
        if vocab.kind == "sentencepiece":
            if i == vocab.bos_id:
                piece = b"\n<s>\n"
            elif i == vocab.eos_id:
                piece = b"\n</s>\n"
            elif vocab.is_byte_piece(i):
                piece = f"<0x{i - BYTE_OFFSET:02X}>".encode()
        out.append((piece, score))
    max_len = max(len(p) for p, _ in out)
    parts = [struct.pack("<i", max_len)]
    for piece, score in out:
        parts.append(struct.pack("<fi", score, len(piece)) + piece)
    return b"".join(parts)


def write_tokenizer_bin(path: str | Path, vocab: Vocab) -> None:
    atomic_write_bytes(path, tokenizer_bin_bytes(vocab))


def load_vocab(path: str | Path, vocab_size: int | None = None) -> Vocab:
    """A `.model` (sentencepiece) or a `.bin` (llama2.c tokenizer), by file suffix."""
    path = Path(path)
    if path.suffix == ".model":
        return from_sentencepiece(path)
    if path.suffix == ".bin":
        return read_tokenizer_bin(path, vocab_size)
    raise VocabError(f"{path}: unknown tokenizer file type '{path.suffix}'; give a sentencepiece "
                     ".model or a llama2.c tokenizer .bin")


# ---- llama2.c .bin -> sentencepiece .model -----------------------------------------------------------
# A llama2.c tokenizer .bin holds pieces and merge scores only; torch and the reference need an
# encoder for prompts and corpora. Its pieces and scores are exactly a sentencepiece BPE model's, so we
# write one (ModelProto, firmware-consistent normalization: identity, dummy prefix, whitespace kept)
# and every tinylm path then treats the experiment like any other. The protobuf is written by hand
# (four message fields) so no protobuf package is needed.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    head = _varint(number << 3 | wire)
    return head + (_varint(len(payload)) + payload if wire == 2 else payload)


def _int_field(number: int, value: int) -> bytes:
    return _field(number, 0, _varint(value))


_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6  # sentencepiece ModelProto.SentencePiece.Type
_BPE = 2  # TrainerSpec.ModelType


def sentencepiece_model_bytes(vocab: Vocab) -> bytes:
    """A sentencepiece BPE `.model` with `vocab`'s pieces and scores (llama2.c id layout, byte
    fallback). Raises VocabError for a byte vocabulary (it needs no model) or pieces that are not
    UTF-8 text."""
    if vocab.kind != "sentencepiece":
        raise VocabError("a byte vocabulary needs no sentencepiece model (tokenizer.kind = \"byte\")")
    out = []
    for i, (piece, score) in enumerate(zip(vocab.pieces, vocab.scores, strict=True)):
        if vocab.is_byte_piece(i):
            text, kind = f"<0x{i - BYTE_OFFSET:02X}>", _BYTE
        elif i == 0:
            text, kind = "<unk>", _UNKNOWN
        elif vocab.is_control(i):
            text, kind = piece.decode("ascii"), _CONTROL
        else:
            try:
                text = piece.decode("utf-8").replace(" ", "\u2581")
            except UnicodeDecodeError as e:
                raise VocabError(f"token {i} ({piece!r}) is not UTF-8 text, so no sentencepiece "
                                 "encoder can be built from this tokenizer .bin; give the "
                                 "sentencepiece .model it was exported from") from e
            kind = _NORMAL
        body = (_field(1, 2, text.encode("utf-8")) + _field(2, 5, struct.pack("<f", score))
                + (_int_field(3, kind) if kind != _NORMAL else b""))
        out.append(_field(1, 2, body))
    trainer = (_int_field(3, _BPE) + _int_field(4, vocab.size) + _int_field(35, 1)
               + _int_field(40, 0) + _int_field(41, 1) + _int_field(42, 2))
    normalizer = (_field(1, 2, b"identity") + _int_field(3, 1) + _int_field(4, 0)
                  + _int_field(5, 1))
    return b"".join(out) + _field(2, 2, trainer) + _field(3, 2, normalizer)


# ---- the blob's vocabulary section ------------------------------------------------------------------

def section_bytes(vocab: Vocab) -> bytes:
    """Serialize per BLOB.md: max_len, reserved, scores, offsets, sorted ids (+0xFFFF pad), bytes,
    zero padding to 16. The length equals `blob_layout.vocab_section_bytes` by construction."""
    v = vocab.size
    if v > 0xFFFF:
        raise VocabError(f"vocabulary of {v} tokens: the blob stores ids as u16, so at most 65535")
    offsets = np.zeros(v + 1, dtype="<u4")
    offsets[1:] = np.cumsum([len(p) for p in vocab.pieces], dtype=np.int64)
    ids = np.array(vocab.sorted_ids(), dtype="<u2")
    ids_bytes = ids.tobytes() + b"\xff" * (align(2 * v, 4) - 2 * v)
    body = b"".join([
        struct.pack("<II", vocab.max_token_len, 0),
        np.asarray(vocab.scores, dtype="<f4").tobytes(),
        offsets.tobytes(),
        ids_bytes,
        b"".join(vocab.pieces),
    ])
    total = vocab_section_bytes(v, vocab.piece_bytes)
    return body + b"\0" * (total - len(body))


def parse_section(data: bytes | memoryview, vocab_size: int, bos_id: int, eos_id: int) -> Vocab:
    """Read a vocab section (already cut to `vocab_bytes`). Checks every offset before using it."""
    v = vocab_size
    data = bytes(data)
    fixed = 8 + 4 * v + 4 * (v + 1) + align(2 * v, 4)
    if len(data) < fixed:
        raise VocabError(f"vocab section is {len(data)} bytes, less than the {fixed} its {v} tokens "
                         "need (vocab_bytes too small): the blob is damaged; export it again")
    max_len = struct.unpack_from("<I", data, 0)[0]
    scores = np.frombuffer(data, dtype="<f4", count=v, offset=8)
    offsets = np.frombuffer(data, dtype="<u4", count=v + 1, offset=8 + 4 * v).astype(np.int64)
    ids = np.frombuffer(data, dtype="<u2", count=v, offset=8 + 8 * v + 4)
    area = len(data) - fixed
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > area:
        raise VocabError(f"vocab offsets are not non-decreasing from 0 within the {area}-byte piece "
                         "area: the blob is damaged; export it again")
    if not np.array_equal(np.sort(ids), np.arange(v)):
        raise VocabError("vocab sorted_ids is not a permutation of the token ids: the blob is "
                         "damaged; export it again")
    pieces = tuple(data[fixed + offsets[i]:fixed + offsets[i + 1]] for i in range(v))
    if [int(i) for i in ids] != sorted(range(v), key=lambda i: (pieces[i], i)):
        raise VocabError("vocab sorted_ids is not in piece order: the firmware's binary search would "
                         "miss pieces; export the blob again")
    if max_len != max((len(p) for p in pieces), default=0):
        raise VocabError(f"vocab max_token_len is {max_len} but the longest piece has "
                         f"{max((len(p) for p in pieces), default=0)} bytes: export the blob again")
    bos = None if bos_id == NO_TOKEN else bos_id
    eos = None if eos_id == NO_TOKEN else eos_id
    kind = "byte" if bos is None else "sentencepiece"
    return Vocab(pieces, tuple(float(s) for s in scores), bos, eos, kind)
