"""Diff screen: two or more experiments side by side — config keys that differ (all on a toggle),
metric summaries with deltas against a pinned baseline, and the loss curves overlaid on one plot.

Why it is built this way: all figures come from engine.store.diff (the same report `tinylm diff`
prints), read in a thread worker. The screen keeps each experiment's last `Side` (an immutable
snapshot), so the keys that only change the view — baseline, all keys, val/train, smoothing —
rebuild the report in memory without touching the disk, and a followed run (`on_files_changed`)
re-reads only its own experiment, and of its metrics.jsonl only what was appended.
"""

from __future__ import annotations

import threading

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from engine.errors import UserError
from engine.store.diff import DiffReport, Side, compare, load_side, read_new_records
from engine.store.experiments import Store
from engine.store.metrics import METRICS_NAME
from engine.store.tail import MetricsTail

from ..widgets.config_diff import ConfigDiff
from ..widgets.key_bar import KeyBar
from ..widgets.loss_plot import LossPlot
from ..widgets.metrics_compare import MetricsCompare

# one colour per experiment, the same in the plot and the table headers; no pure green or red,
# which the metric table keeps for better / worse
PALETTE: list[tuple[int, int, int]] = [
    (0, 175, 255), (255, 160, 0), (190, 120, 255), (0, 210, 170), (255, 100, 170), (230, 220, 80),
]
SMOOTHING = 0.8
ZOOM_FROM = 0.25  # zoomed, the plot starts at this fraction of the longest run's last step
# files whose change alters what the diff shows ("" is the folder itself: created or removed)
WATCHED = {METRICS_NAME, "meta.json", "config.toml", ""}


def rich_color(rgb: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*rgb)


class DiffScreen(Screen):
    CSS_PATH = "diff.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="diff.back"),
        Binding("a", "toggle_all", "All keys", id="diff.all_keys",
                tooltip="Show every config key, or only those that differ"),
        Binding("b", "next_baseline", "Baseline", id="diff.baseline",
                tooltip="Pin the next experiment as the baseline the deltas are against"),
        Binding("v", "toggle_curve", "Val/train", id="diff.curve",
                tooltip="Plot validation loss or training loss"),
        Binding("s", "toggle_smoothing", "Smooth", id="diff.smooth",
                tooltip="Exponential smoothing of the plotted curves"),
        Binding("z", "toggle_zoom", "Zoom", id="diff.zoom",
                tooltip="Plot only the last 3/4 of the steps, where runs differ (the first drop "
                        "of the loss squashes the rest of the curves)"),
        Binding("r", "reload", "Reload", id="diff.reload", tooltip="Read every experiment again"),
    ] + [Binding(str(i), f"pick_baseline({i - 1})", f"Baseline {i}", show=False,
                 id=f"diff.baseline_{i}") for i in range(1, 10)]

    def __init__(self, store: Store, names: list[str]) -> None:
        super().__init__()
        self.store = store
        self.names = list(dict.fromkeys(names))  # a name marked twice is compared once
        self.baseline = self.names[0] if self.names else ""
        self.all_keys = False
        self.curve: str | None = None  # "val" | "train"; None until the data says which reads best
        self.smooth = False
        self.zoom = False
        self.report: DiffReport | None = None
        self.sub_title = "diff: " + " vs ".join(self.names)
        # owned by the loader worker (one at a time under _lock, held while it reads files); the UI
        # thread only sees snapshots, and marks names dirty under _dirty_lock, which is never held
        # across I/O, so a key press never waits on a read
        self._lock = threading.Lock()
        self._dirty_lock = threading.Lock()
        self._dirty: set[str] = set(self.names)
        self._tails: dict[str, MetricsTail] = {}
        self._records: dict[str, list[dict]] = {}
        self._sides: dict[str, Side] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="diff-status")
        yield MetricsCompare(id="diff-metrics")
        with Horizontal(id="diff-body"):
            yield ConfigDiff(id="diff-config")
            yield LossPlot("loss", id="diff-plot")
        yield KeyBar()

    def on_mount(self) -> None:
        if not self.names:
            self._status("nothing to compare: mark experiments with space on the list, then d")
            return
        self._status(f"reading {len(self.names)} experiments…")
        shared = getattr(self.app, "experiments_changed", None)
        if shared is not None:  # the app's watcher: a followed run grows its curve here too
            shared.subscribe(self, self._app_saw_changes)
        self.load()

    # ---- reading (worker thread) -----------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="diff-load")
    def load(self) -> None:
        """Re-read the experiments marked dirty; post the snapshots of all when done."""
        worker = get_current_worker()
        with self._lock:
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            try:
                for name in [n for n in self.names if n in dirty]:
                    self._read_one(name)
                    dirty.discard(name)
            except UserError as e:
                with self._dirty_lock:
                    self._dirty |= dirty  # try those again on the next change or `r`
                self.app.call_from_thread(self._show_error, str(e))
                return
            sides = [self._sides[n] for n in self.names]
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_sides, sides)

    def _read_one(self, name: str) -> None:
        tail = self._tails.get(name)
        if tail is None:
            tail = self._tails[name] = MetricsTail(self.store.folder(name) / METRICS_NAME)
        new, reset = read_new_records(tail)
        held = [] if reset else self._records.get(name, [])
        # kept before load_side can fail, so records the tail has handed over are never lost
        self._records[name] = held + new
        self._sides[name] = load_side(self.store, name, self._records[name])

    def _app_saw_changes(self, changes: dict[str, set[str]]) -> None:
        for name, files in changes.items():
            self.on_files_changed(name, files or set(WATCHED))

    def on_files_changed(self, name: str, files: set[str]) -> None:
        """Called by the app when an experiment folder changed on disk: re-read that one."""
        if name not in self.names or not (set(files) & WATCHED):
            return
        with self._dirty_lock:
            self._dirty.add(name)
        self.load()

    # ---- showing (UI thread) ---------------------------------------------------------------------

    def _show_sides(self, sides: list[Side]) -> None:
        if not self.is_attached:
            return  # the screen was closed while the worker read
        self.report = compare(sides, baseline=self.baseline, all_keys=True)
        if self.curve is None:
            self.curve = "val" if any(len(c.val) > 1 for c in self.report.curves) else "train"
        self._render_report()

    def _show_error(self, message: str) -> None:
        if not self.is_attached:
            return
        self._status(Text(message, style="bold red"))
        self.notify(message, title="diff", severity="error", timeout=8)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self._show_error(f"reading the experiments failed: {event.worker.error}")

    def _render_report(self) -> None:
        report = self.report
        if report is None:
            return
        colors = [rich_color(PALETTE[i % len(PALETTE)]) for i in range(len(report.names))]
        self.query_one(MetricsCompare).show(report, colors=colors)
        self.query_one(ConfigDiff).show(report, all_keys=self.all_keys, colors=colors)
        self._plot(report)
        differing = sum(r.differs for r in report.config)
        keys = (f"all {len(report.config)} config keys ({differing} differ)" if self.all_keys
                else f"{differing} of {len(report.config)} config keys differ")
        status = Text.assemble(("baseline ", "dim"), (report.baseline_name, "bold"),
                               ("  ·  ", "dim"), keys,
                               ("  ·  ", "dim"), f"{self.curve} loss",
                               " smoothed" if self.smooth else "",
                               f" from step {self._zoom_start(report):g}" if self.zoom else "")
        if not report.sides[report.baseline].summary:
            status.append("  ·  the baseline has no metrics yet: no deltas", style="yellow")
        if len(report.names) < 2:
            status.append("  ·  mark a second experiment to compare", style="yellow")
        self._status(status)

    def _plot(self, report: DiffReport) -> None:
        plot = self.query_one(LossPlot)
        plot.title = f"{self.curve} loss"
        plot.clear_series()
        start = self._zoom_start(report) if self.zoom else None
        for i, (name, c) in enumerate(zip(report.names, report.curves, strict=True)):
            val = self.curve == "val"
            steps, values = (c.val_steps, c.val) if val else (c.train_steps, c.train)
            if start is not None:
                kept = [(s, v) for s, v in zip(steps, values, strict=True) if s >= start]
                steps, values = [s for s, _ in kept], [v for _, v in kept]
            label = f"{name} (base)" if i == report.baseline else name
            plot.set_series(label, steps, values, color=PALETTE[i % len(PALETTE)])

    @staticmethod
    def _zoom_start(report: DiffReport) -> float:
        last = max((c.train_steps[-1] for c in report.curves if c.train_steps), default=0)
        last = max([last] + [c.val_steps[-1] for c in report.curves if c.val_steps])
        return round(last * ZOOM_FROM)

    def _status(self, text: str | Text) -> None:
        self.query_one("#diff-status", Static).update(text)

    # ---- keys ------------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """A view change: same snapshots, new report (no disk)."""
        if self.report is not None:
            self.report = compare(self.report.sides, baseline=self.baseline, all_keys=True)
            self._render_report()

    def action_toggle_all(self) -> None:
        self.all_keys = not self.all_keys
        self._render_report()

    def action_next_baseline(self) -> None:
        if len(self.names) > 1:
            self.baseline = self.names[(self.names.index(self.baseline) + 1) % len(self.names)]
            self._rebuild()

    def action_pick_baseline(self, index: int) -> None:
        if 0 <= index < len(self.names):
            self.baseline = self.names[index]
            self._rebuild()

    def action_toggle_curve(self) -> None:
        self.curve = "train" if self.curve == "val" else "val"
        self._render_report()

    def action_toggle_smoothing(self) -> None:
        self.smooth = not self.smooth
        self.query_one(LossPlot).set_smoothing(SMOOTHING if self.smooth else 0.0)
        self._render_report()

    def action_toggle_zoom(self) -> None:
        self.zoom = not self.zoom
        self._render_report()

    def action_reload(self) -> None:
        with self._dirty_lock:
            self._dirty = set(self.names)
        self.load()
