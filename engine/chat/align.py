"""What one stream of a chat turn produced, and where two streams part ways.

Token for token, not text for text: two streams can print the same text with different
ids (a word as one piece or two), and the board's correctness is about the ids.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamResult:
    name: str  # "torch" | "reference" | "device"
    ids: list[int] = field(default_factory=list)
    text: str = ""
    reason: str = ""  # why it ended: max, eos, ctx, stop
    times: list[float] = field(default_factory=list)  # elapsed_s of each token
    elapsed_s: float = 0.0  # when the stream finished
    board_us: int = 0  # device: the board's own µs for the generated tokens

    @property
    def first_token_s(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def ms_per_token(self) -> float | None:
        """Steady decode time, first to last token (prompt and loading left out)."""
        if len(self.times) < 2:
            return None
        return (self.times[-1] - self.times[0]) * 1e3 / (len(self.times) - 1)

    @property
    def tok_per_s(self) -> float | None:
        ms = self.ms_per_token
        return 1e3 / ms if ms else None

    @property
    def board_tok_per_s(self) -> float | None:
        return len(self.ids) / (self.board_us / 1e6) if self.board_us else None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "ids": self.ids, "text": self.text, "tokens": len(self.ids),
            "reason": self.reason, "ttft_ms": _ms(self.first_token_s),
            "ms_per_token": _round(self.ms_per_token),
            "tok_per_s": _round(self.tok_per_s),
            "elapsed_ms": _ms(self.elapsed_s)}
        if self.name == "device":
            rec["board_us"] = self.board_us
            rec["board_tok_per_s"] = _round(self.board_tok_per_s)
        return rec


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


@dataclass(frozen=True)
class Divergence:
    """The first index where stream `b` differs from stream `a`; a token of None means
    that stream had ended (its text then says why)."""
    index: int
    a: str
    a_token: int | None
    a_text: str
    b: str
    b_token: int | None
    b_text: str

    def to_record(self) -> dict[str, Any]:
        return {"index": self.index,
                self.a: {"token": self.a_token, "text": self.a_text},
                self.b: {"token": self.b_token, "text": self.b_text}}

    def describe(self) -> str:
        """"first divergence at token 3: reference 123 'the' vs device 456 ' a'"."""
        def side(name: str, tok: int | None, text: str) -> str:
            if tok is None:
                return f"{name} (ended: {text})"
            return f"{name} {tok} {text!r}"
        return (f"first divergence at token {self.index}: "
                f"{side(self.a, self.a_token, self.a_text)} vs "
                f"{side(self.b, self.b_token, self.b_text)}")


class Detok:
    """Token ids -> text pieces as they stream: the bytes each token adds (as the
    firmware decodes them) through an incremental UTF-8 decoder, so a character split
    over tokens comes out whole, once."""

    def __init__(self, tok: Any, prev: int | None) -> None:
        self.tok = tok
        self.prev = prev
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        data = self.tok.decode_piece(self.prev, token)
        self.prev = token
        return self.utf8.decode(data)

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def token_text(tok: Any, prev: int | None, token: int) -> str:
    """One token's own text (after `prev`), for naming it in a divergence report."""
    return tok.decode_piece(prev, token).decode("utf-8", errors="replace")


def first_divergence(tok: Any, prompt_ids: list[int], a: StreamResult, b: StreamResult,
                     *, lengths: bool = True) -> Divergence | None:
    """First index where b's token differs from a's. With `lengths`, one stream ending
    before the other counts too (a stopped turn compares only what both said)."""
    last = prompt_ids[-1] if prompt_ids else None
    for i, (x, y) in enumerate(zip(a.ids, b.ids, strict=False)):
        if x != y:
            prev = a.ids[i - 1] if i else last
            return Divergence(i, a.name, x, token_text(tok, prev, x),
                              b.name, y, token_text(tok, prev, y))
    n = min(len(a.ids), len(b.ids))
    if not lengths or len(a.ids) == len(b.ids):
        return None
    prev = a.ids[n - 1] if n else last

    def at_n(s: StreamResult) -> tuple[int | None, str]:
        if len(s.ids) > n:
            return s.ids[n], token_text(tok, prev, s.ids[n])
        return None, s.reason or "ended"

    (at, atext), (bt, btext) = at_n(a), at_n(b)
    return Divergence(n, a.name, at, atext, b.name, bt, btext)
