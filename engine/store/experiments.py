"""The experiment store: one folder per experiment under the workspace's experiments dir.

The folder is the truth. Listing reads only `meta.json` and `config.toml` of each folder (no torch,
no metrics scan), so a thousand experiments list in milliseconds, and a damaged folder is reported as
damaged instead of breaking the list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.atomic import atomic_write_json, sweep_temp_files
from engine.config import schema as config_mod
from engine.config.schema import ExperimentConfig
from engine.errors import ConfigError, ExperimentNotFound, LockHeld, UserError

from .lock import LOCK_NAME, RunLock, read_lock

META_SCHEMA = 1
STATUSES = ("new", "queued", "running", "stopped", "failed", "done")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHECKPOINT_FILES = ("ckpt.pt", "best.pt")
# files that describe an experiment (copied by clone); the rest are outputs of a run
RECIPE_FILES = ("config.toml", "tokenizer.model", "tokenizer.vocab")


def check_name(name: str) -> str:
    """Experiment names are folder names: no separators, no dot-dot, nothing hidden."""
    if not NAME_RE.match(name) or ".." in name:
        raise UserError(
            f"invalid experiment name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit, with no '/' and no '..' (e.g. 'stories-260k-v2')"
        )
    return name


CONFIG_SUMMARY_VERSION = 2  # bump when config_summary gains keys: older caches are recomputed


def config_summary(path: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """What the list needs from config.toml, cached in meta.json with the file's stamp: listing then
    reads one small JSON per experiment instead of parsing TOML (a hand-edited config has another
    stamp, so it is parsed again). The fit verdict is here too: a budget costs milliseconds, a
    thousand of them per refresh would not."""
    from engine.config.budget import compute

    st = path.stat()
    b = compute(cfg)
    over = [part for part, n in (("RAM", b.ram_over), ("flash", b.flash_over)) if n > 0]
    return {"v": CONFIG_SUMMARY_VERSION, "stamp": [st.st_mtime_ns, st.st_size],
            "params": b.params, "quant": cfg.quant.method, "arch": cfg.model.arch,
            "board": b.board.name, "fits": b.fits, "over": "+".join(over)}


def now() -> float:
    return round(time.time(), 3)


def new_meta(name: str, parent: str | None = None, preset: str | None = None) -> dict[str, Any]:
    t = now()
    return {
        "schema": META_SCHEMA, "name": name, "status": "new", "created": t, "updated": t,
        "parent": parent, "preset": preset, "tags": [], "notes": "", "archived": False, "pid": None,
        "host": None, "error": None, "step": 0, "best_val_loss": None, "blobs": {},
    }


@dataclass
class Experiment:
    """A handle on one experiment folder. Reads are lazy; writes go through `update_meta`."""

    folder: Path
    meta: dict[str, Any]
    _config: ExperimentConfig | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def config(self) -> ExperimentConfig:
        if self._config is None:
            self._config = config_mod.load(self.config_path)
        return self._config

    def path(self, name: str) -> Path:
        return self.folder / name

    def save_config(self, cfg: ExperimentConfig) -> None:
        config_mod.save(cfg, self.config_path)
        self._config = cfg
        self.update_meta(config_summary=config_summary(self.config_path, cfg))

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        """Re-read meta.json, apply changes, write atomically: safe against a concurrent writer that
        touched other keys (the train subprocess and the CLI both write meta)."""
        meta_path = self.folder / "meta.json"
        try:
            current = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            current = dict(self.meta)
        current.update(changes)
        current["updated"] = now()
        atomic_write_json(meta_path, current)
        self.meta = current
        return current

    def lock(self, on_message: Callable[[str], None] | None = None, pid: int | None = None) -> RunLock:
        return RunLock(self.folder, self.name, on_message, pid)

    def live_status(self) -> str:
        """Status as claimed by meta, corrected when the claimed runner is gone."""
        status = self.meta.get("status", "new")
        if status == "running":
            info = read_lock(self.folder)
            if info is None or not info.is_alive():
                return "stopped"
        return status

    def reconcile(self) -> None:
        """If meta says running but the runner died (kill -9, power loss), say so on disk."""
        if self.meta.get("status") == "running" and self.live_status() == "stopped":
            pid = self.meta.get("pid")
            self.update_meta(status="stopped", pid=None,
                             error=f"the training process (pid {pid}) ended without updating its "
                                   f"status (killed?); `tinylm resume {self.name}` continues from "
                                   "the last checkpoint")
            (self.folder / LOCK_NAME).unlink(missing_ok=True)

    def sweep_stale_temp_files(self) -> list[str]:
        """Remove the half-written `.ckpt.pt.*.tmp` / `.best.pt.*.tmp` a killed run left (MBs each)
        when no live process holds the run lock: only the train process writes those two files,
        and only while it holds the lock."""
        info = read_lock(self.folder)
        if info is not None and (info.pid == -1 or info.is_alive()):
            return []
        return sweep_temp_files(self.folder, CHECKPOINT_FILES)


def _state_from_checkpoint(path: Path) -> dict[str, Any]:
    """Status, step and best loss as a checkpoint records them (for `Store.repair`)."""
    from .checkpoint import load_checkpoint

    if not path.exists():
        return {"status": "new"}
    try:
        ckpt = load_checkpoint(path)
    except UserError:
        return {"status": "stopped"}  # loading it later says what is wrong with it
    return {"status": "stopped", "step": int(ckpt.get("step") or 0),
            "best_val_loss": ckpt.get("best_val_loss")}


def _blobs_in(folder: Path) -> dict[str, Any]:
    import hashlib

    blobs = {}
    for path in sorted(folder.glob("model.*.bin")):
        quant = path.name.split(".")[1]
        if path.is_file():
            blobs[quant] = {"file": path.name, "size": path.stat().st_size,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "step": None, "qat": None, "created": path.stat().st_mtime}
    return blobs


@dataclass
class Summary:
    """One row of `tinylm list` / the Experiments screen (engine/store/format.py writes it out).

    Everything here comes from meta.json and its cached config_summary, never from metrics.jsonl
    or a checkpoint, so a listing stays one small read per folder."""

    name: str
    status: str
    params: int | None = None
    best_val_loss: float | None = None
    blob_bytes: int | None = None  # size of the blob of the configured quant, once exported
    updated: float | None = None
    tags: list[str] = field(default_factory=list)
    archived: bool = False
    parent: str | None = None
    problem: str | None = None  # set when the folder is damaged
    arch: str | None = None  # model.arch
    preset: str | None = None  # the preset it was created from (None: imported or older folders)
    quant: str | None = None  # quant.method
    board: str | None = None  # device.board the fit verdict is for
    fits: bool | None = None  # the budget's verdict for that board
    over: str = ""  # what does not fit: "RAM", "flash" or "RAM+flash"
    bits_per_byte: float | None = None  # `tinylm eval`'s, else the configured quant's report
    step: int | None = None
    error: str | None = None  # why the last run failed or stopped on its own

    @property
    def damaged(self) -> bool:
        return self.problem is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "name", "status", "params", "best_val_loss", "blob_bytes", "updated", "tags",
            "archived", "parent", "problem", "arch", "preset", "quant", "board", "fits", "over",
            "bits_per_byte", "step", "error")}


def _bits_per_byte(meta: dict[str, Any], quant: str | None) -> float | None:
    """The float model's figure from `tinylm eval` when there is one, else the blob's from
    `tinylm quantize` (the number that matters on the board)."""
    for source in ((meta.get("eval") or {}), ((meta.get("quant_reports") or {}).get(quant) or {})):
        value = source.get("bits_per_byte") if isinstance(source, dict) else None
        if isinstance(value, (int, float)):
            return float(value)
    return None


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.folder(name) / "meta.json").exists()

    def names(self) -> Iterator[str]:
        try:
            with os.scandir(self.root) as entries:
                return iter(sorted(e.name for e in entries
                                   if not e.name.startswith(".") and e.is_dir()))
        except (FileNotFoundError, NotADirectoryError):
            return iter(())

    # ---- create / load -----------------------------------------------------------------------------

    def create(self, name: str, cfg: ExperimentConfig, parent: str | None = None,
               preset: str | None = None) -> Experiment:
        folder = self.folder(name)
        if folder.exists() and not (folder / "meta.json").exists():
            raise UserError(f"{folder} already exists but has no meta.json: `tinylm repair {name}` "
                            "makes it an experiment again, or pick another name")
        if folder.exists():
            raise UserError(f"experiment '{name}' already exists ({folder}); pick another name, or "
                            f"`tinylm clone {name} NEW` to start from it")
        self.root.mkdir(parents=True, exist_ok=True)
        # build in a hidden temp folder, then rename: a crash never leaves a half-made experiment
        tmp = self.root / f".{name}.creating"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            config_mod.save(cfg, tmp / "config.toml")
            meta = new_meta(name, parent, preset)
            meta["config_summary"] = config_summary(tmp / "config.toml", cfg)
            atomic_write_json(tmp / "meta.json", meta)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.load(name)

    def load(self, name: str) -> Experiment:
        folder = self.folder(name)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            if folder.is_dir():
                raise UserError(f"'{name}' ({folder}) has no meta.json, so it is not a usable "
                                f"experiment; `tinylm repair {name}` rebuilds it from the folder "
                                "(config.toml, checkpoints and metrics stay), or move the folder "
                                "out of the experiments folder")
            known = list(self.names())
            import difflib
            close = difflib.get_close_matches(name, known, n=1)
            tip = f"; did you mean '{close[0]}'?" if close else "; `tinylm list` shows what exists"
            raise ExperimentNotFound(f"no experiment named '{name}' in {self.root}{tip}")
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{meta_path} is damaged ({e}); `tinylm repair {name}` rebuilds it "
                            "from the folder (config.toml, checkpoints and metrics stay; the "
                            "damaged file is kept as meta.json.damaged), or restore it from a "
                            "backup") from e
        exp = Experiment(folder, meta)
        exp.reconcile()
        exp.sweep_stale_temp_files()
        return exp

    def repair(self, name: str) -> Experiment:
        """Rebuild a missing or unreadable meta.json from what the folder holds: status from the
        checkpoint (stopped at its step) or new, the blobs present, and a note saying so. Tags,
        notes and lineage of the lost file cannot be recovered; the damaged file is kept."""
        folder = self.folder(name)
        meta_path = folder / "meta.json"
        if not folder.is_dir():
            raise ExperimentNotFound(f"no experiment folder named '{name}' in {self.root}; "
                                     "`tinylm list` shows what exists")
        if not (folder / "config.toml").is_file():
            raise UserError(f"{folder} has no config.toml, so there is nothing to rebuild the "
                            f"experiment from: move the folder out of {self.root}")
        try:
            if isinstance(json.loads(meta_path.read_text()), dict):
                raise UserError(f"'{name}' has a readable meta.json: nothing to repair")
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            pass
        self.refuse_if_running(Experiment(folder, {}), "repair")
        meta = new_meta(name)
        meta["notes"] = f"meta.json rebuilt by `tinylm repair` on {time.strftime('%Y-%m-%d %H:%M')}"
        if meta_path.exists():
            meta_path.replace(folder / "meta.json.damaged")
            meta["notes"] += "; the damaged file is meta.json.damaged"
        meta |= _state_from_checkpoint(folder / "ckpt.pt")
        meta["blobs"] = _blobs_in(folder)
        atomic_write_json(meta_path, meta)
        exp = self.load(name)
        try:
            exp.update_meta(config_summary=config_summary(exp.config_path, exp.config))
        except ConfigError:
            pass  # an invalid config.toml is reported where it is used, with its problems
        return exp

    # ---- listing -----------------------------------------------------------------------------------

    def summarize(self, name: str) -> Summary:
        # plain string paths and one open() per file: pathlib's object churn was most of the cost of
        # listing a thousand folders
        folder = os.path.join(self.root, name)
        try:
            with open(os.path.join(folder, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not a JSON object")
        except FileNotFoundError:
            return Summary(name, "damaged", problem="no meta.json")
        except (ValueError, UnicodeDecodeError) as e:
            return Summary(name, "damaged", problem=f"meta.json unreadable ({e})")
        status = meta.get("status", "new")
        if status == "running":  # only a claimed run needs its lock checked
            status = Experiment(Path(folder), meta).live_status()
        s = Summary(name, status, best_val_loss=meta.get("best_val_loss"),
                    updated=meta.get("updated"), tags=list(meta.get("tags") or []),
                    archived=bool(meta.get("archived")), parent=meta.get("parent"),
                    preset=meta.get("preset"), step=meta.get("step"), error=meta.get("error"))
        blobs = meta.get("blobs") or {}
        cached = meta.get("config_summary") or {}
        config_path = os.path.join(folder, "config.toml")
        try:
            st = os.stat(config_path)
            if (cached.get("stamp") != [st.st_mtime_ns, st.st_size]
                    or cached.get("v") != CONFIG_SUMMARY_VERSION):
                cached = config_summary(Path(config_path), config_mod.load(config_path))
        except FileNotFoundError:
            s.problem = "no config.toml"
            return s
        except ConfigError as e:
            s.problem = f"config.toml invalid ({e.problems[0]})"
            return s
        s.params, s.quant, s.arch = cached.get("params"), cached.get("quant"), cached.get("arch")
        s.board, s.fits, s.over = cached.get("board"), cached.get("fits"), cached.get("over") or ""
        blob = blobs.get(s.quant) if isinstance(blobs, dict) else None
        s.blob_bytes = blob.get("size") if isinstance(blob, dict) else None
        s.bits_per_byte = _bits_per_byte(meta, s.quant)
        return s

    def list(self, include_archived: bool = False) -> list[Summary]:
        rows = [self.summarize(n) for n in self.names()]
        return [r for r in rows if include_archived or not r.archived]

    # ---- changes -----------------------------------------------------------------------------------

    def refuse_if_running(self, exp: Experiment, action: str) -> None:
        info = read_lock(exp.folder)
        if info is not None and info.is_alive():
            raise LockHeld(f"cannot {action} '{exp.name}' while pid {info.pid} is running it; "
                           f"`tinylm stop {exp.name}` first")

    def clone(self, src: str, dst: str, with_checkpoints: bool = False,
              overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
        """Copy the recipe (and with_checkpoints, the checkpoints) into a new experiment whose
        config is the source's with `overrides` applied. Checkpoints are only copied into a config
        of their own model shape: otherwise budget, sample and export would disagree with them."""
        source = self.load(src)
        check_name(dst)
        if self.folder(dst).exists():
            raise UserError(f"experiment '{dst}' already exists; pick another name")
        cfg = config_mod.apply_overrides(source.config, list(overrides)) if overrides else \
            source.config
        if with_checkpoints and overrides:
            self._refuse_other_shape(source, cfg, overrides)
        exp = self.create(dst, cfg, parent=src, preset=source.meta.get("preset"))
        files = list(RECIPE_FILES[1:]) + (list(CHECKPOINT_FILES) if with_checkpoints else [])
        for fname in files:
            if (source.folder / fname).exists():
                shutil.copy2(source.folder / fname, exp.folder / fname)
        extra = {"tags": list(source.meta.get("tags") or [])}
        if with_checkpoints:
            extra |= {"step": source.meta.get("step", 0),
                      "best_val_loss": source.meta.get("best_val_loss"),
                      "status": "stopped" if (exp.folder / "ckpt.pt").exists() else "new"}
        exp.update_meta(**extra)
        return exp

    def _refuse_other_shape(self, source: Experiment, cfg: ExperimentConfig,
                            overrides: list[str] | tuple[str, ...]) -> None:
        from .checkpoint import shape_differences
        from .ckpt_fields import checkpoint_fields

        for fname in CHECKPOINT_FILES:
            if not source.path(fname).exists():
                continue
            old = checkpoint_fields(source.path(fname), with_config=True).get("config")
            diffs = shape_differences(old, cfg) if isinstance(old, dict) else []
            if diffs:
                raise UserError(
                    f"cannot clone '{source.name}' with its checkpoints and --set "
                    f"{' --set '.join(overrides)}: {fname} holds another model shape:\n  "
                    + "\n  ".join(diffs) + "\ndrop --with-checkpoints to train the new shape "
                    "from scratch, or drop the --set of those model keys to keep the checkpoints")

    def rename(self, old: str, new: str) -> Experiment:
        exp = self.load(old)
        self.refuse_if_running(exp, "rename")
        target = self.folder(new)
        if target.exists():
            raise UserError(f"experiment '{new}' already exists; pick another name")
        exp.folder.rename(target)
        renamed = self.load(new)
        renamed.update_meta(name=new)
        for other in self.names():  # keep lineage pointing at the new name
            if other == new:
                continue
            try:
                child = self.load(other)
            except UserError:
                continue
            if child.meta.get("parent") == old:
                child.update_meta(parent=new)
        return renamed

    def archive(self, name: str, archived: bool = True) -> Experiment:
        """Hide from the default list; nothing is moved or deleted (`--unarchive` brings it back)."""
        exp = self.load(name)
        self.refuse_if_running(exp, "archive")
        exp.update_meta(archived=archived)
        return exp

    def tag(self, name: str, add: list[str] = (), remove: list[str] = ()) -> Experiment:  # type: ignore[assignment]
        exp = self.load(name)
        for t in list(add) + list(remove):
            if not t or any(c.isspace() for c in t) or "," in t:
                raise UserError(f"invalid tag {t!r}: tags are single words without commas")
        tags = [t for t in exp.meta.get("tags") or [] if t not in remove]
        tags += [t for t in add if t not in tags]
        exp.update_meta(tags=tags)
        return exp

    def note(self, name: str, text: str, append: bool = False) -> Experiment:
        exp = self.load(name)
        old = exp.meta.get("notes") or ""
        exp.update_meta(notes=(old + "\n" + text).strip() if append and old else text)
        return exp
