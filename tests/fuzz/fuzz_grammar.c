/*
 * fuzz_grammar.c — libFuzzer harness for the JSON-schema grammar
 * (text/grammar.h), whose schemas come from clients (response_format,
 * tool parameters).
 *
 * Input: a schema's JSON text, a NUL byte, then a document to feed. The
 * schema is compiled in each dialect (plain JSON, Gemma-4's and Qwen3.5's
 * tool-call argument syntax); a schema the grammar cannot enforce must fail
 * with a message, never crash or allocate without bound. An accepted one
 * gets the document fed byte by byte and whole, which must agree, and the
 * completeness check.
 */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    const uint8_t *doc = nul ? nul + 1 : data + size;
    size_t dlen = nul ? size - slen - 1 : 0;
    char *text = malloc(slen + 1);
    if (!text) return 0;
    memcpy(text, data, slen);
    text[slen] = 0;
    cJSON *schema = slen ? cJSON_Parse(text) : NULL;
    free(text);
    for (int d = GRAMMAR_JSON; d <= GRAMMAR_QWEN_XML; d++) {
        grammar *g = grammar_new();
        if (!g) break;
        optiq_error err = {0};
        if (grammar_add_schema(g, schema, (grammar_dialect)d, &err) == OPTIQ_OK) {
            grammar_state a, b;
            grammar_start(g, &a);
            grammar_start(g, &b);
            int ok_bytes = 1;
            for (size_t i = 0; i < dlen && ok_bytes; i++) ok_bytes = grammar_feed(g, &a, doc + i, 1);
            int ok_whole = grammar_feed(g, &b, doc, dlen);
            if (ok_bytes != ok_whole) abort(); /* byte by byte and whole must agree */
            if (ok_bytes) (void)grammar_complete(g, &a);
        } else if (!err.message[0]) {
            abort(); /* a refusal names its reason */
        }
        grammar_free(g);
    }
    cJSON_Delete(schema);
    return 0;
}
