/*
 * bench_serving.h — `optiq bench --synthetic NAME --serving` (bench_serving.c):
 * batched decode of several sequences against one, and time to first token
 * of a conversation's second turn with the prefix cache against the first.
 */
#ifndef OPTIQ_BENCH_BENCH_SERVING_H
#define OPTIQ_BENCH_BENCH_SERVING_H

#include <cjson/cJSON.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "optiq.h"

/* Build p->synthetic, load it, run both measurements with `threads`
 * threads (the pool must hold them): p->sequences (0: 8) sequences,
 * p->decode_tokens (0: 32) steps, a first turn of p->prefill_tokens (0:
 * 2000) tokens. Adds the "serving" object (keys in docs/cli.md) to root.
 * Fails with OPTIQ_ERR_FORMAT when the resumed turn's logits differ from a
 * fresh run's. */
optiq_status bench_serving(thread_pool *pool, const optiq_bench_params *p, int threads, cJSON *root, optiq_error *err);

#endif
