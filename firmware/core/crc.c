/* crc.c - CRCs. Boards: a nibble table (64 bytes, no mutable state). Hosts (x86-64, AArch64, unless
   TL_NO_SIMD): CRC-32 slice-by-8, 8 bytes a step through 8 KB of tables built on first use, and on
   x86-64 built with PCLMULQDQ + SSE4.1 (the host board's -march=native) carry-less-multiply
   folding, 64 bytes a step: the virtual board checks the whole blob at every start, and the nibble
   loop made that ~94 % of its start-up (1 MB f32 blob: 3.7 M instructions with slice-by-8, ~13 M
   with nibbles). Same polynomial, same results (tests/test_core.c checks all against one vector). */
#include "crc.h"

static const uint16_t crc16_nib[16] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
};

uint16_t tl_crc16_update(uint16_t crc, const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        crc = (uint16_t)((crc << 4) ^ crc16_nib[((crc >> 12) ^ (data[i] >> 4)) & 0xF]);
        crc = (uint16_t)((crc << 4) ^ crc16_nib[((crc >> 12) ^ (data[i] & 0xF)) & 0xF]);
    }
    return crc;
}

uint16_t tl_crc16(const uint8_t *data, size_t n) { return tl_crc16_update(0xFFFF, data, n); }

static const uint32_t crc32_nib[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

#if !defined(TL_NO_SIMD) && (defined(__x86_64__) || defined(__aarch64__))
#define TL_CRC_SLICE8 1
#include <string.h>
static uint32_t crc32_tab[8][256];

static void crc32_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
        crc32_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc32_tab[t][i] = (crc32_tab[t - 1][i] >> 8) ^ crc32_tab[0][crc32_tab[t - 1][i] & 0xFFu];
}
#endif

#if defined(TL_CRC_SLICE8) && defined(__x86_64__) && defined(__PCLMUL__) && defined(__SSE4_1__)
#include <smmintrin.h>
#include <wmmintrin.h>
/* Folding (Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", 2009), in the
   bit-reflected domain of zlib's CRC: four 128-bit lanes each carry their part of the remainder
   forward by 512 bits per step (x^(512+64) and x^512 mod P), then the lanes fold into one (x^(128+64),
   x^128), the 128 bits into 64 and 32, and a Barrett reduction by P gives the 32-bit CRC. The
   constants are those powers of x mod P, bit-reflected and shifted left by one (the paper's table). */
static uint32_t crc32_fold(uint32_t crc, const uint8_t *p, size_t n) { /* n >= 64, n % 16 == 0 */
    const __m128i k512 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k128 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k64 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i pmu = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i lo32 = _mm_setr_epi32(-1, 0, -1, 0);
#define LD(o) _mm_loadu_si128((const __m128i *)(const void *)(p + (o)))
#define FOLD(a, k, next) _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11)), next)
    __m128i a = _mm_xor_si128(LD(0), _mm_cvtsi32_si128((int)crc)), b = LD(16), c = LD(32), d = LD(48);
    for (p += 64, n -= 64; n >= 64; p += 64, n -= 64) {
        a = FOLD(a, k512, LD(0));
        b = FOLD(b, k512, LD(16));
        c = FOLD(c, k512, LD(32));
        d = FOLD(d, k512, LD(48));
    }
    a = FOLD(a, k128, b);
    a = FOLD(a, k128, c);
    a = FOLD(a, k128, d);
    for (; n >= 16; p += 16, n -= 16) a = FOLD(a, k128, LD(0));
#undef FOLD
#undef LD
    /* 128 -> 64 bits, then 64 -> 32 (+ the 32 bits above them) */
    a = _mm_xor_si128(_mm_srli_si128(a, 8), _mm_clmulepi64_si128(a, k128, 0x10));
    a = _mm_xor_si128(_mm_srli_si128(a, 4), _mm_clmulepi64_si128(_mm_and_si128(a, lo32), k64, 0x00));
    /* Barrett: q = floor(a * mu), crc = a - q * P, all carry-less */
    __m128i q = _mm_clmulepi64_si128(_mm_and_si128(a, lo32), pmu, 0x10);
    q = _mm_clmulepi64_si128(_mm_and_si128(q, lo32), pmu, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(a, q), 1);
}
#define TL_CRC_FOLD 1
#endif

uint32_t tl_crc32_update(uint32_t crc, const uint8_t *data, size_t n) {
    crc = ~crc;
#ifdef TL_CRC_FOLD
    if (n >= 64) {
        size_t m = n & ~(size_t)15;
        crc = crc32_fold(crc, data, m);
        data += m, n -= m;
    }
#endif
#ifdef TL_CRC_SLICE8
    if (crc32_tab[0][1] == 0) crc32_tables();
    for (; n >= 8; n -= 8, data += 8) { /* little-endian words: both hosts are */
        uint32_t lo, hi;
        memcpy(&lo, data, 4);
        memcpy(&hi, data + 4, 4);
        lo ^= crc;
        crc = crc32_tab[7][lo & 0xFFu] ^ crc32_tab[6][(lo >> 8) & 0xFFu] ^ crc32_tab[5][(lo >> 16) & 0xFFu] ^
              crc32_tab[4][lo >> 24] ^ crc32_tab[3][hi & 0xFFu] ^ crc32_tab[2][(hi >> 8) & 0xFFu] ^
              crc32_tab[1][(hi >> 16) & 0xFFu] ^ crc32_tab[0][hi >> 24];
    }
#endif
    for (size_t i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc32_nib[crc & 0xF];
        crc = (crc >> 4) ^ crc32_nib[crc & 0xF];
    }
    return ~crc;
}

uint32_t tl_crc32(const uint8_t *data, size_t n) { return tl_crc32_update(0, data, n); }
