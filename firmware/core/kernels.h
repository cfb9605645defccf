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
} tl_qvec;

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
   sums are combined by BLOB.md "integer matmul" instead of the float per-group accumulation. */
void tl_matmul(float *out, const tl_tensor *W, const float *x, const tl_qvec *qx);

/* out[cols] = row `row` of an f32 or int8 embedding table. */
void tl_embed(float *out, const tl_tensor *E, uint32_t row);

#endif
