/* kernels.h - the float32 arithmetic of BLOB.md "Arithmetic", bit for bit.
   Build with -ffp-contract=off and without -ffast-math: each + and * below is one IEEE op. */
#ifndef TL_KERNELS_H
#define TL_KERNELS_H

#include <stdint.h>

#include "blob.h"

/* A quantized activation vector (int8 and ternary matmuls). */
typedef struct {
    int8_t *q;        /* [n] */
    float *s;         /* [ceil(n / group)] */
    uint32_t n;       /* length */
    uint32_t group;   /* group size (the blob's group_size) */
    uint32_t imode;   /* 1: integer mode (BLOB.md flags bit 1): matmuls accumulate in integers */
    /* ternary integer mode, portable kernels: lookup tables of the activations (kernels.c "T2
       tables"), or NULL (then the byte-at-a-time kernel runs); BLOB.md "Runtime RAM" */
    int16_t *t2tab;   /* [TL_T2_TABLES * TL_T2_STRIDE] */
    uint32_t *t2acc;  /* [2 * TL_T2_ROWS] int64 row sums between column blocks, as (lo, hi) words */
    uint32_t t2_cols; /* the tables hold columns [0, t2_cols) of q (one block); 0 whenever q changes */
} tl_qvec;

/* T2 tables: one per 4 activations of a column block of 4 * TL_T2_TABLES columns; entry [byte] is the
   sum of the byte's 4 ternary weights times the 4 activations (bytes of valid codes are <= 0xAA).
   The same scratch holds the T3 tables of base-3 tensors (one per group and byte, 243 entries). */
#define TL_T2_TABLES 16u
#define TL_T2_STRIDE 244u /* >= 171 (T2: the largest valid byte 0xAA + 1) and >= 243 (T3 tables, base-3
                             bytes; kernels.c), even so every table stays 4-byte aligned */
#define TL_T2_ROWS 64u
#define TL_T2_SCRATCH_BYTES (2u * TL_T2_TABLES * TL_T2_STRIDE + 8u * TL_T2_ROWS)

float tl_expf(float x);
float tl_sigmoid(float v);
float tl_silu(float v);
float tl_tanh(float v);
int32_t tl_round_half_away(float v);

void tl_rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps);
void tl_softmax(float *x, uint32_t n);
/* hb[i] = tl_silu(hb[i]) * hb2[i] (SwiGLU gate). */
void tl_swiglu(float *hb, const float *hb2, uint32_t n);

/* Quantizes x[0..qv->n) into qv (group-wise absmax / 127). */
void tl_quantize(tl_qvec *qv, const float *x);

/* out[rows] = W x. f32 tensors read x; int8/ternary read the quantized qx (same vector, same
   length, quantized with qx->group == W's group for int8). With qx->imode the int8/ternary group
   sums are combined by BLOB.md "integer matmul" instead of the float per-group accumulation.
   Not const: the ternary kernel caches its lookup tables in qx (t2tab, t2_cols). */
void tl_matmul(float *out, const tl_tensor *W, const float *x, tl_qvec *qx);

/* out[cols] = row `row` of an f32 or int8 embedding table. */
void tl_embed(float *out, const tl_tensor *E, uint32_t row);

#endif
