/*
 * qkern_q8_avx2.c — int8-activation kernels for affine 4- and 8-bit weights
 * with AVX2 (+ FMA, F16C for the scale loads). Layout and semantics: qkern.h
 * ("the int8-activation path"); reference: qkern_q8.c. Only called after
 * cpu_level_current() >= CPU_AVX2.
 *
 * The results are bit-identical to qmm_q8n_portable / qmm_q8b_portable: the
 * per-lane integers are exact, each lane's f32 accumulation is the
 * reference's (mul, then add, chunk after chunk), and the bias sum and the
 * final lane sum run in the reference's sequential order, four outputs at a
 * time in the lanes of a 128-bit vector. Batching invariance follows.
 *
 * A "piece" is one 32-byte load of packed weights; a chunk (qkern.h) is two.
 *   4-bit  a piece is 64 columns of a 128-column chunk: its low nibbles meet
 *          32 even-column codes, its high nibbles the 32 matching odd-column
 *          codes; vpmaddubsw (u8 x s8 -> s16 pairs) cannot saturate
 *          (2 * 15 * 127 = 3810, and the even + odd sum is at most 7620), and
 *          vpmaddwd (by 256 for q1, by 1 for q2) gives per int32 lane the
 *          exact dot product of 8 columns: portable lane 8h + m of the chunk
 *          for piece h.
 *   8-bit  vpmaddubsw would saturate (2 * 255 * 127 > 32767), so the bytes
 *          are widened instead: the even bytes of each 16-bit word (& 0xFF)
 *          and the odd ones (>> 8) as zero-extended weights meet the two
 *          codes joined into one s16, 256 q1 + q2 (at most 32639 in
 *          magnitude), in vpmaddwd (s16 x s16 -> s32 pairs, exact); the even
 *          and odd results add up to the lane integer of 4 columns. A piece
 *          is 32 columns, portable lanes 8h + m of a 64-column chunk.
 * The lane integer is 256 i1 + i2 (i1 from q1, i2 from q2), as in the
 * reference. The weight row's scales come from 8-group windows (8 * gs
 * columns, a multiple of a chunk), kept as f32 on the stack so that a piece
 * takes its group's scale with a broadcast load.
 *
 * Decode (mb = 1) runs 4 weight rows per pass over x, sharing the x loads;
 * the bias sums advance one window at a time inside the main loop, which
 * hides their sequential adds behind the products (ahead of it, the bias
 * chain cost about 15% on 1024-column rows). Blocks of activation rows: for
 * 4-bit, each weight row meets up to 4 of them (its nibbles split once); for
 * 8-bit, the decode path runs once per row (see q8_entry).
 *
 * Measured on one Zen 3 core (20 GB/s read bandwidth), weights streamed from
 * DRAM: 4-bit 9-11 GB/s, 8-bit 13-15 GB/s; from L2 4-bit about 14 GB/s,
 * 8-bit about 21; the f32-activation kernels (qkern_avx2.c) stream about
 * 4 and 8-11 GB/s. For blocks of many rows (prefill) the f32 kernels keep up:
 * 4-bit about equal, 8-bit about 1.4x faster than this path.
 */
#include <immintrin.h>

#include "quant/qkern.h"

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")

/* Outputs per pass: weight rows (mb = 1; 2 or 3 measured slower) or
 * activation rows (mb > 1); also the lanes of the sequential sums. */
enum { NB = 4 };
#ifndef PF_ROWS_BYTES
#define PF_ROWS_BYTES 16384 /* single-row kernels: prefetch distance, see q8_rows */
#endif

/* ---- helpers --------------------------------------------------------------- */

/* Scale elements (BF16, F16 or F32): bytes per element. */
AI size_t scale_size(dtype dt) { return dt == DT_F32 ? 4 : 2; }

/* 8 elements of a scale dtype as f32 lanes. */
AI __m256 load_scales8_full(const uint8_t *p, dtype dt) {
    switch (dt) {
    case DT_BF16: return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    case DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_loadu_ps((const float *)p);
    }
}

/* The short last window of a row: kept out of line (its zeroed buffer would
 * otherwise be set up on every call). */
static __attribute__((noinline)) __m256 load_scales8_part(const uint8_t *p, dtype dt, int n) {
    uint8_t buf[32] __attribute__((aligned(32))) = {0};
    memcpy(buf, p, (size_t)n * scale_size(dt));
    return load_scales8_full(buf, dt);
}

/* n (1..8) elements of a scale dtype as f32 lanes, zero beyond n. */
AI __m256 load_scales8(const uint8_t *p, dtype dt, int n) {
    return n == 8 ? load_scales8_full(p, dt) : load_scales8_part(p, dt, n);
}

static __attribute__((noinline)) __m256 load_f32_part(const float *p, int n) {
    float buf[8] __attribute__((aligned(32))) = {0};
    memcpy(buf, p, (size_t)n * sizeof(float));
    return _mm256_load_ps(buf);
}

AI __m256 load_f32n(const float *p, int n) { return n == 8 ? _mm256_loadu_ps(p) : load_f32_part(p, n); }

/* ---- the sequential sums (bias, lanes) -------------------------------------
 * The reference adds its terms one after another; four outputs advance
 * together in the lanes of a 128-bit vector. Inputs arrive as four 8-wide
 * rows (one per output), transposed in registers: u_k = (column k of the four
 * rows | column k + 4). */

AI void transpose4x8(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 *u) {
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1); /* 0 0 1 1 | 4 4 5 5; 2 2 3 3 | 6 6 7 7 */
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    u[0] = _mm256_shuffle_ps(t0, t2, 0x44), u[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    u[2] = _mm256_shuffle_ps(t1, t3, 0x44), u[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/* acc + column 0 + column 1 + ... + column n-1, in that order. */
AI __m128 add_columns(__m128 acc, const __m256 *u, int n) {
    UNROLL for (int k = 0; k < 4; k++) if (k < n) acc = _mm_add_ps(acc, _mm256_castps256_ps128(u[k]));
    UNROLL for (int k = 0; k < 4; k++) if (k + 4 < n) acc = _mm_add_ps(acc, _mm256_extractf128_ps(u[k], 1));
    return acc;
}

/* (x[k] four times | x[k + 4] four times) */
AI __m256 spread2(const float *x, int k) { return _mm256_set_m128(_mm_broadcast_ss(x + k + 4), _mm_broadcast_ss(x + k)); }

/* Bias terms b[g] * xs[g] of groups g0 .. g0+n-1 (n <= 8) added to the four
 * sums, as the reference (each product rounded, then added). Either four
 * weight rows meet one activation row (one xs, b[k] per output), or one
 * weight row meets four (one b, xs[k] per output). */
AI __m128 bias_window(__m128 acc, const uint8_t *const *b, dtype dt, const float *const *xs, int64_t g0, int n,
                      const int ROWS) {
    const size_t es = scale_size(dt);
    __m256 u[4];
    if (ROWS && n == 8) {
        transpose4x8(load_scales8_full(b[0] + g0 * es, dt), load_scales8_full(b[1] + g0 * es, dt),
                     load_scales8_full(b[2] + g0 * es, dt), load_scales8_full(b[3] + g0 * es, dt), u);
        UNROLL for (int k = 0; k < 4; k++) u[k] = _mm256_mul_ps(u[k], spread2(xs[0] + g0, k));
        return add_columns(acc, u, 8);
    }
    float t[8] __attribute__((aligned(32))) = {0};
    if (ROWS) {
        memcpy(t, xs[0] + g0, (size_t)n * sizeof(float));
        transpose4x8(load_scales8(b[0] + g0 * es, dt, n), load_scales8(b[1] + g0 * es, dt, n),
                     load_scales8(b[2] + g0 * es, dt, n), load_scales8(b[3] + g0 * es, dt, n), u);
    } else {
        _mm256_store_ps(t, load_scales8(b[0] + g0 * es, dt, n));
        transpose4x8(load_f32n(xs[0] + g0, n), load_f32n(xs[1] + g0, n), load_f32n(xs[2] + g0, n),
                     load_f32n(xs[3] + g0, n), u);
    }
    UNROLL for (int k = 0; k < 4; k++) u[k] = _mm256_mul_ps(u[k], spread2(t, k));
    return add_columns(acc, u, n);
}

/* y_k = bias_k + lane 0 + ... + lane 15 of output k (lanes 0..7 in lo[k], 8..15 in hi[k]). */
AI __m128 finish4(__m128 bias, const __m256 *lo, const __m256 *hi) {
    __m256 u[4];
    transpose4x8(lo[0], lo[1], lo[2], lo[3], u);
    bias = add_columns(bias, u, 8);
    transpose4x8(hi[0], hi[1], hi[2], hi[3], u);
    return add_columns(bias, u, 8);
}

/* ---- activation preparation: the portable recipe, 32 columns at a time ---- */

#define RND_NEAR (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* q1, q2 (as int32 lanes) of 8 values, given the block's 1/d and 256/d. */
AI void q8_codes(__m256 v, __m256 vi, __m256 vi2, __m256 vd, __m256i *c1, __m256i *c2) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256 a = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v, vi), RND_NEAR), lo), hi);
    __m256 r = _mm256_mul_ps(_mm256_sub_ps(v, _mm256_mul_ps(vd, a)), vi2);
    r = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(r, RND_NEAR), lo), hi);
    *c1 = _mm256_cvtps_epi32(a), *c2 = _mm256_cvtps_epi32(r);
}

/* 32 int32 lanes in [-127, 127] to bytes in order (packs work per 128-bit
 * lane: the 4-column runs come out as 0 2 4 6 1 3 5 7). */
AI __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i fix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d)), fix);
}

/* q1 and q2 of one block of 32 columns as bytes in natural order, and d:
 * the same float operations in the same order as qkern_q8.c's q8_blocks.
 * (Named vectors, not arrays: GCC copied an array of loads through the
 * stack in 16-byte halves and stalled on the 32-byte reloads.) */
AI float q8_block(const float *x, __m256i *q1, __m256i *q2) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absm), _mm256_and_ps(v1, absm)),
                             _mm256_max_ps(_mm256_and_ps(v2, absm), _mm256_and_ps(v3, absm)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float db = amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f, inv2 = inv * 256.0f;
    const __m256 vi = _mm256_set1_ps(inv), vi2 = _mm256_set1_ps(inv2), vd = _mm256_set1_ps(db);
    __m256i a0, a1, a2, a3, b0, b1, b2, b3;
    q8_codes(v0, vi, vi2, vd, &a0, &b0);
    q8_codes(v1, vi, vi2, vd, &a1, &b1);
    q8_codes(v2, vi, vi2, vd, &a2, &b2);
    q8_codes(v3, vi, vi2, vd, &a3, &b3);
    *q1 = pack32(a0, a1, a2, a3);
    *q2 = pack32(b0, b1, b2, b3);
    return db;
}

void qprep_q8b_avx2(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    for (int64_t c = 0; c < K; c += 32) {
        __m256i q1, q2;
        float d = q8_block(x + c, &q1, &q2) / 256.0f;
        _mm256_storeu_si256((__m256i *)(o1 + c), q1);
        _mm256_storeu_si256((__m256i *)(o2 + c), q2);
        _mm256_storeu_ps(ls + c / 4, _mm256_set1_ps(d)); /* 8 lanes of 4 columns */
    }
}

void qprep_q8n_avx2(const float *x, int64_t K, float *xp) {
    int8_t *o1 = (int8_t *)xp, *o2 = o1 + K;
    float *ls = (float *)((uint8_t *)xp + Q8_SCALES_OFF(K));
    /* per 128-bit lane: the 8 even bytes, then the 8 odd; then evens of both lanes first */
    const __m256i eo = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1,
                                        3, 5, 7, 9, 11, 13, 15);
    for (int64_t c0 = 0; c0 < K; c0 += 128) {
        int64_t L = K - c0 < 128 ? K - c0 : 128;
        for (int64_t b = 0; b < L / 32; b++) {
            __m256i q1, q2;
            float d = q8_block(x + c0 + 32 * b, &q1, &q2) / 256.0f;
            q1 = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(q1, eo), 0xD8); /* 16 evens | 16 odds */
            q2 = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(q2, eo), 0xD8);
            /* block b holds columns 32b .. 32b+31 of the chunk: evens go to 16b.., odds to L/2 + 16b.. */
            int64_t e = c0 + 16 * b, o = c0 + L / 2 + 16 * b;
            _mm_storeu_si128((__m128i *)(o1 + e), _mm256_castsi256_si128(q1));
            _mm_storeu_si128((__m128i *)(o1 + o), _mm256_extracti128_si256(q1, 1));
            _mm_storeu_si128((__m128i *)(o2 + e), _mm256_castsi256_si128(q2));
            _mm_storeu_si128((__m128i *)(o2 + o), _mm256_extracti128_si256(q2, 1));
            _mm_storeu_ps(ls + (c0 + 32 * b) / 8, _mm_set1_ps(d)); /* 4 lanes of 8 columns */
        }
    }
}

/* ---- lane integers ----------------------------------------------------------
 * 256 i1 + i2 per int32 lane for one piece of packed weights. */

/* 4-bit: lo/hi = the nibbles of a piece; xe*, xo* = 32 even / odd codes of q1, q2. */
AI __m256i dot4(__m256i lo, __m256i hi, __m256i xe1, __m256i xo1, __m256i xe2, __m256i xo2) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xe1), _mm256_maddubs_epi16(hi, xo1));
    __m256i p2 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xe2), _mm256_maddubs_epi16(hi, xo2));
    return _mm256_add_epi32(_mm256_madd_epi16(p1, _mm256_set1_epi16(256)), _mm256_madd_epi16(p2, ones));
}

/* 8-bit: we/wo = even/odd weight bytes as u16; xe/xo = 256 q1 + q2 of the
 * even/odd columns as s16 (see join8). Products and pair sums are exact:
 * 2 * 255 * 32639 < 2^31, twice over for the even + odd sum. */
AI __m256i dot8(__m256i we, __m256i wo, __m256i xe, __m256i xo) {
    return _mm256_add_epi32(_mm256_madd_epi16(we, xe), _mm256_madd_epi16(wo, xo));
}

AI void split4(__m256i wv, __m256i *lo, __m256i *hi) {
    const __m256i m0f = _mm256_set1_epi8(0x0F);
    *lo = _mm256_and_si256(wv, m0f), *hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m0f);
}
AI void split8(__m256i v, __m256i *e, __m256i *o) {
    *e = _mm256_and_si256(v, _mm256_set1_epi16(0xFF)), *o = _mm256_srli_epi16(v, 8);
}
/* The two codes of 32 columns joined into one s16 per column, 256 q1 + q2
 * (|.| <= 256 * 127 + 127 = 32639: no overflow), even and odd columns apart. */
AI void join8(const int8_t *q1p, const int8_t *q2p, __m256i *e, __m256i *o) {
    __m256i q1 = _mm256_loadu_si256((const __m256i *)q1p), q2 = _mm256_loadu_si256((const __m256i *)q2p);
    *e = _mm256_add_epi16(_mm256_slli_epi16(q1, 8), _mm256_srai_epi16(_mm256_slli_epi16(q2, 8), 8));
    *o = _mm256_add_epi16(_mm256_and_si256(q1, _mm256_set1_epi16((short)0xFF00)), _mm256_srai_epi16(q2, 8));
}

/* 32 bytes, or 16 zero-extended (a half piece at the end of a 4-bit row). */
AI __m256i load_piece(const void *p, const int FULL) {
    return FULL ? _mm256_loadu_si256((const __m256i *)p) : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)p));
}

/* acc += (f32) is * (dl * sw), as the reference: two roundings, no FMA. A
 * half piece's upper lanes are masked so that they add exactly nothing. */
AI __m256 acc_lanes(__m256 acc, __m256i is, __m256 dl, __m256 sw, const int FULL) {
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dl, sw));
    if (!FULL) p = _mm256_and_ps(p, _mm256_castsi256_ps(_mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0)));
    return _mm256_add_ps(acc, p);
}

/* ---- geometry of a piece ----------------------------------------------------
 * Piece h of the chunk at column c0 (length L): weight byte offset, code
 * offsets (4-bit: evens, odds), first lane, and the column of its lane 0. */
typedef struct piece {
    int64_t wo, xe, xo, lane0, col;
} piece;

AI piece piece_at(const int BITS, int64_t c0, int L, int h) {
    piece p;
    if (BITS == 4) {
        p.wo = c0 / 2 + 32 * h, p.xe = c0 + 32 * h, p.xo = c0 + L / 2 + 32 * h;
        p.lane0 = c0 / 8 + 8 * h, p.col = c0 + 64 * h;
    } else {
        p.wo = c0 + 32 * h, p.xe = p.xo = c0 + 32 * h;
        p.lane0 = c0 / 4 + 8 * h, p.col = c0 + 32 * h;
    }
    return p;
}

/* ---- one activation row (decode): NB weight rows per pass over x ----------
 * With a single activation row the loads of x (codes and lane scales) would
 * outnumber the weight bytes; NB rows share each x load and its widening.
 * The rows' scales of the current window wait as f32 in sf, so that a piece
 * within one group takes its scale with a broadcast load. */

/* Lane scales s_group of row j for a piece: one group (8-bit; 4-bit with
 * gs >= 64), or two (4-bit, gs 32: lanes 0-3 and 4-7). g + 1 stays inside
 * the window: a full piece starts on an even group, and a half piece only
 * ends a row whose last window is short (K % 128 = 32 or 96). */
AI __m256 piece_scales(const int BITS, const int LG, const float *sf, int64_t col, int64_t base) {
    int g = (int)((col - base) >> LG);
    if (BITS == 4 && LG == 5) return _mm256_set_m128(_mm_broadcast_ss(sf + g + 1), _mm_broadcast_ss(sf + g));
    return _mm256_broadcast_ss(sf + g);
}

AI void rows_piece(const int BITS, const int LG, const int FULL, const uint8_t *const *w, const int8_t *xq,
                   const int8_t *xq2, const float *xl, const float (*sf)[8], int64_t base, piece p,
                   __m256 *acc /* [NB] */) {
    __m256 dl = FULL ? _mm256_loadu_ps(xl + p.lane0) : _mm256_castps128_ps256(_mm_loadu_ps(xl + p.lane0));
    if (BITS == 4) {
        __m256i xe1 = load_piece(xq + p.xe, FULL), xo1 = load_piece(xq + p.xo, FULL);
        __m256i xe2 = load_piece(xq2 + p.xe, FULL), xo2 = load_piece(xq2 + p.xo, FULL);
        UNROLL for (int j = 0; j < NB; j++) {
            __m256i lo, hi;
            split4(load_piece(w[j] + p.wo, FULL), &lo, &hi);
            __m256i is = dot4(lo, hi, xe1, xo1, xe2, xo2);
            acc[j] = acc_lanes(acc[j], is, dl, piece_scales(BITS, LG, sf[j], p.col, base), FULL);
        }
    } else {
        __m256i xe, xo;
        join8(xq + p.xe, xq2 + p.xe, &xe, &xo);
        UNROLL for (int j = 0; j < NB; j++) {
            __m256i we, wo;
            split8(_mm256_loadu_si256((const __m256i *)(w[j] + p.wo)), &we, &wo);
            __m256i is = dot8(we, wo, xe, xo);
            acc[j] = acc_lanes(acc[j], is, dl, piece_scales(BITS, LG, sf[j], p.col, base), 1);
        }
    }
}

/* Weight rows r .. r+nr-1 (nr <= NB; missing rows repeat the last one). */
AI void q8_rows(const qmm_args *a, const int BITS, const int LG, int64_t r, int nr) {
    const int GS = 1 << LG, CH = BITS == 4 ? 128 : 64;
    const int64_t K = a->K, G = K / GS;
    const size_t es = scale_size(a->sdt);
    const int8_t *xq = (const int8_t *)a->x[0], *xq2 = xq + K;
    const float *xl = (const float *)((const uint8_t *)a->x[0] + Q8_SCALES_OFF(K));
    const float *xs = a->xsum[0];
    const uint8_t *w[NB], *s[NB], *b[NB];
    __m256 lo[NB], hi[NB];
    float sf[NB][8] __attribute__((aligned(32)));
    for (int j = 0; j < NB; j++) {
        int64_t rr = r + (j < nr ? j : nr - 1);
        w[j] = a->w + (size_t)rr * a->w_stride;
        s[j] = a->s + (size_t)rr * a->s_stride;
        b[j] = a->b + (size_t)rr * a->s_stride;
    }
    UNROLL for (int j = 0; j < NB; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    /* the bias sums advance one window at a time, so that their sequential
     * adds overlap the window's products */
    __m128 bias = _mm_setzero_ps();
    /* Prefetch (prefetcht1) the same line of the row block two blocks and
     * at least 16 KB ahead, as the VNNI kernels do; one per 64-byte chunk. */
    const size_t blk = (size_t)NB * a->w_stride, nblk = (PF_ROWS_BYTES + blk - 1) / blk;
    const size_t pf = blk * (nblk > 2 ? nblk : 2);
    int64_t base = 0;
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        int ng = (int)(G - g0 < 8 ? G - g0 : 8);
        UNROLL for (int j = 0; j < NB; j++) _mm256_store_ps(sf[j], load_scales8(s[j] + g0 * es, a->sdt, ng));
        bias = bias_window(bias, b, a->sdt, &xs, g0, ng, 1);
        base = g0 * GS;
        const int64_t cend = (g0 + ng) * GS;
        for (int64_t c0 = base; c0 + CH <= cend; c0 += CH) {
            UNROLL for (int j = 0; j < NB; j++)
                _mm_prefetch((const char *)w[j] + (BITS == 4 ? c0 / 2 : c0) + pf, _MM_HINT_T1);
            rows_piece(BITS, LG, 1, w, xq, xq2, xl, sf, base, piece_at(BITS, c0, CH, 0), lo);
            rows_piece(BITS, LG, 1, w, xq, xq2, xl, sf, base, piece_at(BITS, c0, CH, 1), hi);
        }
    }
    /* the row's last chunk when K is not a multiple of it: L = 32, 64 or 96
     * columns (4-bit), 32 (8-bit); it lies in the last window */
    if (K % CH) {
        const int64_t c0 = K - K % CH;
        const int L = (int)(K % CH), bytes = BITS == 4 ? L / 2 : L;
        for (int h = 0; 32 * h < bytes; h++) {
            piece p = piece_at(BITS, c0, L, h);
            if (bytes - 32 * h >= 32)
                rows_piece(BITS, LG, 1, w, xq, xq2, xl, sf, base, p, h ? hi : lo);
            else
                rows_piece(BITS, LG, 0, w, xq, xq2, xl, sf, base, p, h ? hi : lo);
        }
    }
    float y[4];
    _mm_storeu_ps(y, finish4(bias, lo, hi));
    for (int j = 0; j < nr; j++) a->y[0][r + j] = y[j];
}

AI void q8_single(const qmm_args *a, const int BITS, const int LG) {
    int64_t r = 0;
    for (; r + NB <= a->n_rows; r += NB) q8_rows(a, BITS, LG, r, NB);
    if (r < a->n_rows) q8_rows(a, BITS, LG, r, (int)(a->n_rows - r));
}

/* ---- several activation rows: each weight row against NA <= NB of them ---- */

/* 4-bit only (8-bit blocks run row by row, see q8_entry). */
AI void body_piece(const int NA, const int FULL, const uint8_t *w, const int8_t *const *xq, int64_t K,
                   const float *const *xl, __m256 sw, piece p, __m256 *acc /* [NA] */) {
    __m256i lo, hi;
    split4(load_piece(w + p.wo, FULL), &lo, &hi);
    UNROLL for (int i = 0; i < NA; i++) {
        __m256 dl = FULL ? _mm256_loadu_ps(xl[i] + p.lane0) : _mm256_castps128_ps256(_mm_loadu_ps(xl[i] + p.lane0));
        __m256i is = dot4(lo, hi, load_piece(xq[i] + p.xe, FULL), load_piece(xq[i] + p.xo, FULL),
                          load_piece(xq[i] + K + p.xe, FULL), load_piece(xq[i] + K + p.xo, FULL));
        acc[i] = acc_lanes(acc[i], is, dl, sw, FULL);
    }
}

/* Activation rows i0 .. i0+NA-1 against every weight row of the tile (4-bit). */
AI void q8_body(const qmm_args *a, const int NA, const int LG, int i0) {
    const int BITS = 4, GS = 1 << LG, CH = 128;
    const int64_t K = a->K, G = K / GS;
    const size_t es = scale_size(a->sdt);
    const int8_t *xq[NB];
    const float *xl[NB], *xs[NB];
    for (int i = 0; i < NB; i++) {
        int ii = i0 + (i < NA ? i : NA - 1);
        xq[i] = (const int8_t *)a->x[ii];
        xl[i] = (const float *)((const uint8_t *)a->x[ii] + Q8_SCALES_OFF(K));
        xs[i] = a->xsum[ii];
    }
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = a->b + (size_t)r * a->s_stride;
        __m128 bias = _mm_setzero_ps();
        __m256 lo[NB], hi[NB];
        for (int i = 0; i < NB; i++) lo[i] = hi[i] = _mm256_setzero_ps();
        float sf[8] __attribute__((aligned(32)));
        int64_t base = 0;
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            int ng = (int)(G - g0 < 8 ? G - g0 : 8);
            _mm256_store_ps(sf, load_scales8(s + g0 * es, a->sdt, ng));
            bias = bias_window(bias, &b, a->sdt, xs, g0, ng, 0);
            base = g0 * GS;
            const int64_t cend = (g0 + ng) * GS;
            for (int64_t c0 = base; c0 + CH <= cend; c0 += CH) {
                piece p0 = piece_at(BITS, c0, CH, 0), p1 = piece_at(BITS, c0, CH, 1);
                body_piece(NA, 1, w, xq, K, xl, piece_scales(BITS, LG, sf, p0.col, base), p0, lo);
                body_piece(NA, 1, w, xq, K, xl, piece_scales(BITS, LG, sf, p1.col, base), p1, hi);
            }
        }
        if (K % CH) { /* the short last chunk, as in q8_rows */
            const int64_t c0 = K - K % CH;
            const int L = (int)(K % CH), bytes = BITS == 4 ? L / 2 : L;
            for (int h = 0; 32 * h < bytes; h++) {
                piece p = piece_at(BITS, c0, L, h);
                __m256 sw = piece_scales(BITS, LG, sf, p.col, base);
                if (bytes - 32 * h >= 32)
                    body_piece(NA, 1, w, xq, K, xl, sw, p, h ? hi : lo);
                else
                    body_piece(NA, 0, w, xq, K, xl, sw, p, h ? hi : lo);
            }
        }
        for (int i = NA; i < NB; i++) lo[i] = lo[NA - 1], hi[i] = hi[NA - 1];
        float y[4];
        _mm_storeu_ps(y, finish4(bias, lo, hi));
        for (int i = 0; i < NA; i++) a->y[i0 + i][r] = y[i];
    }
}

/* 8-bit: one activation row at a time, even in a block. Joining the two
 * codes of x (join8) costs as much as the products, and only the decode path
 * shares it between weight rows (measured 7.5 vs 9.5 ms for 64 rows of
 * 1536 x 1536). The tile stays in L2 for the block's rows. */
AI void q8_entry(const qmm_args *a, const int BITS, const int LG) {
    if (a->mb == 1) {
        q8_single(a, BITS, LG);
        return;
    }
    if (BITS == 8) {
        for (int i = 0; i < a->mb; i++) {
            qmm_args one = *a;
            one.mb = 1, one.x[0] = a->x[i], one.xsum[0] = a->xsum[i], one.y[0] = a->y[i];
            q8_single(&one, BITS, LG);
        }
        return;
    }
    for (int i0 = 0; i0 < a->mb; i0 += NB) {
        switch (a->mb - i0 < NB ? a->mb - i0 : NB) {
        case 1: q8_body(a, 1, LG, i0); break;
        case 2: q8_body(a, 2, LG, i0); break;
        case 3: q8_body(a, 3, LG, i0); break;
        default: q8_body(a, 4, LG, i0); break;
        }
    }
}

#define Q8_ENTRY(name, BITS)                     \
    void name(const qmm_args *a) {               \
        switch (a->gs) {                         \
        case 32: q8_entry(a, BITS, 5); break;    \
        case 64: q8_entry(a, BITS, 6); break;    \
        default: q8_entry(a, BITS, 7); break;    \
        }                                        \
    }
Q8_ENTRY(qmm_q8n_avx2, 4)
Q8_ENTRY(qmm_q8b_avx2, 8)
