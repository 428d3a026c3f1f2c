/*
 * test_grammar.c — the JSON-schema grammar (text/grammar.h): byte strings it
 * accepts and rejects, the tool-call dialects of Qwen3.5 and Gemma-4, schema
 * keywords it refuses, and token masks over real vocabularies (the Qwen3
 * byte-level and Gemma SentencePiece tokenizers in ../shared/tokenizers, or
 * the fixtures' when those are absent): random walks through the allowed
 * tokens always end in a document that parses (and, through a forced tool
 * call's grammar, in a call server/tools.h parses back), the mask agrees with
 * grammar_accept token by token, and end-of-sequence is allowed exactly when
 * the document is complete. Through the engine: optiq_generate and a batch
 * with the process_logits hook give valid documents, and every generated
 * token's logprob / top_logprobs equal the log-softmax of optiq_dump's logits
 * for the same tokens (tolerance 1e-4: the same numeric path, the dump runs
 * the sequence in one forward call where generation runs one token a call).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "optiq.h"
#include "server/tools.h"
#include "test.h"
#include "text/grammar.h"

static grammar *schema_grammar(const char *schema_json) {
    grammar *g = grammar_new();
    cJSON *s = schema_json ? cJSON_Parse(schema_json) : NULL;
    optiq_error err = {0};
    if (!g || (schema_json && !s) || grammar_add_schema(g, s, GRAMMAR_JSON, &err) != OPTIQ_OK) {
        fprintf(stderr, "schema %s: %s\n", schema_json ? schema_json : "(object)", err.message);
        grammar_free(g);
        g = NULL;
    }
    cJSON_Delete(s);
    return g;
}

/* 1: complete document; 0: rejected; 2: accepted so far but incomplete */
static int run(const grammar *g, const char *text) {
    grammar_state st;
    grammar_start(g, &st);
    if (!grammar_feed(g, &st, (const uint8_t *)text, strlen(text))) return 0;
    return grammar_complete(g, &st) ? 1 : 2;
}

static const char *PERSON =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"age\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"ab\",1,12,null]},"
    "\"maxItems\":3},\"score\":{\"type\":[\"number\",\"null\"]},\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"ok\"],\"additionalProperties\":false}";

static void test_bytes(void) {
    for (TEST_CASE("schema object: accepted documents")) {
        grammar *g = schema_grammar(PERSON);
        CHECK(g != NULL);
        if (!g) continue;
        const char *good[] = {
            "{\"name\":\"Ann\",\"ok\":true}",
            "{ \"name\": \"Ann\", \"age\": -42, \"ok\": false }",
            "{\"name\":\"\\\"q\\\\\",\"tags\":[\"a\",12,null],\"score\":3.25,\"ok\":true}",
            "{\"name\":\"\xc3\xa9t\xc3\xa9\",\"tags\":[1, \"ab\"],\"score\":null,\"ok\":true}",
            "{\"name\":\"x\",\"age\":0,\"tags\":[],\"ok\":true}",
        };
        for (size_t i = 0; i < sizeof good / sizeof *good; i++)
            CHECKF(run(g, good[i]) == 1, "rejected %s (%d)", good[i], run(g, good[i]));
        grammar_free(g);
    }
    for (TEST_CASE("schema object: rejected documents")) {
        grammar *g = schema_grammar(PERSON);
        if (!g) { CHECK(0); continue; }
        const char *badd[] = {
            "{\"ok\":true}",                              /* required name skipped */
            "{\"name\":\"Ann\"}",                         /* required ok missing */
            "{\"ok\":true,\"name\":\"Ann\"}",             /* out of schema order */
            "{\"name\":\"Ann\",\"zzz\":1,\"ok\":true}",   /* unknown key */
            "{\"name\":\"123456789\",\"ok\":true}",       /* longer than maxLength */
            "{\"name\":\"a\",\"age\":1.5,\"ok\":true}",   /* not an integer */
            "{\"name\":\"a\",\"age\":01,\"ok\":true}",    /* leading zero */
            "{\"name\":\"a\",\"tags\":[\"b\"],\"ok\":true}", /* not in the enum */
            "{\"name\":\"a\",\"tags\":[1,1,1,1],\"ok\":true}", /* more than maxItems */
            "{\"name\":\"a\",\"ok\":true,}",              /* trailing comma */
            "{\"name\":\"a\xff\",\"ok\":true}",           /* not UTF-8 */
            "{\"name\":\"\xed\xa0\x80\",\"ok\":true}",    /* a surrogate */
            "{\"name\":\"a\nb\",\"ok\":true}",            /* raw control character */
            "{\"name\":\"a\",     \"ok\":true}",          /* more whitespace than allowed */
            " {\"name\":\"a\",\"ok\":true}",              /* whitespace before the document */
            "{\"name\":\"a\",\"ok\":true} ",              /* ... or after it */
        };
        for (size_t i = 0; i < sizeof badd / sizeof *badd; i++)
            CHECKF(run(g, badd[i]) != 1, "accepted %s", badd[i]);
        CHECK(run(g, "{\"name\":\"Ann\"") == 2);
        grammar_free(g);
    }
    for (TEST_CASE("json_object: any object, bounded")) {
        grammar *g = schema_grammar(NULL);
        if (!g) { CHECK(0); continue; }
        CHECK(run(g, "{}") == 1);
        CHECK(run(g, "{\"a\": [1, 2.5, \"x\", {\"b\": null}], \"c\": true}") == 1);
        CHECK(run(g, "[1]") == 0);
        CHECK(run(g, "{\"a\":}") == 0);
        CHECK(run(g, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7}") == 0); /* 7 keys */
        CHECK(run(g, "{\"a\":[[[[1]]]]}") == 0); /* nested deeper than the bound */
        CHECK(run(g, "{\"a\":12345678}") == 0);  /* more integer digits than the bound */
        grammar_free(g);
    }
    for (TEST_CASE("anyOf, const, top-level scalars")) {
        grammar *g = schema_grammar("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"object\",\"properties\":{\"k\":{\"const\":\"v\"}},\"required\":[\"k\"]}]}");
        if (!g) { CHECK(0); continue; }
        CHECK(run(g, "\"s\"") == 1);
        CHECK(run(g, "{\"k\":\"v\"}") == 1);
        CHECK(run(g, "{\"k\":\"w\"}") == 0);
        CHECK(run(g, "1") == 0);
        grammar_free(g);
        g = schema_grammar("{\"type\":\"number\"}");
        if (!g) { CHECK(0); continue; }
        CHECK(run(g, "-0.5") == 1);
        CHECK(run(g, "12") == 1);
        CHECK(run(g, "1.") == 2);
        CHECK(run(g, "1e5") == 0);
        grammar_free(g);
    }
    for (TEST_CASE("unsupported keywords are refused with their name")) {
        const char *schemas[] = {"{\"type\":\"string\",\"pattern\":\"^a\"}", "{\"type\":\"integer\",\"minimum\":0}",
                                 "{\"$ref\":\"#/x\"}", "{\"type\":\"thing\"}", "{\"enum\":[]}"};
        const char *words[] = {"pattern", "minimum", "$ref", "thing", "empty"};
        for (size_t i = 0; i < 5; i++) {
            grammar *g = grammar_new();
            cJSON *s = cJSON_Parse(schemas[i]);
            optiq_error err = {0};
            optiq_status st = grammar_add_schema(g, s, GRAMMAR_JSON, &err);
            CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, words[i]), "%s: %d %s", schemas[i], st,
                   err.message);
            cJSON_Delete(s);
            grammar_free(g);
        }
    }
}

static const char *WEATHER = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                             "\"days\":{\"type\":\"integer\"},\"units\":{\"enum\":[\"c\",\"f\"]}},"
                             "\"required\":[\"city\"]}";

static grammar *tool_grammar(grammar_dialect d) {
    grammar *g = grammar_new();
    cJSON *w = cJSON_Parse(WEATHER), *t = cJSON_Parse("{\"type\":\"object\",\"properties\":{}}");
    const cJSON *schemas[2] = {w, t};
    optiq_error err = {0};
    optiq_status st;
    if (d == GRAMMAR_QWEN_XML) {
        const char *names[2] = {"get_weather>\n", "get_time>\n"};
        st = grammar_add_literal(g, "<tool_call>\n<function=", 22, &err);
        if (!st) st = grammar_add_choice(g, names, schemas, 2, d, &err);
    } else {
        const char *names[2] = {"get_weather{", "get_time{"};
        st = grammar_add_literal(g, "<|tool_call>call:", 17, &err);
        if (!st) st = grammar_add_choice(g, names, schemas, 2, d, &err);
        if (!st) st = grammar_add_literal(g, "<tool_call|>", 12, &err);
    }
    cJSON_Delete(w), cJSON_Delete(t);
    if (st) {
        fprintf(stderr, "tool grammar: %s\n", err.message);
        grammar_free(g);
        return NULL;
    }
    return g;
}

static void test_tools_dialects(void) {
    for (TEST_CASE("Qwen3.5 tool call (XML parameters)")) {
        grammar *g = tool_grammar(GRAMMAR_QWEN_XML);
        if (!g) { CHECK(0); continue; }
        CHECK(run(g, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                     "<parameter=units>\n\"c\"\n</parameter>\n</function>\n</tool_call>") == 1);
        CHECK(run(g, "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
                     "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>") == 1);
        CHECK(run(g, "<tool_call>\n<function=get_time>\n</function>\n</tool_call>") == 1);
        CHECK(run(g, "<tool_call>\n<function=get_weather>\n</function>\n</tool_call>") == 0); /* city required */
        CHECK(run(g, "<tool_call>\n<function=get_wind>\n") == 0);
        CHECK(run(g, "<tool_call>\n<function=get_weather>\n<parameter=city>\na<b\n</parameter>\n") == 0);
        grammar_free(g);
    }
    for (TEST_CASE("Gemma-4 tool call (<|\"|> strings, bare keys)")) {
        grammar *g = tool_grammar(GRAMMAR_GEMMA);
        if (!g) { CHECK(0); continue; }
        CHECK(run(g, "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:2}<tool_call|>") == 1);
        CHECK(run(g, "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,units:<|\"|>f<|\"|>}<tool_call|>") == 1);
        CHECK(run(g, "<|tool_call>call:get_time{}<tool_call|>") == 1);
        CHECK(run(g, "<|tool_call>call:get_weather{days:2}<tool_call|>") == 0);
        CHECK(run(g, "<|tool_call>call:get_weather{\"city\":\"Paris\"}<tool_call|>") == 0);
        grammar_free(g);
    }
}

/* ---- token masks on real vocabularies ---- */

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Walk: pick a random allowed token (EOS as soon as it is allowed, half the
 * time) until EOS; the bytes must form a complete document. Checks the mask
 * against grammar_accept on a sample of tokens at every step. */
static int is_eos(const int32_t *ids, size_t n, int32_t id) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static int walk(const grammar *g, grammar_vocab *v, const int32_t *eos_ids, size_t n_eos, int64_t V, int32_t eos, char *out,
                size_t cap, double *mask_ms, int *steps, char *why, size_t why_n) {
    grammar_state st;
    grammar_start(g, &st);
    uint8_t *allowed = malloc((size_t)V);
    size_t len = 0;
    int ok = 0;
    *steps = 0;
    for (int step = 0; step < 600; step++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int64_t n = grammar_allowed(g, &st, v, allowed);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        *mask_ms += (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
        (*steps)++;
        if (n <= 0) {
            snprintf(why, why_n, "dead end after %zu bytes: %.*s", len, (int)len, out);
            break;
        }
        int complete = grammar_complete(g, &st);
        if (allowed[eos] != complete) {
            snprintf(why, why_n, "EOS allowed %d but complete %d", allowed[eos], complete);
            break;
        }
        if (complete) /* then only end-of-sequence ids */
            for (int64_t i = 0; i < V; i++)
                if (allowed[i] && !is_eos(eos_ids, n_eos, (int32_t)i)) {
                    snprintf(why, why_n, "complete, yet token %lld is allowed", (long long)i);
                    goto done;
                }
        /* the mask agrees with grammar_accept on a sample */
        for (int k = 0; k < 64; k++) {
            int32_t id = (int32_t)(next_rand() % (uint64_t)V);
            grammar_state tmp = st;
            if (grammar_accept(g, &tmp, v, id) != allowed[id]) {
                snprintf(why, why_n, "token %d: mask %d, accept %d", id, allowed[id], !allowed[id]);
                goto done;
            }
        }
        if (complete) {
            ok = 1;
            break;
        }
        /* a random allowed token (not EOS) */
        int64_t pick = (int64_t)(next_rand() % (uint64_t)n), id = -1;
        for (int64_t i = 0; i < V; i++)
            if (allowed[i] && pick-- == 0) {
                id = i;
                break;
            }
        if (id < 0 || !grammar_accept(g, &st, v, (int32_t)id)) {
            snprintf(why, why_n, "allowed token %lld not accepted", (long long)id);
            break;
        }
        size_t bl;
        const uint8_t *b = grammar_vocab_bytes(v, (int32_t)id, &bl);
        if (len + bl + 1 > cap) {
            snprintf(why, why_n, "document too long");
            break;
        }
        memcpy(out + len, b, bl);
        len += bl;
        out[len] = 0;
    }
done:
    out[len] = 0;
    free(allowed);
    return ok;
}

static const char *WALK_SCHEMAS[] = {
    NULL,
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"n\":{\"type\":\"number\"},"
    "\"list\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},"
    "\"y\":{\"enum\":[\"up\",\"down\"]}},\"required\":[\"x\",\"y\"]},\"minItems\":1}},"
    "\"required\":[\"name\",\"n\",\"list\"],\"additionalProperties\":false}",
    "{\"type\":\"array\",\"items\":{\"type\":[\"string\",\"boolean\",\"null\"]},\"minItems\":2,\"maxItems\":4}",
};

static void test_masks(const char *label, const char *dir) {
    optiq_tokenizer *tok = NULL;
    optiq_error err = {0};
    char name[160];
    snprintf(name, sizeof name, "%s: vocabulary trie builds", label);
    grammar_vocab *v = NULL;
    int64_t V = 0;
    int32_t eos = -1;
    const int32_t *eos_ids = NULL;
    size_t n_eos_ids = 0;
    for (TEST_CASE(name)) {
        CHECKF(optiq_tokenizer_load(dir, &tok, &err) == OPTIQ_OK, "%s: %s", dir, err.message);
        if (!tok) continue;
        V = (int64_t)optiq_tokenizer_vocab_size(tok);
        n_eos_ids = optiq_tokenizer_eos_ids(tok, &eos_ids);
        CHECK(n_eos_ids > 0);
        eos = n_eos_ids ? eos_ids[0] : -1;
        v = grammar_vocab_new(tok, V, eos_ids, n_eos_ids);
        CHECK(v != NULL);
        /* the bytes of a few tokens */
        int32_t brace = optiq_tokenizer_token_to_id(tok, "{", 1);
        size_t bl = 0;
        const uint8_t *b = grammar_vocab_bytes(v, brace, &bl);
        CHECK(b && bl == 1 && b[0] == '{');
    }
    if (!v) {
        optiq_tokenizer_free(tok);
        return;
    }
    for (size_t si = 0; si < sizeof WALK_SCHEMAS / sizeof *WALK_SCHEMAS; si++) {
        snprintf(name, sizeof name, "%s: random walks over the mask end in valid JSON (schema %zu)", label, si);
        for (TEST_CASE(name)) {
            grammar *g = schema_grammar(WALK_SCHEMAS[si]);
            if (!g) { CHECK(0); continue; }
            double ms = 0;
            int total = 0;
            for (int w = 0; w < 4 && !t_case_failed; w++) {
                char doc[8192], why[256] = "";
                int s = 0;
                int ok = walk(g, v, eos_ids, n_eos_ids, V, eos, doc, sizeof doc, &ms, &s, why, sizeof why);
                total += s;
                CHECKF(ok, "walk %d: %s", w, why);
                cJSON *j = ok ? cJSON_Parse(doc) : NULL;
                CHECKF(!ok || j, "walk %d: not JSON: %s", w, doc);
                if (j && si == 0) CHECKF(cJSON_IsObject(j), "not an object: %s", doc);
                if (j && si == 2) CHECKF(cJSON_IsArray(j) && cJSON_GetArraySize(j) >= 2, "%s", doc);
                if (j && si == 1)
                    CHECKF(cJSON_IsString(cJSON_GetObjectItem(j, "name")) &&
                               cJSON_GetArraySize(cJSON_GetObjectItem(j, "list")) >= 1,
                           "%s", doc);
                cJSON_Delete(j);
            }
            printf("#   %s schema %zu: %d masks, %.2f ms each\n", label, si, total, total ? ms / total : 0);
            grammar_free(g);
        }
    }
    /* the forced tool-call grammars, each over its family's vocabulary kind */
    int gemma = strstr(label, "gemma") != NULL;
    snprintf(name, sizeof name, "%s: random walks through a forced %s tool call parse back into a call", label,
             gemma ? "Gemma-4" : "Qwen3.5");
    for (TEST_CASE(name)) {
        grammar *g = tool_grammar(gemma ? GRAMMAR_GEMMA : GRAMMAR_QWEN_XML);
        if (!g) { CHECK(0); continue; }
        cJSON *tools = cJSON_Parse("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"
                                   "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                                   "\"days\":{\"type\":\"integer\"},\"units\":{\"enum\":[\"c\",\"f\"]}},"
                                   "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":{\"name\":"
                                   "\"get_time\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}}]");
        double ms = 0;
        int total = 0;
        for (int w = 0; w < 4 && !t_case_failed; w++) {
            char doc[8192], why[256] = "";
            int steps = 0;
            int ok = walk(g, v, eos_ids, n_eos_ids, V, eos, doc, sizeof doc, &ms, &steps, why, sizeof why);
            total += steps;
            CHECKF(ok, "walk %d: %s", w, why);
            tool_parse tp;
            if (!ok || tools_parse(gemma ? TOOLS_GEMMA : TOOLS_QWEN, doc, strlen(doc), tools, "t", &tp) != 0) continue;
            CHECKF(tp.n_calls == 1 && !tp.content[0], "walk %d: %zu calls, content '%s' from %s", w, tp.n_calls,
                   tp.content, doc);
            if (tp.n_calls == 1 && !strcmp(tp.calls[0].name, "get_weather")) {
                cJSON *a = cJSON_Parse(tp.calls[0].arguments);
                CHECKF(cJSON_IsString(cJSON_GetObjectItem(a, "city")), "walk %d: %s", w, tp.calls[0].arguments);
                const cJSON *d = cJSON_GetObjectItem(a, "days");
                CHECKF(!d || (cJSON_IsNumber(d) && d->valuedouble == (double)(int64_t)d->valuedouble), "walk %d: %s", w,
                       tp.calls[0].arguments);
                cJSON_Delete(a);
            }
            tools_parse_free(&tp);
        }
        printf("#   %s tool call: %d masks, %.2f ms each\n", label, total, total ? ms / total : 0);
        cJSON_Delete(tools);
        grammar_free(g);
    }
    grammar_vocab_free(v);
    optiq_tokenizer_free(tok);
}

static const char *pick_dir(const char *shared, const char *fixture) {
    static char buf[2][1024];
    static int k;
    k ^= 1;
    char p[1100];
    snprintf(p, sizeof p, "%s/tokenizer.json", test_path(shared));
    FILE *f = fopen(p, "rb");
    if (f) {
        fclose(f);
        snprintf(buf[k], sizeof buf[k], "%s", test_path(shared));
    } else {
        snprintf(buf[k], sizeof buf[k], "%s", test_path(fixture));
    }
    return buf[k];
}

/* ---- through the engine: optiq_generate and a batch with the logits hook ---- */

typedef struct hook {
    const grammar *g;
    grammar_state st;
    grammar_vocab *v;
    int rejected;
    size_t sampled;
    float first_lp, first_top;
    int first_top_id;
} hook;

static int hook_logits(void *user, float *logits, int64_t vocab) {
    hook *h = user;
    (void)vocab;
    return grammar_mask_logits(h->g, &h->st, h->v, logits) > 0 ? 0 : 1;
}

static void hook_sampled(void *user, int32_t id, const optiq_token_logprobs *lp) {
    hook *h = user;
    if (h->sampled++ == 0 && lp) {
        h->first_lp = lp->logprob;
        h->first_top = lp->n_top ? lp->top_logprobs[0] : 0;
        h->first_top_id = lp->n_top ? lp->top_ids[0] : -1;
    }
    grammar_state tmp = h->st;
    if (grammar_accept(h->g, &tmp, h->v, id)) h->st = tmp;
    else h->rejected++;
}

static void test_engine(const char *label, const char *dir) {
    char name[200];
    snprintf(name, sizeof name, "%s: optiq_generate and a batch under a schema mask give valid JSON; logprobs", label);
    for (TEST_CASE(name)) {
        optiq_engine *e = NULL;
        optiq_error err = {0};
        if (optiq_engine_load(dir, NULL, &e, &err) != OPTIQ_OK) {
            CHECKF(0, "%s", err.message);
            continue;
        }
        const int32_t *eos;
        size_t n_eos = optiq_engine_eos_ids(e, &eos);
        grammar_vocab *v = grammar_vocab_new(optiq_engine_tokenizer(e), optiq_engine_vocab_size(e), eos, n_eos);
        grammar *g = schema_grammar(WALK_SCHEMAS[1]);
        optiq_session *s[2] = {0};
        optiq_session_new(e, &s[0], &err);
        optiq_session_new(e, &s[1], &err);
        int32_t *ids = NULL;
        size_t n = 0;
        optiq_tokenizer_encode(optiq_engine_tokenizer(e), "Some JSON:", 10, OPTIQ_ENCODE_ADD_SPECIAL, &ids, &n, &err);
        /* the raw logits of the first step, for the logprob check */
        int64_t V = optiq_engine_vocab_size(e);
        float *logits = malloc((size_t)V * sizeof *logits);
        CHECK(optiq_session_eval(s[0], ids, n, logits, &err) == OPTIQ_OK);
        optiq_session_reset(s[0]);
        double mx = -INFINITY, sum = 0;
        int32_t best = 0;
        for (int64_t i = 0; i < V; i++)
            if (logits[i] > mx) mx = logits[i], best = (int32_t)i;
        for (int64_t i = 0; i < V; i++) sum += exp(logits[i] - mx);
        double top_lp = -log(sum);
        hook h[2];
        optiq_generation out[1];
        for (int k = 0; k < 2; k++) {
            memset(&h[k], 0, sizeof h[k]);
            h[k].g = g, h[k].v = v;
            grammar_start(g, &h[k].st);
        }
        optiq_generate_params p = optiq_generate_default();
        p.max_tokens = 400;
        p.process_logits = hook_logits;
        p.on_sampled = hook_sampled;
        p.logprobs = 1;
        p.top_logprobs = 3;
        p.user = &h[0];
        CHECKF(optiq_generate(s[0], ids, n, &p, &out[0], &err) == OPTIQ_OK, "%s", err.message);
        optiq_batch *b = NULL;
        optiq_batch_new(e, 2, &b, &err);
        optiq_session_reset(s[0]);
        optiq_generate_params q[2] = {p, p};
        q[0].user = &h[1];
        q[1].sampling.temperature = 0.9f, q[1].sampling.seed = 7;
        hook h2 = {.g = g, .v = v};
        grammar_start(g, &h2.st);
        q[1].user = &h2;
        optiq_generation bo[2];
        grammar_start(g, &h[1].st);
        CHECK(optiq_batch_add(b, s[0], ids, n, &q[0], &bo[0], &err) == OPTIQ_OK);
        CHECK(optiq_batch_add(b, s[1], ids, n, &q[1], &bo[1], &err) == OPTIQ_OK);
        while (optiq_batch_size(b)) optiq_batch_step(b, &err);
        const optiq_generation *all[3] = {&out[0], &bo[0], &bo[1]};
        for (int k = 0; k < 3; k++) {
            cJSON *j = cJSON_Parse(all[k]->text);
            CHECKF(j && !strcmp(all[k]->finish_reason, "stop"), "run %d (%s): %s", k, all[k]->finish_reason,
                   all[k]->text);
            CHECKF(cJSON_GetArraySize(cJSON_GetObjectItem(j, "list")) >= 1, "run %d: %s", k, all[k]->text);
            cJSON_Delete(j);
            CHECK(all[k]->logprobs && all[k]->n_top == 3);
        }
        CHECK(h[0].rejected == 0 && h[1].rejected == 0 && h2.rejected == 0);
        CHECKF(!strcmp(out[0].text, bo[0].text), "greedy alone %s vs batched %s", out[0].text, bo[0].text);
        /* the first step's top alternative is the raw argmax with its log-softmax */
        CHECKF(h[0].first_top_id == best && fabs(h[0].first_top - top_lp) < 1e-4, "top %d %g vs %d %g",
               h[0].first_top_id, h[0].first_top, best, top_lp);
        CHECKF(fabs(out[0].logprobs[0] - h[0].first_lp) < 1e-6, "%g vs %g", out[0].logprobs[0], h[0].first_lp);
        CHECK(out[0].top_logprobs[0] >= out[0].top_logprobs[1] && out[0].top_logprobs[1] >= out[0].top_logprobs[2]);
        /* every step against optiq_dump of prompt + generated tokens */
        size_t nt = out[0].n_tokens, na = n + nt;
        int32_t *all_ids = malloc(na * sizeof *all_ids);
        memcpy(all_ids, ids, n * sizeof *ids);
        memcpy(all_ids + n, out[0].tokens, nt * sizeof *ids);
        char path[] = "/tmp/optiq_grammar_dumpXXXXXX";
        int fd = mkstemp(path);
        st_file *f = NULL;
        double worst = 0;
        if (fd >= 0) close(fd);
        CHECKF(fd >= 0 && optiq_dump(e, all_ids, na, path, &err) == OPTIQ_OK && st_open(path, &f, &err) == OPTIQ_OK,
               "dump: %s", err.message);
        const st_tensor *lt = f ? st_find(f, "logits") : NULL;
        CHECK(lt && lt->shape[0] == (int64_t)na && lt->shape[1] == V);
        for (size_t k = 0; lt && k < nt && !t_case_failed; k++) {
            float *row = logits; /* the file's data may be unaligned: copied */
            memcpy(row, (const char *)lt->data + (n - 1 + k) * (size_t)V * sizeof(float), (size_t)V * sizeof(float));
            double m2 = -INFINITY, s2 = 0;
            for (int64_t i = 0; i < V; i++) m2 = row[i] > m2 ? row[i] : m2;
            for (int64_t i = 0; i < V; i++) s2 += exp(row[i] - m2);
            double lse = m2 + log(s2), want = row[out[0].tokens[k]] - lse;
            double d = fabs(out[0].logprobs[k] - want);
            worst = d > worst ? d : worst;
            CHECKF(d < 1e-4, "step %zu: logprob %g, dump %g", k, out[0].logprobs[k], want);
            for (int t = 0; t < 3; t++) {
                int32_t id = out[0].top_ids[k * 3 + (size_t)t];
                double dt = fabs(out[0].top_logprobs[k * 3 + (size_t)t] - (row[id] - lse));
                CHECKF(dt < 1e-4, "step %zu top %d: %g vs %g", k, t, out[0].top_logprobs[k * 3 + (size_t)t], row[id] - lse);
                for (int64_t i = 0; i < V && t == 2; i++) /* nothing outside the top 3 beats the third */
                    if (row[i] - lse > out[0].top_logprobs[k * 3 + 2] + 1e-4) {
                        int in = 0;
                        for (int u = 0; u < 3; u++) in |= out[0].top_ids[k * 3 + (size_t)u] == (int32_t)i;
                        CHECKF(in, "step %zu: token %lld is more likely than the top 3", k, (long long)i);
                    }
            }
        }
        printf("#   %s: %zu steps' logprobs vs optiq_dump, largest difference %.2e\n", label, nt, worst);
        st_close(f);
        unlink(path);
        free(all_ids);
        optiq_generation_free(&out[0]);
        optiq_generation_free(&bo[0]);
        optiq_generation_free(&bo[1]);
        optiq_batch_free(b);
        optiq_free(ids);
        free(logits);
        optiq_session_free(s[0]);
        optiq_session_free(s[1]);
        grammar_free(g);
        grammar_vocab_free(v);
        optiq_engine_free(e);
    }
}

int main(void) {
    test_bytes();
    test_tools_dialects();
    test_masks("qwen3 byte-level", pick_dir("../shared/tokenizers/qwen3", "tests/fixtures/models/qwen35-dense-mixed"));
    test_masks("gemma SentencePiece", pick_dir("../shared/tokenizers/gemma3", "tests/fixtures/models/gemma4-e2b-mixed"));
    test_masks("qwen35 fixture", test_path("tests/fixtures/models/qwen35-dense-mixed"));
    test_masks("gemma4 fixture", test_path("tests/fixtures/models/gemma4-e2b-mixed"));
    test_engine("qwen35-dense-mixed", test_path("tests/fixtures/models/qwen35-dense-mixed"));
    test_engine("gemma4-e2b-mixed", test_path("tests/fixtures/models/gemma4-e2b-mixed"));
    return test_finish();
}
