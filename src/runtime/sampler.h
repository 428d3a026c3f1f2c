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
 *   4. otherwise the filters top_p, min_p, top_k (each one on at the values
 *      of optiq_sampling's comments) set the log-probabilities of excluded
 *      tokens to -inf, and a token is drawn from softmax(logprobs / temp).
 * The random stream is the sampler's own (seeded, splitmix/xoshiro), so a
 * seed reproduces a run of optiq, not of mlx.
 *
 * No allocation per call: scratch sized to the vocabulary is allocated once.
 */
#ifndef OPTIQ_RUNTIME_SAMPLER_H
#define OPTIQ_RUNTIME_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "optiq.h"

typedef struct sampler sampler;

/* NULL when out of memory. The parameters are copied. */
sampler *sampler_new(const optiq_sampling *params, int64_t vocab_size);
void sampler_free(sampler *s);
/* Restart the random stream from the parameters' seed. */
void sampler_reset(sampler *s);

/* Pick a token. logits (vocab_size) is used as scratch and modified;
 * history (n_history ids, oldest first, may be NULL when 0) feeds the
 * penalties. Returns the token id. */
int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, size_t n_history);

#endif
