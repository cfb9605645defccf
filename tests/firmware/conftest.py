"""Fixtures for the firmware tests: the host build and blobs written by engine/blob.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine import blob_layout as bl
from engine.blob import write_blob
from engine.config import ExperimentConfig, ModelConfig, QuantConfig, TokenizerConfig
from engine.vocab import byte_vocab

from protocol_util import BOARD, FIRMWARE

DATA = Path("/work/shared/data/llama2c")
if not DATA.exists():
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "llama2c"


def tiny_cfg(arch: str, seq_len: int = 24, tie: bool = True) -> ExperimentConfig:
    model = ModelConfig(arch=arch, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=44,
                        seq_len=seq_len, tie_embeddings=tie)
    return ExperimentConfig(model=model, tokenizer=TokenizerConfig(kind="byte", vocab_size=256),
                            quant=QuantConfig(group_size=32))


def random_state(cfg: ExperimentConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for s in bl.tensor_specs(cfg, "f32"):
        if s.name == "rope":
            continue
        shape = (s.cols,) if s.rows == 1 else (s.rows, s.cols)
        state[s.name] = (rng.normal(size=shape) * 0.3).astype(np.float32)
    return state


@pytest.fixture(scope="session")
def board() -> Path:
    subprocess.run(["make", "-C", str(FIRMWARE), "host"], check=True, capture_output=True)
    return BOARD


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="session")
def make_blob(blob_dir):
    """make_blob(arch, method, seed=0, tie=True, seq_len=24, int_attention=False) -> path of a random
    small model's blob (int_attention: BLOB.md flags bit 1, integer mode)."""
    def make(arch: str, method: str, seed: int = 0, tie: bool = True, seq_len: int = 24,
             int_attention: bool = False) -> Path:
        path = blob_dir / f"{arch}_{method}_{seed}_{int(tie)}_{seq_len}_{int(int_attention)}.blob"
        if not path.exists():
            cfg = tiny_cfg(arch, seq_len, tie)
            write_blob(path, cfg, random_state(cfg, seed), byte_vocab(), method,
                       int_attention=int_attention)
        return path
    return make


@pytest.fixture(scope="session")
def stories_blob(blob_dir):
    """stories260K imported from llama2.c (+ tok512.model) as a blob per quant method."""
    from engine.interop import config_from_llama2c, read_llama2c
    from engine.vocab import load_vocab

    if not (DATA / "stories260K.bin").exists():
        pytest.skip("stories260K.bin not available")
    f, state = read_llama2c(DATA / "stories260K.bin")
    vocab = load_vocab(DATA / "tok512.model")
    cfg = config_from_llama2c(f, vocab)

    def make(method: str, int_attention: bool = False) -> Path:
        path = blob_dir / f"stories260K_{method}{'_int' if int_attention else ''}.blob"
        if not path.exists():
            write_blob(path, cfg, state, vocab, method, int_attention=int_attention)
        return path
    return make
