"""ChatPanel: the sampling knobs, one prompt box, the three columns, the "Flash it" action when
the board holds another model, and the turns already recorded in chats/*.jsonl.

Why it is split this way: whether a turn may run (a board connected, holding this experiment's
blob) is the Device panel's call, so the prompt only posts `Send`; the panel then hands `run_turn`
the board session, and the turn runs here in a thread worker (engine chat_turn through
tui/workers/device_jobs.py), its tokens coming back in batches, its end posted as `TurnEnded`.
The knobs are validated here, so a bad value is named before anything runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from engine.config.workspace import Workspace
from engine.errors import TinyLMError, UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Store

from ..workers.board_link import DeviceSession
from ..workers.device_jobs import TokenBatcher, chat_on
from .chat_columns import ChatColumns
from .device_messages import ChatFinished, ChatTokens

BATCH_S = 0.03  # tokens reach the columns at most this often (the first one at once)

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

    @dataclass
    class TurnEnded(Message):
        result: Any = None  # engine TurnResult; None when the turn failed or was refused

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.turns: list[dict[str, Any]] = []
        self.running = False
        self._stop = threading.Event()

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
        button = self.query_one("#chat-flash-it", Button)
        button.set_class(flash_it, "shown")
        if flash_it:  # out of the prompt, where f would type: enter or f flashes, esc leaves
            self.call_after_refresh(button.focus)

    def clear_refusal(self) -> None:
        self.query_one("#chat-flash-it").remove_class("shown")

    def set_enabled(self, on: bool, why: str = "") -> None:
        prompt = self.query_one("#chat-prompt", Input)
        prompt.disabled = not on
        prompt.placeholder = ("prompt — enter sends, esc stops all three" if on else
                              f"chat is off: {why}")

    # ---- a turn (a worker) -----------------------------------------------------------------------

    def run_turn(self, session: DeviceSession, store: Store, workspace: Workspace, name: str,
                 prompt: str, params: SamplingParams, quant: str) -> None:
        self.running = True
        self._stop.clear()
        self.clear_refusal()
        self.columns.set_labels(quant, session.choice.value)
        self.columns.begin(prompt)
        self._turn(session, store, workspace, name, prompt, params, quant)

    def on_unmount(self) -> None:
        self._stop.set()  # a worker thread outlives its widget unless told to end

    def stop(self) -> None:
        """Esc: all three streams end at their next token (the board gets STOP)."""
        if self.running:
            self._stop.set()
            self.columns.verdict(Text("stopping all three streams…", style="yellow"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-chat")
    def _turn(self, session: DeviceSession, store: Store, workspace: Workspace, name: str,
              prompt: str, params: SamplingParams, quant: str) -> None:
        batch = TokenBatcher(lambda events: self.post_message(ChatTokens(events)), BATCH_S)
        try:
            result = chat_on(session, store, workspace, name, prompt, params, quant,
                             on_event=batch, should_stop=self._stop.is_set)
        except UserError as e:
            batch.flush()
            self.post_message(ChatFinished(error=str(e), flash_it="Flash it" in str(e)))
        except (TinyLMError, OSError) as e:
            batch.flush()
            self.post_message(ChatFinished(error=str(e)))
        else:
            batch.flush()
            self.post_message(ChatFinished(result=result))

    @on(ChatTokens)
    def _tokens(self, message: ChatTokens) -> None:
        message.stop()
        self.columns.add(message.events)

    @on(ChatFinished)
    def _finished(self, message: ChatFinished) -> None:
        message.stop()
        self.running = False
        if message.result is not None:
            self.columns.finish(message.result)
        else:
            self.refuse(message.error, message.flash_it)
        self.post_message(self.TurnEnded(message.result))

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:  # not a TinyLMError: a bug; the parent notifies
            self.running = False
            self.refuse(f"chat failed: {event.worker.error}", False)
            self.post_message(self.TurnEnded(None))

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
