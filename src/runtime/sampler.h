/*
 * sampler.h — choosing the next token from a row of logits.
 *
 * Semantics are mlx-lm's (sample_utils.py: make_logits_processors, then
 * make_sampler), applied in this order:
 *   1. logits processors over the last `penalty_context` tokens of the
 *      history (prompt included): repetition penalty (logit / p when the
 *      logit is positive, logit * p otherwise, once per distinct token),
 *      presence penalty (minus p once per distinct token), frequency penalty
 *      (minus p per occurrence);
 *   2. log-probabilities: logits - logsumexp(logits);
 *   3. temperature 0: argmax (the first index among equal maxima);
 *   4. otherwise the filters top_p, min_p, top_k, in that order (each one on
 *      at the values of optiq_sampling's comments: top_p in (0, 1), min_p > 0,
 *      top_k in (0, V)) set the log-probabilities of excluded tokens to -inf,
 *      and a token is drawn from softmax(logprobs * (1 / temp)). The filters
 *      see the untempered log-probabilities. top_p keeps the token whose
 *      cumulative mass crosses top_p and every token tied with it; top_k
 *      keeps exactly k (the lowest ids among ties at the k-th value, where
 *      mlx's choice is unspecified); min_p keeps logprob >= max + log(min_p).
 * Defined where mlx-lm is not: a NaN logit counts as -inf and is never
 * chosen; a row with no usable logit gives token 0; a +inf logit wins
 * (the first one); a negative or NaN temperature means greedy; min_p above 1
 * counts as 1; a negative repetition penalty, and any non-finite penalty,
 * is off; penalty_context <= 0 means 20.
 * The random stream is the sampler's own (xoshiro256** seeded from `seed`
 * through splitmix64), so a seed reproduces a run of optiq, not of mlx.
 *
 * Cost: O(V) per call, no sort (radix selection). No allocation per call:
 * scratch sized to the vocabulary (about 13 bytes a token, plus 768 KiB
 * from 16384 tokens up) is allocated once in sampler_new. Not thread-safe:
 * one sampler per session.
 */
#ifndef OPTIQ_RUNTIME_SAMPLER_H
#define OPTIQ_RUNTIME_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "optiq.h"

typedef struct sampler sampler;

/* NULL when out of memory or vocab_size is not in [1, INT32_MAX]. The
 * parameters are copied (NULL: optiq_sampling_default()). */
sampler *sampler_new(const optiq_sampling *params, int64_t vocab_size);
void sampler_free(sampler *s);
/* Restart the random stream from the parameters' seed. */
void sampler_reset(sampler *s);

/* Pick a token. logits (vocab_size) is used as scratch and modified;
 * history (n_history ids, oldest first, may be NULL when 0) feeds the
 * penalties: like mlx-lm's generate_step, pass every token so far, prompt
 * included (only the last penalty_context count); ids outside the
 * vocabulary are ignored. Returns the token id, in [0, vocab_size). */
int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, size_t n_history);

#endif
