/* resample.c — see resample.h. Names follow Pillow's Resample.c where the
 * arithmetic is copied from it, so the two can be read side by side. */
#include "vision/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 32 − 8 − 2: 8 bits of result, 2 bits of headroom for weights that overshoot. */
#define PRECISION_BITS 22

/* ---- coefficients ------------------------------------------------------- */

/* Keys' cubic convolution kernel with a = −0.5 (Pillow's bicubic_filter),
 * written with the same operations in the same order. */
static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct coeffs {
    int ksize;      /* taps reserved per output sample */
    int *bounds;    /* (out, 2): first source index, number of taps */
    int32_t *k;     /* (out, ksize): fixed-point weights, zero past the taps */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

/* Pillow's precompute_coeffs (box = [0, in_size]) followed by
 * normalize_coeffs_8bpc. */
static optiq_status coeffs_build(int in_size, int out_size, coeffs *c, optiq_error *err) {
    const double filter_support = 2.0;
    /* Pillow: (double)(float in1 − float in0) / outSize; exact below 2^24. */
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;

    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->k = calloc((size_t)out_size * (size_t)ksize, sizeof *c->k);
    double *w = malloc((size_t)ksize * sizeof *w);
    if (!c->bounds || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return err_set(err, OPTIQ_ERR_NOMEM, "resample: out of memory for %d x %d coefficients", out_size, ksize);
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* truncation toward zero, as Pillow */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double v = bicubic_filter((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        int32_t *k = c->k + (size_t)xx * (size_t)ksize;
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) w[x] /= ww;
            k[x] = w[x] < 0 ? (int32_t)(-0.5 + w[x] * (1 << PRECISION_BITS))
                            : (int32_t)(0.5 + w[x] * (1 << PRECISION_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return OPTIQ_OK;
}

/* Pillow's clip8: (acc >> 22) clamped to [0, 255]. Pillow's accumulator is an
 * int; a 64-bit one gives the same value whenever Pillow's does not overflow,
 * which it cannot for bicubic weights (|acc| < 2^21 + 255 · 1.3 · 2^22). */
static inline uint8_t clip8(int64_t acc) {
    if (acc < 0) return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* ---- passes ------------------------------------------------------------- */

/* out (rows, dw, ch) from source rows [row0, row0 + rows) of in (·, sw, ch). */
static void pass_horizontal(const uint8_t *in, int sw, int ch, int row0, int rows, const coeffs *c, uint8_t *out,
                            int dw) {
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *src = in + ((size_t)(yy + row0) * (size_t)sw) * (size_t)ch;
        uint8_t *dst = out + (size_t)yy * (size_t)dw * (size_t)ch;
        for (int xx = 0; xx < dw; xx++) {
            int xmin = c->bounds[2 * xx], xmax = c->bounds[2 * xx + 1];
            const int32_t *k = c->k + (size_t)xx * (size_t)c->ksize;
            for (int b = 0; b < ch; b++) {
                int64_t ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < xmax; x++) ss += (int64_t)src[(size_t)(x + xmin) * (size_t)ch + (size_t)b] * k[x];
                dst[(size_t)xx * (size_t)ch + (size_t)b] = clip8(ss);
            }
        }
    }
}

/* out (dh, w, ch) from in (·, w, ch); bounds are relative to in's first row. */
static void pass_vertical(const uint8_t *in, int w, int ch, const coeffs *c, uint8_t *out, int dh) {
    size_t stride = (size_t)w * (size_t)ch;
    for (int yy = 0; yy < dh; yy++) {
        int ymin = c->bounds[2 * yy], ymax = c->bounds[2 * yy + 1];
        const int32_t *k = c->k + (size_t)yy * (size_t)c->ksize;
        uint8_t *dst = out + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) ss += (int64_t)in[(size_t)(y + ymin) * stride + i] * k[y];
            dst[i] = clip8(ss);
        }
    }
}

/* ---- entry point -------------------------------------------------------- */

/* Pass order when both sides change (Pillow 13 ImagingResampleInner): the
 * vertical pass runs first when the height shrinks by more than twice as
 * many pixels as the width does; otherwise the horizontal pass runs first.
 * The 8-bit temporary between the passes makes the order visible in the
 * result. Found by comparing both orders with Pillow 13.0.0 on several
 * thousand random sizes, boundary cases (h − dh = 2(w − dw) ± 2) included. */
static int vertical_first(int sw, int sh, int dw, int dh) {
    return dh < sh && (int64_t)(sh - dh) > 2 * ((int64_t)sw - dw);
}

optiq_status resample_bicubic_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                                 optiq_error *err) {
    if (!src || !dst) return err_set(err, OPTIQ_ERR_INVALID_ARG, "resample: NULL image buffer");
    if (channels < 1 || channels > 4)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "resample: %d channels, expected 1 to 4", channels);
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > RESAMPLE_MAX_SIDE || sh > RESAMPLE_MAX_SIDE ||
        dw > RESAMPLE_MAX_SIDE || dh > RESAMPLE_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "resample: %dx%d -> %dx%d, expected sides in [1, %d]", sw, sh, dw,
                       dh, RESAMPLE_MAX_SIDE);

    int need_h = dw != sw, need_v = dh != sh;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)sw * (size_t)sh * (size_t)channels);
        return OPTIQ_OK;
    }

    coeffs cv = {0}, ch = {0};
    uint8_t *tmp = NULL;
    optiq_status st = OPTIQ_OK;
    if (need_v && (st = coeffs_build(sh, dh, &cv, err))) goto done;
    if (need_h && (st = coeffs_build(sw, dw, &ch, err))) goto done;

    if (need_h && need_v && vertical_first(sw, sh, dw, dh)) {
        tmp = malloc((size_t)sw * (size_t)dh * (size_t)channels);
        if (!tmp) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "resample: out of memory for a %dx%d temporary", sw, dh);
            goto done;
        }
        pass_vertical(src, sw, channels, &cv, tmp, dh);
        pass_horizontal(tmp, sw, channels, 0, dh, &ch, dst, dw);
    } else if (need_h && need_v) {
        /* Source rows the vertical pass reads: the horizontal pass covers only these. */
        int row_first = cv.bounds[0];
        int rows = cv.bounds[2 * dh - 2] + cv.bounds[2 * dh - 1] - row_first;
        tmp = malloc((size_t)dw * (size_t)rows * (size_t)channels);
        if (!tmp) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "resample: out of memory for a %dx%d temporary", dw, rows);
            goto done;
        }
        pass_horizontal(src, sw, channels, row_first, rows, &ch, tmp, dw);
        for (int i = 0; i < dh; i++) cv.bounds[2 * i] -= row_first;
        pass_vertical(tmp, dw, channels, &cv, dst, dh);
    } else if (need_h) {
        pass_horizontal(src, sw, channels, 0, sh, &ch, dst, dw);
    } else {
        pass_vertical(src, sw, channels, &cv, dst, dh);
    }

done:
    free(tmp);
    coeffs_free(&cv);
    coeffs_free(&ch);
    return st;
}
