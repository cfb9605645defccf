"""Command palette: every key of the current screen (and the app's) as a command, so anything that
has a key can also be found by name (ctrl+p). Textual's own system commands stay alongside."""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode
from textual.screen import Screen


def keyed_actions(screen: Screen[Any]) -> Iterator[tuple[DOMNode, Binding]]:
    """(node, binding) for each key the screen offers (its focused widget's shown keys, its own,
    then the app's), one per action: what the footer shows, in full."""
    nodes: list[DOMNode] = []
    if screen.focused is not None:
        nodes.append(screen.focused)
    nodes += [screen, screen.app]
    seen: set[str] = set()
    for node in nodes:
        for _key, binding in node._bindings:  # the merged map: inherited BINDINGS included
            if not (binding.show and binding.description) or binding.system:
                continue
            if binding.action in seen:
                continue
            seen.add(binding.action)
            yield node, binding


def key_label(binding: Binding) -> str:
    return binding.key_display or binding.key.split(",")[0]


class ActionsProvider(Provider):
    """The keys shown in the footer and the help screen, runnable by name."""

    def _commands(self) -> Iterator[tuple[str, str, Any]]:
        for node, binding in keyed_actions(self.screen):
            title = f"{binding.description} ({key_label(binding)})"
            run = partial(self.app.run_action, binding.action, node)
            yield title, binding.tooltip or binding.description, run

    async def discover(self) -> Hits:
        for title, help_text, run in self._commands():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, run in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
