"""firmware/esp32/main/main.c compiles (syntax, types, IDF's warning flags) against declarations of
the ESP-IDF v5 calls it makes (idf_stubs/): ESP-IDF itself cannot be installed here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from protocol_util import FIRMWARE

STUBS = Path(__file__).parent / "idf_stubs"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_esp32_main_compiles_against_idf_declarations():
    # gnu17 for main.c (IDF's default), as main/CMakeLists.txt leaves it; -Werror like IDF's -Werror=all
    r = subprocess.run(["gcc", "-fsyntax-only", "-std=gnu17", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter", f"-I{STUBS}", f"-I{FIRMWARE / 'core'}",
                        str(FIRMWARE / "esp32" / "main" / "main.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
