/*
 * nn.c — f32 neural-network ops (see nn.h).
 */
#include "kernels/nn.h"

#include "base/cpu.h"

#include <math.h>
#include <string.h>

void nn_rmsnorm(const float *x, int64_t n, int64_t d, const float *w, float eps, float *y) {
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float ss = 0.0f;
        for (int64_t i = 0; i < d; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        if (w)
            for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * inv * w[i];
        else
            for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * inv;
    }
}

float nn_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

void nn_geglu(float *g, const float *u, int64_t n) {
    if (cpu_level_current() >= CPU_AVX2) {
        nn_geglu_avx2(g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) g[i] = nn_gelu_tanh(g[i]) * u[i];
}

void nn_tanh_scaled(float *x, int64_t n, float in, float out) {
    if (cpu_level_current() >= CPU_AVX2) {
        nn_tanh_scaled_avx2(x, n, in, out);
        return;
    }
    for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i] * in) * out;
}

void nn_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = nn_silu(g[i]) * u[i];
}

void nn_softmax(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void nn_softmax_scaled(float *x, int64_t n, float scale) {
    if (cpu_level_current() >= CPU_AVX512) {
        nn_softmax_scaled_avx512(x, n, scale);
        return;
    }
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] * scale > mx ? x[i] * scale : mx;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] * scale - mx);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void nn_rope(float *x, int64_t n_tok, int n_heads, int head_dim, int n_freq, const float *inv_freq,
             const int32_t *pos, const uint8_t *axis) {
    float c[256], s[256];
    if (n_freq > 256) return; /* callers check: rotary dims <= 512 */
    for (int64_t t = 0; t < n_tok; t++) {
        for (int j = 0; j < n_freq; j++) {
            int ax = axis ? axis[j] : 0;
            float ang = (float)pos[ax * n_tok + t] * inv_freq[j];
            c[j] = cosf(ang);
            s[j] = sinf(ang);
        }
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (t * n_heads + h) * head_dim;
            for (int j = 0; j < n_freq; j++) {
                float a = xh[j], b = xh[j + n_freq];
                xh[j] = a * c[j] - b * s[j];
                xh[j + n_freq] = b * c[j] + a * s[j];
            }
        }
    }
}

/* ---- attention ---- */

/* a · b with 8 partial sums (vectorizable, fixed order). */
static inline float dot8(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    for (; j < n; j++) acc[0] += a[j] * b[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

typedef struct attn_ctx {
    const float *q, *k, *v;
    float *out, *scratch;
    int64_t n_q, pos0, n_kv;
    int64_t window, ring; /* 0: no window; 0: row t holds position t */
    const int32_t *span_lo, *span_hi;
    int n_heads, n_kv_heads, head_dim;
    float scale;
} attn_ctx;

static void attn_task(void *vctx, int64_t task, int thread) {
    const attn_ctx *a = vctx;
    int64_t i = task / a->n_heads;
    int h = (int)(task % a->n_heads);
    int g = h / (a->n_heads / a->n_kv_heads);
    int D = a->head_dim;
    const float *q = a->q + (i * a->n_heads + h) * D;
    float *p = a->scratch + (int64_t)thread * a->n_kv;
    int64_t pq = a->pos0 + i;                                /* causal: keys lo .. hi = pq */
    int64_t lo = a->window > 0 && pq - a->window + 1 > 0 ? pq - a->window + 1 : 0, hi = pq;
    if (a->span_lo && a->span_lo[i] >= 0) { /* a bidirectional span widens both ends */
        if (a->span_lo[i] < lo) lo = a->span_lo[i];
        if (a->span_hi[i] > hi) hi = a->span_hi[i];
    }
    int64_t n = hi + 1 - lo;
    int64_t kv_stride = (int64_t)a->n_kv_heads * D;
    int64_t row0 = a->ring > 0 ? lo % a->ring : lo, ring = a->ring > 0 ? a->ring : INT64_MAX;
    float mx = -INFINITY;
    for (int64_t t = 0, r = row0; t < n; t++, r = r + 1 == ring ? 0 : r + 1) {
        const float *k = a->k + r * kv_stride + (int64_t)g * D;
        float d = dot8(q, k, D) * a->scale;
        p[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n; t++) {
        p[t] = expf(p[t] - mx);
        sum += p[t];
    }
    float inv = 1.0f / sum;
    float *o = a->out + (i * a->n_heads + h) * D;
    memset(o, 0, sizeof(float) * (size_t)D);
    for (int64_t t = 0, r = row0; t < n; t++, r = r + 1 == ring ? 0 : r + 1) {
        const float *v = a->v + r * kv_stride + (int64_t)g * D;
        float w = p[t] * inv;
        for (int e = 0; e < D; e++) o[e] += w * v[e];
    }
}

void nn_attention(thread_pool *pool, const float *q, const float *k, const float *v, int64_t n_q, int64_t pos0,
                  int n_heads, int n_kv_heads, int head_dim, float scale, float *out, float *scratch) {
    attn_ctx a = {q, k, v, out, scratch, n_q, pos0, pos0 + n_q, 0, 0, NULL, NULL, n_heads, n_kv_heads, head_dim, scale};
    pool_run(pool, n_q * n_heads, attn_task, &a);
}

void nn_attention_masked(thread_pool *pool, const float *q, const float *k, const float *v, int64_t n_q, int64_t pos0,
                         const nn_attn_mask *mask, int n_heads, int n_kv_heads, int head_dim, float scale, float *out,
                         float *scratch, int64_t scratch_n) {
    attn_ctx a = {q,         k,         v,     out,     scratch, n_q,        pos0,       scratch_n, mask->window,
                  mask->ring, mask->span_lo, mask->span_hi, n_heads, n_kv_heads, head_dim, scale};
    pool_run(pool, n_q * n_heads, attn_task, &a);
}
