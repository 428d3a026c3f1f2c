/*
 * tokenizer.c — encoding: added tokens, normalizers, pre-tokenizers, the model, the
 * post-processor; plus the public lookups.
 *
 * Pre-tokenizer steps run depth first: step k splits one piece and hands each sub-piece to
 * step k+1 at once, the last step hands it to the model. Each step only ever looks at its own
 * piece, so this gives the pieces, in the same order, that the reference gets by running every
 * step over the whole list before the next; and nothing but the current path is kept in memory.
 * Each depth owns its scratch buffers, so a step may reuse them for every piece it emits.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "text/tokenizer_int.h"
#include "text/tokenizer_unicode.h"

/* ---- buffers ---- */

int tok_buf_reserve(tok_buf *b, size_t need) {
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok_buf_put(tok_buf *b, const char *s, size_t n) {
    if (tok_buf_reserve(b, b->n + n + 1)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

void tok_buf_free(tok_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- trie of added tokens ---- */

static uint32_t edge_hash(uint32_t node, uint8_t byte) {
    uint64_t k = ((uint64_t)node << 8 | byte) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32);
}

static int32_t trie_child(const tok_trie *tr, uint32_t node, uint8_t byte) {
    if (!tr->edges) return -1;
    for (uint32_t i = edge_hash(node, byte) & tr->edge_mask;; i = (i + 1) & tr->edge_mask) {
        const struct tok_trie_edge *e = &tr->edges[i];
        if (!e->used) return -1;
        if (e->node == node && e->byte == byte) return (int32_t)e->child;
    }
}

static int trie_put_edge(tok_trie *tr, uint32_t node, uint8_t byte, uint32_t child) {
    if (!tr->edges || (tr->n_edges + 1) * 2 > (size_t)tr->edge_mask + 1) {
        uint32_t ns = tr->edges ? (tr->edge_mask + 1) * 2 : 256;
        struct tok_trie_edge *ne = calloc(ns, sizeof *ne);
        if (!ne) return -1;
        for (uint32_t i = 0; tr->edges && i <= tr->edge_mask; i++) {
            if (!tr->edges[i].used) continue;
            uint32_t j = edge_hash(tr->edges[i].node, tr->edges[i].byte) & (ns - 1);
            while (ne[j].used) j = (j + 1) & (ns - 1);
            ne[j] = tr->edges[i];
        }
        free(tr->edges);
        tr->edges = ne;
        tr->edge_mask = ns - 1;
    }
    uint32_t j = edge_hash(node, byte) & tr->edge_mask;
    while (tr->edges[j].used) j = (j + 1) & tr->edge_mask;
    tr->edges[j] = (struct tok_trie_edge){node, child, byte, 1};
    tr->n_edges++;
    return 0;
}

static int trie_new_node(tok_trie *tr) {
    if (tr->n_nodes == tr->cap_nodes) {
        size_t nc = tr->cap_nodes ? tr->cap_nodes * 2 : 64;
        int32_t *p = realloc(tr->node_tok, nc * sizeof *p);
        if (!p) return -1;
        tr->node_tok = p;
        tr->cap_nodes = nc;
    }
    tr->node_tok[tr->n_nodes] = -1;
    return (int)tr->n_nodes++;
}

int tok_trie_add(tok_trie *tr, const char *s, size_t len, int32_t tok) {
    if (len == 0) return 0;
    if (tr->n_nodes == 0 && trie_new_node(tr) < 0) return -1;
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = trie_child(tr, node, b);
        if (c < 0) {
            int nn = trie_new_node(tr);
            if (nn < 0 || trie_put_edge(tr, node, b, (uint32_t)nn)) return -1;
            c = nn;
        }
        node = (uint32_t)c;
    }
    /* a later token with the same content replaces the earlier (same id anyway) */
    if (tr->node_tok[node] < 0) tr->n_tokens++;
    tr->node_tok[node] = tok;
    tr->first[(uint8_t)s[0]] = 1;
    return 0;
}

void tok_trie_free(tok_trie *tr) {
    free(tr->node_tok);
    free(tr->edges);
    memset(tr, 0, sizeof *tr);
}

/* Longest token starting at s[i]; returns its end (0 when none) and the token index. */
static size_t trie_longest(const tok_trie *tr, const char *s, size_t n, size_t i, int32_t *tok) {
    uint32_t node = 0;
    size_t best = 0;
    for (size_t j = i; j < n; j++) {
        int32_t c = trie_child(tr, node, (uint8_t)s[j]);
        if (c < 0) break;
        node = (uint32_t)c;
        if (tr->node_tok[node] >= 0) { best = j + 1; *tok = tr->node_tok[node]; }
    }
    return best;
}

/* ---- encoding context ---- */

typedef struct seg {
    size_t start, end;
    int32_t tok; /* added-token index, -1 for text */
} seg;

typedef struct piece {
    size_t start, end;
    int is_match;
} piece;

typedef struct enc {
    const optiq_tokenizer *t;
    unsigned flags;
    int32_t *ids;
    size_t n, cap;
    tok_match_scratch ms;
    tok_bpe_scratch bs;
    tok_buf norm, norm_tmp;
    seg *segs[2];
    size_t seg_cap[2];
    tok_buf buf[TOK_MAX_PRETOK][2];
    piece *pieces[TOK_MAX_PRETOK];
    size_t piece_cap[TOK_MAX_PRETOK];
    tok_span *spans;
    size_t span_cap;
    optiq_error *err;
} enc;

static void enc_free(enc *e) {
    free(e->ids);
    tok_match_scratch_free(&e->ms);
    tok_bpe_scratch_free(&e->bs);
    tok_buf_free(&e->norm);
    tok_buf_free(&e->norm_tmp);
    for (int i = 0; i < 2; i++) free(e->segs[i]);
    for (int d = 0; d < TOK_MAX_PRETOK; d++) {
        tok_buf_free(&e->buf[d][0]);
        tok_buf_free(&e->buf[d][1]);
        free(e->pieces[d]);
    }
    free(e->spans);
}

static optiq_status oom(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "tokenizer: out of memory"); }

static int grow_arr(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 32;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

/* ---- added-token split (AddedVocabulary::find_matches) ---- */

static int word_before(const char *s, size_t i) {
    if (i == 0) return 0;
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tok_utf8_decode((const unsigned char *)s + k, i - k, &cp);
    return tok_is_word_char(cp);
}

static int word_after(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    uint32_t cp;
    tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
    return tok_is_word_char(cp);
}

/* Start of the run of White_Space that ends s[0..i). */
static size_t space_run_start(const char *s, size_t i) {
    while (i > 0) {
        size_t k = i - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        uint32_t cp;
        tok_utf8_decode((const unsigned char *)s + k, i - k, &cp);
        if (!tok_is_white_space(cp)) break;
        i = k;
    }
    return i;
}

/* End of the run of White_Space that starts at s[i]. */
static size_t space_run_end(const char *s, size_t n, size_t i) {
    while (i < n) {
        uint32_t cp;
        int k = tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!tok_is_white_space(cp)) break;
        i += (size_t)k;
    }
    return i;
}

static optiq_status added_split(enc *e, const tok_trie *tr, int which, const char *s, size_t n, size_t *count) {
    const optiq_tokenizer *t = e->t;
    size_t k = 0, start_offset = 0, pos = 0;
#define PUSH_SEG(a, b, tk)                                                                                      \
    do {                                                                                                        \
        if (grow_arr((void **)&e->segs[which], &e->seg_cap[which], k + 1, sizeof(seg))) return oom(e->err);     \
        e->segs[which][k++] = (seg){(a), (b), (tk)};                                                            \
    } while (0)
    if (tr->n_tokens) {
        while (pos < n) {
            /* leftmost-longest match at or after pos, as the reference's Aho-Corasick finds it */
            size_t i = pos, end = 0;
            int32_t tok = -1;
            for (; i < n; i++)
                if (tr->first[(uint8_t)s[i]] && (end = trie_longest(tr, s, n, i, &tok))) break;
            if (!end) break;
            pos = end; /* the scan resumes after the raw match whatever happens to it */
            const tok_added *a = &t->added[tok];
            size_t ms = i, me = end;
            if ((e->flags & OPTIQ_ENCODE_SPLIT_SPECIAL) && a->special) continue;
            if (a->single_word && (word_before(s, ms) || word_after(s, n, me))) continue;
            if (a->lstrip) {
                size_t ns = space_run_start(s, ms);
                ms = ns > start_offset ? ns : start_offset;
            }
            if (a->rstrip) me = space_run_end(s, n, me);
            if (start_offset < ms) PUSH_SEG(start_offset, ms, -1);
            PUSH_SEG(ms, me, a->id);
            start_offset = me;
        }
    }
    if (start_offset < n) PUSH_SEG(start_offset, n, -1);
#undef PUSH_SEG
    *count = k;
    return OPTIQ_OK;
}

/* ---- normalizers ---- */

static optiq_status norm_unicode(const tok_norm *nm, const char *s, size_t n, tok_buf *out, optiq_error *err) {
    int fast = 1;
    unsigned char lim = nm->type == NORM_NFC ? 0xCC : 0x80; /* below U+0300 nothing composes; ASCII is fixed */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= lim) { fast = 0; break; }
    out->n = 0;
    if (fast) return tok_buf_put(out, s, n) ? oom(err) : OPTIQ_OK;
    int opt = UTF8PROC_STABLE;
    switch (nm->type) {
    case NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
    case NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
    case NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)opt);
    if (r < 0) {
        free(dst);
        return err_set(err, r == UTF8PROC_ERROR_NOMEM ? OPTIQ_ERR_NOMEM : OPTIQ_ERR_FORMAT,
                       "tokenizer: normalization failed: %s", utf8proc_errmsg(r));
    }
    int bad = tok_buf_put(out, (const char *)dst, (size_t)r);
    free(dst);
    return bad ? oom(err) : OPTIQ_OK;
}

/* One normalizer. *aligned tracks whether the first character still comes from the first
 * character of the original piece (the reference's offsets_original().0 == 0, which Metaspace's
 * prepend_scheme "first" looks at): stripping or deleting leading characters breaks it. */
static optiq_status norm_one(const tok_norm *nm, const char *s, size_t n, tok_buf *out, tok_match_scratch *ms,
                             tok_span **spans, size_t *span_cap, int *aligned, optiq_error *err) {
    out->n = 0;
    if (tok_buf_reserve(out, n + 1)) return oom(err);
    out->p[0] = 0;
    switch (nm->type) {
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD: return norm_unicode(nm, s, n, out, err);
    case NORM_PREPEND:
        if (n && tok_buf_put(out, nm->content, nm->content_len)) return oom(err);
        return tok_buf_put(out, s, n) ? oom(err) : OPTIQ_OK;
    case NORM_STRIP: {
        size_t a = 0, b = n;
        if (nm->strip_left) a = space_run_end(s, n, 0);
        if (a > 0) *aligned = 0;
        if (nm->strip_right && b > a) b = space_run_start(s, b);
        if (b < a) b = a;
        return tok_buf_put(out, s + a, b - a) ? oom(err) : OPTIQ_OK;
    }
    case NORM_REPLACE: {
        size_t cnt = 0, prev = 0;
        optiq_status st = tok_regex_find_all(nm->pat, s, n, ms, spans, &cnt, span_cap, err);
        if (st) return st;
        if (cnt && (*spans)[0].start == 0 && (*spans)[0].end > 0 && nm->content_len == 0) *aligned = 0;
        for (size_t i = 0; i < cnt; i++) {
            if (tok_buf_put(out, s + prev, (*spans)[i].start - prev) || tok_buf_put(out, nm->content, nm->content_len))
                return oom(err);
            prev = (*spans)[i].end;
        }
        return tok_buf_put(out, s + prev, n - prev) ? oom(err) : OPTIQ_OK;
    }
    }
    return OPTIQ_OK;
}

static optiq_status normalize_into(const optiq_tokenizer *t, const char *s, size_t n, tok_buf *out, tok_buf *tmp,
                                   tok_match_scratch *ms, tok_span **spans, size_t *span_cap, int *aligned,
                                   optiq_error *err) {
    out->n = 0;
    if (tok_buf_put(out, s, n)) return oom(err);
    for (size_t i = 0; i < t->n_norms; i++) {
        optiq_status st = norm_one(&t->norms[i], out->p, out->n, tmp, ms, spans, span_cap, aligned, err);
        if (st) return st;
        tok_buf x = *out;
        *out = *tmp;
        *tmp = x;
    }
    return OPTIQ_OK;
}

optiq_status tok_normalize(const optiq_tokenizer *t, const char *s, size_t n, tok_buf *out, tok_match_scratch *ms,
                           optiq_error *err) {
    tok_buf tmp = {0};
    tok_span *spans = NULL;
    size_t cap = 0;
    int aligned = 1;
    optiq_status st = normalize_into(t, s, n, out, &tmp, ms, &spans, &cap, &aligned, err);
    tok_buf_free(&tmp);
    free(spans);
    return st;
}

/* ---- pre-tokenizers ---- */

static optiq_status model_word(enc *e, const char *s, size_t n, int bytelevel) {
    int rc = tok_bpe_word((tok_bpe *)&e->t->bpe, &e->bs, s, n, bytelevel, &e->ids, &e->n, &e->cap);
    if (rc == -2)
        return err_set(e->err, OPTIQ_ERR_FORMAT, "%s: model.unk_token is not in the vocabulary", e->t->source);
    return rc ? oom(e->err) : OPTIQ_OK;
}

/* Matches of a pattern as (piece, is_match) entries covering s (Pattern::find_matches). */
static optiq_status match_pieces(enc *e, size_t depth, const tok_regex *re, int invert, const char *s, size_t n,
                                 size_t *count) {
    size_t cnt = 0, k = 0, prev = 0;
    optiq_status st = tok_regex_find_all(re, s, n, &e->ms, &e->spans, &cnt, &e->span_cap, e->err);
    if (st) return st;
    if (grow_arr((void **)&e->pieces[depth], &e->piece_cap[depth], 2 * cnt + 1, sizeof(piece))) return oom(e->err);
    piece *p = e->pieces[depth];
    for (size_t i = 0; i < cnt; i++) {
        if (prev != e->spans[i].start) p[k++] = (piece){prev, e->spans[i].start, invert};
        p[k++] = (piece){e->spans[i].start, e->spans[i].end, !invert};
        prev = e->spans[i].end;
    }
    if (prev != n) p[k++] = (piece){prev, n, invert};
    *count = k;
    return OPTIQ_OK;
}

/* Each character with pred true is a match of its own (the reference's Fn(char) patterns). */
static optiq_status char_pieces(enc *e, size_t depth, const char *s, size_t n, size_t *count) {
    if (grow_arr((void **)&e->pieces[depth], &e->piece_cap[depth], 2 * n + 1, sizeof(piece))) return oom(e->err);
    piece *p = e->pieces[depth];
    size_t k = 0, last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int cl = tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int c = tok_ucat_of(cp);
        if (c == UC_ND || c == UC_NL || c == UC_NO) { /* char::is_numeric */
            if (last < i) p[k++] = (piece){last, i, 0};
            p[k++] = (piece){i, i + (size_t)cl, 1};
            last = i + (size_t)cl;
        }
        i += (size_t)cl;
    }
    if (last < n) p[k++] = (piece){last, n, 0};
    *count = k;
    return OPTIQ_OK;
}

/* Apply a delimiter behaviour in place (NormalizedString::split); removed pieces get
 * is_match = -1. */
static size_t apply_behavior(piece *p, size_t k, tok_split_behavior b) {
    size_t m = 0;
    int prev = 0;
    switch (b) {
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < k; i++) p[i].is_match = 0;
        return k;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < k; i++) p[i].is_match = p[i].is_match ? -1 : 0;
        return k;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < k; i++) {
            int im = p[i].is_match;
            if (im == prev && m) p[m - 1].end = p[i].end;
            else p[m++] = (piece){p[i].start, p[i].end, 0};
            prev = im;
        }
        for (size_t i = 0; i < m; i++) p[i].is_match = 0;
        return m;
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < k; i++) {
            int im = p[i].is_match;
            if (im && !prev && m) p[m - 1].end = p[i].end;
            else p[m++] = (piece){p[i].start, p[i].end, 0};
            prev = im;
        }
        for (size_t i = 0; i < m; i++) p[i].is_match = 0;
        return m;
    case SPLIT_MERGED_WITH_NEXT: {
        /* the same fold from the right, written into the tail of the array */
        size_t w = k;
        for (size_t i = k; i-- > 0;) {
            int im = p[i].is_match;
            if (im && !prev && w < k) p[w].start = p[i].start;
            else p[--w] = (piece){p[i].start, p[i].end, 0};
            prev = im;
        }
        m = k - w;
        memmove(p, p + w, m * sizeof *p);
        for (size_t i = 0; i < m; i++) p[i].is_match = 0;
        return m;
    }
    }
    return k;
}

static optiq_status pretok(enc *e, size_t depth, const char *s, size_t n, int at_start);

static optiq_status emit_pieces(enc *e, size_t depth, const char *s, size_t k, int at_start) {
    const piece *p = e->pieces[depth];
    for (size_t i = 0; i < k; i++) {
        if (p[i].is_match < 0 || p[i].end <= p[i].start) continue;
        optiq_status st = pretok(e, depth + 1, s + p[i].start, p[i].end - p[i].start, at_start && p[i].start == 0);
        if (st) return st;
        p = e->pieces[depth]; /* deeper steps use other depths' arrays; reload anyway */
    }
    return OPTIQ_OK;
}

static optiq_status pre_bytelevel(enc *e, size_t depth, const tok_pretok *p, const char *s, size_t n, int at_start) {
    const optiq_tokenizer *t = e->t;
    tok_buf *src = &e->buf[depth][0], *map = &e->buf[depth][1];
    if (p->add_prefix_space && s[0] != ' ') {
        src->n = 0;
        if (tok_buf_put(src, " ", 1) || tok_buf_put(src, s, n)) return oom(e->err);
        s = src->p;
        n = src->n;
    }
    size_t k = 1;
    if (p->use_regex) {
        optiq_status st = match_pieces(e, depth, p->pat, 0, s, n, &k);
        if (st) return st;
        k = apply_behavior(e->pieces[depth], k, SPLIT_ISOLATED);
    } else {
        if (grow_arr((void **)&e->pieces[depth], &e->piece_cap[depth], 1, sizeof(piece))) return oom(e->err);
        e->pieces[depth][0] = (piece){0, n, 0};
    }
    /* the last step before a byte-level BPE: hand over the raw bytes, the model maps them */
    int direct = depth + 1 == t->n_pretoks && t->bpe.bl_complete;
    for (size_t i = 0; i < k; i++) {
        const piece *pc = &e->pieces[depth][i];
        const char *ps = s + pc->start;
        size_t pn = pc->end - pc->start;
        if (!pn) continue;
        optiq_status st;
        if (direct) {
            st = model_word(e, ps, pn, 1);
        } else {
            map->n = 0;
            if (tok_buf_reserve(map, pn * 2 + 1)) return oom(e->err);
            for (size_t j = 0; j < pn; j++)
                map->n += (size_t)tok_utf8_encode(tok_bytelevel_cp((unsigned char)ps[j]), map->p + map->n);
            st = pretok(e, depth + 1, map->p, map->n, at_start && pc->start == 0);
        }
        if (st) return st;
    }
    return OPTIQ_OK;
}

static optiq_status pre_metaspace(enc *e, size_t depth, const tok_pretok *p, const char *s, size_t n, int at_start) {
    tok_buf *b = &e->buf[depth][0];
    b->n = 0;
    /* spaces become the replacement first; then the prefix unless it already starts with one */
    int starts = 0;
    if (s[0] == ' ') starts = 1;
    else if (n >= p->rep_len && memcmp(s, p->rep, p->rep_len) == 0) starts = 1;
    if (!starts && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && at_start)))
        if (tok_buf_put(b, p->rep, p->rep_len)) return oom(e->err);
    for (size_t i = 0; i < n; i++) {
        int bad = s[i] == ' ' ? tok_buf_put(b, p->rep, p->rep_len) : tok_buf_put(b, s + i, 1);
        if (bad) return oom(e->err);
    }
    if (!p->split) return pretok(e, depth + 1, b->p, b->n, at_start);
    /* split on the replacement character, each one starting a new piece */
    size_t k = 0;
    if (grow_arr((void **)&e->pieces[depth], &e->piece_cap[depth], 2 * (b->n / p->rep_len) + 2, sizeof(piece)))
        return oom(e->err);
    piece *pc = e->pieces[depth];
    size_t last = 0;
    for (size_t i = 0; i + p->rep_len <= b->n;) {
        if (memcmp(b->p + i, p->rep, p->rep_len) == 0) {
            if (last < i) pc[k++] = (piece){last, i, 0};
            pc[k++] = (piece){i, i + p->rep_len, 1};
            i += p->rep_len;
            last = i;
        } else {
            i += (size_t)tok_utf8_len((unsigned char)b->p[i]);
        }
    }
    if (last < b->n) pc[k++] = (piece){last, b->n, 0};
    k = apply_behavior(pc, k, SPLIT_MERGED_WITH_NEXT);
    return emit_pieces(e, depth, b->p, k, at_start);
}

static optiq_status pretok(enc *e, size_t depth, const char *s, size_t n, int at_start) {
    const optiq_tokenizer *t = e->t;
    if (n == 0) return OPTIQ_OK;
    if (depth == t->n_pretoks) return model_word(e, s, n, 0);
    const tok_pretok *p = &t->pretoks[depth];
    size_t k = 0;
    optiq_status st;
    switch (p->type) {
    case PRE_SPLIT:
        if ((st = match_pieces(e, depth, p->pat, p->invert, s, n, &k))) return st;
        k = apply_behavior(e->pieces[depth], k, p->behavior);
        return emit_pieces(e, depth, s, k, at_start);
    case PRE_DIGITS:
        if ((st = char_pieces(e, depth, s, n, &k))) return st;
        k = apply_behavior(e->pieces[depth], k, p->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS);
        return emit_pieces(e, depth, s, k, at_start);
    case PRE_BYTELEVEL: return pre_bytelevel(e, depth, p, s, n, at_start);
    case PRE_METASPACE: return pre_metaspace(e, depth, p, s, n, at_start);
    }
    return OPTIQ_OK;
}

/* ---- encode ---- */

static optiq_status push_id(enc *e, int32_t id) {
    if (grow_arr((void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids)) return oom(e->err);
    e->ids[e->n++] = id;
    return OPTIQ_OK;
}

/* A text piece of the raw input: normalize it, cut out normalized added tokens, pre-tokenize. */
static optiq_status encode_text(enc *e, const char *s, size_t n, int at_start) {
    const optiq_tokenizer *t = e->t;
    const char *ns = s;
    size_t nn = n;
    if (t->n_norms) {
        optiq_status st = normalize_into(t, s, n, &e->norm, &e->norm_tmp, &e->ms, &e->spans, &e->span_cap, &at_start,
                                         e->err);
        if (st) return st;
        ns = e->norm.p;
        nn = e->norm.n;
    }
    size_t k;
    optiq_status st = added_split(e, &t->trie_norm, 1, ns, nn, &k);
    if (st) return st;
    for (size_t i = 0; i < k; i++) {
        seg g = e->segs[1][i];
        if (g.tok >= 0) st = push_id(e, g.tok);
        else st = pretok(e, 0, ns + g.start, g.end - g.start, at_start && g.start == 0);
        if (st) return st;
    }
    return OPTIQ_OK;
}

/* Replace ill-formed UTF-8 with U+FFFD; NULL when out of memory. */
static char *sanitize(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k = 0, bad;
    while (i < n) {
        size_t len = tok_utf8_check_one(p + i, n - i, &bad);
        if (len) {
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i += bad;
        }
    }
    *out_n = k;
    return o;
}

static optiq_status encode_run(enc *e, const char *text, size_t len) {
    const optiq_tokenizer *t = e->t;
    size_t k;
    optiq_status st = added_split(e, &t->trie_raw, 0, text, len, &k);
    if (st) return st;
    if ((e->flags & OPTIQ_ENCODE_ADD_SPECIAL) && t->post.n_before) {
        for (size_t i = 0; i < t->post.n_before; i++)
            if ((st = push_id(e, t->post.before[i]))) return st;
    }
    for (size_t i = 0; i < k; i++) {
        seg g = e->segs[0][i];
        if (g.tok >= 0) st = push_id(e, g.tok);
        else st = encode_text(e, text + g.start, g.end - g.start, g.start == 0);
        if (st) return st;
    }
    if (e->flags & OPTIQ_ENCODE_ADD_SPECIAL)
        for (size_t i = 0; i < t->post.n_after; i++)
            if ((st = push_id(e, t->post.after[i]))) return st;
    return OPTIQ_OK;
}

optiq_status optiq_tokenizer_encode(const optiq_tokenizer *t, const char *text, size_t len, unsigned flags,
                                    int32_t **ids, size_t *n_ids, optiq_error *err) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_tokenizer_encode: tokenizer, text and outputs required");
    char *clean = NULL;
    if (!tok_utf8_valid(text, len)) {
        if (!(clean = sanitize(text, len, &len))) return oom(err);
        text = clean;
    }
    enc e = {0};
    e.t = t;
    e.flags = flags;
    e.err = err;
    optiq_status st = encode_run(&e, text ? text : "", len);
    free(clean);
    if (!st) {
        *ids = e.ids;
        *n_ids = e.n;
        e.ids = NULL;
    }
    enc_free(&e);
    return st;
}

/* ---- lookups ---- */

size_t optiq_tokenizer_vocab_size(const optiq_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t optiq_tokenizer_token_to_id(const optiq_tokenizer *t, const char *token, size_t len) {
    if (!t || !token) return -1;
    int32_t id = tok_strmap_get(&t->added_map, token, len);
    return id >= 0 ? id : tok_strmap_get(&t->bpe.vocab, token, len);
}

const char *optiq_tokenizer_id_to_token(const optiq_tokenizer *t, int32_t id, size_t *len) {
    if (len) *len = 0;
    if (!t || id < 0 || (size_t)id >= t->n_ids || !t->id_str[id]) return NULL;
    if (len) *len = t->id_len[id];
    return t->id_str[id];
}

int optiq_tokenizer_is_special(const optiq_tokenizer *t, int32_t id) {
    return t && id >= 0 && (size_t)id < t->n_ids && t->id_special[id];
}

int32_t optiq_tokenizer_bos_id(const optiq_tokenizer *t) { return t ? t->bos_id : -1; }

size_t optiq_tokenizer_eos_ids(const optiq_tokenizer *t, const int32_t **ids) {
    if (ids) *ids = t ? t->eos_ids : NULL;
    return t ? t->n_eos : 0;
}

int optiq_tokenizer_add_bos_token(const optiq_tokenizer *t) { return t ? t->add_bos_token : 0; }

/* ---- speed ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double tokenizer_bench_mbps(const optiq_tokenizer *t, const char *text, size_t len, unsigned flags,
                            double min_seconds) {
    double t0 = now_s(), el = 0;
    size_t bytes = 0;
    do {
        int32_t *ids;
        size_t n;
        if (optiq_tokenizer_encode(t, text, len, flags, &ids, &n, NULL)) return -1;
        free(ids);
        bytes += len;
        el = now_s() - t0;
    } while (el < min_seconds);
    return el > 0 ? (double)bytes / el / 1e6 : 0;
}
