/*
 * fuzz_jinja.c — libFuzzer harness for the template engine.
 *
 * The input is template text. It is parsed with transformers' settings and,
 * when it parses, rendered twice against a small fixed chat context (messages
 * with text, image and tool-call content, tools, the special tokens,
 * add_generation_prompt, enable_thinking) under tight limits (steps, output,
 * string size, nesting). Invariants: a failure always carries a message; a
 * render stays within the output limit; the two renders are identical (no
 * hidden state, the clock is pinned).
 *
 * Built with -fsanitize=fuzzer by `make fuzz` (every tests/fuzz/fuzz_*.c is;
 * seeds in tests/fuzz/corpus_jinja/, dictionary tests/fuzz/jinja.dict).
 * Compiled with -DFUZZ_REPLAY_MAIN (and no libFuzzer) it is a plain program
 * that runs the files named on its command line through the same function.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CONTEXT[] =
    "{\"bos_token\": \"<bos>\", \"eos_token\": \"<eos>\", \"add_generation_prompt\": true,"
    " \"enable_thinking\": false, \"documents\": null,"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
    "   \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"},"
    "   \"days\": {\"type\": \"integer\", \"nullable\": true}}, \"required\": [\"city\"]}}}],"
    " \"messages\": ["
    "  {\"role\": \"system\", \"content\": \"Be brief.\"},"
    "  {\"role\": \"user\", \"content\": [{\"type\": \"image\", \"url\": \"u\"}, {\"type\": \"text\", \"text\": \"What is \\u00e9?\"}]},"
    "  {\"role\": \"assistant\", \"content\": \"<think>\\nhm\\n</think>\\n\\nIt is 1.5.\", \"reasoning_content\": \"hm\","
    "   \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    "   \"arguments\": {\"city\": \"Paris\", \"days\": 2, \"x\": [1, 2.0, null, true]}}}]},"
    "  {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"sunny\"},"
    "  {\"role\": \"user\", \"content\": \"Thanks \\ud83d\\ude00\"}]}";

static jval *fuzz_vars;
static jinja_config fuzz_cfg;

static void fuzz_init(void) {
    optiq_error err;
    if (jv_from_json(CONTEXT, sizeof CONTEXT - 1, "context", &fuzz_vars, &err) != OPTIQ_OK) {
        fprintf(stderr, "fuzz_jinja: %s\n", err.message);
        abort();
    }
    jinja_config_default(&fuzz_cfg);
    fuzz_cfg.max_output = 1 << 16;
    fuzz_cfg.max_string = 1 << 16;
    fuzz_cfg.max_steps = 200000;
    fuzz_cfg.max_depth = 200;
    fuzz_cfg.fixed_now = 1;
    fuzz_cfg.now = 1773489600;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_vars) fuzz_init();
    optiq_error err = {0};
    jinja_template *t = NULL;
    if (jinja_parse((const char *)data, size, JINJA_HF, "fuzz", &t, &err) != OPTIQ_OK) {
        if (t || err.message[0] == 0) abort();
        return 0;
    }
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    optiq_status sa = jinja_render(t, fuzz_vars, &fuzz_cfg, &a, &na, &err);
    if (sa != OPTIQ_OK && (a || err.message[0] == 0)) abort();
    if (sa == OPTIQ_OK && (na > fuzz_cfg.max_output || a[na] != 0)) abort();
    optiq_status sb = jinja_render(t, fuzz_vars, &fuzz_cfg, &b, &nb, &err);
    if (sa != sb || (sa == OPTIQ_OK && (na != nb || memcmp(a, b, na) != 0))) abort();
    free(a);
    free(b);
    jinja_free(t);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
#include "fuzz_replay.h"

int main(int argc, char **argv) {
    if (fuzz_replay_files(argc, argv)) return 1;
    jv_unref(fuzz_vars);
    printf("%d passed, 0 failed\n", argc - 1);
    return 0;
}
#endif
