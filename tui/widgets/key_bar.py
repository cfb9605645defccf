"""KeyBar: the screen's live keys at the bottom, drawn as one widget.

Textual's Footer re-mounts a widget per key every time the focus moves (a tab switch, a click into
the prompt): on the Device tab, with the monitor streaming 2,000 lines/s, that re-mount was about
90 ms of a 170 ms key → frame. This draws the same keys (the screen's `active_bindings`, first key
per action, groups folded into "1 2 3 Tabs", disabled keys dimmed, the palette key on the right)
as one Text, and repaints only when what it shows has changed. Clicks still press the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


@dataclass(frozen=True)
class KeyItem:
    """One clickable thing on the bar: a key and its label (label empty inside a group)."""

    key: str
    display: str
    description: str
    enabled: bool


@dataclass(frozen=True)
class _Placed:
    row: int
    start: int
    end: int
    item: KeyItem


def key_items(screen: Screen, display) -> tuple[list[list[KeyItem]], KeyItem | None]:
    """The screen's shown keys as chunks (a lone key, or a group's keys ending with its label
    item) and the command palette's key, in the order Footer shows them."""
    app = screen.app
    by_action: dict[str, tuple[Binding, bool]] = {}
    for _node, binding, enabled, _tooltip in screen.active_bindings.values():
        if binding.show and binding.action not in by_action:
            by_action[binding.action] = (binding, enabled)
    runs: list[tuple[Binding.Group | None, list[tuple[Binding, bool]]]] = []
    for binding, enabled in by_action.values():
        if runs and binding.group is not None and binding.group is runs[-1][0]:
            runs[-1][1].append((binding, enabled))
        else:
            runs.append((binding.group, [(binding, enabled)]))
    chunks: list[list[KeyItem]] = []
    for group, members in runs:
        if group is not None and len(members) > 1:  # "1 2 3 4 5 Tabs"
            chunks.append([KeyItem(b.key, display(b), "", on) for b, on in members]
                          + [KeyItem("", "", group.description, True)])
        else:
            chunks.extend([KeyItem(b.key, display(b), b.description, on)] for b, on in members)
    palette = None
    if app.ENABLE_COMMAND_PALETTE:
        active = screen.active_bindings.get(app.COMMAND_PALETTE_BINDING)
        if active is not None:
            _node, binding, enabled, _tooltip = active
            palette = KeyItem(binding.key, display(binding), binding.description, enabled)
    return chunks, palette


class KeyBar(Widget, can_focus=False):
    """The keys of the focused widget, its screen and the app, on `rows` lines (keys that do not
    fit are left out, as Footer does; the command palette lists every one)."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--disabled"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        .key-bar--key { color: $footer-key-foreground; background: $footer-key-background;
                        text-style: bold; }
        .key-bar--description { color: $footer-description-foreground;
                                background: $footer-description-background; }
        .key-bar--disabled { text-style: dim; }
    }
    """

    def __init__(self, rows: int = 1, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows = rows
        self.styles.height = rows
        self._items: tuple[list[list[KeyItem]], KeyItem | None] = ([], None)
        self._placed: list[_Placed] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        items = key_items(screen, self.app.get_key_display)
        if items != self._items:  # the usual case on a focus change inside one panel: nothing new
            self._items = items
            self.refresh()

    @property
    def shown(self) -> dict[str, str]:
        """key → label of what the bar shows now (what a person reads; tests read it too)."""
        chunks, palette = self._items
        out = {i.key: i.description for chunk in chunks for i in chunk if i.key}
        if palette is not None:
            out[palette.key] = palette.description
        return out

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-bar--key", partial=True)
        desc_style = self.get_component_rich_style("key-bar--description", partial=True)
        dim = self.get_component_rich_style("key-bar--disabled", partial=True)
        chunks, palette = self._items
        pieces = [[self._piece(item, key_style, desc_style, dim) for item in chunk] for chunk in chunks]
        lines, placed, complete = self._lay_out(chunks, pieces, palette, gap=2)
        if not complete:  # tighter spacing before leaving keys out
            lines, placed, _ = self._lay_out(chunks, pieces, palette, gap=1)
        if palette is not None:
            last = lines[-1]
            pad = self.size.width - last.cell_len - self._palette_width(palette)
            if pad >= 0:
                last.append(" " * (pad + 1))
                piece = self._piece(palette, key_style, desc_style, dim)
                placed.append(_Placed(self.rows - 1, last.cell_len, last.cell_len + piece.cell_len,
                                      palette))
                last.append_text(piece)
        self._placed = placed
        return Text("\n").join(lines)

    @staticmethod
    def _palette_width(palette: KeyItem) -> int:
        """Its cells with a space before it and one after (the screen's right edge)."""
        return len(palette.display) + 1 + len(palette.description) + 2

    def _room(self, row: int, palette: KeyItem | None) -> int:
        """Cells for keys on `row`: the last row leaves the palette key its place."""
        reserved = self._palette_width(palette) if palette and row == self.rows - 1 else 0
        return self.size.width - reserved

    def _lay_out(self, chunks: list[list[KeyItem]], pieces: list[list[Text]],
                 palette: KeyItem | None, gap: int) -> tuple[list[Text], list[_Placed], bool]:
        """Chunks flowed over the rows, `gap` cells apart; False when some did not fit."""
        lines = [Text(no_wrap=True, overflow="crop") for _ in range(self.rows)]
        placed: list[_Placed] = []
        row = 0
        for chunk, chunk_pieces in zip(chunks, pieces, strict=True):
            width = sum(p.cell_len for p in chunk_pieces) + len(chunk_pieces) - 1 + gap
            while lines[row].cell_len + width > self._room(row, palette):
                if row + 1 >= self.rows:
                    return lines, placed, False  # out of room: the palette lists the rest
                row += 1  # the next row's room is checked too (the last one keeps the palette's)
            line = lines[row]
            line.append(" " * (gap if line.cell_len else 1))
            for i, (item, piece) in enumerate(zip(chunk, chunk_pieces, strict=True)):
                if i:
                    line.append(" ")  # inside a group: "1 2 3 Tabs"
                if item.key:
                    placed.append(_Placed(row, line.cell_len, line.cell_len + piece.cell_len, item))
                line.append_text(piece)
        return lines, placed, True

    @staticmethod
    def _piece(item: KeyItem, key_style: Style, desc_style: Style, dim: Style) -> Text:
        text = Text()
        if item.display:
            text.append(item.display, key_style)
        if item.description:
            text.append(" " + item.description if item.display else item.description, desc_style)
        if not item.enabled:
            text.stylize(dim)
        return text

    def on_mouse_down(self, event: events.MouseDown) -> None:
        for spot in self._placed:
            if spot.row == event.y and spot.start <= event.x < spot.end:
                if spot.item.enabled:
                    self.app.simulate_key(spot.item.key)
                else:
                    self.app.bell()
                return
