"""HelpScreen: every key of the screen it was opened from, with what it does (the bindings'
descriptions and tooltips: the footer, this screen and the command palette read one list)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ..commands import key_label, keyed_actions

ABOUT = ("tinylm: corpus → tokenizer → tiny LM → quantized blob → board. Each experiment is a "
         "folder; training runs in its own process and keeps going when the app closes. "
         "ctrl+p finds any command by name.")


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,question_mark,q,f1", "dismiss", "Close", id="help.close",
                        key_display="esc")]

    def __init__(self, below: Screen[Any]) -> None:
        super().__init__()
        self.below = below
        # (key, what, more): read once, as the screen below offers them now
        self.rows = [(key_label(b), b.description, b.tooltip) for _, b in keyed_actions(below)]

    def compose(self) -> ComposeResult:
        title = getattr(self.below, "HELP_TITLE", type(self.below).__name__)
        with VerticalScroll(id="dialog"):
            yield Static(Text(f"Keys — {title}", style="bold"), id="title")
            yield Static(self._keys_table(), id="keys")
            yield Static(ABOUT, id="about")

    def _keys_table(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        table.add_column(style="bold cyan", no_wrap=True, width=8)
        table.add_column(no_wrap=True, width=16)
        table.add_column(style="dim", ratio=1)
        for row in self.rows:
            table.add_row(*row)
        return table

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
