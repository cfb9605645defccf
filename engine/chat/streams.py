"""The three token streams of a chat turn, each in its own thread, delivered in arrival
order to a callback on the caller's thread.

Why threads: the board answers in milliseconds while `import torch` and loading the
checkpoint take seconds; run one after the other, the board's latency would be measured
behind torch. Why the caller's thread for the callback: a UI (or a terminal) then needs
no locking, and `should_stop` is asked from one place only.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.device.errors import PortGone
from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.errors import Failure, TinyLMError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment

from .align import Detok, StreamResult

Emit = Callable[[int, int], None]  # (token id, board µs for it or 0)
Worker = Callable[[Emit, threading.Event], str]  # returns why it ended


@dataclass(frozen=True)
class ChatEvent:
    """One token of one stream, as it arrived."""
    stream: str  # "torch" | "reference" | "device"
    index: int  # 0-based position in the generated text
    token: int
    text: str  # what the token adds to the text ("" while a character is incomplete)
    elapsed_s: float  # since the streams started


def _end_reason(n: int, stop: threading.Event, params: SamplingParams,
                room: int) -> str:
    if n >= params.max_tokens:
        return "max"
    if stop.is_set():
        return "stop"
    return "ctx" if n >= room else "eos"


# ---- torch ---------------------------------------------------------------------------

_MODELS: dict[tuple[str, int, int], Any] = {}
_MODELS_LOCK = threading.Lock()


def _float_model(exp: Experiment, which: str, ckpt: Path) -> Any:
    """The torch model, loaded once per checkpoint file version (the app chats many
    turns; a new checkpoint from a running training replaces it)."""
    from engine.infer.load import load_model

    st = ckpt.stat()
    key = (str(ckpt), st.st_mtime_ns, st.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model at a time
            _MODELS[key] = load_model(exp, which)[0]
        return _MODELS[key]


def run_torch(exp: Experiment, which: str, ckpt: Path, ids: list[int],
              params: SamplingParams, stops: set[int], ctx: int, emit: Emit,
              stop: threading.Event) -> str:
    import torch

    from engine.infer.sample import generate

    # one token at a time through a tiny model: a second OpenMP thread only spin-waits
    # (4x slower beside the board and the reference on 2 cores). The setting is also
    # the default of threads started later, hence the restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _float_model(exp, which, ckpt)
        n = 0
        for tok in generate(model, ids, params, stop_ids=stops, should_stop=stop.is_set,
                            context_len=ctx):
            emit(tok, 0)
            n += 1
    finally:
        torch.set_num_threads(threads)
    return _end_reason(n, stop, params, ctx - len(ids) + 1)


# ---- reference -----------------------------------------------------------------------

def run_reference(blob: Path, ids: list[int], params: SamplingParams, stops: set[int],
                  ctx: int, emit: Emit, stop: threading.Event) -> str:
    from engine.blob.reference import Reference

    ref = Reference(blob, context_len=ctx)
    n = 0
    for tok in ref.generate(ids, params, max_new_tokens=params.max_tokens,
                            stop_ids=stops):
        if tok in stops:
            return "eos"
        emit(tok, 0)
        n += 1
        if stop.is_set():
            break
    return _end_reason(n, stop, params, ctx - len(ids) + 1)


# ---- device --------------------------------------------------------------------------

def run_device(link: DeviceLink, ids: list[int], params: SamplingParams, emit: Emit,
               stop: threading.Event) -> str:
    try:
        for ev in link.generate(prompt_ids=ids, max_tokens=params.max_tokens,
                                temperature=params.temperature, top_k=params.top_k,
                                top_p=params.top_p,
                                repetition_penalty=params.repetition_penalty,
                                seed=params.seed, should_stop=stop.is_set):
            if isinstance(ev, TokenEvent):
                emit(ev.token, ev.us)
            elif isinstance(ev, GenerationSummary):
                return ev.reason
    except (OSError, PortGone) as e:  # the session's PortGone (pyserial's SerialException
        # is an OSError, from a link not on a session): the board went away
        raise Failure(f"lost the board on {link.port_name}: {e}; check the cable, or "
                      "restart the virtual board") from e
    raise Failure(f"the board on {link.port_name} ended the generation without @END")


# ---- running them --------------------------------------------------------------------

def _drain(inbox: queue.Queue, pending: set[str], deadline: float) -> None:
    """Discard events until every pending stream has ended (or the deadline passed)."""
    while pending and time.monotonic() < deadline:
        try:
            kind, name, *_ = inbox.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind != "tok":
            pending.discard(name)


def stream_all(workers: dict[str, Worker], tok: Any, prompt_ids: list[int],
               on_event: Callable[[ChatEvent], None] | None,
               should_stop: Callable[[], bool] | None,
               ) -> tuple[dict[str, StreamResult], bool]:
    """Run each worker in a thread; hand their tokens to on_event on this thread.
    Returns the streams and whether should_stop ended them. A worker's error stops the
    others and is raised here (a TinyLMError as is, anything else as a Failure)."""
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    t0 = time.monotonic()

    def run(name: str, fn: Worker) -> None:
        def emit(token: int, us: int) -> None:
            inbox.put(("tok", name, token, us, time.monotonic() - t0))
        try:
            inbox.put(("end", name, fn(emit, stop), 0, time.monotonic() - t0))
        except BaseException as e:  # handed to the caller's thread, raised there
            inbox.put(("err", name, e, 0, time.monotonic() - t0))

    first = prompt_ids[-1] if prompt_ids else None
    results = {name: StreamResult(name) for name in workers}
    detoks = {name: Detok(tok, first) for name in workers}
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
    except BaseException:  # Ctrl-C, or on_event raised: end the streams (board: STOP)
        stop.set()
        _drain(inbox, pending, deadline=time.monotonic() + 10.0)
        raise
    finally:
        for t in threads:
            t.join(timeout=10.0)
    if isinstance(error, TinyLMError):
        raise error
    if error is not None:
        raise Failure(f"a chat stream failed: {type(error).__name__}: "
                      f"{error}") from error
    return results, user_stopped
