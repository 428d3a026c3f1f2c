/*
 * quant.h — MLX quantized formats: the format table, unpacking and dequantization.
 *
 * ---- Storage (spec §4-§6; confirmed on MLX 0.32.4, tests/fixtures/quant/README.md) ----
 *
 * A quantized matrix W [O, K] (or a stack [E, O, K] of MoE experts, or an
 * embedding table [V, D]) is stored as
 *   weight  U32 [E?, O, K*b/32]   packed codes, rows never share words
 *   scales      [E?, O, K/gs]     affine: BF16/F16/F32; mxfp4/mxfp8: e8m0 U8; nvfp4: e4m3 U8
 *   biases      [E?, O, K/gs]     affine only, same dtype as scales
 * Pointers point into a safetensors mapping and may be unaligned: every load
 * here is a memcpy or an unaligned vector load.
 *
 * Bit packing: the codes of one row form a little-endian bit stream; code i
 * occupies stream bits [i*b, i*b + b), least significant bit first, and stream
 * bit j is bit (j mod 8) of byte j/8 of the row (the U32 words are little
 * endian, so equally bit (j mod 32) of word j/32). Consequences:
 *   b = 2  16 codes per word, code k of a byte at bits 2k..2k+1
 *   b = 4  8 codes per word, low nibble of byte k = code 2k, high nibble = 2k+1
 *   b = 8  code k = byte k
 *   b = 3, 5, 6  codes straddle bytes: 8 codes fill exactly b bytes (a "pack"),
 *          e.g. b = 3: c0 = p0 & 7, c1 = (p0 >> 3) & 7, c2 = (p0 >> 6) | (p1 & 1) << 2, ...
 * In general any 8 consecutive codes starting at a multiple of 8 are the low
 * 8*b bits of the little-endian integer made of the next b bytes; this file
 * unpacks every width that way. fp4 (mxfp4, nvfp4) packs like b = 4, fp8
 * (mxfp8) like b = 8.
 *
 * Values (group g = column / gs, row-major groups):
 *   affine  w = s*q + b, q the unsigned code (s is often negative: spec §7.1)
 *   mxfp4   w = FP4[q] * 2^(e - 127)     FP4 = {0,.5,1,1.5,2,3,4,6} with bit 3 the sign
 *   mxfp8   w = E4M3(q) * 2^(e - 127)    e8m0 byte 0 -> 2^-127, byte 255 -> +inf
 *   nvfp4   w = FP4[q] * E4M3(scale byte)
 *   E4M3 as MLX 0.32.4 decodes it: bias 7, subnormals m/8 * 2^-6, and 0x7F / 0xFF
 *   decode to NaN (MLX never writes them: its encoder saturates to 0x7E).
 *
 * ---- Two dequantizations ----
 *
 * qdequant_f32   the exact path's weights: affine w = f32(f32(q*s) + b) from the
 *                stored scale/bias converted to f32 (multiply, round, add, round;
 *                never an FMA) — what MLX's quantized_matmul uses for f32
 *                activations, and bit-identical to mx.dequantize when the scales
 *                are F32. fp modes: value * scale, exact in f32.
 * qdequant_mlx   mx.dequantize(..., dtype=out) of MLX's CPU backend, bit for bit:
 *                affine computes in the scale dtype T with two roundings,
 *                out = T(T(q*s) + b), then casts to the requested dtype (asking for
 *                f32 from bf16 scales does not add precision); fp modes compute
 *                value * scale in the output dtype (default BF16), which is exact
 *                unless it overflows (byte 254/255 times 6 gives +inf).
 * Both take any column range [c0, c0 + n) of a row, aligned or not.
 */
#ifndef OPTIQ_QUANT_QUANT_H
#define OPTIQ_QUANT_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "quant/qformat.h"

/* ---- the format table ------------------------------------------------------
 * One row per (mode, bits); the group size is a parameter of every function.
 * A row points to its unpack function and, per kernel level, to the quantized
 * matmul kernel and its activation layout (see qkern.h). Adding a format is a
 * row plus kernels. */
struct qkern_level;

typedef struct qtraits {
    qmode mode;
    int bits;
    const char *name;         /* "affine4", "mxfp4", ... */
    int min_group, max_group; /* accepted group sizes (powers of two) */
    /* codes [c0, c0 + n) of one packed row as bytes */
    void (*unpack)(const uint8_t *row, int64_t c0, int64_t n, uint8_t *codes);
    const struct qkern_level *kern; /* [CPU_LEVEL_COUNT] */
} qtraits;

/* Row of the table for a format, or NULL when the format is not supported:
 * affine 1-8 bits except 7 (1-bit is accepted by MLX 0.32.4) with group size
 * 32/64/128, mxfp4 g32, mxfp8 g32, nvfp4 g16 — everything MLX supports. */
const qtraits *qtraits_find(qformat f);

/* ---- geometry of a qweight ----------------------------------------------- */

/* Bytes of one packed row, of one row of scales. */
static inline size_t qweight_row_bytes(const qweight *w) { return (size_t)(w->cols * w->fmt.bits / 8); }
static inline int64_t qweight_groups(const qweight *w) { return w->cols / w->fmt.group_size; }
size_t qweight_scale_row_bytes(const qweight *w);
/* Total stored rows (n_mats * rows). */
static inline int64_t qweight_total_rows(const qweight *w) { return w->n_mats * w->rows; }

/* Checks that a qweight can be used: supported format, cols a multiple of the
 * group size (and of 32/bits words), scale dtype allowed for the mode, biases
 * present iff affine, pointers set. */
optiq_status qweight_check(const qweight *w, optiq_error *err);

/* ---- unpacking and dequantization ---------------------------------------- */

/* Codes [c0, c0 + n) of stored row `row` (0 <= row < n_mats * rows). */
void qunpack_codes(const qweight *w, int64_t row, int64_t c0, int64_t n, uint8_t *codes);

/* f32 weights of stored row `row`, columns [c0, c0 + n) (exact path, see above). */
void qdequant_f32(const qweight *w, int64_t row, int64_t c0, int64_t n, float *out);

/* mx.dequantize(..., dtype=out_dt) bit for bit; out_dt is DT_BF16, DT_F16 or
 * DT_F32 and out receives n elements of that type (may be unaligned). */
optiq_status qdequant_mlx(const qweight *w, int64_t row, int64_t c0, int64_t n, dtype out_dt, void *out,
                          optiq_error *err);
/* mx.dequantize's default output dtype: the scales' dtype for affine, BF16 for fp modes. */
dtype qdequant_mlx_default_dtype(const qweight *w);

/* Quantized embedding lookup: out[i, :] = f32 row ids[i] of matrix `mat`
 * (0 for 2-D weights), only the selected rows are dequantized.
 * out: (n_ids, cols). Fails on an id outside [0, rows) or mat outside [0, n_mats). */
optiq_status qdequant_gather_f32(const qweight *w, int64_t mat, const int32_t *ids, int64_t n_ids, float *out,
                                 optiq_error *err);

/* ---- scalar element decoders (MLX 0.32.4 semantics) ---------------------- */

/* fp4 e2m1 value of a nibble. */
extern const float QFP4_VALUES[16];
/* e4m3 decode with 0x7F/0xFF -> NaN, as mx.from_fp8 and mx.dequantize. */
float qe4m3_value(uint8_t b);
/* e8m0: 2^(b-127), byte 0 -> 2^-127, byte 255 -> +inf. */
float qe8m0_value(uint8_t b);
/* A stored scale or bias element as f32 (BF16/F16/F32 or, for fp modes, the
 * decoded U8 scale of the given mode). */
float qscale_value(const qweight *w, const void *p, int64_t i);

#endif
