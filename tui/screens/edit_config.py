"""Edit config: every key of an experiment's config.toml as a form, checked as you type by the
engine's rules, with the fit meter; ctrl+s saves (atomically, through the store), esc leaves.

A form rather than $EDITOR: the same inline messages and budget as the wizard, and nothing to
suspend the terminal for. Refused while the experiment runs (the run read its config at start)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Header, Static

from engine.config.schema import ExperimentConfig
from engine.config.workspace import Workspace
from engine.store.experiments import Store

from ..messages import ActionDone
from ..widgets.config_form import ConfigForm, build_config
from ..widgets.fit_meter import FitMeter
from ..widgets.key_bar import KeyBar
from .config_screen import ConfigFormScreen, corpus_problem


class EditConfigScreen(ConfigFormScreen):
    CSS_PATH = "edit_config.tcss"
    HELP_TITLE = "Edit config"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="edit.save",
                tooltip="Write config.toml (refused while a field is invalid)"),
        Binding("escape", "cancel", "Back", id="edit.cancel", tooltip="Leave without saving"),
    ]
    SUBMIT = "#save"

    def __init__(self, store: Store, workspace: Workspace, name: str) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.exp_name = name
        self.base = store.load(name).config
        self.config = self.base
        self.LOST_WORK = f"your edits to {name}'s config"

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ConfigForm(self.base, id="form")
            with Vertical(id="right"):
                yield Static(f"config of {self.exp_name}", id="title")
                yield FitMeter(id="meter")
                yield Static("", id="verdict")
                with Horizontal(id="buttons"):
                    yield Button("Save (ctrl+s)", variant="success", id="save")
                    yield Button("Back (esc)", id="cancel")
        yield KeyBar()

    def revalidate(self) -> None:
        cfg, problems = build_config(self.base, self.form.raw())
        problems.update(corpus_problem(self.workspace, cfg))
        self.show_check(cfg, problems, "valid: ctrl+s saves", "{count} problem{s} to fix")

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.check_pending()
        if self.config is None:
            self.notify("fix the fields marked red first", severity="warning")
            return
        self._save(self.config)

    @work(thread=True, exclusive=True, exit_on_error=False, name="save config")
    def _save(self, cfg: ExperimentConfig) -> None:
        exp = self.store.load(self.exp_name)
        self.store.refuse_if_running(exp, "change the config of")
        exp.save_config(cfg)
        self.post_message(ActionDone(f"{self.exp_name}: config saved"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.leave(False)
