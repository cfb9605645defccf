"""Blob export, quantization, llama2.c interop and the reference engine, through `tinylm`."""

from __future__ import annotations

import json

import pytest

from engine.store.checkpoint import load_checkpoint
from tests.conftest import LLAMA2C
from tests.engine.test_train import make_exp

KNOWN = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."


@pytest.fixture
def stories(cli):
    r = cli("import-llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
            str(LLAMA2C / "tok512.model"), "--name", "st")
    assert r.returncode == 0, r.stderr
    return "st"


def test_imported_stories260k_talks_from_torch_and_reference(cli, stories):
    r = cli("sample", stories, "--prompt", "Once upon a time", "--temperature", "0",
            "--max-tokens", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(KNOWN)
    r = cli("export", stories, "--quant", "f32", "--board", "host")
    assert r.returncode == 0, r.stderr
    r = cli("sample", stories, "--engine", "reference", "--quant", "f32", "--prompt",
            "Once upon a time", "--temperature", "0", "--max-tokens", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(KNOWN)


def test_export_records_blob_and_refuses_what_does_not_fit(cli, workspace, stories):
    r = cli("export", stories, "--quant", "int8")  # stories260K: 512 context on an ESP32
    assert r.returncode == 2
    assert "will not fit esp32" in r.stderr and "RAM" in r.stderr and "context_len" in r.stderr
    assert not (workspace / "experiments" / stories / "model.int8.bin").exists()
    assert cli("set", stories, "device.context_len=128").returncode == 0
    r = cli("export", stories, "--quant", "int8")  # the float KV cache is 160 KB in one piece
    assert r.returncode == 2 and "largest free block" in r.stderr and "kv cache" in r.stderr
    assert cli("set", stories, "quant.int_attention=true").returncode == 0  # int8 KV cache: 60 KB
    r = cli("export", stories, "--quant", "int8")
    assert r.returncode == 0, r.stderr
    meta = json.loads((workspace / "experiments" / stories / "meta.json").read_text())
    blob = meta["blobs"]["int8"]
    path = workspace / "experiments" / stories / "model.int8.bin"
    assert blob["size"] == path.stat().st_size
    import hashlib
    assert blob["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = json.loads(cli("list", "--json").stdout)
    assert [r["blob_bytes"] for r in rows if r["name"] == stories] == [blob["size"]]


def test_llama2c_export_reimport_is_bit_identical(cli, workspace, stories, tmp_path):
    r = cli("export-llama2c", stories, str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "st.bin").read_bytes() == (LLAMA2C / "stories260K.bin").read_bytes()
    r = cli("import-llama2c", str(tmp_path / "out" / "st.bin"), "--tokenizer",
            str(tmp_path / "out" / "tokenizer.bin"), "--name", "again")
    assert r.returncode == 0, r.stderr
    a = load_checkpoint(workspace / "experiments" / "st" / "ckpt.pt")["model"]
    b = load_checkpoint(workspace / "experiments" / "again" / "ckpt.pt")["model"]
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_bad_imports_and_exports_are_explained(cli, workspace, tmp_path):
    page = tmp_path / "model.bin"
    page.write_text("Entry not found")
    r = cli("import-llama2c", str(page), "--tokenizer", str(LLAMA2C / "tok512.model"),
            "--name", "x")
    assert r.returncode == 2 and "Entry not found" in r.stderr
    assert not (workspace / "experiments" / "x").exists()
    cli("new", "fresh")
    r = cli("export", "fresh")
    assert r.returncode == 2 and "no checkpoint yet" in r.stderr
    r = cli("quantize", "fresh")
    assert r.returncode == 2 and "no checkpoint yet" in r.stderr


def test_quantize_int8_and_ternary_qat_report(cli, workspace):
    make_exp(workspace, "q", "train.max_steps=60", "train.eval_every=30")
    assert cli("train", "q", "--follow", timeout=300).returncode == 0
    r = cli("quantize", "q", "--method", "int8", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)["report"]
    assert abs(rep["val_loss_cost"]) < 0.02 and rep["greedy_agreement"] > 0.8
    assert rep["snr_db_min"] > 30 and rep["blob_bytes"] > 0
    r = cli("quantize", "q", "--method", "ternary", "--qat", "40", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["qat"]["val_loss_after"] < data["qat"]["val_loss_before"]
    assert data["report"]["qat"] is True
    assert (workspace / "experiments" / "q" / "qat.ternary.pt").exists()
    r = cli("sample", "q", "--engine", "reference", "--quant", "ternary", "--prompt", "Once",
            "--temperature", "0", "--max-tokens", "10")
    assert r.returncode == 0 and r.stdout.startswith("Once")


def test_fine_tune_from_imported_llama2c_model(cli, workspace, stories):
    r = cli("clone", stories, "ft", "--set", "model.seq_len=64", "--set", "train.max_steps=4",
            "--set", "train.batch_size=4", "--set", "train.log_every=1", "--set",
            "train.eval_every=4", "--set", "train.warmup_steps=0", "--set", "train.lr=1e-4")
    assert r.returncode == 0, r.stderr
    r = cli("train", "ft", "--init-from", stories, "--follow", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    from engine.store.metrics import read_metrics

    first = read_metrics(workspace / "experiments" / "ft" / "metrics.jsonl")[0]
    assert first["train_loss"] < 3.0  # pretrained weights (a fresh 512-vocab model starts at ~6.2)
    assert json.loads((workspace / "experiments" / "ft" / "meta.json").read_text())["parent"] \
        == stories
