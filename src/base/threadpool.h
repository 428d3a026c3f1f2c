/*
 * threadpool.h — the one persistent worker pool that ops split their work over.
 *
 * pool_run(pool, n_tasks, fn, ctx) calls fn(ctx, t, thread) once for every task
 * t in [0, n_tasks) and returns when all have finished. Tasks are handed out
 * dynamically (an atomic counter), so uneven tasks balance themselves; the
 * calling thread works too (it is thread 0, workers are 1..n-1), so a pool of
 * one thread runs everything inline. `thread` is stable for the duration of the
 * call and < pool_threads(pool), for indexing per-thread scratch.
 *
 * Invariants:
 *   - no allocation and no thread creation per call;
 *   - pool == NULL runs the tasks inline, in order, as thread 0;
 *   - a pool_run issued from inside a task runs inline on that thread (no nested
 *     parallel regions); pool_run calls from different outside threads are
 *     serialized;
 *   - idle workers spin briefly (calls in a decode loop come back to back) and
 *     then sleep on a condition variable.
 */
#ifndef OPTIQ_BASE_THREADPOOL_H
#define OPTIQ_BASE_THREADPOOL_H

#include <stdint.h>

typedef struct thread_pool thread_pool;

typedef void (*pool_task_fn)(void *ctx, int64_t task, int thread);

/* A pool of n_threads threads including the caller (n_threads - 1 workers are
 * started); n_threads <= 0 means cpu_physical_cores(). NULL when out of memory
 * or when no thread could be created. */
thread_pool *pool_create(int n_threads);
void pool_free(thread_pool *pool);

/* Threads that take part in pool_run (1 for a NULL pool). */
int pool_threads(const thread_pool *pool);
/* Threads the pool was created with. */
int pool_max_threads(const thread_pool *pool);
/* Use only the first n threads (1 <= n <= pool_max_threads) for later calls;
 * returns the count now in force. Must not be called while pool_run runs. */
int pool_set_threads(thread_pool *pool, int n);

void pool_run(thread_pool *pool, int64_t n_tasks, pool_task_fn fn, void *ctx);

#endif
