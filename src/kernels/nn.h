/*
 * nn.h — f32 neural-network ops the model families call (portable C).
 *
 * Shapes are row-major; "rows" are tokens. All ops accumulate in f32 in a
 * fixed order, so the result of a row never depends on how many rows a call
 * has or how many threads run (prefill in chunks equals one pass up to the
 * matmul kernels' own guarantees).
 */
#ifndef OPTIQ_KERNELS_NN_H
#define OPTIQ_KERNELS_NN_H

#include <stdint.h>

#include "base/threadpool.h"

/* y (n, d) = x / sqrt(mean(x²) + eps) * w, w (d) or NULL for none. y may be x. */
void nn_rmsnorm(const float *x, int64_t n, int64_t d, const float *w, float eps, float *y);

static inline float nn_sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }
static inline float nn_silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
/* log(1 + e^x) evaluated as mlx's logaddexp(x, 0): max(x,0) + log1p(exp(-|x|)). */
float nn_softplus(float x);

/* GELU, tanh form (mlx nn.gelu_approx, PyTorch gelu "tanh"):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))). */
static inline float nn_gelu_tanh(float x) {
    return 0.5f * x * (1.0f + __builtin_tanhf(0.7978845608f * (x + 0.044715f * (x * x * x))));
}

/* g (n) = gelu_tanh(g) * u, in place in g (GeGLU). With AVX2 the tanh is
 * libmvec's vector tanhf (within about 1 ulp of tanhf; nn_avx2.c), applied
 * to every element alike, so rows still do not depend on the call's size. */
void nn_geglu(float *g, const float *u, int64_t n);
void nn_geglu_avx2(float *g, const float *u, int64_t n);

/* x (n) = out * tanh(in * x), in place (logit soft-capping); AVX2 as nn_geglu. */
void nn_tanh_scaled(float *x, int64_t n, float in, float out);
void nn_tanh_scaled_avx2(float *x, int64_t n, float in, float out);

/* g (n) = silu(g) * u, in place in g. */
void nn_swiglu(float *g, const float *u, int64_t n);

/* In place softmax over n values (max-subtracted, f32). */
void nn_softmax(float *x, int64_t n);

/* In place softmax(scale * x) over n values; AVX-512 when available (its exp
 * is within 2 ulp of expf, the sum is in 16 lanes: results differ from the
 * portable loop by rounding only). */
void nn_softmax_scaled(float *x, int64_t n, float scale);
void nn_softmax_scaled_avx512(float *x, int64_t n, float scale);

/* Rotary embedding, "rotate half" layout (mlx nn.RoPE traditional=False) on
 * the first 2*n_freq features of each head: for slot j < n_freq the pair
 * (x[j], x[j + n_freq]) rotates by angle pos[axis[j]] * inv_freq[j].
 *   x     (n_tok, n_heads, head_dim), in place
 *   pos   (3, n_tok) positions per axis (t, h, w); with axis == NULL only
 *         pos[0..n_tok) (axis 0) is read
 *   axis  (n_freq) axis of each slot (interleaved MRoPE), or NULL
 */
void nn_rope(float *x, int64_t n_tok, int n_heads, int head_dim, int n_freq, const float *inv_freq,
             const int32_t *pos, const uint8_t *axis);

/* Causal self-attention of n_q new queries against a KV cache.
 *   q      (n_q, n_heads, head_dim)          queries of positions pos0 .. pos0+n_q-1
 *   k, v   (n_kv, n_kv_heads, head_dim)      cache rows 0 .. pos0+n_q-1 (n_kv = pos0 + n_q)
 *   out    (n_q, n_heads, head_dim)
 * Query head h reads kv head h / (n_heads / n_kv_heads). Work is split over
 * (query, head) pairs; scratch: (threads, n_kv) floats supplied by the caller. */
void nn_attention(thread_pool *pool, const float *q, const float *k, const float *v, int64_t n_q, int64_t pos0,
                  int n_heads, int n_kv_heads, int head_dim, float scale, float *out, float *scratch);

/* Where a query may look, beyond causal attention over all earlier keys. */
typedef struct nn_attn_mask {
    int64_t window;    /* > 0: the query at position p sees only p - window + 1 .. p */
    int64_t ring;      /* > 0: position t is stored in cache row t % ring (else row t) */
    const int32_t *span_lo, *span_hi; /* (n_q) or NULL: query i also sees positions span_lo[i] ..
                                         span_hi[i] (a bidirectional span; -1: none), window or not */
} nn_attn_mask;

/* The same with a mask: sliding window, ring-buffer cache, bidirectional
 * spans. The cache must hold every position a query of this call sees (a
 * ring: ring >= window + n_q - 1, spans inside the call). scratch:
 * (threads, scratch_n) floats, scratch_n >= the most keys one query sees. */
void nn_attention_masked(thread_pool *pool, const float *q, const float *k, const float *v, int64_t n_q, int64_t pos0,
                         const nn_attn_mask *mask, int n_heads, int n_kv_heads, int head_dim, float scale, float *out,
                         float *scratch, int64_t scratch_n);

#endif
