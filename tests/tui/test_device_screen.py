"""Device screen: every key and action against real boards — the virtual board (the C firmware on a
pty), the download-mode board flashed through esptool's Python API, a pty of our own flooded with
noise — on a copy of the shipped demo-260k with its int8 blob exported in the setup. Plus snapshots
of the tab's looks with fixed data."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
import tty
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.console import Console
from textual import events
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from engine.blob.export import export
from engine.chat.streams import ChatEvent
from engine.config import schema as config_mod
from engine.config.workspace import Workspace, load_workspace
from engine.device.emulated import QEMU, RV_CC
from engine.device.virtual import VirtualBoard
from engine.store.experiments import Store
from tui.screens.device import DeviceScreen
from tui.widgets.binding_commands import BindingCommands
from tui.widgets.board_panel import Expected
from tui.widgets.chat_columns import ChatColumns
from tui.widgets.device_messages import FlashProgress
from tui.widgets.device_panel import DevicePanel
from tui.widgets.serial_monitor import SeriesPlot
from tui.workers.board_link import BoardState
from tui.workers.ports import PSEUDO, PortChoice

REPO = Path(__file__).resolve().parents[2]
SIZE = (130, 40)
DEMO = "demo-260k"


def pseudo_ports() -> list[PortChoice]:
    return list(PSEUDO)  # the machine's own serial ports stay out of the tests


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Workspace]:
    """A workspace holding a copy of demo-260k with its int8 blob exported."""
    root = tmp_path_factory.mktemp("device-ws")
    shutil.copytree(REPO / "experiments" / DEMO, root / "experiments" / DEMO)
    ws = load_workspace(root)
    store = Store(ws.experiments)
    export(store.load(DEMO), "int8")
    return store, ws


class DeviceHost(App):
    """Only the Device screen (the home screen's `D` is the app's job)."""

    def __init__(self, store: Store, ws: Workspace, name: str | None,
                 ports: Callable[[], list[PortChoice]] = pseudo_ports) -> None:
        super().__init__()
        self.store, self.ws, self.name_, self.ports = store, ws, name, ports

    def on_mount(self) -> None:
        self.push_screen(DeviceScreen(self.store, self.ws, self.name_, ports=self.ports))


async def until(pilot: Pilot, cond: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Wait on state (never a fixed sleep); fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await pilot.pause(0.05)


CHARS = {"space": " ", "slash": "/", "enter": "\r", "escape": "\x1b"}


async def keys(pilot: Pilot, *names: str) -> None:
    """Key presses as the terminal driver posts them, without Pilot.press's wait for an idle
    process: a flood or a chat turn keeps this process busy, and each press would wait out ~2 s."""
    for name in names:
        char = CHARS.get(name, name if len(name) == 1 else None)
        pilot.app.post_message(events.Key(name, char))
        await pilot.pause(0)


async def type_into(pilot: Pilot, box: Input, text: str) -> None:
    """Focus a text box, put `text` in it and press enter."""
    box.focus()
    box.value = text
    await keys(pilot, "enter")


def text_of(widget: Static) -> str:
    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(content)
    return console.file.getvalue()


async def opened(pilot: Pilot, name: str = DEMO) -> DevicePanel:
    panel = pilot.app.screen.query_one(DevicePanel)
    await until(pilot, lambda: panel.target is not None and panel.target.name == name,
                "the experiment loaded")
    return panel


async def connect_virtual(pilot: Pilot) -> DevicePanel:
    panel = await opened(pilot)
    await until(pilot, lambda: panel.picker.highlighted is not None
                and panel.picker.highlighted.value == "virtual", "virtual highlighted")
    await pilot.press("enter")
    await until(pilot, lambda: panel.connected, "connected to the virtual board")
    return panel


def status(panel: DevicePanel) -> str:
    return text_of(panel.query_one("#dev-status", Static))


async def test_connect_info_reset_tabs_quant_palette_restart_disconnect(demo):
    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await connect_virtual(pilot)
        # INFO panel: the board's model, and the badge against this experiment's int8 blob
        info = text_of(panel.board)
        assert panel.board.current.kind == "matches"
        assert "✓ matches demo-260k (int8)" in info
        assert "transformer int8" in info and "128 tokens" in info and "vocab 512" in info
        sha = store.load(DEMO).meta["blobs"]["int8"]["sha256"]
        assert sha[:12] in info
        assert "connected to virtual" in status(panel)

        # i asks again: a second @INFO line reaches the monitor
        await until(pilot, lambda: any(ln.text.startswith("@INFO") for ln in panel.monitor.kept),
                    "the INFO reply in the monitor")
        before = sum(ln.text.startswith("@INFO") for ln in panel.monitor.kept)
        await pilot.press("i")
        await until(pilot, lambda: sum(ln.text.startswith("@INFO") for ln in panel.monitor.kept)
                    > before, "a second INFO")

        # ctrl+r resets the board (@RESET on a pty): it comes back @READY and is asked again
        before = sum(ln.text.startswith("@READY") for ln in panel.monitor.kept)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: sum(ln.text.startswith("@READY") for ln in panel.monitor.kept)
                    > before, "the board's @READY after the reset")
        assert any(ln.text.startswith("@OK") for ln in panel.monitor.kept)

        # t / m switch the tabs; p goes back to the port list, e to the experiment box
        tabs = panel.query_one("#dev-tabs")
        await pilot.press("t")
        assert tabs.active == "dev-chat"
        await pilot.press("escape")  # out of the prompt
        await pilot.press("m")
        assert tabs.active == "dev-monitor"
        await pilot.press("e")
        assert panel.query_one("#dev-exp").has_focus
        panel.picker.focus_list()
        await pilot.press("p")
        assert panel.picker.query_one(OptionList).has_focus

        # u cycles the quant: the board's int8 is then "another blob of this experiment"
        await pilot.press("u")
        assert panel.quant == "ternary" and panel.board.current.kind == "other-quant"
        await pilot.press("u")
        assert panel.quant == "f32"
        await pilot.press("u")
        assert panel.quant == "int8" and panel.board.current.matches

        # the command palette lists the actions by name, those the footer leaves out too; Esc is
        # Back while nothing runs
        provider = BindingCommands(pilot.app.screen)
        names = [c[0] for c in provider._commands()]
        assert {"Flash (f)", "Connect (c)", "Plot (g)", "Ports (p)", "Back (esc)"} <= set(names)
        assert "Stop (esc)" not in names

        # the session's board dies: a status line, the monitor off, then the board is back. The
        # screen is read as each session event leaves it: the board restarts within ~0.1 s, and
        # a busy machine can let the loss and the reopening land between two polls
        seen: list[tuple[bool, str, bool, bool]] = []
        after_event = panel._refresh_chat_enabled

        def record() -> None:
            after_event()
            seen.append((panel.lost, status(panel), panel.monitor.enabled,
                         panel.chat.query_one("#chat-prompt", Input).disabled))

        panel._refresh_chat_enabled = record
        panel.session.board.proc.kill()
        await until(pilot, lambda: any(lost for lost, *_ in seen), "the loss seen")
        _, shown, monitor_on, prompt_off = next(s for s in seen if s[0])
        assert "port lost" in shown and not monitor_on and prompt_off
        await until(pilot, lambda: panel.connected, "the virtual board restarted")
        assert "reopened after a loss" in status(panel) and panel.monitor.enabled
        assert panel.board.current.matches

        # c disconnects (and stops the board)
        session = panel.session
        await pilot.press("c")
        assert panel.session is None and "disconnected" in status(panel)
        await until(pilot, lambda: session.board is None, "the board stopped")


@pytest.mark.skipif(shutil.which(RV_CC) is None or shutil.which(QEMU) is None,
                    reason="rv32 toolchain / qemu not installed (CI installs them)")
async def test_port_list_follows_boards_started_elsewhere(demo):
    """A board plugged in (or a `tinylm board` started in another terminal) after the tab opened
    shows up without a key; the highlighted port stays where the user put it."""
    store, ws = demo
    ports = list(PSEUDO)
    async with DeviceHost(store, ws, DEMO, ports=lambda: list(ports)).run_test(size=SIZE) as pilot:
        panel = await opened(pilot)
        await until(pilot, lambda: panel.picker.highlighted is not None, "a port highlighted")
        panel.picker.select("rv32")
        ports.insert(0, PortChoice("/dev/pts/99", "/dev/pts/99  ESP32 in download mode", "serial"))
        await until(pilot, lambda: "/dev/pts/99" in [c.value for c in panel.picker.choices],
                    "the new port listed", timeout=15)
        assert panel.picker.highlighted.value == "rv32"


async def test_experiment_list_opens_over_the_whole_left_column(demo):
    """The experiment picker's list covers the column edge to edge: with a margin, the port list's
    first character showed through beside every option (seen with 1,000 experiments)."""
    from textual.widgets import Select
    from textual.widgets._select import SelectOverlay

    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await opened(pilot)
        select = panel.query_one("#dev-exp", Select)
        select.focus()
        select.expanded = True
        overlay = select.query_one(SelectOverlay)
        await until(pilot, lambda: overlay.display and overlay.region.width > 0, "the list open")
        left = panel.query_one("#dev-left")
        assert overlay.region.x == left.content_region.x
        assert overlay.region.right >= left.content_region.right


async def test_chat_takes_the_whole_width_of_a_narrow_terminal(demo):
    """At 80 columns the Chat tab hides the ports/board/flash column (the three chat columns got
    12 columns each beside it); the Monitor tab, the left column's own keys and wide terminals
    bring or keep it. (No board here: the chat prompt is disabled, keys go to the panel.)"""
    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=(80, 24)) as pilot:
        panel = await opened(pilot)
        left = panel.query_one("#dev-left")
        assert left.display
        await keys(pilot, "t")
        await until(pilot, lambda: not left.display, "the left column hidden on the Chat tab")
        await until(pilot, lambda: panel.query_one("#col-device").size.width >= 20,
                    "chat columns of a third of the width")
        await keys(pilot, "m")
        await until(pilot, lambda: left.display, "the left column back on the Monitor tab")
        await keys(pilot, "t")
        await until(pilot, lambda: not left.display, "hidden again on the Chat tab")
        await keys(pilot, "p")  # the port list's key brings the column back, focused
        await until(pilot, lambda: left.display and panel.picker.has_focus_within,
                    "the port list shown and focused")
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await opened(pilot)
        await keys(pilot, "t")
        await until(pilot, lambda: panel.has_class("-chat-tab"), "the Chat tab")
        assert panel.query_one("#dev-left").display


async def test_rv32_board_shows_instructions_and_the_esp32c3_projection(demo):
    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await opened(pilot)
        panel.picker.select("rv32")
        await pilot.press("enter")
        await until(pilot, lambda: panel.connected, "the rv32 board under qemu", timeout=60)
        info = text_of(panel.board)
        assert panel.board.current.matches and "rv32 · fw" in info
        p = panel.board.state.projected
        assert p is not None and p["instructions_per_token"] > 0
        assert f"{p['instructions_per_token']:,.0f} instr/token" in info
        assert f"≈ {p['ms_per_token']:.1f} ms/token" in info and "ESP32-C3" in info


async def test_flash_through_the_download_mode_board(demo):
    store, ws = demo
    progress: list[Any] = []

    def hook(message: Any) -> None:
        if isinstance(message, FlashProgress):
            progress.append(message)

    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE, message_hook=hook) as pilot:
        panel = await opened(pilot)
        await pilot.press("d")
        await until(pilot, lambda: panel.connected, "the download-mode board")
        assert "download mode" in text_of(panel.board)
        assert panel.board.current.kind == "none"

        await keys(pilot, "f")
        await until(pilot, lambda: panel.flashing, "the flash started")
        await until(pilot, lambda: not panel.flashing, "the flash finished", timeout=60)
        result = text_of(panel.flash_panel.query_one("#flash-result", Static))
        assert "verified on the board" in result, result
        assert panel.flash_panel.percent == pytest.approx(100.0)
        assert progress and progress[-1].done == progress[-1].total == 307176
        assert "KB/s" in text_of(panel.flash_panel.query_one("#flash-rate", Static))
        # the session reopens the port: the app booted from the flash, INFO matches
        await until(pilot, lambda: panel.board.current.matches, "the badge turning to matches")
        assert "reopened after flashing" in status(panel)


async def test_flash_refused_before_writing_when_it_does_not_fit(demo):
    store, ws = demo
    big = config_mod.apply_overrides(config_mod.ExperimentConfig(),
                                     ["model.dim=512", "model.n_layers=12", "device.board=esp32"])
    store.create("too-big", big)
    async with DeviceHost(store, ws, "too-big").run_test(size=SIZE) as pilot:
        panel = await opened(pilot, "too-big")
        assert "does not fit esp32" in text_of(panel.flash_panel.query_one("#flash-budget", Static))
        await pilot.press("f")  # refused before a port is even needed
        result = text_of(panel.flash_panel.query_one("#flash-result", Static))
        assert result.startswith("refused: does not fit esp32")
        assert "try" in result and not panel.flashing


class Flood:
    """Noise at ~2,000 lines/s into a pty we own (no protocol: what a monitor shows)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            lines = []
            for _ in range(20):
                n = self.sent + len(lines)
                lines.append(b"temp:%d\n" % (n % 50) if n % 10 == 0 else
                             b"\xff bad byte %d\n" % n if n % 97 == 0 else
                             b"seq=%d noise from the flood\n" % n)
            try:
                os.write(self.master, b"".join(lines))
                self.sent += len(lines)
            except BlockingIOError:
                pass  # nobody reading right now: these lines were never sent
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


async def test_monitor_flood_filter_pause_timestamps_clear_save_plot(demo):
    store, ws = demo
    flood = Flood()
    try:
        async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
            panel = await opened(pilot)
            flood.thread.start()
            await type_into(pilot, panel.picker.query_one("#port-typed", Input), flood.path)
            await until(pilot, lambda: panel.session is not None and len(panel.monitor.kept) > 500,
                        "flood lines in the monitor")
            mon, log = panel.monitor, panel.monitor.log_widget
            assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} ", log.lines[-1])  # timestamps by default
            assert any("\\xff bad byte" in ln.text for ln in mon.kept)  # bad UTF-8 shown escaped
            await until(pilot, lambda: panel.connected, "INFO given up on (noise only)")
            assert "no answer to INFO" in text_of(panel.board)

            # / filters (a regex); only matching lines are drawn from then on
            await keys(pilot, "slash")
            box = mon.query_one("#mon-filter", Input)
            await until(pilot, lambda: box.has_focus, "the filter box")
            await type_into(pilot, box, "temp:[0-9]+")
            await until(pilot, lambda: mon.filter_text == "temp:[0-9]+", "the filter applied")
            await until(pilot, lambda: len(log.lines) > 20, "filtered lines")
            assert all("temp:" in ln for ln in log.lines)

            # space pauses: the Log stands still while lines keep being counted
            await keys(pilot, "space")
            await until(pilot, lambda: mon.paused, "paused")
            frozen, total = len(log.lines), panel.session.stats().lines
            await until(pilot, lambda: panel.session.stats().lines > total + 300 and mon.held > 300,
                        "lines counted while paused")
            assert len(log.lines) == frozen
            await keys(pilot, "space")
            await until(pilot, lambda: not mon.paused, "resumed")
            assert len(log.lines) > frozen

            # T hides the timestamps; ctrl+l clears
            await keys(pilot, "T")
            await until(pilot, lambda: not mon.timestamps, "timestamps off")
            assert log.lines[-1].startswith("temp:")
            kept, shown = len(mon.kept), len(log.lines)
            await keys(pilot, "ctrl+l")  # what arrives after the clear is drawn again
            await until(pilot, lambda: len(mon.kept) < kept // 2, "cleared")
            assert len(mon.kept) < kept // 2 and len(log.lines) < shown // 2

            # label:value lines became a series on the plot; g hides it
            plot = mon.query_one(SeriesPlot)
            await until(pilot, lambda: "temp" in plot.series, "the temp series")
            assert plot.has_class("shown")
            await keys(pilot, "g")
            await until(pilot, lambda: not plot.has_class("shown"), "the plot hidden")

            # the counters: nothing dropped, a rate near the flood's
            stats = panel.session.stats()
            assert stats.dropped == 0 and stats.lines_per_s > 200

            # s stops saving to device.log
            device_log = store.folder(DEMO) / "device.log"
            await until(pilot, lambda: device_log.exists() and device_log.stat().st_size > 0,
                        "device.log written")
            await keys(pilot, "s")
            await until(pilot, lambda: not panel.session.saving, "saving off")
            size, total = device_log.stat().st_size, panel.session.stats().lines
            await until(pilot, lambda: panel.session.stats().lines > total + 200, "more lines")
            assert device_log.stat().st_size == size
            assert b"seq=" in device_log.read_bytes()
    finally:
        flood.close()


async def test_chat_three_columns_greedy_history_and_stop(demo):
    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await connect_virtual(pilot)
        turns_before = len(panel.target.turns)
        await pilot.press("t")
        panel.chat.knobs.set(temperature=0, max_tokens=12)
        prompt = panel.chat.query_one("#chat-prompt", Input)
        assert prompt.has_focus
        await type_into(pilot, prompt, "Once upon a time")
        await until(pilot, lambda: panel.last_turn is not None and not panel.chatting,
                    "the turn finished", timeout=60)
        cols = panel.chat.query_one(ChatColumns)
        texts = {s: cols.text_of(s) for s in ("torch", "reference", "device")}
        assert all(texts.values()), texts
        assert texts["device"] == texts["reference"]
        assert cols.cols["device"].ids == cols.cols["reference"].ids
        assert len(cols.cols["device"].ids) == 12
        verdict = text_of(cols.query_one("#chat-verdict", Static))
        assert "device = reference for all 12 tokens" in verdict
        stats = text_of(cols.query_one("#stats-device", Static))
        assert "12 tokens" in stats and "ms/token" in stats and "tok/s" in stats
        assert stats.rstrip().endswith("· max tokens"), stats  # why it ended, in words

        # the engine wrote the transcript; the history shows the new turn
        day = sorted((store.folder(DEMO) / "chats").glob("*.jsonl"))[-1]
        last = json.loads(day.read_text().splitlines()[-1])
        assert last["prompt"] == "Once upon a time"
        assert last["streams"]["device"]["ids"] == last["streams"]["reference"]["ids"]
        await until(pilot, lambda: len(panel.chat.turns) == turns_before + 1, "the history")

        # esc leaves the prompt (the panel's letter keys work again); t on the Chat tab comes back
        await keys(pilot, "escape")
        await until(pilot, lambda: not prompt.has_focus, "esc left the prompt")
        await keys(pilot, "t")
        await until(pilot, lambda: prompt.has_focus, "t on the Chat tab focused the prompt")

        # esc stops all three (the numpy reference is the slow one: it is still running)
        panel.chat.knobs.set(temperature=0.8, max_tokens=120)
        await keys(pilot, "enter")
        await until(pilot, lambda: panel.chatting, "the second turn started")
        await keys(pilot, "escape")
        await until(pilot, lambda: not panel.chatting, "the stopped turn", timeout=60)
        assert "(stopped)" in text_of(cols.query_one("#chat-verdict", Static))
        assert len(cols.cols["reference"].ids) < 120

        # a turn from the history comes back into the columns
        history = panel.chat.query_one("#chat-history", OptionList)
        await until(pilot, lambda: len(panel.chat.turns) == turns_before + 2, "both turns")
        history.focus()
        history.highlighted = turns_before
        await keys(pilot, "enter")
        await until(pilot, lambda: "'Once upon a time'" in text_of(
            cols.query_one("#chat-verdict", Static)), "the replayed turn")
        assert "'Once upon a time'" in text_of(cols.query_one("#chat-verdict", Static))
        assert cols.text_of("device") == texts["device"]


async def test_chat_refused_on_another_model_then_flash_it(demo):
    store, ws = demo
    async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
        panel = await connect_virtual(pilot)
        await pilot.press("u")  # ternary: the board holds the int8 blob
        assert panel.quant == "ternary" and not panel.board.current.matches
        await pilot.press("t")
        panel.chat.knobs.set(temperature=0, max_tokens=8)
        await type_into(pilot, panel.chat.query_one("#chat-prompt", Input), "Once upon a time")
        verdict_box = panel.chat.columns.query_one("#chat-verdict", Static)
        await until(pilot, lambda: text_of(verdict_box), "the refusal")
        assert not panel.chatting
        verdict = text_of(verdict_box)
        assert "refusing to chat against the wrong model" in verdict and "Flash it" in verdict
        button = panel.chat.query_one("#chat-flash-it")
        assert button.has_class("shown")

        await pilot.click("#chat-flash-it")  # exports the ternary blob, uploads it, checks INFO
        result_box = panel.flash_panel.query_one("#flash-result", Static)
        await until(pilot, lambda: not panel.flashing and "flashing" not in text_of(result_box),
                    "the flash", timeout=90)
        result = text_of(result_box)
        assert "verified on the board" in result, result
        await until(pilot, lambda: panel.board.current.matches, "ternary on the board")
        assert not button.has_class("shown")

        panel.chat.focus_prompt()
        await keys(pilot, "enter")
        await until(pilot, lambda: panel.last_turn is not None and not panel.chatting, "the turn",
                    timeout=60)
        cols = panel.chat.columns
        assert cols.cols["device"].ids == cols.cols["reference"].ids
        assert len(cols.cols["device"].ids) == 8


async def test_board_killed_mid_chat_and_plugged_back(demo, tmp_path):
    """A port path that vanishes and comes back (a /dev/serial/by-id style symlink re-pointed at
    a new board), killed while the device column streams."""
    store, ws = demo
    blob = tmp_path / "model.int8.bin"
    shutil.copyfile(store.folder(DEMO) / "model.int8.bin", blob)
    link = tmp_path / "ttyBOARD"
    first = VirtualBoard(blob=blob, us_per_token=20000).start()
    second = None
    link.symlink_to(first.port)
    try:
        async with DeviceHost(store, ws, DEMO).run_test(size=SIZE) as pilot:
            panel = await opened(pilot)
            await type_into(pilot, panel.picker.query_one("#port-typed", Input), str(link))
            await until(pilot, lambda: panel.connected, "connected through the symlink")
            await pilot.press("t")
            panel.chat.knobs.set(temperature=0, max_tokens=100)
            await type_into(pilot, panel.chat.query_one("#chat-prompt", Input), "Once upon a time")
            cols = panel.chat.columns
            await until(pilot, lambda: len(cols.cols["device"].ids) >= 2, "device tokens")
            first.proc.kill()  # unplugged mid-generation
            await until(pilot, lambda: not panel.chatting, "the turn ended")
            assert "lost the board" in text_of(cols.query_one("#chat-verdict", Static))
            await until(pilot, lambda: panel.lost, "the port lost")
            assert "port lost" in status(panel)
            assert panel.chat.query_one("#chat-prompt", Input).disabled
            assert not panel.monitor.enabled

            second = VirtualBoard(blob=blob).start()  # plugged back in
            fresh = tmp_path / "ttyBOARD.new"
            fresh.symlink_to(second.port)
            fresh.replace(link)
            await until(pilot, lambda: panel.connected, "the port back")
            assert "reopened after a loss" in status(panel)
            assert not panel.chat.query_one("#chat-prompt", Input).disabled
            panel.chat.knobs.set(max_tokens=6)
            panel.chat.focus_prompt()
            await keys(pilot, "enter")
            await until(pilot, lambda: panel.last_turn is not None and not panel.chatting,
                        "a turn on the replugged board")
            assert len(cols.cols["device"].ids) == 6
            assert cols.cols["device"].ids == cols.cols["reference"].ids
    finally:
        first.stop()
        if second is not None:
            second.stop()


# ---- snapshots ------------------------------------------------------------------------------------

SNAP_PORTS = [PortChoice("/dev/ttyUSB0", "/dev/ttyUSB0  CP210x 10c4:ea60", "serial"), *PSEUDO]
INFO = {"fw": "0.1.0", "proto": "1", "arch": "transformer", "quant": "int8", "dim": "64",
        "layers": "5", "heads": "8", "kv_heads": "4", "vocab": "512", "ctx": "128",
        "blob_size": "307176", "blob_sha": "ab" * 32, "ram": "178212", "flash": "307176",
        "heap": "149000", "board": "esp32"}


@pytest.fixture
def snap_store(tmp_path: Path) -> tuple[Store, Workspace]:
    """demo-260k with no blob exported: no generated sha256 anywhere on screen."""
    shutil.copytree(REPO / "experiments" / DEMO, tmp_path / "experiments" / DEMO)
    ws = load_workspace(tmp_path)
    return Store(ws.experiments), ws


async def settle(pilot: Pilot) -> None:
    panel = pilot.app.screen.query_one(DevicePanel)
    await until(pilot, lambda: panel.target is not None, "the experiment loaded")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_snapshot_first_view(snap_store, snap_compare):
    store, ws = snap_store
    app = DeviceHost(store, ws, DEMO, ports=lambda: list(SNAP_PORTS))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_snapshot_board_flash_and_chat(snap_store, snap_compare):
    """The panels filled with fixed data: INFO of a board holding another model, a finished
    flash, and a chat turn whose device column diverges at token 2."""
    store, ws = snap_store

    async def fill(pilot: Pilot) -> None:
        await settle(pilot)
        panel = pilot.app.screen.query_one(DevicePanel)
        panel.board.show(BoardState(INFO), Expected(DEMO, "int8", {"int8": "cd" * 32}))
        panel.flash_panel.progress(307176, 307176, "blob")
        panel.flash_panel.finish("wrote 300.0 KB at 0x110000 of the esp32, MD5 checked", True)
        await pilot.press("t")
        cols = panel.chat.columns
        cols.set_labels("int8", "/dev/ttyUSB0")
        cols.begin("Once upon a time")
        pieces = [",", " there", " was", " a", " little", " girl"]
        events = [ChatEvent(s, i, 100 + i + (50 if s == "device" and i >= 2 else 0), p,
                     0.01 * (i + 1) + {"torch": 0.5, "reference": 0.2, "device": 0.05}[s])
                  for s in ("torch", "reference", "device") for i, p in enumerate(pieces)]
        cols.add(events)
        await pilot.pause()

    app = DeviceHost(store, ws, DEMO, ports=lambda: list(SNAP_PORTS))
    assert snap_compare(app, terminal_size=SIZE, run_before=fill)



async def test_device_is_reached_from_home_and_is_a_tab_of_the_experiment_screen(snap_store):
    """`D` on the home screen opens the Device screen on the highlighted experiment; `5` on the
    experiment screen shows the same panel as a tab, its keys live there."""
    from tui.app import make_app
    from tui.screens.device import DeviceScreen
    from tui.screens.experiment import ExperimentScreen
    from tui.widgets.device_panel import DevicePanel

    store, ws = snap_store
    app = make_app(str(ws.root), watch=False)
    async with app.run_test(size=(130, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("D")
        await pilot.pause()
        assert isinstance(app.screen, DeviceScreen) and app.screen.exp_name == "demo-260k"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ExperimentScreen), "experiment screen")
        await pilot.press("5")
        await until(pilot, lambda: app.screen.query(DevicePanel), "device tab mounted")
        await pilot.pause()
        panel = app.screen.query_one(DevicePanel)
        assert panel.exp_name == "demo-260k" and panel.picker.has_focus_within
