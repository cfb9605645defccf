"""What CPU this is: measured choices (kernels, a native build) are only valid on the CPU that
made them, so their cache keys name it."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), so a different machine measures again."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_id() -> str:
    """Model name and instruction-set flags: two CPUs sold under one name ("AMD EPYC") may differ
    in what -march=native compiles for."""
    flags = _cpuinfo_field("flags") or _cpuinfo_field("Features")
    return f"{cpu_model()} {hashlib.sha256(flags.encode()).hexdigest()[:8]}"
