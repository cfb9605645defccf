/* transformer.c - the transformer step of BLOB.md "Arithmetic", in llama2.c order. */
#include "transformer.h"

#include <math.h>
#include <string.h>

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
            vh[2 * k] = a * c - b * s;
            vh[2 * k + 1] = a * s + b * c;
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

tl_err tl_transformer_forward(const tl_blob *b, tl_transformer *s, uint32_t token, uint32_t pos,
                              int want_logits) {
    if (token >= b->vocab_size || pos >= s->ctx || pos >= b->seq_len) return TL_E_ARG;
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
        for (uint32_t i = 0; i < dim; i++) s->x[i] = s->x[i] + s->xb2[i];
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
        for (uint32_t i = 0; i < dim; i++) s->x[i] = s->x[i] + s->xb[i];
    }
    if (!want_logits) return TL_OK;
    tl_blob_tensor(b, tl_blob_role_norm(b), &t);
    tl_rmsnorm(s->x, s->x, t.f32, dim, b->norm_eps);
    tl_blob_tensor(b, tl_blob_role_output(b), &t);
    quantize_if(s->qv, s->x, dim, &t, NULL, NULL);
    tl_matmul(s->logits, &t, s->x, s->qv);
    return TL_OK;
}
