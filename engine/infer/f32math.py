"""The firmware's float32 primitives in numpy, bit for bit (firmware/BLOB.md "Arithmetic").

Why a module: the sampler (engine/infer/sample.py), the quantizer (engine/blob/quantize.py) and the numpy
reference of the firmware (engine/blob/reference.py) must produce the same bits as the C core, so the few
operations whose result depends on how they are computed (exp, rounding, sums, and the activations
built on exp) are written once, here, as sequences of float32 numpy operations in the order the spec
gives. Each numpy op on float32 arrays is one IEEE-754 binary32 operation with round-to-nearest-even,
like C compiled with -ffp-contract=off. No torch: importing this is cheap.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

# tl_expf constants, as the C float literals round them
LOG2E = F32(1.44269504)  # public: integer mode (engine/blob/reference.py) uses it too
_LN2_HI = F32(0.693359375)
_LN2_LO = F32(2.12194440e-4)
_P6 = F32(0.00138888892)
_P5 = F32(0.00833333377)
_P4 = F32(0.0416666679)
_P3 = F32(0.166666672)
_P2 = F32(0.5)
_ZERO = F32(0.0)
_ONE = F32(1.0)
_TWO = F32(2.0)
_HALF = F32(0.5)


def round_half_away(v: np.ndarray | float) -> np.ndarray:
    """C's `(int)(v + (v >= 0 ? 0.5f : -0.5f))`: a float32 add, then truncation toward zero.

    Not np.round (half to even), and not exact round-half-away either: the float add can round
    (e.g. 0.49999997f + 0.5f == 1.0f), and the firmware does exactly that add.
    """
    v = np.asarray(v, dtype=F32)
    return (v + np.where(v >= 0, _HALF, -_HALF)).astype(np.int32)


def tl_expf(x: np.ndarray | float) -> np.ndarray:
    """BLOB.md's tl_expf, vectorised: clamp, k = round(x * log2 e), two-constant reduction,
    degree-6 polynomial evaluated innermost first, times 2^k built from exponent bits."""
    x = np.clip(np.asarray(x, dtype=F32), F32(-87.0), F32(88.0))
    k = round_half_away(x * LOG2E)
    kf = k.astype(F32)
    r = (x - kf * _LN2_HI) + kf * _LN2_LO
    p = _P5 + r * _P6
    p = _P4 + r * p
    p = _P3 + r * p
    p = _P2 + r * p
    p = _ONE + r * p
    p = _ONE + r * p
    two_k = ((k + 127).astype(np.int32) << 23).view(F32)  # |k| <= 127: a normal float
    return p * two_k


def seq_sum(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """`acc = 0.0f; for v in x: acc = acc + v` — left to right, unlike np.sum (pairwise).

    Along `axis` (None: over the flattened array). np.add.accumulate is a running sum, so its last
    element is exactly the sequential float32 sum, except for the sign of an all-(-0.0) sum, which
    the final `+ 0.0f` fixes (C starts from +0.0f). A scalar for 1-D input, else an array.
    """
    x = np.asarray(x, dtype=F32)
    if axis is None:
        x, axis = x.reshape(-1), 0
    if x.shape[axis] == 0:
        return np.sum(x, axis=axis, dtype=F32)  # nothing to add: 0.0f
    return np.take(np.add.accumulate(x, axis=axis, dtype=F32), -1, axis=axis) + _ZERO


def softmax_f32(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """BLOB.md softmax along `axis`: m = max; e = tl_expf(x - m); sum sequential; p = e / sum."""
    x = np.asarray(x, dtype=F32)
    e = tl_expf(x - x.max(axis=axis, keepdims=True))
    return e / np.expand_dims(seq_sum(e, axis=axis), axis)


def sigmoid_f32(v: np.ndarray) -> np.ndarray:
    """BLOB.md sigmoid: 1 / (1 + tl_expf(-v))."""
    v = np.asarray(v, dtype=F32)
    return _ONE / (_ONE + tl_expf(-v))


def silu_f32(v: np.ndarray) -> np.ndarray:
    """BLOB.md SiLU: v / (1 + tl_expf(-v)) (one division, not v * sigmoid(v))."""
    v = np.asarray(v, dtype=F32)
    return v / (_ONE + tl_expf(-v))


def tanh_f32(v: np.ndarray) -> np.ndarray:
    """BLOB.md tanh: 2 * sigmoid(2v) - 1."""
    v = np.asarray(v, dtype=F32)
    return _TWO * sigmoid_f32(_TWO * v) - _ONE
