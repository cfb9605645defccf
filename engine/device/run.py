"""Token streams from a board (real, virtual or emulated) running an experiment's blob."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment

from .link import DeviceLink, GenerationSummary, TokenEvent

# --port values that start a board for the one command instead of naming one
BOARD_PORTS = {"virtual": "the host firmware on a pty", "rv32": "the rv32 firmware under qemu"}


@dataclass
class DeviceStats:
    """What the board measured, filled in as the generation streams (the CLI prints it after)."""
    tokens: int = 0
    us: int = 0  # board-measured µs of the generated tokens
    instructions: list[int] = field(default_factory=list)  # per token, rv32 under qemu only

    @property
    def tok_per_s(self) -> float:
        return self.tokens / (self.us / 1e6) if self.us else 0.0

    @property
    def instructions_per_token(self) -> float:
        """Mean over the second half of the tokens (attention grows with the position; the first
        tokens also carry the prompt's cache fill), 0 when the board does not count them."""
        tail = [i for i in self.instructions[len(self.instructions) // 2:] if i > 0]
        return sum(tail) / len(tail) if tail else 0.0


def resolve_port(exp: Experiment, ws: Workspace, port: str | None) -> str:
    return port or exp.config.device.port or ws.default_port


def start_board(port: str, blob: Any) -> Any:
    """The board a BOARD_PORTS name stands for, serving `blob` (a context manager with .port)."""
    if port == "virtual":
        from .virtual import VirtualBoard
        return VirtualBoard(blob=blob)
    from .emulated import EmulatedBoard
    return EmulatedBoard(blob)


def device_events(link: DeviceLink, ids: list[int], params: SamplingParams,
                  ) -> Iterator[TokenEvent | GenerationSummary]:
    return link.generate(prompt_ids=ids, max_tokens=params.max_tokens,
                         temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                         repetition_penalty=params.repetition_penalty, seed=params.seed)


def device_token_stream(exp: Experiment, ws: Workspace, prompt: str, params: SamplingParams,
                        quant: str | None, port: str | None, stats: DeviceStats | None = None,
                        ) -> tuple[Any, list[int], Iterator[int]]:
    from engine.blob.reference_run import exported_blob
    from engine.infer.load import load_tokenizer_for

    tok = load_tokenizer_for(exp, exp.config)
    ids = tok.encode(prompt, bos=tok.bos_id is not None)
    port = resolve_port(exp, ws, port)

    def stream() -> Iterator[int]:
        if port in BOARD_PORTS:
            with start_board(port, exported_blob(exp, quant)) as board:
                yield from _tokens(board.port, exp, ids, params, stats)
        else:
            yield from _tokens(port, exp, ids, params, stats)

    return tok, ids, stream()


def _tokens(port: str, exp: Experiment, ids: list[int], params: SamplingParams,
            stats: DeviceStats | None) -> Iterator[int]:
    with DeviceLink(port, baud=exp.config.device.baud, log_path=exp.path("device.log")) as link:
        info = link.info()  # answered once booted; a board that booted long ago answers at once
        vocab = int(info.get("vocab", 0))
        if vocab != exp.config.tokenizer.vocab_size:
            raise UserError(f"the board's model has a vocabulary of {vocab} but '{exp.name}' has "
                            f"{exp.config.tokenizer.vocab_size}: write this experiment's blob "
                            "to the board's model partition (firmware/README.md: esptool.py write_flash "
                            "0x110000 <blob>, or an upload over the protocol) or pick the right experiment")
        ctx = int(info.get("ctx", 0))
        if ctx and len(ids) >= ctx:
            raise UserError(f"the prompt is {len(ids)} tokens but the board's context is {ctx} (room "
                            "for the prompt and at least one token): shorten the prompt, or export "
                            "with a longer device.context_len")
        for event in device_events(link, ids, params):
            if isinstance(event, TokenEvent):
                if stats is not None:
                    stats.tokens += 1
                    stats.us += event.us
                    stats.instructions.append(event.instructions)
                yield event.token
