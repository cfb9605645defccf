"""Export: pick a quantization, write `model.<quant>.bin` for the firmware (engine/blob/export.py
in a worker: it loads torch and the checkpoint, seconds), then show what was written or why not.

The choices carry the budget's numbers for the experiment's board, so the pick is informed; a blob
that will not fit is refused by the engine with its advice unless "write anyway" is ticked."""

from __future__ import annotations

from dataclasses import replace

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, LoadingIndicator, RadioButton, RadioSet, Static
from textual.worker import Worker, WorkerState

from engine.config.budget import compute, fmt_bytes
from engine.config.schema import QUANT_METHODS
from engine.config.workspace import Workspace
from engine.store.experiments import Store

from ..messages import ActionDone
from .base import ReportsWorkerErrors


class ExportScreen(ReportsWorkerErrors, ModalScreen[bool]):
    CSS_PATH = "export.tcss"
    HELP_TITLE = "Export"
    BINDINGS = [
        Binding("x", "export", "Export", id="export.run", tooltip="Write the blob"),
        Binding("escape", "close", "Close", id="export.close"),
    ]

    def __init__(self, store: Store, workspace: Workspace, name: str) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.exp_name = name
        self.wrote = False

    def compose(self) -> ComposeResult:
        exp = self.store.load(self.exp_name)
        cfg = exp.config
        with Vertical(id="dialog"):
            yield Label(f"Export {self.exp_name} for {cfg.device.board}", id="title")
            with RadioSet(id="quant"):
                for q in QUANT_METHODS:
                    b = compute(replace(cfg, quant=replace(cfg.quant, method=q,
                                                           int_attention=cfg.quant.int_attention
                                                           and q != "f32")))
                    fit = "fits" if b.fits else "does NOT fit"
                    yield RadioButton(f"{q:<8} {fmt_bytes(b.blob_bytes[q]):>10}  {fit}",
                                      value=q == cfg.quant.method, id=f"q-{q}")
            yield Checkbox("write it even if it does not fit the board", id="force")
            yield LoadingIndicator(id="busy")
            yield Static("", id="result")
            with Horizontal(id="buttons"):
                yield Button("Export (x)", variant="success", id="export")
                yield Button("Close (esc)", id="close")

    def on_mount(self) -> None:
        self.query_one("#busy").display = False
        self.query_one(RadioSet).focus()

    @property
    def quant(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return (pressed.id or "q-int8")[2:] if pressed is not None else "int8"

    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        self.query_one("#busy").display = True
        self.query_one("#export", Button).disabled = True
        self.query_one("#result", Static).update(f"writing the {self.quant} blob…")
        self._export(self.quant, self.query_one("#force", Checkbox).value)

    @work(thread=True, exclusive=True, exit_on_error=False, name="export")
    def _export(self, quant: str, force: bool) -> None:
        from engine.blob.export import export

        path, info = export(self.store.load(self.exp_name), quant, force=force)
        self.post_message(ActionDone(f"wrote {path.name}: {fmt_bytes(info.size)}, sha256 "
                                     f"{info.sha256[:16]}…"))

    def _idle(self) -> None:
        self.query_one("#busy").display = False
        self.query_one("#export", Button).disabled = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Errors go to the app's reporter (the mixin's handler runs too) and stay here to read."""
        if event.state == WorkerState.ERROR:
            self._idle()
            self.query_one("#result", Static).update(f"not written: {event.worker.error}")

    @on(ActionDone)
    def _done(self, message: ActionDone) -> None:
        message.stop()
        self._idle()
        self.wrote = True
        self.query_one("#result", Static).update(message.text)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.wrote)
