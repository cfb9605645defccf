"""The Device tab's port list is the engine's: a `tinylm board` running in the workspace shows up
(from the registry engine/device/boards.py), then the pseudo ports, `download` being the app's own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.device.boards import BoardEntry, register
from engine.errors import UserError
from tui.workers.ports import PSEUDO, list_ports, parse_typed


def test_running_board_listed_before_the_pseudo_ports(tmp_path: Path) -> None:
    register(tmp_path, BoardEntry(pid=os.getpid(), port="/dev/pts/77", kind="virtual",
                                  experiment="demo-260k", blob_sha="ab" * 32, started=time.time()))
    choices = list_ports(tmp_path)
    boards = [c for c in choices if c.kind == "board"]
    assert [b.value for b in boards] == ["/dev/pts/77"]
    assert f"`tinylm board` pid {os.getpid()}" in boards[0].label and not boards[0].pseudo
    assert choices[-len(PSEUDO):] == list(PSEUDO)
    assert [c.value for c in choices if c.pseudo] == ["virtual", "rv32", "download"]
    assert list_ports(tmp_path / "elsewhere")[-3:] == list(PSEUDO)  # no registry: none listed


def test_typed_ports() -> None:
    assert parse_typed(" download ").kind == "download"
    assert parse_typed("socket://127.0.0.1:4444").kind == "socket"
    assert parse_typed("/dev/ttyUSB0").kind == "serial"
    with pytest.raises(UserError, match="socket://host:port"):
        parse_typed("socket://nohost")


def test_download_mode_board_listed_and_flashed_through_esptool(tmp_path: Path) -> None:
    """`tinylm board --download-mode` in another terminal: the picker lists it as a port esptool
    writes to (a ROM bootloader has no protocol upload), not as a board the tab starts."""
    register(tmp_path, BoardEntry(pid=os.getpid(), port="/dev/pts/78", kind="download",
                                  started=time.time()))
    (rom,) = [c for c in list_ports(tmp_path) if c.value == "/dev/pts/78"]
    assert rom.kind == "serial" and not rom.pseudo
    assert rom.label == "/dev/pts/78  ESP32 in download mode"
