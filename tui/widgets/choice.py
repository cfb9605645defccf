"""ChoiceField: one value out of a few, cycled with ←/→ (or space, or a click).

Why not Select: a Select is half a dozen widgets with an overlay list, and a form with several of
them took most of a second to mount on a busy 2-core machine; config choices have 2-4 values, for
which cycling in place is as quick to use and one widget to build."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class ChoiceField(Widget, can_focus=True):
    DEFAULT_CSS = """
    ChoiceField { height: 1; width: 22; background: $boost; }
    ChoiceField:focus { background: $accent 40%; }
    """
    BINDINGS = [
        Binding("left,h", "step(-1)", "Previous", show=False),
        Binding("right,l,space", "step(1)", "Next", show=False),
    ]

    value: reactive[Any] = reactive(None, init=False)

    class Changed(Message):
        def __init__(self, field: "ChoiceField", value: Any) -> None:
            super().__init__()
            self.field = field
            self.value = value

        @property
        def control(self) -> "ChoiceField":
            return self.field

    def __init__(self, choices: Sequence[Any], value: Any, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.choices = list(choices)
        self.set_reactive(ChoiceField.value, value)

    def render(self) -> Text:
        text = Text("‹ ", style="dim")
        text.append(str(self.value).lower() if isinstance(self.value, bool) else str(self.value))
        text.append(" ›", style="dim")
        return text

    def action_step(self, delta: int) -> None:
        i = self.choices.index(self.value) if self.value in self.choices else -1
        self.value = self.choices[(i + delta) % len(self.choices)]

    def on_click(self) -> None:
        self.action_step(1)

    def watch_value(self, value: Any) -> None:
        self.post_message(self.Changed(self, value))
