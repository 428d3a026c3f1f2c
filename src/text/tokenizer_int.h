/*
 * tokenizer_int.h — the parts of a loaded tokenizer, shared by the files of the tokenizer
 * module (tokenizer_load.c builds them, tokenizer.c encodes, tokenizer_decode.c decodes).
 *
 * Everything here is immutable once loaded, except the BPE word cache (behind its mutex), so
 * one tokenizer may be used from several threads at once.
 */
#ifndef OPTIQ_TEXT_TOKENIZER_INT_H
#define OPTIQ_TEXT_TOKENIZER_INT_H

#include "text/tokenizer.h"
#include "text/tokenizer_bpe.h"
#include "text/tokenizer_regex.h"

#define TOK_MAX_PRETOK 16 /* pre-tokenizer steps after flattening Sequences */

/* ---- normalizers ---- */
typedef enum tok_norm_type {
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_REPLACE,  /* pattern → content */
    NORM_PREPEND,  /* content before a non-empty string */
    NORM_STRIP,    /* White_Space at the left / right */
} tok_norm_type;

typedef struct tok_norm {
    tok_norm_type type;
    tok_regex *pat;
    char *content;
    size_t content_len;
    int strip_left, strip_right;
} tok_norm;

/* ---- pre-tokenizers ---- */
typedef enum tok_split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
    SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum tok_pretok_type {
    PRE_SPLIT,
    PRE_BYTELEVEL,
    PRE_METASPACE,
    PRE_DIGITS,
} tok_pretok_type;

typedef enum tok_prepend_scheme { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_pretok {
    tok_pretok_type type;
    /* Split (also the GPT-2 pattern of ByteLevel with use_regex) */
    tok_regex *pat;
    tok_split_behavior behavior;
    int invert;
    /* ByteLevel */
    int add_prefix_space, use_regex;
    /* Metaspace */
    char rep[8];
    size_t rep_len;
    tok_prepend_scheme prepend;
    int split;
    /* Digits */
    int individual_digits;
} tok_pretok;

/* ---- decoders ---- */
typedef enum tok_dec_type {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE,
} tok_dec_type;

typedef struct tok_dec {
    tok_dec_type type;
    tok_regex *pat;     /* Replace */
    char *content;      /* Replace: replacement; Strip: the character (UTF-8) */
    size_t content_len;
    const char *pat_lit; /* Replace with a String pattern: the literal (NULL for a regex) */
    size_t pat_lit_len;
    size_t start, stop; /* Strip */
    char rep[8];        /* Metaspace */
    size_t rep_len;
    tok_prepend_scheme prepend;
} tok_dec;

/* ---- post-processor (single sequences) ---- */
typedef struct tok_post {
    int32_t *before, *after; /* ids around the sequence */
    size_t n_before, n_after;
} tok_post;

/* ---- added tokens ---- */
typedef struct tok_added {
    const char *content;
    size_t len;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tok_added;

/* Trie over token contents for leftmost-longest matching. Node 0 is the root; children are
 * found through a hash of (node, byte). */
typedef struct tok_trie {
    int32_t *node_tok;      /* added-token index ending at the node, -1 none */
    size_t n_nodes, cap_nodes;
    struct tok_trie_edge { uint32_t node; uint32_t child; uint8_t byte; uint8_t used; } *edges;
    uint32_t edge_mask;
    size_t n_edges;
    uint8_t first[256]; /* bytes that start some token */
    size_t n_tokens;
} tok_trie;

/* ---- the tokenizer ---- */
typedef struct tok_pool_block {
    struct tok_pool_block *next;
    size_t used, cap;
    char data[];
} tok_pool_block;

struct optiq_tokenizer {
    tok_pool_block *pool;

    /* ids: token string of each id (added tokens first, then the model's), NULL for holes */
    size_t n_ids;
    const char **id_str;
    uint32_t *id_len;
    uint8_t *id_special; /* the id's string is a special added token (skipped on request) */

    tok_bpe bpe;

    tok_added *added; /* in the reference's pattern order: special ones, then the others */
    size_t n_added;
    tok_strmap added_map; /* content → id of every added token */
    tok_trie trie_raw, trie_norm;

    tok_norm *norms;
    size_t n_norms;
    int has_normalizer;
    tok_pretok pretoks[TOK_MAX_PRETOK];
    size_t n_pretoks;
    tok_dec *decs;
    size_t n_decs;
    int has_decoder;
    tok_post post;

    int16_t bl_byte[0x144]; /* decoder: byte of each byte-level code point below 0x144, -1 none */

    int32_t bos_id;
    int32_t eos_ids[16];
    size_t n_eos;
    int add_bos_token;
    char *bos_token, *eos_token;
    char *source; /* where it was loaded from, for messages */
};

/* Growable byte buffer. */
typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;
int tok_buf_reserve(tok_buf *b, size_t need); /* room for need bytes in all; 0 or -1 */
int tok_buf_put(tok_buf *b, const char *s, size_t n);
void tok_buf_free(tok_buf *b);

/* Run the normalizer over s[0..n) into out (replaced); 0 normalizers copies. */
optiq_status tok_normalize(const optiq_tokenizer *t, const char *s, size_t n, tok_buf *out, tok_match_scratch *ms,
                           optiq_error *err);

/* Allocate len+1 bytes (copy of s, NUL-terminated) from the tokenizer's pool. */
char *tok_pool_strdup(optiq_tokenizer *t, const char *s, size_t len);

/* Trie helpers (tokenizer.c). */
int tok_trie_add(tok_trie *tr, const char *s, size_t len, int32_t tok);
void tok_trie_free(tok_trie *tr);

#endif
