/*
 * bench.c — the benchmarks behind `optiq bench` (the synthetic-model runs
 * of `--synthetic` are in bench_synthetic.c, those of `--serving` in
 * bench_serving.c).
 *
 * Quantized matrix-vector throughput is reported as GB/s of weight bytes
 * streamed (packed codes + scales + biases), next to the machine's measured
 * memory read bandwidth: decode is bandwidth-bound, so the ratio says how
 * close a kernel gets to the hardware limit. Two regimes per case:
 *   "streamed": the product cycles over enough copies of the matrix to exceed
 *               the last-level cache many times (what decode of a real model
 *               does: every layer's weights come from DRAM);
 *   "cached":   the same copy every call (the kernel's compute ceiling).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cpu.h"
#include "base/dtype.h"
#include "base/error.h"
#include "base/threadpool.h"
#include "bench/membw.h"
#include "bench/bench_vision.h"
#include "bench/bench_serving.h"
#include "bench/synthetic.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "quant/quantize.h"
#include "text/tokenizer.h"

#define STREAM_BYTES ((size_t)256 << 20) /* 8x a 32 MiB L3 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

optiq_bench_params optiq_bench_default(void) {
    return (optiq_bench_params){.max_threads = 0, .seconds = 0.4, .cpu_level = NULL, .model_dir = NULL,
                                .text_file = NULL, .synthetic = NULL, .prefill_tokens = 512, .decode_tokens = 128};
}

/* One quantized matrix replicated n_copies times, back to back. */
typedef struct qcopies {
    qweight w0;
    size_t wbytes, sbytes;          /* per copy: packed words, scales (= biases) */
    uint8_t *wq, *scales, *biases;  /* n_copies of each */
    int n_copies;
} qcopies;

static void qcopies_free(qcopies *c) {
    free(c->wq);
    free(c->scales);
    free(c->biases);
}

static optiq_status qcopies_make(thread_pool *pool, qformat fmt, int64_t rows, int64_t cols, qcopies *c,
                                 optiq_error *err) {
    memset(c, 0, sizeof *c);
    size_t n = (size_t)(rows * cols);
    uint16_t *w = malloc(n * 2);
    if (!w) return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) { /* roughly normal(0, 0.05): sum of 4 uniforms */
        float v = 0;
        for (int k = 0; k < 4; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            v += (float)(s >> 40) / 16777216.0f - 0.5f;
        }
        w[i] = f32_to_bf16(v * 0.087f);
    }
    c->wbytes = n * (size_t)fmt.bits / 8;
    c->sbytes = n / (size_t)fmt.group_size * 2;
    size_t per_copy = c->wbytes + 2 * c->sbytes;
    c->n_copies = (int)(STREAM_BYTES / per_copy) + 1;
    c->wq = malloc(c->wbytes * (size_t)c->n_copies);
    c->scales = malloc(c->sbytes * (size_t)c->n_copies);
    c->biases = malloc(c->sbytes * (size_t)c->n_copies);
    optiq_status st = OPTIQ_OK;
    if (!c->wq || !c->scales || !c->biases) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    if (!st) st = quantize_rows(pool, fmt, QDEV_CPU, w, DT_BF16, rows, cols, c->wq, c->scales, c->biases, DT_BF16, err);
    free(w);
    if (st) {
        qcopies_free(c);
        return st;
    }
    for (int k = 1; k < c->n_copies; k++) {
        memcpy(c->wq + k * c->wbytes, c->wq, c->wbytes);
        memcpy(c->scales + k * c->sbytes, c->scales, c->sbytes);
        memcpy(c->biases + k * c->sbytes, c->biases, c->sbytes);
    }
    c->w0 = (qweight){.fmt = fmt, .n_mats = 1, .rows = rows, .cols = cols, .w = c->wq, .scales = c->scales,
                      .biases = c->biases, .scale_dtype = DT_BF16};
    return OPTIQ_OK;
}

/* Seconds per matrix-vector product, cycling over `copies` copies. */
static double time_qmv(thread_pool *pool, const qcopies *c, int copies, const float *x, float *y, double seconds,
                       optiq_error *err) {
    qweight w = c->w0;
    int64_t calls = 0;
    double t0 = now_s(), dt = 0;
    /* warm-up pass (page faults, scratch growth) */
    if (qmatmul(pool, &w, x, 1, y, err)) return -1;
    t0 = now_s();
    do {
        for (int k = 0; k < copies; k++, calls++) {
            w.w = c->wq + (size_t)k * c->wbytes;
            w.scales = c->scales + (size_t)k * c->sbytes;
            w.biases = c->biases + (size_t)k * c->sbytes;
            if (qmatmul(pool, &w, x, 1, y, err)) return -1;
        }
        dt = now_s() - t0;
    } while (dt < seconds);
    return dt / (double)calls;
}

static optiq_status bench_qmatvec(thread_pool *pool, const optiq_bench_params *p, int max_threads,
                                  const double *membw, cJSON *out, optiq_error *err) {
    static const int BITS[] = {4, 8};
    static const int64_t SHAPES[][2] = {{1024, 3584}, {3584, 1024}};
    for (size_t b = 0; b < 2; b++)
        for (size_t s = 0; s < 2; s++) {
            qformat fmt = {QMODE_AFFINE, BITS[b], 64};
            int64_t rows = SHAPES[s][0], cols = SHAPES[s][1];
            qcopies c;
            optiq_status st = qcopies_make(pool, fmt, rows, cols, &c, err);
            if (st) return st;
            float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
            if (!x || !y) {
                free(x);
                free(y);
                qcopies_free(&c);
                return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
            }
            for (int64_t i = 0; i < cols; i++) x[i] = (float)sin(0.1 * (double)i);
            double bytes = (double)(c.wbytes + 2 * c.sbytes);
            for (int t = 1; t <= max_threads; t++) {
                pool_set_threads(pool, t);
                double sec_stream = time_qmv(pool, &c, c.n_copies, x, y, p->seconds, err);
                double sec_hot = sec_stream < 0 ? -1 : time_qmv(pool, &c, 1, x, y, p->seconds, err);
                if (sec_stream < 0 || sec_hot < 0) {
                    free(x);
                    free(y);
                    qcopies_free(&c);
                    return err->status ? err->status : OPTIQ_ERR_INVALID_ARG;
                }
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "mode", qmode_name(fmt.mode));
                cJSON_AddNumberToObject(e, "bits", fmt.bits);
                cJSON_AddNumberToObject(e, "group_size", fmt.group_size);
                cJSON_AddNumberToObject(e, "rows", (double)rows);
                cJSON_AddNumberToObject(e, "cols", (double)cols);
                cJSON_AddNumberToObject(e, "threads", t);
                cJSON_AddStringToObject(e, "kernel", cpu_level_name(qmatmul_level(&c.w0, NULL)));
                cJSON_AddNumberToObject(e, "weight_bytes", bytes);
                cJSON_AddNumberToObject(e, "streamed_us", sec_stream * 1e6);
                cJSON_AddNumberToObject(e, "streamed_gbs", bytes / sec_stream / 1e9);
                cJSON_AddNumberToObject(e, "streamed_fraction_of_memory_bw", bytes / sec_stream / 1e9 / membw[t]);
                cJSON_AddNumberToObject(e, "cached_us", sec_hot * 1e6);
                cJSON_AddNumberToObject(e, "cached_gbs", bytes / sec_hot / 1e9);
                cJSON_AddItemToArray(out, e);
            }
            free(x);
            free(y);
            qcopies_free(&c);
        }
    return OPTIQ_OK;
}

/* 1 MB of word-like text: pseudo-words of 1-4 syllables, punctuation and
 * line breaks, so that a per-word cache sees mostly new words (the figure then
 * bounds first-pass speed on real prose from below). */
static char *generated_text(size_t n) {
    static const char *const SYL[] = {"the", "an", "ing", "tion", "er", "re", "con", "pro", "al", "ly", "ment",
                                      "at", "or", "ex", "in", "ver", "com", "de", "ter", "est", "ous", "per",
                                      "un", "im", "for", "ble", "ate", "is", "it", "on", "ar", "ence"};
    static const char *const SEP[] = {" ", " ", " ", " ", " ", " ", ", ", ". ", ".\n", " "};
    char *t = malloc(n + 16);
    if (!t) return NULL;
    size_t k = 0;
    uint64_t s = 88172645463325252ull;
    while (k < n) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int nsyl = 1 + (int)(s % 4);
        for (int i = 0; i < nsyl && k < n; i++) {
            const char *y = SYL[(s >> (8 + 5 * i)) % 32];
            size_t l = strlen(y);
            if (k + l > n) break;
            memcpy(t + k, y, l);
            k += l;
        }
        const char *sep = SEP[(s >> 40) % 10];
        size_t l = strlen(sep);
        if (k + l > n) break;
        memcpy(t + k, sep, l);
        k += l;
    }
    t[k] = 0;
    return t;
}

static optiq_status bench_tokenizer(const optiq_bench_params *p, cJSON *root, optiq_error *err) {
    char *text = NULL;
    size_t len = 0;
    if (p->text_file) {
        FILE *f = fopen(p->text_file, "rb");
        if (!f) return err_set(err, OPTIQ_ERR_IO, "bench: cannot open %s", p->text_file);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (n < 0 || n > (1L << 30)) {
            fclose(f);
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: %s: size %ld not in [0, 1 GiB]", p->text_file, n);
        }
        text = malloc((size_t)n + 1);
        len = text ? fread(text, 1, (size_t)n, f) : 0;
        fclose(f);
        if (!text) return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
        text[len] = 0;
    } else {
        text = generated_text((size_t)1 << 20);
        if (!text) return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
        len = strlen(text);
    }
    optiq_tokenizer *tok = NULL;
    optiq_status st = optiq_tokenizer_load(p->model_dir, &tok, err);
    if (st) {
        free(text);
        return st;
    }
    /* first pass: a fresh tokenizer, every word new to its cache */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    double t0 = now_s();
    st = optiq_tokenizer_encode(tok, text, len, 0, &ids, &n_ids, err);
    double first = now_s() - t0;
    if (!st) {
        double repeated = tokenizer_bench_mbps(tok, text, len, 0, p->seconds);
        cJSON *o = cJSON_AddObjectToObject(root, "tokenizer");
        cJSON_AddStringToObject(o, "model", p->model_dir);
        cJSON_AddStringToObject(o, "text", p->text_file ? p->text_file : "generated");
        cJSON_AddNumberToObject(o, "bytes", (double)len);
        cJSON_AddNumberToObject(o, "tokens", (double)n_ids);
        cJSON_AddNumberToObject(o, "first_pass_mbps", (double)len / first / 1e6);
        cJSON_AddNumberToObject(o, "repeated_mbps", repeated);
    }
    optiq_free(ids);
    optiq_tokenizer_free(tok);
    free(text);
    return st;
}

/* Thread counts of the synthetic runs: 1, 2, 4, ... below top, then top;
 * top = max_threads, or by default the physical cores but at least 2. */
static int synthetic_threads(int max_threads, int cores, int *out) {
    int top = max_threads > 0 ? max_threads : (cores > 2 ? cores : 2), n = 0;
    if (top > 64) top = 64;
    for (int t = 1; t < top; t *= 2) out[n++] = t;
    out[n++] = top;
    return n;
}

optiq_status optiq_bench_run(const optiq_bench_params *params, char **json_out, optiq_error *err) {
    optiq_bench_params p = params ? *params : optiq_bench_default();
    *json_out = NULL;
    if (!(p.seconds > 0) || p.seconds > 60) return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: seconds must be in (0, 60]");
    if (p.prefill_tokens < 0 || p.prefill_tokens > 65536 || p.decode_tokens < 0 || p.decode_tokens > 65536)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: prefill_tokens %d / decode_tokens %d not in [0, 65536]",
                       p.prefill_tokens, p.decode_tokens);
    if (p.synthetic) { /* fail before the minutes of measuring */
        const synth_model *sm = synthetic_find(p.synthetic);
        if (!sm)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: unknown synthetic model '%s' (known: %s)", p.synthetic,
                           synthetic_names());
        int64_t n = (int64_t)(p.prefill_tokens ? p.prefill_tokens : 512) + (p.decode_tokens ? p.decode_tokens : 128);
        if (p.serving && (p.sequences < 0 || p.sequences > 256))
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: sequences %d not in [0, 256]", p.sequences);
        if (n > sm->max_position)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: %lld prompt + decode tokens exceed %s's context of %lld",
                           (long long)n, sm->name, (long long)sm->max_position);
    }
    if (p.cpu_level) {
        int lvl = cpu_level_from_name(p.cpu_level);
        if (lvl < 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: unknown cpu level '%s' (portable, avx2, avx512)", p.cpu_level);
        cpu_force_level((cpu_level)lvl);
    }
    int cores = cpu_physical_cores();
    int max_threads = p.max_threads > 0 ? p.max_threads : cores;
    if (max_threads > 64) max_threads = 64;
    /* thread counts measured: 1..max_threads, or the synthetic runs' list */
    int counts[64], n_counts = 0;
    if (p.synthetic) n_counts = synthetic_threads(p.max_threads, cores, counts);
    else
        for (int t = 1; t <= max_threads; t++) counts[n_counts++] = t;
    max_threads = counts[n_counts - 1];
    thread_pool *pool = pool_create(max_threads);
    if (!pool) return err_set(err, OPTIQ_ERR_NOMEM, "bench: cannot start %d threads", max_threads);

    double membw[65] = {0};
    cJSON *root = cJSON_CreateObject();
    cJSON *cpu = cJSON_AddObjectToObject(root, "cpu");
    cJSON_AddStringToObject(cpu, "kernel_level", cpu_level_name(cpu_level_current()));
    cJSON_AddNumberToObject(cpu, "physical_cores", cores);
    cJSON *mem = cJSON_AddArrayToObject(root, "memory_read_bandwidth");
    for (int k = 0; k < n_counts; k++) {
        int t = counts[k];
        pool_set_threads(pool, t);
        membw[t] = mem_read_bandwidth_gbs(pool, (size_t)512 << 20, 3);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "threads", t);
        cJSON_AddNumberToObject(e, "gbs", membw[t]);
        cJSON_AddItemToArray(mem, e);
    }
    optiq_status st;
    if (p.synthetic && p.serving) {
        st = bench_serving(pool, &p, max_threads, root, err);
    } else if (p.synthetic) {
        st = bench_synthetic(pool, &p, counts, n_counts, root, err);
        if (!st) st = bench_vision(pool, p.synthetic, counts, n_counts, root, err);
    } else {
        cJSON *qmv = cJSON_AddArrayToObject(root, "qmatvec");
        st = bench_qmatvec(pool, &p, max_threads, membw, qmv, err);
    }
    if (!st && p.model_dir) st = bench_tokenizer(&p, root, err);
    pool_free(pool);
    qmatmul_release_scratch();
    if (st == OPTIQ_OK) {
        *json_out = cJSON_Print(root);
        if (!*json_out) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    }
    cJSON_Delete(root);
    return st;
}
