"""What every `tinylm` subcommand module shares: the command registry, output helpers and the table
layout. Subcommand modules import this; only engine/cli/main.py imports them, so there is no cycle."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from engine.config.workspace import Workspace
from engine.store.experiments import Store

Handler = Callable[[argparse.Namespace, Workspace, Store], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return register


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The sampling flags of every generating command (`sample`, `chat`), one set of
    defaults; `sampling_params(args)` makes them an engine SamplingParams."""
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--max-tokens", type=int, default=128)


def sampling_params(args: argparse.Namespace) -> Any:
    """The sampling flags as SamplingParams, refused with every problem named (the app shows the
    same problems inline: engine/infer/params.py sampling_problems)."""
    from engine.errors import UserError
    from engine.infer.params import SamplingParams, sampling_problems

    params = SamplingParams(temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                            seed=args.seed, max_tokens=args.max_tokens)
    problems = sampling_problems(params)
    if problems:
        raise UserError("sampling settings: " + "; ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in problems.items()))
    return params


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def warn(text: str) -> None:
    sys.stderr.write(text + "\n")


_line_open = False  # stream() left stdout mid-line


def stream(text: str) -> None:
    """Print a piece of a line as it comes (tokens), remembering whether the line is still open so
    an error printed next starts on a line of its own (not `Once upon aerror: ...`)."""
    global _line_open
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
        _line_open = not text.endswith("\n")


def end_line() -> None:
    """Finish a line stream() left open."""
    global _line_open
    if _line_open:
        sys.stdout.write("\n")
        sys.stdout.flush()
        _line_open = False


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def serve_until_stopped(ws: Workspace, entry: Any, banner: str) -> int:
    """A board `tinylm board` started: listed in the workspace registry (`tinylm ports`, the app's
    port picker) while it runs, `banner` printed, then wait for Ctrl-C, a kill or its terminal
    closing (SIGHUP), and unregister. Signals are blocked and waited for, so every one of them
    ends here and the caller's `with board:` stops the board and cleans up its files."""
    import signal

    from engine.device import boards

    registered = boards.register(ws.root, entry)
    try:
        out(banner)
        sys.stdout.flush()
        stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    finally:
        boards.unregister(registered)
    return 0
