"""What a quantization costs, in the numbers `tinylm quantize` reports: blob bytes, per-tensor SNR,
validation loss and bits per byte with the blob's weights, and agreement with the float model
(share of greedy next tokens the board arithmetic picks the same as PyTorch, over fixed prompts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.config.workspace import Workspace
from engine.store.experiments import Experiment

PROMPTS = ("Once upon a time", "The little dog", "One day, a girl named", "Tom and his mom",
           "The sun was", "She was very happy because", "In the park there was",
           "The cat wanted to", "Lily saw a big", "They played all day and")


def greedy_agreement(model: Any, tokenizer: Any, blob_path: Path, new_tokens: int = 32,
                     prompts: tuple[str, ...] = PROMPTS) -> dict[str, Any]:
    """Teacher-forced: PyTorch (float) writes a greedy continuation; the reference, running the
    blob's exact arithmetic, reads the same tokens and we count the positions where its argmax equals
    PyTorch's choice. Free-running texts drift apart after one difference; this does not."""
    from engine.infer.sample import SamplingParams, generate

    from .reference import Reference

    ref = Reference(blob_path)
    ctx = ref.blob.header.seq_len
    same = total = 0
    for prompt in prompts:
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
    return {"agreement": same / total if total else 0.0, "tokens": total}


def report(exp: Experiment, ws: Workspace, method: str, blob_path: Path,
           on_progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    from engine.data import prepare
    from engine.data.loader import eval_batches
    from engine.infer.load import load_model, load_tokenizer_for
    from engine.train.evaluate import bits_per_byte, validation_bytes

    from .export import numpy_state
    from .qat import qat_state, quantized_loss, quantized_params
    from .quantize import quant_report

    model, cfg, _ = load_model(exp, "best")
    state = numpy_state(model)  # the same checkpoint, not loaded a second time
    data = prepare(exp.folder, cfg, ws.resolve(cfg.data.corpus), ws.root / "cache")
    val = eval_batches(data.val_tokens, cfg.train.batch_size, cfg.model.seq_len,
                       cfg.train.eval_batches)
    n_bytes = validation_bytes(cfg, ws)
    n_tokens = len(data.val_tokens)
    loss_f = quantized_loss(model, val, {})
    qat = qat_state(exp, method)
    if qat is not None:
        import torch
        model.load_state_dict({k: torch.from_numpy(v) for k, v in qat.items()})
        state = qat
    loss_q = quantized_loss(model, val, quantized_params(cfg, method))
    tensors = quant_report(cfg, state, method)
    snrs = [t.snr_db for t in tensors if t.qtype != "f32"]
    tok = load_tokenizer_for(exp, cfg)
    agree = greedy_agreement(model, tok, blob_path)
    return {
        "method": method, "blob_bytes": blob_path.stat().st_size, "qat": qat is not None,
        "float_val_loss": loss_f, "val_loss": loss_q,
        "val_loss_cost": (loss_q - loss_f) / loss_f, "bits_per_byte": bits_per_byte(loss_q, n_tokens, n_bytes),
        "snr_db_min": min(snrs) if snrs else None,
        "snr_db_median": float(np.median(snrs)) if snrs else None,
        "greedy_agreement": agree["agreement"], "agreement_tokens": agree["tokens"],
        "tensors": [{"name": t.name, "qtype": t.qtype, "bytes": t.nbytes,
                     "snr_db": None if t.qtype == "f32" else t.snr_db} for t in tensors],
    }
