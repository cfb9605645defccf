/* kernels.c - float32 kernels in the exact operation order of BLOB.md.

   Speed without changing a bit: a float sum over j stays one sequential sum per output. What we may
   do is run several *independent* sequential sums side by side, one per SIMD lane (4 matmul rows,
   4 softmax entries, ...): every lane executes the same IEEE operations in the same order as the
   scalar code, so every lane's result has the same bits. Integer sums (the int8/ternary dot products
   inside a group) are exact, so they may be computed in any order at all.

   Two implementations of the hot loops:
   - SSE2 (any x86-64; the host virtual board), selected by __SSE2__ unless TL_NO_SIMD is defined;
   - portable C (rv32, ESP32, and the host built with -DTL_NO_SIMD, which the tests also run).
   Both are held to engine/blob/reference.py by tests/firmware/test_parity.py. */
#include "kernels.h"

#include <math.h>

#include "intmode.h"
#include "softf.h"
#include <string.h>

#if defined(__SSE2__) && !defined(TL_NO_SIMD)
#define TL_SSE2 1
#include <emmintrin.h>
#endif

/* --- exp, activations ---------------------------------------------------------------------- */

float tl_expf(float x) {
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

#ifdef TL_SSE2
#define SIGN_BIT _mm_castsi128_ps(_mm_set1_epi32((int)0x80000000u))

/* tl_expf on 4 lanes, the same operations lane by lane:
   - clamp: _mm_max_ps(x, lo) is `x > lo ? x : lo`, so NaN becomes -87 as in the scalar code;
   - round_half_away: v + copysign(0.5, v) equals v + (v >= 0 ? 0.5 : -0.5) except for v = -0.0,
     where both truncate to k = 0; cvttps truncates like the (int32_t) cast (|v| < 2^31 here);
   - 2^k from its exponent bits. */
static inline __m128 exp4(__m128 x) {
    x = _mm_max_ps(x, _mm_set1_ps(-87.0f));
    x = _mm_min_ps(x, _mm_set1_ps(88.0f));
    __m128 v = _mm_mul_ps(x, _mm_set1_ps(1.44269504f));
    __m128 half = _mm_or_ps(_mm_set1_ps(0.5f), _mm_and_ps(v, SIGN_BIT));
    __m128i k = _mm_cvttps_epi32(_mm_add_ps(v, half));
    __m128 kf = _mm_cvtepi32_ps(k);
    __m128 r = _mm_add_ps(_mm_sub_ps(x, _mm_mul_ps(kf, _mm_set1_ps(0.693359375f))),
                          _mm_mul_ps(kf, _mm_set1_ps(2.12194440e-4f)));
    __m128 p = _mm_set1_ps(0.00138888892f);
    p = _mm_add_ps(_mm_set1_ps(0.00833333377f), _mm_mul_ps(r, p));
    p = _mm_add_ps(_mm_set1_ps(0.0416666679f), _mm_mul_ps(r, p));
    p = _mm_add_ps(_mm_set1_ps(0.166666672f), _mm_mul_ps(r, p));
    p = _mm_add_ps(_mm_set1_ps(0.5f), _mm_mul_ps(r, p));
    p = _mm_add_ps(_mm_set1_ps(1.0f), _mm_mul_ps(r, p));
    p = _mm_add_ps(_mm_set1_ps(1.0f), _mm_mul_ps(r, p));
    __m128i bits = _mm_slli_epi32(_mm_add_epi32(k, _mm_set1_epi32(127)), 23);
    return _mm_mul_ps(p, _mm_castsi128_ps(bits));
}
#endif

void tl_swiglu(float *hb, const float *hb2, uint32_t n) {
    uint32_t i = 0;
#ifdef TL_SSE2
    for (; i + 4 <= n; i += 4) { /* silu(v) * hb2 = (v / (1 + exp(-v))) * hb2, per lane */
        __m128 v = _mm_loadu_ps(hb + i);
        __m128 e = exp4(_mm_xor_ps(v, SIGN_BIT));
        __m128 si = _mm_div_ps(v, _mm_add_ps(_mm_set1_ps(1.0f), e));
        _mm_storeu_ps(hb + i, _mm_mul_ps(si, _mm_loadu_ps(hb2 + i)));
    }
#endif
    for (; i < n; i++) hb[i] = tl_silu(hb[i]) * hb2[i];
}

/* TL_FMUL / TL_FADD (softf.h): the integer versions of * and + on cores without an FPU, the operators
   elsewhere; the same IEEE results either way. */
void tl_rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps) {
    float ss = 0.0f;
    for (uint32_t j = 0; j < n; j++) ss = TL_FADD(ss, TL_FMUL(x[j], x[j]));
    ss = ss / (float)n;
    ss = TL_FADD(ss, eps);
    float r = 1.0f / sqrtf(ss);
    for (uint32_t j = 0; j < n; j++) out[j] = TL_FMUL(w[j], TL_FMUL(r, x[j])); /* element-wise: vectorizes */
}

/* The max and the sum stay sequential scalar loops; exp and the division are element-wise. */
void tl_softmax(float *x, uint32_t n) {
    float m = x[0];
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    uint32_t i = 0;
#ifdef TL_SSE2
    __m128 mv = _mm_set1_ps(m);
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, exp4(_mm_sub_ps(_mm_loadu_ps(x + i), mv)));
#endif
    for (; i < n; i++) x[i] = tl_expf(x[i] - m);
    float sum = 0.0f;
    for (i = 0; i < n; i++) sum = sum + x[i];
    for (i = 0; i < n; i++) x[i] = x[i] / sum;
}

/* --- activation quantization ----------------------------------------------------------------- */

void tl_quantize(tl_qvec *qv, const float *x) {
    uint32_t n = qv->n, gs = qv->group;
    qv->t2_cols = 0;
    for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
        uint32_t end = start + gs < n ? start + gs : n, j = start;
        float amax = 0.0f;
#ifdef TL_SSE2
        /* max is exact in any order; _mm_max_ps(a, m) = a > m ? a : m skips NaN like the scalar
           `if (a > amax)`, and |x| is never -0, so lanes then a final max give the same amax. */
        __m128 mv = _mm_setzero_ps();
        for (; j + 4 <= end; j += 4) mv = _mm_max_ps(_mm_andnot_ps(SIGN_BIT, _mm_loadu_ps(x + j)), mv);
        float lanes[4];
        _mm_storeu_ps(lanes, mv);
        for (int l = 0; l < 4; l++)
            if (lanes[l] > amax) amax = lanes[l];
#endif
        for (; j < end; j++) {
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
        j = start;
#ifdef TL_SSE2
        /* round_half_away as in exp4 (v = -0.0 truncates to 0 either way); max(r, -127) maps NaN to
           -127 like the scalar clamp; the packs then see values in [-127, 127] (no saturation). */
        __m128 sv = _mm_set1_ps(s);
        for (; j + 8 <= end; j += 8) {
            __m128i k[2];
            for (int h = 0; h < 2; h++) {
                __m128 v = _mm_div_ps(_mm_loadu_ps(x + j + 4 * h), sv);
                __m128 r = _mm_add_ps(v, _mm_or_ps(_mm_set1_ps(0.5f), _mm_and_ps(v, SIGN_BIT)));
                r = _mm_min_ps(_mm_max_ps(r, _mm_set1_ps(-127.0f)), _mm_set1_ps(127.0f));
                k[h] = _mm_cvttps_epi32(r);
            }
            __m128i b = _mm_packs_epi16(_mm_packs_epi32(k[0], k[1]), _mm_setzero_si128());
            _mm_storel_epi64((__m128i *)(void *)(qv->q + j), b);
        }
#endif
        for (; j < end; j++) {
            float v = x[j] / s;
            float r = v + (v >= 0.0f ? 0.5f : -0.5f);
            if (!(r >= -127.0f)) r = -127.0f; /* same as clamp after truncation; NaN -> -127 */
            if (r > 127.0f) r = 127.0f;
            qv->q[j] = (int8_t)(int32_t)r;
        }
    }
}

/* --- f32 ----------------------------------------------------------------------------------- */

/* One row: acc = acc + w[j] * x[j], j ascending (BLOB.md). */
static float dot_f32(const float *w, const float *x, uint32_t n) {
    float acc = 0.0f;
    for (uint32_t j = 0; j < n; j++) acc = acc + w[j] * x[j];
    return acc;
}

static void matmul_f32(float *out, const float *w, const float *x, uint32_t rows, uint32_t n) {
    uint32_t i = 0;
#ifdef TL_SSE2
    /* 4 rows per pass, one row per lane: load a 4x4 tile (4 rows x 4 columns), transpose it so each
       vector holds one column of the 4 rows, then acc = acc + col * x[j] for j ascending. Every
       lane is exactly its row's sequential sum; the 4 rows share each x[j]. */
    for (; i + 4 <= rows; i += 4) {
        const float *w0 = w + (size_t)i * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        __m128 acc = _mm_setzero_ps();
        uint32_t j = 0;
        for (; j + 4 <= n; j += 4) {
            __m128 c0 = _mm_loadu_ps(w0 + j), c1 = _mm_loadu_ps(w1 + j);
            __m128 c2 = _mm_loadu_ps(w2 + j), c3 = _mm_loadu_ps(w3 + j);
            _MM_TRANSPOSE4_PS(c0, c1, c2, c3);
            __m128 xv = _mm_loadu_ps(x + j);
            acc = _mm_add_ps(acc, _mm_mul_ps(c0, _mm_shuffle_ps(xv, xv, 0x00)));
            acc = _mm_add_ps(acc, _mm_mul_ps(c1, _mm_shuffle_ps(xv, xv, 0x55)));
            acc = _mm_add_ps(acc, _mm_mul_ps(c2, _mm_shuffle_ps(xv, xv, 0xAA)));
            acc = _mm_add_ps(acc, _mm_mul_ps(c3, _mm_shuffle_ps(xv, xv, 0xFF)));
        }
        for (; j < n; j++)
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_setr_ps(w0[j], w1[j], w2[j], w3[j]), _mm_set1_ps(x[j])));
        _mm_storeu_ps(out + i, acc);
    }
#endif
    for (; i < rows; i++) out[i] = dot_f32(w + (size_t)i * n, x, n);
}

/* --- int8 ---------------------------------------------------------------------------------- */

static int32_t dot_i8(const int8_t *a, const int8_t *b, uint32_t n) {
    int32_t s = 0;
    for (uint32_t k = 0; k < n; k++) s += (int32_t)a[k] * (int32_t)b[k];
    return s;
}

/* Integer mode (BLOB.md "integer matmul", int8): B = the row's largest E(sw) + E(sx) over its groups;
   then term(g) = floor(isum * m16(sw) * m16(sx) / 2^(B - E(sw) - E(sx))), summed exactly (mod 2^64,
   as int64); out = (float)acc * 2^(B - 284). The activation scales' E and m16 are decoded once per
   vector (xdec, on the stack for up to XDEC_MAX groups, else on the fly). */
#define XDEC_MAX 32
typedef struct {
    uint32_t m[XDEC_MAX];
    int32_t e[XDEC_MAX];
    const float *s;
    int ok;
} xdec;

static void xdec_init(xdec *d, const tl_qvec *qx, uint32_t ng) {
    d->s = qx->s;
    d->ok = ng <= XDEC_MAX;
    if (d->ok)
        for (uint32_t g = 0; g < ng; g++) {
            uint32_t u = tl_fbits(qx->s[g]);
            d->m[g] = tl_fm16(u);
            d->e[g] = tl_fexp(u);
        }
}
static inline uint32_t xdec_m(const xdec *d, uint32_t g) { return d->ok ? d->m[g] : tl_fm16(tl_fbits(d->s[g])); }
static inline int32_t xdec_e(const xdec *d, uint32_t g) { return d->ok ? d->e[g] : tl_fexp(tl_fbits(d->s[g])); }

static int32_t i8_row_base(const float *sw, const xdec *d, uint32_t ng) {
    int32_t b = 0;
    for (uint32_t g = 0; g < ng; g++) {
        int32_t e = tl_fexp(tl_fbits(sw[g])) + xdec_e(d, g);
        if (e > b) b = e;
    }
    return b;
}

static inline uint64_t i8_term(int32_t isum, float sw, const xdec *d, uint32_t g, int32_t b) {
    uint32_t uw = tl_fbits(sw);
    uint32_t m = tl_fm16(uw) * xdec_m(d, g); /* < 2^32 */
    return (uint64_t)tl_asr64((int64_t)isum * (int64_t)m, b - tl_fexp(uw) - xdec_e(d, g));
}

static inline float int_out(uint64_t acc, int32_t k) { return tl_i64_scaled((int64_t)acc, k); }

#ifndef TL_SSE2
/* Four rows' exact sums of every group (is[r * ng + g]), x loaded once for the 4 rows (portable
   kernels). One call per block of 4 rows, not per group: the 4 row pointers and x just run on from
   one group into the next (groups are consecutive columns), so a group boundary costs 4 stores and
   4 zeroed sums instead of a call with its pointer setup and register spills (~75 instructions per
   group on rv32, ~8 % of a token). Each column's x[k] is loaded once and used at once by the 4 rows
   (lb, then lb / mul / add per row): few live registers, so nothing spills in the loop; 16 columns a
   pass keep the 5 pointer increments and the branch at 0.1 instruction per multiply-add. */
#define I8_MAC4(k)                                                                               \
    do {                                                                                         \
        int32_t xk = x[k];                                                                       \
        a0 += w0[k] * xk, a1 += w1[k] * xk, a2 += w2[k] * xk, a3 += w3[k] * xk;                 \
    } while (0)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns"))) /* GCC's first scheduling pass hoists the loads and spills */
#endif
static TL_NOINLINE void dot4_i8_groups(int32_t *is, const int8_t *w0, size_t stride, const int8_t *x,
                                       uint32_t n, uint32_t gs, uint32_t ng) {
    const int8_t *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
        uint32_t len = start + gs <= n ? gs : n - start;
        const int8_t *end16 = x + (len & ~15u), *end = x + len;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (; x < end16; x += 16, w0 += 16, w1 += 16, w2 += 16, w3 += 16) {
            I8_MAC4(0); I8_MAC4(1); I8_MAC4(2); I8_MAC4(3); I8_MAC4(4); I8_MAC4(5); I8_MAC4(6); I8_MAC4(7);
            I8_MAC4(8); I8_MAC4(9); I8_MAC4(10); I8_MAC4(11); I8_MAC4(12); I8_MAC4(13); I8_MAC4(14); I8_MAC4(15);
        }
        for (; x < end; x++, w0++, w1++, w2++, w3++) I8_MAC4(0); /* the short last group (cols % 16) */
        is[g] = a0, is[ng + g] = a1, is[2 * ng + g] = a2, is[3 * ng + g] = a3;
    }
}
#undef I8_MAC4

/* The same for 8 rows: x[k] loaded once for 8 rows (0.125 loads per multiply-add instead of 0.25;
   8 pointers, 8 sums, x and its end still fit rv32's registers). */
#define I8_MAC8(k)                                                                               \
    do {                                                                                         \
        int32_t xk = x[k];                                                                       \
        a0 += w0[k] * xk, a1 += w1[k] * xk, a2 += w2[k] * xk, a3 += w3[k] * xk;                 \
        a4 += w4[k] * xk, a5 += w5[k] * xk, a6 += w6[k] * xk, a7 += w7[k] * xk;                 \
    } while (0)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns")))
#endif
static TL_NOINLINE void dot8_i8_groups(int32_t *is, const int8_t *w0, size_t stride, const int8_t *x,
                                       uint32_t n, uint32_t gs, uint32_t ng) {
    const int8_t *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride, *w4 = w3 + stride;
    const int8_t *w5 = w4 + stride, *w6 = w5 + stride, *w7 = w6 + stride;
    for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
        uint32_t len = start + gs <= n ? gs : n - start;
        const int8_t *end16 = x + (len & ~15u), *end8 = x + (len & ~7u), *end = x + len;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        /* 16 columns a pass: the 10 pointer increments cost 0.08 instructions per multiply-add */
        for (; x < end16; x += 16, w0 += 16, w1 += 16, w2 += 16, w3 += 16, w4 += 16, w5 += 16, w6 += 16, w7 += 16) {
            I8_MAC8(0); I8_MAC8(1); I8_MAC8(2); I8_MAC8(3); I8_MAC8(4); I8_MAC8(5); I8_MAC8(6); I8_MAC8(7);
            I8_MAC8(8); I8_MAC8(9); I8_MAC8(10); I8_MAC8(11); I8_MAC8(12); I8_MAC8(13); I8_MAC8(14); I8_MAC8(15);
        }
        if (x < end8) { /* 8 of the short last group's columns (hidden 172 = 5 * 32 + 12) */
            I8_MAC8(0); I8_MAC8(1); I8_MAC8(2); I8_MAC8(3); I8_MAC8(4); I8_MAC8(5); I8_MAC8(6); I8_MAC8(7);
            x += 8, w0 += 8, w1 += 8, w2 += 8, w3 += 8, w4 += 8, w5 += 8, w6 += 8, w7 += 8;
        }
        for (; x < end; x++, w0++, w1++, w2++, w3++, w4++, w5++, w6++, w7++) I8_MAC8(0);
        int32_t *o = is + g;
        o[0] = a0, o[ng] = a1, o[2 * ng] = a2, o[3 * ng] = a3;
        o[4 * ng] = a4, o[5 * ng] = a5, o[6 * ng] = a6, o[7 * ng] = a7;
    }
}
#undef I8_MAC8

/* (lo, hi) += floor(p / 2^sh), sh >= 0, p = (phi:plo) a signed 64-bit product: the two words are
   shifted and added as words (on rv32 an int64 shift by a variable amount is a branchy sequence). */
static inline void i8_add_shifted(uint32_t *lo, uint32_t *hi, uint32_t plo, uint32_t phi, int32_t sh) {
    if (sh >= 32) { /* floor(p / 2^sh) fits one word: the high word shifted on */
        plo = (uint32_t)tl_asr32((int32_t)phi, sh - 32);
        phi = (uint32_t)tl_asr32((int32_t)phi, 31);
    } else if (sh > 0) {
        plo = (plo >> sh) | (phi << (32 - sh));
        phi = (uint32_t)tl_asr32((int32_t)phi, sh);
    }
    *lo += plo;
    *hi += phi + (*lo < plo); /* the carry of the low words */
}

/* One row of BLOB.md "integer matmul" (int8) from its exact group sums: B, the terms, the conversion.
   Out of line, so the dot loop keeps its registers and this loop gets its own. The int64 sum is kept
   as two 32-bit words: the product isum * m is one mul + one mulhsu on rv32, the group with the
   largest exponent (shift 0) needs no shift at all, and the others shift the two words. */
static TL_NOINLINE float i8_row_out(const int32_t *is, const float *sw, const xdec *d, uint32_t ng) {
    if (ng == 2) {
        /* two groups (dim 64, group 32: every matrix of stories260K but w2), straight-line: no
           per-group arrays or loop, and only the term of the smaller exponent is shifted; the
           loop below cost ~40 instructions a group on rv32 */
        uint32_t u0 = tl_fbits(sw[0]), u1 = tl_fbits(sw[1]);
        int32_t e0 = tl_fexp(u0) + d->e[0], e1 = tl_fexp(u1) + d->e[1];
        int64_t p0 = (int64_t)is[0] * (int64_t)(tl_fm16(u0) * d->m[0]); /* m < 2^32 */
        int64_t p1 = (int64_t)is[1] * (int64_t)(tl_fm16(u1) * d->m[1]);
        if (e0 < e1) { /* the term of the larger exponent first: it is added unshifted */
            int64_t t = p0;
            int32_t te = e0;
            p0 = p1, p1 = t, e0 = e1, e1 = te;
        }
        uint32_t lo = (uint32_t)p0, hi = (uint32_t)tl_hi32(p0);
        i8_add_shifted(&lo, &hi, (uint32_t)p1, (uint32_t)tl_hi32(p1), e0 - e1);
        return int_out((uint64_t)hi << 32 | lo, e0 - 284);
    }
    int32_t e[XDEC_MAX], b = 0;
    uint32_t m[XDEC_MAX];
    for (uint32_t g = 0; g < ng; g++) {
        uint32_t u = tl_fbits(sw[g]);
        e[g] = tl_fexp(u) + d->e[g];
        m[g] = tl_fm16(u) * d->m[g]; /* < 2^32 */
        if (e[g] > b) b = e[g];
    }
    uint32_t lo = 0, hi = 0;
    for (uint32_t g = 0; g < ng; g++) {
        int64_t p = (int64_t)is[g] * (int64_t)m[g];
        i8_add_shifted(&lo, &hi, (uint32_t)p, (uint32_t)tl_hi32(p), b - e[g]);
    }
    return int_out((uint64_t)hi << 32 | lo, b - 284);
}

/* Integer mode, portable: per block of 4 rows, every group's exact sums first (dot4_i8_groups, x
   loaded once for the 4 rows), then each row's terms (i8_row_out); the remaining rows one by one.
   GCC's first scheduling pass would hoist the weight loads of an iteration and spill on rv32. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns")))
#endif
static uint32_t matmul_i8_int4(float *out, const tl_tensor *W, const tl_qvec *qx) {
    uint32_t n = W->cols, gs = W->group, ng = W->n_groups, i = 0;
    xdec d;
    xdec_init(&d, qx, ng);
    if (!d.ok) return 0; /* more than XDEC_MAX groups: matmul_i8_rows */
    int32_t is[8 * XDEC_MAX];
    for (; i + 8 <= W->rows; i += 8) {
        const float *sw = W->scales + (size_t)i * ng;
        dot8_i8_groups(is, W->q8 + (size_t)i * n, n, qx->q, n, gs, ng);
        for (uint32_t r = 0; r < 8; r++) out[i + r] = i8_row_out(is + r * ng, sw + (size_t)r * ng, &d, ng);
    }
    for (; i + 4 <= W->rows; i += 4) {
        const float *sw = W->scales + (size_t)i * ng;
        dot4_i8_groups(is, W->q8 + (size_t)i * n, n, qx->q, n, gs, ng);
        for (uint32_t r = 0; r < 4; r++) out[i + r] = i8_row_out(is + r * ng, sw + (size_t)r * ng, &d, ng);
    }
    return i;
}
#endif

/* Rows [i0, rows): one row at a time, BLOB.md "int8 matmul" as written. */
static void matmul_i8_rows(float *out, const tl_tensor *W, const tl_qvec *qx, uint32_t i0) {
    uint32_t n = W->cols, gs = W->group, ng = W->n_groups;
    if (qx->imode) {
        xdec d;
        xdec_init(&d, qx, ng);
        for (uint32_t i = i0; i < W->rows; i++) {
            const int8_t *w = W->q8 + (size_t)i * n;
            const float *sw = W->scales + (size_t)i * ng;
            int32_t b = i8_row_base(sw, &d, ng);
            uint64_t acc = 0;
            for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
                uint32_t len = start + gs <= n ? gs : n - start;
                acc += i8_term(dot_i8(w + start, qx->q + start, len), sw[g], &d, g, b);
            }
            out[i] = int_out(acc, b - 284);
        }
        return;
    }
    for (uint32_t i = i0; i < W->rows; i++) {
        const int8_t *w = W->q8 + (size_t)i * n;
        const float *sw = W->scales + (size_t)i * ng;
        float acc = 0.0f;
        for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
            uint32_t len = start + gs <= n ? gs : n - start;
            int32_t isum = dot_i8(w + start, qx->q + start, len);
            acc = acc + ((float)isum * sw[g]) * qx->s[g];
        }
        out[i] = acc;
    }
}

#ifdef TL_SSE2
/* int8 -> int16, sign-extended: each byte lands in the high half of a 16-bit lane, then >> 8. */
static inline __m128i lo16(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }
static inline __m128i hi16(__m128i v) { return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8); }

/* 16 products w[k]*x[k] summed pairwise by pmaddwd into 4 int32 lanes (exact). */
static inline __m128i dot16_i8(const int8_t *w, __m128i xlo, __m128i xhi) {
    __m128i wv = _mm_loadu_si128((const __m128i *)(const void *)w);
    return _mm_add_epi32(_mm_madd_epi16(lo16(wv), xlo), _mm_madd_epi16(hi16(wv), xhi));
}

/* {sum(a), sum(b), sum(c), sum(d)} of four int32x4 vectors. */
static inline __m128i hsum4_epi32(__m128i a, __m128i b, __m128i c, __m128i d) {
    __m128i ab = _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
    __m128i cd = _mm_add_epi32(_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
    return _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd));
}
#endif

static void matmul_i8(float *out, const tl_tensor *W, const tl_qvec *qx) {
    uint32_t i = 0;
#ifdef TL_SSE2
    /* 4 rows per pass (a lane per row): the exact group sums come from pmaddwd on int16, x is widened
       once per 16 columns for the 4 rows, and the float part ((isum * sw) * sx, then acc + that) is
       done on the 4 lanes at once in BLOB.md order. The short last group (cols % group) is scalar. */
    uint32_t n = W->cols, gs = W->group, ng = W->n_groups;
    xdec d;
    xdec_init(&d, qx, qx->imode ? ng : 0u);
    for (; i + 4 <= W->rows; i += 4) {
        const int8_t *w0 = W->q8 + (size_t)i * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        const float *s0 = W->scales + (size_t)i * ng, *s1 = s0 + ng, *s2 = s1 + ng, *s3 = s2 + ng;
        __m128 acc = _mm_setzero_ps();
        const float *sr[4] = {s0, s1, s2, s3};
        int32_t base[4] = {0, 0, 0, 0};
        uint64_t iacc[4] = {0, 0, 0, 0};
        if (qx->imode)
            for (int r = 0; r < 4; r++) base[r] = i8_row_base(sr[r], &d, ng);
        uint32_t g = 0, start = 0;
        for (; start + gs <= n; g++, start += gs) {
            __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
            for (uint32_t k = start; k < start + gs; k += 16) { /* gs is 32 or 64 */
                __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)(qx->q + k));
                __m128i xl = lo16(xv), xh = hi16(xv);
                a0 = _mm_add_epi32(a0, dot16_i8(w0 + k, xl, xh));
                a1 = _mm_add_epi32(a1, dot16_i8(w1 + k, xl, xh));
                a2 = _mm_add_epi32(a2, dot16_i8(w2 + k, xl, xh));
                a3 = _mm_add_epi32(a3, dot16_i8(w3 + k, xl, xh));
            }
            __m128i isum_i = hsum4_epi32(a0, a1, a2, a3);
            if (qx->imode) {
                int32_t is[4];
                _mm_storeu_si128((__m128i *)(void *)is, isum_i);
                for (int r = 0; r < 4; r++) iacc[r] += i8_term(is[r], sr[r][g], &d, g, base[r]);
                continue;
            }
            __m128 isum = _mm_cvtepi32_ps(isum_i);
            __m128 sw = _mm_setr_ps(s0[g], s1[g], s2[g], s3[g]);
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(isum, sw), _mm_set1_ps(qx->s[g])));
        }
        const int8_t *wr[4] = {w0, w1, w2, w3};
        if (qx->imode) {
            for (int r = 0; r < 4; r++) {
                if (start < n)
                    iacc[r] += i8_term(dot_i8(wr[r] + start, qx->q + start, n - start), sr[r][g], &d, g, base[r]);
                out[i + r] = int_out(iacc[r], base[r] - 284);
            }
            continue;
        }
        if (start < n) {
            float a[4];
            _mm_storeu_ps(a, acc);
            for (int r = 0; r < 4; r++) {
                int32_t isum = dot_i8(wr[r] + start, qx->q + start, n - start);
                a[r] = a[r] + ((float)isum * sr[r][g]) * qx->s[g];
            }
            acc = _mm_loadu_ps(a);
        }
        _mm_storeu_ps(out + i, acc);
    }
#else
    if (qx->imode) i = matmul_i8_int4(out, W, qx);
#endif
    matmul_i8_rows(out, W, qx, i);
}

/* --- ternary ------------------------------------------------------------------------------- */

/* byte -> its 4 weights (code 01 = +1, 10 = -1, 00 = 0; 11 is rejected by the blob parser). */
#define TV(c) ((c) == 1 ? 1 : (c) == 2 ? -1 : 0)
#define TE(b) {TV((b) & 3), TV(((b) >> 2) & 3), TV(((b) >> 4) & 3), TV(((b) >> 6) & 3)}
#define TE4(b) TE(b), TE((b) + 1), TE((b) + 2), TE((b) + 3)
#define TE16(b) TE4(b), TE4((b) + 4), TE4((b) + 8), TE4((b) + 12)
#define TE64(b) TE16(b), TE16((b) + 16), TE16((b) + 32), TE16((b) + 48)
static const int8_t TERNARY_LUT[256][4] = {TE64(0), TE64(64), TE64(128), TE64(192)};

/* sum t[col0 + k] * x[k], k < n, for a packed row w (exact). */
static int32_t dot_t2(const uint8_t *w, uint32_t col0, const int8_t *x, uint32_t n) {
    int32_t s = 0;
    uint32_t k = 0;
    if ((col0 & 3) == 0) /* whole bytes: one table row per 4 weights */
        for (; k + 4 <= n; k += 4) {
            const int8_t *t = TERNARY_LUT[w[(col0 + k) >> 2]];
            s += t[0] * x[k] + t[1] * x[k + 1] + t[2] * x[k + 2] + t[3] * x[k + 3];
        }
    for (; k < n; k++) {
        uint32_t j = col0 + k;
        s += (int32_t)TERNARY_LUT[w[j >> 2]][j & 3] * (int32_t)x[k];
    }
    return s;
}

#ifdef TL_SSE2
/* sum of t*x over 16 lanes, where c holds each lane's packed byte and the lane's code sits at the
   bits of `plus` (+1) / `minus` (-1): t*x = (x & P) - (x & M) with P, M all-ones byte masks. The
   int8 sum goes through psadbw on (v ^ 0x80) = v + 128 (unsigned), so each lane adds a bias of 128
   that the caller removes. Returns 2 partial sums in the 64-bit halves. */
static inline __m128i sad16_t2(__m128i c, __m128i x, __m128i plus, __m128i minus) {
    __m128i p = _mm_cmpeq_epi8(_mm_and_si128(c, plus), plus);
    __m128i m = _mm_cmpeq_epi8(_mm_and_si128(c, minus), minus);
    __m128i v = _mm_sub_epi8(_mm_and_si128(x, p), _mm_and_si128(x, m)); /* in [-127, 127] */
    return _mm_sad_epu8(_mm_xor_si128(v, _mm_set1_epi8((char)0x80)), _mm_setzero_si128());
}
#endif

/* Rows [i0, rows): one row at a time, BLOB.md "ternary matmul" as written. */
/* Integer mode (BLOB.md "integer matmul", ternary): Bx = the largest E(sx[g]) of the vector;
   term(g) = floor(isum * m16(sx) / 2^(Bx - E(sx))); out = ((float)acc * 2^(Bx - 142)) * s_w. The
   per-group multiplier and shift are the same for every row: xdec holds m16 and Bx - E. */
static int32_t t2_vec_init(xdec *d, const tl_qvec *qx, uint32_t n) {
    uint32_t ng = (n + qx->group - 1u) / qx->group;
    int32_t b = 0;
    xdec_init(d, qx, ng);
    for (uint32_t g = 0; g < ng; g++)
        if (xdec_e(d, g) > b) b = xdec_e(d, g);
    if (d->ok)
        for (uint32_t g = 0; g < ng; g++) d->e[g] = b - d->e[g];
    return b;
}
static inline uint64_t t2_term(int32_t isum, const xdec *d, uint32_t g, int32_t b) {
    int32_t sh = d->ok ? d->e[g] : b - tl_fexp(tl_fbits(d->s[g]));
    return (uint64_t)tl_asr64((int64_t)isum * (int64_t)xdec_m(d, g), sh);
}

#ifndef TL_SSE2
/* Four rows' exact ternary group sums at once (portable kernels): each x[k] loaded once. */
static void dot4_t2(int32_t s[4], const uint8_t *w0, size_t rb, uint32_t col0, const int8_t *x, uint32_t n) {
    int32_t a[4] = {0, 0, 0, 0};
    uint32_t k = 0;
    if ((col0 & 3) == 0)
        for (; k + 4 <= n; k += 4) {
            int32_t x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
            const uint8_t *wb = w0 + ((col0 + k) >> 2);
            for (int r = 0; r < 4; r++, wb += rb) {
                const int8_t *t = TERNARY_LUT[*wb];
                a[r] += t[0] * x0 + t[1] * x1 + t[2] * x2 + t[3] * x3;
            }
        }
    for (int r = 0; r < 4; r++) s[r] = a[r] + (k < n ? dot_t2(w0 + (size_t)r * rb, col0 + k, x + k, n - k) : 0);
}

static uint32_t matmul_t2_int4(float *out, const tl_tensor *W, const tl_qvec *qx) {
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes, i = 0;
    xdec d;
    int32_t b = t2_vec_init(&d, qx, n);
    for (; i + 4 <= W->rows; i += 4) {
        const uint8_t *w = W->t2 + (size_t)i * rb;
        uint64_t acc[4] = {0, 0, 0, 0};
        for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
            int32_t is[4];
            dot4_t2(is, w, rb, start, qx->q + start, start + gs <= n ? gs : n - start);
            for (int r = 0; r < 4; r++) acc[r] += t2_term(is[r], &d, g, b);
        }
        for (int r = 0; r < 4; r++) out[i + r] = TL_FMUL(int_out(acc[r], b - 142), W->scales[0]);
    }
    return i;
}

/* T2 tables (ternary, integer mode, portable kernels). Without SIMD a ternary weight costs a table
   load, a multiply and an add however it is unpacked. Turned around, 4 activations have only 81
   possible weighted sums, one per valid packed byte: with a table of them per 4 activations, a row
   costs one byte load and one table load per 4 weights. The tables of a column block
   (4 * TL_T2_TABLES columns, whole groups since group_size is 32 or 64) are built once and read by
   every row; with several blocks, rows go in chunks of TL_T2_ROWS whose int64 sums wait in t2acc.
   Same exact group sums, so the same result bits as matmul_t2_rows. */
static const uint8_t T2_NIB[9] = {0x0, 0x1, 0x2, 0x4, 0x5, 0x6, 0x8, 0x9, 0xA}; /* valid code pairs */

/* tab[byte] for x[0..n) (n <= 4; missing activations are 0: padding codes are 00) */
static void t2_build(int16_t *tab, const int8_t *x, uint32_t n) {
    int32_t v[4] = {0, 0, 0, 0};
    for (uint32_t k = 0; k < n; k++) v[k] = x[k];
    int32_t a = v[0], b = v[1], c = v[2], d = v[3];
    /* nibble sums in T2_NIB order: code pair (c0, c1) -> t(c0) * first + t(c1) * second */
    const int32_t lo[9] = {0, a, -a, b, a + b, b - a, -b, a - b, -a - b};
    const int32_t hi[9] = {0, c, -c, d, c + d, d - c, -d, c - d, -c - d};
    for (uint32_t h = 0; h < 9; h++) {
        int16_t *row = tab + ((uint32_t)T2_NIB[h] << 4);
        int32_t hv = hi[h];
        for (uint32_t l = 0; l < 9; l++) row[T2_NIB[l]] = (int16_t)(hv + lo[l]);
    }
}

/* exact sum over nb packed bytes of one row: table k serves byte k */
#define T2_ENTRY(tb, k, byte) (*(const int16_t *)(const void *)((tb) + 2u * (byte) + (k) * (2u * TL_T2_STRIDE)))
static inline int32_t t2_lookup(const uint8_t *w, const int16_t *tab, uint32_t nb) {
    const char *tb = (const char *)tab;
    int32_t s = 0;
    for (uint32_t k = 0; k < nb; k++) s += T2_ENTRY(tb, k, w[k]);
    return s;
}

/* The same over 8 bytes (a group of 32), the hot case. On rv32 GCC would fold the table offset into
   the index ((byte + 172k) * 2 + base: 6 instructions per byte); hiding the byte address from it
   leaves the offset as the load's immediate (lbu, slli, add, lh, add). */
#if defined(__GNUC__) && defined(__riscv)
#define T2_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define T2_OPAQUE(p) ((void)0)
#endif
static inline int32_t t2_lookup8(const uint8_t *w, const int16_t *tab) {
    const char *tb = (const char *)tab, *tb4 = tb + 4u * 2u * TL_T2_STRIDE; /* immediates < 2048 */
    int32_t s = 0;
    T2_OPAQUE(tb4);
    for (uint32_t k = 0; k < 4; k++) {
        const char *p = tb + 2u * w[k], *p4 = tb4 + 2u * w[k + 4];
        T2_OPAQUE(p);
        T2_OPAQUE(p4);
        s += *(const int16_t *)(const void *)(p + k * (2u * TL_T2_STRIDE));
        s += *(const int16_t *)(const void *)(p4 + k * (2u * TL_T2_STRIDE));
    }
    return s;
}

/* out = ((float)acc * 2^k) * s_w (BLOB.md ternary integer matmul). swk = s_w * 2^k when that is exact
   (a normal float), else 0: then, if (float)acc * 2^k is normal too, the two products are the same
   real number and round alike, so out = (float)acc * swk: one int -> float and one multiply. */
static inline float t2_out(int64_t acc, int32_t k, float sw, float swk) {
    if (tl_fbits(swk) != 0u && acc >= INT32_MIN && acc <= INT32_MAX) { /* bits: no soft-float compare */
        float f = TL_I2F((int32_t)acc);
        int32_t e = (int32_t)((tl_fbits(f) >> 23) & 255u) + k;
        if (acc != 0 && e >= 1 && e <= 254) return TL_FMUL(f, swk);
    }
    return TL_FMUL(tl_i64_scaled(acc, k), sw);
}
static float t2_scale_k(float sw, int32_t k) {
    int32_t e = (int32_t)((tl_fbits(sw) >> 23) & 255u);
    if (e == 0 || e == 255 || e + k < 1 || e + k > 254) return 0.0f;
    uint32_t u = tl_fbits(sw) + ((uint32_t)k << 23); /* exponent field + k, sign and mantissa kept */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* t2_out for an int32 sum, fused (integer float ops only): (float)acc is rounded and packed as
   tl_i2f_i does, and multiplied by swk as tl_fmul_i does, without the per-row range checks. Those
   hold for every nonzero acc once, per matrix (t2_cv_init): (float)acc has an exponent field in
   [127, 158], so k in [-126, 96] keeps (float)acc * 2^k normal (t2_out's condition) and an swk
   exponent field in [1, 221] keeps the product's in tl_fmul_i's range. acc = 0 or INT32_MIN and any
   other matrix take t2_out. Same operations on the same bits, so the same result. */
typedef struct {
    uint32_t wm, sb; /* swk's significand at the top of a word; its sign:exponent field - 128 */
    int ok;
} t2_cv;
static t2_cv t2_cv_init(float swk, int32_t k) {
    uint32_t u = tl_fbits(swk), eb = (u >> 23) & 255u;
    t2_cv c;
    c.wm = (u << 8) | 0x80000000u;
    c.sb = (u >> 23) - 128u;
    c.ok = u != 0u && eb - 1u < 221u && k >= -126 && k <= 96;
    return c;
}
static inline float t2_out32(int32_t acc, const t2_cv *c, int32_t k, float sw, float swk) {
#ifdef TL_SOFT_FLOAT
    uint32_t m = (uint32_t)acc, se = 156u; /* as tl_i2f_i */
    if (acc < 0) m = 0u - m, se += 256u;
    if (c->ok && m - 1u < 0x7FFFFFFFu) {
        /* normalized to [2^30, 2^31) by the bit length from a table (rv32: ~10 instructions against
           ~20 for tl_sf_norm's halving) */
        uint32_t t = m >> 16, len;
        if (t)
            len = t >> 8 ? 24u + TL_BITLEN8[t >> 8] : 16u + TL_BITLEN8[t];
        else
            len = m >> 8 ? 8u + TL_BITLEN8[m >> 8] : TL_BITLEN8[m];
        m <<= 31u - len, se -= 31u - len;
        uint32_t fb = (se << 23) + ((m + 0x3Fu + ((m >> 7) & 1u)) >> 7); /* the bits of (float)acc */
        uint64_t p = (uint64_t)((fb << 8) | 0x80000000u) * c->wm;
        uint32_t hi = (uint32_t)(p >> 32) | ((uint32_t)p != 0u), n = hi >> 31;
        return tl_sf_pack((fb >> 23) + c->sb + n, (hi >> n) | (hi & 1u));
    }
#else
    (void)c;
#endif
    return t2_out(acc, k, sw, swk);
}
static inline float t2_out64(int64_t acc, const t2_cv *c, int32_t k, float sw, float swk) {
    return acc >= INT32_MIN && acc <= INT32_MAX ? t2_out32((int32_t)acc, c, k, sw, swk) : t2_out(acc, k, sw, swk);
}

static uint32_t matmul_t2_tab(float *out, const tl_tensor *W, tl_qvec *qx) {
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes, rows = W->rows, bw = 4u * TL_T2_TABLES;
    uint32_t nblocks = (n + bw - 1u) / bw;
    xdec d;
    int32_t base = t2_vec_init(&d, qx, n);
    float sw = W->scales[0], swk = t2_scale_k(sw, base - 142);
    t2_cv cv = t2_cv_init(swk, base - 142);
    for (uint32_t r0 = 0; r0 < rows; r0 += TL_T2_ROWS) {
        uint32_t rn = rows - r0 < TL_T2_ROWS ? rows - r0 : TL_T2_ROWS;
        for (uint32_t c0 = 0; c0 < n; c0 += bw) {
            uint32_t cn = n - c0 < bw ? n - c0 : bw;
            if (nblocks > 1 || qx->t2_cols != cn) { /* a one-block matrix reuses the last tables of q */
                for (uint32_t c = 0; c < cn; c += 4) t2_build(qx->t2tab + (c / 4u) * TL_T2_STRIDE, qx->q + c0 + c, cn - c < 4 ? cn - c : 4);
                qx->t2_cols = nblocks == 1 ? cn : 0u;
            }
            /* the block's groups: multiplier and shift (term = floor(isum * m / 2^sh); |isum * m| < 2^29,
               so a 32-bit product and an arithmetic shift by at most 31 are exact) */
            uint32_t ngb = (cn + gs - 1u) / gs, m[2], nb[2];
            int32_t sh[2];
            for (uint32_t j = 0; j < ngb; j++) {
                uint32_t g = c0 / gs + j, len = cn - j * gs < gs ? cn - j * gs : gs;
                int32_t e = d.ok ? d.e[g] : base - tl_fexp(tl_fbits(d.s[g]));
                m[j] = xdec_m(&d, g);
                sh[j] = e > 31 ? 31 : e;
                nb[j] = (len + 3u) / 4u;
            }
            const uint8_t *w = W->t2 + (size_t)r0 * rb + c0 / 4u;
            const int16_t *tab8 = qx->t2tab + 8u * TL_T2_STRIDE; /* bytes 8.. of the block */
            int shape = cn == 64u ? (gs == 32u ? 32 : 64) : 0; /* a full block: straight-line code */
            for (uint32_t r = 0; r < rn; r++, w += rb) {
                int32_t bs;
                if (shape == 32) {
                    bs = tl_asr32(t2_lookup8(w, qx->t2tab) * (int32_t)m[0], sh[0]) +
                         tl_asr32(t2_lookup8(w + 8, tab8) * (int32_t)m[1], sh[1]);
                } else if (shape == 64) {
                    bs = tl_asr32((t2_lookup8(w, qx->t2tab) + t2_lookup8(w + 8, tab8)) * (int32_t)m[0], sh[0]);
                } else {
                    bs = tl_asr32(t2_lookup(w, qx->t2tab, nb[0]) * (int32_t)m[0], sh[0]);
                    if (ngb > 1) /* the second group: tables and bytes from gs / 4 on */
                        bs += tl_asr32(t2_lookup(w + gs / 4u, qx->t2tab + (gs / 4u) * TL_T2_STRIDE, nb[1]) *
                                       (int32_t)m[1], sh[1]);
                }
                if (nblocks == 1) {
                    out[r0 + r] = t2_out32(bs, &cv, base - 142, sw, swk);
                    continue;
                }
                uint64_t acc = c0 ? ((uint64_t)qx->t2acc[2 * r + 1] << 32 | qx->t2acc[2 * r]) : 0u;
                acc += (uint64_t)(int64_t)bs;
                if (c0 + cn < n) {
                    qx->t2acc[2 * r] = (uint32_t)acc, qx->t2acc[2 * r + 1] = (uint32_t)(acc >> 32);
                } else {
                    out[r0 + r] = t2_out64((int64_t)acc, &cv, base - 142, sw, swk);
                }
            }
        }
    }
    return rows;
}
#endif

static void matmul_t2_rows(float *out, const tl_tensor *W, const tl_qvec *qx, uint32_t i0) {
    uint32_t n = W->cols, gs = qx->group;
    if (qx->imode) {
        xdec d;
        int32_t b = t2_vec_init(&d, qx, n);
        for (uint32_t i = i0; i < W->rows; i++) {
            const uint8_t *w = W->t2 + (size_t)i * W->row_bytes;
            uint64_t acc = 0;
            for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
                uint32_t len = start + gs <= n ? gs : n - start;
                acc += t2_term(dot_t2(w, start, qx->q + start, len), &d, g, b);
            }
            out[i] = TL_FMUL(int_out(acc, b - 142), W->scales[0]);
        }
        return;
    }
    for (uint32_t i = i0; i < W->rows; i++) {
        const uint8_t *w = W->t2 + (size_t)i * W->row_bytes;
        float acc = 0.0f;
        for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
            uint32_t len = start + gs <= n ? gs : n - start;
            acc = acc + (float)dot_t2(w, start, qx->q + start, len) * qx->s[g];
        }
        out[i] = acc * W->scales[0];
    }
}

static void matmul_t2(float *out, const tl_tensor *W, tl_qvec *qx) {
    uint32_t i = 0;
#ifdef TL_SSE2
    /* 4 rows per pass (a lane per row), like matmul_i8. Weight j of a 32-weight block is bit pair
       j%4 of byte j/4: every packed byte is repeated 4 times so lane j holds its byte, then bit pair
       j%4 is tested with per-lane masks (1,4,16,64 / 2,8,32,128) in sad16_t2. */
    const __m128i plus = _mm_set1_epi32(0x40100401), minus = _mm_set1_epi32((int)0x80200802u);
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes;
    __m128 sw = _mm_set1_ps(W->scales[0]);
    __m128i bias = _mm_set1_epi32(128 * (int32_t)gs);
    xdec d;
    xdec_init(&d, qx, 0u);
    int32_t base = qx->imode ? t2_vec_init(&d, qx, n) : 0;
    for (; i + 4 <= W->rows; i += 4) {
        const uint8_t *w[4];
        for (int r = 0; r < 4; r++) w[r] = W->t2 + (size_t)(i + r) * rb;
        __m128 acc = _mm_setzero_ps();
        uint64_t iacc[4] = {0, 0, 0, 0};
        uint32_t g = 0, start = 0;
        for (; start + gs <= n; g++, start += gs) {
            __m128i s[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
            for (uint32_t k = start; k < start + gs; k += 32) { /* 8 packed bytes = 32 weights */
                __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)(qx->q + k));
                __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(qx->q + k + 16));
                for (int r = 0; r < 4; r++) {
                    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(w[r] + k / 4));
                    b = _mm_unpacklo_epi8(b, b);
                    s[r] = _mm_add_epi64(s[r], sad16_t2(_mm_unpacklo_epi16(b, b), x0, plus, minus));
                    s[r] = _mm_add_epi64(s[r], sad16_t2(_mm_unpackhi_epi16(b, b), x1, plus, minus));
                }
            }
            /* the 4 rows' two 64-bit partial sums -> {isum0, isum1, isum2, isum3} (all < 2^31) */
            __m128i s01 = _mm_add_epi64(_mm_unpacklo_epi64(s[0], s[1]), _mm_unpackhi_epi64(s[0], s[1]));
            __m128i s23 = _mm_add_epi64(_mm_unpacklo_epi64(s[2], s[3]), _mm_unpackhi_epi64(s[2], s[3]));
            __m128i isum = _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(s01), _mm_castsi128_ps(s23),
                                                           _MM_SHUFFLE(2, 0, 2, 0)));
            isum = _mm_sub_epi32(isum, bias);
            if (qx->imode) {
                int32_t is[4];
                _mm_storeu_si128((__m128i *)(void *)is, isum);
                for (int r = 0; r < 4; r++) iacc[r] += t2_term(is[r], &d, g, base);
                continue;
            }
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(isum), _mm_set1_ps(qx->s[g])));
        }
        if (qx->imode) {
            for (int r = 0; r < 4; r++) {
                if (start < n) iacc[r] += t2_term(dot_t2(w[r], start, qx->q + start, n - start), &d, g, base);
                out[i + r] = int_out(iacc[r], base - 142) * W->scales[0];
            }
            continue;
        }
        if (start < n) {
            float a[4];
            _mm_storeu_ps(a, acc);
            for (int r = 0; r < 4; r++)
                a[r] = a[r] + (float)dot_t2(w[r], start, qx->q + start, n - start) * qx->s[g];
            acc = _mm_loadu_ps(a);
        }
        _mm_storeu_ps(out + i, _mm_mul_ps(acc, sw));
    }
#else
    if (qx->imode) i = qx->t2tab ? matmul_t2_tab(out, W, qx) : matmul_t2_int4(out, W, qx);
#endif
    matmul_t2_rows(out, W, qx, i);
}

/* --- ternary, base-3 (TL_Q_TERNARY5, format 2.0) --------------------------------------------- */

#define T3_TAG 0x80000000u /* t2_cols of T3 tables / planes, so T2 tables of the same q are never mistaken */

/* Byte -> its 5 weights (digit i of the byte = weight i + 1), plus 3 zero bytes. The same exact
   products as the 2-bit packing: only storage differs. */
#define T3D(b, p) ((((b) / (p)) % 3) - 1)
#define T3E(b) {T3D(b, 1), T3D(b, 3), T3D(b, 9), T3D(b, 27), T3D(b, 81), 0, 0, 0}
#define T3E3(b) T3E(b), T3E((b) + 1), T3E((b) + 2)
#define T3E9(b) T3E3(b), T3E3((b) + 3), T3E3((b) + 6)
#define T3E27(b) T3E9(b), T3E9((b) + 9), T3E9((b) + 18)
#define T3E81(b) T3E27(b), T3E27((b) + 27), T3E27((b) + 54)
static const int8_t T3_LUT[243][8] = {T3E81(0), T3E81(81), T3E81(162)};

/* sum t[col0 + k] * x[k], k < n, for a base-3 row (exact). */
static int32_t dot_t3(const uint8_t *w, uint32_t col0, const int8_t *x, uint32_t n) {
    int32_t s = 0;
    uint32_t k = 0, c = col0;
    for (; k < n && c % 5u; k++, c++) s += T3_LUT[w[c / 5u]][c % 5u] * x[k];
    for (; k + 5 <= n; k += 5, c += 5) {
        const int8_t *t = T3_LUT[w[c / 5u]];
        s += t[0] * x[k] + t[1] * x[k + 1] + t[2] * x[k + 2] + t[3] * x[k + 3] + t[4] * x[k + 4];
    }
    for (; k < n; k++, c++) s += T3_LUT[w[c / 5u]][c % 5u] * x[k];
    return s;
}

/* Rows [i0, rows): one row at a time, as matmul_t2_rows. */
static void matmul_t3_rows(float *out, const tl_tensor *W, const tl_qvec *qx, uint32_t i0) {
    uint32_t n = W->cols, gs = qx->group;
    xdec d;
    int32_t b = qx->imode ? t2_vec_init(&d, qx, n) : 0;
    for (uint32_t i = i0; i < W->rows; i++) {
        const uint8_t *w = W->t2 + (size_t)i * W->row_bytes;
        uint64_t iacc = 0;
        float acc = 0.0f;
        for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
            uint32_t len = start + gs <= n ? gs : n - start;
            int32_t isum = dot_t3(w, start, qx->q + start, len);
            if (qx->imode)
                iacc += t2_term(isum, &d, g, b);
            else
                acc = acc + (float)isum * qx->s[g];
        }
        out[i] = qx->imode ? TL_FMUL(int_out(iacc, b - 142), W->scales[0]) : acc * W->scales[0];
    }
}

#ifdef TL_SSE2
/* 4 rows per pass, without decoding a digit. With d_i = t_i + 1 the digits of byte b and
   q_i = floor(b / 3^i) (q_5 = 0): d_i = q_i - 3 q_(i+1), so for 5 activations x_i
   sum t_i x_i = sum d_i x_i - sum x_i = q_0 x_0 + sum_(i>=1) q_i (x_i - 3 x_(i-1)) - sum x_i.
   Per group, the activations are laid out once per vector as 5 planes y_i[k] over the 8 (group 64:
   16) bytes that touch the group (x outside the group counts as 0, so a byte shared with the next
   group adds only its own columns); a row's group sum is then 4 pmulhuw (q_i = b * magic >> 16,
   exact for b < 243) and 5 pmaddwd over one 8-byte load, minus the group's sum of x. Exact: every
   product and sum is an integer well inside int32. */
#define T3_MAXG 64u
typedef struct {
    int16_t y[T3_MAXG][2][5][8]; /* [group][8-byte half][plane i][byte] */
    int32_t sx[T3_MAXG];         /* sum of the group's activations */
    uint32_t k0[T3_MAXG];        /* first byte that touches the group */
    const int8_t *owner;         /* the q these planes are of (valid while its t2_cols says so) */
} t3_planes;

static void t3_planes_init(t3_planes *P, const int8_t *q, uint32_t n, uint32_t gs, uint32_t ng) {
    uint32_t halves = gs > 32u ? 2u : 1u;
    for (uint32_t g = 0; g < ng; g++) {
        uint32_t lo = g * gs, hi = lo + gs < n ? lo + gs : n, k0 = lo / 5u;
        int32_t xm[1 + 80] = {0}, sx = 0; /* xm[1 + j]: column 5 k0 + j if in the group, else 0 */
        for (uint32_t c = lo; c < hi; c++) {
            xm[1u + c - 5u * k0] = q[c];
            sx += q[c];
        }
        P->sx[g] = sx, P->k0[g] = k0;
        for (uint32_t h = 0; h < halves; h++)
            for (uint32_t i = 0; i < 5; i++)
                for (uint32_t k = 0; k < 8; k++) {
                    uint32_t j = 5u * (8u * h + k) + i;
                    P->y[g][h][i][k] = (int16_t)(xm[1u + j] - (i ? 3 * xm[j] : 0));
                }
    }
}

/* sum of the 4 int32 lanes of the products of 8 bytes at w (zero-extended) with the planes */
static inline __m128i t3_dot8(__m128i b, const int16_t (*y)[8]) {
    const __m128i m3 = _mm_set1_epi16(21846), m9 = _mm_set1_epi16(7282), m27 = _mm_set1_epi16(2428),
                  m81 = _mm_set1_epi16(810);
#define YP(i) _mm_loadu_si128((const __m128i *)(const void *)y[i])
    __m128i s = _mm_madd_epi16(b, YP(0));
    s = _mm_add_epi32(s, _mm_madd_epi16(_mm_mulhi_epu16(b, m3), YP(1)));
    s = _mm_add_epi32(s, _mm_madd_epi16(_mm_mulhi_epu16(b, m9), YP(2)));
    s = _mm_add_epi32(s, _mm_madd_epi16(_mm_mulhi_epu16(b, m27), YP(3)));
    s = _mm_add_epi32(s, _mm_madd_epi16(_mm_mulhi_epu16(b, m81), YP(4)));
#undef YP
    return s;
}

/* 8 bytes of a row from byte k on, zero-extended to 16 bits; bytes past `end` read as 0 (their
   planes are 0 anyway; this only keeps the load inside the tensor). */
static inline __m128i t3_load8(const uint8_t *p, const uint8_t *end) {
    if (p + 8 <= end) return _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(const void *)p), _mm_setzero_si128());
    uint8_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < 8 && p + k < end; k++) tmp[k] = p[k];
    return _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(const void *)tmp), _mm_setzero_si128());
}

static uint32_t matmul_t3_sse(float *out, const tl_tensor *W, tl_qvec *qx) {
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes, ng = (n + gs - 1u) / gs, i = 0;
    if (ng > T3_MAXG) return 0; /* matmul_t3_rows */
    static t3_planes P; /* 10 KB, off the stack; reused by the matrices that share q (q/k/v, w1/w3) */
    if (P.owner != qx->q || qx->t2_cols != (n | T3_TAG)) {
        t3_planes_init(&P, qx->q, n, gs, ng);
        P.owner = qx->q;
        qx->t2_cols = n | T3_TAG; /* tl_quantize clears it */
    }
    const uint8_t *end = W->t2 + (size_t)W->rows * rb;
    uint32_t halves = gs > 32u ? 2u : 1u;
    xdec d;
    xdec_init(&d, qx, 0u);
    int32_t base = qx->imode ? t2_vec_init(&d, qx, n) : 0;
    for (; i + 4 <= W->rows; i += 4) {
        const uint8_t *w = W->t2 + (size_t)i * rb;
        __m128 acc = _mm_setzero_ps();
        uint64_t iacc[4] = {0, 0, 0, 0};
        for (uint32_t g = 0; g < ng; g++) {
            __m128i s[4];
            if (w + 4u * rb + 16u <= end) /* not the last rows: every load stays inside the tensor */
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = w + (size_t)r * rb + P.k0[g];
                    s[r] = t3_dot8(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(const void *)p),
                                                     _mm_setzero_si128()), P.y[g][0]);
                    if (halves == 2u)
                        s[r] = _mm_add_epi32(s[r], t3_dot8(_mm_unpacklo_epi8(_mm_loadl_epi64(
                            (const __m128i *)(const void *)(p + 8)), _mm_setzero_si128()), P.y[g][1]));
                }
            else
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = w + (size_t)r * rb + P.k0[g];
                    s[r] = t3_dot8(t3_load8(p, end), P.y[g][0]);
                    if (halves == 2u) s[r] = _mm_add_epi32(s[r], t3_dot8(t3_load8(p + 8, end), P.y[g][1]));
                }
            __m128i isum = _mm_sub_epi32(hsum4_epi32(s[0], s[1], s[2], s[3]), _mm_set1_epi32(P.sx[g]));
            if (qx->imode) {
                int32_t is[4];
                _mm_storeu_si128((__m128i *)(void *)is, isum);
                for (int r = 0; r < 4; r++) iacc[r] += t2_term(is[r], &d, g, base);
                continue;
            }
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(isum), _mm_set1_ps(qx->s[g])));
        }
        if (qx->imode) {
            for (int r = 0; r < 4; r++) out[i + r] = int_out(iacc[r], base - 142) * W->scales[0];
            continue;
        }
        _mm_storeu_ps(out + i, _mm_mul_ps(acc, _mm_set1_ps(W->scales[0])));
    }
    return i;
}
#else
/* T3 tables (integer mode, portable kernels): as the T2 tables, turned to base-3 bytes. A byte holds
   5 activations' weights: its table has 243 entries. Bytes may straddle a group boundary (32 and 64
   are not multiples of 5), and each group needs its own exact sum, so a table belongs to one (group,
   byte) pair and holds zeros for the byte's columns outside the group: group g's sum is the lookups
   of the bytes that touch it. A block is as many whole groups as TL_T2_TABLES tables hold (two of 32
   columns: 7 + 7 tables); with several blocks, row sums wait in t2acc as in matmul_t2_tab. */

/* tab[byte] = T3_BIAS + the sum of the byte's weights times q[c] for its columns c in [lo, hi), 0 for
   the others. Entry 27e + 9c + l (l = digits 0, 1; c = digit 2; e = digits 3, 4; digit d is weight
   d - 1) is L(l) + M(c) + H(e). The build is the cost of base-3 (243 entries per 5 activations,
   against 81 per 4 for T2 tables): written 2 entries per 32-bit store, 122 stores of one add each
   (the 16-bit stores of 9-entry rows cost ~560 instructions a table on rv32, ~250 K a token).
   Two entries share a word as lo + hi * 2^16 (mod 2^32). That is exact only if the low entry is
   >= 0 (a negative one would borrow from the high half), hence the bias: |L + M| <= 3 * 128 and
   |H| <= 2 * 128, so with +384 and +256 every entry is in [0, 1280]; the lookups subtract
   T3_BIAS per byte (t3_bias). Blocks e = 2p, 2p + 1 (54 entries, starting at an even entry) are
   27 words: 13 of the even block's entries 0..25 (P0 + H(2p) in both halves), its entry 26 with the
   odd block's entry 0 (S), and the odd block's entries 1..26 (P1 + H(2p + 1)); the last block
   (e = 8) ends with entry 242 and the padding entry 243 (TL_T2_STRIDE 244). The table is 4-byte
   aligned: the scratch block is, and TL_T2_STRIDE is even. */
#define T3_BIAS 640
#if defined(__GNUC__)
#define TL_ASSUME_ALIGNED4(p) __builtin_assume_aligned((p), 4)
#else
#define TL_ASSUME_ALIGNED4(p) (p)
#endif
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns"))) /* as dot4_i8_groups: GCC's first scheduling pass spills */
#endif
static TL_NOINLINE void t3_build(int16_t *tab, const int8_t *q, uint32_t c0, uint32_t lo, uint32_t hi) {
    uint32_t v[5];
    if (c0 >= lo && c0 + 5u <= hi) /* the usual case: all 5 columns in the group */
        for (uint32_t i = 0; i < 5; i++) v[i] = (uint32_t)(int32_t)q[c0 + i];
    else
        for (uint32_t i = 0; i < 5; i++) v[i] = c0 + i >= lo && c0 + i < hi ? (uint32_t)(int32_t)q[c0 + i] : 0u;
    /* unsigned: the words wrap mod 2^32 as they should */
    uint32_t a = v[0], b = v[1], c3 = v[3], c4 = v[4];
    uint32_t L0 = 0u - a - b, L1 = 0u - b, L2 = a - b, L3 = 0u - a, L4 = 0u, L5 = a, L6 = b - a, L7 = b, L8 = a + b;
    uint32_t M0 = 384u - v[2], M1 = 384u, M2 = 384u + v[2];
#define PK(x, y) ((x) + ((y) << 16))
    uint32_t M0p = M0 * 0x10001u, M1p = M1 * 0x10001u, M2p = M2 * 0x10001u;
    uint32_t E01 = PK(L0, L1), E23 = PK(L2, L3), E45 = PK(L4, L5), E67 = PK(L6, L7);
    uint32_t O12 = PK(L1, L2), O34 = PK(L3, L4), O56 = PK(L5, L6), O78 = PK(L7, L8);
    uint32_t H[10] = {256u - c3 - c4, 256u - c4, 256u + c3 - c4, 256u - c3, 256u,
                      256u + c3, 256u + c4 - c3, 256u + c4, 256u + c3 + c4, 0u}; /* H[9]: padding */
    uint8_t *t = TL_ASSUME_ALIGNED4((void *)tab);
#define T3W(i, val)                                                                              \
    do {                                                                                         \
        uint32_t w_ = (val);                                                                     \
        memcpy(t + 4u * (i), &w_, 4);                                                            \
    } while (0)
    /* one block at a time, straight-line, so that only its 13 pair words and one H are live (rv32:
       few spills; GCC turned the loop form into index arithmetic and stack traffic) */
#define T3_BLOCK(w, h, P)                                                                        \
    do {                                                                                         \
        uint32_t h_ = (h) * 0x10001u;                                                            \
        T2_OPAQUE(h_); /* else GCC folds h_ into the 13 sums and keeps 60 values live */        \
        T3W((w) + 0, P##0 + h_); T3W((w) + 1, P##1 + h_); T3W((w) + 2, P##2 + h_);              \
        T3W((w) + 3, P##3 + h_); T3W((w) + 4, P##4 + h_); T3W((w) + 5, P##5 + h_);              \
        T3W((w) + 6, P##6 + h_); T3W((w) + 7, P##7 + h_); T3W((w) + 8, P##8 + h_);              \
        T3W((w) + 9, P##9 + h_); T3W((w) + 10, P##10 + h_); T3W((w) + 11, P##11 + h_);          \
        T3W((w) + 12, P##12 + h_);                                                               \
    } while (0)
    { /* even blocks: entries 0..25 */
        uint32_t A0 = E01 + M0p, A1 = E23 + M0p, A2 = E45 + M0p, A3 = E67 + M0p, A4 = PK(L8 + M0, L0 + M1);
        uint32_t A5 = O12 + M1p, A6 = O34 + M1p, A7 = O56 + M1p, A8 = O78 + M1p;
        uint32_t A9 = E01 + M2p, A10 = E23 + M2p, A11 = E45 + M2p, A12 = E67 + M2p;
        T3_BLOCK(0, H[0], A); T3_BLOCK(27, H[2], A); T3_BLOCK(54, H[4], A); T3_BLOCK(81, H[6], A);
        T3_BLOCK(108, H[8], A);
    }
    { /* odd blocks: entries 1..26 */
        uint32_t B0 = O12 + M0p, B1 = O34 + M0p, B2 = O56 + M0p, B3 = O78 + M0p;
        uint32_t B4 = E01 + M1p, B5 = E23 + M1p, B6 = E45 + M1p, B7 = E67 + M1p, B8 = PK(L8 + M1, L0 + M2);
        uint32_t B9 = O12 + M2p, B10 = O34 + M2p, B11 = O56 + M2p, B12 = O78 + M2p;
        T3_BLOCK(14, H[1], B); T3_BLOCK(41, H[3], B); T3_BLOCK(68, H[5], B); T3_BLOCK(95, H[7], B);
    }
#undef T3_BLOCK
    /* entry 26 of block 2p with entry 0 of block 2p + 1 */
    uint32_t S = PK(L8 + M2, L0 + M0);
    for (uint32_t p = 0; p < 5; p++) T3W(27u * p + 13u, S + PK(H[2 * p], H[2 * p + 1]));
#undef T3W
#undef PK
}

/* 7 bytes, 7 tables (a group of 32 columns starts inside a byte or at one: it touches 7 of them,
   sometimes 8); immediates stay < 2048 on rv32 with a second base 4 tables on (as t2_lookup8). */
static inline int32_t t3_lookup7(const uint8_t *w, const int16_t *tab) {
    const char *tb = (const char *)tab, *tb4 = tb + 4u * 2u * TL_T2_STRIDE;
    int32_t s = 0;
    T2_OPAQUE(tb4);
    for (uint32_t k = 0; k < 4; k++) {
        const char *p = tb + 2u * w[k];
        T2_OPAQUE(p);
        s += *(const int16_t *)(const void *)(p + k * (2u * TL_T2_STRIDE));
    }
    for (uint32_t k = 0; k < 3; k++) {
        const char *p = tb4 + 2u * w[k + 4];
        T2_OPAQUE(p);
        s += *(const int16_t *)(const void *)(p + k * (2u * TL_T2_STRIDE));
    }
    return s;
}
static inline int32_t t3_lookup(const uint8_t *w, const int16_t *tab, uint32_t nb) {
    return nb == 7u ? t3_lookup7(w, tab) : nb == 8u ? t2_lookup8(w, tab) : t2_lookup(w, tab, nb);
}

/* The usual block (stories260K's dim-64 matrices: q, k, v, o, w1, w3): the whole matrix in one
   block of two groups of 7 bytes (group 1 starting at byte b1), every row's sum straight to its
   output. Out of line with the group constants in registers: the generic loop reloads each group's
   bias, multiplier and shift from the stack and branches on the block's shape for every row. */
static TL_NOINLINE void t3_rows_2x7(float *out, const uint8_t *w, uint32_t rb, uint32_t rn, const int16_t *tab,
                                    uint32_t b1, const uint32_t m[2], const int32_t sh[2], int32_t k, float sw,
                                    float swk) {
    const int16_t *tab1 = tab + 7u * TL_T2_STRIDE;
    int32_t m0 = (int32_t)m[0], m1 = (int32_t)m[1], sh0 = sh[0], sh1 = sh[1];
    t2_cv cv = t2_cv_init(swk, k);
    for (uint32_t r = 0; r < rn; r++, w += rb) {
        int32_t s0 = t3_lookup7(w, tab) - 7 * T3_BIAS, s1 = t3_lookup7(w + b1, tab1) - 7 * T3_BIAS;
        out[r] = t2_out32(tl_asr32(s0 * m0, sh0) + tl_asr32(s1 * m1, sh1), &cv, k, sw, swk);
    }
}

static uint32_t matmul_t3_tab(float *out, const tl_tensor *W, tl_qvec *qx) {
    uint32_t n = W->cols, gs = qx->group, rb = W->row_bytes, rows = W->rows;
    uint32_t ng = (n + gs - 1u) / gs;
    xdec d;
    int32_t base = t2_vec_init(&d, qx, n);
    float sw = W->scales[0], swk = t2_scale_k(sw, base - 142);
    t2_cv cv = t2_cv_init(swk, base - 142);
    for (uint32_t r0 = 0; r0 < rows; r0 += TL_T2_ROWS) {
        uint32_t rn = rows - r0 < TL_T2_ROWS ? rows - r0 : TL_T2_ROWS;
        for (uint32_t g0 = 0, g1; g0 < ng; g0 = g1) {
            /* the block's groups: first byte, bytes, first table, multiplier and shift */
            uint32_t b0[TL_T2_TABLES], nb[TL_T2_TABLES], t0[TL_T2_TABLES], m[TL_T2_TABLES], nt = 0;
            uint32_t two7 = 0, b1 = 0; /* the block is t3_rows_2x7's shape; group 1's first byte */
            int32_t sh[TL_T2_TABLES], bias[TL_T2_TABLES]; /* bias: T3_BIAS per byte of the group */
            for (g1 = g0; g1 < ng; g1++) {
                uint32_t lo = g1 * gs, hi = lo + gs < n ? lo + gs : n, j = g1 - g0;
                uint32_t first = lo / 5u, cnt = (hi - 1u) / 5u + 1u - first;
                if (nt + cnt > TL_T2_TABLES) break;
                b0[j] = first, nb[j] = cnt, t0[j] = nt, bias[j] = T3_BIAS * (int32_t)cnt;
                two7 = j == 0u ? first == 0u && cnt == 7u : j == 1u && two7 && cnt == 7u && nt == 7u;
                if (j == 1u) b1 = first;
                int32_t e = d.ok ? d.e[g1] : base - tl_fexp(tl_fbits(d.s[g1]));
                m[j] = xdec_m(&d, g1);
                sh[j] = e > 31 ? 31 : e;
                nt += cnt;
            }
            uint32_t ngb = g1 - g0, single = g0 == 0 && g1 == ng;
            if (!single || qx->t2_cols != (n | T3_TAG)) { /* a one-block matrix reuses the last tables of q */
                for (uint32_t j = 0; j < ngb; j++) {
                    uint32_t lo = (g0 + j) * gs, hi = lo + gs < n ? lo + gs : n;
                    for (uint32_t k = 0; k < nb[j]; k++)
                        t3_build(qx->t2tab + (t0[j] + k) * TL_T2_STRIDE, qx->q, 5u * (b0[j] + k), lo, hi);
                }
                qx->t2_cols = single ? (n | T3_TAG) : 0u;
            }
            const int16_t *tab1 = qx->t2tab + t0[1 % ngb] * TL_T2_STRIDE;
            const uint8_t *w = W->t2 + (size_t)r0 * rb;
            if (single && two7 && ngb == 2u) {
                t3_rows_2x7(out + r0, w, rb, rn, qx->t2tab, b1, m, sh, base - 142, sw, swk);
                continue;
            }
            for (uint32_t r = 0; r < rn; r++, w += rb) {
                int32_t bs = tl_asr32((t3_lookup(w + b0[0], qx->t2tab, nb[0]) - bias[0]) * (int32_t)m[0], sh[0]);
                if (ngb > 1) bs += tl_asr32((t3_lookup(w + b0[1], tab1, nb[1]) - bias[1]) * (int32_t)m[1], sh[1]);
                for (uint32_t j = 2; j < ngb; j++)
                    bs += tl_asr32((t2_lookup(w + b0[j], qx->t2tab + t0[j] * TL_T2_STRIDE, nb[j]) - bias[j]) *
                                   (int32_t)m[j], sh[j]);
                if (single) {
                    out[r0 + r] = t2_out32(bs, &cv, base - 142, sw, swk);
                    continue;
                }
                uint64_t acc = g0 ? ((uint64_t)qx->t2acc[2 * r + 1] << 32 | qx->t2acc[2 * r]) : 0u;
                acc += (uint64_t)(int64_t)bs;
                if (g1 < ng) {
                    qx->t2acc[2 * r] = (uint32_t)acc, qx->t2acc[2 * r + 1] = (uint32_t)(acc >> 32);
                } else {
                    out[r0 + r] = t2_out64((int64_t)acc, &cv, base - 142, sw, swk);
                }
            }
        }
    }
    return rows;
}
#endif

static void matmul_t3(float *out, const tl_tensor *W, tl_qvec *qx) {
    uint32_t i = 0;
#ifdef TL_SSE2
    i = matmul_t3_sse(out, W, qx);
#else
    if (qx->imode && qx->t2tab) i = matmul_t3_tab(out, W, qx);
#endif
    matmul_t3_rows(out, W, qx, i);
}

void tl_matmul(float *out, const tl_tensor *W, const float *x, tl_qvec *qx) {
    if (W->qtype == TL_Q_F32)
        matmul_f32(out, W->f32, x, W->rows, W->cols);
    else if (W->qtype == TL_Q_INT8)
        matmul_i8(out, W, qx);
    else if (W->qtype == TL_Q_TERNARY5)
        matmul_t3(out, W, qx);
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
    for (uint32_t j = 0; j < n; j++) out[j] = TL_FMUL(TL_I2F(q[j]), s[j / E->group]);
}
