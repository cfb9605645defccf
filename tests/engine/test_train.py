"""Training end to end: the real subprocess, real sentencepiece, real torch, real signals."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config.presets import preset_config
from engine.config.schema import apply_overrides
from engine.errors import UserError
from engine.store.checkpoint import load_checkpoint
from engine.store.experiments import Store
from engine.store.metrics import read_metrics
from engine.train.loop import lr_at
from tests.conftest import REPO

TINY = ["model.dim=32", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
        "model.seq_len=64", "tokenizer.vocab_size=384", "train.batch_size=8",
        "train.max_steps=30", "train.eval_every=10", "train.eval_batches=2",
        "train.ckpt_every=10", "train.log_every=5", "train.warmup_steps=5", "train.threads=1",
        "device.context_len=0"]


def make_exp(workspace: Path, name: str, *extra: str):
    cfg = apply_overrides(preset_config("esp32-260k"), TINY + list(extra))
    return Store(workspace / "experiments").create(name, cfg)


def train_subprocess(workspace: Path, exp, *args: str, env: dict | None = None,
                     preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.train", str(exp.folder), "--workspace", str(workspace),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, start_new_session=True)


def wait_for(predicate, timeout: float = 60.0, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError("condition not reached in time")


def test_lr_schedule_warmup_then_cosine():
    cfg = apply_overrides(preset_config("esp32-260k"), ["train.lr=1e-3", "train.min_lr=1e-4",
                                                         "train.warmup_steps=10",
                                                         "train.max_steps=110"])
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.55e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)


def test_lr_schedule_follows_the_clock_under_a_time_budget():
    cfg = apply_overrides(preset_config("esp32-260k"), ["train.lr=1e-3", "train.min_lr=1e-4",
                                                         "train.warmup_steps=10",
                                                         "train.max_steps=1000000",
                                                         "train.max_minutes=2"])
    assert lr_at(9, cfg, 5.0) == pytest.approx(1e-3)  # warmup is counted in steps
    assert lr_at(20, cfg, 90.0) == pytest.approx(1e-3)  # peak until the last fifth of the time
    assert lr_at(20, cfg, 108.0) == pytest.approx(0.55e-3)  # half way through the last fifth
    assert lr_at(20, cfg, 120.0) == pytest.approx(1e-4)
    # steps still end the schedule when they come first
    cfg = apply_overrides(cfg, ["train.max_steps=110"])
    assert lr_at(60, cfg, 1.0) == pytest.approx(0.55e-3)


def test_a_time_budget_ends_the_run_done_with_the_lr_annealed(workspace):
    from engine.config.workspace import load_workspace
    from engine.train.runner import start_training

    exp = make_exp(workspace, "t", "train.max_steps=1000000", "train.max_minutes=0.05",
                   "train.eval_every=1000000", "train.ckpt_every=1000000")
    proc = train_subprocess(workspace, exp)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    meta = json.loads((exp.folder / "meta.json").read_text())
    assert meta["status"] == "done", out
    recs = read_metrics(exp.folder / "metrics.jsonl")
    last = recs[-1]
    assert 3.0 <= last["elapsed_s"] < 3.0 + 2.0  # stopped at the budget, one step past at most
    assert last["val_loss"] is not None  # the last step evaluates, as at max_steps
    assert last["lr"] <= 1e-4 + 0.05 * (1e-3 - 1e-4)  # annealed to min_lr by the clock
    assert recs[0]["lr"] > 5 * last["lr"]
    with pytest.raises(UserError, match="train.max_minutes"):
        start_training(Store(workspace / "experiments").load("t"), load_workspace(workspace),
                       resume=True)


def test_train_run_writes_metrics_checkpoints_and_status(workspace):
    exp = make_exp(workspace, "s")
    proc = train_subprocess(workspace, exp)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    meta = json.loads((exp.folder / "meta.json").read_text())
    assert meta["status"] == "done" and meta["step"] == 30 and meta["pid"] is None
    # the kernels measured (or read from the workspace cache) are named in the log and in meta
    assert meta["kernels"]["source"] in ("measured", "cache", "default") and meta["kernels"]["reason"]
    assert f"kernels: attention={meta['kernels']['attention']}" in output
    recs = read_metrics(exp.folder / "metrics.jsonl")
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30]
    assert set(recs[0]) == {"step", "tokens_seen", "train_loss", "val_loss", "lr", "tok_per_s",
                            "elapsed_s"}
    assert recs[-1]["tokens_seen"] == 30 * 8 * 64
    vals = [r["val_loss"] for r in recs if r["val_loss"] is not None]
    assert len(vals) == 3 and vals[-1] < vals[0]  # it learns
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    ckpt = load_checkpoint(exp.folder / "ckpt.pt")  # weights_only=True inside
    assert ckpt["step"] == 30 and ckpt["model_hash"] == exp.config.model_hash()
    assert "optimizer" in ckpt and "loader" in ckpt and "rng" in ckpt
    assert ckpt["tokenizer_sha256"]
    assert meta["best_val_loss"] == pytest.approx(min(vals), abs=1e-4)
    assert (exp.folder / "best.pt").exists() and (exp.folder / "tokenizer.model").exists()
    assert not (exp.folder / "run.lock").exists()


def test_stop_then_resume_continues_the_same_curve(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=400", "train.ckpt_every=1000")
    proc = train_subprocess(workspace, exp)
    wait_for(lambda: len(read_metrics(exp.folder / "metrics.jsonl")) >= 2, timeout=120)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    meta = json.loads((exp.folder / "meta.json").read_text())
    assert meta["status"] == "stopped"
    stopped_at = load_checkpoint(exp.folder / "ckpt.pt")["step"]
    assert 10 <= stopped_at < 400 and meta["step"] == stopped_at
    # resume for a few more steps: lower max_steps so the test ends
    cfg = apply_overrides(exp.config, [f"train.max_steps={stopped_at + 10}"])
    Store(workspace / "experiments").load("s").save_config(cfg)
    proc = train_subprocess(workspace, exp, "--resume")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    steps = [r["step"] for r in read_metrics(exp.folder / "metrics.jsonl")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no repeated steps
    after = [r for r in read_metrics(exp.folder / "metrics.jsonl") if r["step"] > stopped_at]
    assert after and after[0]["lr"] == pytest.approx(lr_at(after[0]["step"] - 1, cfg))
    assert json.loads((exp.folder / "meta.json").read_text())["status"] == "done"


def test_resume_refuses_a_changed_model_shape(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=10")
    proc = train_subprocess(workspace, exp)
    proc.communicate(timeout=240)
    store = Store(workspace / "experiments")
    store.load("s").save_config(apply_overrides(exp.config, ["model.dim=48", "model.n_heads=4"]))
    proc = train_subprocess(workspace, exp, "--resume")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "model.dim: checkpoint 32, config 48" in out and "tinylm set s model.dim=32" in out
    meta = json.loads((exp.folder / "meta.json").read_text())
    assert meta["status"] == "failed" and "model.dim" in meta["error"]
    assert load_checkpoint(exp.folder / "ckpt.pt")["step"] == 10  # nothing lost


def test_kill_9_at_random_moments_always_resumes(workspace):
    """Five kill -9s while training and checkpointing every step: the experiment never claims to be
    running for a dead pid, the checkpoint always loads, and the run finally completes."""
    exp = make_exp(workspace, "s", "train.max_steps=100000", "train.ckpt_every=1",
                   "train.log_every=1", "train.eval_every=20")
    store = Store(workspace / "experiments")
    rng = random.Random(7)
    last_step = 0
    for kill in range(5):
        proc = train_subprocess(workspace, exp, *(["--resume"] if kill else []))
        wait_for(lambda seen=last_step: exp.path("ckpt.pt").exists()
                 and len(read_metrics(exp.folder / "metrics.jsonl")) > seen, timeout=120)
        time.sleep(rng.uniform(0.0, 1.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reloaded = store.load("s")
        assert reloaded.meta["status"] in ("stopped", "new"), reloaded.meta
        assert reloaded.live_status() != "running"
        step = load_checkpoint(exp.path("ckpt.pt"))["step"]
        assert step >= last_step
        last_step = step
    final = last_step + 10  # now let it finish: the run completes from where the kills left it
    store.load("s").save_config(apply_overrides(exp.config, [f"train.max_steps={final}"]))
    proc = train_subprocess(workspace, exp, "--resume")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert store.load("s").meta["status"] == "done"
    assert load_checkpoint(exp.path("ckpt.pt"))["step"] == final
    leftovers = [p.name for p in exp.folder.iterdir()
                 if p.name.endswith(".tmp") and p.name.startswith((".ckpt.pt", ".best.pt"))]
    assert leftovers == []  # half-written checkpoints of killed runs are swept, not kept


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=10")
    proc = train_subprocess(workspace, exp)
    proc.communicate(timeout=240)
    good = exp.path("ckpt.pt").read_bytes()
    cfg = apply_overrides(exp.config, ["train.max_steps=20"])
    Store(workspace / "experiments").load("s").save_config(cfg)

    def small_files() -> None:  # writes beyond 64 KB fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = train_subprocess(workspace, exp, "--resume", preexec=small_files)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "could not write ckpt.pt" in out
    assert exp.path("ckpt.pt").read_bytes() == good
    assert load_checkpoint(exp.path("ckpt.pt"))["step"] == 10
    assert Store(workspace / "experiments").load("s").meta["status"] == "failed"


def test_corpus_smaller_than_one_batch_is_a_clear_failure(workspace):
    tiny = workspace / "tiny.txt"
    tiny.write_text("One story.\n<|endoftext|>\nAnother story, short.\n<|endoftext|>\nThird.\n")
    exp = make_exp(workspace, "s", f"data.corpus={tiny}", "tokenizer.kind=byte",
                   "tokenizer.vocab_size=256")
    proc = train_subprocess(workspace, exp)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "too small" in out
    meta = json.loads((exp.folder / "meta.json").read_text())
    assert meta["status"] == "failed" and "model.seq_len" in meta["error"]


def test_second_trainer_is_refused_while_one_runs(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=100000")
    first = train_subprocess(workspace, exp)
    try:
        wait_for(lambda: (exp.folder / "run.lock").exists(), timeout=60)
        second = train_subprocess(workspace, exp, "--resume")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 2 and f"pid {first.pid}" in out
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)


def test_bfloat16_autocast_path_runs_on_cpu(workspace):
    exp = make_exp(workspace, "s", "train.max_steps=5", "train.dtype=bfloat16",
                   "train.eval_every=5")
    proc = train_subprocess(workspace, exp)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "autocast torch.bfloat16" in out
    recs = read_metrics(exp.folder / "metrics.jsonl")
    assert recs[-1]["val_loss"] is not None and recs[-1]["val_loss"] < 10


def test_gru_byte_level_trains(workspace):
    exp = make_exp(workspace, "g", "model.arch=gru", "model.dim=32", "model.n_layers=1",
                   "tokenizer.kind=byte", "tokenizer.vocab_size=256", "train.max_steps=10",
                   "train.eval_every=10", "quant.int_attention=false")  # integer mode: transformers
    proc = train_subprocess(workspace, exp)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert json.loads((exp.folder / "meta.json").read_text())["status"] == "done"


def test_bad_checkpoint_files_are_explained(tmp_path):
    page = tmp_path / "ckpt.pt"
    page.write_text("Entry not found")
    with pytest.raises(UserError, match="15-byte text file .*Entry not found"):
        load_checkpoint(page)
    import torch

    torch.save({"format": "tinylm-ckpt", "version": 1, "model": {"w": torch.zeros(1000)},
                "config": {}, "model_hash": "x"}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="damaged or truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a tinylm checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
