"""SamplePanel: a prompt box, the sampling knobs, and the text as it streams in.

Knob values are checked by the engine's own rules (engine.infer.sample.sampling_problems, the
same the CLI refuses with) as they are typed; what is wrong shows under the knobs, and a generation
is not requested while anything is. The panel posts `GenerateRequested`; the screen runs it and
feeds the text back with `begin` / `append` / `end`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Static

from engine.infer.params import SAMPLING_FIELDS, SamplingParams, sampling_problems

LABELS = {"temperature": "temperature", "top_k": "top-k", "top_p": "top-p",
          "repetition_penalty": "rep. penalty", "seed": "seed", "max_tokens": "max tokens"}
TYPES = {f.name: f.type for f in fields(SamplingParams)}  # "float" / "int" (annotations are strings)


def parse_knob(name: str, text: str) -> tuple[float | int | None, str | None]:
    """(value, None) or (None, why it is not a usable value for this knob)."""
    want_int = TYPES[name] == "int"
    try:
        value: float | int = int(text) if want_int else float(text)
    except ValueError:
        return None, f"{text.strip()!r} is not {'a whole number' if want_int else 'a number'}"
    problem = sampling_problems(replace(SamplingParams(), **{name: value})).get(name)
    return (None, problem) if problem else (value, None)


class KnobValidator(Validator):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def validate(self, value: str) -> ValidationResult:
        _, problem = parse_knob(self.name, value)
        return self.failure(problem) if problem else self.success()


class SamplePanel(Vertical):
    DEFAULT_CSS = """
    SamplePanel { height: 1fr; }
    SamplePanel #prompt { margin: 0 0 1 0; }
    SamplePanel #knobs { height: auto; }
    SamplePanel .knob { width: 1fr; height: auto; }
    SamplePanel .knob Label { padding: 0 1; color: $text-muted; }
    SamplePanel .knob Input { width: 1fr; }
    SamplePanel #knob-problems { height: auto; color: $error; padding: 0 1; }
    SamplePanel #sample-scroll { height: 1fr; border: round $panel; padding: 0 1; }
    SamplePanel #sample-status { height: 1; color: $text-muted; padding: 0 1; }
    """

    @dataclass
    class GenerateRequested(Message):
        prompt: str
        params: SamplingParams

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text: list[str] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="prompt (Enter generates; empty = from the start of a story)",
                    id="prompt")
        defaults = SamplingParams()
        with Horizontal(id="knobs"):
            for name in SAMPLING_FIELDS:
                with Vertical(classes="knob"):
                    yield Label(LABELS[name])
                    yield Input(str(getattr(defaults, name)), id=f"knob-{name}",
                                validators=[KnobValidator(name)], validate_on=["changed"])
        yield Static("", id="knob-problems")
        with VerticalScroll(id="sample-scroll"):
            yield Static("", id="sample-output", markup=False)
        yield Static("g generates from the prompt; Esc or x stops", id="sample-status")

    # ---- knobs ---------------------------------------------------------------------------------------

    def problems(self) -> dict[str, str]:
        out = {}
        for name in SAMPLING_FIELDS:
            _, problem = parse_knob(name, self.query_one(f"#knob-{name}", Input).value)
            if problem:
                out[name] = problem
        return out

    def params(self) -> SamplingParams | None:
        """The knobs as SamplingParams, or None while any is invalid."""
        values = {}
        for name in SAMPLING_FIELDS:
            value, problem = parse_knob(name, self.query_one(f"#knob-{name}", Input).value)
            if problem:
                return None
            values[name] = value
        return SamplingParams(**values)

    def _show_problems(self) -> dict[str, str]:
        problems = self.problems()
        self.query_one("#knob-problems", Static).update(
            "\n".join(f"{LABELS[k]}: {v}" for k, v in problems.items()))
        return problems

    @on(Input.Changed)
    def _knob_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("knob-"):
            self._show_problems()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def submit(self) -> bool:
        """Post GenerateRequested if every knob is valid (else show why not); True if posted."""
        if self._show_problems():
            return False
        params = self.params()
        assert params is not None
        self.post_message(self.GenerateRequested(self.query_one("#prompt", Input).value, params))
        return True

    def focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    # ---- output --------------------------------------------------------------------------------------

    def begin(self) -> None:
        self._text = []
        self._render_text()
        self.set_status("generating… (Esc or x stops)")

    def append(self, text: str) -> None:
        self._text.append(text)
        self._render_text()

    def end(self, note: str) -> None:
        self.set_status(note)

    def set_status(self, note: str) -> None:
        self.query_one("#sample-status", Static).update(note)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def _render_text(self) -> None:
        self.query_one("#sample-output", Static).update(Text(self.text))
        self.query_one("#sample-scroll", VerticalScroll).scroll_end(animate=False)
