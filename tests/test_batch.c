/*
 * test_batch.c — many generations at once (optiq_batch): every generation
 * of a batch gives what optiq_generate gives alone (greedy tokens and text),
 * whatever joins or leaves the batch around it; new generations join
 * between steps; a callback that stops one leaves the others; a prompt
 * stopped during its prefill ends with no tokens; generations with images
 * (Qwen3.5 and Gemma-4 vision fixtures) batch with text ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "optiq.h"
#include "test.h"

static optiq_error e;

static optiq_engine *load(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s", name);
    optiq_engine_params p = optiq_engine_default();
    p.n_threads = 2;
    p.exact = 1;
    optiq_engine *eng = NULL;
    if (optiq_engine_load(test_path(rel), &p, &eng, &e) != OPTIQ_OK) printf("  %s: %s\n", name, e.message);
    return eng;
}

typedef struct job {
    optiq_generation g;
    int done, calls, stop_after;
    optiq_status status;
} job;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id, (void)text, (void)len;
    job *j = user;
    j->calls++;
    return j->stop_after && j->calls >= j->stop_after;
}

static void on_done(void *user, optiq_status st, const char *message) {
    job *j = user;
    j->done++;
    j->status = st;
    if (st) printf("     generation failed: %s\n", message ? message : "?");
}

/* Prompts: slices of the fixture's token ids of various lengths. */
static int32_t *prompt(const int32_t *base, size_t nb, size_t len, size_t shift, size_t *n) {
    int32_t *p = malloc(len * sizeof *p);
    for (size_t i = 0; i < len; i++) p[i] = base[(i + shift) % nb];
    *n = len;
    return p;
}

static void test_text(const char *name, int long_run) {
    char label[200];
    snprintf(label, sizeof label, "%s: 6 generations batched (2 joining late, 1 stopped by its callback) == alone%s",
             name, long_run ? " (up to 300 tokens: caches grow while batched)" : "");
    for (TEST_CASE(label)) {
        optiq_engine *eng = load(name);
        if (!eng) {
            CHECK(0);
            break;
        }
        char rel[300];
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/reference.safetensors", name);
        st_file *ref = NULL;
        CHECK(st_open(test_path(rel), &ref, &e) == OPTIQ_OK);
        const st_tensor *t = ref ? st_find(ref, "p2.tokens") : NULL;
        CHECK(t != NULL);
        if (!t) {
            st_close(ref);
            optiq_engine_free(eng);
            break;
        }
        size_t nb = (size_t)t->shape[0];
        int32_t *base = malloc(nb * sizeof *base);
        memcpy(base, t->data, nb * sizeof *base);
        enum { N = 6 };
        static const size_t len[N] = {3, 40, 17, 1, 60, 9};
        static const int short_tokens[N] = {12, 20, 7, 16, 10, 20}, long_tokens[N] = {300, 250, 7, 280, 120, 200};
        const int *max_tokens = long_run ? long_tokens : short_tokens;
        int32_t *pr[N];
        size_t pn[N];
        for (int i = 0; i < N; i++) pr[i] = prompt(base, nb, len[i], (size_t)(7 * i), &pn[i]);
        /* alone */
        optiq_generation alone[N];
        for (int i = 0; i < N; i++) {
            optiq_session *s = NULL;
            CHECK(optiq_session_new(eng, &s, &e) == OPTIQ_OK);
            optiq_generate_params gp = optiq_generate_default();
            gp.max_tokens = max_tokens[i];
            gp.ignore_eos = 1;
            CHECKF(optiq_generate(s, pr[i], pn[i], &gp, &alone[i], &e) == OPTIQ_OK, "%s", e.message);
            optiq_session_free(s);
        }
        /* batched: 4 at first, 2 more after 5 steps; generation 2 stops itself after 4 tokens */
        optiq_batch *b = NULL;
        CHECK(optiq_batch_new(eng, 8, &b, &e) == OPTIQ_OK);
        optiq_session *ss[N];
        job jobs[N];
        memset(jobs, 0, sizeof jobs);
        jobs[2].stop_after = 4;
        optiq_generate_params gps[N];
        for (int i = 0; i < N; i++) {
            CHECK(optiq_session_new(eng, &ss[i], &e) == OPTIQ_OK);
            gps[i] = optiq_generate_default();
            gps[i].max_tokens = max_tokens[i];
            gps[i].ignore_eos = 1;
            gps[i].on_token = on_token;
            gps[i].on_done = on_done;
            gps[i].user = &jobs[i];
        }
        for (int i = 0; i < 4; i++) CHECK(optiq_batch_add(b, ss[i], pr[i], pn[i], &gps[i], &jobs[i].g, &e) == OPTIQ_OK);
        CHECK(optiq_batch_add(b, ss[0], pr[0], pn[0], &gps[0], &jobs[0].g, &e) == OPTIQ_ERR_INVALID_ARG); /* busy */
        int steps = 0, most = 0;
        while (optiq_batch_size(b) > 0 && steps < 1000) {
            CHECK(optiq_batch_step(b, &e) == OPTIQ_OK);
            if (++steps == 5)
                for (int i = 4; i < N; i++)
                    CHECK(optiq_batch_add(b, ss[i], pr[i], pn[i], &gps[i], &jobs[i].g, &e) == OPTIQ_OK);
            if ((int)optiq_batch_size(b) > most) most = (int)optiq_batch_size(b);
        }
        CHECK(optiq_batch_size(b) == 0 && most >= 5);
        for (int i = 0; i < N; i++) {
            CHECKF(jobs[i].done == 1 && jobs[i].status == OPTIQ_OK, "generation %d: done %d", i, jobs[i].done);
            if (i == 2) {
                CHECK(jobs[i].g.n_tokens == 4 && !strcmp(jobs[i].g.finish_reason, "abort"));
                CHECK(jobs[i].g.n_tokens <= alone[i].n_tokens &&
                      !memcmp(jobs[i].g.tokens, alone[i].tokens, jobs[i].g.n_tokens * sizeof(int32_t)));
                continue;
            }
            CHECKF(jobs[i].g.n_tokens == alone[i].n_tokens &&
                       !memcmp(jobs[i].g.tokens, alone[i].tokens, alone[i].n_tokens * sizeof(int32_t)),
                   "generation %d: tokens differ from the same generation alone", i);
            CHECKF(!strcmp(jobs[i].g.text, alone[i].text), "generation %d: text differs", i);
            CHECK(!strcmp(jobs[i].g.finish_reason, alone[i].finish_reason));
            CHECK(jobs[i].g.prompt_tokens == alone[i].prompt_tokens);
            CHECK(optiq_session_position(ss[i]) == (int64_t)(pn[i] + jobs[i].g.n_tokens));
        }
        printf("     %s: %d steps, up to %d generations at once\n", name, steps, most);
        for (int i = 0; i < N; i++) {
            optiq_generation_free(&jobs[i].g);
            optiq_generation_free(&alone[i]);
            optiq_session_free(ss[i]);
            free(pr[i]);
        }
        optiq_batch_free(b);
        free(base);
        st_close(ref);
        optiq_engine_free(eng);
    }
}

static int stop_now(void *user) {
    (void)user;
    return 1;
}

static void test_edges(void) {
    for (TEST_CASE("batch: a prompt stopped in its prefill ends with no tokens; errors at add; full batch")) {
        optiq_engine *eng = load("qwen35-dense-mixed");
        if (!eng) {
            CHECK(0);
            break;
        }
        optiq_batch *b = NULL;
        CHECK(optiq_batch_new(eng, 2, &b, &e) == OPTIQ_OK);
        CHECK(optiq_batch_new(eng, 0, &(optiq_batch *){NULL}, &e) == OPTIQ_ERR_INVALID_ARG);
        optiq_session *s1 = NULL, *s2 = NULL, *s3 = NULL;
        CHECK(optiq_session_new(eng, &s1, &e) == OPTIQ_OK && optiq_session_new(eng, &s2, &e) == OPTIQ_OK &&
              optiq_session_new(eng, &s3, &e) == OPTIQ_OK);
        int32_t ids[5] = {10, 11, 12, 13, 14}, bad = 1 << 30;
        job j1 = {0}, j2 = {0}, j3 = {0};
        optiq_generate_params p1 = optiq_generate_default(), p2 = optiq_generate_default();
        p1.should_stop = stop_now;
        p1.on_done = on_done;
        p1.user = &j1;
        p2.max_tokens = 3;
        p2.on_done = on_done;
        p2.user = &j2;
        CHECK(optiq_batch_add(b, s1, ids, 5, &p1, &j1.g, &e) == OPTIQ_OK);
        CHECK(optiq_batch_add(b, s3, &bad, 1, &p2, &j3.g, &e) == OPTIQ_ERR_INVALID_ARG); /* bad id: refused at add */
        CHECK(optiq_batch_add(b, s2, ids, 5, &p2, &j2.g, &e) == OPTIQ_OK);
        CHECK(optiq_batch_add(b, s3, ids, 5, &p2, &j3.g, &e) == OPTIQ_ERR_INVALID_ARG); /* full */
        for (int k = 0; k < 100 && optiq_batch_size(b); k++) CHECK(optiq_batch_step(b, &e) == OPTIQ_OK);
        CHECK(j1.done == 1 && j1.status == OPTIQ_OK && j1.g.n_tokens == 0 && !strcmp(j1.g.finish_reason, "abort"));
        CHECK(optiq_session_position(s1) == 0);
        CHECK(j2.done == 1 && j2.g.n_tokens == 3);
        optiq_generation_free(&j1.g);
        optiq_generation_free(&j2.g);
        optiq_session_free(s1), optiq_session_free(s2), optiq_session_free(s3);
        optiq_batch_free(b);
        optiq_engine_free(eng);
    }
}

/* Image prompts batched with a text prompt: the same tokens as alone. */
static void test_images(const char *name, const char *img_rel) {
    char label[200];
    snprintf(label, sizeof label, "%s: an image prompt and a text prompt batched == alone", name);
    for (TEST_CASE(label)) {
        optiq_engine *eng = load(name);
        if (!eng) {
            CHECK(0);
            break;
        }
        const optiq_tokenizer *tok = optiq_engine_tokenizer(eng);
        const optiq_chat_template *tm = optiq_engine_chat_template(eng);
        const char *msgs = "[{\"role\":\"user\",\"content\":[{\"type\":\"image\"},{\"type\":\"text\",\"text\":\"What is it?\"}]}]";
        char *text = NULL;
        size_t tl = 0, n = 0;
        int32_t *ids = NULL;
        CHECK(tm && optiq_chat_template_render(tm, msgs, strlen(msgs), "{\"add_generation_prompt\":true,\"enable_thinking\":false}",
                                               &text, &tl, &e) == OPTIQ_OK);
        CHECK(optiq_tokenizer_encode(tok, text, tl, 0, &ids, &n, &e) == OPTIQ_OK);
        optiq_free(text);
        char img[600];
        snprintf(img, sizeof img, "%s/%s", test_path("tests/fixtures"), img_rel);
        optiq_image im = {.source = img};
        int32_t plain[6] = {10, 20, 30, 40, 50, 60};
        optiq_generation alone[2], batched[2];
        job jobs[2];
        memset(jobs, 0, sizeof jobs);
        optiq_generate_params gp[2];
        optiq_session *ss[2];
        for (int i = 0; i < 2; i++) {
            gp[i] = optiq_generate_default();
            gp[i].max_tokens = 10;
            gp[i].ignore_eos = 1;
            if (i == 0) gp[i].images = &im, gp[i].n_images = 1;
            optiq_session *s = NULL;
            CHECK(optiq_session_new(eng, &s, &e) == OPTIQ_OK);
            CHECKF(optiq_generate(s, i ? plain : ids, i ? 6 : n, &gp[i], &alone[i], &e) == OPTIQ_OK, "%s", e.message);
            optiq_session_free(s);
            CHECK(optiq_session_new(eng, &ss[i], &e) == OPTIQ_OK);
            gp[i].on_done = on_done;
            gp[i].user = &jobs[i];
        }
        optiq_batch *b = NULL;
        CHECK(optiq_batch_new(eng, 4, &b, &e) == OPTIQ_OK);
        for (int i = 0; i < 2; i++)
            CHECKF(optiq_batch_add(b, ss[i], i ? plain : ids, i ? 6 : n, &gp[i], &batched[i], &e) == OPTIQ_OK, "%s",
                   e.message);
        for (int k = 0; k < 500 && optiq_batch_size(b); k++) CHECK(optiq_batch_step(b, &e) == OPTIQ_OK);
        for (int i = 0; i < 2; i++) {
            CHECK(jobs[i].done == 1 && jobs[i].status == OPTIQ_OK);
            CHECKF(batched[i].n_tokens == alone[i].n_tokens &&
                       !memcmp(batched[i].tokens, alone[i].tokens, alone[i].n_tokens * sizeof(int32_t)),
                   "prompt %d: tokens differ from alone", i);
            CHECK(batched[i].prompt_tokens == alone[i].prompt_tokens);
            optiq_generation_free(&batched[i]);
            optiq_generation_free(&alone[i]);
            optiq_session_free(ss[i]);
        }
        optiq_batch_free(b);
        optiq_free(ids);
        optiq_engine_free(eng);
    }
}

int main(void) {
    test_text("qwen35-dense-mixed", 0);
    test_text("qwen35-moe-mixed", 0);
    test_text("gemma4-e2b-mixed", 0);
    test_text("gemma4-moe-mixed", 0);
    test_text("qwen35-dense-mixed", 1);
    test_text("gemma4-e2b-mixed", 1);
    test_edges();
    test_images("qwen35-vl-mixed", "models/qwen35-vl-mixed/images/img0.png");
    test_images("gemma4-vl-mixed", "preprocess/gemma4/astronaut_96x128.png");
    test_images("gemma4-vl-unified", "preprocess/gemma4/chelsea_120x90.png");
    return test_finish();
}
