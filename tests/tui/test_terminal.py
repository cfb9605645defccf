"""The app ends when its terminal goes away (a closed pty, SIGHUP), instead of spinning on a dead
tty.

These run the real app process on a real pty: the master side stands in for the terminal emulator.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time

from tests.tui.helpers import cli_env
from tui.workers.terminal import TerminalWatch


def test_watch_reports_a_hangup_once_the_other_side_closes():
    master, slave = pty.openpty()
    gone = threading.Event()
    watch = TerminalWatch(slave, gone.set).start()
    try:
        assert not gone.wait(0.3)  # a live terminal: nothing to report
        os.close(master)
        assert gone.wait(5)
    finally:
        watch.stop()
        os.close(slave)


def start_app_on_pty(ws) -> tuple[subprocess.Popen, int]:
    """The app with a pty for stdin/stdout/stderr that is not its controlling terminal (as under
    `make app`, where the kernel's SIGHUP goes to make, not to the app); returns once it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tui.app", "-w", str(ws)], stdin=slave,
                            stdout=slave, stderr=slave, env=cli_env() | {"TERM": "xterm-256color"},
                            start_new_session=True)
    os.close(slave)
    drawn = b""
    deadline = time.monotonic() + 30
    while b"experiments" not in drawn and time.monotonic() < deadline:  # the home status line
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            drawn += os.read(master, 65536)
    assert b"experiments" in drawn, drawn[-500:]
    return proc, master


def ended_within(proc: subprocess.Popen, seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def test_app_exits_when_its_pty_closes(ws):
    proc, master = start_app_on_pty(ws)
    os.close(master)  # the terminal window closes
    assert ended_within(proc, 5)


def test_app_exits_cleanly_on_sighup(ws):
    proc, master = start_app_on_pty(ws)
    try:
        proc.send_signal(signal.SIGHUP)
        assert ended_within(proc, 5)
        assert proc.returncode == 129
    finally:
        os.close(master)
