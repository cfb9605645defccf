"""BindingCommands: a command palette provider listing the key bindings active where the palette
was opened — those the footer shows, and the app's own that it leaves out for room (a Binding with
an `id`; the stock widgets' bindings, cursor moves and the like, have none) — so every action with
a key can also be found by name.

Why from the bindings and not a second list: the footer, the palette and the keys then read one
source (the screen's and its focused widgets' BINDINGS) and cannot drift apart.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class BindingCommands(Provider):
    def _commands(self) -> list[tuple[str, str, object, str]]:
        seen, out = set(), []
        for key, active in self.screen.active_bindings.items():
            b = active.binding
            if not (b.description and (b.show or b.id)) or b.action in seen or not active.enabled:
                continue
            seen.add(b.action)
            display = self.app.get_key_display(b)
            name = f"{b.description} ({display})"
            run = partial(self.app.run_action, b.action, active.node)
            out.append((name, b.tooltip or b.description, run, key))
        return sorted(out, key=lambda c: c[0])

    async def discover(self) -> Hits:
        for name, help_text, run, _ in self._commands():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, run, _ in self._commands():
            score = matcher.match(name + " " + help_text)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
