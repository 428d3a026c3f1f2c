/*
 * reasoning.c — thinking markers and the reasoning / answer split (see reasoning.h).
 */
#include "text/reasoning.h"

#include <stdlib.h>
#include <string.h>

static int encode_marker(const optiq_tokenizer *tok, const char *text, int32_t *ids, size_t *n) {
    int32_t *out = NULL;
    size_t k = 0;
    optiq_error err;
    if (optiq_tokenizer_encode(tok, text, strlen(text), 0, &out, &k, &err) != OPTIQ_OK) return 0;
    int ok = k > 0 && k <= REASONING_MAX_IDS;
    if (ok) memcpy(ids, out, sizeof(int32_t) * k), *n = k;
    optiq_free(out);
    return ok;
}

void reasoning_tags_infer(const optiq_tokenizer *tok, reasoning_tags *out) {
    memset(out, 0, sizeof *out);
    if (!tok) return;
    const char *open = NULL, *close = NULL;
    if (optiq_tokenizer_token_to_id(tok, "<think>", 7) >= 0 && optiq_tokenizer_token_to_id(tok, "</think>", 8) >= 0)
        open = "<think>", close = "</think>";
    else if (optiq_tokenizer_token_to_id(tok, "<|channel>", 10) >= 0 && optiq_tokenizer_token_to_id(tok, "<channel|>", 10) >= 0)
        open = "<|channel>thought", close = "<channel|>";
    if (!open) return;
    if (!encode_marker(tok, open, out->open_ids, &out->n_open) || !encode_marker(tok, close, out->close_ids, &out->n_close)) {
        memset(out, 0, sizeof *out);
        return;
    }
    out->open = open;
    out->close = close;
}

/* Start of the last occurrence of pat (k ids) in ids, or -1. */
static long rfind(const int32_t *ids, size_t n, const int32_t *pat, size_t k) {
    if (k == 0 || n < k) return -1;
    for (size_t i = n - k + 1; i-- > 0;)
        if (!memcmp(ids + i, pat, sizeof(int32_t) * k)) return (long)i;
    return -1;
}

int reasoning_ids_open(const reasoning_tags *t, const int32_t *ids, size_t n) {
    if (!t->open) return 0;
    return rfind(ids, n, t->open_ids, t->n_open) > rfind(ids, n, t->close_ids, t->n_close);
}

/* ---- the splitter ---- */

enum { TH_OPEN = 0, TH_REASON, TH_AFTER, TH_CONTENT };

void reasoning_split_init(reasoning_split *s, const reasoning_tags *tags, int in_reasoning) {
    memset(s, 0, sizeof *s);
    s->open = tags ? tags->open : NULL;
    s->close = tags ? tags->close : NULL;
    s->state = !s->open ? TH_CONTENT : in_reasoning ? TH_REASON : TH_OPEN;
    s->opened = s->state == TH_REASON;
}

static int put(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n + 1) nc *= 2;
        char *q = realloc(*buf, nc);
        if (!q) return -1;
        *buf = q;
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

#define PUT_R(p, n) do { if (put(&s->reasoning, &s->reasoning_len, &s->cap_r, (p), (n))) return -1; } while (0)
#define PUT_C(p, n) do { if (put(&s->content, &s->content_len, &s->cap_c, (p), (n))) return -1; } while (0)

static int reset_out(reasoning_split *s) {
    s->reasoning_len = s->content_len = 0;
    PUT_R("", 0);
    PUT_C("", 0);
    return 0;
}

int reasoning_split_feed(reasoning_split *s, const char *piece, size_t len) {
    if (reset_out(s)) return -1;
    size_t lo = s->open ? strlen(s->open) : 0, lc = s->close ? strlen(s->close) : 0;
    for (size_t i = 0; i < len; i++) {
        char ch = piece[i];
        switch (s->state) {
        case TH_OPEN:
            if (ch == s->open[s->matched]) {
                if (++s->matched == lo) s->state = TH_REASON, s->matched = 0, s->opened = 1;
            } else {
                PUT_C(s->open, s->matched);
                PUT_C(&ch, 1);
                s->matched = 0;
                s->state = TH_CONTENT;
            }
            break;
        case TH_REASON:
            if (ch == s->close[s->matched]) {
                if (++s->matched == lc) s->state = TH_AFTER, s->matched = 0;
            } else {
                PUT_R(s->close, s->matched);
                s->matched = 0;
                if (ch == s->close[0]) s->matched = 1;
                else PUT_R(&ch, 1);
            }
            break;
        case TH_AFTER:
            if (ch == '\n') break;
            s->state = TH_CONTENT;
            PUT_C(&ch, 1);
            break;
        default:
            PUT_C(&ch, 1);
        }
    }
    return 0;
}

int reasoning_split_finish(reasoning_split *s) {
    if (reset_out(s)) return -1;
    if (s->state == TH_OPEN) PUT_C(s->open, s->matched);
    else if (s->state == TH_REASON) PUT_R(s->close, s->matched);
    s->matched = 0;
    return 0;
}

void reasoning_split_free(reasoning_split *s) {
    free(s->reasoning);
    free(s->content);
    memset(s, 0, sizeof *s);
}
