"""Checkpoints: `ckpt.pt` / `best.pt` in an experiment folder.

One dict of plain tensors and Python scalars, so `torch.load(weights_only=True)` reads it (no pickled
classes, nothing executable). Written atomically: a crash or a full disk mid-save leaves the previous
checkpoint intact. Loading checks what users actually hit: a 15-byte "Entry not found" page saved as a
model, a truncated download, a checkpoint of another model shape.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_with
from engine.config.schema import ExperimentConfig, ModelConfig
from engine.errors import UserError

FORMAT = "tinylm-ckpt"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """`payload` must hold "model" (state dict), "config" (asdict of the ExperimentConfig) and
    "model_hash"; optimizer/scheduler/rng/step/data are optional (an imported model has none)."""
    import torch

    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write_with(path, lambda fh: torch.save(payload, fh))


def _describe_bad_file(path: Path, head: bytes) -> str:
    size = path.stat().st_size
    if size < 1024 and head.strip() and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        text = head.decode("ascii", "replace").strip()
        return (f"{path} is a {size}-byte text file ({text[:60]!r}), not a checkpoint: a failed download "
                "saved as a model? Download it again or point at the right file")
    return f"{path} is not a PyTorch checkpoint ({size} bytes, starts with {head[:8]!r})"


def recovery_hint(path: Path) -> str:
    """What to do about a damaged checkpoint, as commands that work when followed."""
    folder, name = path.parent, path.parent.name
    best, last = folder / "best.pt", folder / "ckpt.pt"
    if path.name == "ckpt.pt" and best.exists():
        return (f"go back to the best checkpoint: `cp {best} {path}` then `tinylm resume {name}` "
                "continues from its step")
    if path.name == "best.pt" and last.exists():
        return (f"use the last checkpoint instead (`--checkpoint last`), or `rm {path}` so it is "
                "used by default")
    if path.name in ("ckpt.pt", "best.pt"):
        return f"nothing else to go back to: `rm {path}` then `tinylm train {name}` starts over"
    return "copy or create it again"


def check_checkpoint_file(path: str | Path) -> None:
    """What can be checked without torch: there, a zip archive (torch's format), every member's
    CRC intact. Cheap enough for the CLI to check before it starts a resume."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: train the experiment first (`tinylm train NAME`)")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head.startswith(b"PK"):
        raise UserError(_describe_bad_file(path, head) + f"; {recovery_hint(path)}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} is corrupt")
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(f"{path} is damaged or truncated ({e}); {recovery_hint(path)}") from e


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; every failure is a UserError saying what to do."""
    import torch

    path = Path(path)
    check_checkpoint_file(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path} is damaged or truncated ({e}); {recovery_hint(path)}") from e
    except Exception as e:  # weights_only refusal: pickled classes inside
        if type(e).__name__ == "UnpicklingError":
            raise UserError(f"{path} contains pickled Python objects, which weights_only loading "
                            "refuses for safety; re-export it as plain tensors") from e
        raise
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is a PyTorch file but not a tinylm checkpoint (no 'format': "
                        f"'{FORMAT}'); import llama2.c models with `tinylm import-llama2c`")
    if data.get("version", 0) > VERSION:
        raise UserError(f"{path} is checkpoint format v{data['version']}, newer than this tinylm "
                        f"(v{VERSION}); update tinylm")
    for key in ("model", "config", "model_hash"):
        if key not in data:
            raise UserError(f"{path} has no '{key}' entry; it is incomplete — retrain or re-import")
    return data


def shape_differences(old: dict[str, Any], new: ExperimentConfig, weights_only: bool = False
                      ) -> list[str]:
    """`shape_pairs` as lines: "model.dim: checkpoint 32, config 64"."""
    return [f"{k}: checkpoint {a!r}, config {b!r}"
            for k, (a, b) in shape_pairs(old, new, weights_only).items()]


def shape_pairs(old: dict[str, Any], new: ExperimentConfig, weights_only: bool = False
                ) -> dict[str, tuple[Any, Any]]:
    """Keys that differ between a checkpoint's config and the current one. Resume compares every
    model key (the run must continue the same model); fine-tuning (`weights_only`) compares only what
    fixes the weight shapes, with the SwiGLU width compared as computed (hidden_dim 0 + multiple_of
    4 and an explicit 172 are the same shape)."""
    cur = new.to_dict()
    old_model = ModelConfig(**{k: v for k, v in old.get("model", {}).items()
                               if k in ModelConfig.__dataclass_fields__})
    if weights_only:
        pairs = {"model.arch": (old_model.arch, new.model.arch),
                 "model.dim": (old_model.dim, new.model.dim),
                 "model.n_layers": (old_model.n_layers, new.model.n_layers),
                 "model.n_heads": (old_model.n_heads, new.model.n_heads),
                 "model.n_kv_heads": (old_model.n_kv_heads, new.model.n_kv_heads),
                 "model.hidden_dim (effective)": (old_model.ffn_dim(), new.model.ffn_dim()),
                 "model.tie_embeddings": (old_model.tie_embeddings, new.model.tie_embeddings)}
    else:
        pairs = {f"model.{k}": (old.get("model", {}).get(k), v)
                 for k, v in cur["model"].items() if k != "dropout"}
    for k in ("vocab_size", "kind"):
        pairs[f"tokenizer.{k}"] = (old.get("tokenizer", {}).get(k), cur["tokenizer"][k])
    return {k: (a, b) for k, (a, b) in pairs.items() if a != b}


def to_bytes(payload: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()
