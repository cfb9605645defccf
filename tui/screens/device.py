"""Device screen: the Device tab on a screen of its own (`D` from the experiments list).

Everything lives in DevicePanel (tui/widgets/device_panel.py), so the experiment screen can host
the same panel in a tab; this screen adds the header, the footer and Esc to go back.

    python -m tui.screens.device [-w WORKSPACE] [NAME]    # the screen alone, for a terminal try-out
"""

from __future__ import annotations

import argparse
from typing import Callable

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header

from engine.config.workspace import Workspace, load_workspace
from engine.store.experiments import Store

from ..widgets.binding_commands import BindingCommands
from ..widgets.device_panel import DevicePanel
from ..widgets.key_bar import KeyBar
from ..workers.ports import PortChoice


class DeviceScreen(Screen):
    CSS_PATH = "device.tcss"
    COMMANDS = Screen.COMMANDS | {BindingCommands}
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="device.back")]

    def __init__(self, store: Store, workspace: Workspace, name: str | None = None, *,
                 ports: Callable[[], list[PortChoice]] | None = None) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.exp_name = name
        self.ports = ports  # where the port list comes from (None: the workspace's; tests pass one)
        self.sub_title = f"device · {name}" if name else "device"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DevicePanel(self.store, self.workspace, self.exp_name, ports=self.ports,
                          id="device-panel")
        yield KeyBar()

    @on(DevicePanel.ExperimentChosen)
    def _experiment_chosen(self, message: DevicePanel.ExperimentChosen) -> None:
        self.exp_name = message.name
        self.sub_title = f"device · {message.name}"

    @property
    def panel(self) -> DevicePanel:
        return self.query_one(DevicePanel)


class _DeviceApp(App):
    """The screen alone on a workspace (the app wires `D` to it)."""

    BINDINGS = [Binding("q", "quit", "Quit", id="app.quit")]

    def __init__(self, workspace: Workspace, name: str | None) -> None:
        super().__init__()
        self.workspace, self.exp_name = workspace, name

    def on_mount(self) -> None:
        self.push_screen(DeviceScreen(Store(self.workspace.experiments), self.workspace,
                                      self.exp_name))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tui.screens.device")
    p.add_argument("-w", "--workspace", help="workspace folder (default: $TINYLM_WORKSPACE or .)")
    p.add_argument("name", nargs="?", help="the experiment to deploy")
    args = p.parse_args()
    _DeviceApp(load_workspace(args.workspace), args.name).run()


if __name__ == "__main__":
    main()
