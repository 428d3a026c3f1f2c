/*
 * tokenizer_bpe.c — BPE vocabulary, merges and the merge loop.
 */
#include "text/tokenizer_bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_unicode.h"

/* ---- string map ---- */

uint64_t tok_hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ (v * 0xBF58476D1CE4E5B9ull)) * 0x94D049BB133111EBull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ (v * 0xBF58476D1CE4E5B9ull)) * 0x94D049BB133111EBull;
    h ^= h >> 32;
    return h;
}

static int strmap_grow(tok_strmap *m) {
    uint32_t nslots = m->slots ? (m->mask + 1) * 2 : 64;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < m->n; i++) {
        uint32_t j = (uint32_t)m->ent[i].hash & (nslots - 1);
        while (slots[j]) j = (j + 1) & (nslots - 1);
        slots[j] = (uint32_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = nslots - 1;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *s, size_t len, int32_t val) {
    if (!m->slots || (m->n + 1) * 2 > (size_t)m->mask + 1)
        if (strmap_grow(m)) return -1;
    uint64_t h = tok_hash_bytes(s, len);
    uint32_t j = (uint32_t)h & m->mask;
    while (m->slots[j]) {
        struct tok_strent *e = &m->ent[m->slots[j] - 1];
        if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0) { e->val = val; return 0; }
        j = (j + 1) & m->mask;
    }
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        struct tok_strent *p = realloc(m->ent, nc * sizeof *p);
        if (!p) return -1;
        m->ent = p;
        m->cap = nc;
    }
    m->ent[m->n] = (struct tok_strent){s, (uint32_t)len, val, h};
    m->slots[j] = (uint32_t)++m->n;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t len) {
    if (!m->slots) return -1;
    uint64_t h = tok_hash_bytes(s, len);
    uint32_t j = (uint32_t)h & m->mask;
    while (m->slots[j]) {
        const struct tok_strent *e = &m->ent[m->slots[j] - 1];
        if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0) return e->val;
        j = (j + 1) & m->mask;
    }
    return -1;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    free(m->ent);
    memset(m, 0, sizeof *m);
}

/* ---- merges ---- */

int tok_bpe_reserve_merges(tok_bpe *b, size_t n) {
    uint64_t slots = 1024;
    while (slots < n * 2) slots *= 2;
    /* the probe start is (key * golden) >> 20: take enough high bits for any table size */
    b->merges = calloc(slots, sizeof *b->merges);
    if (!b->merges) return -1;
    b->merge_mask = slots - 1;
    b->n_merges = 0;
    return 0;
}

static int is_byte_token(const char *s, size_t n) {
    return n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>';
}

/* A merge whose right part starts with "▁" and whose left part does not end with one can
 * join across a word start: remember the left part's last character. */
static void note_cross(tok_bpe *b, const char *a, size_t al, const char *c, size_t cl) {
    static const char SP[] = "\xe2\x96\x81";
    if (cl < 3 || memcmp(c, SP, 3) != 0 || al == 0) return;
    if (al >= 3 && memcmp(a + al - 3, SP, 3) == 0) return;
    if (is_byte_token(a, al)) { b->cross_bad = 1; return; }
    size_t k = al - 1;
    while (k > 0 && ((unsigned char)a[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tok_utf8_decode((const unsigned char *)a + k, al - k, &cp);
    for (size_t i = 0; i < b->n_cross; i++)
        if (b->cross_left[i] == cp) return;
    if (b->n_cross == sizeof b->cross_left / sizeof b->cross_left[0]) { b->cross_bad = 1; return; }
    b->cross_left[b->n_cross++] = cp;
}

void tok_bpe_add_merge(tok_bpe *b, int32_t l, int32_t r, uint32_t rank, int32_t new_id, const char *a, size_t al,
                       const char *c, size_t cl) {
    note_cross(b, a, al, c, cl);
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; i++) {
        tok_merge_slot *s = &b->merges[i & b->merge_mask];
        if (s->key == key) { s->rank = rank; s->new_id = new_id; return; }
        if (s->key == 0) {
            *s = (tok_merge_slot){key, rank, new_id};
            b->n_merges++;
            return;
        }
    }
}

int tok_bpe_finish(tok_bpe *b) {
    char t[16];
    for (int i = 0; i < 256; i++) {
        snprintf(t, sizeof t, "<0x%02X>", i);
        b->byte_ids[i] = tok_strmap_get(&b->vocab, t, 6);
        int k = tok_utf8_encode(tok_bytelevel_cp((unsigned char)i), t);
        b->bl_ids[i] = tok_strmap_get(&b->vocab, t, (size_t)k);
    }
    int affix = b->prefix_len > 0 || b->suffix_len > 0;
    b->bl_complete = !affix;
    b->space_split = !affix && !b->cross_bad && tok_strmap_get(&b->vocab, "\xe2\x96\x81", 3) >= 0;
    for (int i = 0; i < 256; i++)
        if (b->bl_ids[i] < 0) b->bl_complete = 0;
    for (int i = 0; i < 128; i++) {
        t[0] = (char)i;
        b->ascii_ids[i] = affix ? -1 : tok_strmap_get(&b->vocab, t, 1);
    }
    if (!b->cache) {
        b->cache = calloc(TOK_BPE_CACHE_SLOTS, sizeof *b->cache);
        if (!b->cache) return -1;
        if (pthread_mutex_init(&b->cache_lock, NULL)) return -1;
        b->cache_ready = 1;
    }
    return 0;
}

void tok_bpe_free(tok_bpe *b) {
    tok_strmap_free(&b->vocab);
    free(b->merges);
    free(b->prefix);
    free(b->suffix);
    if (b->cache_ready) pthread_mutex_destroy(&b->cache_lock);
    free(b->cache);
    memset(b, 0, sizeof *b);
}

void tok_bpe_scratch_free(tok_bpe_scratch *sc) {
    free(sc->sym);
    free(sc->rank);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}

/* ---- merge loop ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static inline int heap_less(const struct tok_heap_ent *a, const struct tok_heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct tok_heap_ent *h, size_t *n, struct tok_heap_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static struct tok_heap_ent heap_pop(struct tok_heap_ent *h, size_t *n) {
    struct tok_heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Symbols sc->sym[0..n) are linked; merge them in place. */
static int merge_heap(const tok_bpe *b, tok_bpe_scratch *sc, size_t n) {
    struct tok_sym *sym = sc->sym;
    if (grow((void **)&sc->heap, &sc->heap_cap, n + 1, sizeof *sc->heap)) return -1;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t rank;
        int32_t nid = tok_bpe_merge(b, sym[i].id, sym[i + 1].id, &rank);
        if (nid >= 0) heap_push(sc->heap, &hn, (struct tok_heap_ent){rank, (uint32_t)i, nid});
    }
    while (hn) {
        struct tok_heap_ent top = heap_pop(sc->heap, &hn);
        struct tok_sym *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct tok_sym *right = &sym[cur->next];
        uint32_t rank;
        int32_t nid = tok_bpe_merge(b, cur->id, right->id, &rank);
        if (nid < 0 || nid != top.new_id) continue; /* stale entry */
        cur->id = top.new_id;
        cur->len += right->len;
        int32_t rn = right->next;
        right->len = 0;
        cur->next = rn;
        if (rn >= 0) sym[rn].prev = (int32_t)top.pos;
        /* each merge adds at most two entries: the heap never outgrows 2n */
        if (grow((void **)&sc->heap, &sc->heap_cap, hn + 2, sizeof *sc->heap)) return -1;
        sym = sc->sym;
        cur = &sym[top.pos];
        if (cur->prev >= 0) {
            nid = tok_bpe_merge(b, sym[cur->prev].id, cur->id, &rank);
            if (nid >= 0) heap_push(sc->heap, &hn, (struct tok_heap_ent){rank, (uint32_t)cur->prev, nid});
        }
        if (cur->next >= 0) {
            nid = tok_bpe_merge(b, cur->id, sym[cur->next].id, &rank);
            if (nid >= 0) heap_push(sc->heap, &hn, (struct tok_heap_ent){rank, top.pos, nid});
        }
    }
    return 0;
}

/* The same order for short words: the lowest rank, leftmost on ties, found by a scan. */
static int merge_linear(const tok_bpe *b, tok_bpe_scratch *sc, size_t n) {
    struct tok_sym *sym = sc->sym;
    if (grow((void **)&sc->rank, &sc->rank_cap, n, sizeof *sc->rank)) return -1;
    uint32_t *rk = sc->rank;
    if (grow((void **)&sc->heap, &sc->heap_cap, n, sizeof *sc->heap)) return -1;
    int32_t *nids = (int32_t *)sc->heap; /* the heap's room, reused: new id of the pair at each symbol */
    for (size_t i = 0; i < n; i++) {
        rk[i] = UINT32_MAX;
        if (i + 1 < n) {
            uint32_t r;
            int32_t nid = tok_bpe_merge(b, sym[i].id, sym[i + 1].id, &r);
            if (nid >= 0) { rk[i] = r; nids[i] = nid; }
        }
    }
    for (;;) {
        uint32_t best = UINT32_MAX;
        int32_t bi = -1;
        for (int32_t i = 0; i >= 0; i = sym[i].next)
            if (rk[i] < best) { best = rk[i]; bi = i; }
        if (bi < 0) break;
        struct tok_sym *cur = &sym[bi], *right = &sym[cur->next];
        cur->id = nids[bi];
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) sym[cur->next].prev = bi;
        uint32_t r;
        int32_t nid;
        rk[bi] = UINT32_MAX;
        if (cur->next >= 0 && (nid = tok_bpe_merge(b, cur->id, sym[cur->next].id, &r)) >= 0) { rk[bi] = r; nids[bi] = nid; }
        if (cur->prev >= 0) {
            int32_t p = cur->prev;
            rk[p] = UINT32_MAX;
            if ((nid = tok_bpe_merge(b, sym[p].id, cur->id, &r)) >= 0) { rk[p] = r; nids[p] = nid; }
        }
    }
    return 0;
}

#define LINEAR_MAX 48

static int merge_syms(const tok_bpe *b, tok_bpe_scratch *sc, size_t n, int force) {
    if (n < 2) return 0;
    int linear = force ? force == 1 : n <= LINEAR_MAX;
    return linear ? merge_linear(b, sc, n) : merge_heap(b, sc, n);
}

long tok_bpe_merge_ids(const tok_bpe *b, tok_bpe_scratch *sc, int32_t *ids, const uint32_t *lens, size_t n, int force) {
    if (grow((void **)&sc->sym, &sc->sym_cap, n, sizeof *sc->sym)) return -1;
    for (size_t i = 0; i < n; i++)
        sc->sym[i] = (struct tok_sym){ids[i], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, lens ? lens[i] : 1};
    if (merge_syms(b, sc, n, force)) return -1;
    size_t k = 0;
    for (int32_t i = n ? 0 : -1; i >= 0; i = sc->sym[i].next) ids[k++] = sc->sym[i].id;
    return (long)k;
}

/* ---- one word ---- */

static int out_push(int32_t **out, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap && grow((void **)out, cap, *n + 1, sizeof **out)) return -1;
    (*out)[(*n)++] = id;
    return 0;
}

typedef struct symbuild {
    tok_bpe_scratch *sc;
    size_t n;
} symbuild;

static int sym_add(symbuild *sb, int32_t id, uint32_t len) {
    tok_bpe_scratch *sc = sb->sc;
    if (grow((void **)&sc->sym, &sc->sym_cap, sb->n + 1, sizeof *sc->sym)) return -1;
    sc->sym[sb->n] = (struct tok_sym){id, (int32_t)sb->n - 1, -1, len};
    if (sb->n) sc->sym[sb->n - 1].next = (int32_t)sb->n;
    sb->n++;
    return 0;
}

/* Initial symbols of a word the general way (tokenizers' merge_word). */
static int build_symbols(tok_bpe *b, symbuild *sb, const char *w, size_t len, int bytelevel) {
    char small[64];
    char *tmp = small;
    size_t tmp_cap = sizeof small;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    int unk_pending = 0, rc = 0;
    for (size_t i = 0; i < len;) {
        char ch[8];
        size_t cl;
        if (bytelevel) {
            cl = 1;
        } else {
            cl = (size_t)tok_utf8_len((unsigned char)w[i]);
            if (i + cl > len) cl = len - i;
        }
        const char *c = w + i;
        size_t clen = cl;
        if (bytelevel) {
            clen = (size_t)tok_utf8_encode(tok_bytelevel_cp((unsigned char)w[i]), ch);
            c = ch;
        }
        int first = i == 0, last = i + cl >= len;
        int32_t id;
        const char *s = c;
        size_t slen = clen;
        if (!bytelevel && !b->prefix_len && !b->suffix_len && clen == 1 && (unsigned char)c[0] < 128) {
            id = b->ascii_ids[(unsigned char)c[0]];
        } else {
            size_t need = clen + (first ? 0 : b->prefix_len) + (last ? b->suffix_len : 0);
            if (need > tmp_cap) {
                char *nt = tmp == small ? malloc(need) : realloc(tmp, need);
                if (!nt) { rc = -1; break; }
                tmp = nt;
                tmp_cap = need;
            }
            size_t k = 0;
            if (!first && b->prefix_len) { memcpy(tmp, b->prefix, b->prefix_len); k = b->prefix_len; }
            memcpy(tmp + k, c, clen);
            k += clen;
            if (last && b->suffix_len) { memcpy(tmp + k, b->suffix, b->suffix_len); k += b->suffix_len; }
            s = tmp;
            slen = k;
            id = tok_strmap_get(&b->vocab, s, slen);
        }
        if (id >= 0) {
            if (unk_pending) {
                if (sym_add(sb, unk_id, unk_len)) { rc = -1; break; }
                unk_pending = 0;
            }
            if (sym_add(sb, id, (uint32_t)cl)) { rc = -1; break; }
        } else {
            int done = 0;
            if (b->byte_fallback) {
                int all = 1;
                for (size_t k = 0; k < slen; k++)
                    if (b->byte_ids[(unsigned char)s[k]] < 0) { all = 0; break; }
                if (all) {
                    for (size_t k = 0; k < slen && !rc; k++)
                        if (sym_add(sb, b->byte_ids[(unsigned char)s[k]], 1)) rc = -1;
                    done = 1;
                }
            }
            if (rc) break;
            if (!done && b->unk_id != -1) {
                if (b->unk_id < 0) { rc = -2; break; } /* unk token named but not in the vocabulary */
                if (unk_pending && b->fuse_unk) {
                    unk_len += (uint32_t)cl;
                } else {
                    if (unk_pending && sym_add(sb, unk_id, unk_len)) { rc = -1; break; }
                    unk_id = b->unk_id;
                    unk_len = (uint32_t)cl;
                    unk_pending = 1;
                }
            }
        }
        i += cl;
    }
    if (!rc && unk_pending && sym_add(sb, unk_id, unk_len)) rc = -1;
    if (tmp != small) free(tmp);
    return rc;
}

static uint32_t cache_slot(const char *w, size_t len, int mode) {
    return (uint32_t)(tok_hash_bytes(w, len) ^ (uint64_t)mode) & (TOK_BPE_CACHE_SLOTS - 1);
}

/* One part of a word: cache, initial symbols, merges. */
static int word_part(tok_bpe *b, tok_bpe_scratch *sc, const char *w, size_t len, int bytelevel, int32_t **out,
                     size_t *n, size_t *cap) {
    if (len == 0) return 0;
    int cacheable = b->cache && len <= TOK_BPE_CACHE_KEY;
    uint32_t slot = 0;
    if (cacheable) {
        slot = cache_slot(w, len, bytelevel);
        int32_t ids[TOK_BPE_CACHE_IDS];
        int hit = 0;
        pthread_mutex_lock(&b->cache_lock);
        tok_bpe_cache_slot *cs = &b->cache[slot];
        if (cs->key_len == len && cs->mode == bytelevel && memcmp(cs->key, w, len) == 0) {
            hit = cs->n_ids;
            memcpy(ids, cs->ids, sizeof ids);
        }
        pthread_mutex_unlock(&b->cache_lock);
        if (hit) {
            if (grow((void **)out, cap, *n + (size_t)hit, sizeof **out)) return -1;
            memcpy(*out + *n, ids, (size_t)hit * sizeof *ids);
            *n += (size_t)hit;
            return 0;
        }
    }
    size_t first = *n;
    symbuild sb = {sc, 0};
    if (bytelevel && b->bl_complete) {
        if (grow((void **)&sc->sym, &sc->sym_cap, len, sizeof *sc->sym)) return -1;
        for (size_t i = 0; i < len; i++)
            sc->sym[i] = (struct tok_sym){b->bl_ids[(unsigned char)w[i]], (int32_t)i - 1, i + 1 < len ? (int32_t)i + 1 : -1, 1};
        sb.n = len;
    } else {
        int rc = build_symbols(b, &sb, w, len, bytelevel);
        if (rc) return rc;
    }
    if (merge_syms(b, sc, sb.n, 0)) return -1;
    for (int32_t i = sb.n ? 0 : -1; i >= 0; i = sc->sym[i].next)
        if (out_push(out, n, cap, sc->sym[i].id)) return -1;
    size_t made = *n - first;
    if (cacheable && made > 0 && made <= TOK_BPE_CACHE_IDS) {
        pthread_mutex_lock(&b->cache_lock);
        tok_bpe_cache_slot *cs = &b->cache[slot];
        cs->key_len = (uint8_t)len;
        cs->mode = (uint8_t)bytelevel;
        memcpy(cs->key, w, len);
        cs->n_ids = (uint8_t)made;
        memcpy(cs->ids, *out + first, made * sizeof **out);
        pthread_mutex_unlock(&b->cache_lock);
    }
    return 0;
}

/* Is there a "\xe2\x96\x81" (U+2581) at w[i] that starts a part of its own? */
static int part_starts(const tok_bpe *b, const char *w, size_t len, size_t i) {
    if (i == 0 || i + 3 > len || memcmp(w + i, "\xe2\x96\x81", 3) != 0) return 0;
    size_t k = i - 1; /* the character before */
    while (k > 0 && ((unsigned char)w[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tok_utf8_decode((const unsigned char *)w + k, i - k, &cp);
    if (cp == 0x2581) return 0;
    for (size_t j = 0; j < b->n_cross; j++)
        if (b->cross_left[j] == cp) return 0;
    return 1;
}

int tok_bpe_word(tok_bpe *b, tok_bpe_scratch *sc, const char *w, size_t len, int bytelevel, int32_t **out,
                 size_t *n, size_t *cap) {
    if (len == 0) return 0;
    if (b->ignore_merges) { /* a word that is a token needs no merging (the whole word only) */
        int32_t id;
        if (bytelevel) {
            char *m = malloc(len * 2);
            if (!m) return -1;
            size_t k = 0;
            for (size_t i = 0; i < len; i++) k += (size_t)tok_utf8_encode(tok_bytelevel_cp((unsigned char)w[i]), m + k);
            id = tok_strmap_get(&b->vocab, m, k);
            free(m);
        } else {
            id = tok_strmap_get(&b->vocab, w, len);
        }
        if (id >= 0) return out_push(out, n, cap, id);
    }
    if (bytelevel || !b->space_split) return word_part(b, sc, w, len, bytelevel, out, n, cap);
    size_t start = 0;
    for (size_t i = 1; i < len; i++)
        if ((unsigned char)w[i] == 0xE2 && part_starts(b, w, len, i)) {
            if (word_part(b, sc, w + start, i - start, 0, out, n, cap)) return -1;
            start = i;
        }
    return word_part(b, sc, w + start, len - start, 0, out, n, cap);
}
