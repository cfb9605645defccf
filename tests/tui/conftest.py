"""Fixtures for the app's tests: a workspace with the shipped corpus and the real store, in UTC (so
dates in tables and snapshots read the same everywhere)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.store.experiments import Store
from tests.conftest import CORPUS


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace whose default corpus is the shipped slice, with no project.toml (defaults)."""
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / CORPUS.name).symlink_to(CORPUS)
    return tmp_path


@pytest.fixture
def store(ws: Path) -> Store:
    return Store(ws / "experiments")


