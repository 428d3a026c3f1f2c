/*
 * qkern_avx2.c — quantized matmul kernels for AVX2 + FMA + F16C.
 * Built with -mavx2 -mfma -mf16c; only called after cpu_level_current() >= CPU_AVX2.
 *
 * Same scheme as qkern_avx512.c with 8-lane vectors: a weight row is walked in
 * chunks of 16 elements decoded into two vectors of 8 f32 values.
 *   4-bit  8 bytes -> vpmovzxbd; low nibbles = the 8 even elements, high
 *          nibbles = the 8 odd ones (x prepared by qprep_nib16_avx2: evens then
 *          odds per 16 elements); fp4 codes map through an 8-entry magnitude
 *          table (vpermps) with the sign bit moved into place.
 *   8-bit  2 x 8 bytes -> vpmovzxbd; affine: vcvtdq2ps; e4m3 by moving the
 *          exponent and mantissa into an f32 and scaling by 2^120.
 *   other affine widths: unpacked to bytes first, then the 8-bit path.
 * With 16 vector registers a kernel call handles at most 4 activation rows;
 * bigger blocks are run as two calls. As in the AVX-512 kernels, each group is
 * one FMA chain and even/odd groups go to two accumulators, the same for every
 * block size, so batching never changes a row's result.
 */
#include <immintrin.h>

#include "quant/qkern.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")

enum { MB2 = 4 }; /* activation rows per pass */

/* ---- helpers --------------------------------------------------------------- */

/* n (1..8) elements of a float dtype as f32 lanes, zero beyond n. */
AI __m256 load_scales8(const uint8_t *p, dtype dt, int n) {
    size_t es = dt == DT_F32 ? 4 : 2;
    uint8_t buf[32] __attribute__((aligned(32))) = {0};
    memcpy(buf, p, (size_t)n * es);
    switch (dt) {
    case DT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)buf)), 16));
    case DT_F16: return _mm256_cvtph_ps(_mm_load_si128((const __m128i *)buf));
    default: return _mm256_load_ps((const float *)buf);
    }
}

AI __m256i load_bytes8(const uint8_t *p, int n) {
    uint8_t buf[8] = {0};
    memcpy(buf, p, (size_t)n);
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)buf));
}

AI __m256 e8m0_to_ps(__m256i v) {
    __m256i bits = _mm256_slli_epi32(v, 23);
    __m256i z = _mm256_cmpeq_epi32(v, _mm256_setzero_si256());
    return _mm256_castsi256_ps(_mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000), z));
}

/* e4m3 bytes (low 8 bits of each lane) to f32, MLX semantics (0x7F/0xFF -> NaN). */
AI __m256 e4m3_to_ps(__m256i v) {
    __m256i em = _mm256_and_si256(_mm256_slli_epi32(v, 20), _mm256_set1_epi32(0x07F00000));
    __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(em), _mm256_set1_ps(0x1p120f));
    __m256i sign = _mm256_and_si256(_mm256_slli_epi32(v, 24), _mm256_set1_epi32((int)0x80000000u));
    f = _mm256_xor_ps(f, _mm256_castsi256_ps(sign));
    __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x07F00000)));
    return _mm256_blendv_ps(f, _mm256_set1_ps(__builtin_nanf("")), nan);
}

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Run `body` on blocks of at most 4 activation rows, specialised on the count. */
#define DISPATCH_MB(body, a, ...)                               \
    do {                                                        \
        qmm_args sub_ = *(a);                                   \
        for (int i0_ = 0; i0_ < (a)->mb; i0_ += MB2) {          \
            int n_ = (a)->mb - i0_ < MB2 ? (a)->mb - i0_ : MB2; \
            for (int j_ = 0; j_ < n_; j_++) {                   \
                sub_.x[j_] = (a)->x[i0_ + j_];                  \
                sub_.xsum[j_] = (a)->xsum[i0_ + j_];            \
                sub_.y[j_] = (a)->y[i0_ + j_];                  \
            }                                                   \
            sub_.mb = n_;                                       \
            switch (n_) {                                       \
            case 1: body(&sub_, 1, __VA_ARGS__); break;         \
            case 2: body(&sub_, 2, __VA_ARGS__); break;         \
            case 3: body(&sub_, 3, __VA_ARGS__); break;         \
            default: body(&sub_, 4, __VA_ARGS__); break;        \
            }                                                   \
        }                                                       \
    } while (0)

/* ---- activation layout for the 4-bit kernels ------------------------------ */

void qprep_nib16_avx2(const float *x, int64_t K, float *xp) {
    const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        /* a = x0..x7, b = x8..x15 -> evens x0 x2 .. x14, odds x1 x3 .. x15 */
        __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + k), perm);     /* x0 x2 x4 x6 | x1 x3 x5 x7 */
        __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + k + 8), perm); /* x8 .. x14 | x9 .. x15 */
        _mm256_storeu_ps(xp + k, _mm256_permute2f128_ps(a, b, 0x20));
        _mm256_storeu_ps(xp + k + 8, _mm256_permute2f128_ps(a, b, 0x31));
    }
    for (int64_t j = k; j < qkern_prep_len(K); j++) xp[j] = 0.0f; /* K is a multiple of 16 */
}

/* ---- affine ---------------------------------------------------------------- */

enum { A4 = 4, A8 = 8, AU8 = 0 };
enum { SLICE = 8192 };
#define PF_DIST 2048 /* bytes of packed weights prefetched ahead (see qkern_avx512.c) */

AI void affine_chunk(const uint8_t *src, int64_t col, const int KIND, __m256 *v0, __m256 *v1) {
    if (KIND == A4) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + col / 2)));
        *v0 = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
        *v1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    } else {
        *v0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + col))));
        *v1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + col + 8))));
    }
}

AI void affine_group(const qmm_args *a, const int MB, const int KIND, const int NCH, const uint8_t *src,
                     int64_t src_col0, int64_t col, float scale, __m256 *acc) {
    __m256 g[MB2];
    UNROLL for (int i = 0; i < MB; i++) g[i] = _mm256_setzero_ps();
    if (KIND != AU8) _mm_prefetch((const char *)src + (KIND == A4 ? col / 2 : col) + PF_DIST, _MM_HINT_T0);
    for (int c = 0; c < NCH; c++) {
        __m256 v0, v1;
        affine_chunk(src, col + 16 * c - src_col0, KIND, &v0, &v1);
        UNROLL for (int i = 0; i < MB; i++) {
            g[i] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(a->x[i] + col + 16 * c), g[i]);
            g[i] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(a->x[i] + col + 16 * c + 8), g[i]);
        }
    }
    const __m256 s = _mm256_set1_ps(scale);
    UNROLL for (int i = 0; i < MB; i++) acc[i] = _mm256_fmadd_ps(s, g[i], acc[i]);
}

/* Groups [g0, g0 + ng) of one row (ng <= 8, g0 even): one chain per group,
 * even groups into acc0, odd into acc1; identical for every block size MB. */
AI void affine_groups(const qmm_args *a, const int MB, const int KIND, const int NCH, const uint8_t *src,
                      int64_t src_col0, int64_t g0, int ng, const float *sc, __m256 *acc0, __m256 *acc1) {
    const int gs = 16 * NCH;
    int gi = 0;
    for (; gi + 2 <= ng; gi += 2) {
        affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi) * gs, sc[gi], acc0);
        affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi + 1) * gs, sc[gi + 1], acc1);
    }
    if (gi < ng) affine_group(a, MB, KIND, NCH, src, src_col0, (g0 + gi) * gs, sc[gi], acc0);
}

AI void affine_body(const qmm_args *a, const int MB, const int KIND, const int NCH) {
    const int gs = 16 * NCH;
    const int64_t G = a->K / gs;
    const size_t es = dtype_size(a->sdt);
    uint8_t codes[SLICE];
    float sc[8] __attribute__((aligned(32)));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = a->b + (size_t)r * a->s_stride;
        __m256 acc0[MB2], acc1[MB2];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
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
            for (int64_t g0 = gs0; g0 < gend; g0 += 8) {
                int ng = (int)(gend - g0 < 8 ? gend - g0 : 8);
                _mm256_store_ps(sc, load_scales8(s + g0 * es, a->sdt, ng));
                affine_groups(a, MB, KIND, NCH, src, col0, g0, ng, sc, acc0, acc1);
            }
        }
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            int ng = (int)(G - g0 < 8 ? G - g0 : 8);
            __m256 bv = load_scales8(b + g0 * es, a->sdt, ng);
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(ng), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            UNROLL for (int i = 0; i < MB; i++) acc1[i] =
                _mm256_fmadd_ps(bv, _mm256_maskload_ps(a->xsum[i] + g0, m), acc1[i]);
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = hsum8(_mm256_add_ps(acc0[i], acc1[i]));
    }
}

/* Specialised on the group size (32, 64, 128: 2, 4, 8 chunks of 16). */
#define AFFINE_ENTRY(name, KIND)                              \
    void name(const qmm_args *a) {                            \
        switch (a->gs) {                                      \
        case 32: DISPATCH_MB(affine_body, a, KIND, 2); break; \
        case 64: DISPATCH_MB(affine_body, a, KIND, 4); break; \
        default: DISPATCH_MB(affine_body, a, KIND, 8); break; \
        }                                                     \
    }
AFFINE_ENTRY(qmm_affine4_avx2, A4)
AFFINE_ENTRY(qmm_affine8_avx2, A8)
AFFINE_ENTRY(qmm_affine_u8_avx2, AU8)

/* ---- fp4: mxfp4 (gs 32, e8m0) and nvfp4 (gs 16, e4m3) ----------------------- */

/* fp4 nibble in the low 4 bits of each lane (bits above are ignored) -> f32. */
AI __m256 fp4_to_ps(__m256i v, __m256 mag) {
    __m256 m = _mm256_permutevar8x32_ps(mag, v); /* uses bits 0-2 */
    __m256i sign = _mm256_and_si256(_mm256_slli_epi32(v, 28), _mm256_set1_epi32((int)0x80000000u));
    return _mm256_xor_ps(m, _mm256_castsi256_ps(sign));
}

AI void fp4_body(const qmm_args *a, const int MB, const int NV) {
    const __m256 mag = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const int gs = a->gs;
    const int64_t G = a->K / gs;
    const int nch = gs / 16;
    float sc[8] __attribute__((aligned(32)));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        __m256 acc0[MB2], acc1[MB2];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            int ng = (int)(G - g0 < 8 ? G - g0 : 8);
            __m256i sb = load_bytes8(s + g0, ng);
            _mm256_store_ps(sc, NV ? e4m3_to_ps(sb) : e8m0_to_ps(sb));
            for (int gi = 0; gi < ng; gi++) {
                const int64_t col = (g0 + gi) * gs;
                __m256 g[MB2];
                UNROLL for (int i = 0; i < MB; i++) g[i] = _mm256_setzero_ps();
                _mm_prefetch((const char *)w + col / 2 + PF_DIST, _MM_HINT_T0);
                for (int c = 0; c < nch; c++) {
                    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w + (col + 16 * c) / 2)));
                    __m256 v0 = fp4_to_ps(v, mag), v1 = fp4_to_ps(_mm256_srli_epi32(v, 4), mag);
                    UNROLL for (int i = 0; i < MB; i++) {
                        g[i] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(a->x[i] + col + 16 * c), g[i]);
                        g[i] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(a->x[i] + col + 16 * c + 8), g[i]);
                    }
                }
                const __m256 sv = _mm256_set1_ps(sc[gi]);
                if (gi & 1) {
                    UNROLL for (int i = 0; i < MB; i++) acc1[i] = _mm256_fmadd_ps(sv, g[i], acc1[i]);
                } else {
                    UNROLL for (int i = 0; i < MB; i++) acc0[i] = _mm256_fmadd_ps(sv, g[i], acc0[i]);
                }
            }
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = hsum8(_mm256_add_ps(acc0[i], acc1[i]));
    }
}

AI void fp4_dispatch(const qmm_args *a, const int MB, int unused) {
    (void)unused;
    if (a->gs == 16)
        fp4_body(a, MB, 1);
    else
        fp4_body(a, MB, 0);
}

void qmm_fp4_avx2(const qmm_args *a) { DISPATCH_MB(fp4_dispatch, a, 0); }

/* ---- mxfp8 ------------------------------------------------------------------ */

AI void mxfp8_body(const qmm_args *a, const int MB, int unused) {
    (void)unused;
    const int64_t G = a->K / 32;
    float sc[8] __attribute__((aligned(32)));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        __m256 acc0[MB2], acc1[MB2];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            int ng = (int)(G - g0 < 8 ? G - g0 : 8);
            _mm256_store_ps(sc, e8m0_to_ps(load_bytes8(s + g0, ng)));
            for (int gi = 0; gi < ng; gi++) {
                const int64_t col = (g0 + gi) * 32;
                _mm_prefetch((const char *)w + col + PF_DIST, _MM_HINT_T0);
                __m256 g[MB2];
                UNROLL for (int i = 0; i < MB; i++) g[i] = _mm256_setzero_ps();
                for (int c = 0; c < 4; c++) {
                    __m256 v = e4m3_to_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w + col + 8 * c))));
                    UNROLL for (int i = 0; i < MB; i++) {
                        __m256 x = _mm256_loadu_ps(a->x[i] + col + 8 * c);
                        g[i] = _mm256_fmadd_ps(v, x, g[i]);
                    }
                }
                const __m256 sv = _mm256_set1_ps(sc[gi]);
                if (gi & 1) {
                    UNROLL for (int i = 0; i < MB; i++) acc1[i] = _mm256_fmadd_ps(sv, g[i], acc1[i]);
                } else {
                    UNROLL for (int i = 0; i < MB; i++) acc0[i] = _mm256_fmadd_ps(sv, g[i], acc0[i]);
                }
            }
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = hsum8(_mm256_add_ps(acc0[i], acc1[i]));
    }
}

void qmm_mxfp8_avx2(const qmm_args *a) { DISPATCH_MB(mxfp8_body, a, 0); }
