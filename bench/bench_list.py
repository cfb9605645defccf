"""How long does listing N experiments take? (`tinylm list`, the TUI's Experiments screen.)

Creates N experiments in a temp workspace, then times Store.list() cold-ish (first call) and warm
(median of 5). Usage: python bench/bench_list.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.presets import preset_config  # noqa: E402
from engine.config.schema import apply_overrides  # noqa: E402
from engine.store.experiments import Store  # noqa: E402


def main(n: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "experiments")
        base = preset_config("esp32-260k")
        t0 = time.perf_counter()
        for i in range(n):
            cfg = apply_overrides(base, [f"train.seed={i}"])
            exp = store.create(f"exp-{i:04d}", cfg)
            exp.update_meta(best_val_loss=2.0 + i / n, status="done", tags=["bench"])
        create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = store.list()
        first = time.perf_counter() - t0
        assert len(rows) == n and not any(r.damaged for r in rows)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            store.list()
            times.append(time.perf_counter() - t0)
        print(f"experiments: {n}")
        print(f"create: {create_s:.2f} s ({1000 * create_s / n:.2f} ms each, atomic + fsync)")
        print(f"list first call: {1000 * first:.0f} ms")
        print(f"list warm: min {1000 * min(times):.0f} ms, median {1000 * statistics.median(times):.0f} "
              f"ms, max {1000 * max(times):.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
