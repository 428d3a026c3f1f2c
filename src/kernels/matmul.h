/*
 * matmul.h — y = x · Wᵀ for unquantized weights (f32, bf16 or f16), f32 in and out.
 *
 *   x  (m, k)  f32 activations, row stride ldx
 *   W  (n, k)  weights as stored (a linear layer's [out, in] matrix), row-major,
 *              possibly unaligned (a safetensors mapping)
 *   y  (m, n)  f32, row stride ldy
 *
 * Products accumulate in f32, one FMA chain per (activation row, weight row)
 * over k in a fixed order, so a row's result does not depend on how rows are
 * tiled or how many threads run (batching and thread counts never change the
 * output). Work is split over the pool by tiles of weight rows; each tile is
 * swept by blocks of 4 activation rows x 4 weight rows (16 accumulators).
 * Kernel levels as in qmatmul.h (portable C, AVX2, AVX-512), chosen by
 * cpu_level_current() unless opts->level asks for a lower one.
 */
#ifndef OPTIQ_KERNELS_MATMUL_H
#define OPTIQ_KERNELS_MATMUL_H

#include <stdint.h>

#include "base/cpu.h"
#include "base/dtype.h"
#include "base/error.h"
#include "base/threadpool.h"

typedef struct mm_opts {
    int level;   /* a cpu_level, capped at cpu_level_current(); -1: current */
    int64_t ldx; /* floats between rows of x; 0: k */
    int64_t ldy; /* floats between rows of y; 0: n */
} mm_opts;

static inline mm_opts mm_opts_default(void) { return (mm_opts){-1, 0, 0}; }

/* y (m, n) = x (m, k) · Wᵀ with W (n, k) of dtype w_dt (DT_F32, DT_BF16, DT_F16).
 * opts may be NULL. */
optiq_status matmul(thread_pool *pool, const float *x, int64_t m, int64_t k, const void *w, dtype w_dt, int64_t n,
                    float *y, const mm_opts *opts, optiq_error *err);

/* ---- kernels (private to matmul*.c) ---------------------------------------
 * Tile: rows [0, nr) of W starting at w (row stride ldw elements) times
 * activation rows x[0..mr) (pointers); y[i][j] for j < nr. 1 <= mr, nr <= 4. */
typedef struct mm_tile {
    const float *x[4];
    float *y[4];
    const uint8_t *w;
    int64_t ldw_bytes;
    int64_t k;
    int mr, nr;
    dtype w_dt;
} mm_tile;

void mm_tile_portable(const mm_tile *t);
void mm_tile_avx2(const mm_tile *t);
void mm_tile_avx512(const mm_tile *t);

#endif
