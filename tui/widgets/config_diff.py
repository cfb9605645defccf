"""ConfigDiff: config keys side by side, one column per experiment, the baseline's column marked.

Why its own widget: the Diff screen decides what to show (which report, all keys or only those that
differ, which colour stands for which experiment); this table decides how it reads. A value that
differs from the baseline's is bold, keys that are the same everywhere (shown with all keys) are
dim, so the eye lands on what changed.
"""

from __future__ import annotations

from rich.text import Text

from engine.store.diff import DiffReport

from .sync_table import Cell, Columns, Rows, SyncTable

MAX_VALUE = 24  # a long value (a corpus path) is cut in the middle so every column stays in view


def clip(text: str, width: int = MAX_VALUE) -> str:
    """'corpora/tinystories_slice.txt' -> 'corpora/t…es_slice.txt': both ends are what tells paths
    apart; `tinylm diff` prints values whole."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def experiment_columns(report: DiffReport, colors: list[str], first: str) -> Columns:
    """The header both diff tables share: the row label, then each experiment in its plot colour,
    the baseline marked."""
    cols: Columns = [("key", Text(first, style="bold"))]
    for i, name in enumerate(report.names):
        label = Text(name, style=f"bold {colors[i % len(colors)]}")
        if i == report.baseline:
            label.append(" (base)", style="italic")
        cols.append((name, label))
    return cols


class ConfigDiff(SyncTable):
    DEFAULT_CSS = """
    ConfigDiff { height: 1fr; }
    """

    def show(self, report: DiffReport, *, all_keys: bool, colors: list[str]) -> None:
        base = report.baseline
        rows: Rows = []
        for row in report.config:
            if not (all_keys or row.differs):
                continue
            plain = "" if row.differs else "dim"
            cells: list[Cell] = [Text(row.key, style=plain)]
            for i, (value, text) in enumerate(zip(row.values, row.cells(), strict=True)):
                changed = i != base and value != row.values[base]
                cells.append(Text(clip(text), style="bold" if changed else plain))
            rows.append((row.key, cells))
        if not rows:
            note: list[Cell] = [Text("identical configs", style="dim italic")]
            rows = [("(same)", note + [""] * len(report.names))]
        self.sync(experiment_columns(report, colors, "config"), rows)
