"""Chat transcripts: `experiments/NAME/chats/<YYYY-MM-DD>.jsonl`, one JSON line per
turn.

The same rule as metrics.jsonl: a line is appended whole and fsynced, and a reader skips
a line that does not parse. A line torn by a crash mid-append is cut off before the next
append, so it never glues itself to the front of a good line. Appends hold an flock, so
the app and a `tinylm chat` in another terminal can share a day's file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from engine.errors import UserError
from engine.store.experiments import Experiment
from engine.store.metrics import read_jsonl

CHATS_DIR = "chats"


def _day_name(day: dt.date | str | None) -> str:
    if day is None:
        return dt.date.today().isoformat()  # local time: the user's "today"
    if isinstance(day, dt.date):
        return day.isoformat()
    try:
        return dt.date.fromisoformat(day).isoformat()
    except ValueError as e:
        raise UserError(f"'{day}' is not a date: give it as YYYY-MM-DD") from e


def transcript_path(exp: Experiment, day: dt.date | str | None = None) -> Path:
    """The file of `day`'s turns (default: today)."""
    return exp.path(CHATS_DIR) / f"{_day_name(day)}.jsonl"


def _cut_torn_tail(fh: IO[bytes]) -> None:
    """Drop whatever follows the last newline (half a line from a crash)."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return
    fh.seek(end - 1)
    if fh.read(1) == b"\n":
        return
    while end > 0:
        start = max(0, end - 4096)
        fh.seek(start)
        nl = fh.read(end - start).rfind(b"\n")
        if nl >= 0:
            fh.truncate(start + nl + 1)
            return
        end = start
    fh.truncate(0)


def append_turn(exp: Experiment, record: dict[str, Any],
                day: dt.date | str | None = None) -> Path:
    """Append one turn to `day`'s file (default today); returns the file. On disk
    (flushed and fsynced) when this returns."""
    path = transcript_path(exp, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        _cut_torn_tail(fh)
        fh.write(line.encode("utf-8"))  # "a" mode: always at the end
        fh.flush()
        os.fsync(fh.fileno())
    return path


def transcript_days(exp: Experiment) -> list[str]:
    """Days that have a transcript, oldest first ("YYYY-MM-DD")."""
    folder = exp.path(CHATS_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def read_turns(exp: Experiment, date: dt.date | str | None = None,
               ) -> list[dict[str, Any]]:
    """The turns of one day (`date`), or of every day oldest first (None), each day in
    the order written."""
    if date is not None:
        return read_jsonl(transcript_path(exp, date))
    turns: list[dict[str, Any]] = []
    for day in transcript_days(exp):
        turns.extend(read_jsonl(exp.path(CHATS_DIR) / f"{day}.jsonl"))
    return turns
