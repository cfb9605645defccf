"""What the Device panel's workers post to it: the board session's events, INFO read again, the
experiment read, the port list, a flash's stages and progress, a chat turn's tokens and its end.

Why here and not nested in DevicePanel: they are the panel's private mail from its own threads
(nothing else sends or handles them), and the panel is long enough without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from ..workers.board_link import BoardState, DeviceSession
from ..workers.device_jobs import Target
from ..workers.ports import PortChoice


@dataclass
class SessionEvent(Message):
    session: DeviceSession  # events of a session already closed are dropped
    event: Any  # board_link.Opened | Lost | Failed | Closed


@dataclass
class StateRead(Message):
    session: DeviceSession
    state: BoardState


@dataclass
class TargetLoaded(Message):
    target: Target


@dataclass
class TargetFailed(Message):
    name: str
    error: str


@dataclass
class PortsListed(Message):
    ports: list[PortChoice]


@dataclass
class FlashStage(Message):
    text: str


@dataclass
class FlashProgress(Message):
    done: int
    total: int
    what: str

    def can_replace(self, message: Message) -> bool:
        """A newer report of the same region supersedes this one (esptool reports per block)."""
        return isinstance(message, FlashProgress) and message.what == self.what


@dataclass
class FlashFinished(Message):
    ok: bool
    text: str
    refused: bool = False  # refused before anything was written


@dataclass
class ChatTokens(Message):
    events: list[Any]  # engine.chat.streams.ChatEvent, in arrival order


@dataclass
class ChatFinished(Message):
    result: Any = None  # engine.chat.threeway.TurnResult, None if the turn did not run
    error: str = ""
    flash_it: bool = False  # refused because the board holds another model
