"""Keys that start real engine work from the home screen: a real training subprocess started,
stopped and resumed (r, s, R), and a real blob export (x). The run lives in its own process, so the
app only watches its folder."""

from __future__ import annotations

from engine.store.lock import pid_alive
from engine.store.metrics import METRICS_NAME
from tests.tui.helpers import TINY, copy_demo, make, wait_for
from tui.app import make_app
from tui.screens.experiments import ExperimentsScreen
from tui.screens.export import ExportScreen
from tui.widgets.experiments_table import ExperimentsTable


def status_of(app, name: str) -> str:
    return app.screen_stack[1].query_one(ExperimentsTable).summaries[name].status


async def test_run_survives_the_app_then_stop_and_resume_from_the_keyboard(ws, store):
    make(store, "tiny", overrides=TINY + ["train.max_steps=100000"])
    app = make_app(str(ws))
    async with app.run_test(size=(120, 36)) as pilot:
        table = await wait_for(pilot, lambda: app.screen.loaded
                               and app.screen.query_one(ExperimentsTable))
        table.select("tiny")
        await pilot.press("r")
        await wait_for(pilot, lambda: status_of(app, "tiny") == "running", timeout=60)
        assert "running: tiny" in app.screen.query_one("#status").render().plain
        # past its first steps, so a stop leaves a checkpoint to resume from
        await wait_for(pilot, lambda: (store.root / "tiny" / METRICS_NAME).exists(), timeout=60)
        await pilot.press("q")  # nothing unsaved: quits at once; the run is not ours to end
    pid = store.load("tiny").meta["pid"]
    assert pid_alive(pid)
    app = make_app(str(ws))  # a new app finds the run and follows it
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        assert status_of(app, "tiny") == "running"
        await pilot.press("s")
        await wait_for(pilot, lambda: status_of(app, "tiny") == "stopped", timeout=60)
        step = store.load("tiny").meta["step"]
        assert step > 0 and (store.root / "tiny" / "ckpt.pt").exists()
        await pilot.press("R")
        await wait_for(pilot, lambda: status_of(app, "tiny") == "running", timeout=60)
        await pilot.press("s")
        await wait_for(pilot, lambda: status_of(app, "tiny") == "stopped", timeout=60)
    assert not pid_alive(pid) and store.load("tiny").meta["step"] >= step
    assert "resume" in (store.root / "tiny" / "train.log").read_text()


async def test_export_writes_the_blob_and_the_row_shows_it(ws, store):
    copy_demo(store, "demo")
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=(120, 36)) as pilot:
        table = await wait_for(pilot, lambda: app.screen.loaded
                               and app.screen.query_one(ExperimentsTable))
        assert table.get_cell("demo", "blob").plain == "- int8"
        await pilot.press("x")
        assert isinstance(app.screen, ExportScreen)
        await pilot.press("x")  # export with the configured quant (int8)
        await wait_for(pilot, lambda: app.screen.wrote, timeout=60)
        assert "wrote model.int8.bin" in app.screen.query_one("#result").render().plain
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentsScreen)
                       and table.get_cell("demo", "blob").plain.endswith("KB int8"))
    assert (store.root / "demo" / "model.int8.bin").stat().st_size > 100_000
