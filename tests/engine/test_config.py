from __future__ import annotations

import pytest

from engine.config import schema as C
from engine.config.presets import PRESETS, preset_config
from engine.errors import ConfigError


def test_round_trip_is_exact_for_every_preset(tmp_path):
    for name in PRESETS:
        cfg = preset_config(name)
        text = C.dumps(cfg)
        again = C.loads(text)
        assert again == cfg
        assert C.dumps(again) == text  # byte-identical on rewrite
        C.save(cfg, tmp_path / "c.toml")
        assert C.load(tmp_path / "c.toml") == cfg


def test_partial_file_fills_defaults():
    cfg = C.loads("[model]\ndim = 128\nn_heads = 4\n")
    assert cfg.model.dim == 128 and cfg.train.batch_size == C.TrainConfig().batch_size


def test_malformed_toml_names_line_and_column():
    with pytest.raises(ConfigError) as e:
        C.loads("[model]\ndim = 64\nn_layers = = 5\n", source="x.toml")
    msg = str(e.value)
    assert "line 3" in msg and "column" in msg and "x.toml" in msg


def test_every_problem_is_reported_at_once():
    text = """
[model]
dim = "sixty-four"
n_heads = 7
n_kv_heads = 3
seq_len = -5
[train]
batch_size = 0
batch_sise = 3
[quant]
method = "int4"
"""
    with pytest.raises(ConfigError) as e:
        C.loads(text)
    probs = e.value.problems
    joined = "\n".join(probs)
    assert "model.dim = 'sixty-four': must be an integer, got a string" in joined
    assert "train.batch_size = 0: must be ≥ 1" in joined
    assert "train.batch_sise: unknown key; did you mean 'batch_size'?" in joined
    assert "model.seq_len = -5: must be ≥ 1" in joined
    assert "quant.method = 'int4'" in joined and "int8" in joined
    assert "model.n_kv_heads = 3: must divide model.n_heads = 7" in joined
    assert len(probs) >= 6


def test_dim_not_divisible_by_heads_suggests_a_fix():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"model": {"dim": 64, "n_heads": 6, "n_kv_heads": 6}})
    msg = str(e.value)
    assert "model.dim = 64: must be divisible by model.n_heads = 6" in msg
    assert "try model.n_heads = " in msg


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"model": {"dim": 64, "n_heads": 8, "n_kv_heads": 3}})
    assert "use one of [1, 2, 4, 8]" in str(e.value)


def test_unknown_section_and_wrong_types():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"modle": {}, "train": {"compile": 3, "lr": True}})
    msg = str(e.value)
    assert "[modle]: unknown section; did you mean 'model'?" in msg
    assert "train.compile = 3: must be a string, got an integer" in msg
    assert "train.lr = True: must be a number, got a boolean" in msg


def test_int_accepted_where_float_expected():
    cfg = C.from_dict({"train": {"lr": 1, "min_lr": 0}})
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_overrides_parse_values_and_keep_strings_with_spaces():
    cfg = C.apply_overrides(C.ExperimentConfig(),
                            ["train.lr=3e-4", "data.corpus=my corpus/stories 1.txt",
                             "train.compile=true", "model.dim=128", "model.n_heads=8"])
    assert cfg.train.lr == 3e-4
    assert cfg.data.corpus == "my corpus/stories 1.txt"
    assert cfg.train.compile == "on" and cfg.model.dim == 128  # true: the old boolean spelling


def test_train_compile_modes_and_old_boolean_configs():
    assert C.ExperimentConfig().train.compile == "auto"
    assert C.from_dict({"train": {"compile": False}}).train.compile == "off"
    assert C.from_dict({"train": {"compile": "auto"}}).train.compile == "auto"
    with pytest.raises(ConfigError, match="use one of: auto, on, off"):
        C.from_dict({"train": {"compile": "sometimes"}})


def test_overrides_report_bad_syntax_and_bad_values_together():
    with pytest.raises(ConfigError) as e:
        C.apply_overrides(C.ExperimentConfig(), ["batch_size=3", "train.batch_size=-1",
                                                 "nope.x=1"])
    msg = str(e.value)
    assert "expected section.key=value" in msg
    assert "train.batch_size = -1: must be ≥ 1" in msg
    assert "unknown section 'nope'" in msg


def test_llama2c_hidden_dim_rule():
    assert C.ModelConfig(dim=64, multiple_of=4).ffn_dim() == 172  # stories260K
    assert C.ModelConfig(dim=288, multiple_of=32).ffn_dim() == 768  # stories15M
    assert C.ModelConfig(dim=64, hidden_dim=100).ffn_dim() == 100


def test_byte_tokenizer_needs_vocab_256_and_context_bounded():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"tokenizer": {"kind": "byte", "vocab_size": 512},
                     "device": {"context_len": 4096}})
    msg = str(e.value)
    assert "set tokenizer.vocab_size = 256" in msg
    assert "device.context_len = 4096: must be ≤ model.seq_len" in msg


def test_model_hash_tracks_shape_not_training_knobs():
    a = C.ExperimentConfig()
    b = C.apply_overrides(a, ["train.lr=0.01", "model.dropout=0.1"])
    c = C.apply_overrides(a, ["model.n_layers=4"])
    assert a.model_hash() == b.model_hash() != c.model_hash()
