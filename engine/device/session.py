"""BoardSession: the one long-lived owner of a port. One background reader splits what arrives into
lines and hands every line — protocol and noise alike — to every subscriber, so the monitor sees what
the board prints between commands while info, chat and upload (DeviceLink) use the same open port.

    with BoardSession("/dev/ttyUSB0", log_path=exp.path("device.log")) as s:
        sub = s.subscribe()                      # a bounded queue of events
        link = DeviceLink(session=s).open()      # commands share the port
        ...

Subscribers never slow the reader: a queue that is full drops the line and counts it
(`Subscription.dropped`); port events are never dropped. When the port vanishes (unplugged, the board
process ended, the peer closed the socket) subscribers get a `PortLost`, the reader re-opens the port
with a backoff, and `PortBack` follows once it is there again (a USB board re-enumerating after a
reset, a virtual board restarted behind the same link path).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .devlog import DeviceLog
from .errors import PortGone, PortUnusable
from .protocol import encode_line
from .serialport import has_modem_lines, open_serial

MAX_PENDING = 64 * 1024  # bytes without a newline delivered as one line anyway (a binary flood)


@dataclass(frozen=True, slots=True)
class SerialLine:
    """One line, without its "\\r\\n". `direction` "<" came from the board, ">" the host sent it."""
    t: float  # host clock (time.time()) when the line was complete
    raw: bytes
    seq: int  # numbered per session and direction, from 1
    direction: str = "<"


@dataclass(frozen=True, slots=True)
class PortLost:
    t: float
    reason: str


@dataclass(frozen=True, slots=True)
class PortBack:
    t: float
    downtime: float  # seconds the port was away


Event = SerialLine | PortLost | PortBack


class Subscription:
    """A bounded queue of events (or a callback run on the reader thread, which must be quick)."""

    def __init__(self, session: "BoardSession", maxsize: int,
                 want: Callable[[Event], bool] | None,
                 callback: Callable[[Event], None] | None) -> None:
        self.session = session
        self.maxsize = maxsize
        self.want = want
        self.callback = callback
        self.dropped = 0  # lines lost because the queue was full
        self.error: BaseException | None = None  # what detached a failing callback
        self._q: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()

    def offer(self, ev: Event) -> None:
        """Called by the reader: never blocks."""
        if self.want is not None and not self.want(ev):
            return
        if self.callback is not None:
            self.callback(ev)
            return
        with self._cond:
            if isinstance(ev, SerialLine) and len(self._q) >= self.maxsize:
                self.dropped += 1
                return
            self._q.append(ev)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds (None = wait as long as it takes)."""
        with self._cond:
            if not self._q and not self._cond.wait_for(lambda: bool(self._q), timeout):
                return None
            return self._q.popleft()

    def get_batch(self, limit: int = 10_000, timeout: float | None = None) -> list[Event]:
        """Everything queued (up to `limit`), waiting up to `timeout` for the first event."""
        with self._cond:
            if not self._q and not self._cond.wait_for(lambda: bool(self._q), timeout):
                return []
            n = min(limit, len(self._q))
            return [self._q.popleft() for _ in range(n)]

    def pending(self) -> int:
        return len(self._q)

    def close(self) -> None:
        self.session.unsubscribe(self)


class BoardSession:
    """Owns one port: opens it (exclusively where the OS can lock it), reads it on a thread, writes
    lines for any number of users, re-opens it when it comes back, and keeps device.log."""

    def __init__(self, port: str, baud: int = 115200, *, exclusive: bool = True,
                 reconnect: bool = True, log_path: Path | None = None,
                 backoff: tuple[float, float] = (0.1, 2.0), usb_jtag: bool | None = None) -> None:
        self.port = port
        self.baud = baud
        self.exclusive = exclusive
        self.reconnect = reconnect
        self.backoff = backoff
        self.usb_jtag = usb_jtag  # None: looked up from the port's USB id at the first reset
        self.log = DeviceLog(log_path) if log_path is not None else None
        self.lines_in = 0
        self.bytes_in = 0
        self.losses = 0
        self.last_loss = ""
        self._ser: Any = None
        self._subs: tuple[Subscription, ...] = ()
        self._subs_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._reader: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._tx_seq = itertools.count(1)
        self._opened_at = 0.0
        self._delay = backoff[0]  # the next re-open attempt's wait; grows while the port flaps

    # ---- life -------------------------------------------------------------------------------

    def open(self) -> "BoardSession":
        """Open the port now (a port that is missing or busy is an error here, not a retry loop)
        and start the reader."""
        self._ser = open_serial(self.port, self.baud, exclusive=self.exclusive)
        self._opened_at = time.monotonic()
        self._connected.set()
        if self.log is not None:
            self.log.open()
        self._closing.clear()
        self._reader = threading.Thread(target=self._run, name=f"serial-reader {self.port}",
                                        daemon=True)
        self._reader.start()
        return self

    def close(self) -> None:
        self._closing.set()
        ser = self._ser
        if ser is not None and hasattr(ser, "cancel_read"):
            with contextlib.suppress(OSError):  # the port may already be gone; we are leaving
                ser.cancel_read()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2.0)
        self._reader = None
        self._drop_port()
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> "BoardSession":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ---- subscribers --------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 10_000, want: Callable[[Event], bool] | None = None,
                  callback: Callable[[Event], None] | None = None) -> Subscription:
        """Every event from now on (filtered by `want`, both run on the reader thread)."""
        sub = Subscription(self, maxsize, want, callback)
        with self._subs_lock:
            self._subs = self._subs + (sub,)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def _emit(self, ev: Event) -> None:
        for sub in self._subs:
            try:
                sub.offer(ev)
            except Exception as e:  # a subscriber's bug must not stop the reader: detach it, keep why
                sub.error = e
                self.unsubscribe(sub)

    # ---- writing ------------------------------------------------------------------------------

    def next_id(self) -> int:
        """Command ids are per session, so two users of one port never confuse their replies."""
        return next(self._ids)

    def write(self, data: bytes) -> None:
        """Send bytes (whole lines); PortGone when the port is away right now."""
        import serial

        with self._write_lock:
            ser = self._ser
            if ser is None:
                # the same words as a loss seen by the reader (link.py): which of the two notices
                # first is a race, the user's message must not depend on it
                raise PortGone(f"{self.port} went away: {self.last_loss or 'closed'}. The board "
                               "was unplugged, reset or its process ended; the session re-opens "
                               "the port when it comes back", code="lost")
            try:
                ser.write(data)
                ser.flush()
            except serial.SerialTimeoutException as e:
                raise PortGone(f"writing to {self.port} timed out: the port takes no data (flow "
                               "control stuck, or the board hung)", code="timeout") from e
            except (OSError, termios.error) as e:  # SerialException is an OSError; tcdrain
                # raises termios.error: either way the port vanished mid-write
                failed = e
            else:
                failed = None
        if failed is not None:
            self._lost(ser, f"write failed: {failed}")
            raise PortGone(f"{self.port} went away while writing: {failed}", code="lost") from failed
        t = time.time()
        for raw in data.split(b"\n"):
            if raw:
                if self.log is not None:
                    self.log.write(t, ">", raw)
                self._emit(SerialLine(t, raw, next(self._tx_seq), ">"))

    def send(self, type_: str, **fields: object) -> int:
        """Frame and send a command with a fresh id; returns the id."""
        cmd_id = self.next_id()
        self.write(encode_line(type_, id=cmd_id, **fields))
        return cmd_id

    def reset(self, mode: str = "app") -> int:
        """Reset the board: DTR/RTS where the port has modem lines (returns 0), else the @RESET
        command (returns its id; only into the app). mode: "app" or "bootloader"."""
        from .reset import reset_into_app, reset_into_bootloader

        with self._write_lock:
            ser = self._ser
            if ser is None:
                raise PortGone(f"{self.port} is not connected; cannot reset the board", code="lost")
            if has_modem_lines(ser):
                usb_jtag = self._is_usb_jtag()
                try:
                    (reset_into_bootloader if mode == "bootloader" else reset_into_app)(ser, usb_jtag)
                except OSError as e:  # a USB board can drop off the bus mid-sequence
                    raise PortGone(f"{self.port} went away during the reset ({e}); the session "
                                   "re-opens it when the board is back", code="lost") from e
                return 0
        if mode == "bootloader":
            raise PortUnusable(f"{self.port} has no DTR/RTS lines (a pty or a network port): put the "
                               "board in download mode by hand (hold BOOT, press EN)")
        return self.send("RESET")

    def _is_usb_jtag(self) -> bool:
        if self.usb_jtag is None:
            from .ports import describe
            info = describe(self.port)
            self.usb_jtag = info is not None and info.reset == "usb-jtag"
        return self.usb_jtag

    # ---- the reader ---------------------------------------------------------------------------

    def _run(self) -> None:
        buf = b""
        seq = 0
        while not self._closing.is_set():
            ser = self._ser
            if ser is None:
                if not self.reconnect or not self._reopen():
                    return
                continue
            try:
                waiting = ser.in_waiting
                data = ser.read(waiting or 1)
            except (OSError, TypeError, AttributeError) as e:
                # OSError covers SerialException: EIO from a pty whose board ended, "socket
                # disconnected", a USB device unplugged. TypeError/AttributeError: pyserial's state
                # after the port was closed under it.
                if self._closing.is_set():
                    return
                if buf:
                    seq += 1
                    self._deliver(time.time(), buf, seq)
                    buf = b""
                self._lost(ser, str(e) or type(e).__name__)
                continue
            if not data:
                continue
            self.bytes_in += len(data)
            buf += data
            if b"\n" not in data:
                if len(buf) > MAX_PENDING:
                    seq += 1
                    self._deliver(time.time(), buf, seq)
                    buf = b""
                continue
            *lines, buf = buf.split(b"\n")
            t = time.time()
            for raw in lines:
                seq += 1
                self._deliver(t, raw[:-1] if raw.endswith(b"\r") else raw, seq)
            if self.log is not None:
                self.log.flush()

    def _deliver(self, t: float, raw: bytes, seq: int) -> None:
        self.lines_in += 1
        if self.log is not None:
            self.log.write(t, "<", raw)
        self._emit(SerialLine(t, raw, seq))

    def _drop_port(self, only: Any = None) -> bool:
        """Close the port (only if it is still `only`, when given); False if there was none."""
        with self._write_lock:
            ser = self._ser
            if ser is None or (only is not None and ser is not only):
                return False
            self._ser = None
            self._connected.clear()
        with contextlib.suppress(OSError):  # closing a port that is already gone
            ser.close()
        return True

    def _lost(self, ser: Any, reason: str) -> None:
        """`ser` failed (in the reader or a writer): report it once, and let the reader re-open."""
        if not self._drop_port(only=ser):
            return  # the other side already reported this port's loss
        self.losses += 1
        self.last_loss = f"lost: {reason}"
        t = time.time()
        if self.log is not None:
            self.log.write(t, "!", f"port lost: {reason}".encode())
            self.log.flush()
        self._emit(PortLost(t, reason))
        # a port that dies right after opening (a peer that accepts and hangs up) backs off longer
        self._delay = (min(self._delay * 2, self.backoff[1])
                       if time.monotonic() - self._opened_at < 1.0 else self.backoff[0])

    def _reopen(self) -> bool:
        """Retry opening with a growing delay until it works (True) or the session closes."""
        lost_at = time.monotonic()
        delay = self._delay
        while not self._closing.wait(delay):
            try:
                ser = open_serial(self.port, self.baud, exclusive=self.exclusive)
            except PortUnusable:
                delay = min(delay * 2, self.backoff[1])
                continue
            with self._write_lock:
                if self._closing.is_set():
                    ser.close()
                    return False
                self._ser = ser
                self._opened_at = time.monotonic()
                self._connected.set()
            t = time.time()
            if self.log is not None:
                self.log.write(t, "!", b"port back")
            self._emit(PortBack(t, time.monotonic() - lost_at))
            return True
        return False
