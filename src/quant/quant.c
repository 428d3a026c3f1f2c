/* quant.c — the format table, unpacking and dequantization; see quant.h. */
#include "quant/quant.h"

#include <math.h>
#include <string.h>

#include "quant/qkern.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the packed-code readers assume a little-endian host"
#endif

/* ---- element decoders ---------------------------------------------------- */

const float QFP4_VALUES[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

float qe4m3_value(uint8_t b) {
    if ((b & 0x7f) == 0x7f) return NAN; /* MLX 0.32.4: from_fp8(0x7F) is NaN */
    return e4m3_to_f32(b);
}

float qe8m0_value(uint8_t b) { return qk_e8m0(b); }

#define LUT16(f, o)                                                                                                \
    f(o + 0), f(o + 1), f(o + 2), f(o + 3), f(o + 4), f(o + 5), f(o + 6), f(o + 7), f(o + 8), f(o + 9), f(o + 10), \
        f(o + 11), f(o + 12), f(o + 13), f(o + 14), f(o + 15)
#define LUT256(f)                                                                                                   \
    LUT16(f, 0), LUT16(f, 16), LUT16(f, 32), LUT16(f, 48), LUT16(f, 64), LUT16(f, 80), LUT16(f, 96), LUT16(f, 112), \
        LUT16(f, 128), LUT16(f, 144), LUT16(f, 160), LUT16(f, 176), LUT16(f, 192), LUT16(f, 208), LUT16(f, 224),    \
        LUT16(f, 240)

/* Compile-time e4m3 decoding (same values as qe4m3_value; test_quant_kernels
 * checks every byte): e == 0 -> m * 2^-9, else (8 + m) * 2^(e - 10), all exact. */
#define E4M3_MAG(b)                                   \
    ((((b) >> 3) & 15) == 0 ? (float)((b)&7) / 512.0f \
                            : (float)(8 + ((b)&7)) * (float)(1 << (((b) >> 3) & 15)) / 1024.0f)
#define E4M3_VAL(b) (((b)&0x7f) == 0x7f ? NAN : ((b)&0x80 ? -E4M3_MAG(b) : E4M3_MAG(b)))
const float QK_E4M3_LUT[256] = {LUT256(E4M3_VAL)};

float qscale_value(const qweight *w, const void *p, int64_t i) {
    const uint8_t *b = (const uint8_t *)p;
    switch (w->fmt.mode) {
    case QMODE_AFFINE: return load_as_f32(p, w->scale_dtype, (size_t)i);
    case QMODE_NVFP4: return QK_E4M3_LUT[b[i]];
    default: return qk_e8m0(b[i]);
    }
}

/* ---- unpacking ----------------------------------------------------------- */

static inline unsigned code_at(const uint8_t *row, int64_t i, unsigned b) {
    int64_t bit = i * (int64_t)b, byte = bit >> 3;
    unsigned sh = (unsigned)(bit & 7), v = row[byte];
    if (sh + b > 8) v |= (unsigned)row[byte + 1] << 8; /* second byte only when the code straddles */
    return (v >> sh) & ((1u << b) - 1u);
}

/* 8 codes starting at a multiple of 8 are the low 8*b bits of the next b bytes. */
static inline __attribute__((always_inline)) void unpack_bits(const uint8_t *row, int64_t c0, int64_t n, uint8_t *o,
                                                              const unsigned b) {
    int64_t i = c0, end = c0 + n;
    while (i < end && (i & 7)) *o++ = (uint8_t)code_at(row, i++, b);
    const uint64_t mask = (1u << b) - 1u;
    for (; i + 8 <= end; i += 8, o += 8) {
        uint64_t v = 0;
        memcpy(&v, row + (i >> 3) * (int64_t)b, b);
        for (unsigned j = 0; j < 8; j++) o[j] = (uint8_t)((v >> (b * j)) & mask);
    }
    while (i < end) *o++ = (uint8_t)code_at(row, i++, b);
}

#define UNPACK_FN(B)                                                                     \
    static void unpack_b##B(const uint8_t *row, int64_t c0, int64_t n, uint8_t *codes) { \
        unpack_bits(row, c0, n, codes, B);                                               \
    }
UNPACK_FN(1)
UNPACK_FN(2)
UNPACK_FN(3)
UNPACK_FN(5)
UNPACK_FN(6)

static void unpack_b4(const uint8_t *row, int64_t c0, int64_t n, uint8_t *o) {
    int64_t i = c0, end = c0 + n;
    if (i & 1) {
        *o++ = row[i >> 1] >> 4;
        i++;
    }
    for (; i + 2 <= end; i += 2) {
        uint8_t v = row[i >> 1];
        *o++ = v & 15;
        *o++ = v >> 4;
    }
    if (i < end) *o = row[i >> 1] & 15;
}

static void unpack_b8(const uint8_t *row, int64_t c0, int64_t n, uint8_t *o) { memcpy(o, row + c0, (size_t)n); }

/* ---- the table ----------------------------------------------------------- */

static const qkern_level KERN_AFFINE_GENERIC[CPU_LEVEL_COUNT] = {
    [CPU_PORTABLE] = {qmm_portable, NULL},
    [CPU_AVX2] = {qmm_affine_u8_avx2, NULL},
    [CPU_AVX512] = {qmm_affine_u8_avx512, NULL},
};
static const qkern_level KERN_AFFINE4[CPU_LEVEL_COUNT] = {
    [CPU_PORTABLE] = {qmm_portable, NULL, qmm_q8n_portable, qprep_q8n_portable},
    [CPU_AVX2] = {qmm_affine4_avx2, qprep_nib16_avx2, qmm_q8n_avx2, qprep_q8n_avx2},
    [CPU_AVX512] = {qmm_affine4_avx512, qprep_nib32_avx512, qmm_q8n_vnni, qprep_q8n_vnni}, /* q8: with VNNI only */
};
static const qkern_level KERN_AFFINE8[CPU_LEVEL_COUNT] = {
    [CPU_PORTABLE] = {qmm_portable, NULL, qmm_q8b_portable, qprep_q8b_portable},
    [CPU_AVX2] = {qmm_affine8_avx2, NULL, qmm_q8b_avx2, qprep_q8b_avx2},
    [CPU_AVX512] = {qmm_affine8_avx512, NULL, qmm_q8b_vnni, qprep_q8b_vnni}, /* q8: with VNNI only */
};
static const qkern_level KERN_FP4[CPU_LEVEL_COUNT] = {
    [CPU_PORTABLE] = {qmm_portable, NULL},
    [CPU_AVX2] = {qmm_fp4_avx2, qprep_nib16_avx2},
    [CPU_AVX512] = {qmm_fp4_avx512, qprep_nib32_avx512},
};
static const qkern_level KERN_MXFP8[CPU_LEVEL_COUNT] = {
    [CPU_PORTABLE] = {qmm_portable, NULL},
    [CPU_AVX2] = {qmm_mxfp8_avx2, NULL},
    [CPU_AVX512] = {qmm_mxfp8_avx512, NULL},
};

static const qtraits TABLE[] = {
    {QMODE_AFFINE, 1, "affine1", 32, 128, unpack_b1, KERN_AFFINE_GENERIC},
    {QMODE_AFFINE, 2, "affine2", 32, 128, unpack_b2, KERN_AFFINE_GENERIC},
    {QMODE_AFFINE, 3, "affine3", 32, 128, unpack_b3, KERN_AFFINE_GENERIC},
    {QMODE_AFFINE, 4, "affine4", 32, 128, unpack_b4, KERN_AFFINE4},
    {QMODE_AFFINE, 5, "affine5", 32, 128, unpack_b5, KERN_AFFINE_GENERIC},
    {QMODE_AFFINE, 6, "affine6", 32, 128, unpack_b6, KERN_AFFINE_GENERIC},
    {QMODE_AFFINE, 8, "affine8", 32, 128, unpack_b8, KERN_AFFINE8},
    {QMODE_MXFP4, 4, "mxfp4", 32, 32, unpack_b4, KERN_FP4},
    {QMODE_MXFP8, 8, "mxfp8", 32, 32, unpack_b8, KERN_MXFP8},
    {QMODE_NVFP4, 4, "nvfp4", 16, 16, unpack_b4, KERN_FP4},
};

const qtraits *qtraits_find(qformat f) {
    int gs = f.group_size;
    if (gs <= 0 || (gs & (gs - 1)) != 0) return NULL;
    for (size_t i = 0; i < sizeof TABLE / sizeof TABLE[0]; i++) {
        const qtraits *t = &TABLE[i];
        if (t->mode == f.mode && t->bits == f.bits && gs >= t->min_group && gs <= t->max_group) return t;
    }
    return NULL;
}

/* ---- geometry and checks ------------------------------------------------- */

size_t qweight_scale_row_bytes(const qweight *w) {
    size_t es = w->fmt.mode == QMODE_AFFINE ? dtype_size(w->scale_dtype) : 1;
    return (size_t)qweight_groups(w) * es;
}

optiq_status qweight_check(const qweight *w, optiq_error *err) {
    if (!w) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized weight: NULL");
    qformat f = w->fmt;
    if (!qtraits_find(f))
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "quantized weight: unsupported format %s bits %d group size %d",
                       qmode_name(f.mode), f.bits, f.group_size);
    if (w->n_mats < 1 || w->rows < 0 || w->cols <= 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized weight: bad shape [%lld, %lld, %lld]",
                       (long long)w->n_mats, (long long)w->rows, (long long)w->cols);
    if (w->cols % f.group_size != 0 || (w->cols * f.bits) % 32 != 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "quantized weight: %lld columns is not a multiple of the group size %d (and of 32/bits)",
                       (long long)w->cols, f.group_size);
    if (f.mode == QMODE_AFFINE) {
        if (w->scale_dtype != DT_BF16 && w->scale_dtype != DT_F16 && w->scale_dtype != DT_F32)
            return err_set(err, OPTIQ_ERR_FORMAT, "quantized weight: affine scales must be BF16, F16 or F32, found %s",
                           dtype_name(w->scale_dtype));
        if (!w->biases) return err_set(err, OPTIQ_ERR_FORMAT, "quantized weight: affine format without biases");
    } else {
        dtype ok = f.mode == QMODE_NVFP4 ? DT_F8_E4M3 : DT_F8_E8M0;
        if (w->scale_dtype != DT_U8 && w->scale_dtype != ok)
            return err_set(err, OPTIQ_ERR_FORMAT, "quantized weight: %s scales must be U8, found %s",
                           qmode_name(f.mode), dtype_name(w->scale_dtype));
        if (w->biases) return err_set(err, OPTIQ_ERR_FORMAT, "quantized weight: %s has biases", qmode_name(f.mode));
    }
    if ((!w->w || !w->scales) && w->rows > 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized weight: missing data pointer");
    return OPTIQ_OK;
}

/* ---- dequantization ------------------------------------------------------ */

static inline const uint8_t *row_ptr(const qweight *w, int64_t row) {
    return (const uint8_t *)w->w + (size_t)row * qweight_row_bytes(w);
}
static inline const uint8_t *scale_row_ptr(const void *base, const qweight *w, int64_t row) {
    return (const uint8_t *)base + (size_t)row * qweight_scale_row_bytes(w);
}

void qunpack_codes(const qweight *w, int64_t row, int64_t c0, int64_t n, uint8_t *codes) {
    qtraits_find(w->fmt)->unpack(row_ptr(w, row), c0, n, codes);
}

enum { CHUNK = 256 };

/* Calls fn on runs of codes that lie in one group: (codes, n, group, offset in out). */
#define FOR_GROUP_RUNS(w, row, c0, n, ...)          \
    do {                                            \
        const qtraits *t_ = qtraits_find((w)->fmt); \
        const uint8_t *prow_ = row_ptr((w), (row)); \
        uint8_t codes_[CHUNK];                      \
        int64_t gs_ = (w)->fmt.group_size;          \
        for (int64_t i_ = 0; i_ < (n);) {           \
            int64_t c_ = (c0) + i_, g_ = c_ / gs_;  \
            int64_t len_ = (g_ + 1) * gs_ - c_;     \
            if (len_ > (n)-i_) len_ = (n)-i_;       \
            if (len_ > CHUNK) len_ = CHUNK;         \
            t_->unpack(prow_, c_, len_, codes_);    \
            const uint8_t *q = codes_;              \
            int64_t len = len_, g = g_, off = i_;   \
            __VA_ARGS__;                            \
            i_ += len_;                             \
        }                                           \
    } while (0)

void qdequant_f32(const qweight *w, int64_t row, int64_t c0, int64_t n, float *out) {
    const uint8_t *srow = scale_row_ptr(w->scales, w, row);
    switch (w->fmt.mode) {
    case QMODE_AFFINE: {
        const uint8_t *brow = scale_row_ptr(w->biases, w, row);
        FOR_GROUP_RUNS(w, row, c0, n, {
            float s = load_as_f32(srow, w->scale_dtype, (size_t)g), b = load_as_f32(brow, w->scale_dtype, (size_t)g);
            for (int64_t j = 0; j < len; j++) {
                float t = (float)q[j] * s; /* rounded, then the add rounds again: no FMA */
                out[off + j] = t + b;
            }
        });
        break;
    }
    case QMODE_MXFP8:
        FOR_GROUP_RUNS(w, row, c0, n, {
            float s = qk_e8m0(srow[g]);
            for (int64_t j = 0; j < len; j++) out[off + j] = QK_E4M3_LUT[q[j]] * s;
        });
        break;
    default: /* mxfp4, nvfp4 */
        FOR_GROUP_RUNS(w, row, c0, n, {
            float s = w->fmt.mode == QMODE_NVFP4 ? QK_E4M3_LUT[srow[g]] : qk_e8m0(srow[g]);
            for (int64_t j = 0; j < len; j++) out[off + j] = QFP4_VALUES[q[j]] * s;
        });
        break;
    }
}

/* f32 -> dt, rounding to nearest even; the result's bits stored at out[i]. */
static inline void store_as(void *out, dtype dt, int64_t i, float v) {
    uint8_t *o = (uint8_t *)out;
    if (dt == DT_F32) {
        memcpy(o + 4 * i, &v, 4);
        return;
    }
    uint16_t h = dt == DT_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    memcpy(o + 2 * i, &h, 2);
}

/* Round an f32 to dt and back (the value MLX holds in a dt variable). */
static inline float round_to(dtype dt, float v) {
    switch (dt) {
    case DT_BF16: return bf16_to_f32(f32_to_bf16(v));
    case DT_F16: return f16_to_f32(f32_to_f16(v));
    default: return v;
    }
}

dtype qdequant_mlx_default_dtype(const qweight *w) { return w->fmt.mode == QMODE_AFFINE ? w->scale_dtype : DT_BF16; }

optiq_status qdequant_mlx(const qweight *w, int64_t row, int64_t c0, int64_t n, dtype out_dt, void *out,
                          optiq_error *err) {
    if (out_dt != DT_BF16 && out_dt != DT_F16 && out_dt != DT_F32)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "dequantize: output dtype %s (expected BF16, F16 or F32)",
                       dtype_name(out_dt));
    if (row < 0 || row >= qweight_total_rows(w) || c0 < 0 || n < 0 || c0 + n > w->cols)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "dequantize: row %lld columns [%lld, %lld) outside [%lld, %lld]",
                       (long long)row, (long long)c0, (long long)(c0 + n), (long long)qweight_total_rows(w),
                       (long long)w->cols);
    const uint8_t *srow = scale_row_ptr(w->scales, w, row);
    if (w->fmt.mode == QMODE_AFFINE) {
        /* In the scale dtype T: t = T(q*s); out = T(t + b); then cast to out_dt. */
        dtype T = w->scale_dtype;
        const uint8_t *brow = scale_row_ptr(w->biases, w, row);
        FOR_GROUP_RUNS(w, row, c0, n, {
            float s = load_as_f32(srow, T, (size_t)g), b = load_as_f32(brow, T, (size_t)g);
            for (int64_t j = 0; j < len; j++) {
                float t = round_to(T, (float)q[j] * s);
                store_as(out, out_dt, off + j, round_to(T, t + b));
            }
        });
    } else {
        /* In the output dtype: out = T(T(value) * T(scale)). */
        int nv = w->fmt.mode == QMODE_NVFP4;
        int f8 = w->fmt.mode == QMODE_MXFP8;
        FOR_GROUP_RUNS(w, row, c0, n, {
            float s = round_to(out_dt, nv ? QK_E4M3_LUT[srow[g]] : qk_e8m0(srow[g]));
            for (int64_t j = 0; j < len; j++) {
                float v = round_to(out_dt, f8 ? QK_E4M3_LUT[q[j]] : QFP4_VALUES[q[j]]);
                store_as(out, out_dt, off + j, v * s);
            }
        });
    }
    return OPTIQ_OK;
}

optiq_status qdequant_gather_f32(const qweight *w, int64_t mat, const int32_t *ids, int64_t n_ids, float *out,
                                 optiq_error *err) {
    if (mat < 0 || mat >= w->n_mats)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "embedding lookup: matrix %lld outside [0, %lld)", (long long)mat,
                       (long long)w->n_mats);
    for (int64_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= w->rows)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "embedding lookup: id %d at position %lld outside [0, %lld)",
                           ids[i], (long long)i, (long long)w->rows);
    for (int64_t i = 0; i < n_ids; i++) qdequant_f32(w, mat * w->rows + ids[i], 0, w->cols, out + i * w->cols);
    return OPTIQ_OK;
}
