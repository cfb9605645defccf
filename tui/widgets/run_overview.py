"""RunOverview: one experiment at a glance — meta (status, parent, tags, notes, dates, error), the
board budget verdict, the files with sizes and sha256, and config.toml as written.

A view fed by the screen: `show(OverviewData)` when the folder was read, `set_hash` as each
sha256 arrives from the hashing worker. The files table is updated in place by file name, so a
run writing ckpt.pt does not rebuild it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from engine.config.budget import fmt_bytes
from engine.store.format import fmt_time

FILE_COLUMNS = ("file", "size", "sha256")
SHA_SHOWN = 16  # hex digits shown (as `tinylm export` prints them)


@dataclass
class OverviewData:
    """What the screen read from the folder (off the UI thread)."""

    meta: dict[str, Any]
    status: str
    config_text: str
    config_problem: str | None  # config.toml missing or invalid: why
    verdict: str | None  # the budget for the configured board
    advice: list[str] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)  # workers.file_hashes.FileEntry


def kernels_text(meta: dict[str, Any]) -> str | None:
    """What the run trains with (engine/train/kernels.py's choice and the compile trial's), so a
    slow run can be told from a slow machine without opening train.log."""
    k = meta.get("kernels")
    if not isinstance(k, dict) or "attention" not in k:
        return None
    parts = [f"attention {k['attention']}", f"ffn {k.get('ffn', '?')}", f"loss {k.get('loss', '?')}",
             f"adamw {k.get('optimizer', '?')}"]
    comp = meta.get("compile")
    if isinstance(comp, dict) and isinstance(comp.get("faster"), bool):
        parts.append(f"compiled {comp.get('gain', 0):.2f}x, attention "
                     f"{k.get('compiled_attention', 'sdpa')}" if comp["faster"] else
                     f"eager (compiled was {comp.get('gain', 0):.2f}x)")
    return " · ".join(parts) + f" ({k.get('source', '?')})"


def meta_table(meta: dict[str, Any], status: str) -> Table:
    """Key / value grid: long notes wrap inside their column instead of under the keys."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", justify="right", no_wrap=True)
    grid.add_column()
    head = Text(f"{status}", style="bold red" if status == "failed" else "bold")
    if meta.get("step"):
        head.append(f" at step {meta['step']:,}", style="")
    grid.add_row("status", head)
    rows = [("parent", meta.get("parent")), ("tags", ", ".join(meta.get("tags") or [])),
            ("created", fmt_time(meta.get("created"))), ("updated", fmt_time(meta.get("updated"))),
            ("kernels", kernels_text(meta)), ("notes", meta.get("notes")),
            ("error", meta.get("error"))]
    for key, value in rows:
        if value:
            grid.add_row(key, Text(str(value), style="red" if key == "error" else ""))
    return grid


class RunOverview(Horizontal):
    DEFAULT_CSS = """
    RunOverview { height: 1fr; }
    RunOverview #ov-left { width: 1fr; }
    RunOverview #ov-meta { height: auto; padding: 0 1; }
    RunOverview #ov-budget { height: auto; padding: 0 1; margin-top: 1; }
    RunOverview #ov-files { height: auto; margin-top: 1; }
    RunOverview #ov-config-box { width: 45%; max-width: 48; border-left: solid $panel; }
    RunOverview #ov-config { padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stamps: dict[str, tuple[int, int]] = {}  # file -> (size, mtime_ns) shown

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="ov-left"):
            yield Static("reading…", id="ov-meta")
            yield Static("", id="ov-budget")
            yield DataTable(id="ov-files", cursor_type="row", show_cursor=False)
        with VerticalScroll(id="ov-config-box"):
            yield Static("", id="ov-config")

    def on_mount(self) -> None:
        table = self.query_one("#ov-files", DataTable)
        for col in FILE_COLUMNS:
            table.add_column(col, key=col)

    def show(self, data: OverviewData) -> None:
        self.query_one("#ov-meta", Static).update(meta_table(data.meta, data.status))
        budget = Text()
        if data.verdict:
            budget.append("budget ", style="dim")
            budget.append(data.verdict, style="green" if data.verdict.startswith("fits") else "red")
            for tip in data.advice[:2]:
                budget.append(f"\n  try {tip}", style="dim")
        self.query_one("#ov-budget", Static).update(budget)
        if data.config_problem:
            self.query_one("#ov-config", Static).update(Text(data.config_problem, style="red"))
        else:
            self.query_one("#ov-config", Static).update(
                Syntax(data.config_text, "toml", theme="ansi_dark", background_color="default"))
        self.show_files(data.files)

    def show_files(self, files: list[Any]) -> None:
        table = self.query_one("#ov-files", DataTable)
        names = {f.name for f in files}
        for key in list(table.rows):
            if key.value not in names:
                table.remove_row(key)
                self._stamps.pop(str(key.value), None)
        for f in files:
            is_dir = f.name.endswith("/")
            size = "-" if is_dir else fmt_bytes(f.size)
            stamp = (f.size, f.mtime_ns)
            if f.name not in self._stamps:
                table.add_row(f.name, size, "" if is_dir else "…", key=f.name)
            elif self._stamps[f.name] != stamp and not is_dir:
                table.update_cell(f.name, "size", size)
                table.update_cell(f.name, "sha256", "…")  # a new version: its hash is on the way
            self._stamps[f.name] = stamp

    def set_hash(self, name: str, sha256: str) -> None:
        table = self.query_one("#ov-files", DataTable)
        if name in table.rows:
            table.update_cell(name, "sha256", sha256[:SHA_SHOWN] + "…", update_width=True)
