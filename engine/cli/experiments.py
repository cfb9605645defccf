"""`tinylm` subcommands for the experiment folders themselves: new, list, show, diff, set, budget,
clone, rename, tag, note, archive, presets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.config import budget as budget_mod
from engine.config import schema as config_mod
from engine.config.presets import PRESETS, describe, preset_config
from engine.config.workspace import Workspace
from engine.store.diff import diff_experiments
from engine.store.experiments import Store
from engine.store.format import SUMMARY_COLUMNS, fmt_params, fmt_time, summary_columns
from engine.store.metrics import METRICS_NAME, read_metrics, summarize

from .common import command, out, table, warn


@command("new")
def cmd_new(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    preset = args.preset or ws.default_preset
    cfg = preset_config(preset)
    if args.preset is None:  # no explicit target: the workspace's board
        cfg = config_mod.apply_overrides(cfg, [f"device.board={ws.default_board}"])
    if args.set:
        cfg = config_mod.apply_overrides(cfg, args.set)
    exp = store.create(args.name, cfg, preset=preset)
    b = budget_mod.compute(cfg)
    out(f"created {exp.folder} from preset {preset} "
        f"({fmt_params(b.params)} params, {cfg.model.arch})")
    out(f"budget: {b.verdict()}")
    return 0


@command("list")
def cmd_list(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    rows = store.list(include_archived=args.archived)
    if args.json:
        out(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    if not rows:
        out(f"no experiments in {store.root}; create one with `tinylm new NAME`")
        return 0
    keys = [k for k, _ in SUMMARY_COLUMNS]
    body = []
    for r in rows:
        cells = summary_columns(r)  # the app's table shows the very same strings
        body.append([cells[k] for k in keys])
    out(table([header for _, header in SUMMARY_COLUMNS], body))
    for r in rows:
        if r.damaged:
            fix = f"; `tinylm repair {r.name}` rebuilds it" if "meta.json" in r.problem else ""
            warn(f"{r.name}: damaged: {r.problem}{fix}")
    return 0


@command("show")
def cmd_show(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.load(args.name)
    meta = exp.meta
    cfg = exp.config
    summary = summarize(read_metrics(exp.path(METRICS_NAME)))
    if args.json:
        out(json.dumps({"meta": meta, "config": cfg.to_dict(), "metrics": summary}, indent=2))
        return 0
    status = exp.live_status()
    out(f"{exp.name}  [{status}]  {exp.folder}")
    for key in ("parent", "tags", "notes", "error"):
        if meta.get(key) and not (key == "error" and status == "failed"):
            out(f"  {key}: {meta[key]}")
    if status == "failed":
        from engine.train.runner import failure_reason

        out("  failed: " + failure_reason(exp).replace("\n", "\n    "))
    out(f"  created {fmt_time(meta.get('created'))}, updated {fmt_time(meta.get('updated'))}")
    if summary:
        out("  metrics: " + ", ".join(f"{k} {v}" for k, v in summary.items() if v is not None))
    b = budget_mod.compute(cfg)
    out(f"  params {b.params:,}; budget: {b.verdict()}")
    out("")
    out(config_mod.dumps(cfg).rstrip())
    return 0


@command("diff")
def cmd_diff(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    report = diff_experiments(store, args.names, baseline=args.baseline, all_keys=args.all)
    names = report.names
    rows = [[r.key] + r.cells() for r in report.config]
    out(table(["config"] + names, rows) if rows else "configs are identical")
    heads = [f"{n} (baseline)" if i == report.baseline else n for i, n in enumerate(names)]
    mrows = []
    for m in report.metrics:
        cells = []
        for i in range(len(names)):
            delta = m.delta_text(i)
            cells.append(f"{m.value_text(i)} ({delta})" if delta else m.value_text(i))
        mrows.append([m.key] + cells)
    mrows.append(["status"] + report.statuses)
    out("")
    out(table(["metrics"] + heads, mrows))
    return 0


@command("set")
def cmd_set(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.load(args.name)
    store.refuse_if_running(exp, "change the config of")
    cfg = config_mod.apply_overrides(exp.config, args.pairs)
    exp.save_config(cfg)
    out(f"{exp.name}: {', '.join(args.pairs)}")
    out(f"budget: {budget_mod.compute(cfg).verdict()}")
    return 0


@command("budget")
def cmd_budget(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.load(args.name)
    cfg = exp.config
    b = budget_mod.compute(cfg, args.board or cfg.device.board)
    if args.json:
        out(json.dumps({"board": b.board.name, "params": b.params, "blob_bytes": b.blob_bytes,
                        "ram": b.ram, "fits": b.fits, "verdict": b.verdict(), "advice": b.advice},
                       indent=2))
        return 0 if b.fits else 1
    out(f"{exp.name} on {b.board.name} ({b.board.note})")
    out(f"  parameters      {b.params:,}")
    for q, n in b.blob_bytes.items():
        mark = "  <- quant.method" if q == b.method else ""
        est = " (vocab estimated: no tokenizer yet)" if b.piece_bytes_estimated else ""
        out(f"  blob {q:<8}   {budget_mod.fmt_bytes(n)}{mark}{est if mark else ''}")
    out(f"  runtime RAM     {budget_mod.fmt_bytes(b.ram_total)} "
        f"(context {b.context_len} tokens)")
    for part, n in b.ram.items():
        if part != "total" and n:
            out(f"    {part:<14}{budget_mod.fmt_bytes(n)}")
    out(f"  verdict: {b.verdict()}")
    for line in b.advice:
        out(f"    try {line}")
    return 0 if b.fits else 1


@command("clone")
def cmd_clone(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.clone(args.src, args.dst, with_checkpoints=args.with_checkpoints,
                      overrides=args.set)
    out(f"cloned {args.src} → {exp.name} ({exp.folder})")
    return 0


@command("repair")
def cmd_repair(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.repair(args.name)
    out(f"{exp.name}: meta.json rebuilt ({exp.meta['status']}, step {exp.meta.get('step', 0)}); "
        "tags, notes and parent of the old file are not recovered")
    return 0


@command("rename")
def cmd_rename(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.rename(args.old, args.new)
    out(f"renamed {args.old} → {exp.name}")
    return 0


@command("tag")
def cmd_tag(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.tag(args.name, add=args.tags, remove=args.remove)
    out(f"{exp.name}: tags {', '.join(exp.meta['tags']) or '(none)'}")
    return 0


@command("note")
def cmd_note(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.note(args.name, args.text, append=args.append)
    out(f"{exp.name}: notes saved ({len(exp.meta['notes'])} chars)")
    return 0


@command("archive")
def cmd_archive(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    exp = store.archive(args.name, archived=not args.unarchive)
    out(f"{exp.name}: {'archived' if exp.meta['archived'] else 'unarchived'}")
    return 0


@command("presets")
def cmd_presets(args: argparse.Namespace, ws: Workspace, store: Store) -> int:
    rows = []
    for name in PRESETS:
        cfg = preset_config(name)
        b = budget_mod.compute(cfg)
        rows.append([name, fmt_params(b.params), cfg.device.board, b.verdict().split(":")[0],
                     describe(name)])
    out(table(["preset", "params", "board", "fit", "about"], rows))
    return 0


def register(sub: Any) -> None:

    s = sub.add_parser("new", help="create an experiment from a preset")
    s.add_argument("name")
    s.add_argument("--preset", choices=list(PRESETS))
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")

    s = sub.add_parser("list", help="table of experiments")
    s.add_argument("--json", action="store_true")
    s.add_argument("--archived", action="store_true", help="include archived experiments")

    s = sub.add_parser("show", help="one experiment: status, metrics, budget, config")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("diff", help="compare configs and metrics of experiments")
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("--all", action="store_true", help="show every config key, not only differences")
    s.add_argument("--baseline", metavar="NAME",
                   help="experiment the metric deltas are against (default: the first)")

    s = sub.add_parser("set", help="change config keys of an experiment (validated)")
    s.add_argument("name")
    s.add_argument("pairs", nargs="+", metavar="KEY=VALUE")

    s = sub.add_parser("budget", help="will it fit: params, blob sizes, RAM on a board")
    s.add_argument("name")
    s.add_argument("--board", choices=list(budget_mod.BOARDS))
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("clone", help="copy an experiment's recipe into a new one")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--with-checkpoints", action="store_true", help="also copy ckpt.pt / best.pt")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    s = sub.add_parser("repair", help="rebuild a missing or damaged meta.json from the folder")
    s.add_argument("name")

    s = sub.add_parser("rename", help="rename an experiment")
    s.add_argument("old")
    s.add_argument("new")

    s = sub.add_parser("tag", help="add or remove tags")
    s.add_argument("name")
    s.add_argument("tags", nargs="*")
    s.add_argument("--remove", action="append", default=[], metavar="TAG")

    s = sub.add_parser("note", help="set (or --append to) an experiment's notes")
    s.add_argument("name")
    s.add_argument("text")
    s.add_argument("--append", action="store_true")

    s = sub.add_parser("archive", help="hide an experiment from the list (nothing is deleted)")
    s.add_argument("name")
    s.add_argument("--unarchive", action="store_true")

    sub.add_parser("presets", help="list the presets")


