/* intmode.c - BLOB.md "Integer mode": iquant, integer SwiGLU, the tables. The matmul accumulation is
   in kernels.c (it shares the exact group sums), the attention in transformer.c. */
#include "intmode.h"

#include "softf.h"

float tl_pow2f(int32_t k) {
    if (k < -126) return 0.0f;
    uint32_t bits = k > 127 ? 0x7F800000u : (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bit length of a byte (rv32imc has no clz; a table lookup beats a halving search) */
const uint8_t TL_BITLEN8[256] = {
    0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
};

static uint32_t bitlen32(uint32_t v) { /* 0..32 */
    if (v >> 16) return v >> 24 ? 24u + TL_BITLEN8[v >> 24] : 16u + TL_BITLEN8[v >> 16];
    return v >> 8 ? 8u + TL_BITLEN8[v >> 8] : TL_BITLEN8[v];
}

float tl_i64_scaled(int64_t acc, int32_t k) {
#if defined(__SSE2__) && !defined(TL_NO_SIMD)
    return (float)acc * tl_pow2f(k); /* x86-64: one cvtsi2ss + one mulss */
#else
    return tl_i64_scaled_int(acc, k);
#endif
}

/* The bits of (float)acc * 2^k through integer operations: |acc| normalized to a word v in
   [2^31, 2^32) (the bits below it ORed into bit 0: they only count as sticky), then rounded to 24
   bits, nearest even, by softf.h's tl_sf_pack (a rounding carry lands in the exponent field). A
   result exponent outside 1..253 (subnormal, or near overflow) takes the two float operations
   themselves. 32-bit words only: on rv32 a 64-bit shift or compare is several instructions. */
float tl_i64_scaled_int(int64_t acc, int32_t k) {
    if (acc == 0 || k < -126 || k > 127) return (float)acc * tl_pow2f(k);
    uint64_t mag = acc < 0 ? 0u - (uint64_t)acc : (uint64_t)acc;
    uint32_t hi = (uint32_t)(mag >> 32), v = (uint32_t)mag;
    int32_t len;
    if (hi) { /* the top 32 bits, the rest only as a sticky bit 0: rounds like the whole */
        int32_t s = (int32_t)bitlen32(hi);
        v = s == 32 ? hi | (v != 0u) : (hi << (32 - s)) | (v >> s) | ((v << (32 - s)) != 0u);
        len = 32 + s;
    } else {
        len = (int32_t)bitlen32(v);
        v <<= 32 - len;
    }
    int32_t e = len + 126 + k; /* biased exponent before rounding */
    if (e < 1 || e > 253) return (float)acc * tl_pow2f(k);
    uint32_t se = (acc < 0 ? 256u : 0u) | (uint32_t)(e - 1);
    return tl_sf_pack(se, (v >> 1) | (v & 1u)); /* [2^30, 2^31), sticky kept */
}

/* round(127 * mag / top) for 0 <= mag <= top, 2^15 <= top < 2^16, with r = floor(127 * 2^23 / top):
   (mag * r + 2^22) >> 23 (all < 2^31). */
static inline int32_t qcore(uint32_t mag, uint32_t r) { return (int32_t)((mag * r + (1u << 22)) >> 23); }
#define QNUM 1065353216u /* 127 * 2^23 */

/* a / 127.0f * 2^-k (k = 0 or 15) for a normal a > 0 with bits u, correctly rounded like the float
   division, through one integer division: N = M(a) * 2^7 in [2^30, 2^31), Q = N / 127 has 24 or 25
   bits, the remainder decides the rounding (127 is odd: no exact tie from it). A result below the
   normal range takes the float division itself. */
static inline float div127(uint32_t u, int32_t k) {
#ifdef TL_SOFT_FLOAT
    int32_t e = (int32_t)(u >> 23) - k; /* a's exponent field, less k */
    if (e >= 8 && (u >> 31) == 0u && (u >> 23) < 255u) {
        uint32_t n = ((u & 0x7FFFFFu) | 0x800000u) << 7, q = n / 127u, r = n - 127u * q;
        if (q < 1u << 24) /* 24 bits: the rest r / 127 rounds up from 64 / 127 */
            return tl_sf_float(((uint32_t)(e - 8) << 23) + q + (r >= 64u));
        /* 25 bits: bit 0 is the round bit, r the sticky part; ties to even */
        return tl_sf_float(((uint32_t)(e - 7) << 23) + (q >> 1) + ((q & 1u) & ((r != 0u) | ((q >> 1) & 1u))));
    }
#endif
    return k ? tl_sf_float(u) / 4161536.0f : tl_sf_float(u) / 127.0f;
}

void tl_iquant(int8_t *q, float *s, const float *x, uint32_t n, uint32_t group) {
    for (uint32_t g = 0, start = 0; start < n; g++, start += group) {
        uint32_t end = start + group < n ? start + group : n, a = 0;
        for (uint32_t j = start; j < end; j++) {
            uint32_t m = tl_fbits(x[j]) & 0x7FFFFFFFu;
            if (m > a) a = m;
        }
        if (a < 0x800000u) { /* zero or subnormal max: the group quantizes to 0 */
            s[g] = 0.0f;
            memset(q + start, 0, end - start);
            continue;
        }
        s[g] = div127(a, 0); /* amax / 127.0f, amax the float with bits a */
        int32_t ea = (int32_t)(a >> 23);
        uint32_t r = QNUM / (((a & 0x7FFFFFu) | 0x800000u) >> 8);
        for (uint32_t j = start; j < end; j++) {
            uint32_t u = tl_fbits(x[j]);
            int32_t sh = ea - tl_fexp(u) + 8;
            uint32_t mag = sh >= 32 ? 0u : tl_fmant(u) >> sh;
            int32_t k = qcore(mag, r);
            q[j] = (int8_t)((u >> 31) ? -k : k);
        }
    }
}

void tl_swiglu_int(tl_qvec *out, const float *hb, const float *hb2, uint32_t n) {
    uint32_t gs = out->group;
    int8_t qa[64], qb[64];
    out->n = n;
    out->t2_cols = 0;
    int32_t y[64];
    for (uint32_t g = 0, start = 0; start < n; g++, start += gs) {
        uint32_t len = start + gs <= n ? gs : n - start, top = 0;
        float sa, sb;
        tl_iquant(qa, &sa, hb + start, len, len);
        tl_iquant(qb, &sb, hb2 + start, len, len);
        uint32_t ua = tl_fbits(sa);
        int32_t la = (int32_t)tl_fm16(ua), sh = 134 - tl_fexp(ua);
        for (uint32_t j = 0; j < len; j++) {
            int32_t t = qa[j] * la, idx; /* |t| < 2^23; idx = floor(hb * 256) */
            if (sh >= 0)
                idx = tl_asr32(t, sh);
            else
                idx = t > 0 ? 4096 : t < 0 ? -4096 : 0;
            if (idx < -4096) idx = -4096;
            if (idx > 4095) idx = 4095;
            uint32_t u = (uint32_t)(idx + 4096), i = u >> 4, f = u & 15u;
            int32_t sig = TL_SIG_LUT[i] + (int32_t)(((uint32_t)(TL_SIG_LUT[i + 1] - TL_SIG_LUT[i]) * f) >> 4);
            y[j] = qa[j] * sig * qb[j]; /* |y| <= 127 * 32768 * 127 < 2^30 */
            uint32_t m = (uint32_t)(y[j] < 0 ? -y[j] : y[j]);
            if (m > top) top = m;
        }
        int8_t *q = out->q + start;
        if (top == 0) {
            out->s[g] = 0.0f;
            memset(q, 0, len);
            continue;
        }
        int32_t z = (int32_t)bitlen32(top) - 16; /* normalize top to [2^15, 2^16) */
        uint32_t r = QNUM / (z >= 0 ? top >> z : top << -z);
        for (uint32_t j = 0; j < len; j++) {
            uint32_t m = (uint32_t)(y[j] < 0 ? -y[j] : y[j]);
            int32_t k = qcore(z >= 0 ? m >> z : m << -z, r);
            q[j] = (int8_t)(y[j] < 0 ? -k : k);
        }
        out->s[g] = div127(tl_fbits(TL_FMUL(TL_I2F((int32_t)top), TL_FMUL(sa, sb))), 15); /* / (127 * 32768) */
    }
}

/* EXP2[b] = round(32768 * 2^(-b/256)), b = 0..255 (BLOB.md "integer softmax") */
const uint16_t TL_EXP2_LUT[256] = {
    32768, 32679, 32591, 32503, 32415, 32327, 32240, 32153, 32066, 31979, 31893, 31806, 31720, 31635, 31549, 31464,
    31379, 31294, 31209, 31125, 31041, 30957, 30873, 30790, 30706, 30623, 30541, 30458, 30376, 30293, 30212, 30130,
    30048, 29967, 29886, 29805, 29725, 29644, 29564, 29484, 29405, 29325, 29246, 29167, 29088, 29009, 28931, 28852,
    28774, 28697, 28619, 28542, 28464, 28388, 28311, 28234, 28158, 28082, 28006, 27930, 27855, 27779, 27704, 27629,
    27554, 27480, 27406, 27332, 27258, 27184, 27110, 27037, 26964, 26891, 26818, 26746, 26674, 26601, 26530, 26458,
    26386, 26315, 26244, 26173, 26102, 26031, 25961, 25891, 25821, 25751, 25681, 25612, 25543, 25474, 25405, 25336,
    25268, 25199, 25131, 25063, 24995, 24928, 24860, 24793, 24726, 24659, 24593, 24526, 24460, 24394, 24328, 24262,
    24196, 24131, 24066, 24001, 23936, 23871, 23806, 23742, 23678, 23614, 23550, 23486, 23423, 23359, 23296, 23233,
    23170, 23108, 23045, 22983, 22921, 22859, 22797, 22735, 22674, 22613, 22552, 22491, 22430, 22369, 22309, 22248,
    22188, 22128, 22068, 22009, 21949, 21890, 21831, 21772, 21713, 21654, 21595, 21537, 21479, 21421, 21363, 21305,
    21247, 21190, 21133, 21076, 21019, 20962, 20905, 20849, 20792, 20736, 20680, 20624, 20568, 20513, 20457, 20402,
    20347, 20292, 20237, 20182, 20127, 20073, 20019, 19965, 19911, 19857, 19803, 19750, 19696, 19643, 19590, 19537,
    19484, 19431, 19379, 19326, 19274, 19222, 19170, 19118, 19066, 19015, 18963, 18912, 18861, 18810, 18759, 18708,
    18658, 18607, 18557, 18507, 18457, 18407, 18357, 18308, 18258, 18209, 18160, 18110, 18061, 18013, 17964, 17915,
    17867, 17819, 17770, 17722, 17674, 17627, 17579, 17531, 17484, 17437, 17390, 17343, 17296, 17249, 17202, 17156,
    17109, 17063, 17017, 16971, 16925, 16879, 16834, 16788, 16743, 16697, 16652, 16607, 16562, 16518, 16473, 16428,
};

/* SIG[i] = round(32768 * sigmoid(-16 + i/16)), i = 0..512 (BLOB.md "integer SwiGLU") */
const uint16_t TL_SIG_LUT[513] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4,
    4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10,
    11, 12, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 28,
    30, 32, 34, 36, 38, 41, 43, 46, 49, 52, 56, 59, 63, 67, 72, 76,
    81, 86, 92, 98, 104, 111, 118, 125, 133, 142, 151, 161, 171, 182, 194, 206,
    219, 233, 248, 264, 281, 299, 318, 338, 360, 383, 407, 433, 461, 490, 521, 554,
    589, 627, 666, 708, 753, 800, 851, 904, 961, 1021, 1084, 1152, 1223, 1299, 1379, 1464,
    1554, 1649, 1750, 1856, 1969, 2088, 2213, 2346, 2486, 2633, 2789, 2952, 3124, 3306, 3496, 3696,
    3906, 4126, 4357, 4599, 4851, 5115, 5391, 5678, 5978, 6289, 6613, 6949, 7297, 7658, 8031, 8416,
    8813, 9221, 9641, 10072, 10513, 10964, 11424, 11894, 12371, 12856, 13348, 13845, 14347, 14852, 15361, 15872,
    16384, 16896, 17407, 17916, 18421, 18923, 19420, 19912, 20397, 20874, 21344, 21804, 22255, 22696, 23127, 23547,
    23955, 24352, 24737, 25110, 25471, 25819, 26155, 26479, 26790, 27090, 27377, 27653, 27917, 28169, 28411, 28642,
    28862, 29072, 29272, 29462, 29644, 29816, 29979, 30135, 30282, 30422, 30555, 30680, 30799, 30912, 31018, 31119,
    31214, 31304, 31389, 31469, 31545, 31616, 31684, 31747, 31807, 31864, 31917, 31968, 32015, 32060, 32102, 32141,
    32179, 32214, 32247, 32278, 32307, 32335, 32361, 32385, 32408, 32430, 32450, 32469, 32487, 32504, 32520, 32535,
    32549, 32562, 32574, 32586, 32597, 32607, 32617, 32626, 32635, 32643, 32650, 32657, 32664, 32670, 32676, 32682,
    32687, 32692, 32696, 32701, 32705, 32709, 32712, 32716, 32719, 32722, 32725, 32727, 32730, 32732, 32734, 32736,
    32738, 32740, 32742, 32743, 32745, 32746, 32747, 32749, 32750, 32751, 32752, 32753, 32754, 32755, 32756, 32756,
    32757, 32758, 32758, 32759, 32759, 32760, 32760, 32761, 32761, 32762, 32762, 32762, 32763, 32763, 32763, 32764,
    32764, 32764, 32764, 32765, 32765, 32765, 32765, 32765, 32766, 32766, 32766, 32766, 32766, 32766, 32766, 32766,
    32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767, 32767,
    32767, 32767, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768,
    32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768,
    32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768,
    32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768,
    32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768,
    32768,
};
