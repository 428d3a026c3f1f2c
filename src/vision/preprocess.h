/*
 * preprocess.h — Qwen-VL image preprocessing (Qwen3.5 / Qwen3.6 / Qwen3-VL):
 * decoded RGB image → pixel_values + grid_thw, identical bit for bit to the
 * reference processor, mlx-vlm's Qwen3VLImageProcessor
 * (mlx_vlm/models/qwen3_vl/processing_qwen3_vl.py, the processor mlx-vlm
 * loads for model_type qwen3_5 and qwen3_vl). docs/preprocess.md has the
 * rules, the reference function behind each, and where the spec differs.
 *
 * Steps for one still image of H×W pixels:
 *   1. smart resize (_smart_resize_image), in double precision, factor =
 *      patch_size·merge_size:
 *        error if max(H,W)/min(H,W) > 200;
 *        h̄ = round(H/f)·f, w̄ = round(W/f)·f    (Python round: ties to even)
 *        if h̄·w̄ > max_pixels: β = √(H·W/max_pixels),
 *             h̄ = max(f, ⌊H/β/f⌋·f), w̄ = max(f, ⌊W/β/f⌋·f)
 *        elif h̄·w̄ < min_pixels: β = √(min_pixels/(H·W)),
 *             h̄ = ⌈H·β/f⌉·f, w̄ = ⌈W·β/f⌉·f
 *   2. if (h̄, w̄) ≠ (H, W): Pillow BICUBIC resize of the uint8 image
 *      (vision/resample.h);
 *   3. per channel c, in float32: x = float(u8); x = x·float32(rescale_factor)
 *      (do_rescale); x = (x − mean[c]) / std[c] (do_normalize);
 *   4. the frame is repeated temporal_patch_size (T) times and cut into
 *      P×P patches (P = patch_size, M = merge_size, gh = h̄/P, gw = w̄/P):
 *        row n = ((bh·(gw/M) + bw)·M + mh)·M + mw   covers pixel rows
 *          (bh·M + mh)·P … +P−1 and columns (bw·M + mw)·P … +P−1;
 *        column ((c·T + τ)·P + py)·P + px.
 *      pixel_values is (gh·gw, 3·T·P·P) float32, grid_thw = (1, gh, gw) and
 *      the image takes gh·gw / M² tokens.
 *
 * Sizes: input sides up to QVL_MAX_SIDE, pixel budgets (min/max_pixels) and
 * resized images up to QVL_MAX_PIXELS pixels; anything outside is refused
 * with OPTIQ_ERR_INVALID_ARG (the reference has no limits but could not
 * allocate such images either).
 */
#ifndef OPTIQ_VISION_PREPROCESS_H
#define OPTIQ_VISION_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/error.h"

#define QVL_MAX_SIDE ((1 << 24) - 1)   /* largest input or resized width/height */
#define QVL_MAX_PIXELS (INT64_C(1) << 26) /* largest pixel budget / resized image */
#define QVL_MAX_ASPECT 200.0             /* max(H,W)/min(H,W) above this is an error */

/* Processor parameters. Defaults (qvl_params_default) are the class defaults
 * of Qwen3VLImageProcessor, used only for keys the checkpoint lacks; the
 * Qwen3.5 checkpoints set min_pixels 65536 and max_pixels 16777216 through
 * size.shortest_edge / size.longest_edge. */
typedef struct qvl_params {
    int patch_size;          /* P: 16 */
    int temporal_patch_size; /* T: 2 */
    int merge_size;          /* M: 2 */
    int64_t min_pixels;      /* 56·56 = 3136 */
    int64_t max_pixels;      /* 14·14·4·1280 = 1003520 */
    int do_rescale;          /* 1 */
    double rescale_factor;   /* 1/255, applied as float32 */
    int do_normalize;        /* 1 */
    float image_mean[3];     /* 0.5 each */
    float image_std[3];      /* 0.5 each */
} qvl_params;

qvl_params qvl_params_default(void);

/* Parameters from the checkpoint's JSON files, resolved as the reference's
 * _qwen_vl_image_kwargs + Qwen3VLImageProcessor.__init__ do:
 *   - the keys of preprocessor_config.json, each replaced by the same key of
 *     processor_config.json's "image_processor" object when that has it
 *     (dict.update: a key present there wins even when null);
 *   - patch_size, temporal_patch_size, merge_size, rescale_factor,
 *     do_rescale, do_normalize, image_mean, image_std taken when present;
 *   - min_pixels = size.shortest_edge, max_pixels = size.longest_edge, and
 *     top-level "min_pixels" / "max_pixels" win over size; a null value
 *     counts as absent for these four;
 *   - everything else is ignored; missing keys keep the class defaults.
 * Either text may be NULL (file absent). Checked, with a message naming the
 * file and key: integers for the sizes (patch_size in [1, 1024], the others
 * in [1, 64]) and pixel budgets (min_pixels in [0, QVL_MAX_PIXELS],
 * max_pixels in [1, QVL_MAX_PIXELS]); image_mean / image_std arrays of 1
 * (broadcast) or 3 finite numbers, std non-zero (null or [] → default, as
 * the reference's `or`); rescale_factor a finite number; do_rescale /
 * do_normalize booleans (null → false, a number → non-zero, as Python
 * truthiness); size an object. A null where the reference would crash
 * (patch_size, rescale_factor, ...) is an error. Fails with
 * OPTIQ_ERR_FORMAT; *out is written only on success. */
optiq_status qvl_params_from_json(const char *preprocessor_json, size_t preprocessor_len,
                                  const char *processor_json, size_t processor_len, qvl_params *out,
                                  optiq_error *err);

/* The same for preprocessor_config.json alone. */
optiq_status qvl_params_parse(const char *json, size_t len, qvl_params *out, optiq_error *err);

/* Step 1: resized (height, width) of a height×width image. Fails with
 * OPTIQ_ERR_INVALID_ARG for sides outside [1, QVL_MAX_SIDE], an aspect
 * ratio above 200 (the reference's ValueError), invalid parameters, or a
 * result of zero size (only possible with min_pixels 0) or above
 * QVL_MAX_SIDE / QVL_MAX_PIXELS. */
optiq_status qvl_smart_resize(const qvl_params *p, int64_t height, int64_t width, int64_t *out_height,
                              int64_t *out_width, optiq_error *err);

/* Tokens the image takes in the prompt: (h̄/P)·(w̄/P)/M² (the reference's
 * num_image_tokens); errors as qvl_smart_resize. */
optiq_status qvl_num_image_tokens(const qvl_params *p, int64_t height, int64_t width, int64_t *out,
                                  optiq_error *err);

typedef struct qvl_image {
    float *pixel_values; /* (n_patches, patch_dim), owned */
    int64_t n_patches;   /* grid_thw[0]·grid_thw[1]·grid_thw[2] */
    int64_t patch_dim;   /* 3·T·P·P (1536 for Qwen3.5) */
    int64_t grid_thw[3]; /* (1, h̄/P, w̄/P) */
    int64_t n_tokens;    /* n_patches / M² */
    int resized_height, resized_width;
} qvl_image;

/* Steps 1–4 on rgb (h, w, 3) uint8, row-major. On success *out owns
 * pixel_values (free with qvl_image_free); on failure *out is zeroed.
 * Errors: OPTIQ_ERR_INVALID_ARG (NULL buffers, sizes, aspect ratio, bad
 * parameters), OPTIQ_ERR_NOMEM. */
optiq_status qvl_preprocess(const qvl_params *p, const uint8_t *rgb, int w, int h, qvl_image *out,
                            optiq_error *err);

/* Steps 3–4 only, on an image already at its resized size (h and w
 * multiples of P·M). Same ownership and errors as qvl_preprocess. */
optiq_status qvl_patchify(const qvl_params *p, const uint8_t *rgb, int w, int h, qvl_image *out,
                          optiq_error *err);

void qvl_image_free(qvl_image *img);

/* Readers of processor-config values, shared by the families' processors
 * (messages name where + key: "preprocessor_config.json: patch_size is ..."):
 * an integer in [lo, hi]; Python truthiness of a scalar (null and 0 false);
 * image_mean / image_std (null or [] keep out, one value broadcasts over the
 * channels, nonzero: refuse 0). */
optiq_status pp_want_int(const cJSON *j, const char *where, const char *key, int64_t lo, int64_t hi, int64_t *out,
                         optiq_error *err);
optiq_status pp_want_bool(const cJSON *j, const char *where, const char *key, int *out, optiq_error *err);
optiq_status pp_want_triple(const cJSON *j, const char *where, const char *key, int nonzero, float out[3],
                            optiq_error *err);

#endif
