/*
 * membw.h — this machine's memory read bandwidth, the yardstick for kernels
 * that stream weights (decode reads every weight byte once per token).
 */
#ifndef OPTIQ_BENCH_MEMBW_H
#define OPTIQ_BENCH_MEMBW_H

#include <stddef.h>

#include "base/threadpool.h"

/* Read a buffer of `bytes` (choose it far larger than the last-level cache)
 * with the pool's current thread count, each thread one contiguous slice, and
 * return the best of `repeats` passes in GB/s (1e9 bytes per second).
 * Returns a negative value when the buffer cannot be allocated. */
double mem_read_bandwidth_gbs(thread_pool *pool, size_t bytes, int repeats);

/* Sum of 64-bit words over [p, p + n_words): the read loop, vectorized where
 * the CPU allows (membw_avx2.c); the sum keeps the loads from being elided. */
unsigned long long membw_sum_portable(const unsigned long long *p, size_t n_words);
unsigned long long membw_sum_avx2(const unsigned long long *p, size_t n_words);

#endif
