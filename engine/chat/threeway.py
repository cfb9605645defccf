"""The three-way chat: one prompt, three token streams side by side — the float
checkpoint in PyTorch ("torch"), the numpy reference of the firmware running the
exported blob ("reference"), and the board running that same blob ("device").

Why three: reference vs device is the firmware's correctness (they must agree token for
token: the board's arithmetic and sampler are bit-exact with the reference); torch vs
reference is what quantization changed. Each turn is one JSON line in
experiments/NAME/chats/<day>.jsonl (engine/chat/transcript.py).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.blob.format import read_blob
from engine.config.workspace import Workspace
from engine.device.link import DeviceLink
from engine.device.run import BOARD_PORTS, resolve_port, start_board
from engine.errors import UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment

from .align import Divergence, StreamResult, first_divergence
from .checks import check_board, check_tokenizer, expected_blob
from .streams import ChatEvent, Worker, run_device, run_reference, run_torch, stream_all
from .transcript import append_turn

__all__ = ["STREAMS", "ChatEvent", "Divergence", "StreamResult", "TurnResult",
           "chat_turn", "open_board"]

STREAMS = ("torch", "reference", "device")


@dataclass
class TurnResult:
    experiment: str
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    quant: str
    port: str
    blob_sha256: str
    checkpoint: str  # file name of the checkpoint the torch stream ran
    streams: dict[str, StreamResult]  # in STREAMS order
    divergence: Divergence | None  # device vs reference: a firmware bug if not None
    float_divergence: Divergence | None  # torch vs reference: what quantization changed
    stopped: bool  # should_stop() ended the turn early
    setup_s: float  # checks, board start (pseudo ports) and @INFO, before the streams
    started: float = field(default_factory=time.time)
    transcript: Path | None = None

    @property
    def greedy_mismatch(self) -> bool:
        """Greedy decoding leaves no room for chance: any difference is a bug."""
        return self.params.temperature == 0 and self.divergence is not None

    def to_record(self) -> dict[str, Any]:
        when = time.localtime(self.started)
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", when),
            "ts": round(self.started, 3), "experiment": self.experiment,
            "prompt": self.prompt, "prompt_ids": self.prompt_ids,
            "params": asdict(self.params), "quant": self.quant, "port": self.port,
            "blob_sha256": self.blob_sha256, "checkpoint": self.checkpoint,
            "streams": {n: s.to_record() for n, s in self.streams.items()},
            "divergence": self.divergence.to_record() if self.divergence else None,
            "greedy_mismatch": self.greedy_mismatch,
            "float_divergence": (self.float_divergence.to_record()
                                 if self.float_divergence else None),
            "stopped": self.stopped, "setup_ms": round(self.setup_s * 1e3, 3),
        }


@contextlib.contextmanager
def open_board(exp: Experiment, port: str, quant: str, blob: Path,
               ) -> Iterator[DeviceLink]:
    """A DeviceLink on `port`; for a BOARD_PORTS name (`virtual`, `rv32`), on a board
    started with `blob` for as long as the block runs."""
    with contextlib.ExitStack() as stack:
        if port in BOARD_PORTS:
            port = stack.enter_context(start_board(port, blob)).port
        yield stack.enter_context(DeviceLink(port, baud=exp.config.device.baud,
                                             log_path=exp.path("device.log")))


def chat_turn(exp: Experiment, ws: Workspace, prompt: str, params: SamplingParams, *,
              quant: str | None = None, port: str | None = None,
              link: DeviceLink | None = None, which: str = "best",
              on_event: Callable[[ChatEvent], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              record: bool = True) -> TurnResult:
    """One prompt, three streams; returns them aligned and appends the turn to today's
    transcript (unless `record` is False).

    `link`: an open DeviceLink the caller keeps across turns (the app). Without one,
    `port` (default: the experiment's device.port, then the workspace's) is opened for
    the turn; the pseudo ports `virtual` / `rv32` start a board running the blob.
    `on_event` gets every token of every stream on this thread, as it arrives;
    `should_stop` is polled here too, and once True every stream ends at its next token
    (the board gets STOP). Refuses (UserError) a tokenizer that is not the checkpoint's
    and a board that does not run this experiment's `quant` blob.
    """
    from engine.infer.load import checkpoint_path, load_tokenizer_for

    t_setup = time.monotonic()
    quant = quant or exp.config.quant.method
    tok = load_tokenizer_for(exp, exp.config)
    ckpt = checkpoint_path(exp, which)
    check_tokenizer(exp, tok, ckpt)
    blob, sha = expected_blob(exp, quant)
    ctx = read_blob(blob).header.seq_len
    ids = tok.encode(prompt, bos=tok.bos_id is not None)
    if not ids:
        raise UserError("the prompt is empty and this tokenizer has no BOS to start "
                        "from: type something")
    stops = {t for t in (tok.bos_id, tok.eos_id) if t is not None}
    if link is None:
        port = resolve_port(exp, ws, port)
        if not port:
            raise UserError("no port: give --port (a serial port, socket://host:port, "
                            "or 'virtual')")
    port_name = port or (link.port_name if link is not None else "")

    with contextlib.ExitStack() as stack:
        board = (link if link is not None else
                 stack.enter_context(open_board(exp, port_name, quant, blob)))
        info = board.info()
        check_board(info, exp, quant, sha, port_name)
        ctx = min(ctx, int(info.get("ctx") or ctx))  # a board short of RAM runs less
        if len(ids) >= ctx:
            raise UserError(f"the prompt is {len(ids)} tokens; the context is {ctx}: "
                            "shorten it")
        setup_s = time.monotonic() - t_setup
        workers: dict[str, Worker] = {  # the board first: it answers in milliseconds
            "device": lambda emit, stop: run_device(board, ids, params, emit, stop),
            "reference": lambda emit, stop: run_reference(blob, ids, params, stops, ctx,
                                                          emit, stop),
            "torch": lambda emit, stop: run_torch(exp, which, ckpt, ids, params, stops,
                                                  ctx, emit, stop),
        }
        streams, stopped = stream_all(workers, tok, ids, on_event, should_stop)

    s = {n: streams[n] for n in STREAMS}
    result = TurnResult(
        experiment=exp.name, prompt=prompt, prompt_ids=ids, params=params, quant=quant,
        port=port_name, blob_sha256=sha, checkpoint=ckpt.name, streams=s,
        divergence=first_divergence(tok, ids, s["reference"], s["device"],
                                    lengths=not stopped),
        float_divergence=first_divergence(tok, ids, s["reference"], s["torch"],
                                          lengths=not stopped),
        stopped=stopped, setup_s=setup_s)
    if record:
        result.transcript = append_turn(exp, result.to_record())
    return result
