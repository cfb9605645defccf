"""Edit config: every key of an experiment's config.toml as a form, checked as you type by the
engine's rules, with the fit meter; ctrl+s saves (atomically, through the store), esc leaves.

A form rather than $EDITOR: the same inline messages and budget as the wizard, and nothing to
suspend the terminal for. Refused while the experiment runs (the run read its config at start)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Header, Static

from engine.config.budget import compute
from engine.config.schema import ExperimentConfig
from engine.config.workspace import Workspace
from engine.store.experiments import Store

from ..messages import ActionDone
from ..widgets.config_form import ConfigForm, build_config
from ..widgets.fit_meter import BREAKPOINTS, FitMeter
from ..widgets.key_bar import KeyBar
from .base import ReportsWorkerErrors
from .confirm import ConfirmScreen
from .wizard import DEBOUNCE_S, corpus_problem


class EditConfigScreen(ReportsWorkerErrors, Screen[bool]):
    HORIZONTAL_BREAKPOINTS = BREAKPOINTS  # below 100 columns the meter goes above the form
    CSS_PATH = "edit_config.tcss"
    HELP_TITLE = "Edit config"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="edit.save",
                tooltip="Write config.toml (refused while a field is invalid)"),
        Binding("escape", "cancel", "Back", id="edit.cancel", tooltip="Leave without saving"),
        # priority: keys typed right after a tab go to the next field (see wizard.py)
        Binding("tab", "app.focus_next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", show=False, priority=True),
    ]

    def __init__(self, store: Store, workspace: Workspace, name: str) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.exp_name = name
        self.base = store.load(name).config
        self.config: ExperimentConfig | None = self.base
        self.problems: dict[str, list[str]] = {}
        self._timer: Timer | None = None
        self._saved_raw: dict[str, object] | None = None

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

    @property
    def form(self) -> ConfigForm:
        return self.query_one(ConfigForm)

    def on_mount(self) -> None:
        self.revalidate()
        self._saved_raw = self.form.raw()

    @on(ConfigForm.Edited)
    def _edited(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self.revalidate)

    def revalidate(self) -> None:
        self._timer = None
        cfg, problems = build_config(self.base, self.form.raw())
        problems.update(corpus_problem(self.workspace, cfg))
        self.config = cfg if not problems else None
        self.problems = problems
        self.form.show_problems(problems)
        meter = self.query_one(FitMeter)
        if cfg is not None:
            meter.show(compute(cfg))
        else:
            meter.show(None)
        count = sum(len(v) for v in problems.values())
        lines = ["valid: ctrl+s saves" if not count else f"{count} problem(s) to fix"]
        self.query_one("#verdict", Static).update("\n".join(lines + problems.get("", [])))
        self.query_one("#save", Button).disabled = bool(count)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self.revalidate()
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

    @on(ActionDone)
    def _saved(self, message: ActionDone) -> None:
        message.stop()
        self._saved_raw = None
        self.app.notify(message.text)
        self.dismiss(True)

    def unsaved_changes(self) -> str | None:
        if self._saved_raw is not None and self.form.raw() != self._saved_raw:
            return f"your edits to {self.exp_name}'s config"
        return None

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if self.unsaved_changes():
            self.app.push_screen(ConfirmScreen("Leave without saving?", "Leave", "Keep editing"),
                                 lambda ok: ok and self.dismiss(False))
        else:
            self.dismiss(False)
