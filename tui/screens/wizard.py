"""New-experiment wizard: a preset, a name, the config keys that matter, and a live fit meter.

Every keystroke re-validates after a short pause (config_screen.DEBOUNCE_S): the engine's own
validation (the messages name the key, the value and a fix) and the board budget (flash and RAM
bars, advice). Create is refused
while anything is invalid; the store then creates the folder in a worker and the screen dismisses
with the new name, which the home table selects.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Header, Input, Label, Static

from engine.config.presets import PRESETS, describe, preset_config
from engine.config.schema import ExperimentConfig, apply_overrides
from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.store.experiments import Store, check_name

from ..messages import ActionDone
from ..widgets.choice import ChoiceField
from ..widgets.config_form import ConfigForm, build_config
from ..widgets.fit_meter import FitMeter
from ..widgets.key_bar import KeyBar
from .config_screen import ConfigFormScreen, corpus_problem

WIZARD_KEYS = [
    "device.board", "model.arch", "model.dim", "model.n_layers", "model.n_heads",
    "model.n_kv_heads", "model.hidden_dim", "tokenizer.vocab_size", "model.seq_len",
    "device.context_len", "quant.method", "quant.int_attention", "train.max_steps",
    "train.batch_size", "train.lr", "train.max_minutes", "data.corpus",
]


def outside_problems(store: Store, ws: Workspace, name: str,
                     cfg: ExperimentConfig | None) -> dict[str, list[str]]:
    """What the config rules cannot see: the name (free, valid) and the corpus (on disk)."""
    problems = corpus_problem(ws, cfg)
    try:
        check_name(name)
        if (store.root / name).exists():
            problems["name"] = [f"'{name}' exists already; pick another name"]
    except UserError as e:
        problems["name"] = [str(e) if name else "give the experiment a name"]
    return problems


class NewExperimentScreen(ConfigFormScreen):
    CSS_PATH = "wizard.tcss"
    HELP_TITLE = "New experiment"
    BINDINGS = [
        Binding("ctrl+s", "create", "Create", id="wizard.create",
                tooltip="Create the experiment (refused while a field is invalid)"),
        Binding("escape", "cancel", "Cancel", id="wizard.cancel", tooltip="Back, creating nothing"),
    ]
    SUBMIT = "#create"
    LOST_WORK = "the new experiment you are filling in"
    LEAVE_QUESTION = ("Drop this new experiment?", "Drop")

    def __init__(self, store: Store, workspace: Workspace) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.preset = workspace.default_preset
        self.base = self._preset_config(self.preset)

    def _preset_config(self, preset: str) -> ExperimentConfig:
        cfg = preset_config(preset)
        if preset == self.workspace.default_preset:  # the workspace's board, like `tinylm new`
            cfg = apply_overrides(cfg, [f"device.board={self.workspace.default_board}"])
        return cfg

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with Horizontal(classes="row"):
                    yield Label("preset", classes="key")
                    yield ChoiceField(list(PRESETS), self.preset, id="preset")
                yield Static(describe(self.preset), id="about")
                with Horizontal(classes="row", id="name-row"):
                    yield Label("name", classes="key")
                    yield Input(placeholder="e.g. tiny-stories-1", compact=True, id="name")
                    yield Static("", id="name-problem", classes="problem")
                yield ConfigForm(self.base, WIZARD_KEYS, id="form")
            with Vertical(id="right"):
                yield FitMeter(id="meter")
                yield Static("", id="verdict")
                with Horizontal(id="buttons"):
                    yield Button("Create (ctrl+s)", variant="success", id="create")
                    yield Button("Cancel (esc)", id="cancel")
        yield KeyBar()

    def on_mount(self) -> None:  # ConfigFormScreen.on_mount then checks the form
        self.query_one("#name", Input).focus()

    # ---- validation ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {"name": self.query_one("#name", Input).value, "preset": self.preset,
                **self.form.raw()}

    @on(Input.Changed, "#name")
    def _name_edited(self) -> None:
        self.check_later()

    @on(ChoiceField.Changed, "#preset")
    def _preset_picked(self, event: ChoiceField.Changed) -> None:
        event.stop()
        if event.value == self.preset:
            return
        self.preset = str(event.value)
        self.base = self._preset_config(self.preset)
        self.query_one("#about", Static).update(describe(self.preset))
        self.form.fill(self.base)
        self.check_later()

    def revalidate(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        cfg, problems = build_config(self.base, self.form.raw())
        for key, texts in outside_problems(self.store, self.workspace, name, cfg).items():
            problems.setdefault(key, []).extend(texts)
        name_problem = "\n".join(problems.get("name", []))
        self.query_one("#name-problem", Static).update(name_problem)
        self.query_one("#name", Input).set_class(bool(name_problem), "invalid")
        # the budget needs a valid config, not a name
        self.show_check(cfg, problems, "ready: ctrl+s creates it",
                        "{count} problem{s} to fix before creating",
                        "the budget shows once the fields marked red are fixed")

    # ---- create / cancel -------------------------------------------------------------------------

    @on(Button.Pressed, "#create")
    def action_create(self) -> None:
        self.check_pending()
        if self.config is None:
            first = ("name" if "name" in self.problems
                     else self.form.first_invalid(self.problems))
            self.notify("fix the fields marked red first", severity="warning")
            if first:
                self.query_one(f"#{first}").focus()
            return
        self._create(self.query_one("#name", Input).value.strip(), self.config, self.preset)

    @work(thread=True, exclusive=True, exit_on_error=False, name="create")
    def _create(self, name: str, cfg: ExperimentConfig, preset: str) -> None:
        self.store.create(name, cfg, preset=preset)
        self.post_message(ActionDone(f"created {name}", select=name))

    def result_of(self, message: ActionDone) -> object:
        return message.select

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.leave(None)
