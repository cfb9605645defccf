"""ConfigFormScreen: what the new-experiment wizard and the config editor share.

Both are a ConfigForm checked as you type by the engine's own rules (after a short pause,
DEBOUNCE_S), the fit meter beside it (above it below 100 columns), a verdict line, a button that
stays disabled while anything is invalid, a worker that writes, and a question before leaving
typed-in work. The two screens differ only in what they check besides the config (a name, the
corpus on disk), what they write (a new folder, a config.toml) and what they return.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Static

from engine.config.budget import compute
from engine.config.schema import ExperimentConfig
from engine.config.workspace import Workspace

from ..messages import ActionDone
from ..widgets.config_form import ConfigForm
from ..widgets.fit_meter import BREAKPOINTS, FitMeter
from .base import ReportsWorkerErrors
from .confirm import ConfirmScreen

DEBOUNCE_S = 0.15  # a check is a few milliseconds: on the loop after the pause, not in a worker


def corpus_problem(ws: Workspace, cfg: ExperimentConfig | None) -> dict[str, list[str]]:
    """The config rules do not look at the disk; training would fail on a missing corpus."""
    if cfg is None or ws.resolve(cfg.data.corpus).is_file():
        return {}
    return {"data.corpus": [f"no such file (relative paths start at the workspace, {ws.root})"]}


class ConfigFormScreen(ReportsWorkerErrors, Screen[Any]):
    """Subclasses compose a ConfigForm, a FitMeter, a `#verdict` Static and the `SUBMIT` button,
    implement `revalidate()` (ending in `show_check`) and post ActionDone from their writer."""

    HORIZONTAL_BREAKPOINTS = BREAKPOINTS  # below 100 columns the meter goes above the form
    BINDINGS: ClassVar = [
        # priority: handled as the key arrives, so keys typed right after a tab (fast typing, a
        # paste, tmux send-keys) go to the next field, not the one tab is leaving
        Binding("tab", "app.focus_next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", show=False, priority=True),
    ]
    SUBMIT = "#save"  # the button disabled while anything is invalid
    LOST_WORK = "your edits"  # what quitting would lose, for the app's quit question
    LEAVE_QUESTION = ("Leave without saving?", "Leave")  # question, the button that leaves

    def __init__(self) -> None:
        super().__init__()
        self.config: ExperimentConfig | None = None  # the valid config, None while invalid
        self.problems: dict[str, list[str]] = {}
        self._timer: Timer | None = None
        self._pristine: dict[str, object] | None = None  # the form as opened; None once written

    @property
    def form(self) -> ConfigForm:
        return self.query_one(ConfigForm)

    def snapshot(self) -> dict[str, object]:
        """What counts as the user's typing, for `unsaved_changes`."""
        return self.form.raw()

    def on_mount(self) -> None:
        self.revalidate()
        self._pristine = self.snapshot()

    def revalidate(self) -> None:
        raise NotImplementedError

    # ---- checking --------------------------------------------------------------------------------

    def check_later(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._check_now)

    @on(ConfigForm.Edited)
    def _edited(self) -> None:
        self.check_later()

    def _check_now(self) -> None:
        self._timer = None
        self.revalidate()

    def check_pending(self) -> None:
        """A keystroke still waiting for its check (ctrl+s typed fast): check it now."""
        if self._timer is not None:
            self._timer.stop()
            self._check_now()

    def show_check(self, cfg: ExperimentConfig | None, problems: dict[str, list[str]],
                   verdict_ok: str, verdict_bad: str, no_budget: str = "") -> None:
        """Problems inline in the form, the budget for a valid config, the verdict line, and the
        submit button enabled only when nothing is wrong."""
        self.problems = problems
        self.config = cfg if not problems else None
        self.form.show_problems(problems)
        self.query_one(FitMeter).show(compute(cfg) if cfg is not None else None, no_budget)
        count = sum(len(v) for v in problems.values())
        verdict = verdict_ok if not count else verdict_bad.format(
            count=count, s="s" if count > 1 else "")
        self.query_one("#verdict", Static).update("\n".join([verdict, *problems.get("", [])]))
        self.query_one(self.SUBMIT, Button).disabled = bool(count)

    # ---- leaving ---------------------------------------------------------------------------------

    def result_of(self, message: ActionDone) -> object:
        """What the screen returns after its writer succeeded."""
        return True

    @on(ActionDone)
    def _written(self, message: ActionDone) -> None:
        message.stop()
        self._pristine = None
        self.app.notify(message.text)
        self.dismiss(self.result_of(message))

    def unsaved_changes(self) -> str | None:
        """For the app's quit: a form someone typed into is work that would be lost."""
        if self._pristine is not None and self.snapshot() != self._pristine:
            return self.LOST_WORK
        return None

    def leave(self, result: object) -> None:
        """Back, asking first when typed-in work would be lost."""
        if self.unsaved_changes():
            question, yes = self.LEAVE_QUESTION
            self.app.push_screen(ConfirmScreen(question, yes, "Keep editing"),
                                 lambda ok: ok and self.dismiss(result))
        else:
            self.dismiss(result)
