/*
 * linear.h — a model's weight matrices as the families bind and apply them.
 *
 * A `linear` is one weight of a module path X of the tower, in whatever form
 * the folder stores it:
 *   quantized  X.weight U32 + X.scales (+ X.biases): kept packed, applied by
 *              qmatmul (the format comes from quant_config.h's resolution)
 *   float      X.weight BF16 / F16 / F32: applied by matmul
 * plus an optional layer bias X.bias (copied to f32). Expert stacks (MoE) are
 * the same with a leading expert axis; `mat` picks one expert.
 *
 * Binding checks the shape against what the config implies and fails with a
 * message naming the tensor, the expected and the found shape.
 */
#ifndef OPTIQ_MODELS_LINEAR_H
#define OPTIQ_MODELS_LINEAR_H

#include <stdint.h>

#include "base/threadpool.h"
#include "io/model_dir.h"
#include "io/quant_config.h"
#include "quant/qformat.h"

typedef struct linear {
    int quantized;
    qweight q;            /* quantized: the packed weight */
    const void *w;        /* float: [n_mats, rows, cols] of dtype dt */
    dtype dt;
    int64_t n_mats, rows, cols;
    float *bias;          /* (n_mats, rows) or NULL; owned */
} linear;

/* The tensors a model binds from. */
typedef struct weight_src {
    const model_dir *md;
    const quant_modules *qm;
} weight_src;

/* Bind module `name` (no ".weight" suffix) as n_mats x [rows, cols]
 * (n_mats = 0: a plain 2-D weight). want_bias: 0 none allowed, 1 optional,
 * 2 required. */
optiq_status linear_bind(const weight_src *src, const char *name, int64_t n_mats, int64_t rows, int64_t cols,
                         int want_bias, linear *out, optiq_error *err);
void linear_free(linear *l);

/* y (m, rows) = x (m, cols) · W[mat]ᵀ (+ bias). ldy: floats between rows of y (0: rows).
 * q8: quantized weights may use the int8-activation kernels (qmatmul.h). */
optiq_status linear_apply(thread_pool *pool, const linear *l, int64_t mat, const float *x, int64_t m, float *y,
                          int64_t ldy, int q8, optiq_error *err);

/* Mixture of experts: y[i] (rows) = x[i] (cols) · W[expert[i]]ᵀ for m rows
 * (a token routed to k experts is k rows). Rows of one expert share one
 * pass over its weights. */
optiq_status linear_apply_moe(thread_pool *pool, const linear *l, const int32_t *expert, const float *x, int64_t m,
                              float *y, int q8, optiq_error *err);

/* out (n, cols) = rows ids of matrix 0 (an embedding table). */
optiq_status linear_rows(const linear *l, const int32_t *ids, int64_t n, float *out, optiq_error *err);

/* Bytes of the stored weight (packed data + scales + biases): what a
 * matrix-vector product reads. */
uint64_t linear_bytes(const linear *l);
/* Bytes one decode step reads of an expert stack: k of its n_mats matrices
 * (0 for an unbound linear). */
uint64_t linear_expert_bytes(const linear *l, int64_t k);

/* A small float tensor (a norm weight, a bias vector, ...) copied to f32.
 * The element count must be n (the shape must be [n], or dims given by
 * shape/ndim when ndim > 0). */
optiq_status weight_vec_f32(const weight_src *src, const char *name, int ndim, const int64_t *shape, float **out,
                            optiq_error *err);

/* The prefix of a language tower's tensor names: "language_model.model."
 * (MLX-converted multimodal), "model.language_model." (raw Hugging Face),
 * "model." (text-only) or "" — the first under which embed_tokens.weight
 * exists; NULL when none does. Static strings. */
const char *weight_prefix(const model_dir *md);

/* *p grown (realloc) to n floats (at least 1); 0 when out of memory (*p kept). */
int grow_f32(float **p, size_t n);

#endif
