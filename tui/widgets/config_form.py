"""ConfigForm: config keys as fields, with the engine's validation messages beside each field.

Why generic: the fields come from the config dataclasses (type from the default, pickers from
engine.config.schema.CHOICES), so the wizard (a dozen keys) and the config editor (every key) are
the same widget and a new config key needs no UI work. Validation is the engine's own (`from_dict`):
the form never re-implements a rule, it only routes each problem to the field its text starts with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Static

from engine.config.schema import CHOICES, ExperimentConfig, from_dict, parse_value
from engine.errors import ConfigError

from .choice import ChoiceField

_PROBLEM_KEY = re.compile(r"^\[?([a-z_]+\.[a-z_0-9]+)")


@dataclass(frozen=True)
class FieldSpec:
    key: str  # "model.dim"
    kind: str  # "int", "float", "str", "bool" or "choice"
    choices: tuple[str, ...] = ()

    @property
    def widget_id(self) -> str:
        return "f-" + self.key.replace(".", "--")


def field_specs(keys: list[str] | None = None) -> list[FieldSpec]:
    """Specs for `keys` (default: every key of the config), typed by their defaults."""
    defaults = ExperimentConfig().flat()
    specs = []
    for key in keys or list(defaults):
        default = defaults[key]
        if key in CHOICES:
            specs.append(FieldSpec(key, "choice", CHOICES[key]))
        else:
            kind = {bool: "bool", int: "int", float: "float"}.get(type(default), "str")
            specs.append(FieldSpec(key, kind))
    return specs


def text_of(value: Any) -> str:
    """How a value is written in a field: like TOML would (1e-3 stays readable as 0.001)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_config(base: ExperimentConfig, raw: dict[str, Any]
                 ) -> tuple[ExperimentConfig | None, dict[str, list[str]]]:
    """`raw` (key → field content) over `base`, validated by the engine. Returns the config (None if
    invalid) and the problems by key ("" for those no field owns)."""
    data = base.to_dict()
    defaults = base.flat()
    for key, value in raw.items():
        section, name = key.split(".", 1)
        if isinstance(value, str) and not isinstance(defaults[key], str):
            value = parse_value(value.strip()) if value.strip() else ""
        data[section][name] = value
    try:
        return from_dict(data, source="form"), {}
    except ConfigError as e:
        problems: dict[str, list[str]] = {}
        for text in e.problems:
            m = _PROBLEM_KEY.match(text)
            key = m.group(1) if m and m.group(1) in raw else ""
            problems.setdefault(key, []).append(text)
        return None, problems


class ConfigForm(VerticalScroll, can_focus=False):
    """`form.raw()` is what the fields hold; `show_problems()` writes messages beside them. The
    scroll area itself takes no focus: tab goes from field to field (it follows the focus)."""

    # one two-column grid: a row a key (label, field), and when the key has a problem a second row
    # (blank, message) under it, so messages get the whole width. No row containers: fewer widgets
    # to build when the editor shows every key.
    DEFAULT_CSS = """
    ConfigForm { height: 1fr; layout: grid; grid-size: 2; grid-columns: 27 1fr;
                 grid-rows: auto; }
    ConfigForm .key { padding: 0 1; color: $text-muted; }
    ConfigForm .field { width: 22; }
    ConfigForm .problem, ConfigForm .gap { display: none; }
    ConfigForm .problem { padding: 0 1 0 0; color: $error; }
    ConfigForm .invalid { background: $error 25%; }
    """

    class Edited(Message):
        """A field changed (the screen re-validates, debounced)."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, cfg: ExperimentConfig, keys: list[str] | None = None, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs = field_specs(keys)
        self._initial = cfg

    def compose(self) -> ComposeResult:
        flat = self._initial.flat()
        for spec in self.specs:
            yield Label(spec.key, classes="key")
            yield self._field(spec, flat[spec.key])
            yield Static("", classes="gap", id=spec.widget_id + "-gap")
            yield Static("", classes="problem", id=spec.widget_id + "-problem")

    def _field(self, spec: FieldSpec, value: Any) -> Input | ChoiceField:
        if spec.kind in ("choice", "bool"):
            choices = spec.choices if spec.kind == "choice" else (False, True)
            return ChoiceField(choices, value, id=spec.widget_id, classes="field")
        # select_on_focus (the default): tab into a field and type to replace its value
        return Input(text_of(value), compact=True, id=spec.widget_id, classes="field")

    def raw(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in self.specs:
            widget = self.query_one(f"#{spec.widget_id}")
            out[spec.key] = widget.value  # type: ignore[attr-defined]
        return out

    def fill(self, cfg: ExperimentConfig) -> None:
        """Put a whole config in the fields (a preset was picked)."""
        flat = cfg.flat()
        for spec in self.specs:
            widget = self.query_one(f"#{spec.widget_id}")
            value = flat[spec.key]
            widget.value = value if spec.kind in ("choice", "bool") else text_of(value)  # type: ignore[attr-defined]

    def show_problems(self, problems: dict[str, list[str]]) -> None:
        for spec in self.specs:
            texts = problems.get(spec.key, [])
            problem = self.query_one(f"#{spec.widget_id}-problem", Static)
            problem.update("\n".join(texts))
            problem.display = bool(texts)
            self.query_one(f"#{spec.widget_id}-gap").display = bool(texts)
            self.query_one(f"#{spec.widget_id}").set_class(bool(texts), "invalid")

    def first_invalid(self, problems: dict[str, list[str]]) -> str | None:
        for spec in self.specs:
            if spec.key in problems:
                return spec.widget_id
        return None

    @on(Input.Changed)
    @on(ChoiceField.Changed)
    def _edited(self, event: Input.Changed | ChoiceField.Changed) -> None:
        event.stop()
        widget_id = event.control.id or ""
        key = next((s.key for s in self.specs if s.widget_id == widget_id), "")
        self.post_message(self.Edited(key))
