/* intmode.h - BLOB.md "Integer mode" (header flags bit 1): the int8 KV cache, integer attention,
   integer activation quantization and SwiGLU, integer matmul accumulation. Everything here is exact
   integer arithmetic on the bit patterns of float32 values (same results on every compiler and
   target, soft-float or not); the few float operations left are the ones BLOB.md names. */
#ifndef TL_INTMODE_H
#define TL_INTMODE_H

#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* Hot loops kept out of the big step function so that they get the registers to themselves (on
   rv32 an inlined loop otherwise spills its loop-invariant values to the stack). */
#if defined(__GNUC__)
#define TL_NOINLINE __attribute__((noinline))
#else
#define TL_NOINLINE
#endif

#define TL_FLAG_TIED 1u
#define TL_FLAG_INT 2u /* flags bit 1: integer mode */

extern const uint16_t TL_EXP2_LUT[256]; /* round(32768 * 2^(-b/256)) */
extern const uint16_t TL_SIG_LUT[513];  /* round(32768 * sigmoid(-16 + i/16)) */
extern const uint8_t TL_BITLEN8[256];   /* bit length of a byte (rv32imc has no clz) */

static inline uint32_t tl_fbits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
/* E(x) = max(exponent field, 1) and M(x) = mantissa with its implicit bit: |x| = M * 2^(E - 150). */
static inline int32_t tl_fexp(uint32_t u) {
    int32_t e = (int32_t)((u >> 23) & 255u);
    return e ? e : 1;
}
static inline uint32_t tl_fmant(uint32_t u) { return (u & 0x7FFFFFu) | (((u >> 23) & 255u) ? 0x800000u : 0u); }
/* m16(x) = M(x) >> 8: |x| ~ m16 * 2^(E - 142) */
static inline uint32_t tl_fm16(uint32_t u) { return tl_fmant(u) >> 8; }
/* floor(x / 2^s) for s >= 0 (s > 63 acts as 63). GCC and Clang define >> of a negative value as the
   arithmetic shift (one instruction); other compilers get the form that only shifts non-negatives. */
static inline int64_t tl_asr64(int64_t x, int32_t s) {
    if (s > 63) s = 63;
#if defined(__GNUC__)
    return x >> s;
#else
    return x >= 0 ? x >> s : ~(~x >> s);
#endif
}
static inline int32_t tl_asr32(int32_t x, int32_t s) {
    if (s > 31) s = 31;
#if defined(__GNUC__)
    return x >> s;
#else
    return x >= 0 ? x >> s : ~(~x >> s);
#endif
}
/* floor(x / 2^32) of a product that fits: the high word (mulh / mulhsu on rv32) */
static inline int32_t tl_hi32(int64_t x) { return (int32_t)tl_asr64(x, 32); }

/* 2^k from its exponent bits; 0 for k < -126, +inf for k > 127. */
float tl_pow2f(int32_t k);

/* (float)acc * tl_pow2f(k), the BLOB.md conversion of an integer accumulator: the int64 -> float
   rounding (to nearest even) and the exact exponent shift are done with integer operations when
   the result is a normal float (the soft-float calls cost ~10x more on rv32), else by the two float
   operations themselves. Same bits either way. */
float tl_i64_scaled(int64_t acc, int32_t k);
float tl_i64_scaled_int(int64_t acc, int32_t k); /* the integer path, on every build (tested) */

/* iquant: x[0..n) in groups of `group` -> q[n], s[ceil(n / group)] (BLOB.md "iquant"). */
void tl_iquant(int8_t *q, float *s, const float *x, uint32_t n, uint32_t group);

/* out = the quantized w2 input of silu(hb) * hb2 (BLOB.md "integer SwiGLU"); out->group <= 64. */
void tl_swiglu_int(tl_qvec *out, const float *hb, const float *hb2, uint32_t n);

#endif
