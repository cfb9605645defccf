"""KeyBar: the live keys of the focused widget and its screen, one widget, clickable."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Input

from tui.widgets.key_bar import KeyBar

TABS = Binding.Group("Tabs", compact=True)


class Box(Input):
    BINDINGS = [Binding("ctrl+y", "yank", "Yank", id="box.yank")]


class KeysApp(App):
    BINDINGS = [
        Binding("1", "pick('one')", "One", group=TABS),
        Binding("2", "pick('two')", "Two", group=TABS),
        Binding("g", "pick('g')", "Go"),
        Binding("h", "pick('hidden')", "Hidden", show=False),
        Binding("x", "pick('x')", "Off"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.picked: list[str] = []

    def compose(self) -> ComposeResult:
        yield Box(id="box")
        yield KeyBar()

    def action_pick(self, what: str) -> None:
        self.picked.append(what)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return None if parameters == ("x",) else True  # None: shown, dimmed, not runnable


async def test_shows_the_live_keys_and_a_click_presses_one():
    app = KeysApp()
    async with app.run_test(size=(100, 5)) as pilot:
        bar = app.query_one(KeyBar)
        app.set_focus(None)
        await pilot.pause()
        shown = bar.shown
        assert shown["g"] == "Go" and shown["x"] == "Off" and "h" not in shown
        assert shown["1"] == "" and shown["2"] == ""  # folded into "1 2 Tabs"
        assert "ctrl+y" not in shown
        line = bar.render().plain
        assert "1 2 Tabs" in line and "^p palette" in line.rstrip()[-12:]
        go = next(p for p in bar._placed if p.item.key == "g")
        await pilot.click(KeyBar, offset=(go.start + 1, 0))
        assert app.picked == ["g"]
        off = next(p for p in bar._placed if p.item.key == "x")
        await pilot.click(KeyBar, offset=(off.start, 0))
        assert app.picked == ["g"]  # a disabled key only rings the bell

        app.query_one(Box).focus()  # the focused widget's keys join the bar
        await pilot.pause()
        assert bar.shown.get("ctrl+y") == "Yank"


async def test_keys_that_do_not_fit_are_left_out_after_tightening():
    app = KeysApp()
    async with app.run_test(size=(30, 5)) as pilot:
        app.set_focus(None)
        await pilot.pause()
        bar = app.query_one(KeyBar)
        line = bar.render().plain
        assert len(line) <= 30 and line.rstrip().endswith(" ^p palette")  # never glued to a key
        assert "1 2 Tabs g Go" in line  # one space apart once two do not fit
        assert "x Off" not in line  # left out: the palette still lists it
