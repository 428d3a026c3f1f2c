/*
 * grammar.h — constrained decoding: a JSON schema (or a tool-call syntax
 * around one) compiled into a byte-level pushdown automaton, and the token
 * mask it gives over a vocabulary.
 *
 * A grammar is a sequence of elements: literal bytes, JSON values that match
 * a schema, and choices between (literal, schema) pairs (the tool of a
 * forced tool call). It is compiled once per request and never written to
 * afterwards; the position inside it is a grammar_state, a small value that
 * is copied freely (a stack of at most GRAMMAR_MAX_DEPTH frames).
 *
 * Dialects of the JSON values:
 *   GRAMMAR_JSON      RFC 8259 JSON: "strings" with the escapes \" \\ \/ \b
 *                     \f \n \r \t (no \u), objects with "quoted" keys;
 *   GRAMMAR_GEMMA     Gemma-4's tool-call arguments: strings delimited by the
 *                     <|"|> token text (no escapes, no '<' inside), bare keys,
 *                     no whitespace;
 *   GRAMMAR_QWEN_XML  Qwen3.5's tool-call arguments: the top object is a run of
 *                     <parameter=KEY>\nVALUE\n</parameter>\n blocks closed by
 *                     </function>\n</tool_call>; a string value is raw text
 *                     (no '<', no line breaks), any other value is JSON.
 *
 * Supported schema keywords: type (one or a list), properties, required,
 * additionalProperties (false, or absent / true / a schema for an object
 * without properties, which then takes any keys), items, minItems, maxItems,
 * minLength, maxLength, enum, const, anyOf; title, description, default,
 * examples, format, strict and $schema are ignored. Anything else that
 * constrains a value (pattern, minimum, maximum, multipleOf, $ref, allOf,
 * oneOf, not, ...) is refused with a message naming it, rather than
 * producing documents a validator would reject.
 *
 * Choices this grammar makes, so that every finished document is valid and
 * even a random-weight model finishes one (docs/structured-output.md):
 *   - properties come in the order of the schema (optional ones may be left
 *     out); no other keys (strict mode: additionalProperties false);
 *   - at most GRAMMAR_WS bytes of whitespace (space, \n, \t) between tokens
 *     of the document, none before it or after it;
 *   - strings at most GRAMMAR_STRING_MAX characters unless maxLength says
 *     otherwise, valid UTF-8; numbers at most 7 integer and 6 fraction
 *     digits, no exponent; arrays at most GRAMMAR_ITEMS_MAX items unless
 *     maxItems (or a larger minItems) says otherwise;
 *   - an object that allows any key takes at most 6 keys of at most 16
 *     characters, and values nested at most 3 levels deep;
 *   - anyOf commits to the first alternative that accepts the first byte of
 *     the value (sound: the document still matches that alternative).
 *
 * Token masks: grammar_vocab holds the bytes of every token of a tokenizer
 * (byte-level BPE: through the GPT-2 byte mapping; SentencePiece: '▁' is a
 * space and <0xNN> the byte NN; added tokens: their content) in a trie, built
 * once per engine. grammar_mask walks the trie depth first, carrying a copy
 * of the state per level and pruning every branch whose bytes the automaton
 * rejects. Added and special tokens are allowed only where their bytes are
 * accepted and do not end inside a string's text (so <|im_end|> is never
 * part of a string, while Gemma's <|"|> can close one); end-of-sequence
 * tokens are allowed exactly when the document is complete, and then nothing
 * else is.
 */
#ifndef OPTIQ_TEXT_GRAMMAR_H
#define OPTIQ_TEXT_GRAMMAR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "optiq.h"

#define GRAMMAR_MAX_DEPTH 32  /* nesting of values the automaton follows */
#define GRAMMAR_WS 3          /* whitespace bytes allowed between two tokens of a document */
#define GRAMMAR_STRING_MAX 32 /* characters of a string without maxLength */
#define GRAMMAR_ITEMS_MAX 6   /* items of an array without maxItems */

typedef enum grammar_dialect { GRAMMAR_JSON = 0, GRAMMAR_GEMMA = 1, GRAMMAR_QWEN_XML = 2 } grammar_dialect;

typedef struct grammar grammar;

typedef struct grammar_frame {
    uint32_t node;  /* index of the grammar node */
    uint8_t mode;   /* where inside the node */
    uint8_t ws;     /* whitespace bytes in the current gap */
    uint16_t pos;   /* byte offset in a literal, digits, pending UTF-8 bytes, ... */
    uint32_t count; /* items / characters / next property / chosen alternative */
    uint64_t mask;  /* candidate literals still matching */
} grammar_frame;

typedef struct grammar_state {
    uint32_t depth;
    grammar_frame f[GRAMMAR_MAX_DEPTH];
} grammar_state;

grammar *grammar_new(void);
void grammar_free(grammar *g);

/* Append literal bytes. */
optiq_status grammar_add_literal(grammar *g, const char *s, size_t n, optiq_error *err);
/* Append a value matching schema (a cJSON object or boolean; NULL: any JSON
 * object, as response_format json_object asks). */
optiq_status grammar_add_schema(grammar *g, const cJSON *schema, grammar_dialect d, optiq_error *err);
/* Append a choice: one of n literals, each followed by a value of its schema
 * (NULL: nothing follows). The literals must be prefix-free; at most 63. */
optiq_status grammar_add_choice(grammar *g, const char *const *lits, const cJSON *const *schemas, size_t n,
                                grammar_dialect d, optiq_error *err);

/* The state before the first byte. */
void grammar_start(const grammar *g, grammar_state *st);
/* Feed bytes; 1 when all were accepted (st advanced), 0 otherwise (st is then
 * unspecified: feed a copy when the answer matters). */
int grammar_feed(const grammar *g, grammar_state *st, const uint8_t *bytes, size_t n);
/* 1 when the bytes fed so far form a complete document. */
int grammar_complete(const grammar *g, const grammar_state *st);

/* ---- token masks ---- */

typedef struct grammar_vocab grammar_vocab;

/* The token trie of a tokenizer, for ids 0..vocab_size-1 (ids with no
 * token are never allowed); eos: the ids that end generation. NULL when out
 * of memory. */
grammar_vocab *grammar_vocab_new(const optiq_tokenizer *tok, int64_t vocab_size, const int32_t *eos, size_t n_eos);
void grammar_vocab_free(grammar_vocab *v);
/* Bytes of a token (what the grammar sees of it); NULL when it has none. */
const uint8_t *grammar_vocab_bytes(const grammar_vocab *v, int32_t id, size_t *len);

/* allowed (vocab_size bytes) receives 1 for every token that may come next,
 * 0 otherwise. Returns how many are allowed (0: a dead end, which a grammar
 * built by this module never reaches). Not thread-safe per vocab (scratch). */
int64_t grammar_allowed(const grammar *g, const grammar_state *st, grammar_vocab *v, uint8_t *allowed);
/* Set the logits of the tokens that may not come next to -inf; returns the
 * number allowed. */
int64_t grammar_mask_logits(const grammar *g, const grammar_state *st, grammar_vocab *v, float *logits);
/* Advance st by a sampled token; 1 when it was allowed (an end-of-sequence
 * id is allowed when the document is complete, and leaves st unchanged). */
int grammar_accept(const grammar *g, grammar_state *st, const grammar_vocab *v, int32_t id);

#endif
