"""The real `tinylm-tui` in a real terminal (tmux), keyboard only, read back with capture-pane, as
a new user would go: two journeys.

- training: create an experiment in the wizard, run it from its Training tab, stop, resume, stop,
  diff it against the demo, export its int8 blob; then close the terminal and check the app is gone.
- device: in a second terminal `tinylm board --download-mode`; in the app the port list shows that
  board, enter connects, `f` flashes it through esptool (progress to 100 %, the board panel says
  the blob matches), the monitor shows the board's lines, and a greedy chat fills the three columns
  with the device saying what the reference says.

The app runs under a shell that stays its parent (`...; true` keeps sh from exec'ing it), as under
`make app`: when tmux kills the session only that shell gets SIGHUP, which is how the app used to be
left spinning on a dead tty.

Waits are on screen content (generous: the machine is shared), never fixed sleeps used as
assertions. The one pacing is `Tmux.settle` after a key that moves the focus: Textual hands each
key to the widget focused when the key arrives, so a letter typed right behind a Tab can land in the
box being left (a fast typist sees the same); every value typed is then checked on screen.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from engine.blob.export import export
from engine.device.boards import registry_dir, running_boards
from engine.store.experiments import Store
from tests.conftest import REPO
from tests.tui.helpers import TINY, cli_env, copy_demo, make

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install tmux)")

WIDTH, HEIGHT = 130, 38


class Tmux:
    """A private tmux server whose socket lives in the test's folder (gone with it)."""

    def __init__(self, ws: Path) -> None:
        self.socket = str(ws / "tmux.sock")
        self.ws = ws

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                              check=True).stdout

    def start_app(self) -> None:
        cmd = (f"cd {self.ws} && PYTHONPATH={REPO} TERM=xterm-256color {sys.executable} -m tui.app "
               f"-w {self.ws}; true")
        self("new-session", "-d", "-s", "app", "-x", str(WIDTH), "-y", str(HEIGHT), cmd)

    def screen(self, target: str = "app") -> str:
        return self("capture-pane", "-p", "-t", target)

    def wait(self, predicate: Callable[[str], object], timeout: float = 60.0, what: str = "",
             target: str = "app") -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(target)
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                size = self("display", "-p", "-t", target, "#{window_width}x#{window_height}")
                raise AssertionError(f"timed out waiting for {what}; {size} screen:\n{screen}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "app", *keys)

    def type(self, text: str) -> None:
        self.keys("-l", text)

    def settle(self, *keys: str) -> None:
        """Keys that move the focus, one at a time at a person's pace (see the module doc)."""
        for key in keys:
            self.keys(key)
            time.sleep(0.3)

    def type_field(self, text: str) -> None:
        """Type over the focused field (tabbing into a field selects its value), then tab on."""
        self.type(text)
        self.settle("Tab")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def app_pid(ws: Path) -> int | None:
    """The app's python (not the tmux server, whose command line holds the same words)."""
    pattern = f"^{re.escape(sys.executable)} -m tui\\.app -w {re.escape(str(ws))}"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def kill_app(ws: Path) -> None:
    pid = app_pid(ws)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


def row_of(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f" {name} " in line), "")


def step_of(screen: str, status: str) -> int:
    """N in the Training tab's "<status> · step N of M" line (-1 when not showing that status)."""
    m = re.search(rf"\b{status} · step (\d+) of \d+", screen)
    return int(m.group(1)) if m else -1


def test_training_journey_in_a_real_terminal_and_closing_it_ends_the_app(ws):
    """wizard → create → run → stop → resume → stop → diff with the demo → export → terminal gone."""
    store = Store(ws / "experiments")
    copy_demo(store, "demo")
    tmux = Tmux(ws)
    tmux.start_app()
    try:
        tmux.wait(lambda s: "1 experiment" in s and " demo " in s, what="the home screen")
        tmux.keys("n")
        tmux.wait(lambda s: "problem to fix before creating" in s, what="the wizard")
        tmux.type("tiny")
        tmux.settle("Tab", "Tab", "Tab")  # name → device.board → model.arch → model.dim
        fields = {"dim": "16", "n_layers": "1", "n_heads": "2", "n_kv_heads": "1",
                  "hidden_dim": "0", "vocab_size": "512", "seq_len": "32", "context_len": "0"}
        for value in fields.values():
            tmux.type_field(value)
        tmux.settle("Tab", "Tab")  # quant.method, quant.int_attention
        for value in ("20000", "4"):  # max_steps (far off: it is stopped long before), batch_size
            tmux.type_field(value)
        tmux.wait(lambda s: "ready: ctrl+s creates it" in s
                  and re.search(r"train\.batch_size\s+4\b", s)
                  and re.search(r"model\.dim\s+16\b", s), what="a valid form")
        tmux.keys("C-s")
        home = tmux.wait(lambda s: " tiny " in s and "2 experiments" in s, what="the new row")
        assert "new" in row_of(home, "tiny")

        # open it (the newest row has the cursor), run it from the Training tab, watch it go
        tmux.keys("Enter")
        tmux.wait(lambda s: "Overview" in s and "Training" in s, what="the experiment screen")
        tmux.keys("2")
        tmux.keys("r")
        tmux.wait(lambda s: step_of(s, "running") > 0, what="steps from the running run")
        tmux.keys("s")
        stopped = step_of(tmux.wait(lambda s: step_of(s, "stopped") > 0, what="the stop"),
                          "stopped")
        tmux.keys("R")
        tmux.wait(lambda s: step_of(s, "running") > stopped, what="the resumed run going on")
        tmux.keys("s")
        tmux.wait(lambda s: step_of(s, "stopped") > stopped, what="the second stop")

        # home: mark both, diff them
        tmux.keys("Escape")
        home = tmux.wait(lambda s: "stopped" in row_of(s, "tiny") and "2 experiments" in s,
                         what="home with tiny stopped")
        assert home.index(" tiny ") < home.index(" demo "), "the newest row is first"
        tmux.settle("space", "Down", "space")
        tmux.wait(lambda s: "2 marked" in s, what="two marks")
        tmux.keys("d")
        diff = tmux.wait(lambda s: "diff: tiny vs demo" in s and "config keys differ" in s,
                         what="the diff screen")
        assert re.search(r"model\.dim\s+16\s+64", diff), diff  # tiny is the baseline, demo beside

        # back home, up to tiny, export its int8 blob
        tmux.keys("Escape")
        tmux.wait(lambda s: "2 marked" in s, what="home again")
        tmux.settle("Up")
        tmux.keys("x")
        tmux.wait(lambda s: "Export tiny for esp32" in s, what="the export dialog")
        tmux.keys("x")
        tmux.wait(lambda s: "wrote model.int8.bin" in s, what="the blob written")
        tmux.keys("Escape")
        tmux.wait(lambda s: re.search(r"KB int8", row_of(s, "tiny")), what="the blob in the row")
        assert (ws / "experiments" / "tiny" / "model.int8.bin").is_file()

        # the terminal goes away: so does the app
        assert app_pid(ws) is not None
        tmux("kill-session", "-t", "app")
        deadline = time.monotonic() + 5
        while app_pid(ws) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app_pid(ws) is None, "the app outlived its terminal"
    finally:
        tmux.close()
        kill_app(ws)


@pytest.fixture
def trained(ws: Path) -> Store:
    """`tiny`: a 1-layer dim-16 model trained for a few steps by the real train subprocess, with
    its int8 blob exported (what the training journey ends with, made quicker)."""
    store = Store(ws / "experiments")
    make(store, "tiny", overrides=TINY + ["train.max_steps=10", "train.eval_every=10",
                                          "train.ckpt_every=10"])
    subprocess.run([sys.executable, "-m", "engine.train", str(store.folder("tiny")),
                    "--workspace", str(ws)], env=cli_env(), check=True, capture_output=True,
                   timeout=120)
    export(store.load("tiny"), "int8")
    return store


def test_device_journey_in_a_real_terminal(ws, trained):
    """A download-mode board started in a second terminal → picked from the port list → flashed
    through esptool → its lines in the monitor → a greedy chat, three columns, device = reference."""
    tmux = Tmux(ws)
    tmux.start_app()
    board_cmd = (f"cd {ws} && PYTHONPATH={REPO} {sys.executable} -m engine.cli -w {ws} board "
                 "--download-mode; true")
    tmux("new-window", "-d", "-t", "app", "-n", "board", board_cmd)
    try:
        banner = tmux.wait(lambda s: "virtual board (download mode) on /dev/" in s, target="board",
                           what="the download-mode board's banner")
        pty = re.search(r"on (/dev/\S+)", banner).group(1)
        image_dir = Path(re.search(r"flash image (\S+?);", banner).group(1)).parent

        tmux.wait(lambda s: " tiny " in s and "KB int8" in row_of(s, "tiny"), what="home")
        tmux.keys("D")
        # the board of the other terminal is listed just above the pseudo ports (the cursor
        # starts on `virtual`, the workspace's default port)
        tmux.wait(lambda s: "device · tiny" in s and f"{pty}  ESP32 in download mode" in s
                  and "int8 blob" in s, what="the Device screen listing the board")
        tmux.settle("Up")
        tmux.keys("Enter")
        tmux.wait(lambda s: f"connected to {pty}" in s, what="connected to the board")

        tmux.keys("f")
        flashed = tmux.wait(lambda s: "✓ matches tiny (int8)" in s, what="flashed, INFO matching")
        assert "100%" in flashed and "MD5 checked" in flashed

        # the monitor (the tab shown first) has what the board said when its app booted
        lines = tmux.wait(lambda s: "@READY" in s and re.search(r"\b[1-9]\d* lines\b", s),
                          what="the board's lines in the monitor")
        assert "@INFO" in lines

        # chat: greedy, then a prompt; t opens the tab with the prompt focused
        tmux.keys("t")
        tmux.wait(lambda s: "PyTorch · float" in s and "Device · int8" in s
                  and "esc Stop" in s.splitlines()[-1], what="the chat tab, a text box focused")
        tmux.settle(*["BTab"] * 6)  # prompt → max, seed, rep, top-p, top-k, temp
        tmux.type("0")
        tmux.wait(lambda s: re.search(r"temp 0 +top-k", s), what="temperature 0 typed", timeout=10)
        tmux.keys("Escape")  # out of the box: the footer shows the tab's keys again
        tmux.wait(lambda s: "c Connect" in s.splitlines()[-1], what="the text box left")
        tmux.keys("t")  # on the Chat tab: back to the prompt
        tmux.wait(lambda s: "esc Stop" in s.splitlines()[-1], what="the prompt focused")
        tmux.type("Once upon a time")
        tmux.wait(lambda s: re.search(r"▕Once upon a time", s), what="the prompt typed",
                  timeout=10)
        tmux.keys("Enter")
        chat = tmux.wait(lambda s: re.search(r"device = reference for all \d+ tokens", s),
                         what="the turn's verdict")
        columns = [line for line in chat.splitlines() if line.count("│ Once upon a") == 3]
        assert columns, f"the three columns did not all stream the prompt's story:\n{chat}"
        assert len(re.findall(r"\d+ tokens · first", chat)) == 3, chat

        tmux.keys("Escape")  # out of the prompt; under load a second Escape sent at once can
        tmux.wait(lambda s: "c Connect" in s.splitlines()[-1], what="the prompt left")  # land there
        tmux.keys("Escape")  # back home (the board session closes with the screen)
        tmux.wait(lambda s: "1 experiment" in s, what="home again")
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while app_pid(ws) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app_pid(ws) is None, f"q did not end the app:\n{tmux.screen()}"

        tmux("kill-window", "-t", "app:board")  # its terminal closed: the board stops, cleaned up
        entries = lambda: list(registry_dir(ws).glob("*.json"))  # noqa: E731
        deadline = time.monotonic() + 15
        while (entries() or image_dir.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not entries() and not image_dir.exists(), \
            "the board left its registry entry or flash image behind when its terminal closed"
    finally:
        tmux.close()
        kill_app(ws)
        for board in running_boards(ws):  # a failed test: end it, let it clean its flash image
            os.kill(board.pid, signal.SIGTERM)
