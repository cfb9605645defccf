"""How experiment figures are written for people: one formatter, so `tinylm list` and the app's
table always show the same numbers."""

from __future__ import annotations

import time


def fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}K"


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_time(t: float | None) -> str:
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
