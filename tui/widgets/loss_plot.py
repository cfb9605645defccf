"""LossPlot: curves of loss against step (one run's train and val, or several runs overlaid).

Why a widget of our own over PlotextPlot: a live run appends points several times a second and a
plotext build of the whole figure costs milliseconds, so the widget keeps the series itself, lets
callers add points cheaply, and rebuilds the figure at most `MAX_HZ` times a second (design.md: plots
redraw at most ~4 Hz). Smoothing is an exponential moving average, the same one people read in
TensorBoard, applied at draw time so the raw points are never lost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from textual_plotext import PlotextPlot

MAX_HZ = 4.0
Color = str | tuple[int, int, int] | None  # a plotext colour name or RGB


@dataclass
class Series:
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    color: Color = None
    marker: str = "braille"


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (starts at the first value, not at 0)."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def step_ticks(series_steps: list[list[float]], target: int = 5) -> list[int]:
    """Round x ticks (1, 2, 2.5 or 5 times a power of ten apart): plotext's own split the range
    evenly and read '157.5' for steps, which are whole numbers."""
    lo = min(min(steps) for steps in series_steps)
    hi = max(max(steps) for steps in series_steps)
    if hi <= lo:
        return []
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = max(1, round(step))
    first = math.ceil(lo / step) * step
    return list(range(int(first), int(hi) + 1, step))


class LossPlot(PlotextPlot):
    """`plot.add_points("train", steps, losses)`; redraws are throttled, never per point."""

    DEFAULT_CSS = """
    LossPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.series: dict[str, Series] = {}
        self.smoothing = 0.0  # 0 = raw; 0.6-0.9 reads well for noisy train loss
        self._last_draw = 0.0
        self._pending = False

    # ---- data ----------------------------------------------------------------------------------------

    def set_series(self, name: str, steps: list[float], values: list[float],
                   color: Color = None) -> None:
        self.series[name] = Series(list(steps), list(values), color)
        self.request_redraw()

    def add_points(self, name: str, steps: list[float], values: list[float],
                   color: Color = None) -> None:
        s = self.series.setdefault(name, Series(color=color))
        s.steps.extend(steps)
        s.values.extend(values)
        self.request_redraw()

    def clear_series(self) -> None:
        self.series.clear()
        self.request_redraw()

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = min(max(weight, 0.0), 0.99)
        self.request_redraw()

    # ---- drawing -------------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """A redraw is scheduled and not done yet (tests wait on this instead of sleeping)."""
        return self._pending

    def request_redraw(self) -> None:
        """Draw once the current burst of changes is in (several set_series in one handler build the
        figure once, not once per call), and at most MAX_HZ times a second."""
        if self._pending:
            return
        self._pending = True
        wait = self._last_draw + 1.0 / MAX_HZ - time.monotonic()
        if wait <= 0:
            self.call_later(self._draw)
        else:
            self.set_timer(wait, self._draw)

    def _draw(self) -> None:
        self._pending = False
        self._last_draw = time.monotonic()
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel("step")
        drawn = False
        for name, s in self.series.items():
            if not s.steps:
                continue
            values = ema(s.values, self.smoothing) if self.smoothing and len(s.values) > 2 else s.values
            kwargs = {"label": name, "marker": s.marker}
            if s.color:
                kwargs["color"] = s.color
            plt.plot(s.steps, values, **kwargs)
            drawn = True
        if not drawn:
            plt.title(f"{self.title}  (no points yet)" if self.title else "no points yet")
        else:
            ticks = step_ticks([s.steps for s in self.series.values() if s.steps])
            if ticks:
                plt.xticks(ticks)
        self.refresh()
