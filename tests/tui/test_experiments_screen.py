"""The home screen with the real store on a temp workspace: keys, the disk followed in place,
damage."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.atomic import atomic_write_json
from engine.store.experiments import Store
from tests.tui.helpers import cli_env, make, wait_for
from tui.app import make_app
from tui.messages import RowsRead
from tui.screens.diff import DiffScreen
from tui.screens.edit_config import EditConfigScreen
from tui.screens.experiment import ExperimentScreen
from tui.screens.experiments import ExperimentsScreen
from tui.screens.prompt import PromptScreen
from tui.widgets.experiments_table import ExperimentsTable

SIZE = (120, 36)


def table_of(app) -> ExperimentsTable:
    return app.screen_stack[1].query_one(ExperimentsTable)


def cell(app, name: str, column: str) -> str:
    return str(table_of(app).get_cell(name, column))


async def test_rows_use_the_shared_formatter_and_damage_is_shown_not_fatal(ws, store):
    make(store, "alpha", tags=["demo"], best_val_loss=2.5)
    (store.root / "nometa").mkdir()
    (store.root / "torn").mkdir()
    (store.root / "torn" / "meta.json").write_text('{"status": "ne')
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        table = await wait_for(pilot, lambda: app.screen.loaded and table_of(app))
        assert table.row_count == 3
        assert cell(app, "alpha", "best_val") == "2.5000" and cell(app, "alpha", "params") == "260K"
        assert cell(app, "alpha", "model") == "esp32-260k"
        assert cell(app, "alpha", "fits") == "✓ esp32"
        assert cell(app, "torn", "status") == "DAMAGED"
        assert cell(app, "nometa", "status") == "DAMAGED"
        table.select("torn")
        await pilot.press("enter")  # opening a damaged folder explains instead of crashing
        await pilot.pause()
        assert isinstance(app.screen, ExperimentsScreen)
        assert "damaged" in app.screen.query_one("#detail").render().plain


async def test_disk_changes_by_another_process_update_rows_in_place(ws, store):
    make(store, "alpha")
    make(store, "beta")
    reads: list[RowsRead] = []
    app = make_app(str(ws))
    async with app.run_test(size=SIZE, message_hook=lambda m: isinstance(m, RowsRead)
                            and reads.append(m)) as pilot:
        table = await wait_for(pilot, lambda: app.screen.loaded and table_of(app))
        table.select("alpha")
        await pilot.press("space")  # mark alpha (the cursor moves down to beta)
        assert table.marks == {"alpha"}
        cursor = table.selected
        # the CLI, in its own process, creates an experiment: the watcher brings it in
        subprocess.run([sys.executable, "-m", "engine", "-w", str(ws), "new", "gamma"],
                       check=True, env=cli_env(), capture_output=True)
        await wait_for(pilot, lambda: "gamma" in table.summaries)
        # another writer changes alpha's meta: that row only is updated
        meta = json.loads((store.root / "alpha" / "meta.json").read_text())
        atomic_write_json(store.root / "alpha" / "meta.json", meta | {"best_val_loss": 1.25})
        await wait_for(pilot, lambda: cell(app, "alpha", "best_val") == "1.2500")
        # a folder removed behind our back disappears
        Store(store.root).archive("beta")
        await wait_for(pilot, lambda: "beta" not in table.shown_names())
        assert table.marks == {"alpha"} and table.selected in (cursor, "gamma", "alpha")
        assert [m.complete for m in reads].count(True) == 1  # one full read at start, never again


async def test_keys_mark_diff_open_clone_tag_note_archive_filter_sort(ws, store):
    make(store, "alpha", when=1_700_000_000)
    make(store, "beta", tags=["x"], when=1_700_100_000)
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        table = await wait_for(pilot, lambda: app.screen.loaded and table_of(app))
        assert table.shown_names() == ["beta", "alpha"]  # newest first
        await pilot.press("O")
        assert table.shown_names() == ["alpha", "beta"]
        await pilot.press("o")  # next column: tags
        assert table.sort_column == "tags"
        # enter opens the experiment screen
        table.select("alpha")
        await pilot.press("enter")
        assert isinstance(app.screen, ExperimentScreen) and app.screen.exp_name == "alpha"
        await pilot.press("escape")
        # c clones: prompt, a name, enter → the copy exists and is selected
        table.select("alpha")
        await pilot.press("c")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("ctrl+u", *"delta", "enter")
        await wait_for(pilot, lambda: table.selected == "delta")
        assert store.load("delta").meta["parent"] == "alpha"
        # d with nothing marked: the selected one and its parent
        await pilot.press("d")
        assert isinstance(app.screen, DiffScreen) and app.screen.names == ["delta", "alpha"]
        await pilot.press("escape")
        # space marks two, d diffs them in table order
        table.select("beta")
        await pilot.press("space")
        table.select("alpha")
        await pilot.press("space")
        await pilot.press("d")
        assert isinstance(app.screen, DiffScreen) and set(app.screen.names) == {"alpha", "beta"}
        await pilot.press("escape")
        # t sets tags, N notes
        table.select("alpha")
        await pilot.press("t", *"fast tiny", "enter")
        await wait_for(pilot, lambda: store.load("alpha").meta["tags"] == ["fast", "tiny"])
        await pilot.press("N", *"first try", "ctrl+s")
        await wait_for(pilot, lambda: store.load("alpha").meta["notes"] == "first try")
        # a archives (hidden), A shows archived ones
        await pilot.press("a")
        await wait_for(pilot, lambda: store.load("alpha").meta["archived"])
        await wait_for(pilot, lambda: "alpha" not in table.shown_names())
        await pilot.press("A")
        assert "alpha" in table.shown_names()
        # / filters by name, tag or status; escape clears
        await pilot.press("slash", *"tag:x")
        assert table.shown_names() == ["beta"]
        await pilot.press("escape")
        assert len(table.shown_names()) == 3


async def test_edit_config_form_validates_inline_and_saves(ws, store):
    make(store, "alpha")
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        await pilot.press("e")
        assert isinstance(app.screen, EditConfigScreen)
        heads = app.screen.query_one("#f-model--n_heads")
        heads.value = "7"
        await wait_for(pilot, lambda: app.screen.config is None)
        problem = app.screen.query_one("#f-model--dim-problem").render().plain
        assert "divisible by model.n_heads = 7" in problem
        await pilot.press("ctrl+s")  # refused while invalid
        assert isinstance(app.screen, EditConfigScreen)
        await pilot.press("escape")  # typed-in edits: leaving asks first
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("n")  # keep editing
        assert isinstance(app.screen, EditConfigScreen)
        heads.value = "4"
        await wait_for(pilot, lambda: app.screen.config is not None)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentsScreen))
        assert store.load("alpha").config.model.n_heads == 4


async def test_quit_asks_only_when_a_form_would_be_lost(ws, store):
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        await pilot.press("n")
        await pilot.press(*"half-done")  # typed into the wizard's name field
        await pilot.press("ctrl+q")
        assert "ConfirmScreen" == type(app.screen).__name__  # asked
        await pilot.press("n")  # stay
        assert type(app.screen).__name__ == "NewExperimentScreen"
        await pilot.press("escape", "y")  # drop the form
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentsScreen))
        await pilot.press("q")  # nothing to lose: no question
        await pilot.pause()
    assert app.return_code == 0


async def test_help_and_palette_offer_every_key(ws, store):
    make(store, "alpha")
    app = make_app(str(ws), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded)
        home = app.screen
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        listed = {key: what for key, what, _more in app.screen.rows}
        assert listed["⏎"] == "Open" and listed["?"] == "Help" and listed["q"] == "Quit"
        assert {b.description for b in home.BINDINGS} <= set(listed.values())
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.press(*"clone")
        await wait_for(pilot, lambda: "Clone (c)" in str(app.screen.query_one("CommandList")
                                                         .get_option_at_index(0).prompt))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
