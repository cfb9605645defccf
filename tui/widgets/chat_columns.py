"""ChatColumns: one prompt's three answers side by side — PyTorch (the float checkpoint), Reference
(the numpy twin of the firmware on the exported blob) and Device (the board) — streaming as the
tokens arrive, with time to first token, ms/token and tok/s under each.

Why token by token and not text by text: the board's correctness is about ids (two streams can
print the same text with different pieces), so the first index where Device's id differs from
Reference's is found live and both tokens are highlighted there and named in the verdict line.
The numbers shown after a turn are the engine's (TurnResult), the same the transcript records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

STREAMS = ("torch", "reference", "device")
TITLES = {"torch": "PyTorch", "reference": "Reference", "device": "Device"}
MARK = {"reference": "bold black on yellow", "device": "bold white on red"}
# why a stream ended (the engine's and the firmware's short codes), in words under its column
END_REASONS = {"max": "max tokens", "eos": "end of text", "ctx": "context full", "stop": "stopped"}


@dataclass
class Column:
    """One stream as it arrived."""
    ids: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # elapsed_s of each token
    text: str | None = None  # whole text, when shown from a transcript (no pieces)
    stats: str = ""  # set from the engine's numbers at the end


def stream_stats(first_s: float | None, ms_per_token: float | None, tok_per_s: float | None,
                 n: int, board_tok_per_s: float | None = None) -> str:
    if not n:
        return "no tokens"
    parts = [f"{n} tokens"]
    parts.append(f"first {first_s * 1e3:.0f} ms" if first_s is not None else "first -")
    if ms_per_token is not None and tok_per_s is not None:
        parts.append(f"{ms_per_token:.3g} ms/token · {tok_per_s:,.0f} tok/s")
    if board_tok_per_s:
        parts.append(f"board {board_tok_per_s:,.0f} tok/s")
    return " · ".join(parts)


def live_stats(c: Column) -> str:
    if len(c.times) < 2:
        return stream_stats(c.times[0] if c.times else None, None, None, len(c.ids))
    ms = (c.times[-1] - c.times[0]) * 1e3 / (len(c.times) - 1)
    return stream_stats(c.times[0], ms, 1e3 / ms if ms else None, len(c.ids))


class ChatColumns(Vertical):
    DEFAULT_CSS = """
    ChatColumns { height: 1fr; }
    ChatColumns > Horizontal { height: 1fr; }
    ChatColumns .chat-col { width: 1fr; border: round $primary-darken-2; padding: 0 1; }
    ChatColumns .chat-col.diverged { border: round $error; }
    ChatColumns .chat-body { height: 1fr; }
    ChatColumns .chat-stats { height: auto; color: $text-muted; }
    ChatColumns > #chat-verdict { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cols: dict[str, Column] = {s: Column() for s in STREAMS}
        self.prompt = ""
        self.divergence_at: int | None = None
        self.labels = {s: TITLES[s] for s in STREAMS}

    def compose(self) -> ComposeResult:
        with Horizontal():
            for s in STREAMS:
                with Vertical(classes="chat-col", id=f"col-{s}") as col:
                    col.border_title = TITLES[s]
                    with VerticalScroll(classes="chat-body"):
                        yield Static("", id=f"text-{s}")
                    yield Static("", classes="chat-stats", id=f"stats-{s}")
        yield Static("", id="chat-verdict")

    def set_labels(self, quant: str, port: str) -> None:
        """Column titles that say what each stream runs."""
        self.labels = {"torch": "PyTorch · float",
                       "reference": f"Reference · {quant}",
                       "device": f"Device · {quant} · {port}" if port else f"Device · {quant}"}
        for s in STREAMS:
            self.query_one(f"#col-{s}").border_title = self.labels[s]

    # ---- a live turn -----------------------------------------------------------------------------

    def begin(self, prompt: str) -> None:
        self.prompt = prompt
        self.cols = {s: Column() for s in STREAMS}
        self.divergence_at = None
        for s in STREAMS:
            self._draw_column(s)
        self.verdict(Text(f"{prompt!r} …", style="dim"))

    def add(self, events: list[Any]) -> None:
        """ChatEvents (stream, index, token, text, elapsed_s), in arrival order."""
        touched = set()
        for ev in events:
            c = self.cols[ev.stream]
            c.ids.append(ev.token)
            c.pieces.append(ev.text)
            c.times.append(ev.elapsed_s)
            touched.add(ev.stream)
        if self.divergence_at is None and touched & {"reference", "device"}:
            ref, dev = self.cols["reference"].ids, self.cols["device"].ids
            for i in range(min(len(ref), len(dev))):
                if ref[i] != dev[i]:
                    self.divergence_at = i
                    touched |= {"reference", "device"}
                    r, d = self.cols["reference"], self.cols["device"]
                    self.verdict(Text(f"device differs from reference at token {i}: reference "
                                      f"{ref[i]} {r.pieces[i]!r} vs device {dev[i]} "
                                      f"{d.pieces[i]!r}", style="bold red"))
                    break
        for s in touched:
            self.cols[s].stats = live_stats(self.cols[s])
            self._draw_column(s)

    def finish(self, result: Any) -> None:
        """The engine's TurnResult: its timings and its divergence verdict are the truth."""
        d = result.divergence
        self.divergence_at = d.index if d is not None else None
        for s in STREAMS:
            r = result.streams[s]
            c = self.cols[s]
            if len(c.ids) != len(r.ids):  # events still queued when the result came: take the result
                c.ids, c.pieces, c.text = list(r.ids), [], r.text
            c.stats = stream_stats(r.first_token_s, r.ms_per_token, r.tok_per_s, len(r.ids),
                                   r.board_tok_per_s if s == "device" else None)
            if r.reason:
                c.stats += f" · {END_REASONS.get(r.reason, r.reason)}"
            self._draw_column(s)
        self.verdict(verdict_text(result.divergence, result.float_divergence, result.params,
                                  len(result.streams["reference"].ids), result.stopped))

    def fail(self, message: str) -> None:
        self.verdict(Text(message, style="bold red"))

    # ---- a turn from the transcript --------------------------------------------------------------

    def show_record(self, rec: dict[str, Any]) -> None:
        self.prompt = rec.get("prompt", "")
        d = rec.get("divergence")
        self.divergence_at = d["index"] if d else None
        for s in STREAMS:
            r = rec.get("streams", {}).get(s, {})
            ttft = r.get("ttft_ms")
            self.cols[s] = Column(ids=list(r.get("ids", [])), text=r.get("text", ""),
                                  stats=stream_stats(None if ttft is None else ttft / 1e3,
                                                     r.get("ms_per_token"), r.get("tok_per_s"),
                                                     r.get("tokens", 0)))
            self._draw_column(s)
        when = rec.get("time", "")
        text = Text(f"{when}  {self.prompt!r}  ", style="dim")
        if d:
            ref, dev = d.get("reference", {}), d.get("device", {})
            text.append(f"first divergence at token {d['index']}: reference {ref.get('token')} "
                        f"{ref.get('text')!r} vs device {dev.get('token')} {dev.get('text')!r}",
                        style="bold red")
        else:
            text.append("device = reference", style="green")
        self.verdict(text)

    # ---- drawing ---------------------------------------------------------------------------------

    def verdict(self, text: Text) -> None:
        self.query_one("#chat-verdict", Static).update(text)

    def _draw_column(self, s: str) -> None:
        c = self.cols[s]
        out = Text(self.prompt, style="dim")
        if c.text is not None and not c.pieces:
            out.append(c.text)
        else:
            at = self.divergence_at if s in MARK else None
            for i, piece in enumerate(c.pieces):
                if i == at:
                    out.append(piece or "�", style=MARK[s])
                else:
                    out.append(piece)
        self.query_one(f"#text-{s}", Static).update(out)
        self.query_one(f"#stats-{s}", Static).update(c.stats)
        self.query_one(f"#col-{s}").set_class(
            s in MARK and self.divergence_at is not None, "diverged")

    def text_of(self, s: str) -> str:
        c = self.cols[s]
        return c.text if c.text is not None and not c.pieces else "".join(c.pieces)


def verdict_text(div: Any, float_div: Any, params: Any, n: int, stopped: bool) -> Text:
    """device vs reference (a firmware bug if greedy), then torch vs reference (informational)."""
    text = Text()
    tail = " (stopped)" if stopped else ""
    if div is None:
        text.append(f"device = reference for all {n} tokens{tail}", style="bold green")
    else:
        label = "BUG (greedy must match): " if params.temperature == 0 else "MISMATCH: "
        text.append(label + div.describe(), style="bold red")
    text.append("   ")
    if float_div is None:
        text.append(f"torch = reference{tail}", style="green")
    else:
        text.append("torch vs reference (quantization): " + float_div.describe(), style="yellow")
    return text
