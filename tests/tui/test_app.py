from __future__ import annotations

from textual.widgets import DataTable

from engine.config.schema import ExperimentConfig
from engine.store.experiments import Store
from tui.app import make_app


async def test_experiments_screen_lists_folders_and_refreshes(tmp_path):
    store = Store(tmp_path / "experiments")
    store.create("alpha", ExperimentConfig())
    app = make_app(str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1
        assert table.get_row("alpha")[0] == "alpha" and table.get_row("alpha")[2] == "260K"
        store.create("beta", ExperimentConfig())
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.row_count == 2
        await pilot.press("q")
