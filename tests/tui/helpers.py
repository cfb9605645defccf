"""Helpers for the app's tests: experiments made by the real store with fixed times, and waiting on
the app instead of sleeping."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable

from engine.atomic import atomic_write_json
from engine.config.presets import preset_config
from engine.config.schema import apply_overrides
from engine.store.experiments import Store
from tests.conftest import REPO

FIXED_NOW = 1_780_000_000.0  # 2026-05-28 20:26 UTC: "updated" cells show dates, never "today"
TINY = ["model.dim=16", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1",
        "model.seq_len=32", "device.context_len=0",
        "train.batch_size=4", "train.max_steps=200", "train.eval_every=50",
        "train.eval_batches=2", "train.ckpt_every=50", "train.log_every=5", "train.threads=1"]


def make(store: Store, name: str, *, preset: str = "esp32-260k", overrides: list[str] = (),
         when: float = FIXED_NOW - 86400, **meta: Any) -> None:
    """An experiment with meta fields set and a fixed `updated` time (written directly: the store's
    update_meta would stamp the wall clock)."""
    cfg = apply_overrides(preset_config(preset), list(overrides)) if overrides else \
        preset_config(preset)
    exp = store.create(name, cfg, preset=preset)
    data = dict(exp.meta) | meta | {"updated": when, "created": when}
    atomic_write_json(exp.folder / "meta.json", data)


def copy_demo(store: Store, name: str = "demo") -> None:
    """The shipped demo experiment (a trained checkpoint and its tokenizer) under another name."""
    store.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "experiments" / "demo-260k", store.root / name)
    meta = store.load(name).meta | {"name": name, "updated": FIXED_NOW - 3600}
    atomic_write_json(store.root / name / "meta.json", meta)


async def wait_for(pilot: Any, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Let the app run until `check()` is truthy (a condition on the app, not a sleep)."""
    from textual.worker import WorkerCancelled

    deadline = time.monotonic() + timeout
    while True:
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:  # an exclusive worker replaced by a newer one: normal (seen in CI
            pass                 # when a file event restarted a load); the check below decides
        await pilot.pause()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await pilot.pause(0.05)


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}
