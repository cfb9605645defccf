"""Token streams from the numpy reference running an experiment's exported blob: what the board
should say, known before flashing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from engine.errors import UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment

from .export import blob_name


def exported_blob(exp: Experiment, quant: str | None) -> Path:
    quant = quant or exp.config.quant.method
    path = exp.path(blob_name(quant))
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a blob: move it away (`mv {path} {path}.old`) "
                        f"and `tinylm export {exp.name} --quant {quant}`")
    if not path.exists():
        raise UserError(f"'{exp.name}' has no {quant} blob yet: `tinylm export {exp.name} "
                        f"--quant {quant}` first")
    return path


def reference_token_stream(exp: Experiment, prompt: str, params: SamplingParams,
                           quant: str | None) -> tuple[Any, list[int], Iterator[int]]:
    from engine.infer.load import load_tokenizer_for

    from .reference import Reference

    ref = Reference(exported_blob(exp, quant))
    tok = load_tokenizer_for(exp, exp.config)
    ids = tok.encode(prompt, bos=tok.bos_id is not None)
    if len(ids) >= ref.blob.header.seq_len:
        raise UserError(f"the prompt is {len(ids)} tokens; the blob's context is "
                        f"{ref.blob.header.seq_len}: shorten it")
    stream = ref.generate(ids, params, max_new_tokens=params.max_tokens)
    stop = {t for t in (tok.bos_id, tok.eos_id) if t is not None}
    return tok, ids, (t for t in stream if t not in stop)
