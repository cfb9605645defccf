"""DevicePanel: the whole Device tab as one container — ports, the board's INFO, flashing, the
serial monitor and the three-way chat — so it can be a screen of its own (DeviceScreen) or a tab of
the experiment screen.

Why it is built this way: every port, esptool and torch call runs in a thread worker
(`@work(thread=True, exclusive=True, exit_on_error=False)`) that posts messages; the handlers only
update widgets. The port has one owner, the engine's BoardSession, held by a DeviceSession
(tui/workers/board_link.py) whose loop is itself a worker here: the engine's Monitor reads every
line on it, and INFO, reset, a flash (FlashPanel's worker) and a chat turn (ChatPanel's worker) each
get a DeviceLink on it. This panel owns the session, the experiment being deployed and the keys, and
decides whether a flash or a turn may start. Lines reach the serial monitor in batches taken ten
times a second, never as a message per line.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Input, Select, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from engine.config.workspace import Workspace
from engine.device.monitor import MonitorLine, MonitorStats
from engine.errors import TinyLMError
from engine.store.experiments import Store

from ..workers.board_link import BoardState, Closed, DeviceSession, Failed, Lost, Opened
from ..workers.device_jobs import QUANTS, Target, load_target
from ..workers.ports import PSEUDO, PortChoice, list_ports
from .board_panel import BoardPanel, Expected
from .chat_panel import ChatPanel
from .device_messages import PortsListed, SessionEvent, StateRead, TargetFailed, TargetLoaded
from .flash_panel import FlashPanel
from .port_picker import PortPicker
from .serial_monitor import SerialMonitor

FLUSH_S = 0.1  # the monitor takes what arrived ~10 times a second
FLASHABLE = ("esp32", "esp32-s3", "esp32-c3")
SERIES_POINTS = 600  # points kept per `label:value` series for the plot
PORTS_EVERY_S = 2.0  # the port list follows boards plugged in or started elsewhere (`tinylm board`)


NARROW_COLUMNS = 110  # below this the Chat tab hides the ports/board/flash column


class DevicePanel(Vertical):
    DEFAULT_CSS = """
    DevicePanel { height: 1fr; }
    DevicePanel > #dev-status { height: 1; padding: 0 1; background: $boost; }
    DevicePanel > #dev-body { height: 1fr; }
    DevicePanel #dev-left { width: 46; max-width: 38%; border-right: vkey $primary-darken-2; }
    /* narrow terminals: the Chat tab's three columns take the whole width (at 80 columns they got
       about 12 each beside the left column, and their stats filled them); the status line stays */
    DevicePanel.-narrow.-chat-tab #dev-left { display: none; }
    DevicePanel #dev-left > .dev-heading { padding: 0 1; text-style: bold; color: $accent; }
    /* no margin: the option list opens over the column's full width (with a margin the ports
       list's first column showed through beside it); the current value keeps its indent */
    DevicePanel #dev-exp { margin: 0; }
    DevicePanel #dev-exp > SelectCurrent, DevicePanel #dev-exp > SelectOverlay { padding: 0 1; }
    DevicePanel #dev-tabs { width: 1fr; }
    DevicePanel TabPane { padding: 0; }
    """

    BINDINGS = [
        Binding("c", "connect", "Connect", id="device.connect",
                tooltip="Connect to the highlighted port (or disconnect)"),
        Binding("d", "download_board", "Download", id="device.download",
                tooltip="Start a virtual ESP32 in ROM download mode and connect: flash with no "
                        "hardware"),
        Binding("i", "info", "Info", id="device.info", tooltip="Ask the board for INFO again"),
        Binding("f", "flash", "Flash", id="device.flash",
                tooltip="Write this experiment's blob to the board, then check INFO"),
        Binding("u", "next_quant", "Quant", id="device.quant",
                tooltip="Which blob: f32, int8 or ternary"),
        Binding("m", "show_monitor", "Monitor", id="device.monitor"),
        Binding("t", "show_chat", "Chat", id="device.chat", tooltip="Chat tab, prompt focused"),
        # on the Chat tab `t` is hidden (the tab is open) but still goes back to the prompt
        Binding("t", "focus_prompt", "Prompt", id="device.prompt", show=False,
                tooltip="Back to the chat prompt (after esc left it)"),
        Binding("space", "pause", "Pause", id="device.pause", key_display="␣",
                tooltip="Pause / resume the monitor (lines are still counted and saved)"),
        Binding("slash", "filter", "Filter", id="device.filter",
                tooltip="Filter the monitor by text or regex"),
        Binding("T", "timestamps", "Times", id="device.timestamps",
                tooltip="Show or hide the host timestamps"),
        Binding("ctrl+l", "clear", "Clear", id="device.clear", tooltip="Clear the monitor"),
        Binding("ctrl+r", "reset_board", "Reset", id="device.reset",
                tooltip="Reset the board (DTR/RTS on a serial port, @RESET elsewhere)"),
        Binding("s", "toggle_save", "Save", id="device.save",
                tooltip="Save the board's lines to the experiment's device.log (on/off)"),
        Binding("g", "toggle_plot", "Plot", id="device.plot", show=False,
                tooltip="Show or hide the plot of label:value series (it shows itself when the "
                        "board prints one)"),
        # the port list and the experiment box are always on screen, and the plot shows itself:
        # their keys are in the command palette, not the footer (no room left at 130 columns)
        Binding("p", "ports", "Ports", id="device.ports", show=False,
                tooltip="Refresh the port list and move to it"),
        Binding("e", "pick_experiment", "Experiment", id="device.experiment", show=False,
                tooltip="Pick the experiment to deploy"),
        Binding("escape", "stop", "Stop", id="device.stop",
                tooltip="Stop the chat turn (all three streams) or the flash; leave a text box"),
    ]
    MONITOR_ACTIONS = {"pause", "filter", "timestamps", "clear", "toggle_save", "toggle_plot"}

    @dataclass
    class ExperimentChosen(Message):
        """The panel now deploys this experiment (a screen shows it in its title)."""
        name: str

    # ---- building --------------------------------------------------------------------------------

    def __init__(self, store: Store, workspace: Workspace, name: str | None = None, *,
                 ports: Callable[[], list[PortChoice]] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.workspace = workspace
        self.exp_name = name
        self.ports_source = ports or (lambda: list_ports(workspace.root))
        self.target: Target | None = None
        self.quant: str | None = None
        self.session: DeviceSession | None = None
        self._notes: list[MonitorLine] = []  # the tab's own lines (connected to …), in order
        self._series: dict[str, tuple[int, collections.deque[tuple[float, float]]]] = {}
        self._t0 = 0.0  # the plot's x axis: seconds since connecting
        self.connected = False
        self.lost = False
        self.flashing = False
        self.chatting = False
        self.last_turn: Any = None  # the TurnResult of the last turn that ran (None if it failed)
        self._timer: Any = None
        self._ports_seen = False  # the first listing highlights the default port; later ones keep

    def compose(self) -> ComposeResult:
        yield Static("", id="dev-status")
        with Horizontal(id="dev-body"):
            with VerticalScroll(id="dev-left"):
                yield Select([], prompt="experiment", id="dev-exp", compact=True)
                yield Static("Ports", classes="dev-heading")
                yield PortPicker(id="dev-ports")
                yield Static("Board", classes="dev-heading")
                yield BoardPanel(id="dev-board")
                yield Static("Flash", classes="dev-heading")
                yield FlashPanel(id="dev-flash")
            with TabbedContent(id="dev-tabs", initial="dev-monitor"):
                with TabPane("Monitor", id="dev-monitor"):
                    yield SerialMonitor(id="dev-mon")
                with TabPane("Chat", id="dev-chat"):
                    yield ChatPanel(id="dev-chatpanel")

    @property
    def picker(self) -> PortPicker:
        return self.query_one(PortPicker)

    @property
    def board(self) -> BoardPanel:
        return self.query_one(BoardPanel)

    @property
    def flash_panel(self) -> FlashPanel:
        return self.query_one(FlashPanel)

    @property
    def monitor(self) -> SerialMonitor:
        return self.query_one(SerialMonitor)

    @property
    def chat(self) -> ChatPanel:
        return self.query_one(ChatPanel)

    def on_mount(self) -> None:
        self.picker.set_ports(list(PSEUDO))
        self.board.show_disconnected()
        self.chat.set_enabled(False, "connect to a board first")
        self.monitor.show_stats(MonitorStats(0, 0, 0, 0.0, False, False, 0), False)
        self._status(Text("not connected: pick a port and press enter (d: a virtual ESP32 in "
                          "download mode)", style="dim"))
        self._timer = self.set_interval(FLUSH_S, self._flush_monitor, pause=True)
        names = sorted(self.store.names())
        select = self.query_one("#dev-exp", Select)
        select.set_options([(n, n) for n in names])
        if self.exp_name in names:
            select.value = self.exp_name
        self._list_ports()
        self.set_interval(PORTS_EVERY_S, self._poll_ports)
        if self.exp_name:
            self._load_target(self.exp_name)
        else:
            self.flash_panel.show_nothing("no experiment: e picks the one whose blob to flash")
        self.picker.focus_list()

    def on_unmount(self) -> None:
        """Leaving: the board (and a pseudo port's process) stop with the session's worker."""
        if self.session is not None:
            self.session.stop()

    # ---- experiment ------------------------------------------------------------------------------

    @on(Select.Changed, "#dev-exp")
    def _experiment_picked(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str) and event.value != self.exp_name:
            self.set_experiment(event.value)

    def set_experiment(self, name: str) -> None:
        """Deploy another experiment (the experiment screen calls this when its tab opens)."""
        self.exp_name = name
        self.quant = None
        self.flash_panel.clear_result()
        self.post_message(self.ExperimentChosen(name))
        self._load_target(name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-target")
    def _load_target(self, name: str) -> None:
        try:
            self.post_message(TargetLoaded(load_target(self.store, name)))
        except TinyLMError as e:
            self.post_message(TargetFailed(name, str(e)))

    @on(TargetLoaded)
    def _target_loaded(self, event: TargetLoaded) -> None:
        if event.target.name != self.exp_name:
            return  # another experiment was picked meanwhile
        self.target = event.target
        if self.quant is None:
            self.quant = event.target.default_quant
        self._show_target()

    @on(TargetFailed)
    def _target_failed(self, event: TargetFailed) -> None:
        if event.name == self.exp_name:
            self.target = None
            self.flash_panel.refuse(f"{event.name}: {event.error}")
            self.notify(event.error, title=event.name, severity="error", timeout=8)

    def _show_target(self) -> None:
        t, q = self.target, self.quant
        if t is None or q is None:
            return
        qt = t.quants[q]
        self.flash_panel.show_target(q, qt.size, qt.sha, qt.verdict, qt.fits, qt.advice)
        if self.board.state is not None:
            self.board.show(self.board.state, self._expected())
        self.chat.set_turns(t.turns)
        self.chat.columns.set_labels(q, self.session.choice.value if self.session else "")
        self._refresh_chat_enabled()

    def _expected(self) -> Expected | None:
        if self.target is None or self.quant is None:
            return None
        return Expected(self.target.name, self.quant, self.target.blobs)

    def _blob_path(self) -> Any:
        t, q = self.target, self.quant
        if t is None or q is None or not t.quants[q].sha:
            return None
        return self.store.folder(t.name) / f"model.{q}.bin"

    # ---- ports and the session -------------------------------------------------------------------

    def _poll_ports(self) -> None:
        """Only while someone can see the list (not under another screen or in a hidden tab)."""
        if self.screen.is_current and self.picker.is_on_screen:
            self._list_ports()

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-ports")
    def _list_ports(self) -> None:
        self.post_message(PortsListed(self.ports_source()))

    @on(PortsListed)
    def _ports_listed(self, event: PortsListed) -> None:
        first, self._ports_seen = not self._ports_seen, True
        self.picker.set_ports(event.ports)
        if first:  # start on the port the experiment (or the workspace) names
            self.picker.select(self.target.port if self.target and self.target.port
                               else self.workspace.default_port)

    @on(PortPicker.Chosen)
    def _port_chosen(self, event: PortPicker.Chosen) -> None:
        event.stop()
        self.picker.focus_list()  # out of the text box: the panel's letter keys work again
        self.connect(event.choice)

    def connect(self, choice: PortChoice) -> None:
        """Open `choice` for the session (closing the current one first)."""
        if self.session is not None:
            self.disconnect()
        t = self.target
        chip = t.board if t is not None and t.board in FLASHABLE else "esp32"
        self._series, self._t0 = {}, time.time()
        session = DeviceSession(choice,
                                on_event=lambda e: self.post_message(SessionEvent(session, e)),
                                log_path=self.store.folder(t.name) / "device.log" if t else None,
                                baud=t.baud if t else 115200, blob=self._blob_path(), chip=chip)
        self.session = session
        self.connected = self.lost = False
        self._status(Text(f"connecting to {choice.value}…", style="cyan"))
        self.board.show_disconnected(f"connecting to {choice.value}…")
        self.chat.columns.set_labels(self.quant or "", choice.value)
        self._timer.resume()
        self._run_session(session)

    def disconnect(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        self.chat.stop()
        session.stop()
        self.connected = self.lost = False
        self.board.show_disconnected(f"disconnected from {session.choice.value}")
        self._status(Text(f"disconnected from {session.choice.value}", style="dim"))
        self.monitor.set_enabled(True)
        self._refresh_chat_enabled()

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-session")
    def _run_session(self, session: DeviceSession) -> None:
        worker = get_current_worker()
        session.run(lambda: worker.is_cancelled)

    @on(SessionEvent)
    def _session_event(self, message: SessionEvent) -> None:
        if message.session is not self.session:
            return  # from a session already closed
        e = message.event
        if isinstance(e, Opened):
            self.connected, self.lost = True, False
            where = e.port if e.port == e.path else f"{e.port} ({e.path})"
            self._status(Text.assemble(("● ", "bold green"), f"connected to {where}",
                                       (f" · reopened {e.why}" if e.why else "", "green")))
            self._show_state(e.state)
            self.monitor.set_enabled(True)
            self._note(f"connected to {where}" + (f" ({e.why})" if e.why else ""))
        elif isinstance(e, Lost):
            self.connected, self.lost = False, True
            self._status(Text.assemble(
                ("⚠ port lost ", "bold white on red"),
                f" {e.port}: {_short(e.reason)} — reconnecting"
                + (f" (attempt {e.attempt})" if e.attempt > 1 else "")))
            self.monitor.set_enabled(False)  # the engine's Monitor wrote the loss in the log
        elif isinstance(e, Failed):
            self.session = None
            self._status(Text(f"could not connect to {e.port}: {e.message}", style="bold red"))
            self.board.show_disconnected(f"could not connect to {e.port}")
            self.notify(e.message, title="connect", severity="error", timeout=8)
        elif isinstance(e, Closed):
            self.session = None
            self.connected = False
        self._refresh_chat_enabled()

    @on(StateRead)
    def _state_read(self, message: StateRead) -> None:
        if message.session is self.session:
            self._show_state(message.state)

    def _show_state(self, state: BoardState) -> None:
        self.board.show(state, self._expected())
        self._refresh_chat_enabled()

    def _refresh_chat_enabled(self) -> None:
        if self.lost:
            self.chat.set_enabled(False, "the port is lost; waiting for it to come back")
        elif not self.connected:
            self.chat.set_enabled(False, "connect to a board first")
        elif self.target is None:
            self.chat.set_enabled(False, "pick an experiment (e)")
        else:
            self.chat.set_enabled(True)
        if self.board.current.matches:
            self.chat.clear_refusal()
        self.refresh_bindings()  # Info and Reset need a board that answers
        self.call_after_refresh(self._keep_focus)

    def _keep_focus(self) -> None:
        """A disabled prompt drops the focus, and with no focus the panel's keys are dead: give
        it to the port list."""
        if self.is_attached and self.screen.is_active and self.app.focused is None:
            self.picker.focus_list()

    # ---- the monitor -----------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        """A line of the tab's own in the monitor (neither counted nor saved)."""
        self._notes.append(MonitorLine(time.time(), f"── {text} ──", "!"))

    def _flush_monitor(self) -> None:
        session = self.session
        if session is None:
            return
        lines = session.take()
        if self._notes:  # in time order with the board's lines
            lines = sorted(lines + self._notes, key=lambda ln: ln.t)
            self._notes = []
        if lines:
            self.monitor.ingest(lines)
        failed = session.saving_failed()
        if failed:
            self.notify(failed, title="device.log", severity="error", timeout=10)
        self.monitor.show_stats(session.stats(), session.saving)
        self.monitor.show_series(self._take_series(session))

    def _take_series(self, session: DeviceSession) -> dict[str, tuple[int, list[Any]]]:
        """{label: (version, points)}: the engine's new points appended to the plot's window."""
        for label, points in session.take_series().items():
            version, kept = self._series.get(label, (0, collections.deque(maxlen=SERIES_POINTS)))
            kept.extend((t - self._t0, v) for t, v in points)
            self._series[label] = (version + 1, kept)
        return {k: (ver, list(pts)) for k, (ver, pts) in self._series.items()}

    # ---- board commands --------------------------------------------------------------------------

    def _session_or_refuse(self, what: str) -> DeviceSession | None:
        if self.session is None or not self.connected:
            why = "the port is lost" if self.lost else "not connected"
            self.notify(f"{what}: {why} — pick a port and press enter", title="device",
                        severity="warning")
            return None
        return self.session

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-cmd")
    def _read_state(self, session: DeviceSession, reset: bool) -> None:
        try:
            state = session.reset() if reset else session.read_state()
        except (TinyLMError, OSError) as e:
            state = BoardState(None, str(e))
        self.post_message(StateRead(session, state))

    # ---- flashing --------------------------------------------------------------------------------

    def start_flash(self) -> None:
        if self.flashing:
            self.notify("already flashing (esc stops it)", title="flash")
            return
        if self.target is None or self.quant is None:
            self.flash_panel.refuse("pick an experiment first (e)")
            return
        qt = self.target.quants[self.quant]
        if not qt.fits:  # before anything is exported, opened or written
            advice = f"; try {'; '.join(qt.advice[:3])}" if qt.advice else ""
            self.flash_panel.refuse(qt.verdict + advice)
            return
        session = self._session_or_refuse("flash")
        if session is None:
            self.flash_panel.refuse("connect to a board first (d starts a virtual ESP32 in "
                                    "download mode)")
            return
        if self.chatting:
            self.flash_panel.refuse("a chat turn is running (esc stops it)")
            return
        self._set_busy(flashing=True)
        how = ("esptool has the port until it is done" if session.choice.kind in
               ("serial", "download") else "an upload over the protocol")
        self._note(f"flashing the {self.quant} blob of {self.target.name}: {how}")
        self.flash_panel.run(session, self.store, self.target, self.quant)

    @on(FlashPanel.Finished)
    def _flash_finished(self, message: FlashPanel.Finished) -> None:
        self._note(("flash refused: " if message.refused else "flash done: " if message.ok else
                    "flash failed: ") + message.text.split("; ")[-1][:100])
        self._set_busy(flashing=False)
        session = self.session
        if message.ok and session is not None and session.choice.kind not in ("serial",
                                                                                "download"):
            self._read_state(session, False)  # after an upload; esptool's reopen asks itself
        if self.exp_name:
            self._load_target(self.exp_name)  # an export may have written a blob

    # ---- chat ------------------------------------------------------------------------------------

    @on(ChatPanel.Send)
    def _chat_send(self, message: ChatPanel.Send) -> None:
        message.stop()
        refusal = self._chat_refusal()
        if refusal:
            self.chat.refuse(*refusal)
            return
        assert self.session is not None and self.target is not None and self.quant is not None
        self._set_busy(chatting=True)
        self.chat.run_turn(self.session, self.store, self.workspace, self.target.name,
                           message.prompt, message.params, self.quant)

    @on(ChatPanel.TurnEnded)
    def _turn_ended(self, message: ChatPanel.TurnEnded) -> None:
        self._set_busy(chatting=False)
        self.last_turn = message.result
        if message.result is not None and self.exp_name:
            self._load_target(self.exp_name)  # the transcript has a new turn

    def _chat_refusal(self) -> tuple[str, bool] | None:
        """Why a turn cannot run now, and whether flashing fixes it."""
        if self.chatting:
            return "a turn is running: esc stops it", False
        if self.flashing:
            return "flashing: wait for it to finish", False
        if self.target is None or self.quant is None:
            return "pick an experiment first (e)", False
        if self.session is None or not self.connected:
            return ("the port is lost; waiting for it to come back" if self.lost else
                    "connect to a board first"), False
        b = self.board.current
        if not b.matches:
            what = b.text if b.kind != "none" else (self.board.state.note if self.board.state
                                                    else "no model")
            return (f"refusing to chat against the wrong model ({what}). Flash it: f writes the "
                    f"{self.quant} blob of {self.target.name}"), True
        return None

    @on(ChatPanel.FlashIt)
    def _flash_it(self, message: ChatPanel.FlashIt) -> None:
        message.stop()
        self.start_flash()

    # ---- worker errors ---------------------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A worker died of something that is not a TinyLMError (those become messages): say so.
        The flash and chat panels also reset themselves and post their end."""
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.group}: {event.worker.error}", title="device",
                        severity="error", timeout=8)

    # ---- keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The footer shows what applies now: the monitor's keys on the Monitor tab, the other
        tab's key, and Esc only while something can be stopped or a text box left (else Esc is
        the screen's Back)."""
        try:
            tab = self.query_one(TabbedContent).active
        except NoMatches:
            return True
        if action in self.MONITOR_ACTIONS:
            return tab == "dev-monitor"
        if action == "show_monitor":
            return tab != "dev-monitor"
        if action == "show_chat":
            return tab != "dev-chat"
        if action == "focus_prompt":
            return tab == "dev-chat"
        if action == "stop":
            return self.chatting or self.flashing or isinstance(self.app.focused, Input)
        if action in ("info", "reset_board"):
            return True if self.connected else None  # shown, dimmed, until a board answers
        return True

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self.set_class(self.query_one(TabbedContent).active == "dev-chat", "-chat-tab")
        self._focus_off_hidden_column()
        self.refresh_bindings()

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW_COLUMNS, "-narrow")
        self._focus_off_hidden_column()

    def _focus_off_hidden_column(self) -> None:
        """A hidden column must not keep the focus (its keys would go nowhere): the tab strip
        takes it (and the chat prompt, when a board makes it usable, right after)."""
        focused = self.app.focused
        if self._left_hidden() and focused is not None and self.query_one("#dev-left") in (
                focused, *focused.ancestors):
            self._focus_tabs()

    def _focus_tabs(self) -> None:
        self.query_one(TabbedContent).query_one("Tabs").focus()

    def _set_busy(self, *, chatting: bool | None = None, flashing: bool | None = None) -> None:
        if chatting is not None:
            self.chatting = chatting
        if flashing is not None:
            self.flashing = flashing
        self.refresh_bindings()  # Esc means Stop now, or Back again

    def action_connect(self) -> None:
        if self.session is not None:
            self.disconnect()
            return
        choice = self.picker.highlighted
        if choice is None:
            self.notify("no port highlighted", title="connect", severity="warning")
            return
        self.connect(choice)

    def action_download_board(self) -> None:
        self.picker.select("download")
        self.connect(next(p for p in PSEUDO if p.kind == "download"))

    def action_info(self) -> None:
        session = self._session_or_refuse("info")
        if session is not None:
            self._read_state(session, False)

    def action_reset_board(self) -> None:
        session = self._session_or_refuse("reset")
        if session is not None:
            self._read_state(session, True)

    def action_flash(self) -> None:
        self.start_flash()

    def action_next_quant(self) -> None:
        q = self.quant or QUANTS[0]
        self.quant = QUANTS[(QUANTS.index(q) + 1) % len(QUANTS)]
        self._show_target()
        if self.target is None:
            self.flash_panel.refuse("pick an experiment first (e)")

    def action_show_monitor(self) -> None:
        self.query_one(TabbedContent).active = "dev-monitor"

    def action_show_chat(self) -> None:
        self.query_one(TabbedContent).active = "dev-chat"
        self.call_after_refresh(self.chat.focus_prompt)  # focusable once the pane is shown

    def action_focus_prompt(self) -> None:
        self.chat.focus_prompt()

    def action_pause(self) -> None:
        self.monitor.toggle_pause()

    def action_filter(self) -> None:
        self.query_one(TabbedContent).active = "dev-monitor"
        self.monitor.open_filter()

    def action_timestamps(self) -> None:
        self.monitor.toggle_timestamps()

    def action_clear(self) -> None:
        self.monitor.clear()

    def action_toggle_save(self) -> None:
        session = self.session
        if session is None:
            self.notify("connect first: the log is saved per session", title="monitor")
            return
        session.set_saving(not session.saving)
        if session.log_path is None:
            self.notify("pick an experiment: device.log lives in its folder", title="monitor",
                        severity="warning")
        self.monitor.show_stats(session.stats(), session.saving)

    def action_toggle_plot(self) -> None:
        self.monitor.toggle_plot()

    def _left_hidden(self) -> bool:
        return self.has_class("-narrow") and self.has_class("-chat-tab")

    def _in_left(self, focus: Callable[[], object]) -> None:
        """Focus something in the left column; on a narrow Chat tab, which hides the column, go
        back to the Monitor first and focus once the column is shown again."""
        if self._left_hidden():
            self.action_show_monitor()
            self.call_after_refresh(focus)
        else:
            focus()

    def action_ports(self) -> None:
        self._list_ports()
        self._in_left(self.picker.focus_list)

    def action_pick_experiment(self) -> None:
        self._in_left(self.query_one("#dev-exp", Select).focus)

    def action_stop(self) -> None:
        """Esc: stop what runs; else leave a text box; else let the screen have it (back)."""
        if self.chatting:
            self.chat.stop()
        elif self.flashing:
            self.flash_panel.stop()
        elif isinstance(self.app.focused, Input):
            if self._left_hidden():  # the port list is not on screen: the tabs take the keys
                self._focus_tabs()
            else:
                self.picker.focus_list()
        else:
            raise SkipAction()  # only reached if check_action let it through: the screen's Back

    # ---- status ----------------------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#dev-status", Static).update(text, layout=False)  # one line, always


def _short(reason: str) -> str:
    """pyserial's loss messages are long; the first clause says it."""
    return reason.split(" (device disconnected")[0]
