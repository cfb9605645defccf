"""Serial-plotter lines: `temp:21.5 hum:40` (Arduino serial plotter style; items separated by spaces,
commas, tabs or semicolons) become points of named series an app can plot. A line counts only if it
is made of such items and nothing else, so a log line like `I (312) cpu_start: Starting` is not
mistaken for data."""

from __future__ import annotations

import collections
import re

_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*):[ \t]*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")
_SEP = re.compile(r"[\s,;]*")


def parse_plot_line(text: str) -> dict[str, float] | None:
    """{label: value} of a serial-plotter line, or None if the line is anything else."""
    values: dict[str, float] = {}
    pos = 0
    for m in _ITEM.finditer(text):
        if _SEP.fullmatch(text, pos, m.start()) is None:
            return None
        values[m.group(1)] = float(m.group(2))
        pos = m.end()
    if not values or _SEP.fullmatch(text, pos) is None:
        return None
    return values


class PlotSeries:
    """label -> [(t, value)], fed line by line; `take_new()` returns what came since its last call
    (what a plot appends), `series` keeps the last `keep` points of each label."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self.series: dict[str, collections.deque[tuple[float, float]]] = {}
        self._new: dict[str, list[tuple[float, float]]] = {}
        self.points = 0

    def add(self, t: float, text: str) -> bool:
        """Parse one line; True if it was a plotter line."""
        values = parse_plot_line(text)
        if values is None:
            return False
        for label, v in values.items():
            if label not in self.series:
                self.series[label] = collections.deque(maxlen=self.keep)
            self.series[label].append((t, v))
            self._new.setdefault(label, []).append((t, v))
            self.points += 1
        return True

    def take_new(self) -> dict[str, list[tuple[float, float]]]:
        new, self._new = self._new, {}
        return new
