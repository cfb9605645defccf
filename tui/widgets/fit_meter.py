"""FitMeter: will this config fit the board? Flash and RAM bars with the numbers, and the budget's
advice when it does not (engine/config/budget.py computes; this only draws).

Drawn as text rather than ProgressBar widgets: a bar past 100 % must show by how much, and the whole
meter is one renderable, cheap to redraw on every (debounced) keystroke and stable in snapshots."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from engine.config.budget import Budget, blocks, fmt_bytes

BAR_WIDTH = 16  # when the meter's width is not known yet
BAR_MIN, BAR_MAX = 6, 24
NARROW = "-narrow"  # the breakpoint class of a screen that puts the meter above its form
BREAKPOINTS = [(0, NARROW), (100, "-wide")]  # for the screens that show a meter beside a form


def figures(used: int, capacity: int) -> str:
    share = 100 * used / capacity if capacity else 0.0
    return f" {share:3.0f}%  {fmt_bytes(used)} of {fmt_bytes(capacity)}"


def bar(label: str, used: int, capacity: int, width: int = BAR_WIDTH) -> Text:
    """`flash ████████░░░░   8%  249.1 KB of 2.94 MB`; red and capped with `!` when over."""
    share = used / capacity if capacity else 0.0
    over = share > 1.0
    filled = min(width, round(share * width))
    colour = "red" if over else ("yellow" if share > 0.85 else "green")
    text = Text(f"{label:<6}")
    text.append("█" * filled, style=colour)
    text.append("░" * (width - filled), style="dim")
    text.append("!" if over else " ", style="bold red")
    text.append(figures(used, capacity), style="bold red" if over else "")
    return text


def bar_width(room: int | None, rows: list[tuple[int, int]]) -> int:
    """One width for all the bars: what `room` columns leave after the longest figures (the
    figures matter more than the bar's length, and a wrapped line reads as two)."""
    if room is None:
        return BAR_WIDTH
    longest = max(len(figures(used, capacity)) for used, capacity in rows)
    return max(BAR_MIN, min(BAR_MAX, room - 6 - 1 - longest))


def budget_lines(b: Budget, room: int | None = None, compact: bool = False) -> list[Text]:
    """The meter's lines; `compact` (a narrow screen, meter above the form) leaves out the RAM
    breakdown and the estimate note, keeping the verdict, the bars and any advice."""
    head = Text()
    head.append(f"{b.board.name}: ", style="bold")
    head.append("fits" if b.fits else "does not fit", style="bold green" if b.fits else "bold red")
    head.append(f"  ·  {b.params:,} params  ·  {b.method} blob  ·  context {b.context_len}",
                style="dim")
    # the chip's heap is split in regions: the biggest block must fit its largest one
    rows = {"flash": (b.blob_bytes[b.method], b.board.flash_model_bytes),
            "RAM": (b.ram_total, b.board.ram_bytes),
            "block": (max(blocks(b.ram).values()), b.board.largest_block)}
    width = bar_width(room, list(rows.values()))
    lines: list[Text] = [head, *(bar(label, *row, width) for label, row in rows.items())]
    placed = b.placement
    if not placed.ok and b.ram_total <= b.board.ram_bytes:
        lines.append(Text(f"largest block {fmt_bytes(placed.largest_left)} < needed "
                          f"{fmt_bytes(placed.needed)} ({placed.failed.replace('_', ' ')})",
                          style="bold red"))
    if not compact:
        ram = [f"{part.replace('_', ' ')} {fmt_bytes(n)}" for part, n in b.ram.items()
               if part != "total" and n]
        lines.append(Text("RAM: " + ", ".join(ram), style="dim"))
        if b.piece_bytes_estimated:
            lines.append(Text("vocab bytes estimated until the tokenizer is trained", style="dim"))
    if b.advice:
        lines.append(Text("to make it fit, try:", style="bold"))
        lines.extend(Text(f"  {tip}") for tip in b.advice[:4])
    return lines


class FitMeter(Static):
    """`meter.show(budget)` or `meter.show(None, why)` while the config is invalid."""

    DEFAULT_CSS = """
    FitMeter { height: auto; padding: 0 1; border: round $primary; }
    """

    lines: list[Text] = []
    _budget: Budget | None = None

    def show(self, budget: Budget | None, why: str = "") -> None:
        self._budget = budget
        if budget is None:
            self.lines = [Text(why or "fix the fields marked red to see the budget",
                               style="yellow")]
        else:
            compact = self.is_mounted and self.screen.has_class(NARROW)
            self.lines = budget_lines(budget, self.content_size.width or None, compact)
        self.update(Group(*self.lines))

    def on_resize(self) -> None:
        """The bars fit the new width (the meter is drawn before its first layout, too)."""
        if self._budget is not None:
            self.show(self._budget)

    @property
    def plain(self) -> str:
        """The meter as text (what a test or a screen reader reads)."""
        return "\n".join(line.plain for line in self.lines)
