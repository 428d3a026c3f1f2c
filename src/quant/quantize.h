/*
 * quantize.h — the MLX quantizer: float rows -> packed codes + scales (+ biases),
 * reproducing what mx.quantize writes, bit for bit, for a chosen MLX device.
 *
 * Storage and packing are described in quant.h. The arithmetic differs between
 * MLX's backends, so the device is a parameter:
 *
 * QDEV_CPU — MLX's CPU backend (MLX 0.32.4; the committed fixtures in
 * tests/fixtures/quant/ were made with it and the tests match them bit for bit).
 *   affine, per group of gs elements, all in f32 (one rounding per operation, no FMA):
 *     n = 2^b - 1; w_min, w_max = true min and max of the group
 *     scale = max((w_max - w_min) / n, 1e-7)
 *     side = |w_min| > |w_max|; if !side: scale = -scale; edge = side ? w_min : w_max
 *     q0 = rint(edge / scale)                       (ties to even)
 *     q0 != 0: scale = edge / q0, bias = edge;  else bias = 0
 *     q = clamp(rint((w - bias) / scale), 0, n)     (subtract, then divide)
 *     stored scale/bias = T(scale), T(bias), rounded to nearest even AFTER the
 *     codes were computed with the f32 values (T = the scale dtype, normally the
 *     weight dtype). b = 1: scale = max(w_max - w_min, 1e-7), bias = w_min.
 *   mxfp4 / mxfp8 (gs 32), T = the weight dtype:
 *     s = T(amax / M) with M = 6 (fp4) or 448 (fp8)
 *     e = smallest integer with s <= 2^e (0 when s == 0); byte = (e + 127) mod 256
 *         (the ceiling, not the rounding, of log2; no clamp — MLX wraps)
 *     x = T(w / T(2^e)); code = E4M3(x) or FP4(x)
 *   nvfp4 (gs 16): byte = E4M3(T(amax / 6)); sv = T(E4M3 value of byte);
 *     x = sv == 0 ? 0 : T(w / sv); code = FP4(x)
 *   FP4 on the CPU: nearest of {0, .5, 1, 1.5, 2, 3, 4, 6} with ties to the
 *     SMALLER magnitude; the sign bit only when the magnitude code is not 0
 *     (-0.1 -> +0). E4M3: round to nearest even, |x| >= 448 saturates to 0x7E
 *     with sign, NaN -> 0x7E, sign kept for values that round to 0.
 *
 * QDEV_METAL — MLX's Metal kernels (and CUDA, which follows them) as shipped in
 * MLX 0.32.4 (kernels/quantized.h, fp_quantized.h, fp4.h, fp8.h); these files
 * were read, not run, here: the tests check the spec's §9 worked vectors, which
 * come from a re-implementation of the same kernels.
 *   affine: w_max = max(0, max of group) (the range always includes 0), w_min =
 *     the true min; round() = half away from zero for q0 and the codes; the codes
 *     are clamped to n at the top.
 *   mx modes: s = amax / M in f32 (not rounded to T); e = smallest e with
 *     s <= 2^e, clamped to [-127, 127] (s == 0 -> byte 0); x = w * 2^-e.
 *   nvfp4: byte = E4M3(amax / 6); x = w * (1 / sv) (a rounded reciprocal).
 *   FP4: round to nearest, ties to even mantissa (0.25 -> 0, 0.75 -> 1, 1.25 -> 1,
 *     1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 6), sign from the sign bit (-0.1 -> 0x8),
 *     NaN -> 0x7.
 *
 * QDEV_METAL_LEGACY — as QDEV_METAL, but the e8m0 exponent of the mx modes is
 *   round(log2(s)) (half away), clamped to [-127, 127]: Metal before MLX rounded
 *   mx scales up (the rule of the spec's §7.2); values up to ~1.41x the largest
 *   element then saturate. Affine and nvfp4 are identical to QDEV_METAL.
 */
#ifndef OPTIQ_QUANT_QUANTIZE_H
#define OPTIQ_QUANT_QUANTIZE_H

#include <stdint.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "quant/qformat.h"

typedef enum qdevice { QDEV_CPU = 0, QDEV_METAL, QDEV_METAL_LEGACY, QDEV_COUNT } qdevice;

const char *qdevice_name(qdevice d); /* "cpu", "metal", "metal-legacy" */

/* Quantizes w (rows, cols) of w_dt (F32, BF16 or F16) in format fmt:
 *   wq      rows * cols * bits / 8 bytes: the U32 words, little endian
 *   scales  rows * cols / gs elements: scale_dt (BF16/F16/F32) for affine, U8 for fp modes
 *   biases  rows * cols / gs elements of scale_dt, affine only (NULL otherwise)
 * MLX stores affine scales in the weight's dtype: pass scale_dt = w_dt to match
 * mx.quantize. For fp modes scale_dt must be DT_U8. Output buffers may be
 * unaligned. Rows are split over the pool (may be NULL). 3-D expert stacks are
 * rows = E * O. */
optiq_status quantize_rows(thread_pool *pool, qformat fmt, qdevice dev, const void *w, dtype w_dt, int64_t rows,
                           int64_t cols, void *wq, void *scales, void *biases, dtype scale_dt, optiq_error *err);

/* Element encoders (exposed for tests): fp4 nibble of x under a device's rule,
 * and e4m3 as MLX encodes it. */
uint8_t quant_fp4_encode(float x, qdevice dev);
uint8_t quant_e4m3_encode(float x);

#endif
