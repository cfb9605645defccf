"""What the board should say: a numpy implementation of firmware/BLOB.md "Arithmetic" and "Sampler",
reading the blob (never a checkpoint), so its logits are bit-identical to the C firmware's.

Why numpy can match C bit for bit: every step is one IEEE-754 binary32 operation with
round-to-nearest-even, done as a float32 vector operation over independent lanes, and every sum is
sequential. numpy's own reductions (np.sum, np.dot, @) add in a different order (pairwise, BLAS), so
sums here go through `engine.f32math.seq_sum` (the C loop `acc = 0; for j: acc = acc + a[j]`). The
float32 primitives (tl_expf, softmax, sigmoid, SiLU, tanh) are engine/infer/f32math.py's and the sampler is
engine/infer/sample.py's, the same code the PyTorch side samples with.

Tokenizer rule (firmware/BLOB.md, proposed "Encoding" paragraph): see `Reference.encode`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from engine.errors import UserError
from engine.infer.f32math import (
    F32,
    LOG2E,
    seq_sum,
    sigmoid_f32,
    silu_f32,
    softmax_f32,
    tanh_f32,
)
from engine.infer.sample import Sampler, SamplingParams, check_sampling

from .format import FLAG_INT_ATTENTION, Blob, BlobTensor, read_blob
from .quantize import quantize_activation

_ZERO = F32(0.0)
_ONE = F32(1.0)


# ---- float32 helpers -------------------------------------------------------------------------------

def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: np.float32) -> np.ndarray:
    ss = seq_sum(x * x)
    ss = ss / F32(x.shape[0])
    ss = ss + eps
    r = _ONE / np.sqrt(ss)
    return w * (r * x)


# ---- integer mode (flags bit 1, BLOB.md "Integer mode") ----------------------------------------------
# Exact integer arithmetic (int64 in numpy, int32/int64 in C) on the bit patterns of float32 values;
# the few float operations left are the ones BLOB.md names.

_I64 = np.int64
#: EXP2[b] = round(32768 * 2^(-b/256)), b = 0..255 (float64, then rounded; no entry is near a tie)
EXP2_LUT = np.rint(32768.0 * np.exp2(-np.arange(256) / 256.0)).astype(_I64)
#: SIG[i] = round(32768 * sigmoid(-16 + i/16)), i = 0..512
SIG_LUT = np.rint(32768.0 / (1.0 + np.exp(16.0 - np.arange(513) / 16.0))).astype(_I64)


def _fbits(x: np.ndarray) -> np.ndarray:
    """float32 bit patterns as int64 (non-negative)."""
    return np.ascontiguousarray(x, dtype=F32).view(np.uint32).astype(_I64)


def _fexp(u: np.ndarray) -> np.ndarray:
    """E(x) = max(exponent field, 1): |x| = M(x) * 2^(E(x) - 150) for every finite x."""
    return np.maximum((u >> 23) & 255, 1)


def _fmant(u: np.ndarray) -> np.ndarray:
    """M(x): the 23 stored mantissa bits, plus the implicit 2^23 when the exponent field is not 0."""
    return (u & 0x7FFFFF) | np.where((u >> 23) & 255 != 0, 0x800000, 0)


def _m16(u: np.ndarray) -> np.ndarray:
    """m16(x) = M(x) >> 8: |x| ~ m16 * 2^(E - 142), 16 bits (0 for 0)."""
    return _fmant(u) >> 8


def _clamp(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """np.clip without its per-call Python overhead (the reference calls it thousands of times a
    token; the result is the same)."""
    return np.minimum(np.maximum(x, lo), hi)


def _pow2f(k: np.ndarray) -> np.ndarray:
    """2^k as a float32 built from its exponent bits; 0 below 2^-126, +inf above 2^127."""
    k = np.asarray(k, dtype=_I64)
    bits = ((_clamp(k, -126, 127) + 127) << 23).astype(np.uint32).view(F32)
    return np.where(k < -126, _ZERO, np.where(k > 127, F32(np.inf), bits)).astype(F32)


def _qcore(mag: np.ndarray, top: np.ndarray) -> np.ndarray:
    """round(127 * mag / top) for 0 <= mag <= top, 2^15 <= top < 2^16 (per row of `mag`), by the
    reciprocal R = floor(127 * 2^23 / top): (mag * R + 2^22) >> 23."""
    r = 1065353216 // top
    return (mag * r[:, None] + (1 << 22)) >> 23


def _grouped(x: np.ndarray, group: int) -> tuple[np.ndarray, int]:
    x = np.asarray(x, dtype=F32).reshape(-1)
    n = x.shape[0]
    ng = -(-n // group)
    if ng * group != n:
        x = np.pad(x, (0, ng * group - n))
    return x.reshape(ng, group), n


def _iquant(x: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """BLOB.md "iquant": integer activation quantization. Returns (q int64 [n], s f32 [n_groups])."""
    g, n = _grouped(x, group)
    u = _fbits(g)
    a = np.max(u & 0x7FFFFFFF, axis=1)
    ok = a >= 0x800000
    amax = a.astype(np.uint32).view(F32)
    s = np.where(ok, amax / F32(127.0), _ZERO).astype(F32)
    ea = a >> 23
    top = np.where(ok, ((a & 0x7FFFFF) | 0x800000) >> 8, 1 << 15)
    sh = ea[:, None] - _fexp(u) + 8
    mag = np.where(sh >= 32, 0, _fmant(u) >> _clamp(sh, 0, 31))
    k = _qcore(mag, top)
    q = np.where((u >> 31) != 0, -k, k)
    q = np.where(ok[:, None], q, 0)
    return q.reshape(-1)[:n], s


def _to_f32_scaled(acc: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(float)acc * pow2f(k): int64 -> float32 (round to nearest even), then one float multiply."""
    with np.errstate(over="ignore", invalid="ignore"):  # IEEE results (inf, NaN), as in C
        return np.asarray(acc, dtype=_I64).astype(F32) * _pow2f(k)


def _swiglu_int(hb: np.ndarray, hb2: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """BLOB.md "integer SwiGLU": silu(hb) * hb2 as the quantized input (q, s) of w2."""
    n = hb.shape[0]
    qa, sa = _iquant(hb, group)
    qb, sb = _iquant(hb2, group)
    ng = sa.shape[0]
    if ng * group != n:
        qa, qb = np.pad(qa, (0, ng * group - n)), np.pad(qb, (0, ng * group - n))
    qa, qb = qa.reshape(ng, group), qb.reshape(ng, group)
    ua = _fbits(sa)
    t = qa * _m16(ua)[:, None]
    sh = (134 - _fexp(ua))[:, None]
    idx = np.where(sh >= 0, t >> _clamp(sh, 0, 31), np.sign(t) * 4096)
    idx = _clamp(idx, -4096, 4095) + 4096
    i, f = idx >> 4, idx & 15
    sig = SIG_LUT[i] + (((SIG_LUT[i + 1] - SIG_LUT[i]) * f) >> 4)
    y = qa * sig * qb
    mag = np.abs(y)
    top = np.max(mag, axis=1)
    ok = top > 0
    z = np.where(ok, np.array([int(v).bit_length() for v in top], dtype=_I64) - 16, 0)
    top16 = np.where(z >= 0, top >> np.maximum(z, 0), top << np.maximum(-z, 0))
    mag16 = np.where(z[:, None] >= 0, mag >> np.maximum(z, 0)[:, None], mag << np.maximum(-z, 0)[:, None])
    k = _qcore(mag16, np.where(ok, top16, 1 << 15))
    q = np.where(y < 0, -k, k)
    s = np.where(ok, (top.astype(F32) * (sa * sb)) / F32(4161536.0), _ZERO).astype(F32)
    return q.reshape(-1)[:n], s


# ---- matmuls -----------------------------------------------------------------------------------------

class _Linear:
    """Tensors of one qtype stacked by rows (rows are independent, so stacking changes no bits);
    returns one output per tensor."""

    def __init__(self, tensors: list[BlobTensor], group: int) -> None:
        self.qtype = tensors[0].qtype
        self.group = group
        self.splits = np.cumsum([t.rows for t in tensors])[:-1]
        cols = tensors[0].cols
        if self.qtype == "f32":
            self.w = np.concatenate([t.values for t in tensors]).astype(F32)
            return
        ng = -(-cols // group)
        pad = ng * group - cols
        vals = np.concatenate([t.values for t in tensors]).astype(np.int32)
        vals = np.pad(vals, ((0, 0), (0, pad)))
        self.q = vals.reshape(vals.shape[0], ng, group)
        self.q64 = self.q.astype(_I64)  # integer mode's exact int64 sums (converted once, not per call)
        self.pad = pad
        if self.qtype == "int8":
            self.s = np.concatenate([t.scales for t in tensors]).astype(F32)
        else:
            self.s = np.concatenate([np.full(t.rows, t.scales[0], dtype=F32) for t in tensors])

    def _grouped(self, qx: np.ndarray) -> np.ndarray:
        """An activation vector as [groups, group], zero-padded like the weight rows."""
        if self.pad:
            qx = np.pad(qx, (0, self.pad))
        return qx.reshape(self.q.shape[1], self.group)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.qtype == "f32":
            out = seq_sum(self.w * x[None, :], axis=1)
        else:
            qx, sx = quantize_activation(x, self.group)
            isum = np.einsum("rgk,gk->rg", self.q, self._grouped(qx)).astype(F32)  # exact integers (< 2^24)
            if self.qtype == "int8":
                out = seq_sum((isum * self.s) * sx[None, :], axis=1)
            else:
                out = seq_sum(isum * sx[None, :], axis=1) * self.s
        return np.split(out, self.splits) if len(self.splits) else [out]

    def int_call(self, qx: np.ndarray, sx: np.ndarray) -> list[np.ndarray]:
        """Integer mode (BLOB.md "integer matmul"): exact group sums, exact int64 accumulation of
        isum * m16(sw) * m16(sx) aligned to the row's largest exponent, one conversion per row."""
        isum = np.einsum("rgk,gk->rg", self.q64, self._grouped(np.asarray(qx, dtype=_I64)))
        ux = _fbits(sx)
        if self.qtype == "int8":
            uw = _fbits(self.s)
            eg = _fexp(uw) + _fexp(ux)[None, :]
            mg = _m16(uw) * _m16(ux)[None, :]
            b = np.max(eg, axis=1)
            acc = np.sum((isum * mg) >> np.minimum(b[:, None] - eg, 63), axis=1)
            out = _to_f32_scaled(acc, b - 284)
        else:
            ex = _fexp(ux)
            b = np.max(ex)
            acc = np.sum((isum * _m16(ux)[None, :]) >> np.minimum(b - ex, 63)[None, :], axis=1)
            out = _to_f32_scaled(acc, b - 142) * self.s
        return np.split(out, self.splits) if len(self.splits) else [out]


def _linears(tensors: list[BlobTensor], group: int) -> list[_Linear]:
    """Stack consecutive tensors of the same qtype (q/k/v, w1/w3); a mixed set stays separate."""
    if all(t.qtype == tensors[0].qtype for t in tensors):
        return [_Linear(tensors, group)]
    return [_Linear([t], group) for t in tensors]


def _apply(linears: list[_Linear], x: np.ndarray) -> list[np.ndarray]:
    return [y for lin in linears for y in lin(x)]


def _apply_int(linears: list[_Linear], qx: np.ndarray, sx: np.ndarray) -> list[np.ndarray]:
    return [y for lin in linears for y in lin.int_call(qx, sx)]


# ---- the model -----------------------------------------------------------------------------------------

class Reference:
    """The firmware's forward pass, sampler and tokenizer in numpy. `step(token, pos)` returns the
    float32 logits the board computes for that token at that position."""

    def __init__(self, blob: Blob | str | Path | bytes, context_len: int | None = None) -> None:
        self.blob = blob if isinstance(blob, Blob) else read_blob(blob)
        h = self.blob.header
        self.header = h
        self.vocab = self.blob.vocab
        self.arch = h.arch
        self.eps = F32(h.norm_eps)
        g = h.group_size
        t = self.blob.tensors
        if context_len is not None and not 0 < context_len <= h.seq_len:
            raise UserError(f"context_len {context_len}: this blob supports 1..{h.seq_len} positions "
                            f"(its seq_len); use at most {h.seq_len}")
        self.context_len = context_len or h.seq_len
        self.embedding = t["tok_embeddings.weight"]
        classifier = t["tok_embeddings.weight"] if h.tied else t["output.weight"]
        self.classifier = _linears([classifier], g)
        self.layers: list[dict[str, Any]] = []
        for i in range(h.n_layers):
            if self.arch == "transformer":
                p = f"layers.{i}."
                self.layers.append({
                    "att_norm": t[p + "attention_norm.weight"].values[0],
                    "qkv": _linears([t[p + f"attention.w{n}.weight"] for n in "qkv"], g),
                    "wo": _linears([t[p + "attention.wo.weight"]], g),
                    "ffn_norm": t[p + "ffn_norm.weight"].values[0],
                    "w13": _linears([t[p + "feed_forward.w1.weight"],
                                     t[p + "feed_forward.w3.weight"]], g),
                    "w2": _linears([t[p + "feed_forward.w2.weight"]], g),
                })
            else:
                p = f"gru.{i}."
                self.layers.append({
                    "ih": _linears([t[p + "weight_ih_l0"]], g),
                    "hh": _linears([t[p + "weight_hh_l0"]], g),
                    "b_ih": t[p + "bias_ih_l0"].values[0],
                    "b_hh": t[p + "bias_hh_l0"].values[0],
                })
        if self.arch == "transformer":
            self.final_norm = t["norm.weight"].values[0]
            self.rope = t["rope"].values
            self.n_heads, self.n_kv_heads = h.n_heads, h.n_kv_heads
            self.head_dim = h.dim // h.n_heads
            self.kv_map = np.arange(h.n_heads) // (h.n_heads // h.n_kv_heads)
            self.sqrt_head_dim = np.sqrt(F32(self.head_dim))
        self.int_mode = self.arch == "transformer" and bool(h.flags & FLAG_INT_ATTENTION)
        if self.int_mode:
            self.att_a = LOG2E / self.sqrt_head_dim  # A = 1.44269504f / sqrtf((float)head_dim)
        self._lookup = self._build_lookup()
        self.reset()

    # ---- state ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the sequence (KV cache / GRU state)."""
        h = self.header
        if self.arch == "transformer":
            shape = (h.n_layers, self.context_len, h.n_kv_heads, self.head_dim)
            if getattr(self, "int_mode", False):  # int8 values + one f32 scale per (pos, kv head)
                self.kq = np.zeros(shape, dtype=_I64)
                self.vq = np.zeros(shape, dtype=_I64)
                self.ks = np.zeros(shape[:3], dtype=F32)
                self.vs = np.zeros(shape[:3], dtype=F32)
            else:
                self.k_cache = np.zeros(shape, dtype=F32)
                self.v_cache = np.zeros(shape, dtype=F32)
        else:
            self.hidden = np.zeros((h.n_layers, h.dim), dtype=F32)

    def _embed(self, token: int) -> np.ndarray:
        e = self.embedding
        if e.qtype == "f32":
            return e.values[token].astype(F32, copy=True)
        scale = np.repeat(e.scales[token], e.group)[:e.cols]
        return e.values[token].astype(F32) * scale

    def step(self, token: int, pos: int) -> np.ndarray:
        """Feed `token` at position `pos`; returns float32 logits [vocab]."""
        if not 0 <= token < self.header.vocab_size:
            raise UserError(f"token {token} is outside the vocabulary (0..{self.header.vocab_size - 1})")
        if self.arch == "gru":
            return self._step_gru(token)
        if not 0 <= pos < self.context_len:
            raise UserError(f"position {pos} is outside the context (0..{self.context_len - 1}); "
                            "reset() and start a new sequence, or use a longer context_len")
        return self._step_transformer(token, pos)

    def _rope(self, v: np.ndarray, pos: int) -> np.ndarray:
        c, s = self.rope[pos, 0::2], self.rope[pos, 1::2]
        a, b = v[:, 0::2], v[:, 1::2]
        out = np.empty_like(v)
        out[:, 0::2] = a * c - b * s
        out[:, 1::2] = a * s + b * c
        return out

    def _attention(self, q: np.ndarray, layer: int, pos: int) -> np.ndarray:
        keys = self.k_cache[layer, :pos + 1][:, self.kv_map, :]  # [T, heads, head_dim]
        vals = self.v_cache[layer, :pos + 1][:, self.kv_map, :]
        score = seq_sum(q[None, :, :] * keys, axis=2) / self.sqrt_head_dim  # [T, heads]
        p = softmax_f32(score, axis=0)
        return seq_sum(p[:, :, None] * vals, axis=0).reshape(-1)  # t ascending

    def _attention_int(self, q: np.ndarray, layer: int, pos: int) -> np.ndarray:
        """BLOB.md "integer attention": int8 q·k scores, fixed-point log2 softmax, int32 Σ p·v."""
        hd, m = self.head_dim, self.kv_map
        qq, qs = _iquant(q.reshape(-1), hd)
        qq = qq.reshape(self.n_heads, hd)
        uc = _fbits(qs * self.att_a)
        mc, ec = _m16(uc), _fexp(uc)
        kq = self.kq[layer, :pos + 1][:, m, :]  # [T, heads, hd]
        uk = _fbits(self.ks[layer, :pos + 1][:, m])  # [T, heads]
        dot = np.einsum("thi,hi->th", kq, qq)
        sh = _clamp(276 - _fexp(uk) - ec[None, :], 0, 63)
        z = _clamp((dot * (_m16(uk) * mc[None, :])) >> sh, -(1 << 30), 1 << 30)
        d = np.max(z, axis=0)[None, :] - z
        a = d >> 8
        e = np.where(a >= 16, 0, EXP2_LUT[d & 255] >> np.minimum(a, 15))
        r = (1 << 46) // np.sum(e, axis=0)
        p = (e * r[None, :]) >> 31
        uv = _fbits(self.vs[layer, :pos + 1][:, m])
        ev = _fexp(uv)
        big = np.max(ev, axis=0)
        shv = 8 + big[None, :] - ev
        w = np.where(shv >= 32, 0, (p * _m16(uv)) >> np.minimum(shv, 31))
        acc = np.einsum("th,thi->hi", w, self.vq[layer, :pos + 1][:, m, :])
        return _to_f32_scaled(acc, (big - 149)[:, None]).reshape(-1)

    def _step_transformer_int(self, token: int, pos: int) -> np.ndarray:
        """BLOB.md "Integer mode" transformer step (flags bit 1)."""
        hd, g = self.head_dim, self.header.group_size
        x = self._embed(token)
        for i, L in enumerate(self.layers):
            xb = _rmsnorm(x, L["att_norm"], self.eps)
            q, k, v = _apply_int(L["qkv"], *_iquant(xb, g))
            q = self._rope(q.reshape(self.n_heads, hd), pos)
            k = self._rope(k.reshape(self.n_kv_heads, hd), pos)
            kq, ks = _iquant(k.reshape(-1), hd)
            vq, vs = _iquant(v, hd)
            self.kq[i, pos], self.ks[i, pos] = kq.reshape(self.n_kv_heads, hd), ks
            self.vq[i, pos], self.vs[i, pos] = vq.reshape(self.n_kv_heads, hd), vs
            xb = self._attention_int(q, i, pos)
            (xb2,) = _apply_int(L["wo"], *_iquant(xb, g))
            x = x + xb2
            xb = _rmsnorm(x, L["ffn_norm"], self.eps)
            hb, hb2 = _apply_int(L["w13"], *_iquant(xb, g))
            (xb,) = _apply_int(L["w2"], *_swiglu_int(hb, hb2, g))
            x = x + xb
        x = _rmsnorm(x, self.final_norm, self.eps)
        return _apply_int(self.classifier, *_iquant(x, g))[0]

    def _step_transformer(self, token: int, pos: int) -> np.ndarray:
        if self.int_mode:
            return self._step_transformer_int(token, pos)
        hd = self.head_dim
        x = self._embed(token)
        for i, L in enumerate(self.layers):
            xb = _rmsnorm(x, L["att_norm"], self.eps)
            q, k, v = _apply(L["qkv"], xb)
            q = self._rope(q.reshape(self.n_heads, hd), pos)
            self.k_cache[i, pos] = self._rope(k.reshape(self.n_kv_heads, hd), pos)
            self.v_cache[i, pos] = v.reshape(self.n_kv_heads, hd)
            xb = self._attention(q, i, pos)
            (xb2,) = _apply(L["wo"], xb)
            x = x + xb2
            xb = _rmsnorm(x, L["ffn_norm"], self.eps)
            hb, hb2 = _apply(L["w13"], xb)
            hb = silu_f32(hb) * hb2
            (xb,) = _apply(L["w2"], hb)
            x = x + xb
        x = _rmsnorm(x, self.final_norm, self.eps)
        return _apply(self.classifier, x)[0]

    def _step_gru(self, token: int) -> np.ndarray:
        d = self.header.dim
        x = self._embed(token)
        for i, L in enumerate(self.layers):
            h = self.hidden[i]
            gi = _apply(L["ih"], x)[0] + L["b_ih"]
            gh = _apply(L["hh"], h)[0] + L["b_hh"]
            r = sigmoid_f32(gi[:d] + gh[:d])
            z = sigmoid_f32(gi[d:2 * d] + gh[d:2 * d])
            n = tanh_f32(gi[2 * d:] + r * gh[2 * d:])
            h = (_ONE - z) * n + z * h
            self.hidden[i] = h
            x = h
        return _apply(self.classifier, x)[0]

    # ---- tokenizer -----------------------------------------------------------------------------------

    def _build_lookup(self) -> dict[bytes, int]:
        """piece → id as the firmware's binary search over sorted_ids finds it: the last of equal
        pieces (highest id: a normal piece beats the byte piece with the same byte), control pieces
        (<unk>, <s>, </s>) never found."""
        table: dict[bytes, int] = {}
        for i in self.vocab.sorted_ids():
            if not self.vocab.is_control(i):
                table[self.vocab.pieces[i]] = i
        return table

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """llama2.c run.c's encode on the blob's vocab.

        Byte vocab: the UTF-8 bytes are the ids. Sentencepiece vocab: a space (dummy prefix) is
        prepended when the text is non-empty; each UTF-8 character becomes the id of its piece, or its
        bytes + 3 when it has none; then the adjacent pair whose concatenation is a piece with the
        highest score is merged (leftmost on ties, strict >), until no pair merges. BOS/EOS are added
        around the text tokens and never merged."""
        data = text.encode("utf-8")
        v = self.vocab
        if v.kind == "byte":
            return list(data)
        toks: list[int] = []
        if data:
            toks.append(self._lookup[b" "])
        for ch in text:
            piece = ch.encode("utf-8")
            tid = self._lookup.get(piece)
            if tid is None:
                toks.extend(b + 3 for b in piece)
            else:
                toks.append(tid)
        pieces, scores = v.pieces, v.scores
        while True:
            best, best_id, best_i = -1e10, -1, -1
            for i in range(len(toks) - 1):
                tid = self._lookup.get(pieces[toks[i]] + pieces[toks[i + 1]])
                if tid is not None and scores[tid] > best:
                    best, best_id, best_i = scores[tid], tid, i
            if best_i < 0:
                break
            toks[best_i:best_i + 2] = [best_id]
        if bos and v.bos_id is not None:
            toks.insert(0, v.bos_id)
        if eos and v.eos_id is not None:
            toks.append(v.eos_id)
        return toks

    def decode(self, prev: int | None, token: int) -> bytes:
        """The bytes the board prints for `token` after `prev`: control tokens print nothing, and a
        piece's leading space is dropped right after BOS (the dummy prefix)."""
        if self.vocab.is_control(token):
            return b""
        piece = self.vocab.pieces[token]
        if prev is not None and prev == self.vocab.bos_id and piece.startswith(b" "):
            piece = piece[1:]
        return piece

    def decode_all(self, tokens: list[int]) -> bytes:
        out, prev = [], None
        for t in tokens:
            out.append(self.decode(prev, t))
            prev = t
        return b"".join(out)

    # ---- generation ----------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], params: SamplingParams | None = None,
                 max_new_tokens: int | None = None,
                 stop_ids: Iterable[int] | None = None) -> Iterator[int]:
        """Feed the prompt from position 0, then sample (BLOB.md sampler, engine.sample.Sampler; None:
        greedy) until a stop token (yielded, then the generator ends; default BOS and EOS),
        `max_new_tokens` (params.max_tokens is not used), or the end of the context."""
        if not prompt_ids:
            raise UserError("the prompt is empty: start it with BOS (encode(text, bos=True)) or at "
                            "least one token")
        params = params if params is not None else SamplingParams(temperature=0.0)
        check_sampling(params)
        if stop_ids is None:
            stop_ids = {t for t in (self.vocab.bos_id, self.vocab.eos_id) if t is not None}
        stops = set(stop_ids)
        self.reset()
        sampler = Sampler(self.header.vocab_size, params)
        history = set(int(t) for t in prompt_ids)
        limit = self.context_len if self.arch == "transformer" else None
        pos = 0
        for tok in prompt_ids[:-1]:
            if limit is not None and pos >= limit:
                return
            self.step(int(tok), pos)
            pos += 1
        tok, made = int(prompt_ids[-1]), 0
        while (limit is None or pos < limit) and (max_new_tokens is None or made < max_new_tokens):
            logits = self.step(tok, pos)
            pos += 1
            tok = sampler.sample(logits, history)
            made += 1
            yield tok
            if tok in stops:
                return
            history.add(tok)
