/* kernels.c - float32 kernels in the exact operation order of BLOB.md. Loops are unrolled only in
   ways that keep that order (a sequential float sum stays sequential). */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* Integer dot products are exact in any order, so letting GCC vectorize them (O3 on these functions
   only) changes no bits. Float code is never reassociated. */
#if defined(__GNUC__) && !defined(__clang__)
#define TL_VECTORIZE __attribute__((optimize("O3")))
#else
#define TL_VECTORIZE
#endif

TL_VECTORIZE float tl_expf(float x) {
    if (!(x >= -87.0f)) x = -87.0f; /* also maps NaN, keeping the int conversion defined */
    if (x > 88.0f) x = 88.0f;
    int32_t k = tl_round_half_away(x * 1.44269504f);
    float kf = (float)k;
    float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
    float p = 0.00138888892f;
    p = 0.00833333377f + r * p;
    p = 0.0416666679f + r * p;
    p = 0.166666672f + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

int32_t tl_round_half_away(float v) { return (int32_t)(v + (v >= 0.0f ? 0.5f : -0.5f)); }

float tl_sigmoid(float v) { return 1.0f / (1.0f + tl_expf(-v)); }
float tl_silu(float v) { return v / (1.0f + tl_expf(-v)); }
float tl_tanh(float v) { return 2.0f * tl_sigmoid(2.0f * v) - 1.0f; }

void tl_rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps) {
    float ss = 0.0f;
    for (uint32_t j = 0; j < n; j++) ss = ss + x[j] * x[j];
    ss = ss / (float)n;
    ss = ss + eps;
    float r = 1.0f / sqrtf(ss);
    for (uint32_t j = 0; j < n; j++) out[j] = w[j] * (r * x[j]);
}

/* The element-wise loops may be vectorized (each lane does the same IEEE ops); the sum stays
   sequential in its own loop. */
TL_VECTORIZE void tl_softmax(float *x, uint32_t n) {
    float m = x[0];
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    for (uint32_t i = 0; i < n; i++) x[i] = tl_expf(x[i] - m);
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) sum = sum + x[i];
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] / sum;
}

void tl_quantize(tl_qvec *qv, const float *x) {
    uint32_t n = qv->n, gs = qv->group;
    for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
        uint32_t end = start + gs < n ? start + gs : n;
        float amax = 0.0f;
        for (uint32_t j = start; j < end; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a;
        }
        if (amax == 0.0f) {
            qv->s[g] = 0.0f;
            memset(qv->q + start, 0, end - start);
            continue;
        }
        float s = amax / 127.0f;
        qv->s[g] = s;
        for (uint32_t j = start; j < end; j++) {
            float v = x[j] / s;
            float r = v + (v >= 0.0f ? 0.5f : -0.5f);
            if (!(r >= -127.0f)) r = -127.0f; /* same as clamp after truncation; NaN -> -127 */
            if (r > 127.0f) r = 127.0f;
            qv->q[j] = (int8_t)(int32_t)r;
        }
    }
}

/* --- f32 ----------------------------------------------------------------------------------- */

static void matmul_f32(float *out, const float *w, const float *x, uint32_t rows, uint32_t n) {
    for (uint32_t i = 0; i < rows; i++, w += n) {
        float acc = 0.0f;
        uint32_t j = 0;
        for (; j + 4 <= n; j += 4) {
            acc = acc + w[j] * x[j];
            acc = acc + w[j + 1] * x[j + 1];
            acc = acc + w[j + 2] * x[j + 2];
            acc = acc + w[j + 3] * x[j + 3];
        }
        for (; j < n; j++) acc = acc + w[j] * x[j];
        out[i] = acc;
    }
}

/* --- int8 ---------------------------------------------------------------------------------- */

static int32_t dot_i8(const int8_t *a, const int8_t *b, uint32_t n) {
    int32_t s = 0;
    for (uint32_t k = 0; k < n; k++) s += (int32_t)a[k] * (int32_t)b[k];
    return s;
}
/* Fixed-length versions: a constant trip count lets the compiler vectorize the exact int sum. */
TL_VECTORIZE static int32_t dot_i8_32(const int8_t *a, const int8_t *b) {
    int32_t s = 0;
    for (uint32_t k = 0; k < 32; k++) s += (int32_t)a[k] * (int32_t)b[k];
    return s;
}

static void matmul_i8(float *out, const tl_tensor *W, const tl_qvec *qx) {
    uint32_t n = W->cols, gs = W->group, ng = W->n_groups;
    const int8_t *w = W->q8;
    const float *sw = W->scales;
    for (uint32_t i = 0; i < W->rows; i++, w += n, sw += ng) {
        float acc = 0.0f;
        uint32_t g = 0, start = 0;
        for (; start + gs <= n; g++, start += gs) {
            int32_t isum = dot_i8_32(w + start, qx->q + start);
            if (gs == 64) isum += dot_i8_32(w + start + 32, qx->q + start + 32);
            acc = acc + ((float)isum * sw[g]) * qx->s[g];
        }
        if (start < n) {
            int32_t isum = dot_i8(w + start, qx->q + start, n - start);
            acc = acc + ((float)isum * sw[g]) * qx->s[g];
        }
        out[i] = acc;
    }
}

/* --- ternary ------------------------------------------------------------------------------- */

/* byte -> its 4 weights (code 01 = +1, 10 = -1, 00 = 0; 11 is rejected by the blob parser). */
#define TV(c) ((c) == 1 ? 1 : (c) == 2 ? -1 : 0)
#define TE(b) {TV((b) & 3), TV(((b) >> 2) & 3), TV(((b) >> 4) & 3), TV(((b) >> 6) & 3)}
#define TE4(b) TE(b), TE((b) + 1), TE((b) + 2), TE((b) + 3)
#define TE16(b) TE4(b), TE4((b) + 4), TE4((b) + 8), TE4((b) + 12)
#define TE64(b) TE16(b), TE16((b) + 16), TE16((b) + 32), TE16((b) + 48)
static const int8_t TERNARY_LUT[256][4] = {TE64(0), TE64(64), TE64(128), TE64(192)};

TL_VECTORIZE static int32_t dot_t2_32(const uint8_t *w, const int8_t *x) {
    int8_t t[32];
    for (uint32_t k = 0; k < 8; k++) memcpy(t + 4 * k, TERNARY_LUT[w[k]], 4);
    return dot_i8_32(t, x);
}

static int32_t dot_t2(const uint8_t *w, uint32_t col0, const int8_t *x, uint32_t n) {
    int32_t s = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t j = col0 + k;
        s += (int32_t)TERNARY_LUT[w[j >> 2]][j & 3] * (int32_t)x[k];
    }
    return s;
}

static void matmul_t2(float *out, const tl_tensor *W, const tl_qvec *qx) {
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes;
    const uint8_t *w = W->t2;
    float sw = W->scales[0];
    for (uint32_t i = 0; i < W->rows; i++, w += rb) {
        float acc = 0.0f;
        uint32_t g = 0, start = 0;
        for (; start + gs <= n; g++, start += gs) {
            int32_t isum = dot_t2_32(w + start / 4, qx->q + start);
            if (gs == 64) isum += dot_t2_32(w + start / 4 + 8, qx->q + start + 32);
            acc = acc + (float)isum * qx->s[g];
        }
        if (start < n) {
            int32_t isum = dot_t2(w, start, qx->q + start, n - start);
            acc = acc + (float)isum * qx->s[g];
        }
        out[i] = acc * sw;
    }
}

void tl_matmul(float *out, const tl_tensor *W, const float *x, const tl_qvec *qx) {
    if (W->qtype == TL_Q_F32)
        matmul_f32(out, W->f32, x, W->rows, W->cols);
    else if (W->qtype == TL_Q_INT8)
        matmul_i8(out, W, qx);
    else
        matmul_t2(out, W, qx);
}

void tl_embed(float *out, const tl_tensor *E, uint32_t row) {
    uint32_t n = E->cols;
    if (E->qtype == TL_Q_F32) {
        memcpy(out, E->f32 + (uint64_t)row * n, 4u * n);
        return;
    }
    const int8_t *q = E->q8 + (uint64_t)row * n;
    const float *s = E->scales + (uint64_t)row * E->n_groups;
    for (uint32_t j = 0; j < n; j++) out[j] = (float)q[j] * s[j / E->group];
}
