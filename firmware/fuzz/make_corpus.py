"""Regenerate the small seed corpus of the libFuzzer harnesses (run from the repo root with the venv
python): tiny blobs written by engine/blob/format.py, and protocol lines framed per PROTOCOL.md."""

from __future__ import annotations

import hashlib
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.blob.format import build_blob  # noqa: E402
from engine.blob.vocab import byte_vocab  # noqa: E402
from engine.config import layout as bl  # noqa: E402
from engine.config.schema import ExperimentConfig, ModelConfig, QuantConfig, TokenizerConfig  # noqa: E402
from engine.device.protocol import encode_line as frame  # noqa: E402

HERE = Path(__file__).resolve().parent


def tiny(arch: str, method: str, int_attention: bool = False, per_byte: int = 5) -> bytes:
    model = ModelConfig(arch=arch, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=12,
                        seq_len=8, tie_embeddings=True)
    cfg = ExperimentConfig(model=model, tokenizer=TokenizerConfig(kind="byte", vocab_size=256),
                           quant=QuantConfig(method=method, group_size=32))
    rng = np.random.default_rng(0)
    state = {s.name: rng.normal(size=(s.rows, s.cols)).astype(np.float32)
             for s in bl.tensor_specs(cfg, "f32") if s.name != "rope"}
    return build_blob(cfg, state, byte_vocab(), method, int_attention=int_attention,
                      ternary_per_byte=per_byte)[0]


def main() -> None:
    (HERE / "corpus" / "blob").mkdir(parents=True, exist_ok=True)
    (HERE / "corpus" / "protocol").mkdir(parents=True, exist_ok=True)
    blobs = {}
    for arch in ("transformer", "gru"):
        for method in ("f32", "int8", "ternary"):
            data = tiny(arch, method)
            blobs[(arch, method)] = data
            (HERE / "corpus" / "blob" / f"{arch}_{method}.blob").write_bytes(data)
    for method in ("int8", "ternary"):  # integer mode (BLOB.md flags bit 1)
        data = tiny("transformer", method, int_attention=True)
        (HERE / "corpus" / "blob" / f"transformer_{method}_int.blob").write_bytes(data)
    for arch in ("transformer", "gru"):  # ternary as format 1.x packed it (2-bit): still read
        data = tiny(arch, "ternary", per_byte=4)
        (HERE / "corpus" / "blob" / f"{arch}_ternary_2bit.blob").write_bytes(data)
    up = blobs[("gru", "int8")][:192]
    lines = {
        "info": frame("INFO", id=1),
        "gen_ids": frame("GEN", id=2, ids="65,66,67", max=4, temp=0, topk=0, topp=0, rep=1, seed=1),
        "gen_sampled": frame("GEN", id=3, ids="65", max=6, temp="0.8", topk=5, topp="0.9", rep="1.2",
                             seed=9) + frame("STOP", id=4),
        "gen_hex": frame("GEN", id=5, hex="68656c6c6f", max=3),
        "upload": frame("UPBEGIN", id=6, size=len(blobs[("gru", "int8")]),
                        sha=hashlib.sha256(blobs[("gru", "int8")]).hexdigest())
        + frame("UPDATA", id=7, off=0, hex=up.hex(), crc=f"{zlib.crc32(up):08x}") + frame("UPEND", id=8),
        "noise": b"ets Jun  8 2016 00:22:57\r\nI (312) cpu_start: x\n@INFO id=1|0000\n"
        + frame("RESET", id=9),
    }
    for name, data in lines.items():
        (HERE / "corpus" / "protocol" / name).write_bytes(data)


if __name__ == "__main__":
    main()
