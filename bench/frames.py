"""Key press → frame timing for the app's benches, run headless (App.run_test).

The time of a key is taken from posting it, as the terminal driver would, to the first frame the
app writes (App._display, which in a terminal writes the frame) after the key's effect is in the
widget state. Mix `FrameClock` into the App under test."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any, Callable

from textual import events


class FrameClock:
    """App mixin: the perf_counter time of every frame written."""

    frames: list[float]

    def _display(self, screen: Any, update: Any) -> None:
        self.__dict__.setdefault("frames", []).append(time.perf_counter())
        super()._display(screen, update)  # type: ignore[misc]


async def wait(cond: Callable[[], Any], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("the app did not get there")
        await asyncio.sleep(0.001)


async def key_to_frame(app: Any, key: str, done: Callable[[], Any]) -> float:
    """ms from posting `key` to the first frame written after `done()` turned true."""
    app.__dict__.setdefault("frames", [])
    t0 = time.perf_counter()
    app.post_message(events.Key(key, key if len(key) == 1 else None))
    await wait(done)
    t1 = time.perf_counter()
    await wait(lambda: app.frames and app.frames[-1] > t1)
    return (next(f for f in app.frames if f > t1) - t0) * 1e3


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"median {statistics.median(ms):6.1f}  p90 {p90:6.1f}  max {ms[-1]:6.1f} ms"
