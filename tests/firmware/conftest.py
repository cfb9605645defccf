"""Fixtures for the firmware tests: the host build and blobs written by engine/blob/format.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_util import BOARD, build

from engine.blob.format import write_blob
from engine.blob.vocab import byte_vocab
from tests.conftest import LLAMA2C, random_state, tiny_cfg


@pytest.fixture(scope="session")
def board() -> Path:
    build("host")
    return BOARD


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="session")
def make_blob(blob_dir):
    """make_blob(arch, method, seed=0, tie=True, seq_len=24, int_attention=False, per_byte=5) -> path
    of a random small model's blob (int_attention: BLOB.md flags bit 1, integer mode; per_byte 4: the
    2-bit ternary packing of format 1.x, 5: base-3 of 2.0)."""
    def make(arch: str, method: str, seed: int = 0, tie: bool = True, seq_len: int = 24,
             int_attention: bool = False, per_byte: int = 5) -> Path:
        path = blob_dir / f"{arch}_{method}_{seed}_{int(tie)}_{seq_len}_{int(int_attention)}_{per_byte}.blob"
        if not path.exists():
            cfg = tiny_cfg(arch, seq_len, tie)
            write_blob(path, cfg, random_state(cfg, seed), byte_vocab(), method,
                       int_attention=int_attention, ternary_per_byte=per_byte)
        return path
    return make


@pytest.fixture(scope="session")
def stories_blob(blob_dir):
    """stories260K imported from llama2.c (+ tok512.model) as a blob per quant method."""
    from engine.blob.llama2c import config_from_llama2c, read_llama2c
    from engine.blob.vocab import load_vocab

    f, state = read_llama2c(LLAMA2C / "stories260K.bin")
    vocab = load_vocab(LLAMA2C / "tok512.model")
    cfg = config_from_llama2c(f, vocab)

    def make(method: str, int_attention: bool = False, per_byte: int = 5) -> Path:
        path = blob_dir / f"stories260K_{method}{'_int' if int_attention else ''}_{per_byte}.blob"
        if not path.exists():
            write_blob(path, cfg, state, vocab, method, int_attention=int_attention,
                       ternary_per_byte=per_byte)
        return path
    return make
