/* dtype.c — see dtype.h. */
#include "base/dtype.h"

#include <math.h>

static const struct { const char *name; size_t size; } DT_INFO[DT_COUNT] = {
    [DT_INVALID] = {"INVALID", 0},
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2}, [DT_F64] = {"F64", 8},
    [DT_U8] = {"U8", 1}, [DT_I8] = {"I8", 1}, [DT_U16] = {"U16", 2}, [DT_I16] = {"I16", 2},
    [DT_U32] = {"U32", 4}, [DT_I32] = {"I32", 4}, [DT_U64] = {"U64", 8}, [DT_I64] = {"I64", 8},
    [DT_BOOL] = {"BOOL", 1},
    [DT_F8_E4M3] = {"F8_E4M3", 1}, [DT_F8_E5M2] = {"F8_E5M2", 1}, [DT_F8_E8M0] = {"F8_E8M0", 1},
};

size_t dtype_size(dtype dt) { return (dt > DT_INVALID && dt < DT_COUNT) ? DT_INFO[dt].size : 0; }

const char *dtype_name(dtype dt) { return (dt > DT_INVALID && dt < DT_COUNT) ? DT_INFO[dt].name : "INVALID"; }

dtype dtype_from_name(const char *s, size_t n) {
    for (int d = DT_INVALID + 1; d < DT_COUNT; d++)
        if (strlen(DT_INFO[d].name) == n && memcmp(DT_INFO[d].name, s, n) == 0) return (dtype)d;
    return DT_INVALID;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (man << 13));
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                   /* subnormal or zero in f16 */
        float v = f32_from_bits(a) * 16777216.0f;             /* exact scale by 2^24 */
        return (uint16_t)(sign | (uint32_t)lrintf(v));         /* current mode: RNE */
    }
    uint32_t r = a + 0x0fffu + ((a >> 13) & 1u) - 0x38000000u;
    return (uint16_t)(sign | (r >> 13));
}

float e4m3_to_f32(uint8_t b) {
    if ((b & 0x7f) == 0x7f) return NAN; /* MLX 0.32.4 decodes 0x7F / 0xFF as NaN */
    int s = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return s ? -v : v;
}

uint8_t f32_to_e4m3(float f) {
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    float a = fabsf(f);
    if (!(a < 464.0f)) return sign | 0x7e; /* saturate, NaN included */
    if (a < 0.015625f) {                    /* below 2^-6: subnormal grid of 2^-9 */
        long q = lrintf(a * 512.0f);        /* RNE */
        return sign | (uint8_t)q;           /* q == 8 is the smallest normal: same bits */
    }
    int e;
    float m = frexpf(a, &e);                /* a = m * 2^e, m in [0.5, 1) */
    long q = lrintf(m * 16.0f);             /* 4 significant bits: 1.mmm */
    if (q == 16) { q = 8; e++; }
    int be = e - 1 + 7;
    if (be > 15 || (be == 15 && q - 8 == 7)) return sign | 0x7e;
    return sign | (uint8_t)((be << 3) | (int)(q - 8));
}

float e8m0_to_f32(uint8_t b) {
    if (b == 255) return INFINITY;
    return ldexpf(1.0f, (int)b - 127);
}
