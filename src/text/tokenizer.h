/*
 * tokenizer.h — Hugging Face tokenizer.json, encoded and decoded as the reference does.
 *
 * The reference is the `tokenizers` library (0.23): Tokenizer.from_file(path).encode(text,
 * add_special_tokens) and .decode(ids, skip_special_tokens). The pipeline, in its order:
 *
 *   text (bytes; ill-formed UTF-8 → U+FFFD per maximal subpart)
 *   → added tokens that are not "normalized" are cut out of the raw text (leftmost-longest,
 *     with their lstrip / rstrip / single_word flags; special ones only when special text is
 *     not to be treated as plain text)
 *   → each remaining piece is normalized (NFC/NFD/NFKC/NFKD via utf8proc, Replace, Prepend,
 *     Strip), then the "normalized" added tokens are cut out of it
 *   → pre-tokenizers split pieces further (Split with a literal or regex pattern and a
 *     delimiter behaviour, ByteLevel, Metaspace, Digits; Sequence of these)
 *   → the BPE model turns each piece into ids (tokenizer_bpe.h)
 *   → with add_special_tokens, the post-processor adds its ids (TemplateProcessing,
 *     RobertaProcessing, BertProcessing; ByteLevel adds none)
 *
 * Decoding maps ids to token strings (added tokens first), drops special ones on request,
 * then runs the decoder steps (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace,
 * Sequence) and joins the result; without a decoder the tokens are joined with spaces. The
 * streaming detokenizer produces the same text piece by piece (tokenizer_decode.c).
 *
 * Offsets, truncation and padding (training-time features of tokenizer.json) are not
 * implemented: a tokenizer.json's "truncation" and "padding" are ignored.
 *
 * Public entry points are in optiq.h ("tokenizer" section); this header adds what other
 * modules of the library use.
 */
#ifndef OPTIQ_TEXT_TOKENIZER_H
#define OPTIQ_TEXT_TOKENIZER_H

#include <cjson/cJSON.h>

#include "optiq.h"

/* Build a tokenizer from a parsed tokenizer.json; the optional config trees (NULL when the
 * folder lacks them) supply BOS/EOS. label names the tokenizer.json in messages. */
optiq_status tokenizer_from_json(const cJSON *tokenizer_json, const char *label, const cJSON *tokenizer_config,
                                 const cJSON *special_tokens_map, const cJSON *generation_config, optiq_tokenizer **out,
                                 optiq_error *err);

/* Encoding speed: encodes text repeatedly for at least min_seconds on the calling thread and
 * returns megabytes (1e6 bytes) of input per second; a negative value when encoding fails. */
double tokenizer_bench_mbps(const optiq_tokenizer *t, const char *text, size_t len, unsigned flags,
                            double min_seconds);

#endif
