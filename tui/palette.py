"""ScreenKeysProvider: every key the current screen offers right now, as command palette entries.

Why: design.md wants every action both on a key (shown in the footer) and in the command palette;
reading the screen's live bindings (the same `active_bindings` the Footer reads, already filtered by
`check_action`) keeps one list instead of a second hand-written one that drifts. A screen opts in
with `COMMANDS = {ScreenKeysProvider}`.
"""

from __future__ import annotations

from functools import partial

from textual.binding import ActiveBinding
from textual.command import DiscoveryHit, Hit, Hits, Provider


class ScreenKeysProvider(Provider):
    def _commands(self) -> list[tuple[str, str, ActiveBinding]]:
        out = []
        for active in self.screen.active_bindings.values():
            b = active.binding
            if not b.show or not b.description or not active.enabled or b.system:
                continue
            key = self.app.get_key_display(b)
            help_text = f"key {key}" + (f" — {b.tooltip}" if b.tooltip else "")
            out.append((b.description, help_text, active))
        return sorted(out, key=lambda c: c[0])

    def _run(self, active: ActiveBinding) -> None:
        self.app.call_later(self.app.run_action, active.binding.action, active.node)

    async def discover(self) -> Hits:
        for name, help_text, active in self._commands():
            yield DiscoveryHit(name, partial(self._run, active), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, active in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, active),
                          help=help_text)
