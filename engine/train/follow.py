"""Following runs as they train: each new metrics record and each status change, for `tinylm train
--follow` (which prints them) and the app (which plots them), from the same loop.

Built on store/tail.py's MetricsTail, so a poll reads only what was appended. A resume rewrites
metrics.jsonl (the records past its checkpoint are superseded): the tail then re-reads the whole new
file, and records already delivered are recognised by their content and not delivered twice, while
the steps the resumed run redoes are (they carry other numbers).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from engine.store.experiments import Store
from engine.store.lock import read_lock
from engine.store.metrics import METRICS_NAME, read_metrics
from engine.store.tail import MetricsTail

ACTIVE = ("running", "queued")
RecordFn = Callable[[str, dict[str, Any]], None]
StatusFn = Callable[[str, "str | None", str], None]


def record_key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def existing_records(store: Store, names: list[str]) -> dict[str, set[str]]:
    """What each experiment's metrics.jsonl holds now. Take it before starting a run and pass it as
    `skip` to `follow_runs`, so only what the new run writes is delivered."""
    return {n: {record_key(r) for r in read_metrics(store.load(n).path(METRICS_NAME))}
            for n in names}


def follow_runs(store: Store, names: list[str], on_record: RecordFn, on_status: StatusFn,
                should_stop: Callable[[], bool] | None = None, poll_s: float = 1.0,
                skip: dict[str, set[str]] | None = None) -> dict[str, str]:
    """Deliver new metrics records (`on_record(name, record)`) and status changes (`on_status(name,
    old, new)`, old None at first) until no run is running or queued, or `should_stop()`. Records
    present when it starts (or in `skip`) are not delivered. Returns each experiment's last status.
    A KeyboardInterrupt in the caller's thread ends it at once (the runs go on)."""
    seen = {n: set(s) for n, s in (skip or existing_records(store, names)).items()}
    tails = {n: MetricsTail(store.load(n).path(METRICS_NAME)) for n in names}
    statuses: dict[str, str | None] = {n: None for n in names}
    while True:
        active = False
        for name in names:
            # status before metrics: a run that ends between the two reads still has its last
            # records delivered (the other order could see "ended" after reading too early)
            exp = store.load(name)
            status = exp.live_status()
            if status != statuses[name]:
                on_status(name, statuses[name], status)
                statuses[name] = status
            # a run that took its lock but has not yet written "running" to meta.json is active
            lock = read_lock(exp.folder)
            active |= status in ACTIVE or (lock is not None and lock.is_alive())
            records, _ = tails[name].read()
            for record in records:
                key = record_key(record)
                if key not in seen.setdefault(name, set()):
                    seen[name].add(key)
                    on_record(name, record)
        if not active or (should_stop is not None and should_stop()):
            return {n: s or "new" for n, s in statuses.items()}
        time.sleep(poll_s)
