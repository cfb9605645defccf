"""The `tinylm` CLI as a user runs it: a real subprocess, real files, exit codes checked."""

from __future__ import annotations

import json

from engine.config.schema import load


def test_new_list_show_json(cli, workspace):
    r = cli("new", "a", "--set", "data.corpus=my corpus.txt", "--set", "train.lr=3e-4")
    assert r.returncode == 0, r.stderr
    assert "fits esp32" in r.stdout
    cfg = load(workspace / "experiments" / "a" / "config.toml")
    assert cfg.data.corpus == "my corpus.txt" and cfg.train.lr == 3e-4
    r = cli("list", "--json")
    rows = json.loads(r.stdout)
    assert rows[0]["name"] == "a" and rows[0]["params"] == 260032 and rows[0]["status"] == "new"
    r = cli("list")
    assert "a" in r.stdout and "260K" in r.stdout
    r = cli("show", "a")
    assert r.returncode == 0 and "lr = 0.0003" in r.stdout


def test_bad_input_exits_2_with_message_and_keeps_disk(cli, workspace):
    assert cli("new", "a").returncode == 0
    before = (workspace / "experiments" / "a" / "meta.json").read_bytes()
    r = cli("new", "a")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = cli("new", "b", "--set", "model.n_heads=7", "--set", "train.batch_size=0")
    assert r.returncode == 2
    assert "must be divisible by model.n_heads = 7" in r.stderr and "train.batch_size = 0" in r.stderr
    assert not (workspace / "experiments" / "b").exists()
    r = cli("new", "../evil")
    assert r.returncode == 2 and "invalid experiment name" in r.stderr
    r = cli("show", "nope")
    assert r.returncode == 2 and "no experiment named 'nope'" in r.stderr
    r = cli("new")  # argparse: missing argument
    assert r.returncode == 2
    assert (workspace / "experiments" / "a" / "meta.json").read_bytes() == before


def test_diff_shows_only_differences_by_default(cli):
    cli("new", "a")
    cli("new", "b", "--preset", "esp32s3-1m")
    r = cli("diff", "a", "b")
    assert r.returncode == 0
    assert "model.dim" in r.stdout and "128" in r.stdout
    assert "train.beta1" not in r.stdout
    r = cli("diff", "a", "b", "--all")
    assert "train.beta1" in r.stdout and "best_val_loss" in r.stdout


def test_budget_command_reports_and_advises(cli):
    cli("new", "big", "--preset", "esp32s3-1m")
    r = cli("budget", "big", "--board", "esp32")
    assert r.returncode == 1  # does not fit: a failed check, scriptable
    assert "does not fit esp32" in r.stdout and "try device.context_len 512 → 256" in r.stdout
    r = cli("budget", "big", "--json")
    data = json.loads(r.stdout)
    assert data["fits"] and data["params"] == 1_238_656 and set(data["blob_bytes"]) == {
        "f32", "int8", "ternary"}


def test_clone_tag_note_archive_rename(cli, workspace):
    cli("new", "a")
    assert cli("clone", "a", "b", "--set", "train.max_steps=10").returncode == 0
    assert load(workspace / "experiments" / "b" / "config.toml").train.max_steps == 10
    assert cli("tag", "b", "fast", "tiny").returncode == 0
    assert cli("note", "b", "a note with spaces").returncode == 0
    meta = json.loads((workspace / "experiments" / "b" / "meta.json").read_text())
    assert meta["parent"] == "a" and meta["tags"] == ["fast", "tiny"]
    assert meta["notes"] == "a note with spaces"
    assert cli("archive", "b").returncode == 0
    assert "b" not in [r["name"] for r in json.loads(cli("list", "--json").stdout)]
    assert cli("rename", "a", "base").returncode == 0
    assert json.loads(cli("show", "b", "--json").stdout)["meta"]["parent"] == "base"


def test_list_survives_damaged_experiment(cli, workspace):
    cli("new", "a")
    (workspace / "experiments" / "broken").mkdir()
    (workspace / "experiments" / "broken" / "meta.json").write_text("{")
    r = cli("list")
    assert r.returncode == 0 and "DAMAGED" in r.stdout and "broken: damaged" in r.stderr


def test_project_toml_is_optional_and_validated(cli, workspace):
    (workspace / "project.toml").write_text('[workspace]\nexperiments_dir = "runs"\n'
                                           'default_board = "esp32-c3"\n')
    assert cli("new", "a").returncode == 0
    assert (workspace / "runs" / "a").is_dir()
    assert load(workspace / "runs" / "a" / "config.toml").device.board == "esp32-c3"
    (workspace / "project.toml").write_text('[workspace]\nexperiment_dir = "x"\n')
    r = cli("list")
    assert r.returncode == 2 and "did you mean 'experiments_dir'" in r.stderr
    (workspace / "project.toml").write_text('[workspace\n')
    r = cli("list")
    assert r.returncode == 2 and "line 1" in r.stderr
