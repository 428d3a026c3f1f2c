/*
 * bench_synthetic.c — `optiq bench --synthetic NAME`: prefill and decode
 * speed of a random-weight model with a real checkpoint's shapes
 * (synthetic.h), and how close decode gets to its memory-bandwidth roofline.
 *
 * Per thread count:
 *   1. memory read bandwidth, measured right before the run (two threads'
 *      bandwidth is bimodal on small VMs: it depends on where the host puts
 *      them, so every figure carries the bandwidth measured beside it);
 *   2. the peak-RSS high-water mark is reset (Linux /proc/self/clear_refs),
 *      so the peak covers this run and not the bandwidth buffer;
 *   3. a fresh cache, one warm-up token (thread wake-up, scratch), reset;
 *   4. prefill: the prompt (random ids) in calls of PREFILL_CHUNK tokens,
 *      logits of the last token only;
 *   5. decode: one lm_forward per token with its logits, the next token the
 *      argmax (greedy), decode_tokens steps; each step timed too, for the
 *      median (on a shared machine the mean picks up other processes);
 *   6. peak RSS (getrusage ru_maxrss), then the bandwidth again.
 * The roofline is bandwidth / lm_decode_bytes: the decode speed if every
 * weight byte a token needs streamed from DRAM at the measured rate and
 * nothing else took time. The logits must be finite (random weights that
 * blew the activations up would make every timing meaningless).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/membw.h"
#include "bench/synthetic.h"
#include "models/model.h"
#include "text/grammar.h"

#define PREFILL_CHUNK 512                /* = the engine's default prefill chunk */
#define MEMBW_BYTES ((size_t)512 << 20)  /* as the main bench: 16x a 32 MiB L3 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- resident memory ---------------------------------------------------- */

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static double peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss * 1024.0 : 0.0;
}

/* 1 when the kernel reset the high-water mark ("5" to clear_refs, Linux 4.0+). */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

/* ---- one run ------------------------------------------------------------ */

typedef struct run_result {
    int threads;
    double bw_before, bw_after; /* GB/s */
    double prefill_s, decode_s;
    double decode_median_s;     /* median of the per-token times: robust to a busy machine */
    double peak_rss;
    int peak_reset;
    double masked_decode_s;     /* the decode again under a JSON-schema token mask (mask_tokenizer) */
    double mask_s;              /* of which computing the masks and following the tokens */
    int64_t documents;          /* documents the grammar completed during it */
} run_result;

/* The mask of a constrained decode: a grammar over a tokenizer's vocabulary. */
typedef struct mask_ctx {
    grammar *g;
    grammar_vocab *v;
    grammar_state st;
    int32_t eos;
    double seconds;
    int64_t documents;
} mask_ctx;

/* A schema of the kind response_format carries: nested object, array, enum, numbers. */
static const char MASK_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12}},\"address\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"maxLength\":8}},"
    "\"required\":[\"city\",\"zip\"]},\"kind\":{\"enum\":[\"person\",\"company\"]},\"score\":{\"type\":\"number\"}},"
    "\"required\":[\"name\",\"age\",\"tags\",\"address\",\"kind\",\"score\"],\"additionalProperties\":false}";

/* Mask the logits, then (after the caller's argmax) follow the token; a
 * finished document starts the next one. */
static void mask_logits(mask_ctx *mk, float *logits) {
    double t = now_s();
    grammar_mask_logits(mk->g, &mk->st, mk->v, logits);
    mk->seconds += now_s() - t;
}

static void mask_follow(mask_ctx *mk, int32_t id) {
    double t = now_s();
    if (id == mk->eos || !grammar_accept(mk->g, &mk->st, mk->v, id)) {
        mk->documents += id == mk->eos;
        grammar_start(mk->g, &mk->st);
    }
    mk->seconds += now_s() - t;
}

static int32_t argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

static int64_t non_finite(const float *x, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += !isfinite(x[i]);
    return k;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* steps: (D) room for the per-token decode times. */
/* mk: NULL, or the mask of a constrained decode (then only the decode time is recorded, in masked_decode_s). */
static optiq_status run_once(const lm_model *m, thread_pool *pool, const char *name, const int32_t *prompt,
                             int64_t P, int64_t D, float *logits, double *steps, run_result *r, mask_ctx *mk,
                             optiq_error *err) {
    int64_t V = lm_get_info(m)->vocab_size;
    lm_cache *c = NULL;
    optiq_status st = lm_cache_new(m, P + D, &c, err);
    if (st) return st;
    lm_forward_args a = {prompt, NULL, 1, NULL, logits, 0, NULL, NULL, NULL};
    if ((st = lm_forward(m, c, pool, &a, err))) goto out;
    lm_cache_reset(c);

    double t0 = now_s();
    for (int64_t i = 0; i < P && !st; i += PREFILL_CHUNK) {
        int64_t k = P - i < PREFILL_CHUNK ? P - i : PREFILL_CHUNK;
        lm_forward_args pa = {prompt + i, NULL, k, NULL, i + k == P ? logits : NULL, 0, NULL, NULL, NULL};
        st = lm_forward(m, c, pool, &pa, err);
    }
    r->prefill_s = now_s() - t0;
    if (st) goto out;
    int64_t bad = non_finite(logits, V);
    if (bad) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "synthetic %s: %lld of %lld prefill logits are not finite (%d threads)",
                     name, (long long)bad, (long long)V, r->threads);
        goto out;
    }

    if (mk) {
        grammar_start(mk->g, &mk->st);
        mk->seconds = 0;
        mk->documents = 0;
        mask_logits(mk, logits);
    }
    int32_t next = argmax(logits, V);
    if (mk) mask_follow(mk, next);
    t0 = now_s();
    double t_prev = t0;
    for (int64_t i = 0; i < D && !st; i++) {
        lm_forward_args da = {&next, NULL, 1, NULL, logits, 0, NULL, NULL, NULL};
        st = lm_forward(m, c, pool, &da, err);
        if (mk) mask_logits(mk, logits);
        next = argmax(logits, V);
        if (mk) mask_follow(mk, next);
        double t = now_s();
        steps[i] = t - t_prev;
        t_prev = t;
    }
    if (mk) {
        r->masked_decode_s = t_prev - t0;
        r->mask_s = mk->seconds;
        r->documents = mk->documents;
        goto out; /* the unmasked run holds the other figures */
    }
    r->decode_s = t_prev - t0;
    if (st) goto out;
    qsort(steps, (size_t)D, sizeof *steps, cmp_double);
    r->decode_median_s = D % 2 ? steps[D / 2] : 0.5 * (steps[D / 2 - 1] + steps[D / 2]);
    if ((bad = non_finite(logits, V)))
        st = err_set(err, OPTIQ_ERR_FORMAT, "synthetic %s: %lld of %lld logits are not finite after %lld decode steps "
                     "(%d threads)", name, (long long)bad, (long long)V, (long long)D, r->threads);
out:
    lm_cache_free(c);
    return st;
}

/* ---- the benchmark ------------------------------------------------------ */

static void add_run(cJSON *arr, const run_result *r, int64_t P, int64_t D, double bytes_per_token) {
    cJSON *e = cJSON_CreateObject();
    double bw = r->bw_before > r->bw_after ? r->bw_before : r->bw_after;
    double tps = (double)D / r->decode_s, roof = bw * 1e9 / bytes_per_token;
    cJSON_AddNumberToObject(e, "threads", r->threads);
    cJSON_AddNumberToObject(e, "prefill_seconds", r->prefill_s);
    cJSON_AddNumberToObject(e, "prefill_tokens_per_s", (double)P / r->prefill_s);
    cJSON_AddNumberToObject(e, "decode_seconds", r->decode_s);
    cJSON_AddNumberToObject(e, "decode_tokens_per_s", tps);
    cJSON_AddNumberToObject(e, "decode_ms_per_token", 1e3 * r->decode_s / (double)D);
    cJSON_AddNumberToObject(e, "decode_median_ms_per_token", 1e3 * r->decode_median_s);
    cJSON_AddNumberToObject(e, "memory_bw_before_gbs", r->bw_before);
    cJSON_AddNumberToObject(e, "memory_bw_after_gbs", r->bw_after);
    cJSON_AddNumberToObject(e, "roofline_tokens_per_s", roof);
    cJSON_AddNumberToObject(e, "decode_fraction_of_roofline", tps / roof);
    cJSON_AddNumberToObject(e, "decode_gbs", tps * bytes_per_token / 1e9);
    cJSON_AddNumberToObject(e, "peak_rss_bytes", r->peak_rss);
    cJSON_AddBoolToObject(e, "peak_rss_reset", r->peak_reset);
    if (r->masked_decode_s > 0) {
        double mtps = (double)D / r->masked_decode_s;
        cJSON_AddNumberToObject(e, "masked_decode_tokens_per_s", mtps);
        cJSON_AddNumberToObject(e, "mask_ms_per_token", 1e3 * r->mask_s / (double)D);
        cJSON_AddNumberToObject(e, "mask_decode_slowdown", 1.0 - mtps / tps);
        cJSON_AddNumberToObject(e, "mask_documents", (double)r->documents);
    }
    cJSON_AddItemToArray(arr, e);
}

optiq_status bench_synthetic(thread_pool *pool, const optiq_bench_params *p, const int *threads, int n_threads,
                             cJSON *root, optiq_error *err) {
    const synth_model *s = synthetic_find(p->synthetic);
    if (!s)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: unknown synthetic model '%s' (known: %s)",
                       p->synthetic ? p->synthetic : "(null)", synthetic_names());
    int64_t P = p->prefill_tokens > 0 ? p->prefill_tokens : 512, D = p->decode_tokens > 0 ? p->decode_tokens : 128;
    if (P + D > s->max_position)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "bench: %lld prompt + %lld decode tokens exceed %s's context of %lld",
                       (long long)P, (long long)D, s->name, (long long)s->max_position);

    /* build and load; the weights' RSS is what building them added */
    int reset = reset_peak_rss();
    double rss0 = rss_bytes(), t0 = now_s();
    model_dir *md = NULL;
    uint64_t image = 0;
    optiq_status st = synthetic_model_dir(s, 0x5eed, pool, &md, &image, err);
    double t_build = now_s() - t0;
    if (st) return st;
    lm_model *m = NULL;
    t0 = now_s();
    if ((st = lm_load_dir(md, &m, err))) { /* md is closed by the failed load */
        err_prefix(err, "synthetic %s: ", s->name);
        return st;
    }
    double t_load = now_s() - t0, rss_weights = rss_bytes() - rss0, peak_load = peak_rss_bytes();
    uint64_t bytes = lm_decode_bytes(m);
    int64_t V = lm_get_info(m)->vocab_size;

    mask_ctx mk = {0}, *mkp = NULL;
    optiq_tokenizer *mtok = NULL;
    if (p->mask_tokenizer) { /* the vocabulary's tokens beyond V are cut, ids past it have no token */
        cJSON *schema = cJSON_Parse(MASK_SCHEMA);
        if (!(st = optiq_tokenizer_load(p->mask_tokenizer, &mtok, err))) {
            const int32_t *eos;
            size_t n_eos = optiq_tokenizer_eos_ids(mtok, &eos);
            mk.eos = n_eos ? eos[0] : -1;
            mk.v = grammar_vocab_new(mtok, V, eos, n_eos);
            mk.g = grammar_new();
            if (!mk.v || !mk.g || !schema) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory (token mask)");
            else st = grammar_add_schema(mk.g, schema, GRAMMAR_JSON, err);
            mkp = &mk;
        }
        cJSON_Delete(schema);
    }
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)P);
    float *logits = malloc(sizeof(float) * (size_t)V);
    double *steps = malloc(sizeof(double) * (size_t)D);
    run_result *runs = calloc((size_t)n_threads, sizeof *runs);
    if (!prompt || !logits || !steps || !runs) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    uint64_t x = 0x243f6a8885a308d3ull;
    for (int64_t i = 0; !st && i < P; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        prompt[i] = (int32_t)(x % (uint64_t)V);
    }
    for (int k = 0; !st && k < n_threads; k++) {
        run_result *r = &runs[k];
        r->threads = pool_set_threads(pool, threads[k]);
        r->bw_before = mem_read_bandwidth_gbs(pool, MEMBW_BYTES, 3);
        r->peak_reset = reset_peak_rss();
        st = run_once(m, pool, s->name, prompt, P, D, logits, steps, r, NULL, err);
        r->peak_rss = peak_rss_bytes();
        if (!st && mkp) st = run_once(m, pool, s->name, prompt, P, D, logits, steps, r, mkp, err);
        r->bw_after = mem_read_bandwidth_gbs(pool, MEMBW_BYTES, 3);
    }

    if (!st) {
        cJSON *o = cJSON_AddObjectToObject(root, "synthetic");
        cJSON_AddStringToObject(o, "model", s->name);
        cJSON_AddStringToObject(o, "model_type", s->model_type);
        cJSON *q = cJSON_AddObjectToObject(o, "quantization");
        cJSON_AddStringToObject(q, "mode", "affine");
        cJSON_AddNumberToObject(q, "bits", s->bits);
        cJSON_AddNumberToObject(q, "group_size", s->group_size);
        cJSON_AddNumberToObject(o, "matrix_parameters", (double)synthetic_matrix_params(s));
        cJSON_AddNumberToObject(o, "weight_bytes", (double)image);
        cJSON_AddNumberToObject(o, "decode_bytes_per_token", (double)bytes);
        cJSON_AddNumberToObject(o, "build_seconds", t_build);
        cJSON_AddNumberToObject(o, "load_seconds", t_load);
        cJSON_AddNumberToObject(o, "weights_rss_bytes", rss_weights);
        cJSON_AddNumberToObject(o, "load_peak_rss_bytes", peak_load);
        cJSON_AddBoolToObject(o, "load_peak_rss_reset", reset);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)P);
        cJSON_AddNumberToObject(o, "prefill_chunk", PREFILL_CHUNK);
        cJSON_AddNumberToObject(o, "decode_tokens", (double)D);
        cJSON_AddBoolToObject(o, "logits_finite", 1);
        if (mkp) {
            cJSON *mo = cJSON_AddObjectToObject(o, "mask");
            cJSON_AddStringToObject(mo, "tokenizer", p->mask_tokenizer);
            cJSON_AddNumberToObject(mo, "tokenizer_vocab", (double)optiq_tokenizer_vocab_size(mtok));
            cJSON_AddStringToObject(mo, "schema", MASK_SCHEMA);
        }
        cJSON *arr = cJSON_AddArrayToObject(o, "runs");
        for (int k = 0; k < n_threads; k++) add_run(arr, &runs[k], P, D, (double)bytes);
    }
    free(runs);
    free(steps);
    free(prompt);
    free(logits);
    grammar_free(mk.g);
    grammar_vocab_free(mk.v);
    optiq_tokenizer_free(mtok);
    lm_free(m);
    return st;
}
