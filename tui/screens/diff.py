"""Diff screen: two or more experiments side by side (config keys, metrics against a baseline,
loss curves overlaid).

(Placeholder until the diff screen lands: the constructor is the contract the home screen uses.)
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from engine.store.experiments import Store


class DiffScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="diff.back")]

    def __init__(self, store: Store, names: list[str]) -> None:
        super().__init__()
        self.store = store
        self.names = list(names)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(" vs ".join(self.names), id="title")
        yield Footer()
