"""engine/device/ports.py and boards.py: USB ports labelled from their VID:PID, the pseudo ports, and
the registry of running `tinylm board`s (listed while they run, gone when they stop, a `kill -9`
leaving neither a stale entry nor a firmware child serving the pty)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from serial.tools.list_ports_common import ListPortInfo

from engine.device import boards
from engine.device.ports import from_comport, list_ports, usb_label
from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("vid, pid, words, reset", [
    (0x10C4, 0xEA60, "CP210x", "dtr-rts"),
    (0x1A86, 0x7523, "CH340", "dtr-rts"),
    (0x1A86, 0x55D4, "CH9102", "dtr-rts"),
    (0x0403, 0x6001, "FT232R", "dtr-rts"),
    (0x0403, 0x6010, "FT2232", "dtr-rts"),
    (0x0403, 0x6015, "FT231X", "dtr-rts"),
    (0x303A, 0x1001, "USB-Serial/JTAG", "usb-jtag"),
    (0x303A, 0x0002, "ESP32-S2/S3 native USB", "dtr-rts"),
    (0x303A, 0x7777, "Espressif USB device 303a:7777", "dtr-rts"),
    (0x2341, 0x0043, "USB serial 2341:0043 (Arduino Uno)", "dtr-rts"),
])
def test_usb_ports_are_labelled_from_vid_pid(vid, pid, words, reset):
    p = ListPortInfo("/dev/ttyUSB3", skip_link_detection=True)
    p.vid, p.pid, p.serial_number, p.description = vid, pid, "A50285BI", "Arduino Uno"
    info = from_comport(p)
    assert words in info.label and info.reset == reset
    assert info.kind == "usb" and info.usb_id == f"{vid:04x}:{pid:04x}"
    assert info.as_dict()["serial_number"] == "A50285BI"
    assert usb_label(None, None, "ttyS0")[0] == "ttyS0"


def test_registry_lists_live_boards_and_drops_stale_ones(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = boards.register(tmp_path, boards.BoardEntry(os.getpid(), "/dev/pts/77", "virtual",
                                                       "st", "ab" * 32, time.time()))
    stale = boards.register(tmp_path, boards.BoardEntry(dead.pid, "/dev/pts/78", "virtual"))
    torn = boards.registry_dir(tmp_path) / "123.json"
    torn.write_text('{"pid": 12')
    listed = boards.running_boards(tmp_path)
    assert [b.port for b in listed] == ["/dev/pts/77"] and listed[0].experiment == "st"
    assert live.exists() and not stale.exists() and not torn.exists()
    ports = list_ports(tmp_path)
    mine = [p for p in ports if p.kind == "board"]
    assert mine and mine[0].device == "/dev/pts/77" and mine[0].process == os.getpid()
    assert [p.device for p in ports if p.kind == "pseudo"] == ["virtual", "rv32"]
    boards.unregister(live)
    assert boards.running_boards(tmp_path) == []


def start_board(ws, blob):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "--blob",
                             str(blob)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    assert line.startswith("virtual board on /dev/pts/"), line
    return proc, line.split(" on ")[1].split(" ")[0]


def listed(ws) -> list[dict]:
    r = run_cli(ws, "ports", "--json")
    assert r.returncode == 0, r.stderr
    return [p for p in json.loads(r.stdout) if p["kind"] == "board"]


def gone(pid: int, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_tinylm_board_is_listed_while_it_runs(board, make_blob, tmp_path):
    blob = make_blob("gru", "int8")
    proc, port = start_board(tmp_path, blob)
    try:
        entries = listed(tmp_path)
        assert len(entries) == 1 and entries[0]["device"] == port
        assert entries[0]["process"] == proc.pid
        assert entries[0]["blob_sha"] == hashlib.sha256(blob.read_bytes()).hexdigest()
        text = run_cli(tmp_path, "ports").stdout
        assert port in text and f"pid {proc.pid}" in text and "virtual" in text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    assert listed(tmp_path) == [] and not list(boards.registry_dir(tmp_path).glob("*.json"))


def test_kill_9_of_tinylm_board_ends_its_firmware_and_its_entry(board, make_blob, tmp_path):
    proc, port = start_board(tmp_path, make_blob("gru", "int8"))
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    firmware = [int(p) for p in children.stdout.split()]
    assert firmware
    proc.kill()
    proc.wait(5)
    assert all(gone(pid, 2.0) for pid in firmware), "the firmware outlived `tinylm board`"
    assert listed(tmp_path) == []
    assert not list(boards.registry_dir(tmp_path).glob("*.json"))  # the stale entry was dropped


def test_tinylm_board_refuses_a_missing_blob(tmp_path):
    r = run_cli(tmp_path, "board", "--blob", str(tmp_path / "nonexistent.bin"))
    assert r.returncode == 2 and "no such file" in r.stderr and "tinylm export" in r.stderr
    assert "Traceback" not in r.stderr
