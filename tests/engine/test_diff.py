"""engine.store.diff: the one comparison both `tinylm diff` and the Diff screen show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import schema as config_mod
from engine.config.schema import ExperimentConfig
from engine.errors import ExperimentNotFound, UserError
from engine.store.diff import compare, diff_experiments, load_side, read_new_records
from engine.store.experiments import Store
from engine.store.tail import MetricsTail
from tests.conftest import run_cli


def write_metrics(folder: Path, records: list[dict]) -> None:
    with open(folder / "metrics.jsonl", "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def run(step: int, train: float, val: float | None = None, tps: float = 1000.0) -> dict:
    return {"step": step, "tokens_seen": step * 100, "train_loss": train, "val_loss": val,
            "lr": 1e-3, "tok_per_s": tps, "elapsed_s": step / 10}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """base: val 2.0 at step 20; wide (dim 96, lr 0.002): val 1.5, slower; fresh: no metrics."""
    st = Store(tmp_path / "experiments")
    base = st.create("base", ExperimentConfig())
    wide = st.create("wide", config_mod.apply_overrides(
        ExperimentConfig(), ["model.dim=96", "train.lr=0.002"]))
    st.create("fresh", ExperimentConfig())
    write_metrics(base.folder, [run(10, 3.0), run(20, 2.5, 2.0)])
    write_metrics(wide.folder, [run(10, 2.8, tps=500.0), run(20, 2.2, 1.5, tps=500.0)])
    return st


def test_config_rows_show_only_differences_unless_all_keys(store):
    r = diff_experiments(store, ["base", "wide"])
    assert [row.key for row in r.config] == ["model.dim", "train.lr"]
    assert r.config[0].values == [64, 96] and r.config[0].differs
    assert r.config[1].cells() == ["0.001", "0.002"]
    full = diff_experiments(store, ["base", "wide"], all_keys=True)
    assert len(full.config) == len(ExperimentConfig().flat())
    assert {row.key for row in full.config if row.differs} == {"model.dim", "train.lr"}
    same = diff_experiments(store, ["base", "fresh"])
    assert same.identical and same.config == []


def test_metric_deltas_against_baseline_with_direction(store):
    r = diff_experiments(store, ["base", "wide"])
    rows = {m.key: m for m in r.metrics}
    val = rows["best_val_loss"]
    assert val.values == [2.0, 1.5] and val.deltas == [None, -0.5]
    assert val.pcts[1] == pytest.approx(-25.0)
    assert val.verdict(1) == "better" and val.verdict(0) is None
    assert val.delta_text(1) == "-0.5000 -25.0%" and val.delta_text(0) == ""
    tps = rows["tok_per_s"]
    assert tps.verdict(1) == "worse" and tps.delta_text(1) == "-500 -50.0%"
    assert rows["steps"].verdict(1) is None  # neither direction is better
    assert r.statuses == ["new", "new"]

    flipped = diff_experiments(store, ["base", "wide"], baseline="wide")
    fval = {m.key: m for m in flipped.metrics}["best_val_loss"]
    assert flipped.baseline == 1 and flipped.baseline_name == "wide"
    assert fval.deltas == [0.5, None] and fval.verdict(0) == "worse"


def test_missing_metrics_give_no_delta(store):
    r = diff_experiments(store, ["fresh", "base"])
    val = {m.key: m for m in r.metrics}["val_loss"]
    assert val.values == [None, 2.0] and val.deltas == [None, None]
    assert val.value_text(0) == "-" and val.verdict(1) is None
    assert r.curves[0].train == [] and r.curves[1].val_steps == [20]


def test_curves_follow_metrics_and_skip_torn_line(store):
    folder = store.folder("base")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "train_lo')  # a writer mid-line
    c = diff_experiments(store, ["base", "wide"]).curves[0]
    assert c.train_steps == [10, 20] and c.train == [3.0, 2.5]
    assert c.val_steps == [20] and c.val == [2.0]


def test_bad_names_and_baseline_are_user_errors(store):
    with pytest.raises(ExperimentNotFound, match="did you mean 'base'"):
        diff_experiments(store, ["base", "bsae"])
    with pytest.raises(UserError, match="not one of the experiments compared"):
        diff_experiments(store, ["base", "wide"], baseline="fresh")
    with pytest.raises(UserError, match="listed twice"):
        diff_experiments(store, ["base", "base"])
    with pytest.raises(UserError, match="nothing to diff"):
        diff_experiments(store, [])


def test_live_side_update_from_tail_reads_only_appended_records(store):
    """The app's path: hold records, add what a MetricsTail finds, rebuild the report in memory."""
    tail = MetricsTail(store.folder("wide") / "metrics.jsonl")
    records, reset = read_new_records(tail)
    assert len(records) == 2 and not reset
    sides = [load_side(store, "base"), load_side(store, "wide", records)]
    write_metrics(store.folder("wide"), [run(30, 2.0, 1.2)])
    new, reset = read_new_records(tail)
    assert [r["step"] for r in new] == [30] and not reset
    sides[1] = load_side(store, "wide", records + new)
    r = compare(sides, baseline=1)
    assert {m.key: m for m in r.metrics}["best_val_loss"].deltas == [pytest.approx(0.8), None]
    assert r.curves[1].val == [1.5, 1.2]


def test_cli_diff_prints_deltas_and_takes_a_baseline(store):
    ws = store.root.parent
    out = run_cli(ws, "diff", "base", "wide").stdout
    assert "base (baseline)" in out
    assert "1.5000 (-0.5000 -25.0%)" in out
    out = run_cli(ws, "diff", "base", "wide", "--baseline", "wide").stdout
    assert "wide (baseline)" in out and "2.0000 (+0.5000 +33.3%)" in out
    r = run_cli(ws, "diff", "base", "wide", "--baseline", "nope")
    assert r.returncode == 2 and "not one of the experiments" in r.stderr
