"""QuantizePanel: pick int8 or ternary and optional QAT steps, watch progress, read the cost.

Two tables: one row per method quantized so far (bytes, val loss against float, its relative cost,
bits per byte, greedy agreement, SNR; the rows recorded in meta.json show at open), and the
per-tensor bytes and SNR of the latest run. The panel posts `QuantizeRequested`; the screen runs
engine.blob.quant_report.quantize_and_report and feeds progress and the report back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.validation import Integer
from textual.widgets import DataTable, Input, Label, ProgressBar, RadioButton, RadioSet, Static

from engine.config.budget import fmt_bytes
from engine.store.format import fmt_loss

METHODS = ("int8", "ternary")
SUMMARY_COLUMNS = ("method", "blob", "val loss", "float", "cost", "bits/byte", "agreement",
                   "SNR min", "SNR median")
TENSOR_COLUMNS = ("tensor", "type", "bytes", "SNR")


def _db(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} dB"


def summary_row(method: str, s: dict[str, Any]) -> tuple[str, ...]:
    """One row from a report summary (QuantReport.summary(), or what meta.json recorded)."""
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:+.2f}%"

    agree = s.get("greedy_agreement")
    return (method + (" +QAT" if s.get("qat") else ""),
            fmt_bytes(s["blob_bytes"]) if s.get("blob_bytes") is not None else "-",
            fmt_loss(s.get("val_loss")), fmt_loss(s.get("float_val_loss")),
            pct(s.get("val_loss_cost")),
            "-" if s.get("bits_per_byte") is None else f"{s['bits_per_byte']:.4f}",
            "-" if agree is None else f"{100 * agree:.1f}% of {s.get('agreement_tokens', 0)}",
            _db(s.get("snr_db_min")), _db(s.get("snr_db_median")))


class QuantizePanel(Vertical):
    DEFAULT_CSS = """
    QuantizePanel { height: 1fr; }
    QuantizePanel #quant-form { height: auto; }
    QuantizePanel #quant-method { width: 16; height: auto; }
    QuantizePanel #qat-box { width: 32; height: auto; padding: 0 1; }
    QuantizePanel #qat-box Label { color: $text-muted; }
    QuantizePanel #quant-help { width: 1fr; padding: 0 1; color: $text-muted; }
    QuantizePanel #qat-problem { height: auto; color: $error; padding: 0 1; }
    QuantizePanel #quant-progress-row { height: 1; padding: 0 1; }
    QuantizePanel #quant-progress-row.-idle { display: none; }
    QuantizePanel #quant-stage { width: 1fr; padding-left: 2; }
    QuantizePanel #quant-summary { height: auto; max-height: 6; margin-top: 1; }
    QuantizePanel #quant-tensors { height: 1fr; margin-top: 1; }
    """

    @dataclass
    class QuantizeRequested(Message):
        method: str
        qat_steps: int

    def compose(self) -> ComposeResult:
        with Horizontal(id="quant-form"):
            with RadioSet(id="quant-method"):
                for i, m in enumerate(METHODS):
                    yield RadioButton(m, value=i == 0, id=f"method-{m}")
            with Vertical(id="qat-box"):
                yield Label("QAT steps (0 = none)")
                yield Input("0", id="qat-steps", validators=[Integer(minimum=0)],
                            validate_on=["changed"])
            yield Static("g quantizes: writes model.<method>.bin and measures it against the "
                         "float checkpoint. QAT fine-tunes through the quantizer first "
                         "(qat.<method>.pt).", id="quant-help")
        yield Static("", id="qat-problem")
        with Horizontal(id="quant-progress-row", classes="-idle"):
            yield ProgressBar(total=1, show_eta=False, id="quant-progress")
            yield Static("", id="quant-stage")
        yield DataTable(id="quant-summary", cursor_type="row", show_cursor=False)
        yield DataTable(id="quant-tensors", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        summary = self.query_one("#quant-summary", DataTable)
        for col in SUMMARY_COLUMNS:
            summary.add_column(col, key=col)
        tensors = self.query_one("#quant-tensors", DataTable)
        for col in TENSOR_COLUMNS:
            tensors.add_column(col, key=col)

    # ---- form ----------------------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return METHODS[max(self.query_one(RadioSet).pressed_index, 0)]

    def toggle_method(self) -> str:
        nxt = METHODS[(METHODS.index(self.method) + 1) % len(METHODS)]
        self.query_one(f"#method-{nxt}", RadioButton).value = True
        return nxt

    def focus_steps(self) -> None:
        steps = self.query_one("#qat-steps", Input)
        steps.focus()
        steps.select_all()

    def qat_steps(self) -> int | None:
        text = self.query_one("#qat-steps", Input).value.strip()
        try:
            steps = int(text or "0")
        except ValueError:
            return None
        return steps if steps >= 0 else None

    @on(Input.Changed, "#qat-steps")
    def _steps_changed(self, event: Input.Changed) -> None:
        self._show_problem()

    @on(Input.Submitted, "#qat-steps")
    def _steps_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def _show_problem(self) -> bool:
        ok = self.qat_steps() is not None
        value = self.query_one("#qat-steps", Input).value
        self.query_one("#qat-problem", Static).update(
            "" if ok else f"QAT steps: {value.strip()!r} is not a whole number ≥ 0 (0 = no QAT)")
        return ok

    def submit(self) -> bool:
        """Post QuantizeRequested when the form is valid; True if posted."""
        if not self._show_problem():
            return False
        steps = self.qat_steps()
        assert steps is not None
        self.post_message(self.QuantizeRequested(self.method, steps))
        return True

    # ---- progress and results ------------------------------------------------------------------------

    def set_running(self, running: bool) -> None:
        self.query_one("#quant-progress-row").set_class(not running, "-idle")
        if running:
            self.progress(0, 1, "starting")

    def progress(self, done: int, total: int, what: str) -> None:
        self.query_one("#quant-progress", ProgressBar).update(total=max(total, 1), progress=done)
        self.query_one("#quant-stage", Static).update(f"{what} {done}/{total}")

    def show_summary(self, method: str, summary: dict[str, Any]) -> None:
        """Add or update `method`'s row (rows are keyed by method: updated in place)."""
        table = self.query_one("#quant-summary", DataTable)
        row = summary_row(method, summary)
        if method in table.rows:
            for col, value in zip(SUMMARY_COLUMNS, row, strict=True):
                table.update_cell(method, col, value)
        else:
            table.add_row(*row, key=method)

    def show_recorded(self, reports: dict[str, Any]) -> None:
        for method in sorted(reports):
            if isinstance(reports[method], dict):
                self.show_summary(method, reports[method])

    def show_tensors(self, method: str, tensors: list[Any]) -> None:
        """The latest run's tensors (TensorCost): one table per run, so it is rebuilt once here."""
        table = self.query_one("#quant-tensors", DataTable)
        table.clear()
        for t in tensors:
            table.add_row(t.name, t.qtype, Text(f"{t.bytes:,}", justify="right"),
                          Text(_db(t.snr_db), justify="right"), key=t.name)
        table.border_title = f"{method}: per tensor"
