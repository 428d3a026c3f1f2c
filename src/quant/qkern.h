/*
 * qkern.h — private interface between the quantized-matmul driver (qmatmul.c)
 * and its kernels (qkern_portable.c, qkern_avx2.c, qkern_avx512.c).
 *
 * A kernel computes, for a tile of n_rows consecutive weight rows and a block
 * of mb <= QMM_MB activation rows,
 *     y[a][r] = sum_k x[a][k] * W[r][k]      (r < n_rows, a < mb)
 * reading each packed weight byte once for the whole block (the codes are
 * unpacked once and used mb times). Affine formats use
 *     sum_g ( s_g * sum_{k in g} x_k q_k  +  b_g * xsum_g )
 * with xsum the per-group sums of the activation row, computed once per call by
 * the driver; fp formats use sum_g scale_g * sum_{k in g} x_k v(q_k).
 *
 * Activations may be stored in a kernel-specific order ("prepared"): the 4-bit
 * kernels read the low nibbles of 16 bytes as 16 even elements and the high
 * nibbles as the 16 odd elements, so their prep function de-interleaves x per
 * chunk instead of shuffling codes per weight row. The other SIMD kernels
 * read a plain copy. Prepared rows are 64-byte aligned and have
 * qkern_prep_len(K) floats (K rounded up to 64), zero padded. The portable
 * kernel reads x where the caller keeps it.
 *
 * Invariant shared by every kernel: the operations applied to one (weight
 * row, activation row) pair do not depend on mb, so batching rows never
 * changes a result (test_quant_kernels checks it bit for bit).
 */
#ifndef OPTIQ_QUANT_QKERN_H
#define OPTIQ_QUANT_QKERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/cpu.h"
#include "quant/quant.h"

enum { QMM_MB = 8 }; /* activation rows per kernel call */

typedef struct qmm_args {
    const qtraits *t;
    const uint8_t *w;          /* packed bytes of the tile's first weight row */
    size_t w_stride;           /* bytes between packed rows */
    const uint8_t *s, *b;      /* scales (and affine biases) of the first row */
    size_t s_stride;           /* bytes between rows of scales */
    dtype sdt;                 /* scale dtype (U8 for fp modes) */
    int64_t n_rows;            /* weight rows in the tile */
    int64_t K;                 /* columns */
    int gs;                    /* group size */
    int mb;                    /* activation rows, 1..QMM_MB */
    const float *x[QMM_MB];    /* prepared activation rows */
    const float *xsum[QMM_MB]; /* (K/gs) group sums per activation row (affine) */
    float *y[QMM_MB];          /* output rows, offset to the tile's first weight row */
} qmm_args;

typedef void (*qmm_fn)(const qmm_args *a);
typedef void (*qprep_fn)(const float *x, int64_t K, float *xp);

typedef struct qkern_level {
    qmm_fn mm;     /* NULL: use the level below */
    qprep_fn prep; /* NULL: the kernel reads x in natural order */
    qmm_fn mm_q8;  /* int8-activation kernel, or NULL (see below) */
    qprep_fn prep_q8;
} qkern_level;

/* ---- the int8-activation path ("q8") ------------------------------------------
 * For affine 4- and 8-bit weights, activations can be written as two int8
 * codes per element so the products run as u8 x s8 integer dot products
 * (AVX-512 VNNI vpdpbusd: exact int32 sums of 4 products per lane; AVX2
 * vpmaddubsw / vpmaddwd, see qkern_q8_avx2.c). Per block
 * of 32 columns, with d = max|x| / 127 over the block (0 for an all-zero
 * block):
 *     q1 = round(x / d)                      in [-127, 127]
 *     q2 = round((x - d q1) * 256 / d)       the residual, clamped to [-127, 127]
 * so x = (d / 256) (256 q1 + q2) to within d / 512 (about 2^-16 of the block's
 * largest value). The kernels form the exact integer 256 Σ c q1 + Σ c q2 per
 * lane, convert it to f32 once and scale it by (d / 256) * s_group; the bias
 * term b_g * xsum_g uses the exact f32 group sums.
 *
 * Prepared row (qkern_prep_len(K) floats of storage, 64-byte aligned):
 *   bytes [0, K)            q1 of x, bytes [K, 2K) q2, in the same order:
 *       4-bit: per chunk of 128 columns (a 64-byte load of packed weights):
 *              the 64 even columns' codes, then the 64 odd columns'; a tail
 *              chunk of L < 128 columns: L/2 evens then L/2 odds
 *       8-bit: natural order
 *   floats at byte Q8_SCALES_OFF(K)   one scale (d / 256) per int32 lane:
 *       4-bit: lane l of chunk c covers columns 128c + 8l .. +7 (K/8 floats)
 *       8-bit: lane l of chunk c (64 columns) covers 64c + 4l .. +3 (K/4 floats)
 */
#define Q8_SCALES_OFF(K) ((size_t)((2 * (K) + 63) & ~(int64_t)63))
void qprep_q8n_portable(const float *x, int64_t K, float *xp); /* 4-bit layout */
void qprep_q8b_portable(const float *x, int64_t K, float *xp); /* 8-bit layout */
void qmm_q8n_portable(const qmm_args *a);                      /* affine 4-bit, reference */
void qmm_q8b_portable(const qmm_args *a);                      /* affine 8-bit, reference */
void qprep_q8n_vnni(const float *x, int64_t K, float *xp);
void qprep_q8b_vnni(const float *x, int64_t K, float *xp);
void qmm_q8n_vnni(const qmm_args *a);
void qmm_q8b_vnni(const qmm_args *a);
void qprep_q8n_avx2(const float *x, int64_t K, float *xp); /* qkern_q8_avx2.c: results bit-identical */
void qprep_q8b_avx2(const float *x, int64_t K, float *xp); /* to the portable ones */
void qmm_q8n_avx2(const qmm_args *a);
void qmm_q8b_avx2(const qmm_args *a);

static inline int64_t qkern_prep_len(int64_t K) { return (K + 63) & ~(int64_t)63; }

/* f32 value of a stored scale/bias element for the kernels (no mode decode). */
static inline float qk_load_scale(const uint8_t *p, dtype dt, int64_t i) { return load_as_f32(p, dt, (size_t)i); }

/* Lookup tables shared by the kernels. */
extern const float QK_E4M3_LUT[256]; /* qe4m3_value of every byte */

/* e8m0 scale 2^(b-127) by its float bits: exponent field b; byte 0 is the
 * subnormal 2^-127 (MLX's choice), byte 255 the exponent of +inf. */
static inline float qk_e8m0(uint8_t b) {
    uint32_t u = b ? (uint32_t)b << 23 : 0x00400000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- portable (reference) ---- */
void qmm_portable(const qmm_args *a);

/* ---- AVX2 + FMA + F16C (qkern_avx2.c) ---- */
void qmm_affine4_avx2(const qmm_args *a);
void qmm_affine8_avx2(const qmm_args *a);
void qmm_affine_u8_avx2(const qmm_args *a); /* any affine width: unpack to bytes, then the 8-bit core */
void qmm_fp4_avx2(const qmm_args *a);       /* mxfp4, nvfp4 */
void qmm_mxfp8_avx2(const qmm_args *a);
void qprep_nib16_avx2(const float *x, int64_t K, float *xp);

/* ---- AVX-512 F/BW/VL/DQ (qkern_avx512.c) ---- */
void qmm_affine4_avx512(const qmm_args *a);
void qmm_affine8_avx512(const qmm_args *a);
void qmm_affine_u8_avx512(const qmm_args *a);
void qmm_fp4_avx512(const qmm_args *a);
void qmm_mxfp8_avx512(const qmm_args *a);
void qprep_nib32_avx512(const float *x, int64_t K, float *xp);

#endif
