/*
 * qkern_avx512.c — quantized matmul kernels for AVX-512 (F, BW, VL, DQ).
 * Built with -mavx512*; only called after cpu_level_current() >= CPU_AVX512.
 *
 * Every kernel walks a weight row in chunks of 32 elements, decodes the chunk
 * into two vectors of 16 f32 values and multiplies them with the matching 16
 * activations of each row of the block:
 *   4-bit  16 bytes -> vpmovzxbd; low nibbles (& 15) are the 16 even elements,
 *          high nibbles (>> 4) the 16 odd ones, which is why these kernels read
 *          x prepared by qprep_nib32_avx512 (evens, then odds, per 32 elements);
 *          affine codes go through vcvtdq2ps, fp4 codes through a 16-entry
 *          vpermps table.
 *   8-bit  2 x 16 bytes -> vpmovzxbd each; affine: vcvtdq2ps; e4m3: the byte's
 *          exponent and mantissa are moved into an f32's fields and scaled by
 *          2^120 (exact for normal and subnormal codes), sign and NaN by masks.
 *   other affine widths: the row is unpacked to bytes (portable unpacker) and
 *          run through the 8-bit path.
 * Scales are converted 16 groups at a time (bf16/f16/f32 or e8m0/e4m3 bytes).
 * Affine bias terms b_g * xsum_g are added per row with one vector pass over
 * the groups. Accumulation is f32 in two chains per row (even and odd groups)
 * to hide FMA latency; the operations applied to one activation row do not
 * depend on how many rows share the block, so batching never changes results.
 */
#include <immintrin.h>

#include "quant/qkern.h"

#define AI static inline __attribute__((always_inline))

/* ---- helpers --------------------------------------------------------------- */

AI __mmask16 mask_n(int n) { return (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u)); }

/* n (1..16) scale or bias elements of a float dtype as f32 lanes, zero beyond n. */
AI __m512 load_scales(const uint8_t *p, dtype dt, int n) {
    __mmask16 m = mask_n(n);
    switch (dt) {
    case DT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_maskz_loadu_ps(m, p);
    }
}

/* e4m3 bytes (in the low 8 bits of each lane) to f32, MLX semantics (0x7F/0xFF -> NaN). */
AI __m512 e4m3_to_ps(__m512i v) {
    __m512i em = _mm512_and_si512(_mm512_slli_epi32(v, 20), _mm512_set1_epi32(0x07F00000));
    __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(em), _mm512_set1_ps(0x1p120f));
    f = _mm512_mask_sub_ps(f, _mm512_test_epi32_mask(v, _mm512_set1_epi32(0x80)), _mm512_setzero_ps(), f);
    __mmask16 nan = _mm512_cmpeq_epi32_mask(em, _mm512_set1_epi32(0x07F00000));
    return _mm512_mask_mov_ps(f, nan, _mm512_set1_ps(__builtin_nanf("")));
}

/* n (1..16) e8m0 bytes to f32: exponent field = byte, byte 0 -> 2^-127. */
AI __m512 load_e8m0(const uint8_t *p, int n) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask_n(n), p));
    __m512i bits = _mm512_slli_epi32(v, 23);
    bits =
        _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(v, _mm512_setzero_si512()), _mm512_set1_epi32(0x00400000));
    return _mm512_castsi512_ps(bits);
}

AI __m512 load_e4m3(const uint8_t *p, int n) {
    return e4m3_to_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask_n(n), p)));
}

#define UNROLL _Pragma("GCC unroll 8")

/* Dispatch a body specialised on the number of activation rows. */
#define DISPATCH_MB(body, a, ...)            \
    switch ((a)->mb) {                       \
    case 1: body(a, 1, __VA_ARGS__); break;  \
    case 2: body(a, 2, __VA_ARGS__); break;  \
    case 3: body(a, 3, __VA_ARGS__); break;  \
    case 4: body(a, 4, __VA_ARGS__); break;  \
    case 5: body(a, 5, __VA_ARGS__); break;  \
    case 6: body(a, 6, __VA_ARGS__); break;  \
    case 7: body(a, 7, __VA_ARGS__); break;  \
    default: body(a, 8, __VA_ARGS__); break; \
    }

/* ---- activation layout for the 4-bit kernels ------------------------------ */

void qprep_nib32_avx512(const float *x, int64_t K, float *xp) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
        _mm512_storeu_ps(xp + k, _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(xp + k + 16, _mm512_permutex2var_ps(a, io, b));
    }
    int64_t plen = qkern_prep_len(K);
    for (int64_t j = k; j < plen; j++) xp[j] = 0.0f;
    for (int64_t j = k; j < K; j++) { /* a tail of 16 (nvfp4): evens at k.., odds at k+16.. */
        int64_t t = j - k;
        xp[k + (t & 1) * 16 + t / 2] = x[j];
    }
}

/* ---- affine: 4-bit, 8-bit and unpacked widths ------------------------------ */

enum { A4 = 4, A8 = 8, AU8 = 0 };
enum { SLICE = 8192 }; /* columns unpacked at a time by the generic path (multiple of 128) */
#ifndef PF_DIST
#define PF_DIST                                                                     \
    2048 /* bytes of packed weights prefetched ahead of the current group: measured \
          * best of 0.5-4 KB when streaming from DRAM (the hardware prefetcher      \
          * alone leaves compute and memory reads unoverlapped) */
#endif

/* Decode chunk c (32 elements) of an affine row into two f32 vectors. For 4-bit
 * `src` is the packed row; otherwise a row of byte codes. */
AI void affine_chunk(const uint8_t *src, int64_t col, const int KIND, __m512 *v0, __m512 *v1) {
    if (KIND == A4) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + col / 2)));
        *v0 = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
        *v1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    } else {
        *v0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + col))));
        *v1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + col + 16))));
    }
}

/* Groups [g0, g0 + ng) of one row (ng <= 16, g0 even); codes from src, scales
 * sc[]. Each group's dot product is one chain over its chunks; even groups
 * accumulate into acc0, odd ones into acc1 (two chains hide FMA latency). The
 * arithmetic per activation row is the same for every block size MB, so a
 * row's result does not depend on which rows it was batched with. */
AI void affine_group(const qmm_args *a, const int MB, const int KIND, const int NCH, const uint8_t *src,
                     int64_t src_col0, int64_t col, float scale, __m512 *acc) {
    __m512 g[QMM_MB];
    UNROLL for (int i = 0; i < MB; i++) g[i] = _mm512_setzero_ps();
    if (KIND != AU8) _mm_prefetch((const char *)src + (KIND == A4 ? col / 2 : col) + PF_DIST, _MM_HINT_T0);
    UNROLL for (int c = 0; c < NCH; c++) {
        __m512 v0, v1;
        affine_chunk(src, col + 32 * c - src_col0, KIND, &v0, &v1);
        UNROLL for (int i = 0; i < MB; i++) {
            g[i] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(a->x[i] + col + 32 * c), g[i]);
            g[i] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(a->x[i] + col + 32 * c + 16), g[i]);
        }
    }
    const __m512 s = _mm512_set1_ps(scale);
    UNROLL for (int i = 0; i < MB; i++) acc[i] = _mm512_fmadd_ps(s, g[i], acc[i]);
}

AI void affine_groups(const qmm_args *a, const int MB, const int KIND, const int NCH, const uint8_t *src,
                      int64_t src_col0, int64_t g0, int ng, const float *sc, __m512 *acc0, __m512 *acc1) {
    const int gs = 32 * NCH;
    int gi = 0;
    for (; gi + 2 <= ng; gi += 2) {
        affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi) * gs, sc[gi], acc0);
        affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi + 1) * gs, sc[gi + 1], acc1);
    }
    if (gi < ng) affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi) * gs, sc[gi], acc0);
}

AI void affine_body(const qmm_args *a, const int MB, const int KIND, const int NCH) {
    const int gs = 32 * NCH;
    const int64_t G = a->K / gs;
    const size_t es = dtype_size(a->sdt);
    uint8_t codes[SLICE];
    float sc[16] __attribute__((aligned(64)));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = a->b + (size_t)r * a->s_stride;
        __m512 acc0[QMM_MB], acc1[QMM_MB];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
        const int64_t gslice = KIND == AU8 ? SLICE / gs : G;
        for (int64_t gs0 = 0; gs0 < G; gs0 += gslice) {
            const int64_t gend = gs0 + gslice < G ? gs0 + gslice : G;
            const uint8_t *src = w;
            int64_t col0 = 0;
            if (KIND == AU8) {
                col0 = gs0 * gs;
                a->t->unpack(w, col0, (gend - gs0) * gs, codes);
                src = codes;
            }
            for (int64_t g0 = gs0; g0 < gend; g0 += 16) {
                int ng = (int)(gend - g0 < 16 ? gend - g0 : 16);
                _mm512_store_ps(sc, load_scales(s + g0 * es, a->sdt, ng));
                affine_groups(a, MB, KIND, NCH, src, col0, g0, ng, sc, acc0, acc1);
            }
        }
        /* bias terms: sum_g b_g * xsum_g */
        for (int64_t g0 = 0; g0 < G; g0 += 16) {
            int ng = (int)(G - g0 < 16 ? G - g0 : 16);
            __m512 bv = load_scales(b + g0 * es, a->sdt, ng);
            UNROLL for (int i = 0; i < MB; i++) acc1[i] =
                _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(mask_n(ng), a->xsum[i] + g0), acc1[i]);
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
    }
}

/* ---- one activation row (decode): NR weight rows share each load of x -------
 * Same operations per (weight row, activation row) as affine_body, in the same
 * order (so a row's result does not depend on the block size), but the x
 * vectors of a group are loaded once for NR weight rows: with a single
 * activation row, x traffic would otherwise exceed the weight bytes 8:1. */
AI void affine_rows1(const qmm_args *a, const int NR, const int KIND, const int NCH, int64_t r) {
    const int gs = 32 * NCH;
    const int64_t G = a->K / gs;
    const size_t es = dtype_size(a->sdt);
    const float *x = a->x[0];
    const uint8_t *w[4], *s[4], *b[4];
    float sc[4][16] __attribute__((aligned(64)));
    __m512 acc0[4], acc1[4];
    UNROLL for (int j = 0; j < NR; j++) {
        w[j] = a->w + (size_t)(r + j) * a->w_stride;
        s[j] = a->s + (size_t)(r + j) * a->s_stride;
        b[j] = a->b + (size_t)(r + j) * a->s_stride;
        acc0[j] = acc1[j] = _mm512_setzero_ps();
    }
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
        int ng = (int)(G - g0 < 16 ? G - g0 : 16);
        UNROLL for (int j = 0; j < NR; j++) _mm512_store_ps(sc[j], load_scales(s[j] + g0 * es, a->sdt, ng));
        for (int gi = 0; gi < ng; gi++) {
            const int64_t col = (g0 + gi) * gs;
            __m512 g[4];
            UNROLL for (int j = 0; j < NR; j++) {
                g[j] = _mm512_setzero_ps();
                _mm_prefetch((const char *)w[j] + (KIND == A4 ? col / 2 : col) + PF_DIST, _MM_HINT_T0);
            }
            UNROLL for (int c = 0; c < NCH; c++) {
                __m512 x0 = _mm512_loadu_ps(x + col + 32 * c), x1 = _mm512_loadu_ps(x + col + 32 * c + 16);
                UNROLL for (int j = 0; j < NR; j++) {
                    __m512 v0, v1;
                    affine_chunk(w[j], col + 32 * c, KIND, &v0, &v1);
                    g[j] = _mm512_fmadd_ps(v0, x0, g[j]);
                    g[j] = _mm512_fmadd_ps(v1, x1, g[j]);
                }
            }
            if (gi & 1) {
                UNROLL for (int j = 0; j < NR; j++) acc1[j] = _mm512_fmadd_ps(_mm512_set1_ps(sc[j][gi]), g[j], acc1[j]);
            } else {
                UNROLL for (int j = 0; j < NR; j++) acc0[j] = _mm512_fmadd_ps(_mm512_set1_ps(sc[j][gi]), g[j], acc0[j]);
            }
        }
    }
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
        int ng = (int)(G - g0 < 16 ? G - g0 : 16);
        __m512 xs = _mm512_maskz_loadu_ps(mask_n(ng), a->xsum[0] + g0);
        UNROLL for (int j = 0; j < NR; j++) acc1[j] = _mm512_fmadd_ps(load_scales(b[j] + g0 * es, a->sdt, ng), xs, acc1[j]);
    }
    UNROLL for (int j = 0; j < NR; j++) a->y[0][r + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[j], acc1[j]));
}

AI void affine_single(const qmm_args *a, const int KIND, const int NCH) {
    int64_t r = 0;
    for (; r + 4 <= a->n_rows; r += 4) affine_rows1(a, 4, KIND, NCH, r);
    for (; r < a->n_rows; r++) affine_rows1(a, 1, KIND, NCH, r);
}

/* Specialised on the group size (32, 64, 128: 1, 2, 4 chunks) so the chunk loop unrolls. */
#define AFFINE_ENTRY(name, KIND)                              \
    void name(const qmm_args *a) {                            \
        if (a->mb == 1 && KIND != AU8) {                      \
            switch (a->gs) {                                  \
            case 32: affine_single(a, KIND, 1); return;       \
            case 64: affine_single(a, KIND, 2); return;       \
            default: affine_single(a, KIND, 4); return;       \
            }                                                 \
        }                                                     \
        switch (a->gs) {                                      \
        case 32: DISPATCH_MB(affine_body, a, KIND, 1); break; \
        case 64: DISPATCH_MB(affine_body, a, KIND, 2); break; \
        default: DISPATCH_MB(affine_body, a, KIND, 4); break; \
        }                                                     \
    }
AFFINE_ENTRY(qmm_affine4_avx512, A4)
AFFINE_ENTRY(qmm_affine8_avx512, A8)
AFFINE_ENTRY(qmm_affine_u8_avx512, AU8)

/* ---- fp4: mxfp4 (gs 32, e8m0) and nvfp4 (gs 16, e4m3) ----------------------- */

AI void fp4_body(const qmm_args *a, const int MB, const int NV) {
    const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                      -3.0f, -4.0f, -6.0f);
    /* nvfp4: lanes 0-7 of a chunk belong to group 2j, lanes 8-15 to group 2j+1 */
    const __m512i half_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const int64_t K = a->K, G = K / a->gs;
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        __m512 acc0[QMM_MB], acc1[QMM_MB];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
        /* 16 scales cover 16 chunks (mxfp4) or 8 chunks (nvfp4) */
        const int64_t cols_per_block = NV ? 256 : 512;
        for (int64_t c0 = 0; c0 < K; c0 += cols_per_block) {
            int64_t g0 = c0 / a->gs;
            int ng = (int)(G - g0 < 16 ? G - g0 : 16);
            __m512 sv16 = NV ? load_e4m3(s + g0, ng) : load_e8m0(s + g0, ng);
            int64_t cend = c0 + cols_per_block < K ? c0 + cols_per_block : K;
            for (int64_t col = c0, j = 0; col < cend; col += 32, j++) {
                __m512i v;
                _mm_prefetch((const char *)w + col / 2 + PF_DIST, _MM_HINT_T0);
                if (col + 32 <= K)
                    v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + col / 2)));
                else
                    v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(0xFF, w + col / 2)); /* nvfp4 tail of 16 */
                __m512 v0 = _mm512_permutexvar_ps(v, lut);
                __m512 v1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
                __m512 sv =
                    NV ? _mm512_permutexvar_ps(_mm512_add_epi32(half_idx, _mm512_set1_epi32((int)(2 * j))), sv16)
                       : _mm512_permutexvar_ps(_mm512_set1_epi32((int)j), sv16);
                __m512 p[QMM_MB];
                UNROLL for (int i = 0; i < MB; i++) p[i] = _mm512_fmadd_ps(
                    v1, _mm512_loadu_ps(a->x[i] + col + 16), _mm512_mul_ps(v0, _mm512_loadu_ps(a->x[i] + col)));
                if (j & 1) {
                    UNROLL for (int i = 0; i < MB; i++) acc1[i] = _mm512_fmadd_ps(p[i], sv, acc1[i]);
                } else {
                    UNROLL for (int i = 0; i < MB; i++) acc0[i] = _mm512_fmadd_ps(p[i], sv, acc0[i]);
                }
            }
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
    }
}

AI void fp4_dispatch(const qmm_args *a, const int MB, int unused) {
    (void)unused;
    if (a->gs == 16)
        fp4_body(a, MB, 1);
    else
        fp4_body(a, MB, 0);
}

void qmm_fp4_avx512(const qmm_args *a) { DISPATCH_MB(fp4_dispatch, a, 0); }

/* ---- mxfp8 (gs 32, e4m3 elements, e8m0 scales) ------------------------------ */

AI void mxfp8_body(const qmm_args *a, const int MB, int unused) {
    (void)unused;
    const int64_t K = a->K, G = K / 32;
    float sc[16] __attribute__((aligned(64)));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        __m512 acc0[QMM_MB], acc1[QMM_MB];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
        for (int64_t g0 = 0; g0 < G; g0 += 16) {
            int ng = (int)(G - g0 < 16 ? G - g0 : 16);
            _mm512_store_ps(sc, load_e8m0(s + g0, ng));
            for (int gi = 0; gi < ng; gi++) {
                const int64_t col = (g0 + gi) * 32;
                _mm_prefetch((const char *)w + col + PF_DIST, _MM_HINT_T0);
                __m512 v0 = e4m3_to_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + col))));
                __m512 v1 = e4m3_to_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + col + 16))));
                const __m512 sv = _mm512_set1_ps(sc[gi]);
                __m512 p[QMM_MB];
                UNROLL for (int i = 0; i < MB; i++) p[i] = _mm512_fmadd_ps(
                    v1, _mm512_loadu_ps(a->x[i] + col + 16), _mm512_mul_ps(v0, _mm512_loadu_ps(a->x[i] + col)));
                if (gi & 1) {
                    UNROLL for (int i = 0; i < MB; i++) acc1[i] = _mm512_fmadd_ps(p[i], sv, acc1[i]);
                } else {
                    UNROLL for (int i = 0; i < MB; i++) acc0[i] = _mm512_fmadd_ps(p[i], sv, acc0[i]);
                }
            }
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
    }
}

void qmm_mxfp8_avx512(const qmm_args *a) { DISPATCH_MB(mxfp8_body, a, 0); }
