/*
 * frontend.h — a model folder's vision front-end: images in, soft tokens out.
 *
 * Present when the folder carries the vision sidecar (optiq_vision.safetensors)
 * and config.json has a vision_config (plus the image token ids); absent
 * otherwise, and the folder is a text-only model. For the Qwen3.5 / Qwen3.6
 * family (model_type qwen3_5, qwen3_5_moe):
 *
 *   bytes ─ image_decode ─► RGB u8 ─ preprocess (preprocessor_config.json) ─►
 *   pixel_values + grid ─ Qwen3-VL tower + merger ─► soft tokens (text hidden size)
 *
 * All images of one prompt go through the tower in one call (one attention
 * segment each), as mlx-vlm encodes them. An optional vision cache
 * (vision_cache.h) keeps the soft tokens of images seen before.
 */
#ifndef OPTIQ_VISION_FRONTEND_H
#define OPTIQ_VISION_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/model_dir.h"
#include "optiq.h"
#include "vision/mm_prompt.h"
#include "vision/vision_cache.h"

typedef struct vision_fe vision_fe;

/* *out = NULL (and OPTIQ_OK) when the folder has no sidecar or no
 * vision_config; a sidecar that does not fit its config is an error. */
optiq_status vision_fe_load(const model_dir *md, int64_t text_hidden, vision_fe **out, optiq_error *err);
void vision_fe_free(vision_fe *fe);

const mm_tokens *vision_fe_tokens(const vision_fe *fe);

/* Tokens image's placeholder expands to (soft tokens, plus the wrap tokens
 * when mm_tokens.wrap), from the decoded size; the tower does not run. */
optiq_status vision_fe_image_tokens(const vision_fe *fe, const optiq_image *image, int64_t *tokens, optiq_error *err);

/* The images of one prompt → *feats (malloc'd, (Σ n_tokens[i], text_hidden)),
 * grid_thw (n, 3) in patches and n_tokens (n) soft tokens per image. */
optiq_status vision_fe_encode(const vision_fe *fe, thread_pool *pool, const optiq_image *images, size_t n,
                              float **feats, int32_t *grid_thw, int64_t *n_tokens, optiq_error *err);

/* The same, also giving each image's key for the prefix cache (hashes: n
 * values, or NULL): a hash of its decoded pixels, its soft-token budget and
 * the folder's processor settings (vision/vision_cache.h). Images seen
 * before are taken from the vision cache instead of the tower. */
optiq_status vision_fe_encode_keyed(const vision_fe *fe, thread_pool *pool, const optiq_image *images, size_t n,
                                    float **feats, int32_t *grid_thw, int64_t *n_tokens, uint64_t *hashes,
                                    optiq_error *err);

/* A vision cache of max_bytes (0: none) replaces the one there was. Call
 * before the front-end is shared (the cache itself is thread-safe). */
void vision_fe_set_cache(vision_fe *fe, size_t max_bytes);
void vision_fe_cache_stats(const vision_fe *fe, vision_cache_stats *out);

/* The tower on pixel values vision_fe_pixels made (for callers that keep them). */
optiq_status vision_fe_encode_pixels(const vision_fe *fe, thread_pool *pool, const float *pixels, int64_t n_patches,
                                     const int32_t *grid_thw, size_t n, float **feats, int64_t *n_tokens,
                                     optiq_error *err);

/* Only the preprocessing: pixel_values (malloc'd, (n_patches, patch_dim)) of
 * the images and their grids, for optiq dump. */
optiq_status vision_fe_pixels(const vision_fe *fe, const optiq_image *images, size_t n, float **pixels,
                              int64_t *n_patches, int64_t *patch_dim, int32_t *grid_thw, optiq_error *err);

#endif
