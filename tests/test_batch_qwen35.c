/*
 * test_batch_qwen35.c — batched decode (lm_forward_batch) of the Qwen3.5
 * text tower against the same sequences run one by one (lm_forward).
 *
 * On each qwen35-* fixture, exact path and default fast path: five
 * sequences with prompts of different lengths (so every attention layer sees
 * a different position per row and every linear layer a different state)
 * decode 8 greedy steps as one batch, and the same prompts through lm_forward
 * one sequence at a time.
 *
 * Tolerance: logits within 1e-5 x max|logit| per sequence and step, and the
 * same argmax. Each batch row runs the same ops in the same order as the
 * sequence alone; what may differ is only how the matmul kernels tile rows
 * (matmul.h, qmatmul.h: a row's result does not depend on the row count),
 * so the figures printed are expected to be 0.
 *
 * Also: a batch of one equals lm_forward; a batch holding a full sequence
 * fails with OPTIQ_ERR_CONTEXT and leaves the others untouched; a sanity
 * timing of 8 sequences x 64 steps batched and serial on qwen35-dense-mixed.
 *
 * OPTIQ_BATCH_BENCH=1 adds the same timing on the synthetic qwen3_5-0.8b
 * (bench/synthetic.h: the real checkpoint's shapes, 4-bit) for n = 1, 2, 4,
 * 8 sequences (OPTIQ_BATCH_STEPS decode steps each, default 16): a figure,
 * not a check, and too slow for the default run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/threadpool.h"
#include "bench/synthetic.h"
#include "models/model.h"
#include "test.h"

static const char *const FIXTURES[] = {"qwen35-dense-bf16", "qwen35-dense-mixed", "qwen35-moe-mixed", "qwen35-moe-bf16"};
#define N_FIX (sizeof FIXTURES / sizeof FIXTURES[0])

#define NS 5    /* sequences */
#define STEPS 8 /* decode steps */
#define CAP 64  /* cache capacity */
#define TOL 1e-5

static thread_pool *pool;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d; /* NaN propagates */
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return mb > 0 ? md / mb : md;
}

static int32_t argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

/* A prompt of len valid ids, different per seed. */
static void make_prompt(int32_t *ids, int len, int seed, int64_t vocab) {
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(seed + 1);
    for (int i = 0; i < len; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
    }
}

/* Prefill c with a prompt of len tokens; *next = the argmax of the last logits. */
static optiq_status prefill(lm_model *m, lm_cache *c, int len, int seed, float *logits, int32_t *next,
                            optiq_error *err) {
    int64_t V = lm_get_info(m)->vocab_size;
    int32_t ids[64];
    make_prompt(ids, len, seed, V);
    lm_forward_args a = {.tokens = ids, .n = len, .logits = logits};
    optiq_status st = lm_forward(m, c, pool, &a, err);
    if (st == OPTIQ_OK) *next = argmax(logits, V);
    return st;
}

static optiq_status step_one(lm_model *m, lm_cache *c, int32_t tok, float *logits, optiq_error *err) {
    lm_forward_args a = {.tokens = &tok, .n = 1, .logits = logits};
    return lm_forward(m, c, pool, &a, err);
}

/* ---- batch == serial ---- */

static void check_fixture(const char *fix, int exact) {
    char name[256], dir[512];
    snprintf(dir, sizeof dir, "%s", test_path("tests/fixtures/models/"));
    strncat(dir, fix, sizeof dir - strlen(dir) - 1);
    const char *mode = exact ? "exact" : "fast";
    optiq_error err = {0};
    lm_model *m = NULL;
    if (lm_load(dir, &m, &err)) {
        snprintf(name, sizeof name, "%s %s: load", fix, mode);
        for (TEST_CASE(name)) CHECKF(0, "%s", err.message);
        return;
    }
    lm_set_exact(m, exact);
    int64_t V = lm_get_info(m)->vocab_size;
    static const int LENS[NS] = {3, 10, 17, 1, 25};
    lm_cache *a[NS] = {0}, *b[NS] = {0}, *full = NULL;
    float *lb = malloc(sizeof(float) * (size_t)(NS * V)), *ls = malloc(sizeof(float) * (size_t)(NS * V));
    int32_t tok[NS];

    snprintf(name, sizeof name, "%s %s: batch of %d x %d steps equals one by one", fix, mode, NS, STEPS);
    for (TEST_CASE(name)) {
        int ok = lb && ls;
        for (int i = 0; ok && i < NS; i++) {
            int32_t t2;
            ok = !lm_cache_new(m, CAP, &a[i], &err) && !lm_cache_new(m, CAP, &b[i], &err) &&
                 !prefill(m, a[i], LENS[i], i, lb, &tok[i], &err) && !prefill(m, b[i], LENS[i], i, ls, &t2, &err);
        }
        CHECKF(ok, "setup: %s", err.message);
        if (!ok) break;
        double worst = 0;
        int same = 1;
        for (int s = 0; s < STEPS && ok; s++) {
            optiq_status st = lm_forward_batch(m, a, tok, NS, pool, lb, &err);
            CHECKF(st == OPTIQ_OK, "step %d: %s", s, err.message);
            for (int i = 0; i < NS && st == OPTIQ_OK; i++) {
                if ((st = step_one(m, b[i], tok[i], ls + i * V, &err))) CHECKF(0, "serial: %s", err.message);
                double e = rel_err(lb + i * V, ls + i * V, V);
                if (!(e <= worst)) worst = e;
                int32_t ta = argmax(lb + i * V, V), tb = argmax(ls + i * V, V);
                if (ta != tb) same = 0;
                CHECKF(lm_cache_pos(a[i]) == lm_cache_pos(b[i]), "step %d seq %d: pos %lld vs %lld", s, i,
                       (long long)lm_cache_pos(a[i]), (long long)lm_cache_pos(b[i]));
                tok[i] = tb;
            }
            ok = st == OPTIQ_OK;
        }
        printf("     max rel err %.3g over %d sequences x %d steps\n", worst, NS, STEPS);
        CHECKF(worst <= TOL, "max rel err %.3g > %g", worst, TOL);
        CHECKF(same, "argmax differs");
    }

    snprintf(name, sizeof name, "%s %s: batch of one equals lm_forward", fix, mode);
    for (TEST_CASE(name)) {
        if (!a[0] || !b[0]) { CHECKF(0, "no caches"); break; }
        optiq_status st = lm_forward_batch(m, a, tok, 1, pool, lb, &err);
        CHECKF(st == OPTIQ_OK, "batch: %s", err.message);
        if (st) break;
        CHECKF(!step_one(m, b[0], tok[0], ls, &err), "serial: %s", err.message);
        double e = rel_err(lb, ls, V);
        CHECKF(e <= TOL && argmax(lb, V) == argmax(ls, V), "rel err %.3g, argmax %d vs %d", e, argmax(lb, V),
               argmax(ls, V));
        tok[0] = argmax(ls, V);
    }

    snprintf(name, sizeof name, "%s %s: a full sequence fails the batch, others untouched", fix, mode);
    for (TEST_CASE(name)) {
        if (!a[1] || !a[2]) { CHECKF(0, "no caches"); break; }
        int32_t t;
        if (lm_cache_new(m, 4, &full, &err) || prefill(m, full, 4, 9, ls, &t, &err)) {
            CHECKF(0, "setup: %s", err.message);
            break;
        }
        lm_cache *mix[3] = {a[1], full, a[2]};
        int32_t toks[3] = {tok[1], t, tok[2]};
        int64_t p1 = lm_cache_pos(a[1]), p2 = lm_cache_pos(a[2]);
        optiq_status st = lm_forward_batch(m, mix, toks, 3, pool, lb, &err);
        CHECKF(st == OPTIQ_ERR_CONTEXT, "status %d (%s), want OPTIQ_ERR_CONTEXT", (int)st, err.message);
        CHECK(lm_cache_pos(a[1]) == p1 && lm_cache_pos(a[2]) == p2 && lm_cache_pos(full) == 4);
        /* the untouched sequences still decode as their serial twins */
        lm_cache *two[2] = {a[1], a[2]};
        int32_t tt[2] = {tok[1], tok[2]};
        CHECKF(!lm_forward_batch(m, two, tt, 2, pool, lb, &err), "batch: %s", err.message);
        CHECKF(!step_one(m, b[1], tok[1], ls, &err) && !step_one(m, b[2], tok[2], ls + V, &err), "serial: %s",
               err.message);
        double e = fmax(rel_err(lb, ls, V), rel_err(lb + V, ls + V, V));
        CHECKF(e <= TOL, "after the failed batch: rel err %.3g", e);
    }

    for (int i = 0; i < NS; i++) lm_cache_free(a[i]), lm_cache_free(b[i]);
    lm_cache_free(full);
    free(lb), free(ls);
    lm_free(m);
}

/* ---- timing ---- */

/* Seconds for `steps` decode steps of n sequences (prompts of 4 tokens),
 * batched (*tb) and one by one (*ts). */
static optiq_status time_decode(lm_model *m, int n, int steps, double *tb, double *ts, optiq_error *err) {
    int64_t V = lm_get_info(m)->vocab_size;
    lm_cache *c[8] = {0};
    int32_t tok[8];
    float *lg = malloc(sizeof(float) * (size_t)(n * V));
    optiq_status st = lg ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && st == OPTIQ_OK; i++) {
        st = lm_cache_new(m, 4 + steps, &c[i], err);
        if (st == OPTIQ_OK) st = prefill(m, c[i], 4, i, lg, &tok[i], err);
    }
    double t0 = now_s();
    for (int s = 0; s < steps && st == OPTIQ_OK; s++) {
        st = lm_forward_batch(m, c, tok, n, pool, lg, err);
        for (int i = 0; i < n; i++) tok[i] = argmax(lg + i * V, V);
    }
    *tb = now_s() - t0;
    for (int i = 0; i < n; i++) lm_cache_reset(c[i]);
    for (int i = 0; i < n && st == OPTIQ_OK; i++) st = prefill(m, c[i], 4, i, lg, &tok[i], err);
    t0 = now_s();
    for (int s = 0; s < steps && st == OPTIQ_OK; s++)
        for (int i = 0; i < n && st == OPTIQ_OK; i++) {
            st = step_one(m, c[i], tok[i], lg, err);
            tok[i] = argmax(lg, V);
        }
    *ts = now_s() - t0;
    for (int i = 0; i < n; i++) lm_cache_free(c[i]);
    free(lg);
    return st;
}

static void print_timing(const char *what, int n, int steps, double tb, double ts) {
    printf("     %s n=%d: batched %.2f ms/step (%.1f tok/s), one by one %.2f ms/step (%.1f tok/s), x%.2f\n", what, n,
           1e3 * tb / steps, n * steps / tb, 1e3 * ts / steps, n * steps / ts, ts / tb);
}

static void timing_fixture(void) {
    for (TEST_CASE("qwen35-dense-mixed: timing, 8 sequences x 64 steps (figure only)")) {
        optiq_error err = {0};
        lm_model *m = NULL;
        if (lm_load(test_path("tests/fixtures/models/qwen35-dense-mixed"), &m, &err)) {
            CHECKF(0, "%s", err.message);
            break;
        }
        double tb, ts;
        optiq_status st = time_decode(m, 8, 64, &tb, &ts, &err);
        CHECKF(st == OPTIQ_OK, "%s", err.message);
        if (st == OPTIQ_OK) print_timing("qwen35-dense-mixed", 8, 64, tb, ts);
        lm_free(m);
    }
}

static void timing_synthetic(void) {
    for (TEST_CASE("qwen3_5-0.8b (synthetic): batched vs one by one, n = 1, 2, 4, 8 (figure only)")) {
        const char *se = getenv("OPTIQ_BATCH_STEPS");
        int steps = se && atoi(se) > 0 ? atoi(se) : 16;
        optiq_error err = {0};
        model_dir *md = NULL;
        lm_model *m = NULL;
        double t0 = now_s();
        if (synthetic_model_dir(synthetic_find("qwen3_5-0.8b"), 0x5eed, pool, &md, NULL, &err) ||
            lm_load_dir(md, &m, &err)) {
            CHECKF(0, "%s", err.message);
            break;
        }
        printf("     built and loaded in %.1f s, %d threads, %d steps\n", now_s() - t0, pool_threads(pool), steps);
        for (int n = 1; n <= 8; n *= 2) {
            double tb, ts;
            optiq_status st = time_decode(m, n, steps, &tb, &ts, &err);
            CHECKF(st == OPTIQ_OK, "%s", err.message);
            if (st) break;
            print_timing("qwen3_5-0.8b", n, steps, tb, ts);
        }
        lm_free(m);
    }
}

int main(void) {
    pool = pool_create(0);
    if (!pool) {
        fprintf(stderr, "no thread pool\n");
        return 1;
    }
    for (size_t f = 0; f < N_FIX; f++) {
        check_fixture(FIXTURES[f], 1);
        check_fixture(FIXTURES[f], 0);
    }
    timing_fixture();
    if (getenv("OPTIQ_BATCH_BENCH")) timing_synthetic();
    pool_free(pool);
    return test_finish();
}
