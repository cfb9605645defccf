"""Chat transcripts: whole lines appended, a torn tail cut before the next append, read
back by day."""

from __future__ import annotations

import pytest

from engine.chat.transcript import (
    append_turn,
    read_turns,
    transcript_days,
    transcript_path,
)
from engine.errors import UserError
from engine.store.experiments import Experiment


def test_a_torn_last_line_is_cut_before_appending_and_days_read_in_order(tmp_path):
    exp = Experiment(tmp_path / "exp", {})
    first = append_turn(exp, {"prompt": "a", "text": "é\nb"}, day="2026-11-27")
    assert first == transcript_path(exp, "2026-11-27")
    assert first == tmp_path / "exp" / "chats" / "2026-11-27.jsonl"
    with open(first, "ab") as fh:
        fh.write(b'{"prompt": "torn by a cr')  # a crash mid-append
    assert read_turns(exp, "2026-11-27") == [{"prompt": "a", "text": "é\nb"}]
    append_turn(exp, {"prompt": "b"}, day="2026-11-27")
    assert first.read_bytes().count(b"\n") == 2 and b"torn" not in first.read_bytes()
    append_turn(exp, {"prompt": "c"}, day="2026-11-28")
    assert transcript_days(exp) == ["2026-11-27", "2026-11-28"]
    assert [t["prompt"] for t in read_turns(exp)] == ["a", "b", "c"]
    assert [t["prompt"] for t in read_turns(exp, "2026-11-28")] == ["c"]
    assert read_turns(exp, "2020-01-01") == []


def test_a_file_that_is_one_torn_line_is_emptied(tmp_path):
    exp = Experiment(tmp_path / "exp", {})
    path = transcript_path(exp, "2026-11-27")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 10_000)  # no newline at all, longer than one read block
    append_turn(exp, {"prompt": "ok"}, day="2026-11-27")
    assert path.read_bytes() == b'{"prompt":"ok"}\n'


def test_a_day_that_is_not_a_date_is_a_user_error(tmp_path):
    exp = Experiment(tmp_path / "exp", {})
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        read_turns(exp, "../../meta")
