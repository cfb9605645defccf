"""The firmware's float32 primitives in numpy, bit for bit (firmware/BLOB.md "Arithmetic").

Why a module: the sampler (engine/sample.py) and the numpy reference of the firmware
(engine/reference.py) must produce the same bits as the C core, so the few operations whose result
depends on how they are computed (exp, rounding, sums) are written once, here, as sequences of
float32 numpy operations in the order the spec gives. Each numpy op on float32 arrays is one
IEEE-754 binary32 operation with round-to-nearest-even, like C compiled with -ffp-contract=off.
No torch: importing this is cheap.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

# tl_expf constants, as the C float literals round them
_LOG2E = F32(1.44269504)
_LN2_HI = F32(0.693359375)
_LN2_LO = F32(2.12194440e-4)
_P6 = F32(0.00138888892)
_P5 = F32(0.00833333377)
_P4 = F32(0.0416666679)
_P3 = F32(0.166666672)
_P2 = F32(0.5)
_ONE = F32(1.0)
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
    k = round_half_away(x * _LOG2E)
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


def seq_sum(x: np.ndarray) -> np.float32:
    """`acc = 0.0f; for v in x: acc = acc + v` — left to right, unlike np.sum (pairwise).

    np.cumsum is a running sum, so each prefix is exactly the sequential float32 sum.
    """
    x = np.asarray(x, dtype=F32)
    if x.size == 0:
        return F32(0.0)
    return np.cumsum(x, dtype=F32)[-1]


def softmax_f32(x: np.ndarray) -> np.ndarray:
    """BLOB.md softmax: m = max; e = tl_expf(x - m); sum sequential; p = e / sum."""
    x = np.asarray(x, dtype=F32)
    e = tl_expf(x - x.max())
    return e / seq_sum(e)
