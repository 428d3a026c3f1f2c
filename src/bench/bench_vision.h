/*
 * bench_vision.h — image encoding speed for `optiq bench --synthetic NAME`
 * (see bench_vision.c).
 */
#ifndef OPTIQ_BENCH_BENCH_VISION_H
#define OPTIQ_BENCH_BENCH_VISION_H

#include <cjson/cJSON.h>

#include "base/error.h"
#include "base/threadpool.h"

/* Adds root.vision = {model, depth, hidden_size, ..., processed_width,
 * processed_height, patches, soft_tokens, runs: [{threads,
 * preprocess_seconds, tower_seconds, total_seconds, finite}]} when the
 * synthetic model has a vision shape (qwen3_5-0.8b, gemma4-e2b, and
 * gemma4-tiny for the tests); nothing otherwise. threads: the counts to run,
 * none above the pool's size. */
optiq_status bench_vision(thread_pool *pool, const char *model, const int *threads, int n_threads, cJSON *root,
                          optiq_error *err);

#endif
