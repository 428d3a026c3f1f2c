/*
 * qkern_q8_vnni.c — int8-activation kernels for affine 4- and 8-bit weights
 * with AVX-512 VNNI (vpdpbusd). Layout and semantics: qkern.h ("the
 * int8-activation path"); reference: qkern_q8.c. Only called when the CPU
 * reports AVX-512 F/BW/VL/DQ and VNNI.
 *
 * 4-bit: one 64-byte load of packed weights is 128 columns; its low nibbles
 * (& 15) are the even columns, the high nibbles the odd ones, matching the
 * prepared activations (64 even codes, then 64 odd). vpdpbusd gives per int32
 * lane the exact dot product of 8 consecutive columns with q1, and again with
 * q2; 8-bit: one load is 64 columns, 4 columns per lane. The lane integers
 * 256 Σ c q1 + Σ c q2 are converted to f32 and accumulated with the lane's
 * (d / 256) * s_group, alternating between
 * two accumulators per activation row (even and odd chunks) to hide FMA
 * latency. The operations on one activation row do not depend on how many
 * rows share the block.
 */
#include <immintrin.h>

#include "base/simd512.h"
#include "quant/qkern.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

#define PF_ROWS_BYTES 16384 /* single-row kernels: see q8_rows */
#ifndef PF_DIST
#define PF_DIST 2048 /* bytes of packed weights prefetched ahead (as qkern_avx512.c) */
#endif

AI __mmask16 mask_n(int n) { return (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u)); }
AI __mmask64 mask64_n(int n) { return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1); }

AI __m512 load_scales(const uint8_t *p, dtype dt, int n) {
    __mmask16 m = mask_n(n);
    switch (dt) {
    case DT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_maskz_loadu_ps(m, p);
    }
}

/* ---- activation preparation: the portable recipe, 32 columns at a time ---- */

#define RND_NEAR (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* a constant expression (clang needs one) */

/* q1, q2 of one block of 32 (two vectors of 16) and its d; same float
 * operations in the same order as qkern_q8.c's q8_blocks (no contraction). */
AI float q8_block(const float *x, __m512i *q1lo, __m512i *q1hi, __m512i *q2lo, __m512i *q2hi) {
    __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    float db = amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f, inv2 = inv * 256.0f;
    const __m512 vi = _mm512_set1_ps(inv), vi2 = _mm512_set1_ps(inv2), vd = _mm512_set1_ps(db);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    __m512 va = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(_mm512_mul_ps(a, vi), RND_NEAR), lo), hi);
    __m512 vb = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(_mm512_mul_ps(b, vi), RND_NEAR), lo), hi);
    __m512 ra = _mm512_mul_ps(_mm512_sub_ps(a, _mm512_mul_ps(vd, va)), vi2);
    __m512 rb = _mm512_mul_ps(_mm512_sub_ps(b, _mm512_mul_ps(vd, vb)), vi2);
    ra = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(ra, RND_NEAR), lo), hi);
    rb = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(rb, RND_NEAR), lo), hi);
    *q1lo = _mm512_cvtps_epi32(va), *q1hi = _mm512_cvtps_epi32(vb);
    *q2lo = _mm512_cvtps_epi32(ra), *q2hi = _mm512_cvtps_epi32(rb);
    return db;
}

void qprep_q8b_vnni(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    for (int64_t c = 0; c < K; c += 32) {
        __m512i a1, b1, a2, b2;
        float d = q8_block(x + c, &a1, &b1, &a2, &b2) / 256.0f;
        _mm_storeu_si128((__m128i *)(o1 + c), _mm512_cvtepi32_epi8(a1));
        _mm_storeu_si128((__m128i *)(o1 + c + 16), _mm512_cvtepi32_epi8(b1));
        _mm_storeu_si128((__m128i *)(o2 + c), _mm512_cvtepi32_epi8(a2));
        _mm_storeu_si128((__m128i *)(o2 + c + 16), _mm512_cvtepi32_epi8(b2));
        _mm256_storeu_ps(ls + c / 4, _mm256_set1_ps(d)); /* 8 lanes of 4 columns */
    }
}

void qprep_q8n_vnni(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int64_t c0 = 0; c0 < K; c0 += 128) {
        int64_t L = K - c0 < 128 ? K - c0 : 128;
        for (int64_t b = 0; b < L / 32; b++) {
            __m512i a1, b1, a2, b2;
            float d = q8_block(x + c0 + 32 * b, &a1, &b1, &a2, &b2) / 256.0f;
            /* block b holds columns 32b .. 32b+31 of the chunk: evens go to 16b.., odds to L/2 + 16b.. */
            int64_t e = c0 + 16 * b, o = c0 + L / 2 + 16 * b;
            _mm_storeu_si128((__m128i *)(o1 + e), _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a1, ev, b1)));
            _mm_storeu_si128((__m128i *)(o1 + o), _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a1, od, b1)));
            _mm_storeu_si128((__m128i *)(o2 + e), _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a2, ev, b2)));
            _mm_storeu_si128((__m128i *)(o2 + o), _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(a2, od, b2)));
            _mm_storeu_ps(ls + (c0 + 32 * b) / 8, _mm_set1_ps(d)); /* 4 lanes of 8 columns */
        }
    }
}

/* One chunk of one weight row for all MB activation rows. BITS 4: CH = 128
 * columns, 8 per lane; BITS 8: CH = 64 columns, 4 per lane. */
AI void q8_chunk(const qmm_args *a, const int MB, const int BITS, const uint8_t *w, int64_t c0, int L, __m512 swl,
                 __m512 *acc) {
    const int64_t K = a->K;
    const int LW = BITS == 4 ? 8 : 4;
    if (BITS == 4) {
        __mmask64 bm = mask64_n(L / 2);
        __m512i wv = _mm512_maskz_loadu_epi8(bm, w + c0 / 2);
        _mm_prefetch((const char *)w + c0 / 2 + PF_DIST, _MM_HINT_T0);
        const __m512i m0f = _mm512_set1_epi8(0x0F);
        __m512i lo = _mm512_and_si512(wv, m0f), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
        UNROLL for (int i = 0; i < MB; i++) {
            const int8_t *xq = (const int8_t *)a->x[i];
            const float *xl = (const float *)((const uint8_t *)a->x[i] + Q8_SCALES_OFF(K));
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_maskz_loadu_epi8(bm, xq + c0));
            is = _mm512_dpbusd_epi32(is, hi, _mm512_maskz_loadu_epi8(bm, xq + c0 + L / 2));
            is = _mm512_dpbusd_epi32(_mm512_slli_epi32(is, 8), lo, _mm512_maskz_loadu_epi8(bm, xq + K + c0));
            is = _mm512_dpbusd_epi32(is, hi, _mm512_maskz_loadu_epi8(bm, xq + K + c0 + L / 2));
            __m512 dl = _mm512_maskz_loadu_ps(mask_n(L / LW), xl + c0 / LW);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dl, swl), acc[i]);
        }
    } else {
        __mmask64 bm = mask64_n(L);
        __m512i wv = _mm512_maskz_loadu_epi8(bm, w + c0);
        _mm_prefetch((const char *)w + c0 + PF_DIST, _MM_HINT_T0);
        UNROLL for (int i = 0; i < MB; i++) {
            const int8_t *xq = (const int8_t *)a->x[i];
            const float *xl = (const float *)((const uint8_t *)a->x[i] + Q8_SCALES_OFF(K));
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, _mm512_maskz_loadu_epi8(bm, xq + c0));
            is = _mm512_dpbusd_epi32(_mm512_slli_epi32(is, 8), wv, _mm512_maskz_loadu_epi8(bm, xq + K + c0));
            __m512 dl = _mm512_maskz_loadu_ps(mask_n(L / LW), xl + c0 / LW);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dl, swl), acc[i]);
        }
    }
}

AI void q8_body(const qmm_args *a, const int MB, const int BITS, const int LG) {
    const int GS = 1 << LG;
    const int CH = BITS == 4 ? 128 : 64, LW = BITS == 4 ? 8 : 4;
    const int64_t K = a->K, G = K / GS;
    const size_t es = dtype_size(a->sdt);
    const __m512i lanepos = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(LW));
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = a->b + (size_t)r * a->s_stride;
        __m512 acc0[QMM_MB], acc1[QMM_MB];
        UNROLL for (int i = 0; i < MB; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
        /* windows of 16 groups (16 * GS columns, a multiple of CH) share one scale vector */
        for (int64_t g0 = 0; g0 < G; g0 += 16) {
            int ng = (int)(G - g0 < 16 ? G - g0 : 16);
            __m512 sv = load_scales(s + g0 * es, a->sdt, ng);
            int64_t cend = (g0 + ng) * GS, c0 = g0 * GS;
            const __m512i base = _mm512_set1_epi32((int)(g0 * GS));
            for (; c0 < cend; c0 += 2 * CH) {
                int L = (int)(cend - c0 < CH ? cend - c0 : CH);
                __m512i idx = _mm512_srli_epi32(_mm512_sub_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)c0), lanepos), base), LG);
                q8_chunk(a, MB, BITS, w, c0, L, _mm512_permutexvar_ps(idx, sv), acc0);
                if (c0 + CH < cend) {
                    int64_t c1 = c0 + CH;
                    int L1 = (int)(cend - c1 < CH ? cend - c1 : CH);
                    idx = _mm512_srli_epi32(_mm512_sub_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)c1), lanepos), base), LG);
                    q8_chunk(a, MB, BITS, w, c1, L1, _mm512_permutexvar_ps(idx, sv), acc1);
                }
            }
        }
        /* bias terms: sum_g b_g * xsum_g with the exact f32 group sums */
        for (int64_t g0 = 0; g0 < G; g0 += 16) {
            int ng = (int)(G - g0 < 16 ? G - g0 : 16);
            __m512 bv = load_scales(b + g0 * es, a->sdt, ng);
            UNROLL for (int i = 0; i < MB; i++) acc1[i] =
                _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(mask_n(ng), a->xsum[i] + g0), acc1[i]);
        }
        UNROLL for (int i = 0; i < MB; i++) a->y[i][r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
    }
}


/* ---- one activation row (decode): NR weight rows per pass over x ------------
 * With a single activation row the loads of x (codes and lane scales) would
 * outnumber the weight bytes; NR rows share each x load. */
/* One chunk of NR weight rows against the single activation row. */
AI void q8_rows_chunk(const int NR, const int BITS, const int LG, const uint8_t *const *w, const int8_t *xq,
                      const int8_t *xq2, const float *xl, const __m512 *sv, __m512i lanepos, __m512i base, int64_t c0,
                      int L, __m512 *acc /* [NR] */, size_t pf, const int FULL) {
    const int LW = BITS == 4 ? 8 : 4;
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    __m512i idx = _mm512_srli_epi32(_mm512_sub_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)c0), lanepos), base), LG);
    __m512 dl = FULL ? _mm512_loadu_ps(xl + c0 / LW) : _mm512_maskz_loadu_ps(mask_n(L / LW), xl + c0 / LW);
    if (BITS == 4) {
        __mmask64 bm = FULL ? ~(__mmask64)0 : mask64_n(L / 2);
#define LD8(p) (FULL ? _mm512_loadu_si512((const void *)(p)) : _mm512_maskz_loadu_epi8(bm, (p)))
        __m512i xe = LD8(xq + c0), xo = LD8(xq + c0 + L / 2);
        __m512i xe2 = LD8(xq2 + c0), xo2 = LD8(xq2 + c0 + L / 2);
        UNROLL for (int j = 0; j < NR; j++) {
            __m512i wv = LD8(w[j] + c0 / 2);
            _mm_prefetch((const char *)w[j] + c0 / 2 + pf, _MM_HINT_T1);
            __m512i lo = _mm512_and_si512(wv, m0f), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
            __m512i is = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xe), hi, xo);
            is = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_slli_epi32(is, 8), lo, xe2), hi, xo2);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dl, _mm512_permutexvar_ps(idx, sv[j])), acc[j]);
        }
    } else {
        __mmask64 bm = FULL ? ~(__mmask64)0 : mask64_n(L);
        __m512i xv = LD8(xq + c0), xv2 = LD8(xq2 + c0);
        UNROLL for (int j = 0; j < NR; j++) {
            __m512i wv = LD8(w[j] + c0);
            _mm_prefetch((const char *)w[j] + c0 + pf, _MM_HINT_T1);
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
            is = _mm512_dpbusd_epi32(_mm512_slli_epi32(is, 8), wv, xv2);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dl, _mm512_permutexvar_ps(idx, sv[j])), acc[j]);
        }
    }
}

#undef LD8

AI void q8_rows(const qmm_args *a, const int NR, const int BITS, const int LG, int64_t r) {
    const int GS = 1 << LG;
    const int CH = BITS == 4 ? 128 : 64, LW = BITS == 4 ? 8 : 4;
    const int64_t K = a->K, G = K / GS;
    const size_t es = dtype_size(a->sdt);
    const __m512i lanepos = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(LW));
    const int8_t *xq = (const int8_t *)a->x[0], *xq2 = xq + K;
    const float *xl = (const float *)((const uint8_t *)a->x[0] + Q8_SCALES_OFF(K));
    const uint8_t *w[4], *s[4], *b[4];
    /* Software prefetch (prefetcht1) of the same line in the row block (NR
     * rows) at least 16 KB and 2 blocks ahead: measured best for streaming
     * 4-bit weights from DRAM on one Zen 4 core (about 19-24 GB/s for rows
     * of 512 to 1792 bytes; prefetcht0, or 2 KB ahead within the row: 8-10). */
    const size_t blk = (size_t)NR * a->w_stride, nb = (PF_ROWS_BYTES + blk - 1) / blk;
    const size_t pf = blk * (nb > 2 ? nb : 2);
    __m512 acc0[4], acc1[4];
    UNROLL for (int j = 0; j < NR; j++) {
        w[j] = a->w + (size_t)(r + j) * a->w_stride;
        s[j] = a->s + (size_t)(r + j) * a->s_stride;
        b[j] = a->b + (size_t)(r + j) * a->s_stride;
        acc0[j] = acc1[j] = _mm512_setzero_ps();
    }
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
        int ng = (int)(G - g0 < 16 ? G - g0 : 16);
        __m512 sv[4];
        UNROLL for (int j = 0; j < NR; j++) sv[j] = load_scales(s[j] + g0 * es, a->sdt, ng);
        const int64_t cend = (g0 + ng) * GS;
        const __m512i base = _mm512_set1_epi32((int)(g0 * GS));
        /* the same chunk-to-accumulator assignment as q8_body (batching invariance) */
        int64_t c0 = g0 * GS;
        for (; c0 + 2 * CH <= cend; c0 += 2 * CH) {
            q8_rows_chunk(NR, BITS, LG, w, xq, xq2, xl, sv, lanepos, base, c0, CH, acc0, pf, 1);
            q8_rows_chunk(NR, BITS, LG, w, xq, xq2, xl, sv, lanepos, base, c0 + CH, CH, acc1, pf, 1);
        }
        if (c0 < cend) {
            q8_rows_chunk(NR, BITS, LG, w, xq, xq2, xl, sv, lanepos, base, c0, (int)(cend - c0 < CH ? cend - c0 : CH), acc0, pf, 0);
            if (c0 + CH < cend)
                q8_rows_chunk(NR, BITS, LG, w, xq, xq2, xl, sv, lanepos, base, c0 + CH, (int)(cend - c0 - CH), acc1, pf, 0);
        }
    }
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
        int ng = (int)(G - g0 < 16 ? G - g0 : 16);
        __m512 xs = _mm512_maskz_loadu_ps(mask_n(ng), a->xsum[0] + g0);
        UNROLL for (int j = 0; j < NR; j++) acc1[j] = _mm512_fmadd_ps(load_scales(b[j] + g0 * es, a->sdt, ng), xs, acc1[j]);
    }
    if (NR == 4)
        _mm_storeu_ps(a->y[0] + r, simd512_reduce4(_mm512_add_ps(acc0[0], acc1[0]), _mm512_add_ps(acc0[1], acc1[1]),
                                                   _mm512_add_ps(acc0[2], acc1[2]), _mm512_add_ps(acc0[3], acc1[3])));
    else
        UNROLL for (int j = 0; j < NR; j++) a->y[0][r + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[j], acc1[j]));
}

AI void q8_single(const qmm_args *a, const int BITS, const int LG) {
    int64_t r = 0;
    for (; r + 4 <= a->n_rows; r += 4) q8_rows(a, 4, BITS, LG, r);
    for (; r < a->n_rows; r++) q8_rows(a, 1, BITS, LG, r);
}

#define DISPATCH_MB(a, ...)                              \
    switch ((a)->mb) {                                   \
    case 1: q8_single(a, __VA_ARGS__); break;            \
    case 2: q8_body(a, 2, __VA_ARGS__); break;           \
    case 3: q8_body(a, 3, __VA_ARGS__); break;           \
    case 4: q8_body(a, 4, __VA_ARGS__); break;           \
    case 5: q8_body(a, 5, __VA_ARGS__); break;           \
    case 6: q8_body(a, 6, __VA_ARGS__); break;           \
    case 7: q8_body(a, 7, __VA_ARGS__); break;           \
    default: q8_body(a, 8, __VA_ARGS__); break;          \
    }

#define Q8_ENTRY(name, BITS)                        \
    void name(const qmm_args *a) {                  \
        switch (a->gs) {                            \
        case 32: DISPATCH_MB(a, BITS, 5); break;    \
        case 64: DISPATCH_MB(a, BITS, 6); break;    \
        default: DISPATCH_MB(a, BITS, 7); break;    \
        }                                           \
    }
Q8_ENTRY(qmm_q8n_vnni, 4)
Q8_ENTRY(qmm_q8b_vnni, 8)
