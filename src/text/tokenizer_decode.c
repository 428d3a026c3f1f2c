/*
 * tokenizer_decode.c — ids → text, all at once and streaming.
 *
 * All at once mirrors the reference (tokenizers/src/decoders): each decoder step maps a list
 * of strings to a new list, and the final list is joined.
 *   ByteLevel     every token → bytes (each character through the byte-level alphabet, or the
 *                 token's own UTF-8 when a character is outside it), all bytes → one string,
 *                 ill-formed UTF-8 → U+FFFD per maximal subpart
 *   Replace       per token, pattern → content
 *   ByteFallback  runs of <0xNN> tokens → their bytes as one string when that is UTF-8,
 *                 else one U+FFFD per byte
 *   Fuse          all tokens → one string
 *   Strip         per token, up to `start` leading and `stop` trailing copies of a character
 *   Metaspace     per token, the replacement character → ' ', except in the first token
 *                 (where it is dropped) unless prepend_scheme is "never"
 * Without a decoder the tokens are joined with ' '.
 *
 * Streaming runs the same steps as stages. Until the first Fuse or ByteLevel, items are whole
 * tokens and each stage handles them as the list step would; ByteFallback holds a run of byte
 * tokens until a token that ends it. After fusing, items are pieces of one string, and a stage
 * holds back only what later input may still change: ByteLevel the bytes of an unfinished
 * character, Replace a tail that may begin a match, Strip a trailing run of its character.
 * Steps with no such bound after fusing (a regex Replace, ByteFallback, ByteLevel) hold the
 * whole string until the end. So the concatenated pieces equal the all-at-once text, and every
 * piece is whole UTF-8 because every stage only ever emits whole strings.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_int.h"
#include "text/tokenizer_unicode.h"

static const char FFFD[] = "\xEF\xBF\xBD";

static optiq_status oom(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "tokenizer: out of memory"); }

/* ---- lists of strings ---- */

typedef struct slist {
    tok_buf *s;
    size_t n, cap;
} slist;

static void slist_free(slist *l) {
    for (size_t i = 0; i < l->cap; i++) tok_buf_free(&l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static void slist_clear(slist *l) {
    for (size_t i = 0; i < l->n; i++) l->s[i].n = 0;
    l->n = 0;
}

/* Append an empty string and return it. */
static tok_buf *slist_add(slist *l) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        tok_buf *p = realloc(l->s, nc * sizeof *p);
        if (!p) return NULL;
        memset(p + l->cap, 0, (nc - l->cap) * sizeof *p);
        l->s = p;
        l->cap = nc;
    }
    tok_buf *b = &l->s[l->n++];
    b->n = 0;
    if (tok_buf_reserve(b, 1)) { l->n--; return NULL; }
    b->p[0] = 0;
    return b;
}

static int slist_push(slist *l, const char *s, size_t n) {
    tok_buf *b = slist_add(l);
    return b && !tok_buf_put(b, s, n) ? 0 : -1;
}

/* ---- pieces shared by both paths ---- */

/* Byte of a <0xNN> token (u8::from_str_radix on its two characters, which allows a leading
 * '+'), or -1. */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) {
            if (i == 3 && c == '+') continue;
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* Bytes of a token for the ByteLevel decoder. */
static int bytelevel_bytes(const optiq_tokenizer *t, const char *s, size_t n, tok_buf *out) {
    size_t start = out->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int b = cp < sizeof t->bl_byte / sizeof t->bl_byte[0] ? t->bl_byte[cp] : -1;
        if (b < 0) { /* a character outside the alphabet: the token's own bytes */
            out->n = start;
            return tok_buf_put(out, s, n);
        }
        char c = (char)b;
        if (tok_buf_put(out, &c, 1)) return -1;
        i += (size_t)k;
    }
    return 0;
}

/* Lossy UTF-8 of s[0..n) appended to out; with keep_tail, a trailing incomplete sequence is
 * left out and its length returned through *tail. */
static int lossy_utf8(const char *s, size_t n, tok_buf *out, int keep_tail, size_t *tail) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, bad;
    if (tail) *tail = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] < 0x80) j++;
        if (j > i && tok_buf_put(out, s + i, j - i)) return -1;
        i = j;
        if (i >= n) break;
        size_t k = tok_utf8_check_one(p + i, n - i, &bad);
        if (k) {
            if (tok_buf_put(out, s + i, k)) return -1;
            i += k;
            continue;
        }
        if (keep_tail && tok_utf8_incomplete(s + i, n - i)) {
            *tail = n - i;
            return 0;
        }
        if (tok_buf_put(out, FFFD, 3)) return -1;
        i += bad;
    }
    return 0;
}

/* Per-token Strip. */
static int strip_token(const tok_dec *d, const char *s, size_t n, tok_buf *out) {
    size_t a = 0, b = n, c = d->content_len;
    for (size_t k = 0; k < d->start && a + c <= n && memcmp(s + a, d->content, c) == 0; k++) a += c;
    for (size_t k = 0; k < d->stop && b >= a + c && memcmp(s + b - c, d->content, c) == 0; k++) b -= c;
    return tok_buf_put(out, s + a, b - a);
}

/* Per-token Metaspace; first: this is the first token of the list. */
static int metaspace_token(const tok_dec *d, int first, const char *s, size_t n, tok_buf *out) {
    int drop = first && d->prepend != PREPEND_NEVER;
    for (size_t i = 0; i < n;) {
        if (i + d->rep_len <= n && memcmp(s + i, d->rep, d->rep_len) == 0) {
            if (!drop && tok_buf_put(out, " ", 1)) return -1;
            i += d->rep_len;
        } else {
            size_t k = (size_t)tok_utf8_len((unsigned char)s[i]);
            if (tok_buf_put(out, s + i, k)) return -1;
            i += k;
        }
    }
    return 0;
}

/* Per-token Replace. */
static optiq_status replace_token(const tok_dec *d, const char *s, size_t n, tok_buf *out, tok_match_scratch *ms,
                                  tok_span **spans, size_t *cap, optiq_error *err) {
    size_t cnt = 0, prev = 0;
    optiq_status st = tok_regex_find_all(d->pat, s, n, ms, spans, &cnt, cap, err);
    if (st) return st;
    for (size_t i = 0; i < cnt; i++) {
        if (tok_buf_put(out, s + prev, (*spans)[i].start - prev) || tok_buf_put(out, d->content, d->content_len))
            return oom(err);
        prev = (*spans)[i].end;
    }
    return tok_buf_put(out, s + prev, n - prev) ? oom(err) : OPTIQ_OK;
}

/* ByteFallback's flush of a run of bytes. */
static int flush_bytes(const char *bytes, size_t n, slist *out) {
    if (tok_utf8_valid(bytes, n)) return slist_push(out, bytes, n);
    for (size_t i = 0; i < n; i++)
        if (slist_push(out, FFFD, 3)) return -1;
    return 0;
}

/* ---- all at once ---- */

static optiq_status run_step(const optiq_tokenizer *t, const tok_dec *d, const slist *in, slist *out,
                             tok_match_scratch *ms, tok_span **spans, size_t *cap, optiq_error *err) {
    slist_clear(out);
    switch (d->type) {
    case DEC_BYTELEVEL: {
        tok_buf bytes = {0};
        tok_buf *o = slist_add(out);
        int bad = !o;
        for (size_t i = 0; i < in->n && !bad; i++) bad = bytelevel_bytes(t, in->s[i].p, in->s[i].n, &bytes);
        if (!bad) bad = lossy_utf8(bytes.p, bytes.n, o, 0, NULL);
        tok_buf_free(&bytes);
        return bad ? oom(err) : OPTIQ_OK;
    }
    case DEC_FUSE: {
        tok_buf *o = slist_add(out);
        if (!o) return oom(err);
        for (size_t i = 0; i < in->n; i++)
            if (tok_buf_put(o, in->s[i].p, in->s[i].n)) return oom(err);
        return OPTIQ_OK;
    }
    case DEC_BYTEFALLBACK: {
        tok_buf run = {0};
        int bad = 0;
        for (size_t i = 0; i < in->n && !bad; i++) {
            int b = byte_token(in->s[i].p, in->s[i].n);
            if (b >= 0) {
                char c = (char)b;
                bad = tok_buf_put(&run, &c, 1);
                continue;
            }
            if (run.n) { bad = flush_bytes(run.p, run.n, out); run.n = 0; }
            if (!bad) bad = slist_push(out, in->s[i].p, in->s[i].n);
        }
        if (!bad && run.n) bad = flush_bytes(run.p, run.n, out);
        tok_buf_free(&run);
        return bad ? oom(err) : OPTIQ_OK;
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            tok_buf *o = slist_add(out);
            if (!o) return oom(err);
            optiq_status st = replace_token(d, in->s[i].p, in->s[i].n, o, ms, spans, cap, err);
            if (st) return st;
        }
        return OPTIQ_OK;
    case DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            tok_buf *o = slist_add(out);
            if (!o || strip_token(d, in->s[i].p, in->s[i].n, o)) return oom(err);
        }
        return OPTIQ_OK;
    case DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            tok_buf *o = slist_add(out);
            if (!o || metaspace_token(d, i == 0, in->s[i].p, in->s[i].n, o)) return oom(err);
        }
        return OPTIQ_OK;
    }
    return OPTIQ_OK;
}

static optiq_status decode_strings(const optiq_tokenizer *t, const char **strs, const size_t *lens, size_t n,
                                   char **out, size_t *out_len, optiq_error *err) {
    slist a = {0}, b = {0};
    tok_match_scratch ms = {0};
    tok_span *spans = NULL;
    size_t cap = 0;
    tok_buf res = {0};
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < n && !st; i++)
        if (slist_push(&a, strs[i], lens[i])) st = oom(err);
    for (size_t k = 0; k < t->n_decs && !st; k++) {
        st = run_step(t, &t->decs[k], &a, &b, &ms, &spans, &cap, err);
        slist x = a;
        a = b;
        b = x;
    }
    if (!st && tok_buf_reserve(&res, 1)) st = oom(err);
    if (!st) res.p[0] = 0;
    for (size_t i = 0; i < a.n && !st; i++) {
        if (!t->has_decoder && i && tok_buf_put(&res, " ", 1)) st = oom(err);
        if (!st && tok_buf_put(&res, a.s[i].p, a.s[i].n)) st = oom(err);
    }
    slist_free(&a);
    slist_free(&b);
    tok_match_scratch_free(&ms);
    free(spans);
    if (st) {
        tok_buf_free(&res);
        return st;
    }
    *out = res.p;
    if (out_len) *out_len = res.n;
    return OPTIQ_OK;
}

optiq_status optiq_tokenizer_decode(const optiq_tokenizer *t, const int32_t *ids, size_t n_ids, unsigned flags,
                                    char **text, size_t *len, optiq_error *err) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!t || !text || (!ids && n_ids))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_tokenizer_decode: tokenizer, ids and output required");
    const char **strs = malloc((n_ids ? n_ids : 1) * sizeof *strs);
    size_t *lens = malloc((n_ids ? n_ids : 1) * sizeof *lens);
    if (!strs || !lens) {
        free(strs);
        free(lens);
        return oom(err);
    }
    size_t k = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || !t->id_str[id]) continue;
        if ((flags & OPTIQ_DECODE_SKIP_SPECIAL) && t->id_special[id]) continue;
        strs[k] = t->id_str[id];
        lens[k++] = t->id_len[id];
    }
    optiq_status st = decode_strings(t, strs, lens, k, text, len, err);
    free(strs);
    free(lens);
    return st;
}

/* ---- streaming ---- */

typedef struct stage {
    const tok_dec *d;
    int fused;        /* input items are pieces of one string */
    int hold_all;     /* fused input this step cannot bound: keep everything until the end */
    size_t count;     /* items received (token index for Metaspace) */
    tok_buf hold;     /* held-back input */
    tok_buf ob;       /* this stage's output for the next one (only this stage writes it) */
    size_t lead_left; /* Strip: leading characters still removable */
    int lead_done;
} stage;

struct optiq_detokenizer {
    const optiq_tokenizer *t;
    unsigned flags;
    stage *st;
    size_t n_st;
    size_t n_tokens; /* tokens seen (no decoder: the ' ' between them) */
    tok_buf out;     /* text produced by the current call */
    tok_match_scratch ms;
    tok_span *spans;
    size_t span_cap;
    optiq_error *err; /* the current call's, for messages from deep in the stages */
};

static optiq_status feed(optiq_detokenizer *d, size_t k, const char *s, size_t n);

static optiq_status emit_ob(optiq_detokenizer *d, size_t k) {
    stage *g = &d->st[k];
    return g->ob.n ? feed(d, k + 1, g->ob.p, g->ob.n) : OPTIQ_OK;
}

/* Fused Replace with a literal: emit through the last match, keep a tail that may start one. */
static optiq_status replace_stream(stage *g, int final) {
    const tok_dec *dc = g->d;
    tok_buf *h = &g->hold, *o = &g->ob;
    size_t m = dc->pat_lit_len, keep = 0, prev = 0;
    if (tok_buf_reserve(h, 1)) return OPTIQ_ERR_NOMEM;
    o->n = 0;
    for (;;) {
        const char *f = h->n - prev >= m ? memmem(h->p + prev, h->n - prev, dc->pat_lit, m) : NULL;
        if (!f) break;
        size_t at = (size_t)(f - h->p);
        if (tok_buf_put(o, h->p + prev, at - prev) || tok_buf_put(o, dc->content, dc->content_len)) return OPTIQ_ERR_NOMEM;
        prev = at + m;
    }
    if (!final) /* the longest tail that is a proper prefix of the pattern */
        for (size_t l = m - 1; l > 0 && !keep; l--)
            if (h->n - prev >= l && memcmp(h->p + h->n - l, dc->pat_lit, l) == 0) keep = l;
    if (tok_buf_put(o, h->p + prev, h->n - prev - keep)) return OPTIQ_ERR_NOMEM;
    if (keep) memmove(h->p, h->p + h->n - keep, keep);
    h->n = keep;
    return OPTIQ_OK;
}

/* Fused Strip: leading characters at the very start of the string, a trailing run held back
 * (at the end it is the string's end, so it is dropped). */
static optiq_status strip_stream(stage *g, int final) {
    const tok_dec *dc = g->d;
    tok_buf *h = &g->hold, *o = &g->ob;
    size_t c = dc->content_len, a = 0;
    if (tok_buf_reserve(h, 1)) return OPTIQ_ERR_NOMEM;
    o->n = 0;
    while (!g->lead_done && g->lead_left && a < h->n) {
        if (h->n - a < c || memcmp(h->p + a, dc->content, c) != 0) { g->lead_done = 1; break; }
        a += c;
        g->lead_left--;
    }
    if (!g->lead_left) g->lead_done = 1;
    size_t b = h->n;
    for (size_t run = 0; run < dc->stop && b >= a + c && memcmp(h->p + b - c, dc->content, c) == 0; run++) b -= c;
    if (tok_buf_put(o, h->p + a, b - a)) return OPTIQ_ERR_NOMEM;
    size_t keep = final ? 0 : h->n - b;
    if (keep) memmove(h->p, h->p + h->n - keep, keep);
    h->n = keep;
    return OPTIQ_OK;
}

/* ByteLevel after its bytes were appended to the hold: emit whole characters. */
static optiq_status bytelevel_stream(stage *g, int final) {
    tok_buf *h = &g->hold;
    size_t tail = 0;
    if (tok_buf_reserve(h, 1)) return OPTIQ_ERR_NOMEM;
    g->ob.n = 0;
    if (lossy_utf8(h->p, h->n, &g->ob, !final, &tail)) return OPTIQ_ERR_NOMEM;
    if (tail) memmove(h->p, h->p + h->n - tail, tail);
    h->n = tail;
    return OPTIQ_OK;
}

/* ByteFallback's held run → the next stage (one string, or one U+FFFD per byte). */
static optiq_status bytefallback_flush(optiq_detokenizer *d, size_t k) {
    stage *g = &d->st[k];
    optiq_status st = OPTIQ_OK;
    size_t nb = g->hold.n;
    if (!nb) return OPTIQ_OK;
    g->hold.n = 0;
    if (tok_utf8_valid(g->hold.p, nb)) {
        g->ob.n = 0;
        if (tok_buf_put(&g->ob, g->hold.p, nb)) return OPTIQ_ERR_NOMEM;
        return emit_ob(d, k);
    }
    for (size_t i = 0; i < nb && !st; i++) st = feed(d, k + 1, FFFD, 3);
    return st;
}

/* Input s[0..n) for stage k: one token (list mode) or a piece (fused mode). Returns
 * OPTIQ_ERR_NOMEM without a message (the caller words it); other failures (a regex Replace
 * over a token) have set d->err. */
static optiq_status feed(optiq_detokenizer *d, size_t k, const char *s, size_t n) {
    if (k == d->n_st) return tok_buf_put(&d->out, s, n) ? OPTIQ_ERR_NOMEM : OPTIQ_OK;
    stage *g = &d->st[k];
    const tok_dec *dc = g->d;
    size_t idx = g->count++;
    optiq_status st = OPTIQ_OK;
    if (g->hold_all) return tok_buf_put(&g->hold, s, n) ? OPTIQ_ERR_NOMEM : OPTIQ_OK;
    g->ob.n = 0;
    if (tok_buf_reserve(&g->ob, 1)) return OPTIQ_ERR_NOMEM;
    if (!g->fused) {
        switch (dc->type) {
        case DEC_BYTELEVEL: /* tokens → bytes; the next stages see one string */
            if (bytelevel_bytes(d->t, s, n, &g->hold)) return OPTIQ_ERR_NOMEM;
            st = bytelevel_stream(g, 0);
            break;
        case DEC_FUSE: return feed(d, k + 1, s, n);
        case DEC_BYTEFALLBACK: {
            int b = byte_token(s, n);
            if (b >= 0) {
                char c = (char)b;
                return tok_buf_put(&g->hold, &c, 1) ? OPTIQ_ERR_NOMEM : OPTIQ_OK;
            }
            if ((st = bytefallback_flush(d, k))) return st;
            return feed(d, k + 1, s, n);
        }
        case DEC_REPLACE: {
            st = replace_token(dc, s, n, &g->ob, &d->ms, &d->spans, &d->span_cap, d->err);
            if (st) return st;
            return feed(d, k + 1, g->ob.p, g->ob.n); /* a token, even when empty */
        }
        case DEC_STRIP:
            if (strip_token(dc, s, n, &g->ob)) return OPTIQ_ERR_NOMEM;
            return feed(d, k + 1, g->ob.p, g->ob.n);
        case DEC_METASPACE:
            if (metaspace_token(dc, idx == 0, s, n, &g->ob)) return OPTIQ_ERR_NOMEM;
            return feed(d, k + 1, g->ob.p, g->ob.n);
        }
    } else {
        switch (dc->type) {
        case DEC_FUSE: return feed(d, k + 1, s, n);
        case DEC_METASPACE: /* the whole string is the first token */
            if (metaspace_token(dc, 1, s, n, &g->ob)) return OPTIQ_ERR_NOMEM;
            break;
        case DEC_REPLACE:
            if (tok_buf_put(&g->hold, s, n)) return OPTIQ_ERR_NOMEM;
            st = replace_stream(g, 0);
            break;
        case DEC_STRIP:
            if (tok_buf_put(&g->hold, s, n)) return OPTIQ_ERR_NOMEM;
            st = strip_stream(g, 0);
            break;
        default: return tok_buf_put(&g->hold, s, n) ? OPTIQ_ERR_NOMEM : OPTIQ_OK; /* hold_all */
        }
    }
    return st ? st : emit_ob(d, k);
}

/* End of input: each stage in order lets go of what it held. */
static optiq_status finish_all(optiq_detokenizer *d, optiq_error *err) {
    for (size_t k = 0; k < d->n_st; k++) {
        stage *g = &d->st[k];
        const tok_dec *dc = g->d;
        optiq_status st = OPTIQ_OK;
        g->ob.n = 0;
        if (g->hold_all) {
            /* the whole string through the list step, as the all-at-once path runs it */
            slist a = {0}, b = {0};
            if (slist_push(&a, g->hold.p ? g->hold.p : "", g->hold.n)) st = OPTIQ_ERR_NOMEM;
            g->hold.n = 0;
            if (!st) st = run_step(d->t, dc, &a, &b, &d->ms, &d->spans, &d->span_cap, err);
            for (size_t i = 0; i < b.n && !st; i++) st = feed(d, k + 1, b.s[i].p, b.s[i].n);
            slist_free(&a);
            slist_free(&b);
        } else if (!g->fused && dc->type == DEC_BYTEFALLBACK) {
            st = bytefallback_flush(d, k);
        } else if (dc->type == DEC_BYTELEVEL) {
            if (!(st = bytelevel_stream(g, 1))) st = emit_ob(d, k);
        } else if (g->fused && dc->type == DEC_REPLACE) {
            if (!(st = replace_stream(g, 1))) st = emit_ob(d, k);
        } else if (g->fused && dc->type == DEC_STRIP) {
            if (!(st = strip_stream(g, 1))) st = emit_ob(d, k);
        }
        if (st) return st == OPTIQ_ERR_NOMEM ? oom(err) : st;
    }
    return OPTIQ_OK;
}

void optiq_detokenizer_reset(optiq_detokenizer *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_st; i++) {
        stage *g = &d->st[i];
        g->count = 0;
        g->hold.n = 0;
        g->ob.n = 0;
        g->lead_left = g->d->type == DEC_STRIP ? g->d->start : 0;
        g->lead_done = 0;
    }
    d->n_tokens = 0;
}

optiq_status optiq_detokenizer_new(const optiq_tokenizer *t, unsigned flags, optiq_detokenizer **out,
                                   optiq_error *err) {
    if (out) *out = NULL;
    if (!t || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_detokenizer_new: tokenizer and output required");
    optiq_detokenizer *d = calloc(1, sizeof *d);
    if (!d) return oom(err);
    d->t = t;
    d->flags = flags;
    d->n_st = t->n_decs;
    d->st = calloc(d->n_st ? d->n_st : 1, sizeof *d->st);
    if (!d->st) {
        free(d);
        return oom(err);
    }
    int fused = 0;
    for (size_t i = 0; i < d->n_st; i++) {
        stage *g = &d->st[i];
        g->d = &t->decs[i];
        g->fused = fused;
        if (fused && (g->d->type == DEC_BYTEFALLBACK || g->d->type == DEC_BYTELEVEL ||
                      (g->d->type == DEC_REPLACE && (!g->d->pat_lit || !g->d->pat_lit_len))))
            g->hold_all = 1;
        if (g->d->type == DEC_FUSE || g->d->type == DEC_BYTELEVEL) fused = 1;
    }
    optiq_detokenizer_reset(d);
    *out = d;
    return OPTIQ_OK;
}

static void give(optiq_detokenizer *d, const char **piece, size_t *len) {
    if (tok_buf_reserve(&d->out, d->out.n + 1) == 0) d->out.p[d->out.n] = 0;
    if (piece) *piece = d->out.p ? d->out.p : "";
    if (len) *len = d->out.p ? d->out.n : 0;
}

optiq_status optiq_detokenizer_push(optiq_detokenizer *d, int32_t id, const char **piece, size_t *len,
                                    optiq_error *err) {
    if (piece) *piece = "";
    if (len) *len = 0;
    if (!d) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_detokenizer_push: no detokenizer");
    const optiq_tokenizer *t = d->t;
    d->out.n = 0;
    d->err = err;
    if (id < 0 || (size_t)id >= t->n_ids || !t->id_str[id]) return OPTIQ_OK;
    if ((d->flags & OPTIQ_DECODE_SKIP_SPECIAL) && t->id_special[id]) return OPTIQ_OK;
    optiq_status st = OPTIQ_OK;
    if (!t->has_decoder && d->n_tokens && tok_buf_put(&d->out, " ", 1)) st = OPTIQ_ERR_NOMEM;
    d->n_tokens++;
    if (!st) st = feed(d, 0, t->id_str[id], t->id_len[id]);
    if (st) return st == OPTIQ_ERR_NOMEM ? oom(err) : st;
    give(d, piece, len);
    return OPTIQ_OK;
}

optiq_status optiq_detokenizer_finish(optiq_detokenizer *d, const char **piece, size_t *len, optiq_error *err) {
    if (piece) *piece = "";
    if (len) *len = 0;
    if (!d) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_detokenizer_finish: no detokenizer");
    d->out.n = 0;
    d->err = err;
    optiq_status st = finish_all(d, err);
    optiq_detokenizer_reset(d);
    if (st) return st;
    give(d, piece, len);
    return OPTIQ_OK;
}

void optiq_detokenizer_free(optiq_detokenizer *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_st; i++) {
        tok_buf_free(&d->st[i].hold);
        tok_buf_free(&d->st[i].ob);
    }
    free(d->st);
    tok_buf_free(&d->out);
    tok_match_scratch_free(&d->ms);
    free(d->spans);
    free(d);
}
