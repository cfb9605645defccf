/* transformer.c - the transformer step of BLOB.md "Arithmetic", in llama2.c order. */
#include "transformer.h"

#include <math.h>
#include <string.h>

#include "intmode.h"
#include "prof.h"
#include "softf.h"

static void quantize_if(tl_qvec *qv, const float *x, uint32_t n, const tl_tensor *a, const tl_tensor *b,
                        const tl_tensor *c) {
    int need = a->qtype != TL_Q_F32 || (b && b->qtype != TL_Q_F32) || (c && c->qtype != TL_Q_F32);
    if (!need) return;
    qv->n = n;
    tl_quantize(qv, x);
}

static void rope(float *v, const float *cs, uint32_t n_heads, uint32_t hd) {
    for (uint32_t h = 0; h < n_heads; h++) {
        float *vh = v + h * hd;
        for (uint32_t k = 0; k < hd / 2; k++) {
            float c = cs[2 * k], s = cs[2 * k + 1];
            float a = vh[2 * k], b = vh[2 * k + 1];
            vh[2 * k] = TL_FADD(TL_FMUL(a, c), -TL_FMUL(b, s)); /* a - b is a + (-b) in IEEE */
            vh[2 * k + 1] = TL_FADD(TL_FMUL(a, s), TL_FMUL(b, c));
        }
    }
}

/* The KV cache is laid out for small head_dim (stories260K: 8), where one dot product per position
   is too short to vectorize and may not be reassociated anyway:
   - keys per layer as [kv_head][head_dim][ctx]: dim i of all positions is contiguous, so the scores
     of TB positions are computed at once, lane t doing score[t] = q[0]*k_t[0] + q[1]*k_t[1] + ...
     in the sequential order of BLOB.md (same bits as one position at a time);
   - values per layer as [ctx][kv_dim] (llama2.c): out[i] = out[i] + a_t * v_t[i] is element-wise
     over i for each t, t ascending. */
#define TB 16

static void attention(const tl_blob *b, tl_transformer *s, uint32_t layer, uint32_t pos) {
    uint32_t hd = b->head_dim, kv_dim = b->kv_dim, group = b->n_heads / b->n_kv_heads, ctx = s->ctx;
    uint32_t n = pos + 1;
    const float *kc = s->key_cache + (size_t)layer * ctx * kv_dim;
    const float *vc = s->value_cache + (size_t)layer * ctx * kv_dim;
    float scale = sqrtf((float)hd);
    for (uint32_t h = 0; h < b->n_heads; h++) {
        const float *qh = s->q + h * hd;
        const float *kh = kc + (size_t)(h / group) * hd * ctx;
        float *att = s->att + (size_t)h * ctx;
        uint32_t t = 0;
        for (; t + TB <= n; t += TB) {
            float acc[TB];
            for (uint32_t j = 0; j < TB; j++) acc[j] = 0.0f;
            for (uint32_t i = 0; i < hd; i++) {
                float qi = qh[i];
                const float *k = kh + (size_t)i * ctx + t;
                for (uint32_t j = 0; j < TB; j++) acc[j] = acc[j] + qi * k[j];
            }
            for (uint32_t j = 0; j < TB; j++) att[t + j] = acc[j] / scale;
        }
        for (; t < n; t++) {
            float acc = 0.0f;
            for (uint32_t i = 0; i < hd; i++) acc = acc + qh[i] * kh[(size_t)i * ctx + t];
            att[t] = acc / scale;
        }
        tl_softmax(att, n);
        float *out = s->xb + h * hd;
        const float *vh = vc + (h / group) * hd;
        uint32_t i = 0;
        for (; i + 4 <= hd; i += 4) { /* 4 dims at a time, kept in registers over all t */
            float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const float *v = vh + i;
            for (t = 0; t < n; t++, v += kv_dim) {
                float a = att[t];
                for (uint32_t j = 0; j < 4; j++) o[j] = o[j] + a * v[j];
            }
            memcpy(out + i, o, sizeof o);
        }
        for (; i < hd; i++) {
            float o = 0.0f;
            for (t = 0; t < n; t++) o = o + att[t] * vh[(size_t)t * kv_dim + i];
            out[i] = o;
        }
    }
}

/* BLOB.md "integer attention" for one layer: per head, q quantized (iquant over the head), exact
   int8 scores, one fixed-point log2 score per position, the EXP2 table softmax with integer
   probabilities, exact int32 sum of p·v, one conversion per output. All integer, so the passes may be
   fused and the loops shaped freely; HD_FAST (head_dim 8, stories260K) keeps q and the 8 output sums
   in registers. */
/* The K/V cache keeps each position's scale decoded (kv_scale_word): the scores and the values read
   every cached position of every head each token, and decoding E and m16 from the float bits (with
   the subnormal cases) cost ~8 instructions a position on rv32; the word is decoded once, when the
   position is written. E = max(exponent field, 1) in bits 16.., m16 in bits 0..15. */
static inline uint32_t kv_scale_word(float s) {
    uint32_t u = tl_fbits(s);
    return (uint32_t)tl_fexp(u) << 16 | tl_fm16(u);
}
#define KV_E(w) ((int32_t)((w) >> 16))
#define KV_M(w) ((w) & 0xFFFFu)

/* z_t of BLOB.md from dot_t and the decoded k scale; c32 = 244 - ec, so sh = 276 - E(ks) - ec is
   s32 + 32 with s32 = c32 - E(ks). The host SSE2 build (x86-64: int64 shifts and compares are single
   instructions) keeps the int64 form; the portable one (rv32, and the host's TL_NO_SIMD build that the
   parity tests run) works on 32-bit words. */
#if defined(__SSE2__) && !defined(TL_NO_SIMD)
#define TL_INT64_FORM 1
#endif
static inline int32_t score_z(int32_t dot, uint32_t kw, uint32_t mc, int32_t c32) {
#ifdef TL_INT64_FORM
    int32_t sh64 = c32 + 32 - KV_E(kw);
    int64_t p64 = (int64_t)dot * (int64_t)(uint32_t)(KV_M(kw) * mc);
    if (sh64 >= 32) return tl_asr32(tl_hi32(p64), sh64 - 32);
    int64_t z64 = tl_asr64(p64, sh64 < 0 ? 0 : sh64);
    if (z64 > (1 << 30)) z64 = 1 << 30;
    if (z64 < -(1 << 30)) z64 = -(1 << 30);
    return (int32_t)z64;
#else
    int32_t s32 = c32 - KV_E(kw);
    int64_t p = (int64_t)dot * (int64_t)(uint32_t)(KV_M(kw) * mc);
    int32_t hi = tl_hi32(p);
    /* E(ks) + E(c) <= 244: the high word of the product is the floor by 2^32 (one mulhsu on rv32);
       |dot * M| < 2^49 keeps the rest inside the clamp */
    if (s32 >= 0) return tl_asr32(hi, s32);
    int32_t sh = s32 < -32 ? 0 : s32 + 32;
    /* else (common with int8 weights) z = p >> sh for sh in [0, 32), as words: zh:zl; it is inside
       the clamp range only if zh is zl's sign extension (rv32: no int64 shift or compares) */
    uint32_t zl = ((uint32_t)p >> sh) | (((uint32_t)hi << 1) << (31 - sh)); /* hi << (32 - sh), 0 for sh = 0 */
    int32_t zh = tl_asr32(hi, sh);
    if (zh != tl_asr32((int32_t)zl, 31)) return zh < 0 ? -(1 << 30) : 1 << 30;
    int32_t z = (int32_t)zl;
    return z > (1 << 30) ? 1 << 30 : z < -(1 << 30) ? -(1 << 30) : z;
#endif
}

/* score_z for head_dim 8: |dot| <= 8 * 127 * 127 < 2^17, so for sh in [18, 32) the product of
   (dot << (32 - sh)) (< 2^31) and M has z = floor(dot * M / 2^sh) as its high word: one mulh, no
   int64 shift (the int8 blobs take this path for most positions: their k scales are larger). */
static inline int32_t score_z8(int32_t dot, uint32_t kw, uint32_t mc, int32_t c32) {
#ifdef TL_INT64_FORM
    return score_z(dot, kw, mc, c32);
#else
    int32_t s32 = c32 - KV_E(kw);
    uint32_t m = KV_M(kw) * mc;
    if (s32 >= 0) return tl_asr32(tl_hi32((int64_t)dot * (int64_t)m), s32);
    if (s32 >= -14) {
        int32_t z = tl_hi32((int64_t)(int32_t)((uint32_t)dot << -s32) * (int64_t)m); /* |z| < 2^31 */
        return z > (1 << 30) ? 1 << 30 : z < -(1 << 30) ? -(1 << 30) : z;
    }
    return score_z(dot, kw, mc, c32);
#endif
}

/* max E(vs_t): E is the word's top half, so the largest word has the largest E */
static int32_t value_exp_max(const uint32_t *vsh, uint32_t n) {
    uint32_t top = 0;
    for (uint32_t t = 0; t < n; t++)
        if (vsh[t] > top) top = vsh[t];
    return n ? KV_E(top) : 1;
}

/* pass 1: a[t] = z_t; returns max z */
static TL_NOINLINE int32_t scores_int(int32_t *a, const int8_t *qq, const int8_t *kh, const uint32_t *ksh,
                                      uint32_t n, uint32_t hd, uint32_t mc, int32_t ec) {
    int32_t c32 = 244 - ec;
    int32_t zmax = -(1 << 30);
    if (hd == 8) {
        int32_t q0 = qq[0], q1 = qq[1], q2 = qq[2], q3 = qq[3], q4 = qq[4], q5 = qq[5], q6 = qq[6], q7 = qq[7];
        for (uint32_t t = 0; t < n; t++, kh += 8) {
            int32_t dot = q0 * kh[0] + q1 * kh[1] + q2 * kh[2] + q3 * kh[3] + q4 * kh[4] + q5 * kh[5] +
                          q6 * kh[6] + q7 * kh[7];
            int32_t z = score_z8(dot, ksh[t], mc, c32);
            a[t] = z;
            if (z > zmax) zmax = z;
        }
    } else {
        for (uint32_t t = 0; t < n; t++, kh += hd) {
            int32_t dot = 0;
            for (uint32_t i = 0; i < hd; i++) dot += (int32_t)qq[i] * (int32_t)kh[i];
            int32_t z = score_z(dot, ksh[t], mc, c32);
            a[t] = z;
            if (z > zmax) zmax = z;
        }
    }
    return zmax;
}

/* pass 2: a[t] = e_t (in place); returns S. e_t <= 2^15, so 32-bit partial sums over 2^16 positions. */
static uint64_t exps_int(int32_t *a, uint32_t n, int32_t zmax) {
    uint64_t total = 0;
    for (uint32_t t0 = 0; t0 < n; t0 += 65536u) {
        uint32_t end = n - t0 > 65536u ? t0 + 65536u : n, sum = 0;
        for (uint32_t t = t0; t < end; t++) {
            uint32_t d = (uint32_t)(zmax - a[t]), sh = d >> 8;
            a[t] = sh >= 16 ? 0 : (int32_t)(TL_EXP2_LUT[d & 255u] >> sh);
            sum += (uint32_t)a[t];
        }
        total += sum;
    }
    return total;
}

/* w_t of BLOB.md from e_t: p_t = (e_t * R) >> 31 is the high word of (2 e_t) * R (e_t <= 2^15,
   R <= 2^31: one mulhu on rv32); p_t * m16(vs_t) < 2^31 */
static inline int32_t value_weight(int32_t e, uint32_t r, uint32_t vw, int32_t ev) {
    if (e == 0) return 0;
    uint32_t p = (uint32_t)(((uint64_t)(2u * (uint32_t)e) * r) >> 32);
    int32_t sh = 8 + ev - KV_E(vw);
    return sh >= 32 ? 0 : (int32_t)((p * KV_M(vw)) >> sh);
}

/* TL_FMUL(TL_I2F(v), f) with f = tl_pow2f(k): for v != 0 and -126 <= k <= 127 the product is exact
   when its exponent field stays in 1..254, so it is (float)v with k added to that field (a multiply
   of ~25 instructions on rv32 saved per output). */
static inline float i2f_scaled(int32_t v, float f, int32_t k) {
#ifdef TL_SOFT_FLOAT
    uint32_t b = tl_sf_bits(TL_I2F(v));
    int32_t e = (int32_t)((b >> 23) & 255u) + k;
    if (v != 0 && k >= -126 && k <= 127 && e >= 1 && e <= 254) return tl_sf_float(b + ((uint32_t)k << 23));
#else
    (void)k;
#endif
    return TL_FMUL(TL_I2F(v), f);
}

/* pass 3: out[i] = (float)(sum_t w_t * vq_t[i]) * 2^(V - 149); a holds e_t */
static TL_NOINLINE void values_int(float *out, int32_t *a, const int8_t *vh, const uint32_t *vsh, uint32_t n,
                                   uint32_t hd, uint32_t r, int32_t ev) {
    float f = tl_pow2f(ev - 149);
    if (hd == 8) {
        int32_t o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0, o6 = 0, o7 = 0;
        const int8_t *v = vh;
        for (uint32_t t = 0; t < n; t++, v += 8) {
            int32_t w = value_weight(a[t], r, vsh[t], ev);
            if (w == 0) continue;
            o0 += w * v[0], o1 += w * v[1], o2 += w * v[2], o3 += w * v[3];
            o4 += w * v[4], o5 += w * v[5], o6 += w * v[6], o7 += w * v[7];
        }
        int32_t k = ev - 149;
        out[0] = i2f_scaled(o0, f, k), out[1] = i2f_scaled(o1, f, k), out[2] = i2f_scaled(o2, f, k);
        out[3] = i2f_scaled(o3, f, k), out[4] = i2f_scaled(o4, f, k), out[5] = i2f_scaled(o5, f, k);
        out[6] = i2f_scaled(o6, f, k), out[7] = i2f_scaled(o7, f, k);
        return;
    }
    for (uint32_t t = 0; t < n; t++) a[t] = value_weight(a[t], r, vsh[t], ev);
    for (uint32_t i = 0; i < hd; i++) {
        int32_t acc = 0;
        const int8_t *v = vh + i;
        for (uint32_t t = 0; t < n; t++, v += hd) acc += a[t] * (int32_t)*v;
        out[i] = i2f_scaled(acc, f, ev - 149);
    }
}

static void attention_int(const tl_blob *b, tl_transformer *s, uint32_t layer, uint32_t pos) {
    uint32_t hd = b->head_dim, group = b->n_heads / b->n_kv_heads, ctx = s->ctx, n = pos + 1;
    int32_t *a = s->iatt;
    int8_t *qq = s->qv->q; /* scratch: free while the attention runs */
    int32_t ev = 1;
    s->qv->t2_cols = 0;
    for (uint32_t h = 0; h < b->n_heads; h++) {
        size_t kvh = (size_t)layer * b->n_kv_heads + h / group;
        const int8_t *kh = s->kq + kvh * ctx * hd, *vh = s->vq + kvh * ctx * hd;
        const uint32_t *ksh = s->ks + kvh * ctx, *vsh = s->vs + kvh * ctx;
        float qs;
        tl_iquant(qq, &qs, s->q + h * hd, hd, hd);
        uint32_t uc = tl_fbits(TL_FMUL(qs, s->att_a));
        int32_t zmax = scores_int(a, qq, kh, ksh, n, hd, tl_fm16(uc), tl_fexp(uc));
        if (h % group == 0) ev = value_exp_max(vsh, n); /* shared by the heads of this kv head */
        TL_PROF(TL_P_ATTN);
        uint32_t r = (uint32_t)(((uint64_t)1 << 46) / exps_int(a, n, zmax)); /* S >= 32768: r <= 2^31 */
        TL_PROF(TL_P_SOFTMAX);
        values_int(s->xb + h * hd, a, vh, vsh, n, hd, r, ev);
        TL_PROF(TL_P_VALUES);
    }
}

/* x -> qv (iquant in groups of group_size); the T2 tables of the previous vector are stale now */
static void iquant_vec(tl_qvec *qv, const float *x, uint32_t n) {
    tl_iquant(qv->q, qv->s, x, n, qv->group);
    qv->n = n;
    qv->t2_cols = 0;
}

/* The integer-mode step (BLOB.md "Integer mode"): every matrix is int8/ternary (checked by the
   parser), every activation is quantized by iquant, K/V go to the int8 cache. */
static tl_err forward_int(const tl_blob *b, tl_transformer *s, uint32_t token, uint32_t pos, int want_logits) {
    uint32_t dim = b->dim, hidden = b->hidden_dim, hd = b->head_dim, ctx = s->ctx;
    tl_qvec *qv = s->qv;
    tl_tensor t, wq, wk, wv, wo, w1, w2, w3, rp;
    tl_blob_tensor(b, 0, &t);
    tl_embed(s->x, &t, token);
    tl_blob_tensor(b, tl_blob_role_rope(b), &rp);
    const float *cs = rp.f32 + (size_t)pos * hd;
    TL_PROF(TL_P_HEAD);
    for (uint32_t l = 0; l < b->n_layers; l++) {
        uint32_t r0 = 1u + TL_T_PER_LAYER * l;
        float *kv = s->xb2; /* k, then v: scratch until quantized into the cache */
        tl_blob_tensor(b, r0 + TL_T_ATTN_NORM, &t);
        tl_rmsnorm(s->xb, s->x, t.f32, dim, b->norm_eps);
        TL_PROF(TL_P_NORM);
        tl_blob_tensor(b, r0 + TL_T_WQ, &wq);
        tl_blob_tensor(b, r0 + TL_T_WK, &wk);
        tl_blob_tensor(b, r0 + TL_T_WV, &wv);
        iquant_vec(qv, s->xb, dim);
        TL_PROF(TL_P_QUANT);
        tl_matmul(s->q, &wq, s->xb, qv);
        tl_matmul(kv, &wk, s->xb, qv);
        TL_PROF(TL_P_QKV);
        rope(s->q, cs, b->n_heads, hd);
        rope(kv, cs, b->n_kv_heads, hd);
        TL_PROF(TL_P_ROPE);
        size_t slot = (size_t)l * b->n_kv_heads * ctx + pos; /* (layer, kv head 0, pos) */
        for (uint32_t j = 0; j < b->n_kv_heads; j++) {
            float sc;
            tl_iquant(s->kq + (slot + (size_t)j * ctx) * hd, &sc, kv + j * hd, hd, hd);
            s->ks[slot + (size_t)j * ctx] = kv_scale_word(sc);
        }
        TL_PROF(TL_P_KVCACHE);
        tl_matmul(kv, &wv, s->xb, qv);
        TL_PROF(TL_P_QKV);
        for (uint32_t j = 0; j < b->n_kv_heads; j++) {
            float sc;
            tl_iquant(s->vq + (slot + (size_t)j * ctx) * hd, &sc, kv + j * hd, hd, hd);
            s->vs[slot + (size_t)j * ctx] = kv_scale_word(sc);
        }
        TL_PROF(TL_P_KVCACHE);
        attention_int(b, s, l, pos);
        tl_blob_tensor(b, r0 + TL_T_WO, &wo);
        iquant_vec(qv, s->xb, dim);
        TL_PROF(TL_P_QUANT);
        tl_matmul(s->xb2, &wo, s->xb, qv);
        for (uint32_t i = 0; i < dim; i++) s->x[i] = TL_FADD(s->x[i], s->xb2[i]);
        TL_PROF(TL_P_WO);
        tl_blob_tensor(b, r0 + TL_T_FFN_NORM, &t);
        tl_rmsnorm(s->xb, s->x, t.f32, dim, b->norm_eps);
        TL_PROF(TL_P_NORM);
        tl_blob_tensor(b, r0 + TL_T_W1, &w1);
        tl_blob_tensor(b, r0 + TL_T_W3, &w3);
        iquant_vec(qv, s->xb, dim);
        TL_PROF(TL_P_QUANT);
        tl_matmul(s->hb, &w1, s->xb, qv);
        tl_matmul(s->hb2, &w3, s->xb, qv);
        TL_PROF(TL_P_W13);
        tl_swiglu_int(qv, s->hb, s->hb2, hidden);
        TL_PROF(TL_P_SWIGLU);
        tl_blob_tensor(b, r0 + TL_T_W2, &w2);
        tl_matmul(s->xb, &w2, s->hb, qv);
        for (uint32_t i = 0; i < dim; i++) s->x[i] = TL_FADD(s->x[i], s->xb[i]);
        TL_PROF(TL_P_W2);
    }
    if (!want_logits) return TL_OK;
    tl_blob_tensor(b, tl_blob_role_norm(b), &t);
    tl_rmsnorm(s->x, s->x, t.f32, dim, b->norm_eps);
    tl_blob_tensor(b, tl_blob_role_output(b), &t);
    iquant_vec(qv, s->x, dim);
    tl_matmul(s->logits, &t, s->x, qv);
    TL_PROF(TL_P_HEAD);
    return TL_OK;
}

tl_err tl_transformer_forward(const tl_blob *b, tl_transformer *s, uint32_t token, uint32_t pos,
                              int want_logits) {
    if (token >= b->vocab_size || pos >= s->ctx || pos >= b->seq_len) return TL_E_ARG;
    if (s->imode) return forward_int(b, s, token, pos, want_logits);
    uint32_t dim = b->dim, hidden = b->hidden_dim, kv_dim = b->kv_dim;
    tl_tensor t, wq, wk, wv, wo, w1, w2, w3, rp;
    tl_blob_tensor(b, 0, &t);
    tl_embed(s->x, &t, token);
    tl_blob_tensor(b, tl_blob_role_rope(b), &rp);
    const float *cs = rp.f32 + (size_t)pos * b->head_dim;
    for (uint32_t l = 0; l < b->n_layers; l++) {
        uint32_t r0 = 1u + TL_T_PER_LAYER * l;
        size_t loff = (size_t)l * s->ctx * kv_dim;
        float *k = s->xb2; /* k is scattered into the [kv_head][head_dim][ctx] key cache below */
        float *v = s->value_cache + loff + (size_t)pos * kv_dim;
        tl_blob_tensor(b, r0 + TL_T_ATTN_NORM, &t);
        tl_rmsnorm(s->xb, s->x, t.f32, dim, b->norm_eps);
        tl_blob_tensor(b, r0 + TL_T_WQ, &wq);
        tl_blob_tensor(b, r0 + TL_T_WK, &wk);
        tl_blob_tensor(b, r0 + TL_T_WV, &wv);
        quantize_if(s->qv, s->xb, dim, &wq, &wk, &wv);
        tl_matmul(s->q, &wq, s->xb, s->qv);
        tl_matmul(k, &wk, s->xb, s->qv);
        tl_matmul(v, &wv, s->xb, s->qv);
        rope(s->q, cs, b->n_heads, b->head_dim);
        rope(k, cs, b->n_kv_heads, b->head_dim);
        for (uint32_t i = 0; i < kv_dim; i++) s->key_cache[loff + (size_t)i * s->ctx + pos] = k[i];
        attention(b, s, l, pos);
        tl_blob_tensor(b, r0 + TL_T_WO, &wo);
        quantize_if(s->qv, s->xb, dim, &wo, NULL, NULL);
        tl_matmul(s->xb2, &wo, s->xb, s->qv);
        for (uint32_t i = 0; i < dim; i++) s->x[i] = TL_FADD(s->x[i], s->xb2[i]);
        tl_blob_tensor(b, r0 + TL_T_FFN_NORM, &t);
        tl_rmsnorm(s->xb, s->x, t.f32, dim, b->norm_eps);
        tl_blob_tensor(b, r0 + TL_T_W1, &w1);
        tl_blob_tensor(b, r0 + TL_T_W3, &w3);
        quantize_if(s->qv, s->xb, dim, &w1, &w3, NULL);
        tl_matmul(s->hb, &w1, s->xb, s->qv);
        tl_matmul(s->hb2, &w3, s->xb, s->qv);
        tl_swiglu(s->hb, s->hb2, hidden);
        tl_blob_tensor(b, r0 + TL_T_W2, &w2);
        quantize_if(s->qv, s->hb, hidden, &w2, NULL, NULL);
        tl_matmul(s->xb, &w2, s->hb, s->qv);
        for (uint32_t i = 0; i < dim; i++) s->x[i] = TL_FADD(s->x[i], s->xb[i]);
    }
    if (!want_logits) return TL_OK;
    tl_blob_tensor(b, tl_blob_role_norm(b), &t);
    tl_rmsnorm(s->x, s->x, t.f32, dim, b->norm_eps);
    tl_blob_tensor(b, tl_blob_role_output(b), &t);
    quantize_if(s->qv, s->x, dim, &t, NULL, NULL);
    tl_matmul(s->logits, &t, s->x, s->qv);
    return TL_OK;
}
