/* matmul.c — unquantized matmul driver and the portable kernel; see matmul.h. */
#include "kernels/matmul.h"

#include <string.h>

/* ---- portable kernel --------------------------------------------------------- */

void mm_tile_portable(const mm_tile *t) {
    for (int j = 0; j < t->nr; j++) {
        const uint8_t *w = t->w + j * t->ldw_bytes;
        for (int i = 0; i < t->mr; i++) {
            const float *x = t->x[i];
            float acc = 0.0f;
            for (int64_t k = 0; k < t->k; k++) acc += x[k] * load_as_f32(w, t->w_dt, (size_t)k);
            t->y[i][j] = acc;
        }
    }
}

/* ---- driver -------------------------------------------------------------------- */

typedef void (*tile_fn)(const mm_tile *t);

typedef struct mm_job {
    tile_fn fn;
    const float *x;
    int64_t m, k, n, ldx, ldy;
    const uint8_t *w;
    int64_t ldw_bytes;
    dtype w_dt;
    float *y;
    int64_t rows_per_task;
} mm_job;

static void mm_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    const mm_job *j = vctx;
    int64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->n ? r0 + j->rows_per_task : j->n;
    mm_tile t;
    t.k = j->k;
    t.ldw_bytes = j->ldw_bytes;
    t.w_dt = j->w_dt;
    for (int64_t i0 = 0; i0 < j->m; i0 += 4) {
        t.mr = (int)(j->m - i0 < 4 ? j->m - i0 : 4);
        for (int64_t r = r0; r < r1; r += 4) {
            t.nr = (int)(r1 - r < 4 ? r1 - r : 4);
            t.w = j->w + r * j->ldw_bytes;
            for (int i = 0; i < t.mr; i++) {
                t.x[i] = j->x + (i0 + i) * j->ldx;
                t.y[i] = j->y + (i0 + i) * j->ldy + r;
            }
            j->fn(&t);
        }
    }
}

optiq_status matmul(thread_pool *pool, const float *x, int64_t m, int64_t k, const void *w, dtype w_dt, int64_t n,
                    float *y, const mm_opts *opts, optiq_error *err) {
    if (w_dt != DT_F32 && w_dt != DT_BF16 && w_dt != DT_F16)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "matmul: weight dtype %s (expected F32, BF16 or F16)",
                       dtype_name(w_dt));
    if (m < 0 || k < 0 || n < 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "matmul: negative size (%lld, %lld, %lld)", (long long)m,
                       (long long)k, (long long)n);
    int64_t ldx = opts && opts->ldx ? opts->ldx : k, ldy = opts && opts->ldy ? opts->ldy : n;
    if (ldx < k || ldy < n)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "matmul: row strides %lld/%lld below %lld/%lld", (long long)ldx,
                       (long long)ldy, (long long)k, (long long)n);
    if (m == 0 || n == 0) return OPTIQ_OK;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++) memset(y + i * ldy, 0, (size_t)n * sizeof(float));
        return OPTIQ_OK;
    }
    if (!x || !w || !y) return err_set(err, OPTIQ_ERR_INVALID_ARG, "matmul: NULL buffer");
    int level = (int)cpu_level_current();
    if (opts && opts->level >= 0 && opts->level < level) level = opts->level;
    static const tile_fn FNS[CPU_LEVEL_COUNT] = {mm_tile_portable, mm_tile_avx2, mm_tile_avx512};
    mm_job j = {FNS[level], x, m, k, n, ldx, ldy, w, k * (int64_t)dtype_size(w_dt), w_dt, y, 0};
    /* tiles of weight rows: ~4 per thread, multiples of 4, at most ~256 KB of weights
     * when there are many activation rows to sweep over them */
    int64_t tasks = 4 * (int64_t)pool_threads(pool);
    int64_t rows = (n + tasks - 1) / tasks;
    if (m > 4) {
        int64_t cap = (int64_t)(256 << 10) / (j.ldw_bytes ? j.ldw_bytes : 1);
        if (cap < 4) cap = 4;
        if (rows > cap) rows = cap;
    }
    rows = (rows + 3) & ~(int64_t)3;
    j.rows_per_task = rows;
    pool_run(pool, (n + rows - 1) / rows, mm_task, &j);
    return OPTIQ_OK;
}
