/*
 * qmatmul.h — products with a quantized weight, y = x · Wᵀ, f32 in and out.
 *
 *   x  (m, cols)   activations, f32
 *   W  (rows, cols) one matrix of a qweight (a 2-D weight, or matrix `mat` of
 *                  an expert stack), any format of the table in quant.h
 *   y  (m, rows)
 *
 * Affine groups are evaluated as s·Σ(x·q) + b·Σx (Σx per activation row and
 * group computed once per call), fp groups as scale·Σ(x·v), accumulated in f32.
 * The weight is never dequantized to memory. Work is split over the pool by
 * tiles of output rows; each tile runs the activation rows in blocks of up to
 * 8, streaming the tile's packed bytes once per block (matrix-vector products
 * during decode, and a batch of decoded sequences, read the weights once).
 *
 * The kernel level (portable C, AVX2, AVX-512) is cpu_level_current() unless
 * qmm_opts.level asks for a lower one. Results of different levels differ only
 * by f32 summation order (test_quant_kernels states the budget).
 *
 * Scratch (prepared activations, group sums) lives in a buffer owned by the
 * calling thread that grows to the largest call and is then reused: no
 * allocation per call once warm. qmatmul_release_scratch frees it.
 */
#ifndef OPTIQ_QUANT_QMATMUL_H
#define OPTIQ_QUANT_QMATMUL_H

#include <stdint.h>

#include "base/cpu.h"
#include "base/error.h"
#include "base/threadpool.h"
#include "quant/quant.h"

typedef struct qmm_opts {
    int level;   /* a cpu_level, capped at cpu_level_current(); -1: cpu_level_current() */
    int64_t mat; /* matrix of an expert stack (qmatmul_ex only) */
    int64_t ldx; /* floats between rows of x; 0: cols */
    int64_t ldy; /* floats between rows of y; 0: rows */
    int q8;      /* 1: int8 activations where the format has such a kernel at the
                  * chosen level (affine 4/8-bit: portable, AVX2, or AVX-512 with VNNI);
                  * other formats and levels keep the f32 path. See qkern.h. */
} qmm_opts;

static inline qmm_opts qmm_opts_default(void) { return (qmm_opts){-1, 0, 0, 0, 0}; }

/* 1 when qmatmul with opts would use the int8-activation kernel for w. */
int qmatmul_uses_q8(const qweight *w, const qmm_opts *opts);

/* y (m, rows) = x (m, cols) · Wᵀ for a 2-D qweight (or matrix 0 of a stack). */
optiq_status qmatmul(thread_pool *pool, const qweight *w, const float *x, int64_t m, float *y, optiq_error *err);

/* Same with options (matrix index, strides, kernel level); opts may be NULL. */
optiq_status qmatmul_ex(thread_pool *pool, const qweight *w, const float *x, int64_t m, float *y, const qmm_opts *opts,
                        optiq_error *err);

/* Mixture of experts: y[i] = x[i] · W[expert[i]]ᵀ for each activation row i
 * (mlx's gather_qmm with one expert per row; a token routed to k experts is k
 * rows). Rows of the same expert share one pass over that expert's weights.
 * opts->mat is ignored. Fails when an expert index is outside [0, n_mats). */
optiq_status qmatmul_moe(thread_pool *pool, const qweight *w, const int32_t *expert, const float *x, int64_t m,
                         float *y, const qmm_opts *opts, optiq_error *err);

/* The kernel level qmatmul would use for a format under opts (after capping
 * and falling back to the best level that has a kernel). */
cpu_level qmatmul_level(const qweight *w, const qmm_opts *opts);

void qmatmul_release_scratch(void);

#endif
