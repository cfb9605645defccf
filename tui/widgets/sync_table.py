"""SyncTable: a DataTable that is given the whole table it should show and changes only what moved.

Why: the diff tables are rebuilt from a fresh report on every change of a followed run, and
clearing a DataTable per refresh loses the cursor and scroll and costs a full re-layout (style.md:
update cells by row key). When the columns and the row keys are unchanged only the cells that
differ are updated; a new shape (a toggle that adds rows, another baseline label) rebuilds, keeping
the cursor row.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text
Columns = list[tuple[str, Cell]]  # (key, label)
Rows = list[tuple[str, list[Cell]]]  # (key, cells)


class SyncTable(DataTable):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._shape: tuple[list[tuple[str, str]], list[str]] = ([], [])
        self._cells: dict[str, list[Cell]] = {}

    def sync(self, columns: Columns, rows: Rows) -> None:
        shape = ([(k, str(label)) for k, label in columns], [k for k, _ in rows])
        if shape != self._shape:
            self._rebuild(columns, rows)
        else:
            for key, cells in rows:
                old = self._cells[key]
                for (col, _), new, was in zip(columns, cells, old, strict=True):
                    if new != was:
                        self.update_cell(key, col, new)
                self._cells[key] = list(cells)
        self._shape = shape

    def _rebuild(self, columns: Columns, rows: Rows) -> None:
        keep = self.cursor_row
        self.clear(columns=True)
        for key, label in columns:
            self.add_column(label, key=key)
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._cells = {key: list(cells) for key, cells in rows}
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1))
