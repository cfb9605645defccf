"""TinyLMApp: the thin shell that wires screens to a workspace (the screens do the work)."""

from __future__ import annotations

import argparse
import sys

from textual.app import App

from engine.config.workspace import Workspace, load_workspace
from engine.errors import TinyLMError
from engine.store.experiments import Store

from .screens.experiments import ExperimentsScreen


class TinyLMApp(App):
    TITLE = "tinylm"

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.store = Store(workspace.experiments)
        self.sub_title = str(workspace.root)

    def on_mount(self) -> None:
        self.push_screen(ExperimentsScreen(self.store))


def make_app(workspace: str | None = None) -> TinyLMApp:
    """Built the same way by the console script and the tests."""
    return TinyLMApp(load_workspace(workspace))


def run() -> None:
    parser = argparse.ArgumentParser(prog="tinylm-tui")
    parser.add_argument("-w", "--workspace", help="workspace folder (default: $TINYLM_WORKSPACE or .)")
    args = parser.parse_args()
    try:
        app = make_app(args.workspace)
    except TinyLMError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    app.run()


if __name__ == "__main__":
    run()
