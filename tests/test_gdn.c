/*
 * test_gdn.c — the Gated DeltaNet step (kernels/gdn.h): the portable kernel
 * and its AVX-512 twin against an f64 evaluation of mlx-lm's recurrence, over
 * several steps on random shapes (Dv not a multiple of 4 covers the tail rows).
 * Budget: after T steps every state entry and output within 1e-5 of the f64
 * result relative to the largest magnitude (f32 with O(Dk) terms per sum; the
 * twins differ only in summation order). End-to-end parity of the layer is in
 * test_qwen35.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/cpu.h"
#include "kernels/gdn.h"
#include "test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* f64 reference: S = g S; d_i = (v_i - S_i.k) beta; S_i += d_i k; y_i = S_i.q */
static void ref_step(double *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv,
                     int64_t Dk, double *y) {
    for (int64_t i = 0; i < Dv; i++) {
        double *Si = S + i * Dk, dot = 0, yy = 0;
        for (int64_t j = 0; j < Dk; j++) Si[j] *= g, dot += Si[j] * k[j];
        double d = (v[i] - dot) * beta;
        for (int64_t j = 0; j < Dk; j++) Si[j] += d * k[j], yy += Si[j] * q[j];
        y[i] = yy;
    }
}

typedef void (*step_fn)(float *, const float *, const float *, const float *, float, float, int64_t, int64_t,
                        float *);

/* Runs T steps with fn and the reference; returns the worst relative error. */
static double run(step_fn fn, int64_t Dv, int64_t Dk, int T) {
    float *S = calloc((size_t)(Dv * Dk), sizeof *S), *y = malloc(sizeof(float) * (size_t)Dv);
    double *R = calloc((size_t)(Dv * Dk), sizeof *R), *ry = malloc(sizeof(double) * (size_t)Dv);
    float *q = malloc(sizeof(float) * (size_t)Dk), *k = malloc(sizeof(float) * (size_t)Dk);
    float *v = malloc(sizeof(float) * (size_t)Dv);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double nk = 0;
        for (int64_t j = 0; j < Dk; j++) q[j] = frand(), k[j] = frand(), nk += (double)k[j] * k[j];
        for (int64_t j = 0; j < Dk; j++) k[j] = (float)(k[j] / sqrt(nk)); /* unit k, as after the l2 norm */
        for (int64_t i = 0; i < Dv; i++) v[i] = 2.0f * frand();
        float g = 0.8f + 0.2f * fabsf(frand()), beta = 0.5f + 0.5f * fabsf(frand());
        fn(S, q, k, v, g, beta, Dv, Dk, y);
        ref_step(R, q, k, v, g, beta, Dv, Dk, ry);
        double mag = 1e-30, err = 0;
        for (int64_t i = 0; i < Dv * Dk; i++) mag = fmax(mag, fabs(R[i])), err = fmax(err, fabs(S[i] - R[i]));
        for (int64_t i = 0; i < Dv; i++) mag = fmax(mag, fabs(ry[i])), err = fmax(err, fabs(y[i] - ry[i]));
        worst = fmax(worst, err / mag);
    }
    free(S), free(y), free(R), free(ry), free(q), free(k), free(v);
    return worst;
}

int main(void) {
    static const int64_t shapes[][2] = {{4, 16}, {7, 32}, {128, 128}, {13, 64}, {1, 16}, {5, 24}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t Dv = shapes[s][0], Dk = shapes[s][1];
        char name[96];
        snprintf(name, sizeof name, "portable Dv=%lld Dk=%lld", (long long)Dv, (long long)Dk);
        for (TEST_CASE(name)) {
            double e = run(gdn_step_portable, Dv, Dk, 24);
            CHECKF(e <= 1e-5, "relative error %.3g > 1e-5", e);
        }
        if (Dk % 16) continue;
        snprintf(name, sizeof name, "avx512 Dv=%lld Dk=%lld", (long long)Dv, (long long)Dk);
        for (TEST_CASE(name)) {
            if (cpu_detected_level() < CPU_AVX512) {
                printf("     (no AVX-512 here: checked through the dispatch only)\n");
                CHECK(run(gdn_step, Dv, Dk, 24) <= 1e-5);
                continue;
            }
            double e = run(gdn_step_avx512, Dv, Dk, 24);
            CHECKF(e <= 1e-5, "relative error %.3g > 1e-5", e);
        }
    }
    return test_finish();
}
