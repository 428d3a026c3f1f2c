/*
 * fuzz_tokenizer.c — libFuzzer harness for the tokenizer.
 *
 * The first byte picks what the rest of the input is:
 *   0..5  text (its first 512 bytes), encoded (flags from the second byte) with one of the six
 *         small synthetic tokenizers of tests/fixtures/tokenizers/synth/ (byte-level BPE,
 *         SentencePiece-style with byte fallback, Metaspace, Split behaviours, decoders on the
 *         fused string, subword affixes), then decoded all at once and streamed one id at a
 *         time; the two texts must be equal, every streamed piece whole UTF-8, and every id
 *         inside the vocabulary;
 *   6     a tokenizer.json document: it must load or fail with a message, and when it loads
 *         it must encode and decode a fixed text.
 *
 * Built with -fsanitize=fuzzer by `make fuzz`. Compiled with -DFUZZ_REPLAY_MAIN (and no
 * libFuzzer) it is a plain program that runs the files named on its command line through the
 * same function; tests/test_tokenizer.c replays the seed corpus that way.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optiq.h"
#include "text/tokenizer.h"
#include "text/tokenizer_unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_N_TOK 6
#define FUZZ_TEXT_MAX 512
static optiq_tokenizer *fuzz_tok[FUZZ_N_TOK];
static int fuzz_ready;

static void fuzz_init(void) {
    static const char *names[FUZZ_N_TOK] = {"bytelevel", "sentencepiece", "metaspace", "splits", "fused", "affixes"};
    const char *root = getenv("OPTIQ_ROOT");
    for (int i = 0; i < FUZZ_N_TOK; i++) {
        char dir[1024];
        optiq_error err;
        snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers/synth/%s", root && *root ? root : ".", names[i]);
        if (optiq_tokenizer_load(dir, &fuzz_tok[i], &err) != OPTIQ_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err.message);
            abort();
        }
    }
    fuzz_ready = 1;
}

/* Decode at once and streamed; abort on any disagreement. */
static void check_decode(const optiq_tokenizer *t, const int32_t *ids, size_t n, unsigned flags) {
    char *all;
    size_t all_n;
    optiq_error err;
    if (optiq_tokenizer_decode(t, ids, n, flags, &all, &all_n, &err) != OPTIQ_OK) abort();
    if (!tok_utf8_valid(all, all_n) || all[all_n] != 0) abort();
    optiq_detokenizer *d;
    if (optiq_detokenizer_new(t, flags, &d, &err) != OPTIQ_OK) abort();
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *p;
        size_t pl;
        optiq_status st = i < n ? optiq_detokenizer_push(d, ids[i], &p, &pl, &err)
                                : optiq_detokenizer_finish(d, &p, &pl, &err);
        if (st != OPTIQ_OK || !tok_utf8_valid(p, pl) || at + pl > all_n || memcmp(all + at, p, pl) != 0) abort();
        at += pl;
    }
    if (at != all_n) abort();
    optiq_detokenizer_free(d);
    optiq_free(all);
}

static void fuzz_text(const optiq_tokenizer *t, unsigned flags, const uint8_t *data, size_t size) {
    int32_t *ids;
    size_t n;
    optiq_error err;
    if (optiq_tokenizer_encode(t, (const char *)data, size, flags, &ids, &n, &err) != OPTIQ_OK) abort();
    size_t vs = optiq_tokenizer_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= vs || !optiq_tokenizer_id_to_token(t, ids[i], NULL)) abort();
    check_decode(t, ids, n, 0);
    check_decode(t, ids, n, OPTIQ_DECODE_SKIP_SPECIAL);
    /* arbitrary ids (the input bytes read as ids) must decode too */
    int32_t raw[64];
    size_t m = size / 2 < 64 ? size / 2 : 64;
    for (size_t i = 0; i < m; i++) raw[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8) % (int32_t)(vs + 8) - 4;
    check_decode(t, raw, m, 0);
    optiq_free(ids);
}

static void fuzz_json(const uint8_t *data, size_t size) {
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (!root) return;
    optiq_tokenizer *t = NULL;
    optiq_error err = {0};
    optiq_status st = tokenizer_from_json(root, "fuzz.json", NULL, NULL, NULL, &t, &err);
    cJSON_Delete(root);
    if (st != OPTIQ_OK) {
        if (t || err.message[0] == 0) abort(); /* a refusal never yields a handle and always explains itself */
        return;
    }
    static const char text[] = "Hello wörld, 12345 <s> \xE2\x96\x81 \xF0\x9F\xA4\x97\n\t x";
    int32_t *ids;
    size_t n;
    /* a loaded tokenizer may still refuse an input (a regex hitting its match limit) */
    if (optiq_tokenizer_encode(t, text, sizeof text - 1, OPTIQ_ENCODE_ADD_SPECIAL, &ids, &n, &err) == OPTIQ_OK) {
        check_decode(t, ids, n, 0);
        optiq_free(ids);
    } else if (err.message[0] == 0) {
        abort();
    }
    optiq_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_ready) fuzz_init();
    if (size < 2) return 0;
    unsigned which = data[0] % (FUZZ_N_TOK + 1);
    if (which == FUZZ_N_TOK) {
        fuzz_json(data + 1, size - 1);
        return 0;
    }
    unsigned flags = data[1] & (OPTIQ_ENCODE_ADD_SPECIAL | OPTIQ_ENCODE_SPLIT_SPECIAL);
    /* a short text reaches every code path; longer ones would only slow the bounded run */
    size_t n = size - 2 < FUZZ_TEXT_MAX ? size - 2 : FUZZ_TEXT_MAX;
    fuzz_text(fuzz_tok[which], flags, data + 2, n);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
#include "fuzz_replay.h"

int main(int argc, char **argv) {
    if (fuzz_replay_files(argc, argv)) return 1;
    return 0;
}
#endif
