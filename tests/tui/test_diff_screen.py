"""Diff screen: every key on two real experiment folders (config + metrics.jsonl on disk), the live
re-read of one experiment, a damaged one, escape back to the list, and snapshots of its looks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets.data_table import ColumnKey

from engine.config import schema as config_mod
from engine.config.schema import ExperimentConfig
from engine.store.experiments import Store
from tui.screens.diff import DiffScreen
from tui.widgets.config_diff import ConfigDiff
from tui.widgets.loss_plot import LossPlot
from tui.widgets.metrics_compare import MetricsCompare

SIZE = (120, 32)


def records(scale: float, steps: int = 12, tps: float = 1000.0) -> list[dict]:
    """A loss curve falling from ~4 to ~2 (times `scale`), val every 4th step: fixed numbers, so
    snapshots are stable."""
    out = []
    for i in range(1, steps + 1):
        step = i * 10
        train = round(scale * (2.0 + 2.0 / i), 4)
        out.append({"step": step, "tokens_seen": step * 256, "train_loss": train,
                    "val_loss": round(train + 0.1, 4) if i % 4 == 0 else None, "lr": 1e-3,
                    "tok_per_s": tps, "elapsed_s": step / 10})
    return out


def write_metrics(folder: Path, recs: list[dict]) -> None:
    with open(folder / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """base (done, 120 steps) vs wide (dim 96, lr 0.002; lower loss, half the speed, 80 steps)."""
    st = Store(tmp_path / "experiments")
    base = st.create("base", ExperimentConfig())
    wide = st.create("wide", config_mod.apply_overrides(
        ExperimentConfig(), ["model.dim=96", "train.lr=0.002"]))
    write_metrics(base.folder, records(1.0))
    write_metrics(wide.folder, records(0.9, steps=8, tps=500.0))
    base.update_meta(status="done")
    return st


class DiffHost(App):
    """Only the Diff screen (the home screen's `d` is the app's job), so snapshots show this
    screen's looks and nothing another screen's bindings add."""

    def __init__(self, store: Store, names: list[str]) -> None:
        super().__init__()
        self.store, self.names = store, names

    def on_mount(self) -> None:
        self.push_screen(DiffScreen(self.store, self.names))


async def settle(pilot: Pilot) -> None:
    """Workers done, messages handled, the plot's pending redraw drawn: no sleeps."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for plot in pilot.app.screen.query(LossPlot):
        while plot.pending:
            await pilot.pause(0.05)


def cell(table, row: str, col: str) -> str:
    return str(table.get_cell(row, col))


async def test_keys_toggle_keys_baseline_curve_smoothing_zoom(store):
    app = DiffHost(store, ["base", "wide"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        config, metrics, plot = (screen.query_one(ConfigDiff), screen.query_one(MetricsCompare),
                                 screen.query_one(LossPlot))
        # only the differing keys, then all of them, then back
        assert [str(k.value) for k in config.rows] == ["model.dim", "train.lr"]
        await pilot.press("a")
        assert config.row_count == len(ExperimentConfig().flat())
        await pilot.press("a")
        assert config.row_count == 2

        # wide's best val loss is lower than base's: a green negative delta against base
        best = metrics.get_cell("best_val_loss", "wide")
        assert best.plain == "2.1250  -0.1417 -6.3%"
        assert any("green" in str(span.style) for span in best.spans)
        assert str(metrics.columns[ColumnKey("base")].label) == "base (base)"
        assert cell(metrics, "status", "base") == "done"

        # b pins wide: base's loss is now a red positive delta; 1 picks base again
        await pilot.press("b")
        assert screen.baseline == "wide"
        back = metrics.get_cell("best_val_loss", "base")
        assert back.plain == "2.2667  +0.1417 +6.7%"
        assert any("red" in str(span.style) for span in back.spans)
        assert metrics.get_cell("best_val_loss", "wide").plain.strip() == "2.1250"
        assert str(metrics.columns[ColumnKey("wide")].label) == "wide (base)"
        await pilot.press("1")
        assert screen.baseline == "base"

        # val curves first (both runs have several val points), v flips to train
        await settle(pilot)
        assert screen.curve == "val"
        assert plot.series["base (base)"].steps == [40, 80, 120]
        assert plot.series["wide"].values == [2.35, 2.125]
        await pilot.press("v")
        await settle(pilot)
        assert screen.curve == "train" and len(plot.series["base (base)"].steps) == 12

        # s smooths at draw time; z drops the first quarter of the steps
        await pilot.press("s")
        assert plot.smoothing == pytest.approx(0.8)
        await pilot.press("s")
        assert plot.smoothing == 0.0
        await pilot.press("z")
        await settle(pilot)
        assert plot.series["base (base)"].steps[0] == 30  # 120 * 0.25
        assert plot.series["wide"].steps == [30, 40, 50, 60, 70, 80]


async def test_follows_a_growing_run_and_a_changed_config(store):
    app = DiffHost(store, ["base", "wide"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        metrics = screen.query_one(MetricsCompare)
        assert cell(metrics, "steps", "wide").startswith("80")
        # the run goes on: 4 more steps with a val point at step 120
        more = [r for r in records(0.8, steps=12, tps=500.0) if r["step"] > 80]
        write_metrics(store.folder("wide"), more)
        screen.on_files_changed("wide", {"metrics.jsonl"})
        await settle(pilot)
        assert cell(metrics, "steps", "wide").startswith("120")
        assert screen.query_one(LossPlot).series["wide"].steps == [40, 80, 120]
        # the held records were extended, not re-read: the tail is at the end of the file
        assert len(screen._records["wide"]) == 12
        # a config change shows up as a new differing key; a file the diff ignores does nothing
        exp = store.load("wide")
        exp.save_config(config_mod.apply_overrides(exp.config, ["train.warmup_steps=7"]))
        screen.on_files_changed("wide", {"train.log"})
        await settle(pilot)
        assert "train.warmup_steps" not in [str(k.value) for k in screen.query_one(ConfigDiff).rows]
        screen.on_files_changed("wide", {"config.toml", "meta.json"})
        await settle(pilot)
        assert "train.warmup_steps" in [str(k.value) for k in screen.query_one(ConfigDiff).rows]


async def test_damaged_experiment_is_reported_not_fatal(store):
    (store.folder("wide") / "meta.json").write_text("{")
    app = DiffHost(store, ["base", "wide"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = str(app.screen.query_one("#diff-status").render())
        assert "meta.json is damaged" in status
        # fixed on disk, `r` reads it again
        (store.folder("wide") / "meta.json").write_text(
            json.dumps({"name": "wide", "status": "stopped"}))
        await pilot.press("r")
        await settle(pilot)
        assert cell(app.screen.query_one(MetricsCompare), "status", "wide") == "stopped"


async def test_escape_goes_back_to_the_experiments_list(store):
    from tui.app import make_app
    from tui.screens.experiments import ExperimentsScreen

    app = make_app(str(store.root.parent))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        home = app.screen
        assert isinstance(home, ExperimentsScreen)
        app.push_screen(DiffScreen(app.store, ["base", "wide"]))
        await settle(pilot)
        assert isinstance(app.screen, DiffScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is home


def test_snapshot_default_view(store, snap_compare):
    assert snap_compare(DiffHost(store, ["base", "wide"]), terminal_size=SIZE, run_before=settle)


def test_snapshot_all_keys_wide_baseline_train_curves(store, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("a", "b", "v")
        await settle(pilot)

    assert snap_compare(DiffHost(store, ["base", "wide"]), terminal_size=SIZE,
                        run_before=run_before)

