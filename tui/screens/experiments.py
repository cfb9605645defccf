"""Experiments screen (home): every experiment folder in a table that follows the disk.

Keys act on the highlighted experiment (or the marked ones for diff). Engine calls run in thread
workers that post `ActionDone`; the table is never rebuilt on a disk change: the app's watcher says
which folders changed, a worker re-reads only those (one meta.json each) and the table updates their
cells in place.
"""

from __future__ import annotations

import os
import threading

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Static

from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.store.experiments import Store, Summary, check_name
from engine.store.format import SUMMARY_COLUMNS

from ..messages import ActionDone, RowsRead
from ..widgets.experiments_table import ExperimentsTable
from ..widgets.key_bar import KeyBar
from .base import ReportsWorkerErrors
from .device import DeviceScreen
from .diff import DiffScreen
from .edit_config import EditConfigScreen
from .experiment import ExperimentScreen
from .export import ExportScreen
from .prompt import PromptScreen
from .wizard import NewExperimentScreen

# files whose change can change a row (metrics.jsonl and logs do not: the row reads meta.json)
ROW_FILES = {"", "meta.json", "config.toml", "run.lock"}


class ExperimentsScreen(ReportsWorkerErrors, Screen):
    CSS_PATH = "experiments.tcss"
    HELP_TITLE = "Experiments"
    BINDINGS = [
        Binding("n", "new", "New", id="experiments.new",
                tooltip="New experiment: preset, fields, live fit meter for the board"),
        Binding("r", "run", "Run", id="experiments.run",
                tooltip="Start training (its own process: it keeps going if the app closes)"),
        Binding("R", "resume", "Resume", id="experiments.resume",
                tooltip="Continue training from the last checkpoint"),
        Binding("s", "stop", "Stop", id="experiments.stop",
                tooltip="Stop the run; it checkpoints first"),
        Binding("c", "clone", "Clone", id="experiments.clone",
                tooltip="Copy the recipe (config, tokenizer) into a new experiment"),
        Binding("e", "edit", "Edit", id="experiments.edit",
                tooltip="Edit the config, validated as you type"),
        Binding("d", "diff", "Diff", id="experiments.diff",
                tooltip="Compare the marked experiments (or this one and its parent)"),
        Binding("D", "device", "Device", id="experiments.device",
                tooltip="Device tab: ports, flash, serial monitor, chat PyTorch vs board"),
        Binding("x", "export", "Export", id="experiments.export",
                tooltip="Quantize and write the firmware blob"),
        Binding("t", "tag", "Tag", id="experiments.tag", tooltip="Set the tags"),
        Binding("N", "note", "Note", id="experiments.note", tooltip="Edit the notes"),
        Binding("a", "archive", "Archive", id="experiments.archive",
                tooltip="Archive / unarchive (hidden from the list, nothing deleted)"),
        Binding("A", "show_archived", "All", id="experiments.show_archived",
                tooltip="Show or hide archived experiments"),
        Binding("space", "mark", "Mark", id="experiments.mark", key_display="␣",
                tooltip="Mark / unmark for diff"),
        Binding("slash", "filter", "Filter", id="experiments.filter", key_display="/",
                tooltip="Filter by name, tag or status (tag:x, status:x)"),
        Binding("o", "sort", "Sort", id="experiments.sort",
                tooltip="Sort by the next column (or click a header)"),
        Binding("O", "reverse", "Reverse", id="experiments.reverse", tooltip="Reverse the order"),
    ]

    def __init__(self, store: Store, workspace: Workspace) -> None:
        super().__init__()
        self.store = store
        self.workspace = workspace
        self.loaded = False  # the first full read arrived
        self._pending: set[str] = set()
        self._read_lock = threading.Lock()  # reads post in the order they read
        self._select_when_seen: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield ExperimentsTable(id="runs")
        yield Input(placeholder="filter: words in the name, a tag or a status (esc clears)",
                    id="filter")
        yield Static("", id="detail")
        yield Static("reading experiments…", id="status")
        yield KeyBar(rows=2)

    @property
    def table(self) -> ExperimentsTable:
        return self.query_one(ExperimentsTable)

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.app.experiments_changed.subscribe(self, self._disk_changed)
        self.read_all()

    # ---- reading the disk ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="read-all", name="list")
    def read_all(self) -> None:
        with self._read_lock:
            self.post_message(RowsRead(self.store.list(include_archived=True), complete=True))

    def _disk_changed(self, changes: dict[str, set[str]]) -> None:
        names = {name for name, files in changes.items() if not files or files & ROW_FILES}
        if names:
            self.read_some(names)

    def read_some(self, names: set[str]) -> None:
        self._pending |= names
        self._read_pending()

    @work(thread=True, exclusive=True, exit_on_error=False, group="read", name="read")
    def _read_pending(self) -> None:
        with self._read_lock:
            names, self._pending = self._pending, set()
            if not names:
                return
            found, gone = [], []
            for name in sorted(names):
                if os.path.isdir(self.store.root / name):
                    found.append(self.store.summarize(name))
                else:
                    gone.append(name)
            self.post_message(RowsRead(found, gone=gone))

    @on(RowsRead)
    def _show_rows(self, message: RowsRead) -> None:
        table = self.table
        if message.complete:
            table.load(message.summaries)
            self.loaded = True
        else:
            table.apply(message.summaries, message.gone)
        if self._select_when_seen and table.select(self._select_when_seen):
            self._select_when_seen = None
        self._show_status()
        self._show_detail()

    # ---- status lines ----------------------------------------------------------------------------

    def _show_status(self) -> None:
        table = self.table
        total = len(table.summaries)
        noun = "experiment" if total == 1 else "experiments"
        parts = [f"{table.row_count} of {total} {noun}" if table.row_count != total
                 else f"{total} {noun}"]
        if not total:
            parts = [f"no experiments in {self.store.root} yet: press n to create one"]
        header = dict(SUMMARY_COLUMNS)[table.sort_column]
        parts.append(f"sort {header} {'▼' if table.sort_reverse else '▲'} (o, O)")
        if table.query_text:
            parts.append(f"filter “{table.query_text}”")
        if table.marks:
            parts.append(f"{len(table.marks)} marked")
        archived = sum(s.archived for s in table.summaries.values())
        if archived and not table.show_archived:
            parts.append(f"{archived} archived hidden (A)")
        running = table.running
        if running:
            parts.append(f"running: {', '.join(running)} — runs keep going if you quit")
        self.query_one("#status", Static).update(" · ".join(parts))

    def _show_detail(self) -> None:
        name = self.table.selected
        s = self.table.summaries.get(name) if name else None
        self.query_one("#detail", Static).update(_detail(s) if s else "")

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    @on(ExperimentsTable.SortChanged)
    def _sorted(self) -> None:
        self._show_status()

    # ---- keys ------------------------------------------------------------------------------------

    def _current(self, usable: bool = True) -> Summary | None:
        """The highlighted experiment; None (and a word why) when there is none or it is damaged."""
        name = self.table.selected
        s = self.table.summaries.get(name) if name else None
        if s is None:
            self.notify("no experiment selected: press n to create one", severity="warning")
            return None
        if usable and s.damaged:
            self.notify(f"{s.name} is damaged: {s.problem}", severity="error")
            return None
        return s

    def action_new(self) -> None:
        self.app.push_screen(NewExperimentScreen(self.store, self.workspace), self._created)

    def _created(self, name: str | None) -> None:
        if name:
            self._select_when_seen = name
            self.read_some({name})

    @on(DataTable.RowSelected)
    def action_open(self) -> None:
        if s := self._current():
            self.app.push_screen(ExperimentScreen(self.store, s.name))

    def action_run(self) -> None:
        if s := self._current():
            self._launch(s.name, resume=False)

    def action_resume(self) -> None:
        if s := self._current():
            self._launch(s.name, resume=True)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run", name="run")
    def _launch(self, name: str, resume: bool) -> None:
        from engine.train.runner import launch

        run = launch(self.store.load(name), self.workspace, resume=resume)
        if run.state == "failed":
            tail = "\n".join(run.log_tail[-4:])
            self.post_message(ActionDone(f"{name} failed to start (exit {run.returncode}):\n{tail}",
                                         severity="error", touched=[name]))
        else:
            self.post_message(ActionDone(f"{'resumed' if resume else 'training'} {name} "
                                         f"(pid {run.pid}); it keeps running if the app closes",
                                         touched=[name]))

    def action_stop(self) -> None:
        if s := self._current():
            self._stop(s.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="stop", name="stop")
    def _stop(self, name: str) -> None:
        from engine.train.runner import stop_training

        ended = stop_training(self.store.load(name), timeout=30)
        exp = self.store.load(name)
        text = (f"{name}: {exp.live_status()} at step {exp.meta.get('step')}" if ended
                else f"{name} did not stop within 30 s; press s again to retry")
        self.post_message(ActionDone(text, severity="information" if ended else "warning",
                                     touched=[name]))

    def action_clone(self) -> None:
        if not (s := self._current()):
            return
        taken = set(self.table.summaries)
        suggestion = next(f"{s.name}-{i}" for i in range(2, 10_000) if f"{s.name}-{i}" not in taken)
        self.app.push_screen(
            PromptScreen(f"Clone {s.name} as", suggestion, check=lambda t: _name_problem(t, taken),
                         hint="copies config.toml and the tokenizer; the new one starts fresh"),
            lambda new: new and self._clone(s.name, new))

    @work(thread=True, exclusive=True, exit_on_error=False, group="edit", name="clone")
    def _clone(self, src: str, dst: str) -> None:
        self.store.clone(src, dst)
        self.post_message(ActionDone(f"cloned {src} → {dst}", select=dst, touched=[dst]))

    def action_edit(self) -> None:
        if not (s := self._current()):
            return
        if s.status == "running":
            self.notify(f"{s.name} is running: stop it (s) before changing its config",
                        severity="warning")
            return
        self.app.push_screen(EditConfigScreen(self.store, self.workspace, s.name),
                             lambda saved: saved and self.read_some({s.name}))

    def action_device(self) -> None:
        # the highlighted experiment is the one to flash and chat with; none is fine (monitor only)
        self.app.push_screen(DeviceScreen(self.store, self.workspace, self.table.selected or None))

    def action_diff(self) -> None:
        table = self.table
        names = [n for n in table.shown_names() if n in table.marks]
        if len(names) < 2 and (s := self._current()):
            if s.parent in table.summaries:
                names = [s.name, s.parent]
            else:
                self.notify("mark two or more experiments with space to diff them (or select one "
                            "cloned from another)", severity="warning")
                return
        if len(names) >= 2:
            self.app.push_screen(DiffScreen(self.store, names))

    def action_export(self) -> None:
        if s := self._current():
            self.app.push_screen(ExportScreen(self.store, self.workspace, s.name),
                                 lambda done: done and self.read_some({s.name}))

    def action_tag(self) -> None:
        if not (s := self._current()):
            return
        self.app.push_screen(
            PromptScreen(f"Tags of {s.name}", " ".join(s.tags), check=_tags_problem,
                         hint="words separated by spaces; delete a word to remove that tag"),
            lambda text: text is not None and self._tag(s.name, s.tags, text.split()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="edit", name="tag")
    def _tag(self, name: str, old: list[str], new: list[str]) -> None:
        exp = self.store.tag(name, add=new, remove=[t for t in old if t not in new])
        self.post_message(ActionDone(f"{name}: tags {', '.join(exp.meta['tags']) or '(none)'}",
                                     touched=[name]))

    def action_note(self) -> None:
        if not (s := self._current()):
            return
        notes = str(self.store.load(s.name).meta.get("notes") or "")
        self.app.push_screen(
            PromptScreen(f"Notes of {s.name}", notes, multiline=True, hint="ctrl+s saves, esc "
                         "cancels"),
            lambda text: text is not None and self._note(s.name, text))

    @work(thread=True, exclusive=True, exit_on_error=False, group="edit", name="note")
    def _note(self, name: str, text: str) -> None:
        self.store.note(name, text.strip())
        self.post_message(ActionDone(f"{name}: notes saved", touched=[name]))

    def action_archive(self) -> None:
        if s := self._current(usable=False):
            self._archive(s.name, not s.archived)

    @work(thread=True, exclusive=True, exit_on_error=False, group="edit", name="archive")
    def _archive(self, name: str, archived: bool) -> None:
        self.store.archive(name, archived)
        hint = " (A shows archived)" if archived else ""
        self.post_message(ActionDone(f"{name} {'archived' if archived else 'unarchived'}{hint}",
                                     touched=[name]))

    def action_show_archived(self) -> None:
        self.table.toggle_archived()
        self._show_status()

    def action_mark(self) -> None:
        table = self.table
        if (name := table.selected) is not None:
            table.toggle_mark(name)
            table.action_cursor_down()
            self._show_status()

    def action_sort(self) -> None:
        self.table.next_sort_column()

    def action_reverse(self) -> None:
        table = self.table
        table.sort_by(table.sort_column, reverse=not table.sort_reverse)

    # ---- the filter ------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        self.table.set_query(event.value.strip())
        self._show_status()
        self._show_detail()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = bool(box.value)
        self.table.focus()

    def key_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.table.set_query("")
            self.table.focus()
            self._show_status()

    # ---- results ---------------------------------------------------------------------------------

    @on(ActionDone)
    def _done(self, message: ActionDone) -> None:
        self.notify(message.text, severity=message.severity,  # type: ignore[arg-type]
                    timeout=8 if message.severity == "error" else 4, markup=False)
        if message.select and not self.table.select(message.select):
            self._select_when_seen = message.select
        if message.touched:
            self.read_some(set(message.touched))


def _detail(s: Summary) -> str:
    if s.damaged:
        return f"{s.name}: damaged — {s.problem}. The app leaves it alone; fix or move the folder."
    parts = [f"{s.name}: {s.status}"]
    if s.step:
        parts.append(f"step {s.step}")
    if s.arch:
        parts.append(f"{s.arch}" + (f" from preset {s.preset}" if s.preset else ""))
    if s.parent:
        parts.append(f"from {s.parent}")
    if s.fits is False:
        parts.append(f"does not fit {s.board} ({s.over}): e to edit")
    text = " · ".join(parts)
    if s.error and s.status in ("failed", "stopped"):
        text += f"\n{s.error}"
    return text


def _name_problem(text: str, taken: set[str]) -> str | None:
    try:
        check_name(text)
    except UserError as e:
        return str(e)
    return f"'{text}' exists already" if text in taken else None


def _tags_problem(text: str) -> str | None:
    bad = [t for t in text.split() if "," in t]
    return f"no commas in tags: {', '.join(bad)}" if bad else None
