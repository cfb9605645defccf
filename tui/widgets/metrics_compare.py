"""MetricsCompare: each experiment's metric summary, with its delta against the baseline coloured
green when it is better and red when it is worse (lower loss is better, more tok/s is better; steps,
tokens and time have no better side and stay plain)."""

from __future__ import annotations

from rich.text import Text

from engine.store.diff import DiffReport, MetricRow

from .config_diff import experiment_columns
from .sync_table import Cell, Rows, SyncTable

VERDICT_STYLE = {"better": "green", "worse": "red", "same": "dim", None: "dim"}


def metric_cell(row: MetricRow, i: int, width: int = 0) -> Text:
    """The value, padded to `width` so the deltas of one column line up, then the delta."""
    text = Text(row.value_text(i).ljust(width))
    delta = row.delta_text(i)
    if delta:
        text.append("  ")
        text.append(delta, style=VERDICT_STYLE[row.verdict(i)])
    return text


class MetricsCompare(SyncTable):
    """Eight rows that always fit: no cursor and no focus, so keys go to the config table."""

    DEFAULT_CSS = """
    MetricsCompare { height: auto; max-height: 12; }
    """
    can_focus = False

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.cursor_type = "none"

    def show(self, report: DiffReport, *, colors: list[str]) -> None:
        n = len(report.names)
        widths = [max(len(m.value_text(i)) for m in report.metrics) for i in range(n)]
        rows: Rows = []
        for m in report.metrics:
            cells: list[Cell] = [m.key] + [metric_cell(m, i, widths[i]) for i in range(n)]
            rows.append((m.key, cells))
        rows.append(("status", ["status", *report.statuses]))
        self.sync(experiment_columns(report, colors, "metric"), rows)
