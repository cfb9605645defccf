"""Quantization-aware fine-tuning (`tinylm quantize NAME --method ternary --qat STEPS`).

Starts from the float checkpoint and trains through the blob's own rounding: every tensor the blob
stores as int8 or ternary is replaced in the forward pass by its quantize-dequantize round trip
(engine.quant.fake_quant_*), with a straight-through estimator for the gradient. The float weights
keep learning; export quantizes them exactly as the forward pass did. Result: `qat.<method>.pt` in
the experiment (the float checkpoint is untouched), picked up by `tinylm export --quant <method>`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from engine.config.layout import tensor_specs
from engine.config.schema import RULES, ExperimentConfig, check_values
from engine.config.workspace import Workspace
from engine.data.tokenizer import Stopped
from engine.store.checkpoint import load_checkpoint, save_checkpoint
from engine.store.experiments import Experiment


def qat_path_name(method: str) -> str:
    return f"qat.{method}.pt"


def qat_state(exp: Experiment, method: str) -> dict[str, np.ndarray] | None:
    path = exp.path(qat_path_name(method))
    if not path.exists():
        return None
    data = load_checkpoint(path)
    from engine.infer.load import check_checkpoint
    check_checkpoint(exp, data, path)
    return {k: v.float().numpy() for k, v in data["model"].items()}


def check_qat_values(steps: int, lr: float | None) -> None:
    """QAT steps and learning rate by the config's rules for quant.qat_steps and train.lr."""
    check_values({"qat_steps": steps, "lr": lr}, "quantization-aware training",
                 {"qat_steps": RULES["quant.qat_steps"], "lr": RULES["train.lr"]})


def quantized_params(cfg: ExperimentConfig, method: str) -> dict[str, tuple[str, int]]:
    """name -> (qtype, group) for every parameter the blob quantizes."""
    return {s.name: (s.qtype, s.group) for s in tensor_specs(cfg, method)
            if s.qtype != "f32" and s.name != "rope"}


def fake_quant_params(model: Any, quantized: dict[str, tuple[str, int]]) -> dict[str, Any]:
    from .quantize import fake_quant_int8, fake_quant_ternary

    out = {}
    for name, p in model.named_parameters():
        if name in quantized:
            qtype, group = quantized[name]
            out[name] = fake_quant_int8(p, group) if qtype == "int8" else fake_quant_ternary(p)
        else:
            out[name] = p
    return out


def quantized_loss(model: Any, batches: list, quantized: dict[str, tuple[str, int]]) -> float:
    """Mean loss over `batches` with the weights as the blob stores them (activations stay f32:
    their int8 rounding is measured by the reference agreement instead)."""
    import torch
    from torch.func import functional_call

    model.eval()
    losses = []
    with torch.no_grad():
        params = fake_quant_params(model, quantized)
        for x, y in batches:
            _, loss = functional_call(model, params, (x, y))
            losses.append(loss.item())
    return sum(losses) / len(losses)


def run_qat(exp: Experiment, ws: Workspace, method: str, steps: int, lr: float | None = None,
            on_progress: Callable[[int, int, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Fine-tune through the quantizer for `steps` steps and save `qat.<method>.pt`. Progress is
    `on_progress(step, steps, "QAT")`; a stop request raises `Stopped` before anything is written
    (a half-finished QAT run is not a model anyone asked for)."""
    import torch
    from torch.func import functional_call

    from engine.data import prepare
    from engine.data.loader import BatchLoader, eval_batches
    from engine.infer.load import load_model

    check_qat_values(steps, lr)
    model, cfg, ckpt = load_model(exp, "best")
    data = prepare(exp.folder, cfg, ws.resolve(cfg.data.corpus), ws.root / "cache")
    quantized = quantized_params(cfg, method)
    val = eval_batches(data.val_tokens, cfg.train.batch_size, cfg.model.seq_len,
                       cfg.train.eval_batches)
    float_loss = quantized_loss(model, val, {})
    before = quantized_loss(model, val, quantized)
    loader = BatchLoader(data.train_tokens, cfg.train.batch_size, cfg.model.seq_len,
                         cfg.train.seed + 1)
    base_lr = lr if lr is not None else cfg.train.min_lr * 3
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=base_lr,
                            betas=(cfg.train.beta1, cfg.train.beta2), weight_decay=0.0)
    model.train()
    for step in range(steps):
        if should_stop is not None and should_stop():
            raise Stopped(f"QAT stopped on request at step {step} of {steps}; nothing was written "
                          f"({qat_path_name(method)} and the checkpoint are as they were)")
        for group in opt.param_groups:  # cosine from base_lr to 0: settle into the quantization grid
            group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y = loader.next_batch()
        _, loss = functional_call(model, fake_quant_params(model, quantized), (x, y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if on_progress is not None:
            on_progress(step + 1, steps, "QAT")
    after = quantized_loss(model, val, quantized)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint(exp.path(qat_path_name(method)), {
        "model": state, "config": cfg.to_dict(), "model_hash": cfg.model_hash(),
        "tokenizer_sha256": ckpt.get("tokenizer_sha256"), "step": ckpt.get("step", 0),
        "qat": {"method": method, "steps": steps, "lr": base_lr,
                "val_loss_before": before, "val_loss_after": after}})
    return {"method": method, "steps": steps, "float_val_loss": float_loss,
            "val_loss_before": before, "val_loss_after": after}
