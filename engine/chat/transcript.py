"""Chat transcripts: `experiments/NAME/chats/<YYYY-MM-DD>.jsonl`, one JSON object a line per turn.

The same rule as metrics.jsonl: a line is appended whole and fsynced, a reader skips a line that does
not parse. A line torn by a crash mid-append is cut off before the next append, so it never glues
itself to the front of a good line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from engine.store.experiments import Experiment

CHATS_DIR = "chats"


def transcript_path(exp: Experiment, day: dt.date | str | None = None) -> Path:
    """The file a turn of `day` (default: today, local time) goes to."""
    if day is None:
        day = dt.date.today()
    name = day if isinstance(day, str) else day.isoformat()
    return exp.path(CHATS_DIR) / f"{name}.jsonl"


def _cut_torn_tail(fh: Any) -> None:
    """`fh` open "r+b": drop whatever follows the last newline (half a line from a crash)."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    step = 4096
    end = size
    while end > 0:
        start = max(0, end - step)
        fh.seek(start)
        nl = fh.read(end - start).rfind(b"\n")
        if nl >= 0:
            fh.truncate(start + nl + 1)
            return
        end = start
    fh.truncate(0)


def append_turn(exp: Experiment, record: dict[str, Any], day: dt.date | str | None = None) -> Path:
    """Append one turn; returns the file. Flushed and fsynced before returning."""
    path = transcript_path(exp, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    with open(path, "a+b") as fh:
        _cut_torn_tail(fh)
        fh.seek(0, os.SEEK_END)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    turns = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # torn by a crash, or being written right now
        if isinstance(rec, dict):
            turns.append(rec)
    return turns


def transcript_days(exp: Experiment) -> list[str]:
    """Days that have a transcript, oldest first ("YYYY-MM-DD")."""
    folder = exp.path(CHATS_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def read_turns(exp: Experiment, date: dt.date | str | None = None) -> list[dict[str, Any]]:
    """The turns of one day (`date`), or of every day oldest first (None), in the order written."""
    if date is not None:
        return _read_lines(transcript_path(exp, date))
    turns: list[dict[str, Any]] = []
    for day in transcript_days(exp):
        turns.extend(_read_lines(transcript_path(exp, day)))
    return turns
