/* threadpool.c — see threadpool.h.
 *
 * Hand-off protocol: the caller publishes (fn, ctx, n_tasks, call_active) and
 * then bumps `gen` with release order; every started worker that sees the new
 * generation (acquire) takes tasks from `next` if its index is below
 * call_active, and then bumps `done`. The caller runs tasks too and returns
 * once `done` has reached the number of started workers. Because every worker
 * checks in on every call (even those sitting it out), no worker can still be
 * reading the published fields when the next call overwrites them.
 *
 * Spinning is bounded and interleaved with sched_yield(), so a pool larger
 * than the cores it runs on degrades to slow, not to stalled.
 */
#include "base/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "base/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum {
    SPIN_ROUNDS = 1 << 14, /* polls of `gen` before sleeping on the condvar */
    YIELD_EVERY = 256      /* pauses between sched_yield() calls while polling */
};

typedef struct worker {
    thread_pool *pool;
    int id;
    pthread_t tid;
} worker;

struct thread_pool {
    int n_max;       /* threads including the caller */
    int n_active;    /* threads used by pool_run */
    worker *workers; /* [n_max - 1] */
    int n_started;

    pthread_mutex_t run_lock; /* serializes callers */
    pthread_mutex_t lock;     /* guards sleeping */
    pthread_cond_t wake;

    /* published per call */
    pool_task_fn fn;
    void *ctx;
    int64_t n_tasks;
    int call_active;
    _Atomic int64_t next;
    _Atomic int done;
    _Atomic unsigned gen;
    _Atomic int stop;
};

static _Thread_local int tl_in_task;   /* inside a task of some pool */
static _Thread_local int tl_thread_id; /* its thread index there */

static void run_tasks(thread_pool *p, int thread) {
    pool_task_fn fn = p->fn;
    void *ctx = p->ctx;
    int64_t n = p->n_tasks;
    tl_in_task = 1;
    tl_thread_id = thread;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= n) break;
        fn(ctx, t, thread);
    }
    tl_in_task = 0;
}

static void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    thread_pool *p = w->pool;
    unsigned seen = 0; /* gen at creation: a worker that starts late still sees the first call */
    for (;;) {
        unsigned g = seen;
        for (int i = 1; i <= SPIN_ROUNDS; i++) {
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
            if (g != seen) break;
            if (i % YIELD_EVERY == 0)
                sched_yield();
            else
                CPU_RELAX();
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        if (w->id < p->call_active) run_tasks(p, w->id);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

thread_pool *pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = cpu_physical_cores();
    if (n_threads < 1) n_threads = 1;
    thread_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_max = n_threads;
    p->n_active = n_threads;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            pool_free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            worker *w = &p->workers[i];
            w->pool = p;
            w->id = i + 1;
            if (pthread_create(&w->tid, NULL, worker_main, w) != 0) break;
            p->n_started++;
        }
        if (p->n_started == 0) {
            pool_free(p);
            return NULL;
        }
        p->n_max = p->n_active = p->n_started + 1;
    }
    return p;
}

void pool_free(thread_pool *p) {
    if (!p) return;
    if (p->n_started > 0) {
        pthread_mutex_lock(&p->lock);
        atomic_store_explicit(&p->stop, 1, memory_order_release);
        atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].tid, NULL);
    }
    free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p);
}

int pool_threads(const thread_pool *p) { return p ? p->n_active : 1; }
int pool_max_threads(const thread_pool *p) { return p ? p->n_max : 1; }

int pool_set_threads(thread_pool *p, int n) {
    if (!p) return 1;
    if (n < 1) n = 1;
    if (n > p->n_max) n = p->n_max;
    p->n_active = n;
    return n;
}

void pool_run(thread_pool *p, int64_t n_tasks, pool_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n_active == 1 || n_tasks == 1 || tl_in_task) {
        int thread = tl_in_task ? tl_thread_id : 0;
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, thread);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    int active = p->n_active;
    if ((int64_t)active > n_tasks) active = (int)n_tasks;
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    p->call_active = active;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    /* Bump the generation under the lock so a worker between its last check
     * and pthread_cond_wait cannot miss the wake-up. */
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p, 0);

    int want = p->n_started;
    for (unsigned i = 1; atomic_load_explicit(&p->done, memory_order_acquire) < want; i++) {
        if (i % YIELD_EVERY == 0)
            sched_yield();
        else
            CPU_RELAX();
    }
    pthread_mutex_unlock(&p->run_lock);
}
