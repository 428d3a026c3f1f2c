/* test_threadpool.c — the worker pool: every task exactly once, inline modes,
 * nesting, thread limits, concurrent callers, and cpu level overrides. */
#include "base/cpu.h"
#include "base/threadpool.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>

enum { MAXT = 4096 };

typedef struct {
    _Atomic int hits[MAXT];
    _Atomic int max_thread;
    _Atomic int threads_seen[64];
} count_ctx;

static void count_task(void *vctx, int64_t t, int thread) {
    count_ctx *c = vctx;
    atomic_fetch_add(&c->hits[t], 1);
    if (thread >= 0 && thread < 64) atomic_store(&c->threads_seen[thread], 1);
    int m = atomic_load(&c->max_thread);
    while (thread > m && !atomic_compare_exchange_weak(&c->max_thread, &m, thread)) {}
}

/* Long enough (tens of microseconds) that sleeping workers wake up in time. */
static void slow_task(void *vctx, int64_t t, int thread) {
    volatile double x = 0;
    for (int i = 0; i < 20000; i++) x += i;
    count_task(vctx, t, thread);
}

static int all_once(count_ctx *c, int64_t n) {
    for (int64_t i = 0; i < MAXT; i++)
        if (atomic_load(&c->hits[i]) != (i < n ? 1 : 0)) return 0;
    return 1;
}

static void reset(count_ctx *c) {
    for (int i = 0; i < MAXT; i++) atomic_store(&c->hits[i], 0);
    for (int i = 0; i < 64; i++) atomic_store(&c->threads_seen[i], 0);
    atomic_store(&c->max_thread, -1);
}

typedef struct {
    thread_pool *pool;
    count_ctx inner[8];
    _Atomic int bad_thread;
} nest_ctx;

static void nest_task(void *vctx, int64_t t, int thread) {
    nest_ctx *n = vctx;
    count_ctx *c = &n->inner[t];
    pool_run(n->pool, 100, count_task, c); /* must run inline on this thread */
    if (atomic_load(&c->max_thread) != thread) atomic_store(&n->bad_thread, 1);
}

static void sum_task(void *vctx, int64_t t, int thread) {
    (void)thread;
    _Atomic int64_t *s = vctx;
    atomic_fetch_add(s, t);
}

typedef struct {
    thread_pool *pool;
    int64_t total;
} caller_arg;

static void *caller_main(void *arg) {
    caller_arg *a = arg;
    for (int rep = 0; rep < 500; rep++) {
        _Atomic int64_t s = 0;
        pool_run(a->pool, 64, sum_task, &s);
        a->total += atomic_load(&s);
    }
    return NULL;
}

static count_ctx g_c;
static nest_ctx g_n;

int main(void) {
    count_ctx *c = &g_c;
    for (TEST_CASE("NULL pool runs inline as thread 0")) {
        reset(c);
        pool_run(NULL, 37, count_task, c);
        CHECK(all_once(c, 37));
        CHECK(atomic_load(&c->max_thread) == 0);
        CHECK(pool_threads(NULL) == 1);
    }
    for (TEST_CASE("pool of one thread runs inline")) {
        thread_pool *p = pool_create(1);
        CHECK(p != NULL);
        reset(c);
        pool_run(p, 1000, count_task, c);
        CHECK(all_once(c, 1000));
        CHECK(atomic_load(&c->max_thread) == 0);
        pool_free(p);
    }
    thread_pool *pool = pool_create(4);
    for (TEST_CASE("pool_create(4): four threads")) {
        CHECK(pool != NULL);
        CHECK(pool_threads(pool) == 4);
        CHECK(pool_max_threads(pool) == 4);
    }
    for (TEST_CASE("every task exactly once, n_tasks 0..MAXT")) {
        static const int64_t ns[] = {0, 1, 2, 3, 4, 5, 7, 64, 1000, MAXT};
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            reset(c);
            pool_run(pool, ns[i], count_task, c);
            CHECKF(all_once(c, ns[i]), "n_tasks=%lld", (long long)ns[i]);
            CHECKF(atomic_load(&c->max_thread) < 4, "thread index %d", atomic_load(&c->max_thread));
        }
    }
    for (TEST_CASE("20000 back-to-back small calls")) {
        int ok = 1;
        for (int rep = 0; rep < 20000 && ok; rep++) {
            _Atomic int64_t s = 0;
            int64_t n = 1 + rep % 9;
            pool_run(pool, n, sum_task, &s);
            if (atomic_load(&s) != n * (n - 1) / 2) ok = 0;
        }
        CHECK(ok);
    }
    for (TEST_CASE("workers take tasks (not all on the caller)")) {
        /* With slow tasks, at least one worker must get some of them. */
        int seen_worker = 0;
        for (int rep = 0; rep < 50 && !seen_worker; rep++) {
            reset(c);
            pool_run(pool, 256, slow_task, c);
            CHECK(all_once(c, 256));
            for (int t = 1; t < 4; t++) seen_worker |= atomic_load(&c->threads_seen[t]);
        }
        CHECK(seen_worker);
    }
    for (TEST_CASE("pool_set_threads limits thread indices")) {
        CHECK(pool_set_threads(pool, 2) == 2);
        CHECK(pool_threads(pool) == 2);
        for (int rep = 0; rep < 200; rep++) {
            reset(c);
            pool_run(pool, 300, count_task, c);
            CHECK(all_once(c, 300));
            CHECKF(atomic_load(&c->max_thread) < 2, "thread %d used with 2 active", atomic_load(&c->max_thread));
        }
        CHECK(pool_set_threads(pool, 1) == 1);
        reset(c);
        pool_run(pool, 50, count_task, c);
        CHECK(all_once(c, 50) && atomic_load(&c->max_thread) == 0);
        CHECK(pool_set_threads(pool, 99) == 4);
        CHECK(pool_set_threads(pool, 0) == 1);
        pool_set_threads(pool, 4);
    }
    for (TEST_CASE("nested pool_run runs inline on the calling thread")) {
        nest_ctx *n = &g_n;
        n->pool = pool;
        atomic_store(&n->bad_thread, 0);
        for (int i = 0; i < 8; i++) reset(&n->inner[i]);
        pool_run(pool, 8, nest_task, n);
        int ok = 1;
        for (int i = 0; i < 8; i++) ok &= all_once(&n->inner[i], 100);
        CHECK(ok);
        CHECK(atomic_load(&n->bad_thread) == 0);
    }
    for (TEST_CASE("concurrent callers are serialized")) {
        pthread_t th[3];
        caller_arg args[3];
        for (int i = 0; i < 3; i++) {
            args[i] = (caller_arg){pool, 0};
            pthread_create(&th[i], NULL, caller_main, &args[i]);
        }
        for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 3; i++)
            CHECKF(args[i].total == 500 * (64 * 63 / 2), "caller %d total %lld", i, (long long)args[i].total);
    }
    pool_free(pool);
    for (TEST_CASE("default pool size = physical cores")) {
        thread_pool *p = pool_create(0);
        CHECK(p != NULL);
        CHECK(pool_threads(p) == cpu_physical_cores());
        CHECK(cpu_physical_cores() >= 1);
        reset(c);
        pool_run(p, 33, count_task, c);
        CHECK(all_once(c, 33));
        pool_free(p);
    }
    for (TEST_CASE("cpu level override only lowers")) {
        cpu_level det = cpu_detected_level();
        CHECK(cpu_force_level(CPU_PORTABLE) == CPU_PORTABLE);
        CHECK(cpu_level_current() == CPU_PORTABLE);
        CHECK(cpu_force_level(CPU_AVX512) <= det);
        CHECK(cpu_force_level(CPU_LEVEL_COUNT) <= det);
        CHECK(cpu_level_from_name("avx2") == CPU_AVX2);
        CHECK(cpu_level_from_name("sse9") == -1);
        const char *env = getenv("OPTIQ_CPU");
        CHECK(cpu_env_override_ok() == (env == NULL || !*env || cpu_level_from_name(env) >= 0));
        const cpu_features *f = cpu_get_features();
        if (det >= CPU_AVX2) CHECK(f->avx2 && f->fma && f->f16c);
        if (det >= CPU_AVX512) CHECK(f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq);
        printf("     detected level: %s (vnni %d, bf16 %d), physical cores %d\n", cpu_level_name(det), f->avx512vnni,
               f->avx512bf16, cpu_physical_cores());
    }
    return test_finish();
}
