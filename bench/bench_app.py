"""How fast and how quiet is the app? (tinylm-tui's home screen)

1. cold start: `python -m tui.app` on a pty with N experiments, from spawn to the first frame and to
   the frame that shows all N rows (target < 1 s);
2. one experiment changed on disk by another writer → its row updated in the table (target
   < 50 ms), measured from the write (watchdog + the watcher's 25 ms grouping included) and from
   the moment the change reaches the app (the app's own share);
3. idle CPU: the app's CPU time over `--idle` seconds doing nothing, on the demo workspace and on
   N experiments (target: near 0 %, so a training run beside it keeps its speed).

Usage: python bench/bench_app.py [--n 1000] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.atomic import atomic_write_json  # noqa: E402
from engine.config.presets import preset_config  # noqa: E402
from engine.store.experiments import Store  # noqa: E402


def make_workspace(root: Path, n: int) -> Path:
    """N experiments: one made by the store, the rest copies of its folder (config stamps stay
    valid: copy2 keeps mtimes), each with its own name and a different loss."""
    store = Store(root / "experiments")
    first = store.create("exp-0000", preset_config("esp32-260k"), preset="esp32-260k")
    for i in range(1, n):
        dst = store.root / f"exp-{i:04d}"
        shutil.copytree(first.folder, dst)
        meta = json.loads((dst / "meta.json").read_text())
        atomic_write_json(dst / "meta.json", meta | {"name": dst.name, "best_val_loss": 2 + i / n,
                                                     "status": "done", "tags": ["bench"]})
    return root


def spawn_on_pty(ws: Path) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen([sys.executable, "-m", "tui.app", "-w", str(ws)], stdin=slave,
                            stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    return proc, master


def read_until(master: int, needle: bytes, deadline: float, seen: bytearray) -> float | None:
    while time.perf_counter() < deadline:
        if needle in seen:
            return time.perf_counter()
        ready, _, _ = select.select([master], [], [], 0.01)
        if ready:
            try:
                seen += os.read(master, 1 << 16)
            except OSError:
                return None
    return None


def cold_start(ws: Path, n: int) -> tuple[float, float, subprocess.Popen, int]:
    t0 = time.perf_counter()
    proc, master = spawn_on_pty(ws)
    seen = bytearray()
    first = read_until(master, b"\x1b[?1049h", t0 + 60, seen)  # the app took the screen
    # the first frame with content: the footer's keys are drawn on every frame
    frame = read_until(master, b"Filter", t0 + 60, seen)
    rows = read_until(master, f"{n} experiments".encode(), t0 + 60, seen)
    if first is None or frame is None or rows is None:
        raise RuntimeError(f"the app did not draw in time: {bytes(seen[-400:])!r}")
    return frame - t0, rows - t0, proc, master


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(proc: subprocess.Popen, master: int, seconds: float) -> float:
    """Percent of one core over `seconds` of doing nothing (its output drained meanwhile)."""
    time.sleep(1.0)  # let start-up work settle
    c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                os.read(master, 1 << 16)
            except OSError:
                break
    return 100 * (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - t0)


def stop(proc: subprocess.Popen, master: int) -> None:
    os.close(master)  # the terminal goes away: the app exits by itself
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def row_update(ws: Path, repeats: int = 5) -> tuple[list[float], list[float]]:
    """(write → row updated, change reaches the app → row updated) in ms, `repeats` times."""
    from tui.app import make_app
    from tui.messages import ExperimentsChanged
    from tui.widgets.experiments_table import ExperimentsTable

    applied: dict[str, float] = {}
    original = ExperimentsTable.apply

    def timed_apply(self, changed, gone=()):  # type: ignore[no-untyped-def]
        changed = list(changed)
        original(self, changed, gone)
        for s in changed:
            applied[s.name] = time.perf_counter()

    ExperimentsTable.apply = timed_apply  # type: ignore[method-assign]
    arrived: dict[str, float] = {}
    app = make_app(str(ws))

    def hook(message: object) -> None:
        if isinstance(message, ExperimentsChanged):
            for name in message.changes:
                arrived.setdefault(name, time.perf_counter())

    end_to_end, app_share = [], []
    async with app.run_test(size=(120, 36), message_hook=hook) as pilot:
        while not getattr(app.screen, "loaded", False):
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        folder = ws / "experiments"
        for i in range(repeats):
            name = f"exp-{100 + i:04d}"
            meta = json.loads((folder / name / "meta.json").read_text())
            applied.pop(name, None)
            arrived.pop(name, None)
            t0 = time.perf_counter()
            atomic_write_json(folder / name / "meta.json", meta | {"best_val_loss": 1.0 + i})
            while name not in applied and time.perf_counter() - t0 < 10:
                await asyncio.sleep(0.001)
            end_to_end.append(1000 * (applied[name] - t0))
            app_share.append(1000 * (applied[name] - arrived[name]))
            cell = app.screen.query_one(ExperimentsTable).get_cell(name, "best_val").plain
            assert cell == f"{1.0 + i:.4f}", cell
            await pilot.pause(0.3)  # one change at a time: the frame it caused is drawn first
    ExperimentsTable.apply = original  # type: ignore[method-assign]
    return end_to_end, app_share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="experiments in the big workspace")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ws = make_workspace(Path(tmp), args.n)
        print(f"workspace: {args.n} experiments made in {time.perf_counter() - t:.1f} s")
        frame, rows, proc, master = cold_start(ws, args.n)
        print(f"cold start, {args.n} experiments: first frame {1000 * frame:.0f} ms, "
              f"all rows shown {1000 * rows:.0f} ms (target < 1000 ms)")
        busy = idle_cpu(proc, master, args.idle)
        stop(proc, master)
        e2e, share = asyncio.run(row_update(ws))
        print(f"one changed experiment → row updated: write→row median "
              f"{statistics.median(e2e):.0f} ms (max {max(e2e):.0f}; includes the watcher's "
              f"25 ms grouping), change→row median {statistics.median(share):.1f} ms "
              f"(max {max(share):.1f}) (target < 50 ms)")
        print(f"idle CPU, {args.n} experiments: {busy:.2f} % of a core over {args.idle:.0f} s")
    frame, rows, proc, master = cold_start(REPO, len(Store(REPO / "experiments").list()))
    busy = idle_cpu(proc, master, args.idle)
    stop(proc, master)
    print(f"demo workspace: first frame {1000 * frame:.0f} ms; idle CPU {busy:.2f} % of a core "
          f"over {args.idle:.0f} s")


if __name__ == "__main__":
    main()
