"""Token shards: each split of the corpus pre-tokenized into one raw uint16 file plus a JSON sidecar.

Why raw uint16 + sidecar: `np.memmap` reads it with no parsing and no copy (the trainer samples
random windows straight from the page cache), llama2.c's pretokenized shards use the same layout,
and every vocab we allow (≤ 4096) fits in 16 bits. The sidecar records what made the shard
(tokenizer and corpus hashes, split settings), so a cache hit needs no re-tokenization and a stale
shard is never used.

Crash safety: the sidecar is deleted before a shard is rebuilt and written only after the `.bin` is
complete and renamed into place, and a load checks the file size against the sidecar's count, so a
half-written or truncated shard is rebuilt instead of being trained on.

Cache layout: `<cache_root>/tokens/<corpus_sha[:16]>-<tok_sha[:16]>-<seed>-<val_fraction>-<format>/`
holding `train.bin`, `train.json`, `val.bin`, `val.json`. The corpus format is part of the key
because it decides where documents begin (and so the split and the BOS/EOS framing).
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from engine.atomic import atomic_write_json, atomic_write_with

from .tokenizer import ByteTokenizer, Stopped, Tokenizer

SHARD_FORMAT = "tinylm-tokens"
SHARD_VERSION = 1
DTYPE = np.uint16
SPLITS = ("train", "val")
DOC_SEPARATOR = "\n\n"  # what ends a document for tokenizers without BOS/EOS (bytes)
_CHUNK_CHARS = 1 << 20  # tokenize about this much text between progress reports / stop checks

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]


def cache_dir(cache_root: Path, corpus_sha: str, tok_sha: str, seed: int, val_fraction: float,
              corpus_format: str) -> Path:
    """Folder of the shards for one (corpus, tokenizer, split, format) combination."""
    key = f"{corpus_sha[:16]}-{tok_sha[:16]}-{seed}-{val_fraction:g}-{corpus_format}"
    return Path(cache_root) / "tokens" / key


def shard_paths(folder: Path, split: str) -> tuple[Path, Path]:
    """(`<split>.bin`, `<split>.json`)."""
    return folder / f"{split}.bin", folder / f"{split}.json"


# ---- encoding --------------------------------------------------------------------------------------

def _encode_chunk(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """Encode documents with their framing: [bos] + ids (+ [eos]) when the tokenizer has those ids,
    else ids + the bytes of a blank line (the byte tokenizer's document separator)."""
    if isinstance(tokenizer, ByteTokenizer):
        raw = (DOC_SEPARATOR.join(docs) + DOC_SEPARATOR).encode("utf-8")
        return np.frombuffer(raw, dtype=np.uint8).astype(DTYPE)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    lists = tokenizer.encode_batch(docs, bos=bos is not None, eos=eos is not None)
    if bos is None and eos is None:
        sep = tokenizer.encode(DOC_SEPARATOR)
        lists = [ids + sep for ids in lists]
    total = sum(len(ids) for ids in lists)
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=total)
    if total and int(flat.max()) > np.iinfo(DTYPE).max:
        raise ValueError(f"token id {int(flat.max())} does not fit in uint16")
    return flat.astype(DTYPE)


def encode_documents(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """All documents as one uint16 array, framed exactly as the shards are (see `_encode_chunk`)."""
    parts = [_encode_chunk(tokenizer, chunk) for chunk in _chunked(docs)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=DTYPE)


def _chunked(docs: list[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for d in docs:
        chunk.append(d)
        size += len(d)
        if size >= _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# ---- write / load ----------------------------------------------------------------------------------

def write_split(folder: Path, split: str, docs: list[str], tokenizer: Tokenizer,
                identity: dict[str, Any], on_progress: ProgressFn | None = None,
                should_stop: StopFn | None = None) -> np.memmap:
    """Tokenize `docs` into `<folder>/<split>.bin` (+ sidecar) and return it memory-mapped.

    `identity` (hashes and split settings) goes into the sidecar and must match on load.
    """
    bin_path, side_path = shard_paths(folder, split)
    side_path.unlink(missing_ok=True)  # from here on, whatever is in bin_path is not trusted
    stage = f"tokenize {split}"
    total_chars = max(1, sum(len(d) for d in docs))
    count = 0
    n_bytes = 0

    def write(fh: Any) -> None:
        nonlocal count, n_bytes
        done = 0
        if on_progress is not None:
            on_progress(stage, 0.0)
        for chunk in _chunked(docs):
            if should_stop is not None and should_stop():
                raise Stopped(f"tokenizing the {split} split stopped on request; nothing was kept")
            arr = _encode_chunk(tokenizer, chunk)
            fh.write(arr.tobytes())
            count += len(arr)
            n_bytes += sum(len(d.encode("utf-8")) for d in chunk)
            done += sum(len(d) for d in chunk)
            if on_progress is not None:
                on_progress(stage, done / total_chars)

    atomic_write_with(bin_path, write)
    atomic_write_json(side_path, {
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "dtype": np.dtype(DTYPE).name,
        "count": count, "split": split, "documents": len(docs), "bytes": n_bytes,
        "vocab_size": tokenizer.vocab_size, **identity,
    })
    return _memmap(bin_path)


def _memmap(path: Path) -> np.memmap:
    return np.memmap(path, dtype=DTYPE, mode="r")


def read_sidecar(folder: Path, split: str) -> dict[str, Any] | None:
    """The sidecar of a split, or None if it is missing or unreadable."""
    _, side_path = shard_paths(folder, split)
    try:
        side = json.loads(side_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return side if isinstance(side, dict) else None


def load_split(folder: Path, split: str, identity: dict[str, Any]) -> np.memmap | None:
    """The shard memory-mapped if it is complete and was made from what `identity` describes;
    None if it must be (re)built: no sidecar, other format/version, other hashes or settings, or a
    `.bin` whose size is not `count` tokens (truncated, or a crash between the two writes)."""
    bin_path, _ = shard_paths(folder, split)
    side = read_sidecar(folder, split)
    if side is None:
        return None
    expected = {"format": SHARD_FORMAT, "version": SHARD_VERSION,
                "dtype": np.dtype(DTYPE).name, "split": split, **identity}
    if any(side.get(k) != v for k, v in expected.items()):
        return None
    count = side.get("count")
    try:
        size = bin_path.stat().st_size
    except OSError:
        return None
    if not isinstance(count, int) or count <= 0 or size != count * np.dtype(DTYPE).itemsize:
        return None
    return _memmap(bin_path)
