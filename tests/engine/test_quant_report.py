"""engine.blob.quant_report.quantize_and_report: the one quantize-and-measure call under the CLI and
the app's Quantize tab (progress, stop, typed result, meta record)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.blob.quant_report import QuantReport, quantize_and_report
from engine.config.schema import TrainConfig
from engine.config.workspace import load_workspace
from engine.data.tokenizer import Stopped
from engine.errors import UserError
from engine.store.checkpoint import save_checkpoint
from engine.store.experiments import Experiment, Store
from tests.conftest import tiny_cfg


def make_untrained_exp(workspace: Path, name: str = "q") -> Experiment:
    """A tiny byte-vocab model with seeded random weights saved as its checkpoint: a real model to
    quantize and sample from in a second, without a training run."""
    import torch

    from engine.models import build_model

    cfg = replace(tiny_cfg(seq_len=32), train=TrainConfig(batch_size=4, eval_batches=2))
    exp = Store(workspace / "experiments").create(name, cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(exp.path("ckpt.pt"), {"model": model.state_dict(), "config": cfg.to_dict(),
                                          "model_hash": cfg.model_hash(), "step": 0})
    exp.update_meta(status="stopped")
    return exp


def test_quantize_and_report_reports_progress_and_records_summary(workspace):
    exp = make_untrained_exp(workspace)
    seen: list[tuple[int, int, str]] = []
    rep = quantize_and_report(exp, load_workspace(str(workspace)), "int8",
                              on_progress=lambda d, t, w: seen.append((d, t, w)))
    assert isinstance(rep, QuantReport)
    assert rep.blob_path == exp.path("model.int8.bin")
    assert rep.blob_bytes == rep.blob_path.stat().st_size
    assert rep.qat_run is None and not rep.qat and rep.agreement_tokens > 0
    assert rep.snr_db_min is not None and rep.snr_db_min > 30  # int8 group 32: ~40+ dB
    assert {t.qtype for t in rep.tensors} == {"int8", "f32"}
    assert all((t.snr_db is None) == (t.qtype == "f32") for t in rep.tensors)
    stages = [w for _, _, w in seen]
    assert stages.index("export") < stages.index("val loss") < stages.index("greedy agreement")
    assert seen[-1] == (10, 10, "greedy agreement")
    recorded = Store(workspace / "experiments").load("q").meta["quant_reports"]["int8"]
    assert recorded == rep.summary() and "tensors" not in recorded


def test_quantize_and_report_stops_on_request_without_writing_qat(workspace):
    exp = make_untrained_exp(workspace)
    ws = load_workspace(str(workspace))
    steps: list[int] = []

    def progress(done: int, total: int, what: str) -> None:
        if what == "QAT":
            steps.append(done)

    with pytest.raises(Stopped, match="QAT stopped"):
        quantize_and_report(exp, ws, "ternary", qat_steps=50, on_progress=progress,
                            should_stop=lambda: len(steps) >= 2)
    assert steps == [1, 2]
    assert not exp.path("qat.ternary.pt").exists() and not exp.path("model.ternary.bin").exists()
    with pytest.raises(UserError, match="qat_steps = -1: must be ≥ 0"):
        quantize_and_report(exp, ws, "ternary", qat_steps=-1)
