/*
 * matmul_avx2.c — the AVX2 + FMA + F16C tile kernel of matmul.h: the tile is
 * swept two weight rows at a time (4 x 2 accumulators of 8 lanes fit the 16
 * registers), k in steps of 8 with a zero-padded tail. Same per-accumulator
 * order whatever the tile shape.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")

AI __m256 load_w8(const uint8_t *p, dtype dt) {
    switch (dt) {
    case DT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    case DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_loadu_ps((const float *)p);
    }
}

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI void tile(const mm_tile *t, const int MR, const int NR, const dtype DT, int j0) {
    const int64_t K = t->k;
    const size_t es = DT == DT_F32 ? 4 : 2;
    const uint8_t *w = t->w + j0 * t->ldw_bytes;
    __m256 acc[4][2];
    UNROLL for (int i = 0; i < MR; i++) UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[2];
        UNROLL for (int j = 0; j < NR; j++) wv[j] = load_w8(w + j * t->ldw_bytes + k * (int64_t)es, DT);
        UNROLL for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(t->x[i] + k);
            UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < K) {
        int rem = (int)(K - k);
        uint8_t buf[32] __attribute__((aligned(32)));
        __m256 wv[2];
        UNROLL for (int j = 0; j < NR; j++) {
            memset(buf, 0, sizeof buf);
            memcpy(buf, w + j * t->ldw_bytes + k * (int64_t)es, (size_t)rem * es);
            wv[j] = load_w8(buf, DT);
        }
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        UNROLL for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_maskload_ps(t->x[i] + k, m);
            UNROLL for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    UNROLL for (int i = 0; i < MR; i++) UNROLL for (int j = 0; j < NR; j++) t->y[i][j0 + j] = hsum8(acc[i][j]);
}

#define CASES(DT, nr, j0)                  \
    switch (t->mr * 2 + (nr)) {            \
    case 3: tile(t, 1, 1, DT, j0); break;  \
    case 4: tile(t, 1, 2, DT, j0); break;  \
    case 5: tile(t, 2, 1, DT, j0); break;  \
    case 6: tile(t, 2, 2, DT, j0); break;  \
    case 7: tile(t, 3, 1, DT, j0); break;  \
    case 8: tile(t, 3, 2, DT, j0); break;  \
    case 9: tile(t, 4, 1, DT, j0); break;  \
    default: tile(t, 4, 2, DT, j0); break; \
    }

void mm_tile_avx2(const mm_tile *t) {
    for (int j0 = 0; j0 < t->nr; j0 += 2) {
        int nr = t->nr - j0 < 2 ? t->nr - j0 : 2;
        switch (t->w_dt) {
        case DT_BF16: CASES(DT_BF16, nr, j0); break;
        case DT_F16: CASES(DT_F16, nr, j0); break;
        default: CASES(DT_F32, nr, j0); break;
        }
    }
}
