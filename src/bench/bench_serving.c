/*
 * bench_serving.c — `optiq bench --synthetic NAME --serving`: the two
 * figures that matter when many clients share one model, on a random-weight
 * model with a real checkpoint's shapes (synthetic.h), at the largest
 * thread count:
 *
 * 1. Batched decode. `sequences` sequences each hold a short prompt (64
 *    random tokens); then decode_tokens steps of one sequence alone
 *    (lm_forward, one token) and decode_tokens steps of all of them at once
 *    (lm_forward_batch: every weight matrix read once for the step, what
 *    optiq_batch does for the server's generations). Aggregate tokens/s =
 *    sequences x steps / time; the speed-up is against the one sequence.
 *
 * 2. Prefix reuse (runtime/prefix_cache.h, as the engine drives it).
 *    Turn 1: a prompt of prefill_tokens random tokens on an empty cache,
 *    prefilled in chunks of at most 512 tokens that end at the checkpoint
 *    block boundaries (256), a checkpoint of the recurrent state at each and
 *    at the end of the prompt body, the last token alone for the logits —
 *    time to first token = until its argmax. Then a reply of 32 greedy
 *    tokens, and the state goes into a prefix cache of 1 GiB (the engine's
 *    default). Turn 2: turn 1's prompt + reply + 64 new tokens (the next
 *    user message) on an empty cache: restore the longest cached prefix,
 *    prefill the rest, first token. The same turn 2 is also run without the
 *    cache, and its logits must equal the cached run's bit for bit.
 *
 * Prompt ids are random (xorshift) below the vocabulary; the random weights
 * make the tokens meaningless, but the work per token is the real model's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_serving.h"
#include "bench/synthetic.h"
#include "models/model.h"
#include "runtime/prefix_cache.h"

#define CHUNK 512
#define BLOCK 256
#define SHORT_PROMPT 64
#define REPLY 32
#define NEW_TURN 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

static void random_ids(int32_t *ids, int64_t n, int64_t vocab, uint64_t seed) {
    uint64_t x = seed | 1;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)vocab);
    }
}

/* ---- 1. batched decode ---- */

typedef struct decode_result {
    double single_s, batched_s;
} decode_result;

static optiq_status bench_decode(const lm_model *m, thread_pool *pool, int64_t N, int64_t D, decode_result *r,
                                 optiq_error *err) {
    int64_t V = lm_get_info(m)->vocab_size;
    lm_cache **cs = calloc((size_t)N, sizeof *cs);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(N > SHORT_PROMPT ? N : SHORT_PROMPT));
    float *logits = malloc(sizeof(float) * (size_t)(N * V));
    optiq_status st = cs && ids && logits ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    for (int64_t i = 0; !st && i < N; i++) {
        st = lm_cache_new(m, SHORT_PROMPT + 2 * D + 8, &cs[i], err);
        random_ids(ids, SHORT_PROMPT, V, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1));
        lm_forward_args a = {.tokens = ids, .n = SHORT_PROMPT, .logits = logits + i * V};
        if (!st) st = lm_forward(m, cs[i], pool, &a, err);
    }
    /* one sequence alone */
    double t0 = now_s();
    for (int64_t k = 0; !st && k < D; k++) {
        int32_t next = argmax(logits, V);
        lm_forward_args a = {.tokens = &next, .n = 1, .logits = logits};
        st = lm_forward(m, cs[0], pool, &a, err);
    }
    r->single_s = now_s() - t0;
    /* all of them, one batched forward per step */
    t0 = now_s();
    for (int64_t k = 0; !st && k < D; k++) {
        for (int64_t i = 0; i < N; i++) ids[i] = argmax(logits + i * V, V);
        st = lm_forward_batch(m, cs, ids, N, pool, logits, err);
    }
    r->batched_s = now_s() - t0;
    for (int64_t i = 0; cs && i < N; i++) lm_cache_free(cs[i]);
    free(cs), free(ids), free(logits);
    return st;
}

/* ---- 2. prefix reuse ---- */

typedef struct ckpt_list {
    pc_ckpt **v;
    size_t n;
} ckpt_list;

static void ckpt_add(prefix_cache *pc, ckpt_list *l, const lm_cache *c) {
    pc_ckpt *k = prefix_cache_checkpoint(pc, c), **t = k ? realloc(l->v, (l->n + 1) * sizeof *t) : NULL;
    if (!t) {
        pc_ckpt_unref(pc, k);
        return;
    }
    l->v = t;
    l->v[l->n++] = k;
}

static void ckpt_clear(prefix_cache *pc, ckpt_list *l) {
    for (size_t i = 0; i < l->n; i++) pc_ckpt_unref(pc, l->v[i]);
    free(l->v);
    l->v = NULL, l->n = 0;
}

/* Run ids[cache pos .. n) as the engine feeds a prompt (pc: with checkpoints
 * into l), the last token alone; logits of the last. */
static optiq_status feed(const lm_model *m, lm_cache *c, thread_pool *pool, const int32_t *ids, int64_t n,
                         prefix_cache *pc, ckpt_list *l, float *logits, optiq_error *err) {
    optiq_status st = OPTIQ_OK;
    while (!st && lm_cache_pos(c) < n) {
        int64_t pos = lm_cache_pos(c), body = n - 1;
        int64_t stop = pos < body ? (body - pos > CHUNK ? pos + CHUNK : body) : n;
        if (pc && (pos / BLOCK + 1) * BLOCK < stop) stop = (pos / BLOCK + 1) * BLOCK;
        lm_forward_args a = {.tokens = ids + pos, .n = stop - pos, .logits = stop == n ? logits : NULL};
        st = lm_forward(m, c, pool, &a, err);
        if (!st && pc && (stop % BLOCK == 0 || stop == body)) ckpt_add(pc, l, c);
    }
    return st;
}

typedef struct prefix_result {
    double ttft1, ttft2, ttft2_fresh;
    int64_t restored, turn2_tokens;
    int identical;
    size_t row_bytes, tail_bytes;
} prefix_result;

static optiq_status bench_prefix(const lm_model *m, thread_pool *pool, int64_t P, prefix_result *r, optiq_error *err) {
    int64_t V = lm_get_info(m)->vocab_size, n2 = P + REPLY + NEW_TURN;
    prefix_cache *pc = prefix_cache_new(m, (size_t)1 << 30, BLOCK);
    if (!pc) return err_set(err, OPTIQ_ERR_UNSUPPORTED, "bench: the model cannot save its state");
    lm_state_layout(m, &r->row_bytes, &r->tail_bytes);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n2);
    uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)n2);
    float *logits = malloc(sizeof(float) * (size_t)V), *fresh = malloc(sizeof(float) * (size_t)V);
    lm_cache *c1 = NULL, *c2 = NULL, *c3 = NULL;
    ckpt_list l1 = {0}, l2 = {0};
    optiq_status st = ids && keys && logits && fresh ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    if (!st) st = lm_cache_new(m, n2 + 1, &c1, err);
    if (!st) st = lm_cache_new(m, n2 + 1, &c2, err);
    if (!st) st = lm_cache_new(m, n2 + 1, &c3, err);
    if (!st) random_ids(ids, P, V, 0x243f6a8885a308d3ull);
    /* turn 1 */
    double t0 = now_s();
    if (!st) st = feed(m, c1, pool, ids, P, pc, &l1, logits, err);
    if (!st) ids[P] = argmax(logits, V);
    r->ttft1 = now_s() - t0;
    for (int64_t k = 1; !st && k < REPLY; k++) { /* the reply; its last token is sampled, never run */
        lm_forward_args a = {.tokens = ids + P + k - 1, .n = 1, .logits = logits};
        st = lm_forward(m, c1, pool, &a, err);
        ids[P + k] = argmax(logits, V);
    }
    if (!st) {
        for (int64_t i = 0; i < n2; i++) keys[i] = (uint32_t)ids[i];
        ckpt_add(pc, &l1, c1);
        prefix_cache_insert(pc, c1, keys, l1.v, l1.n);
        random_ids(ids + P + REPLY, NEW_TURN, V, 0x13198a2e03707344ull);
        for (int64_t i = P + REPLY; i < n2; i++) keys[i] = (uint32_t)ids[i];
    }
    /* turn 2, resuming */
    t0 = now_s();
    if (!st) {
        pc_ckpt **inh = NULL;
        size_t ni = 0;
        r->restored = prefix_cache_restore(pc, c2, keys, n2, n2 - 1, &inh, &ni);
        l2.v = inh, l2.n = ni;
        st = feed(m, c2, pool, ids, n2, pc, &l2, logits, err);
        if (!st) (void)argmax(logits, V);
    }
    r->ttft2 = now_s() - t0;
    /* turn 2 from scratch, for the time and the logits */
    t0 = now_s();
    if (!st) st = feed(m, c3, pool, ids, n2, NULL, NULL, fresh, err);
    if (!st) (void)argmax(fresh, V);
    r->ttft2_fresh = now_s() - t0;
    r->turn2_tokens = n2;
    r->identical = !st && !memcmp(logits, fresh, sizeof(float) * (size_t)V);
    ckpt_clear(pc, &l1), ckpt_clear(pc, &l2);
    lm_cache_free(c1), lm_cache_free(c2), lm_cache_free(c3);
    prefix_cache_free(pc);
    free(ids), free(keys), free(logits), free(fresh);
    return st;
}

/* ---- the run ---- */

optiq_status bench_serving(thread_pool *pool, const optiq_bench_params *p, int threads, cJSON *root, optiq_error *err) {
    const synth_model *s = synthetic_find(p->synthetic);
    if (!s)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: unknown synthetic model '%s' (known: %s)",
                       p->synthetic ? p->synthetic : "(null)", synthetic_names());
    int64_t P = p->prefill_tokens > 0 ? p->prefill_tokens : 2000, D = p->decode_tokens > 0 ? p->decode_tokens : 32;
    int64_t N = p->sequences > 0 ? p->sequences : 8;
    if (N > 256) return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: at most 256 sequences (%lld asked)", (long long)N);
    if (P + REPLY + NEW_TURN + 1 > s->max_position || SHORT_PROMPT + 2 * D + 8 > s->max_position)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "bench: %lld prompt tokens exceed %s's context of %lld",
                       (long long)P, s->name, (long long)s->max_position);
    model_dir *md = NULL;
    optiq_status st = synthetic_model_dir(s, 0x5eed, pool, &md, NULL, err);
    if (st) return st;
    lm_model *m = NULL;
    if ((st = lm_load_dir(md, &m, err))) return err_prefix(err, "synthetic %s: ", s->name);
    threads = pool_set_threads(pool, threads);
    decode_result dr = {0};
    prefix_result pr = {0};
    st = bench_decode(m, pool, N, D, &dr, err);
    if (!st) st = bench_prefix(m, pool, P, &pr, err);
    if (!st) {
        cJSON *o = cJSON_AddObjectToObject(root, "serving");
        cJSON_AddStringToObject(o, "model", s->name);
        cJSON_AddNumberToObject(o, "threads", threads);
        cJSON *d = cJSON_AddObjectToObject(o, "decode");
        double single = (double)D / dr.single_s, batched = (double)(N * D) / dr.batched_s;
        cJSON_AddNumberToObject(d, "sequences", (double)N);
        cJSON_AddNumberToObject(d, "steps", (double)D);
        cJSON_AddNumberToObject(d, "single_tokens_per_s", single);
        cJSON_AddNumberToObject(d, "batched_tokens_per_s", batched);
        cJSON_AddNumberToObject(d, "speedup", batched / single);
        cJSON *x = cJSON_AddObjectToObject(o, "prefix");
        cJSON_AddNumberToObject(x, "turn1_prompt_tokens", (double)P);
        cJSON_AddNumberToObject(x, "turn2_prompt_tokens", (double)pr.turn2_tokens);
        cJSON_AddNumberToObject(x, "restored_tokens", (double)pr.restored);
        cJSON_AddNumberToObject(x, "turn1_ttft_s", pr.ttft1);
        cJSON_AddNumberToObject(x, "turn2_ttft_s", pr.ttft2);
        cJSON_AddNumberToObject(x, "turn2_uncached_ttft_s", pr.ttft2_fresh);
        cJSON_AddNumberToObject(x, "speedup_vs_turn1", pr.ttft1 / pr.ttft2);
        cJSON_AddNumberToObject(x, "speedup_vs_uncached", pr.ttft2_fresh / pr.ttft2);
        cJSON_AddBoolToObject(x, "identical_logits", pr.identical);
        cJSON_AddNumberToObject(x, "row_bytes_per_token", (double)pr.row_bytes);
        cJSON_AddNumberToObject(x, "checkpoint_bytes", (double)pr.tail_bytes);
        if (!pr.identical)
            st = err_set(err, OPTIQ_ERR_FORMAT, "bench: turn 2 restored from the prefix cache gave other logits than "
                                                "from scratch");
    }
    lm_free(m);
    return st;
}
