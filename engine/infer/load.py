"""Load a trained experiment for inference (sampling, eval, export), checking that the tokenizer
and the checkpoint belong to the same model — the vocab-mismatch IndexError our users hit is caught
here with both sizes named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config.schema import ExperimentConfig, from_dict
from engine.errors import UserError
from engine.store.checkpoint import load_checkpoint
from engine.store.experiments import Experiment


def checkpoint_path(exp: Experiment, which: str = "best") -> Path:
    """"best" falls back to the latest when no eval has run yet (and vice versa)."""
    order = ["best.pt", "ckpt.pt"] if which == "best" else ["ckpt.pt", "best.pt"]
    for name in order:
        if exp.path(name).exists():
            return exp.path(name)
    raise UserError(f"'{exp.name}' has no checkpoint yet: `tinylm train {exp.name}` first")


def load_model(exp: Experiment, which: str = "best") -> tuple[Any, ExperimentConfig, dict]:
    """The model (eval mode, CPU, LoRA merged) rebuilt from the checkpoint's own config."""
    from engine.models import build_model

    ckpt = load_checkpoint(checkpoint_path(exp, which))
    cfg = from_dict(ckpt["config"], source=f"{exp.name} checkpoint config")
    model = build_model(cfg)
    state = ckpt["model"]
    lora = int(ckpt.get("lora_rank") or 0)
    if lora:
        from engine.models.lora import apply_lora, merge_lora
        apply_lora(model, lora)
        model.load_state_dict(state)
        merge_lora(model)
    else:
        model.load_state_dict(state)
    model.eval()
    return model, cfg, ckpt


def load_tokenizer_for(exp: Experiment, cfg: ExperimentConfig) -> Any:
    from engine.data.tokenizer import check_vocab, load_tokenizer

    tok = load_tokenizer(exp.folder, cfg.tokenizer)
    check_vocab(tok, cfg.tokenizer.vocab_size)
    return tok
