/*
 * gdn.c — portable Gated DeltaNet step (see gdn.h) and the dispatch.
 */
#include "kernels/gdn.h"

#include "base/cpu.h"

/* S_i *= g; returns S_i · k (8 partial sums: vectorizable, fixed order). */
static inline float decay_dot(float *restrict s, const float *restrict k, float g, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            s[j + l] *= g;
            acc[l] += s[j + l] * k[j + l];
        }
    for (; j < n; j++) {
        s[j] *= g;
        acc[0] += s[j] * k[j];
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* S_i += d k; returns S_i · q. */
static inline float update_dot(float *restrict s, const float *restrict k, const float *restrict q, float d,
                               int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            s[j + l] += d * k[j + l];
            acc[l] += s[j + l] * q[j + l];
        }
    for (; j < n; j++) {
        s[j] += d * k[j];
        acc[0] += s[j] * q[j];
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void gdn_step_portable(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv,
                       int64_t Dk, float *y) {
    for (int64_t i = 0; i < Dv; i++) {
        float *Si = S + i * Dk;
        float d = (v[i] - decay_dot(Si, k, g, Dk)) * beta;
        y[i] = update_dot(Si, k, q, d, Dk);
    }
}

void gdn_step(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv, int64_t Dk,
              float *y) {
    if (cpu_level_current() >= CPU_AVX512 && Dk % 16 == 0)
        gdn_step_avx512(S, q, k, v, g, beta, Dv, Dk, y);
    else
        gdn_step_portable(S, q, k, v, g, beta, Dv, Dk, y);
}
