/*
 * test_quant_q8.c — the int8-activation path of the quantized matmul
 * (qkern.h, "the int8-activation path").
 *
 * Budgets (why):
 *   VNNI vs portable q8   same integer sums, same per-lane f32 scaling; only
 *                         the order of the f32 lane accumulation differs:
 *                         |diff| <= 1e-5 * magnitude (magnitude = Σ|terms|)
 *   AVX2 vs portable q8   bit for bit: same integers, same f32 operations in
 *                         the same order (qkern_q8_avx2.c), on random shapes,
 *                         block sizes 1..QMM_MB and every scale dtype
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

static void put_scale(uint8_t *p, dtype dt, float v) {
    if (dt == DT_F32) {
        memcpy(p, &v, 4);
    } else {
        uint16_t h = dt == DT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
        memcpy(p, &h, 2);
    }
}

static void rw_make_dt(rw *r, int bits, int gs, int64_t rows, int64_t cols, dtype sdt) {
    memset(r, 0, sizeof *r);
    r->q.fmt = (qformat){QMODE_AFFINE, bits, gs};
    r->q.n_mats = 1;
    r->q.rows = rows;
    r->q.cols = cols;
    int64_t G = cols / gs;
    size_t wb = (size_t)(rows * cols * bits / 8);
    r->w = malloc(wb + 1);
    size_t es = dtype_size(sdt);
    r->s = malloc((size_t)(rows * G) * es + 1);
    r->b = malloc((size_t)(rows * G) * es + 1);
    for (size_t i = 0; i < wb; i++) r->w[1 + i] = (uint8_t)rnd();
    for (int64_t i = 0; i < rows * G; i++) {
        put_scale(r->s + 1 + es * (size_t)i, sdt, frand(0.001f, 0.02f) * (rnd() & 1 ? -1.0f : 1.0f));
        put_scale(r->b + 1 + es * (size_t)i, sdt, frand(-0.2f, 0.2f));
    }
    r->q.w = r->w + 1;
    r->q.scales = r->s + 1;
    r->q.biases = r->b + 1;
    r->q.scale_dtype = sdt;
}

static void rw_make(rw *r, int bits, int gs, int64_t rows, int64_t cols) { rw_make_dt(r, bits, gs, rows, cols, DT_BF16); }

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
    const int has_avx2 = cpu_detected_level() >= CPU_AVX2;
    printf("# VNNI kernels %s\n", has_vnni ? "tested" : "not available on this CPU");
    printf("# AVX2 kernels %s\n", has_avx2 ? "tested" : "not available on this CPU");
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
                snprintf(label, sizeof label, "affine%d gs%d K=%lld rows=%lld: q8 portable, VNNI, AVX2, f32 path agree", bits,
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
                    if (has_avx2) {
                        qmm_opts ao = qmm_opts_default();
                        ao.level = CPU_AVX2;
                        ao.q8 = 1;
                        CHECK(qmatmul_uses_q8(&w.q, &ao));
                        CHECK(mm(&w.q, x, M, yv, CPU_AVX2, 1) == OPTIQ_OK);
                        for (int64_t i = 0; i < M * R; i++)
                            CHECKF(memcmp(&yv[i], &yp[i], sizeof(float)) == 0, "AVX2 vs portable at %lld: %.9g vs %.9g",
                                   (long long)i, yv[i], yp[i]);
                    }
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
    for (TEST_CASE("activation preparation: AVX2 and portable write the same bytes")) {
        if (!has_avx2) break;
        const int64_t ks[] = {32, 64, 96, 128, 160, 224, 1024, 3584};
        for (int ki = 0; ki < 8; ki++) {
            int64_t K = ks[ki], plen = qkern_prep_len(K);
            float *x = malloc(sizeof(float) * (size_t)K);
            float *pa = aligned_alloc(64, sizeof(float) * (size_t)plen), *pb = aligned_alloc(64, sizeof(float) * (size_t)plen);
            for (int64_t i = 0; i < K; i++) x[i] = frand(-3.0f, 3.0f) * (i % 5 == 0 ? 100.0f : 1.0f);
            if (K >= 64) memset(x + 32, 0, sizeof(float) * 32); /* a zero block */
            x[K - 1] = 0.5f * (x[K - 2] = 127.0f); /* a block whose max is exact */
            for (int64_t i = 0; i + 1 < K; i += 37) x[i] = (float)(i % 9) - 4.5f; /* ties in the rounding */
            memset(pa, 0xAB, sizeof(float) * (size_t)plen);
            memset(pb, 0xAB, sizeof(float) * (size_t)plen);
            size_t used = Q8_SCALES_OFF(K);
            qprep_q8n_portable(x, K, pa);
            qprep_q8n_avx2(x, K, pb);
            CHECKF(memcmp(pa, pb, used + sizeof(float) * (size_t)(K / 8)) == 0, "4-bit layout differs at K=%lld", (long long)K);
            qprep_q8b_portable(x, K, pa);
            qprep_q8b_avx2(x, K, pb);
            CHECKF(memcmp(pa, pb, used + sizeof(float) * (size_t)(K / 4)) == 0, "8-bit layout differs at K=%lld", (long long)K);
            free(x), free(pa), free(pb);
        }
    }
    /* Random shapes: K any multiple of the group size (chunk tails of 32, 64
     * and 96 columns, scale windows cut short), every block size, every scale
     * dtype; each activation row alone must give the same bits as in its block. */
    for (TEST_CASE("AVX2 q8 kernels: bit-identical to portable q8 on random shapes, alone or batched")) {
        if (!has_avx2) break;
        const dtype dts[] = {DT_BF16, DT_F16, DT_F32};
        for (int it = 0; it < 120; it++) {
            int bits = it & 1 ? 8 : 4, gs = 32 << (rnd() % 3);
            int64_t K = gs * (1 + (int64_t)(rnd() % (2048 / gs))), R = 1 + (int64_t)(rnd() % 41);
            int64_t M = it % 10 == 9 ? 11 : 1 + (int64_t)(rnd() % QMM_MB);
            dtype sdt = dts[rnd() % 3];
            rw w;
            rw_make_dt(&w, bits, gs, R, K, sdt);
            float *x = malloc(sizeof(float) * (size_t)(M * K));
            for (int64_t i = 0; i < M * K; i++) x[i] = frand(-2.0f, 2.0f) * (i % 11 == 0 ? 8.0f : 1.0f);
            float *yp = malloc(sizeof(float) * (size_t)(M * R)), *ya = malloc(sizeof(float) * (size_t)(M * R));
            float *y1 = malloc(sizeof(float) * (size_t)R);
            CHECK(mm(&w.q, x, M, yp, CPU_PORTABLE, 1) == OPTIQ_OK);
            CHECK(mm(&w.q, x, M, ya, CPU_AVX2, 1) == OPTIQ_OK);
            for (int64_t i = 0; i < M * R; i++)
                CHECKF(memcmp(&ya[i], &yp[i], sizeof(float)) == 0,
                       "affine%d gs%d %s K=%lld R=%lld M=%lld at %lld: %.9g vs portable %.9g", bits, gs, dtype_name(sdt),
                       (long long)K, (long long)R, (long long)M, (long long)i, ya[i], yp[i]);
            for (int64_t i = 0; i < M; i++) {
                CHECK(mm(&w.q, x + i * K, 1, y1, CPU_AVX2, 1) == OPTIQ_OK);
                CHECKF(memcmp(y1, ya + i * R, sizeof(float) * (size_t)R) == 0, "row %lld alone differs (K=%lld M=%lld)",
                       (long long)i, (long long)K, (long long)M);
            }
            free(x), free(yp), free(ya), free(y1);
            rw_free(&w);
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
