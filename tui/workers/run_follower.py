"""RunFollower: what changed in one experiment folder since the last look (new metrics records, new
train.log lines, meta.json, the run's live status), read incrementally.

Why a class of its own: the Training tab follows a run for as long as the screen is open, and must
neither re-read whole files per refresh (engine.store.tail reads from byte offsets) nor flood the UI
(one update in flight at a time: `run()` waits for `ack()` before reading again, so a burst of writes
while the UI is busy arrives as one bigger update, never as a growing queue). It is woken by file
events (`poke()`, from a watchdog watcher or the app) and also looks every `poll_s` seconds, which is
how a run killed with -9 (no file written) is seen to stop. No Textual import: testable on its own.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.store.experiments import CHECKPOINT_FILES, Experiment
from engine.store.metrics import METRICS_NAME
from engine.store.tail import MetricsTail, TextTail

LOG_NAME = "train.log"


@dataclass
class RunUpdate:
    """Everything new since the previous update; `*_reset` says the file was replaced (start over)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    records_reset: bool = False
    log_lines: list[str] = field(default_factory=list)
    log_reset: bool = False
    meta: dict[str, Any] | None = None  # meta.json, when it changed
    status: str | None = None  # live status (meta corrected by the lock's pid), when it changed
    has_checkpoint: bool | None = None  # ckpt.pt or best.pt exists, when that changed

    @property
    def empty(self) -> bool:
        return not (self.records or self.records_reset or self.log_lines or self.log_reset
                    or self.meta is not None or self.status is not None
                    or self.has_checkpoint is not None)


class RunFollower:
    """`follower.run(on_update, cancelled)` on a worker thread; `poke()` / `ack()` / `stop()` from
    any thread. `read()` alone does one look (what `run` does each time it wakes)."""

    def __init__(self, folder: Path, poll_s: float = 1.0, min_interval_s: float = 0.25) -> None:
        self.folder = Path(folder)
        self.poll_s = poll_s
        self.min_interval_s = min_interval_s
        self._metrics = MetricsTail(self.folder / METRICS_NAME)
        self._log = TextTail(self.folder / LOG_NAME)
        self._meta_stamp: tuple[int, int, int] | None = None
        self._meta: dict[str, Any] = {}
        self._status: str | None = None
        self._has_checkpoint: bool | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._acked = threading.Event()
        self._stop = threading.Event()

    # ---- one look ------------------------------------------------------------------------------------

    def read(self) -> RunUpdate:
        with self._lock:
            upd = RunUpdate()
            upd.records, upd.records_reset = self._metrics.read()
            upd.log_lines, upd.log_reset = self._log.read()
            meta = self._read_meta()
            if meta is not None:
                self._meta = upd.meta = meta
            status = Experiment(self.folder, self._meta).live_status() if self._meta else None
            if status != self._status:
                self._status = upd.status = status
            ckpt = any(os.path.exists(self.folder / n) for n in CHECKPOINT_FILES)
            if ckpt != self._has_checkpoint:
                self._has_checkpoint = upd.has_checkpoint = ckpt
            return upd

    def _read_meta(self) -> dict[str, Any] | None:
        """meta.json when its stamp changed and it parses; None otherwise (an unreadable meta keeps
        the last good one: the engine writes it atomically, so that is a damaged folder, not a race)."""
        path = self.folder / "meta.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._meta_stamp:
            return None
        self._meta_stamp = stamp
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    # ---- following -----------------------------------------------------------------------------------

    def poke(self) -> None:
        """Something in the folder changed: look now (cheap; many pokes make one look)."""
        self._wake.set()

    def ack(self) -> None:
        """The UI applied the last update: the next one may be read."""
        self._acked.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._acked.set()

    def run(self, on_update: Callable[[RunUpdate], None], cancelled: Callable[[], bool]) -> None:
        def done() -> bool:
            return self._stop.is_set() or cancelled()

        while not done():
            self._wake.clear()  # before reading: a poke during the read wakes the next wait
            upd = self.read()
            if not upd.empty:
                self._acked.clear()
                on_update(upd)
                while not self._acked.wait(0.2):
                    if done():
                        return
            self._stop.wait(self.min_interval_s)
            self._wake.wait(self.poll_s)
