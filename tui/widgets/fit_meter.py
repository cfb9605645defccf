"""FitMeter: will this config fit the board? Flash and RAM bars with the numbers, and the budget's
advice when it does not (engine/config/budget.py computes; this only draws).

Drawn as text rather than ProgressBar widgets: a bar past 100 % must show by how much, and the whole
meter is one renderable, cheap to redraw on every (debounced) keystroke and stable in snapshots."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from engine.config.budget import Budget, blocks, fmt_bytes

BAR_WIDTH = 16


def bar(label: str, used: int, capacity: int, width: int = BAR_WIDTH) -> Text:
    """`flash ████████░░░░ 249.1 KB of 2.94 MB  8%`; red and capped with `!` when over."""
    share = used / capacity if capacity else 0.0
    filled = min(width, round(share * width))
    over = share > 1.0
    colour = "red" if over else ("yellow" if share > 0.85 else "green")
    text = Text(f"{label:<6}")
    text.append("█" * filled, style=colour)
    text.append("░" * (width - filled), style="dim")
    text.append("!" if over else " ", style="bold red")
    text.append(f" {fmt_bytes(used)} of {fmt_bytes(capacity)}  {100 * share:.0f}%",
                style="bold red" if over else "")
    return text


def budget_lines(b: Budget) -> list[Text]:
    head = Text()
    head.append(f"{b.board.name}: ", style="bold")
    head.append("fits" if b.fits else "does not fit", style="bold green" if b.fits else "bold red")
    head.append(f"  ·  {b.params:,} params  ·  {b.method} blob  ·  context {b.context_len}",
                style="dim")
    lines: list[Text] = [
        head,
        bar("flash", b.blob_bytes[b.method], b.board.flash_model_bytes),
        bar("RAM", b.ram_total, b.board.ram_bytes),
        # the chip's heap is split in regions: the biggest block must fit its largest one
        bar("block", max(blocks(b.ram).values()), b.board.largest_block),
    ]
    placed = b.placement
    if not placed.ok and b.ram_total <= b.board.ram_bytes:
        lines.append(Text(f"largest block {fmt_bytes(placed.largest_left)} < needed "
                          f"{fmt_bytes(placed.needed)} ({placed.failed.replace('_', ' ')})",
                          style="bold red"))
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

    def show(self, budget: Budget | None, why: str = "") -> None:
        if budget is None:
            self.lines = [Text(why or "fix the fields marked red to see the budget",
                               style="yellow")]
        else:
            self.lines = budget_lines(budget)
        self.update(Group(*self.lines))

    @property
    def plain(self) -> str:
        """The meter as text (what a test or a screen reader reads)."""
        return "\n".join(line.plain for line in self.lines)
