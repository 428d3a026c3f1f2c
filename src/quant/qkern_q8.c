/*
 * qkern_q8.c — the int8-activation path, portable reference (layout and
 * semantics in qkern.h): activation preparation, shared by every level, and
 * the reference kernels the VNNI ones are tested against.
 */
#include <math.h>

#include "quant/qkern.h"

/* The two int8 codes (natural order) and per-32-column scales d of x. */
static void q8_blocks(const float *x, int64_t K, int8_t *q1, int8_t *q2, float *d) {
    for (int64_t b = 0; b < K / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = fabsf(xb[j]);
            amax = v > amax ? v : amax;
        }
        float db = amax / 127.0f;
        float inv = amax > 0.0f ? 127.0f / amax : 0.0f, inv2 = inv * 256.0f;
        d[b] = db;
        for (int j = 0; j < 32; j++) {
            float v = nearbyintf(xb[j] * inv); /* round half to even */
            v = v < -127.0f ? -127.0f : v > 127.0f ? 127.0f : v;
            float r = nearbyintf((xb[j] - db * v) * inv2);
            r = r < -127.0f ? -127.0f : r > 127.0f ? 127.0f : r;
            q1[b * 32 + j] = (int8_t)v;
            q2[b * 32 + j] = (int8_t)r;
        }
    }
}

void qprep_q8n_portable(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    int8_t q1[128], q2[128];
    float d[4];
    for (int64_t c0 = 0; c0 < K; c0 += 128) {
        int64_t L = K - c0 < 128 ? K - c0 : 128;
        q8_blocks(x + c0, L, q1, q2, d);
        for (int64_t j = 0; j < L / 2; j++) {
            o1[c0 + j] = q1[2 * j], o1[c0 + L / 2 + j] = q1[2 * j + 1];
            o2[c0 + j] = q2[2 * j], o2[c0 + L / 2 + j] = q2[2 * j + 1];
        }
        for (int64_t l = 0; l < L / 8; l++) ls[c0 / 8 + l] = d[l / 4] / 256.0f;
    }
}

void qprep_q8b_portable(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    float d[4];
    for (int64_t c0 = 0; c0 < K; c0 += 128) {
        int64_t L = K - c0 < 128 ? K - c0 : 128;
        q8_blocks(x + c0, L, o1 + c0, o2 + c0, d);
        for (int64_t l = 0; l < L / 4; l++) ls[c0 / 4 + l] = d[l / 8] / 256.0f;
    }
}

/* One weight row: per lane (8 columns for 4-bit, 4 for 8-bit) the exact
 * integer 256 Σ c q1 + Σ c q2, scaled by (d / 256) * s_group in f32 into 16
 * lane accumulators; then the bias terms; then the lane sum. */
static void q8_body(const qmm_args *a, int bits) {
    const int gs = a->gs, mb = a->mb;
    const int64_t K = a->K, G = K / gs;
    const int chunk = bits == 4 ? 128 : 64, lw = bits == 4 ? 8 : 4;
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = a->b + (size_t)r * a->s_stride;
        for (int i = 0; i < mb; i++) {
            const int8_t *xq = (const int8_t *)a->x[i], *xq2 = xq + K;
            const float *xl = (const float *)((const uint8_t *)a->x[i] + Q8_SCALES_OFF(K));
            float acc[16] = {0};
            for (int64_t c0 = 0; c0 < K; c0 += chunk) {
                int64_t L = K - c0 < chunk ? K - c0 : chunk;
                for (int64_t l = 0; l < L / lw; l++) {
                    int32_t i1 = 0, i2 = 0;
                    for (int t = 0; t < lw; t++) {
                        int64_t col = c0 + l * lw + t, code, xi;
                        if (bits == 4) {
                            int64_t rel = col - c0; /* even columns read low nibbles */
                            code = (w[col / 2] >> ((rel & 1) * 4)) & 15;
                            xi = (rel & 1) ? c0 + L / 2 + rel / 2 : c0 + rel / 2;
                        } else {
                            code = w[col];
                            xi = col;
                        }
                        i1 += (int32_t)code * xq[xi];
                        i2 += (int32_t)code * xq2[xi];
                    }
                    int32_t isum = i1 * 256 + i2;
                    float sw = qk_load_scale(s, a->sdt, (c0 + l * lw) / gs);
                    acc[l] += (float)isum * (xl[c0 / lw + l] * sw);
                }
            }
            float bias = 0.0f;
            for (int64_t g = 0; g < G; g++) bias += qk_load_scale(b, a->sdt, g) * a->xsum[i][g];
            float y = bias;
            for (int l = 0; l < 16; l++) y += acc[l];
            a->y[i][r] = y;
        }
    }
}

void qmm_q8n_portable(const qmm_args *a) { q8_body(a, 4); }
void qmm_q8b_portable(const qmm_args *a) { q8_body(a, 8); }
