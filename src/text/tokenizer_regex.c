/*
 * tokenizer_regex.c — Oniguruma patterns on PCRE2, and literal patterns.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer_regex.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_unicode.h"

struct tok_regex {
    int is_regex;
    pcre2_code *code; /* regex */
    char *lit;        /* literal */
    size_t lit_len;
};

/* ---- translation ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_range(sbuf *b, uint32_t lo, uint32_t hi) {
    char t[40];
    int k = lo == hi ? snprintf(t, sizeof t, "\\x{%x}", lo) : snprintf(t, sizeof t, "\\x{%x}-\\x{%x}", lo, hi);
    sb_put(b, t, (size_t)k);
}

/* Class items (no brackets) for the code points whose category is in mask. */
static void sb_ucat_items(sbuf *b, uint32_t mask) {
    uint32_t run = 0;
    int in = 0;
    for (unsigned i = 0; i < tok_ucat_count; i++) {
        int m = (mask >> tok_ucat_cat[i]) & 1;
        if (m && !in) { run = tok_ucat_start[i]; in = 1; }
        if (!m && in) { sb_range(b, run, tok_ucat_start[i] - 1); in = 0; }
    }
    if (in) sb_range(b, run, 0x10FFFF);
}

static void sb_space_items(sbuf *b) {
    sb_str(b, "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}");
}

static void sb_word_items(sbuf *b) {
    sb_ucat_items(b, (1u << UC_LU) | (1u << UC_LL) | (1u << UC_LT) | (1u << UC_LM) | (1u << UC_LO) | (1u << UC_MN) |
                         (1u << UC_MC) | (1u << UC_ME) | (1u << UC_ND) | (1u << UC_NL) | (1u << UC_PC));
    sb_str(b, "\\x{200c}\\x{200d}\\x{24b6}-\\x{24e9}\\x{1f130}-\\x{1f149}\\x{1f150}-\\x{1f169}\\x{1f170}-\\x{1f189}");
}

/* Parse the property name after \p / \P at pattern[i] ("{L}", "{^L}", "L"); returns the number
 * of bytes used (0 when not a General Category we know), the mask and whether it is negated. */
static size_t parse_prop(const char *p, size_t n, uint32_t *mask, int *neg) {
    *neg = 0;
    if (n == 0) return 0;
    if (p[0] != '{') {
        *mask = tok_ucat_mask(p, 1);
        return *mask ? 1 : 0;
    }
    size_t j = 1;
    if (j < n && p[j] == '^') { *neg = 1; j++; }
    size_t s = j;
    while (j < n && p[j] != '}') j++;
    if (j >= n) return 0;
    *mask = tok_ucat_mask(p + s, j - s);
    return *mask ? j + 1 : 0;
}

char *tok_regex_translate(const char *pat, size_t len, size_t *out_len) {
    sbuf b = {0};
    int in_class = 0;    /* inside [...] */
    size_t class_start = 0; /* index just past '[' or '[^' */
    for (size_t i = 0; i < len;) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char e = pat[i + 1];
            uint32_t mask = 0;
            int neg = 0, kind = 0; /* 1 space, 2 digit, 3 word, 4 property */
            size_t used = 2;
            if (e == 's' || e == 'S') { kind = 1; neg = e == 'S'; }
            else if (e == 'd' || e == 'D') { kind = 2; neg = e == 'D'; mask = 1u << UC_ND; }
            else if (e == 'w' || e == 'W') { kind = 3; neg = e == 'W'; }
            else if (e == 'p' || e == 'P') {
                size_t k = parse_prop(pat + i + 2, len - i - 2, &mask, &neg);
                if (k) { kind = 4; used = 2 + k; if (e == 'P') neg = !neg; }
            }
            if (kind && !(in_class && neg)) {
                if (!in_class) sb_str(&b, neg ? "[^" : "[");
                if (kind == 1) sb_space_items(&b);
                else if (kind == 3) sb_word_items(&b);
                else sb_ucat_items(&b, mask);
                if (!in_class) sb_str(&b, "]");
                i += used;
                continue;
            }
            /* any other escape: copy it whole (one escaped UTF-8 character) */
            size_t k = 1 + (size_t)tok_utf8_len((unsigned char)e);
            if (i + k > len) k = len - i;
            sb_put(&b, pat + i, k);
            i += k;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            sb_put(&b, "[", 1);
            i++;
            if (i < len && pat[i] == '^') { sb_put(&b, "^", 1); i++; }
            class_start = i;
            continue;
        }
        if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
            /* POSIX bracket [:name:] — copy through its closing ":]" */
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (pat[j] == ':' && pat[j + 1] == ']') { end = pat + j + 2; break; }
            if (end) { sb_put(&b, pat + i, (size_t)(end - (pat + i))); i = (size_t)(end - pat); continue; }
        }
        if (in_class && c == ']' && i != class_start) {
            in_class = 0;
            sb_put(&b, "]", 1);
            i++;
            continue;
        }
        sb_put(&b, pat + i, 1);
        i++;
    }
    if (!b.p && !b.oom) sb_put(&b, "", 0);
    if (b.oom) { free(b.p); return NULL; }
    if (out_len) *out_len = b.n;
    return b.p;
}

/* ---- compile ---- */

optiq_status tok_regex_new(const char *pattern, size_t len, int is_regex, const char *label, tok_regex **out,
                           optiq_error *err) {
    *out = NULL;
    tok_regex *re = calloc(1, sizeof *re);
    if (!re) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    re->is_regex = is_regex;
    if (!is_regex) {
        re->lit = malloc(len + 1);
        if (!re->lit) { free(re); return err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); }
        memcpy(re->lit, pattern, len);
        re->lit[len] = 0;
        re->lit_len = len;
        *out = re;
        return OPTIQ_OK;
    }
    size_t tl = 0;
    char *tp = tok_regex_translate(pattern, len, &tl);
    if (!tp) { free(re); return err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); }
    int ec = 0;
    PCRE2_SIZE eo = 0;
    re->code = pcre2_compile((PCRE2_SPTR)tp, tl, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    free(tp);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        free(re);
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: regex %.*s does not compile: %s", label, (int)(len > 200 ? 200 : len),
                       pattern, (const char *)msg);
    }
    /* JIT is an optimisation only: matching works the same without it */
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    *out = re;
    return OPTIQ_OK;
}

void tok_regex_free(tok_regex *re) {
    if (!re) return;
    if (re->code) pcre2_code_free(re->code);
    free(re->lit);
    free(re);
}

void tok_match_scratch_free(tok_match_scratch *ms) {
    if (ms && ms->md) { pcre2_match_data_free(ms->md); ms->md = NULL; }
}

/* ---- matching ---- */

static int push_span(tok_span **spans, size_t *count, size_t *cap, size_t s, size_t e) {
    if (*count == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        tok_span *p = realloc(*spans, nc * sizeof *p);
        if (!p) return -1;
        *spans = p;
        *cap = nc;
    }
    (*spans)[*count].start = s;
    (*spans)[(*count)++].end = e;
    return 0;
}

static size_t char_len_at(const char *s, size_t n, size_t i) {
    size_t k = (size_t)tok_utf8_len((unsigned char)s[i]);
    return i + k > n ? n - i : k;
}

optiq_status tok_regex_find_all(const tok_regex *re, const char *s, size_t n, tok_match_scratch *ms,
                                tok_span **spans, size_t *count, size_t *cap, optiq_error *err) {
    *count = 0;
    if (!re->is_regex) {
        /* a literal is the escaped pattern to the reference: the same scan, done with memmem */
        size_t m = re->lit_len, pos = 0, last_end = (size_t)-1;
        while (pos <= n) {
            size_t ms_, me;
            if (m == 0) {
                ms_ = me = pos;
            } else {
                const char *f = memmem(s + pos, n - pos, re->lit, m);
                if (!f) break;
                ms_ = (size_t)(f - s);
                me = ms_ + m;
            }
            if (me == ms_ && last_end == me) { /* empty right after the previous match */
                if (pos >= n) break;
                pos += char_len_at(s, n, pos);
                continue;
            }
            if (push_span(spans, count, cap, ms_, me)) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            last_end = me;
            pos = me;
            if (m == 0) { if (pos >= n) break; pos += char_len_at(s, n, pos); last_end = (size_t)-1; }
        }
        return OPTIQ_OK;
    }
    if (!ms->md) {
        ms->md = pcre2_match_data_create(8, NULL);
        if (!ms->md) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    pcre2_match_data *md = ms->md;
    size_t pos = 0, last_end = (size_t)-1;
    while (pos <= n) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        /* the JIT's small default stack can run out on long subjects; the interpreter keeps
         * its backtracking state on the heap, so retry there */
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return err_set(err, OPTIQ_ERR_UNSUPPORTED, "regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], e = ov[1];
        if (a == e && last_end == e) {
            if (pos >= n) break;
            pos += char_len_at(s, n, pos);
            continue;
        }
        if (push_span(spans, count, cap, a, e)) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        last_end = e;
        pos = e;
    }
    return OPTIQ_OK;
}
