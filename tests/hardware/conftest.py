"""The hardware suite's board: flashed once per session with `tinylm flash`, then one DeviceLink.

`pytest -m hardware --port /dev/ttyUSB0` (or TINYLM_PORT=...) runs it on a real board; `--port
virtual` runs it on the download-mode virtual board (engine/device/download_board.py), which is how
this suite is kept working without one. Results (tok/s, free heap) are printed at the end."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.blob.format import read_blob
from engine.blob.reference import Reference
from engine.device.link import DeviceLink
from tests.conftest import LLAMA2C, run_cli

REPORT: list[str] = []


@dataclass
class HardwareBoard:
    port: str
    chip: str
    blob: Path
    link: DeviceLink
    ref: Reference
    flash_output: str
    info: dict[str, str] = field(default_factory=dict)


def _default_blob(folder: Path) -> Path:
    """stories260K (llama2.c) as an int8 blob in integer mode at 128 tokens of context: the
    esp32-260k preset's shape and device context."""
    from engine.blob.format import write_blob
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import load_vocab

    f, state = read_llama2c(LLAMA2C / "stories260K.bin")
    vocab = load_vocab(LLAMA2C / "tok512.model")
    path = folder / "stories260K_int8_int.blob"
    write_blob(path, config_from_llama2c(f, vocab), state, vocab, "int8", int_attention=True,
               context_len=128)
    return path


@pytest.fixture(scope="session")
def hw(request, tmp_path_factory) -> HardwareBoard:
    port = request.config.getoption("--port") or os.environ.get("TINYLM_PORT")
    if not port:
        pytest.skip("no board: pass --port /dev/ttyUSB0 (or TINYLM_PORT), or --port virtual")
    chip = request.config.getoption("--chip") or os.environ.get("TINYLM_CHIP") or "esp32"
    folder = tmp_path_factory.mktemp("hardware")
    given = request.config.getoption("--hw-blob")
    blob = Path(given) if given else _default_blob(folder)
    virtual = None
    if port == "virtual":
        from engine.device.download_board import DownloadModeBoard

        virtual = DownloadModeBoard(chip=chip).start()
        port = virtual.port
    # an experiment holding the blob, so the user's own command does the flashing
    from engine.store.experiments import Store

    ws = folder / "ws"
    header = read_blob(blob).header
    cfg = read_blob(blob).config()
    cfg.device.board = chip
    cfg.quant.int_attention = bool(header.flags & 2)  # BLOB.md flags bit 1: integer mode
    exp = Store(ws / "experiments").create("hw", cfg)
    quant = read_blob(blob).header.quant
    shutil.copyfile(blob, exp.path(f"model.{quant}.bin"))
    flashed = run_cli(ws, "flash", "hw", "--port", port, "--quant", quant, timeout=600)
    if flashed.returncode != 0:
        if virtual:
            virtual.stop()
        pytest.fail(f"`tinylm flash` failed ({flashed.returncode}):\n{flashed.stdout}\n{flashed.stderr}")
    REPORT.append(f"flash: {flashed.stdout.strip().splitlines()[-2] if flashed.stdout else ''}")
    link = DeviceLink(port, timeout=60).open()
    try:
        ready = link.reset(timeout=30)
        assert ready.fields.get("model") == "ok", f"the board booted with model={ready.fields}"
        board = HardwareBoard(port, chip, blob, link, Reference(blob), flashed.stdout, link.info())
        yield board
    finally:
        link.close()
        if virtual:
            virtual.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("tinylm hardware")
        for line in REPORT:
            terminalreporter.write_line(line)
