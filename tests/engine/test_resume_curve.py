"""Issue 13: a resumed run's curve never runs backwards, whatever a kill -9 left in metrics.jsonl."""

from __future__ import annotations

import json
import os
import signal

from engine.config.schema import apply_overrides
from engine.store.checkpoint import load_checkpoint
from engine.store.experiments import Store
from engine.store.metrics import read_metrics, supersede_after
from engine.store.tail import MetricsTail
from tests.engine.test_train import make_exp, train_subprocess, wait_for


def test_supersede_after_drops_later_records_and_a_torn_tail(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train_loss": 1.0}) for s in (10, 20, 30, 40)]
    path.write_text("\n".join(lines) + '\n{"step": 50, "train_lo')
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.read()[0]] == [10, 20, 30, 40]
    assert supersede_after(path, 20) == 3  # 30, 40 and the torn line
    assert path.read_text() == "\n".join(lines[:2]) + "\n"
    records, reset = tail.read()  # a follower sees the rewrite as a new file
    assert reset and [r["step"] for r in records] == [10, 20]
    inode = path.stat().st_ino
    assert supersede_after(path, 20) == 0 and path.stat().st_ino == inode  # nothing to do: untouched
    assert supersede_after(tmp_path / "missing.jsonl", 5) == 0


def test_kill_9_past_a_checkpoint_then_resume_keeps_steps_increasing(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=100000", "train.ckpt_every=50",
                   "train.log_every=1", "train.eval_every=100000")
    metrics = exp.folder / "metrics.jsonl"

    def past_checkpoint() -> bool:
        ckpt_step = json.loads((exp.folder / "meta.json").read_text()).get("step") or 0
        recs = read_metrics(metrics)
        return ckpt_step > 0 and bool(recs) and recs[-1]["step"] >= ckpt_step + 3

    proc = train_subprocess(workspace, exp)
    try:
        wait_for(past_checkpoint, timeout=180, poll=0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpt_step = load_checkpoint(exp.path("ckpt.pt"))["step"]
    before = [r["step"] for r in read_metrics(metrics)]
    assert before[-1] > ckpt_step  # the kill left records the resume will redo
    with open(metrics, "a") as fh:  # and a torn last line, as a kill mid-write leaves
        fh.write('{"step": 9999, "train_lo')
    final = ckpt_step + 10
    store = Store(workspace / "experiments")
    store.load("s").save_config(apply_overrides(exp.config, [f"train.max_steps={final}"]))
    proc = train_subprocess(workspace, exp, "--resume")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    steps = [r["step"] for r in read_metrics(metrics)]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False)), steps
    assert steps[-1] == final and steps == list(range(1, final + 1))
    assert all(json.loads(line) for line in metrics.read_text().splitlines())  # torn line cut
    assert "dropped" in out and f"past step {ckpt_step}" in out
