from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from engine.config.schema import ExperimentConfig
from engine.errors import LockHeld, UserError
from engine.store.experiments import Store
from engine.store.lock import RunLock, read_lock


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "experiments")


def test_create_load_list(store):
    exp = store.create("a", ExperimentConfig())
    assert (exp.folder / "config.toml").exists() and exp.meta["status"] == "new"
    assert store.load("a").config == ExperimentConfig()
    rows = store.list()
    assert [r.name for r in rows] == ["a"] and rows[0].params == 260032 and not rows[0].damaged


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", ".hidden", "", "a" * 65, "x..y", "sp ace"])
def test_bad_names_are_refused(store, bad):
    with pytest.raises(UserError, match="invalid experiment name"):
        store.create(bad, ExperimentConfig())
    assert not (store.root.parent / "x").exists()


def test_duplicate_name_refused_and_nothing_lost(store):
    exp = store.create("a", ExperimentConfig())
    exp.update_meta(notes="keep me")
    with pytest.raises(UserError, match="already exists"):
        store.create("a", ExperimentConfig())
    assert store.load("a").meta["notes"] == "keep me"


def test_damaged_folders_are_listed_not_fatal(store):
    store.create("good", ExperimentConfig())
    (store.root / "nometa").mkdir()
    half = store.root / "half"
    half.mkdir()
    (half / "meta.json").write_text('{"name": "half", "status": "ne')  # torn write
    badcfg = store.create("badcfg", ExperimentConfig())
    (badcfg.folder / "config.toml").write_text("[model]\ndim = 0\n")
    rows = {r.name: r for r in store.list()}
    assert rows["good"].problem is None
    assert rows["nometa"].status == "damaged" and "no meta.json" in rows["nometa"].problem
    assert rows["half"].status == "damaged" and "unreadable" in rows["half"].problem
    assert "model.dim = 0" in rows["badcfg"].problem
    with pytest.raises(UserError, match="damaged"):
        store.load("half")
    with pytest.raises(UserError, match="no meta.json"):
        store.load("nometa")


def test_not_found_suggests(store):
    store.create("stories", ExperimentConfig())
    with pytest.raises(UserError, match="did you mean 'stories'"):
        store.load("storise")


def test_clone_records_parent_and_skips_checkpoints(store):
    src = store.create("a", ExperimentConfig())
    (src.folder / "ckpt.pt").write_bytes(b"x")
    (src.folder / "tokenizer.model").write_bytes(b"tok")
    store.tag("a", add=["base"])
    b = store.clone("a", "b")
    assert b.meta["parent"] == "a" and b.meta["tags"] == ["base"]
    assert (b.folder / "tokenizer.model").read_bytes() == b"tok"
    assert not (b.folder / "ckpt.pt").exists()
    c = store.clone("a", "c", with_checkpoints=True)
    assert (c.folder / "ckpt.pt").exists() and c.meta["status"] == "stopped"


def test_rename_updates_children(store):
    store.create("a", ExperimentConfig())
    store.clone("a", "child")
    store.rename("a", "base")
    assert store.load("child").meta["parent"] == "base"
    assert store.load("base").meta["name"] == "base"
    assert not (store.root / "a").exists()


def test_tags_notes_archive(store):
    store.create("a", ExperimentConfig())
    store.tag("a", add=["x", "y"])
    store.tag("a", remove=["x"])
    assert store.load("a").meta["tags"] == ["y"]
    with pytest.raises(UserError):
        store.tag("a", add=["two words"])
    store.note("a", "first")
    store.note("a", "second", append=True)
    assert store.load("a").meta["notes"] == "first\nsecond"
    store.archive("a")
    assert store.list() == [] and store.list(include_archived=True)[0].archived
    store.archive("a", archived=False)
    assert len(store.list()) == 1


def test_lock_refuses_live_holder(store, tmp_path):
    exp = store.create("a", ExperimentConfig())
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        exp.lock(pid=holder.pid).acquire()
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            exp.lock().acquire()
        with pytest.raises(LockHeld, match="tinylm stop a"):
            store.rename("a", "b")
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_from_dead_pid_is_cleared_with_a_message(store):
    exp = store.create("a", ExperimentConfig())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp.lock(pid=dead.pid).acquire()
    assert read_lock(exp.folder).pid == dead.pid
    messages: list[str] = []
    with exp.lock(on_message=messages.append):
        assert read_lock(exp.folder).pid == os.getpid()
    assert messages and "stale lock" in messages[0] and str(dead.pid) in messages[0]
    assert read_lock(exp.folder) is None


def test_old_empty_lock_file_is_stale(store):
    exp = store.create("a", ExperimentConfig())
    lock = exp.folder / "run.lock"
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    with RunLock(exp.folder, "a"):
        pass


def test_running_status_of_dead_process_is_reconciled(store):
    exp = store.create("a", ExperimentConfig())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp.lock(pid=dead.pid).acquire()
    exp.update_meta(status="running", pid=dead.pid)
    assert store.list()[0].status == "stopped"  # listing shows the truth without writing
    assert json.loads((exp.folder / "meta.json").read_text())["status"] == "running"
    loaded = store.load("a")  # loading fixes the record on disk
    assert loaded.meta["status"] == "stopped" and "tinylm resume a" in loaded.meta["error"]
    assert read_lock(exp.folder) is None


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from engine.atomic import atomic_write_text, atomic_write_with

    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def boom(fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_with(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind
