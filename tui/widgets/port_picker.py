"""PortPicker: the ports a board can be on (serial ports, pseudo ports) plus a box to type one.

Why a list and a box: people pick a plugged-in board from a list they recognise (the USB bridge's
name), but a qemu socket or a symlinked /dev/serial/by-id path has to be typed. Either way the
picker posts one message, `Chosen`; the panel decides what connecting means.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from engine.errors import UserError

from ..workers.ports import PortChoice, parse_typed


class PortPicker(Vertical):
    DEFAULT_CSS = """
    PortPicker { height: auto; }
    PortPicker > OptionList { height: auto; max-height: 7; }
    PortPicker > Input { margin-top: 0; }
    """

    @dataclass
    class Chosen(Message):
        """Enter on a port in the list, or a typed port submitted."""
        choice: PortChoice

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.choices: list[PortChoice] = []

    def compose(self) -> ComposeResult:
        yield OptionList(id="port-list", compact=True)
        yield Input(placeholder="or type: /dev/ttyUSB0, socket://host:port", id="port-typed",
                    compact=True)

    def set_ports(self, choices: list[PortChoice]) -> None:
        """Replace the list, keeping the highlighted port if it is still there (the same list
        again, as the panel's periodic refresh mostly finds, changes nothing)."""
        if list(choices) == self.choices:
            return
        options = self.query_one(OptionList)
        current = self.highlighted
        self.choices = list(choices)
        options.clear_options()
        options.add_options([Option(c.label, id=c.value) for c in self.choices])
        values = [c.value for c in self.choices]
        if current is not None and current.value in values:
            options.highlighted = values.index(current.value)
        elif self.choices:
            options.highlighted = 0

    @property
    def highlighted(self) -> PortChoice | None:
        options = self.query_one(OptionList)
        i = options.highlighted
        return self.choices[i] if i is not None and 0 <= i < len(self.choices) else None

    def select(self, value: str) -> None:
        """Highlight a port by value (no connect)."""
        for i, c in enumerate(self.choices):
            if c.value == value:
                self.query_one(OptionList).highlighted = i

    def focus_list(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected, "#port-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.choices[event.option_index]))

    @on(Input.Submitted, "#port-typed")
    def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            choice = parse_typed(event.value)
        except UserError as e:
            self.notify(str(e), title="port", severity="error")
            return
        self.post_message(self.Chosen(choice))
