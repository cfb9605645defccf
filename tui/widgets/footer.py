"""KeysFooter: the footer on two lines, so a screen with many keys still shows every one of them.

Textual's Footer lays its keys out in one row and cuts what does not fit; the home screen has 19
keys for 120 columns. This lays the same items out as a two-row grid (the keys, their labels, their
tooltips and clicks are Footer's own)."""

from __future__ import annotations

import math

from textual.widgets import Footer


class KeysFooter(Footer):
    DEFAULT_CSS = """
    KeysFooter { height: 2; layout: grid; grid-columns: auto; grid-rows: 1; grid-gutter: 0 1; }
    KeysFooter.-compact FooterKey { margin: 0; }
    """

    def on_mount(self) -> None:
        self._two_rows()

    async def recompose(self) -> None:
        await super().recompose()  # the keys change with focus and screen
        self._two_rows()

    def _two_rows(self) -> None:
        self.styles.grid_size_columns = max(1, math.ceil(len(self.children) / 2))
