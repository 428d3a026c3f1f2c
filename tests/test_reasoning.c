/*
 * test_reasoning.c — thinking markers and the reasoning / answer split
 * (text/reasoning.h): markers inferred from real and fixture vocabularies as
 * mlx-lm's _infer_thinking does, prompts left inside a block, and the
 * streaming splitter fed whole and byte by byte.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optiq.h"
#include "test.h"
#include "text/reasoning.h"

/* ---- every piece boundary (Qwen markers) ---- */

static const reasoning_tags QWEN_TAGS = {.open = "<think>", .close = "</think>"};

typedef struct think_case {
    int in_reasoning;
    const char *text, *reasoning, *content;
} think_case;

static const think_case THINK[] = {
    {0, "<think>\nplan</think>\n\nHello <b>", "\nplan", "Hello <b>"},
    {1, "a < b </thin k></think>\nDone</think>", "a < b </thin k>", "Done</think>"},
    {0, "No reasoning here </think>", "", "No reasoning here </think>"},
    {0, "<thinking>x", "", "<thinking>x"},
    {0, "<thi", "", "<thi"},
    {1, "unfinished </thi", "unfinished </thi", ""},
    {1, "<</</t</think>x", "<</</t", "x"},
    {0, "", "", ""},
};

/* Feeds text in the pieces given by cut points a <= b; returns 0 when the
 * concatenated outputs match. */
static int run_split(const think_case *c, size_t a, size_t b) {
    reasoning_split t;
    reasoning_split_init(&t, &QWEN_TAGS, c->in_reasoning);
    char r[256] = "", k[256] = "";
    size_t n = strlen(c->text), cuts[4] = {0, a, b, n};
    for (int i = 0; i < 3; i++) {
        if (reasoning_split_feed(&t, c->text + cuts[i], cuts[i + 1] - cuts[i])) return -1;
        strncat(r, t.reasoning, sizeof r - strlen(r) - 1);
        strncat(k, t.content, sizeof k - strlen(k) - 1);
    }
    reasoning_split_finish(&t);
    strncat(r, t.reasoning, sizeof r - strlen(r) - 1);
    strncat(k, t.content, sizeof k - strlen(k) - 1);
    reasoning_split_free(&t);
    return strcmp(r, c->reasoning) || strcmp(k, c->content);
}

static void test_think(void) {
    for (TEST_CASE("reasoning splitter: every pair of piece boundaries")) {
        int runs = 0;
        for (size_t i = 0; i < sizeof THINK / sizeof THINK[0]; i++) {
            size_t n = strlen(THINK[i].text);
            for (size_t a = 0; a <= n; a++)
                for (size_t b = a; b <= n; b++, runs++)
                    CHECKF(run_split(&THINK[i], a, b) == 0, "case %zu cut at %zu,%zu", i, a, b);
        }
        printf("     (%d splits)\n", runs);
    }
}

/* Split text fed in pieces of `step` bytes (0: whole); returns reasoning and answer. */
static void split(const reasoning_tags *t, int in_reasoning, const char *text, size_t step, char *r, char *a,
                  int *opened) {
    reasoning_split s;
    reasoning_split_init(&s, t, in_reasoning);
    r[0] = a[0] = 0;
    size_t n = strlen(text);
    if (!step) step = n ? n : 1;
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        if (reasoning_split_feed(&s, text + i, k)) break;
        strcat(r, s.reasoning);
        strcat(a, s.content);
    }
    if (reasoning_split_finish(&s) == 0) strcat(r, s.reasoning), strcat(a, s.content);
    *opened = s.opened;
    reasoning_split_free(&s);
}

static void check_split(const char *label, const reasoning_tags *t, int in_reasoning, const char *text,
                        const char *want_r, const char *want_a, int want_opened) {
    for (TEST_CASE(label)) {
        for (size_t step = 0; step < 4; step++) {
            char r[512], a[512];
            int opened;
            split(t, in_reasoning, text, step, r, a, &opened);
            CHECKF(!strcmp(r, want_r), "step %zu: reasoning \"%s\", expected \"%s\"", step, r, want_r);
            CHECKF(!strcmp(a, want_a), "step %zu: answer \"%s\", expected \"%s\"", step, a, want_a);
            CHECKF(opened == want_opened, "step %zu: opened %d", step, opened);
        }
    }
}

static optiq_tokenizer *load(const char *rel) {
    optiq_tokenizer *tok = NULL;
    optiq_error e;
    if (optiq_tokenizer_load(test_path(rel), &tok, &e) != OPTIQ_OK) printf("  %s: %s\n", rel, e.message);
    return tok;
}

int main(void) {
    reasoning_tags qwen = {0}, gemma = {0}, none = {0};
    optiq_tokenizer *tq = load("tests/fixtures/models/qwen35-dense-bf16");
    optiq_tokenizer *tg = load("tests/fixtures/models/gemma4-e2b-bf16");
    optiq_tokenizer *t3 = load("tests/fixtures/models/tiny-mixed");
    for (TEST_CASE("markers: <think> / </think> for a Qwen3.5 vocabulary")) {
        CHECK(tq != NULL);
        reasoning_tags_infer(tq, &qwen);
        CHECK(qwen.open && !strcmp(qwen.open, "<think>") && !strcmp(qwen.close, "</think>"));
        CHECK(qwen.n_open == 1 && qwen.n_close == 1);
    }
    for (TEST_CASE("markers: <|channel>thought / <channel|> for a Gemma-4 vocabulary")) {
        CHECK(tg != NULL);
        reasoning_tags_infer(tg, &gemma);
        CHECK(gemma.open && !strcmp(gemma.open, "<|channel>thought") && !strcmp(gemma.close, "<channel|>"));
        CHECK(gemma.n_open >= 2 && gemma.n_close == 1);
    }
    for (TEST_CASE("markers: none for a vocabulary without thinking tokens (tiny-mixed)")) {
        CHECK(t3 != NULL);
        reasoning_tags_infer(t3, &none);
        CHECK(none.open == NULL && none.n_open == 0);
    }
    for (TEST_CASE("a prompt is inside a block when its last start marker follows its last end marker")) {
        int32_t open[REASONING_MAX_IDS + 8], n = 0;
        open[n++] = 5;
        for (size_t i = 0; i < gemma.n_open; i++) open[n++] = gemma.open_ids[i];
        open[n++] = 7;
        CHECK(reasoning_ids_open(&gemma, open, (size_t)n));
        for (size_t i = 0; i < gemma.n_close; i++) open[n++] = gemma.close_ids[i];
        CHECK(!reasoning_ids_open(&gemma, open, (size_t)n));
        CHECK(!reasoning_ids_open(&gemma, open, 1));
        CHECK(!reasoning_ids_open(&none, open, (size_t)n));
    }
    check_split("split: Qwen block, newlines after the end marker dropped", &qwen, 0,
                "<think>\nplan it</think>\n\nThe answer.", "\nplan it", "The answer.", 1);
    check_split("split: Gemma-4 channel block", &gemma, 0, "<|channel>thought\nLet me see.<channel|>Blue.",
                "\nLet me see.", "Blue.", 1);
    check_split("split: text that does not open with the marker is all answer", &gemma, 0,
                "Blue. <|channel>thought x<channel|>", "", "Blue. <|channel>thought x<channel|>", 0);
    check_split("split: a partial start marker is answer", &gemma, 0, "<|chan", "", "<|chan", 0);
    check_split("split: prompt inside a block: reasoning until the end marker", &qwen, 1, "a<b</think>c", "a<b",
                "c", 1);
    check_split("split: unterminated block is all reasoning", &gemma, 0, "<|channel>thought abc<chan",
                " abc<chan", "", 1);
    check_split("split: no markers: everything is answer", &none, 0, "<think>x</think>y", "", "<think>x</think>y", 0);
    test_think();
    optiq_tokenizer_free(tq);
    optiq_tokenizer_free(tg);
    optiq_tokenizer_free(t3);
    return test_finish();
}
