"""`tinylm doctor`: what this machine has for each step of the workflow, and how to fix what is
missing. Every check is a (name, ok, detail, fix) row, so the TUI can show the same table."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from engine.config.schema import ExperimentConfig


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def _ram_bytes() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def training_memory(cfg: ExperimentConfig, params: int) -> dict[str, int]:
    """Rough peak training memory: weights + grads + AdamW moments (4+4+8 bytes a parameter), and
    activations kept for backward (per token per layer ~ (12·dim + 4·hidden) floats for a
    transformer, plus 3 copies of the logits: logits, softmax, grad). An estimate within ~2x."""
    m, t = cfg.model, cfg.train
    tokens = t.batch_size * m.seq_len
    per_layer = 12 * m.dim + 4 * m.ffn_dim() if m.arch == "transformer" else 10 * m.dim
    acts = 4 * tokens * (m.n_layers * per_layer + 3 * cfg.tokenizer.vocab_size)
    state = 16 * params
    return {"weights_grads_adam": state, "activations": acts, "total": state + acts}


def run_checks(cfg: ExperimentConfig | None = None, params: int | None = None) -> list[Check]:
    checks = [Check("python", True, f"{platform.python_version()} ({platform.machine()})")]
    try:
        import torch

        threads = torch.get_num_threads()
        checks.append(Check("torch", True, f"{torch.__version__}, {threads} CPU threads of "
                                           f"{os.cpu_count()} cores"))
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            checks.append(Check("cuda", True, ", ".join(names)))
        else:
            checks.append(Check("cuda", True, "no CUDA device: training runs on the CPU "
                                              "(fine for models of this size)"))
    except ImportError:
        checks.append(Check("torch", False, "not installed",
                            "pip install torch==2.13.0 (CPU build; `make setup` does it)"))
    ram = _ram_bytes()
    checks.append(Check("ram", ram is not None, f"{ram / 2**30:.1f} GiB available" if ram else
                        "unknown"))
    try:
        from serial.tools import list_ports

        ports = [p.device for p in list_ports.comports()]
        checks.append(Check("serial ports", True, ", ".join(ports) if ports else
                            "none found (no board plugged in; `--port virtual` uses the virtual "
                            "board)"))
    except ImportError:
        checks.append(Check("serial ports", False, "pyserial missing", "pip install pyserial"))
    try:
        import esptool

        checks.append(Check("esptool", True, esptool.__version__))
    except ImportError:
        checks.append(Check("esptool", False, "missing", "pip install esptool"))
    tools = [
        ("gcc", ["gcc", "--version"], "apt-get install gcc (builds the virtual board)"),
        ("c++", ["c++", "--version"], "apt-get install g++ (long training runs build the native "
                                      "attention kernel with it; without it torch's are used)"),
        ("make", ["make", "--version"], "apt-get install make"),
        ("clang", ["clang", "--version"], "apt-get install clang libclang-rt-14-dev (fuzzing)"),
        ("riscv64-unknown-elf-gcc", ["riscv64-unknown-elf-gcc", "--version"],
         "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf (rv32 build)"),
        ("qemu-system-riscv32", ["qemu-system-riscv32", "--version"],
         "apt-get install qemu-system-misc (emulated board, on-chip speed projection)"),
        ("valgrind", ["valgrind", "--version"], "apt-get install valgrind (instruction counts)"),
        ("idf.py", ["idf.py", "--version"], "install ESP-IDF to build firmware/esp32 for a real "
                                            "board (optional)"),
    ]
    for name, cmd, fix in tools:
        found = shutil.which(cmd[0])
        version = _version(cmd) if found else None
        checks.append(Check(name, bool(version), version or "not found", "" if version else fix))
    checks.append(_native_attention_check())
    if cfg is not None and params is not None:
        mem = training_memory(cfg, params)
        ok = ram is None or mem["total"] < ram
        checks.append(Check("training memory", ok,
                            f"~{mem['total'] / 2**20:.0f} MiB estimated for this config "
                            f"(batch {cfg.train.batch_size} x seq {cfg.model.seq_len})",
                            "" if ok else "lower train.batch_size or model.seq_len"))
    return checks


def _native_attention_check() -> Check:
    """Whether long runs here can race the native attention kernel (a missing build is normal
    until the first long run; a failed one is worth fixing)."""
    try:
        from engine.models import native_attention
    except ImportError:
        return Check("native attention", True, "needs torch")
    why = native_attention.ensure(build=False)
    if not why:
        return Check("native attention", True, f"built for this CPU and torch "
                                               f"({native_attention.cache_dir()})")
    failed = "failed" in why or "not usable" in why
    return Check("native attention", not failed, why,
                 f"install g++ and ninja, then `rm -rf {native_attention.cache_dir()}`: the next "
                 "long run builds it again" if failed else "")


def as_rows(checks: list[Check]) -> list[dict[str, Any]]:
    return [c.__dict__ for c in checks]
