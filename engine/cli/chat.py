"""`tinylm chat NAME --port P (--prompt TEXT | --interactive)`: the three-way chat.
PyTorch, the firmware reference and the board answer the same prompt; the board must
match the reference token for token (engine/chat/threeway.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.config.workspace import Workspace
from engine.errors import Failure, UserError
from engine.store.experiments import Store

from .common import (
    add_sampling_args,
    command,
    out,
    sampling_params,
    warn,
)

LABELS = {"torch": "float checkpoint, PyTorch",
          "reference": "{quant} blob, numpy reference",
          "device": "{quant} blob, board on {port}"}


def _num(x: float | None, fmt: str, unit: str) -> str:
    if x is None:
        return "-" * (len(format(0.0, fmt)) + len(unit))
    return f"{x:{fmt}}{unit}"


def stream_header(name: str, s: Any, quant: str, port: str) -> str:
    """One aligned line per stream: tokens, time to first token, ms/token, tok/s."""
    ttft = None if s.first_token_s is None else s.first_token_s * 1e3
    line = (f"{name:<10} {len(s.ids):>4} tokens  first {_num(ttft, '7.1f', ' ms')}"
            f"  {_num(s.ms_per_token, '6.2f', ' ms/token')}"
            f"  {_num(s.tok_per_s, '8.1f', ' tok/s')}")
    if name == "device" and s.board_tok_per_s:
        line += f"  (board clock {s.board_tok_per_s:,.1f} tok/s)"
    return line + f"  [{LABELS[name].format(quant=quant, port=port)}; {s.reason}]"


def print_turn(r: Any) -> None:
    """The three blocks, then the verdicts: device vs reference, torch vs reference."""
    out(f"prompt: {r.prompt!r} ({len(r.prompt_ids)} tokens)")
    for name, s in r.streams.items():
        out(stream_header(name, s, r.quant, r.port))
        for line in (s.text or "").split("\n"):
            out("  " + line)
    n = len(r.streams["reference"].ids)
    stopped = " (stopped)" if r.stopped else ""
    if r.divergence is None:
        out(f"device = reference for all {n} tokens{stopped}")
    elif r.greedy_mismatch:
        out("BUG (greedy: device and reference must be identical): "
            + r.divergence.describe())
    else:
        out("MISMATCH (the board's sampler is bit-exact with the reference): "
            + r.divergence.describe())
    if r.float_divergence is None:
        out(f"torch = reference for all {n} tokens{stopped}")
    else:
        out(f"torch vs reference (float vs {r.quant}, informational): "
            + r.float_divergence.describe())
    if r.transcript is not None:
        out(f"transcript: {r.transcript}")


class _Ticker:
    """Token counts on one stderr line while a turn streams (on a terminal only)."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.counts = {"torch": 0, "reference": 0, "device": 0}

    def __call__(self, ev: Any) -> None:
        self.counts[ev.stream] = ev.index + 1
        if self.live:
            counts = "  ".join(f"{k} {v}" for k, v in self.counts.items())
            sys.stderr.write("\r" + counts)
            sys.stderr.flush()

    def done(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _turn(exp: Any, ws: Workspace, prompt: str, args: argparse.Namespace,
          **kw: Any) -> Any:
    from engine.chat.threeway import chat_turn

    ticker = _Ticker()
    try:
        r = chat_turn(exp, ws, prompt, sampling_params(args), quant=args.quant,
                      which=args.checkpoint, on_event=ticker, **kw)
    finally:
        ticker.done()
    print_turn(r)
    return r


def _interactive(exp: Any, ws: Workspace, args: argparse.Namespace) -> int:
    """One board for the session (started once for `virtual` / `rv32`), checked once;
    then a prompt per line until EOF or Ctrl-C."""
    from engine.chat.checks import check_board, expected_blob
    from engine.chat.threeway import open_board
    from engine.device.run import resolve_port

    quant = args.quant or exp.config.quant.method
    port = resolve_port(exp, ws, args.port)
    blob, sha = expected_blob(exp, quant)
    with open_board(exp, port, quant, blob) as link:
        check_board(link.info(), exp, quant, sha, port)  # before the first prompt
        warn(f"chatting with '{exp.name}' ({quant}, {port}); Ctrl-D or Ctrl-C ends")
        while True:
            try:
                prompt = input("> ")
            except (EOFError, KeyboardInterrupt):
                out()
                return 0
            try:
                _turn(exp, ws, prompt, args, port=port, link=link)
            except KeyboardInterrupt:  # the streams were stopped; the board is idle
                out()
                return 0
            except UserError as e:  # about this prompt (too long, say): ask again
                warn(f"error: {e}")


@command("chat")
def cmd_chat(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.load(args.name)
    if args.interactive:
        return _interactive(exp, ws, args)
    try:
        r = _turn(exp, ws, args.prompt, args, port=args.port)
    except KeyboardInterrupt:
        warn("interrupted")
        return 130
    if r.greedy_mismatch:
        raise Failure("the board differs from the reference in greedy mode: a firmware "
                      f"bug (recorded in {r.transcript})")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("chat", help="one prompt, three streams side by side: PyTorch, "
                       "the firmware reference, the board")
    s.add_argument("name")
    mode = s.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompt", help="one prompt, then exit")
    mode.add_argument("-i", "--interactive", action="store_true",
                      help="a prompt loop until Ctrl-D / Ctrl-C")
    s.add_argument("--port", help="serial port, socket://host:port, 'virtual' (the "
                   "host firmware on a pty) or 'rv32' (qemu); default: the config's "
                   "device.port, then the workspace's")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"],
                   help="which exported blob (default: the config's quant.method)")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="the torch stream's checkpoint")
    add_sampling_args(s)


