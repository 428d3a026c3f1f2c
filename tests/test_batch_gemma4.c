/*
 * test_batch_gemma4.c — batched decode (lm_forward_batch) of the Gemma-4 text
 * tower against the same sequences run one by one with lm_forward.
 *
 * On every gemma4-* text fixture (tests/fixtures/models, window 32) and on the
 * synthetic gemma4-tiny (window 8), on the exact and on the fast path: five
 * sequences prefilled with 3, 10, 33, 1 and 40 tokens (the longer ones have
 * wrapped their sliding rings), then 40 batched decode steps, each sequence
 * fed its own argmax, so the shorter ones cross the window during decode.
 *
 * Tolerance: every logits row within max|batch - serial| <= 1e-5 * max|serial|
 * per step and the same argmax at every step. The batched step runs each
 * product over n rows instead of one; the kernels prepare and accumulate
 * each activation row on its own (nn.h, qmatmul.h: row blocks share the
 * weight pass, not sums), so the figures printed are 0 (bit-identical) and
 * the bound only leaves room for a kernel that would reorder a row's sum by
 * row count. A differing argmax is reported, not forgiven (on the MoE
 * fixture too: the router runs on f32 activations and a row's scores do not
 * depend on its batch).
 *
 * Also: n = 1 equals lm_forward; a batch with a full cache fails with
 * OPTIQ_ERR_CONTEXT and leaves every cache as it was; aggregate tokens/s of
 * 64 steps for n = 1, 2, 4, 8 batched vs 8 serial sequences on
 * gemma4-e2b-mixed (figures only), and on the synthetic gemma4-e2b (2.6 GB,
 * about 10 s to build) when OPTIQ_BENCH_BATCH_E2B=1.
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

static thread_pool *pool;

#define N_SEQ 5
#define N_STEPS 40
static const int PROMPT_LEN[N_SEQ] = {3, 10, 33, 1, 40};

static const char *const FIXTURES[] = {"gemma4-e2b-bf16", "gemma4-e2b-mixed", "gemma4-keqv-mixed", "gemma4-moe-mixed",
                                       "gemma4-unified-bf16"};
#define N_FIX (sizeof FIXTURES / sizeof FIXTURES[0])

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return mb > 0 ? md / mb : md;
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static lm_model *load_fixture(const char *name, optiq_error *e) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s%s", test_path("tests/fixtures/models/"), name);
    lm_model *m = NULL;
    return lm_load(dir, &m, e) == OPTIQ_OK ? m : NULL;
}

static lm_model *load_synthetic(const char *name, optiq_error *e) {
    const synth_model *s = synthetic_find(name);
    model_dir *md = NULL;
    lm_model *m = NULL;
    if (!s) {
        snprintf(e->message, sizeof e->message, "no synthetic model %s", name);
        return NULL;
    }
    if (synthetic_model_dir(s, 1, pool, &md, NULL, e) != OPTIQ_OK) return NULL;
    return lm_load_dir(md, &m, e) == OPTIQ_OK ? m : NULL;
}

/* Prompt s of len tokens, away from the low ids. */
static void prompt(int s, int len, int64_t vocab, int32_t *out) {
    for (int i = 0; i < len; i++) out[i] = (int32_t)(3 + (17 * s + 7 * i + (i * i) % 11) % (vocab - 3));
}

/* New caches (capacity cap) prefilled with the prompts; next[i] = argmax of
 * the last prompt logits. 0 with a message on failure. */
static int prefill(lm_model *m, int n, const int *len, int64_t cap, lm_cache **c, int32_t *next, float *lg,
                   optiq_error *e) {
    int64_t V = lm_get_info(m)->vocab_size;
    int32_t tok[256];
    for (int s = 0; s < n; s++) {
        c[s] = NULL;
        if (lm_cache_new(m, cap, &c[s], e) != OPTIQ_OK) return 0;
        prompt(s, len[s], V, tok);
        lm_forward_args a = {.tokens = tok, .n = len[s], .logits = lg};
        if (lm_forward(m, c[s], pool, &a, e) != OPTIQ_OK) return 0;
        next[s] = argmax(lg, V);
    }
    return 1;
}

static void free_caches(lm_cache **c, int n) {
    for (int i = 0; i < n; i++) lm_cache_free(c[i]);
}

/* ---- batched vs serial ---- */

static void test_parity(lm_model *m, const char *name, int exact) {
    char title[160];
    snprintf(title, sizeof title, "%s %s: 5 sequences (3/10/33/1/40 tokens), %d batched steps = serial", name,
             exact ? "exact" : "fast", N_STEPS);
    for (TEST_CASE(title)) {
        lm_set_exact(m, exact);
        optiq_error e = {0};
        int64_t V = lm_get_info(m)->vocab_size;
        float *ser = malloc(sizeof(float) * (size_t)(N_SEQ * N_STEPS * V)); /* (seq, step, V) */
        float *bat = malloc(sizeof(float) * (size_t)(N_SEQ * V));          /* (seq, V) */
        int32_t ser_tok[N_SEQ][N_STEPS], next[N_SEQ];
        lm_cache *c[N_SEQ] = {0};
        /* serial reference: each sequence alone, step by step */
        int ok = prefill(m, N_SEQ, PROMPT_LEN, 128, c, next, bat, &e);
        for (int s = 0; ok && s < N_SEQ; s++) {
            int32_t cur = next[s];
            for (int t = 0; ok && t < N_STEPS; t++) {
                float *lg = ser + ((int64_t)s * N_STEPS + t) * V;
                ser_tok[s][t] = cur;
                lm_forward_args a = {.tokens = &cur, .n = 1, .logits = lg};
                ok = lm_forward(m, c[s], pool, &a, &e) == OPTIQ_OK;
                cur = argmax(lg, V);
            }
        }
        CHECKF(ok, "serial run: %s", e.message);
        free_caches(c, N_SEQ);
        ok = ok && prefill(m, N_SEQ, PROMPT_LEN, 128, c, next, bat, &e);
        CHECKF(ok, "prefill: %s", e.message);
        double worst = 0;
        int diverged = 0;
        for (int t = 0; ok && t < N_STEPS && !diverged; t++) {
            for (int s = 0; s < N_SEQ; s++)
                if (next[s] != ser_tok[s][t]) {
                    CHECKF(0, "step %d: sequence %d is fed %d, serially %d", t, s, next[s], ser_tok[s][t]);
                    diverged = 1;
                }
            if (diverged) break;
            if (lm_forward_batch(m, c, next, N_SEQ, pool, bat, &e) != OPTIQ_OK) {
                CHECKF(0, "step %d: %s", t, e.message);
                break;
            }
            for (int s = 0; s < N_SEQ; s++) {
                const float *row = bat + (int64_t)s * V, *ref = ser + ((int64_t)s * N_STEPS + t) * V;
                double r = rel_err(row, ref, V);
                if (r > worst || r != r) worst = r;
                CHECKF(r <= 1e-5, "step %d sequence %d: logits rel err %.3g", t, s, r);
                CHECKF(lm_cache_pos(c[s]) == PROMPT_LEN[s] + t + 1, "step %d sequence %d: position %lld", t, s,
                       (long long)lm_cache_pos(c[s]));
                next[s] = argmax(row, V);
            }
        }
        printf("  %-22s %-5s max rel err %.3g over %d steps x %d sequences%s\n", name, exact ? "exact" : "fast",
               worst, N_STEPS, N_SEQ, diverged ? " (tokens diverged)" : "");
        free_caches(c, N_SEQ);
        free(ser);
        free(bat);
    }
}

static void test_single(lm_model *m, const char *name) {
    char title[160];
    snprintf(title, sizeof title, "%s: a batch of one equals lm_forward, 20 steps", name);
    for (TEST_CASE(title)) {
        lm_set_exact(m, 0);
        optiq_error e = {0};
        int64_t V = lm_get_info(m)->vocab_size;
        float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
        lm_cache *ca = NULL, *cb = NULL;
        int32_t na, nb;
        int len = 30;
        int ok = prefill(m, 1, &len, 64, &ca, &na, a, &e) && prefill(m, 1, &len, 64, &cb, &nb, b, &e);
        CHECKF(ok, "%s", e.message);
        for (int t = 0; ok && t < 20; t++) {
            lm_forward_args fa = {.tokens = &na, .n = 1, .logits = a};
            ok = lm_forward(m, ca, pool, &fa, &e) == OPTIQ_OK &&
                 lm_forward_batch(m, &cb, &nb, 1, pool, b, &e) == OPTIQ_OK;
            CHECKF(ok, "step %d: %s", t, e.message);
            if (!ok) break;
            CHECKF(memcmp(a, b, sizeof(float) * (size_t)V) == 0, "step %d: logits differ (rel %.3g)", t,
                   rel_err(b, a, V));
            CHECK(lm_cache_pos(ca) == lm_cache_pos(cb));
            na = argmax(a, V);
            nb = argmax(b, V);
        }
        lm_cache_free(ca);
        lm_cache_free(cb);
        free(a);
        free(b);
    }
}

static void test_full_cache(lm_model *m, const char *name) {
    char title[160];
    snprintf(title, sizeof title, "%s: a batch with a full cache fails with OPTIQ_ERR_CONTEXT, others untouched", name);
    for (TEST_CASE(title)) {
        lm_set_exact(m, 0);
        optiq_error e = {0};
        int64_t V = lm_get_info(m)->vocab_size;
        enum { N = 3 };
        int len[N] = {12, 40, 5}; /* the second fills its 40-token capacity */
        lm_cache *c[N] = {0}, *ref[N] = {0};
        int32_t next[N], rnext[N];
        float *lg = malloc(sizeof(float) * (size_t)(N * V)), *rl = malloc(sizeof(float) * (size_t)(N * V));
        int ok = prefill(m, N, len, 40, c, next, lg, &e) && prefill(m, N, len, 40, ref, rnext, rl, &e);
        CHECKF(ok, "%s", e.message);
        if (ok) {
            CHECK(lm_forward_batch(m, c, next, N, pool, lg, &e) == OPTIQ_ERR_CONTEXT);
            CHECKF(strstr(e.message, "full") != NULL, "message: %s", e.message);
            for (int i = 0; i < N; i++) CHECK(lm_cache_pos(c[i]) == len[i]);
            /* the others go on exactly as caches that never saw the failed call */
            lm_cache *c2[2] = {c[0], c[2]}, *r2[2] = {ref[0], ref[2]};
            int32_t t2[2] = {next[0], next[2]};
            CHECK(lm_forward_batch(m, c2, t2, 2, pool, lg, &e) == OPTIQ_OK);
            CHECK(lm_forward_batch(m, r2, t2, 2, pool, rl, &e) == OPTIQ_OK);
            CHECK(memcmp(lg, rl, sizeof(float) * (size_t)(2 * V)) == 0);
        }
        free_caches(c, N);
        free_caches(ref, N);
        free(lg);
        free(rl);
    }
}

/* ---- throughput (figures only) ---- */

/* Aggregate tokens/s of `steps` steps of n sequences (prompts of 8 tokens):
 * batched with lm_forward_batch, or serial (one lm_forward per sequence). */
static double tokens_per_s(lm_model *m, int n, int steps, int batched, optiq_error *e) {
    int64_t V = lm_get_info(m)->vocab_size;
    lm_cache *c[8] = {0};
    int32_t next[8];
    int len[8] = {8, 8, 8, 8, 8, 8, 8, 8};
    float *lg = malloc(sizeof(float) * (size_t)(n * V));
    double rate = -1;
    if (lg && prefill(m, n, len, 8 + steps, c, next, lg, e)) {
        double t0 = now_s();
        int ok = 1;
        for (int s = 0; ok && s < steps; s++) {
            if (batched) ok = lm_forward_batch(m, c, next, n, pool, lg, e) == OPTIQ_OK;
            for (int i = 0; ok && !batched && i < n; i++) {
                lm_forward_args a = {.tokens = &next[i], .n = 1, .logits = lg + (int64_t)i * V};
                ok = lm_forward(m, c[i], pool, &a, e) == OPTIQ_OK;
            }
            for (int i = 0; ok && i < n; i++) next[i] = argmax(lg + (int64_t)i * V, V);
        }
        if (ok) rate = (double)n * steps / (now_s() - t0);
    }
    free_caches(c, n);
    free(lg);
    return rate;
}

static void bench(lm_model *m, const char *name, int steps) {
    char title[160];
    snprintf(title, sizeof title, "%s: %d decode steps, tokens/s batched (n = 1, 2, 4, 8) and 8 serial", name, steps);
    for (TEST_CASE(title)) {
        lm_set_exact(m, 0);
        optiq_error e = {0};
        double serial = tokens_per_s(m, 8, steps, 0, &e);
        CHECKF(serial > 0, "%s", e.message);
        printf("  %-18s %2d threads  serial n=8: %8.1f tok/s;  batched:", name, pool_threads(pool), serial);
        for (int n = 1; n <= 8; n *= 2) {
            double r = tokens_per_s(m, n, steps, 1, &e);
            CHECKF(r > 0, "n = %d: %s", n, e.message);
            printf("  n=%d %8.1f", n, r);
        }
        printf(" tok/s\n");
    }
}

int main(void) {
    pool = pool_create(2);
    for (size_t i = 0; i <= N_FIX; i++) {
        const char *name = i < N_FIX ? FIXTURES[i] : "synthetic gemma4-tiny";
        optiq_error e = {0};
        lm_model *m = i < N_FIX ? load_fixture(name, &e) : load_synthetic("gemma4-tiny", &e);
        if (!m) {
            for (TEST_CASE(name)) CHECKF(0, "load: %s", e.message);
            continue;
        }
        test_parity(m, name, 1);
        test_parity(m, name, 0);
        test_single(m, name);
        if (i == 0) test_full_cache(m, name);
        if (i == 1) bench(m, name, 64);
        lm_free(m);
    }
    const char *big = getenv("OPTIQ_BENCH_BATCH_E2B");
    if (big && !strcmp(big, "1")) {
        optiq_error e = {0};
        double t0 = now_s();
        lm_model *m = load_synthetic("gemma4-e2b", &e);
        if (!m) {
            for (TEST_CASE("synthetic gemma4-e2b")) CHECKF(0, "load: %s", e.message);
        } else {
            printf("  synthetic gemma4-e2b built and loaded in %.1f s\n", now_s() - t0);
            bench(m, "synthetic gemma4-e2b", 64);
            lm_free(m);
        }
    }
    pool_free(pool);
    return test_finish();
}
