"""The real `tinylm-tui` in a real terminal (tmux): create an experiment in the wizard, start it,
see it run, stop it; then close the terminal and check the app is gone.

The app runs under a shell that stays its parent (`...; true` keeps sh from exec'ing it), as under
`make app`: when tmux kills the session only that shell gets SIGHUP, which is how the app used to be
left spinning on a dead tty.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    """A private tmux server whose socket lives in the test's folder (gone with it)."""

    def __init__(self, ws: Path) -> None:
        self.socket = str(ws / "tmux.sock")
        self.ws = ws

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                              check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def wait(self, predicate, timeout: float = 60.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                size = self("display", "-p", "-t", "app", "#{window_width}x#{window_height}")
                raise AssertionError(f"timed out waiting for {what}; {size} screen:\n{screen}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "app", *keys)

    def type_field(self, text: str) -> None:
        """Type over the focused field (tabbing into a field selects its value), then tab on."""
        self.keys("-l", text)
        self.keys("Tab")


def app_pid(ws: Path) -> int | None:
    out = subprocess.run(["pgrep", "-f", f"tui.app -w {ws}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def row_of(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f" {name} " in line), "")


def test_wizard_run_stop_in_a_real_terminal_and_closing_it_ends_the_app(ws):
    tmux = Tmux(ws)
    cmd = (f"cd {ws} && PYTHONPATH={REPO} TERM=xterm-256color {sys.executable} -m tui.app "
           f"-w {ws}; true")
    tmux("new-session", "-d", "-s", "app", "-x", "120", "-y", "36", cmd)
    try:
        tmux.wait(lambda s: "no experiments" in s, what="the home screen")
        tmux.keys("n")
        tmux.wait(lambda s: "problem to fix before creating" in s, what="the wizard")
        tmux.keys("-l", "tiny")
        tmux.keys("Tab", "Tab", "Tab")  # name → device.board → model.arch → model.dim
        fields = {"dim": "16", "n_layers": "1", "n_heads": "2", "n_kv_heads": "1",
                  "hidden_dim": "0", "vocab_size": "512", "seq_len": "32", "context_len": "0"}
        for value in fields.values():
            tmux.type_field(value)
        tmux.keys("Tab", "Tab")  # quant.method, quant.int_attention
        for value in ("200", "4"):  # max_steps, batch_size
            tmux.type_field(value)
        tmux.wait(lambda s: "ready: ctrl+s creates it" in s
                  and re.search(r"train\.batch_size\s+4\b", s), what="a valid form")
        tmux.keys("C-s")
        home = tmux.wait(lambda s: " tiny " in s and "1 experiment" in s, what="the new row")
        assert "new" in row_of(home, "tiny")
        tmux.keys("r")
        tmux.wait(lambda s: "running" in row_of(s, "tiny"), what="the run to start")
        tmux.keys("s")
        # stopped (or "new" again if it stopped before its first checkpoint)
        tmux.wait(lambda s: re.search(r" tiny +(stopped|new|done) ", row_of(s, "tiny")),
                  what="the run to stop")
        pid = app_pid(ws)
        assert pid is not None
        tmux("kill-session", "-t", "app")  # the terminal goes away
        deadline = time.monotonic() + 5
        while app_pid(ws) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app_pid(ws) is None, "the app outlived its terminal"
    finally:
        subprocess.run(["tmux", "-S", tmux.socket, "kill-server"], capture_output=True)
        pid = app_pid(ws)
        if pid is not None:
            os.kill(pid, 9)
