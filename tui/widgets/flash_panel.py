"""FlashPanel: which blob a flash would write, whether it fits the board (the budget's numbers),
and while flashing a progress bar with bytes, KB/s and ETA.

Why the budget sits here: a blob that does not fit is refused before a byte is written, and the
refusal is only useful with the numbers and the advice beside it (engine/config/budget.py).
`run()` starts the flash in a thread worker (export if needed, esptool or the protocol upload,
the INFO check: tui/workers/device_jobs.py); its stages and progress come back as messages, and
the end is posted to the parent as `Finished`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ProgressBar, Static
from textual.worker import Worker, WorkerState

from engine.config.budget import fmt_bytes
from engine.errors import TinyLMError, UserError
from engine.store.experiments import Store

from ..workers.board_link import DeviceSession
from ..workers.device_jobs import Target, flash_target
from .device_messages import FlashFinished, FlashProgress, FlashStage


class FlashPanel(Vertical):
    DEFAULT_CSS = """
    FlashPanel { height: auto; padding: 0 1; }
    FlashPanel > ProgressBar { width: 100%; }
    FlashPanel > ProgressBar Bar { width: 1fr; }
    FlashPanel > #flash-rate { height: 1; }
    FlashPanel > #flash-result { height: auto; }
    """

    @dataclass
    class Finished(Message):
        """A flash ended: written and checked (`ok`), failed, or refused before writing."""
        ok: bool
        text: str
        refused: bool = False
        session: Any = None  # the DeviceSession it wrote to

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stop = threading.Event()
        self.what = ""
        self.t0 = 0.0
        self.done0 = 0
        self.done = 0
        self.total = 0
        self.running = False

    def compose(self) -> ComposeResult:
        yield Static("", id="flash-blob")
        yield Static("", id="flash-budget")
        yield ProgressBar(total=100, show_eta=False, id="flash-bar")
        yield Static("", id="flash-rate")
        yield Static("", id="flash-result")

    # ---- before ----------------------------------------------------------------------------------

    def show_target(self, quant: str, size: int | None, sha: str, verdict: str, fits: bool,
                    advice: list[str]) -> None:
        blob = (f"{quant} blob {fmt_bytes(size)} · sha {sha[:12]}…" if size is not None else
                f"{quant} blob not exported yet (f exports it first)")
        self.query_one("#flash-blob", Static).update(blob)
        text = Text(verdict, style="green" if fits else "bold red")
        if not fits and advice:
            text.append("\ntry: " + "; ".join(advice[:3]), style="yellow")
        self.query_one("#flash-budget", Static).update(text)

    def show_nothing(self, text: str) -> None:
        """No experiment to flash yet."""
        self.query_one("#flash-blob", Static).update(Text(text, style="dim"))
        self.query_one("#flash-budget", Static).update("")

    def clear_result(self) -> None:
        if not self.running:
            self._result(Text(""))

    # ---- the flash (a worker) --------------------------------------------------------------------

    def run(self, session: DeviceSession, store: Store, target: Target, quant: str) -> None:
        self._stop.clear()
        self.begin(f"flashing the {quant} blob of {target.name}…")
        self._flash(session, store, target, quant)

    def on_unmount(self) -> None:
        self._stop.set()  # a worker thread outlives its widget unless told to end

    def stop(self) -> None:
        """Esc: esptool stops at its next block (the region is then incomplete: flash again)."""
        if self.running:
            self._stop.set()
            self.begin("stopping the flash…")

    @work(thread=True, exclusive=True, exit_on_error=False, group="dev-flash")
    def _flash(self, session: DeviceSession, store: Store, target: Target, quant: str) -> None:
        post = self.post_message
        try:
            outcome = flash_target(
                session, store, target, quant,
                on_stage=lambda text: post(FlashStage(text)),
                on_progress=lambda d, t, w: post(FlashProgress(d, t, w)),
                should_stop=self._stop.is_set)
        except UserError as e:
            post(FlashFinished(False, str(e), refused=True))
        except (TinyLMError, OSError) as e:
            post(FlashFinished(False, str(e)))
        else:
            post(FlashFinished(outcome.ok, outcome.text))

    @on(FlashStage)
    def _stage(self, message: FlashStage) -> None:
        message.stop()
        self.begin(message.text)

    @on(FlashProgress)
    def _progress(self, message: FlashProgress) -> None:
        message.stop()
        self.progress(message.done, message.total, message.what)

    @on(FlashFinished)
    def _finished(self, message: FlashFinished) -> None:
        message.stop()
        if message.refused:
            self.refuse(message.text)
        else:
            self.finish(message.text, message.ok)
        self.post_message(self.Finished(message.ok, message.text, message.refused))

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:  # not a TinyLMError: a bug; the parent notifies
            self.finish(f"flash failed: {event.worker.error}", False)
            self.post_message(self.Finished(False, str(event.worker.error)))

    # ---- while -----------------------------------------------------------------------------------

    def begin(self, text: str) -> None:
        self.running = True
        self.what, self.done, self.total = "", 0, 0
        self.query_one(ProgressBar).update(total=100, progress=0)
        self.query_one("#flash-rate", Static).update("")
        self._result(Text(text, style="cyan"))

    def progress(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if what != self.what:  # a new region gets its own clock
            self.what, self.t0, self.done0 = what, now, done
        self.done, self.total = done, total
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)
        elapsed = now - self.t0
        rate = (done - self.done0) / 1024 / elapsed if elapsed > 0.05 else 0.0
        speed = f" · {rate:.1f} KB/s" if rate > 0 else ""  # none yet: one report has no rate
        eta = f" · ETA {(total - done) / 1024 / rate:.0f} s" if rate > 0 and done < total else ""
        self.query_one("#flash-rate", Static).update(
            f"{what}: {done / 1024:.1f} / {total / 1024:.1f} KB{speed}{eta}", layout=False)

    # ---- after -----------------------------------------------------------------------------------

    def finish(self, text: str, ok: bool) -> None:
        self.running = False
        self._result(Text(text, style="green" if ok else "bold red"))

    def refuse(self, text: str) -> None:
        self.running = False
        self._result(Text("refused: " + text, style="bold red"))

    def _result(self, text: Text) -> None:
        self.query_one("#flash-result", Static).update(text)

    @property
    def percent(self) -> float:
        bar = self.query_one(ProgressBar)
        return 100.0 * (bar.progress / bar.total) if bar.total else 0.0
