"""Where training runs. All CUDA-specific choices live here (device, bf16 autocast, DDP backend,
pinned memory), so the rest of the code never says "cuda" and never hard-codes a device.

No GPU is available to this project: the CUDA branches are written and reviewed, and the autocast
path is exercised on CPU with bfloat16 (the same torch API).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from engine.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: Any  # torch.device
    autocast_dtype: Any  # torch.dtype or None (plain f32)
    ddp_backend: str  # "nccl" on CUDA, "gloo" on CPU
    pin_memory: bool

    @property
    def kind(self) -> str:
        return self.device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def pick_runtime(device: str = "auto", dtype: str = "auto", local_rank: int = 0) -> Runtime:
    """`device` "auto" = CUDA when present, else CPU. `dtype` "auto" = bf16 autocast on CUDA
    (when supported), plain f32 on CPU (CPU bf16 autocast is slower for models this small)."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise UserError("train.device = 'cuda' but torch sees no CUDA device on this machine; "
                        "set train.device = 'auto' (or 'cpu')")
    use_cuda = device == "cuda" or (device == "auto" and has_cuda)
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        dev = torch.device("cpu")
    if dtype == "bfloat16" or (dtype == "auto" and use_cuda and torch.cuda.is_bf16_supported()):
        amp = torch.bfloat16
    else:
        amp = None
    return Runtime(dev, amp, "nccl" if use_cuda else "gloo", pin_memory=use_cuda)


@dataclass(frozen=True)
class Dist:
    """torchrun's environment: rank 0 is the only process that writes files."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ["WORLD_SIZE"]))


def init_distributed(dist: Dist, runtime: Runtime) -> None:
    import torch.distributed as td

    if dist.enabled and not td.is_initialized():
        td.init_process_group(backend=runtime.ddp_backend)


def set_threads(threads: int) -> int:
    """0 = all cores; torchrun sets OMP_NUM_THREADS=1 per process, which we respect."""
    import torch

    if threads == 0:
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads
