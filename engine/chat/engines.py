"""Text out of an experiment, from any engine: the float PyTorch checkpoint ("torch"), the numpy
reference of the firmware running the exported blob ("reference"), or a board ("device").

All three stream text pieces, so the CLI prints as tokens arrive and the TUI can put them side by side.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from engine.config.workspace import Workspace
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment


def incremental_text(tokenizer: Any, ids: Iterator[int], prefix: list[int]) -> Iterator[str]:
    """Decode the growing sequence and yield only what is new: a token that is half of a UTF-8
    character yields nothing until the character is complete."""
    seq = list(prefix)
    shown = tokenizer.decode(seq)
    for tok in ids:
        seq.append(tok)
        text = tokenizer.decode(seq)
        if text.endswith("\ufffd"):
            continue  # incomplete multi-byte character: wait for the next token
        if text.startswith(shown):
            yield text[len(shown):]
        shown = text


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer.encode(prompt, bos=tokenizer.bos_id is not None)


def load_torch(exp: Experiment, which: str = "best") -> tuple[Any, Any]:
    """The float model and its tokenizer, loaded once: a caller that samples again and again (the
    app's Samples tab) keeps them instead of paying torch.load per prompt."""
    from engine.infer.load import load_model, load_tokenizer_for

    model, cfg, _ = load_model(exp, which)
    return model, load_tokenizer_for(exp, cfg)


def torch_stream(model: Any, tok: Any, prompt: str, params: SamplingParams,
                 should_stop: Callable[[], bool] | None = None) -> tuple[list[int], Iterator[int]]:
    """Prompt ids and the generated ids of an already loaded model, with the board's stop rules."""
    from engine.infer.sample import generate

    ids = prompt_ids(tok, prompt)
    stops = {t for t in (tok.bos_id,) if t is not None}  # BOS starts a new story: stop, like the board
    return ids, generate(model, ids, params, eos_id=tok.eos_id, stop_ids=stops,
                         should_stop=should_stop)


def torch_token_stream(exp: Experiment, prompt: str, params: SamplingParams,
                       which: str = "best") -> tuple[Any, list[int], Iterator[int]]:
    model, tok = load_torch(exp, which)
    ids, stream = torch_stream(model, tok, prompt, params)
    return tok, ids, stream


def stream_text(exp: Experiment, ws: Workspace, prompt: str, params: SamplingParams,
                engine: str = "torch", quant: str | None = None, port: str | None = None,
                which: str = "best", stats: Any = None) -> Iterator[str]:
    """`stats` (engine "device": a device.run.DeviceStats) is filled with the board's timings."""
    if engine == "torch":
        tok, ids, stream = torch_token_stream(exp, prompt, params, which)
    elif engine == "reference":
        from engine.blob.reference_run import reference_token_stream
        tok, ids, stream = reference_token_stream(exp, prompt, params, quant)
    else:
        from engine.device.run import device_token_stream
        tok, ids, stream = device_token_stream(exp, ws, prompt, params, quant, port, stats)
    yield prompt
    yield from incremental_text(tok, stream, ids)
