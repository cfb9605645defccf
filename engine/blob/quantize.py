"""Weight and activation quantization exactly as firmware/BLOB.md defines it (numpy, float32).

Why float32 step by step: the firmware dequantizes and quantizes with float32 operations, and the
blob must hold the very integers the reference (engine/blob/reference.py) expects, so every division and
rounding here is one float32 operation, with `round_half_away` (engine/infer/f32math.py) done the C way
(float add, truncate).

Also: the QAT fake-quant functions for torch (straight-through estimator) and a per-tensor report
(bytes in the blob, SNR in dB) so a user sees what each quantization costs before flashing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.config.layout import n_groups, tensor_specs
from engine.config.schema import ExperimentConfig
from engine.errors import UserError
from engine.infer.f32math import F32, round_half_away

_127 = F32(127.0)


class PackingError(UserError):
    """Packed ternary weights that break the format (a `11` bit pair, non-zero padding)."""


def _as_matrix(w: Any) -> np.ndarray:
    w = np.asarray(w, dtype=F32)
    return w.reshape(1, -1) if w.ndim == 1 else w


def _grouped(w: np.ndarray, group: int) -> np.ndarray:
    """[rows, cols] → [rows, n_groups, group], zero-padding the short last group (zeros change
    neither max|w| nor an integer sum)."""
    rows, cols = w.shape
    ng = n_groups(cols, group)
    if ng * group != cols:
        w = np.concatenate([w, np.zeros((rows, ng * group - cols), dtype=w.dtype)], axis=1)
    return w.reshape(rows, ng, group)


def quantize_int8(w: Any, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row-group: s = max|w| / 127 (0 for an all-zero group), q =
    clamp(round_half_away(w / s), -127, 127). Returns (q int8 [rows, cols], s f32 [rows, n_groups]).
    Also the activation quantization of BLOB.md (one row, group = header group_size)."""
    w = _as_matrix(w)
    rows, cols = w.shape
    g = _grouped(w, group)
    s = (np.max(np.abs(g), axis=2) / _127).astype(F32)
    safe = np.where(s > 0, s, F32(1.0)).astype(F32)
    q = np.clip(round_half_away(g / safe[:, :, None]), -127, 127)
    q = np.where(s[:, :, None] > 0, q, 0).astype(np.int8)
    return q.reshape(rows, -1)[:, :cols].copy(), s


def dequantize_int8(q: np.ndarray, s: np.ndarray, group: int) -> np.ndarray:
    """`(float)q[j] * s[group of j]`, the firmware's embedding-row arithmetic."""
    q = np.asarray(q)
    cols = q.shape[1]
    scale = np.repeat(np.asarray(s, dtype=F32), group, axis=1)[:, :cols]
    return (q.astype(F32) * scale).astype(F32)


def quantize_activation(x: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """BLOB.md "activation quantization" of a vector: (q int32 [n], s f32 [n_groups])."""
    q, s = quantize_int8(np.asarray(x, dtype=F32).reshape(1, -1), group)
    return q[0].astype(np.int32), s[0]


def ternary_scale(w: Any) -> np.float32:
    """absmean over the whole tensor, summed in float64 and rounded once (writer-side only: the
    firmware reads the scale, it never recomputes it)."""
    w = np.asarray(w, dtype=F32)
    return F32(np.mean(np.abs(w.astype(np.float64)))) if w.size else F32(0.0)


def quantize_ternary(w: Any) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58: t = clamp(round_half_away(w / s), -1, 1) with s = mean|w| (t = 0 when s = 0)."""
    w = _as_matrix(w)
    s = ternary_scale(w)
    if s == 0:
        return np.zeros(w.shape, dtype=np.int8), s
    t = np.clip(round_half_away(w / s), -1, 1).astype(np.int8)
    return t, s


def dequantize_ternary(t: np.ndarray, s: float) -> np.ndarray:
    return (np.asarray(t).astype(F32) * F32(s)).astype(F32)


def pack_ternary(t: np.ndarray) -> np.ndarray:
    """4 weights a byte, weight j in bits 2(j%4)..2(j%4)+1 of byte j/4: 00 = 0, 01 = +1, 10 = -1;
    each row packed on its own, unused trailing pairs 00. Returns uint8 [rows, ceil(cols/4)]."""
    t = np.asarray(t)
    if t.ndim == 1:
        t = t.reshape(1, -1)
    rows, cols = t.shape
    nb = (cols + 3) // 4
    codes = np.zeros((rows, nb * 4), dtype=np.uint8)
    codes[:, :cols][t == 1] = 1
    codes[:, :cols][t == -1] = 2
    c = codes.reshape(rows, nb, 4)
    return (c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)).astype(np.uint8)


def unpack_ternary(packed: np.ndarray, cols: int, name: str = "tensor") -> np.ndarray:
    """Inverse of `pack_ternary`; a `11` pair, or a non-zero pair past `cols`, is a PackingError."""
    packed = np.asarray(packed, dtype=np.uint8)
    rows, nb = packed.shape
    codes = np.stack([(packed >> (2 * k)) & 3 for k in range(4)], axis=2).reshape(rows, nb * 4)
    bad = np.argwhere(codes == 3)
    if bad.size:
        r, j = (int(v) for v in bad[0])
        raise PackingError(f"{name}: ternary weight [{r}, {j}] has the invalid bit pair 11 (only 00, "
                           "01, 10 exist): the blob is damaged or written by a buggy exporter; export "
                           "it again")
    if np.any(codes[:, cols:]):
        raise PackingError(f"{name}: non-zero padding bits after the last weight of a row: the blob "
                           "is damaged; export it again")
    t = np.zeros((rows, cols), dtype=np.int8)
    c = codes[:, :cols]
    t[c == 1] = 1
    t[c == 2] = -1
    return t


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def pack_ternary5(t: np.ndarray) -> np.ndarray:
    """Base-3, 5 weights a byte (BLOB.md 2.0, qtype 3): weight j of a row is digit j%5 of byte j/5,
    byte = sum d_i * 3^i with d = t + 1 (0 = -1, 1 = 0, 2 = +1: balanced, so that a weighted sum of
    the weights is linear in the byte's quotients floor(byte / 3^i), which the SIMD kernel uses);
    each row packed on its own, missing trailing weights are 0 (digit 1). Returns uint8
    [rows, ceil(cols/5)], every byte <= 242."""
    t = np.asarray(t)
    if t.ndim == 1:
        t = t.reshape(1, -1)
    rows, cols = t.shape
    nb = (cols + 4) // 5
    digits = np.ones((rows, nb * 5), dtype=np.uint8)
    digits[:, :cols] = (t + 1).astype(np.uint8)
    return (digits.reshape(rows, nb, 5) * _POW3).sum(axis=2, dtype=np.uint16).astype(np.uint8)


def unpack_ternary5(packed: np.ndarray, cols: int, name: str = "tensor") -> np.ndarray:
    """Inverse of `pack_ternary5`; a byte > 242, or a padding weight past `cols` that is not 0
    (digit 1), is a PackingError."""
    packed = np.asarray(packed, dtype=np.uint8)
    rows, nb = packed.shape
    bad = np.argwhere(packed > 242)
    if bad.size:
        r, k = (int(v) for v in bad[0])
        raise PackingError(f"{name}: base-3 byte {k} of row {r} is {int(packed[r, k])} (at most 242 = "
                           "five digits 2): the blob is damaged or written by a buggy exporter; export "
                           "it again")
    digits = ((packed[:, :, None] // _POW3) % 3).reshape(rows, nb * 5).astype(np.int8)
    if np.any(digits[:, cols:] != 1):
        raise PackingError(f"{name}: non-zero padding weights after the last weight of a row: the "
                           "blob is damaged; export it again")
    return (digits[:, :cols] - 1).astype(np.int8)


def snr_db(w: Any, w_hat: Any) -> float:
    """Signal-to-noise ratio of a reconstruction, 10·log10(Σw² / Σ(w−ŵ)²), in float64; inf if exact."""
    w = np.asarray(w, dtype=np.float64)
    err = float(np.sum((w - np.asarray(w_hat, dtype=np.float64)) ** 2))
    sig = float(np.sum(w * w))
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def roundtrip(w: Any, qtype: str, group: int) -> np.ndarray:
    """What the blob makes of a tensor: quantize then dequantize (f32 is exact)."""
    w = _as_matrix(w)
    if qtype == "f32":
        return w.copy()
    if qtype == "int8":
        q, s = quantize_int8(w, group)
        return dequantize_int8(q, s, group)
    if qtype == "ternary":
        t, s = quantize_ternary(w)
        return dequantize_ternary(t, s)
    raise ValueError(f"unknown qtype {qtype!r}")


@dataclass(frozen=True)
class TensorReport:
    name: str
    qtype: str
    shape: tuple[int, int]
    nbytes: int  # bytes in the blob (scales included)
    snr_db: float  # inf for f32


def quant_report(cfg: ExperimentConfig, state: dict[str, Any], method: str) -> list[TensorReport]:
    """Per tensor of the blob (RoPE table excluded): its precision, bytes and SNR."""
    out = []
    for spec in tensor_specs(cfg, method):
        if spec.name == "rope":
            continue
        w = _as_matrix(np.asarray(state[spec.name], dtype=F32))
        w_hat = roundtrip(w, spec.qtype, spec.group)
        out.append(TensorReport(spec.name, spec.qtype, (spec.rows, spec.cols), spec.nbytes(),
                                snr_db(w, w_hat)))
    return out


# ---- torch fake quantization (QAT) ------------------------------------------------------------------

def _torch_round_half_away(v: Any) -> Any:
    import torch

    return torch.trunc(v + torch.where(v >= 0, 0.5, -0.5).to(v.dtype))


def fake_quant_int8(w: Any, group: int) -> Any:
    """Forward: the int8 group-wise round trip of `w` (rows = first dim, groups along the last);
    backward: identity (straight-through estimator), so QAT trains through the rounding."""
    import torch

    shape = w.shape
    w2 = w.reshape(1, -1) if w.dim() == 1 else w.reshape(shape[0], -1)
    rows, cols = w2.shape
    ng = n_groups(cols, group)
    pad = ng * group - cols
    g = torch.nn.functional.pad(w2, (0, pad)).reshape(rows, ng, group)
    with torch.no_grad():
        s = g.abs().amax(dim=2, keepdim=True) / 127.0
        safe = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.clamp(_torch_round_half_away(g / safe), -127, 127)
        wq = (q * s).reshape(rows, ng * group)[:, :cols].reshape(shape)
    return w + (wq - w).detach()


def fake_quant_ternary(w: Any) -> Any:
    """Forward: absmean ternary round trip; backward: straight-through."""
    import torch

    with torch.no_grad():
        s = w.abs().mean()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        wq = torch.clamp(_torch_round_half_away(w / safe), -1, 1) * s
    return w + (wq - w).detach()
