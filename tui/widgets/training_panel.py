"""TrainingPanel: one run's loss curves (train and val), its latest figures, progress with ETA, and
the tail of train.log.

It is a view: the screen feeds it records and log lines as they arrive (`add_records`,
`add_log_lines`) and says when the run's status or step budget changes; the keys that start or stop
the run live on the screen. Figures are computed from the records themselves (`elapsed_s` of the
run, not the wall clock), so the same metrics file always shows the same text.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Log, ProgressBar, Static

from engine.store.format import fmt_loss

from .loss_plot import LossPlot

TRAIN_COLOR, VAL_COLOR = "cyan", "orange"
SMOOTHING = 0.8  # EMA weight when smoothing is on
RATE_WINDOW = 8  # records used for the steps/s behind the ETA


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def steps_per_second(records: list[dict[str, Any]]) -> float | None:
    """From the newest records of the current run segment (elapsed_s restarts on resume)."""
    pts = [(r["step"], r["elapsed_s"]) for r in records[-RATE_WINDOW:]
           if r.get("elapsed_s") is not None and r.get("step") is not None]
    while len(pts) >= 2 and pts[-1][1] <= pts[0][1]:
        pts = pts[1:]  # a resume in the window: keep the segment after it
    if len(pts) < 2 or pts[-1][1] <= pts[0][1]:
        return None
    return (pts[-1][0] - pts[0][0]) / (pts[-1][1] - pts[0][1])


class TrainingPanel(Vertical):
    DEFAULT_CSS = """
    TrainingPanel { height: 1fr; }
    TrainingPanel #train-stats { height: 2; padding: 0 1; }
    TrainingPanel #train-progress-row { height: 1; padding: 0 1; }
    TrainingPanel #train-progress-row.-hidden { display: none; }
    TrainingPanel #train-progress { width: auto; }
    TrainingPanel #train-eta { width: 1fr; padding-left: 2; }
    TrainingPanel #train-log { height: 30%; min-height: 4; max-height: 10;
                               border-top: solid $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.records: list[dict[str, Any]] = []
        self.best: tuple[float, int] | None = None  # (val loss, step)
        self.max_steps: int | None = None
        self.max_minutes = 0.0  # a time budget ends the run first when it comes first
        self.status = "new"
        self.smoothing = 0.0

    def compose(self) -> ComposeResult:
        yield LossPlot("loss", id="loss-plot")
        yield Static("no metrics yet", id="train-stats")
        with Horizontal(id="train-progress-row", classes="-hidden"):
            yield ProgressBar(total=1, show_eta=False, id="train-progress")
            yield Static("", id="train-eta")
        yield Log(max_lines=2000, id="train-log")

    def on_mount(self) -> None:
        self.query_one(Log).border_title = "train.log"
        self.plot.request_redraw()  # the empty frame says "no points yet"

    @property
    def plot(self) -> LossPlot:
        return self.query_one(LossPlot)

    # ---- inputs from the screen ----------------------------------------------------------------------

    def reset_curves(self) -> None:
        self.records.clear()
        self.best = None
        self.plot.clear_series()
        self._show()

    def add_records(self, records: list[dict[str, Any]]) -> None:
        train = [(r["step"], r["train_loss"]) for r in records
                 if r.get("step") is not None and r.get("train_loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in records
               if r.get("step") is not None and r.get("val_loss") is not None]
        if train:
            self.plot.add_points("train", [s for s, _ in train], [v for _, v in train], TRAIN_COLOR)
        if val:
            self.plot.add_points("val", [s for s, _ in val], [v for _, v in val], VAL_COLOR,
                                 smooth=False)
            for step, v in val:
                if self.best is None or v < self.best[0]:
                    self.best = (v, step)
        self.records.extend(records)
        self._show()

    def add_log_lines(self, lines: list[str], reset: bool = False) -> None:
        log = self.query_one(Log)
        if reset:
            log.clear()
        if lines:
            log.write_lines(lines)

    def set_status(self, status: str) -> None:
        self.status = status
        self._show()

    def set_limits(self, max_steps: int | None, max_minutes: float = 0.0) -> None:
        self.max_steps, self.max_minutes = max_steps, max_minutes
        self._show()

    def toggle_smoothing(self) -> bool:
        """Train curve raw <-> EMA-smoothed (val stays raw); True when smoothing is now on."""
        self.smoothing = 0.0 if self.smoothing else SMOOTHING
        self.plot.set_smoothing(self.smoothing)
        self.plot.title = f"loss (train smoothed, EMA {SMOOTHING})" if self.smoothing else "loss"
        self._show()
        return bool(self.smoothing)

    # ---- text ----------------------------------------------------------------------------------------

    def _show(self) -> None:
        stats = self.query_one("#train-stats", Static)
        row = self.query_one("#train-progress-row")
        if not self.records:
            stats.update(f"{self.status}: no metrics yet" if self.status != "new" else
                         "no metrics yet: r starts a run")
            row.set_class(True, "-hidden")
            return
        last = self.records[-1]
        step = last.get("step") or 0
        lr, tps = last.get("lr"), last.get("tok_per_s")
        val_now = next((r["val_loss"] for r in reversed(self.records)
                        if r.get("val_loss") is not None), None)
        limit = f" of {self.max_steps:,}" if self.max_steps else ""
        if self.max_minutes:  # the run ends at whichever comes first
            limit += f" or {self.max_minutes:g} min"
        parts = [f"{self.status} · step {step:,}{limit}",
                 f"train {fmt_loss(last.get('train_loss'))}", f"val {fmt_loss(val_now)}"]
        if self.best is not None:
            parts.append(f"best {fmt_loss(self.best[0])} @ {self.best[1]:,}")
        parts.append(f"lr {lr:.2e}" if lr is not None else "lr -")
        parts.append(f"{tps:,.0f} tok/s" if tps else "- tok/s")
        stats.update(" · ".join(parts), layout=False)  # fixed height: no relayout per record
        known = bool(self.max_steps) and self.max_steps >= step
        row.set_class(not known, "-hidden")
        if known:
            assert self.max_steps
            # with a time budget the bar follows whichever of steps and clock is further along
            progress = max(step, self._time_fraction() * self.max_steps)
            self.query_one(ProgressBar).update(total=self.max_steps, progress=progress)
            self.query_one("#train-eta", Static).update(self._eta(step), layout=False)

    def _time_fraction(self) -> float:
        if self.max_minutes <= 0 or not self.records:
            return 0.0
        return min(1.0, float(self.records[-1].get("elapsed_s") or 0.0) / (60 * self.max_minutes))

    def _eta(self, step: int) -> str:
        assert self.max_steps
        left = self.max_steps - step
        time_left = (1.0 - self._time_fraction()) * 60 * self.max_minutes if self.max_minutes else None
        if left <= 0 or time_left == 0:
            return "done"
        if self.status != "running":
            if time_left is not None:
                return f"{fmt_duration(time_left)} of training time left"
            return f"{left:,} steps left"
        rate = steps_per_second(self.records)
        eta = left / rate if rate else None
        if time_left is not None:
            eta = time_left if eta is None else min(eta, time_left)
        return f"ETA {fmt_duration(eta)}" if eta is not None else f"{left:,} steps left"
