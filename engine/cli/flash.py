"""`tinylm flash` (esptool's Python API, or an upload through the running firmware) and
`tinylm board --download-mode` (the virtual board in the ESP ROM bootloader).

The engine does the work (engine/device/flash.py, engine/device/download_board.py); this file parses
flags, draws the progress bar on stderr and prints the outcome."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.config.workspace import Workspace
from engine.errors import Failure, UserError
from engine.store.experiments import Store

from .common import COMMANDS, command, out, serve_until_stopped


class ProgressBar:
    """`on_progress(done, total, what)` drawn on stderr: bytes, KB/s, ETA, at most 10 times a
    second (each region gets its own bar and clock)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.what = ""
        self.t0 = 0.0
        self.done0 = 0
        self.last = 0.0

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if what != self.what:
            self.finish()
            self.what, self.t0, self.done0, self.last = what, now, done, 0.0
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.t0  # measured from the first report: its bytes came before the clock
        rate = (done - self.done0) / 1024 / elapsed if elapsed > 0.05 else 0.0
        eta = (total - done) / 1024 / rate if rate > 0 else 0.0
        width = 30
        fill = width * done // max(total, 1)
        self.stream.write(f"\r{what:<5} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{done / 1024:8.1f}/{total / 1024:.1f} KB {rate:8.1f} KB/s "
                          f"ETA {eta:4.0f} s")
        self.stream.flush()

    def finish(self) -> None:
        if self.what:
            self.stream.write("\n")
            self.stream.flush()
            self.what = ""


@command("flash")
def cmd_flash(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.blob.reference_run import exported_blob

    exp = store.load(args.name)
    blob = exported_blob(exp, args.quant)
    port = args.port or exp.config.device.port or ws.default_port
    if not port or port in ("virtual", "rv32"):
        raise UserError(f"--port {port or '(none)'}: flashing needs a serial port with a board on "
                        "it; for a virtual one start `tinylm board --download-mode` and pass the "
                        "/dev/pts/N it prints")
    bar = ProgressBar()
    try:
        if args.over_protocol:
            return _flash_over_protocol(exp, blob, port, bar)
        from engine.device.flash import flash_blob

        result = flash_blob(port, blob, board=exp.config.device.board, config=exp.config,
                            app=Path(args.app) if args.app else None,
                            verify=not args.no_verify, compress=not args.no_compress,
                            on_progress=bar)
    finally:
        bar.finish()
    for r in result.regions:
        out(f"wrote {r.what} ({r.size:,} bytes) at {r.offset:#x} of the {result.chip} on "
            f"{result.port} ({result.flash_size >> 20} MB flash, {result.partition_table.name})")
    out(f"{result.bytes_written / 1024:.1f} KB in {result.write_seconds:.2f} s "
        f"({result.kb_per_s:.1f} KB/s{', compressed' if result.compressed else ''}); "
        f"MD5 checked by esptool")
    if result.verification == "mismatch":
        raise Failure(result.detail)
    out(result.detail)
    return 0


def _flash_over_protocol(exp: Any, blob: Path, port: str, bar: ProgressBar) -> int:
    """The firmware's own upload (PROTOCOL.md @UPBEGIN...): for a board already running it."""
    import hashlib

    from engine.device.link import DeviceLink

    data = blob.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    t0 = time.monotonic()
    with DeviceLink(port, baud=exp.config.device.baud, log_path=exp.path("device.log")) as link:
        confirmed = link.upload(data, on_progress=lambda done, total: bar(done, total, "blob"))
        bar.finish()
        info = link.info()
    seconds = time.monotonic() - t0
    out(f"uploaded {blob.name} ({len(data):,} bytes) over the protocol to {port} in {seconds:.2f} s "
        f"({len(data) / 1024 / seconds:.1f} KB/s)")
    if confirmed != sha or info.get("blob_sha") != sha:
        raise Failure(f"the board confirmed sha256 {confirmed} and reports {info.get('blob_sha')}, "
                      f"the blob is {sha}: upload again")
    out(f"verified on the board: INFO reports sha256 {sha[:16]}… ({info.get('blob_size')} bytes)")
    return 0


# ---- `tinylm board --download-mode` --------------------------------------------------------------

_board_app_mode = COMMANDS["board"]  # cli_blob's handler: the board already running the firmware


@command("board")
def cmd_board(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    """`tinylm board` as before, or with --download-mode the board in its ROM bootloader."""
    if not args.download_mode:
        if args.chip:
            raise UserError("--chip picks the ROM the download-mode board emulates: add "
                            "--download-mode")
        return _board_app_mode(args, ws, store)
    from engine.device.download_board import DownloadModeBoard

    unsupported = [flag for flag, on in (("NAME", args.name), ("--blob", args.blob),
                                         ("--emulate", args.emulate),
                                         ("--us-per-token", args.us_per_token)) if on]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)}: a board in download mode has no model loaded "
                        "yet; start it, then `tinylm flash NAME --port <its pty>`")
    board = DownloadModeBoard(Path(args.flash_image) if args.flash_image else None,
                              chip=args.chip or "esp32", boot_banner=args.boot_banner)
    from engine.device import boards

    with board:
        # listed by `tinylm ports` and the app's port picker while it runs, as app-mode boards are
        return serve_until_stopped(ws, boards.BoardEntry(
            pid=os.getpid(), port=board.port, kind="download", started=time.time()),
            f"virtual board (download mode) on {board.port} ({board.chip}, flash image "
            f"{board.flash_image}; `tinylm flash NAME --port {board.port}`; Ctrl-C stops it)")


def register(sub: Any) -> None:
    s = sub.add_parser("flash", help="write an experiment's blob to a board's model partition "
                                     "(esptool, ROM bootloader) and check it on the board")
    s.add_argument("name")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"])
    s.add_argument("--port", help="serial port (default: device.port, then the workspace's)")
    s.add_argument("--app", metavar="FIRMWARE.bin",
                   help="also write the firmware app image (idf.py build's <project>.bin) to the "
                        "factory partition; the bootloader and partition table must be there "
                        "already (`idf.py flash` once)")
    s.add_argument("--no-verify", action="store_true", help="skip asking the app's INFO for the "
                                                             "blob's sha256")
    s.add_argument("--no-compress", action="store_true", help="send the data uncompressed")
    s.add_argument("--over-protocol", action="store_true",
                   help="upload through the running tinylm firmware (@UPBEGIN...) instead")

    board = sub.choices["board"]  # registered by cli_blob (imported first)
    board.add_argument("--download-mode", action="store_true",
                       help="start in the ESP ROM bootloader (as if GPIO0 were held low), on a "
                            "pty esptool and `tinylm flash` talk to; the app boots after flashing")
    board.add_argument("--chip", choices=["esp32", "esp32-s3", "esp32-c3"],
                       help="the ROM the download-mode board answers as (default esp32)")


