"""What can go wrong between the host and a board, as typed errors the CLI maps to exit codes.

A `DeviceError` is a failure of valid work (the board did not answer in time, the port went away
mid-command): exit 1. The subclasses that are exit 2 are the ones the user fixes by pointing at
another port or fixing the board: the port does not exist, is busy, is not a tinylm board, or runs
firmware that speaks another protocol version.
"""

from __future__ import annotations

from engine.errors import Failure, UserError


class DeviceError(Failure):
    """The board answered @ERR, or did not answer in time. `code` is the @ERR code or "timeout"."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class PortGone(DeviceError):
    """The port vanished (unplugged, board process ended, peer closed the socket) mid-command."""


class PortUnusable(DeviceError, UserError):
    """The port cannot be used as given (exit 2): the message says what to change."""

    exit_code = 2


class PortNotFound(PortUnusable):
    """No such device, nothing listening at a socket://, or a URL pyserial cannot parse."""


class PortBusy(PortUnusable):
    """Another program (or another session of ours) holds the port exclusively."""


class NotATinyLMBoard(PortUnusable):
    """Something answers on the port, but not the tinylm protocol (an echo, another firmware)."""


class ProtocolMismatch(PortUnusable):
    """A tinylm board whose firmware speaks another protocol version than this host."""
