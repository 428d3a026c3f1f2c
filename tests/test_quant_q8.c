/*
 * test_quant_q8.c — the int8-activation path of the quantized matmul
 * (qkern.h, "the int8-activation path").
 *
 * Budgets (why):
 *   VNNI vs portable q8   same integer sums, same per-lane f32 scaling; only
 *                         the order of the f32 lane accumulation differs:
 *                         |diff| <= 1e-5 * magnitude (magnitude = Σ|terms|)
 *   q8 vs the f32 path    the two-int8 rounding of x is the only approximation:
 *                         |x_k - (d_b/256)(256 q1 + q2)| <= d_b / 512, so
 *                         |y_q8 - y| <= Σ_k |s_g c_k| d_b / 512 (+ 1e-5 * magnitude
 *                         of f32 rounding), checked per output
 *   batching              an activation row gives the same bits alone or in
 *                         a block of 8 (the kernels' invariant)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cpu.h"
#include "base/dtype.h"
#include "quant/qkern.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "test.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / 16777216.0f; }

typedef struct rw {
    qweight q;
    uint8_t *w, *s, *b;
} rw;

static void rw_make(rw *r, int bits, int gs, int64_t rows, int64_t cols) {
    memset(r, 0, sizeof *r);
    r->q.fmt = (qformat){QMODE_AFFINE, bits, gs};
    r->q.n_mats = 1;
    r->q.rows = rows;
    r->q.cols = cols;
    int64_t G = cols / gs;
    size_t wb = (size_t)(rows * cols * bits / 8);
    r->w = malloc(wb + 1);
    r->s = malloc((size_t)(rows * G) * 2 + 1);
    r->b = malloc((size_t)(rows * G) * 2 + 1);
    for (size_t i = 0; i < wb; i++) r->w[1 + i] = (uint8_t)rnd();
    for (int64_t i = 0; i < rows * G; i++) {
        uint16_t hs = f32_to_bf16(frand(0.001f, 0.02f) * (rnd() & 1 ? -1.0f : 1.0f)), hb = f32_to_bf16(frand(-0.2f, 0.2f));
        memcpy(r->s + 1 + 2 * i, &hs, 2);
        memcpy(r->b + 1 + 2 * i, &hb, 2);
    }
    r->q.w = r->w + 1;
    r->q.scales = r->s + 1;
    r->q.biases = r->b + 1;
    r->q.scale_dtype = DT_BF16;
}

static void rw_free(rw *r) { free(r->w), free(r->s), free(r->b); }

static optiq_status mm(const qweight *q, const float *x, int64_t m, float *y, int level, int q8) {
    qmm_opts o = qmm_opts_default();
    o.level = level;
    o.q8 = q8;
    optiq_error e;
    return qmatmul_ex(NULL, q, x, m, y, &o, &e);
}

/* Per output: the int8 rounding bound and the magnitude of the terms. */
static void bounds(const qweight *q, const float *x, int64_t m, double *bound, double *mag) {
    int64_t K = q->cols, gs = q->fmt.group_size;
    uint8_t *codes = malloc((size_t)K);
    for (int64_t o = 0; o < q->rows; o++) {
        qunpack_codes(q, o, 0, K, codes);
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * K;
            double bd = 0, mg = 0;
            for (int64_t b0 = 0; b0 < K; b0 += 32) {
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xi[b0 + j]));
                double d = amax / 127.0;
                for (int j = 0; j < 32; j++) {
                    int64_t k = b0 + j;
                    double s = qscale_value(q, q->scales, o * (K / gs) + k / gs);
                    double bb = qscale_value(q, q->biases, o * (K / gs) + k / gs);
                    bd += fabs(s * codes[k]) * d / 512;
                    mg += (fabs(s * codes[k]) + fabs(bb)) * fabs(xi[k]);
                }
            }
            bound[i * q->rows + o] = bd;
            mag[i * q->rows + o] = mg;
        }
    }
    free(codes);
}

int main(void) {
    const int has_vnni = cpu_detected_level() >= CPU_AVX512 && cpu_get_features()->avx512vnni;
    printf("# VNNI kernels %s\n", has_vnni ? "tested" : "not available on this CPU (portable q8 only)");
    const int64_t Ks[] = {32, 96, 128, 160, 576, 1024};
    const int gss[] = {32, 64, 128};
    const int bitss[] = {4, 8};
    for (int bi = 0; bi < 2; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int ki = 0; ki < 6; ki++) {
                int bits = bitss[bi], gs = gss[gi];
                int64_t K = Ks[ki];
                if (K % gs) continue;
                int64_t R = 1 + (int64_t)(rnd() % 37), M = 11;
                char label[160];
                snprintf(label, sizeof label, "affine%d gs%d K=%lld rows=%lld: q8 portable, VNNI, f32 path agree", bits,
                         gs, (long long)K, (long long)R);
                for (TEST_CASE(label)) {
                    rw w;
                    rw_make(&w, bits, gs, R, K);
                    float *x = malloc(sizeof(float) * (size_t)(M * K));
                    for (int64_t i = 0; i < M * K; i++) x[i] = frand(-2.0f, 2.0f) * (i % 7 == 0 ? 4.0f : 1.0f);
                    memset(x + 2 * K, 0, sizeof(float) * 32); /* an all-zero block */
                    float *yf = malloc(sizeof(float) * (size_t)(M * R)), *yp = malloc(sizeof(float) * (size_t)(M * R));
                    float *yv = malloc(sizeof(float) * (size_t)(M * R)), *y1 = malloc(sizeof(float) * (size_t)R);
                    double *bd = malloc(sizeof(double) * (size_t)(M * R)), *mg = malloc(sizeof(double) * (size_t)(M * R));
                    bounds(&w.q, x, M, bd, mg);
                    CHECK(mm(&w.q, x, M, yf, CPU_PORTABLE, 0) == OPTIQ_OK);
                    CHECK(mm(&w.q, x, M, yp, CPU_PORTABLE, 1) == OPTIQ_OK);
                    qmm_opts po = qmm_opts_default();
                    po.level = CPU_PORTABLE;
                    po.q8 = 1;
                    CHECK(qmatmul_uses_q8(&w.q, &po));
                    double worst = 0;
                    for (int64_t i = 0; i < M * R; i++) {
                        double d = fabs((double)yp[i] - yf[i]), lim = bd[i] * 1.001 + 1e-5 * mg[i];
                        CHECKF(d <= lim, "q8 vs f32 at %lld: %.3g > bound %.3g", (long long)i, d, lim);
                        if (bd[i] > 0 && d / bd[i] > worst) worst = d / bd[i];
                    }
                    if (has_vnni) {
                        CHECK(mm(&w.q, x, M, yv, CPU_AVX512, 1) == OPTIQ_OK);
                        for (int64_t i = 0; i < M * R; i++)
                            CHECKF(fabs((double)yv[i] - yp[i]) <= 1e-5 * mg[i] + 1e-7, "VNNI vs portable at %lld: %g vs %g",
                                   (long long)i, yv[i], yp[i]);
                        /* batching invariance: row 5 alone */
                        CHECK(mm(&w.q, x + 5 * K, 1, y1, CPU_AVX512, 1) == OPTIQ_OK);
                        CHECK(memcmp(y1, yv + 5 * R, sizeof(float) * (size_t)R) == 0);
                    }
                    /* AVX2 has no q8 kernel: asking for it keeps the f32 path */
                    qmm_opts ao = qmm_opts_default();
                    ao.level = CPU_AVX2;
                    ao.q8 = 1;
                    CHECK(!qmatmul_uses_q8(&w.q, &ao));
                    free(x), free(yf), free(yp), free(yv), free(y1), free(bd), free(mg);
                    rw_free(&w);
                }
            }
    for (TEST_CASE("activation preparation: VNNI and portable write the same bytes")) {
        if (!has_vnni) break;
        const int64_t ks[] = {32, 64, 96, 128, 160, 224, 1024, 3584};
        for (int ki = 0; ki < 8; ki++) {
            int64_t K = ks[ki], plen = qkern_prep_len(K);
            float *x = malloc(sizeof(float) * (size_t)K);
            float *pa = aligned_alloc(64, sizeof(float) * (size_t)plen), *pb = aligned_alloc(64, sizeof(float) * (size_t)plen);
            for (int64_t i = 0; i < K; i++) x[i] = frand(-3.0f, 3.0f) * (i % 5 == 0 ? 100.0f : 1.0f);
            if (K >= 64) memset(x + 32, 0, sizeof(float) * 32); /* a zero block */
            x[K - 1] = 0.5f * (x[K - 2] = 127.0f); /* a block whose max is exact */
            memset(pa, 0xAB, sizeof(float) * (size_t)plen);
            memset(pb, 0xAB, sizeof(float) * (size_t)plen);
            size_t used = Q8_SCALES_OFF(K);
            qprep_q8n_portable(x, K, pa);
            qprep_q8n_vnni(x, K, pb);
            CHECKF(memcmp(pa, pb, used + sizeof(float) * (size_t)(K / 8)) == 0, "4-bit layout differs at K=%lld", (long long)K);
            qprep_q8b_portable(x, K, pa);
            qprep_q8b_vnni(x, K, pb);
            CHECKF(memcmp(pa, pb, used + sizeof(float) * (size_t)(K / 4)) == 0, "8-bit layout differs at K=%lld", (long long)K);
            free(x), free(pa), free(pb);
        }
    }
    for (TEST_CASE("formats without a q8 kernel (3-bit, mxfp4) keep the f32 path")) {
        qweight q = {0};
        q.fmt = (qformat){QMODE_AFFINE, 3, 64};
        qmm_opts o = qmm_opts_default();
        o.q8 = 1;
        CHECK(!qmatmul_uses_q8(&q, &o));
        q.fmt = (qformat){QMODE_MXFP4, 4, 32};
        CHECK(!qmatmul_uses_q8(&q, &o));
    }
    return test_finish();
}
