"""Corpus reading, document splitting and the train/val split.

Why this module is fussy about its input: a corpus is usually the first file a new user points the
tool at, and the usual mistakes (an empty file, a PDF or a zip, a Latin-1 export from an old editor)
otherwise surface much later as a sentencepiece crash or a model that learned mojibake. Every such
mistake here is a `UserError` that says what is wrong with the file and how to fix it.

The split is by document, never by window, so no story is half in train and half in val; it is
decided by a keyed hash of each document's text, so it is the same on every machine and Python
version, and duplicate documents get the same key, so they land on the same side (no leakage
through repeats) unless they straddle the exact cut-off.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from engine.errors import UserError

EOT_MARKER = "<|endoftext|>"
FORMATS = ("auto", "text", "tinystories")
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")
_SNIFF_BYTES = 65536  # how much of a file the "is it text at all?" check looks at
_MAX_CONTROL_SHARE = 0.05  # more control characters than this in the sniffed part = binary


_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 32), 127])


def _control_share(data: bytes) -> float:
    """Share of bytes that no text file contains (C0 controls other than tab/newline/FF/CR, DEL)."""
    if not data:
        return 0.0
    return (len(data) - len(data.translate(None, _CONTROL_BYTES))) / len(data)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def read_corpus(path: str | Path) -> str:
    """Read a UTF-8 text corpus, or raise a UserError saying what is wrong with the file.

    A leading byte-order mark is dropped and Windows (CRLF) or old-Mac (CR) line endings become
    `\\n`, so blank-line splitting and the tokenizer see one newline convention whatever editor
    wrote the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"corpus file {path} does not exist: set data.corpus to the path of a UTF-8 "
                        "text file (relative paths start at the workspace folder)")
    if path.is_dir():
        raise UserError(f"corpus {path} is a folder, not a file: set data.corpus to one UTF-8 text "
                        "file (join several with `cat a.txt b.txt > corpus.txt`)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read corpus {path}: {e.strerror}; check the path and its "
                        "permissions") from e
    if not data.strip():
        what = "empty (0 bytes)" if not data else f"only whitespace ({len(data)} bytes)"
        raise UserError(f"corpus {path} is {what}: a language model needs text to learn from; put "
                        "some UTF-8 text in it, or point data.corpus at another file")
    nul = data.find(b"\x00")
    if nul >= 0 or _control_share(data[:_SNIFF_BYTES]) > _MAX_CONTROL_SHARE:
        why = f"NUL byte at offset {nul}" if nul >= 0 else "mostly control characters"
        raise UserError(f"corpus {path} looks binary ({why}), not text: is it a PDF, a zip or a "
                        "model file? Export or extract it as plain UTF-8 text first "
                        "(e.g. `pdftotext in.pdf corpus.txt`)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(data, e.start)
        bad = data[e.start:e.start + 1].hex()
        raise UserError(f"corpus {path} is not UTF-8: byte 0x{bad} at byte offset {e.start} (line "
                        f"{line}, column {col}) is {e.reason}; the file is probably Latin-1 or "
                        f"Windows-1252 — convert it with `iconv -f latin1 -t utf-8 {path} > "
                        f"{path.stem}.utf8{path.suffix}` and point data.corpus at the new file") from e
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def corpus_sha256(text: str) -> str:
    """Identity of a corpus for caches: the hash of the text as read (normalized), in UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_format(text: str, fmt: str) -> str:
    """"auto" becomes "tinystories" if the `<|endoftext|>` marker occurs, else "text"."""
    if fmt not in FORMATS:
        raise UserError(f"data.format = {fmt!r}: not a known corpus format; use one of "
                        f"{', '.join(FORMATS)}")
    if fmt == "auto":
        return "tinystories" if EOT_MARKER in text else "text"
    return fmt


def split_documents(text: str, fmt: str) -> list[str]:
    """Cut a corpus into documents (the unit of the train/val split and of BOS/EOS framing).

    "tinystories": on `<|endoftext|>` (on its own line or inline), each document stripped of
    surrounding whitespace. "text": on blank lines (lines holding only spaces/tabs count as
    blank); only the newlines around a block are removed, so indentation inside it survives.
    Empty documents are dropped.
    """
    fmt = resolve_format(text, fmt)
    if fmt == "tinystories":
        return [d for d in (part.strip() for part in text.split(EOT_MARKER)) if d]
    return [b for b in (block.strip("\n") for block in _BLANK_LINE.split(text)) if b.strip()]


def _split_key(seed: int, doc: str) -> bytes:
    return hashlib.blake2b(doc.encode("utf-8"), digest_size=16,
                           key=str(seed).encode("ascii")).digest()


def train_val_split(docs: list[str], val_fraction: float, seed: int,
                    fmt: str | None = None) -> tuple[list[str], list[str]]:
    """Deterministic split by document: the `round(len * val_fraction)` documents (at least 1, at
    most all but 1) with the smallest keyed hash go to val. Both halves keep corpus order.
    `fmt` (the resolved corpus format) only sharpens the advice when there are too few documents."""
    n = len(docs)
    if n < 2:
        fix = {"text": "separate documents with blank lines (or with lines holding <|endoftext|>)",
               "tinystories": 'set data.format = "text" so blank lines separate documents'
               }.get(fmt or "", 'set data.format = "text" so blank lines separate documents')
        raise UserError(f"the corpus has {n} document{'s' if n != 1 else ''}, but training needs at "
                        f"least 2 (one for training, one for validation): add more text, or {fix}")
    if not (0.0 < val_fraction < 1.0):
        raise UserError(f"data.val_fraction = {val_fraction!r}: must be between 0 and 0.5, e.g. 0.05")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = sorted(range(n), key=lambda i: (_split_key(seed, docs[i]), i))
    val_idx = set(order[:n_val])
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val
