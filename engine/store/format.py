"""How experiment figures are written for people: one formatter, so `tinylm list` and the app's
table always show the same numbers."""

from __future__ import annotations

import time

from engine.config.budget import fmt_bytes

from .experiments import Summary

# (key, header) of every column a Summary is shown with, in display order
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"), ("status", "status"), ("model", "arch/preset"), ("params", "params"),
    ("best_val", "best val"), ("bpb", "bits/B"), ("blob", "blob"), ("fits", "fits"),
    ("updated", "updated"), ("tags", "tags"),
)


def fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}K"


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_time(t: float | None) -> str:
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def fmt_when(t: float | None, now: float | None = None) -> str:
    """Short time for a table: the hour today (what people scan for), the date otherwise."""
    if not t:
        return "-"
    now = time.time() if now is None else now
    day = time.strftime("%Y-%m-%d", time.localtime(t))
    if day == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M", time.localtime(t))
    return day


def fmt_status(s: Summary) -> str:
    return "DAMAGED" if s.damaged and s.status == "damaged" else s.status


def fmt_model(s: Summary) -> str:
    """The preset says the most (it names the target); imported or hand-made configs show arch."""
    return s.preset or s.arch or "-"


def fmt_blob(s: Summary) -> str:
    """Size of the configured quant's blob, or only the quant when none is exported yet."""
    if s.quant is None:
        return "-"
    return f"{fmt_bytes(s.blob_bytes)} {s.quant}" if s.blob_bytes else f"- {s.quant}"


def fmt_fits(s: Summary) -> str:
    if s.fits is None or s.board is None:
        return "-"
    return f"✓ {s.board}" if s.fits else f"✗ {s.board} {s.over}".rstrip()


def summary_columns(s: Summary, now: float | None = None) -> dict[str, str]:
    """The display strings of one Summary, by SUMMARY_COLUMNS key (`tinylm list` and the app)."""
    return {
        "name": s.name + (" (archived)" if s.archived else ""),
        "status": fmt_status(s),
        "model": fmt_model(s),
        "params": fmt_params(s.params),
        "best_val": fmt_loss(s.best_val_loss),
        "bpb": "-" if s.bits_per_byte is None else f"{s.bits_per_byte:.3f}",
        "blob": fmt_blob(s),
        "fits": fmt_fits(s),
        "updated": fmt_when(s.updated, now),
        "tags": ", ".join(s.tags),
    }
