"""`tinylm export NAME --quant Q`: checkpoint -> `model.<quant>.bin` (firmware/BLOB.md) in the
experiment, with size and sha256 recorded in meta.json, refused (with the budget numbers) when it will
not fit the configured board."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import budget as budget_mod
from engine.config.schema import ExperimentConfig
from engine.errors import UserError
from engine.store.experiments import Experiment

from .format import BlobInfo, write_blob
from .vocab import Vocab, byte_vocab, from_sentencepiece, read_tokenizer_bin


def blob_name(quant: str) -> str:
    return f"model.{quant}.bin"


def experiment_vocab(exp: Experiment, cfg: ExperimentConfig) -> Vocab:
    """The vocabulary the blob carries: the experiment's own tokenizer, whatever its kind."""
    if cfg.tokenizer.kind == "byte":
        return byte_vocab()
    if exp.path("tokenizer.model").exists():
        return from_sentencepiece(exp.path("tokenizer.model"))
    if exp.path("tokenizer.bin").exists():
        return read_tokenizer_bin(exp.path("tokenizer.bin"), cfg.tokenizer.vocab_size)
    raise UserError(f"'{exp.name}' has no tokenizer.model yet: train it first (`tinylm train "
                    f"{exp.name}`), or import one with the model")


def float_state(exp: Experiment, which: str = "best") -> tuple[dict[str, np.ndarray],
                                                                  ExperimentConfig, dict[str, Any]]:
    """Plain float32 weights by llama2.c name (LoRA merged), the config they belong to, and the
    checkpoint's metadata. QAT weights for a method, when present, are used by `export`."""
    from engine.infer.load import load_model

    model, cfg, ckpt = load_model(exp, which)
    state = numpy_state(model)
    check_finite(state, f"the {which} checkpoint of '{exp.name}'", exp.name)
    return state, cfg, ckpt


def check_finite(state: dict[str, np.ndarray], what: str, name: str) -> None:
    """Refuse weights with NaN or inf: a diverged run's blob makes the board print one token
    forever, and nothing downstream would say why."""
    bad = [k for k, v in state.items() if not np.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError(f"{what} holds non-finite weights (NaN or inf) in {shown}: its training "
                        f"diverged. Export a checkpoint from before that (`--checkpoint best` or "
                        f"`last`, whichever is finite), or retrain with a lower train.lr: "
                        f"`tinylm clone {name} NEW --set train.lr=...` then `tinylm train NEW`")


def numpy_state(model: Any) -> dict[str, np.ndarray]:
    """A model's weights as float32 numpy arrays by llama2.c name (what the blob writer takes)."""
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def check_fits(cfg: ExperimentConfig, vocab: Vocab, quant: str, board: str | None = None) -> None:
    b = budget_mod.compute(cfg, board, piece_bytes=vocab.piece_bytes)
    size = b.blob_bytes[quant]
    ram = budget_mod.runtime_ram(cfg, quant)["total"]
    problems = []
    if size > b.board.flash_model_bytes:
        problems.append(f"the {quant} blob is {budget_mod.fmt_bytes(size)} but the model partition "
                        f"holds {budget_mod.fmt_bytes(b.board.flash_model_bytes)}")
    if ram > b.board.ram_bytes:
        problems.append(f"it needs {budget_mod.fmt_bytes(ram)} of RAM, the board has "
                        f"{budget_mod.fmt_bytes(b.board.ram_bytes)}")
    elif not (placed := budget_mod.place(b.board, budget_mod.runtime_ram(cfg, quant))).ok:
        problems.append(f"its {placed.failed.replace('_', ' ')} needs "
                        f"{budget_mod.fmt_bytes(placed.needed)} in one block, the board's largest "
                        f"free block is {budget_mod.fmt_bytes(placed.largest_left)}")
    if problems:
        tips = "; ".join(b.advice[:3]) or "a smaller model"
        raise UserError(f"will not fit {b.board.name}: " + " and ".join(problems)
                        + f". Try {tips}; or --board host / --force to write it anyway")


def export(exp: Experiment, quant: str | None = None, which: str = "best", force: bool = False,
           board: str | None = None) -> tuple[Path, BlobInfo]:
    from .qat import qat_state

    state, cfg, ckpt = float_state(exp, which)
    # the weights fix the model; where and how it is deployed is today's config, not the checkpoint's
    cfg = replace(cfg, device=exp.config.device, quant=exp.config.quant)
    quant = quant or cfg.quant.method
    qat = qat_state(exp, quant)
    if qat is not None:
        check_finite(qat, f"{exp.path(f'qat.{quant}.pt').name} of '{exp.name}'", exp.name)
        state = qat
    vocab = experiment_vocab(exp, cfg)
    if vocab.size != cfg.tokenizer.vocab_size:
        raise UserError(f"the tokenizer has {vocab.size} tokens but the model's vocabulary is "
                        f"{cfg.tokenizer.vocab_size}: they belong to different models; retrain the "
                        "tokenizer or fix tokenizer.vocab_size")
    if not force:
        check_fits(cfg, vocab, quant, board)
    path = exp.path(blob_name(quant))
    if path.is_dir():
        raise UserError(f"{path} is a folder, so the blob cannot be written there: move it away "
                        f"(`mv {path} {path}.old`) and export again")
    info = write_blob(path, cfg, state, vocab, quant, context_len=exp.config.context_len(),
                      int_attention=cfg.quant.int_attention and quant != "f32")
    blobs = dict(exp.meta.get("blobs") or {})
    blobs[quant] = {"file": path.name, "size": info.size, "sha256": info.sha256,
                    "step": ckpt.get("step"), "qat": qat is not None, "created": time.time()}
    exp.update_meta(blobs=blobs)
    return path, info
