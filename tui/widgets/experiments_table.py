"""ExperimentsTable: the home screen's table of experiments, kept in step with the disk row by row.

Why its own widget: the screen must not rebuild the table when one folder changes (a thousand rows,
a cursor and marks to keep), so this class owns the rows by experiment name and turns each new
Summary into `update_cell` calls for the cells that changed, `add_row` for a new folder and
`remove_row` for a removed one. Sorting, the filter, archived rows and marks live here too; the text
of every cell comes from engine/store/format.py, the same strings `tinylm list` prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from engine.store.experiments import Summary
from engine.store.format import SUMMARY_COLUMNS, summary_columns

MARK = "●"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SPIN_HZ = 4.0  # enough to look alive; each frame touches only the running rows
STATUS_STYLE = {"running": "bold green", "queued": "green", "failed": "bold red", "done": "cyan",
                "stopped": "yellow", "new": "", "DAMAGED": "bold red reverse"}
STATUS_ORDER = {"running": 0, "queued": 1, "failed": 2, "stopped": 3, "new": 4, "done": 5,
                "damaged": 6}
COLUMN_KEYS = tuple(key for key, _ in SUMMARY_COLUMNS)


class _NameCell(Text):
    """The name cell carries its experiment's name, so a sort key can find the Summary."""

    def __init__(self, text: str, exp_name: str, style: str = "") -> None:
        super().__init__(text, style=style)
        self.exp_name = exp_name


def _sort_value(s: Summary, column: str) -> Any:
    """What a column sorts by: the numbers, not their formatted strings (260K < 1.20M)."""
    inf = math.inf
    return {
        "name": s.name.lower(),
        "status": STATUS_ORDER.get(s.status, 9),
        "model": (s.preset or s.arch or "~").lower(),
        "params": s.params if s.params is not None else -1,
        "best_val": s.best_val_loss if s.best_val_loss is not None else inf,
        "bpb": s.bits_per_byte if s.bits_per_byte is not None else inf,
        "blob": s.blob_bytes or -1,
        "fits": (s.fits is not True, s.board or ""),
        "updated": s.updated or 0.0,
        "tags": ",".join(s.tags) or "~",
    }[column]


def matches(s: Summary, query: str) -> bool:
    """Every word must match: part of the name, a tag, or a status (`tag:x` / `status:x` force
    one). Case does not matter."""
    tags = [t.lower() for t in s.tags]
    for word in query.lower().split():
        kind, _, value = word.partition(":")
        if value and kind == "tag":
            ok = any(value in t for t in tags)
        elif value and kind == "status":
            ok = s.status.startswith(value)
        else:
            ok = word in s.name.lower() or word in tags or s.status.startswith(word)
        if not ok:
            return False
    return True


@dataclass
class _Shown:
    cells: dict[str, str]
    running: bool


class ExperimentsTable(DataTable):
    """`load(summaries)` once, then `apply(changed, gone)` per disk change."""

    BINDINGS = [  # enter selects a row (the screen opens it): shown, since it is the main key
        Binding("enter", "select_cursor", "Open", id="experiments.open", key_display="⏎",
                tooltip="Open the experiment: overview, training curves, samples, quantize"),
    ]

    class SortChanged(Message):
        """The user picked another sort column or order (the screen shows it in its status)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.clock = clock  # tests pin it: "updated" shows the hour today, the date before
        self.summaries: dict[str, Summary] = {}
        self.marks: set[str] = set()
        self.sort_column = "updated"
        self.sort_reverse = True  # newest first: what you worked on last is on top
        self.query_text = ""
        self.show_archived = False
        self._shown: dict[str, _Shown] = {}
        self._frame = 0
        self._spinner: Timer | None = None

    def on_mount(self) -> None:
        self.add_column(" ", key="mark")
        for key, header in SUMMARY_COLUMNS:
            self.add_column(header, key=key)
        self._label_sort_column()

    # ---- what is shown ---------------------------------------------------------------------------

    def visible(self, s: Summary) -> bool:
        return (self.show_archived or not s.archived) and matches(s, self.query_text)

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key
        return key.value

    def shown_names(self) -> list[str]:
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]

    @property
    def running(self) -> list[str]:
        return sorted(n for n, s in self.summaries.items() if s.status == "running")

    # ---- changes ---------------------------------------------------------------------------------

    def load(self, summaries: Iterable[Summary]) -> None:
        """Every experiment at once (start-up): the only full build, besides filter changes."""
        self.summaries = {s.name: s for s in summaries}
        self.marks &= set(self.summaries)
        self.rebuild()

    def rebuild(self) -> None:
        """Rows for the current filter / archived view, cursor kept on the same experiment."""
        keep = self.selected
        self.clear()
        self._shown.clear()
        for s in self.summaries.values():
            if self.visible(s):
                self._add(s)
        self._resort(keep)
        self._sync_spinner()

    def apply(self, changed: Iterable[Summary], gone: Iterable[str] = ()) -> None:
        """Changed experiments update their cells in place; new ones are added, removed ones
        dropped; the order is fixed only if a sorted value moved. Cursor and marks stay."""
        keep = self.selected
        resort = False
        for name in gone:
            self.summaries.pop(name, None)
            self.marks.discard(name)
            if name in self._shown:
                self._remove(name)
        for s in changed:
            old = self.summaries.get(s.name)
            self.summaries[s.name] = s
            if not self.visible(s):
                if s.name in self._shown:
                    self._remove(s.name)
                continue
            if s.name not in self._shown:
                self._add(s)
                resort = True
                continue
            self._update(s)
            column = self.sort_column
            if old is None or _sort_value(old, column) != _sort_value(s, column):
                resort = True
        if resort:
            self._resort(keep)
        elif keep is not None and keep in self._shown:
            self.move_cursor(row=self.get_row_index(keep))
        self._sync_spinner()

    def set_query(self, text: str) -> None:
        if text != self.query_text:
            self.query_text = text
            self.rebuild()

    def toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        self.rebuild()

    def toggle_mark(self, name: str) -> None:
        self.marks ^= {name}
        if name in self._shown:
            self.update_cell(name, "mark", MARK if name in self.marks else "")

    def select(self, name: str) -> bool:
        """Put the cursor on an experiment if it is shown."""
        if name not in self._shown:
            return False
        self.move_cursor(row=self.get_row_index(name))
        return True

    # ---- sorting ---------------------------------------------------------------------------------

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if column == self.sort_column and reverse is None:
            reverse = not self.sort_reverse  # picking the same column again flips the order
        self.sort_column = column
        self.sort_reverse = bool(reverse)
        self._label_sort_column()
        self._resort(self.selected)
        self.post_message(self.SortChanged())

    def next_sort_column(self) -> None:
        i = COLUMN_KEYS.index(self.sort_column)
        self.sort_by(COLUMN_KEYS[(i + 1) % len(COLUMN_KEYS)], reverse=self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value in COLUMN_KEYS:
            self.sort_by(event.column_key.value)

    def _label_sort_column(self) -> None:
        arrow = " ▼" if self.sort_reverse else " ▲"
        for key, header in SUMMARY_COLUMNS:
            column = self.columns[key]  # type: ignore[index]
            column.label = Text(header + (arrow if key == self.sort_column else ""))
            column.content_width = max(column.content_width, column.label.cell_len)
        self._require_update_dimensions = True
        self.refresh()

    def _resort(self, keep: str | None) -> None:
        column = self.sort_column

        def key(cell: _NameCell) -> Any:
            s = self.summaries[cell.exp_name]
            return (_sort_value(s, column), s.name)

        self.sort("name", key=key, reverse=self.sort_reverse)
        if keep is not None and keep in self._shown:
            self.move_cursor(row=self.get_row_index(keep))

    # ---- rows ------------------------------------------------------------------------------------

    def _strings(self, s: Summary) -> dict[str, str]:
        cells = summary_columns(s, now=self.clock())
        if s.status == "running":
            cells["status"] = f"{SPINNER[self._frame % len(SPINNER)]} {cells['status']}"
        return cells

    def _render(self, s: Summary, key: str, text: str) -> Text:
        if key == "name":
            style = "dim" if s.archived else ("bold red" if s.damaged else "")
            return _NameCell(text, s.name, style)
        if key == "status":
            return Text(text, style=STATUS_STYLE.get(text.split()[-1], ""))
        if key == "fits" and text.startswith("✗"):
            return Text(text, style="red")
        if key in ("params", "best_val", "bpb", "blob"):
            return Text(text, justify="right")
        return Text(text, style="dim" if s.archived else "")

    def _add(self, s: Summary) -> None:
        cells = self._strings(s)
        self.add_row(MARK if s.name in self.marks else "",
                     *(self._render(s, k, cells[k]) for k in COLUMN_KEYS), key=s.name)
        self._shown[s.name] = _Shown(cells, s.status == "running")
        for key in COLUMN_KEYS:  # measured here, from the strings (see _update_dimensions)
            column = self.columns[key]  # type: ignore[index]
            column.content_width = max(column.content_width, cell_len(cells[key]))

    def _update(self, s: Summary) -> None:
        shown = self._shown[s.name]
        cells = self._strings(s)
        for key in COLUMN_KEYS:
            if cells[key] != shown.cells[key]:
                # widen the column when needed; never ask for a shrink, which re-measures every
                # cell of the column (a thousand rows)
                wider = cell_len(cells[key]) > self.columns[key].content_width  # type: ignore[index]
                self.update_cell(s.name, key, self._render(s, key, cells[key]), update_width=wider)
        shown.cells, shown.running = cells, s.status == "running"

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Two changes to DataTable's idle-time measuring of new rows:
        - no measuring: every cell here is one line of plain text, whose width `_add` took from
          its string; rich-measuring 11,000 cells cost 0.4 s of a cold start with 1,000 rows;
        - forget the cached cells after: DataTable keys its render caches by an update count that
          measuring does not bump, so a frame drawn in between (a cursor move) kept columns at
          their header width."""
        super()._update_dimensions(())
        self._clear_caches()
        self.refresh()

    def _remove(self, name: str) -> None:
        self.remove_row(name)
        del self._shown[name]

    # ---- the spinner -----------------------------------------------------------------------------

    def _sync_spinner(self) -> None:
        """A timer only while a shown row is running: an idle table costs no CPU."""
        wanted = any(shown.running for shown in self._shown.values())
        if wanted and self._spinner is None:
            self._spinner = self.set_interval(1 / SPIN_HZ, self._spin)
        elif not wanted and self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def _spin(self) -> None:
        self._frame += 1
        for name, shown in self._shown.items():
            if shown.running:
                self._update(self.summaries[name])
