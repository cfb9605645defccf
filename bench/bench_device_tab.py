"""The app's Device tab under load: key press → screen change while the serial monitor ingests a
flood, and the chat's time to the first token per column.

    .venv/bin/python bench/bench_device_tab.py [--rate 2000] [--presses 15] [--turns 4]

- Flood: a child process writes `seq=N …` noise lines (every 10th a `temp:V` series line) at
  --rate lines/s into a pty the bench opens itself (no protocol: what a monitor shows); the tab is
  connected to that pty as a typed port. Received lines are counted by the engine Monitor.
- Key → screen: the key is posted to the app as the terminal driver would; the time is taken at the
  first frame the app writes after the key's effect is in the widget state (App._display, which in
  a terminal writes the frame). Keys: space (pause/resume: the monitor's stats line), T (timestamps:
  the log re-drawn from its kept lines), t/m (switch to the Chat tab and back). Median, p90, max.
- Chat: the demo-260k int8 blob on the virtual board (`virtual` port), greedy, 32 tokens, the
  prompt sent through the chat panel a second after the last turn ended. Per column, time to the
  first token from the start of the streams (the engine's TurnResult); setup = chat_turn's checks
  and @INFO before the streams; Enter → the first device token drawn (the UI's figure: the message
  handled, the worker started, setup, the board's first token, the column redrawn).
  Turn 1 is cold (torch imported and the checkpoint loaded in it); the rest are medians of warm
  turns.
The app runs headless (App.run_test) at 130x40; the machine's other load shows in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frames import FrameClock, key_to_frame, summary, wait  # noqa: E402
from textual.app import App  # noqa: E402
from textual.widgets import TabbedContent  # noqa: E402

from engine.config.workspace import load_workspace  # noqa: E402
from engine.store.experiments import Store  # noqa: E402
from tui.screens.device import DeviceScreen  # noqa: E402
from tui.widgets.chat_panel import ChatPanel  # noqa: E402
from tui.widgets.device_panel import DevicePanel  # noqa: E402
from tui.workers.ports import PSEUDO, PortChoice  # noqa: E402

WRITER = r"""
import os, sys, time
fd, rate = int(sys.argv[1]), int(sys.argv[2])
batch = max(1, rate // 100)
n, t0 = 0, time.monotonic()
while True:
    lines = b"".join(b"temp:%d\n" % (i % 50) if i % 10 == 0 else b"seq=%d noise from the flood\n" % i
                     for i in range(n, n + batch))
    os.write(fd, lines)
    n += batch
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""


class Host(FrameClock, App):
    def __init__(self, store: Store, ws: Any) -> None:
        super().__init__()
        self.store, self.ws = store, ws
        self.frames: list[float] = []

    def on_mount(self) -> None:
        self.push_screen(DeviceScreen(self.store, self.ws, "demo-260k", ports=lambda: list(PSEUDO)))


async def flood_bench(store: Store, ws: Any, rate: int, presses: int) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(master), str(rate)],
                              pass_fds=(master,))
    app = Host(store, ws)
    try:
        async with app.run_test(size=(130, 40)) as pilot:
            panel = app.screen.query_one(DevicePanel)
            await wait(lambda: panel.target is not None)
            panel.connect(PortChoice(path, path, "serial"))
            await wait(lambda: panel.connected, 30)  # INFO given up on: noise only
            await pilot.pause(2.0)
            mon = panel.monitor
            tabs = panel.query_one(TabbedContent)
            results: dict[str, list[float]] = {"space": [], "T": [], "t/m": []}
            for _ in range(presses):
                paused = mon.paused
                results["space"].append(await key_to_frame(app, "space",
                                                           lambda p=paused: mon.paused != p))
                await asyncio.sleep(0.15)
                stamps = mon.timestamps
                results["T"].append(await key_to_frame(app, "T",
                                                       lambda s=stamps: mon.timestamps != s))
                await asyncio.sleep(0.15)
                results["t/m"].append(await key_to_frame(
                    app, "t", lambda: tabs.active == "dev-chat"))
                prompt = panel.chat.query_one("#chat-prompt")  # t focuses the prompt (after a
                await wait(lambda p=prompt: p.has_focus)  # refresh): take the focus back, or the
                panel.picker.focus_list()  # letters would type there
                await asyncio.sleep(0.15)
                results["t/m"].append(await key_to_frame(
                    app, "m", lambda: tabs.active == "dev-monitor"))
                await asyncio.sleep(0.15)
            t_stats = time.monotonic()
            total0 = panel.session.stats().lines
            await asyncio.sleep(2.0)
            stats = panel.session.stats()
            rate_in = (stats.lines - total0) / (time.monotonic() - t_stats)
    finally:
        writer.kill()
        writer.wait()
        os.close(master)
        os.close(slave)
    print(f"monitor flood: {rate:,} lines/s written; ingested {rate_in:,.0f} lines/s over 2 s, "
          f"{stats.lines:,} lines, {stats.dropped} dropped (session queue or monitor buffer)")
    for key, ms in results.items():
        print(f"  key {key:<5} → frame  {summary(ms)}  (n={len(ms)})")


async def chat_bench(store: Store, ws: Any, turns: int) -> None:
    from engine.blob.export import export

    export(store.load("demo-260k"), "int8")
    app = Host(store, ws)
    rows = []
    async with app.run_test(size=(130, 40)) as pilot:
        panel = app.screen.query_one(DevicePanel)
        await wait(lambda: panel.target is not None)
        panel.connect(next(p for p in PSEUDO if p.kind == "virtual"))
        await wait(lambda: panel.connected, 30)
        await pilot.press("t")
        panel.chat.knobs.set(temperature=0, max_tokens=32)
        params = panel.chat.knobs.params()
        for _ in range(turns):
            await asyncio.sleep(1.0)  # a person reads the answer: the last turn's redraws end
            before = panel.last_turn
            t0 = time.perf_counter()
            panel.post_message(ChatPanel.Send("Once upon a time", params))
            await wait(lambda b=before: panel.chatting or panel.last_turn is not b)
            await wait(lambda: len(panel.chat.columns.cols["device"].ids) > 0, 120)
            t_dev = time.perf_counter()
            await wait(lambda t=t_dev: app.frames[-1] > t)
            ui_ms = (next(f for f in app.frames if f > t_dev) - t0) * 1e3
            await wait(lambda: not panel.chatting, 120)
            if panel.last_turn is None:
                raise RuntimeError("the turn failed: see the chat verdict line")
            rows.append((ui_ms, panel.last_turn))
    print("chat (greedy, 32 tokens, demo-260k int8 on the virtual board):")
    names = ("torch", "reference", "device")
    for i, (ui_ms, r) in enumerate(rows):
        firsts = "  ".join(f"{n} {r.streams[n].first_token_s * 1e3:7.1f}" for n in names)
        tps = "  ".join(f"{n} {r.streams[n].tok_per_s or 0:8.0f}" for n in names)
        print(f"  turn {i + 1}{' (cold)' if i == 0 else '       '}: first token ms  {firsts}  | "
              f"setup {r.setup_s * 1e3:5.1f} ms | Enter → device token drawn {ui_ms:6.1f} ms | "
              f"tok/s {tps}")
    warm = rows[1:] or rows
    med = {n: statistics.median(r.streams[n].first_token_s * 1e3 for _, r in warm) for n in names}
    print("  warm medians: first token " + ", ".join(f"{n} {v:.1f} ms" for n, v in med.items())
          + f"; Enter → device token drawn {statistics.median(u for u, _ in warm):.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--presses", type=int, default=15)
    p.add_argument("--turns", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "experiments" / "demo-260k", Path(tmp) / "experiments" / "demo-260k")
        ws = load_workspace(tmp)
        store = Store(ws.experiments)
        asyncio.run(flood_bench(store, ws, args.rate, args.presses))
        asyncio.run(chat_bench(store, ws, args.turns))


if __name__ == "__main__":
    main()
