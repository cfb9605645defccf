/* softf.h - float32 multiply, add and int32 -> float conversion with integer operations, bit-exact
   with IEEE-754 binary32 round-to-nearest-even. On rv32imc (ESP32-C3: no FPU) each float op is a
   libgcc soft-float call (__mulsf3, __addsf3, __floatsisf) of ~50-110 instructions; the usual case
   here (normal operands, normal result) takes ~25-48. Any other case (zero, subnormal, inf or NaN
   operands; a subnormal result; a result or an addend near overflow, >= 2^126) falls back to the
   native operator, so the bits never differ. Tested bit for bit: tests/test_softf.c. */
#ifndef TL_SOFTF_H
#define TL_SOFTF_H

#include <stdint.h>
#include <string.h>

/* The integer versions only pay off without a hardware FPU: x86 (SSE) and FPU cores such as the
   ESP32-S3 do a float op in a cycle or a few, so they keep the native operators. TL_NO_SIMD (the
   host build of the portable path) selects them too, so host tests run exactly what rv32 runs. */
#if defined(TL_NO_SIMD) || (defined(__riscv) && !defined(__riscv_flen))
#define TL_SOFT_FLOAT 1
#define TL_FMUL(a, b) tl_fmul_i((a), (b))
#define TL_FADD(a, b) tl_fadd_i((a), (b))
#define TL_I2F(v) tl_i2f_i((v))
#else
#define TL_FMUL(a, b) ((a) * (b))
#define TL_FADD(a, b) ((a) + (b))
#define TL_I2F(v) ((float)(v))
#endif

static inline uint32_t tl_sf_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float tl_sf_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* 1 <= v < 2^31 -> v << k in [2^30, 2^31), *e -= k: by halving, since rv32imc has no clz. */
static inline uint32_t tl_sf_norm(uint32_t v, uint32_t *e) {
    if (v < 1u << 15) v <<= 16, *e -= 16u;
    if (v < 1u << 23) v <<= 8, *e -= 8u;
    if (v < 1u << 27) v <<= 4, *e -= 4u;
    if (v < 1u << 29) v <<= 2, *e -= 2u;
    if (v < 1u << 30) v <<= 1, *e -= 1u;
    return v;
}

/* The common tail. s in [2^30, 2^31): s >> 7 is the 24-bit significand, bits 6..0 the round bit and
   the sticky bits (the headroom at bit 31 keeps the rounding add from overflowing). se = sign << 8 |
   (biased exponent - 1) with the exponent 1..253: a rounding carry to 2^24 lands in the exponent
   field, which is then still right. Ties to even: the significand's low bit adds to the half. */
static inline float tl_sf_pack(uint32_t se, uint32_t s) {
    return tl_sf_float((se << 23) + ((s + 0x3Fu + ((s >> 7) & 1u)) >> 7));
}

/* a * b. The significands at the top of 32-bit words multiply to a 64-bit product in [2^62, 2^64)
   (mul + mulhu on rv32): the high word has all the result bits, the low word only counts as sticky.
   The sign comes free from adding the sign:exponent fields (bit 8 is the xor of the signs). */
static inline float tl_fmul_i(float a, float b) {
    uint32_t ua = tl_sf_bits(a), ub = tl_sf_bits(b), sa = ua >> 23, sb = ub >> 23;
    uint32_t ea = sa & 255u, eb = sb & 255u;
    if (ea - 1u < 254u && eb - 1u < 254u && ea + eb - 128u < 252u) { /* normal, result exp 1..253 */
        uint64_t p = (uint64_t)((ua << 8) | 0x80000000u) * ((ub << 8) | 0x80000000u);
        uint32_t hi = (uint32_t)(p >> 32) | ((uint32_t)p != 0u), n = hi >> 31;
        return tl_sf_pack(sa + sb - 128u + n, (hi >> n) | (hi & 1u)); /* the bit shifted out: sticky */
    }
    return a * b;
}

/* a + b with |a| >= |b| after a (branchless) swap. a's significand at bits 29..6 (room for the
   carry), b's aligned to it with the bits shifted out ORed into bit 0 (sticky): that rounds as the
   exact sum does, bit 0 being far below the round bit. A subtraction can leave less than 2^29: just
   (> 2^28) for an exponent difference >= 2, the sticky bit still far down; for a difference <= 1
   nothing was shifted out and the long normalization is exact. x + (-x) = +0 (round to nearest). */
static inline float tl_fadd_i(float a, float b) {
    uint32_t ua = tl_sf_bits(a), ub = tl_sf_bits(b);
    uint32_t t = (ua ^ ub) & (0u - (uint32_t)((ua << 1) < (ub << 1)));
    ua ^= t, ub ^= t;
    uint32_t sa = ua >> 23, ea = sa & 255u, eb = (ub >> 23) & 255u, d = ea - eb;
    if (eb != 0u && ea < 253u) { /* both normal (eb <= ea), the result exponent stays <= 253 */
        if (d > 25u) return tl_sf_float(ua); /* |b| < ulp(a) / 4: rounds to a */
        uint32_t ma = ((ua << 8) | 0x80000000u) >> 2, mb = (ub << 8) | 0x80000000u, s, n;
        s = mb >> (d + 2u);
        mb = s | ((s << (d + 2u)) != mb);
        s = (ua ^ ub) >> 31 ? ma - mb : ma + mb;
        if (s >= 1u << 29) { /* 0 or 1 bit to normalize */
            n = s < 1u << 30;
            s <<= n;
        } else {
            uint32_t e = ea;
            if (s == 0u) return 0.0f;
            s = tl_sf_norm(s, &e);
            if (e > ea) return a + b; /* wrapped: a subnormal result */
            n = ea - e;
        }
        return tl_sf_pack(sa - n, s); /* exponent ea + 1 - n */
    }
    if ((ub << 1) == 0u && ea - 1u < 254u) return tl_sf_float(ua); /* normal +- 0 */
    return a + b;
}

/* (float)v: |v| normalized to [2^30, 2^31), then the common rounding. */
static inline float tl_i2f_i(int32_t v) {
    uint32_t m = (uint32_t)v, se = 156u; /* sign << 8 | (exponent - 1) were m at bit 30 */
    if (v < 0) m = 0u - m, se += 256u;
    if (m - 1u >= 0x7FFFFFFFu) return v ? -2147483648.0f : 0.0f; /* 0, INT32_MIN (m = 2^31) */
    m = tl_sf_norm(m, &se);
    return tl_sf_pack(se, m); /* exponent 157 - the shift */
}

#endif
