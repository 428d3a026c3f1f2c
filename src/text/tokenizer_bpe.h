/*
 * tokenizer_bpe.h — the BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
 *
 * vocab maps token strings to ids; merges is an ordered list of pairs, rank = position. A word
 * (one pre-tokenized piece) becomes one symbol per character (with continuing_subword_prefix on
 * every character but the first and end_of_word_suffix on the last, when set); a character
 * missing from the vocabulary becomes its <0xNN> byte tokens when byte_fallback is set and all
 * exist, else the unk token (consecutive unks fused into one when fuse_unk), else it is
 * dropped. Then the pair of adjacent symbols with the lowest merge rank is merged, leftmost
 * first among equal ranks, until no adjacent pair has a merge — exactly the order of the
 * reference's priority queue (tokenizers/src/models/bpe/word.rs, merge_all without dropout).
 * With ignore_merges, a word that is itself in the vocabulary is that one token.
 *
 * Lookups: an open-addressing hash table over the vocabulary strings and one keyed by the
 * 64-bit id pair for the merges. Short words run a linear scan over the current pair ranks;
 * long ones (a whole line for Gemma, whose pre-tokenizer does not split) a binary heap.
 * SentencePiece-style words are cut before each "▁" that no merge can reach across (see
 * space_split), so a long unsplit line costs what its words cost.
 * A small direct-mapped cache of word → ids, shared by all threads behind a mutex, skips the
 * merge loop for repeated words.
 */
#ifndef OPTIQ_TEXT_TOKENIZER_BPE_H
#define OPTIQ_TEXT_TOKENIZER_BPE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* String → int32 hash map; the strings are borrowed (they live in the tokenizer's pool). */
typedef struct tok_strmap {
    uint32_t *slots; /* entry index + 1; 0 = empty */
    uint32_t mask;
    struct tok_strent {
        const char *s;
        uint32_t len;
        int32_t val;
        uint64_t hash;
    } *ent;
    size_t n, cap;
} tok_strmap;

uint64_t tok_hash_bytes(const char *s, size_t n);
/* Insert or overwrite; returns 0, or -1 when out of memory. */
int tok_strmap_put(tok_strmap *m, const char *s, size_t len, int32_t val);
/* Value or -1. */
int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t len);
void tok_strmap_free(tok_strmap *m);

typedef struct tok_merge_slot {
    uint64_t key; /* (left id << 32 | right id) + 1; 0 = empty */
    uint32_t rank;
    int32_t new_id;
} tok_merge_slot;

#define TOK_BPE_CACHE_SLOTS 8192
#define TOK_BPE_CACHE_KEY 23 /* longest word cached, bytes */
#define TOK_BPE_CACHE_IDS 7  /* most ids a cached word may have */

typedef struct tok_bpe_cache_slot {
    uint8_t key_len, n_ids; /* key_len 0 = empty */
    char key[TOK_BPE_CACHE_KEY];
    uint8_t mode;
    int32_t ids[TOK_BPE_CACHE_IDS];
} tok_bpe_cache_slot;

typedef struct tok_bpe {
    tok_strmap vocab; /* model vocabulary only (not the added tokens) */
    size_t vocab_count;
    tok_merge_slot *merges;
    uint64_t merge_mask;
    size_t n_merges;
    int32_t unk_id; /* -1 when none, -2 when named but not in the vocabulary (an error if ever needed) */
    int fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix; /* continuing_subword_prefix / end_of_word_suffix, NULL when unset */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256];  /* <0xNN> tokens, -1 where missing */
    int32_t ascii_ids[128]; /* single-character tokens for ASCII (no prefix/suffix in play) */
    int32_t bl_ids[256];    /* byte-level character of each byte, -1 where missing */
    int bl_complete;        /* all 256 bl_ids present and no prefix/suffix: the byte-level fast path */
    /* SentencePiece-style words ("▁the▁cat") may be merged part by part: a symbol can only
     * span the boundary before a "▁" if some merge joins a left part ending in the character
     * before it with a right part starting with "▁". cross_left lists those characters; the
     * split is off when a byte token or too many characters are among them, or when "▁" is
     * not itself a token (an unknown run could then reach across). */
    int space_split, cross_bad;
    uint32_t cross_left[32];
    size_t n_cross;
    tok_bpe_cache_slot *cache;
    pthread_mutex_t cache_lock;
    int cache_ready;
} tok_bpe;

/* Scratch for one thread's merges. */
typedef struct tok_bpe_scratch {
    struct tok_sym { int32_t id, prev, next; uint32_t len; } *sym;
    size_t sym_cap;
    uint32_t *rank; /* linear path: rank of the pair starting at each symbol */
    size_t rank_cap;
    struct tok_heap_ent { uint32_t rank, pos; int32_t new_id; } *heap;
    size_t heap_cap;
} tok_bpe_scratch;
void tok_bpe_scratch_free(tok_bpe_scratch *sc);

/* Look up a merge: new id (or -1) and its rank. */
static inline int32_t tok_bpe_merge(const tok_bpe *b, int32_t l, int32_t r, uint32_t *rank) {
    if (!b->merges) return -1;
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; i++) {
        const tok_merge_slot *s = &b->merges[i & b->merge_mask];
        if (s->key == key) { *rank = s->rank; return s->new_id; }
        if (s->key == 0) return -1;
    }
}

/* Add a merge (a later duplicate pair overrides an earlier one, as in the reference's map).
 * The table must have been sized with tok_bpe_reserve_merges. a/b are the two token strings
 * (for the space_split analysis). */
int tok_bpe_reserve_merges(tok_bpe *b, size_t n);
void tok_bpe_add_merge(tok_bpe *b, int32_t l, int32_t r, uint32_t rank, int32_t new_id, const char *a, size_t al,
                       const char *c, size_t cl);

/* Derive the lookup tables (byte/ascii/byte-level ids) once vocab and options are set;
 * id_str gives each id's string for the byte-level table. Returns 0 or -1 (out of memory). */
int tok_bpe_finish(tok_bpe *b);

void tok_bpe_free(tok_bpe *b);

/* Tokenize one word (valid UTF-8). bytelevel: w holds raw bytes that the ByteLevel
 * pre-tokenizer would map one byte → one character (only valid when b->bl_complete). Appends
 * ids through *out / *n / *cap (realloc'd). Returns 0, or -1 when out of memory. */
int tok_bpe_word(tok_bpe *b, tok_bpe_scratch *sc, const char *w, size_t len, int bytelevel, int32_t **out,
                 size_t *n, size_t *cap);

/* The merge loop alone over given initial symbols (exposed for tests comparing the linear
 * and heap orders): ids[0..n) in, merged ids out; returns the new count. force: 0 auto,
 * 1 linear, 2 heap. -1 when out of memory. */
long tok_bpe_merge_ids(const tok_bpe *b, tok_bpe_scratch *sc, int32_t *ids, const uint32_t *lens, size_t n, int force);

#endif
