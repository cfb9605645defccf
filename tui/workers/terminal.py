"""TerminalWatch: notice when the app's terminal goes away, so the app can end.

Why: closing a terminal (a tmux session killed, an ssh link dropped) hangs up its tty. The kernel
sends SIGHUP only to the session leader; under `make app` that is make, and the app, one level down,
never hears of it. Textual's input thread then reads end-of-file from the dead tty forever and spins
a core (design.md, 2026-11-28: that slowed a training run 70x). poll() with no requested events
still reports POLLHUP/POLLERR, so this thread sleeps in the kernel at no cost until the hangup, then
calls `on_hangup` once. No Textual here: it is testable with a bare pty.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Callable

GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


class TerminalWatch:
    """`TerminalWatch(fd, on_hangup).start()`; `stop()` ends the thread (it polls in 0.5 s slices so
    stopping never waits long)."""

    def __init__(self, fd: int, on_hangup: Callable[[], None], slice_s: float = 0.5) -> None:
        self.fd = fd
        self.on_hangup = on_hangup
        self.slice_ms = int(slice_s * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TerminalWatch":
        self._thread = threading.Thread(target=self._run, name="terminal-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, 0)  # no events asked for: only hangup / error / closed fd wake us
        while not self._stop.is_set():
            try:
                events = poller.poll(self.slice_ms)
            except InterruptedError:
                continue
            if any(mask & GONE for _, mask in events):
                self.on_hangup()
                return


def terminal_fd() -> int | None:
    """The fd of the controlling terminal the app draws on (stdin, else stdout), if any."""
    import sys

    for stream in (sys.__stdin__, sys.__stdout__):
        try:
            if stream is not None and os.isatty(stream.fileno()):
                return stream.fileno()
        except (ValueError, OSError):  # closed or detached stream
            continue
    return None
