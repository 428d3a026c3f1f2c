/* qmatmul.c — the quantized matmul driver: validation, activation preparation,
 * tiling over the pool; the kernels are in qkern_*.c. See qmatmul.h. */
#include "quant/qmatmul.h"

#include <stdlib.h>
#include <string.h>

#include "quant/qkern.h"

/* ---- per-thread scratch --------------------------------------------------- */

static _Thread_local struct {
    uint8_t *p;
    size_t cap;
} tl_scratch;

static void *scratch_get(size_t bytes) {
    if (bytes > tl_scratch.cap) {
        size_t cap = tl_scratch.cap ? tl_scratch.cap : 4096;
        while (cap < bytes) cap *= 2;
        void *p = aligned_alloc(64, cap);
        if (!p) return NULL;
        free(tl_scratch.p);
        tl_scratch.p = p;
        tl_scratch.cap = cap;
    }
    return tl_scratch.p;
}

void qmatmul_release_scratch(void) {
    free(tl_scratch.p);
    tl_scratch.p = NULL;
    tl_scratch.cap = 0;
}

/* ---- level selection ------------------------------------------------------ */

static cpu_level pick_level(const qtraits *t, const qmm_opts *o) {
    int l = (int)cpu_level_current();
    if (o && o->level >= 0 && o->level < l) l = o->level;
    while (l > 0 && !t->kern[l].mm) l--;
    return (cpu_level)l;
}

/* The int8-activation kernel of a level, if it is usable here. */
static int use_q8(const qkern_level *kl, cpu_level level, const qmm_opts *o) {
    if (!o || !o->q8 || !kl->mm_q8) return 0;
    return level != CPU_AVX512 || cpu_get_features()->avx512vnni;
}

int qmatmul_uses_q8(const qweight *w, const qmm_opts *opts) {
    const qtraits *t = qtraits_find(w->fmt);
    if (!t) return 0;
    cpu_level l = pick_level(t, opts);
    return use_q8(&t->kern[l], l, opts);
}

cpu_level qmatmul_level(const qweight *w, const qmm_opts *opts) {
    const qtraits *t = qtraits_find(w->fmt);
    return t ? pick_level(t, opts) : CPU_PORTABLE;
}

/* ---- the work split --------------------------------------------------------
 * A segment is a run of activation rows that use the same matrix (all of them
 * for qmatmul; one expert's rows for qmatmul_moe). A task is one tile of output
 * rows of one segment; it runs the segment's activation rows in blocks of
 * QMM_MB, so the tile's packed bytes (sized to stay in L2) are fetched from
 * memory once per task. */

typedef struct segment {
    int64_t mat;   /* matrix index */
    int64_t first; /* index into the row arrays */
    int64_t count; /* activation rows */
} segment;

typedef struct mm_ctx {
    const qweight *w;
    const qtraits *t;
    qmm_fn mm;
    const segment *seg;
    int64_t n_seg;
    int64_t tile;     /* weight rows per task */
    int64_t tiles;    /* tasks per segment */
    const float **xr; /* prepared activation rows, in segment order */
    const float **xs; /* group sums, in segment order (affine) */
    float **yr;       /* output rows, in segment order */
    size_t row_bytes, srow_bytes;
} mm_ctx;

static void mm_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    const mm_ctx *c = vctx;
    const segment *sg = &c->seg[task / c->tiles];
    int64_t r0 = (task % c->tiles) * c->tile;
    int64_t nr = c->w->rows - r0 < c->tile ? c->w->rows - r0 : c->tile;
    if (nr <= 0) return;
    const qweight *w = c->w;
    int64_t row = sg->mat * w->rows + r0;
    qmm_args a;
    a.t = c->t;
    a.w = (const uint8_t *)w->w + (size_t)row * c->row_bytes;
    a.w_stride = c->row_bytes;
    a.s = (const uint8_t *)w->scales + (size_t)row * c->srow_bytes;
    a.b = w->biases ? (const uint8_t *)w->biases + (size_t)row * c->srow_bytes : NULL;
    a.s_stride = c->srow_bytes;
    a.sdt = w->scale_dtype;
    a.n_rows = nr;
    a.K = w->cols;
    a.gs = w->fmt.group_size;
    for (int64_t i0 = 0; i0 < sg->count; i0 += QMM_MB) {
        int mb = (int)(sg->count - i0 < QMM_MB ? sg->count - i0 : QMM_MB);
        a.mb = mb;
        for (int i = 0; i < mb; i++) {
            int64_t k = sg->first + i0 + i;
            a.x[i] = c->xr[k];
            a.xsum[i] = c->xs ? c->xs[k] : NULL;
            a.y[i] = c->yr[k] + r0;
        }
        c->mm(&a);
    }
}

/* Rows per task: enough tasks to balance the threads, tiles small enough that
 * a block of activation rows finds the tile in L2, multiples of 8. */
static int64_t pick_tile(const qweight *w, int64_t m, int64_t n_seg, int threads, size_t row_bytes) {
    int64_t rows = w->rows;
    int64_t want_tasks = 4 * (int64_t)threads;
    int64_t per_seg = (want_tasks + n_seg - 1) / n_seg;
    int64_t tile = (rows + per_seg - 1) / per_seg;
    if (m > QMM_MB) {
        int64_t cap = (int64_t)((256u << 10) / (row_bytes ? row_bytes : 1));
        if (cap < 8) cap = 8;
        if (tile > cap) tile = cap;
    }
    tile = (tile + 7) & ~(int64_t)7;
    if (tile < 8) tile = 8;
    return tile;
}

/* SIMD kernels without a layout of their own still read a 64-byte aligned,
 * zero-padded copy of x: unaligned 64-byte loads split cache lines, which
 * costs up to 3x when several activation rows share a block. */
static void prep_copy(const float *x, int64_t K, float *xp) {
    memcpy(xp, x, (size_t)K * sizeof(float));
    memset(xp + K, 0, (size_t)(qkern_prep_len(K) - K) * sizeof(float));
}

static qprep_fn prep_of(const qkern_level *kl, cpu_level level) {
    return kl->prep ? kl->prep : level > CPU_PORTABLE ? prep_copy : NULL;
}

/* Scratch of run(): pointer arrays, then prepared rows, then group sums. */
static size_t run_scratch_bytes(const qweight *w, const qkern_level *kl, cpu_level level, int q8, int64_t m) {
    size_t ptr_bytes = ((size_t)m * 3 * sizeof(void *) + 63) & ~(size_t)63;
    size_t prep_bytes = (q8 || prep_of(kl, level)) ? (size_t)m * (size_t)qkern_prep_len(w->cols) * sizeof(float) : 0;
    size_t sum_bytes =
        w->fmt.mode == QMODE_AFFINE ? (((size_t)m * (size_t)qweight_groups(w) * sizeof(float) + 63) & ~(size_t)63) : 0;
    return ptr_bytes + prep_bytes + sum_bytes;
}

/* Shared by qmatmul_ex and qmatmul_moe: rows come grouped into segments
 * already; order[k] is the activation row of position k (NULL: k). scr holds
 * run_scratch_bytes(), 64-byte aligned. */
static void run(thread_pool *pool, const qweight *w, const qtraits *t, cpu_level level, int q8, const float *x,
                int64_t ldx, float *y, int64_t ldy, const segment *seg, int64_t n_seg, const int64_t *order, int64_t m,
                uint8_t *scr) {
    const qkern_level *kl = &t->kern[level];
    const qprep_fn prep_fn = q8 ? kl->prep_q8 : prep_of(kl, level);
    const int64_t K = w->cols, G = qweight_groups(w), plen = qkern_prep_len(K);
    const int affine = w->fmt.mode == QMODE_AFFINE;
    size_t ptr_bytes = ((size_t)m * 3 * sizeof(void *) + 63) & ~(size_t)63;
    size_t prep_bytes = prep_fn ? (size_t)m * (size_t)plen * sizeof(float) : 0;
    const float **xr = (const float **)scr;
    const float **xs = xr + m;
    float **yr = (float **)(xs + m);
    float *prep = (float *)(scr + ptr_bytes);
    float *sums = (float *)(scr + ptr_bytes + prep_bytes);

    for (int64_t k = 0; k < m; k++) {
        int64_t i = order ? order[k] : k;
        const float *xi = x + i * ldx;
        yr[k] = y + i * ldy;
        if (prep_fn) {
            prep_fn(xi, K, prep + k * plen);
            xr[k] = prep + k * plen;
        } else {
            xr[k] = xi;
        }
        if (affine) {
            float *s = sums + k * G;
            const int gs = w->fmt.group_size;
            for (int64_t g = 0; g < G; g++) {
                float acc = 0.0f;
                for (int j = 0; j < gs; j++) acc += xi[g * gs + j];
                s[g] = acc;
            }
            xs[k] = s;
        } else {
            xs[k] = NULL;
        }
    }

    mm_ctx c = {0};
    c.w = w;
    c.t = t;
    c.mm = q8 ? kl->mm_q8 : kl->mm;
    c.seg = seg;
    c.n_seg = n_seg;
    c.row_bytes = qweight_row_bytes(w);
    c.srow_bytes = qweight_scale_row_bytes(w);
    c.tile = pick_tile(w, m, n_seg, pool_threads(pool), c.row_bytes);
    c.tiles = (w->rows + c.tile - 1) / c.tile;
    c.xr = xr;
    c.xs = affine ? xs : NULL;
    c.yr = yr;
    pool_run(pool, n_seg * c.tiles, mm_task, &c);
}

static optiq_status check_common(const qweight *w, const float *x, int64_t m, const float *y, optiq_error *err) {
    optiq_status st = qweight_check(w, err);
    if (st != OPTIQ_OK) return st;
    if (m < 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized matmul: m = %lld", (long long)m);
    if (m > 0 && (!x || !y)) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized matmul: NULL x or y");
    return OPTIQ_OK;
}

optiq_status qmatmul_ex(thread_pool *pool, const qweight *w, const float *x, int64_t m, float *y, const qmm_opts *opts,
                        optiq_error *err) {
    optiq_status st = check_common(w, x, m, y, err);
    if (st != OPTIQ_OK) return st;
    int64_t mat = opts ? opts->mat : 0;
    if (mat < 0 || mat >= w->n_mats)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized matmul: matrix %lld outside [0, %lld)", (long long)mat,
                       (long long)w->n_mats);
    int64_t ldx = opts && opts->ldx ? opts->ldx : w->cols, ldy = opts && opts->ldy ? opts->ldy : w->rows;
    if (ldx < w->cols || ldy < w->rows)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized matmul: row strides %lld/%lld below %lld/%lld",
                       (long long)ldx, (long long)ldy, (long long)w->cols, (long long)w->rows);
    if (m == 0 || w->rows == 0) return OPTIQ_OK;
    const qtraits *t = qtraits_find(w->fmt);
    cpu_level level = pick_level(t, opts);
    int q8 = use_q8(&t->kern[level], level, opts);
    size_t need = run_scratch_bytes(w, &t->kern[level], level, q8, m);
    uint8_t *scr = scratch_get(need);
    if (!scr) return err_set(err, OPTIQ_ERR_NOMEM, "quantized matmul: no memory for %zu bytes of scratch", need);
    segment seg = {mat, 0, m};
    run(pool, w, t, level, q8, x, ldx, y, ldy, &seg, 1, NULL, m, scr);
    return OPTIQ_OK;
}

optiq_status qmatmul(thread_pool *pool, const qweight *w, const float *x, int64_t m, float *y, optiq_error *err) {
    return qmatmul_ex(pool, w, x, m, y, NULL, err);
}

optiq_status qmatmul_moe(thread_pool *pool, const qweight *w, const int32_t *expert, const float *x, int64_t m,
                         float *y, const qmm_opts *opts, optiq_error *err) {
    optiq_status st = check_common(w, x, m, y, err);
    if (st != OPTIQ_OK) return st;
    if (m > 0 && !expert) return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized MoE matmul: NULL expert indices");
    for (int64_t i = 0; i < m; i++)
        if (expert[i] < 0 || expert[i] >= w->n_mats)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized MoE matmul: expert %d of row %lld outside [0, %lld)",
                           expert[i], (long long)i, (long long)w->n_mats);
    int64_t ldx = opts && opts->ldx ? opts->ldx : w->cols, ldy = opts && opts->ldy ? opts->ldy : w->rows;
    if (ldx < w->cols || ldy < w->rows)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "quantized MoE matmul: row strides below the matrix size");
    if (m == 0 || w->rows == 0) return OPTIQ_OK;
    const qtraits *t = qtraits_find(w->fmt);

    cpu_level level = pick_level(t, opts);
    int q8 = use_q8(&t->kern[level], level, opts);

    /* scratch: run()'s part, then order [m], segments [min(m, E)], counts [E + 1] */
    int64_t E = w->n_mats, max_seg = m < E ? m : E;
    size_t run_bytes = run_scratch_bytes(w, &t->kern[level], level, q8, m);
    size_t need =
        run_bytes + (size_t)m * sizeof(int64_t) + (size_t)max_seg * sizeof(segment) + (size_t)(E + 1) * sizeof(int64_t);
    uint8_t *scr = scratch_get(need);
    if (!scr) return err_set(err, OPTIQ_ERR_NOMEM, "quantized MoE matmul: no memory for %zu bytes of scratch", need);
    int64_t *order = (int64_t *)(scr + run_bytes);
    segment *seg = (segment *)(order + m);
    int64_t *count = (int64_t *)(seg + max_seg);

    /* Group the rows by expert: a stable counting sort. */
    memset(count, 0, (size_t)(E + 1) * sizeof *count);
    for (int64_t i = 0; i < m; i++) count[expert[i] + 1]++;
    int64_t n_seg = 0;
    for (int64_t e = 0; e < E; e++) {
        if (count[e + 1] > 0) seg[n_seg++] = (segment){e, count[e], count[e + 1]};
        count[e + 1] += count[e];
    }
    for (int64_t i = 0; i < m; i++) order[count[expert[i]]++] = i;
    run(pool, w, t, level, q8, x, ldx, y, ldy, seg, n_seg, order, m, scr);
    return OPTIQ_OK;
}
