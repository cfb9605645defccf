"""Starting, stopping and queueing training subprocesses (used by the CLI and the TUI alike).

A run is `python -m engine.train EXP_DIR` in its own session (so closing the terminal or the TUI does
not kill it), with stdout/stderr appended to the experiment's train.log. The queue is a JSON file in
the experiments folder, drained by one detached queue runner process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.atomic import atomic_write_json
from engine.config.schema import Bounds, check_values
from engine.config.workspace import Workspace
from engine.errors import Failure, LockHeld, UserError
from engine.infer.load import check_checkpoint
from engine.store.checkpoint import check_checkpoint_file
from engine.store.ckpt_fields import checkpoint_fields
from engine.store.experiments import Experiment, Store
from engine.store.lock import RunLock, pid_alive, read_lock

QUEUE_FILE = ".queue.json"
QUEUE_LOCK_DIR = ".queue"


def train_command(exp: Experiment, ws: Workspace, resume: bool = False, init_from: str | None = None,
                  lora: int = 0, nproc: int = 1) -> list[str]:
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "engine.train"]
    else:
        cmd = [sys.executable, "-m", "engine.train"]
    cmd += [str(exp.folder), "--workspace", str(ws.root)]
    if resume:
        cmd.append("--resume")
    if init_from:
        cmd += ["--init-from", init_from]
    if lora:
        cmd += ["--lora", str(lora)]
    return cmd


def run_env() -> dict[str, str]:
    """The subprocess imports `engine` from this checkout even when it is not installed."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_run_options(jobs: int = 1, nproc: int = 1, lora: int = 0) -> None:
    """Numbers of `train`/`resume`/`queue`, by the config's number rules (ConfigError, exit 2)."""
    check_values({"jobs": jobs, "nproc": nproc, "lora": lora}, "training options",
                 {"jobs": Bounds(ge=1, example="2 (runs at a time)"),
                  "nproc": Bounds(ge=1, example="2 (DDP processes)"),
                  "lora": Bounds(ge=0, example="8 (0 = full fine-tune)")})


def start_training(exp: Experiment, ws: Workspace, resume: bool = False,
                   init_from: str | None = None, lora: int = 0, nproc: int = 1,
                   refuse_finished: bool = True) -> subprocess.Popen:
    """Launch the train subprocess detached; refuses if the experiment is already running, and
    validates config.toml here first: a hand-edited config that does not parse is exit 2 naming the
    key, not a failed background run. A resume of a run already at train.max_steps is refused too
    (`refuse_finished`; the queue passes False: there the run just ends as done, not failed)."""
    check_run_options(nproc=nproc, lora=lora)
    exp.config  # noqa: B018  (parses and validates; raises ConfigError)
    if resume and exp.path("ckpt.pt").exists():
        # a damaged checkpoint, another shape or tokenizer: exit 2 here, with the fix (no torch)
        path = exp.path("ckpt.pt")
        check_checkpoint_file(path)
        fields = checkpoint_fields(path, with_config=True)
        if isinstance(fields.get("config"), dict):
            check_checkpoint(exp, fields, path)
        max_steps = exp.config.train.max_steps
        if refuse_finished and isinstance(fields.get("step"), int) and fields["step"] >= max_steps:
            # the run would start (seconds of torch import), find nothing to do, and say "done"
            raise UserError(f"'{exp.name}' already trained its {max_steps} steps "
                            f"(train.max_steps): raise it (`tinylm set {exp.name} "
                            f"train.max_steps={max_steps * 2}`, or e in the app), then resume")
        minutes = exp.config.train.max_minutes
        elapsed = fields.get("elapsed_s")
        if (refuse_finished and isinstance(elapsed, (int, float))
                and exp.config.train.out_of_time(elapsed)):
            raise UserError(f"'{exp.name}' already trained its {minutes:g} "
                            f"minute{'' if minutes == 1 else 's'} "
                            f"(train.max_minutes): raise it (`tinylm set {exp.name} "
                            f"train.max_minutes={minutes * 2:g}`, or 0 for steps only), then resume")
    info = read_lock(exp.folder)
    if info is not None and info.is_alive():
        raise LockHeld(f"'{exp.name}' is already running (pid {info.pid}); "
                       f"`tinylm stop {exp.name}` first")
    if not resume and exp.path("ckpt.pt").exists():
        raise UserError(f"'{exp.name}' already has a checkpoint (step {exp.meta.get('step', '?')}); "
                        f"`tinylm resume {exp.name}` continues it, or `tinylm clone {exp.name} NEW` "
                        "starts a fresh run")
    logf = open(exp.path("train.log"), "ab")
    logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'train'} "
               f"===\n".encode())
    logf.flush()
    proc = subprocess.Popen(train_command(exp, ws, resume, init_from, lora, nproc),
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=run_env(), start_new_session=True, cwd=ws.root)
    logf.close()
    return proc


def describe_start(exp: Experiment, resume: bool, pid: int) -> str:
    """What a start did, in words: a resume without a checkpoint trains from scratch and says so."""
    if resume and not exp.path("ckpt.pt").exists():
        return (f"'{exp.name}' has no checkpoint yet, so there is nothing to resume: training it "
                f"from step 0 (pid {pid})")
    if resume:
        return f"resumed '{exp.name}' from its checkpoint (pid {pid})"
    return f"training '{exp.name}' (pid {pid})"


LOG_HEADER = b"\n=== "


def failure_reason(exp: Experiment, lines: int = 8) -> str:
    """Why a run failed, for `show`, `train --follow` and the app: the error the run recorded in
    meta.json when it failed, else the last lines the latest start wrote to train.log (a run that
    died before it could record anything)."""
    if exp.meta.get("status") == "failed" and exp.meta.get("error"):
        return str(exp.meta["error"])
    try:
        with open(exp.path("train.log"), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - (64 << 10)))
            data = fh.read()
    except FileNotFoundError:
        return "no reason recorded (no train.log)"
    start = data.rfind(LOG_HEADER)
    if start >= 0:  # only the latest start's lines: after its "=== <time> train ===" header
        data = data[start + len(LOG_HEADER):].split(b"\n", 1)[-1]
    tail = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()][-lines:]
    return "\n".join(tail) if tail else "no reason recorded (train.log is empty)"


def wait_until_running(exp: Experiment, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """Until the run took its lock (or ended): so the caller can report a real status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_lock(exp.folder)
        if info is not None and info.pid == proc.pid:
            return "running"
        if proc.poll() is not None:
            return "exited"
        time.sleep(0.05)
    return "starting"


@dataclass
class Launch:
    """What starting a run came to: `state` is "running", "starting" (slow start, still going) or
    "failed" (the process ended before it took its lock; `log_tail` says why)."""

    name: str
    pid: int
    state: str
    returncode: int | None = None
    log_tail: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        """For the CLI: 2 when the run refused its input, 1 for other failures, else 0."""
        if self.state != "failed":
            return 0
        return 2 if self.returncode == 2 else 1


def launch(exp: Experiment, ws: Workspace, resume: bool = False, init_from: str | None = None,
           lora: int = 0, nproc: int = 1, timeout: float = 60.0, tail_lines: int = 8) -> Launch:
    """Start a run and wait until it is really running (or failed to start), so both faces can
    report a true status; a failed start carries the last lines of train.log."""
    proc = start_training(exp, ws, resume=resume, init_from=init_from, lora=lora, nproc=nproc)
    state = wait_until_running(exp, proc, timeout)
    if state == "exited" and proc.returncode not in (0, None):
        reread = Store(exp.folder.parent).load(exp.name)  # the run may have recorded its error
        lines = failure_reason(reread, tail_lines).splitlines()
        return Launch(exp.name, proc.pid, "failed", proc.returncode, lines, proc)
    return Launch(exp.name, proc.pid, "running" if state == "exited" else state, proc.returncode,
                  proc=proc)


def stop_training(exp: Experiment, timeout: float = 30.0,
                  on_message: Callable[[str], None] | None = None) -> bool:
    """SIGTERM the run (it checkpoints and exits); True if it ended within `timeout`."""
    say = on_message or (lambda m: None)
    info = read_lock(exp.folder)
    if info is None or not info.is_alive():
        if remove_from_queue(Store(exp.folder.parent), [exp.name]):
            say(f"removed '{exp.name}' from the queue")
            return True
        raise UserError(f"'{exp.name}' is not running (status {exp.live_status()})")
    if info.pid <= 0:
        raise Failure(f"'{exp.name}' is starting up; try again in a second")
    os.kill(info.pid, signal.SIGTERM)
    say(f"sent SIGTERM to pid {info.pid}; it checkpoints and exits")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(info.pid, info.start_time):
            return True
        time.sleep(0.1)
    return False


# ---- queue -----------------------------------------------------------------------------------------

def _queue_path(store: Store) -> Path:
    return store.root / QUEUE_FILE


def read_queue(store: Store) -> list[dict[str, Any]]:
    try:
        data = json.loads(_queue_path(store).read_text())
        return [e for e in data.get("entries", []) if isinstance(e, dict) and "name" in e]
    except (FileNotFoundError, ValueError):
        return []


def _write_queue(store: Store, entries: list[dict[str, Any]], jobs: int | None = None) -> None:
    old = _read_queue_meta(store)
    atomic_write_json(_queue_path(store), {"entries": entries,
                                           "jobs": jobs if jobs is not None else old.get("jobs", 1)})


def _read_queue_meta(store: Store) -> dict[str, Any]:
    try:
        return json.loads(_queue_path(store).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _queue_lock(store: Store) -> RunLock:
    folder = store.root / QUEUE_LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return RunLock(folder, "the queue")


def add_to_queue(store: Store, ws: Workspace, names: list[str], jobs: int = 1,
                 resume: bool = False) -> list[str]:
    """Queue experiments (status `queued`) and make sure a queue runner is draining the queue."""
    check_run_options(jobs=jobs)
    entries = read_queue(store)
    queued = {e["name"] for e in entries}
    added = []
    for name in names:
        exp = store.load(name)
        exp.config  # noqa: B018  (refuse an invalid config now, not when its turn comes)
        if name in queued:
            continue
        if exp.live_status() == "running":
            raise LockHeld(f"'{name}' is running already")
        entries.append({"name": name, "resume": resume or exp.path("ckpt.pt").exists()})
        exp.update_meta(status="queued", error=None)
        added.append(name)
    _write_queue(store, entries, jobs)
    ensure_queue_runner(store, ws)
    return added


def remove_from_queue(store: Store, names: list[str]) -> list[str]:
    entries = read_queue(store)
    removed = [e["name"] for e in entries if e["name"] in names]
    _write_queue(store, [e for e in entries if e["name"] not in names])
    for name in removed:
        exp = store.load(name)
        if exp.meta.get("status") == "queued":
            exp.update_meta(status="stopped" if exp.path("ckpt.pt").exists() else "new")
    return removed


def ensure_queue_runner(store: Store, ws: Workspace) -> None:
    info = read_lock(store.root / QUEUE_LOCK_DIR)
    if info is not None and info.is_alive():
        return
    subprocess.Popen([sys.executable, "-m", "engine.train.runner", str(store.root), str(ws.root)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                     env=run_env(), start_new_session=True, cwd=ws.root)


def drain_queue(store: Store, ws: Workspace, poll_s: float = 0.5) -> None:
    """The queue runner: start queued runs in order, `jobs` at a time, until the queue is empty.
    A run that fails keeps its log and status; the queue goes on."""
    with _queue_lock(store):
        running: dict[str, subprocess.Popen] = {}
        while True:
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
            entries = read_queue(store)
            jobs = max(1, int(_read_queue_meta(store).get("jobs", 1)))
            while entries and len(running) < jobs:
                entry = entries.pop(0)
                _write_queue(store, entries)
                try:
                    exp = store.load(entry["name"])
                    if exp.meta.get("status") != "queued":
                        continue  # removed or started by hand meanwhile
                    running[entry["name"]] = start_training(
                        exp, ws, resume=entry.get("resume", False), refuse_finished=False)
                except (UserError, OSError) as e:
                    try:
                        store.load(entry["name"]).update_meta(status="failed", error=str(e))
                    except UserError:
                        pass
            if not running and not read_queue(store):
                return
            time.sleep(poll_s)


if __name__ == "__main__":
    from engine.config.workspace import load_workspace

    drain_queue(Store(Path(sys.argv[1])), load_workspace(sys.argv[2]))
