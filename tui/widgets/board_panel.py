"""BoardPanel: what the board on the port says it is (INFO), and whether its model is this
experiment's blob.

Why the badge is the loudest line: chatting or benchmarking against a board that holds another
model gives numbers that look right and mean nothing. The sha256 the firmware reports is compared
with the blobs `tinylm export` recorded in meta.json: "matches", "another blob of this experiment"
(another quant), or "another model".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.config.budget import fmt_bytes

from ..workers.board_link import BoardState


@dataclass(frozen=True)
class Expected:
    """The blob the board should hold: the experiment's export of `quant`."""
    experiment: str
    quant: str
    blobs: dict[str, str] = field(default_factory=dict)  # quant -> sha256 (meta.json "blobs")

    @property
    def sha(self) -> str:
        return self.blobs.get(self.quant, "")


@dataclass(frozen=True)
class Badge:
    kind: str  # "matches" | "other-quant" | "another" | "not-exported" | "none"
    text: str

    @property
    def matches(self) -> bool:
        return self.kind == "matches"


STYLES = {"matches": "bold black on green", "other-quant": "bold black on yellow",
          "another": "bold white on red", "not-exported": "bold black on yellow",
          "none": "dim"}


def badge(info: dict[str, str] | None, expected: Expected | None) -> Badge:
    board_sha = (info or {}).get("blob_sha", "")
    if info is None or not board_sha:
        return Badge("none", "no model to compare")
    if expected is None:
        return Badge("none", "no experiment selected")
    if expected.sha and board_sha == expected.sha:
        return Badge("matches", f"✓ matches {expected.experiment} ({expected.quant})")
    for quant, sha in expected.blobs.items():
        if sha == board_sha:
            return Badge("other-quant", f"≠ the {quant} blob of {expected.experiment}, not "
                                        f"{expected.quant}: f flashes {expected.quant}")
    if not expected.sha:
        return Badge("not-exported", f"≠ another model; {expected.experiment} has no "
                                     f"{expected.quant} blob yet (f exports and flashes)")
    return Badge("another", f"✗ another model: f flashes {expected.experiment} "
                            f"({expected.quant})")


def _int(info: dict[str, str], key: str) -> int | None:
    try:
        return int(info[key])
    except (KeyError, ValueError):
        return None


def _bytes(n: int | None) -> str:
    return "?" if n is None else fmt_bytes(n)


class BoardPanel(Static):
    """`panel.show(state, expected)`; `panel.show_disconnected(text)`."""

    DEFAULT_CSS = """
    BoardPanel { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.state: BoardState | None = None
        self.current: Badge = Badge("none", "")

    def show_disconnected(self, text: str = "not connected: pick a port, enter connects") -> None:
        self.state = None
        self.current = Badge("none", "")
        self.update(Text(text, style="dim"))

    def show(self, state: BoardState, expected: Expected | None) -> None:
        self.state = state
        self.current = badge(state.info, expected)
        self.update(self._render_state(state, self.current))

    @staticmethod
    def _render_state(state: BoardState, b: Badge) -> Table:
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True)
        t.add_column()
        info = state.info
        if info is None:
            t.add_row("board", Text(state.note or "no INFO", style="yellow"))
            return t
        t.add_row("board", f"{info.get('board', '?')} · fw {info.get('fw', '?')} · "
                           f"protocol {info.get('proto', '?')}")
        t.add_row("model", f"{info.get('arch', '?')} {info.get('quant', '?')} · dim "
                           f"{info.get('dim', '?')} · {info.get('layers', '?')} layers · vocab "
                           f"{info.get('vocab', '?')}")
        sha = info.get("blob_sha", "")
        t.add_row("blob", f"{sha[:12] + '…' if sha else 'none'} "
                          f"{_bytes(_int(info, 'blob_size'))}")
        t.add_row("", Text(f" {b.text} ", style=STYLES[b.kind]))
        t.add_row("context", f"{info.get('ctx', '?')} tokens")
        t.add_row("RAM", f"{_bytes(_int(info, 'ram'))} used · {_bytes(_int(info, 'heap'))} free")
        t.add_row("flash", f"{_bytes(_int(info, 'flash'))} used")
        p = state.projected
        if p:
            t.add_row("rv32", f"{p['instructions_per_token']:,.0f} instr/token")
            t.add_row("ESP32-C3", f"≈ {p['ms_per_token']:.1f} ms/token, {p['tok_per_s']:.0f} tok/s "
                                  f"(CPI {p['cpi']:g} at {p['mhz']:g} MHz, projected)")
        return t
