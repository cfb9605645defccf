"""metrics.jsonl: one JSON object a line, appended and flushed by the train subprocess.

A reader may run while the writer is mid-line (or after a kill -9 tore the last line): a line that
does not parse is skipped, never an error, so the TUI and `tinylm diff` can read a live run.

A resumed run starts again from its checkpoint's step, so the records a killed run wrote past that
step are superseded: `supersede_after` drops them (and a torn last line) before the run appends,
by rewriting the file atomically, so every reader sees one curve whose steps only go up (readers
that follow the file, engine/store/tail.py, notice the new inode and read it again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from engine.atomic import atomic_write_bytes

from .tail import parse_records

METRICS_NAME = "metrics.jsonl"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON object line of a file another process appends to (metrics, chat transcripts);
    a torn or half-written line is skipped, a missing file is empty."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return parse_records(raw.split(b"\n"))


read_metrics = read_jsonl


def supersede_after(path: str | Path, step: int) -> int:
    """Keep the records with step ≤ `step` and drop the rest, unparsable lines and a torn last line.
    Rewrites the file (temp + rename) only when something is dropped; returns how many lines were."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return 0
    kept, dropped = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and not (isinstance(rec.get("step"), int) and rec["step"] > step):
            kept.append(line)
        else:
            dropped += 1
    if dropped == 0 and (not raw or raw.endswith(b"\n")):
        return 0
    atomic_write_bytes(path, b"".join(ln + b"\n" for ln in kept))
    return dropped


def append_metric(fh: IO[str], record: dict[str, Any]) -> None:
    """Write one line and flush it to the OS, so readers see whole lines as soon as they exist."""
    fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers people compare runs by."""
    if not records:
        return {}
    train = [r for r in records if r.get("train_loss") is not None]
    val = [r for r in records if r.get("val_loss") is not None]
    speeds = sorted(r["tok_per_s"] for r in records if r.get("tok_per_s"))
    last = records[-1]
    best = min(val, key=lambda r: r["val_loss"]) if val else None
    return {
        "steps": last.get("step"),
        "tokens_seen": last.get("tokens_seen"),
        "train_loss": train[-1]["train_loss"] if train else None,
        "val_loss": val[-1]["val_loss"] if val else None,
        "best_val_loss": best["val_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "tok_per_s": speeds[len(speeds) // 2] if speeds else None,
        "elapsed_s": last.get("elapsed_s"),
    }
