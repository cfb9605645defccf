"""The app beside a training run: its own CPU while it plots the run live, and the run's tok/s with
the app plotting it vs the same run without the app (issue 11: >= 0.9x).

    .venv/bin/python bench/bench_app_plot.py                 # 30 s per phase, preset esp32-260k
    .venv/bin/python bench/bench_app_plot.py --seconds 60 --set train.threads=1

Phases, each a fresh experiment with the same config, in one temporary workspace:
  1. alone    the run started with the engine (as `tinylm train`), nothing watching it;
  2. watched  the real app (`tinylm-tui` code, a real terminal: tmux) open on the experiment's
              Training tab; the run started with its `r` key, followed live (plot, stats, log);
              the app's CPU is read from /proc/<pid>/stat over the run's steady part;
  3. alone    again, so the noise of a shared machine shows as the spread of the two alone runs.
Also: the app's CPU while open on a stopped experiment (idle). tok/s is the median of the run's
metrics records after the first quarter of the phase (start-up and warm-up left out).
Needs tmux. Prints a table; the load average before and after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


def app_main(workspace: str, name: str) -> None:
    """`bench_app_plot.py --app WS NAME`: the app with the Experiment screen open on NAME."""
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


def median_tok_s(folder: Path, after_s: float) -> tuple[float, int]:
    recs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    speeds = [r["tok_per_s"] for r in recs if r.get("tok_per_s") and r.get("elapsed_s", 0) >= after_s]
    return (statistics.median(speeds) if speeds else 0.0), len(speeds)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


class AppInTmux:
    def __init__(self, ws: Path, name: str, session: str) -> None:
        self.session = session
        cmd = (f"cd {ROOT} && PYTHONPATH={ROOT} exec {sys.executable} {Path(__file__).resolve()} "
               f"--app {ws} {name}")
        tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", cmd)
        self.pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def keys(self, *keys: str) -> None:
        tmux("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not on the app's screen after {timeout} s:\n"
                                   + self.screen())
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


def run_alone(store, ws, cfg, name: str, seconds: float) -> tuple[float, int]:
    from engine.train.runner import start_training, stop_training, wait_until_running

    exp = store.create(name, cfg)
    proc = start_training(exp, ws)
    wait_until_running(exp, proc)
    time.sleep(seconds)
    stop_training(store.load(name), timeout=60)
    proc.wait(timeout=60)
    return median_tok_s(exp.folder, seconds / 4)


def run_watched(store, ws, cfg, name: str, seconds: float) -> tuple[float, int, float, float]:
    """(tok/s, records, app CPU % while plotting, app CPU % idle before the run)."""
    exp = store.create(name, cfg)
    app = AppInTmux(ws.root, name, f"bench-app-{os.getpid()}")
    try:
        app.wait_for("Overview")
        app.keys("2")
        app.wait_for("r Run")
        time.sleep(1.0)
        c0, t0 = cpu_seconds(app.pid), time.monotonic()
        time.sleep(10)
        idle = 100 * (cpu_seconds(app.pid) - c0) / (time.monotonic() - t0)
        app.keys("r")
        app.wait_for("running ·", timeout=120)
        time.sleep(seconds / 4)
        c0, t0 = cpu_seconds(app.pid), time.monotonic()
        time.sleep(seconds * 3 / 4)
        plotting = 100 * (cpu_seconds(app.pid) - c0) / (time.monotonic() - t0)
        app.keys("s")
        app.wait_for("stopped ·", timeout=120)
    finally:
        app.close()
    tok_s, n = median_tok_s(exp.folder, seconds / 4)
    return tok_s, n, plotting, idle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="training time per phase")
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

    cfg = apply_overrides(preset_config(args.preset), ["train.max_steps=1000000", *args.set])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        root = Path(tmp)
        (root / "corpora").mkdir()
        for f in (ROOT / "corpora").iterdir():
            (root / "corpora" / f.name).symlink_to(f)
        ws = load_workspace(root)
        store = Store(ws.experiments)
        a1 = run_alone(store, ws, cfg, "alone-1", args.seconds)
        w = run_watched(store, ws, cfg, "watched", args.seconds)
        a2 = run_alone(store, ws, cfg, "alone-2", args.seconds)
    load_after = os.getloadavg()
    alone = statistics.mean([a1[0], a2[0]])
    print(f"preset {args.preset} {' '.join(args.set)}; {args.seconds:.0f} s per phase; "
          f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after "
          f"{load_after[0]:.2f}")
    print(f"{'phase':<10} {'tok/s':>9} {'records':>8}")
    for label, (tok, n) in (("alone 1", a1), ("watched", w[:2]), ("alone 2", a2)):
        print(f"{label:<10} {tok:>9,.0f} {n:>8}")
    print(f"watched / mean(alone) = {w[0] / alone:.2f}  (alone runs differ by "
          f"{100 * abs(a1[0] - a2[0]) / alone:.0f}%: the machine's noise)")
    print(f"app CPU: {w[2]:.1f}% of one core while plotting the run, {w[3]:.1f}% idle (stopped "
          "experiment, Training tab open)")


if __name__ == "__main__":
    main()
