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


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; every failure is a UserError saying what to do."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: train the experiment first (`tinylm train NAME`)")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head.startswith(b"PK"):
        raise UserError(_describe_bad_file(path, head))
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} is corrupt")
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path} is damaged or truncated ({e}); resume from best.pt, or retrain") from e
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


def to_bytes(payload: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()
