/* quantize.c — the MLX quantizer; the rules are in quantize.h. */
#include "quant/quantize.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "quant/qkern.h"
#include "quant/quant.h"

static const char *const DEV_NAMES[QDEV_COUNT] = {"cpu", "metal", "metal-legacy"};

const char *qdevice_name(qdevice d) { return (d >= 0 && d < QDEV_COUNT) ? DEV_NAMES[d] : "unknown"; }

/* ---- element encoders ------------------------------------------------------ */

uint8_t quant_e4m3_encode(float x) {
    if (isnan(x)) return 0x7e;
    return f32_to_e4m3(x); /* RNE, saturating to 0x7E with sign, subnormals, sign kept at 0 */
}

uint8_t quant_fp4_encode(float x, qdevice dev) {
    float a = fabsf(x);
    uint8_t c;
    if (dev == QDEV_CPU) {
        /* argmin |x - LUT| with the first minimum winning: ties go to the smaller
         * magnitude, and the sign only survives on a non-zero magnitude. */
        if (isnan(x)) return 0;
        c = a <= 0.25f   ? 0
            : a <= 0.75f ? 1
            : a <= 1.25f ? 2
            : a <= 1.75f ? 3
            : a <= 2.5f  ? 4
            : a <= 3.5f  ? 5
            : a <= 5.0f  ? 6
                         : 7;
        return (uint8_t)(c | (x < 0.0f && c != 0 ? 8 : 0));
    }
    /* Metal fp4_e2m1: ties to even mantissa, sign from the sign bit. */
    if (isnan(x)) return 0x7;
    c = a > 5.0f     ? 7
        : a >= 3.5f  ? 6
        : a > 2.5f   ? 5
        : a >= 1.75f ? 4
        : a > 1.25f  ? 3
        : a >= 0.75f ? 2
        : a > 0.25f  ? 1
                     : 0;
    return (uint8_t)(c | (signbit(x) ? 8 : 0));
}

/* ---- helpers ---------------------------------------------------------------- */

/* Round an f32 to dt and back: the value an MLX array of dtype dt holds. */
static inline float round_to(dtype dt, float v) {
    switch (dt) {
    case DT_BF16: return bf16_to_f32(f32_to_bf16(v));
    case DT_F16: return f16_to_f32(f32_to_f16(v));
    default: return v;
    }
}

static inline void store_scale(void *p, dtype dt, int64_t i, float v) {
    uint8_t *o = (uint8_t *)p;
    if (dt == DT_F32) {
        memcpy(o + 4 * i, &v, 4);
        return;
    }
    uint16_t h = dt == DT_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    memcpy(o + 2 * i, &h, 2);
}

/* Smallest integer e with s <= 2^e, for s > 0 finite. */
static inline int ceil_log2_exact(float s) {
    int ex;
    float m = frexpf(s, &ex); /* s = m * 2^ex, m in [0.5, 1) */
    return m == 0.5f ? ex - 1 : ex;
}

/* Packs n codes (n a multiple of 8) of `bits` bits into the row's bit stream. */
static void pack_codes(const uint8_t *codes, int64_t n, int bits, uint8_t *out) {
    for (int64_t i = 0; i < n; i += 8) {
        uint64_t v = 0;
        for (int j = 0; j < 8; j++) v |= (uint64_t)codes[i + j] << (bits * j);
        memcpy(out + (i / 8) * bits, &v, (size_t)bits);
    }
}

/* ---- one group ------------------------------------------------------------ */

static void affine_group(const float *w, int gs, int bits, qdevice dev, uint8_t *q, float *scale_out, float *bias_out) {
    const float n_bins = (float)((1 << bits) - 1), eps = 1e-7f;
    float w_min = w[0], w_max = w[0];
    for (int i = 1; i < gs; i++) {
        if (w[i] < w_min) w_min = w[i];
        if (w[i] > w_max) w_max = w[i];
    }
    if (dev != QDEV_CPU && w_max < 0.0f) w_max = 0.0f; /* Metal starts its max at 0 */
    float scale, bias;
    if (bits == 1) {
        scale = fmaxf(w_max - w_min, eps);
        bias = w_min;
    } else {
        scale = fmaxf((w_max - w_min) / n_bins, eps);
        int side = fabsf(w_min) > fabsf(w_max);
        if (!side) scale = -scale;
        float edge = side ? w_min : w_max;
        float q0 = dev == QDEV_CPU ? rintf(edge / scale) : roundf(edge / scale);
        if (q0 != 0.0f) {
            scale = edge / q0;
            bias = edge;
        } else {
            bias = 0.0f;
        }
    }
    for (int i = 0; i < gs; i++) {
        float v = (w[i] - bias) / scale;
        v = dev == QDEV_CPU ? rintf(v) : roundf(v);
        if (!(v > 0.0f)) v = 0.0f; /* also NaN -> 0 */
        if (v > n_bins) v = n_bins;
        q[i] = (uint8_t)v;
    }
    *scale_out = scale;
    *bias_out = bias;
}

static uint8_t mx_group(const float *w, int gs, int bits, qdevice dev, dtype T, uint8_t *q) {
    const float maxval = bits == 4 ? 6.0f : 448.0f;
    float amax = 0.0f;
    for (int i = 0; i < gs; i++) amax = fmaxf(amax, fabsf(w[i]));
    int e;
    uint8_t byte;
    if (dev == QDEV_CPU) {
        float s = round_to(T, amax / maxval);
        e = s == 0.0f ? 0 : ceil_log2_exact(s);
        byte = (uint8_t)((e + 127) & 0xff);
        float p = round_to(T, ldexpf(1.0f, e));
        for (int i = 0; i < gs; i++) {
            float x = round_to(T, w[i] / p);
            q[i] = bits == 4 ? quant_fp4_encode(x, dev) : quant_e4m3_encode(x);
        }
        return byte;
    }
    float s = amax / maxval;
    if (!isfinite(s)) {
        e = 128; /* byte 0xFF */
    } else if (s == 0.0f) {
        e = -127;
    } else {
        e = dev == QDEV_METAL ? ceil_log2_exact(s) : (int)roundf(log2f(s));
        if (e < -127) e = -127;
        if (e > 127) e = 127;
    }
    byte = (uint8_t)(e + 127);
    float inv = 1.0f / qk_e8m0(byte);
    for (int i = 0; i < gs; i++) {
        float x = w[i] * inv;
        q[i] = bits == 4 ? quant_fp4_encode(x, dev) : quant_e4m3_encode(x);
    }
    return byte;
}

static uint8_t nv_group(const float *w, int gs, qdevice dev, dtype T, uint8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < gs; i++) amax = fmaxf(amax, fabsf(w[i]));
    if (dev == QDEV_CPU) {
        uint8_t byte = quant_e4m3_encode(round_to(T, amax / 6.0f));
        float sv = round_to(T, QK_E4M3_LUT[byte]);
        for (int i = 0; i < gs; i++) q[i] = quant_fp4_encode(sv == 0.0f ? 0.0f : round_to(T, w[i] / sv), dev);
        return byte;
    }
    uint8_t byte = quant_e4m3_encode(amax / 6.0f);
    float sv = QK_E4M3_LUT[byte];
    float inv = sv == 0.0f ? 0.0f : 1.0f / sv;
    for (int i = 0; i < gs; i++) q[i] = quant_fp4_encode(w[i] * inv, dev);
    return byte;
}

/* ---- rows ------------------------------------------------------------------- */

typedef struct qz_ctx {
    qformat fmt;
    qdevice dev;
    const uint8_t *w;
    dtype w_dt, scale_dt;
    int64_t rows, cols, rows_per_task;
    uint8_t *wq, *scales, *biases;
} qz_ctx;

static void quantize_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    const qz_ctx *c = vctx;
    const int gs = c->fmt.group_size, bits = c->fmt.bits;
    const int64_t G = c->cols / gs;
    const size_t row_bytes = (size_t)(c->cols * bits / 8), wes = dtype_size(c->w_dt);
    float wf[128];
    uint8_t q[128];
    int64_t r1 = (task + 1) * c->rows_per_task < c->rows ? (task + 1) * c->rows_per_task : c->rows;
    for (int64_t r = task * c->rows_per_task; r < r1; r++) {
        const uint8_t *wrow = c->w + (size_t)r * (size_t)c->cols * wes;
        uint8_t *orow = c->wq + (size_t)r * row_bytes;
        for (int64_t g = 0; g < G; g++) {
            for (int i = 0; i < gs; i++) wf[i] = load_as_f32(wrow, c->w_dt, (size_t)(g * gs + i));
            int64_t si = r * G + g;
            switch (c->fmt.mode) {
            case QMODE_AFFINE: {
                float s, b;
                affine_group(wf, gs, bits, c->dev, q, &s, &b);
                store_scale(c->scales, c->scale_dt, si, s);
                store_scale(c->biases, c->scale_dt, si, b);
                break;
            }
            case QMODE_NVFP4: c->scales[si] = nv_group(wf, gs, c->dev, c->w_dt, q); break;
            default: c->scales[si] = mx_group(wf, gs, bits, c->dev, c->w_dt, q); break;
            }
            pack_codes(q, gs, bits, orow + (size_t)(g * gs) * bits / 8);
        }
    }
}

optiq_status quantize_rows(thread_pool *pool, qformat fmt, qdevice dev, const void *w, dtype w_dt, int64_t rows,
                           int64_t cols, void *wq, void *scales, void *biases, dtype scale_dt, optiq_error *err) {
    if (!qtraits_find(fmt))
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "quantize: unsupported format %s bits %d group size %d",
                       qmode_name(fmt.mode), fmt.bits, fmt.group_size);
    if (dev < 0 || dev >= QDEV_COUNT)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: unknown device %d", (int)dev);
    if (w_dt != DT_F32 && w_dt != DT_BF16 && w_dt != DT_F16)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: weights must be F32, BF16 or F16, found %s",
                       dtype_name(w_dt));
    if (rows < 0 || cols <= 0 || cols % fmt.group_size != 0 || (cols * fmt.bits) % 32 != 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "quantize: %lld columns is not a positive multiple of the group size %d (and of 32/bits)",
                       (long long)cols, fmt.group_size);
    if (fmt.mode == QMODE_AFFINE) {
        if (scale_dt != DT_F32 && scale_dt != DT_BF16 && scale_dt != DT_F16)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: affine scales must be F32, BF16 or F16, found %s",
                           dtype_name(scale_dt));
        if (!biases && rows > 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: affine needs a biases buffer");
    } else if (scale_dt != DT_U8) {
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: %s scales are U8, asked for %s", qmode_name(fmt.mode),
                       dtype_name(scale_dt));
    }
    if (rows == 0) return OPTIQ_OK;
    if (!w || !wq || !scales) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantize: NULL buffer");
    qz_ctx c = {fmt, dev, w, w_dt, scale_dt, rows, cols, 0, wq, scales, fmt.mode == QMODE_AFFINE ? biases : NULL};
    int64_t tasks = 4 * (int64_t)pool_threads(pool);
    c.rows_per_task = (rows + tasks - 1) / tasks;
    pool_run(pool, (rows + c.rows_per_task - 1) / c.rows_per_task, quantize_task, &c);
    return OPTIQ_OK;
}
