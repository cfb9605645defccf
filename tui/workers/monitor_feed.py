"""ADAPTER (h9, thin; replaced at merge by engine/device/monitor.py): what the board said, between
the port's reader thread and the Device tab's serial monitor.

Why a feed and not a message per line: at 2,000 lines/s a message (and a widget refresh) per line
would swamp the event loop. The reader thread calls `add()` (cheap: a deque append, the device.log
write, the `label:value` parse); the UI calls `drain()` on a timer (~10 times a second) and gets the
lines of that tenth of a second in one list. Lines the UI has not drained when the bounded buffer is
full are counted as dropped (device.log still has them). No Textual import.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LOG_CAP = 5 << 20  # device.log rotates to device.log.1 past this size
FLUSH_S = 0.2  # device.log is flushed at least this often (and at close)
SERIES_POINTS = 600  # points kept per `label:value` series
_PAIR = re.compile(r"([A-Za-z_][\w.-]*)\s*[:=]\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_SEP = re.compile(r"^[\s,;\t]*$")


@dataclass(frozen=True)
class MonitorLine:
    t: float  # host time.time() when the line was read
    text: str  # decoded tolerantly: bad UTF-8 shown as \xNN escapes
    sent: bool = False  # a line the host wrote (device.log only; the monitor shows the board's)


def decode(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")


def parse_series(text: str) -> list[tuple[str, float]]:
    """Arduino serial-plotter lines: `temp:21.5 hum:40` (or `,`-separated); [] for anything else —
    a line is a series line only if it is nothing but label:value pairs."""
    pairs = list(_PAIR.finditer(text))
    if not pairs or text.startswith("@"):
        return []
    gaps, pos = [], 0
    for m in pairs:
        gaps.append(text[pos:m.start()])
        pos = m.end()
    gaps.append(text[pos:])
    if not all(_SEP.match(g) for g in gaps):
        return []
    return [(m.group(1), float(m.group(2))) for m in pairs]


@dataclass
class FeedStats:
    total: int = 0  # lines the board sent since the feed started
    dropped: int = 0  # lines the UI never got (its buffer was full)
    rate: float = 0.0  # lines/s over the last second
    saved_to: str = ""  # device.log path while saving, "" when not


@dataclass
class _Series:
    points: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SERIES_POINTS))
    version: int = 0


class MonitorFeed:
    """`feed.add(direction, raw)` from the reader thread; `feed.drain()` from the UI."""

    def __init__(self, log_path: Path | None, capacity: int = 20_000) -> None:
        self.log_path = log_path
        self.capacity = capacity
        self.saving = log_path is not None
        self.t0 = time.time()
        self._lock = threading.Lock()
        self._pending: collections.deque[MonitorLine] = collections.deque()
        self._total = 0
        self._dropped = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._series: dict[str, _Series] = {}
        self._log: IO[bytes] | None = None
        self._log_lock = threading.Lock()  # the reader writes, the UI toggles saving
        self._last_flush = 0.0
        self.save_error = ""  # why saving stopped on its own (a full disk), shown by the monitor

    # ---- reader thread -------------------------------------------------------------------------

    def add(self, direction: str, raw: bytes, t: float | None = None) -> None:
        """One line as it crossed the port: "<" from the board, ">" from the host."""
        t = time.time() if t is None else t
        self._save(direction, raw, t)
        if direction != "<":
            return
        text = decode(raw)
        pairs = parse_series(text)
        with self._lock:
            self._total += 1
            if len(self._pending) >= self.capacity:
                self._pending.popleft()
                self._dropped += 1
            self._pending.append(MonitorLine(t, text))
            for label, value in pairs:
                s = self._series.setdefault(label, _Series())
                s.points.append((t - self.t0, value))
                s.version += 1

    def note(self, text: str) -> None:
        """A line of the host's own (connected, port lost), in order with the board's lines;
        neither counted nor saved."""
        with self._lock:
            self._pending.append(MonitorLine(time.time(), f"── {text} ──"))

    def _save(self, direction: str, raw: bytes, t: float) -> None:
        """device.log in DeviceLink's format (`<time> <dir> <line>`), rotated past LOG_CAP."""
        if not self.saving or self.log_path is None:
            return
        with self._log_lock:
            if self.saving:
                self._write(direction, raw, t)

    def _write(self, direction: str, raw: bytes, t: float) -> None:
        assert self.log_path is not None
        try:
            if self._log is None:
                self._log = open(self.log_path, "ab")
            self._log.write(f"{t:.6f} {direction} ".encode() + raw.rstrip(b"\r\n") + b"\n")
            if t - self._last_flush > FLUSH_S:
                self._last_flush = t
                self._log.flush()
                if self._log.tell() > LOG_CAP:
                    self._log.close()
                    self._log = None
                    self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        except OSError as e:  # a full disk must not stop the monitor: stop saving, say why
            self.saving = False
            self.save_error = f"saving to {self.log_path} stopped: {e.strerror or e}"
            self._close_log()

    # ---- UI thread -----------------------------------------------------------------------------

    def drain(self) -> list[MonitorLine]:
        with self._lock:
            lines = list(self._pending)
            self._pending.clear()
            return lines

    def stats(self) -> FeedStats:
        now = time.monotonic()
        with self._lock:
            total, dropped = self._total, self._dropped
        self._window.append((now, total))
        while len(self._window) > 2 and now - self._window[0][0] > 1.0:
            self._window.popleft()
        t_old, n_old = self._window[0]
        rate = (total - n_old) / (now - t_old) if now - t_old > 0.05 else 0.0
        return FeedStats(total, dropped, rate, str(self.log_path) if self.saving else "")

    def series(self) -> dict[str, tuple[int, list[tuple[float, float]]]]:
        """{label: (version, points)} — the version changes when points were added."""
        with self._lock:
            return {k: (s.version, list(s.points)) for k, s in self._series.items()}

    def set_saving(self, on: bool) -> None:
        with self._log_lock:
            self.saving = on and self.log_path is not None
            if not self.saving:
                self._close_log()

    def close(self) -> None:
        with self._log_lock:
            self._close_log()

    def _close_log(self) -> None:
        if self._log is None:
            return
        log, self._log = self._log, None
        try:
            log.close()
        except OSError as e:  # the last buffered lines could not be written
            self.save_error = f"closing {self.log_path} failed: {e.strerror or e}"
