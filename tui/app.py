"""TinyLMApp: the thin shell. It owns the workspace, the Store and the one watcher of the
experiments folder; screens do the work and hear about the disk through `app.experiments_changed`
(a Signal)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import threading

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
from textual.worker import Worker, WorkerState

from engine.config.workspace import Workspace, load_workspace
from engine.errors import TinyLMError
from engine.store.experiments import Store

from .commands import ActionsProvider
from .messages import ExperimentsChanged
from .screens.confirm import ConfirmScreen
from .screens.experiments import ExperimentsScreen
from .screens.help import HelpScreen
from .workers.fs_watch import ExperimentsWatcher
from .workers.terminal import TerminalWatch, terminal_fd

HANGUP_EXIT_CODE = 129  # 128 + SIGHUP, what a shell reports for a hung-up job
HARD_EXIT_AFTER_S = 3.0  # if a clean exit stalls on a dead terminal, leave anyway
WATCH_GROUP_S = 0.025  # a disk change shows within ~30 ms; bursts still arrive as one batch


class TinyLMApp(App):
    TITLE = "tinylm"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit",
                tooltip="Quit; asks first only if something unsaved would be lost"),
        Binding("question_mark,f1", "help", "Help", id="app.help", key_display="?",
                tooltip="Every key of this screen, and what it does"),
    ]

    def __init__(self, workspace: Workspace, watch: bool = True) -> None:
        super().__init__()
        self.workspace = workspace
        self.store = Store(workspace.experiments)
        self.sub_title = str(workspace.root)
        self.experiments_changed: Signal[dict[str, set[str]]] = Signal(self, "experiments-changed")
        self._watch = watch
        self._watcher: ExperimentsWatcher | None = None
        self._terminal: TerminalWatch | None = None

    def on_mount(self) -> None:
        if self._watch:
            self._watcher = ExperimentsWatcher(self.store.root, self._on_disk_change,
                                               coalesce_s=WATCH_GROUP_S).start()
        if not self.is_headless:
            self._watch_terminal()
        self.push_screen(ExperimentsScreen(self.store, self.workspace))

    def on_unmount(self) -> None:
        for watcher in (self._watcher, self._terminal):
            if watcher is not None:
                watcher.stop()

    # ---- the disk --------------------------------------------------------------------------------

    def _on_disk_change(self, changes: dict[str, set[str]]) -> None:
        """Watcher thread → app message (thread-safe post; queued batches merge)."""
        self.post_message(ExperimentsChanged(changes))

    @on(ExperimentsChanged)
    def _publish_changes(self, message: ExperimentsChanged) -> None:
        self.experiments_changed.publish(message.changes)

    # ---- the terminal ----------------------------------------------------------------------------

    def _watch_terminal(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.terminal_gone)
        fd = terminal_fd()
        if fd is not None:
            self._terminal = TerminalWatch(
                fd, lambda: loop.call_soon_threadsafe(self.terminal_gone)).start()

    def terminal_gone(self) -> None:
        """SIGHUP or a hung-up tty: nobody can see us any more. Runs survive (own sessions)."""
        timer = threading.Timer(HARD_EXIT_AFTER_S, os._exit, (HANGUP_EXIT_CODE,))
        timer.daemon = True
        timer.start()
        self.exit(return_code=HANGUP_EXIT_CODE)

    # ---- keys ------------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        """Ask only when something would be lost; a training run is not (it survives the app)."""
        for screen in reversed(self.screen_stack):
            unsaved = getattr(screen, "unsaved_changes", None)
            reason = unsaved() if callable(unsaved) else None
            if reason:
                def decided(ok: bool | None) -> None:
                    if ok:
                        self._leave()
                self.push_screen(ConfirmScreen(f"Quit and lose {reason}?", "Quit", "Stay"),
                                 decided)
                return
        self._leave()

    def _leave(self) -> None:
        running = [s.name for s in self.store.list(include_archived=True) if s.status == "running"]
        note = (f"still training (they keep going): {', '.join(running)}; reopen tinylm-tui to "
                "watch them, or `tinylm stop NAME`") if running else None
        self.exit(message=note)

    # ---- errors from workers ---------------------------------------------------------------------

    def report_worker_error(self, event: Worker.StateChanged) -> None:
        """The one place a worker's error becomes something the user reads (Worker.StateChanged does
        not bubble, so each screen hands it here: tui/screens/base.py)."""
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        error = event.worker.error
        text = str(error) if isinstance(error, TinyLMError) else f"{type(error).__name__}: {error}"
        self.notify(text, title=event.worker.name or "error", severity="error", timeout=10,
                    markup=False)


def make_app(workspace: str | None = None, watch: bool = True) -> TinyLMApp:
    """Built the same way by the console script, the tests and the benches."""
    return TinyLMApp(load_workspace(workspace), watch=watch)


def run() -> None:
    parser = argparse.ArgumentParser(prog="tinylm-tui")
    parser.add_argument("-w", "--workspace",
                        help="workspace folder (default: $TINYLM_WORKSPACE or .)")
    args = parser.parse_args()
    # COLUMNS/LINES in the environment are a snapshot of some terminal's size (a shell or tmux may
    # export them); Python's size query prefers them over the tty, which pinned the app at that
    # size through every later resize. The tty is the truth.
    for stale in ("COLUMNS", "LINES"):
        os.environ.pop(stale, None)
    try:
        app = make_app(args.workspace)
    except TinyLMError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    app.run()
    # The app is gone from the screen; what is left is the interpreter's final garbage collection,
    # which walks every object torch left behind (after a chat or samples: 2-3 s of a terminal
    # that looks hung after q). Nothing in that heap needs a collection to clean up (files and
    # boards are closed by the screens' unmount, temp dirs by atexit), so skip the walk.
    gc.freeze()
    sys.exit(app.return_code or 0)


if __name__ == "__main__":
    run()
