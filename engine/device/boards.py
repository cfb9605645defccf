"""Running boards of a workspace: each `tinylm board` writes a small JSON file under
<workspace>/.tinylm/boards/<pid>.json while it serves (its port, kind, experiment, blob sha) and
removes it when it stops; `tinylm ports` (and the app) read them. A board killed without cleanup
(`kill -9`) leaves its file behind: an entry whose process is gone is dropped on read."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.atomic import atomic_write_json

REGISTRY = Path(".tinylm") / "boards"


@dataclass(frozen=True)
class BoardEntry:
    pid: int  # the `tinylm board` process
    port: str  # what --port takes to reach it (/dev/pts/N, socket://127.0.0.1:PORT)
    kind: str  # "virtual" (host firmware on a pty), "rv32" (qemu) or "download" (a virtual ESP32
    #            started in its ROM bootloader: esptool flashes it, then it runs the firmware)
    experiment: str = ""  # whose blob it serves ("" for --blob / --flash-image)
    blob_sha: str = ""  # sha256 of the blob it serves ("" when unknown)
    started: float = 0.0  # time.time() at start
    proc_start: int = 0  # /proc/<pid>/stat start time: a recycled pid is not this board


def registry_dir(workspace_root: Path) -> Path:
    return Path(workspace_root) / REGISTRY


def register(workspace_root: Path, entry: BoardEntry) -> Path:
    """Write the entry (atomically); returns its path, for `unregister`."""
    if not entry.proc_start:
        entry = BoardEntry(**{**asdict(entry), "proc_start": _proc_start(entry.pid)})
    path = registry_dir(workspace_root) / f"{entry.pid}.json"
    atomic_write_json(path, asdict(entry))
    return path


def unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def running_boards(workspace_root: Path) -> list[BoardEntry]:
    """The boards whose process is alive, oldest first; stale and unreadable files are removed."""
    folder = registry_dir(workspace_root)
    if not folder.is_dir():
        return []
    boards = []
    for path in sorted(folder.glob("*.json")):
        try:
            entry = BoardEntry(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # torn or foreign: nothing can use it
            continue
        if not _alive(entry):
            path.unlink(missing_ok=True)
            continue
        boards.append(entry)
    return sorted(boards, key=lambda e: e.started)


def _alive(entry: BoardEntry) -> bool:
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    if entry.proc_start and _proc_start(entry.pid) not in (0, entry.proc_start):
        return False  # the pid was recycled by another process
    stat = Path(f"/proc/{entry.pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie serves nothing
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said alive


def _proc_start(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot), 0 where there is no /proc."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0
