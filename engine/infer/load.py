"""Load a trained experiment for inference (sampling, eval, export), checking that the checkpoint
belongs to this experiment: its model shape must be config.toml's (the config is the truth) and it
must have been trained with the experiment's tokenizer. Both checks live in `check_checkpoint`, which
resume, sample, eval, export and chat all go through, so a dim-32 ckpt.pt in a dim-64 experiment or a
tokenizer.model copied from elsewhere is refused everywhere with the same message instead of
sampling garbage."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.config.schema import ExperimentConfig
from engine.errors import UserError
from engine.store.checkpoint import load_checkpoint, shape_pairs
from engine.store.experiments import Experiment


def checkpoint_path(exp: Experiment, which: str = "best") -> Path:
    """"best" falls back to the latest when no eval has run yet (and vice versa)."""
    order = ["best.pt", "ckpt.pt"] if which == "best" else ["ckpt.pt", "best.pt"]
    for name in order:
        if exp.path(name).exists():
            return exp.path(name)
    raise UserError(f"'{exp.name}' has no checkpoint yet: `tinylm train {exp.name}` first")


def tokenizer_sha256(exp: Experiment, cfg: ExperimentConfig) -> str | None:
    """The sha256 a checkpoint trained with this experiment's tokenizer records (the tokenizer's own
    `sha256`), without loading sentencepiece; None when there is no tokenizer file yet."""
    if cfg.tokenizer.kind == "byte":
        from engine.data.tokenizer import ByteTokenizer
        return ByteTokenizer.sha256
    path = exp.path("tokenizer.model")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, str) else str(v)


def check_shape(exp: Experiment, ckpt: dict[str, Any], path: Path,
                cfg: ExperimentConfig | None = None) -> None:
    """Refuse a checkpoint whose model differs from config.toml, naming every differing key and the
    `tinylm set` that puts the checkpoint's values back."""
    cfg = cfg or exp.config
    pairs = shape_pairs(ckpt["config"], cfg)
    if not pairs:
        return
    lines = "\n  ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in pairs.items())
    put_back = " ".join(f"{k}={_toml_value(a)}" for k, (a, _) in pairs.items())
    weights_fit = not shape_pairs(ckpt["config"], cfg, weights_only=True)
    reuse = (f", or `tinylm train NEW --init-from {exp.name}` to fine-tune these weights in it"
             if weights_fit else "")
    raise UserError(
        f"{path.name} of '{exp.name}' is a checkpoint of another model than config.toml "
        f"describes:\n  {lines}\nthe config is the truth: put the checkpoint's values back with "
        f"`tinylm set {exp.name} {put_back}`, or keep the new config in a new experiment: "
        f"`tinylm clone {exp.name} NEW` then `tinylm train NEW` (from scratch){reuse}")


def check_tokenizer(exp: Experiment, ckpt: dict[str, Any], path: Path,
                    cfg: ExperimentConfig | None = None) -> None:
    """Refuse a checkpoint trained with another tokenizer than the experiment's: the same vocab size
    can mean entirely other text per id. Checkpoints that record no tokenizer (older imports) pass."""
    want = ckpt.get("tokenizer_sha256")
    have = tokenizer_sha256(exp, cfg or exp.config)
    if not want or not have or want == have:
        return
    raise UserError(
        f"{path.name} of '{exp.name}' was trained with another tokenizer: the checkpoint records "
        f"tokenizer sha256 {want[:16]}…, but {exp.path('tokenizer.model')} has sha256 "
        f"{have[:16]}…, so every token id would mean other text. Fix: put back the tokenizer.model "
        f"the model was trained with, or train a model for this tokenizer: `tinylm clone {exp.name} "
        "NEW` then `tinylm train NEW`")


def check_checkpoint(exp: Experiment, ckpt: dict[str, Any], path: Path,
                     cfg: ExperimentConfig | None = None) -> None:
    """Where a checkpoint meets an experiment (resume, sample, eval, export, chat): the same shape
    as config.toml, and the same tokenizer. Raises UserError (exit 2) naming what differs.
    `ckpt` is the loaded checkpoint, or store.ckpt_fields.checkpoint_fields(path) (no torch)."""
    check_shape(exp, ckpt, path, cfg)
    check_tokenizer(exp, ckpt, path, cfg)


def load_model(exp: Experiment, which: str = "best") -> tuple[Any, ExperimentConfig, dict]:
    """The model (eval mode, CPU, LoRA merged), after `check_checkpoint`; the config returned is
    the experiment's (which the checkpoint was just checked to match)."""
    from engine.models import build_model

    path = checkpoint_path(exp, which)
    ckpt = load_checkpoint(path)
    cfg = exp.config
    check_checkpoint(exp, ckpt, path, cfg)
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
