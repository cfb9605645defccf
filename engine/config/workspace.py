"""Workspace settings from `project.toml`; every setting has a default, so the file is optional."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from engine.errors import ConfigError, UserError

from .presets import DEFAULT_PRESET, PRESETS
from .schema import BOARDS

PROJECT_FILE = "project.toml"


@dataclass
class Workspace:
    root: Path  # folder holding project.toml (or the current folder)
    experiments_dir: str = "experiments"  # relative to root
    default_board: str = "esp32"  # board for budgets when an experiment names none
    default_port: str = "virtual"  # serial port; "virtual" starts the host build of the firmware
    default_preset: str = DEFAULT_PRESET  # preset of `tinylm new` without --preset

    @property
    def experiments(self) -> Path:
        return (self.root / self.experiments_dir).resolve()

    def resolve(self, path: str) -> Path:
        """Paths in configs are relative to the workspace root, so experiments move with it."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.root / p)


def load_workspace(root: str | Path | None = None) -> Workspace:
    """Read `<root>/project.toml`; root defaults to $TINYLM_WORKSPACE or the current folder."""
    root = Path(root or os.environ.get("TINYLM_WORKSPACE") or Path.cwd()).resolve()
    if root.exists() and not root.is_dir():
        raise UserError(f"the workspace {root} is a file, not a folder: give the folder that holds "
                        "project.toml and experiments/ (-w FOLDER or $TINYLM_WORKSPACE)")
    path = root / PROJECT_FILE
    if not path.exists():
        return _checked(Workspace(root), "workspace defaults")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e} — fix the syntax at that line and column"],
                          str(path)) from e
    section = data.get("workspace", {})
    problems = [f"[{k}]: unknown section; use [workspace]" for k in data if k != "workspace"]
    known = [f.name for f in fields(Workspace) if f.name != "root"]
    values: dict[str, str] = {}
    for key, value in section.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            tip = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            problems.append(f"workspace.{key}: unknown key; {tip}")
        elif not isinstance(value, str):
            problems.append(f"workspace.{key} = {value!r}: must be a string")
        else:
            values[key] = value
    if values.get("default_board", "esp32") not in BOARDS:
        problems.append(f"workspace.default_board = {values['default_board']!r}: use one of "
                        f"{', '.join(BOARDS)}")
    if values.get("default_preset", DEFAULT_PRESET) not in PRESETS:
        problems.append(f"workspace.default_preset = {values['default_preset']!r}: use one of "
                        f"{', '.join(PRESETS)}")
    if problems:
        raise ConfigError(problems, str(path))
    return _checked(Workspace(root, **values), str(path))


def _checked(ws: Workspace, source: str) -> Workspace:
    """The experiments folder may be missing (it is made on first use) but must not be a file."""
    if ws.experiments.exists() and not ws.experiments.is_dir():
        raise ConfigError([f"workspace.experiments_dir = {ws.experiments_dir!r}: {ws.experiments} is "
                           "a file, not a folder; point experiments_dir at a folder in project.toml "
                           "(or move the file away)"], source)
    return ws
