"""`tinylm`: the command line. Each subcommand parses flags and calls engine functions; the logic
lives in the engine so the TUI can call the same functions. This module builds the parser from the
subcommand modules and maps errors to exit codes; it is the only one that imports them all.

Exit codes: 0 ok, 2 bad input (the message says what to fix), 1 failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from engine import __version__
from engine.config.workspace import load_workspace
from engine.errors import TinyLMError
from engine.store.experiments import Store

from . import blob, chat, device, experiments, flash, train
from .common import COMMANDS, end_line, warn

# Each module adds its subcommands' parsers, in the order `tinylm --help` lists them (flash after
# blob: it extends blob's `board`).
GROUPS = (experiments, train, blob, flash, device, chat)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinylm", description="Tiny language models, corpus to ESP32.")
    p.add_argument("--version", action="version", version=f"tinylm {__version__}")
    p.add_argument("-w", "--workspace", help="workspace folder (default: $TINYLM_WORKSPACE or .)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad flags: same convention as ours
        return int(e.code or 0)
    try:
        ws = load_workspace(args.workspace)
        store = Store(ws.experiments)
        return COMMANDS[args.command](args, ws, store)
    except TinyLMError as e:
        end_line()
        warn(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        end_line()
        warn("interrupted")
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    sys.exit(main())
