/*
 * gdn_avx512.c — AVX-512 twin of gdn_step_portable (gdn.h), Dk a multiple of
 * 16. Four rows of S at a time: a first pass over the four rows (from memory)
 * gives the four S_i·k, one four-way reduction gives the δ_i, a second pass
 * (from L1) applies S_i ← g·S_i + δ_i·k, stores, and accumulates S_i·q.
 */
#include <immintrin.h>

#include "base/simd512.h"
#include "kernels/gdn.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")

AI void rows(const int NR, float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dk,
             float *y) {
    __m512 a[4];
    UNROLL for (int r = 0; r < NR; r++) a[r] = _mm512_setzero_ps();
    for (int64_t j = 0; j < Dk; j += 16) {
        __m512 kv = _mm512_loadu_ps(k + j);
        UNROLL for (int r = 0; r < NR; r++) a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(S + r * Dk + j), kv, a[r]);
    }
    float dot[4];
    if (NR == 4)
        _mm_storeu_ps(dot, simd512_reduce4(a[0], a[1], a[2], a[3]));
    else
        dot[0] = _mm512_reduce_add_ps(a[0]);
    __m512 d[4];
    UNROLL for (int r = 0; r < NR; r++) {
        d[r] = _mm512_set1_ps((v[r] - g * dot[r]) * beta);
        a[r] = _mm512_setzero_ps();
    }
    const __m512 gv = _mm512_set1_ps(g);
    for (int64_t j = 0; j < Dk; j += 16) {
        __m512 kv = _mm512_loadu_ps(k + j), qv = _mm512_loadu_ps(q + j);
        UNROLL for (int r = 0; r < NR; r++) {
            float *p = S + r * Dk + j;
            __m512 s = _mm512_fmadd_ps(kv, d[r], _mm512_mul_ps(_mm512_loadu_ps(p), gv));
            _mm512_storeu_ps(p, s);
            a[r] = _mm512_fmadd_ps(s, qv, a[r]);
        }
    }
    if (NR == 4)
        _mm_storeu_ps(y, simd512_reduce4(a[0], a[1], a[2], a[3]));
    else
        y[0] = _mm512_reduce_add_ps(a[0]);
}

void gdn_step_avx512(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv,
                     int64_t Dk, float *y) {
    int64_t i = 0;
    for (; i + 4 <= Dv; i += 4) rows(4, S + i * Dk, q, k, v + i, g, beta, Dk, y + i);
    for (; i < Dv; i++) rows(1, S + i * Dk, q, k, v + i, g, beta, Dk, y + i);
}
