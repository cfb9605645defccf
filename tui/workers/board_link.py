"""ADAPTER (h9, thin; replaced at merge by engine/device/session.py): one owner of the Device tab's
port, built on today's DeviceLink.

What it does that the tab needs and DeviceLink alone does not:
- one reader: between commands it keeps reading (so the serial monitor sees what the board prints
  when nobody asked), and every line — protocol and noise — goes to `on_line` (the MonitorFeed);
- one port for everything: commands (INFO, reset, a chat turn, a protocol upload) borrow the open
  link with `exclusive()`; esptool, which opens the port itself, gets it closed with `released()`;
- pseudo ports: `virtual`, `rv32` and `download` start a board for the session (and restart it if
  it dies: the virtual counterpart of a replug);
- unplug and replug: a read that fails (SerialException is an OSError) or a board process that
  exited posts `Lost`, the link is closed, and the port is reopened with backoff until it is back,
  then `Opened(again=True)` with a fresh INFO.
`run()` is the loop; the tab calls it inside a Textual thread worker and turns `on_event`'s plain
dataclasses into messages. No Textual import.
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
from engine.errors import Failure, TinyLMError, UserError

from .ports import PortChoice

BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # between reopen attempts after a loss; the last one repeats
IDLE_READ_S = 0.05  # the reader holds the port this long at most before a command can take it
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
    retry_in: float
    attempt: int


@dataclass(frozen=True)
class Failed:
    """The first open failed: the session is over (nothing was ever connected to wait for)."""
    port: str
    message: str


@dataclass(frozen=True)
class Closed:
    port: str


class _TappedLink(DeviceLink):
    """DeviceLink whose every line in both directions goes to `tap` (its own log hook)."""

    def __init__(self, port: str, baud: int, timeout: float,
                 tap: Callable[[str, bytes], None]) -> None:
        super().__init__(port, baud=baud, timeout=timeout)
        self._tap = tap

    def _record(self, direction: str, raw: bytes) -> None:
        self._tap(direction, raw)


class BoardSession:
    """`BoardSession(choice, on_line=feed.add, on_event=post).run(should_stop)` in a thread."""

    def __init__(self, choice: PortChoice, *, on_line: Callable[[str, bytes], None],
                 on_event: Callable[[Any], None], baud: int = 115200,
                 blob: Path | None = None, chip: str = "esp32",
                 info_timeout: float = 2.0) -> None:
        self.choice = choice
        self.on_line = on_line
        self.on_event = on_event
        self.baud = baud
        self.blob = blob
        self.chip = chip
        self.info_timeout = info_timeout
        self.path = "" if choice.pseudo else choice.value
        self.link: DeviceLink | None = None
        self.board: Any = None  # the BoardProcess of a pseudo port
        self.in_download_mode = choice.kind == "download"  # until something was flashed
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()  # held by whoever reads or writes the port
        self._waiting = 0  # commands waiting for the port: the reader steps aside
        self._waiting_lock = threading.Lock()
        self._stop = threading.Event()
        self._release = threading.Event()
        self._released = threading.Event()
        self._ever_open = False
        self._reopen_after_flash = False

    # ---- the owner loop (a worker thread) ------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        attempt = 0
        stopped = lambda: self._stop.is_set() or should_stop()  # noqa: E731
        try:
            while not stopped():
                if self.link is None:
                    if self._open(attempt):
                        attempt = 0
                    elif not self._ever_open:
                        return
                    else:
                        self._sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], stopped)
                        attempt += 1
                    continue
                if self._release.is_set():
                    self._hand_over(stopped)
                    continue
                if self._waiting:
                    time.sleep(0.002)
                    continue
                self._read_idle(attempt)
        finally:
            got = self._lock.acquire(timeout=10.0)  # a command still using the link ends first
            self._close_link()
            if got:
                self._lock.release()
            self._stop_board()
            if self._tmp is not None:
                self._tmp.cleanup()
            self.on_event(Closed(self.choice.value))

    def stop(self) -> None:
        self._stop.set()

    def _read_idle(self, attempt: int) -> None:
        died = self._board_exit()
        if died is not None:
            self._lose(died, attempt)
            return
        state = None
        with self._lock:
            link = self.link
            if link is None:
                return
            try:
                line = link.read_line(time.monotonic() + IDLE_READ_S)
                if line is not None and line.type == "READY":  # it restarted on its own
                    state = self._state(link)
            except OSError as e:  # pyserial's SerialException: the port went away
                self._lose(f"the port stopped answering ({e})", attempt)
                return
        if state is not None:
            self.on_event(Opened(self.choice.value, self.path, state, True, "it restarted"))

    def _open(self, attempt: int) -> bool:
        try:
            if self.choice.pseudo and (self.board is None or self._board_exit() is not None):
                self._start_board()
            link = _TappedLink(self.path, self.baud, self.info_timeout, self.on_line).open()
        except (TinyLMError, OSError) as e:
            if not self._ever_open:
                self.on_event(Failed(self.choice.value, str(e)))
            else:
                retry = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                self.on_event(Lost(self.choice.value, str(e), retry, attempt + 1))
            return False
        with self._lock:
            self.link = link
            try:
                state = self._state(link)
            except OSError as e:
                self._close_link()
                self.on_event(Lost(self.choice.value, f"the port stopped answering ({e})",
                                   BACKOFF_S[0], attempt + 1))
                return False
        why = "after flashing" if self._reopen_after_flash else "after a loss"
        self.on_event(Opened(self.choice.value, self.path, state, self._ever_open,
                             why if self._ever_open else ""))
        self._ever_open = True
        self._reopen_after_flash = False
        return True

    def _lose(self, reason: str, attempt: int) -> None:
        self._close_link()
        if self.choice.pseudo:
            self._stop_board()
        self.on_event(Lost(self.choice.value, reason, BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)],
                           attempt + 1))

    def _hand_over(self, stopped: Callable[[], bool]) -> None:
        """esptool wants the port: close it, wait until the flash is over, reopen."""
        self._close_link()
        self._released.set()
        while self._release.is_set() and not stopped():
            time.sleep(0.02)
        self._released.clear()
        self._reopen_after_flash = True

    @staticmethod
    def _sleep(seconds: float, stopped: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stopped():
            time.sleep(0.02)

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
        """INFO again, for a command (a worker thread): borrows the port."""
        with self.exclusive() as link:
            return self._state(link)

    def reset(self) -> BoardState:
        """Restart the board: DTR/RTS on a real serial port (esptool's classic reset into the
        app), `@RESET` where there are no modem lines (pty, socket)."""
        from engine.device.flash import is_pty

        with self.exclusive() as link:
            if self.choice.kind == "serial" and not is_pty(self.path):
                link.serial.dtr = False
                link.serial.rts = True  # EN low: the chip is held in reset
                time.sleep(0.1)
                link.serial.rts = False
                link.wait_ready(timeout=5.0)
            else:
                link.reset(timeout=5.0)
            return self._state(link)

    # ---- lending the port ----------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 10.0) -> Iterator[DeviceLink]:
        """The open link for one command; the reader waits until the block ends."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            got = self._lock.acquire(timeout=timeout)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if not got:
            raise Failure(f"{self.choice.value} stayed busy for {timeout:.0f} s: another command "
                          "holds the port; try again")
        try:
            if self.link is None:
                raise Failure(f"not connected to {self.choice.value} (the port is lost or still "
                              "opening): wait for it to come back, or connect again")
            yield self.link
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def released(self, timeout: float = 10.0) -> Iterator[str]:
        """The port closed, for esptool to open; reopened (with a fresh INFO) afterwards."""
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

    def _close_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            with contextlib.suppress(OSError):  # closing a port that vanished: nothing to save
                link.close()
