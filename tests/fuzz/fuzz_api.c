/*
 * fuzz_api.c — libFuzzer harness for the server's request parsers
 * (src/server/api*.c).
 *
 * Every input is parsed as each of the four request kinds. A rejected body
 * must yield a 4xx/5xx status with a message, and its error body in both
 * formats must be valid JSON; an accepted one must carry valid normalized
 * messages JSON (chat kinds) and one image URL per image part. The bytes are
 * also run through the reasoning splitter in two pieces, whose outputs must
 * add up to the input length less the tags and newlines it drops.
 *
 * Built with -fsanitize=fuzzer by `make fuzz`; with -DFUZZ_REPLAY_MAIN it is a
 * plain program that runs the files named on its command line.
 */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "text/reasoning.h"
#include "text/tokenizer_unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Image parts of the normalized messages (structurally: a tool_calls array
 * copied verbatim may hold anything). */
static size_t count_images(const cJSON *msgs) {
    size_t n = 0;
    for (const cJSON *m = msgs->child; m; m = m->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsArray(c)) continue;
        for (const cJSON *p = c->child; p; p = p->next) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
            if (cJSON_IsString(t) && !strcmp(t->valuestring, "image")) n++;
        }
    }
    return n;
}

static void check_error(const api_error *e, int rc) {
    if (rc < 400 || e->http_status != rc || e->message[0] == 0) abort();
    if (!tok_utf8_valid(e->message, strlen(e->message))) abort();
    for (int anthropic = 0; anthropic < 2; anthropic++) {
        char *s = api_error_json(anthropic, e);
        cJSON *j = s ? cJSON_Parse(s) : NULL;
        if (!j || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "error"))) abort();
        cJSON_Delete(j);
        free(s);
    }
}

static void check_request(const api_request *r) {
    if (r->kind == API_OPENAI_COMPLETION) {
        if (!r->prompt || r->messages_json) abort();
        return;
    }
    cJSON *m = cJSON_Parse(r->messages_json);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0 || count_images(m) != r->n_images) abort();
    cJSON_Delete(m);
    for (size_t i = 0; i < r->n_images; i++)
        if (strncmp(r->images[i], "data:", 5) && strncmp(r->images[i], "http", 4)) abort();
    api_result res = {.id = "x", .model = r->model, .text = r->prompt, .prompt_tokens = 1};
    char *s = r->kind == API_OPENAI_CHAT ? api_openai_chat_response(&res) : api_anthropic_message_response(&res);
    if (!s) abort();
    free(s);
}

/* The reasoning splitter with Qwen's and Gemma-4's markers: what comes out is never more than what went in. */
static void split(const uint8_t *data, size_t size) {
    static const reasoning_tags tags[2] = {{.open = "<think>", .close = "</think>"},
                                           {.open = "<|channel>thought", .close = "<channel|>"}};
    reasoning_split t;
    reasoning_split_init(&t, &tags[size > 1 && (data[1] & 1)], size & 1);
    size_t cut = size ? data[0] % (size + 1) : 0, out = 0;
    reasoning_split_feed(&t, (const char *)data, cut);
    out += t.reasoning_len + t.content_len;
    reasoning_split_feed(&t, (const char *)data + cut, size - cut);
    out += t.reasoning_len + t.content_len;
    reasoning_split_finish(&t);
    out += t.reasoning_len + t.content_len;
    if (out > size) abort();
    reasoning_split_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const api_kind kinds[] = {API_OPENAI_CHAT, API_OPENAI_COMPLETION, API_ANTHROPIC_MESSAGES,
                                     API_ANTHROPIC_COUNT_TOKENS};
    api_limits lim = api_limits_default();
    lim.max_body = 1u << 16;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        api_request r;
        api_error e;
        int rc = api_parse_request(kinds[k], (const char *)data, size, &lim, &r, &e);
        if (rc) check_error(&e, rc);
        else check_request(&r);
        api_request_free(&r);
    }
    split(data, size);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
#include "fuzz_replay.h"

int main(int argc, char **argv) {
    if (fuzz_replay_files(argc, argv)) return 1;
    printf("%d passed, 0 failed\n", argc - 1);
    return 0;
}
#endif
