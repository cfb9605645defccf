"""Training through `tinylm` as a user drives it: background runs, queue, DDP, fine-tuning, sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine.store.checkpoint import load_checkpoint
from engine.store.metrics import read_metrics
from tests.conftest import REPO
from tests.engine.test_train import make_exp, wait_for


def meta(workspace, name):
    return json.loads((workspace / "experiments" / name / "meta.json").read_text())


def test_train_follow_then_sample_greedy_is_deterministic(cli, workspace):
    make_exp(workspace, "s", "train.max_steps=20")
    r = cli("train", "s", "--follow", timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "s step     20" in r.stdout and "s: done at step 20" in r.stdout
    a = cli("sample", "s", "--prompt", "Once upon a time", "--temperature", "0",
            "--max-tokens", "20")
    b = cli("sample", "s", "--prompt", "Once upon a time", "--temperature", "0",
            "--max-tokens", "20")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("Once upon a time")
    assert len(a.stdout) > len("Once upon a time") + 5
    c = cli("sample", "s", "--prompt", "Once", "--temperature", "1.0", "--seed", "1")
    d = cli("sample", "s", "--prompt", "Once", "--temperature", "1.0", "--seed", "2")
    assert c.stdout != d.stdout
    r = cli("train", "s")
    assert r.returncode == 2 and "tinylm resume s" in r.stderr


def test_background_train_stop_and_resume_via_cli(cli, workspace):
    make_exp(workspace, "s", "train.max_steps=100000", "train.ckpt_every=100000")
    r = cli("train", "s")
    assert r.returncode == 0 and "training 's'" in r.stdout
    assert meta(workspace, "s")["status"] == "running"
    exp_dir = workspace / "experiments" / "s"
    wait_for(lambda: len(read_metrics(exp_dir / "metrics.jsonl")) >= 1, timeout=120)
    r = cli("list", "--json")
    assert json.loads(r.stdout)[0]["status"] == "running"
    r = cli("stop", "s")
    assert r.returncode == 0 and "s: stopped" in r.stdout
    step = load_checkpoint(exp_dir / "ckpt.pt")["step"]
    r = cli("stop", "s")
    assert r.returncode == 2 and "not running" in r.stderr
    r = cli("resume", "s")
    assert r.returncode == 0 and "resumed 's'" in r.stdout
    wait_for(lambda: read_metrics(exp_dir / "metrics.jsonl")[-1]["step"] > step + 5, timeout=120)
    assert cli("stop", "s").returncode == 0
    assert load_checkpoint(exp_dir / "ckpt.pt")["step"] > step


def test_queue_runs_in_order_and_survives_a_failure(cli, workspace):
    make_exp(workspace, "a", "train.max_steps=5", "train.eval_every=5")
    make_exp(workspace, "bad", "data.corpus=missing.txt")
    make_exp(workspace, "c", "train.max_steps=5", "train.eval_every=5")
    r = cli("train", "a", "bad", "c", "--jobs", "1")
    assert r.returncode == 0 and "queued a, bad, c" in r.stdout
    statuses = {meta(workspace, n)["status"] for n in ("bad", "c")}
    assert "queued" in statuses  # visible to the CLI and the TUI while waiting
    wait_for(lambda: meta(workspace, "c")["status"] in ("done", "failed"), timeout=300, poll=0.5)
    assert meta(workspace, "a")["status"] == "done"
    assert meta(workspace, "c")["status"] == "done"
    bad = meta(workspace, "bad")
    assert bad["status"] == "failed" and "missing.txt" in bad["error"]
    assert "missing.txt" in (workspace / "experiments" / "bad" / "train.log").read_text()
    assert "queue is empty" in cli("queue", "list").stdout


def test_queue_add_remove(cli, workspace):
    make_exp(workspace, "a", "train.max_steps=100000")
    make_exp(workspace, "b")
    cli("queue", "add", "a", "b")
    wait_for(lambda: meta(workspace, "a")["status"] == "running", timeout=60)
    assert "b" in cli("queue", "list").stdout
    r = cli("queue", "remove", "b")
    assert "removed: b" in r.stdout and meta(workspace, "b")["status"] == "new"
    assert cli("stop", "a").returncode == 0


def test_ddp_two_cpu_processes_rank0_writes_once(workspace):
    exp = make_exp(workspace, "d", "train.max_steps=6", "train.log_every=2", "train.eval_every=6",
                   "train.ckpt_every=6")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "engine.train", str(exp.folder), "--workspace", str(workspace)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "world size 2" in proc.stderr
    recs = read_metrics(exp.folder / "metrics.jsonl")
    assert [r["step"] for r in recs] == [2, 4, 6]  # one writer: no duplicated lines
    assert recs[-1]["tokens_seen"] == 6 * 8 * 64 * 2  # both ranks' tokens count
    assert load_checkpoint(exp.folder / "ckpt.pt")["step"] == 6
    assert meta(workspace, "d")["status"] == "done"


def test_init_from_and_lora_fine_tune(cli, workspace):
    make_exp(workspace, "base", "train.max_steps=10")
    assert cli("train", "base", "--follow", timeout=300).returncode == 0
    r = cli("clone", "base", "ft", "--set", "train.max_steps=5")
    assert r.returncode == 0
    r = cli("train", "ft", "--init-from", "base", "--lora", "4", "--follow", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = meta(workspace, "ft")
    assert m["parent"] == "base" and m["status"] == "done"
    ckpt = load_checkpoint(workspace / "experiments" / "ft" / "ckpt.pt")
    assert ckpt["lora_rank"] == 4 and any("lora" in k for k in ckpt["model"])
    from engine.infer.load import load_model
    from engine.store.experiments import Store

    model, _, _ = load_model(Store(workspace / "experiments").load("ft"), "last")
    names = set(model.state_dict())
    assert not any("lora" in n for n in names) and "layers.0.attention.wq.weight" in names
    base = load_checkpoint(workspace / "experiments" / "base" / "ckpt.pt")["model"]
    # the merged weights moved away from the base (adapters learned something)
    diff = (model.state_dict()["layers.0.attention.wq.weight"]
            - base["layers.0.attention.wq.weight"]).abs().max().item()
    assert diff > 0


def test_eval_data_doctor(cli, workspace):
    make_exp(workspace, "s", "train.max_steps=10")
    assert cli("train", "s", "--follow", timeout=300).returncode == 0
    r = cli("eval", "s", "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert 0 < ev["val_loss"] < 10 and ev["bits_per_byte"] > 0
    assert abs(ev["perplexity"] - 2.718281828 ** ev["val_loss"]) < 1e-3 * ev["perplexity"]
    r = cli("data", "s", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["documents"] > 300
    r = cli("doctor", "s", "--json")
    names = {c["name"] for c in json.loads(r.stdout)}
    assert {"torch", "esptool", "training memory", "serial ports", "c++", "native attention"} <= names
