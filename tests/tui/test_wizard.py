"""The new-experiment wizard: engine validation inline, the fit meter live, Create refused while
anything is invalid, and the new experiment selected on the home screen."""

from __future__ import annotations

from tests.tui.helpers import wait_for
from tui.app import make_app
from tui.screens.experiments import ExperimentsScreen
from tui.screens.wizard import NewExperimentScreen
from tui.widgets.experiments_table import ExperimentsTable
from tui.widgets.fit_meter import FitMeter


def text(screen, selector: str) -> str:
    return screen.query_one(selector).render().plain


async def test_wizard_validates_shows_the_fit_and_creates(ws, store):
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        await pilot.press("n")
        wiz = app.screen
        assert isinstance(wiz, NewExperimentScreen)
        meter = wiz.query_one(FitMeter)
        assert "esp32: fits" in meter.plain  # the default preset on the default board
        assert wiz.query_one("#create").disabled  # no name yet
        await pilot.press(*"small")
        wiz.query_one("#f-model--n_kv_heads").value = "3"
        await wait_for(pilot, lambda: wiz.problems.get("model.n_kv_heads"))
        assert "must divide model.n_heads = 8" in text(wiz, "#f-model--n_kv_heads-problem")
        await pilot.press("ctrl+s")  # refused: still a wizard, nothing on disk
        assert app.screen is wiz and not (store.root / "small").exists()
        wiz.query_one("#f-model--n_kv_heads").value = "4"
        wiz.query_one("#f-model--dim").value = "512"  # too big for an ESP32: the meter says so
        await wait_for(pilot, lambda: "does not fit" in meter.plain)
        assert "to make it fit, try" in meter.plain
        wiz.query_one("#f-model--dim").value = "64"
        wiz.query_one("#f-train--max_steps").value = "300"
        await wait_for(pilot, lambda: not wiz.problems and "esp32: fits" in meter.plain)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentsScreen)
                       and app.screen.query_one(ExperimentsTable).selected == "small")
    exp = store.load("small")
    assert exp.config.train.max_steps == 300 and exp.meta["preset"] == "esp32-260k"


async def test_preset_choice_refills_the_fields(ws, store):
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        await pilot.press("n")
        wiz = app.screen
        wiz.query_one("#preset").focus()
        await pilot.press("right")  # esp32-260k → gru-seed
        await wait_for(pilot, lambda: wiz.query_one("#f-model--arch").value == "gru")
        assert wiz.query_one("#f-tokenizer--vocab_size").value == "256"
        await wait_for(pilot, lambda: "esp32-c3" in wiz.query_one(FitMeter).plain)
