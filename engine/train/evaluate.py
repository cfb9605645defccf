"""`tinylm eval`: validation loss, perplexity and bits per byte.

Bits per byte is the number to compare across tokenizers: a bigger vocab lowers loss per token simply
because each token covers more text; dividing by bytes removes that.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from engine.config.schema import ExperimentConfig
from engine.config.workspace import Workspace
from engine.store.experiments import Experiment


def validation_bytes(cfg: ExperimentConfig, ws: Workspace) -> int:
    """UTF-8 bytes of the validation documents: the denominator of bits per byte."""
    from engine.data.corpus import read_corpus, split_documents, train_val_split

    docs = split_documents(read_corpus(ws.resolve(cfg.data.corpus)), cfg.data.format)
    _, val_docs = train_val_split(docs, cfg.data.val_fraction, cfg.data.seed)
    return sum(len(d.encode("utf-8")) for d in val_docs)


def bits_per_byte(loss: float, n_tokens: int, n_bytes: int) -> float:
    return loss / math.log(2) * n_tokens / max(1, n_bytes)


def evaluate(exp: Experiment, ws: Workspace, which: str = "best", max_windows: int = 256,
             on_progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from engine.data import prepare
    from engine.infer.load import load_model

    model, cfg, ckpt = load_model(exp, which)
    corpus = ws.resolve(cfg.data.corpus)
    data = prepare(exp.folder, cfg, corpus, ws.root / "cache", on_progress=on_progress)
    val_bytes = validation_bytes(cfg, ws)

    tokens = np.asarray(data.val_tokens, dtype=np.int64)
    T = cfg.model.seq_len
    n_windows = max(1, min(max_windows, (len(tokens) - 1) // T))
    total_nats, total_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(n_windows):
            chunk = torch.from_numpy(tokens[i * T: i * T + T + 1].copy())
            if len(chunk) < 2:
                break
            x, y = chunk[:-1][None], chunk[1:][None]
            _, loss = model(x, y)
            total_nats += loss.item() * y.numel()
            total_tokens += y.numel()
            if on_progress:
                on_progress("eval", (i + 1) / n_windows)
    loss = total_nats / total_tokens
    return {
        "checkpoint": which, "step": ckpt.get("step"), "val_loss": loss,
        "perplexity": math.exp(loss), "bits_per_byte": bits_per_byte(loss, len(tokens), val_bytes),
        "val_tokens_scored": total_tokens, "val_tokens": len(tokens), "val_bytes": val_bytes,
    }
