"""tui/workers/run_follower.py: only what is new, torn lines held back, a replaced metrics file
restarts the curve, status and checkpoint changes reported once, one update in flight."""

from __future__ import annotations

import json
import os
import threading
import time

from engine.atomic import atomic_write_json, atomic_write_text
from tui.workers.run_follower import RunFollower


def _rec(step: int, val: float | None = None) -> str:
    return json.dumps({"step": step, "train_loss": 5.0 - step / 100, "val_loss": val}) + "\n"


def test_reads_only_what_is_new_and_notices_replacement(tmp_path):
    atomic_write_json(tmp_path / "meta.json", {"name": "x", "status": "stopped"})
    (tmp_path / "metrics.jsonl").write_text(_rec(5) + _rec(10, 4.9))
    (tmp_path / "train.log").write_text("=== train ===\nstep 5\n")
    f = RunFollower(tmp_path)
    first = f.read()
    assert [r["step"] for r in first.records] == [5, 10] and not first.records_reset
    assert first.log_lines == ["=== train ===", "step 5"]
    assert first.status == "stopped" and first.meta["status"] == "stopped"
    assert first.has_checkpoint is False
    assert f.read().empty  # nothing changed: nothing reported again

    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write(_rec(15) + '{"step": 20, "train_')  # the writer is mid-line
    assert [r["step"] for r in f.read().records] == [15]
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('loss": 4.8}\n')
    assert [r["step"] for r in f.read().records] == [20]

    atomic_write_text(tmp_path / "metrics.jsonl", _rec(5))  # a resume rewrote the file
    (tmp_path / "ckpt.pt").write_bytes(b"PK")
    u = f.read()
    assert u.records_reset and [r["step"] for r in u.records] == [5]
    assert u.has_checkpoint is True and u.status is None and u.meta is None


def test_a_running_status_without_a_live_runner_reads_stopped(tmp_path):
    # meta says running, but no lock / dead pid: the live status is "stopped" (kill -9 case)
    atomic_write_json(tmp_path / "meta.json", {"name": "x", "status": "running", "pid": 999999})
    assert RunFollower(tmp_path).read().status == "stopped"


def test_run_keeps_one_update_in_flight_until_acked(tmp_path):
    atomic_write_json(tmp_path / "meta.json", {"name": "x", "status": "new"})
    f = RunFollower(tmp_path, poll_s=0.02, min_interval_s=0.0)
    got: list = []
    first = threading.Event()

    def on_update(u):
        got.append(u)
        first.set()

    t = threading.Thread(target=f.run, args=(on_update, lambda: False), daemon=True)
    t.start()
    try:
        assert first.wait(5)
        with open(tmp_path / "metrics.jsonl", "a") as fh:
            for step in range(1, 51):
                fh.write(_rec(step))
                fh.flush()
                os.fsync(fh.fileno())
                f.poke()
        assert len(got) == 1  # not acked: nothing more was read, however many writes and pokes
        f.ack()
        deadline = time.monotonic() + 5
        while sum(len(u.records) for u in got) < 50 and time.monotonic() < deadline:
            f.ack()
            time.sleep(0.02)
        assert [r["step"] for u in got for r in u.records] == list(range(1, 51))
        assert len(got) < 50  # the writes arrived batched
    finally:
        f.stop()
        t.join(5)
    assert not t.is_alive()
