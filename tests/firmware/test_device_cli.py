"""The issue's definition of done, as a user types it: export a blob, then the virtual board (real C,
real protocol over a real pty) prints exactly what the reference prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from protocol_util import needs_rv32

from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from tests.conftest import LLAMA2C, REPO, run_cli


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    r = run_cli(ws, "import-llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
                str(LLAMA2C / "tok512.model"), "--name", "st")
    assert r.returncode == 0, r.stderr
    assert run_cli(ws, "set", "st", "device.context_len=128").returncode == 0
    for quant in ("f32", "int8", "ternary"):
        r = run_cli(ws, "export", "st", "--quant", quant, "--force")
        assert r.returncode == 0, r.stderr
    return ws


@pytest.mark.parametrize("quant", ["f32", "int8", "ternary"])
@pytest.mark.parametrize("sampling", [["--temperature", "0"],
                                      ["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]])
def test_device_prints_exactly_what_the_reference_prints(ws, quant, sampling):
    args = ["sample", "st", "--quant", quant, "--prompt", "Once upon a time", "--max-tokens", "48",
            *sampling]
    ref = run_cli(ws, *args, "--engine", "reference")
    dev = run_cli(ws, *args, "--engine", "device", "--port", "virtual")
    assert ref.returncode == 0 and dev.returncode == 0, ref.stderr + dev.stderr
    assert dev.stdout == ref.stdout
    assert len(ref.stdout) > len("Once upon a time") + 20
    assert (ws / "experiments" / "st" / "device.log").stat().st_size > 0


def test_tinylm_board_serves_a_pty_that_devicelink_talks_to(ws):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "st",
                             "--quant", "int8", "--boot-banner"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("virtual board on /dev/pts/"), line
        port = line.split(" on ")[1].split(" ")[0]
        noise: list[bytes] = []
        with DeviceLink(port, on_noise=noise.append) as link:
            info = link.info()
            assert info["quant"] == "int8" and info["vocab"] == "512" and info["ctx"] == "128"
            events = list(link.generate(prompt_ids=[1, 403, 407, 261, 378], max_tokens=8))
        assert sum(isinstance(e, TokenEvent) for e in events) == 8
        assert isinstance(events[-1], GenerationSummary) and events[-1].reason == "max"
        assert any(b"ets " in n or b"cpu_start" in n for n in noise)  # the boot banner was noise
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_device_refuses_a_blob_of_another_model(ws, tmp_path):
    r = run_cli(ws, "new", "other", "--set", "tokenizer.kind=byte", "--set",
                "tokenizer.vocab_size=256")
    assert r.returncode == 0
    blob = ws / "experiments" / "st" / "model.int8.bin"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "--blob",
                             str(blob)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        port = proc.stdout.readline().split(" on ")[1].split(" ")[0]
        r = run_cli(ws, "sample", "other", "--engine", "device", "--port", port, "--prompt", "x")
        assert r.returncode == 2 and "vocabulary of 512" in r.stderr and "256" in r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_tinylm_board_stops_its_board_on_sigterm(ws):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "st",
                             "--quant", "int8"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().startswith("virtual board on /dev/pts/")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    board_pids = [int(p) for p in children.stdout.split()]
    assert board_pids, "the virtual board runs as a child process"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    for pid in board_pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@needs_rv32
def test_port_rv32_runs_the_emulated_board_and_projects_c3_speed(ws):
    """`--port rv32`: the rv32 firmware under qemu for this one command, the reference's tokens, and
    a summary line with the instructions per token and the ESP32-C3 speed they project to."""
    args = ["sample", "st", "--quant", "int8", "--prompt", "Once upon a time", "--max-tokens", "24",
            "--temperature", "0"]
    ref = run_cli(ws, *args, "--engine", "reference")
    dev = run_cli(ws, *args, "--engine", "device", "--port", "rv32")
    assert ref.returncode == 0 and dev.returncode == 0, ref.stderr + dev.stderr
    assert dev.stdout == ref.stdout
    m = re.search(r"board \(rv32 under qemu\): 24 tokens, ([\d.]+) M instructions/token -> projected "
                  r"ESP32-C3 ([\d.]+) tok/s", dev.stderr)
    assert m, dev.stderr
    assert 1.0 < float(m.group(1)) < 100.0 and float(m.group(2)) > 0
    virt = run_cli(ws, *args, "--engine", "device", "--port", "virtual")
    assert re.search(r"board: 24 tokens, [\d,.]+ tok/s", virt.stderr), virt.stderr


@needs_rv32
def test_tinylm_board_emulate_rv32_serves_a_socket(ws):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "st",
                             "--quant", "ternary", "--emulate", "rv32"], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("emulated rv32 board on socket://127.0.0.1:"), line
        port = line.split(" on ")[1].split(" ")[0]
        with DeviceLink(port) as link:
            assert link.info()["quant"] == "ternary"
            events = list(link.generate(prompt_ids=[1, 403, 407, 261, 378], max_tokens=4))
        toks = [e for e in events if isinstance(e, TokenEvent)]
        assert len(toks) == 4 and all(e.instructions > 100_000 for e in toks)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert subprocess.run(["pgrep", "-f", port.split(":")[-1]], capture_output=True).returncode == 1


def test_tinylm_board_emulate_refuses_virtual_only_options(ws):
    r = run_cli(ws, "board", "st", "--quant", "int8", "--emulate", "rv32", "--us-per-token", "500")
    assert r.returncode == 2 and "--us-per-token" in r.stderr and "virtual board" in r.stderr
    r = run_cli(ws, "board", "--emulate", "rv32")
    assert r.returncode == 2 and "needs a model" in r.stderr
