"""What a quantization costs, in the numbers `tinylm quantize` and the app's Quantize tab report:
blob bytes, per-tensor SNR, validation loss and bits per byte with the blob's weights, and agreement
with the float model (share of greedy next tokens the board arithmetic picks the same as PyTorch,
over fixed prompts).

`quantize_and_report` is the one entry point both faces call (optional QAT, export, report, the
summary recorded in meta.json); it never prints, reports progress as
`on_progress(done, total, what)` and ends early with `Stopped` when `should_stop()` turns true.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.config.workspace import Workspace
from engine.data.tokenizer import Stopped
from engine.store.experiments import Experiment

PROMPTS = ("Once upon a time", "The little dog", "One day, a girl named", "Tom and his mom",
           "The sun was", "She was very happy because", "In the park there was",
           "The cat wanted to", "Lily saw a big", "They played all day and")

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


@dataclass
class TensorCost:
    """One tensor of the blob: how it is stored and how much the rounding hurt it."""

    name: str
    qtype: str  # "f32", "int8" or "ternary"
    bytes: int  # in the blob, scales included
    snr_db: float | None  # None for tensors kept in f32


@dataclass
class QatResult:
    """A quantization-aware fine-tuning run (`qat.<method>.pt` in the experiment)."""

    method: str
    steps: int
    float_val_loss: float
    val_loss_before: float  # with the method's weights, before QAT
    val_loss_after: float


@dataclass
class QuantReport:
    method: str
    blob_path: Path
    blob_bytes: int
    qat: bool  # the blob was written from QAT weights
    float_val_loss: float
    val_loss: float  # with the blob's weights
    val_loss_cost: float  # relative: (val_loss - float_val_loss) / float_val_loss
    bits_per_byte: float
    snr_db_min: float | None
    snr_db_median: float | None
    greedy_agreement: float  # share of positions where the reference's argmax = PyTorch's token
    agreement_tokens: int
    tensors: list[TensorCost] = field(default_factory=list)
    qat_run: QatResult | None = None  # set when this call ran QAT first

    def to_dict(self) -> dict[str, Any]:
        """The JSON `tinylm quantize --json` prints under "report" (and meta.json keeps, minus
        "tensors")."""
        d = asdict(self)
        for key in ("blob_path", "qat_run"):
            d.pop(key)
        return d

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "tensors"}


def _check_stop(should_stop: StopFn | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise Stopped(f"quantization stopped on request ({what}); the experiment's checkpoint is "
                      "untouched")


def greedy_agreement(model: Any, tokenizer: Any, blob_path: Path, new_tokens: int = 32,
                     prompts: tuple[str, ...] = PROMPTS, on_progress: ProgressFn | None = None,
                     should_stop: StopFn | None = None) -> dict[str, Any]:
    """Teacher-forced: PyTorch (float) writes a greedy continuation; the reference, running the
    blob's exact arithmetic, reads the same tokens and we count the positions where its argmax equals
    PyTorch's choice. Free-running texts drift apart after one difference; this does not."""
    from engine.infer.sample import SamplingParams, generate

    from .reference import Reference

    ref = Reference(blob_path)
    ctx = ref.blob.header.seq_len
    same = total = 0
    for i, prompt in enumerate(prompts):
        _check_stop(should_stop, "greedy agreement")
        ids = tokenizer.encode(prompt, bos=tokenizer.bos_id is not None)
        cont = list(generate(model, ids, SamplingParams(temperature=0.0,
                                                        max_tokens=min(new_tokens,
                                                                       ctx - len(ids)))))
        seq = ids + cont
        ref.reset()
        for pos in range(len(seq) - 1):
            logits = ref.step(seq[pos], pos)
            if pos >= len(ids) - 1:
                same += int(int(np.argmax(logits)) == seq[pos + 1])
                total += 1
        if on_progress is not None:
            on_progress(i + 1, len(prompts), "greedy agreement")
    return {"agreement": same / total if total else 0.0, "tokens": total}


def report(exp: Experiment, ws: Workspace, method: str, blob_path: Path,
           on_progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> QuantReport:
    """The cost of the blob at `blob_path` (already written) against the float checkpoint."""
    from engine.data import prepare
    from engine.data.loader import eval_batches
    from engine.infer.load import load_model, load_tokenizer_for
    from engine.train.evaluate import bits_per_byte, validation_bytes

    from .export import numpy_state
    from .qat import qat_state, quantized_loss, quantized_params
    from .quantize import quant_report

    say = on_progress or (lambda done, total, what: None)
    say(0, 1, "load checkpoint")
    model, cfg, _ = load_model(exp, "best")
    state = numpy_state(model)  # the same checkpoint, not loaded a second time
    data = prepare(exp.folder, cfg, ws.resolve(cfg.data.corpus), ws.root / "cache",
                   should_stop=should_stop)
    val = eval_batches(data.val_tokens, cfg.train.batch_size, cfg.model.seq_len,
                       cfg.train.eval_batches)
    n_bytes = validation_bytes(cfg, ws)
    n_tokens = len(data.val_tokens)
    _check_stop(should_stop, "float val loss")
    say(0, 2, "val loss")
    loss_f = quantized_loss(model, val, {})
    qat = qat_state(exp, method)
    if qat is not None:
        import torch
        model.load_state_dict({k: torch.from_numpy(v) for k, v in qat.items()})
        state = qat
    _check_stop(should_stop, f"{method} val loss")
    say(1, 2, "val loss")
    loss_q = quantized_loss(model, val, quantized_params(cfg, method))
    say(2, 2, "val loss")
    tensors = quant_report(cfg, state, method)
    snrs = [t.snr_db for t in tensors if t.qtype != "f32"]
    tok = load_tokenizer_for(exp, cfg)
    agree = greedy_agreement(model, tok, blob_path, on_progress=on_progress,
                             should_stop=should_stop)
    return QuantReport(
        method=method, blob_path=blob_path, blob_bytes=blob_path.stat().st_size,
        qat=qat is not None, float_val_loss=loss_f, val_loss=loss_q,
        val_loss_cost=(loss_q - loss_f) / loss_f,
        bits_per_byte=bits_per_byte(loss_q, n_tokens, n_bytes),
        snr_db_min=min(snrs) if snrs else None,
        snr_db_median=float(np.median(snrs)) if snrs else None,
        greedy_agreement=agree["agreement"], agreement_tokens=agree["tokens"],
        tensors=[TensorCost(t.name, t.qtype, t.nbytes, None if t.qtype == "f32" else t.snr_db)
                 for t in tensors])


def quantize_and_report(exp: Experiment, ws: Workspace, method: str | None = None, *,
                        qat_steps: int = 0, lr: float | None = None,
                        on_progress: ProgressFn | None = None,
                        should_stop: StopFn | None = None) -> QuantReport:
    """Optional QAT (`qat_steps` > 0), then `model.<method>.bin` written (fit not enforced: this is
    for measuring), then its cost measured; the summary is recorded in meta.json under
    "quant_reports". Progress stages: "QAT", "export", "load checkpoint", "val loss",
    "greedy agreement". Raises UserError (no checkpoint, bad method) and Stopped."""
    from engine.errors import UserError

    from .export import export
    from .qat import check_qat_values, run_qat

    method = method or exp.config.quant.method
    if method not in ("f32", "int8", "ternary"):
        raise UserError(f"unknown quantization method {method!r}: use int8, ternary or f32")
    check_qat_values(qat_steps, lr)
    qat_run = None
    if qat_steps:
        q = run_qat(exp, ws, method, qat_steps, lr=lr, on_progress=on_progress,
                    should_stop=should_stop)
        qat_run = QatResult(**q)
    _check_stop(should_stop, "export")
    if on_progress is not None:
        on_progress(0, 1, "export")
    path, _ = export(exp, method, force=True)
    if on_progress is not None:
        on_progress(1, 1, "export")
    rep = report(exp, ws, method, path, on_progress=on_progress, should_stop=should_stop)
    rep.qat_run = qat_run
    exp.update_meta(quant_reports={**(exp.meta.get("quant_reports") or {}),
                                   method: rep.summary()})
    return rep
