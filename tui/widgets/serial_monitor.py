"""SerialMonitor: the board's lines, live, with a filter, pause, timestamps and a plot of any
`label:value` series it prints.

Why it is fed in batches: the panel takes the engine Monitor's lines ~10 times a second and hands the batch
to `ingest()`, which writes it to one `Log` in one call — at 2,000 lines/s that is ten calls of
~200 lines, not 2,000 widget updates. The last `KEEP` lines are kept here as well, so a new filter,
the timestamp toggle or a resume re-draws from them without asking the board again. While paused,
lines keep arriving, being counted and being saved (the engine's Monitor and BoardSession do that);
only the Log stands still.
"""

from __future__ import annotations

import collections
import re
import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

from engine.device.monitor import MonitorLine, MonitorStats

from .loss_plot import LossPlot

KEEP = 5000  # lines kept for re-drawing (and the Log's own cap)
PLOT_EVERY_S = 1.0  # the series plot takes new points at most this often (a build costs ms)
PLOT_POINTS = 120  # and draws at most this many per series, evenly picked from the kept ones
SERIES_COLORS = [(0, 175, 255), (255, 160, 0), (190, 120, 255), (0, 210, 170), (255, 100, 170)]


class SeriesPlot(LossPlot):
    """LossPlot with time on the x axis (seconds since the monitor started). LossPlot reuses its
    built figure until the data, size or theme change: a live log beside it makes the screen lay
    out several times a second, and a plotext build per layout would cost 20-100 ms each."""

    DEFAULT_CSS = """
    SeriesPlot { height: 10; min-height: 6; }
    """

    def _draw(self) -> None:
        super()._draw()
        self.plt.xlabel("seconds")  # drawn at the next render, after super()'s refresh request


class MonitorLog(Log):
    """Log that looks its style up once, not once per line drawn: Log asks for `rich_style` (a
    walk up the DOM, ~0.1-0.4 ms at this depth) for every line, and a scrolling log redraws
    every visible line at each of ~10 flushes a second. Textual calls notify_style_update when
    this node's style or an ancestor's changes (theme, focus, disabled), which drops the copy."""

    _style: Any = None

    @property
    def rich_style(self) -> Any:
        if self._style is None:
            self._style = super().rich_style
        return self._style

    def notify_style_update(self) -> None:
        self._style = None
        super().notify_style_update()


def _stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d} "


class SerialMonitor(Vertical):
    DEFAULT_CSS = """
    SerialMonitor { height: 1fr; }
    SerialMonitor > #mon-stats { height: 1; background: $boost; padding: 0 1; }
    SerialMonitor > #mon-filter { display: none; }
    SerialMonitor > #mon-filter.shown { display: block; }
    SerialMonitor > MonitorLog { height: 1fr; }
    SerialMonitor > SeriesPlot { display: none; }
    SerialMonitor > SeriesPlot.shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.kept: collections.deque[MonitorLine] = collections.deque(maxlen=KEEP)
        self.paused = False
        self.paused_at = 0  # len of `kept` history when paused: what resume must draw
        self.held = 0  # lines that arrived while paused
        self.timestamps = True
        self.pattern: re.Pattern[str] | None = None
        self.filter_text = ""
        self.filter_note = ""
        self.shown = 0  # lines written to the Log since the last clear
        self.enabled = True
        self.plot_wanted: bool | None = None  # None: shown once a series appears
        self._series_versions: dict[str, int] = {}
        self._plotted_at = 0.0
        self._stats = MonitorStats(0, 0, 0, 0.0, False, False, 0)
        self._saving = False

    def compose(self) -> ComposeResult:
        yield Static("", id="mon-stats")
        yield Input(placeholder="filter: text or regex, enter applies, empty clears",
                    id="mon-filter", compact=True)
        yield MonitorLog(max_lines=KEEP, id="mon-log", auto_scroll=True)
        yield SeriesPlot("label:value series", id="mon-plot")

    @property
    def log_widget(self) -> Log:
        return self.query_one(Log)

    # ---- lines -----------------------------------------------------------------------------------

    def ingest(self, lines: list[MonitorLine]) -> None:
        """A batch from the feed: kept, and written unless paused or filtered out."""
        self.kept.extend(lines)
        if self.paused:
            self.held += len(lines)
            return
        self._write(lines)

    def _write(self, lines: list[MonitorLine] | collections.deque[MonitorLine]) -> None:
        pat = self.pattern
        out = [self._format(ln) for ln in lines if pat is None or pat.search(ln.text)]
        if out:
            self.log_widget.write_lines(out)
            self.shown += len(out)

    def _format(self, line: MonitorLine) -> str:
        return _stamp(line.t) + line.text if self.timestamps else line.text

    def _redraw(self) -> None:
        self.log_widget.clear()
        self.shown = 0
        self._write(self.kept)

    @property
    def visible_lines(self) -> list[str]:
        return list(self.log_widget.lines)

    # ---- toggles ---------------------------------------------------------------------------------

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        if self.paused:
            self.held = 0
        else:
            held = list(self.kept)[-self.held:] if self.held else []
            self.held = 0
            self._write(held)
        self._show_stats()
        return self.paused

    def toggle_timestamps(self) -> bool:
        self.timestamps = not self.timestamps
        self._redraw()
        return self.timestamps

    def clear(self) -> None:
        self.kept.clear()
        self.held = 0
        self._redraw()

    def set_filter(self, text: str) -> None:
        """A regex; text that is not one is matched literally (and the stats line says so)."""
        self.filter_text = text
        self.filter_note = ""
        if not text:
            self.pattern = None
        else:
            try:
                self.pattern = re.compile(text)
            except re.error:
                self.pattern = re.compile(re.escape(text))
                self.filter_note = " (not a regex: matched as text)"
        self._redraw()
        self._show_stats()

    def open_filter(self) -> None:
        box = self.query_one("#mon-filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Submitted, "#mon-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(event.value)
        if not event.value:
            event.input.remove_class("shown")
        self.log_widget.focus()

    def toggle_plot(self) -> bool:
        plot = self.query_one(SeriesPlot)
        self.plot_wanted = not plot.has_class("shown")
        plot.set_class(self.plot_wanted, "shown")
        return self.plot_wanted

    # ---- state from the panel --------------------------------------------------------------------

    def show_stats(self, stats: MonitorStats, saving: bool) -> None:
        """The engine Monitor's counters, and whether device.log is being written."""
        self._stats, self._saving = stats, saving
        self._show_stats()

    def _show_stats(self) -> None:
        s = self._stats
        text = Text()
        if not self.enabled:
            text.append(" port lost ", style="bold white on red")
            text.append(" ")
        text.append(f"{s.lines:,} lines · {s.lines_per_s:,.0f} lines/s · ")
        text.append(f"{s.dropped:,} dropped", style="bold red" if s.dropped else "")
        text.append(" · " + ("saving to device.log" if self._saving else "not saving"))
        if self.paused:
            text.append(f" · PAUSED ({self.held:,} held)", style="bold yellow")
        if self.filter_text:
            text.append(f" · filter {self.filter_text!r}{self.filter_note}", style="cyan")
        if not self.timestamps:
            text.append(" · no timestamps", style="dim")
        self.query_one("#mon-stats", Static).update(text, layout=False)  # one line, always

    def set_enabled(self, on: bool) -> None:
        """Off while the port is lost: the filter box is disabled, the log kept as it was."""
        self.enabled = on
        self.query_one("#mon-filter", Input).disabled = not on
        self._show_stats()

    def show_series(self, series: dict[str, tuple[int, list[tuple[float, float]]]]) -> None:
        now = time.monotonic()
        if not series or now - self._plotted_at < PLOT_EVERY_S:
            return
        self._plotted_at = now
        plot = self.query_one(SeriesPlot)
        if self.plot_wanted is None and not plot.has_class("shown"):
            plot.add_class("shown")
        for i, (label, (version, points)) in enumerate(sorted(series.items())):
            if self._series_versions.get(label) == version:
                continue
            self._series_versions[label] = version
            step = -(-len(points) // PLOT_POINTS)  # ceil: a line plot's cost grows with its points
            points = points[::-1][::step][::-1]  # the newest point always kept
            plot.set_series(label, [p[0] for p in points], [p[1] for p in points],
                            color=SERIES_COLORS[i % len(SERIES_COLORS)])
