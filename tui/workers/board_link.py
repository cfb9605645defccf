"""The Device tab's hold on a port, on the engine's BoardSession (engine/device/session.py): that
session is the port's one owner and one reader; the engine's Monitor is the serial monitor's
subscriber (counts, device.log through the session's DeviceLog, `label:value` series); commands
(INFO, reset, a flash's upload, a chat turn) each get a DeviceLink on the same session.

What is left here because only the app needs it:
- pseudo ports: `virtual`, `rv32` and `download` start a board for the tab, and when it dies
  (the virtual counterpart of an unplug) a new one is started and the tab moves to it;
- one command at a time: the board answers one command at a time, so `exclusive()` serialises
  the tab's workers (INFO vs a chat turn) — the monitor keeps reading all the while;
- esptool opens the port itself: `released()` closes the session for it and opens a new one after;
- what the tab shows on (re)connect: INFO read into a BoardState (and on rv32 the ESP32-C3
  projection), posted as plain dataclasses the panel turns into messages.
`run()` is the loop; the tab calls it inside a Textual thread worker. No Textual import.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.device.link import DeviceError, DeviceLink, TokenEvent
from engine.device.monitor import Monitor, MonitorLine, MonitorStats
from engine.device.session import BoardSession, PortBack, PortLost, SerialLine
from engine.errors import Failure, TinyLMError, UserError

from .ports import PortChoice

RESTART_S = (0.25, 0.5, 1.0, 2.0)  # between attempts to restart a pseudo board; the last repeats
PROBE_TOKENS = 8  # rv32: tokens generated at connect to count instructions per token
BOOT_S = 1.5  # a real board reset by the port opening prints @READY within this


@dataclass(frozen=True)
class BoardState:
    """What INFO said (None when it did not answer), in a sentence when it did not, and on rv32
    the projected ESP32-C3 speed."""
    info: dict[str, str] | None
    note: str = ""
    projected: dict[str, float] | None = None


@dataclass(frozen=True)
class Opened:
    port: str  # what the user picked
    path: str  # what was opened (the pty of a pseudo port)
    state: BoardState
    again: bool = False  # not the first open of this session
    why: str = ""  # why it was (re)opened: "", "after a loss", "after flashing", "it restarted"


@dataclass(frozen=True)
class Lost:
    port: str
    reason: str
    attempt: int  # 1 at the loss; counts restarts of a pseudo board that failed


@dataclass(frozen=True)
class Failed:
    """The first open failed: the session is over (nothing was ever connected to wait for)."""
    port: str
    message: str


@dataclass(frozen=True)
class Closed:
    port: str


class DeviceSession:
    """`DeviceSession(choice, on_event=post, log_path=...).run(should_stop)` in a thread."""

    def __init__(self, choice: PortChoice, *, on_event: Callable[[Any], None],
                 log_path: Path | None = None, baud: int = 115200, blob: Path | None = None,
                 chip: str = "esp32", info_timeout: float = 2.0) -> None:
        self.choice = choice
        self.on_event = on_event
        self.log_path = log_path
        self.saving = log_path is not None
        self.baud = baud
        self.blob = blob
        self.chip = chip
        self.info_timeout = info_timeout
        self.path = "" if choice.pseudo else choice.value
        self.port: BoardSession | None = None  # the engine session on `path`
        self.monitor: Monitor | None = None
        self.board: Any = None  # the BoardProcess of a pseudo port
        self.in_download_mode = choice.kind == "download"  # until something was flashed
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._cmd = threading.Lock()  # one command at a time on the board
        self._cmd_end = 0.0  # time.time() when the last command ended: its READY is not news
        self._ctl: Any = None  # the loop's subscription: port events and @READY
        self._stop = threading.Event()
        self._release = threading.Event()
        self._released = threading.Event()
        self._swap = threading.Lock()  # the UI reads the monitor while the loop replaces it
        self._carry: list[MonitorLine] = []  # lines of a monitor replaced before they were taken
        self._base = (0, 0, 0)  # lines, dropped, losses of the monitors replaced

    # ---- the owner loop (a worker thread) ------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        stopped = lambda: self._stop.is_set() or should_stop()  # noqa: E731
        try:
            try:
                self._attach()
            except (TinyLMError, OSError) as e:
                self.on_event(Failed(self.choice.value, str(e)))
                return
            self._post_opened(False, "")
            while not stopped():
                if self._release.is_set():
                    self._hand_over(stopped)
                    continue
                if self._ctl is None:  # could not open it again after a flash: keep trying
                    self._reattach(stopped)
                    continue
                ev = self._ctl.get(timeout=0.05)
                if isinstance(ev, PortLost):
                    self.on_event(Lost(self.choice.value, ev.reason, 1))
                    if self.choice.pseudo:
                        self._restart_board(stopped)
                elif isinstance(ev, PortBack):
                    self._post_opened(True, "after a loss")
                elif isinstance(ev, SerialLine) and self._restarted(ev):
                    self._post_opened(True, "it restarted")
        finally:
            got = self._cmd.acquire(timeout=10.0)  # a command still using the port ends first
            self._detach()
            if got:
                self._cmd.release()
            self._stop_board()
            if self._tmp is not None:
                self._tmp.cleanup()
            self.on_event(Closed(self.choice.value))

    def stop(self) -> None:
        self._stop.set()

    def _restarted(self, ev: SerialLine) -> bool:
        """An @READY nobody asked for: the board restarted on its own (its EN button)."""
        return (ev.raw.lstrip().startswith(b"@READY") and ev.t > self._cmd_end
                and not self._cmd.locked())

    def _attach(self) -> None:
        """Start a pseudo port's board if needed, open the engine session and its monitor."""
        if self.choice.pseudo and (self.board is None or self._board_exit() is not None):
            self._start_board()
        port = BoardSession(self.path, self.baud, log_path=self.log_path if self.saving else None,
                            reconnect=not self.choice.pseudo)  # a pseudo board is restarted here
        ctl = port.subscribe(maxsize=100, want=_control)
        monitor = Monitor(port).start()  # subscribed before opening: a READY at once is seen
        try:
            port.open()
        except BaseException:
            monitor.stop()
            ctl.close()
            raise
        self._ctl = ctl
        with self._swap:
            self.port, self.monitor = port, monitor

    def _detach(self) -> None:
        """Close the engine session; what its monitor held and counted carries over."""
        with self._swap:
            port, monitor, self.port, self.monitor = self.port, self.monitor, None, None
        if monitor is not None:
            monitor.stop()  # joins its thread: not under the lock the UI's take() waits on
            s = monitor.stats()
            with self._swap:
                self._carry.extend(monitor.take())
                self._base = (self._base[0] + s.lines, self._base[1] + s.dropped,
                              self._base[2] + s.losses)
        if port is not None:
            port.close()
        self._ctl = None

    def _post_opened(self, again: bool, why: str) -> None:
        try:
            with self.exclusive() as link:
                state = self._state(link)
        except (TinyLMError, OSError) as e:  # lost again while asking: the loop hears PortLost
            state = BoardState(None, str(e))
        self.on_event(Opened(self.choice.value, self.path, state, again, why))

    def _restart_board(self, stopped: Callable[[], bool]) -> None:
        """The pseudo board died: start another (it gets a new pty) and move the session to it."""
        self._detach()
        self._stop_board()
        self._reattach(stopped)

    def _reattach(self, stopped: Callable[[], bool], why: str = "after a loss") -> None:
        """Open again (a pseudo port: on a new board) until it works or the tab stops."""
        attempt = 1
        while not stopped():
            try:
                self._attach()
            except (TinyLMError, OSError) as e:
                attempt += 1
                self.on_event(Lost(self.choice.value, str(e), attempt))
                _sleep(RESTART_S[min(attempt - 2, len(RESTART_S) - 1)], stopped)
                continue
            self._post_opened(True, why)
            return

    def _hand_over(self, stopped: Callable[[], bool]) -> None:
        """esptool wants the port: close it, wait until the flash is over, open it again."""
        self._detach()
        self._released.set()
        while self._release.is_set() and not stopped():
            time.sleep(0.02)
        self._released.clear()
        if stopped():
            return
        self._reattach(stopped, "after flashing")

    # ---- what the monitor shows (the UI thread) ------------------------------------------------

    def take(self) -> list[MonitorLine]:
        """The lines that arrived since the last take (the panel calls it ~10 times a second)."""
        with self._swap:
            lines, self._carry = self._carry, []
            if self.monitor is not None:
                lines += self.monitor.take()
            return lines

    def take_series(self) -> dict[str, list[tuple[float, float]]]:
        """New `label:value` points since the last call."""
        with self._swap:
            return self.monitor.series.take_new() if self.monitor is not None else {}

    def stats(self) -> MonitorStats:
        """The monitor's counters over the whole tab session (across the ports it reopened)."""
        with self._swap:
            lines, dropped, losses = self._base
            if self.monitor is None:
                return MonitorStats(lines, lines, dropped, 0.0, False, False, losses)
            s = self.monitor.stats()
            return MonitorStats(lines + s.lines, lines + s.shown, dropped + s.dropped,
                                s.lines_per_s, s.paused, s.connected, losses + s.losses)

    def saving_failed(self) -> str:
        """Why device.log stopped on its own (a full disk) since the last call, or "": the
        session's DeviceLog gave up, saving is off from then on (the monitor goes on)."""
        port = self.port
        log = port.log if port is not None else None
        if not self.saving or log is None or not log.error:
            return ""
        self.saving = False
        return log.error

    def set_saving(self, on: bool) -> None:
        """device.log on or off (the session's DeviceLog: closed writes nothing)."""
        self.saving = on and self.log_path is not None
        with self._swap:
            log = self.port.log if self.port is not None else None
        if log is None and self.saving and self.port is not None:
            log = self.port.log = _new_log(self.log_path)
        if log is not None:
            (log.open if self.saving else log.close)()

    # ---- what the board is running -------------------------------------------------------------

    def _state(self, link: DeviceLink) -> BoardState:
        """INFO (and on rv32 the instruction count); OSError means the port is gone."""
        if self.in_download_mode:
            return BoardState(None, "download mode: the ROM bootloader waits for esptool "
                                    "(f flashes the blob, then the app boots)")
        if self._resets_on_open():
            try:  # opening a USB-serial port pulses EN: an INFO sent while it boots is lost
                link.wait_ready(timeout=BOOT_S)
            except DeviceError:
                pass  # no @READY: it did not reset (or is not the tinylm app); INFO will tell
        try:
            info = link.info()
        except DeviceError as e:
            if e.code == "no_model":
                return BoardState(None, "the firmware runs but holds no model: f flashes one")
            if e.code == "timeout":
                return BoardState(None, f"no answer to INFO within {link.timeout:.0f} s: not the "
                                        "tinylm firmware, still booting, or in download mode "
                                        "(i asks again, f flashes)")
            return BoardState(None, str(e))
        projected = self._probe_rv32(link) if info.get("board") == "rv32" else None
        return BoardState(info, "", projected)

    def _resets_on_open(self) -> bool:
        """A real serial port (not a pty): its DTR/RTS usually reset the board when opened."""
        from engine.device.flash import is_pty

        return self.choice.kind == "serial" and not is_pty(self.path)

    @staticmethod
    def _probe_rv32(link: DeviceLink) -> dict[str, float] | None:
        """A few greedy tokens from BOS: the emulated board counts instructions per token."""
        from engine.device.emulated import projected_esp32c3
        from engine.device.run import DeviceStats

        stats = DeviceStats()
        try:
            for ev in link.generate(text="", max_tokens=PROBE_TOKENS, temperature=0.0):
                if isinstance(ev, TokenEvent):
                    stats.instructions.append(ev.instructions)
        except DeviceError:
            return None  # no model, or busy: the panel shows INFO without the projection
        ipt = stats.instructions_per_token
        return projected_esp32c3(ipt) if ipt > 0 else None

    def read_state(self) -> BoardState:
        """INFO again, for a command (a worker thread)."""
        with self.exclusive() as link:
            return self._state(link)

    def reset(self) -> BoardState:
        """Restart the board (the session's reset: DTR/RTS where the port has modem lines,
        `@RESET` on a pty or socket), wait for its READY, then INFO."""
        with self.exclusive() as link:
            link.reset(timeout=5.0)
            return self._state(link)

    # ---- lending the port ----------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 10.0) -> Iterator[DeviceLink]:
        """A DeviceLink on the open session for one command; other commands wait until the block
        ends (the monitor does not: it reads on)."""
        if not self._cmd.acquire(timeout=timeout):
            raise Failure(f"{self.choice.value} stayed busy for {timeout:.0f} s: another command "
                          "holds the port; try again")
        try:
            port = self.port
            if port is None or not port.connected:
                raise Failure(f"not connected to {self.choice.value} (the port is lost or still "
                              "opening): wait for it to come back, or connect again")
            with DeviceLink(session=port, baud=self.baud, timeout=self.info_timeout) as link:
                yield link
        finally:
            self._cmd_end = time.time()
            self._cmd.release()

    @contextlib.contextmanager
    def released(self, timeout: float = 10.0) -> Iterator[str]:
        """The port closed, for esptool to open; opened again (with a fresh INFO) afterwards."""
        if not self.path:
            raise Failure(f"{self.choice.value} is not open yet: connect first")
        self._release.set()
        try:
            if not self._released.wait(timeout):
                raise Failure(f"could not free {self.path} for flashing within {timeout:.0f} s")
            yield self.path
            self.in_download_mode = False  # esptool reset it into the app
        finally:
            self._release.clear()

    # ---- pseudo boards -------------------------------------------------------------------------

    def _workdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tinylm-device-")
        return Path(self._tmp.name)

    def _start_board(self) -> None:
        """The board a pseudo port stands for, on a copy of the blob (a protocol upload writes
        the board's flash: never the experiment's file)."""
        self._stop_board()
        kind, work = self.choice.kind, self._workdir()
        if kind == "virtual":
            from engine.device.virtual import VirtualBoard

            flash = work / "flash.bin"
            if self.blob is not None and not flash.exists():
                shutil.copyfile(self.blob, flash)
            if flash.exists():
                board = VirtualBoard(blob=flash)
            else:
                board = VirtualBoard(flash_image=self._erased_image(),
                                     extra=["--partition-size", hex(self._model_part().size)])
        elif kind == "rv32":
            from engine.device.emulated import EmulatedBoard

            if self.blob is None:
                raise UserError("the rv32 board runs an exported blob: export one first (f "
                                "exports and flashes, or `tinylm export NAME`)")
            board = EmulatedBoard(self.blob)
        elif kind == "download":
            from engine.device.download_board import DownloadModeBoard

            board = DownloadModeBoard(work / f"flash-{self.chip}.bin", chip=self.chip)
            self.in_download_mode = True  # a restarted board is back in its ROM bootloader
        else:
            raise UserError(f"{self.choice.value} is not a pseudo port")
        board.start()
        self.board, self.path = board, board.port

    def _model_part(self) -> Any:
        from engine.device.partitions import table_for_flash

        return table_for_flash(4 << 20).find("model")

    def _erased_image(self) -> Path:
        from engine.device.flash_image import create_erased_image

        image = self._workdir() / "flash-image.bin"
        if not image.exists():
            create_erased_image(image, 4 << 20)
        return image

    def _board_exit(self) -> str | None:
        """Why the session's board process is gone, or None while it runs."""
        proc = getattr(self.board, "proc", None)
        if proc is None or proc.poll() is None:
            return None
        return f"the {self.choice.kind} board exited (code {proc.returncode})"

    def _stop_board(self) -> None:
        if self.board is not None:
            self.board.__exit__(None, None, None)
            self.board = None


def _control(ev: Any) -> bool:
    """What the loop listens to (on the reader thread): port events and the board's @READY."""
    return not isinstance(ev, SerialLine) or (ev.direction == "<" and b"@READY" in ev.raw)


def _new_log(path: Path | None) -> Any:
    from engine.device.devlog import DeviceLog

    assert path is not None
    return DeviceLog(path)


def _sleep(seconds: float, stopped: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stopped():
        time.sleep(0.02)
