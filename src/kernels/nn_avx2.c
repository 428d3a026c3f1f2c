/*
 * nn_avx2.c — element-wise ops of nn.h with AVX2, their tanh from glibc's
 * vector math library (libmvec's 8-lane tanhf, within about 1 ulp of tanhf).
 * Every element goes through the vector function, the tail too (padded to
 * 8 lanes), so an element's result does not depend on its position or on
 * how many rows a call holds. Only called when the CPU has AVX2 + FMA.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/nn.h"

__m256 _ZGVdN8v_tanhf(__m256 x); /* libmvec */

/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))) · u, the operations of nn_gelu_tanh */
static inline __m256 geglu8(__m256 x, __m256 u) {
    const __m256 c0 = _mm256_set1_ps(0.7978845608f), c1 = _mm256_set1_ps(0.044715f);
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 z = _mm256_mul_ps(c0, _mm256_add_ps(x, _mm256_mul_ps(c1, x3)));
    __m256 t = _ZGVdN8v_tanhf(z);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t)), u);
}

void nn_geglu_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, geglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float a[8] = {0}, b[8] = {0};
        memcpy(a, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(b, u + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(a, geglu8(_mm256_loadu_ps(a), _mm256_loadu_ps(b)));
        memcpy(g + i, a, (size_t)(n - i) * sizeof(float));
    }
}

void nn_tanh_scaled_avx2(float *x, int64_t n, float in, float out) {
    const __m256 vi = _mm256_set1_ps(in), vo = _mm256_set1_ps(out);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_ZGVdN8v_tanhf(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi)), vo));
    if (i < n) {
        float a[8] = {0};
        memcpy(a, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(a, _mm256_mul_ps(_ZGVdN8v_tanhf(_mm256_mul_ps(_mm256_loadu_ps(a), vi)), vo));
        memcpy(x + i, a, (size_t)(n - i) * sizeof(float));
    }
}
