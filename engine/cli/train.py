"""`tinylm` subcommands for the PyTorch half: train, resume, stop, queue, sample, eval, data, doctor."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.config.workspace import Workspace
from engine.errors import UserError
from engine.store.experiments import Store
from engine.store.metrics import METRICS_NAME

from .common import add_sampling_args, command, out, sampling_params, stream, table, warn


def _print_record(name: str, r: dict[str, Any]) -> None:
    val = f" val {r['val_loss']:.4f}" if r.get("val_loss") is not None else ""
    out(f"{name} step {r['step']:>6}  loss {r['train_loss']:.4f}{val}  "
        f"lr {r['lr']:.2e}  {r.get('tok_per_s') or 0:,.0f} tok/s")


def _follow(store: Store, names: list[str], skip: dict[str, set[str]]) -> int:
    """Print the runs' new metrics until they end; Ctrl-C detaches at once (exit 0, runs go on).
    Ends with each run's status, and the reason of a failure."""
    from engine.train.follow import follow_runs
    from engine.train.runner import failure_reason

    try:
        finals = follow_runs(store, names, _print_record, lambda name, old, new: None, skip=skip)
    except KeyboardInterrupt:
        out("detached; the run goes on (`tinylm stop NAME` stops it)")
        return 0
    code = 0
    for name, status in finals.items():
        exp = store.load(name)
        out(f"{name}: {status} at step {exp.meta.get('step')}")
        if status == "failed":
            warn(f"{name} failed: {failure_reason(exp)}")
        if status not in ("done", "stopped"):
            code = 1
    return code


@command("train")
def cmd_train(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.train.follow import existing_records
    from engine.train.runner import add_to_queue, check_run_options, describe_start, launch

    resume = getattr(args, "resume_flag", False)
    check_run_options(jobs=args.jobs, nproc=args.nproc, lora=args.lora)
    if len(args.names) > 1 or args.jobs > 1:
        if args.init_from or args.lora:
            raise UserError("--init-from and --lora take one experiment at a time")
        skip = existing_records(store, args.names)
        added = add_to_queue(store, ws, args.names, jobs=args.jobs, resume=resume)
        out(f"queued {', '.join(added) or 'nothing new'} ({args.jobs} at a time); "
            "`tinylm queue list` shows the queue")
        return _follow(store, args.names, skip) if args.follow else 0
    exp = store.load(args.names[0])
    skip = existing_records(store, [exp.name])
    run = launch(exp, ws, resume=resume, init_from=args.init_from, lora=args.lora,
                 nproc=args.nproc)
    if run.state == "failed":
        warn(f"training of '{exp.name}' failed to start (exit {run.returncode}):\n"
             + "\n".join(run.log_tail) + f"\n(full log: {exp.path('train.log')})")
        return run.exit_code
    out(f"{describe_start(exp, resume, run.pid)}; "
        f"metrics in {exp.path(METRICS_NAME)}, log in {exp.path('train.log')}")
    if not args.follow:
        return 0
    code = _follow(store, [exp.name], skip)
    if code == 0 and run.proc is not None and \
            store.load(exp.name).live_status() not in ("running", "queued"):
        run.proc.wait()  # it has ended: reap it
    return code


@command("resume")
def cmd_resume(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    args.resume_flag = True
    return cmd_train(args, ws, store)


@command("stop")
def cmd_stop(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.train.runner import stop_training

    code = 0
    for name in args.names:
        ended = stop_training(store.load(name), timeout=0 if args.no_wait else args.timeout,
                              on_message=out)
        if not ended and not args.no_wait:
            warn(f"'{name}' did not exit within {args.timeout:.0f} s")
            code = 1
        elif ended:
            out(f"{name}: {store.load(name).live_status()}")
    return code


@command("queue")
def cmd_queue(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.train.runner import add_to_queue, read_queue, remove_from_queue

    if args.action == "add":
        added = add_to_queue(store, ws, args.names, jobs=args.jobs)
        out(f"queued: {', '.join(added) or 'nothing new'}")
    elif args.action == "remove":
        removed = remove_from_queue(store, args.names)
        out(f"removed: {', '.join(removed) or 'nothing'}")
    else:
        entries = read_queue(store)
        if not entries:
            out("the queue is empty")
        else:
            out(table(["#", "name", "resume"],
                      [[str(i + 1), e["name"], str(e.get("resume", False))]
                       for i, e in enumerate(entries)]))
    return 0


@command("sample")
def cmd_sample(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.load(args.name)
    params = sampling_params(args)
    from engine.chat.engines import stream_text
    from engine.device.run import DeviceStats

    stats = DeviceStats()
    for piece in stream_text(exp, ws, args.prompt, params, engine=args.engine, quant=args.quant,
                             port=args.port, which=args.checkpoint, stats=stats):
        stream(piece)
    stream("\n")
    if args.engine == "device" and stats.tokens:
        warn(device_summary(stats))
    return 0


def device_summary(stats: Any) -> str:
    """One stderr line after a device generation: the board's speed, and for the emulated rv32
    board the instructions per token and the ESP32-C3 speed they project to."""
    if not stats.instructions_per_token:
        return f"board: {stats.tokens} tokens, {stats.tok_per_s:,.1f} tok/s (its own clock)"
    from engine.device.emulated import (
        projected_esp32c3,  # qemu's clock says nothing about a chip
    )

    p = projected_esp32c3(stats.instructions_per_token)
    return (f"board (rv32 under qemu): {stats.tokens} tokens, {p['instructions_per_token'] / 1e6:.2f} M "
            f"instructions/token -> projected ESP32-C3 {p['tok_per_s']:.1f} tok/s "
            f"({p['ms_per_token']:.1f} ms/token at CPI {p['cpi']}, {p['mhz']:.0f} MHz)")


@command("eval")
def cmd_eval(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.train.evaluate import evaluate

    exp = store.load(args.name)
    result = evaluate(exp, ws, which=args.checkpoint)
    exp.update_meta(eval=result)  # `tinylm list` and the app show its bits per byte
    if args.json:
        out(json.dumps(result, indent=2))
    else:
        out(f"{args.name} ({result['checkpoint']} checkpoint, step {result['step']}): "
            f"val loss {result['val_loss']:.4f}, perplexity {result['perplexity']:.2f}, "
            f"{result['bits_per_byte']:.4f} bits/byte over {result['val_tokens_scored']:,} tokens")
    return 0


@command("data")
def cmd_data(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.config.budget import param_count
    from engine.data import data_report

    exp = store.load(args.name)
    cfg = exp.config
    report = data_report(exp.folder, cfg, ws.resolve(cfg.data.corpus), param_count(cfg))
    if args.json:
        out(json.dumps(report, indent=2, default=str))
    else:
        for k, v in report.items():
            out(f"  {k:<20} {v:,.3f}" if isinstance(v, float) else f"  {k:<20} {v}")
    return 0


@command("kernels")
def cmd_kernels(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    """The CPU kernel choices measured in this workspace; --clear makes the next run measure."""
    from engine.train import kernels

    path = ws.root / kernels.CACHE_FILE
    if args.clear:
        out(f"forgot {kernels.clear(path)} measurements ({path}); the next run measures again")
        return 0
    entries = kernels.read_cache(path)
    if args.json:
        out(json.dumps(list(entries.values()), indent=2))
        return 0
    if not entries:
        out(f"no measurements yet ({path}): the first training start on a shape measures them")
        return 0
    rows = []
    for e in entries.values():
        k, c, comp = e.get("kernels", {}), e.get("key", {}), e.get("compile")
        compiled = ("-" if not isinstance(comp, dict) else
                    f"{'on' if comp.get('faster') else 'off'} ({comp.get('gain', 0):.2f}x)")
        rows.append([f"{c.get('dim')}d x{c.get('n_layers')} {c.get('batch')}x{c.get('seq_len')}",
                     str(c.get("threads")), _attention_cell(k), k.get("ffn", "?"),
                     k.get("optimizer", "?"), k.get("loss", "?"), compiled,
                     str(e.get("measured", "?")),
                     f"{c.get('cpu')}, torch {c.get('torch')}"])
    out(table(["shape", "threads", "attention", "ffn", "adamw", "loss", "compile", "measured",
               "machine"],
              rows))
    return 0


def _attention_cell(k: dict) -> str:
    """"native", or "blocked, compiled sdpa" where a compiled run uses another kernel."""
    eager, compiled = k.get("attention", "?"), k.get("compiled_attention", "sdpa")
    return eager if eager == compiled else f"{eager}, compiled {compiled}"


@command("doctor")
def cmd_doctor(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    from engine.config.budget import param_count
    from engine.train.doctor import as_rows, run_checks

    cfg = params = None
    if args.name:
        cfg = store.load(args.name).config
        params = param_count(cfg)
    checks = run_checks(cfg, params)
    if args.json:
        out(json.dumps(as_rows(checks), indent=2))
        return 0
    out(table(["check", "ok", "detail", "fix"],
              [[c.name, "yes" if c.ok else "NO", c.detail, c.fix] for c in checks]))
    return 0


def register(sub: Any) -> None:
    for name, help_text in (("train", "start training (in the background)"),
                            ("resume", "continue training from the last checkpoint")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("names", nargs="+", metavar="NAME")
        s.add_argument("--jobs", type=int, default=1, help="with several names: runs at a time")
        s.add_argument("--init-from", metavar="OTHER",
                       help="fine-tune: start from another experiment's weights (or a .pt path)")
        s.add_argument("--lora", type=int, default=0, metavar="RANK",
                       help="train low-rank adapters only (merged into the weights on export)")
        s.add_argument("--nproc", type=int, default=1,
                       help="processes (torchrun DDP; gloo on CPU, nccl on CUDA)")
        s.add_argument("-f", "--follow", action="store_true", help="print metrics until it ends")

    s = sub.add_parser("stop", help="stop a run (it checkpoints first) or unqueue it")
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("--no-wait", action="store_true")
    s.add_argument("--timeout", type=float, default=60.0)

    s = sub.add_parser("queue", help="the training queue: list, add, remove")
    s.add_argument("action", choices=["list", "add", "remove"], nargs="?", default="list")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--jobs", type=int, default=1)

    s = sub.add_parser("sample", help="generate text from an experiment")
    s.add_argument("name")
    s.add_argument("--prompt", default="")
    add_sampling_args(s)
    s.add_argument("--engine", choices=["torch", "reference", "device"], default="torch")
    s.add_argument("--quant", choices=["f32", "int8", "ternary"],
                   help="blob for --engine reference/device (default: the config's quant.method)")
    s.add_argument("--port", help="--engine device: serial port, socket://host:port, 'virtual' (the "
                   "host firmware on a pty) or 'rv32' (the rv32 firmware under qemu: also projects "
                   "ESP32-C3 speed)")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best")

    s = sub.add_parser("eval", help="validation loss, perplexity, bits per byte")
    s.add_argument("name")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("data", help="corpus and tokenizer statistics for an experiment")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("kernels", help="CPU kernels measured for this machine and each shape")
    s.add_argument("--clear", action="store_true", help="forget them: the next run measures again")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("doctor", help="check this machine (and an experiment's memory needs)")
    s.add_argument("name", nargs="?")
    s.add_argument("--json", action="store_true")


