"""engine/device/monitor.py and `tinylm monitor` on the real firmware over a real pty: every line of
a flood counted by its sequence number, none dropped; pause loses nothing; filter; label:value series;
tolerant decoding; device.log saved and rotated; Ctrl-R resets the board, Ctrl-C leaves with 0."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.device.devlog import DeviceLog
from engine.device.monitor import Monitor, decode_line
from engine.device.plotter import PlotSeries, parse_plot_line
from engine.device.session import BoardSession
from engine.device.virtual import VirtualBoard
from tests.conftest import REPO, run_cli


def test_lines_are_decoded_tolerantly():
    assert decode_line(b"caf\xc3\xa9 ok") == "café ok"
    assert decode_line(b"\xe0\x1c\xfc\x8f") == "\\xe0\\x1c\\xfc\\x8f"  # bad UTF-8 and a control
    assert decode_line(b"a\x00b\tc\rd\x7f") == "a\\x00b\tc\\x0dd\\x7f"
    colour = b"\x1b[0;32mI (29) boot: ok\x1b[0m"
    assert decode_line(colour) == colour.decode()  # ESP-IDF colours stay
    assert decode_line(b"\x1b]0;title\x07") == "\\x1b]0;title\\x07"  # other escapes do not


@pytest.mark.parametrize("text, values", [
    ("temp:21.5 hum:40", {"temp": 21.5, "hum": 40.0}),
    ("temp:21.5,hum:-4e-1", {"temp": 21.5, "hum": -0.4}),
    ("a:1\tb: 2; c:.5", {"a": 1.0, "b": 2.0, "c": 0.5}),
    ("seq:12345 val:42", {"seq": 12345.0, "val": 42.0}),
    ("I (312) cpu_start: Starting scheduler", None),
    ("temp:21.5 hello", None),
    ("temp:abc", None),
    ("@TOK id=1 i=0|ABCD", None),
    ("", None),
])
def test_serial_plotter_lines(text, values):
    assert parse_plot_line(text) == values


def test_plot_series_are_incremental():
    s = PlotSeries(keep=3)
    assert s.add(1.0, "t:1 h:5") and not s.add(1.5, "boot: ok") and s.add(2.0, "t:2")
    assert s.take_new() == {"t": [(1.0, 1.0), (2.0, 2.0)], "h": [(1.0, 5.0)]}
    assert s.take_new() == {}
    for k in range(5):
        s.add(3.0 + k, f"t:{k}")
    assert s.take_new()["t"] == [(3.0 + k, float(k)) for k in range(5)]
    assert list(s.series["t"]) == [(5.0, 2.0), (6.0, 3.0), (7.0, 4.0)]  # the last `keep`


def seqs(lines):
    return [int(m.text.split()[0][4:]) for m in lines if m.text.startswith("seq:")]


def test_monitor_keeps_up_with_a_flood_and_pause_loses_nothing(board, make_blob):
    n = 30_000
    with VirtualBoard(make_blob("gru", "int8"), flood=n) as vb, BoardSession(vb.port) as s, \
            Monitor(s) as m:
        m.pause()
        time.sleep(0.3)
        assert m.take() == [] and m.stats().lines > 0 and m.stats().paused
        m.resume()
        got = []
        end = time.monotonic() + 20
        while len(seqs(got)) < n and time.monotonic() < end:
            m.wait(0.2)
            got += m.take()
        stats = m.stats()
    assert seqs(got) == list(range(n))  # every line, in order, none lost while paused
    assert stats.dropped == 0 and stats.lines >= n + 1  # + @READY
    assert len(m.series.series["val"]) == min(n, m.series.keep)
    assert max(v for _, v in m.series.series["val"]) == 100


def test_filter_shows_matches_but_counts_everything(board, make_blob):
    with VirtualBoard(make_blob("gru", "int8"), flood=1000) as vb, BoardSession(vb.port) as s, \
            Monitor(s, r"^seq:\d*7 ") as m:
        got = []
        end = time.monotonic() + 10
        while m.stats().lines < 1001 and time.monotonic() < end:
            m.wait(0.1)
            got += m.take()
        got += m.take()
        stats = m.stats()
    assert seqs(got) == list(range(7, 1000, 10)) and stats.shown == 100 and stats.lines == 1001


def test_device_log_rotates_at_its_cap(tmp_path):
    log = DeviceLog(tmp_path / "device.log", max_bytes=1000).open()
    for k in range(100):
        log.write(1.0 + k, "<", f"line {k}".encode())
    log.close()
    cur, old = (tmp_path / "device.log").read_text(), (tmp_path / "device.log.1").read_text()
    assert len(cur) <= 1000 and len(old) <= 1000
    assert cur.rstrip().endswith("< line 99") and "< line" in old
    lines = (old + cur).splitlines()
    assert [int(x.rsplit(" ", 1)[1]) for x in lines] == list(range(100 - len(lines), 100))



@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_stops_saving_not_the_caller():
    """The session's reader thread writes device.log: ENOSPC must not end it."""
    log = DeviceLog(Path("/dev/full")).open()
    for k in range(3):
        log.write(1.0 + k, "<", b"x" * 5000)  # past the file buffer: the write itself fails
    log.flush()
    assert "No space left" in log.error
    log.write(9.0, "<", b"after")  # a no-op now, not an error
    log.close()
    assert log.error.startswith("saving to /dev/full stopped")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    assert run_cli(ws, "new", "m").returncode == 0
    return ws


def read_until(fd, needle: bytes, timeout: float = 10.0) -> bytes:
    buf, end = b"", time.monotonic() + timeout
    while needle not in buf:
        assert time.monotonic() < end, f"no {needle!r} in {buf[-300:]!r}"
        if select.select([fd], [], [], 0.2)[0]:
            buf += os.read(fd, 65536)
    return buf


def test_tinylm_monitor_saves_filters_resets_and_leaves_with_0(board, make_blob, ws):
    """stdin is a terminal (a pty here): Ctrl-R resets the board (a second boot banner shows up);
    --filter shows only matches while device.log keeps every line; SIGINT (Ctrl-C) exits 0."""
    with VirtualBoard(make_blob("gru", "int8"), boot_banner=True, flood=200) as vb:
        master, slave = os.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "monitor", "m",
                                 "--port", vb.port, "--filter", "tinylm: board|seq:199 ",
                                 "--timestamps"], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(slave)
        try:
            out = read_until(proc.stdout.fileno(), b"seq:199 ")
            assert b"(boot 1)" in out and b"seq:198" not in out and b"cpu_start" not in out
            os.write(master, b"\x12")  # Ctrl-R
            out += read_until(proc.stdout.fileno(), b"(boot 2)")
            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"Ctrl-R resets the board" in err and b"dropped" in err
    first = (out + rest).decode().splitlines()[0]
    assert first[2] == ":" and first[8] == "." and first.endswith(")")  # HH:MM:SS.mmm stamp
    log = (ws / "experiments" / "m" / "device.log").read_bytes()  # the bytes as they came
    assert b"< seq:198 val:98\n" in log and b"< \xe0\x1c\xfc\x8f\n" in log and b"> @RESET id=" in log


def test_tinylm_monitor_needs_a_port(ws):
    r = run_cli(ws, "monitor", "--port", "/dev/ttyNOPE0")
    assert r.returncode == 2 and "no such port" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(ws, "monitor", "--port", "/dev/null", "--filter", "(")
    assert r.returncode == 2 and "regular expression" in r.stderr
