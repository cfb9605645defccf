"""Shared fixtures: a fresh workspace per test, and a runner for the real `tinylm` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
