"""The training subprocess: `python -m engine.train EXP_DIR [--resume] [--init-from X] [--lora R]`.

Runs alone or under `torchrun --nproc_per_node=N` (DDP: gloo on CPU, nccl on CUDA; only rank 0 writes
files). It owns the experiment while it runs (run.lock), keeps meta.json's status true, appends
metrics.jsonl line by line, and checkpoints atomically every `train.ckpt_every` steps and when it gets
SIGTERM/SIGINT, so `kill`, `tinylm stop` and even `kill -9` lose at most the steps since the last
checkpoint, and `--resume` continues the same loss curve with the same step numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.atomic import sweep_temp_files
from engine.config.schema import ExperimentConfig
from engine.config.workspace import Workspace, load_workspace
from engine.data.tokenizer import Stopped
from engine.errors import Failure, TinyLMError, UserError
from engine.infer.load import check_checkpoint
from engine.store.checkpoint import load_checkpoint, save_checkpoint, shape_differences
from engine.store.experiments import Experiment, Store
from engine.store.metrics import METRICS_NAME, append_metric, supersede_after

from . import kernels
from .compile_trial import MIN_REMAINING_S, CompileTrial
from .runtime import (
    Dist,
    ThreadGovernor,
    dist_from_env,
    init_distributed,
    pick_runtime,
    set_threads,
)

log = logging.getLogger("tinylm.train")


CLOCK_DECAY = 0.2  # a time budget's last fifth anneals the lr; before it the lr stays at its peak


def _cosine(progress: float, t: Any) -> float:
    if progress >= 1.0:
        return t.min_lr
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * max(0.0, progress))) * (t.lr - t.min_lr)


def lr_at(step: int, cfg: ExperimentConfig, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to min_lr at max_steps; with a time budget
    (train.max_minutes) also peak lr until the budget's last fifth, then cosine to min_lr when the
    time is up, and the lower of the two applies. Why not one cosine over the whole budget: a short
    budget leaves the model under-trained, and measured at 5 minutes (esp32-260k, tinystories_c) a
    full-length cosine ended at val loss 2.28 where the step schedule, still at ~0.56x peak, had
    2.09. A function of the step and the training time saved in the checkpoint, so a resumed run
    continues the schedule without repeating warmup."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    lr = _cosine((step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps), t)
    if t.max_minutes > 0:
        clock = elapsed_s / (60.0 * t.max_minutes)
        lr = min(lr, _cosine((clock - (1.0 - CLOCK_DECAY)) / CLOCK_DECAY, t))
    return lr


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps and checkpoints before exiting."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def load_init_weights(source: str, store: Store, cfg: ExperimentConfig) -> tuple[dict, str]:
    """Weights to fine-tune from: another experiment's checkpoint (by name) or a checkpoint path."""
    path = Path(source)
    if not path.exists():
        other = store.load(source)
        path = other.path("best.pt") if other.path("best.pt").exists() else other.path("ckpt.pt")
    data = load_checkpoint(path)
    diffs = shape_differences(data["config"], cfg, weights_only=True)
    if diffs:
        raise UserError(f"cannot initialise from {source}: the model shapes differ:\n  "
                        + "\n  ".join(diffs) + "\nclone that experiment instead "
                        f"(`tinylm clone {source} NEW`) so the shapes match")
    return data["model"], str(path)


class Trainer:
    """One training run of one experiment. `on_step` lets an in-process caller (tests, a notebook)
    see every metrics record; the subprocess path only writes metrics.jsonl."""

    def __init__(self, exp: Experiment, ws: Workspace, dist: Dist, resume: bool = False,
                 init_from: str | None = None, lora_rank: int = 0,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.exp = exp
        self.ws = ws
        self.dist = dist
        self.cfg = exp.config
        self.resume = resume
        self.init_from = init_from
        self.lora_rank = lora_rank
        self.on_step = on_step or (lambda rec: None)
        self.stop = StopFlag()
        self._progress_seen: dict[str, int] = {}
        self._kernel_stage_seen = ""

    # ---- setup -------------------------------------------------------------------------------------

    def setup(self) -> None:
        import torch

        from engine.data import prepare
        from engine.data.loader import BatchLoader, eval_batches
        from engine.data.tokenizer import check_vocab
        from engine.models import build_model

        cfg = self.cfg
        self.runtime = pick_runtime(cfg.train.device, cfg.train.dtype, self.dist.local_rank)
        init_distributed(self.dist, self.runtime)
        threads = set_threads(cfg.train.threads)
        # train.threads = 0: the count follows the measured speed (another process may take a core)
        governor = ThreadGovernor(threads)
        self.governor = (governor if cfg.train.threads == 0 and governor.active
                         and self.runtime.kind == "cpu" and not self.dist.enabled else None)
        self._threads = self._settled_threads = threads
        log.info("device %s, autocast %s, %d threads, world size %d", self.runtime.device,
                 self.runtime.autocast_dtype, threads, self.dist.world_size)
        torch.manual_seed(cfg.train.seed + self.dist.rank)

        ckpt = None
        if self.resume and self.exp.path("ckpt.pt").exists():
            # checked before the data step: a wrong tokenizer or shape is refused at once
            ckpt = load_checkpoint(self.exp.path("ckpt.pt"))
            check_checkpoint(self.exp, ckpt, self.exp.path("ckpt.pt"), cfg)
        corpus = self.ws.resolve(cfg.data.corpus)
        cache = self.ws.root / "cache"
        if self.dist.is_main:
            data = prepare(self.exp.folder, cfg, corpus, cache, on_progress=self._progress,
                           should_stop=lambda: bool(self.stop))
            self._barrier()
        else:
            self._barrier()  # rank 0 trains the tokenizer and writes the shards first
            data = prepare(self.exp.folder, cfg, corpus, cache)
        check_vocab(data.tokenizer, cfg.tokenizer.vocab_size)
        self.data = data
        self.tokens_per_step = (cfg.train.batch_size * cfg.model.seq_len * cfg.train.grad_accum
                                * self.dist.world_size)
        self.loader = BatchLoader(data.train_tokens, cfg.train.batch_size, cfg.model.seq_len,
                                  cfg.train.seed, rank=self.dist.rank,
                                  world_size=self.dist.world_size)
        self.val_batches = eval_batches(data.val_tokens, cfg.train.batch_size, cfg.model.seq_len,
                                        cfg.train.eval_batches)

        if self.lora_rank and (cfg.model.arch != "transformer" or self.lora_rank < 1):
            raise UserError(f"--lora {self.lora_rank}: LoRA adapts the transformer's attention and "
                            "feed-forward projections; it needs model.arch = 'transformer' and a "
                            "rank ≥ 1 (the GRU fine-tunes fully: drop --lora)")
        model = build_model(cfg)
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.best_val: float | None = None
        if ckpt is not None:
            lora = int(ckpt.get("lora_rank") or 0)
            if lora:
                from engine.models.lora import apply_lora
                apply_lora(model, lora)
                self.lora_rank = lora
            model.load_state_dict(ckpt["model"])
        elif self.resume:
            log.info("no ckpt.pt yet: starting from step 0")
        if ckpt is None and self.init_from:
            state, src = load_init_weights(self.init_from, Store(self.exp.folder.parent), cfg)
            model.load_state_dict(state)
            log.info("initialised from %s", src)
        if ckpt is None and self.lora_rank:
            from engine.models.lora import apply_lora
            apply_lora(model, self.lora_rank)
        model.to(self.runtime.device)
        self.raw_model = model
        self.calibration = self._choose_kernels(threads)
        kernels.apply(model, self.calibration.kernels)
        self.optimizer = self._make_optimizer(model)
        if ckpt is not None:
            if ckpt.get("optimizer"):
                self.optimizer.load_state_dict(ckpt["optimizer"])
                # the saved groups carry the saving run's fused/foreach flags: use this run's
                for group in self.optimizer.param_groups:
                    group.update(kernels.optimizer_flags(self.calibration.kernels, self.runtime.kind))
            self.step = int(ckpt.get("step", 0))
            self.tokens_seen = int(ckpt.get("tokens_seen", 0))
            self.elapsed = float(ckpt.get("elapsed_s", 0.0))
            self.best_val = ckpt.get("best_val_loss")
            if ckpt.get("loader"):
                self.loader.load_state_dict(ckpt["loader"])
            if ckpt.get("rng"):
                _set_rng_state(ckpt["rng"])
            log.info("resumed at step %d", self.step)
        self.compile_trial = None
        if cfg.train.compile == "on":
            model = torch.compile(model)
        elif cfg.train.compile == "auto":
            if self._compile_from_cache():
                model = torch.compile(model, dynamic=False)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(model, device_ids=[self.dist.local_rank] if self.runtime.kind == "cuda"
                        else None)
        self.model = model

    def _choose_kernels(self, threads: int) -> kernels.Calibration:
        """Kernels measured fastest for this machine and shape (cached in the workspace); never
        fails the run. The choice goes to train.log and meta.json's `kernels`.
        TINYLM_KERNELS=default skips the measurement (the test suite starts dozens of short runs
        in fresh workspaces: a few seconds each would add minutes)."""
        if os.environ.get("TINYLM_KERNELS") == "default":
            cal = kernels.Calibration(kernels.DEFAULT, "default",
                                      "TINYLM_KERNELS=default: not measured")
        else:
            cal = kernels.choose(self.cfg, self.ws.root / kernels.CACHE_FILE, threads=threads,
                                 device_kind=self.runtime.kind,
                                 autocast=self.runtime.autocast_dtype is not None,
                                 allow_measure=not self.dist.enabled,
                                 should_stop=lambda: bool(self.stop),
                                 on_progress=self._kernel_stage)
        log.info("kernels: %s (%s: %s)", cal.kernels.label(), cal.source, cal.reason)
        if cal.rates and cal.source == "measured":
            log.info("kernel rates: %s", ", ".join(f"{k} {v:,.0f}" for k, v in cal.rates.items()))
        if self.dist.is_main:
            self.exp.update_meta(kernels=cal.summary())
        return cal

    def _compile_from_cache(self) -> bool:
        """train.compile = "auto": True to compile now (a cached trial found it faster at this key);
        otherwise a CompileTrial is set up when one can run here, or nothing."""
        why = self._compile_trial_refusal()
        if why:
            log.info("torch.compile: not tried (%s)", why)
            return False
        verdict = kernels.compile_verdict(self.ws.root / kernels.CACHE_FILE, self.calibration.key)
        if verdict is not None:
            log.info("torch.compile: %s (cached trial of %s: %.2fx eager)",
                     "on" if verdict["faster"] else "off", verdict.get("measured", "?"),
                     float(verdict.get("gain", 0.0)))
            if self.dist.is_main:
                self.exp.update_meta(compile={**verdict, "source": "cache"})
            return bool(verdict["faster"])
        self.compile_trial = CompileTrial(
            min_remaining_s=float(os.environ.get("TINYLM_COMPILE_MIN_S", MIN_REMAINING_S)))
        return False

    def _compile_trial_refusal(self) -> str:
        """Why no compile trial runs here ("" when one may)."""
        if os.environ.get("TINYLM_KERNELS") == "default":
            return "TINYLM_KERNELS=default"
        if self.cfg.model.arch != "transformer":
            return f"model.arch = {self.cfg.model.arch}"
        if self.dist.enabled or self.lora_rank:
            return "distributed or LoRA run"
        if not self.calibration.key:
            return "no calibration key for this run"
        return ""

    def _compile_step(self, seconds: float) -> None:
        """Feed the trial one step's time; compile, keep or revert as it says."""
        import torch

        t = self.cfg.train
        remaining = t.max_steps - self.step
        if t.max_minutes > 0 and seconds > 0:
            remaining = min(remaining, max(0.0, 60 * t.max_minutes - self.elapsed) / seconds)
        action = self.compile_trial.observe(seconds, remaining)
        if action == "compile":
            log.info("torch.compile: trying it (eager %.3f s a step, ~%.0f s of run left); the next "
                     "step compiles", self.compile_trial.eager_s, remaining * self.compile_trial.eager_s)
            self.model = torch.compile(self.raw_model, dynamic=False)
        elif action in ("keep", "revert", "skip"):
            if action == "revert":
                self.model = self.raw_model
            log.info("torch.compile: %s", self.compile_trial.reason)
            if action != "skip":
                record = self.compile_trial.record()
                try:
                    kernels.store_compile_verdict(self.ws.root / kernels.CACHE_FILE,
                                                  self.calibration.key, record)
                except OSError as e:
                    log.info("torch.compile verdict not cached (%s)", e)
                self.exp.update_meta(compile={**record, "source": "measured"})
            self.compile_trial = None

    def _make_optimizer(self, model: Any) -> Any:
        params = [p for p in model.parameters() if p.requires_grad]
        return kernels.adamw(params, self.cfg, self.calibration.kernels, self.runtime.kind)

    def _barrier(self) -> None:
        if self.dist.enabled:
            import torch.distributed as td
            td.barrier()

    def _kernel_stage(self, done: int, total: int, what: str) -> None:
        """Say in train.log when the calibration moves to another stage (a native kernel build
        takes ~10 s before any step: the log says why nothing moves)."""
        if self._kernel_stage_seen != what:
            self._kernel_stage_seen = what
            log.info("%s", what)

    def _progress(self, what: str, fraction: float) -> None:
        """Log data preparation in quarter steps (the callback fires per chunk)."""
        bucket = int(fraction * 4)
        if self._progress_seen.get(what) != bucket:
            self._progress_seen[what] = bucket
            log.info("%s %.0f%%", what, 100 * fraction)

    # ---- loop --------------------------------------------------------------------------------------

    def evaluate(self) -> float:
        import torch

        self.model.eval()
        losses = []
        with torch.no_grad():
            for x, y in self.val_batches:
                x, y = x.to(self.runtime.device), y.to(self.runtime.device)
                with self.runtime.autocast():
                    _, loss = self.raw_model(x, y)
                losses.append(loss.item())
        self.model.train()
        val = sum(losses) / len(losses)
        if self.dist.enabled:
            import torch.distributed as td
            t = torch.tensor([val], device=self.runtime.device)
            td.all_reduce(t)
            val = t.item() / self.dist.world_size
        return val

    def checkpoint(self, name: str = "ckpt.pt") -> None:
        if not self.dist.is_main:
            return
        payload = {
            "model": {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "model_hash": self.cfg.model_hash(),
            "tokenizer_sha256": self.data.tokenizer.sha256,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed,
            "best_val_loss": self.best_val,
            "loader": self.loader.state_dict(),
            "rng": _rng_state(),
            "lora_rank": self.lora_rank,
        }
        try:
            save_checkpoint(self.exp.path(name), payload)
        except OSError as e:  # disk full: keep training, the previous checkpoint is intact
            log.error("could not write %s (%s); the previous one is kept", name, e)
            self.exp.update_meta(error=f"checkpoint write failed: {e}; free disk space")
            if name == "ckpt.pt" and (self.stop or self.step >= self.cfg.train.max_steps):
                raise
            return
        if name == "ckpt.pt":
            self.exp.update_meta(step=self.step, best_val_loss=self.best_val)

    def _govern_threads(self, now: float) -> None:
        """Apply the governor's thread count; log a change it settles on (not its tries)."""
        import torch

        threads = self.governor.step(self.tokens_per_step, now)
        if threads != self._threads:
            torch.set_num_threads(threads)
            self._threads = threads
        if not self.governor.probing and threads != self._settled_threads:
            rates = ", ".join(f"{n} threads {r:,.0f} tok/s"
                              for n, r in sorted(self.governor.rates.items()))
            log.info("now %d threads (measured %s): another process is %s a core", threads,
                     rates, "using" if threads < self._settled_threads else "no longer using")
            self._settled_threads = threads

    def _diverged(self, loss: float, lr: float) -> Failure:
        """Why a run stops at a NaN/inf loss, and how to go on: training further only writes NaN
        records and a NaN checkpoint, and export would write a blob of NaN weights."""
        t, name = self.cfg.train, self.exp.name
        ckpt = self.exp.path("ckpt.pt")
        back = (f"`tinylm resume {name}` continues from the last checkpoint" if ckpt.exists()
                else f"`tinylm resume {name}` starts it again")
        new_lr = min(t.lr / 10, 1e-3)  # a tenth, and never above the presets' 1e-3
        lower = [f"train.lr={new_lr:g}"] + ([f"train.min_lr={new_lr / 10:g}"]
                                            if t.min_lr > new_lr else [])
        return Failure(
            f"training diverged: the loss is {loss} at step {self.step + 1} (learning rate {lr:.3g}). "
            f"Likely cause: train.lr = {t.lr:g} is too high for this model (or train.warmup_steps = "
            f"{t.warmup_steps} too short, or train.grad_clip = {t.grad_clip:g} off). Lower it, "
            f"e.g. `tinylm set {name} {' '.join(lower)}`; then {back}")

    def run(self) -> str:
        """Train until max_steps or a stop signal; returns the final status."""
        import torch

        cfg, t = self.cfg, self.cfg.train
        metrics = None
        if self.dist.is_main:
            dropped = supersede_after(self.exp.path(METRICS_NAME), self.step)
            if dropped:
                log.info("metrics.jsonl: dropped %d lines past step %d (this run redoes those steps)",
                         dropped, self.step)
            metrics = open(self.exp.path(METRICS_NAME), "a")
        self.model.train()
        window_start, window_tokens, window_losses = time.perf_counter(), 0, []
        try:
            while self.step < t.max_steps and not self.stop:
                trained_s = self.elapsed + time.perf_counter() - window_start
                if t.out_of_time(trained_s):
                    break
                lr = lr_at(self.step, cfg, trained_s)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                step_loss = 0.0
                step_start = time.perf_counter()
                for micro in range(t.grad_accum):
                    x, y = self.loader.next_batch()
                    x, y = x.to(self.runtime.device), y.to(self.runtime.device)
                    sync = micro == t.grad_accum - 1
                    ctx = (self.model.no_sync() if self.dist.enabled and not sync
                           else contextlib.nullcontext())
                    with ctx:
                        with self.runtime.autocast():
                            _, loss = self.model(x, y)
                        (loss / t.grad_accum).backward()
                    step_loss += loss.item() / t.grad_accum
                if not math.isfinite(step_loss):  # before the optimizer step: weights stay finite
                    raise self._diverged(step_loss, lr)
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), t.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.tokens_seen += self.tokens_per_step
                window_tokens += self.tokens_per_step
                window_losses.append(step_loss)
                now = time.perf_counter()
                if self.compile_trial is not None:
                    self._compile_step(now - step_start)
                if self.governor is not None:
                    self._govern_threads(now)
                last = self.step >= t.max_steps or t.out_of_time(self.elapsed + now - window_start)
                do_eval = self.step % t.eval_every == 0 or last
                if self.step % t.log_every == 0 or do_eval or self.stop:
                    dt = now - window_start
                    self.elapsed += dt
                    record = {
                        "step": self.step, "tokens_seen": self.tokens_seen,
                        "train_loss": round(sum(window_losses) / len(window_losses), 5),
                        "val_loss": None, "lr": lr,
                        "tok_per_s": round(window_tokens / dt, 1) if dt > 0 else None,
                        "elapsed_s": round(self.elapsed, 3),
                    }
                    if do_eval:
                        val = self.evaluate()
                        record["val_loss"] = round(val, 5)
                        if self.best_val is None or val < self.best_val:
                            self.best_val = val
                            self.checkpoint("best.pt")
                    if metrics is not None:
                        append_metric(metrics, record)
                    self.on_step(record)
                    window_start, window_tokens, window_losses = time.perf_counter(), 0, []
                    if do_eval and self.governor is not None:
                        self.governor.restart_window(window_start)  # evaluation: not training
                if self.step % t.ckpt_every == 0 and not last:
                    ck_start = time.perf_counter()
                    self.checkpoint()
                    window_start += time.perf_counter() - ck_start  # not training time
                    if self.governor is not None:
                        self.governor.restart_window(time.perf_counter())
            self.checkpoint()
        finally:
            if metrics is not None:
                metrics.close()
        finished = self.step >= t.max_steps or t.out_of_time(self.elapsed)
        return "done" if finished else "stopped"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.train")
    p.add_argument("exp_dir", type=Path)
    p.add_argument("--workspace", help="workspace root (default: the experiments folder's parent)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init-from", help="experiment name or checkpoint path to fine-tune from")
    p.add_argument("--lora", type=int, default=0, metavar="RANK")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    dist = dist_from_env()
    exp_dir = args.exp_dir.resolve()
    ws = load_workspace(args.workspace or exp_dir.parent.parent)
    store = Store(exp_dir.parent)
    try:
        exp = store.load(exp_dir.name)
    except TinyLMError as e:
        log.error("%s", e)
        return e.exit_code
    lock = exp.lock(on_message=log.warning) if dist.is_main else None
    trainer = Trainer(exp, ws, dist, resume=args.resume, init_from=args.init_from,
                      lora_rank=args.lora)
    trainer.stop.install()
    try:
        if lock is not None:
            lock.acquire()
            swept = sweep_temp_files(exp.folder, ("ckpt.pt", "best.pt"))
            swept += sweep_temp_files(exp.folder, ("meta.json",), min_age_s=5.0)
            if swept:
                log.info("removed %d temp files left by a killed run", len(swept))
            changes: dict[str, Any] = {"status": "running", "pid": os.getpid(),
                                       "host": socket.gethostname(), "error": None}
            if args.init_from:
                changes["parent"] = args.init_from
            exp.update_meta(**changes)
        trainer.setup()
        status = trainer.run()
        if lock is not None:
            exp.update_meta(status=status, pid=None, step=trainer.step,
                            best_val_loss=trainer.best_val)
        log.info("%s at step %d", status, trainer.step)
        if dist.enabled:  # leave together: a rank tearing gloo down while another still writes aborts
            import torch.distributed as td
            td.barrier()
        return 0
    except Stopped:  # a stop signal while preparing data: nothing half-written was kept
        log.info("stopped before training started")
        if lock is not None and lock.held:
            exp.update_meta(status="stopped" if exp.path("ckpt.pt").exists() else "new", pid=None)
        return 0
    except TinyLMError as e:
        log.error("%s", e)
        if lock is not None and lock.held:
            exp.update_meta(status="failed", pid=None, error=str(e))
        return e.exit_code
    except Exception as e:  # anything else: record it so the UI shows why, keep the traceback in the log
        log.error("training failed:\n%s", traceback.format_exc())
        if lock is not None and lock.held:
            exp.update_meta(status="failed", pid=None, error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        if lock is not None:
            lock.release()
        if dist.enabled:
            import torch.distributed as td
            if td.is_initialized():
                td.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
