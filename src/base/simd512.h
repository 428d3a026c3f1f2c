/*
 * simd512.h — small AVX-512 helpers shared by the *_avx512.c / *_vnni.c
 * kernels (include only from files built with the AVX-512 flags).
 */
#ifndef OPTIQ_BASE_SIMD512_H
#define OPTIQ_BASE_SIMD512_H

#include <immintrin.h>

/* Sums of the 16 lanes of a, b, c, d as lanes 0..3. Each sum uses the same
 * additions in the same order as _mm512_reduce_add_ps on that vector (halves
 * of 256, then of 128, then lanes i + (i ^ 2), then 0 + 1), so a kernel can
 * reduce four rows at once and stay bit-identical to one that reduces rows one
 * by one. */
static inline __attribute__((always_inline)) __m128 simd512_reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0xEE), _mm512_shuffle_f32x4(a, b, 0x44)); /* a | b, 8 each */
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0xEE), _mm512_shuffle_f32x4(c, d, 0x44)); /* c | d */
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0xDD), _mm512_shuffle_f32x4(ab, cd, 0x88)); /* 4 each */
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E)); /* i + (i ^ 2) */
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1)); /* 0 + 1 */
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
}

#endif
