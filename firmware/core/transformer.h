/* transformer.h - one llama2.c-order forward step with a KV cache (GQA, RoPE from the blob). */
#ifndef TL_TRANSFORMER_H
#define TL_TRANSFORMER_H

#include <stdint.h>

#include "blob.h"
#include "kernels.h"

typedef struct {
    float *x;           /* [dim] residual stream */
    float *xb, *xb2;    /* [dim] */
    float *q;           /* [dim] */
    float *hb, *hb2;    /* [hidden] */
    float *att;         /* [n_heads * ctx] (float mode) */
    float *logits;      /* [vocab] */
    float *key_cache;   /* [n_layers * ctx * kv_dim] (float mode) */
    float *value_cache; /* [n_layers * ctx * kv_dim] (float mode) */
    tl_qvec *qv;        /* activation quantization scratch ([max(dim, hidden)]), or NULL for f32 */
    uint32_t ctx;       /* positions in the cache */
    /* integer mode (BLOB.md flags bit 1): int8 K/V [n_layers][n_kv_heads][ctx][head_dim] with one
       scale per (layer, kv head, position) [n_layers][n_kv_heads][ctx], kept decoded as
       E << 16 | m16 (transformer.c kv_scale_word); att as ctx int32 */
    uint32_t imode;
    float att_a;        /* 1.44269504f / sqrtf(head_dim) */
    int8_t *kq, *vq;
    uint32_t *ks, *vs;
    int32_t *iatt;      /* [ctx] */
} tl_transformer;

/* Runs token at position pos (< ctx, < seq_len); writes logits when want_logits. */
tl_err tl_transformer_forward(const tl_blob *b, tl_transformer *s, uint32_t token, uint32_t pos,
                              int want_logits);

#endif
