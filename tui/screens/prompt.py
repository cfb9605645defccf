"""PromptScreen: ask for one value (a clone's name, tags, a note), checked as it is typed.

`check(text)` returns a problem to show under the field (None = fine); enter is refused while there
is one. Dismisses with the text, or None on escape. `multiline` gives a text area (notes), saved
with ctrl+s since enter there is a new line."""

from __future__ import annotations

from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static, TextArea

Check = Callable[[str], "str | None"]


class PromptScreen(ModalScreen["str | None"]):
    CSS_PATH = "prompt.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="prompt.cancel"),
        Binding("ctrl+s", "submit", "Save", id="prompt.save"),
    ]

    def __init__(self, title: str, value: str = "", *, hint: str = "", check: Check | None = None,
                 multiline: bool = False) -> None:
        super().__init__()
        self.title_text, self.value, self.hint = title, value, hint
        self.check = check or (lambda text: None)
        self.multiline = multiline

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="title")
            if self.multiline:
                yield TextArea(self.value, id="value", soft_wrap=True)
            else:
                yield Input(self.value, id="value", select_on_focus=False)
            yield Static(self.hint, id="hint")
            yield Static("", id="problem")

    def on_mount(self) -> None:
        self.query_one("#value").focus()
        self._show_problem(self.text)

    @property
    def text(self) -> str:
        field = self.query_one("#value")
        return field.text if isinstance(field, TextArea) else field.value  # type: ignore[attr-defined]

    def _show_problem(self, text: str) -> str | None:
        problem = self.check(text)
        self.query_one("#problem", Static).update(problem or "")
        self.query_one("#problem").display = bool(problem)
        return problem

    @on(Input.Changed)
    @on(TextArea.Changed)
    def _changed(self) -> None:
        self._show_problem(self.text)

    @on(Input.Submitted)
    def action_submit(self) -> None:
        if self._show_problem(self.text) is None:
            self.dismiss(self.text)

    def action_cancel(self) -> None:
        self.dismiss(None)
