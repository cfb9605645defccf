"""The Training tab's progress row under a time budget (train.max_minutes): the bar and the ETA
follow whichever of steps and clock is further along, as the run's own schedule does."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import ProgressBar, Static

from tui.widgets.training_panel import TrainingPanel


class PanelApp(App):
    def compose(self) -> ComposeResult:
        yield TrainingPanel(id="panel")


def record(step: int, elapsed: float) -> dict:
    return {"step": step, "tokens_seen": step * 100, "train_loss": 3.0, "val_loss": None,
            "lr": 1e-3, "tok_per_s": 1000.0, "elapsed_s": elapsed}


async def test_time_budget_drives_the_bar_and_the_eta():
    app = PanelApp()
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.query_one(TrainingPanel)
        panel.set_status("running")
        panel.set_limits(1_000_000, 2.0)  # steps far off: the clock ends this run
        panel.add_records([record(s, s * 0.6) for s in (10, 20, 50, 100)])  # 60 s of 120
        await pilot.pause()
        bar = app.query_one(ProgressBar)
        assert bar.percentage is not None and abs(bar.percentage - 0.5) < 0.01
        assert str(app.query_one("#train-eta", Static).render()) == "ETA 1m 00s"
        assert "step 100 of 1,000,000 or 2 min" in str(app.query_one("#train-stats", Static).render())
        panel.set_status("stopped")
        await pilot.pause()
        assert "of training time left" in str(app.query_one("#train-eta", Static).render())
        panel.set_limits(200, 2.0)  # now the steps come first: 100 of 200 at 1 step / 0.6 s
        panel.set_status("running")
        await pilot.pause()
        assert abs(bar.percentage - 0.5) < 0.01
        panel.set_limits(120, 2.0)
        await pilot.pause()
        assert abs(bar.percentage - 100 / 120) < 0.01
        assert str(app.query_one("#train-eta", Static).render()) == "ETA 12s"
