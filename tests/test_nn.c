/*
 * test_nn.c — row ops of kernels/nn.h against f64: nn_softmax_scaled (the
 * portable loop and its AVX-512 twin with its own exp) on lengths with and
 * without a 16-lane tail, inputs spanning the range a softmax sees (large
 * negative after max subtraction, equal values, one dominant value).
 * Budget: every probability within 1e-5 relative (+1e-11 absolute) of f64:
 * the exp is good to a few ulp, the f32 sum over up to 3072 terms costs a
 * few 1e-7 more (measured: up to 1.3e-6 for the portable sequential sum).
 *
 * nn_geglu and nn_tanh_scaled (portable: libm tanhf; AVX2: libmvec's vector
 * tanhf) against f64 over inputs from 1e-4 to 30 in magnitude: within 2e-6
 * relative of the f64 value (+1e-12 absolute; tanhf is good to about 1 ulp,
 * the cubic and the products add a few ulp; GELU's 1 + tanh cancels for
 * negative inputs, so its error is taken relative to |x u|), and the AVX2 result of an
 * element does not depend on its position in the call (the tail is padded).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

/* worst relative error of geglu and tanh_scaled over n random inputs at level lv;
 * *moved: elements whose result differs (bits) when computed alone */
static double check_tanh(cpu_level lv, int64_t n, int64_t *moved) {
    float *g = malloc((size_t)n * sizeof *g), *u = malloc((size_t)n * sizeof *u), *t = malloc((size_t)n * sizeof *t);
    float *g0 = malloc((size_t)n * sizeof *g0);
    double *gr = malloc((size_t)n * sizeof *gr), *tr = malloc((size_t)n * sizeof *tr), worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double mag = pow(10.0, -4.0 + 5.5 * urand()) * (urand() < 0.5 ? -1 : 1);
        g0[i] = g[i] = t[i] = (float)mag, u[i] = (float)(urand() * 2 - 1);
        gr[i] = gelu_ref(g[i]) * u[i], tr[i] = 3.0 * tanh((double)t[i] * (double)(1.0f / 3.0f));
    }
    cpu_force_level(lv);
    nn_geglu(g, u, n);
    nn_tanh_scaled(t, n, 1.0f / 3.0f, 3.0f);
    *moved = 0;
    for (int64_t i = 0; i < n; i++) {
        float a = g0[i], b = g0[i];
        nn_geglu(&a, &u[i], 1);
        nn_tanh_scaled(&b, 1, 1.0f / 3.0f, 3.0f);
        if (memcmp(&a, &g[i], 4) || memcmp(&b, &t[i], 4)) ++*moved;
    }
    cpu_force_level(CPU_LEVEL_COUNT);
    for (int64_t i = 0; i < n; i++) {
        /* 1 + tanh cancels for negative inputs: judged against |x u|, the size before it */
        worst = fmax(worst, fabs(g[i] - gr[i]) / (fabs((double)g0[i] * u[i]) + 1e-12 / 2e-6));
        worst = fmax(worst, fabs(t[i] - tr[i]) / (fabs(tr[i]) + 1e-12 / 2e-6));
    }
    free(g), free(u), free(t), free(g0), free(gr), free(tr);
    return worst;
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
    static const int64_t tlens[] = {1, 7, 8, 13, 4099};
    for (size_t a = 0; a < sizeof tlens / sizeof tlens[0]; a++)
        for (int lv = CPU_PORTABLE; lv <= CPU_AVX2; lv++) {
            if ((cpu_level)lv > cpu_detected_level()) continue;
            char name[96];
            snprintf(name, sizeof name, "geglu / tanh_scaled %s n=%lld", lv ? "avx2" : "portable", (long long)tlens[a]);
            for (TEST_CASE(name)) {
                int64_t moved;
                double e = check_tanh((cpu_level)lv, tlens[a], &moved);
                CHECKF(e <= 2e-6, "relative error %.3g", e);
                CHECKF(moved == 0, "%lld elements change when computed alone", (long long)moved);
            }
        }
    return test_finish();
}
