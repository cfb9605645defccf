"""tui/workers/fs_watch.py: changes made by another process arrive as one batch per burst."""

from __future__ import annotations

import subprocess
import sys
import threading

from engine.atomic import atomic_write_text
from tui.workers.fs_watch import ExperimentsWatcher


def test_changes_from_another_process_arrive_grouped_by_experiment(tmp_path):
    batches: list[dict[str, set[str]]] = []
    got = threading.Event()

    def on_change(changes):
        batches.append(changes)
        if any("metrics.jsonl" in files for files in changes.values()):
            got.set()

    (tmp_path / "a").mkdir()
    watcher = ExperimentsWatcher(tmp_path, on_change).start()
    try:
        code = ("import sys\nfrom pathlib import Path\nroot = Path(sys.argv[1])\n"
                "for i in range(50):\n"
                "    with open(root / 'a' / 'metrics.jsonl', 'a') as f: f.write('{}\\n')\n")
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
        atomic_write_text(tmp_path / "a" / "meta.json", "{}")
        assert got.wait(5)
        assert len(batches) < 10  # 50 appends coalesced, not one callback per write
    finally:
        watcher.stop()
    files = set().union(*(b.get("a", set()) for b in batches))
    assert "metrics.jsonl" in files and not any(f.endswith(".tmp") for f in files)
