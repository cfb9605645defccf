"""How the screens look (pytest-textual-snapshot): home, wizard, help, on fixed data.

Deterministic by construction: experiments with fixed dates (no "today" times), no running row (no
spinner frame), the workspace path (a temp folder) replaced in the header, no cursor blink.
`pytest tests/tui/test_snapshots.py --snapshot-update` rewrites them after a deliberate change.
"""

from __future__ import annotations

from textual.widgets import Input

from tests.tui.helpers import FIXED_NOW, make
from tui.app import make_app

SIZE = (120, 36)


def fixed(app) -> None:
    app.sub_title = "~/tinylm"
    for field in app.screen.query(Input):
        field.cursor_blink = False


def workspace_with_rows(store) -> None:
    make(store, "stories-260k", best_val_loss=2.4706, step=600, status="stopped", tags=["demo"],
         when=FIXED_NOW - 2 * 86400, blobs={"int8": {"size": 307_712}})
    make(store, "gru-byte", preset="gru-seed", status="done", best_val_loss=1.9812,
         when=FIXED_NOW - 5 * 86400, eval={"bits_per_byte": 1.402})
    make(store, "s3-big", preset="esp32s3-1m", overrides=["device.board=esp32"],
         when=FIXED_NOW - 9 * 86400, parent="stories-260k")
    (store.root / "half-copied").mkdir()  # damaged: no meta.json


def test_home(ws, store, snap_compare):
    workspace_with_rows(store)

    async def settle(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        fixed(pilot.app)

    assert snap_compare(make_app(str(ws), watch=False), terminal_size=SIZE, run_before=settle)


def test_wizard(ws, store, snap_compare):
    async def open_wizard(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.press("n")
        await pilot.press(*"tiny-1")
        pilot.app.screen.query_one("#f-model--n_kv_heads").value = "3"  # one inline problem
        await pilot.pause()
        pilot.app.screen.revalidate()  # now, not after the typing pause
        await pilot.pause()
        fixed(pilot.app)

    assert snap_compare(make_app(str(ws), watch=False), terminal_size=SIZE, run_before=open_wizard)


def test_wizard_on_an_80_column_terminal(ws, store, snap_compare):
    """Below 100 columns the fit meter (compact) goes above the form, which keeps the full width
    (side by side, the form got 30 columns and its labels wrapped a letter a line)."""
    async def open_wizard(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.press("n")
        await pilot.press(*"tiny-1")
        await pilot.pause()
        pilot.app.screen.revalidate()
        await pilot.pause()
        fixed(pilot.app)

    assert snap_compare(make_app(str(ws), watch=False), terminal_size=(80, 24),
                        run_before=open_wizard)


def test_help(ws, store, snap_compare):
    workspace_with_rows(store)

    async def open_help(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("question_mark")
        fixed(pilot.app)

    assert snap_compare(make_app(str(ws), watch=False), terminal_size=SIZE, run_before=open_help)
