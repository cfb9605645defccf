"""tui/widgets/loss_plot.py: step axes get round ticks, and a built figure is reused until something
it shows changes."""

from __future__ import annotations

import time

from textual.app import App, ComposeResult

from tui.widgets.loss_plot import LossPlot, decimate, fmt_step, step_ticks


class OnePlot(App):
    def compose(self) -> ComposeResult:
        yield LossPlot("loss")


def test_step_ticks_are_round_and_inside_the_range():
    assert step_ticks(25, 600) == [100, 200, 300, 400, 500, 600]
    assert step_ticks(0, 150) == [0, 50, 100, 150]
    assert step_ticks(5, 30) == [5, 10, 15, 20, 25, 30]
    assert step_ticks(7, 7) == [7]
    assert [fmt_step(t) for t in step_ticks(0, 1_000_000)][-1] == "1M"
    assert fmt_step(12_000) == "12k" and fmt_step(9_999) == "9999"


async def test_figure_is_built_once_per_change():
    app = OnePlot()
    async with app.run_test(size=(60, 16)) as pilot:
        plot = app.query_one(LossPlot)
        plot.set_series("train", [1, 2, 3], [3.0, 2.0, 1.5])
        await pilot.pause(0.3)
        built = plot._cache
        assert built is not None
        plot.refresh()  # a repaint without new data reuses the figure
        await pilot.pause(0.1)
        assert plot._cache is built
        plot.add_points("train", [4], [1.4])
        await pilot.pause(0.6)
        assert plot._cache is not built and plot._cache[0][0] == plot._version


def test_decimate_keeps_each_runs_extremes_in_step_order():
    xs = list(range(10_000))
    ys = [1.0] * 10_000
    ys[4321], ys[777] = 9.0, -5.0  # a spike and a dip: every-k-th picking would lose both
    dx, dy = decimate(xs, ys, 60)
    assert len(dx) <= 120 and dx == sorted(dx)
    points = set(zip(dx, dy, strict=True))
    assert (4321, 9.0) in points and (777, -5.0) in points
    assert decimate(xs[:100], ys[:100], 60) == (xs[:100], ys[:100])  # few points: untouched


async def test_a_toggle_redraws_now_while_data_redraws_wait():
    app = OnePlot()
    async with app.run_test(size=(60, 16)) as pilot:
        plot = app.query_one(LossPlot)
        plot.set_series("train", [1, 2, 3, 4], [3.0, 2.0, 1.5, 1.4])
        await pilot.pause(0.3)
        plot._build_s = 0.5  # a slow machine: data redraws wait 10 s (CPU_SHARE)
        plot._last_draw = time.monotonic()
        version = plot._version
        plot.add_points("train", [5], [1.3])
        await pilot.pause(0.2)
        assert plot._version == version and plot.pending  # throttled
        plot.set_smoothing(0.8)
        await pilot.pause(0.2)
        assert plot._version == version + 1 and not plot.pending  # drawn at once, with the point
        assert plot._cache is not None and plot._cache[0][0] == plot._version


async def test_a_lone_point_is_drawn_as_a_visible_marker():
    """A run's first eval is one point: one braille dot was all but invisible in the Diff plot."""
    app = OnePlot()
    async with app.run_test(size=(60, 16)) as pilot:
        plot = app.query_one(LossPlot)
        plot.set_series("val", [30], [5.9])
        await pilot.pause(0.3)
        assert str(plot.render()).count("●") >= 2  # the point and its legend entry
        plot.set_series("val", [30, 60], [5.9, 5.1])
        await pilot.pause(0.6)
        assert "●" not in str(plot.render())  # two points: a line again
