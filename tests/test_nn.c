/*
 * test_nn.c — row ops of kernels/nn.h against f64: nn_softmax_scaled (the
 * portable loop and its AVX-512 twin with its own exp) on lengths with and
 * without a 16-lane tail, inputs spanning the range a softmax sees (large
 * negative after max subtraction, equal values, one dominant value).
 * Budget: every probability within 1e-5 relative (+1e-11 absolute) of f64:
 * the exp is good to a few ulp, the f32 sum over up to 3072 terms costs a
 * few 1e-7 more (measured: up to 1.3e-6 for the portable sequential sum).
 */
#include <math.h>
#include <stdlib.h>

#include "base/cpu.h"
#include "kernels/nn.h"
#include "test.h"

static uint64_t rng = 0x853c49e6748fea9bull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static double check(void (*fn)(float *, int64_t, float), int64_t n, float scale, double spread) {
    float *x = malloc((size_t)n * sizeof *x);
    double *r = malloc((size_t)n * sizeof *r), mx = -INFINITY, s = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) x[i] = (float)((urand() - 0.5) * spread);
    if (n > 3) x[n / 2] = (float)(spread * 2); /* one dominant value */
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, (double)x[i] * scale);
    for (int64_t i = 0; i < n; i++) s += r[i] = exp((double)x[i] * scale - mx);
    for (int64_t i = 0; i < n; i++) r[i] /= s;
    fn(x, n, scale);
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(x[i] - r[i]) / (r[i] + 1e-11 / 1e-5));
    free(x), free(r);
    return worst;
}

static void portable(float *x, int64_t n, float scale) {
    cpu_force_level(CPU_PORTABLE);
    nn_softmax_scaled(x, n, scale);
    cpu_force_level(CPU_AVX512);
}

int main(void) {
    static const int64_t lens[] = {1, 7, 16, 17, 100, 3072};
    static const double spreads[] = {0.0, 1.0, 40.0, 400.0};
    for (size_t a = 0; a < sizeof lens / sizeof lens[0]; a++)
        for (size_t b = 0; b < sizeof spreads / sizeof spreads[0]; b++) {
            char name[96];
            snprintf(name, sizeof name, "softmax_scaled n=%lld spread %g", (long long)lens[a], spreads[b]);
            for (TEST_CASE(name)) {
                double e1 = check(portable, lens[a], 0.125f, spreads[b]);
                CHECKF(e1 <= 1e-5, "portable: %.3g", e1);
                if (cpu_detected_level() >= CPU_AVX512) {
                    double e2 = check(nn_softmax_scaled_avx512, lens[a], 0.125f, spreads[b]);
                    CHECKF(e2 <= 1e-5, "avx512: %.3g", e2);
                }
            }
        }
    return test_finish();
}
