"""Named starting points for real targets. Each is a set of overrides on the defaults, so a preset
reads as "what is different about this target", and `tinylm new --preset P --set ...` layers on top.
"""

from __future__ import annotations

from typing import Any

from engine.errors import UserError

from .schema import ExperimentConfig, from_dict

PRESETS: dict[str, dict[str, Any]] = {
    # llama2.c stories260K shape; on a plain ESP32 the KV cache is the limit: its heap's largest
    # block is ~136 KB, and a float KV cache at 128 tokens is 160 KB in one piece. Integer mode (int8
    # KV cache, 60 KB) fits it; the device context is 128 tokens while training still sees 256.
    "esp32-260k": {
        "_about": "260K-param llama2.c-shaped transformer for an ESP32 (int8 blob, integer mode, "
                  "128-token context)",
        "model": {"arch": "transformer", "dim": 64, "n_layers": 5, "n_heads": 8, "n_kv_heads": 4,
                  "multiple_of": 4, "seq_len": 256},
        "tokenizer": {"kind": "sentencepiece", "vocab_size": 512},
        "quant": {"method": "int8", "group_size": 32, "int_attention": True},
        "device": {"board": "esp32", "context_len": 128},
    },
    # Byte-level GRU: no tokenizer tables, O(1) state, fits boards with ~400-512 KB RAM.
    "gru-seed": {
        "_about": "byte-level GRU LM (~230K params) for small-RAM boards such as the ESP32-C3",
        "model": {"arch": "gru", "dim": 128, "n_layers": 2, "seq_len": 128, "tie_embeddings": True},
        "tokenizer": {"kind": "byte", "vocab_size": 256},
        "quant": {"method": "int8", "group_size": 32},
        "device": {"board": "esp32-c3"},
    },
    # ~1.2M params: wants the ESP32-S3's PSRAM for the KV cache at 512 tokens.
    "esp32s3-1m": {
        "_about": "~1.2M-param transformer for an ESP32-S3 with PSRAM (vocab 1024, 512 context)",
        "model": {"arch": "transformer", "dim": 128, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4,
                  "multiple_of": 32, "seq_len": 512},
        "tokenizer": {"kind": "sentencepiece", "vocab_size": 1024},
        "train": {"batch_size": 16, "lr": 8e-4},
        "quant": {"method": "int8", "group_size": 64},
        "device": {"board": "esp32-s3"},
    },
    # A larger model to run on the host (virtual board) when a bigger model is the point.
    "host-7m": {
        "_about": "~7M-param transformer for the host / virtual board (vocab 4096)",
        "model": {"arch": "transformer", "dim": 288, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6,
                  "multiple_of": 32, "seq_len": 256},
        "tokenizer": {"kind": "sentencepiece", "vocab_size": 4096},
        "train": {"batch_size": 32, "lr": 5e-4, "max_steps": 5000},
        "quant": {"method": "int8", "group_size": 64},
        "device": {"board": "host"},
    },
}

DEFAULT_PRESET = "esp32-260k"


def preset_names() -> list[str]:
    return list(PRESETS)


def describe(name: str) -> str:
    return str(PRESETS[name]["_about"])


def preset_config(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    data = {k: dict(v) for k, v in PRESETS[name].items() if not k.startswith("_")}
    return from_dict(data, source=f"preset {name}")
