"""The three-way chat: one prompt, three token streams side by side — the float checkpoint in PyTorch
("torch"), the numpy reference of the firmware running the exported blob ("reference"), and the board
running that same blob ("device").

Why three: reference vs device is the firmware's correctness (they must agree token for token: the
board's arithmetic and sampler are bit-exact with the reference), torch vs reference is what the
quantization costs. The streams run in threads so the board's latency is measured on its own, not
behind `import torch`; events reach `on_event` on the caller's thread, in arrival order.

Before anything is generated the turn refuses what would make the comparison meaningless: a tokenizer
that is not the checkpoint's, and a board holding another blob than the experiment's (the message
names the `tinylm flash` command that fixes it).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.blob.export import blob_name
from engine.blob.format import read_blob
from engine.config.workspace import Workspace
from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.device.run import BOARD_PORTS, resolve_port, start_board
from engine.errors import Failure, TinyLMError, UserError
from engine.infer.sample import SamplingParams
from engine.store.ckpt_fields import checkpoint_fields
from engine.store.experiments import Experiment

from .transcript import append_turn

STREAMS = ("torch", "reference", "device")


@dataclass(frozen=True)
class ChatEvent:
    """One token of one stream, as it arrived."""
    stream: str  # "torch" | "reference" | "device"
    index: int  # 0-based position in the generated text
    token: int
    text: str  # what this token adds to the text ("" while a UTF-8 character is incomplete)
    elapsed_s: float  # since the streams started


@dataclass
class StreamResult:
    name: str
    ids: list[int] = field(default_factory=list)
    text: str = ""
    reason: str = ""  # why it ended: max, eos, ctx, stop
    times: list[float] = field(default_factory=list)  # elapsed_s of each token
    elapsed_s: float = 0.0  # when the stream finished
    board_us: int = 0  # device: the board's own µs for the generated tokens

    @property
    def first_token_s(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def ms_per_token(self) -> float | None:
        """Steady-state decode time: first to last token (prompt and model loading excluded)."""
        if len(self.times) < 2:
            return None
        return (self.times[-1] - self.times[0]) * 1e3 / (len(self.times) - 1)

    @property
    def tok_per_s(self) -> float | None:
        ms = self.ms_per_token
        return 1e3 / ms if ms else None

    @property
    def board_tok_per_s(self) -> float | None:
        return len(self.ids) / (self.board_us / 1e6) if self.board_us else None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"ids": self.ids, "text": self.text, "tokens": len(self.ids),
                               "reason": self.reason, "ttft_ms": _ms(self.first_token_s),
                               "ms_per_token": _round(self.ms_per_token),
                               "tok_per_s": _round(self.tok_per_s),
                               "elapsed_ms": _ms(self.elapsed_s)}
        if self.name == "device":
            rec["board_us"] = self.board_us
            rec["board_tok_per_s"] = _round(self.board_tok_per_s)
        return rec


@dataclass(frozen=True)
class Divergence:
    """The first index where stream `b` differs from stream `a` (token None: that stream ended)."""
    index: int
    a: str
    a_token: int | None
    a_text: str
    b: str
    b_token: int | None
    b_text: str

    def to_record(self) -> dict[str, Any]:
        return {"index": self.index, self.a: {"token": self.a_token, "text": self.a_text},
                self.b: {"token": self.b_token, "text": self.b_text}}

    def describe(self) -> str:
        def side(name: str, tok: int | None, text: str) -> str:
            return f"{name} {tok} {text!r}" if tok is not None else f"{name} (ended: {text})"
        return (f"first divergence at token {self.index}: {side(self.a, self.a_token, self.a_text)}"
                f" vs {side(self.b, self.b_token, self.b_text)}")


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
    streams: dict[str, StreamResult]
    divergence: Divergence | None  # device vs reference: a firmware bug whenever not None
    float_divergence: Divergence | None  # torch vs reference: what quantization changed
    stopped: bool  # should_stop() ended the turn early
    setup_s: float  # tokenizer + blob checks, board start (pseudo ports) and INFO, before streams
    started: float = field(default_factory=time.time)
    transcript: Path | None = None

    @property
    def greedy_mismatch(self) -> bool:
        """Greedy decoding leaves no room for chance: any device/reference difference is a bug."""
        return self.params.temperature == 0 and self.divergence is not None

    def to_record(self) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "ts": round(self.started, 3), "experiment": self.experiment, "prompt": self.prompt,
            "prompt_ids": self.prompt_ids, "params": asdict(self.params), "quant": self.quant,
            "port": self.port, "blob_sha256": self.blob_sha256, "checkpoint": self.checkpoint,
            "streams": {n: s.to_record() for n, s in self.streams.items()},
            "divergence": self.divergence.to_record() if self.divergence else None,
            "greedy_mismatch": self.greedy_mismatch,
            "float_divergence": (self.float_divergence.to_record() if self.float_divergence
                                 else None),
            "stopped": self.stopped, "setup_ms": _ms(self.setup_s),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# ---- checks before anything runs -------------------------------------------------------------------

def check_tokenizer(exp: Experiment, tok: Any, ckpt: Path) -> None:
    """The checkpoint records the sha256 of the tokenizer it was trained with; refuse another one."""
    want = checkpoint_fields(ckpt).get("tokenizer_sha256")
    if want and want != tok.sha256:
        raise UserError(f"'{exp.name}': the tokenizer ({tok.sha256}) is not the one {ckpt.name} was "
                        f"trained with ({want}): the same ids would mean other text. Put the "
                        f"training tokenizer.model back in {exp.folder}, or retrain "
                        f"(`tinylm train {exp.name}`) with this one")


def expected_blob(exp: Experiment, quant: str) -> tuple[Path, str]:
    """The exported blob of `quant` and its sha256, as `tinylm export` recorded it in meta."""
    entry = (exp.meta.get("blobs") or {}).get(quant) or {}
    path = exp.path(entry.get("file") or blob_name(quant))
    if not path.exists() or not entry.get("sha256"):
        raise UserError(f"'{exp.name}' has no {quant} blob yet: `tinylm export {exp.name} --quant "
                        f"{quant}` first")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != entry["sha256"]:
        raise UserError(f"{path} (sha256 {actual[:12]}…) is not the blob `tinylm export` recorded "
                        f"({entry['sha256'][:12]}…): export it again (`tinylm export {exp.name} "
                        f"--quant {quant}`)")
    return path, actual


def check_board(info: dict[str, str], exp: Experiment, quant: str, sha: str, port: str) -> None:
    """Refuse a board whose model is not this experiment's `quant` blob."""
    board_sha = info.get("blob_sha", "")
    if board_sha == sha:
        return
    fix = f"`tinylm flash {exp.name} --quant {quant} --port {port}`"
    if not board_sha:
        raise UserError(f"the board on {port} does not report its blob's sha256 (old firmware?), so "
                        f"it cannot be checked to run '{exp.name}': flash the current firmware and "
                        f"the model with {fix}")
    known = [q for q, e in (exp.meta.get("blobs") or {}).items() if e.get("sha256") == board_sha]
    what = (f"the {known[0]} blob of '{exp.name}'" if known else
            f"another model ({info.get('quant', '?')}, vocab {info.get('vocab', '?')}, "
            f"dim {info.get('dim', '?')})")
    raise UserError(f"the board on {port} runs {what} (sha256 {board_sha[:12]}…), not the "
                    f"{quant} blob of '{exp.name}' ({sha[:12]}…); refusing to chat against the "
                    f"wrong model. Flash it: {fix}")


@contextlib.contextmanager
def open_board(exp: Experiment, port: str, quant: str, blob: Path) -> Iterator[DeviceLink]:
    """A DeviceLink on `port`; for a BOARD_PORTS name, on a board started for the duration."""
    with contextlib.ExitStack() as stack:
        if port in BOARD_PORTS:
            port = stack.enter_context(start_board(port, blob)).port
        link = stack.enter_context(DeviceLink(port, baud=exp.config.device.baud,
                                              log_path=exp.path("device.log")))
        yield link


# ---- the streams -----------------------------------------------------------------------------------

_MODELS: dict[tuple[str, int, int], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


def _float_model(exp: Experiment, which: str, ckpt: Path) -> Any:
    """The torch model, loaded once per checkpoint file version (the app chats many turns)."""
    from engine.infer.load import load_model

    st = ckpt.stat()
    key = (str(ckpt), st.st_mtime_ns, st.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model at a time: the previous one is not coming back
            _MODELS[key] = load_model(exp, which)[:2]
        return _MODELS[key][0]


def _end_reason(n: int, stop: threading.Event, params: SamplingParams, room: int) -> str:
    if n >= params.max_tokens:
        return "max"
    if stop.is_set():
        return "stop"
    return "ctx" if n >= room else "eos"


Emit = Callable[[int, int], None]  # (token, board µs)


def _run_torch(exp: Experiment, which: str, ckpt: Path, ids: list[int], params: SamplingParams,
               stops: set[int], ctx: int, emit: Emit, stop: threading.Event) -> str:
    import torch

    from engine.infer.sample import generate

    # one token at a time through a tiny model: a second OpenMP thread only spin-waits (4x slower
    # beside the board and the reference on 2 cores). The setting is this thread's own.
    torch.set_num_threads(1)
    model = _float_model(exp, which, ckpt)
    n = 0
    for tok in generate(model, ids, params, stop_ids=stops, should_stop=stop.is_set,
                        context_len=ctx):
        emit(tok, 0)
        n += 1
    return _end_reason(n, stop, params, ctx - len(ids) + 1)


def _run_reference(blob: Path, ids: list[int], params: SamplingParams, stops: set[int],
                   ctx: int, emit: Emit, stop: threading.Event) -> str:
    from engine.blob.reference import Reference

    ref = Reference(blob, context_len=ctx)
    n = 0
    for tok in ref.generate(ids, params, max_new_tokens=params.max_tokens, stop_ids=stops):
        if tok in stops:
            return "eos"
        emit(tok, 0)
        n += 1
        if stop.is_set():
            break
    return _end_reason(n, stop, params, ref.context_len - len(ids) + 1)


def _run_device(link: DeviceLink, ids: list[int], params: SamplingParams, emit: Emit,
                stop: threading.Event) -> str:
    try:
        for ev in link.generate(prompt_ids=ids, max_tokens=params.max_tokens,
                                temperature=params.temperature, top_k=params.top_k,
                                top_p=params.top_p, repetition_penalty=params.repetition_penalty,
                                seed=params.seed, should_stop=stop.is_set):
            if isinstance(ev, TokenEvent):
                emit(ev.token, ev.us)
            elif isinstance(ev, GenerationSummary):
                return ev.reason
    except OSError as e:  # pyserial's SerialException is one: the board went away
        raise Failure(f"lost the board on {link.port_name}: {e}; check the cable, or restart the "
                      "virtual board") from e
    raise Failure(f"the board on {link.port_name} ended the generation without @END")


class _Detok:
    """Token ids -> text pieces, streaming: the bytes each token adds (as the firmware decodes them),
    through an incremental UTF-8 decoder so a character split over tokens comes out whole."""

    def __init__(self, tok: Any, prev: int | None) -> None:
        self.tok = tok
        self.prev = prev
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        data = self.tok.decode_piece(self.prev, token)
        self.prev = token
        return self.utf8.decode(data)

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def token_text(tok: Any, prev: int | None, token: int) -> str:
    return tok.decode_piece(prev, token).decode("utf-8", errors="replace")


def first_divergence(tok: Any, prompt_ids: list[int], a: StreamResult, b: StreamResult,
                     *, lengths: bool = True) -> Divergence | None:
    """First index where b's token differs from a's. With `lengths`, one ending before the other
    counts too (its token is None, its text the reason it ended)."""
    last = prompt_ids[-1] if prompt_ids else None
    for i, (x, y) in enumerate(zip(a.ids, b.ids, strict=False)):
        if x != y:
            prev = a.ids[i - 1] if i else last
            return Divergence(i, a.name, x, token_text(tok, prev, x), b.name, y,
                              token_text(tok, prev, y))
    n = min(len(a.ids), len(b.ids))
    if not lengths or len(a.ids) == len(b.ids):
        return None
    prev = a.ids[n - 1] if n else last
    side = lambda s: ((s.ids[n], token_text(tok, prev, s.ids[n])) if len(s.ids) > n  # noqa: E731
                      else (None, s.reason or "ended"))
    (at, atext), (bt, btext) = side(a), side(b)
    return Divergence(n, a.name, at, atext, b.name, bt, btext)


def _drain(inbox: queue.Queue, pending: set[str], deadline: float) -> None:
    """Discard events until every pending stream has ended (or the deadline passes)."""
    while pending and time.monotonic() < deadline:
        try:
            kind, name, *_ = inbox.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind != "tok":
            pending.discard(name)


def _stream_all(workers: dict[str, Callable[[Emit, threading.Event], str]],
                tok: Any, prompt_ids: list[int], on_event: Callable[[ChatEvent], None] | None,
                should_stop: Callable[[], bool] | None) -> tuple[dict[str, StreamResult], bool]:
    """Run each worker in its own thread; deliver their tokens to on_event on this thread."""
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    t0 = time.monotonic()

    def run(name: str, fn: Callable[[Emit, threading.Event], str]) -> None:
        def emit(token: int, us: int) -> None:
            inbox.put(("tok", name, token, us, time.monotonic() - t0))
        try:
            inbox.put(("end", name, fn(emit, stop), None, time.monotonic() - t0))
        except BaseException as e:  # handed to the caller's thread, re-raised there
            inbox.put(("err", name, e, None, time.monotonic() - t0))

    results = {name: StreamResult(name) for name in workers}
    detoks = {name: _Detok(tok, prompt_ids[-1] if prompt_ids else None) for name in workers}
    threads = [threading.Thread(target=run, args=(n, fn), name=f"chat-{n}", daemon=True)
               for n, fn in workers.items()]
    for t in threads:
        t.start()
    pending, error, user_stopped = set(workers), None, False
    try:
        while pending:
            if should_stop is not None and not stop.is_set() and should_stop():
                stop.set()
                user_stopped = True
            try:
                kind, name, value, us, at = inbox.get(timeout=0.02)
            except queue.Empty:
                continue
            res = results[name]
            if kind == "tok":
                piece = detoks[name].push(value)
                res.ids.append(value)
                res.text += piece
                res.times.append(at)
                res.board_us += us
                if on_event is not None:
                    on_event(ChatEvent(name, len(res.ids) - 1, value, piece, at))
                continue
            pending.discard(name)
            res.elapsed_s = at
            res.text += detoks[name].flush()
            if kind == "end":
                res.reason = value
            elif error is None:
                error = value
                stop.set()  # one stream failed: end the others, then report it
    except BaseException:  # Ctrl-C, or on_event raised: stop the streams (the board gets STOP)
        stop.set()
        _drain(inbox, pending, deadline=time.monotonic() + 10.0)
        raise
    finally:
        for t in threads:
            t.join(timeout=10.0)
    if error is not None:
        if isinstance(error, TinyLMError):
            raise error
        raise Failure(f"a chat stream failed: {type(error).__name__}: {error}") from error
    return results, user_stopped


# ---- one turn --------------------------------------------------------------------------------------

def chat_turn(exp: Experiment, ws: Workspace, prompt: str, params: SamplingParams, *,
              quant: str | None = None, port: str | None = None, link: DeviceLink | None = None,
              which: str = "best", on_event: Callable[[ChatEvent], None] | None = None,
              should_stop: Callable[[], bool] | None = None, record: bool = True) -> TurnResult:
    """One prompt, three streams; returns the aligned result and appends it to the transcript.

    `link`: an open DeviceLink the caller keeps across turns (the app); otherwise `port` (default:
    the experiment's device.port, then the workspace's) is opened for this turn, and the pseudo ports
    `virtual` / `rv32` start a board running the experiment's blob. `should_stop` is polled on this
    thread; once it returns True every stream ends at its next token (the board gets STOP).
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
        raise UserError("the prompt is empty and this tokenizer has no BOS to start from: type "
                        "something")
    if len(ids) >= ctx:
        raise UserError(f"the prompt is {len(ids)} tokens; the blob's context is {ctx}: shorten it")
    stops = {t for t in (tok.bos_id, tok.eos_id) if t is not None}
    if link is None:
        port = resolve_port(exp, ws, port)
        if not port:
            raise UserError("no port: give --port (a serial port, socket://host:port, or 'virtual')")
    port_name = port or link.port_name  # type: ignore[union-attr]

    with contextlib.ExitStack() as stack:
        if link is None:
            link = stack.enter_context(open_board(exp, port_name, quant, blob))
        info = link.info()
        check_board(info, exp, quant, sha, port_name)
        ctx = min(ctx, int(info.get("ctx") or ctx))  # a board short of RAM may run a shorter one
        if len(ids) >= ctx:
            raise UserError(f"the prompt is {len(ids)} tokens; the board's context is {ctx}: "
                            "shorten it")
        setup_s = time.monotonic() - t_setup
        board = link
        workers: dict[str, Callable[[Emit, threading.Event], str]] = {
            # the board first: it answers in milliseconds, torch may still be importing
            "device": lambda emit, stop: _run_device(board, ids, params, emit, stop),
            "reference": lambda emit, stop: _run_reference(blob, ids, params, stops, ctx, emit,
                                                           stop),
            "torch": lambda emit, stop: _run_torch(exp, which, ckpt, ids, params, stops, ctx,
                                                   emit, stop),
        }
        streams, stopped = _stream_all(workers, tok, ids, on_event, should_stop)

    ordered = {n: streams[n] for n in STREAMS}
    result = TurnResult(
        experiment=exp.name, prompt=prompt, prompt_ids=ids, params=params, quant=quant,
        port=port_name, blob_sha256=sha, checkpoint=ckpt.name, streams=ordered,
        divergence=first_divergence(tok, ids, ordered["reference"], ordered["device"],
                                    lengths=not stopped),
        float_divergence=first_divergence(tok, ids, ordered["reference"], ordered["torch"],
                                          lengths=not stopped),
        stopped=stopped, setup_s=setup_s)
    if record:
        result.transcript = append_turn(exp, result.to_record())
    return result
