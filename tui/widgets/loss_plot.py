"""LossPlot: curves of loss against step (one run's train and val, or several runs overlaid).

Why a widget of our own over PlotextPlot: a live run appends points several times a second and a
plotext build of the whole figure costs milliseconds, so the widget keeps the series itself, lets
callers add points cheaply, and rebuilds the figure at most `MAX_HZ` times a second (design.md: plots
redraw at most ~4 Hz). On a slow or busy machine a build can take tens of milliseconds, so the
interval also grows with the measured cost of the last build, keeping the plot under `CPU_SHARE` of a
core (the app must stay light beside the training it watches). A built figure is reused until the
data, the size or the theme changes. Smoothing is an exponential moving average, the same one people
read in TensorBoard, applied at draw time so the raw points are never lost.

A plotext build costs about linearly in points (measured: 50 points ~25 ms, 1,000 ~150 ms, 5,000
~600 ms at 120x28 on this machine kind), and a long run logs thousands: each series is cut to the
lowest and highest value of each pair of columns before it is drawn (`decimate`), which the eye
cannot tell from the whole. A toggle the user pressed redraws at once (the throttle is for data);
a plot coming back into view shows the figure it has and brings it up to date right after, so a tab
switch is not held up by a build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from textual_plotext import PlotextPlot

MAX_HZ = 4.0
CPU_SHARE = 0.05  # at most this share of one core spent building the figure
Color = str | tuple[int, int, int] | None  # a plotext colour name or RGB


@dataclass
class Series:
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    color: Color = None
    marker: str = "braille"
    smooth: bool = True  # False for sparse series (val loss every few hundred steps) kept raw


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (starts at the first value, not at 0)."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def decimate(xs: list[float], ys: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """At most 2 * `buckets` points: per run of consecutive points, its lowest and its highest, in
    step order (spikes survive, unlike taking every k-th point)."""
    n = len(xs)
    if n <= 2 * buckets or buckets < 1:
        return xs, ys
    out_x: list[float] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi <= lo:
            continue
        chunk = range(lo, hi)
        i_min = min(chunk, key=ys.__getitem__)
        i_max = max(chunk, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def step_ticks(lo: float, hi: float, most: int = 7) -> list[int]:
    """Round step numbers (1, 2 or 5 times a power of ten apart) between lo and hi: plotext's own
    ticks are evenly spaced floats like 168.8, which read badly for steps."""
    import math

    if hi <= lo:
        return [int(lo)]
    raw = (hi - lo) / max(most - 1, 1)
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    step = max(int(step), 1)
    first = math.ceil(lo / step) * step
    return list(range(int(first), int(hi) + 1, step))


def fmt_step(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:g}M"
    if n >= 10_000:
        return f"{n / 1e3:g}k"
    return str(n)


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
        self._build_s = 0.0  # how long the last plotext build took
        self._version = 0  # bumped by each _draw: the cached figure is for one version
        self._cache: tuple[tuple[Any, ...], Any] | None = None
        self._pending = False
        self._timer: Any = None  # the throttled redraw waiting, if any
        self._shown_at: int | None = None  # set when the plot comes into view

    # ---- data ----------------------------------------------------------------------------------------

    def set_series(self, name: str, steps: list[float], values: list[float],
                   color: Color = None, smooth: bool = True) -> None:
        self.series[name] = Series(list(steps), list(values), color, smooth=smooth)
        self.request_redraw()

    def add_points(self, name: str, steps: list[float], values: list[float],
                   color: Color = None, smooth: bool = True) -> None:
        s = self.series.setdefault(name, Series(color=color, smooth=smooth))
        s.steps.extend(steps)
        s.values.extend(values)
        self.request_redraw()

    def clear_series(self) -> None:
        self.series.clear()
        self.request_redraw()

    def set_smoothing(self, weight: float) -> None:
        """A key the user pressed: drawn now, not at the data's throttled pace."""
        self.smoothing = min(max(weight, 0.0), 0.99)
        self.redraw_now()

    # ---- drawing -------------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """A redraw is scheduled and not done yet (tests wait on this instead of sleeping)."""
        return self._pending

    def request_redraw(self) -> None:
        """Draw once the current burst of changes is in (several set_series in one handler build the
        figure once, not once per call), at most MAX_HZ times a second, and less often when a build
        is slow, so plotting stays under CPU_SHARE of a core."""
        if self._pending:
            return
        self._pending = True
        interval = max(1.0 / MAX_HZ, self._build_s / CPU_SHARE)
        wait = self._last_draw + interval - time.monotonic()
        if wait <= 0:
            self.call_later(self._draw)
        else:
            self._timer = self.set_timer(wait, self._draw)

    def redraw_now(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._pending = True
        self.call_later(self._draw)

    def on_show(self) -> None:
        self._shown_at = self._version

    def render(self) -> Any:
        key = (self._version, self.title, self.size.width, self.size.height, self.app.theme)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if (self._shown_at is not None and self._cache is not None
                and self._cache[0][1:] == key[1:]):
            # back in view with newer data: this frame shows the figure we have, the next the new one
            self._shown_at = None
            self.call_after_refresh(self.refresh)
            return self._cache[1]
        self._shown_at = None
        start = time.perf_counter()
        figure = super().render()
        self._build_s = time.perf_counter() - start
        self._cache = (key, figure)
        return figure

    def _draw(self) -> None:
        self._pending = False
        self._timer = None
        self._version += 1
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
            smoothed = s.smooth and self.smoothing and len(s.values) > 2
            values = ema(s.values, self.smoothing) if smoothed else s.values
            steps, values = decimate(s.steps, values, max(8, (self.size.width or 100) // 2))
            # a lone point (a run's first eval) as one braille dot is all but invisible
            kwargs = {"label": name, "marker": s.marker if len(steps) > 1 else "●"}
            if s.color:
                kwargs["color"] = s.color
            plt.plot(steps, values, **kwargs)
            drawn = True
        if drawn:
            lo = min(s.steps[0] for s in self.series.values() if s.steps)
            hi = max(s.steps[-1] for s in self.series.values() if s.steps)
            ticks = step_ticks(lo, hi)
            plt.xticks(ticks, [fmt_step(t) for t in ticks])
        else:
            plt.title(f"{self.title}  (no points yet)" if self.title else "no points yet")
        self.refresh()
