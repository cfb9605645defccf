"""The budget's verdict is the firmware allocator's: the virtual board with a chip's heap regions
(`--heap`, engine/config/budget.py BOARDS) loads a model exactly when `budget.place` says it fits,
and its refusal names the same block and numbers."""

from __future__ import annotations

import pytest
from protocol_util import StdioBoard

from engine.blob.format import read_blob
from engine.config import budget


@pytest.mark.parametrize("method,int_mode,chip_name", [
    ("f32", False, "esp32"),  # float KV cache: 160 KB in one piece > the largest region
    ("int8", False, "esp32"),
    ("int8", True, "esp32"),  # integer mode: 60 KB
    ("f32", False, "esp32-s3-nopsram"),
    ("f32", False, "esp32-c3"),
])
def test_virtual_board_with_chip_regions_agrees_with_budget(board, stories_blob, method, int_mode,
                                                             chip_name):
    path = stories_blob(method, int_attention=int_mode)
    blob = read_blob(path)
    ram = budget.runtime_ram(blob.config(), blob.header.quant, context_len=128)
    chip = budget.board_named(chip_name)
    placed = budget.place(chip, ram)
    args = ("--blob", str(path), "--ctx", "128", "--heap", chip.heap_arg(), "--board", chip_name)
    with StdioBoard(*args) as b:
        ready = b.link.msg()
        assert ready["model"] == ("ok" if placed.ok else "bad"), (placed, ready)
        reply = b.link.call("INFO")
        if placed.ok:
            assert reply.int("ram") == ram["total"]
            assert reply.int("heap") == chip.ram_bytes - (ram["total"] - ram["io_buffers"])
        else:
            why = bytes.fromhex(reply["hex"]).decode()
            assert why.startswith(f"ram: largest free block {placed.largest_left} B < needed "
                                  f"{placed.needed} B ({placed.failed})"), why
    if (method, int_mode, chip_name) == ("f32", False, "esp32"):
        assert not placed.ok and ram["total"] < chip.ram_bytes  # the case the issue is about
