"""The serial monitor: every line a board prints, as it arrives, for `tinylm monitor` and the app.

It is a subscriber of a BoardSession, so it shares the port with commands (chat, info, upload) and
never competes with them for bytes. Lines are decoded tolerantly (bad UTF-8 and control characters
shown escaped, ESP-IDF colour codes kept), optionally filtered by a regex, counted, and fed to
PlotSeries for `label:value` lines. Saving is the session's device.log, so a paused or filtered
monitor still saves every line.

    with BoardSession(port, log_path=exp.path("device.log")) as s, Monitor(s, r"cpu|tinylm") as m:
        while m.wait(0.25):
            for line in m.take(): print(line.text)
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass

from engine.errors import UserError

from .plotter import PlotSeries
from .session import BoardSession, PortBack, PortLost, SerialLine

# C0 controls and DEL are shown as \xNN; tab stays, and so does ESC when it starts an SGR (colour)
# sequence, which ESP-IDF logs use
_CONTROL = re.compile(r"\x1b(?!\[[0-9;]*m)|[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def decode_line(raw: bytes) -> str:
    """Text for a line of bytes: invalid UTF-8 as \\xNN, control characters as \\xNN."""
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()[0]):02x}", text)


def compile_filter(pattern: str | None) -> re.Pattern[str] | None:
    """The --filter regex (searched in each line without colour codes); UserError if invalid."""
    try:
        return re.compile(pattern) if pattern else None
    except re.error as e:
        raise UserError(f"--filter {pattern!r} is not a valid regular expression: {e}") from e


def strip_sgr(text: str) -> str:
    return _SGR.sub("", text)


@dataclass(frozen=True, slots=True)
class MonitorLine:
    t: float  # host clock when it arrived
    text: str  # decoded (decode_line); may hold SGR colour codes
    direction: str = "<"  # "<" from the board, ">" sent by the host, "!" the port itself


@dataclass(frozen=True)
class MonitorStats:
    lines: int  # received from the board (filtered out or not, paused or not)
    shown: int  # passed the filter
    dropped: int  # lost: the session queue or the display buffer overflowed
    lines_per_s: float  # over the last second or so
    paused: bool
    connected: bool
    losses: int  # times the port went away


class Monitor:
    """start()/stop(), pause()/resume() (nothing is lost while paused: lines wait in the buffer,
    up to `buffer` of them), take() for display, stats(), `series` for plots."""

    def __init__(self, session: BoardSession, pattern: str | None = None, show_sent: bool = False,
                 buffer: int = 100_000, queue_size: int = 100_000) -> None:
        self.filter = compile_filter(pattern)
        self.session = session
        self.show_sent = show_sent
        self.series = PlotSeries()
        self._buffer = buffer
        self._queue_size = queue_size
        self._pending: collections.deque[MonitorLine] = collections.deque()
        self._cond = threading.Condition()
        self._paused = False
        self._lines = 0
        self._shown = 0
        self._overflow = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._sub = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> "Monitor":
        self._sub = self.session.subscribe(maxsize=self._queue_size)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self._sub is not None:
            self._sub.close()
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- display side --------------------------------------------------------------------------

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def wait(self, timeout: float) -> bool:
        """Wait until there are lines to take (False at the timeout, while paused, or stopped)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._pending and not self._paused) or self._stopping.is_set(), timeout
            ) and not self._stopping.is_set()

    def take(self, limit: int | None = None) -> list[MonitorLine]:
        """The lines that arrived since the last take (none while paused: they wait)."""
        with self._cond:
            if self._paused:
                return []
            n = len(self._pending) if limit is None else min(limit, len(self._pending))
            return [self._pending.popleft() for _ in range(n)]

    def stats(self) -> MonitorStats:
        with self._cond:
            rate = 0.0
            if len(self._rate) >= 2:
                (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
                rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
            dropped = self._overflow + (self._sub.dropped if self._sub is not None else 0)
            return MonitorStats(self._lines, self._shown, dropped, rate, self._paused,
                                self.session.connected, self.session.losses)

    def reset_board(self) -> int:
        """Reset the board (DTR/RTS, or @RESET on a pty/socket); its boot shows up as lines."""
        return self.session.reset("app")

    # ---- the consumer thread -------------------------------------------------------------------

    def _run(self) -> None:
        assert self._sub is not None
        while not self._stopping.is_set():
            batch = self._sub.get_batch(timeout=0.2)
            out: list[MonitorLine] = []
            received = 0
            for ev in batch:
                if isinstance(ev, SerialLine):
                    if ev.direction != "<":
                        if self.show_sent:
                            out.append(MonitorLine(ev.t, decode_line(ev.raw), ">"))
                        continue
                    received += 1
                    text = decode_line(ev.raw)
                    plain = strip_sgr(text)
                    self.series.add(ev.t, plain)
                    if self.filter is None or self.filter.search(plain):
                        out.append(MonitorLine(ev.t, text))
                elif isinstance(ev, PortLost):
                    out.append(MonitorLine(ev.t, f"port lost: {ev.reason} (waiting for it to come "
                                                 "back)", "!"))
                elif isinstance(ev, PortBack):
                    out.append(MonitorLine(ev.t, f"port back after {ev.downtime:.1f} s", "!"))
            now = time.monotonic()
            with self._cond:
                self._lines += received
                self._shown += sum(1 for m in out if m.direction == "<")
                self._rate.append((now, self._lines))
                while len(self._rate) > 2 and now - self._rate[0][0] > 1.0:
                    self._rate.popleft()
                for m in out:
                    if len(self._pending) >= self._buffer:
                        self._pending.popleft()
                        self._overflow += 1
                    self._pending.append(m)
                if out and not self._paused:
                    self._cond.notify_all()
