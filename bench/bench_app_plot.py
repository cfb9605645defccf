"""The app beside a training run: the run's tok/s with the app plotting it vs without (issue 11:
>= 0.9x), the app's own CPU, and key press → screen change while a run plots (issue 11: < 100 ms).

    .venv/bin/python bench/bench_app_plot.py                   # 4 rounds of 20 s windows, esp32-260k
    .venv/bin/python bench/bench_app_plot.py --rounds 6 --seconds 30 --set train.threads=2

Why interleaved: on a shared 2-core machine two separate runs (one watched, one not) differed by
8-39 % from the machine's other load alone. Here ONE run is started with the engine (as `tinylm
train`) and the real app (a real terminal: tmux) is opened on its Training tab and closed again,
window by window: without, with, with, without, ... so slow drifts of the load hit both sides.
A window's tok/s is training tokens over training time (`tokens_seen` / `elapsed_s` of the metrics
records inside it: eval pauses are left out on both sides); the app is given 3 s to start and
draw before its window opens. The app's CPU is read from /proc/<pid>/stat over its windows.

Then key → frame: the app headless (App.run_test, 130x38) on the same running experiment's
Training tab, live plot updating; keys `m` (smoothing: the plot redrawn), `1`/`2` (Overview ⇄
Training). Median, p90, max. Needs tmux. The load average before and after is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frames import FrameClock, key_to_frame, summary, wait  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def app_main(workspace: str, name: str) -> None:
    """`bench_app_plot.py --app WS NAME`: the real app with the Experiment screen open on NAME."""
    from engine.config.workspace import load_workspace
    from tui.app import TinyLMApp
    from tui.screens.experiment import ExperimentScreen

    class BenchApp(TinyLMApp):
        def on_mount(self) -> None:  # TinyLMApp.on_mount (the home screen) runs after this
            self.call_later(lambda: self.push_screen(ExperimentScreen(self.store, name)))

    BenchApp(load_workspace(workspace)).run()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


class AppInTmux:
    def __init__(self, ws: Path, name: str, session: str) -> None:
        self.session = session
        cmd = (f"cd {ROOT} && PYTHONPATH={ROOT} exec {sys.executable} {Path(__file__).resolve()} "
               f"--app {ws} {name}")
        tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "36", cmd)
        self.pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def keys(self, *keys: str) -> None:
        tmux("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not on the app's screen after {timeout} s:\n"
                                   + self.screen())
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


class MetricsWatch(threading.Thread):
    """Polls metrics.jsonl and stamps each new record with the wall time it was seen."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.records, self.done = path, [], threading.Event()

    def run(self) -> None:
        offset, rest = 0, b""
        while not self.done.wait(0.05):
            try:
                with self.path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                continue
            offset += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            now = time.monotonic()
            self.records += [(now, json.loads(line)) for line in lines if line.strip()]

    def tok_s(self, t0: float, t1: float) -> float:
        """Training tokens over training time, from the records seen inside [t0, t1]."""
        recs = [r for t, r in self.records if t0 <= t <= t1 and r.get("elapsed_s") is not None]
        if len(recs) < 2:
            return float("nan")
        return ((recs[-1]["tokens_seen"] - recs[0]["tokens_seen"])
                / (recs[-1]["elapsed_s"] - recs[0]["elapsed_s"]))


def interleaved(ws, exp, rounds: int, seconds: float) -> tuple[list[float], list[float], list[float]]:
    watch = MetricsWatch(exp.folder / "metrics.jsonl")
    watch.start()
    deadline = time.monotonic() + 120
    while len(watch.records) < 3 and time.monotonic() < deadline:  # start-up and warm-up of the
        time.sleep(0.2)  # run (data, first steps), outside every window
    without, with_app, app_cpu = [], [], []
    order = [False, True, True, False] * ((rounds + 1) // 2)
    try:
        for watched in order[: 2 * rounds]:
            if not watched:
                t0 = time.monotonic()
                time.sleep(seconds)
                without.append(watch.tok_s(t0, time.monotonic()))
                continue
            app = AppInTmux(ws.root, exp.name, f"bench-app-{os.getpid()}")
            try:
                app.wait_for("Overview")
                app.keys("2")
                app.wait_for("running ·")
                time.sleep(3.0)
                c0, t0 = cpu_seconds(app.pid), time.monotonic()
                time.sleep(seconds)
                t1 = time.monotonic()
                with_app.append(watch.tok_s(t0, t1))
                app_cpu.append(100 * (cpu_seconds(app.pid) - c0) / (t1 - t0))
            finally:
                app.close()
            time.sleep(1.0)  # the app's exit, outside the windows
    finally:
        watch.done.set()
    return without, with_app, app_cpu


async def keys_while_plotting(ws, name: str, presses: int) -> dict[str, list[float]]:
    from textual.widgets import TabbedContent

    from tui.app import TinyLMApp
    from tui.screens.experiment import ExperimentScreen

    class Host(FrameClock, TinyLMApp):
        def on_mount(self) -> None:
            self.call_later(lambda: self.push_screen(ExperimentScreen(self.store, name)))

    app = Host(ws)
    out: dict[str, list[float]] = {"m": [], "1/2": []}
    async with app.run_test(size=(130, 38)):
        await wait(lambda: isinstance(app.screen, ExperimentScreen), 30)
        screen = app.screen
        tabs = screen.query_one(TabbedContent)
        await key_to_frame(app, "2", lambda: tabs.active == "training")
        await asyncio.sleep(3.0)  # the curve drawn, the follower tailing
        for _ in range(presses):
            before = screen.training.smoothing
            out["m"].append(await key_to_frame(app, "m",
                                               lambda b=before: screen.training.smoothing != b))
            await asyncio.sleep(0.3)
            out["1/2"].append(await key_to_frame(app, "1", lambda: tabs.active == "overview"))
            await asyncio.sleep(0.3)
            out["1/2"].append(await key_to_frame(app, "2", lambda: tabs.active == "training"))
            await asyncio.sleep(0.3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="pairs of windows (with, without)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of one window")
    p.add_argument("--presses", type=int, default=10)
    p.add_argument("--preset", default="esp32-260k")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--app", nargs=2, metavar=("WORKSPACE", "NAME"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.app:
        app_main(*args.app)
        return
    if shutil.which("tmux") is None:
        sys.exit("needs tmux (the app runs in a real terminal): apt-get install tmux")

    from engine.config.presets import preset_config
    from engine.config.schema import apply_overrides
    from engine.config.workspace import load_workspace
    from engine.store.experiments import Store
    from engine.train.runner import start_training, stop_training, wait_until_running

    cfg = apply_overrides(preset_config(args.preset),
                          ["train.max_steps=1000000", "train.log_every=5", *args.set])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        root = Path(tmp)
        (root / "corpora").mkdir()
        for f in (ROOT / "corpora").iterdir():
            (root / "corpora" / f.name).symlink_to(f)
        ws = load_workspace(root)
        store = Store(ws.experiments)
        exp = store.create("plotted", cfg)
        proc = start_training(exp, ws)
        try:
            wait_until_running(exp, proc)
            without, with_app, app_cpu = interleaved(ws, exp, args.rounds, args.seconds)
            keys = asyncio.run(keys_while_plotting(ws, exp.name, args.presses))
        finally:
            stop_training(store.load(exp.name), timeout=60)
            proc.wait(timeout=60)
    load_after = os.getloadavg()
    print(f"preset {args.preset} {' '.join(args.set)}; {args.rounds} rounds of {args.seconds:.0f} s "
          f"windows; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after "
          f"{load_after[0]:.2f}")
    print("tok/s without the app: " + ", ".join(f"{v:,.0f}" for v in without))
    print("tok/s with the app:    " + ", ".join(f"{v:,.0f}" for v in with_app))
    with_app, without = [v for v in with_app if v == v], [v for v in without if v == v]  # nan: a
    if not with_app or not without:  # window without two records (a run slower than the window)
        sys.exit("too few metrics records per window: give --seconds more")
    ratio = statistics.median(with_app) / statistics.median(without)
    print(f"with / without (medians) = {ratio:.2f}x; app CPU while plotting "
          f"{statistics.median(app_cpu):.1f}% of one core ({min(app_cpu):.1f}-{max(app_cpu):.1f})")
    for key, ms in keys.items():
        print(f"key {key:<4} → frame while the run plots: {summary(ms)}  (n={len(ms)})")


if __name__ == "__main__":
    main()
