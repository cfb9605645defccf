"""The native causal-attention kernel (native_attention.cpp): built here, loaded, made a torch op.

Why built on the user's machine: the kernel is compiled with -march=native for the CPU that runs
it, against the torch it runs with; nothing binary ships in the repo. A build takes ~10 s once per
machine and torch version (kept under ~/.cache/tinylm/native/), so it is only started where it pays
back: engine/train/kernels.py builds it for a run long enough to spend that on its calibration, and
then races it against the torch paths like any other candidate. Everything else only loads a build
that already exists. A build that fails (no C++ compiler, no ninja, a torch whose BLAS does not
export sgemm_) leaves the torch paths in use and says why; it is not retried for the same key.

The op is registered with a fake (shape) implementation and an autograd formula, so torch.compile
sees one opaque call and keeps it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path

import torch

from engine.machine import cpu_id

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_attention.cpp")
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
BLOCK = 64  # query positions per block of scores: 64 x 512 floats stay in L2 (measured: 32 ties)
BUILD_SECONDS = 30.0  # what a build costs, rounded up (measured 10-14 s on 2 EPYC cores)
STALE_LOCK_S = 300.0  # a build lock this old was left by a build that was killed midway

_state: dict[str, bool] = {"loaded": False}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "tinylm" / "native"


def source_digest() -> str:
    """The kernel source's hash: part of the build key, and of engine/train/kernels.py's cache key
    (a cached "native" choice names a build of one source)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]


def build_key() -> str:
    """Source, flags, torch and CPU: a change to any of them is a different build."""
    parts = [source_digest(), *CFLAGS, torch.__version__, cpu_id()]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:12]


def _name() -> str:
    return f"tinylm_attention_{build_key()}"


def available() -> bool:
    return bool(_state["loaded"])


def ensure(build: bool) -> str:
    """Load the kernel ("" when it is in use), building it first if `build`; else why it is not."""
    if _state["loaded"]:
        return ""
    name = _name()
    folder = cache_dir() / name
    failed, library, lock = folder / "FAILED", folder / f"{name}.so", folder / "lock"
    if build:
        wait_for_other_build(lock)  # another process's build of the same key, if any
    being_built = lock.exists()  # torch's build lock: the .so may be half written
    try:
        if library.is_file() and not being_built:
            torch.ops.load_library(str(library))
        elif failed.is_file():
            return (f"its build failed on this machine before ({failed.read_text().strip()}); "
                    f"delete {folder} to try again")
        elif not build:
            return ("being built by another process (or a build was interrupted: the next long "
                    "run builds it)" if being_built else
                    "not built on this machine yet (a run long enough to pay its ~10 s build does it)")
        else:
            _build(folder, name)
    except Exception as e:  # noqa: BLE001 - any failure leaves the torch paths, with the reason
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        if build:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                failed.write_text(why + "\n")
            except OSError:
                pass
        return f"not usable ({why})"
    _register()
    _state["loaded"] = True
    return ""


def wait_for_other_build(lock: Path, stale_s: float = STALE_LOCK_S) -> None:
    """Wait while another process builds (torch's lock file exists). torch itself waits for that
    file forever, and a build killed midway (a run stopped during its calibration) leaves it
    behind: every later long run would hang. A lock older than `stale_s` is removed."""
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_s:
            lock.unlink(missing_ok=True)
            log.info("removed a stale build lock (%.0f s old): %s", age, lock)
            return
        time.sleep(0.5)


def _build(folder: Path, name: str) -> None:
    from torch.utils.cpp_extension import load

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(folder),
         is_python_module=False, verbose=False)
    log.info("native attention kernel built in %.1f s (%s)", time.perf_counter() - t0, folder)


def _register() -> None:
    """Shape function (for torch.compile) and autograd formula of the loaded op."""
    if getattr(_register, "done", False):
        return

    @torch.library.register_fake("tinylm::causal_attention")
    def _fake(q, k, v, scale, block):
        B, T, H, D = q.shape
        return q.new_empty(B, T, H, D), q.new_empty(B, H, T)

    @torch.library.register_fake("tinylm::causal_attention_backward")
    def _fake_backward(d_out, q, k, v, out, lse, scale, block):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, scale, block = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.block = scale, block

    def backward(ctx, d_out, _d_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.tinylm.causal_attention_backward(d_out, q, k, v, out, lse,
                                                                ctx.scale, ctx.block)
        return dq, dk, dv, None, None

    torch.library.register_autograd("tinylm::causal_attention", backward,
                                    setup_context=setup_context)
    _register.done = True  # type: ignore[attr-defined]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, T, H, hd], k and v [B, T, KV, hd] (views are fine) -> [B, T, H * hd]; needs ensure()."""
    B, T, H, D = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out, _ = torch.ops.tinylm.causal_attention(q, k, v, 1.0 / math.sqrt(D), BLOCK)
    return out.view(B, T, H * D)
