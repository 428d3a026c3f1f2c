/*
 * test_prefix_cache.c — prefix reuse and the vision cache (runtime/
 * prefix_cache.h, vision/vision_cache.h).
 *
 * Every case compares an engine with both caches on against one with both
 * off: a generation that resumes from a cached prefix must give the same
 * greedy tokens and, after them, the same logits bit for bit (the forward
 * pass does not depend on how a sequence is split into calls, so there is no
 * tolerance). Prompts: turn 2 extending turn 1 (prompt + reply + new
 * tokens); prompts that diverge from a cached one inside a checkpoint block
 * (resuming from the block boundary before); images — the same image again
 * (not re-encoded: the vision cache's encode count), a different image at
 * the same place (nothing from the image on is reused), a new image next to
 * a cached one; eviction under a small byte budget; the model-level save /
 * restore against a fresh prefill. Fixtures: qwen35-dense-mixed and
 * gemma4-e2b-mixed (sliding window 32, so prompts slide), qwen35-vl-mixed,
 * gemma4-vl-mixed; checkpoint block 64 (the Qwen fixtures' context is 512).
 * Last, a smoke run of `optiq bench --serving`'s code path on a tiny
 * synthetic model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "models/model.h"
#include "optiq.h"
#include "runtime/prefix_cache.h"
#include "test.h"

#define BLOCK 64

static optiq_error e;

static optiq_engine *load(const char *name, int caches) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s", name);
    optiq_engine_params p = optiq_engine_default();
    p.n_threads = 2;
    p.prefix_block = BLOCK;
    p.prefix_cache_mb = caches ? 64 : 0;
    p.vision_cache_mb = caches ? 64 : 0;
    optiq_engine *eng = NULL;
    if (optiq_engine_load(test_path(rel), &p, &eng, &e) != OPTIQ_OK) printf("  %s: %s\n", name, e.message);
    return eng;
}

/* One greedy generation on a fresh session; *logits (malloc'd) = the
 * logits after its last token. Returns the prompt tokens it restored, or -1. */
typedef struct run_out {
    int32_t *tokens;
    size_t n;
    float *logits;
    int64_t cached, prompt_tokens;
} run_out;

static int run(optiq_engine *eng, const int32_t *ids, size_t n, const optiq_image *im, size_t n_im, int max_tokens,
               run_out *o) {
    memset(o, 0, sizeof *o);
    optiq_session *s = NULL;
    if (optiq_session_new(eng, &s, &e)) return 0;
    optiq_generate_params gp = optiq_generate_default();
    gp.max_tokens = max_tokens;
    gp.ignore_eos = 1;
    gp.images = im, gp.n_images = n_im;
    optiq_generation g;
    int ok = optiq_generate(s, ids, n, &gp, &g, &e) == OPTIQ_OK;
    if (!ok) printf("     generate: %s\n", e.message);
    int64_t V = optiq_engine_vocab_size(eng);
    o->logits = malloc((size_t)V * sizeof *o->logits);
    if (ok) ok = optiq_session_eval(s, NULL, 0, o->logits, &e) == OPTIQ_OK;
    if (ok) {
        o->tokens = g.tokens, o->n = g.n_tokens, g.tokens = NULL;
        o->cached = g.cached_tokens;
        o->prompt_tokens = g.prompt_tokens;
    }
    optiq_generation_free(&g);
    optiq_session_free(s);
    return ok;
}

static void run_free(run_out *o) {
    free(o->tokens);
    free(o->logits);
}

/* a and b: same tokens, same logits bit for bit. */
static int same(const run_out *a, const run_out *b, int64_t V) {
    return a->n == b->n && !memcmp(a->tokens, b->tokens, a->n * sizeof *a->tokens) &&
           !memcmp(a->logits, b->logits, (size_t)V * sizeof *a->logits);
}

static int32_t *cat(const int32_t *a, size_t na, const int32_t *b, size_t nb, size_t *n) {
    int32_t *p = malloc((na + nb + 1) * sizeof *p);
    memcpy(p, a, na * sizeof *p);
    memcpy(p + na, b, nb * sizeof *p);
    *n = na + nb;
    return p;
}

static void fill(int32_t *p, size_t n, int seed, int vocab) {
    for (size_t i = 0; i < n; i++) p[i] = (int32_t)((i * 37 + (size_t)seed * 101 + 11) % (size_t)(vocab - 20) + 10);
}

/* ---- text ---- */

static void test_text(const char *name) {
    char label[256];
    optiq_engine *on = load(name, 1), *off = load(name, 0);
    if (!on || !off) {
        for (TEST_CASE(name)) CHECKF(0, "cannot load %s", name);
        optiq_engine_free(on), optiq_engine_free(off);
        return;
    }
    int64_t V = optiq_engine_vocab_size(on);
    int vocab = V > 400 ? 400 : (int)V;
    int32_t p1[150], extra[60], other[80];
    fill(p1, 150, 1, vocab), fill(extra, 60, 2, vocab), fill(other, 80, 3, vocab);
    run_out t1, t1_ref;

    snprintf(label, sizeof label, "%s: turn 1 on an empty cache restores nothing, same as the cache off", name);
    for (TEST_CASE(label)) {
        CHECK(run(on, p1, 150, NULL, 0, 20, &t1) && run(off, p1, 150, NULL, 0, 20, &t1_ref));
        CHECK(t1.cached == 0 && same(&t1, &t1_ref, V));
    }

    snprintf(label, sizeof label, "%s: turn 2 (turn 1 + its reply + 60 tokens) resumes after turn 1, same tokens and logits",
             name);
    for (TEST_CASE(label)) {
        size_t n2a, n2;
        int32_t *a = cat(p1, 150, t1.tokens, t1.n, &n2a);
        int32_t *p2 = cat(a, n2a, extra, 60, &n2);
        run_out r, ref;
        CHECK(run(on, p2, n2, NULL, 0, 12, &r) && run(off, p2, n2, NULL, 0, 12, &ref));
        /* turn 1's state ends before its last reply token (sampled, never run) */
        CHECKF(r.cached == (int64_t)(150 + t1.n - 1), "restored %lld, expected %zu", (long long)r.cached, 150 + t1.n - 1);
        CHECK(same(&r, &ref, V));
        run_free(&r), run_free(&ref);
        free(a), free(p2);
    }

    snprintf(label, sizeof label, "%s: a prompt diverging at 100 (inside block 64..128) resumes at 64, same result", name);
    for (TEST_CASE(label)) {
        size_t n3;
        int32_t *p3 = cat(p1, 100, other, 80, &n3);
        run_out r, ref;
        CHECK(run(on, p3, n3, NULL, 0, 8, &r) && run(off, p3, n3, NULL, 0, 8, &ref));
        CHECKF(r.cached == BLOCK, "restored %lld", (long long)r.cached);
        CHECK(same(&r, &ref, V));
        run_free(&r), run_free(&ref);
        free(p3);
    }

    snprintf(label, sizeof label, "%s: the same prompt again resumes at its end less one token, same result", name);
    for (TEST_CASE(label)) {
        run_out r;
        CHECK(run(on, p1, 150, NULL, 0, 20, &r));
        CHECKF(r.cached == 149, "restored %lld", (long long)r.cached);
        CHECK(same(&r, &t1_ref, V));
        run_free(&r);
    }

    snprintf(label, sizeof label, "%s: a prompt sharing nothing restores nothing", name);
    for (TEST_CASE(label)) {
        run_out r, ref;
        CHECK(run(on, other, 80, NULL, 0, 5, &r) && run(off, other, 80, NULL, 0, 5, &ref));
        CHECK(r.cached == 0 && same(&r, &ref, V));
        optiq_cache_stats st;
        optiq_engine_cache_stats(on, &st);
        CHECKF(st.prefix_hits == 3 && st.prefix_misses == 2 && st.prefix_entries >= 1 && st.prefix_bytes > 0 &&
                   st.prefix_bytes <= st.prefix_max_bytes,
               "hits %llu misses %llu entries %llu", (unsigned long long)st.prefix_hits,
               (unsigned long long)st.prefix_misses, (unsigned long long)st.prefix_entries);
        optiq_engine_cache_stats(off, &st);
        CHECK(st.prefix_hits == 0 && st.prefix_misses == 0 && st.prefix_max_bytes == 0);
        run_free(&r), run_free(&ref);
    }

    snprintf(label, sizeof label, "%s: a batch of resumed and fresh prompts gives what each gives alone", name);
    for (TEST_CASE(label)) {
        size_t n2;
        int32_t *p2 = cat(p1, 150, extra, 60, &n2);
        const int32_t *ps[3] = {p2, other, p1};
        size_t ns[3] = {n2, 80, 120};
        run_out ref[3];
        optiq_generation g[3];
        optiq_session *ss[3];
        optiq_batch *b = NULL;
        CHECK(optiq_batch_new(on, 3, &b, &e) == OPTIQ_OK);
        optiq_generate_params gp = optiq_generate_default();
        gp.max_tokens = 10;
        gp.ignore_eos = 1;
        for (int i = 0; i < 3; i++) {
            CHECK(run(off, ps[i], ns[i], NULL, 0, 10, &ref[i]));
            CHECK(optiq_session_new(on, &ss[i], &e) == OPTIQ_OK);
            CHECKF(optiq_batch_add(b, ss[i], ps[i], ns[i], &gp, &g[i], &e) == OPTIQ_OK, "%s", e.message);
        }
        for (int k = 0; k < 1000 && optiq_batch_size(b); k++) CHECK(optiq_batch_step(b, &e) == OPTIQ_OK);
        CHECK(g[0].cached_tokens == 149 && g[1].cached_tokens == 79 && g[2].cached_tokens == BLOCK);
        for (int i = 0; i < 3; i++) {
            CHECKF(g[i].n_tokens == ref[i].n && !memcmp(g[i].tokens, ref[i].tokens, ref[i].n * sizeof(int32_t)),
                   "prompt %d differs", i);
            optiq_generation_free(&g[i]);
            optiq_session_free(ss[i]);
            run_free(&ref[i]);
        }
        optiq_batch_free(b);
        free(p2);
    }
    run_free(&t1), run_free(&t1_ref);
    optiq_engine_free(on), optiq_engine_free(off);
}

/* ---- the model level: save, restore, evict ---- */

static void test_model_level(const char *name) {
    char rel[256], label[256];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s", name);
    snprintf(label, sizeof label, "%s: rows + tail restored at 96 then 40 tokens == 136 tokens fresh (logits bit for bit)",
             name);
    lm_model *m = NULL;
    thread_pool *pool = pool_create(2);
    if (lm_load(test_path(rel), &m, &e) != OPTIQ_OK) printf("  %s\n", e.message);
    for (TEST_CASE(label)) {
        if (!m) {
            CHECK(0);
            break;
        }
        const lm_info *in = lm_get_info(m);
        int32_t ids[136];
        fill(ids, 136, 5, in->vocab_size > 400 ? 400 : (int)in->vocab_size);
        size_t row = 0, tail = 0;
        lm_state_layout(m, &row, &tail);
        CHECK(row > 0 && tail > 0);
        lm_cache *a = NULL, *b = NULL;
        CHECK(lm_cache_new(m, 512, &a, &e) == OPTIQ_OK && lm_cache_new(m, 512, &b, &e) == OPTIQ_OK);
        float *la = malloc((size_t)in->vocab_size * sizeof *la), *lb = malloc((size_t)in->vocab_size * sizeof *lb);
        unsigned char *rows = malloc(96 * row), *tl = malloc(tail);
        lm_forward_args f = {.tokens = ids, .n = 96};
        CHECK(lm_forward(m, a, pool, &f, &e) == OPTIQ_OK);
        lm_state_save_rows(a, 0, 50, rows);
        lm_state_save_rows(a, 50, 96, rows + 50 * row); /* in two pieces: position-major */
        lm_state_save_tail(a, tl);
        f = (lm_forward_args){.tokens = ids + 96, .n = 40, .logits = la};
        CHECK(lm_forward(m, a, pool, &f, &e) == OPTIQ_OK);
        /* b has run something else first: the restore must replace all of it */
        f = (lm_forward_args){.tokens = ids + 10, .n = 120};
        CHECK(lm_forward(m, b, pool, &f, &e) == OPTIQ_OK);
        CHECK(lm_state_restore(b, 96, rows, tl, &e) == OPTIQ_OK && lm_cache_pos(b) == 96);
        f = (lm_forward_args){.tokens = ids + 96, .n = 40, .logits = lb};
        CHECK(lm_forward(m, b, pool, &f, &e) == OPTIQ_OK);
        CHECK(!memcmp(la, lb, (size_t)in->vocab_size * sizeof *la));
        CHECK(lm_state_restore(b, 0, rows, tl, &e) == OPTIQ_ERR_CONTEXT && lm_cache_pos(b) == 0);
        free(la), free(lb), free(rows), free(tl);
        lm_cache_free(a), lm_cache_free(b);
    }
    snprintf(label, sizeof label, "%s: a budget that holds one entry evicts the older one", name);
    for (TEST_CASE(label)) {
        if (!m) {
            CHECK(0);
            break;
        }
        size_t row = 0, tail = 0;
        lm_state_layout(m, &row, &tail);
        /* room for one 100-token entry with one checkpoint, not two */
        size_t budget = 100 * (row + 8) + tail + 4096 + (100 * (row + 8) + tail) / 2;
        prefix_cache *pc = prefix_cache_new(m, budget, BLOCK);
        CHECK(pc != NULL);
        lm_cache *c = NULL;
        CHECK(lm_cache_new(m, 512, &c, &e) == OPTIQ_OK);
        int32_t x[100], y[100];
        uint64_t kx[100], ky[100];
        fill(x, 100, 7, 300), fill(y, 100, 8, 300);
        for (int i = 0; i < 100; i++) kx[i] = (uint64_t)x[i], ky[i] = (uint64_t)y[i];
        lm_forward_args f = {.tokens = x, .n = 100};
        CHECK(lm_forward(m, c, pool, &f, &e) == OPTIQ_OK);
        prefix_cache_insert(pc, c, kx, NULL, 0);
        lm_cache_reset(c);
        f.tokens = y;
        CHECK(lm_forward(m, c, pool, &f, &e) == OPTIQ_OK);
        prefix_cache_insert(pc, c, ky, NULL, 0);
        prefix_cache_stats st;
        prefix_cache_get_stats(pc, &st);
        CHECKF(st.entries == 1 && st.evictions == 1 && st.bytes <= budget, "entries %llu evictions %llu",
               (unsigned long long)st.entries, (unsigned long long)st.evictions);
        pc_ckpt **inh = NULL;
        size_t ni = 0;
        lm_cache_reset(c);
        CHECK(prefix_cache_restore(pc, c, kx, 100, 99, &inh, &ni) == 0 && ni == 0 && lm_cache_pos(c) == 0);
        /* y's entry: its only checkpoint is at 100, past the limit of 99 */
        CHECK(prefix_cache_restore(pc, c, ky, 100, 99, &inh, &ni) == 0);
        CHECK(prefix_cache_restore(pc, c, ky, 100, 100, &inh, &ni) == 100 && ni == 1 && lm_cache_pos(c) == 100);
        for (size_t i = 0; i < ni; i++) pc_ckpt_unref(pc, inh[i]);
        free(inh);
        /* a budget smaller than one entry keeps nothing */
        prefix_cache *tiny = prefix_cache_new(m, 1000, BLOCK);
        prefix_cache_insert(tiny, c, ky, NULL, 0);
        prefix_cache_get_stats(tiny, &st);
        CHECK(st.entries == 0 && st.bytes == 0);
        prefix_cache_free(tiny);
        lm_cache_free(c);
        prefix_cache_free(pc);
    }
    snprintf(label, sizeof label, "%s: an entry over the budget keeps its latest checkpoint only", name);
    for (TEST_CASE(label)) {
        if (!m) {
            CHECK(0);
            break;
        }
        size_t row = 0, tail = 0;
        lm_state_layout(m, &row, &tail);
        size_t budget = 100 * (row + 8) + tail + 4096 + tail / 2; /* rows + one checkpoint, not two */
        prefix_cache *pc = prefix_cache_new(m, budget, BLOCK);
        lm_cache *c = NULL;
        CHECK(pc && lm_cache_new(m, 512, &c, &e) == OPTIQ_OK);
        int32_t x[100];
        uint64_t kx[100];
        fill(x, 100, 11, 300);
        for (int i = 0; i < 100; i++) kx[i] = (uint64_t)x[i];
        lm_forward_args f = {.tokens = x, .n = BLOCK};
        CHECK(lm_forward(m, c, pool, &f, &e) == OPTIQ_OK);
        pc_ckpt *ck[2] = {prefix_cache_checkpoint(pc, c), NULL};
        f = (lm_forward_args){.tokens = x + BLOCK, .n = 100 - BLOCK};
        CHECK(lm_forward(m, c, pool, &f, &e) == OPTIQ_OK);
        ck[1] = prefix_cache_checkpoint(pc, c);
        CHECK(ck[0] && ck[1] && ck[0]->pos == BLOCK && ck[1]->pos == 100);
        prefix_cache_insert(pc, c, kx, ck, 2);
        pc_ckpt_unref(pc, ck[0]), pc_ckpt_unref(pc, ck[1]);
        prefix_cache_stats st;
        prefix_cache_get_stats(pc, &st);
        CHECK(st.entries == 1 && st.bytes <= budget);
        pc_ckpt **inh = NULL;
        size_t ni = 0;
        lm_cache_reset(c);
        CHECK(prefix_cache_restore(pc, c, kx, 100, 99, &inh, &ni) == 0); /* the checkpoint at 64 is gone */
        CHECK(prefix_cache_restore(pc, c, kx, 100, 100, &inh, &ni) == 100 && ni == 1);
        for (size_t i = 0; i < ni; i++) pc_ckpt_unref(pc, inh[i]);
        free(inh);
        lm_cache_free(c);
        prefix_cache_free(pc);
    }
    lm_free(m);
    pool_free(pool);
}

/* ---- images ---- */

static int32_t *image_prompt(optiq_engine *eng, size_t *n) {
    const char *msgs = "[{\"role\":\"user\",\"content\":[{\"type\":\"image\"},{\"type\":\"text\",\"text\":\"What is it?\"}]}]";
    char *text = NULL;
    size_t tl = 0;
    int32_t *ids = NULL;
    *n = 0;
    const optiq_chat_template *tm = optiq_engine_chat_template(eng);
    if (!tm || optiq_chat_template_render(tm, msgs, strlen(msgs), "{\"add_generation_prompt\":true,\"enable_thinking\":false}",
                                          &text, &tl, &e) != OPTIQ_OK)
        return NULL;
    if (optiq_tokenizer_encode(optiq_engine_tokenizer(eng), text, tl, 0, &ids, n, &e) != OPTIQ_OK) ids = NULL;
    optiq_free(text);
    return ids;
}

static void test_images(const char *name, const char *img_a, const char *img_b) {
    char label[256], pa[600], pb[600];
    optiq_engine *on = load(name, 1), *off = load(name, 0);
    size_t n = 0;
    int32_t *ids = on ? image_prompt(on, &n) : NULL;
    if (!on || !off || !ids) {
        for (TEST_CASE(name)) CHECKF(0, "cannot load %s or render its prompt", name);
        optiq_engine_free(on), optiq_engine_free(off);
        return;
    }
    snprintf(pa, sizeof pa, "%s/%s", test_path("tests/fixtures"), img_a);
    snprintf(pb, sizeof pb, "%s/%s", test_path("tests/fixtures"), img_b);
    optiq_image A = {.source = pa}, B = {.source = pb}, AB[2] = {{.source = pa}, {.source = pb}};
    int64_t V = optiq_engine_vocab_size(on);
    run_out t1, t1_ref;
    optiq_cache_stats st;

    snprintf(label, sizeof label, "%s: turn 1 with an image encodes it once, same as the caches off", name);
    for (TEST_CASE(label)) {
        CHECK(run(on, ids, n, &A, 1, 8, &t1) && run(off, ids, n, &A, 1, 8, &t1_ref));
        CHECK(t1.cached == 0 && same(&t1, &t1_ref, V));
        optiq_engine_cache_stats(on, &st);
        CHECK(st.vision_encoded == 1 && st.vision_misses == 1 && st.vision_hits == 0 && st.vision_entries == 1);
    }

    int32_t tail[12];
    fill(tail, 12, 9, 200);
    snprintf(label, sizeof label, "%s: turn 2 re-sending the image: not re-encoded, resumes after turn 1, same result", name);
    for (TEST_CASE(label)) {
        size_t na, n2;
        int32_t *a = cat(ids, n, t1.tokens, t1.n, &na);
        int32_t *p2 = cat(a, na, tail, 12, &n2);
        run_out r, ref;
        CHECK(run(on, p2, n2, &A, 1, 6, &r) && run(off, p2, n2, &A, 1, 6, &ref));
        CHECKF(r.cached == t1.prompt_tokens + (int64_t)t1.n - 1, "restored %lld of %lld", (long long)r.cached,
               (long long)r.prompt_tokens);
        CHECK(same(&r, &ref, V));
        optiq_engine_cache_stats(on, &st);
        CHECKF(st.vision_encoded == 1 && st.vision_hits == 1, "encoded %llu hits %llu",
               (unsigned long long)st.vision_encoded, (unsigned long long)st.vision_hits);
        run_free(&r), run_free(&ref);
        free(a), free(p2);
    }

    snprintf(label, sizeof label, "%s: another image at the same place: nothing from the image on is reused, same result",
             name);
    for (TEST_CASE(label)) {
        run_out r, ref;
        CHECK(run(on, ids, n, &B, 1, 6, &r) && run(off, ids, n, &B, 1, 6, &ref));
        /* the text before the image is shorter than a block, and turn 1's checkpoints are past the image */
        CHECKF(r.cached == 0, "restored %lld", (long long)r.cached);
        CHECK(same(&r, &ref, V));
        optiq_engine_cache_stats(on, &st);
        CHECK(st.vision_encoded == 2);
        run_free(&r), run_free(&ref);
    }

    snprintf(label, sizeof label, "%s: two images, both seen before: none encoded, same result as encoding both", name);
    for (TEST_CASE(label)) {
        size_t n2;
        int32_t *p2 = cat(ids, n, ids, n, &n2);
        run_out r, ref;
        optiq_cache_stats before;
        optiq_engine_cache_stats(on, &before);
        CHECK(run(on, p2, n2, AB, 2, 6, &r) && run(off, p2, n2, AB, 2, 6, &ref));
        CHECK(same(&r, &ref, V));
        optiq_engine_cache_stats(on, &st);
        CHECKF(st.vision_encoded == before.vision_encoded && st.vision_hits == before.vision_hits + 2,
               "encoded %llu -> %llu", (unsigned long long)before.vision_encoded,
               (unsigned long long)st.vision_encoded);
        run_free(&r), run_free(&ref);
        free(p2);
    }
    run_free(&t1), run_free(&t1_ref);
    optiq_free(ids);
    optiq_engine_free(on), optiq_engine_free(off);
}

/* A vision cache with a new image next to a cached one, on a fresh engine. */
static void test_mixed_encode(const char *name, const char *img_a, const char *img_b) {
    char label[256], pa[600], pb[600];
    snprintf(label, sizeof label, "%s: a new image encoded next to a cached one == both encoded together", name);
    for (TEST_CASE(label)) {
        optiq_engine *on = load(name, 1), *off = load(name, 0);
        size_t n = 0;
        int32_t *ids = on ? image_prompt(on, &n) : NULL;
        CHECK(on && off && ids);
        if (!on || !off || !ids) {
            optiq_engine_free(on), optiq_engine_free(off);
            break;
        }
        snprintf(pa, sizeof pa, "%s/%s", test_path("tests/fixtures"), img_a);
        snprintf(pb, sizeof pb, "%s/%s", test_path("tests/fixtures"), img_b);
        optiq_image A = {.source = pa}, AB[2] = {{.source = pa}, {.source = pb}};
        int64_t V = optiq_engine_vocab_size(on);
        run_out r0, r, ref;
        CHECK(run(on, ids, n, &A, 1, 2, &r0));
        size_t n2;
        int32_t *p2 = cat(ids, n, ids, n, &n2);
        CHECK(run(on, p2, n2, AB, 2, 6, &r) && run(off, p2, n2, AB, 2, 6, &ref));
        CHECK(same(&r, &ref, V));
        optiq_cache_stats st;
        optiq_engine_cache_stats(on, &st);
        CHECKF(st.vision_encoded == 2 && st.vision_hits == 1, "encoded %llu hits %llu",
               (unsigned long long)st.vision_encoded, (unsigned long long)st.vision_hits);
        run_free(&r0), run_free(&r), run_free(&ref);
        free(p2);
        optiq_free(ids);
        optiq_engine_free(on), optiq_engine_free(off);
    }
}

/* The serving benchmark's code path on a tiny synthetic model (the figures
 * themselves are bench/README.md's, on the real shapes). */
static void test_bench_smoke(void) {
    for (TEST_CASE("optiq bench --serving on qwen3_5-tiny: turn 2 restores turn 1 + reply, identical logits")) {
        optiq_bench_params p = optiq_bench_default();
        p.synthetic = "qwen3_5-tiny";
        p.serving = 1;
        p.prefill_tokens = 600;
        p.decode_tokens = 8;
        p.sequences = 3;
        p.max_threads = 2;
        char *json = NULL;
        CHECKF(optiq_bench_run(&p, &json, &e) == OPTIQ_OK, "%s", e.message);
        cJSON *d = json ? cJSON_Parse(json) : NULL;
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(d, "serving");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(sv, "prefix"), *dec = cJSON_GetObjectItemCaseSensitive(sv, "decode");
        CHECK(x && dec);
        if (x && dec) {
            CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "identical_logits")));
            /* 600 prompt tokens + a 32-token reply whose last token never ran */
            CHECK(cJSON_GetObjectItemCaseSensitive(x, "restored_tokens")->valuedouble == 631);
            CHECK(cJSON_GetObjectItemCaseSensitive(x, "turn2_prompt_tokens")->valuedouble == 696);
            CHECK(cJSON_GetObjectItemCaseSensitive(dec, "sequences")->valuedouble == 3);
            CHECK(cJSON_GetObjectItemCaseSensitive(dec, "batched_tokens_per_s")->valuedouble > 0);
        }
        cJSON_Delete(d);
        optiq_free(json);
        p.sequences = 300;
        CHECK(optiq_bench_run(&p, &json, &e) == OPTIQ_ERR_INVALID_ARG && !json);
    }
}

int main(void) {
    test_model_level("qwen35-dense-mixed");
    test_model_level("gemma4-e2b-mixed");
    test_text("qwen35-dense-mixed");
    test_text("gemma4-e2b-mixed");
    test_images("qwen35-vl-mixed", "models/qwen35-vl-mixed/images/img0.png", "models/qwen35-vl-mixed/images/img1.png");
    test_images("gemma4-vl-mixed", "preprocess/gemma4/astronaut_96x128.png", "preprocess/gemma4/chelsea_120x90.png");
    test_mixed_encode("qwen35-vl-mixed", "models/qwen35-vl-mixed/images/img0.png",
                      "models/qwen35-vl-mixed/images/img1.png");
    test_mixed_encode("gemma4-vl-mixed", "preprocess/gemma4/astronaut_96x128.png",
                      "preprocess/gemma4/chelsea_120x90.png");
    test_bench_smoke();
    return test_finish();
}
