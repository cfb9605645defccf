"""Data: corpus → documents → train/val split → tokenizer → token shards → batches.

`prepare` is what the train subprocess calls before building a model; `data_report` is what
`tinylm data NAME` and the TUI show before anyone trains, to answer "is my corpus big enough for
this model?". Both work from the experiment's config, so what the report counts is what training
gets. Importing this package does not import torch or sentencepiece (CLI start-up time).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.config.schema import ExperimentConfig
from engine.errors import UserError

from .corpus import (
    corpus_sha256,
    read_corpus,
    resolve_format,
    split_documents,
    train_val_split,
)
from .loader import BatchLoader, eval_batches
from .shards import cache_dir, encode_documents, load_split, read_sidecar, write_split
from .tokenizer import (
    MODEL_NAME,
    ByteTokenizer,
    SentencePieceTokenizer,
    Stopped,
    Tokenizer,
    check_vocab,
    load_tokenizer,
    train_sentencepiece,
)

__all__ = [
    "BatchLoader", "ByteTokenizer", "Prepared", "SentencePieceTokenizer", "Stopped", "Tokenizer",
    "check_vocab", "data_report", "eval_batches", "load_tokenizer", "prepare", "read_corpus",
    "split_documents", "train_sentencepiece", "train_val_split",
]

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]

# tokens-per-parameter thresholds of `data_report`'s verdict (Chinchilla-optimal is ~20)
TOO_LITTLE_BELOW = 5.0
PLENTY_ABOVE = 50.0


@dataclass
class Prepared:
    """Everything training needs from the data side, ready to use."""

    tokenizer: Tokenizer
    train_tokens: np.memmap  # uint16, read-only; documents framed [bos] ids [eos] back to back
    val_tokens: np.memmap  # same framing, held-out documents
    train_path: Path  # train.bin in the cache folder
    val_path: Path  # val.bin in the cache folder
    cache_dir: Path  # <cache_root>/tokens/<key>/
    tokenizer_path: Path | None  # exp_folder/tokenizer.model, None for the byte tokenizer
    corpus_path: Path
    corpus_sha256: str  # of the corpus text as read (UTF-8, BOM dropped, \n newlines)
    corpus_format: str  # "tinystories" or "text" ("auto" resolved)
    n_train_docs: int
    n_val_docs: int
    cache_hit: bool  # both shards came from the cache: nothing was tokenized
    tokenizer_trained: bool  # this call trained tokenizer.model

    @property
    def n_train_tokens(self) -> int:
        return len(self.train_tokens)

    @property
    def n_val_tokens(self) -> int:
        return len(self.val_tokens)


def _check_stop(should_stop: StopFn | None) -> None:
    if should_stop is not None and should_stop():
        raise Stopped("data preparation stopped on request")


def prepare(exp_folder: Path, cfg: ExperimentConfig, corpus_path: Path, cache_root: Path,
            on_progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> Prepared:
    """Make sure the experiment has its tokenizer and its token shards, and return them.

    Trains `exp_folder/tokenizer.model` from the train split if it is missing (kind
    "sentencepiece"), checks its vocab against `cfg.tokenizer.vocab_size`, then loads both shards
    from `<cache_root>/tokens/...` or tokenizes them (`cache_root` is the workspace's `cache/`).
    Progress stages: "read corpus", "train tokenizer", "tokenize train", "tokenize val".
    Raises UserError for bad input and Stopped when `should_stop()` turns true.
    """
    exp_folder, corpus_path = Path(exp_folder), Path(corpus_path)
    if on_progress is not None:
        on_progress("read corpus", 0.0)
    text = read_corpus(corpus_path)
    fmt = resolve_format(text, cfg.data.format)
    corpus_sha = corpus_sha256(text)
    if on_progress is not None:
        on_progress("read corpus", 1.0)
    _check_stop(should_stop)

    split: tuple[list[str], list[str]] | None = None

    def docs() -> tuple[list[str], list[str]]:  # split only when something must be built
        nonlocal split
        if split is None:
            split = train_val_split(split_documents(text, fmt), cfg.data.val_fraction, cfg.data.seed,
                                    fmt)
        return split

    tok_cfg = cfg.tokenizer
    trained = False
    if tok_cfg.kind == "sentencepiece" and not (exp_folder / MODEL_NAME).exists():
        train_sentencepiece(docs()[0], exp_folder / "tokenizer", tok_cfg.vocab_size,
                            tok_cfg.model_type, tok_cfg.max_train_bytes, on_progress, should_stop)
        trained = True
    tokenizer = load_tokenizer(exp_folder, tok_cfg)
    check_vocab(tokenizer, tok_cfg.vocab_size)

    folder = cache_dir(cache_root, corpus_sha, tokenizer.sha256, cfg.data.seed,
                       cfg.data.val_fraction, fmt)
    identity = {"tokenizer_sha256": tokenizer.sha256, "corpus_sha256": corpus_sha,
                "corpus_format": fmt, "seed": cfg.data.seed, "val_fraction": cfg.data.val_fraction}
    arrays: dict[str, np.memmap] = {}
    hit = True
    for index, name in enumerate(("train", "val")):
        _check_stop(should_stop)
        arr = load_split(folder, name, identity)
        if arr is None:
            hit = False
            arr = write_split(folder, name, docs()[index], tokenizer, identity, on_progress,
                              should_stop)
        arrays[name] = arr
    sides = {name: read_sidecar(folder, name) or {} for name in arrays}
    need = cfg.model.seq_len + 1
    if len(arrays["train"]) < need:
        raise UserError(f"corpus too small: {len(arrays['train'])} tokens in the train split, one "
                        f"training window needs seq_len+1 = {need}; add text or lower model.seq_len")
    if len(arrays["val"]) < need:
        raise UserError(f"validation split too small: {len(arrays['val'])} tokens, one eval window "
                        f"needs seq_len+1 = {need}; raise data.val_fraction (now "
                        f"{cfg.data.val_fraction:g}), add text, or lower model.seq_len")
    return Prepared(
        tokenizer=tokenizer, train_tokens=arrays["train"], val_tokens=arrays["val"],
        train_path=folder / "train.bin", val_path=folder / "val.bin", cache_dir=folder,
        tokenizer_path=tokenizer.path, corpus_path=corpus_path, corpus_sha256=corpus_sha,
        corpus_format=fmt, n_train_docs=int(sides["train"].get("documents", 0)),
        n_val_docs=int(sides["val"].get("documents", 0)), cache_hit=hit, tokenizer_trained=trained,
    )


def _verdict(tokens_per_param: float) -> tuple[str, str]:
    t = f"{tokens_per_param:.1f} training tokens per parameter"
    if tokens_per_param < TOO_LITTLE_BELOW:
        return "too little data", (
            f"{t}: the model can memorize the corpus instead of learning the language "
            "(compute-optimal is about 20, Chinchilla); add text or choose a smaller model")
    if tokens_per_param <= PLENTY_ABOVE:
        return "about right", f"{t}: near the compute-optimal ~20 (Chinchilla)"
    return "plenty", (f"{t}: more text than this model needs; it will not run out of fresh data, "
                      "and a larger model would also fit the data if the board has room")


def _report_tokenizer(exp_folder: Path, cfg: ExperimentConfig,
                      train_docs: list[str]) -> tuple[Tokenizer, str]:
    """The experiment's tokenizer; if it has none yet, one trained in a temp folder, so a report
    never writes into the experiment (training it for real is `prepare`'s job)."""
    if cfg.tokenizer.kind == "byte" or (exp_folder / MODEL_NAME).exists():
        tok = load_tokenizer(exp_folder, cfg.tokenizer)
        return tok, "byte" if tok.path is None else str(tok.path)
    t = cfg.tokenizer
    with tempfile.TemporaryDirectory(prefix="tinylm-tok-") as tmp:
        path = train_sentencepiece(train_docs, Path(tmp) / "tokenizer", t.vocab_size, t.model_type,
                                   t.max_train_bytes)
        tok = SentencePieceTokenizer(path)  # reads the whole file: the temp folder may go
    return tok, "trained for this report only (training the experiment trains and keeps it)"


def data_report(exp_folder: Path, cfg: ExperimentConfig, corpus_path: Path,
                params: int) -> dict[str, Any]:
    """Counts for `tinylm data NAME`: is there enough text for this model?

    Tokens are counted with the experiment's tokenizer, framed exactly as the shards are (BOS/EOS
    per document), so `train_tokens`/`val_tokens` equal the shard lengths `prepare` produces.
    `bytes` is the UTF-8 size of the documents (separators excluded); `bytes_per_token` =
    bytes / tokens. `vocab_coverage` is the share of vocab ids that occur at least once; the 256
    byte-fallback ids of a sentencepiece vocab rarely occur in plain text, so ~50% at vocab 512 is
    normal, and a low share at a large vocab says the vocab is bigger than this corpus needs.
    Verdict on training tokens per parameter: "too little data" below 5, "about right" from 5 to
    50 (compute-optimal is ~20, Chinchilla), "plenty" above 50.
    """
    if params <= 0:
        raise ValueError(f"params must be > 0, got {params}")
    exp_folder, corpus_path = Path(exp_folder), Path(corpus_path)
    text = read_corpus(corpus_path)
    fmt = resolve_format(text, cfg.data.format)
    docs = split_documents(text, fmt)
    train, val = train_val_split(docs, cfg.data.val_fraction, cfg.data.seed, fmt)
    tokenizer, source = _report_tokenizer(exp_folder, cfg, train)
    check_vocab(tokenizer, cfg.tokenizer.vocab_size)
    train_ids = encode_documents(tokenizer, train)
    val_ids = encode_documents(tokenizer, val)
    n_tokens = len(train_ids) + len(val_ids)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    counts = np.bincount(np.concatenate([train_ids, val_ids]), minlength=tokenizer.vocab_size)
    used = int(np.count_nonzero(counts))
    per_param = len(train_ids) / params
    verdict, advice = _verdict(per_param)
    return {
        "corpus": str(corpus_path), "corpus_format": fmt,
        "file_bytes": corpus_path.stat().st_size, "bytes": n_bytes,
        "documents": len(docs), "train_documents": len(train), "val_documents": len(val),
        "tokens": n_tokens, "train_tokens": len(train_ids), "val_tokens": len(val_ids),
        "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0,
        "tokenizer": source, "vocab_size": tokenizer.vocab_size, "vocab_used": used,
        "vocab_coverage": used / tokenizer.vocab_size,
        "params": params, "tokens_per_param": per_param, "verdict": verdict, "advice": advice,
    }
