"""Tokenizers: a sentencepiece model trained on the corpus, or raw bytes.

Why sentencepiece is trained the way it is: the model's text must survive encode → decode exactly
(double spaces, tabs, newlines, emoji), because the firmware and the chat screen compare token
streams and text byte for byte. So normalization is "identity", whitespace is kept, and any
character outside the vocabulary falls back to its UTF-8 bytes (`<0x..>` pieces) instead of
`<unk>`. The id layout follows llama2.c (unk 0, bos 1, eos 2, no pad) so its tools and run.c read
our models, and the vocab is exactly `tokenizer.vocab_size` (the model's embedding has that many
rows; a mismatch is the classic IndexError, caught by `check_vocab`).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

from engine.atomic import atomic_write_bytes, atomic_write_text
from engine.config.schema import TokenizerConfig
from engine.errors import Failure, TinyLMError, UserError

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
MODEL_NAME = "tokenizer.model"
# sentencepiece skips training sentences longer than max_sentence_length bytes, so longer lines are
# cut to this many characters (at most 4 UTF-8 bytes each) before training
_MAX_SENTENCE_CHARS = 2048
_MAX_SENTENCES = 2_000_000  # input_sentence_size: a hard cap on top of max_train_bytes


class Stopped(TinyLMError):
    """A long data step ended early because `should_stop()` said so (not an error of the user)."""

    exit_code = 130


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer, sampler, blob writer and UI need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def sha256(self) -> str: ...
    @property
    def path(self) -> Path | None: ...

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...
    def encode_batch(self, texts: list[str], bos: bool = False,
                     eos: bool = False) -> list[list[int]]: ...
    def decode(self, ids: list[int]) -> str: ...
    def decode_piece(self, prev_id: int | None, token_id: int) -> bytes: ...


class ByteTokenizer:
    """256 tokens, id = byte value. No BOS/EOS: documents are separated by a blank line instead."""

    vocab_size = 256
    bos_id: int | None = None
    eos_id: int | None = None
    path: Path | None = None
    sha256 = hashlib.sha256(b"tinylm byte tokenizer v1: id = byte").hexdigest()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """`bos`/`eos` are accepted for interface parity and ignored (there are no such ids)."""
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def decode_piece(self, prev_id: int | None, token_id: int) -> bytes:
        return bytes((token_id,))


class SentencePieceTokenizer:
    """A sentencepiece `.model` file, with a byte table for streaming decode."""

    def __init__(self, path: str | Path) -> None:
        import sentencepiece as spm

        self._path = Path(path)
        try:
            blob = self._path.read_bytes()
        except FileNotFoundError as e:
            raise UserError(f"tokenizer {self._path} does not exist: `tinylm train NAME` trains one "
                            "from the corpus") from e
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(blob)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{self._path} is not a sentencepiece model ({len(blob)} bytes; {e}); "
                            "delete it and `tinylm train NAME` to train a new one, or copy the "
                            "right file") from e
        self._sha = hashlib.sha256(blob).hexdigest()
        self._pieces = [self._piece_bytes(i) for i in range(self._sp.vocab_size())]

    def _piece_bytes(self, i: int) -> bytes:
        sp = self._sp
        if sp.is_byte(i):
            return bytes((int(sp.id_to_piece(i)[3:5], 16),))  # "<0x0A>" -> b"\n"
        if sp.is_control(i):
            return b""
        if sp.is_unknown(i):
            return " \u2047 ".encode()  # what sentencepiece itself prints for <unk>
        return sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def bos_id(self) -> int | None:
        i = self._sp.bos_id()
        return i if i >= 0 else None

    @property
    def eos_id(self) -> int | None:
        i = self._sp.eos_id()
        return i if i >= 0 else None

    @property
    def sha256(self) -> str:
        return self._sha

    @property
    def path(self) -> Path | None:
        return self._path

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return self._sp.encode(text, add_bos=bos, add_eos=eos)

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """Many texts in one call (~8 MB/s of TinyStories on one core; extra threads gain nothing)."""
        return self._sp.encode(texts, add_bos=bos, add_eos=eos)

    def decode_piece(self, prev_id: int | None, token_id: int) -> bytes:
        """The bytes one token adds to the text. After BOS (or at the start, prev_id None) the
        leading space sentencepiece puts on the first word is dropped, as llama2.c's run.c does.
        A multi-byte character split into byte tokens arrives one byte per call: a streaming UI
        should feed these bytes to an incremental UTF-8 decoder."""
        piece = self._pieces[token_id]
        if (prev_id is None or prev_id == self.bos_id) and piece.startswith(b" "):
            return piece[1:]
        return piece

    def decode(self, ids: list[int]) -> str:
        """Inverse of `encode` for a sequence that starts at the beginning of a text."""
        out = bytearray()
        prev: int | None = None
        for i in ids:
            out += self.decode_piece(prev, i)
            prev = i
        return out.decode("utf-8", errors="replace")

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)


def load_tokenizer(folder: Path, tok_cfg: TokenizerConfig) -> Tokenizer:
    """The experiment's tokenizer: bytes, or `folder/tokenizer.model`."""
    if tok_cfg.kind == "byte":
        return ByteTokenizer()
    path = Path(folder) / MODEL_NAME
    if not path.exists():
        raise UserError(f"{path} does not exist: this experiment has no tokenizer yet; `tinylm train "
                        f"{Path(folder).name}` trains one from the corpus first")
    return SentencePieceTokenizer(path)


def check_vocab(tokenizer: Tokenizer, model_vocab: int) -> None:
    """Refuse a tokenizer whose vocab differs from the model's: ids ≥ model_vocab would index past
    the embedding (IndexError mid-training), and fewer ids would leave dead rows in the blob."""
    n = tokenizer.vocab_size
    if n == model_vocab:
        return
    if tokenizer.path is None:
        raise UserError(f"tokenizer vocab size {n} (byte tokenizer) does not match the model's vocab "
                        f"size {model_vocab}: set tokenizer.vocab_size = {n}")
    raise UserError(
        f"tokenizer vocab size {n} ({tokenizer.path}) does not match the model's vocab size "
        f"{model_vocab} (tokenizer.vocab_size = {model_vocab}): token ids up to {n - 1} would "
        f"index past the model's {model_vocab}-row embedding (IndexError). Fix: set "
        f"tokenizer.vocab_size = {n} to use this tokenizer, or delete {tokenizer.path} so a "
        f"{model_vocab}-token tokenizer is trained again")


# ---- training --------------------------------------------------------------------------------------

def _chunks(line: str, limit: int) -> Iterator[str]:
    """Cut a line longer than `limit` characters, at a space where there is one."""
    start = 0
    while len(line) - start > limit:
        cut = line.rfind(" ", start + 1, start + limit)
        cut = cut if cut > start else start + limit
        yield line[start:cut]
        start = cut
    if line[start:].strip():
        yield line[start:]


def training_sentences(docs: list[str], max_train_bytes: int) -> list[str]:
    """The lines sentencepiece trains on: documents cut at newlines (newlines themselves become
    byte tokens, as in llama2.c's tokenizers), capped at `max_train_bytes`. When the corpus is
    larger than the cap, documents are taken at an even stride so the whole corpus is sampled."""
    total = sum(len(d.encode("utf-8")) for d in docs)
    stride = max(1, math.ceil(total / max_train_bytes)) if max_train_bytes > 0 else 1
    out: list[str] = []
    used = 0
    for doc in docs[::stride]:
        for line in doc.split("\n"):
            for s in _chunks(line, _MAX_SENTENCE_CHARS):
                out.append(s)
                used += len(s.encode("utf-8"))
        if used >= max_train_bytes:
            break
    return out


_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _explain_training_error(e: RuntimeError, vocab_size: int, n_bytes: int) -> UserError | None:
    msg = str(e)
    if m := _TOO_HIGH.search(msg):
        most = int(m.group(2))
        return UserError(
            f"tokenizer.vocab_size = {vocab_size} is too large for this corpus: sentencepiece can "
            f"make at most {most} distinct tokens from its {n_bytes:,} bytes of training text. Set "
            f"tokenizer.vocab_size ≤ {most} (and the model follows), or add more text")
    if m := _TOO_LOW.search(msg):
        least = int(m.group(2))
        return UserError(
            f"tokenizer.vocab_size = {vocab_size} is too small for this corpus: it needs at least "
            f"{least} tokens (3 special + 256 byte-fallback tokens + one per distinct character, "
            f"{least - 259} here). Set tokenizer.vocab_size ≥ {least}, or use tokenizer.kind = "
            "\"byte\" (256 tokens, no training)")
    if "sentences_.empty()" in msg:
        return UserError("the corpus has no text to train a tokenizer on; add text to data.corpus")
    return None


def train_sentencepiece(docs: list[str], out_prefix: Path, vocab_size: int, model_type: str,
                        max_train_bytes: int, on_progress: ProgressFn | None = None,
                        should_stop: StopFn | None = None) -> Path:
    """Train a sentencepiece model on `docs` and write `<out_prefix>.model` and `.vocab`.

    Training runs in memory (sentence iterator in, serialized model out), so a crash or a stop never
    leaves a half-written tokenizer: `.vocab` is written first and `.model` last, each atomically.
    Sentencepiece's own log goes nowhere (minloglevel), keeping the TUI clean. Deterministic: the
    same docs and settings give the same bytes. Returns the path of the `.model` file.
    """
    import sentencepiece as spm

    out_prefix = Path(out_prefix)
    sentences = training_sentences(docs, max_train_bytes)
    n_bytes = sum(len(s.encode("utf-8")) for s in sentences)
    n = len(sentences)
    stopped = False

    def feed() -> Iterator[str]:
        nonlocal stopped
        step = max(1, n // 20)
        for i, s in enumerate(sentences):
            if i % step == 0:
                if should_stop is not None and should_stop():
                    stopped = True  # end the input early: an exception here would cross C++
                    return
                if on_progress is not None:
                    on_progress("train tokenizer", 0.5 * i / max(n, 1))
            yield s

    if on_progress is not None:
        on_progress("train tokenizer", 0.0)
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=feed(), model_writer=proto,
            vocab_size=vocab_size, model_type=model_type, hard_vocab_limit=True,
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, character_coverage=1.0,
            unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
            input_sentence_size=_MAX_SENTENCES, shuffle_input_sentence=False,
            max_sentence_length=_MAX_SENTENCE_CHARS * 4, num_threads=2, minloglevel=2,
        )
    except RuntimeError as e:
        if stopped:
            raise Stopped("tokenizer training stopped on request; nothing was written") from None
        explained = _explain_training_error(e, vocab_size, n_bytes)
        if explained is not None:
            raise explained from None
        raise Failure(f"sentencepiece training failed: {e}") from e
    if stopped:
        raise Stopped("tokenizer training stopped on request; nothing was written")
    if on_progress is not None:
        on_progress("train tokenizer", 0.9)
    blob = proto.getvalue()
    vocab_path = Path(f"{out_prefix}.vocab")
    model_path = Path(f"{out_prefix}.model")
    sp = spm.SentencePieceProcessor(model_proto=blob)
    atomic_write_text(vocab_path, "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n"
                                          for i in range(sp.vocab_size())))
    atomic_write_bytes(model_path, blob)
    if on_progress is not None:
        on_progress("train tokenizer", 1.0)
    return model_path
