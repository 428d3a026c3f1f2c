/*
 * qwen3_vl.h — the Qwen3-VL vision tower and patch merger (used by Qwen3.5 /
 * Qwen3.6, model_type qwen3_5 / qwen3_5_moe), computed in f32 from the stored
 * (bf16) weights.
 *
 * Weights come from OptIQ's vision sidecar, optiq_vision.safetensors, as
 * mlx-optiq's build_vision_sidecar writes it (docs/vision.md): the base's
 * `model.visual.*` tensors renamed `vision_tower.*`, all bf16 (f16 / f32
 * accepted too), the Conv3d patch embedding channel-last:
 *
 *   vision_tower.patch_embed.proj.weight     [Hv, T, P, P, C]   (MLX layout)
 *   vision_tower.patch_embed.proj.bias       [Hv]
 *   vision_tower.pos_embed.weight            [S*S, Hv]          learned S x S grid
 *   vision_tower.blocks.{j}.norm1.{weight,bias}          [Hv]   LayerNorm
 *   vision_tower.blocks.{j}.attn.qkv.{weight,bias}       [3Hv, Hv] / [3Hv]
 *   vision_tower.blocks.{j}.attn.proj.{weight,bias}      [Hv, Hv] / [Hv]
 *   vision_tower.blocks.{j}.norm2.{weight,bias}          [Hv]
 *   vision_tower.blocks.{j}.mlp.linear_fc1.{weight,bias} [I, Hv] / [I]
 *   vision_tower.blocks.{j}.mlp.linear_fc2.{weight,bias} [Hv, I] / [Hv]
 *   vision_tower.merger.norm.{weight,bias}               [Hv]
 *   vision_tower.merger.linear_fc1.{weight,bias}         [m²Hv, m²Hv] / [m²Hv]
 *   vision_tower.merger.linear_fc2.{weight,bias}         [out, m²Hv] / [out]
 *
 * (Hv = hidden_size, I = intermediate_size, T = temporal_patch_size,
 * P = patch_size, C = in_channels, m = spatial_merge_size, out = out_hidden_size,
 * S = sqrt(num_position_embeddings).)  The matrices stay in the mapping; the
 * patch embedding is repacked once at load into [Hv, C*T*P*P] in the pixel
 * feature order (c, t, py, px), biases and norm weights are widened to f32.
 *
 * Input: the processor's pixel_values, one row of C*T*P*P features per patch,
 * all images concatenated; patches of an image in merge-block order (blocks of
 * m x m patches in raster order, the patches of a block in raster order), as
 * spec §5.5 (src/vision/preprocess.c produces them). grid_thw[i] = (t, h, w)
 * in patches; h and w must be multiples of m, Σ t*h*w = n_patches.
 * Output: the soft tokens, (n_patches / m², out_hidden) f32, one per merge
 * block in the same order (mlx-vlm's VisionModel.__call__, qwen3_vl/vision.py).
 */
#ifndef OPTIQ_VISION_QWEN3_VL_H
#define OPTIQ_VISION_QWEN3_VL_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/safetensors.h"

typedef struct qwen3_vl_config {
    int depth;           /* blocks */
    int hidden;          /* Hv */
    int intermediate;    /* I */
    int num_heads;
    int head_dim;        /* Hv / num_heads, a multiple of 4 (2-D rotary) */
    int out_hidden;      /* merger output = text hidden size */
    int patch_size;      /* P */
    int temporal_patch;  /* T */
    int merge;           /* m */
    int in_channels;     /* C */
    int num_pos;         /* S * S */
    int pos_side;        /* S */
    int patch_dim;       /* C * T * P * P */
} qwen3_vl_config;

typedef struct qwen3_vl qwen3_vl;

/* Read a vision_config object. Required: depth, hidden_size, intermediate_size,
 * num_heads, out_hidden_size, patch_size, spatial_merge_size,
 * num_position_embeddings; optional: temporal_patch_size (2), in_channels (3),
 * deepstack_visual_indexes (must be empty: Qwen3.5 has none). label names the
 * object in messages ("config.json: vision_config"). */
optiq_status qwen3_vl_config_parse(const cJSON *vision_config, const char *label, qwen3_vl_config *out,
                                   optiq_error *err);

/* Bind the tower to the tensors of `sidecar` (which must outlive it). Every
 * tensor is checked: a missing one or a wrong shape fails naming the tensor
 * and the expected and found shapes. */
optiq_status qwen3_vl_load(const st_file *sidecar, const cJSON *vision_config, const char *label, qwen3_vl **out,
                           optiq_error *err);
void qwen3_vl_free(qwen3_vl *vt);

const qwen3_vl_config *qwen3_vl_get_config(const qwen3_vl *vt);

/* Check a grid list against n_patches (multiples of the merge size, positive
 * sizes, Σ t*h*w == n_patches) and return the number of soft tokens in
 * *n_tokens (may be NULL). grid_thw: (n_images, 3). */
optiq_status qwen3_vl_check_grid(const qwen3_vl_config *cfg, const int32_t *grid_thw, int n_images,
                                 int64_t n_patches, int64_t *n_tokens, optiq_error *err);

/* Called with the hidden states (n_patches, hidden) after the patch and
 * position embedding (stage 0) and after each block j (stage j + 1). */
typedef void (*qwen3_vl_stage_fn)(void *user, int stage, const float *x, int64_t n_patches, int64_t hidden);

/* out (n_patches / m², out_hidden) = tower(pixels (n_patches, patch_dim)).
 * Scratch is allocated once per call (about n_patches * (4 Hv + I) floats
 * plus one row of attention scores per thread). on_stage may be NULL. */
optiq_status qwen3_vl_forward(const qwen3_vl *vt, thread_pool *pool, const float *pixels, int64_t n_patches,
                              const int32_t *grid_thw, int n_images, float *out, qwen3_vl_stage_fn on_stage,
                              void *user, optiq_error *err);

#endif
