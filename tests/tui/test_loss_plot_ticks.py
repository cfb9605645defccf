"""tui/widgets/loss_plot.py: step axes get round ticks, and a built figure is reused until something
it shows changes."""

from __future__ import annotations

from textual.app import App, ComposeResult

from tui.widgets.loss_plot import LossPlot, fmt_step, step_ticks


def test_step_ticks_are_round_and_inside_the_range():
    assert step_ticks(25, 600) == [100, 200, 300, 400, 500, 600]
    assert step_ticks(0, 150) == [0, 50, 100, 150]
    assert step_ticks(5, 30) == [5, 10, 15, 20, 25, 30]
    assert step_ticks(7, 7) == [7]
    assert [fmt_step(t) for t in step_ticks(0, 1_000_000)][-1] == "1M"
    assert fmt_step(12_000) == "12k" and fmt_step(9_999) == "9999"


async def test_figure_is_built_once_per_change():
    class One(App):
        def compose(self) -> ComposeResult:
            yield LossPlot("loss")

    app = One()
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
