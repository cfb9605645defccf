"""Experiments screen: the table of experiment folders, kept in sync with the disk."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from engine.config.budget import fmt_bytes
from engine.store.experiments import Store, Summary

COLUMNS = ("name", "status", "params", "best val", "blob", "tags")


def _row(s: Summary) -> tuple[str, ...]:
    params = "-" if s.params is None else (f"{s.params / 1e6:.2f}M" if s.params >= 1e6
                                            else f"{s.params / 1e3:.0f}K")
    status = "DAMAGED" if s.status == "damaged" else s.status
    return (s.name, status, params, "-" if s.best_val_loss is None else f"{s.best_val_loss:.4f}",
            fmt_bytes(s.blob_bytes) if s.blob_bytes else "-", ", ".join(s.tags))


class ExperimentsScreen(Screen):
    BINDINGS = [
        Binding("r", "refresh", "Refresh", id="experiments.refresh", tooltip="Re-read the folders"),
        Binding("q", "app.quit", "Quit", id="app.quit"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in COLUMNS:
            table.add_column(col, key=col)
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load_rows()

    @work(thread=True, exclusive=True, exit_on_error=False, group="list")
    def load_rows(self) -> None:
        rows = self.store.list()
        self.app.call_from_thread(self._show_rows, rows)

    def _show_rows(self, rows: list[Summary]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for s in rows:
            table.add_row(*_row(s), key=s.name)
        detail = self.query_one("#detail", Static)
        detail.update(f"{len(rows)} experiments in {self.store.root}" if rows else
                      f"No experiments in {self.store.root} yet: `tinylm new NAME` creates one.")

    @on(DataTable.RowHighlighted)
    def show_detail(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        s = self.store.summarize(event.row_key.value)
        text = f"{s.name}: {s.status}"
        if s.parent:
            text += f"  (from {s.parent})"
        if s.problem:
            text += f"  — damaged: {s.problem}"
        self.query_one("#detail", Static).update(text)
