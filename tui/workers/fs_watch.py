"""ExperimentsWatcher: which experiment folders changed on disk, and which files in them.

Why: the app must follow the disk (the CLI, a training subprocess or another app change folders)
without polling every folder. watchdog's observer thread reports inotify events within milliseconds;
this class folds them into `{experiment name: {file names}}` batches delivered at most every
`coalesce_s` (a training run appends metrics.jsonl and train.log many times a second; the app wants
one message per batch, not one per write). The callback runs on a private thread: the app turns it
into a message with `call_from_thread` / `post_message`. No Textual import here, so it is testable on
its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

Changes = dict[str, set[str]]  # experiment name -> names of files changed ("" = the folder itself)


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: "ExperimentsWatcher") -> None:
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours included) are not changes
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        for p in paths:
            self.owner._note(p if isinstance(p, str) else p.decode(errors="replace"))


class ExperimentsWatcher:
    """`ExperimentsWatcher(root, on_change).start()`; `stop()` joins both threads."""

    def __init__(self, root: Path, on_change: Callable[[Changes], None],
                 coalesce_s: float = 0.05) -> None:
        self.root = Path(root)
        self.on_change = on_change
        self.coalesce_s = coalesce_s
        self._pending: Changes = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._flusher: threading.Thread | None = None

    def start(self) -> "ExperimentsWatcher":
        self.root.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_Handler(self), str(self.root), recursive=True)
        self._observer.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="fs-watch-flush", daemon=True)
        self._flusher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
        if self._flusher is not None:
            self._flusher.join(timeout=2)

    def _note(self, path: str) -> None:
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return
        if not rel.parts or rel.parts[0].startswith("."):
            return
        name = rel.parts[0]
        fname = rel.parts[1] if len(rel.parts) > 1 else ""
        if fname.startswith(".") and fname.endswith(".tmp"):
            return  # an atomic write in progress: its rename to the real name is the change
        with self._lock:
            self._pending.setdefault(name, set()).add(fname)
        self._wake.set()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._stop.wait(self.coalesce_s)  # let the burst finish
            with self._lock:
                batch, self._pending = self._pending, {}
                self._wake.clear()
            if batch:
                self.on_change(batch)
