/*
 * matmul_avx512.c — the AVX-512 tile kernel of matmul.h: up to 4 activation
 * rows x 4 weight rows, 16 f32 accumulators of 16 lanes, k in steps of 16 with
 * a masked tail; bf16 weights widen by a 16-bit shift, f16 through vcvtph2ps.
 * Each accumulator is one FMA chain over k in the same order whatever the tile
 * shape, so results do not depend on tiling.
 */
#include <immintrin.h>

#include "kernels/matmul.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")

AI __m512 load_w(const uint8_t *p, dtype dt, __mmask16 m) {
    switch (dt) {
    case DT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_maskz_loadu_ps(m, p);
    }
}

AI void tile(const mm_tile *t, const int MR, const int NR, const dtype DT) {
    const int64_t K = t->k;
    const size_t es = DT == DT_F32 ? 4 : 2;
    __m512 acc[4][4];
    UNROLL for (int i = 0; i < MR; i++) UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[4];
        UNROLL for (int j = 0; j < NR; j++) wv[j] = load_w(t->w + j * t->ldw_bytes + k * (int64_t)es, DT, 0xFFFF);
        UNROLL for (int i = 0; i < MR; i++) {
            __m512 xv = _mm512_loadu_ps(t->x[i] + k);
            UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);
        __m512 wv[4];
        UNROLL for (int j = 0; j < NR; j++) wv[j] = load_w(t->w + j * t->ldw_bytes + k * (int64_t)es, DT, m);
        UNROLL for (int i = 0; i < MR; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, t->x[i] + k);
            UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    UNROLL for (int i = 0; i < MR; i++) UNROLL for (int j = 0; j < NR; j++) t->y[i][j] =
        _mm512_reduce_add_ps(acc[i][j]);
}

#define CASES(DT)                      \
    switch (t->mr * 4 + t->nr) {       \
    case 5: tile(t, 1, 1, DT); break;  \
    case 6: tile(t, 1, 2, DT); break;  \
    case 7: tile(t, 1, 3, DT); break;  \
    case 8: tile(t, 1, 4, DT); break;  \
    case 9: tile(t, 2, 1, DT); break;  \
    case 10: tile(t, 2, 2, DT); break; \
    case 11: tile(t, 2, 3, DT); break; \
    case 12: tile(t, 2, 4, DT); break; \
    case 13: tile(t, 3, 1, DT); break; \
    case 14: tile(t, 3, 2, DT); break; \
    case 15: tile(t, 3, 3, DT); break; \
    case 16: tile(t, 3, 4, DT); break; \
    case 17: tile(t, 4, 1, DT); break; \
    case 18: tile(t, 4, 2, DT); break; \
    case 19: tile(t, 4, 3, DT); break; \
    default: tile(t, 4, 4, DT); break; \
    }

void mm_tile_avx512(const mm_tile *t) {
    switch (t->w_dt) {
    case DT_BF16: CASES(DT_BF16); break;
    case DT_F16: CASES(DT_F16); break;
    default: CASES(DT_F32); break;
    }
}
