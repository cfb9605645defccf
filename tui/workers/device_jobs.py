"""What the Device tab's workers run: read an experiment's deployable state, flash its blob, run a
chat turn — each a plain function over the engine, called inside a Textual thread worker.

Why not in the panel: these are the long calls (torch, esptool, the port), and keeping them free of
Textual keeps the panel a face (messages in, widgets out) and lets a test or a bench call them as
they are. Everything heavy is imported inside the function that needs it (torch costs seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from engine.config.budget import compute
from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Experiment, Store

from .board_link import DeviceSession

QUANTS = ("f32", "int8", "ternary")
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class QuantTarget:
    """One quantization of the experiment: its exported blob (if any) and whether it fits."""
    quant: str
    size: int | None  # bytes of the exported blob; None if not exported
    sha: str  # its sha256 as meta.json recorded it ("" if not exported)
    verdict: str  # the budget's sentence for the experiment's board
    fits: bool
    advice: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """What the Device tab deploys: one experiment, read once (a worker re-reads it after an
    export or a chat turn)."""
    name: str
    board: str  # device.board: the chip a flash must find
    baud: int
    port: str  # device.port ("" = the workspace's default port)
    default_quant: str
    quants: dict[str, QuantTarget]
    turns: list[dict[str, Any]]  # chats/*.jsonl, oldest first (the last TURNS)

    @property
    def blobs(self) -> dict[str, str]:
        return {q: t.sha for q, t in self.quants.items() if t.sha}


TURNS = 50


def load_target(store: Store, name: str) -> Target:
    from engine.chat.transcript import read_turns

    exp = store.load(name)
    cfg = exp.config
    piece_bytes = _piece_bytes(exp)
    quants = {}
    for q in QUANTS:
        b = compute(replace(cfg, quant=replace(cfg.quant, method=q)), None, piece_bytes)
        entry = (exp.meta.get("blobs") or {}).get(q) or {}
        path = exp.path(entry.get("file") or f"model.{q}.bin")
        exported = bool(entry.get("sha256")) and path.exists()
        quants[q] = QuantTarget(q, entry.get("size") if exported else None,
                                entry.get("sha256", "") if exported else "", b.verdict(), b.fits,
                                list(b.advice))
    return Target(name, cfg.device.board, cfg.device.baud, cfg.device.port, cfg.quant.method, quants,
                  read_turns(exp)[-TURNS:])


def _piece_bytes(exp: Experiment) -> int | None:
    """Exact vocabulary bytes once the experiment has a tokenizer (else the budget estimates)."""
    from engine.blob.export import experiment_vocab

    try:
        return experiment_vocab(exp, exp.config).piece_bytes
    except (UserError, OSError):
        return None


# ---- flash ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlashOutcome:
    ok: bool
    text: str


def ensure_blob(store: Store, name: str, quant: str, on_stage: Callable[[str], None]
                ) -> tuple[Experiment, Path, str]:
    """The experiment's exported `quant` blob, exported first when missing or stale."""
    from engine.chat.checks import expected_blob

    exp = store.load(name)
    try:
        path, sha = expected_blob(exp, quant)
    except UserError:
        from engine.blob.export import export

        on_stage(f"exporting the {quant} blob (tinylm export {name} --quant {quant})…")
        export(exp, quant)
        exp = store.load(name)
        path, sha = expected_blob(exp, quant)
    return exp, path, sha


def flash_target(session: DeviceSession, store: Store, target: Target, quant: str, *,
                 on_stage: Callable[[str], None], on_progress: ProgressFn,
                 should_stop: Callable[[], bool]) -> FlashOutcome:
    """Refuse what does not fit, export if needed, write, then check on the board.

    esptool (the ROM bootloader) for serial ports and the download-mode board; the firmware's own
    upload (@UPBEGIN…) for `virtual`, `rv32` and sockets, which have no ROM to talk to."""
    q = target.quants[quant]
    if not q.fits:
        raise UserError(f"{q.verdict}" + (f"; try {'; '.join(q.advice[:3])}" if q.advice else ""))
    exp, blob, sha = ensure_blob(store, target.name, quant, on_stage)
    if session.choice.kind in ("serial", "download"):
        from engine.device.flash import flash_blob

        on_stage(f"flashing {blob.name} through esptool (ROM bootloader)…")
        with session.released() as port:
            r = flash_blob(port, blob, board=target.board, config=exp.config,
                           on_progress=on_progress, should_stop=should_stop)
        text = (f"wrote {r.bytes_written / 1024:.1f} KB at {r.regions[-1].offset:#x} of the "
                f"{r.chip} in {r.write_seconds:.2f} s ({r.kb_per_s:.1f} KB/s), MD5 checked; "
                f"{r.detail}")
        return FlashOutcome(r.verification == "board", text)
    return _upload(session, blob, sha, on_stage, on_progress, should_stop)


def _upload(session: DeviceSession, blob: Path, sha: str, on_stage: Callable[[str], None],
            on_progress: ProgressFn, should_stop: Callable[[], bool]) -> FlashOutcome:
    from engine.device.flash import FlashStopped

    data = blob.read_bytes()

    def progress(done: int, total: int) -> None:
        if should_stop():
            raise FlashStopped(f"upload stopped at {done:,} of {total:,} bytes: the board keeps "
                               "its previous model, or none; flash again")
        on_progress(done, total, "blob")

    on_stage(f"uploading {blob.name} over the protocol (the firmware's own upload)…")
    t0 = time.monotonic()
    with session.exclusive() as link:
        confirmed = link.upload(data, on_progress=progress)
        info = link.info()
    seconds = time.monotonic() - t0
    if session.choice.kind == "rv32":
        session.blob = blob  # qemu loads it again if it has to restart
    head = (f"uploaded {len(data) / 1024:.1f} KB in {seconds:.2f} s "
            f"({len(data) / 1024 / max(seconds, 1e-6):.1f} KB/s)")
    if confirmed != sha or info.get("blob_sha") != sha:
        return FlashOutcome(False, f"{head}, but the board reports sha256 "
                                   f"{info.get('blob_sha', '?')[:12]}…, not {sha[:12]}…: flash "
                                   "again")
    return FlashOutcome(True, f"{head}; verified on the board: INFO reports sha256 {sha[:16]}…")


# ---- chat ----------------------------------------------------------------------------------------

class TokenBatcher:
    """A chat turn's events handed on in batches: the first at once (the time to the first token
    is what people watch), then at most every `every` seconds — a column redraw per token would
    cost a screen layout per token; `flush()` hands on the rest at the end of the turn."""

    def __init__(self, post: Callable[[list[Any]], None], every: float) -> None:
        self.post = post
        self.every = every
        self.pending: list[Any] = []
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        self.pending.append(event)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.flush()

    def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            self.post(events)


def chat_on(session: DeviceSession, store: Store, ws: Workspace, name: str, prompt: str,
            params: SamplingParams, quant: str, *, on_event: Callable[[Any], None],
            should_stop: Callable[[], bool]) -> Any:
    """One three-way turn on the session's board (engine chat_turn, transcript recorded)."""
    from engine.chat.threeway import chat_turn

    exp = store.load(name)
    with session.exclusive() as link:
        return chat_turn(exp, ws, prompt, params, quant=quant, link=link, on_event=on_event,
                         should_stop=should_stop, record=True)
