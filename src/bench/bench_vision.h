/*
 * bench_vision.h — image encoding speed for `optiq bench --synthetic NAME`
 * (see bench_vision.c).
 */
#ifndef OPTIQ_BENCH_BENCH_VISION_H
#define OPTIQ_BENCH_BENCH_VISION_H

#include <cjson/cJSON.h>

#include "base/error.h"
#include "base/threadpool.h"

/* Adds root.vision = {model, depth, hidden_size, ..., patches, soft_tokens,
 * runs: [{threads, preprocess_seconds, tower_seconds, total_seconds, finite}]}
 * when the synthetic model has a vision shape; nothing otherwise. */
optiq_status bench_vision(thread_pool *pool, const char *model, const int *threads, int n_threads, cJSON *root,
                          optiq_error *err);

#endif
