"""Flashing through esptool's real code paths (engine/device/flash.py) against the download-mode
virtual board (engine/device/download_board.py): a pty, the ROM protocol, a flash image file, and
then the host firmware booted from that image on the same pty. No mocks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.device.download_board import DownloadModeBoard
from engine.device.flash import FlashStopped, flash_blob, ram_problem, read_blob
from engine.device.flash_image import FlashImage, create_erased_image
from engine.device.link import DeviceError, DeviceLink
from engine.device.partitions import parse_partition_csv, table_for_flash
from engine.device.rom_loader import CHIPS, E_CHECKSUM, FLASH_BEGIN, FLASH_DATA, RomLoader, rom_checksum
from engine.errors import Failure, UserError
from tests.conftest import REPO, run_cli, tiny_cfg

MODEL = 0x110000


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_region(board: DownloadModeBoard, n: int) -> bytes:
    with open(board.flash_image, "rb") as f:
        f.seek(MODEL)
        return f.read(n)


@pytest.fixture
def blob(make_blob) -> Path:
    return make_blob("transformer", "int8")


@pytest.fixture
def esp32(board):  # `board` builds the host firmware once (conftest)
    with DownloadModeBoard(chip="esp32") as b:
        yield b


# ---- the whole path -----------------------------------------------------------------------------

@pytest.mark.parametrize("chip,compress", [("esp32", True), ("esp32", False), ("esp32-s3", True),
                                           ("esp32-c3", False)])
def test_flash_then_the_same_pty_answers_info_with_the_blob_sha(board, stories_blob, chip,
                                                                 compress):
    blob = stories_blob("int8")  # stories260K, a real model (~300 KB)
    progress: list[tuple[int, int, str]] = []
    with DownloadModeBoard(chip=chip) as b:
        result = flash_blob(b.port, blob, board=chip, compress=compress,
                            on_progress=lambda *p: progress.append(p))
        assert result.verification == "board", result.detail
        assert result.detail.startswith("verified on the board")
        assert result.chip == chip and result.compressed == compress
        size = blob.stat().st_size
        assert progress[-1] == (size, size, "blob")
        assert [d for d, _, _ in progress] == sorted(d for d, _, _ in progress)
        assert result.partition_table.name == ("partitions-8MB.csv" if chip == "esp32-s3"
                                               else "partitions.csv")
        assert model_region(b, size) == blob.read_bytes()
        with DeviceLink(b.port) as link:  # a new open: the app restarts from the image
            info = link.info()
        assert info["blob_sha"] == sha(blob) and info["board"] == chip
        assert info["blob_size"] == str(size)


def test_interrupted_flash_leaves_a_bad_model_and_the_next_flash_recovers(esp32, stories_blob):
    blob = stories_blob("int8")  # ~300 KB
    size = blob.stat().st_size
    seen: list[int] = []
    with pytest.raises(FlashStopped, match="incomplete"):
        flash_blob(esp32.port, blob, board="esp32", compress=False,
                   on_progress=lambda done, total, what: seen.append(done),
                   should_stop=lambda: bool(seen) and seen[-1] >= size // 2)
    half = model_region(esp32, size)
    assert half[:size // 4] == blob.read_bytes()[:size // 4]  # written so far
    assert half[-4096:] == b"\xff" * 4096  # erased, never written
    # esptool closed the port after writing (no FLASH_END): the board boots the app at the next
    # open. A pty tells the board about a close only by POLLHUP while nobody has it open, so give
    # it a moment to see that, as a user reopening the port would.
    time.sleep(0.3)
    with DeviceLink(esp32.port, timeout=5) as link:
        with pytest.raises(DeviceError) as e:
            link.info()
        assert e.value.code == "no_model"
    result = flash_blob(esp32.port, blob, board="esp32")  # SYNC takes it back to download mode
    assert result.verification == "board", result.detail
    assert model_region(esp32, size) == blob.read_bytes()


def test_md5_verification_catches_flash_that_differs_from_what_was_sent(esp32, blob):
    size = blob.stat().st_size

    def corrupt_once_written(done: int, total: int, what: str) -> None:
        if done == total:  # the last block is acknowledged; esptool's MD5 check comes next
            with open(esp32.flash_image, "r+b") as f:
                f.seek(MODEL + size // 2)
                f.write(b"\x00" * 16)

    with pytest.raises(Failure, match="verification failed") as e:
        flash_blob(esp32.port, blob, board="esp32", on_progress=corrupt_once_written)
    assert "Input MD5" in str(e.value) and "Flash MD5" in str(e.value)
    assert not isinstance(e.value, UserError)


def test_wrong_chip_is_refused_before_a_byte_is_written(board, blob):
    with DownloadModeBoard(chip="esp32-c3") as b:
        before = sha(b.flash_image)
        with pytest.raises(UserError) as e:
            flash_blob(b.port, blob, board="esp32")
        msg = str(e.value)
        assert "esp32-c3" in msg and "built for esp32" in msg and "device.board=esp32-c3" in msg
        assert sha(b.flash_image) == before


def test_blob_larger_than_the_model_partition_is_refused_before_writing(esp32, tmp_path):
    big = bytearray(0x2F0000 + 0x1000)  # a well-formed blob frame one sector too large
    big[:4] = b"TLMB"
    struct.pack_into("<I", big, len(big) - 8, len(big))
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    before = sha(esp32.flash_image)
    with pytest.raises(UserError, match=r"'model' partition holds 3,080,192 \(4,096 over\)"):
        flash_blob(esp32.port, path, board="esp32")
    assert sha(esp32.flash_image) == before


def test_app_image_goes_to_the_factory_partition(esp32, blob, tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(b"\xe9" + bytes(range(256)) * 40)  # an app image's magic byte, then data
    result = flash_blob(esp32.port, blob, board="esp32", app=app)
    assert [(r.what, r.offset) for r in result.regions] == [("app", 0x10000), ("blob", MODEL)]
    with open(esp32.flash_image, "rb") as f:
        f.seek(0x10000)
        assert f.read(app.stat().st_size) == app.read_bytes()
    assert result.verification == "board"
    with pytest.raises(UserError, match="not an ESP app image"):
        flash_blob(esp32.port, blob, board="esp32", app=blob)


def test_nonexistent_port_and_bad_inputs_fail_clearly_without_connecting(blob, tmp_path):
    with pytest.raises(UserError, match="cannot open /dev/no-such-tty.*tinylm doctor"):
        flash_blob("/dev/no-such-tty", blob, board="esp32")
    with pytest.raises(UserError, match="not a tinylm blob"):
        flash_blob("/dev/no-such-tty", REPO / "README.md", board="esp32")
    with pytest.raises(UserError, match="only esp32, esp32-s3, esp32-c3"):
        flash_blob("/dev/no-such-tty", blob, board="host")
    cfg = tiny_cfg(seq_len=4096)  # a KV cache far beyond an ESP32's heap
    assert "RAM" in (ram_problem(cfg, "esp32", "int8") or "")
    with pytest.raises(UserError, match="RAM"):
        flash_blob("/dev/no-such-tty", blob, board="esp32", config=cfg)
    assert ram_problem(tiny_cfg(), "esp32", "int8") is None


# ---- the pieces ---------------------------------------------------------------------------------

def test_rom_rejects_a_bad_data_checksum_like_the_rom(tmp_path):
    create_erased_image(tmp_path / "f.bin", 4 << 20)
    flash = FlashImage(tmp_path / "f.bin")
    rom = RomLoader(CHIPS["esp32"], flash)

    def request(op: int, data: bytes, chk: int = 0) -> tuple[int, bytes]:
        reply = rom.handle(struct.pack("<BBHI", 0, op, len(data), chk) + data)
        _, rop, size, _ = struct.unpack_from("<BBHI", reply.packets[0])
        assert rop == op
        return size, reply.packets[0][8:]

    assert request(FLASH_BEGIN, struct.pack("<IIII", 0x1000, 1, 0x400, MODEL))[1] == bytes(4)
    block = bytes(range(256)) * 4
    header = struct.pack("<IIII", len(block), 0, 0, 0)
    _, status = request(FLASH_DATA, header + block, rom_checksum(block) ^ 1)
    assert status[:2] == bytes([1, E_CHECKSUM])
    assert flash.read(MODEL, 16) == b"\xff" * 16  # nothing written
    _, status = request(FLASH_DATA, header + block, rom_checksum(block))
    assert status[:2] == b"\x00\x00" and flash.read(MODEL, len(block)) == block
    flash.close()


def test_partition_csv_sizes_offsets_and_the_table_per_flash_size(tmp_path):
    t = parse_partition_csv("# comment\nnvs, data, nvs, , 24K,\n"
                            "factory, app, factory, , 1M\nmodel, data, 0x40, 0x110000, 0x2F0000\n")
    assert [(p.name, p.offset, p.size) for p in t.partitions] == [
        ("nvs", 0x9000, 24 * 1024), ("factory", 0x10000, 1 << 20), ("model", MODEL, 0x2F0000)]
    assert table_for_flash(4 << 20).find("model").size == 0x2F0000
    assert table_for_flash(8 << 20).find("model").size == 0x6F0000
    with pytest.raises(UserError, match="4 MB"):
        table_for_flash(2 << 20)
    with pytest.raises(UserError, match="overlaps"):
        parse_partition_csv("a, data, nvs, 0x9000, 0x2000\nb, data, nvs, 0xA000, 0x1000\n")
    assert read_blob  # imported API stays public


def test_the_app_dies_with_the_board(esp32, blob):
    flash_blob(esp32.port, blob, board="esp32", verify=True)
    children = Path(f"/proc/{esp32.proc.pid}/task/{esp32.proc.pid}/children").read_text().split()
    assert len(children) == 1  # the app child (tinylm-board --stdio)
    app = int(children[0])
    esp32.proc.kill()  # no clean-up code runs in the board: PR_SET_PDEATHSIG must do it
    esp32.proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{app}").exists() and \
            "Z" not in Path(f"/proc/{app}/stat").read_text().split()[2]:
        time.sleep(0.05)
    assert not Path(f"/proc/{app}").exists() or \
        Path(f"/proc/{app}/stat").read_text().split()[2] == "Z"


# ---- the CLI ------------------------------------------------------------------------------------

@pytest.fixture
def ws_with_blob(workspace, blob):
    from engine.store.experiments import Store

    exp = Store(workspace / "experiments").create("tiny", tiny_cfg())
    exp.path("model.int8.bin").write_bytes(blob.read_bytes())
    return workspace


def test_cli_board_download_mode_then_flash_and_a_wrong_chip(board, ws_with_blob):
    ws = ws_with_blob
    procs = {}
    try:
        for chip in ("esp32", "esp32-c3"):
            procs[chip] = subprocess.Popen(
                [sys.executable, "-m", "engine", "-w", str(ws), "board", "--download-mode",
                 "--chip", chip], stdout=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)})
        ports = {}
        for chip, proc in procs.items():
            line = proc.stdout.readline()
            assert line.startswith("virtual board (download mode) on /dev/pts/"), line
            ports[chip] = line.split(" on ")[1].split(" ")[0]
        listed = json.loads(run_cli(ws, "ports", "--json").stdout)  # the registry has them
        assert {p["device"] for p in listed if p["board"] == "download"} == set(ports.values())
        ok = run_cli(ws, "flash", "tiny", "--port", ports["esp32"])
        assert ok.returncode == 0, ok.stderr
        assert "verified on the board" in ok.stdout and "KB/s" in ok.stderr
        wrong = run_cli(ws, "flash", "tiny", "--port", ports["esp32-c3"])
        assert wrong.returncode == 2 and "esp32-c3" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        missing = run_cli(ws, "flash", "tiny", "--port", "/dev/no-such-tty")
        assert missing.returncode == 2 and "cannot open /dev/no-such-tty" in missing.stderr
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    assert not any(p["board"] for p in json.loads(run_cli(ws, "ports", "--json").stdout))
