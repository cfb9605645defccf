"""Shared fixtures: a fresh workspace per test, a runner for the real `tinylm` CLI, and a tiny random
model (config + float32 weights) for blob and firmware tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import layout as bl
from engine.config.schema import (
    ExperimentConfig,
    ModelConfig,
    QuantConfig,
    TokenizerConfig,
)

REPO = Path(__file__).resolve().parents[1]
# Training runs here use the default kernels: each of the suite's dozens of short runs starts in a
# fresh workspace and would otherwise measure them for a few seconds (tests/engine/test_kernels.py
# tests the measurement itself). Subprocesses inherit it.
os.environ.setdefault("TINYLM_KERNELS", "default")
# In this process torch works on tiny models: one thread is as fast when the machine is quiet
# (test_overfits_one_batch 2.5 s vs 2.8 s) and does not collapse beside other load (2 threads: 79-140
# s there). Tests that need more set it and put it back.
torch.set_num_threads(1)
CORPUS = REPO / "corpora" / "tinystories_slice.txt"
LLAMA2C = REPO / "tests" / "data" / "llama2c"  # stories260K + tok512, shipped (see SOURCES.md)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace whose default corpus is the shipped slice."""
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / CORPUS.name).symlink_to(CORPUS)
    return tmp_path


def run_cli(ws: Path, *args: str, timeout: float = 120, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run `python -m engine.cli` in a subprocess, like a user would run `tinylm`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine", "-w", str(ws), *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def cli(workspace: Path):
    return lambda *args, **kw: run_cli(workspace, *args, **kw)


def tiny_cfg(arch: str = "transformer", seq_len: int = 24, tie: bool = True) -> ExperimentConfig:
    """A 2-layer, dim-32 model on the byte vocab, group size 32: blobs of a few dozen KB."""
    model = ModelConfig(arch=arch, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=44,
                        seq_len=seq_len, tie_embeddings=tie)
    return ExperimentConfig(model=model, tokenizer=TokenizerConfig(kind="byte", vocab_size=256),
                            quant=QuantConfig(group_size=32))


def random_state(cfg: ExperimentConfig, seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
    """Seeded normal float32 weights (times `scale`) for every tensor of the blob but the RoPE table."""
    rng = np.random.default_rng(seed)
    state = {}
    for s in bl.tensor_specs(cfg, "f32"):
        if s.name == "rope":
            continue
        shape = (s.cols,) if s.rows == 1 else (s.rows, s.cols)
        state[s.name] = (rng.normal(size=shape) * scale).astype(np.float32)
    return state


def pytest_addoption(parser: pytest.Parser) -> None:
    """tests/hardware (marker `hardware`, off by default): `pytest -m hardware --port /dev/ttyUSB0`."""
    group = parser.getgroup("tinylm hardware suite")
    group.addoption("--port", default=None, help="serial port of an ESP32 for -m hardware (or env "
                    "TINYLM_PORT); `virtual` = a download-mode virtual board")
    group.addoption("--chip", default=None, help="esp32 / esp32-s3 / esp32-c3 (default: esp32, or "
                    "env TINYLM_CHIP)")
    group.addoption("--hw-blob", default=None, help="the blob to flash (default: stories260K int8 in "
                    "integer mode, the esp32-260k preset's shape)")


@pytest.fixture(scope="session")
def native_attention_kernel():
    """The native attention kernel, built on this machine (~20 s the first time, then cached under
    ~/.cache/tinylm/native). Skipped only where no C++ compiler exists; any other failure fails."""
    import shutil

    from engine.models import native_attention

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler here: the native attention kernel cannot be built")
    why = native_attention.ensure(build=True)
    assert why == "", why
    return native_attention
