"""Typed errors shared by the engine, the CLI and the TUI.

Every error a user can cause is a `UserError`: its message says what is wrong, why, and how to fix it,
and the CLI maps it to exit code 2. Anything else that goes wrong at run time is a `Failure` (exit 1).
"""

from __future__ import annotations


class TinyLMError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class UserError(TinyLMError):
    """Bad input: a bad name, config value, file or argument. Exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """One or more config problems, all reported at once."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}:\n{lines}")


class ExperimentNotFound(UserError):
    pass


class LockHeld(UserError):
    """Another live process is running this experiment."""


class Failure(TinyLMError):
    """Something failed while doing valid work (I/O, a subprocess, a device)."""
