/*
 * tokenizer_regex.h — the patterns of tokenizer.json, matched as the reference matches them.
 *
 * tokenizer.json patterns are either {"String": s} (a literal) or {"Regex": r} (Oniguruma
 * syntax, as the reference compiles them). Regexes are translated for PCRE2 before compiling:
 * the property classes \p{..} / \P{..}, \s, \S, \d, \D, \w, \W become explicit code point
 * ranges taken from our Unicode 16.0 table (tokenizer_unicode.h), because Oniguruma in the
 * reference classifies characters by Unicode 16.0 and Debian's PCRE2 by 14.0 (a CJK Extension H
 * ideograph is a letter to one and unassigned to the other; U+180E is \s to PCRE2 only).
 * A negated class escape inside brackets ([^\S] and the like) has no range form and is left to
 * PCRE2.
 *
 * Matching follows Oniguruma's find_iter: leftmost matches, scanned left to right without
 * overlap; an empty match right where the previous match ended is skipped by one character.
 * A compiled pattern is immutable and may be shared between threads; the match state lives in
 * a tok_match_scratch owned by the caller.
 */
#ifndef OPTIQ_TEXT_TOKENIZER_REGEX_H
#define OPTIQ_TEXT_TOKENIZER_REGEX_H

#include <stddef.h>

#include "base/error.h"

typedef struct tok_regex tok_regex;

typedef struct tok_span {
    size_t start, end; /* byte offsets, end exclusive */
} tok_span;

/* Per-thread match state (a PCRE2 match block), created on first use. */
typedef struct tok_match_scratch {
    void *md;
} tok_match_scratch;
void tok_match_scratch_free(tok_match_scratch *ms);

/* Compile a literal (is_regex 0) or an Oniguruma-syntax regex. label names the pattern's place
 * in tokenizer.json for messages. */
optiq_status tok_regex_new(const char *pattern, size_t len, int is_regex, const char *label, tok_regex **out,
                           optiq_error *err);
void tok_regex_free(tok_regex *re);

/* All matches in s[0..n) (valid UTF-8). *spans is a growable array the caller owns (realloc'd
 * as needed; *cap its capacity); *count receives the number of matches. */
optiq_status tok_regex_find_all(const tok_regex *re, const char *s, size_t n, tok_match_scratch *ms,
                                tok_span **spans, size_t *count, size_t *cap, optiq_error *err);

/* Translate an Oniguruma pattern to PCRE2 syntax (exposed for tests). Caller frees. NULL when
 * out of memory. */
char *tok_regex_translate(const char *pattern, size_t len, size_t *out_len);

#endif
