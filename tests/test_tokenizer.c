/*
 * test_tokenizer.c — tokenizer conformance with the reference `tokenizers` library.
 *
 * Fixtures (tests/fixtures/tokenizers/, made by tools/reference/gen_tokenizer.py): the real
 * Qwen3 and Gemma 3 tokenizer files (xz) and six small synthetic tokenizers, and for each a
 * JSON-lines file of reference results over the corpus: ids without and with special tokens,
 * ids with special-token text read as plain text, and the decoded text with and without
 * special tokens. The tolerance is zero: every id and every byte must match.
 *
 * Also checked: streaming decoding gives the same text as decoding at once and never a piece
 * that is not whole UTF-8; malformed tokenizer.json files fail with a clear message; the two
 * merge orders (linear scan, heap) agree; encoding from several threads at once; speed.
 *
 * The .xz files are read through `xz -dc` (xz-utils).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "optiq.h"
#include "test.h"
#include "text/tokenizer.h"
#include "text/tokenizer_int.h"
#include "text/tokenizer_unicode.h"

/* the fuzz harness, run here over its seed corpus as a plain program */
#include "fuzz/fuzz_tokenizer.c"

/* ---- files ---- */

static char *read_cmd(const char *cmd, size_t *len) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        size_t k = fread(b + n, 1, 65536, p);
        if (k == 0) break;
        n += k;
    }
    int rc = pclose(p);
    if (rc != 0) { free(b); return NULL; }
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static char *read_xz(const char *rel, size_t *len) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "xz -dc '%s'", test_path(rel));
    return read_cmd(cmd, len);
}

static int write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static char tmpdir[256];

static void rm_tree(void) {
    if (!tmpdir[0]) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Unpack a real tokenizer folder into tmpdir/name and load it from there. */
static optiq_tokenizer *load_real(const char *name, optiq_error *err) {
    char dir[512], rel[256], path[600];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0700);
    const char *files[2] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        size_t n;
        snprintf(rel, sizeof rel, "tests/fixtures/tokenizers/%s/%s.xz", name, files[i]);
        char *d = read_xz(rel, &n);
        if (!d) { snprintf(err->message, sizeof err->message, "cannot read %s (is xz installed?)", rel); return NULL; }
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int bad = write_file(path, d, n);
        free(d);
        if (bad) { snprintf(err->message, sizeof err->message, "cannot write %.400s", path); return NULL; }
    }
    optiq_tokenizer *t = NULL;
    if (optiq_tokenizer_load(dir, &t, err)) return NULL;
    return t;
}

static optiq_tokenizer *load_synth(const char *name, optiq_error *err) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/tokenizers/synth/%s", name);
    optiq_tokenizer *t = NULL;
    if (optiq_tokenizer_load(test_path(rel), &t, err)) return NULL;
    return t;
}

/* ---- reference records ---- */

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

/* String field (plain or _hex). Returns a malloc'd buffer, NULL when absent. */
static char *get_bytes(const cJSON *rec, const char *key, size_t *n) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (cJSON_IsString(j)) {
        *n = strlen(j->valuestring);
        char *b = malloc(*n + 1);
        memcpy(b, j->valuestring, *n + 1);
        return b;
    }
    char hk[64];
    snprintf(hk, sizeof hk, "%s_hex", key);
    j = cJSON_GetObjectItemCaseSensitive(rec, hk);
    if (!cJSON_IsString(j)) return NULL;
    size_t h = strlen(j->valuestring);
    char *b = malloc(h / 2 + 1);
    for (size_t i = 0; i < h / 2; i++) b[i] = (char)(hexval(j->valuestring[2 * i]) * 16 + hexval(j->valuestring[2 * i + 1]));
    b[h / 2] = 0;
    *n = h / 2;
    return b;
}

static int32_t *get_ids(const cJSON *rec, const char *key, size_t *n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (!cJSON_IsArray(a)) return NULL;
    *n = (size_t)cJSON_GetArraySize(a);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof *ids);
    size_t i = 0;
    for (const cJSON *x = a->child; x; x = x->next) ids[i++] = (int32_t)x->valuedouble;
    return ids;
}

typedef struct stats {
    size_t strings, enc_plain, enc_special, enc_split, dec, dec_skip, stream, stream_utf8, roundtrip, roundtrip_ref;
    size_t ref_failed; /* decodes the reference could not do */
    char first_fail[4][600];
} stats;

static void note_fail(stats *s, int which, size_t idx, const char *what, const char *text, size_t tn) {
    if (s->first_fail[which][0]) return;
    snprintf(s->first_fail[which], sizeof s->first_fail[which], "string %zu (%s): \"%.*s\"", idx, what,
             (int)(tn > 120 ? 120 : tn), text);
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Stream ids one at a time; compare with want; every piece must be whole UTF-8. */
static int stream_ok(const optiq_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, const char *want,
                     size_t wn, int *utf8_ok) {
    optiq_detokenizer *d;
    optiq_error err;
    if (optiq_detokenizer_new(t, flags, &d, &err)) return 0;
    size_t an = 0;
    int ok = 1;
    *utf8_ok = 1;
    for (size_t i = 0; i <= n && ok; i++) {
        const char *p;
        size_t pl;
        optiq_status st = i < n ? optiq_detokenizer_push(d, ids[i], &p, &pl, &err)
                                : optiq_detokenizer_finish(d, &p, &pl, &err);
        if (st) { ok = 0; break; }
        if (!tok_utf8_valid(p, pl)) *utf8_ok = 0;
        if (an + pl > wn || memcmp(want + an, p, pl) != 0) { ok = 0; break; }
        an += pl;
    }
    if (an != wn) ok = 0;
    optiq_detokenizer_free(d);
    return ok;
}

/* Run one tokenizer over its reference file. */
static void conformance(const char *label, const optiq_tokenizer *t, const char *fixture) {
    stats s;
    memset(&s, 0, sizeof s);
    size_t len = 0;
    char *data = read_xz(fixture, &len);
    char name[320];
    int meta_ok = 1;
    char meta_msg[300] = "";
    if (!data) {
        snprintf(name, sizeof name, "%s: reference file %s readable", label, fixture);
        for (TEST_CASE(name)) CHECKF(0, "xz -dc %s failed", fixture);
        return;
    }
    size_t expect_strings = 0;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        cJSON *rec = cJSON_Parse(line);
        if (!rec) continue;
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(rec, "meta");
        if (meta) {
            const cJSON *vs = cJSON_GetObjectItemCaseSensitive(meta, "vocab_size");
            expect_strings = (size_t)cJSON_GetObjectItemCaseSensitive(meta, "strings")->valuedouble;
            if ((size_t)vs->valuedouble != optiq_tokenizer_vocab_size(t)) {
                meta_ok = 0;
                snprintf(meta_msg, sizeof meta_msg, "vocab size %zu, reference %zu", optiq_tokenizer_vocab_size(t),
                         (size_t)vs->valuedouble);
            }
            const cJSON *toks = cJSON_GetObjectItemCaseSensitive(meta, "tokens");
            for (const cJSON *p = toks ? toks->child : NULL; p && meta_ok; p = p->next) {
                /* [id, id_to_token(id), token_to_id(that token) or null] */
                int32_t id = (int32_t)p->child->valuedouble;
                const char *want = p->child->next->valuestring;
                const cJSON *back = p->child->next->next;
                int32_t want_back = cJSON_IsNumber(back) ? (int32_t)back->valuedouble : -1;
                size_t tl;
                const char *got = optiq_tokenizer_id_to_token(t, id, &tl);
                if (!got || tl != strlen(want) || memcmp(got, want, tl) != 0 ||
                    optiq_tokenizer_token_to_id(t, want, strlen(want)) != want_back) {
                    meta_ok = 0;
                    snprintf(meta_msg, sizeof meta_msg, "id %d: token \"%s\", reference \"%s\"", id, got ? got : "(none)",
                             want);
                }
            }
            cJSON_Delete(rec);
            continue;
        }
        size_t idx = (size_t)cJSON_GetObjectItemCaseSensitive(rec, "i")->valuedouble;
        size_t tn = 0;
        char *text = get_bytes(rec, "text", &tn);
        if (!text) { /* "hex": raw input bytes, possibly ill-formed UTF-8 */
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(rec, "hex");
            size_t hl = strlen(h->valuestring);
            text = malloc(hl / 2 + 1);
            for (size_t i = 0; i < hl / 2; i++)
                text[i] = (char)(hexval(h->valuestring[2 * i]) * 16 + hexval(h->valuestring[2 * i + 1]));
            tn = hl / 2;
        }
        size_t n0, n1, n2, dn, dsn;
        int32_t *r0 = get_ids(rec, "ids", &n0), *r1 = get_ids(rec, "ids_special", &n1);
        int32_t *r2 = get_ids(rec, "ids_split", &n2);
        if (!r2) { r2 = r0; n2 = n0; }
        char *dec = get_bytes(rec, "dec", &dn), *dec_skip = get_bytes(rec, "dec_skip", &dsn);
        s.strings++;
        int32_t *ids;
        size_t n;
        optiq_error err;
        if (!optiq_tokenizer_encode(t, text, tn, 0, &ids, &n, &err) && same_ids(ids, n, r0, n0)) s.enc_plain++;
        else note_fail(&s, 0, idx, "ids", text, tn);
        optiq_free(ids);
        if (!optiq_tokenizer_encode(t, text, tn, OPTIQ_ENCODE_ADD_SPECIAL, &ids, &n, &err) && same_ids(ids, n, r1, n1))
            s.enc_special++;
        else note_fail(&s, 0, idx, "ids with special tokens", text, tn);
        optiq_free(ids);
        if (!optiq_tokenizer_encode(t, text, tn, OPTIQ_ENCODE_SPLIT_SPECIAL, &ids, &n, &err) && same_ids(ids, n, r2, n2))
            s.enc_split++;
        else note_fail(&s, 0, idx, "ids with special text as plain text", text, tn);
        optiq_free(ids);
        /* decoding: ours against the reference's text; where the reference fails (its Strip
         * decoder panics on an empty text) ours must still succeed, and streaming is then
         * compared with our own decode */
        char *out[2] = {NULL, NULL};
        size_t on[2] = {0, 0};
        const char *ref[2] = {dec, dec_skip};
        size_t rn[2] = {dn, dsn};
        for (int k = 0; k < 2; k++) {
            unsigned fl = k ? OPTIQ_DECODE_SKIP_SPECIAL : 0;
            int ok = optiq_tokenizer_decode(t, r1, n1, fl, &out[k], &on[k], &err) == OPTIQ_OK;
            if (!ref[k]) {
                s.ref_failed++;
                if (ok) (*(k ? &s.dec_skip : &s.dec))++;
                else note_fail(&s, 1, idx, "decode where the reference fails", text, tn);
            } else if (ok && on[k] == rn[k] && memcmp(out[k], ref[k], rn[k]) == 0) {
                (*(k ? &s.dec_skip : &s.dec))++;
            } else {
                note_fail(&s, 1, idx, k ? "decode skipping special tokens" : "decode", text, tn);
            }
        }
        /* round trip: our encode then decode gives back the input exactly where the reference's does */
        s.roundtrip += dec_skip && out[1] && on[1] == tn && memcmp(out[1], text, tn) == 0;
        s.roundtrip_ref += dec_skip && dsn == tn && memcmp(dec_skip, text, tn) == 0;
        int u1 = 1, u2 = 1;
        if (stream_ok(t, r1, n1, 0, dec ? dec : out[0], dec ? dn : on[0], &u1) &&
            stream_ok(t, r1, n1, OPTIQ_DECODE_SKIP_SPECIAL, dec_skip ? dec_skip : out[1], dec_skip ? dsn : on[1], &u2))
            s.stream++;
        else note_fail(&s, 2, idx, "streaming decode", text, tn);
        if (u1 && u2) s.stream_utf8++;
        else note_fail(&s, 3, idx, "streamed piece not whole UTF-8", text, tn);
        optiq_free(out[0]);
        optiq_free(out[1]);
        if (r2 != r0) free(r2);
        free(r0);
        free(r1);
        free(dec);
        free(dec_skip);
        free(text);
        cJSON_Delete(rec);
    }
    free(data);
    snprintf(name, sizeof name, "%s: vocabulary size and token strings match the reference", label);
    for (TEST_CASE(name)) CHECKF(meta_ok, "%s", meta_msg);
    snprintf(name, sizeof name, "%s: %zu strings, ids identical (plain %zu, +special %zu, special as text %zu)", label,
             s.strings, s.enc_plain, s.enc_special, s.enc_split);
    for (TEST_CASE(name)) {
        CHECKF(s.strings == expect_strings && s.strings > 0, "read %zu of %zu strings", s.strings, expect_strings);
        CHECKF(s.enc_plain == s.strings && s.enc_special == s.strings && s.enc_split == s.strings, "first: %s",
               s.first_fail[0]);
    }
    char extra[96] = "";
    if (s.ref_failed)
        snprintf(extra, sizeof extra, " (%zu decodes where the reference panics give text here)", s.ref_failed);
    snprintf(name, sizeof name,
             "%s: decoded text identical (%zu, skipping special %zu of %zu)%s; round trip to the input %zu (reference %zu)",
             label, s.dec, s.dec_skip, s.strings, extra, s.roundtrip, s.roundtrip_ref);
    for (TEST_CASE(name)) {
        CHECKF(s.dec == s.strings && s.dec_skip == s.strings, "first: %s", s.first_fail[1]);
        CHECK(s.roundtrip == s.roundtrip_ref);
    }
    snprintf(name, sizeof name, "%s: streaming decode equals decode (%zu of %zu), whole UTF-8 pieces (%zu)", label,
             s.stream, s.strings, s.stream_utf8);
    for (TEST_CASE(name)) {
        CHECKF(s.stream == s.strings, "first: %s", s.first_fail[2]);
        CHECKF(s.stream_utf8 == s.strings, "first: %s", s.first_fail[3]);
    }
}

/* ---- malformed files ---- */

static void expect_error(const char *label, const char *json, optiq_status want, const char *substr) {
    char path[512], name[300];
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    write_file(path, json, strlen(json));
    optiq_tokenizer_files f = {path, NULL, NULL, NULL};
    optiq_tokenizer *t = (optiq_tokenizer *)1;
    optiq_error err = {0};
    optiq_status st = optiq_tokenizer_load_files(&f, &t, &err);
    snprintf(name, sizeof name, "malformed tokenizer.json: %s", label);
    for (TEST_CASE(name)) {
        CHECKF(st == want, "status %d (%s), expected %d", st, err.message, want);
        CHECKF(t == NULL, "handle returned on failure");
        CHECKF(strstr(err.message, substr) != NULL, "message \"%s\" lacks \"%s\"", err.message, substr);
    }
    if (st == OPTIQ_OK) optiq_tokenizer_free(t);
}

#define MINI_MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"]]}"

static void malformed(void) {
    expect_error("not JSON", "{\"model\": [", OPTIQ_ERR_FORMAT, "bad.json");
    expect_error("not an object", "[1, 2]", OPTIQ_ERR_FORMAT, "not a JSON object");
    expect_error("missing model", "{\"normalizer\": null}", OPTIQ_ERR_FORMAT, "model missing");
    expect_error("unknown model type", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", OPTIQ_ERR_UNSUPPORTED,
                 "model type \"Unigram\" is not supported");
    expect_error("vocab not an object", "{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", OPTIQ_ERR_FORMAT,
                 "model.vocab");
    expect_error("vocab id not a number", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}",
                 OPTIQ_ERR_FORMAT, "is not a token id");
    expect_error("merge of an unknown token",
                 "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"c\"]]}}",
                 OPTIQ_ERR_FORMAT, "token \"c\" is not in the vocabulary");
    expect_error("merge result not in the vocabulary",
                 "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", OPTIQ_ERR_FORMAT,
                 "merged token \"ab\" is not in the vocabulary");
    expect_error("merge that is not a pair",
                 "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\"]]}}", OPTIQ_ERR_FORMAT,
                 "model.merges[0] is not a pair");
    expect_error("added_tokens not an array", "{" MINI_MODEL ",\"added_tokens\":{}}", OPTIQ_ERR_FORMAT,
                 "added_tokens is not an array");
    expect_error("added token without content", "{" MINI_MODEL ",\"added_tokens\":[{\"id\":3}]}", OPTIQ_ERR_FORMAT,
                 "added_tokens[0] has no content");
    expect_error("added token with a bad id", "{" MINI_MODEL ",\"added_tokens\":[{\"id\":-4,\"content\":\"x\"}]}",
                 OPTIQ_ERR_FORMAT, "added_tokens[0] has no valid id");
    expect_error("added token flag not a boolean",
                 "{" MINI_MODEL ",\"added_tokens\":[{\"id\":3,\"content\":\"x\",\"special\":\"yes\"}]}",
                 OPTIQ_ERR_FORMAT, "added_tokens[0].special is a string, expected a boolean");
    expect_error("unsupported normalizer", "{" MINI_MODEL ",\"normalizer\":{\"type\":\"Precompiled\"}}",
                 OPTIQ_ERR_UNSUPPORTED, "normalizer type \"Precompiled\" is not supported");
    expect_error("unsupported pre-tokenizer",
                 "{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Whitespace\"}]}}",
                 OPTIQ_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0] type \"Whitespace\"");
    expect_error("bad regex",
                 "{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                 "\"behavior\":\"Isolated\",\"invert\":false}}",
                 OPTIQ_ERR_FORMAT, "does not compile");
    expect_error("bad split behavior",
                 "{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},"
                 "\"behavior\":\"Sideways\"}}",
                 OPTIQ_ERR_FORMAT, "behavior \"Sideways\"");
    expect_error("unsupported decoder", "{" MINI_MODEL ",\"decoder\":{\"type\":\"WordPiece\"}}", OPTIQ_ERR_UNSUPPORTED,
                 "decoder type \"WordPiece\"");
    expect_error("template without the sequence",
                 "{" MINI_MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[],\"special_tokens\":{}}}",
                 OPTIQ_ERR_FORMAT, "single has no Sequence item");
    expect_error("template naming an unknown special token",
                 "{" MINI_MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                 "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}}",
                 OPTIQ_ERR_FORMAT, "special_tokens has no ids for \"<s>\"");
    expect_error("string that is not UTF-8", "{" MINI_MODEL ",\"added_tokens\":[{\"id\":3,\"content\":\"\xff\"}]}",
                 OPTIQ_ERR_FORMAT, "is not valid UTF-8");
    expect_error("dropout", "{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}",
                 OPTIQ_ERR_UNSUPPORTED, "dropout");

    /* and a folder without tokenizer.json */
    optiq_tokenizer *t = NULL;
    optiq_error err = {0};
    optiq_status st = optiq_tokenizer_load(tmpdir, &t, &err);
    for (TEST_CASE("folder without tokenizer.json is refused with a message")) {
        CHECK(st == OPTIQ_ERR_IO);
        CHECK(strstr(err.message, "no tokenizer.json") != NULL);
    }
}

/* ---- smaller checks ---- */

static void merge_orders(const optiq_tokenizer *t) {
    /* random words over the single-byte tokens: the linear scan and the heap must agree */
    tok_bpe_scratch sc = {0};
    uint64_t x = 88172645463325252ull;
    int agree = 1;
    const char *alpha = "etaoinshrdlucmfwypvbgkqjxz    ,.'";
    for (int w = 0; w < 3000 && agree; w++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = 2 + x % 60;
        int32_t a[64], b[64];
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            char c = alpha[x % strlen(alpha)];
            a[i] = b[i] = t->bpe.bl_ids[(unsigned char)c];
        }
        long na = tok_bpe_merge_ids(&t->bpe, &sc, a, NULL, n, 1);
        long nb = tok_bpe_merge_ids(&t->bpe, &sc, b, NULL, n, 2);
        agree = na == nb && na >= 0 && memcmp(a, b, (size_t)na * sizeof *a) == 0;
    }
    tok_bpe_scratch_free(&sc);
    for (TEST_CASE("BPE: linear-scan and heap merge orders agree on 3000 random words")) CHECK(agree);
}

typedef struct th_arg {
    const optiq_tokenizer *t;
    const char *text;
    size_t len;
    const int32_t *want;
    size_t n_want;
    int ok;
} th_arg;

static void *th_main(void *p) {
    th_arg *a = p;
    a->ok = 1;
    for (int r = 0; r < 30 && a->ok; r++) {
        int32_t *ids;
        size_t n;
        if (optiq_tokenizer_encode(a->t, a->text, a->len, 0, &ids, &n, NULL) || !same_ids(ids, n, a->want, a->n_want))
            a->ok = 0;
        optiq_free(ids);
    }
    return NULL;
}

static void threads(const char *label, const optiq_tokenizer *t, const char *text, size_t len) {
    int32_t *want;
    size_t n;
    char name[200];
    snprintf(name, sizeof name, "%s: four threads encoding at once agree", label);
    for (TEST_CASE(name)) {
        CHECK(optiq_tokenizer_encode(t, text, len, 0, &want, &n, NULL) == OPTIQ_OK);
        pthread_t th[4];
        th_arg a[4];
        for (int i = 0; i < 4; i++) {
            a[i] = (th_arg){t, text, len, want, n, 0};
            pthread_create(&th[i], NULL, th_main, &a[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            CHECKF(a[i].ok, "thread %d got different ids", i);
        }
        optiq_free(want);
    }
}

static void speed(const char *label, const optiq_tokenizer *t, const char *text, size_t len) {
    double mbps = tokenizer_bench_mbps(t, text, len, 0, 0.5);
    char name[200];
    snprintf(name, sizeof name, "%s: encodes English at %.1f MB/s on one core", label, mbps);
    for (TEST_CASE(name)) {
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
        CHECKF(mbps >= 5.0, "%.2f MB/s, need at least 5", mbps);
#else
        CHECK(mbps > 0); /* unoptimized or sanitized build: speed not judged */
#endif
    }
}

static void invalid_utf8(const optiq_tokenizer *t) {
    /* ill-formed input reads as U+FFFD per maximal ill-formed subpart */
    static const struct { const char *in, *as; } cases[] = {
        {"a\x80z", "a\xEF\xBF\xBDz"},
        {"\xE2\x82", "\xEF\xBF\xBD"},
        {"\xF0\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xED\xA0\x80x", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx"},
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xE2\x28\xA1", "\xEF\xBF\xBD(\xEF\xBF\xBD"},
    };
    for (TEST_CASE("ill-formed UTF-8 encodes as its U+FFFD replacement")) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            int32_t *a, *b;
            size_t na, nb;
            CHECK(optiq_tokenizer_encode(t, cases[i].in, strlen(cases[i].in), 0, &a, &na, NULL) == OPTIQ_OK);
            CHECK(optiq_tokenizer_encode(t, cases[i].as, strlen(cases[i].as), 0, &b, &nb, NULL) == OPTIQ_OK);
            CHECKF(same_ids(a, na, b, nb), "case %zu", i);
            optiq_free(a);
            optiq_free(b);
        }
    }
}

static void regex_translation(void) {
    /* Oniguruma's property classes become Unicode 16.0 ranges; other syntax passes through */
    static const struct { const char *in, *has; } cases[] = {
        {"\\p{L}+", "[\\x{41}-\\x{5a}\\x{61}-\\x{7a}"},
        {"\\p{L}", "\\x{31350}-"},             /* CJK Extension H (Unicode 15.0) is a letter */
        {"\\s", "\\x{2028}\\x{2029}"},           /* White_Space */
        {"[^\\s\\p{N}]", "[^\\x{9}-\\x{d}"},       /* inside a class: items, no brackets */
        {"\\S", "[^\\x{9}-\\x{d}"},
        {"\\P{N}", "[^\\x{30}-\\x{39}"},
        {"[\\S]", "[\\S]"},                     /* a negated escape in a class is left to PCRE2 */
        {"(?i:'s|'t)", "(?i:'s|'t)"},
        {"[[:alpha:]\\d]", "[[:alpha:]\\x{30}-\\x{39}"},
        {"\\x{41}\\\\p", "\\x{41}\\\\p"},
    };
    for (TEST_CASE("regex translation: property classes to Unicode 16.0 ranges")) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t n;
            char *t = tok_regex_translate(cases[i].in, strlen(cases[i].in), &n);
            CHECKF(t && strstr(t, cases[i].has) != NULL, "%s gave %.120s", cases[i].in, t ? t : "(null)");
            CHECKF(!t || !strstr(t, "\\x{180e}"), "%s: U+180E is not White_Space", cases[i].in);
            free(t);
        }
    }
}

static void api_basics(const optiq_tokenizer *qwen, const optiq_tokenizer *gemma) {
    for (TEST_CASE("qwen3: BOS/EOS from tokenizer_config.json")) {
        const int32_t *eos;
        size_t n = optiq_tokenizer_eos_ids(qwen, &eos);
        CHECK(optiq_tokenizer_bos_id(qwen) == -1);
        CHECK(n == 1 && eos[0] == 151645); /* <|im_end|> */
        CHECK(optiq_tokenizer_add_bos_token(qwen) == 0);
        CHECK(optiq_tokenizer_is_special(qwen, 151644) && !optiq_tokenizer_is_special(qwen, 151667));
    }
    for (TEST_CASE("gemma3: BOS/EOS from tokenizer_config.json")) {
        const int32_t *eos;
        size_t n = optiq_tokenizer_eos_ids(gemma, &eos);
        CHECK(optiq_tokenizer_bos_id(gemma) == 2);
        CHECK(n == 1 && eos[0] == 106); /* <end_of_turn> */
        CHECK(optiq_tokenizer_add_bos_token(gemma) == 1);
        CHECK(optiq_tokenizer_token_to_id(gemma, "<start_of_turn>", 15) == 105);
    }
    for (TEST_CASE("empty input, NULL arguments and unknown ids are handled")) {
        int32_t *ids = (int32_t *)1;
        size_t n = 9;
        optiq_error err;
        CHECK(optiq_tokenizer_encode(gemma, "", 0, 0, &ids, &n, &err) == OPTIQ_OK && n == 0);
        optiq_free(ids);
        CHECK(optiq_tokenizer_encode(gemma, NULL, 0, OPTIQ_ENCODE_ADD_SPECIAL, &ids, &n, &err) == OPTIQ_OK && n == 1 &&
              ids[0] == 2);
        optiq_free(ids);
        CHECK(optiq_tokenizer_encode(NULL, "a", 1, 0, &ids, &n, &err) == OPTIQ_ERR_INVALID_ARG);
        int32_t odd[3] = {-5, 999999999, 9707};
        char *s;
        size_t sl;
        CHECK(optiq_tokenizer_decode(qwen, odd, 3, 0, &s, &sl, &err) == OPTIQ_OK && strcmp(s, "Hello") == 0);
        optiq_free(s);
        CHECK(optiq_tokenizer_id_to_token(qwen, -1, NULL) == NULL);
        CHECK(optiq_tokenizer_token_to_id(qwen, "no such token", 13) == -1);
    }
}

static void fuzz_replay(void) {
    DIR *d = opendir(test_path("tests/fuzz/corpus_tokenizer"));
    size_t n = 0;
    for (TEST_CASE("fuzz harness replays its seed corpus")) {
        CHECK(d != NULL);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", test_path("tests/fuzz/corpus_tokenizer"), de->d_name);
            size_t len;
            char cmd[1100];
            snprintf(cmd, sizeof cmd, "cat '%s'", p);
            char *b = read_cmd(cmd, &len);
            CHECKF(b != NULL, "%s unreadable", p);
            if (b) LLVMFuzzerTestOneInput((const uint8_t *)b, len); /* aborts on a failed check */
            free(b);
            n++;
        }
        CHECKF(n >= 5, "%zu seeds", n);
    }
    if (d) closedir(d);
    for (int i = 0; i < FUZZ_N_TOK; i++) optiq_tokenizer_free(fuzz_tok[i]);
}

static char *english_text(size_t *len) {
    return read_xz("tests/fixtures/tokenizers/english.txt.xz", len);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/optiq_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    optiq_error err = {0};
    optiq_tokenizer *qwen = load_real("qwen3", &err);
    for (TEST_CASE("qwen3: tokenizer.json loads")) CHECKF(qwen != NULL, "%s", err.message);
    optiq_tokenizer *gemma = load_real("gemma3", &err);
    for (TEST_CASE("gemma3: tokenizer.json loads")) CHECKF(gemma != NULL, "%s", err.message);
    if (!qwen || !gemma) {
        rm_tree();
        return test_finish();
    }
    conformance("qwen3", qwen, "tests/fixtures/tokenizers/qwen3.jsonl.xz");
    conformance("gemma3", gemma, "tests/fixtures/tokenizers/gemma3.jsonl.xz");
    static const char *synth[] = {"bytelevel", "sentencepiece", "metaspace", "splits", "fused", "affixes"};
    for (size_t i = 0; i < sizeof synth / sizeof synth[0]; i++) {
        char label[64], fixture[256];
        snprintf(label, sizeof label, "synth/%s", synth[i]);
        snprintf(fixture, sizeof fixture, "tests/fixtures/tokenizers/synth-%s.jsonl.xz", synth[i]);
        optiq_tokenizer *t = load_synth(synth[i], &err);
        char name[128];
        snprintf(name, sizeof name, "%s: tokenizer.json loads", label);
        for (TEST_CASE(name)) CHECKF(t != NULL, "%s", err.message);
        if (t) conformance(label, t, fixture);
        optiq_tokenizer_free(t);
    }
    regex_translation();
    api_basics(qwen, gemma);
    invalid_utf8(qwen);
    invalid_utf8(gemma);
    merge_orders(qwen);
    malformed();
    fuzz_replay();
    size_t elen = 0;
    char *english = english_text(&elen);
    for (TEST_CASE("English sample for the speed check readable")) CHECK(english != NULL && elen > 100000);
    if (english) {
        threads("qwen3", qwen, english, elen < 20000 ? elen : 20000);
        threads("gemma3", gemma, english, elen < 20000 ? elen : 20000);
        speed("qwen3", qwen, english, elen);
        speed("gemma3", gemma, english, elen);
    }
    free(english);
    optiq_tokenizer_free(qwen);
    optiq_tokenizer_free(gemma);
    rm_tree();
    return test_finish();
}
