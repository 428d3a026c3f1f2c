/*
 * test_matmul.c — unquantized y = x · Wᵀ (f32, bf16, f16 weights).
 *
 * Every kernel level the CPU has, on random shapes with ragged edges (m of 1..9,
 * n not a multiple of the 4-row tiles, k not a multiple of the 8/16-lane
 * vectors), unaligned weight pointers:
 *   - vs an f64 reference: normalized MSE sum((y - ref)^2) / sum((|x|·|W|ᵀ)^2)
 *     <= 1e-13 (f32 accumulation over at most ~4000 terms: ~(k eps)^2 at worst);
 *   - SIMD vs portable <= 1e-13 on the same scale;
 *   - batching and thread counts never change a row (bit-identical).
 * A level the CPU lacks prints "ok ... (skipped: no avx512)".
 */
#include <math.h>

#include "base/cpu.h"
#include "base/threadpool.h"
#include "kernels/matmul.h"
#include "test.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / 8388608.0f - 1.0f;
}

typedef struct shape {
    int64_t m, n, k;
} shape;

static const shape SHAPES[] = {{1, 1, 1},    {1, 7, 5},   {2, 5, 17},  {3, 9, 33},    {4, 4, 64},
                               {5, 13, 100}, {7, 3, 257}, {9, 21, 31}, {1, 64, 1024}, {6, 37, 4001}};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static void store_w(uint8_t *w, dtype dt, int64_t i, float v) {
    if (dt == DT_F32) {
        memcpy(w + 4 * i, &v, 4);
        return;
    }
    uint16_t h = dt == DT_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    memcpy(w + 2 * i, &h, 2);
}

int main(void) {
    thread_pool *pool = pool_create(2);
    /* levels this run may use: the hardware's, capped by OPTIQ_CPU */
    const cpu_level detected = cpu_force_level(CPU_LEVEL_COUNT);
    static const dtype DTS[3] = {DT_F32, DT_BF16, DT_F16};

    for (int l = 0; l < CPU_LEVEL_COUNT; l++)
        for (int d = 0; d < 3; d++) {
            char title[160];
            snprintf(title, sizeof title, "%s %s weights: vs f64 and vs portable <= 1e-13 (normalized MSE), %zu shapes",
                     cpu_level_name((cpu_level)l), dtype_name(DTS[d]), N_SHAPES);
            if ((cpu_level)l > detected) {
                char skip[200];
                if (cpu_detected_level() < (cpu_level)l)
                    snprintf(skip, sizeof skip, "%s (skipped: no %s)", title, cpu_level_name((cpu_level)l));
                else
                    snprintf(skip, sizeof skip, "%s (skipped: OPTIQ_CPU caps at %s)", title, cpu_level_name(detected));
                for (TEST_CASE(skip)) {}
                continue;
            }
            for (TEST_CASE(title)) {
                double worst_r = 0, worst_p = 0;
                for (size_t s = 0; s < N_SHAPES; s++) {
                    const int64_t m = SHAPES[s].m, n = SHAPES[s].n, k = SHAPES[s].k;
                    size_t es = dtype_size(DTS[d]);
                    uint8_t *wbuf = malloc((size_t)(n * k) * es + 1), *w = wbuf + 1; /* unaligned */
                    float *x = malloc((size_t)(m * k) * sizeof(float));
                    float *y = malloc((size_t)(m * n) * sizeof(float)), *yp = malloc((size_t)(m * n) * sizeof(float));
                    for (int64_t i = 0; i < n * k; i++) store_w(w, DTS[d], i, frand() * 0.1f);
                    for (int64_t i = 0; i < m * k; i++) x[i] = frand();
                    mm_opts o = mm_opts_default();
                    o.level = l;
                    optiq_error err;
                    CHECKF(matmul(pool, x, m, k, w, DTS[d], n, y, &o, &err) == OPTIQ_OK, "%s", err.message);
                    o.level = CPU_PORTABLE;
                    CHECK(matmul(NULL, x, m, k, w, DTS[d], n, yp, &o, &err) == OPTIQ_OK);
                    double num_r = 0, num_p = 0, den = 0;
                    for (int64_t i = 0; i < m; i++)
                        for (int64_t j = 0; j < n; j++) {
                            double ref = 0, mag = 0;
                            for (int64_t q = 0; q < k; q++) {
                                double p = (double)x[i * k + q] * load_as_f32(w, DTS[d], (size_t)(j * k + q));
                                ref += p;
                                mag += fabs(p);
                            }
                            double dr = y[i * n + j] - ref, dp = (double)y[i * n + j] - yp[i * n + j];
                            num_r += dr * dr;
                            num_p += dp * dp;
                            den += mag * mag;
                        }
                    double er = num_r / den, ep = num_p / den;
                    if (er > worst_r) worst_r = er;
                    if (ep > worst_p) worst_p = ep;
                    CHECKF(er <= 1e-13 && ep <= 1e-13, "m %lld n %lld k %lld: nmse vs f64 %.3g, vs portable %.3g",
                           (long long)m, (long long)n, (long long)k, er, ep);
                    free(wbuf);
                    free(x);
                    free(y);
                    free(yp);
                }
                printf("     nmse vs f64 %.2g, vs portable %.2g\n", worst_r, worst_p);
            }
        }

    for (TEST_CASE("batching and thread counts never change a row (bit-identical), every level")) {
        const int64_t m = 11, n = 30, k = 333;
        uint16_t *w = malloc((size_t)(n * k) * 2);
        float *x = malloc((size_t)(m * k) * sizeof(float)), y[11 * 30], y1[30], y2[11 * 30];
        for (int64_t i = 0; i < n * k; i++) w[i] = f32_to_bf16(frand());
        for (int64_t i = 0; i < m * k; i++) x[i] = frand();
        for (int l = 0; l <= (int)detected; l++) {
            mm_opts o = mm_opts_default();
            o.level = l;
            CHECK(matmul(pool, x, m, k, w, DT_BF16, n, y, &o, NULL) == OPTIQ_OK);
            CHECK(matmul(NULL, x, m, k, w, DT_BF16, n, y2, &o, NULL) == OPTIQ_OK);
            CHECK(memcmp(y, y2, sizeof y) == 0);
            int ok = 1;
            for (int64_t i = 0; i < m; i++) {
                CHECK(matmul(NULL, x + i * k, 1, k, w, DT_BF16, n, y1, &o, NULL) == OPTIQ_OK);
                ok &= memcmp(y1, y + i * n, sizeof y1) == 0;
            }
            CHECKF(ok, "level %s", cpu_level_name((cpu_level)l));
        }
        free(w);
        free(x);
    }

    for (TEST_CASE("strides, k = 0, and refused arguments")) {
        float x[2 * 10], w[3 * 8], y[2 * 5];
        for (int i = 0; i < 20; i++) x[i] = frand();
        for (int i = 0; i < 24; i++) w[i] = frand();
        for (int i = 0; i < 10; i++) y[i] = 99.0f;
        mm_opts o = mm_opts_default();
        o.ldx = 10;
        o.ldy = 5;
        CHECK(matmul(pool, x, 2, 8, w, DT_F32, 3, y, &o, NULL) == OPTIQ_OK);
        int ok = y[3] == 99.0f && y[4] == 99.0f && y[8] == 99.0f && y[9] == 99.0f;
        double ref = 0;
        for (int q = 0; q < 8; q++) ref += (double)x[10 + q] * w[2 * 8 + q];
        ok &= fabs(y[5 + 2] - ref) < 1e-5;
        CHECK(ok);
        CHECK(matmul(pool, x, 2, 0, w, DT_F32, 3, y, NULL, NULL) == OPTIQ_OK && y[0] == 0.0f && y[5] == 0.0f);
        optiq_error err;
        CHECK(matmul(pool, x, 2, 8, w, DT_U8, 3, y, NULL, &err) == OPTIQ_ERR_UNSUPPORTED);
        o.ldx = 4;
        CHECK(matmul(pool, x, 2, 8, w, DT_F32, 3, y, &o, &err) == OPTIQ_ERR_INVALID_ARG);
    }

    pool_free(pool);
    return test_finish();
}
