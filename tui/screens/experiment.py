"""Experiment screen: one experiment's Overview, Training, Samples and Quantize tabs.

(Placeholder until the experiment screen lands: the constructor is the contract the home screen uses.)
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from engine.store.experiments import Store


class ExperimentScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="experiment.back")]

    def __init__(self, store: Store, name: str) -> None:
        super().__init__()
        self.store = store
        self.exp_name = name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.exp_name, id="title")
        yield Footer()
