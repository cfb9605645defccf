"""llama2.c interop: read its model `.bin` files (v0 legacy float, v1 float, v2 int8 Q8_0), write v0
so llama2.c's run.c runs our models, read/write its tokenizer `.bin`, and import a llama2.c model as an
experiment.

Why these checks: llama2.c files have a bare header and no checksum, and the classic failure is a
download that saved an error page ("Entry not found", 15 bytes) or stopped half-way. Every header is
checked against the file length before any weight is read, and each failure says what was expected.
Layouts follow llama2.c's export.py (`legacy_export`, `version1_export`, `version2_export`).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.config.schema import (
    ExperimentConfig,
    ModelConfig,
    TokenizerConfig,
    validate,
)
from engine.data.tokenizer import ByteTokenizer
from engine.errors import ConfigError, UserError
from engine.store.checkpoint import save_checkpoint
from engine.store.experiments import Experiment, Store

from .vocab import (  # noqa: F401  (re-exported)
    Vocab,
    load_vocab,
    read_tokenizer_bin,
    sentencepiece_model_bytes,
    tokenizer_bin_bytes,
    write_tokenizer_bin,
)

MAGIC_AK42 = 0x616B3432  # "ak42" as llama2.c's export.py writes it (uint32, little-endian)
V0_HEADER = 28  # 7 int32
V12_HEADER = 256
F32 = np.float32
_LAYER_MATS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
               "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")

__all__ = ["read_llama2c", "write_llama2c_v0", "llama2c_v0_bytes", "import_llama2c",
           "read_tokenizer_bin", "write_tokenizer_bin", "tokenizer_bin_bytes", "MAGIC_AK42"]


def _looks_like_text(head: bytes) -> bool:
    return bool(head.strip()) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _shapes(f: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Weight matrix shapes of one layer ([out, in], PyTorch order)."""
    d, h = f["dim"], f["hidden_dim"]
    kv = d // f["n_heads"] * f["n_kv_heads"]
    return {"attention.wq": (d, d), "attention.wk": (kv, d), "attention.wv": (kv, d),
            "attention.wo": (d, d), "feed_forward.w1": (h, d), "feed_forward.w2": (d, h),
            "feed_forward.w3": (h, d)}


def _check_fields(f: dict[str, Any], path: Path, what: str) -> None:
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    bad = [n for n in names if not 0 < f[n] < 1 << 24]
    ok = not bad and f["dim"] % f["n_heads"] == 0 and f["n_heads"] % f["n_kv_heads"] == 0
    if not ok:
        shown = ", ".join(f"{n}={f[n]}" for n in names)
        raise UserError(f"{path} is not a llama2.c model: {what} ({shown}) make no sense (bad magic "
                        "or a different file type); give a .bin written by llama2.c's export.py")


def _size_error(path: Path, f: dict[str, Any], expected: int, actual: int) -> UserError:
    why = "truncated (an interrupted download?)" if actual < expected else "longer than its header says"
    return UserError(f"{path}: the llama2.c v{f['version']} header (dim {f['dim']}, hidden "
                     f"{f['hidden_dim']}, layers {f['n_layers']}, heads {f['n_heads']}/"
                     f"{f['n_kv_heads']}, vocab {f['vocab_size']}, seq_len {f['seq_len']}) implies "
                     f"{expected} bytes but the file has {actual}: it is {why}; download or export "
                     "it again")


class _Cursor:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, dtype: str, count: int) -> np.ndarray:
        a = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += a.nbytes
        return a


def _float_state(f: dict[str, Any], cur: _Cursor, order: str) -> dict[str, np.ndarray]:
    d, L, V = f["dim"], f["n_layers"], f["vocab_size"]
    shapes = _shapes(f)
    state: dict[str, np.ndarray] = {}

    def per_layer(key: str, shape: tuple[int, ...]) -> None:
        for i in range(L):
            state[f"layers.{i}.{key}.weight"] = cur.take("<f4", int(np.prod(shape))).reshape(shape)

    if order == "v0":
        state["tok_embeddings.weight"] = cur.take("<f4", V * d).reshape(V, d)
        per_layer("attention_norm", (d,))
        for k in _LAYER_MATS[:4]:
            per_layer(k, shapes[k])
        per_layer("ffn_norm", (d,))
        for k in _LAYER_MATS[4:]:
            per_layer(k, shapes[k])
        state["norm.weight"] = cur.take("<f4", d)
        cur.pos += 2 * 4 * f["seq_len"] * (d // f["n_heads"] // 2)  # freq_cis_real / imag: unused
    else:  # v1
        per_layer("attention_norm", (d,))
        per_layer("ffn_norm", (d,))
        state["norm.weight"] = cur.take("<f4", d)
        state["tok_embeddings.weight"] = cur.take("<f4", V * d).reshape(V, d)
        for k in _LAYER_MATS:
            per_layer(k, shapes[k])
    if not f["shared_classifier"]:
        state["output.weight"] = cur.take("<f4", V * d).reshape(V, d)
    return state


def _v2_state(f: dict[str, Any], cur: _Cursor) -> dict[str, np.ndarray]:
    """Q8_0: norms f32, then every matrix's int8 values, then all their scales (one per `group`
    consecutive values of the flattened tensor); dequantized to float32 as run.c does."""
    d, L, g = f["dim"], f["n_layers"], f["group_size"]
    state: dict[str, np.ndarray] = {}
    for key in ("attention_norm", "ffn_norm"):
        for i in range(L):
            state[f"layers.{i}.{key}.weight"] = cur.take("<f4", d)
    state["norm.weight"] = cur.take("<f4", d)
    mats = _v2_matrices(f)
    qs = [cur.take("i1", int(np.prod(shape))) for _, shape in mats]
    for (name, shape), q in zip(mats, qs, strict=True):
        s = cur.take("<f4", q.size // g)
        state[name] = (q.astype(F32) * np.repeat(s, g)).astype(F32).reshape(shape)
    return state


def _v2_matrices(f: dict[str, Any]) -> list[tuple[str, tuple[int, int]]]:
    shapes = _shapes(f)
    mats = [("tok_embeddings.weight", (f["vocab_size"], f["dim"]))]
    for k in _LAYER_MATS:
        mats += [(f"layers.{i}.{k}.weight", shapes[k]) for i in range(f["n_layers"])]
    if not f["shared_classifier"]:
        mats.append(("output.weight", (f["vocab_size"], f["dim"])))
    return mats


def _n_float(f: dict[str, Any]) -> int:
    d, L, V = f["dim"], f["n_layers"], f["vocab_size"]
    per_layer = sum(r * c for r, c in _shapes(f).values()) + 2 * d
    return V * d + L * per_layer + d + (0 if f["shared_classifier"] else V * d)


def read_llama2c(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header fields, float32 state dict with PyTorch/llama2.c names). output.weight is present
    only when the classifier is not shared. Raises UserError on anything but a well-formed file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    data = path.read_bytes()
    n = len(data)
    if n < 4096 and _looks_like_text(data[:256]):
        text = data[:60].decode("ascii", "replace").strip()
        raise UserError(f"{path} is a {n}-byte text file ({text!r}), not a llama2.c model: a failed "
                        "download saved as a model? Download it again")
    if data[:4] == b"TLMB":
        raise UserError(f"{path} is a tinylm weight blob, not a llama2.c model; it is already in the "
                        "firmware's format")
    if n < V0_HEADER:
        raise UserError(f"{path} is {n} bytes, shorter than any llama2.c header ({V0_HEADER} bytes): "
                        "truncated or not a model; download it again")
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == MAGIC_AK42:
        version = struct.unpack_from("<i", data, 4)[0]
        if version not in (1, 2):
            raise UserError(f"{path}: llama2.c format version {version} is unknown (this tinylm reads "
                            "v0, v1 and v2); export it with llama2.c's export.py --version 0, 1 or 2")
        if n < V12_HEADER:
            raise UserError(f"{path}: {n} bytes, shorter than the {V12_HEADER}-byte v{version} "
                            "header: truncated; download it again")
        vals = struct.unpack_from("<7i", data, 8)
        shared = data[36]
        group = struct.unpack_from("<i", data, 37)[0] if version == 2 else 0
    else:
        version, vals, shared, group = 0, struct.unpack_from("<7i", data, 0), None, 0
    f: dict[str, Any] = dict(zip(("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                  "vocab_size", "seq_len"), vals, strict=True))
    f["version"] = version
    if version == 0:
        f["shared_classifier"] = f["vocab_size"] > 0
        f["vocab_size"] = abs(f["vocab_size"])
    else:
        f["shared_classifier"] = bool(shared)
    _check_fields(f, path, f"the v{version} header fields")
    d = f["dim"]
    if version == 0:
        freq = 2 * f["seq_len"] * (d // f["n_heads"] // 2)
        expected = V0_HEADER + 4 * (_n_float(f) + freq)
    elif version == 1:
        expected = V12_HEADER + 4 * _n_float(f)
    else:
        f["group_size"] = group
        mats = _v2_matrices(f)
        if group <= 0 or any(r * c % group for _, (r, c) in mats):
            raise UserError(f"{path}: v2 group_size {group} does not divide every tensor; the file is "
                            "damaged; export it again")
        numel = sum(r * c for _, (r, c) in mats)
        expected = V12_HEADER + 4 * (2 * f["n_layers"] * d + d) + numel + 4 * (numel // group)
    if n != expected:
        raise _size_error(path, f, expected, n)
    cur = _Cursor(data, V0_HEADER if version == 0 else V12_HEADER)
    state = _v2_state(f, cur) if version == 2 else _float_state(f, cur, "v0" if version == 0 else "v1")
    return f, state


def _np(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.ascontiguousarray(value, dtype="<f4")


def _freqs(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """llama2.c model.py's precompute_freqs_cis (torch float32), so an exported file matches what
    llama2.c itself writes."""
    import torch

    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: (head_dim // 2)].float() / head_dim))
    t = torch.arange(seq_len, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    return torch.cos(freqs).numpy(), torch.sin(freqs).numpy()


def llama2c_v0_bytes(cfg: ExperimentConfig, state: dict[str, Any]) -> bytes:
    """The legacy (v0) file run.c reads: 7 int32 (vocab negative = separate classifier), weights in
    legacy_export's order, the RoPE tables, then the classifier when not shared."""
    m = cfg.model
    if m.arch != "transformer":
        raise UserError("llama2.c runs transformers only; a GRU experiment cannot be exported to it")
    V = cfg.tokenizer.vocab_size
    vocab_field = V if m.tie_embeddings else -V
    parts = [struct.pack("<7i", m.dim, m.ffn_dim(), m.n_layers, m.n_heads, m.n_kv_heads,
                         vocab_field, m.seq_len)]

    def get(name: str, shape: tuple[int, ...]) -> bytes:
        if name not in state:
            raise UserError(f"tensor {name} is missing from the weights; export the checkpoint of "
                            "this experiment")
        a = _np(state[name])
        if a.size != int(np.prod(shape)):
            raise UserError(f"tensor {name} has shape {tuple(a.shape)} but the config expects "
                            f"{shape}; check config.toml against the checkpoint")
        return a.tobytes()

    d, L, h, kv = m.dim, m.n_layers, m.ffn_dim(), m.kv_dim()
    shapes = {"attention.wq": (d, d), "attention.wk": (kv, d), "attention.wv": (kv, d),
              "attention.wo": (d, d), "feed_forward.w1": (h, d), "feed_forward.w2": (d, h),
              "feed_forward.w3": (h, d)}
    parts.append(get("tok_embeddings.weight", (V, d)))
    layer_order = (["attention_norm"] + list(_LAYER_MATS[:4]) + ["ffn_norm"] + list(_LAYER_MATS[4:]))
    for key in layer_order:
        shape = shapes.get(key, (d,))
        parts += [get(f"layers.{i}.{key}.weight", shape) for i in range(L)]
    parts.append(get("norm.weight", (d,)))
    cos, sin = _freqs(m.seq_len, m.head_dim(), m.rope_theta)
    parts += [cos.astype("<f4").tobytes(), sin.astype("<f4").tobytes()]
    if not m.tie_embeddings:
        parts.append(get("output.weight", (V, d)))
    return b"".join(parts)


def write_llama2c_v0(path: str | Path, cfg: ExperimentConfig, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, llama2c_v0_bytes(cfg, state))


def config_from_llama2c(f: dict[str, Any], vocab: Vocab) -> ExperimentConfig:
    """An experiment config with the model's exact shapes (hidden_dim explicit)."""
    model = ModelConfig(arch="transformer", dim=f["dim"], n_layers=f["n_layers"],
                        n_heads=f["n_heads"], n_kv_heads=f["n_kv_heads"], hidden_dim=f["hidden_dim"],
                        seq_len=f["seq_len"], tie_embeddings=f["shared_classifier"])
    kind = "byte" if vocab.kind == "byte" else "sentencepiece"
    cfg = ExperimentConfig(model=model, tokenizer=TokenizerConfig(kind=kind, vocab_size=vocab.size))
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems, "llama2.c header")
    return cfg


def _tokenizer_model(path: Path, vocab: Vocab) -> bytes | None:
    """The experiment's tokenizer.model for an imported tokenizer: a sentencepiece .model as is, a
    llama2.c .bin converted to the sentencepiece model with its pieces and scores (so torch and the
    reference can encode prompts), None for the byte vocabulary (it needs no file)."""
    if vocab.kind == "byte":
        return None
    if path.suffix == ".model":
        return path.read_bytes()
    return sentencepiece_model_bytes(vocab)


def import_llama2c(store: Store, bin_path: str | Path, tokenizer_path: str | Path,
                   name: str) -> Experiment:
    """Create experiment `name` from a llama2.c model + its tokenizer (.model or .bin): config.toml,
    ckpt.pt (step 0, no optimizer), tokenizer.model (a .bin is converted to one), and the source
    in meta."""
    import torch

    bin_path, tokenizer_path = Path(bin_path), Path(tokenizer_path)
    fields, state = read_llama2c(bin_path)
    vocab = load_vocab(tokenizer_path, fields["vocab_size"])
    if vocab.size != fields["vocab_size"]:
        raise UserError(f"the tokenizer {tokenizer_path.name} has {vocab.size} tokens but the model "
                        f"{bin_path.name} has a vocabulary of {fields['vocab_size']}: give the "
                        "tokenizer the model was trained with")
    cfg = config_from_llama2c(fields, vocab)
    tok_bytes = _tokenizer_model(tokenizer_path, vocab)
    exp = store.create(name, cfg, parent=None)
    try:
        tensors = {k: torch.from_numpy(np.array(v, dtype=F32)) for k, v in state.items()}
        if fields["shared_classifier"]:
            tensors["output.weight"] = tensors["tok_embeddings.weight"]  # one tensor, as llama2.c
        if tok_bytes is None:
            tok_sha = ByteTokenizer.sha256
        else:
            tok_sha = hashlib.sha256(tok_bytes).hexdigest()
            atomic_write_bytes(exp.path("tokenizer.model"), tok_bytes)
        save_checkpoint(exp.path("ckpt.pt"), {"model": tensors, "config": cfg.to_dict(),
                                              "model_hash": cfg.model_hash(), "step": 0,
                                              "tokenizer_sha256": tok_sha})
        target = "tokenizer.model" if tok_bytes is not None else None
        source = {
            "kind": "llama2c", "path": str(bin_path.resolve()), "format": f"v{fields['version']}",
            "sha256": hashlib.sha256(bin_path.read_bytes()).hexdigest(),
            "tokenizer": str(tokenizer_path.resolve()), "tokenizer_file": target,
        }
        exp.update_meta(parent=f"llama2c:{bin_path.name}", source=source, status="done", step=0)
    except BaseException:
        shutil.rmtree(exp.folder, ignore_errors=True)
        raise
    return exp


def export_llama2c(exp: Experiment, out_dir: str | Path, which: str = "best",
                   force: bool = False) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.bin` (llama2.c v0) and `<out_dir>/tokenizer.bin`, which llama2.c's
    run.c reads. Existing files are only replaced with `force`; returns both paths."""
    from .export import experiment_vocab, float_state

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file, not a folder: give the folder to write "
                        f"{exp.name}.bin and tokenizer.bin into (it is created when missing)")
    model_path, tok_path = out_dir / f"{exp.name}.bin", out_dir / "tokenizer.bin"
    for target in (model_path, tok_path):
        if target.is_dir():
            raise UserError(f"{target} is a folder: move it away or give another output folder")
    existing = [t.name for t in (model_path, tok_path) if t.exists()]
    if existing and not force:
        raise UserError(f"{' and '.join(existing)} already exist in {out_dir}: add --force to "
                        "replace them, or give another folder")
    state, cfg, _ = float_state(exp, which)
    vocab = experiment_vocab(exp, cfg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir} ({e.strerror}): give a folder you can write to") \
            from e
    write_llama2c_v0(model_path, cfg, state)
    write_tokenizer_bin(tok_path, vocab)
    return model_path, tok_path
