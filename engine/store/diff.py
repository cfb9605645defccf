"""Comparing experiments: config keys side by side, metric summaries with deltas against a baseline,
and the loss curves to overlay.

Why one function: `tinylm diff` and the app's Diff screen must show the same rows and the same
figures, so both call `diff_experiments` (or, when the app follows live runs, `load_side` per
changed experiment and the pure `compare`) and only lay the report out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import UserError

from .experiments import Store
from .format import fmt_loss
from .metrics import METRICS_NAME, read_metrics, summarize
from .tail import MetricsTail

Better = Literal["lower", "higher"] | None
# (key, which way is better): losses fall as a model improves, throughput should rise; steps, tokens
# and wall time are how long a run went, neither good nor bad
METRICS: tuple[tuple[str, Better], ...] = (
    ("steps", None), ("tokens_seen", None), ("train_loss", "lower"), ("val_loss", "lower"),
    ("best_val_loss", "lower"), ("tok_per_s", "higher"), ("elapsed_s", None),
)
_LOSSES = {"train_loss", "val_loss", "best_val_loss"}


def fmt_metric(key: str, v: Any) -> str:
    """A metric as people read it: losses to 4 places, throughput whole, seconds to 0.1."""
    if v is None:
        return "-"
    if key in _LOSSES:
        return fmt_loss(v)
    if key == "tok_per_s":
        return f"{v:.0f}"
    if key == "elapsed_s":
        return f"{v:.1f}"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def fmt_config(v: Any) -> str:
    """A config value as it reads in config.toml (strings quoted, so "" is visible)."""
    return repr(v) if isinstance(v, str) else str(v)


@dataclass
class Curve:
    """One experiment's loss against step: train points and (sparser) val points."""

    train_steps: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> Curve:
        c = cls()
        for r in records:
            step = r.get("step")
            if not isinstance(step, (int, float)):
                continue
            if isinstance(r.get("train_loss"), (int, float)):
                c.train_steps.append(step)
                c.train.append(r["train_loss"])
            if isinstance(r.get("val_loss"), (int, float)):
                c.val_steps.append(step)
                c.val.append(r["val_loss"])
        return c


@dataclass
class Side:
    """Everything the diff needs from one experiment, read once (a snapshot: never mutated, so a
    report can be rebuilt on another thread while a reader makes the next one)."""

    name: str
    status: str
    config: dict[str, Any]  # ExperimentConfig.flat()
    records: list[dict[str, Any]]  # metrics.jsonl
    summary: dict[str, Any]  # metrics.summarize(records)
    curve: Curve


@dataclass
class ConfigRow:
    key: str
    values: list[Any]  # one per experiment, in report order
    differs: bool

    def cells(self) -> list[str]:
        return [fmt_config(v) for v in self.values]


@dataclass
class MetricRow:
    key: str
    values: list[Any]
    deltas: list[float | None]  # value - baseline (None for the baseline and missing values)
    pcts: list[float | None]  # 100 * delta / |baseline| (None when the baseline is 0 or missing)
    better: Better

    def verdict(self, i: int) -> Literal["better", "worse", "same"] | None:
        """How experiment i compares with the baseline on this metric (None: not comparable, or a
        metric with no good direction)."""
        d = self.deltas[i]
        if d is None or self.better is None:
            return None
        if d == 0:
            return "same"
        return "better" if (d < 0) == (self.better == "lower") else "worse"

    def value_text(self, i: int) -> str:
        return fmt_metric(self.key, self.values[i])

    def delta_text(self, i: int) -> str:
        """'-0.1200 -4.6%' (empty for the baseline or when either value is missing)."""
        d = self.deltas[i]
        if d is None:
            return ""
        text = fmt_metric(self.key, d)
        text = text if text.startswith("-") else "+" + text
        pct = self.pcts[i]
        return text if pct is None else f"{text} {pct:+.1f}%"


@dataclass
class DiffReport:
    names: list[str]
    baseline: int  # index into names
    statuses: list[str]
    config: list[ConfigRow]  # only differing keys unless all_keys was asked for
    metrics: list[MetricRow]
    curves: list[Curve]
    sides: list[Side]  # what the report was built from: `compare(sides, ...)` rebuilds it cheaply

    @property
    def baseline_name(self) -> str:
        return self.names[self.baseline]

    @property
    def identical(self) -> bool:
        return not any(r.differs for r in self.config)


def load_side(store: Store, name: str, records: list[dict[str, Any]] | None = None) -> Side:
    """Read one experiment (meta, config, and metrics.jsonl unless `records` is given: the app
    passes what it already holds plus what a MetricsTail found appended)."""
    exp = store.load(name)
    if records is None:
        records = read_metrics(exp.path(METRICS_NAME))
    return Side(exp.name, exp.live_status(), exp.config.flat(), records, summarize(records),
                Curve.from_records(records))


def read_new_records(tail: MetricsTail, max_chunks: int = 64) -> tuple[list[dict[str, Any]], bool]:
    """All records appended since the tail's last read (several reads if the file is large), and
    whether the file was replaced in between (then the records are its whole new content)."""
    records: list[dict[str, Any]] = []
    reset = False
    for _ in range(max_chunks):
        got, was_reset = tail.read()
        if was_reset:
            records, reset = [], True
        if not got:
            break
        records.extend(got)
    return records, reset


def _check_names(names: list[str]) -> list[str]:
    if not names:
        raise UserError("nothing to diff: name at least one experiment (two to compare)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{', '.join(dupes)} listed twice; name each experiment once")
    return names


def _pick_baseline(names: list[str], baseline: str | int | None) -> int:
    if baseline is None:
        return 0
    if isinstance(baseline, int):
        if not 0 <= baseline < len(names):
            raise UserError(f"baseline index {baseline} is out of range: there are {len(names)} "
                            "experiments in this diff")
        return baseline
    if baseline not in names:
        raise UserError(f"baseline '{baseline}' is not one of the experiments compared "
                        f"({', '.join(names)}); name one of them, or leave it out for the first")
    return names.index(baseline)


def compare(sides: list[Side], *, baseline: str | int | None = None,
            all_keys: bool = False) -> DiffReport:
    """The report for experiments already read (pure: no I/O, so a baseline change is instant)."""
    names = _check_names([s.name for s in sides])
    base = _pick_baseline(names, baseline)

    keys = list(sides[0].config)
    for s in sides[1:]:
        keys += [k for k in s.config if k not in keys]
    config = []
    for k in keys:
        values = [s.config.get(k) for s in sides]
        differs = any(v != values[0] for v in values)
        if all_keys or differs:
            config.append(ConfigRow(k, values, differs))

    metrics = []
    for key, better in METRICS:
        values = [s.summary.get(key) for s in sides]
        b = values[base]
        deltas: list[float | None] = []
        pcts: list[float | None] = []
        for i, v in enumerate(values):
            if i == base or not isinstance(v, (int, float)) or not isinstance(b, (int, float)):
                deltas.append(None)
                pcts.append(None)
                continue
            deltas.append(v - b)
            pcts.append(100.0 * (v - b) / abs(b) if b else None)
        metrics.append(MetricRow(key, values, deltas, pcts, better))

    return DiffReport(names, base, [s.status for s in sides], config, metrics,
                      [s.curve for s in sides], list(sides))


def diff_experiments(store: Store, names: list[str], *, baseline: str | int | None = None,
                     all_keys: bool = False) -> DiffReport:
    """Compare experiments by name: config keys (only those that differ unless `all_keys`), metric
    summaries with deltas against `baseline` (default: the first), statuses and loss curves."""
    _check_names(list(names))
    return compare([load_side(store, n) for n in names], baseline=baseline, all_keys=all_keys)
