"""Experiment config: typed dataclasses <-> TOML (tomllib to read, tomli-w to write).

Why so strict: a config is the recipe of an experiment and the thing users diff and script against.
A typo (`batch_sise`) that silently falls back to a default wastes a training run, so unknown keys are
errors with a did-you-mean, and every problem in a file is reported at once with the key, the bad
value, why it is bad and what to do instead.

Every default runs on a CPU laptop in minutes. `to_toml(load(text))` writes every key, so a saved
config is complete and round-trips exactly.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.atomic import atomic_write_text
from engine.errors import ConfigError

ARCHS = ("transformer", "gru")
TOKENIZER_KINDS = ("sentencepiece", "byte")
SP_MODEL_TYPES = ("bpe", "unigram")
QUANT_METHODS = ("f32", "int8", "ternary")
BOARDS = ("esp32", "esp32-s3", "esp32-s3-nopsram", "esp32-c3", "host")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")
CORPUS_FORMATS = ("auto", "text", "tinystories")
COMPILE_MODES = ("auto", "on", "off")
# keys whose value is one of a fixed set (forms offer a picker, completion offers the words)
CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ARCHS, "data.format": CORPUS_FORMATS, "tokenizer.kind": TOKENIZER_KINDS,
    "tokenizer.model_type": SP_MODEL_TYPES, "train.device": DEVICES, "train.dtype": DTYPES,
    "quant.method": QUANT_METHODS, "device.board": BOARDS, "train.compile": COMPILE_MODES,
}
# keys whose type changed: an old config's value is read as its new spelling
LEGACY_VALUES: dict[str, dict[Any, Any]] = {"train.compile": {True: "on", False: "off"}}


@dataclass
class ModelConfig:
    arch: str = "transformer"  # "transformer" (llama-style) or "gru"
    dim: int = 64  # embedding width (GRU: hidden size too)
    n_layers: int = 5  # transformer blocks / stacked GRU layers
    n_heads: int = 8  # attention heads (transformer only)
    n_kv_heads: int = 4  # key/value heads for grouped-query attention; must divide n_heads
    hidden_dim: int = 0  # SwiGLU width; 0 = llama2.c rule (2/3 * 4 * dim rounded up to multiple_of)
    multiple_of: int = 4  # rounding for the automatic hidden_dim
    seq_len: int = 256  # training context length (and max on-device context)
    tie_embeddings: bool = True  # share tok_embeddings and output weights (llama2.c default)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base frequency
    dropout: float = 0.0  # dropout during training only

    def ffn_dim(self) -> int:
        """SwiGLU hidden width, computed exactly as llama2.c's model.py does when hidden_dim is 0."""
        if self.hidden_dim:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def kv_dim(self) -> int:
        return self.head_dim() * self.n_kv_heads


@dataclass
class DataConfig:
    corpus: str = "corpora/tinystories_slice.txt"  # UTF-8 text; relative paths start at the workspace
    format: str = "auto"  # "tinystories" splits on <|endoftext|>; "text" on blank lines; "auto" picks
    val_fraction: float = 0.05  # share of documents held out for validation (split by document)
    seed: int = 1337  # fixes the train/val split


@dataclass
class TokenizerConfig:
    kind: str = "sentencepiece"  # "sentencepiece" (trained on the corpus) or "byte" (256 raw bytes)
    vocab_size: int = 512  # must equal the model's vocabulary; 256 for "byte"
    model_type: str = "bpe"  # sentencepiece algorithm: "bpe" or "unigram"
    max_train_bytes: int = 20_000_000  # sentencepiece trains on at most this much of the corpus


@dataclass
class TrainConfig:
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 2000  # optimizer steps
    # training-time budget in minutes (evaluation and checkpoints not counted); 0 = steps only.
    # With a budget the lr anneals to min_lr over the budget's last fifth (engine/train/loop.py
    # lr_at), so it ends annealed instead of being cut mid-decay
    max_minutes: float = 0.0
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr: float = 1e-4  # floor of the cosine schedule
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    eval_every: int = 200  # steps between val-loss evaluations
    eval_batches: int = 20  # micro-batches per evaluation
    ckpt_every: int = 200  # steps between checkpoints (one is also written on stop)
    log_every: int = 10  # steps between metrics.jsonl lines
    seed: int = 1337  # seeds torch, numpy and the batch sampler
    device: str = "auto"  # "auto" (CUDA if present, else CPU), "cpu" or "cuda"
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA, f32 on CPU), "float32" or "bfloat16"
    # torch.compile: "auto" tries it on the run's own steps when the run is long enough and keeps
    # it only if faster (engine/train/compile_trial.py); "on" always, "off" never
    compile: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = all cores, one fewer while another process takes one

    def out_of_time(self, trained_s: float) -> bool:
        """True once a run with a time budget has trained that long (the loop ends there, and a
        resume past it is refused before anything starts)."""
        return self.max_minutes > 0 and trained_s >= 60.0 * self.max_minutes


@dataclass
class QuantConfig:
    method: str = "int8"  # blob format: "f32", "int8" (group-wise) or "ternary" (2-bit, absmean)
    group_size: int = 32  # int8 scale group (32 or 64); a row's last group may be shorter
    qat_steps: int = 0  # quantization-aware fine-tuning steps before export
    # integer mode (firmware/BLOB.md flags bit 1): int8 KV cache and integer attention, SwiGLU and
    # matmul accumulation, for boards without an FPU (ESP32-C3); int8/ternary transformers only
    int_attention: bool = False


@dataclass
class DeviceConfig:
    board: str = "esp32"  # target: "esp32", "esp32-s3", "esp32-c3" or "host"
    port: str = ""  # serial port, "socket://host:port", "virtual", "rv32", or "" for the workspace default
    baud: int = 115200  # UART speed
    context_len: int = 0  # on-device context (KV cache length); 0 = model.seq_len


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """{"model.dim": 64, ...}: the form diffs and `--set` use."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def context_len(self) -> int:
        return self.device.context_len or self.model.seq_len

    def model_hash(self) -> str:
        """Hash of what fixes the weights' shapes: a checkpoint with another hash cannot be loaded."""
        shape = asdict(self.model) | {"vocab_size": self.tokenizer.vocab_size}
        for k in ("dropout",):
            shape.pop(k)
        return hashlib.sha256(repr(sorted(shape.items())).encode()).hexdigest()[:16]


SECTIONS: dict[str, type] = {f.name: f.type for f in fields(ExperimentConfig)}  # type: ignore[misc]
_SECTION_CLASSES = {
    "model": ModelConfig,
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
    "quant": QuantConfig,
    "device": DeviceConfig,
}


# ---- parsing ---------------------------------------------------------------------------------------

def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(choices))}"


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _coerce(key: str, value: Any, default: Any, problems: list[str]) -> Any:
    """Check a TOML value against the field's default type; ints are accepted where floats go."""
    want = type(default)
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):  # TOML has inf and nan: a run with them trains NaN
                problems.append(f"{key} = {value!r}: must be a finite number (for example "
                                f"{key} = {tomli_w.dumps({'v': default})[4:].strip()})")
                return default
    else:
        ok = isinstance(value, want)
    if not ok:
        problems.append(
            f"{key} = {value!r}: must be {_type_name(default)}, got {_type_name(value)} "
            f"(for example {key} = {tomli_w.dumps({'v': default})[4:].strip()})"
        )
        return default
    return value


def from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Build and validate a config; raises ConfigError listing every problem."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTION_CLASSES:
            problems.append(f"[{name}]: unknown section; {_did_you_mean(name, list(_SECTION_CLASSES))}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{name} = {value!r}: must be a table ([{name}] section)")
            continue
    for name, cls in _SECTION_CLASSES.items():
        raw = data.get(name, {})
        raw = raw if isinstance(raw, dict) else {}
        defaults = cls()
        names = [f.name for f in fields(cls)]
        kwargs = {}
        for key, value in raw.items():
            if key not in names:
                problems.append(f"{name}.{key}: unknown key; {_did_you_mean(key, names)}")
                continue
            legacy = LEGACY_VALUES.get(f"{name}.{key}", {})
            if isinstance(value, (bool, int, float, str)) and value in legacy:
                value = legacy[value]
            kwargs[key] = _coerce(f"{name}.{key}", value, getattr(defaults, key), problems)
        sections[name] = cls(**kwargs)
    cfg = ExperimentConfig(**sections)
    problems.extend(validate(cfg))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _choice(key: str, value: str, choices: tuple[str, ...]) -> list[str]:
    if value in choices:
        return []
    hint = difflib.get_close_matches(value, choices, n=1)
    tip = f"did you mean '{hint[0]}'?" if hint else f"use one of: {', '.join(choices)}"
    return [f"{key} = {value!r}: not a known value; {tip}"]


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Bounds:
    """Where a number may lie; None = unbounded on that side."""

    ge: float | None = None  # value ≥ ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value ≤ le
    lt: float | None = None  # value < lt
    example: str = ""  # a good value, shown in the message

    def describe(self) -> str:
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt)
        high = ("]", self.le) if self.le is not None else (")", self.lt)
        if low[1] is not None and high[1] is not None:
            return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low[1] is not None:
            return f"{'≥' if self.ge is not None else '>'} {_num(low[1])}"
        if high[1] is not None:
            return f"{'≤' if self.le is not None else '<'} {_num(high[1])}"
        return "a finite number"

    def complaint(self, v: float) -> str | None:
        """What is wrong with `v` in a knob's words ("1.5 is outside 0..1"), or None if it holds."""
        if self.holds(v):
            return None
        if not math.isfinite(v):
            return f"{_num(v)} is not a finite number"
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            ends = [f"{_num(x)} excluded" for x, open_ in ((low, self.gt is not None),
                                                           (high, self.lt is not None)) if open_]
            return ", ".join([f"{_num(v)} is outside {_num(low)}..{_num(high)}"] + ends)
        return f"{_num(v)} is not {self.describe()}"

    def holds(self, v: float) -> bool:
        return (math.isfinite(v) and (self.ge is None or v >= self.ge)
                and (self.gt is None or v > self.gt) and (self.le is None or v <= self.le)
                and (self.lt is None or v < self.lt))


# The rules for numbers, by config key. The same table checks config files, `--set` and numbers given
# as command-line flags (`check_values`), so a value is accepted or refused with one message
# wherever it comes from.
RULES: dict[str, Bounds] = {
    "model.dim": Bounds(ge=1), "model.n_layers": Bounds(ge=1), "model.seq_len": Bounds(ge=1),
    "model.multiple_of": Bounds(ge=1), "model.hidden_dim": Bounds(ge=0),
    "model.dropout": Bounds(ge=0, lt=1), "model.norm_eps": Bounds(gt=0, example="1e-5"),
    "model.rope_theta": Bounds(gt=0, example="10000.0"),
    "data.val_fraction": Bounds(gt=0, lt=0.5, example="0.05"),
    "tokenizer.max_train_bytes": Bounds(ge=1),
    **{f"train.{k}": Bounds(ge=1) for k in ("batch_size", "grad_accum", "max_steps", "eval_every",
                                            "eval_batches", "ckpt_every", "log_every")},
    "train.warmup_steps": Bounds(ge=0), "train.threads": Bounds(ge=0),
    "train.max_minutes": Bounds(ge=0, example="15"),
    "train.grad_clip": Bounds(ge=0), "train.weight_decay": Bounds(ge=0),
    "train.lr": Bounds(gt=0, example="1e-3"), "train.min_lr": Bounds(ge=0),
    "train.beta1": Bounds(ge=0, lt=1), "train.beta2": Bounds(ge=0, lt=1),
    "quant.qat_steps": Bounds(ge=0),
    "device.baud": Bounds(ge=1200), "device.context_len": Bounds(ge=0),
}


def number_problem(key: str, value: Any, bounds: Bounds) -> str | None:
    """The one check for a number: finite and within `bounds`; the problem text, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} = {value!r}: must be a number"
    if bounds.holds(value):
        return None
    what = bounds.describe()
    if not math.isfinite(value):
        what = "a finite number" + ("" if what == "a finite number" else f" {what}")
    tip = f", e.g. {bounds.example}" if bounds.example else ""
    return f"{key} = {_num(value)}: must be {what}{tip}"


def check_values(values: dict[str, Any], source: str = "command line",
                 bounds: dict[str, Bounds] | None = None) -> None:
    """Refuse numbers from the command line (or any caller) by the config's rules: a key found in
    RULES uses its rule, others the `bounds` given. Raises ConfigError (exit 2) listing all problems."""
    rules = {**RULES, **(bounds or {})}
    problems = [p for k, v in values.items() if (p := number_problem(k, v, rules[k])) is not None]
    if problems:
        raise ConfigError(problems, source)


def _at_least(key: str, value: float, low: float) -> list[str]:
    p = number_problem(key, value, Bounds(ge=low))
    return [p] if p else []


def _rules(cfg: ExperimentConfig) -> list[str]:
    """Every number against RULES, plus finiteness of the float keys RULES does not bound."""
    flat = cfg.flat()
    out = [p for key, bounds in RULES.items()
           if (p := number_problem(key, flat[key], bounds)) is not None]
    for key, value in flat.items():
        if key not in RULES and isinstance(value, float) and not math.isfinite(value):
            out.append(f"{key} = {_num(value)}: must be a finite number")
    return out


def validate(cfg: ExperimentConfig) -> list[str]:
    """Semantic checks across keys. Returns problems (empty = valid)."""
    p: list[str] = []
    m, d, t, tr, q, dev = cfg.model, cfg.data, cfg.tokenizer, cfg.train, cfg.quant, cfg.device
    p += _rules(cfg)
    p += _choice("model.arch", m.arch, ARCHS)
    if m.arch == "transformer":
        p += _at_least("model.n_heads", m.n_heads, 1)
        p += _at_least("model.n_kv_heads", m.n_kv_heads, 1)
        if m.n_heads >= 1 and m.dim >= 1 and m.dim % m.n_heads:
            divisors = [h for h in range(1, m.dim + 1) if m.dim % h == 0 and h <= 64]
            near = min(divisors, key=lambda h: abs(h - m.n_heads))
            p.append(
                f"model.dim = {m.dim}: must be divisible by model.n_heads = {m.n_heads} "
                f"(each head gets dim / n_heads channels); try model.n_heads = {near}"
            )
        elif m.n_heads >= 1 and m.dim // m.n_heads % 2:
            p.append(
                f"model.dim / model.n_heads = {m.dim // m.n_heads}: head size must be even for RoPE; "
                "change model.dim or model.n_heads"
            )
        if m.n_heads >= 1 and m.n_kv_heads >= 1 and m.n_heads % m.n_kv_heads:
            ok = [k for k in range(1, m.n_heads + 1) if m.n_heads % k == 0]
            p.append(
                f"model.n_kv_heads = {m.n_kv_heads}: must divide model.n_heads = {m.n_heads} "
                f"(grouped-query attention shares each kv head by n_heads / n_kv_heads query heads); "
                f"use one of {ok}"
            )

    if not d.corpus.strip():
        p.append('data.corpus = "": give the path of a UTF-8 text file')
    p += _choice("data.format", d.format, CORPUS_FORMATS)

    p += _choice("tokenizer.kind", t.kind, TOKENIZER_KINDS)
    p += _choice("tokenizer.model_type", t.model_type, SP_MODEL_TYPES)
    if t.kind == "byte" and t.vocab_size != 256:
        p.append(
            f"tokenizer.vocab_size = {t.vocab_size}: the byte tokenizer has exactly 256 tokens; "
            "set tokenizer.vocab_size = 256"
        )
    elif t.kind == "sentencepiece" and not (256 <= t.vocab_size <= 4096):
        p.append(
            f"tokenizer.vocab_size = {t.vocab_size}: must be between 256 and 4096 "
            "(the firmware stores token ids as uint16 and the vocab in flash)"
        )

    if tr.min_lr > tr.lr:
        p.append(f"train.min_lr = {tr.min_lr!r}: must be between 0 and train.lr = {tr.lr!r}")
    p += _choice("train.device", tr.device, DEVICES)
    p += _choice("train.dtype", tr.dtype, DTYPES)
    p += _choice("train.compile", tr.compile, COMPILE_MODES)

    p += _choice("quant.method", q.method, QUANT_METHODS)
    if q.group_size not in (32, 64):
        p.append(f"quant.group_size = {q.group_size}: must be 32 or 64")
    if q.int_attention and (q.method == "f32" or m.arch != "transformer"):
        p.append(f"quant.int_attention = true: needs quant.method int8 or ternary and model.arch "
                 f"transformer (is {q.method}, {m.arch}); set it to false")

    p += _choice("device.board", dev.board, BOARDS)
    if dev.context_len > m.seq_len:
        p.append(
            f"device.context_len = {dev.context_len}: must be ≤ model.seq_len = {m.seq_len} "
            "(the model never saw longer contexts); use 0 for model.seq_len"
        )
    return p


# ---- TOML ------------------------------------------------------------------------------------------

def loads(text: str, source: str = "config.toml") -> ExperimentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e} — fix the syntax at that line and column"], source) from e
    return from_dict(data, source)


def load(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError([f"{path} does not exist"], str(path)) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"not UTF-8 text ({e.reason} at byte {e.start})"], str(path)) from e
    return loads(text, str(path))


def dumps(cfg: ExperimentConfig) -> str:
    return tomli_w.dumps(cfg.to_dict())


def save(cfg: ExperimentConfig, path: str | Path) -> None:
    atomic_write_text(path, dumps(cfg))


# ---- overrides (`--set key=value`) ------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A TOML value if it parses as one (`3e-4`, `true`, `"x"`), else the raw string (`my file.txt`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: ExperimentConfig | dict[str, Any], overrides: list[str],
                    source: str = "--set") -> ExperimentConfig:
    """Apply `section.key=value` strings, then validate everything at once."""
    data = cfg.to_dict() if is_dataclass(cfg) else {k: dict(v) for k, v in cfg.items()}
    problems: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            problems.append(f"{item!r}: expected section.key=value, e.g. train.batch_size=32")
            continue
        if section not in _SECTION_CLASSES:
            problems.append(f"{key}: unknown section '{section}'; "
                            f"{_did_you_mean(section, list(_SECTION_CLASSES))}")
            continue
        data.setdefault(section, {})[name] = parse_value(raw.strip())
    try:
        result = from_dict(data, source)
    except ConfigError as e:
        raise ConfigError(problems + e.problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    return result
