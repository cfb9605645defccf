"""Experiment screen: one experiment's Overview, Training, Samples and Quantize tabs.

The screen owns the keys and the workers; the four panels (tui/widgets/) are views that post what
the user asked for. Everything slow runs in thread workers that post messages back: reading and
hashing the folder, following the run (tui/workers/run_follower.py, woken by watchdog or by the
app's `on_files_changed`), starting / stopping the train subprocess, sampling from the checkpoint,
quantizing. torch is imported only inside those workers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Input, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from engine.config.workspace import Workspace, load_workspace
from engine.errors import ConfigError
from engine.infer.params import SamplingParams
from engine.store.experiments import Store
from engine.store.metrics import METRICS_NAME

from ..palette import ScreenKeysProvider
from ..widgets.device_panel import DevicePanel
from ..widgets.key_bar import KeyBar
from ..widgets.quantize_panel import QuantizePanel
from ..widgets.run_overview import OverviewData, RunOverview
from ..widgets.sample_panel import SamplePanel
from ..widgets.training_panel import TrainingPanel
from ..workers.file_hashes import HASHES, list_files
from ..workers.fs_watch import ExperimentsWatcher
from ..workers.run_follower import LOG_NAME, RunFollower, RunUpdate

TABS = ("overview", "training", "samples", "quantize")
TAB_KEYS = Binding.Group("Tabs", compact=True)
# action -> the tabs where its key is live (elsewhere it is hidden from the footer and the palette)
# run / resume / stop also on the Overview, the tab an experiment opens on (run and resume then
# show the Training tab, where the curve will grow)
TAB_OF = {"refresh": ("overview",), "run": ("overview", "training"),
          "resume": ("overview", "training"), "stop": ("overview", "training"),
          "smoothing": ("training",), "generate": ("samples",),
          "focus_prompt": ("samples",), "quantize": ("quantize",), "toggle_method": ("quantize",),
          "focus_qat": ("quantize",),
          "stop_job": ("samples", "quantize")}
OVERVIEW_MIN_INTERVAL_S = 2.0  # a live run changes metrics.jsonl's size several times a second
LIVE = ("running", "queued")


class ExperimentScreen(Screen):
    CSS_PATH = "experiment.tcss"
    COMMANDS = {ScreenKeysProvider}
    BINDINGS = [
        Binding("escape", "back", "Back", id="experiment.back",
                tooltip="Stop a generation or quantization; leave a text box; else back"),
        Binding("1", "tab('overview')", "Overview", group=TAB_KEYS, id="experiment.tab.overview"),
        Binding("2", "tab('training')", "Training", group=TAB_KEYS, id="experiment.tab.training"),
        Binding("3", "tab('samples')", "Samples", group=TAB_KEYS, id="experiment.tab.samples"),
        Binding("4", "tab('quantize')", "Quantize", group=TAB_KEYS, id="experiment.tab.quantize"),
        Binding("5", "tab('device')", "Device", group=TAB_KEYS, id="experiment.tab.device"),
        Binding("u", "refresh", "Refresh", id="experiment.refresh",
                tooltip="Re-read the folder (hashes only for files that changed)"),
        Binding("r", "run", "Run", id="experiment.run", tooltip="Start training from scratch"),
        Binding("R", "resume", "Resume", id="experiment.resume",
                tooltip="Continue training from the last checkpoint"),
        Binding("s", "stop", "Stop run", id="experiment.stop",
                tooltip="SIGTERM the run: it checkpoints and exits"),
        Binding("m", "smoothing", "Smoothing", id="experiment.smoothing",
                tooltip="Train curve raw or EMA-smoothed"),
        Binding("g", "generate", "Generate", id="experiment.generate",
                tooltip="Sample from the checkpoint with the prompt and knobs"),
        Binding("p", "focus_prompt", "Prompt", id="experiment.prompt"),
        Binding("g", "quantize", "Quantize", id="experiment.quantize",
                tooltip="Quantize with the chosen method and measure the cost"),
        Binding("t", "toggle_method", "int8/ternary", id="experiment.method"),
        Binding("a", "focus_qat", "QAT steps", id="experiment.qat_steps",
                tooltip="Type how many QAT steps to run first (0 = none)"),
        Binding("x", "stop_job", "Stop", id="experiment.stop_job",
                tooltip="Stop the generation or quantization"),
    ]

    # ---- messages from workers (and from the watcher thread) -------------------------------------

    @dataclass
    class RunUpdated(Message):
        update: RunUpdate

    @dataclass
    class FilesChanged(Message):
        files: set[str]

    @dataclass
    class OverviewLoaded(Message):
        data: OverviewData
        max_steps: int | None
        max_minutes: float = 0.0  # train.max_minutes: the run's time budget (0 = none)

    @dataclass
    class FileHashed(Message):
        name: str
        sha256: str

    @dataclass
    class SampleText(Message):
        text: str

    @dataclass
    class SampleDone(Message):
        note: str

    @dataclass
    class QuantProgress(Message):
        done: int
        total: int
        what: str

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ExperimentScreen.QuantProgress)

    @dataclass
    class QuantDone(Message):
        report: Any  # engine.blob.quant_report.QuantReport

    @dataclass
    class Notice(Message):
        text: str
        severity: str = "information"

    # ---- lifecycle -------------------------------------------------------------------------------

    def __init__(self, store: Store, name: str) -> None:
        super().__init__()
        self.store = store
        self.exp_name = name
        self.folder: Path = store.root / name
        self.follower = RunFollower(self.folder)
        self.watcher: ExperimentsWatcher | None = None
        self.status = "new"
        self.has_checkpoint = False
        self.generating = False
        self.quantizing = False
        self._job_stop = threading.Event()  # set by Esc / x: the sample or quantize worker ends
        self._sampler: Any = None  # workers.sampler.TorchSampler, made on first use
        self._overview_dirty = False
        self._overview_timer: Any = None

    @property
    def workspace(self) -> Workspace:
        ws = getattr(self.app, "workspace", None)
        return ws if isinstance(ws, Workspace) else load_workspace(self.store.root.parent)

    def compose(self) -> ComposeResult:
        yield Header()
        initial = "training" if self.store.summarize(self.exp_name).status in LIVE else "overview"
        with TabbedContent(initial=initial, id="tabs"):
            with TabPane("Overview", id="overview"):
                yield RunOverview(id="run-overview")
            with TabPane("Training", id="training"):
                yield TrainingPanel(id="training-panel")
            with TabPane("Samples", id="samples"):
                yield SamplePanel(id="sample-panel")
            with TabPane("Quantize", id="quantize"):
                yield QuantizePanel(id="quantize-panel")
            with TabPane("Device", id="device"):
                yield Static("", id="device-host")  # the DevicePanel, mounted on first visit
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = self.exp_name
        self.sub_title = ""
        self.load_overview()
        self.follow_run()
        shared = getattr(self.app, "experiments_changed", None)
        if shared is not None:  # the app's one watcher of the experiments folder
            shared.subscribe(self, self._app_saw_changes)
        elif self.folder.is_dir():
            # standalone (tests, a tool hosting only this screen): a watcher of this folder, whose
            # batches are keyed by file name since the watched root is the experiment itself
            self.watcher = ExperimentsWatcher(
                self.folder, lambda changes: self.post_message(self.FilesChanged(set(changes)))
            ).start()

    def _app_saw_changes(self, changes: dict[str, set[str]]) -> None:
        if self.exp_name in changes:
            self.on_files_changed(changes[self.exp_name] or {""})

    def on_unmount(self) -> None:
        self.follower.stop()
        self._job_stop.set()
        if self.watcher is not None:
            self.watcher.stop()

    def on_files_changed(self, files: set[str] | Message) -> None:
        """Files of this experiment changed on disk (called by this screen's watcher, or by the app
        from its own): the follower looks now; the overview is re-read, at most every 2 s.

        The name is the one the app calls; Textual would also call it for a message class named
        `FilesChanged` that bubbles here, which then counts as "something may have changed"."""
        if not isinstance(files, (set, frozenset, list, tuple)):
            files = {""}
        self.follower.poke()
        if set(files) - {METRICS_NAME, LOG_NAME} or self.active_tab == "overview":
            self._schedule_overview()

    @on(FilesChanged)
    def _files_changed(self, event: FilesChanged) -> None:
        self.on_files_changed(event.files)

    # ---- panels ----------------------------------------------------------------------------------

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    @property
    def overview(self) -> RunOverview:
        return self.query_one(RunOverview)

    @property
    def training(self) -> TrainingPanel:
        return self.query_one(TrainingPanel)

    @property
    def samples(self) -> SamplePanel:
        return self.query_one(SamplePanel)

    @property
    def quantize_panel(self) -> QuantizePanel:
        return self.query_one(QuantizePanel)

    @on(TabbedContent.TabActivated)
    async def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if self.active_tab == "overview" and self._overview_dirty:
            self._schedule_overview()
        if self.active_tab == "device":
            panels = self.query(DevicePanel)
            if not panels:
                # mounted on first visit only: a person who never opens the tab never lists ports
                await self.query_one("#device-host").remove()
                panel = DevicePanel(self.store, self.workspace, self.exp_name, id="device-panel")
                await self.query_one("#device", TabPane).mount(panel)  # composed when this returns
            else:
                panel = panels.first()
            panel.picker.focus()  # its keys work while focus is inside it
        self.refresh_bindings()

    # ---- keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tabs = TAB_OF.get(action)
        if tabs is None:
            return True
        try:
            if self.active_tab not in tabs:
                return False
        except NoMatches:  # asked before compose: nothing is live yet
            return False
        running = self.status in LIVE
        enabled = {
            "run": not running and not self.has_checkpoint,
            "resume": not running and self.has_checkpoint,
            "stop": running,
            "generate": not self.generating,
            "quantize": not self.quantizing,
            "stop_job": (self.generating if self.active_tab == "samples" else self.quantizing),
        }.get(action, True)
        return True if enabled else None

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_back(self) -> None:
        if self.generating or self.quantizing:
            self.action_stop_job()
        elif isinstance(self.focused, Input):
            self.query_one(TabbedContent).query_one("Tabs").focus()
        else:
            self.app.pop_screen()

    def action_refresh(self) -> None:
        self.load_overview()
        self.follower.poke()

    def action_run(self) -> None:
        self.action_tab("training")
        self.training_command(resume=False)

    def action_resume(self) -> None:
        self.action_tab("training")
        self.training_command(resume=True)

    def action_stop(self) -> None:
        self.stop_run()

    def action_smoothing(self) -> None:
        on_ = self.training.toggle_smoothing()
        self.notify(f"train curve {'smoothed (EMA)' if on_ else 'raw'}", timeout=2)

    def action_generate(self) -> None:
        self.samples.submit()

    def action_focus_prompt(self) -> None:
        self.samples.focus_prompt()

    def action_quantize(self) -> None:
        self.quantize_panel.submit()

    def action_toggle_method(self) -> None:
        self.quantize_panel.toggle_method()

    def action_focus_qat(self) -> None:
        self.quantize_panel.focus_steps()

    def action_stop_job(self) -> None:
        self._job_stop.set()

    # ---- overview --------------------------------------------------------------------------------

    def _schedule_overview(self) -> None:
        if self.active_tab != "overview":
            self._overview_dirty = True
            return
        if self._overview_timer is None:
            self._overview_timer = self.set_timer(OVERVIEW_MIN_INTERVAL_S, self._overview_due)

    def _overview_due(self) -> None:
        self._overview_timer = None
        self.load_overview()

    @work(thread=True, exclusive=True, exit_on_error=False, group="overview")
    def load_overview(self) -> None:
        from engine.config import budget as budget_mod

        worker = get_current_worker()
        exp = self.store.load(self.exp_name)
        text, problem, verdict, advice, max_steps, max_minutes = "", None, None, [], None, 0.0
        try:
            text = exp.config_path.read_text(encoding="utf-8", errors="replace")
            b = budget_mod.compute(exp.config)
            verdict, advice = b.verdict(), b.advice
            max_steps, max_minutes = exp.config.train.max_steps, exp.config.train.max_minutes
        except FileNotFoundError:
            problem = f"no config.toml in {exp.folder}"
        except ConfigError as e:
            problem = str(e)
        files = list_files(exp.folder)
        data = OverviewData(exp.meta, exp.live_status(), text, problem, verdict, advice, files)
        self.post_message(self.OverviewLoaded(data, max_steps, max_minutes))
        for f in files:
            if worker.is_cancelled:
                return
            if f.name.endswith("/"):
                continue
            sha = HASHES.compute(exp.folder / f.name, f, lambda: worker.is_cancelled)
            if sha is not None:
                self.post_message(self.FileHashed(f.name, sha))

    @on(OverviewLoaded)
    def _overview_loaded(self, event: OverviewLoaded) -> None:
        self._overview_dirty = False
        self.overview.show(event.data)
        self.training.set_limits(event.max_steps, event.max_minutes)
        self.quantize_panel.show_recorded(event.data.meta.get("quant_reports") or {})
        self._set_status(event.data.status)

    @on(FileHashed)
    def _file_hashed(self, event: FileHashed) -> None:
        self.overview.set_hash(event.name, event.sha256)

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.training.set_status(status)
        self.sub_title = status
        self.refresh_bindings()

    # ---- following the run -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow")
    def follow_run(self) -> None:
        worker = get_current_worker()
        self.follower.run(lambda u: self.post_message(self.RunUpdated(u)),
                          lambda: worker.is_cancelled)

    @on(RunUpdated)
    def _run_updated(self, event: RunUpdated) -> None:
        u = event.update
        try:
            if u.records_reset:
                self.training.reset_curves()
            if u.records:
                self.training.add_records(u.records)
            if u.log_lines or u.log_reset:
                self.training.add_log_lines(u.log_lines, u.log_reset)
            if u.has_checkpoint is not None:
                self.has_checkpoint = u.has_checkpoint
                self.refresh_bindings()
            if u.status is not None:
                self._set_status(u.status)
            if u.meta is not None:
                self._schedule_overview()
        finally:
            self.follower.ack()

    # ---- training subprocess ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def training_command(self, resume: bool) -> None:
        from engine.train.runner import start_training, wait_until_running

        exp = self.store.load(self.exp_name)
        proc = start_training(exp, self.workspace, resume=resume)
        state = wait_until_running(exp, proc)
        self.follower.poke()
        if state == "exited" and proc.returncode not in (0, None):
            self.post_message(self.Notice(
                f"training of '{exp.name}' failed to start (exit {proc.returncode}); the log "
                "below says why", "error"))
        else:
            self.post_message(self.Notice(f"{'resumed' if resume else 'training'} '{exp.name}' "
                                          f"(pid {proc.pid})"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def stop_run(self) -> None:
        from engine.train.runner import stop_training

        exp = self.store.load(self.exp_name)
        ended = stop_training(exp, timeout=60)
        self.follower.poke()
        self.post_message(self.Notice(f"'{exp.name}' stopped (checkpoint written)" if ended else
                                      f"'{exp.name}' did not exit within 60 s", "information"
                                      if ended else "warning"))

    @on(Notice)
    def _notice(self, event: Notice) -> None:
        self.notify(event.text, severity=event.severity)  # type: ignore[arg-type]

    # ---- samples ---------------------------------------------------------------------------------

    @on(SamplePanel.GenerateRequested)
    def _generate_requested(self, event: SamplePanel.GenerateRequested) -> None:
        if self.generating:
            return
        self.generating = True
        self._job_stop.clear()
        self.samples.begin()
        self.refresh_bindings()
        self.sample(event.prompt, event.params)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sample")
    def sample(self, prompt: str, params: SamplingParams) -> None:
        from ..workers.sampler import TorchSampler

        worker = get_current_worker()
        if self._sampler is None:
            self._sampler = TorchSampler(self.store.load(self.exp_name))
        stats = self._sampler.stream(prompt, params, lambda t: self.post_message(self.SampleText(t)),
                                     lambda: self._job_stop.is_set() or worker.is_cancelled)
        self.post_message(self.SampleDone(
            f"{'stopped after ' if stats.stopped else ''}{stats.tokens} tokens, "
            f"{stats.tok_per_s:,.0f} tok/s (seed {params.seed})"))

    @on(SampleText)
    def _sample_text(self, event: SampleText) -> None:
        self.samples.append(event.text)

    @on(SampleDone)
    def _sample_done(self, event: SampleDone) -> None:
        self.generating = False
        self.samples.end(event.note)
        self.refresh_bindings()

    # ---- quantize --------------------------------------------------------------------------------

    @on(QuantizePanel.QuantizeRequested)
    def _quantize_requested(self, event: QuantizePanel.QuantizeRequested) -> None:
        if self.quantizing:
            return
        self.quantizing = True
        self._job_stop.clear()
        self.quantize_panel.set_running(True)
        self.refresh_bindings()
        self.quantize(event.method, event.qat_steps)

    @work(thread=True, exclusive=True, exit_on_error=False, group="quantize")
    def quantize(self, method: str, qat_steps: int) -> None:
        from engine.blob.quant_report import quantize_and_report

        from ..workers.sampler import light_torch

        worker = get_current_worker()
        light_torch()
        rep = quantize_and_report(
            self.store.load(self.exp_name), self.workspace, method, qat_steps=qat_steps,
            on_progress=lambda d, t, w: self.post_message(self.QuantProgress(d, t, w)),
            should_stop=lambda: self._job_stop.is_set() or worker.is_cancelled)
        self.post_message(self.QuantDone(rep))

    @on(QuantProgress)
    def _quant_progress(self, event: QuantProgress) -> None:
        if self.quantizing:
            self.quantize_panel.progress(event.done, event.total, event.what)

    @on(QuantDone)
    def _quant_done(self, event: QuantDone) -> None:
        rep = event.report
        self.quantizing = False
        self.quantize_panel.set_running(False)
        self.quantize_panel.show_summary(rep.method, rep.summary())
        self.quantize_panel.show_tensors(rep.method, rep.tensors)
        self.refresh_bindings()
        self.notify(f"{rep.method}: val loss {100 * rep.val_loss_cost:+.2f}% vs float, "
                    f"greedy agreement {100 * rep.greedy_agreement:.1f}%")

    # ---- worker failures -------------------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state not in (WorkerState.ERROR, WorkerState.CANCELLED):
            return
        from engine.data.tokenizer import Stopped  # numpy behind it: not at app start

        group = event.worker.group
        error = event.worker.error
        stopped = isinstance(error, Stopped)
        if group == "sample" and self.generating:
            self.generating = False
            self.samples.end(f"failed: {error}" if error and not stopped else "stopped")
        elif group == "quantize" and self.quantizing:
            self.quantizing = False
            self.quantize_panel.set_running(False)
        self.refresh_bindings()
        if event.state == WorkerState.ERROR and error is not None:
            self.notify(str(error), title="stopped" if stopped else f"{group} failed",
                        severity="information" if stopped else "error", timeout=8)
