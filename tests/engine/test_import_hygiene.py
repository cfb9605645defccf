"""The engine never loads Textual, and only the model/training code loads torch: the CLI and the TUI
must start fast (`import torch` costs ~2 s)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import engine
from tests.conftest import REPO

TORCH_ALLOWED = ("engine.models",)  # the model definitions are torch code by nature


def engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")
                  if not m.name.endswith("__main__"))


def test_engine_never_imports_textual_and_torch_only_where_needed():
    mods = [m for m in engine_modules() if not m.startswith(TORCH_ALLOWED)]
    code = ("import sys\n"
            f"for m in {mods!r}: __import__(m)\n"
            "print('textual' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], (mods, out.stdout)


def test_cli_help_is_fast_enough_to_feel_instant():
    code = "import time; t=time.perf_counter(); import engine.cli; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert float(out.stdout) < 1.0  # no torch, no sentencepiece at import


# The pipeline's stages, bottom first: a module may import its own stage and the stages below it,
# never one above (design.md "imports point down"). errors and atomic are the floor.
LAYERS = ["errors", "atomic", "config", "store", "data", "models", "infer", "train", "blob",
          "device", "chat", "cli"]


def test_stages_import_only_downwards():
    import re
    from pathlib import Path

    rank = {name: i for i, name in enumerate(LAYERS)}
    rank["data"] = rank["models"] = rank["store"] + 1  # siblings: neither imports the other
    wrong = []
    for path in Path(REPO, "engine").rglob("*.py"):
        rel = path.relative_to(Path(REPO, "engine")).parts
        stage = rel[0] if len(rel) > 1 else path.stem
        if stage not in rank:
            continue
        for m in re.finditer(r"^\s*from engine\.(\w+)", path.read_text(), re.M):
            target = m.group(1)
            if target in rank and rank[target] > rank[stage]:
                wrong.append(f"{path.relative_to(REPO)} imports engine.{target}")
    assert not wrong, wrong
