"""`tinylm` subcommands for the blob and the board: quantize, export, import-llama2c,
export-llama2c, board."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.config.budget import fmt_bytes
from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.store.experiments import Store

from .common import command, out, serve_until_stopped


@command("export")
def cmd_export(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.blob.export import export

    exp = store.load(args.name)
    path, info = export(exp, args.quant, which=args.checkpoint, force=args.force, board=args.board)
    out(f"wrote {path} ({fmt_bytes(info.size)}, sha256 {info.sha256[:16]}…)")
    return 0


@command("quantize")
def cmd_quantize(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.blob.quant_report import quantize_and_report

    exp = store.load(args.name)
    rep = quantize_and_report(exp, ws, args.method, qat_steps=args.qat, lr=args.lr)
    if args.json:
        result: dict[str, Any] = {}
        if rep.qat_run is not None:
            result["qat"] = asdict(rep.qat_run)
        result["report"] = rep.to_dict()
        out(json.dumps(result, indent=2))
        return 0
    method = rep.method
    if rep.qat_run is not None:
        q = rep.qat_run
        out(f"QAT {method} {q.steps} steps: val loss with {method} weights "
            f"{q.val_loss_before:.4f} → {q.val_loss_after:.4f} (float {q.float_val_loss:.4f})")
    out(f"{exp.name} {method}{' (QAT)' if rep.qat else ''}: blob {fmt_bytes(rep.blob_bytes)}, "
        f"val loss {rep.val_loss:.4f} vs float {rep.float_val_loss:.4f} "
        f"({100 * rep.val_loss_cost:+.2f}%), {rep.bits_per_byte:.4f} bits/byte, "
        f"greedy agreement {100 * rep.greedy_agreement:.1f}% of {rep.agreement_tokens} tokens")
    if args.tensors:
        for t in rep.tensors:
            snr = "-" if t.snr_db is None else f"{t.snr_db:.1f} dB"
            out(f"  {t.name:<36} {t.qtype:<8} {t.bytes:>8}  {snr}")
    elif rep.snr_db_min is not None and rep.snr_db_median is not None:
        out(f"  SNR min {rep.snr_db_min:.1f} dB, median {rep.snr_db_median:.1f} dB "
            "(--tensors for each)")
    return 0


@command("import-llama2c")
def cmd_import(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.blob.llama2c import import_llama2c

    exp = import_llama2c(store, Path(args.path), Path(args.tokenizer), args.name)
    out(f"imported {args.path} as '{exp.name}' ({exp.folder})")
    return 0


@command("export-llama2c")
def cmd_export_llama2c(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.blob.llama2c import export_llama2c

    exp = store.load(args.name)
    model, tok = export_llama2c(exp, args.out_dir, args.checkpoint, force=args.force)
    out(f"wrote {model} (llama2.c v0) and {tok}; "
        f"run with llama2.c: ./run {model.name} -z {tok.name}")
    return 0


@command("board")
def cmd_board(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    blob = Path(args.blob) if args.blob else None
    if blob is not None and not blob.is_file():
        raise UserError(f"--blob {blob}: no such file; write one with `tinylm export NAME` (or give "
                        "the experiment name instead of --blob)")
    if args.name:
        from engine.blob.reference_run import exported_blob
        blob = exported_blob(store.load(args.name), args.quant)
    if args.emulate:
        from engine.device.emulated import EmulatedBoard

        unsupported = [flag for flag, on in (("--flash-image", args.flash_image),
                                             ("--us-per-token", args.us_per_token),
                                             ("--boot-banner", args.boot_banner)) if on]
        if unsupported:
            raise UserError(f"{', '.join(unsupported)}: only the virtual board has that; the emulated "
                            "board runs at qemu speed and counts instructions instead (drop --emulate)")
        if blob is None:
            raise UserError("--emulate rv32 needs a model: an experiment name (its exported blob) or "
                            "--blob PATH")
        board = EmulatedBoard(blob)
        banner = ("emulated rv32 board on {port} (qemu -icount: each token reports the instructions "
                  "it retired; Ctrl-C stops it)")
    else:
        from engine.device.virtual import VirtualBoard

        board = VirtualBoard(blob=blob, flash_image=Path(args.flash_image) if args.flash_image else None,
                             us_per_token=args.us_per_token, boot_banner=args.boot_banner)
        banner = "virtual board on {port} (Ctrl-C stops it)"
    from engine.device import boards

    with board:
        # `tinylm ports` lists it while it runs; a kill -9 leaves a stale entry, dropped on read
        return serve_until_stopped(ws, boards.BoardEntry(
            pid=os.getpid(), port=board.port, kind="rv32" if args.emulate else "virtual",
            experiment=args.name or "", started=time.time(),
            blob_sha=hashlib.sha256(blob.read_bytes()).hexdigest() if blob else ""),
            banner.format(port=board.port))


def register(sub: Any) -> None:
    s = sub.add_parser("export", help="write the weight blob model.<quant>.bin for the firmware")
    s.add_argument("name")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"])
    s.add_argument("--checkpoint", choices=["best", "last"], default="best")
    s.add_argument("--board", help="check the fit against this board instead of device.board")
    s.add_argument("--force", action="store_true", help="write it even if it does not fit")

    s = sub.add_parser("quantize", help="quantize (optionally with QAT) and report what it costs")
    s.add_argument("name")
    s.add_argument("--method", choices=["int8", "ternary", "f32"])
    s.add_argument("--qat", type=int, default=0, metavar="STEPS",
                   help="quantization-aware fine-tuning steps first")
    s.add_argument("--lr", type=float, help="QAT learning rate (default 3 x train.min_lr)")
    s.add_argument("--tensors", action="store_true", help="per-tensor bytes and SNR")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("import-llama2c", help="import a llama2.c .bin model into a new experiment")
    s.add_argument("path")
    s.add_argument("--tokenizer", required=True, help="tokenizer .model (sentencepiece) or .bin")
    s.add_argument("--name", required=True)

    s = sub.add_parser("export-llama2c", help="write llama2.c .bin v0 + tokenizer.bin")
    s.add_argument("name")
    s.add_argument("out_dir")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best")
    s.add_argument("--force", action="store_true", help="replace existing files")

    s = sub.add_parser("board", help="run the virtual board (host firmware) on a pty, or the rv32 "
                                     "firmware under qemu (--emulate rv32) on a socket")
    s.add_argument("name", nargs="?", help="experiment whose exported blob to serve")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"])
    s.add_argument("--blob")
    s.add_argument("--flash-image")
    s.add_argument("--us-per-token", type=int, default=0)
    s.add_argument("--boot-banner", action="store_true")
    s.add_argument("--emulate", choices=["rv32"],
                   help="the rv32imc firmware under qemu-system-riscv32 (ESP32-C3 class), reached at "
                        "socket://127.0.0.1:PORT; tokens carry instructions retired")


