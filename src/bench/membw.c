/* membw.c — see membw.h. */
#include "bench/membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cpu.h"

unsigned long long membw_sum_portable(const unsigned long long *p, size_t n_words) {
    unsigned long long a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n_words; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
    for (; i < n_words; i++) a += p[i];
    return a + b + c + d;
}

typedef struct membw_job {
    const unsigned long long *buf;
    size_t words_per_task;
    int use_avx2;
    volatile unsigned long long sink[64];
} membw_job;

static void read_slice(void *ctx, int64_t task, int thread) {
    membw_job *j = ctx;
    const unsigned long long *p = j->buf + (size_t)task * j->words_per_task;
    unsigned long long s = j->use_avx2 ? membw_sum_avx2(p, j->words_per_task) : membw_sum_portable(p, j->words_per_task);
    j->sink[thread & 63] += s;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double mem_read_bandwidth_gbs(thread_pool *pool, size_t bytes, int repeats) {
    int n = pool_threads(pool);
    size_t words_per_task = bytes / 8 / (size_t)n;
    words_per_task -= words_per_task % 16;
    if (words_per_task == 0) return -1.0;
    unsigned long long *buf = aligned_alloc(64, words_per_task * (size_t)n * 8);
    if (!buf) return -1.0;
    /* touch every page so the pass measures reads, not page faults */
    for (size_t i = 0; i < words_per_task * (size_t)n; i++) buf[i] = i;
    membw_job job = {.buf = buf, .words_per_task = words_per_task, .use_avx2 = cpu_level_current() >= CPU_AVX2};
    double best = 0.0;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        pool_run(pool, n, read_slice, &job);
        double dt = now_s() - t0;
        double gbs = (double)(words_per_task * (size_t)n * 8) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}
