"""A llama-style transformer, llama2.c-compatible: RMSNorm, RoPE, SwiGLU, grouped-query attention,
tied or untied classifier.

Why it looks like llama2.c's model.py: the state dict must load into llama2.c tooling and the blob
writer maps names one to one (`engine/config/layout.py`), so parameter names, shapes and the init are
llama2.c's. Where it differs is speed on a small CPU, where a step of a 260K-param model is dominated
by the number of ops rather than FLOPs:

- q, k and v come from one matmul with the three weights concatenated at run time (the parameters
  stay `wq`, `wk`, `wv`; the cat of a few KB of weights costs less than two extra matmul launches),
  and RoPE rotates q and k together in four elementwise ops, with cos/sin tables precomputed as
  non-persistent buffers (not in the state dict) and no complex numbers;
- attention on a CPU while training has three kernels (`Attention.kernel`): ATen's CPU flash kernel
  ("sdpa"), `BlockCausalAttention` below ("blocked") and a C++ kernel built on the machine that
  runs it ("native", engine/models/native_attention.cpp). Which one a run uses, like the fused
  w1|w3 matmul (`FeedForward.fused`), is measured per machine and shape by
  engine/train/kernels.py, because the winner differs between CPUs (on a Xeon SDPA won).
  With head_dim 8 the flash kernel spends most of the step in tiny GEMMs and recomputation.
  "blocked" groups the query heads that share a kv head into one matrix (no repeat of k/v),
  computes only the causal blocks of the score matrix (64 positions a block), in chunks that stay
  in cache, and keeps the softmax for the backward: at the 260K shape, forward + backward ~1.4x
  (16x256) to ~1.9x (64x512) faster than SDPA on one AMD EPYC; it keeps ~0.6*B*n_heads*T*T floats
  per layer for the backward (21 MB a layer at 16x256 with 8 heads, 340 MB at 64x512) and cannot
  be traced by torch.compile. "native" does the same blocks inside one task per (sequence, kv
  head) with the scores in cache, recomputes them in the backward from the log-sum-exp (no T*T
  storage) and is one opaque op to torch.compile: at host-7m's head_dim 48 it is 1.4x faster
  than SDPA forward + backward, where "blocked" ties.
  Everywhere else (inference, CUDA, attention dropout) it is `F.scaled_dot_product_attention` with
  is_causal=True and enable_gqa=True, so k and v are never copied n_heads / n_kv_heads times;
- RMSNorm is `F.rms_norm`;
- with `loss_kernel = "chunked"` (also measured, engine/train/kernels.py) a training step computes
  the classifier and its cross-entropy a block of rows at a time (engine/models/losses.py) and never
  holds the [B*T, vocab] logits; forward then returns no logits, only the loss.

The RoPE table is computed in float64 and rounded once, exactly like the blob's `rope` tensor
(firmware/BLOB.md), so PyTorch and the board rotate by the same float32 numbers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.schema import ModelConfig
from engine.models import native_attention
from engine.models.losses import classifier_cross_entropy


def rope_table(head_dim: int, n_pos: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [n_pos, head_dim // 2] of p * theta^(-2k/head_dim), in float64, rounded once."""
    k = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.float64), theta ** -k)
    return freqs.cos().float(), freqs.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[2k], x[2k+1]) of the last dim by its angle: x * cos + swap(x) * sin.

    x is [B, T, heads, head_dim]; cos is [T, 1, head_dim] (each cos repeated for its pair) and sin is
    [T, 1, head_dim] with the pair's first entry negated, so out[2k] = a*c - b*s and
    out[2k+1] = b*c + a*s, the same products and sums as llama2.c and the firmware.
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x * cos + swapped * sin).type_as(x)  # f32 tables must not promote a bf16 x (autocast)


# ---- attention kernel for CPU training ---------------------------------------------------------

ATTN_BLOCK = 64  # query positions per causal block: a block's scores stay in L2 with ATTN_CHUNK
ATTN_CHUNK = 16  # (batch, kv head) pairs per batched matmul


@functools.lru_cache(maxsize=64)
def _block_mask(t0: int, t1: int, rep: int) -> torch.Tensor:
    """Additive mask [(t1 - t0) * rep, t1]: row (t - t0) * rep + r may see keys 0..t."""
    t = torch.arange(t0, t1).repeat_interleave(rep)
    return torch.zeros(len(t), t1).masked_fill_(torch.arange(t1)[None, :] > t[:, None], float("-inf"))


class BlockCausalAttention(torch.autograd.Function):
    """Causal softmax attention with the query heads of a kv head stacked as rows.

    q: [N, T * rep, hd] with row t * rep + r = query head r of the group at position t (position-
    major, so a block of positions is a contiguous block of rows); k, v: [N, T, hd]; N = B * n_kv.
    Rows of positions [t0, t1) only need keys [0, t1): computing block by block skips about half
    the score matrix. The softmax of each block is kept for the backward (no recomputation).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                scale: float) -> torch.Tensor:
        N, T = k.shape[0], k.shape[1]
        rep = q.shape[1] // T
        out = torch.empty_like(q)
        probs = []
        for i in range(0, N, ATTN_CHUNK):
            j = min(N, i + ATTN_CHUNK)
            for t0 in range(0, T, ATTN_BLOCK):
                t1 = min(T, t0 + ATTN_BLOCK)
                rows = slice(t0 * rep, t1 * rep)
                s = torch.baddbmm(_block_mask(t0, t1, rep), q[i:j, rows], k[i:j, :t1].transpose(1, 2),
                                  alpha=scale)
                p = torch.softmax(s, -1)
                out[i:j, rows] = torch.bmm(p, v[i:j, :t1])
                probs.append(p)
        ctx.save_for_backward(q, k, v, out)
        ctx.probs, ctx.scale = probs, scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out: torch.Tensor):  # type: ignore[override]
        q, k, v, out = ctx.saved_tensors
        probs, scale = ctx.probs, ctx.scale
        ctx.probs = None  # free the softmax blocks as soon as possible
        N, T = k.shape[0], k.shape[1]
        rep = q.shape[1] // T
        d_out = d_out.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        delta = (d_out * out).sum(-1, keepdim=True)  # rowsum(P * dP), the softmax backward term
        n = 0
        for i in range(0, N, ATTN_CHUNK):
            j = min(N, i + ATTN_CHUNK)
            for t0 in range(0, T, ATTN_BLOCK):
                t1 = min(T, t0 + ATTN_BLOCK)
                rows = slice(t0 * rep, t1 * rep)
                p, g = probs[n], d_out[i:j, rows]
                n += 1
                # bmm then +=: baddbmm_ into a strided slice runs one addmm_ per sample (~10x slower)
                dv[i:j, :t1] += torch.bmm(p.transpose(1, 2), g)
                ds = torch.bmm(g, v[i:j, :t1].transpose(1, 2)).sub_(delta[i:j, rows]).mul_(p)
                dq[i:j, rows] = torch.bmm(ds, k[i:j, :t1])
                dk[i:j, :t1] += torch.bmm(ds.transpose(1, 2), q[i:j, rows])
        return dq.mul_(scale), dk.mul_(scale), dv, None


def block_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, T, H, hd], k and v [B, T, KV, hd] (RoPE applied) -> [B, T, H * hd], causal."""
    B, T, H, hd = q.shape
    KV = k.shape[2]
    qg = q.view(B, T, KV, H // KV, hd).permute(0, 2, 1, 3, 4).reshape(B * KV, T * (H // KV), hd)
    kg = k.permute(0, 2, 1, 3).reshape(B * KV, T, hd)
    vg = v.permute(0, 2, 1, 3).reshape(B * KV, T, hd)
    out = BlockCausalAttention.apply(qg, kg, vg, 1.0 / math.sqrt(hd))
    return out.view(B, KV, T, H // KV, hd).permute(0, 2, 1, 3, 4).reshape(B, T, H * hd)


def causal_attention(kernel: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     dropout: float = 0.0) -> torch.Tensor:
    """q [B, T, H, hd], k and v [B, T, KV, hd] (RoPE applied) -> [B, T, H * hd] with `kernel`:
    "native" (once loaded) or "blocked" (training, eager) for CPU float32 without dropout or
    autocast, SDPA otherwise. engine/train/kernels.py times this very function."""
    cpu_f32 = (dropout == 0.0 and q.device.type == "cpu" and q.dtype == torch.float32
               and v.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))
    if cpu_f32 and kernel == "native" and native_attention.available():
        return native_attention.causal_attention(q, k, v)
    if (cpu_f32 and kernel == "blocked" and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        return block_causal_attention(q, k, v)
    B, T = q.shape[:2]
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       dropout_p=dropout, is_causal=True, enable_gqa=True)
    return y.transpose(1, 2).reshape(B, T, -1)


# ---- modules -------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding.

    k, v: [n_layers, batch, n_kv_heads, max_len, head_dim]. `forward_step` writes positions
    start_pos .. start_pos + T - 1 and attends over 0 .. start_pos + T - 1.
    """

    k: torch.Tensor
    v: torch.Tensor

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim()
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # CPU float32 kernel (see causal_attention), and the one a torch.compile'd model uses
        self.kernel, self.compiled_kernel = "blocked", "sdpa"

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, T, H, hd], k and v [B, T, KV, hd] (views), RoPE applied to q and k."""
        B, T, _ = x.shape
        H, KV = self.n_heads, self.n_kv_heads
        # `.weight` (not calling the modules) so LoRA-wrapped projections, whose `.weight` is
        # W + B @ A * scale, take the same fused path.
        w = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight])
        qkv = F.linear(x, w).view(B, T, H + 2 * KV, self.head_dim)
        qk = apply_rope(qkv[:, :, : H + KV], cos, sin)
        return qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + KV:]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin)
        kernel = self.compiled_kernel if torch.compiler.is_compiling() else self.kernel
        y = causal_attention(kernel, q, k, v, self.dropout if self.training else 0.0)
        return self.resid_dropout(self.wo(y))

    def forward_step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, start_pos: int) -> torch.Tensor:
        """Attention for positions start_pos.. using (and filling) this layer's cache slices."""
        B, T, _ = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x, cos, sin))
        end = start_pos + T
        k_cache[:B, :, start_pos:end] = k
        v_cache[:B, :, start_pos:end] = v
        keys, values = k_cache[:B, :, :end], v_cache[:B, :, :end]
        # new query i (at position start_pos + i) sees keys 0 .. start_pos + i
        mask = None
        if T > 1:
            mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start_pos)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.ffn_dim()
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fused = False  # w1 and w3 as one matmul (weights concatenated at run time); same maths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # `.weight`, like Attention._qkv, so LoRA-wrapped projections take this path too
            gate, up = F.linear(x, torch.cat([self.w1.weight, self.w3.weight])).chunk(2, -1)
            return self.dropout(self.w2(F.silu(gate) * up))
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))

    def forward_step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, start_pos: int) -> torch.Tensor:
        h = x + self.attention.forward_step(self.attention_norm(x), cos, sin, k_cache, v_cache,
                                            start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """llama2.c's Transformer: `forward(tokens, targets)` -> (logits [B, T, V], mean loss or None);
    logits are None when targets are given and `loss_kernel` is "chunked"."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.seq_len = cfg.seq_len
        self.tok_embeddings = nn.Embedding(vocab_size, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, vocab_size, bias=False)
        self.loss_kernel = "full"  # "chunked": classifier + loss without the logits array (CPU f32)
        if cfg.tie_embeddings:
            self.tok_embeddings.weight = self.output.weight  # one Parameter, as in llama2.c

        cos, sin = rope_table(cfg.head_dim(), cfg.seq_len, cfg.rope_theta)
        # [T, 1, hd]: cos repeated for both members of a pair, sin as (-s, +s): see apply_rope
        self.register_buffer("rope_cos", cos.repeat_interleave(2, -1).unsqueeze(1), persistent=False)
        self.register_buffer("rope_sin", torch.stack([-sin, sin], -1).flatten(-2).unsqueeze(1),
                             persistent=False)

        self.apply(self._init_weights)
        # llama2.c's scaled init of the residual projections (it scales w3 and wo)
        for name, p in self.named_parameters():
            if name.endswith("w3.weight") or name.endswith("wo.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _logits_and_loss(self, h: torch.Tensor, targets: torch.Tensor | None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        h = self.norm(h)
        if (targets is not None and self.loss_kernel == "chunked" and h.device.type == "cpu"
                and h.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
            return None, classifier_cross_entropy(h.reshape(-1, h.shape[-1]), self.output.weight,
                                                  targets.reshape(-1))
        logits = self.output(h)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        T = tokens.shape[1]
        if T > self.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than model.seq_len = {self.seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        h = self.dropout(self.tok_embeddings(tokens))
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self._logits_and_loss(h, targets)

    # ---- incremental decoding ----------------------------------------------------------------

    def init_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for up to max_len (≤ seq_len, the RoPE table's length) positions."""
        if max_len > self.seq_len:
            raise ValueError(f"max_len = {max_len} is longer than model.seq_len = {self.seq_len}")
        c = self.cfg
        p = self.output.weight
        shape = (c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim())
        return KVCache(torch.zeros(shape, dtype=p.dtype, device=p.device),
                       torch.zeros(shape, dtype=p.dtype, device=p.device))

    def forward_step(self, tokens: torch.Tensor, cache: KVCache, start_pos: int) -> torch.Tensor:
        """Logits [B, T, V] of tokens at positions start_pos.., attending to the cached prefix."""
        T = tokens.shape[1]
        end = start_pos + T
        if end > cache.max_len:
            raise ValueError(f"positions up to {end} do not fit a cache of {cache.max_len}")
        cos, sin = self.rope_cos[start_pos:end], self.rope_sin[start_pos:end]
        h = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            h = layer.forward_step(h, cos, sin, cache.k[i], cache.v[i], start_pos)
        return self.output(self.norm(h))
