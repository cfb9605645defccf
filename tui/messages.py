"""App-wide messages: what happened, posted by workers and the app, handled by screens with `@on`.

Widget-local messages live on their widget (e.g. `ConfigForm.Changed`); these are the ones that
cross screens or come from threads."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from engine.store.experiments import Summary


@dataclass
class ExperimentsChanged(Message):
    """Experiment folders changed on disk: `{name: {file names}}` ("" = the folder itself).

    The watcher already groups bursts; if several still queue up behind a busy loop, the older one
    folds its changes into the newer and is dropped, so a screen sees one merged batch."""

    changes: dict[str, set[str]] = field(default_factory=dict)

    def can_replace(self, message: Message) -> bool:
        if not isinstance(message, ExperimentsChanged):
            return False
        for name, files in self.changes.items():
            message.changes.setdefault(name, set()).update(files)
        return True


@dataclass
class RowsRead(Message, bubble=False):
    """A worker read these summaries from disk; `complete` means they are every experiment (the
    first load), else only the named ones changed, and `gone` were removed."""

    summaries: list[Summary]
    complete: bool = False
    gone: list[str] = field(default_factory=list)


@dataclass
class ActionDone(Message, bubble=False):
    """An engine call made from a key finished: tell the user, re-read the experiments it touched
    (the watcher would too, but not in every setup), maybe select one."""

    text: str
    select: str | None = None
    severity: str = "information"
    touched: list[str] = field(default_factory=list)
