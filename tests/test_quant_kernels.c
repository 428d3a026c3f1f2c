/*
 * test_quant_kernels.c — the quantized matmul kernels on random data.
 *
 * For every format and every kernel level the CPU has (forced through
 * cpu_force_level, the OPTIQ_CPU override's API), on random shapes with ragged
 * tails — output rows not a multiple of the 8-row tiles, 1..9 and 17 activation
 * rows (blocks of 8 plus a remainder), K of 1 to 70 groups (past the 16-group
 * scale blocks and the 8192-column unpack slices), unaligned data pointers:
 *   - SIMD vs portable: normalized MSE sum((y - y_portable)^2) / sum(mag^2)
 *     <= 1e-12, where mag = sum_k |x_k| * (|s q_k| + |b|) (affine; |W| for fp
 *     formats) is the size of the terms the kernels add: affine evaluates
 *     s*sum(x q) + b*sum(x), two sums that may cancel, so the reference energy
 *     sum(y^2) alone would make the budget depend on the cancellation. Only the
 *     f32 summation order differs; measured values are ~1e-15.
 *   - every level vs an f64 reference built from the exact quantized values:
 *     the same normalized MSE <= 1e-12 (f32 rounding, up to 9000 terms);
 *   - thread counts (NULL pool, 1, 2 threads) give bit-identical results, and
 *     qmatmul_moe equals per-expert qmatmul_ex bit for bit.
 * A level the CPU lacks prints "ok ... (skipped: no avx512)".
 */
#include <math.h>

#include "base/cpu.h"
#include "base/threadpool.h"
#include "quant/qkern.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "quant/quantize.h"
#include "test.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / 16777216.0f; }

/* A random qweight whose buffers start at odd addresses (as in an unpadded
 * safetensors mapping). Owns its memory. */
typedef struct rq {
    qweight q;
    uint8_t *wbuf, *sbuf, *bbuf;
} rq;

static void rq_make(rq *r, qformat fmt, int64_t n_mats, int64_t rows, int64_t cols, dtype sdt) {
    memset(r, 0, sizeof *r);
    r->q.fmt = fmt;
    r->q.n_mats = n_mats;
    r->q.rows = rows;
    r->q.cols = cols;
    int64_t R = n_mats * rows, G = cols / fmt.group_size;
    size_t wbytes = (size_t)(R * cols * fmt.bits / 8);
    r->wbuf = malloc(wbytes + 1);
    uint8_t *w = r->wbuf + 1;
    for (size_t i = 0; i < wbytes; i++) {
        uint8_t b = (uint8_t)rnd();
        if (fmt.mode == QMODE_MXFP8 && (b & 0x7f) == 0x7f) b ^= 1; /* MLX never writes the NaN code */
        w[i] = b;
    }
    r->q.w = w;
    if (fmt.mode == QMODE_AFFINE) {
        size_t es = dtype_size(sdt);
        r->sbuf = malloc((size_t)(R * G) * es + 1);
        r->bbuf = malloc((size_t)(R * G) * es + 1);
        for (int64_t i = 0; i < R * G; i++) {
            float s = frand(0.001f, 0.02f) * (rnd() & 1 ? -1.0f : 1.0f), b = frand(-0.2f, 0.2f);
            uint8_t *ps = r->sbuf + 1 + i * (int64_t)es, *pb = r->bbuf + 1 + i * (int64_t)es;
            if (sdt == DT_F32) {
                memcpy(ps, &s, 4);
                memcpy(pb, &b, 4);
            } else {
                uint16_t hs = sdt == DT_BF16 ? f32_to_bf16(s) : f32_to_f16(s);
                uint16_t hb = sdt == DT_BF16 ? f32_to_bf16(b) : f32_to_f16(b);
                memcpy(ps, &hs, 2);
                memcpy(pb, &hb, 2);
            }
        }
        r->q.scales = r->sbuf + 1;
        r->q.biases = r->bbuf + 1;
        r->q.scale_dtype = sdt;
    } else {
        r->sbuf = malloc((size_t)(R * G) + 1);
        for (int64_t i = 0; i < R * G; i++) {
            uint8_t b;
            if (fmt.mode == QMODE_NVFP4) {
                do b = (uint8_t)rnd();
                while ((b & 0x7f) == 0x7f || (b & 0x7f) > 0x50); /* e4m3 up to 2^3 */
            } else {
                b = (uint8_t)(118 + rnd() % 12); /* e8m0 2^-9 .. 2^2 */
            }
            r->sbuf[1 + i] = b;
        }
        r->q.scales = r->sbuf + 1;
        r->q.scale_dtype = DT_U8;
    }
}

static void rq_free(rq *r) {
    free(r->wbuf);
    free(r->sbuf);
    free(r->bbuf);
}

/* f64 reference: y[i, o] = sum_k x[i, k] * W[o, k] with W exact from codes and
 * scales, and mag[i, o] = sum_k |x[i, k]| * M[o, k], the magnitude of the terms
 * the kernels add (affine: M = |s q| + |b|, as they sum s*q*x and b*x
 * separately; fp: M = |W|). */
static void ref_matmul(const qweight *q, int64_t mat, const float *x, int64_t m, double *y, double *mag) {
    const int64_t O = q->rows, K = q->cols, gs = q->fmt.group_size, G = K / gs;
    uint8_t *codes = malloc((size_t)K);
    double *W = malloc((size_t)K * sizeof(double)), *M = malloc((size_t)K * sizeof(double));
    for (int64_t o = 0; o < O; o++) {
        int64_t row = mat * O + o;
        qunpack_codes(q, row, 0, K, codes);
        for (int64_t k = 0; k < K; k++) {
            const uint8_t *sp = (const uint8_t *)q->scales;
            int64_t gi = row * G + k / gs;
            switch (q->fmt.mode) {
            case QMODE_AFFINE: {
                double sq = (double)codes[k] * load_as_f32(q->scales, q->scale_dtype, (size_t)gi);
                double b = load_as_f32(q->biases, q->scale_dtype, (size_t)gi);
                W[k] = sq + b;
                M[k] = fabs(sq) + fabs(b);
                break;
            }
            case QMODE_MXFP8: W[k] = (double)qe4m3_value(codes[k]) * qe8m0_value(sp[gi]); break;
            case QMODE_NVFP4: W[k] = (double)QFP4_VALUES[codes[k]] * qe4m3_value(sp[gi]); break;
            default: W[k] = (double)QFP4_VALUES[codes[k]] * qe8m0_value(sp[gi]); break;
            }
            if (q->fmt.mode != QMODE_AFFINE) M[k] = fabs(W[k]);
        }
        for (int64_t i = 0; i < m; i++) {
            double acc = 0, ma = 0;
            for (int64_t k = 0; k < K; k++) {
                acc += (double)x[i * K + k] * W[k];
                ma += fabs((double)x[i * K + k]) * M[k];
            }
            y[i * O + o] = acc;
            mag[i * O + o] = ma;
        }
    }
    free(codes);
    free(W);
    free(M);
}

/* Normalized MSE: sum (y - ref)^2 / sum mag^2 (ref and y0 may be float or double). */
static double nmse(const float *y, const double *ref, const double *mag, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)y[i] - ref[i];
        num += d * d;
        den += mag[i] * mag[i];
    }
    return den > 0 ? num / den : num;
}
static double nmse_f(const float *y, const float *y0, const double *mag, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)y[i] - y0[i];
        num += d * d;
        den += mag[i] * mag[i];
    }
    return den > 0 ? num / den : num;
}

typedef struct shape {
    int64_t rows, groups, m;
} shape;

static const struct {
    qformat fmt;
    dtype sdt;
} FMTS[] = {
    {{QMODE_AFFINE, 4, 64}, DT_BF16}, {{QMODE_AFFINE, 4, 32}, DT_F16},  {{QMODE_AFFINE, 4, 128}, DT_F32},
    {{QMODE_AFFINE, 8, 64}, DT_BF16}, {{QMODE_AFFINE, 8, 32}, DT_F32},  {{QMODE_AFFINE, 8, 128}, DT_F16},
    {{QMODE_AFFINE, 2, 64}, DT_BF16}, {{QMODE_AFFINE, 3, 32}, DT_BF16}, {{QMODE_AFFINE, 3, 128}, DT_F16},
    {{QMODE_AFFINE, 5, 64}, DT_BF16}, {{QMODE_AFFINE, 6, 64}, DT_BF16}, {{QMODE_AFFINE, 6, 128}, DT_F32},
    {{QMODE_AFFINE, 1, 32}, DT_BF16}, {{QMODE_MXFP4, 4, 32}, DT_U8},    {{QMODE_MXFP8, 8, 32}, DT_U8},
    {{QMODE_NVFP4, 4, 16}, DT_U8},
};
#define N_FMTS (sizeof FMTS / sizeof FMTS[0])

static const shape SHAPES[] = {
    {1, 1, 1},  {7, 3, 2},   {13, 2, 3}, {8, 5, 4},  {37, 7, 5},  {9, 17, 6},
    {21, 1, 7}, {16, 33, 1}, {5, 70, 9}, {3, 4, 17}, {40, 16, 8},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static void fmt_name(qformat f, dtype sdt, char *buf, size_t n) {
    if (f.mode == QMODE_AFFINE)
        snprintf(buf, n, "affine%d g%d %s", f.bits, f.group_size, dtype_name(sdt));
    else
        snprintf(buf, n, "%s", qmode_name(f.mode));
}

int main(void) {
    thread_pool *pool2 = pool_create(2), *pool1 = pool_create(1);
    /* levels this run may use: the hardware's, capped by OPTIQ_CPU */
    const cpu_level detected = cpu_force_level(CPU_LEVEL_COUNT);

    for (TEST_CASE("e4m3 / e8m0 / fp4 tables agree with the scalar decoders")) {
        int bad = 0;
        for (int b = 0; b < 256; b++) {
            float v = QK_E4M3_LUT[b], ref = (b & 0x7f) == 0x7f ? NAN : e4m3_to_f32((uint8_t)b);
            if (!(f32_bits(v) == f32_bits(ref) || (isnan(v) && isnan(ref)))) bad++;
            float e = qk_e8m0((uint8_t)b), eref = b == 0 ? ldexpf(1, -127) : b == 255 ? INFINITY : ldexpf(1, b - 127);
            if (f32_bits(e) != f32_bits(eref)) bad++;
        }
        for (int c = 0; c < 16; c++)
            bad += QFP4_VALUES[c] != (c & 8 ? -1 : 1) * (float[]){0, .5f, 1, 1.5f, 2, 3, 4, 6}[c & 7];
        CHECKF(bad == 0, "%d table entries differ", bad);
    }

    for (int l = 0; l < CPU_LEVEL_COUNT; l++) {
        for (size_t fi = 0; fi < N_FMTS; fi++) {
            qformat fmt = FMTS[fi].fmt;
            char fname[64], title[160];
            fmt_name(fmt, FMTS[fi].sdt, fname, sizeof fname);
            snprintf(title, sizeof title, "%s %s: vs portable and vs f64 <= 1e-12 (normalized MSE), %zu shapes",
                     cpu_level_name((cpu_level)l), fname, N_SHAPES);
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
                double worst_p = 0, worst_r = 0;
                for (size_t si = 0; si < N_SHAPES; si++) {
                    shape sh = SHAPES[si];
                    int64_t K = sh.groups * fmt.group_size;
                    if (fmt.mode == QMODE_AFFINE && fmt.group_size == 128 && si == 8)
                        K = 70 * 128; /* > one 8192 slice */
                    rq r;
                    rq_make(&r, fmt, 1, sh.rows, K, FMTS[fi].sdt);
                    float *x = malloc((size_t)(sh.m * K + 1) * sizeof(float)), *xs = x + 1; /* unaligned */
                    for (int64_t i = 0; i < sh.m * K; i++) xs[i] = frand(-1, 1);
                    float *y = malloc((size_t)(sh.m * sh.rows) * sizeof(float));
                    float *y0 = malloc((size_t)(sh.m * sh.rows) * sizeof(float));
                    double *yr = malloc((size_t)(sh.m * sh.rows) * sizeof(double));
                    double *mag = malloc((size_t)(sh.m * sh.rows) * sizeof(double));
                    optiq_error err;
                    cpu_force_level(CPU_PORTABLE);
                    CHECK(qmatmul(NULL, &r.q, xs, sh.m, y0, &err) == OPTIQ_OK);
                    cpu_force_level((cpu_level)l);
                    CHECK(qmatmul_level(&r.q, NULL) == (cpu_level)l);
                    CHECK(qmatmul(pool2, &r.q, xs, sh.m, y, &err) == OPTIQ_OK);
                    cpu_force_level(CPU_LEVEL_COUNT);
                    ref_matmul(&r.q, 0, xs, sh.m, yr, mag);
                    double ep = nmse_f(y, y0, mag, sh.m * sh.rows), er = nmse(y, yr, mag, sh.m * sh.rows);
                    if (ep > worst_p) worst_p = ep;
                    if (er > worst_r) worst_r = er;
                    CHECKF(ep <= 1e-12 && er <= 1e-12,
                           "shape rows %lld K %lld m %lld: nmse vs portable %.3g, vs f64 %.3g", (long long)sh.rows,
                           (long long)K, (long long)sh.m, ep, er);
                    free(x);
                    free(y);
                    free(y0);
                    free(yr);
                    free(mag);
                    rq_free(&r);
                }
                printf("     nmse vs portable %.2g, vs f64 %.2g\n", worst_p, worst_r);
            }
        }
    }

    for (TEST_CASE("thread counts and pools give bit-identical results (every level, 4-bit and 8-bit)")) {
        for (int l = 0; l <= (int)detected; l++) {
            for (int k = 0; k < 2; k++) {
                rq r;
                rq_make(&r, (qformat){QMODE_AFFINE, k ? 8 : 4, 64}, 1, 203, 640, DT_BF16);
                int64_t m = 11;
                float *x = malloc((size_t)(m * 640) * sizeof(float)), *y[3];
                for (int64_t i = 0; i < m * 640; i++) x[i] = frand(-1, 1);
                thread_pool *pools[3] = {NULL, pool1, pool2};
                qmm_opts o = qmm_opts_default();
                o.level = l;
                for (int p = 0; p < 3; p++) {
                    y[p] = malloc((size_t)(m * 203) * sizeof(float));
                    CHECK(qmatmul_ex(pools[p], &r.q, x, m, y[p], &o, NULL) == OPTIQ_OK);
                }
                CHECK(memcmp(y[0], y[1], (size_t)(m * 203) * 4) == 0 && memcmp(y[0], y[2], (size_t)(m * 203) * 4) == 0);
                for (int p = 0; p < 3; p++) free(y[p]);
                free(x);
                rq_free(&r);
            }
        }
    }

    for (TEST_CASE("batching never changes a row: m = 11 equals 11 single-row calls, every format and level")) {
        for (int l = 0; l <= (int)detected; l++)
            for (size_t fi = 0; fi < N_FMTS; fi++) {
                const int64_t m = 11, O = 9, K = 4 * FMTS[fi].fmt.group_size;
                rq r;
                rq_make(&r, FMTS[fi].fmt, 1, O, K, FMTS[fi].sdt);
                float *x = malloc((size_t)(m * K) * sizeof(float)), y[11 * 9], y1[9];
                for (int64_t i = 0; i < m * K; i++) x[i] = frand(-1, 1);
                qmm_opts o = qmm_opts_default();
                o.level = l;
                CHECK(qmatmul_ex(pool2, &r.q, x, m, y, &o, NULL) == OPTIQ_OK);
                int ok = 1;
                for (int64_t i = 0; i < m; i++) {
                    CHECK(qmatmul_ex(NULL, &r.q, x + i * K, 1, y1, &o, NULL) == OPTIQ_OK);
                    ok &= memcmp(y1, y + i * O, sizeof y1) == 0;
                }
                char fname[64];
                fmt_name(FMTS[fi].fmt, FMTS[fi].sdt, fname, sizeof fname);
                CHECKF(ok, "%s %s", cpu_level_name((cpu_level)l), fname);
                free(x);
                rq_free(&r);
            }
    }

    for (TEST_CASE("row strides: ldx / ldy leave the gaps alone")) {
        rq r;
        rq_make(&r, (qformat){QMODE_AFFINE, 4, 32}, 1, 19, 96, DT_BF16);
        int64_t m = 3, ldx = 101, ldy = 23;
        float x[3 * 101], y[3 * 23], yd[3 * 19], xd[3 * 96];
        for (int i = 0; i < 3 * 101; i++) x[i] = frand(-1, 1);
        for (int i = 0; i < 3; i++) memcpy(xd + i * 96, x + i * ldx, 96 * sizeof(float));
        for (int i = 0; i < 3 * 23; i++) y[i] = 12345.0f;
        qmm_opts o = qmm_opts_default();
        o.ldx = ldx;
        o.ldy = ldy;
        CHECK(qmatmul_ex(pool2, &r.q, x, m, y, &o, NULL) == OPTIQ_OK);
        CHECK(qmatmul(pool2, &r.q, xd, m, yd, NULL) == OPTIQ_OK);
        int ok = 1;
        for (int i = 0; i < 3; i++) {
            ok &= memcmp(y + i * ldy, yd + i * 19, 19 * sizeof(float)) == 0;
            for (int j = 19; j < 23; j++) ok &= y[i * ldy + j] == 12345.0f;
        }
        CHECK(ok);
        rq_free(&r);
    }

    for (TEST_CASE("MoE: qmatmul_moe equals per-expert qmatmul_ex bit for bit (every level, 3 formats)")) {
        static const qformat mf[3] = {{QMODE_AFFINE, 4, 64}, {QMODE_AFFINE, 8, 32}, {QMODE_MXFP4, 4, 32}};
        for (int l = 0; l <= (int)detected; l++)
            for (int k = 0; k < 3; k++) {
                const int64_t E = 5, O = 27, K = 192, m = 23;
                rq r;
                rq_make(&r, mf[k], E, O, K, mf[k].mode == QMODE_AFFINE ? DT_BF16 : DT_U8);
                float *x = malloc((size_t)(m * K) * sizeof(float)), *y = malloc((size_t)(m * O) * sizeof(float));
                float yi[27];
                int32_t ex[23];
                for (int64_t i = 0; i < m * K; i++) x[i] = frand(-1, 1);
                for (int i = 0; i < m; i++)
                    ex[i] = i == 5 ? 4 : (int32_t)(rnd() % 4) * (i % 3 ? 1 : 0); /* expert 0 often, 4 once */
                qmm_opts o = qmm_opts_default();
                o.level = l;
                CHECK(qmatmul_moe(pool2, &r.q, ex, x, m, y, &o, NULL) == OPTIQ_OK);
                int ok = 1;
                for (int i = 0; i < m; i++) {
                    o.mat = ex[i];
                    CHECK(qmatmul_ex(NULL, &r.q, x + i * K, 1, yi, &o, NULL) == OPTIQ_OK);
                    ok &= memcmp(yi, y + i * O, sizeof yi) == 0;
                }
                o.mat = 0;
                CHECKF(ok, "level %s format %d", cpu_level_name((cpu_level)l), k);
                int32_t bad[23];
                memcpy(bad, ex, sizeof bad);
                bad[22] = 5;
                optiq_error err;
                CHECK(qmatmul_moe(pool2, &r.q, bad, x, m, y, &o, &err) == OPTIQ_ERR_INVALID_ARG);
                free(x);
                free(y);
                rq_free(&r);
            }
    }

    for (TEST_CASE("mxfp8 NaN code (0x7F) gives NaN on every level, like mx.dequantize")) {
        rq r;
        rq_make(&r, (qformat){QMODE_MXFP8, 8, 32}, 1, 3, 64, DT_U8);
        ((uint8_t *)r.q.w)[64 + 5] = 0x7f; /* row 1 */
        float x[64], y[3];
        for (int i = 0; i < 64; i++) x[i] = frand(-1, 1);
        for (int l = 0; l <= (int)detected; l++) {
            qmm_opts o = qmm_opts_default();
            o.level = l;
            CHECK(qmatmul_ex(NULL, &r.q, x, 1, y, &o, NULL) == OPTIQ_OK);
            CHECKF(!isnan(y[0]) && isnan(y[1]) && !isnan(y[2]), "level %s: %g %g %g", cpu_level_name((cpu_level)l),
                   y[0], y[1], y[2]);
        }
        rq_free(&r);
    }

    for (TEST_CASE("bad arguments are refused with a message")) {
        rq r;
        rq_make(&r, (qformat){QMODE_AFFINE, 4, 64}, 2, 8, 128, DT_BF16);
        float x[128], y[8];
        memset(x, 0, sizeof x);
        optiq_error err;
        qmm_opts o = qmm_opts_default();
        o.mat = 2;
        CHECK(qmatmul_ex(NULL, &r.q, x, 1, y, &o, &err) == OPTIQ_ERR_INVALID_ARG);
        qweight bad = r.q;
        bad.fmt.bits = 7;
        CHECK(qmatmul(NULL, &bad, x, 1, y, &err) == OPTIQ_ERR_UNSUPPORTED);
        bad = r.q;
        bad.cols = 100;
        CHECK(qmatmul(NULL, &bad, x, 1, y, &err) == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "group size"));
        bad = r.q;
        bad.biases = NULL;
        CHECK(qmatmul(NULL, &bad, x, 1, y, &err) == OPTIQ_ERR_FORMAT);
        CHECK(qmatmul(NULL, &r.q, x, 0, y, &err) == OPTIQ_OK); /* m = 0: nothing to do */
        rq_free(&r);
    }

    for (TEST_CASE("quantizer: pool and no pool agree; f32 round trip error within one step")) {
        const int64_t R = 37, K = 256;
        float *w = malloc((size_t)(R * K) * sizeof(float));
        for (int64_t i = 0; i < R * K; i++) w[i] = frand(-0.1f, 0.1f);
        uint8_t wq[2][37 * 256], sc[2][37 * 8 * 4], bi[2][37 * 8 * 4];
        for (int p = 0; p < 2; p++)
            CHECK(quantize_rows(p ? pool2 : NULL, (qformat){QMODE_AFFINE, 4, 32}, QDEV_CPU, w, DT_F32, R, K, wq[p],
                                sc[p], bi[p], DT_F32, NULL) == OPTIQ_OK);
        CHECK(memcmp(wq[0], wq[1], (size_t)(R * K / 2)) == 0 && memcmp(sc[0], sc[1], (size_t)(R * 8 * 4)) == 0);
        qweight q = {{QMODE_AFFINE, 4, 32}, 1, R, K, wq[0], sc[0], bi[0], DT_F32};
        float row[256];
        double worst = 0; /* |deq - w| in steps |s| */
        for (int64_t r = 0; r < R; r++) {
            qdequant_f32(&q, r, 0, K, row);
            for (int64_t k = 0; k < K; k++) {
                float s = fabsf(load_as_f32(sc[0], DT_F32, (size_t)(r * 8 + k / 32)));
                double e = fabs((double)row[k] - w[r * K + k]) / s;
                if (e > worst) worst = e;
            }
        }
        /* rint gives half a step inside the range; MLX snaps the scale to edge / q0
         * with |q0| <= |edge / scale| + 1/2 and |edge / scale| >= n / 2, which can
         * push the far end of the group up to one step past code n = 2^b - 1. */
        CHECKF(worst <= 1.001, "round trip error %.3f steps", worst);
        printf("     max round-trip error %.3f steps\n", worst);
        free(w);
    }

    qmatmul_release_scratch();
    pool_free(pool1);
    pool_free(pool2);
    return test_finish();
}
