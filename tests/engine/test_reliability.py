"""Issue 13: bad input and faults as a new user meets them. Each case asserts the exit code and the
message's key words; each hint we print is followed to check that it works.

Most cases run `tinylm` in-process (engine.cli.main.main, the same code `tinylm` runs, minus the
interpreter start), on stories260K imported from llama2.c: a real checkpoint with no training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.store.checkpoint import load_checkpoint, save_checkpoint
from engine.store.metrics import read_metrics
from tests.conftest import LLAMA2C, REPO
from tests.engine.test_train import make_exp

KNOWN = "Once upon a time, there was a little girl named Lily."


@pytest.fixture
def tl(workspace, capsys):
    """`tinylm -w WORKSPACE ARGS...` in this process: (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["-w", str(workspace), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


@pytest.fixture
def st(tl, workspace) -> Path:
    code, _, err = tl("import-llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
                      str(LLAMA2C / "tok512.model"), "--name", "st")
    assert code == 0, err
    return workspace / "experiments" / "st"


def greedy(tl, name: str, *extra: str) -> tuple[int, str, str]:
    return tl("sample", name, "--prompt", "Once upon a time", "--temperature", "0",
              "--max-tokens", "12", *extra)


# ---- silently wrong -------------------------------------------------------------------------------

def test_checkpoint_of_another_shape_is_refused_everywhere(tl, st):
    code, _, err = tl("clone", "st", "c", "--with-checkpoints", "--set", "model.dim=32")
    assert code == 2 and "model.dim: checkpoint 64, config 32" in err
    assert "drop --with-checkpoints" in err and not (st.parent / "c").exists()
    assert tl("clone", "st", "c", "--set", "model.dim=32")[0] == 0  # no checkpoints: a new model

    assert tl("set", "st", "model.dim=32")[0] == 0  # a dim-64 checkpoint in a dim-32 experiment
    for args in (("sample", "st"), ("eval", "st"), ("export", "st", "--checkpoint", "last",
                                                     "--board", "host")):
        code, _, err = tl(*args)
        assert code == 2, (args, err)
        assert "model.dim: checkpoint 64, config 32" in err and "tinylm set st model.dim=64" in err
    assert not (st / "model.int8.bin").exists()
    assert tl("set", "st", "model.dim=64")[0] == 0  # the hint, followed
    code, out, err = greedy(tl, "st")
    assert code == 0 and out.startswith("Once upon a time, there was"), err


def test_wrong_tokenizer_is_refused_with_both_hashes(tl, st, tmp_path):
    import hashlib

    from engine.data.corpus import read_corpus, split_documents
    from engine.data.tokenizer import train_sentencepiece

    docs = split_documents(read_corpus(REPO / "corpora" / "tinystories_slice.txt"), "tinystories")
    other = train_sentencepiece(docs[:200], tmp_path / "other", 512, "bpe", 200_000)
    right = (st / "tokenizer.model").read_bytes()
    shutil.copy(other, st / "tokenizer.model")  # same vocab size, other pieces
    want, have = hashlib.sha256(right).hexdigest()[:16], hashlib.sha256(other.read_bytes()).hexdigest()[:16]
    for args in (("sample", "st"), ("export", "st", "--board", "host")):
        code, _, err = tl(*args)
        assert code == 2 and "another tokenizer" in err and want in err and have in err, err
    code, _, err = tl("resume", "st")  # refused before a process starts (read without torch)
    assert code == 2 and want in err and have in err, err
    (st / "tokenizer.model").write_bytes(right)  # the hint: put back the right one
    code, out, err = greedy(tl, "st")
    assert code == 0 and out.startswith("Once upon a time, there was"), err


def test_non_finite_numbers_are_refused(tl, st, workspace):
    code, _, err = tl("new", "x", "--set", "train.lr=inf")
    assert code == 2 and "train.lr = inf: must be a finite number" in err
    assert tl("new", "x")[0] == 0
    code, _, err = tl("set", "x", "model.rope_theta=nan")
    assert code == 2 and "model.rope_theta = nan" in err
    ckpt = load_checkpoint(st / "ckpt.pt")
    ckpt["model"]["layers.1.attention.wq.weight"][0, 0] = float("nan")
    save_checkpoint(st / "ckpt.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    code, _, err = tl("export", "st", "--quant", "f32", "--board", "host")
    assert code == 2 and "non-finite weights" in err and "layers.1.attention.wq.weight" in err
    assert not (st / "model.f32.bin").exists()


def test_nan_loss_fails_the_run_and_the_hint_recovers_it(tl, workspace):
    make_exp(workspace, "d", "tokenizer.kind=byte", "tokenizer.vocab_size=256", "train.lr=1e30",
             "train.min_lr=0", "train.max_steps=20", "train.log_every=1")
    code, out, err = tl("train", "d", "--follow")
    assert code == 1 and "d: failed" in out
    assert "training diverged: the loss is nan at step" in err and "train.lr = 1e+30" in err
    recs = read_metrics(workspace / "experiments" / "d" / "metrics.jsonl")
    assert all(r["train_loss"] == r["train_loss"] for r in recs)  # no NaN record was written
    code, out, _ = tl("show", "d")
    assert code == 0 and "[failed]" in out and "failed: training diverged" in out
    hint = err.split("`tinylm set ")[1].split("`")[0]  # "d train.lr=0.001"
    assert hint == "d train.lr=0.001"
    assert tl("set", *hint.split())[0] == 0
    code, out, err = tl("resume", "d", "--follow")
    assert code == 0 and "d: done at step 20" in out, out + err


def test_import_llama2c_bin_tokenizer_works_end_to_end(tl, workspace):
    code, _, err = tl("import-llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
                      str(LLAMA2C / "tok512.bin"), "--name", "b")
    assert code == 0, err
    code, out, err = greedy(tl, "b")
    assert code == 0 and out.startswith("Once upon a time, there was"), err
    assert tl("export", "b", "--quant", "f32", "--board", "host")[0] == 0
    code, out2, err = greedy(tl, "b", "--engine", "reference", "--quant", "f32")
    assert code == 0 and out2 == out, err


# ---- tracebacks that became messages ----------------------------------------------------------------

def test_prompt_longer_than_the_context(tl, st):
    code, _, err = tl("sample", "st", "--prompt", "Once upon a time " * 200)
    assert code == 2 and "tokens but the model's context holds 512" in err
    assert "shorten the prompt" in err


def test_bad_board_workspace_and_output_paths(tl, st, workspace, tmp_path):
    code, _, err = tl("export", "st", "--board", "moon")
    assert code == 2 and "unknown board 'moon'" in err and "esp32-c3" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["-w", str(afile), "list"]) == 2
    (workspace / "project.toml").write_text('[workspace]\nexperiments_dir = "runs"\n')
    (workspace / "runs").write_text("not a folder")
    code, _, err = tl("list")
    assert code == 2 and "workspace.experiments_dir = 'runs'" in err and "is a file" in err
    (workspace / "project.toml").unlink()

    code, _, err = tl("export-llama2c", "st", str(afile))
    assert code == 2 and "is a file, not a folder" in err
    out_dir = tmp_path / "out"
    assert tl("export-llama2c", "st", str(out_dir))[0] == 0
    code, _, err = tl("export-llama2c", "st", str(out_dir))
    assert code == 2 and "already exist" in err and "--force" in err
    assert tl("export-llama2c", "st", str(out_dir), "--force")[0] == 0

    (st / "model.f32.bin").mkdir()
    code, _, err = tl("export", "st", "--quant", "f32", "--board", "host")
    assert code == 2 and "is a folder" in err
    code, _, err = tl("sample", "st", "--engine", "reference", "--quant", "f32")
    assert code == 2 and "is a folder" in err


def test_numbers_on_the_command_line_use_the_config_rules(tl, st):
    cases = {("--temperature", "-1"): "--temperature -1 is not ≥ 0",
             ("--temperature", "nan"): "--temperature nan is not a finite number",
             ("--top-p", "0"): "--top-p 0 is outside 0..1, 0 excluded",
             ("--top-p", "1.5"): "--top-p 1.5 is outside 0..1",
             ("--top-k", "-1"): "--top-k -1 is not ≥ 0",
             ("--repetition-penalty", "0"): "--repetition-penalty 0 is not > 0",
             ("--max-tokens", "0"): "--max-tokens 0 is not ≥ 1"}
    for flag, message in cases.items():
        code, _, err = tl("sample", "st", *flag)
        assert code == 2 and message in err, (flag, err)
    for args, message in ((("train", "st", "--jobs", "0"), "jobs = 0: must be ≥ 1"),
                          (("train", "st", "st", "--jobs", "-1"), "jobs = -1: must be ≥ 1"),
                          (("resume", "st", "--nproc", "0"), "nproc = 0: must be ≥ 1"),
                          (("quantize", "st", "--qat", "-5"), "qat_steps = -5: must be ≥ 0"),
                          (("quantize", "st", "--qat", "10", "--lr", "-1"), "lr = -1: must be > 0")):
        code, _, err = tl(*args)
        assert code == 2 and message in err, (args, err)
    assert not (st / "train.log").exists()  # nothing was started


def test_hand_edited_invalid_config_is_refused_before_starting(tl, st):
    cfg = st / "config.toml"
    cfg.write_text(cfg.read_text().replace("batch_size = 16", 'batch_size = "16"')
                   .replace("lr = 0.001", "lr = nan"))
    for command in ("train", "resume"):
        code, _, err = tl(command, "st")
        assert code == 2 and "train.batch_size = '16': must be an integer" in err, err
        assert "train.lr = nan: must be a finite number" in err
    assert not (st / "train.log").exists()  # validated here, not in a background process


# ---- behaviour that did not match what we say --------------------------------------------------------

def test_ctrl_c_during_follow_detaches_at_once_and_the_run_goes_on(tl, workspace):
    make_exp(workspace, "s", "tokenizer.kind=byte", "tokenizer.vocab_size=256",
             "train.max_steps=100000", "train.log_every=1")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(workspace), "train", "s",
                             "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = []
        while not any(" step " in ln for ln in lines):
            lines.append(proc.stdout.readline())
            assert lines[-1], proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)  # at once, not when the run ends
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "detached; the run goes on" in out
    meta = json.loads((workspace / "experiments" / "s" / "meta.json").read_text())
    assert meta["status"] == "running"
    code, out, _ = tl("stop", "s")
    assert code == 0 and "s: stopped" in out


def test_resume_from_scratch_says_so_and_the_damaged_checkpoint_hint_works(tl, workspace):
    exp = make_exp(workspace, "s", "tokenizer.kind=byte", "tokenizer.vocab_size=256",
                   "train.max_steps=10", "train.eval_every=5", "train.ckpt_every=5")
    code, out, err = tl("resume", "s", "--follow")  # never trained: it says so
    assert code == 0, err
    assert "'s' has no checkpoint yet, so there is nothing to resume: training it from step 0" in out
    assert "resumed" not in out and "s: done at step 10" in out
    code, _, err = tl("resume", "s")  # nothing left to do: said before a run is started
    assert code == 2 and "already trained its 10 steps" in err and "train.max_steps=20" in err
    best_step = load_checkpoint(exp.path("best.pt"))["step"]
    data = exp.path("ckpt.pt").read_bytes()
    exp.path("ckpt.pt").write_bytes(data[: len(data) // 2])
    code, _, err = tl("resume", "s")
    assert code == 2 and "damaged or truncated" in err
    cmd = err.split("`cp ")[1].split("`")[0].split()
    assert cmd == [str(exp.path("best.pt")), str(exp.path("ckpt.pt"))] and "`tinylm resume s`" in err
    shutil.copy(*cmd)
    assert tl("set", "s", "train.max_steps=12")[0] == 0
    code, out, err = tl("resume", "s", "--follow")
    assert code == 0 and "resumed 's'" in out and "s: done at step 12" in out, err
    steps = [r["step"] for r in read_metrics(exp.path("metrics.jsonl"))]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    assert best_step in steps  # the curve was cut back to the best checkpoint's step, then went on


def test_damaged_or_missing_meta_hint_works_when_followed(tl, st):
    (st / "meta.json").write_text("{")
    code, _, err = tl("show", "st")
    assert code == 2 and "damaged" in err and "`tinylm repair st`" in err
    code, out, err = tl("repair", "st")
    assert code == 0 and "rebuilt" in out, err
    code, out, _ = tl("show", "st")
    assert code == 0 and "[stopped]" in out and (st / "meta.json.damaged").exists()
    (st / "meta.json").unlink()
    code, _, err = tl("new", "st")
    assert code == 2 and "`tinylm repair st`" in err
    assert tl("repair", "st")[0] == 0
    code, out, err = greedy(tl, "st")
    assert code == 0 and out.startswith("Once upon a time"), err


def test_killed_runs_temp_checkpoint_is_cleaned_on_load(tl, st):
    tmp = st / ".ckpt.pt.k2j4h5.tmp"
    tmp.write_bytes(b"\0" * 4096)  # what a kill -9 mid-checkpoint leaves
    assert tl("show", "st")[0] == 0
    assert not tmp.exists() and (st / "ckpt.pt").exists()
