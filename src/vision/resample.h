/*
 * resample.h — Pillow-exact bicubic resizing of 8-bit images.
 *
 * Reproduces, bit for bit, what PIL.Image.resize((dw, dh), Image.BICUBIC)
 * returns for an 8-bit image with no box and no reducing_gap (Pillow
 * src/libImaging/Resample.c: ImagingResample → ImagingResampleInner with the
 * *_8bpc passes; checked against Pillow 13.0.0):
 *
 *   - Coefficients per output index o of an axis (in → out samples), all in
 *     double: scale = in/out, fs = max(scale, 1), support = 2·fs,
 *     center = (o + 0.5)·scale, taps x from lo = max(0, (int)(center −
 *     support + 0.5)) to hi = min(in, (int)(center + support + 0.5)) − 1, raw
 *     weight K(((x − center) + 0.5)·(1/fs)) with Keys' cubic K (a = −0.5),
 *     each divided by their sum when the sum is not 0.
 *   - Fixed point, 22 fraction bits: weight → (int)(w·2²² ± 0.5) (rounded
 *     half away from zero); accumulator starts at 2²¹, adds pixel·weight,
 *     result = acc >> 22 clamped to [0, 255]; every channel independently.
 *   - Separable, through an 8-bit temporary (so the order of the passes
 *     shows in the result). Only the sides that change get a pass; when
 *     neither changes the image is copied. When both change, Pillow 13 runs
 *     the vertical pass first if the height shrinks by more than twice as
 *     many pixels as the width (dh < sh and sh − dh > 2·(sw − dw)), else the
 *     horizontal pass first, over only the source rows the vertical pass
 *     reads. (Pillow before 13 always ran the horizontal pass first; the
 *     spec's description is that older behaviour.)
 *
 * Pillow reads the box as float: sizes must stay below 2^24 so that in/out
 * is the same double as Pillow's; larger sizes are refused.
 */
#ifndef OPTIQ_VISION_RESAMPLE_H
#define OPTIQ_VISION_RESAMPLE_H

#include <stdint.h>

#include "base/error.h"

#define RESAMPLE_MAX_SIDE ((1 << 24) - 1) /* largest width or height accepted */

/* Resize src (sh, sw, channels) uint8, row-major and channel-interleaved, to
 * dst (dh, dw, channels), which the caller provides. channels in [1, 4].
 * Fails with OPTIQ_ERR_INVALID_ARG on NULL buffers or sizes outside
 * [1, RESAMPLE_MAX_SIDE], OPTIQ_ERR_NOMEM when scratch cannot be allocated;
 * dst is untouched on failure. */
optiq_status resample_bicubic_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                                 optiq_error *err);

#endif
