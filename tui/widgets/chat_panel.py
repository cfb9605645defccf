"""ChatPanel: the sampling knobs, one prompt box, the three columns, the "Flash it" action when
the board holds another model, and the turns already recorded in chats/*.jsonl.

Why the panel only posts: running a turn needs the board's port and torch, which belong to the
Device panel's workers; this widget says what the user asked (`Send`, `FlashIt`) and shows what
it is given. The knobs are validated here, so a bad value is named before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from engine.errors import UserError
from engine.infer.sample import SamplingParams

from .chat_columns import ChatColumns

# knob id -> (label, SamplingParams field, parser, check, what a good value is)
KNOBS: dict[str, tuple[str, str, type, Any, str]] = {
    "temp": ("temp", "temperature", float, lambda v: v >= 0, "≥ 0 (0 = greedy)"),
    "topk": ("top-k", "top_k", int, lambda v: v >= 0, "an integer ≥ 0 (0 = off)"),
    "topp": ("top-p", "top_p", float, lambda v: 0 <= v <= 1, "between 0 and 1 (0 or 1 = off)"),
    "rep": ("rep", "repetition_penalty", float, lambda v: v > 0, "> 0 (1 = off)"),
    "seed": ("seed", "seed", int, lambda v: v >= 0, "an integer ≥ 0"),
    "max": ("max", "max_tokens", int, lambda v: 1 <= v <= 1024, "between 1 and 1024"),
}
DEFAULTS = SamplingParams(max_tokens=64)


class SamplingKnobs(Horizontal):
    DEFAULT_CSS = """
    SamplingKnobs { height: 1; }
    SamplingKnobs > Label { padding: 0 1 0 1; color: $text-muted; }
    SamplingKnobs > Input { width: 8; }
    """

    def compose(self) -> ComposeResult:
        for knob, (label, attr, _, _, _) in KNOBS.items():
            yield Label(label)
            yield Input(str(getattr(DEFAULTS, attr)), id=f"knob-{knob}", compact=True)

    def params(self) -> SamplingParams:
        values: dict[str, Any] = {}
        for knob, (label, attr, parse, ok, good) in KNOBS.items():
            raw = self.query_one(f"#knob-{knob}", Input).value.strip()
            try:
                v = parse(raw)
            except ValueError:
                v = None
            if v is None or not ok(v):
                raise UserError(f"{label} = {raw!r}: must be {good}")
            values[attr] = v
        return SamplingParams(**values)

    def set(self, **values: Any) -> None:
        """Set knobs by SamplingParams field name (tests, and replaying a turn's params)."""
        by_attr = {attr: knob for knob, (_, attr, _, _, _) in KNOBS.items()}
        for attr, v in values.items():
            self.query_one(f"#knob-{by_attr[attr]}", Input).value = str(v)


class ChatPanel(Vertical):
    DEFAULT_CSS = """
    ChatPanel { height: 1fr; }
    ChatPanel > #chat-top { height: auto; }
    ChatPanel #chat-prompt { width: 1fr; }
    ChatPanel #chat-flash-it { display: none; min-width: 16; height: 1; border: none; }
    ChatPanel #chat-flash-it.shown { display: block; }
    ChatPanel > #chat-history { height: 5; border-top: solid $primary-darken-2; }
    """

    @dataclass
    class Send(Message):
        prompt: str
        params: SamplingParams

    class FlashIt(Message):
        """The board holds another model: flash this experiment's blob."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.turns: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield SamplingKnobs()
        with Horizontal(id="chat-top"):
            yield Input(placeholder="prompt — enter sends, esc stops all three",
                        id="chat-prompt", compact=True)
            yield Button("Flash it (f)", id="chat-flash-it", variant="error", compact=True)
        yield ChatColumns(id="chat-columns")
        yield OptionList(id="chat-history", compact=True)

    @property
    def columns(self) -> ChatColumns:
        return self.query_one(ChatColumns)

    @property
    def knobs(self) -> SamplingKnobs:
        return self.query_one(SamplingKnobs)

    def focus_prompt(self) -> None:
        self.query_one("#chat-prompt", Input).focus()

    @on(Input.Submitted, "#chat-prompt")
    def _send(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            params = self.knobs.params()
        except UserError as e:
            self.columns.fail(str(e))
            return
        if not event.value.strip():
            self.columns.fail("type a prompt first")
            return
        self.post_message(self.Send(event.value, params))

    @on(Button.Pressed, "#chat-flash-it")
    def _flash_it(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.FlashIt())

    def refuse(self, message: str, flash_it: bool) -> None:
        """A turn that was not run; with `flash_it`, the button that fixes it."""
        self.columns.fail(message)
        self.query_one("#chat-flash-it").set_class(flash_it, "shown")

    def clear_refusal(self) -> None:
        self.query_one("#chat-flash-it").remove_class("shown")

    def set_enabled(self, on: bool, why: str = "") -> None:
        prompt = self.query_one("#chat-prompt", Input)
        prompt.disabled = not on
        prompt.placeholder = ("prompt — enter sends, esc stops all three" if on else
                              f"chat is off: {why}")

    # ---- history ---------------------------------------------------------------------------------

    def set_turns(self, turns: list[dict[str, Any]]) -> None:
        """The recorded turns (oldest first); the newest is highlighted."""
        self.turns = list(turns)
        history = self.query_one("#chat-history", OptionList)
        history.clear_options()
        history.add_options([Option(_turn_label(t)) for t in self.turns])
        if self.turns:
            history.highlighted = len(self.turns) - 1

    @on(OptionList.OptionSelected, "#chat-history")
    def _replay(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.columns.show_record(self.turns[event.option_index])


def _turn_label(rec: dict[str, Any]) -> Text:
    when = rec.get("time", "")[11:16]
    d = rec.get("divergence")
    n = rec.get("streams", {}).get("device", {}).get("tokens", 0)
    text = Text(f"{when} ", style="dim")
    text.append(repr(rec.get("prompt", ""))[:40])
    text.append(f"  {rec.get('quant', '')} {n} tokens  ", style="dim")
    if d:
        text.append(f"diverged at {d['index']}", style="red")
    else:
        text.append("device = reference", style="green")
    return text
