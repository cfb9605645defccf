"""What a chat turn refuses before anything is generated: a comparison against the wrong
model is worse than none.

- the tokenizer must be the one the checkpoint was trained with (the checkpoint records
  its sha256; read without torch, so a refusal costs milliseconds);
- the blob must be the one `tinylm export` recorded in meta.json;
- the board must run exactly that blob (@INFO blob_sha), or the message names the
  `tinylm flash` command that puts it there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.blob.export import blob_name
from engine.errors import UserError
from engine.store.ckpt_fields import checkpoint_fields
from engine.store.experiments import Experiment


def check_tokenizer(exp: Experiment, tok: Any, ckpt: Path) -> None:
    """Refuse a tokenizer whose sha256 is not the one the checkpoint recorded (imported
    checkpoints record none: nothing to check)."""
    want = checkpoint_fields(ckpt).get("tokenizer_sha256")
    if want and want != tok.sha256:
        raise UserError(
            f"'{exp.name}': the tokenizer ({tok.sha256}) is not the one {ckpt.name} "
            f"was trained with ({want}): the same ids would mean other text. Put the "
            f"training tokenizer.model back in {exp.folder}, or train a copy with this one "
            f"(`tinylm clone {exp.name} NEW` then `tinylm train NEW`)")


def expected_blob(exp: Experiment, quant: str) -> tuple[Path, str]:
    """The exported blob of `quant` and its sha256, checked against meta.json."""
    entry = (exp.meta.get("blobs") or {}).get(quant) or {}
    path = exp.path(entry.get("file") or blob_name(quant))
    if not path.exists() or not entry.get("sha256"):
        raise UserError(f"'{exp.name}' has no {quant} blob yet: `tinylm export "
                        f"{exp.name} --quant {quant}` first")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != entry["sha256"]:
        raise UserError(
            f"{path} (sha256 {actual[:12]}…) is not the blob `tinylm export` recorded "
            f"({entry['sha256'][:12]}…): export it again (`tinylm export {exp.name} "
            f"--quant {quant}`)")
    return path, actual


def check_board(info: dict[str, str], exp: Experiment, quant: str, sha: str,
                port: str) -> None:
    """Refuse a board (its @INFO fields) whose model is not this experiment's blob."""
    board_sha = info.get("blob_sha", "")
    if board_sha == sha:
        return
    fix = f"`tinylm flash {exp.name} --quant {quant} --port {port}`"
    if not board_sha:
        raise UserError(
            f"the board on {port} does not report its blob's sha256 (old firmware?), "
            f"so it cannot be checked to run '{exp.name}': flash the current firmware "
            f"and the model with {fix}")
    blobs = exp.meta.get("blobs") or {}
    known = [q for q, e in blobs.items() if e.get("sha256") == board_sha]
    what = (f"the {known[0]} blob of '{exp.name}'" if known else
            f"another model ({info.get('quant', '?')}, vocab {info.get('vocab', '?')}, "
            f"dim {info.get('dim', '?')})")
    raise UserError(
        f"the board on {port} runs {what} (sha256 {board_sha[:12]}…), not the {quant} "
        f"blob of '{exp.name}' ({sha[:12]}…); refusing to chat against the wrong "
        f"model. Flash it: {fix}")
