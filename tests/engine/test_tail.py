"""engine.store.tail: readers that return only what another process appended since the last call."""

from __future__ import annotations

import json
import os

from engine.store.tail import AppendReader, MetricsTail, TextTail


def _append(path, text: str | bytes) -> None:
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def test_only_new_lines_and_an_unfinished_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == ([], False)  # no file yet
    _append(path, json.dumps({"step": 1}) + "\n" + '{"step": 2, "train_lo')
    assert tail.read() == ([{"step": 1}], False)
    assert tail.reader.offset == path.stat().st_size  # the torn part was read once, kept aside
    _append(path, 'ss": 3.0}\n')
    assert tail.read() == ([{"step": 2, "train_loss": 3.0}], False)
    assert tail.read() == ([], False)


def test_a_replaced_file_is_read_again_from_the_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _append(path, "".join(json.dumps({"step": s}) + "\n" for s in (10, 20, 30)))
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.read()[0]] == [10, 20, 30]
    tmp = tmp_path / "metrics.jsonl.tmp"  # what a resume does: rewrite up to its checkpoint, rename
    tmp.write_text(json.dumps({"step": 10}) + "\n" + json.dumps({"step": 20}) + "\n")
    os.replace(tmp, path)
    records, reset = tail.read()
    assert reset and [r["step"] for r in records] == [10, 20]


def test_a_truncated_file_resets_and_a_deleted_one_too(tmp_path):
    path = tmp_path / "train.log"
    _append(path, "one\ntwo\n")
    tail = TextTail(path)
    assert tail.read() == (["one", "two"], False)
    with open(path, "r+b") as f:
        f.truncate(0)
    _append(path, "x\n")
    assert tail.read() == (["x"], True)
    path.unlink()
    assert tail.read() == ([], True)
    assert tail.read() == ([], False)


def test_first_read_of_a_long_log_returns_its_tail_only(tmp_path):
    path = tmp_path / "train.log"
    _append(path, "".join(f"line {i}\n" for i in range(10_000)))
    tail = TextTail(path, start_tail=100)
    lines, _ = tail.read()
    assert lines[-1] == "line 9999" and 5 < len(lines) < 15
    assert all(ln.startswith("line ") for ln in lines)  # the cut first line is dropped
    _append(path, b"bad \xff byte\n")
    assert tail.read() == (["bad \\xff byte"], False)


def test_reads_are_bounded_so_a_huge_append_comes_in_pieces(tmp_path):
    path = tmp_path / "device.log"
    _append(path, "".join(f"{i}\n" for i in range(1000)))
    reader = AppendReader(path, max_read=1000)
    got = []
    for _ in range(10):
        got += reader.read().lines
    assert [int(x) for x in got] == list(range(1000))
