"""Token streams from a board (real, virtual or emulated) running an experiment's blob."""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import UserError
from ..sample import SamplingParams
from ..store import Experiment
from ..workspace import Workspace
from .link import DeviceLink, GenerationSummary, TokenEvent


def resolve_port(exp: Experiment, ws: Workspace, port: str | None) -> str:
    return port or exp.config.device.port or ws.default_port


def device_events(link: DeviceLink, ids: list[int], params: SamplingParams,
                  ) -> Iterator[TokenEvent | GenerationSummary]:
    return link.generate(prompt_ids=ids, max_tokens=params.max_tokens,
                         temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                         repetition_penalty=params.repetition_penalty, seed=params.seed)


def device_token_stream(exp: Experiment, ws: Workspace, prompt: str, params: SamplingParams,
                        quant: str | None, port: str | None) -> tuple[Any, list[int], Iterator[int]]:
    from ..inference import load_tokenizer_for
    from ..reference_run import exported_blob

    tok = load_tokenizer_for(exp, exp.config)
    ids = tok.encode(prompt, bos=tok.bos_id is not None)
    port = resolve_port(exp, ws, port)

    def stream() -> Iterator[int]:
        if port == "virtual":
            from .virtual import VirtualBoard

            with VirtualBoard(blob=exported_blob(exp, quant)) as board:
                yield from _tokens(board.port, exp, ids, params)
        else:
            yield from _tokens(port, exp, ids, params)

    return tok, ids, stream()


def _tokens(port: str, exp: Experiment, ids: list[int], params: SamplingParams) -> Iterator[int]:
    with DeviceLink(port, baud=exp.config.device.baud, log_path=exp.path("device.log")) as link:
        info = link.info()  # answered once booted; a board that booted long ago answers at once
        vocab = int(info.get("vocab", 0))
        if vocab != exp.config.tokenizer.vocab_size:
            raise UserError(f"the board's model has a vocabulary of {vocab} but '{exp.name}' has "
                            f"{exp.config.tokenizer.vocab_size}: flash this experiment's blob "
                            f"(`tinylm flash {exp.name}`) or pick the right experiment")
        for event in device_events(link, ids, params):
            if isinstance(event, TokenEvent):
                yield event.token
