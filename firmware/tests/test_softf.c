/* test_softf.c - core/softf.h against the native x86-64 SSE float operations, bit for bit (both NaN
   counts as equal). Build with -ffp-contract=off, no -ffast-math, and -DTL_NO_SIMD (the integer
   path). Inputs: random bit patterns of every class, normals with close exponents (cancellation,
   alignment), constructed rounding ties, results near overflow and near the subnormal boundary, and
   the int32 edges. Deterministic (splitmix64, fixed seed); exits 1 at the first mismatch. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/softf.h"

#ifndef TL_SOFT_FLOAT
#error "build with -DTL_NO_SIMD: the test is of the integer path"
#endif

static uint64_t rng = 0x5EED5EED12345678u;
static uint64_t next64(void) { /* splitmix64 */
    uint64_t z = (rng += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static uint32_t r32(void) { return (uint32_t)(next64() >> 32); }
static uint32_t rbelow(uint32_t n) { return (uint32_t)(((uint64_t)r32() * n) >> 32); } /* 0..n-1 */

static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static float flt(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
static int same(float got, float want) {
    return memcmp(&got, &want, sizeof got) == 0 || (got != got && want != want);
}
/* a float from sign (bit 0), biased exponent 0..255 and the 23 stored mantissa bits */
static uint32_t mk(uint32_t sign, uint32_t e, uint32_t m) { return (sign & 1u) << 31 | (e & 255u) << 23 | (m & 0x7FFFFFu); }
static uint32_t rnormal_e(uint32_t e) { return mk(r32(), e, r32()); }
static uint32_t clampe(int32_t e) { return e < 1 ? 1u : e > 254 ? 254u : (uint32_t)e; }

static uint64_t n_mul, n_add, n_i2f;

static void fail(const char *op, uint32_t ua, uint32_t ub, float got, float want) {
    printf("%s mismatch: a=0x%08X b=0x%08X got 0x%08X want 0x%08X\n", op, (unsigned)ua, (unsigned)ub,
           (unsigned)bits(got), (unsigned)bits(want));
    exit(1);
}

static void t_mul(uint32_t ua, uint32_t ub) {
    float a = flt(ua), b = flt(ub), got = tl_fmul_i(a, b), want = a * b;
    n_mul++;
    if (!same(got, want)) fail("fmul", ua, ub, got, want);
}
static void t_add1(uint32_t ua, uint32_t ub) {
    float a = flt(ua), b = flt(ub), got = tl_fadd_i(a, b), want = a + b;
    n_add++;
    if (!same(got, want)) fail("fadd", ua, ub, got, want);
}
static void t_add(uint32_t ua, uint32_t ub) { /* a + b, b + a, a - b, -b + a */
    t_add1(ua, ub);
    t_add1(ub, ua);
    t_add1(ua, ub ^ 0x80000000u);
    t_add1(ub ^ 0x80000000u, ua);
}
static void t_i2f(int32_t v) {
    float got = tl_i2f_i(v), want = (float)v;
    n_i2f++;
    if (!same(got, want)) fail("i2f", (uint32_t)v, 0u, got, want);
}

/* special and boundary operands: zeros, subnormals, min/max normal, inf, NaNs */
static const uint32_t SPECIAL[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x00400000u,
                                   0x00800000u, 0x80800001u, 0x7F7FFFFFu, 0xFF7FFFFEu, 0x7F800000u,
                                   0xFF800000u, 0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x3F800000u};
#define NSPECIAL (sizeof SPECIAL / sizeof SPECIAL[0])

/* a significand (stored 23 bits) whose lowest set bit is j (0..23; 23 means 1.0) */
static uint32_t mant_low(uint32_t j) { return j >= 23u ? 0u : ((r32() | 1u) << j) & 0x7FFFFFu; }

static void test_fmul(void) {
    for (uint32_t i = 0; i < 32000000u; i++) t_mul(r32(), r32()); /* every class */
    for (uint32_t i = 0; i < 32000000u; i++) { /* normals; result exponents over the whole range */
        uint32_t ea = 1u + rbelow(254u);
        int32_t er = (i & 3u) == 0 ? (int32_t)rbelow(300u) - 20 /* anywhere */
                   : (i & 3u) == 1 ? (int32_t)rbelow(8u) - 3   /* near the subnormal boundary */
                   : (i & 3u) == 2 ? 250 + (int32_t)rbelow(7u) /* near overflow */
                                   : 60 + (int32_t)rbelow(140u);
        t_mul(rnormal_e(ea), rnormal_e(clampe(er + 127 - (int32_t)ea)));
    }
    for (uint32_t i = 0; i < 32000000u; i++) { /* product's lowest set bit at 20..25: exact, ties, near ties */
        uint32_t ja = rbelow(24u), sum = 20u + rbelow(6u), jb = sum > ja ? sum - ja : 0u;
        if (jb > 23u) jb = 23u;
        uint32_t ma = mant_low(ja), mb = mant_low(jb);
        if ((i & 7u) == 7u) mb ^= 1u; /* just off the tie */
        uint32_t ea = 1u + rbelow(254u);
        int32_t er = (i & 1u) ? (int32_t)rbelow(260u) - 2 : 124 + (int32_t)rbelow(8u);
        if ((i & 15u) == 2u) er = 253 + (int32_t)rbelow(3u);
        t_mul(mk(r32(), ea, ma), mk(r32(), clampe(er + 127 - (int32_t)ea), mb));
    }
    for (uint32_t i = 0; i < 4000000u; i++) /* a special operand */
        t_mul(SPECIAL[rbelow(NSPECIAL)], (i & 1u) ? r32() : SPECIAL[rbelow(NSPECIAL)]);
}

static void test_fadd(void) { /* 4 checks per pair */
    for (uint32_t i = 0; i < 8000000u; i++) t_add(r32(), r32()); /* every class */
    for (uint32_t i = 0; i < 8000000u; i++) { /* exponents 0..30 apart, anywhere in the range */
        uint32_t d = rbelow(31u), ea = (i & 3u) == 0 ? 1u + rbelow(5u) : (i & 3u) == 1 ? 250u + rbelow(5u) : 1u + rbelow(254u);
        t_add(rnormal_e(ea), rnormal_e(clampe((int32_t)ea - (int32_t)d)));
    }
    for (uint32_t i = 0; i < 8000000u; i++) { /* b's lowest bit near a's round bit: ties and near ties */
        uint32_t d = rbelow(28u), ea = (i & 7u) == 0 ? 1u + rbelow(4u) : (i & 7u) == 1 ? 252u + rbelow(3u) : d + 1u + rbelow(254u - d);
        int32_t j = (int32_t)d - 3 + (int32_t)rbelow(6u);
        uint32_t ma = (i & 1u) ? r32() : mant_low(rbelow(24u));
        t_add(mk(r32(), ea, ma), mk(r32(), clampe((int32_t)ea - (int32_t)d), mant_low(j < 0 ? 0u : (uint32_t)j)));
    }
    for (uint32_t i = 0; i < 4000000u; i++) { /* cancellation: b close to a (or equal) */
        uint32_t ua = rnormal_e((i & 3u) == 0 ? 1u + rbelow(30u) : 1u + rbelow(254u));
        uint32_t ub = (i & 7u) == 0 ? ua : ua ^ (r32() >> (9u + rbelow(23u)));
        if ((i & 1u) && (ub & 0x7F800000u) != 0x7F800000u) ub += 0x00800000u; /* exponent one above */
        t_add(ua, ub);
    }
    for (uint32_t i = 0; i < 1000000u; i++) /* a special operand */
        t_add(SPECIAL[rbelow(NSPECIAL)], (i & 1u) ? r32() : SPECIAL[rbelow(NSPECIAL)]);
}

static void test_i2f(void) {
    static const int32_t EDGE[] = {0, 1, -1, 2, -2, INT32_MAX, INT32_MIN, INT32_MIN + 1, INT32_MAX - 1,
                                   16777215, 16777216, 16777217, 16777218, 16777219, -16777215, -16777216,
                                   -16777217, -16777218, -16777219, 33554431, 33554433, 33554435};
    for (uint32_t i = 0; i < sizeof EDGE / sizeof EDGE[0]; i++) t_i2f(EDGE[i]);
    for (int32_t k = 0; k < 32; k++) /* around every power of two */
        for (int64_t j = -2000; j <= 2000; j++) {
            int64_t v = ((int64_t)1 << k) + j;
            if (v <= INT32_MAX) t_i2f((int32_t)v);
            if (-v >= INT32_MIN) t_i2f((int32_t)-v);
        }
    for (uint32_t i = 0; i < 60000000u; i++) t_i2f((int32_t)r32()); /* uniform: mostly 2^30..2^31 */
    for (uint32_t i = 0; i < 30000000u; i++) { /* every bit length */
        uint32_t u = r32() >> rbelow(32u);
        t_i2f((i & 1u) ? (int32_t)u : (int32_t)(0u - u));
    }
    for (uint32_t i = 0; i < 10000000u; i++) { /* ties (and +-1 off) at every rounding position */
        uint32_t s = 1u + rbelow(7u), m = (r32() >> 8) | 0x800000u;
        uint32_t u = m << s | 1u << (s - 1u);
        u += (uint32_t)(i % 3u) - 1u;
        t_i2f((i & 4u) ? (int32_t)u : (int32_t)(0u - u));
    }
}

int main(void) {
    test_fmul();
    printf("fmul: %llu cases, 0 mismatches\n", (unsigned long long)n_mul);
    test_fadd();
    printf("fadd: %llu cases, 0 mismatches\n", (unsigned long long)n_add);
    test_i2f();
    printf("i2f: %llu cases, 0 mismatches\n", (unsigned long long)n_i2f);
    return 0;
}
