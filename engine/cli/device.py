"""`tinylm` subcommands for boards on ports: ports (what is plugged in or running), monitor (what a
board prints)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from typing import Any, Iterator

from engine.config.workspace import Workspace
from engine.errors import TinyLMError, UserError
from engine.store.experiments import Store

from .common import command, out, table, warn

CTRL_R = b"\x12"


@command("ports")
def cmd_ports(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.device.ports import list_ports

    ports = list_ports(ws.root)
    if args.json:
        out(json.dumps([p.as_dict() for p in ports], indent=2))
        return 0
    rows = []
    for p in ports:
        detail = p.serial_number and f"serial {p.serial_number}"
        if p.kind == "board":
            detail = ", ".join(x for x in (p.experiment and f"experiment {p.experiment}",
                                           p.blob_sha and f"blob {p.blob_sha[:12]}") if x)
        rows.append([p.device, p.kind, p.label, p.usb_id, detail])
    out(table(["port", "kind", "what", "usb id", "details"], rows))
    return 0


@command("monitor")
def cmd_monitor(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.device.monitor import Monitor, compile_filter
    from engine.device.run import BOARD_PORTS, resolve_port, start_board
    from engine.device.session import BoardSession

    compile_filter(args.filter)  # a bad regex is refused before the port is touched
    exp = store.load(args.name) if args.name else None
    port = args.port or (resolve_port(exp, ws, None) if exp is not None else "")
    if not port:
        raise UserError("which port? give --port PORT (`tinylm ports` lists them) or an experiment "
                        "name whose config names one")
    baud = args.baud or (exp.config.device.baud if exp is not None else 115200)
    log_path = exp.path("device.log") if exp is not None and not args.no_save else None
    with contextlib.ExitStack() as stack:
        if port in BOARD_PORTS:
            if exp is None:
                raise UserError(f"--port {port} starts a board for the monitor: name the experiment "
                                "whose blob it should run")
            from engine.blob.reference_run import exported_blob
            port = stack.enter_context(start_board(port, exported_blob(exp, args.quant))).port
        session = stack.enter_context(BoardSession(port, baud, log_path=log_path))
        monitor = stack.enter_context(Monitor(session, args.filter))
        saving = f"saving to {log_path}" if log_path else "not saving (no experiment, or --no-save)"
        keys = stack.enter_context(_ctrl_r_resets(monitor))
        warn(f"monitoring {port} at {baud} baud, {saving}; "
             f"{'Ctrl-R resets the board, ' if keys else ''}Ctrl-C leaves")
        try:
            while True:
                if monitor.wait(0.25):
                    _print_lines(monitor.take(), args.timestamps)
        except KeyboardInterrupt:
            _print_lines(monitor.take(), args.timestamps)
        s = monitor.stats()
        warn(f"\n{s.lines} lines, {s.dropped} dropped, the port went away {s.losses} time(s)")
    return 0


def _print_lines(lines: list[Any], timestamps: bool) -> None:
    parts = []
    for m in lines:
        stamp = ""
        if timestamps:
            stamp = time.strftime("%H:%M:%S", time.localtime(m.t)) + f".{int(m.t * 1000) % 1000:03d} "
        if m.direction == "!":
            parts.append(f"{stamp}--- {m.text} ---\n")
        else:
            parts.append(f"{stamp}{m.text}\n")
    if parts:
        sys.stdout.write("".join(parts))
        sys.stdout.flush()


@contextlib.contextmanager
def _ctrl_r_resets(monitor: Any) -> Iterator[bool]:
    """While stdin is a terminal: cbreak mode (keys arrive one by one, Ctrl-C still interrupts) and
    a thread that resets the board on Ctrl-R. Yields whether keys are read at all."""
    if not sys.stdin.isatty():
        yield False
        return
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    done = threading.Event()

    def read_keys() -> None:
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 64)
            if not data:
                return
            if CTRL_R in data:
                try:
                    how = "DTR/RTS" if monitor.reset_board() == 0 else "@RESET"
                    warn(f"--- reset ({how}) ---")
                except (TinyLMError, OSError) as e:  # port away or without reset lines: say so
                    warn(f"--- reset failed: {e} ---")

    tty.setcbreak(fd)
    thread = threading.Thread(target=read_keys, name="monitor-keys", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        done.set()
        thread.join(1.0)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def register(sub: Any) -> None:
    s = sub.add_parser("ports", help="serial ports, running `tinylm board`s and the pseudo ports")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("monitor", help="print what a board says, as it says it (Ctrl-R resets it)")
    s.add_argument("name", nargs="?", help="experiment: its device.log keeps the lines, its config "
                                           "names the port")
    s.add_argument("--port", help="serial port, socket://HOST:PORT, or virtual/rv32 (a board "
                                  "running NAME's blob, for the monitor)")
    s.add_argument("--baud", type=int, help="default: the experiment's device.baud, else 115200")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"],
                   help="with --port virtual/rv32: which blob (default: quant.method)")
    s.add_argument("--filter", metavar="REGEX", help="show only lines matching (all are saved)")
    s.add_argument("--timestamps", action="store_true", help="host time before each line")
    s.add_argument("--no-save", action="store_true", help="do not append to device.log")


