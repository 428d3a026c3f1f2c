/*
 * gemma4_vision.h — the Gemma 4 image front-end: processor (resize rule,
 * rescale, layout) and the two towers that turn pixels into soft tokens,
 * computed in f32 from the stored (bf16 / f16 / f32) weights. Reference:
 * mlx-vlm 0.7.10, mlx_vlm/models/gemma4/{processing_gemma4,vision,gemma4}.py
 * and mlx_vlm/models/gemma4_unified/; spec gemma4.md §2.3, §2.6, §2.7 (with
 * errata A1, B2), §3.3, §3.5, §6, §7.1–§7.2.
 *
 * Processor (both model kinds), for an RGB image of h x w pixels:
 *   1. target size th x tw (§6.2, Python doubles): n = max_soft_tokens,
 *      f = sqrt(n·k²·p² / (h·w)), side = p·k,
 *      th = ⌊f·h / side⌋·side, tw = ⌊f·w / side⌋·side; both 0 is an error; a
 *      zero side becomes `side` and the other min(⌊long/short⌋·side, n·side);
 *   2. Pillow bicubic resize of the uint8 image when (th, tw) != (h, w);
 *   3. x = float(u8) · float(rescale_factor), then (x − mean) / std only if
 *      do_normalize (off by default), channels first: pixels [3, th, tw] f32.
 * Soft tokens per image: (th/p)·(tw/p) / k².
 *
 * Encoder-based tower (model_type gemma4; MLX keys, "model." + key accepted):
 *   vision_tower.patch_embedder.input_proj.weight              [D, 3p²]
 *   vision_tower.patch_embedder.position_embedding_table       [2, S, D]  (0: x/column, 1: y/row)
 *   vision_tower.encoder.layers.{i}.self_attn.{q,k,v,o}_proj.linear.weight
 *                                       [nh·hd, D], [nkv·hd, D] x2, [D, nh·hd]
 *   vision_tower.encoder.layers.{i}.self_attn.{q,k}_norm.weight [hd]
 *   vision_tower.encoder.layers.{i}.mlp.{gate,up}_proj.linear.weight [I, D]
 *   vision_tower.encoder.layers.{i}.mlp.down_proj.linear.weight      [D, I]
 *   vision_tower.encoder.layers.{i}.{input_layernorm, post_attention_layernorm,
 *       pre_feedforward_layernorm, post_feedforward_layernorm}.weight [D]
 *   …_proj.{input_min,input_max,output_min,output_max}  scalars, only with use_clipped_linears
 *   vision_tower.std_bias, vision_tower.std_scale       [D], only with standardize
 *   embed_vision.embedding_projection.weight            [H, D]
 * Forward (§6.6–§6.10): patches in (row-in-patch, col-in-patch, channel)
 * order, 2·(x − 0.5), input_proj, + T[0][col] + T[1][row]; per block
 * sandwich RMSNorms, q/k RMSNorm with weight and weightless v RMSNorm (eps
 * 1e-6 fixed), 2-D RoPE (first half of each head turns with the column,
 * second half with the row, base rope_theta), bidirectional attention with
 * scale 1, GeGLU MLP (tanh GELU); k x k average pooling by patch position,
 * × float(sqrt(D)); optional standardize; weightless RMSNorm (vision eps) and
 * the projection to H.
 *
 * Unified tower (model_type gemma4_unified; §7.1, §7.2):
 *   vision_embedder.patch_ln1.{weight,bias}   [3P²]   (P = model_patch_size = p·k)
 *   vision_embedder.patch_dense.{weight,bias} [E, 3P²], [E]
 *   vision_embedder.patch_ln2.{weight,bias}   [E]
 *   vision_embedder.pos_embedding             [M, 2, E] (second index 0: x, 1: y)
 *   vision_embedder.pos_norm.{weight,bias}    [E]
 *   embed_vision.embedding_projection.weight  [H, E]
 * Forward: P x P patches in (row, col, channel) order (pixels in [0, 1], no
 * 2x − 1), LayerNorm (eps 1e-5) → Linear+bias → LayerNorm → + (pos[x,0] +
 * pos[y,1]) → LayerNorm → weightless RMSNorm (vision eps) → projection.
 *
 * Numerics: f32 activations throughout; Python float constants are taken as
 * their f32 value, as MLX does with f32 arrays. The parity target is the
 * reference's run with the tower weights widened to f32.
 */
#ifndef OPTIQ_VISION_GEMMA4_VISION_H
#define OPTIQ_VISION_GEMMA4_VISION_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/safetensors.h"

#define G4V_MAX_SOFT_TOKENS 65536   /* largest max_soft_tokens accepted */
#define G4V_MAX_SIDE ((1 << 24) - 1) /* largest input or resized side */

/* Processor parameters (Gemma4ImageProcessor / Gemma4UnifiedImageProcessor). */
typedef struct g4v_params {
    int patch;           /* p: patch_size, 16 */
    int pool;            /* k: pooling_kernel_size, 3 */
    int max_soft_tokens; /* n_max: 280 */
    int unified;         /* 1: gemma4_unified rules (the resize and pixels are the same) */
    int do_resize;       /* 1 */
    int do_rescale;      /* 1 */
    double rescale_factor; /* 1/255, applied as float32 */
    int do_normalize;    /* 0 */
    float mean[3], std[3]; /* 0.5 each (used only with do_normalize) */
} g4v_params;

g4v_params g4v_params_default(int unified);

/* Parameters from the checkpoint's JSON texts (either may be NULL: file
 * absent). As the reference's from_pretrained: processor_config.json when it
 * exists, else preprocessor_config.json, is "the config", then
 *   encoder-based (errata A1): its "image_processor" object if it is one
 *     (every key); else, if the config has no "image_processor_type" key and
 *     has one of patch_size / max_soft_tokens / pooling_kernel_size, the flat
 *     keys patch_size, max_soft_tokens, pooling_kernel_size, do_resize,
 *     do_rescale, do_normalize, rescale_factor, image_mean, image_std;
 *     otherwise nothing (class defaults);
 *   unified (errata B2): only the "image_processor" object; there
 *     num_soft_tokens stands for max_soft_tokens when the latter is absent;
 *     model_patch_size is ignored (the cut is always p·k).
 * Checked: integer sizes (patch_size and pooling_kernel_size in [1, 256],
 * max_soft_tokens in [1, G4V_MAX_SOFT_TOKENS]), booleans (null → false, a
 * number → non-zero), image_mean / image_std arrays of 1 or 3 finite numbers
 * (null or [] → default), a finite rescale_factor. OPTIQ_ERR_FORMAT naming
 * the file and key; *out is written only on success. */
optiq_status g4v_params_from_json(const char *preprocessor_json, size_t n1, const char *processor_json, size_t n2,
                                  int unified, g4v_params *out, optiq_error *err);

/* Step 1 for an h x w image (height, width). max_soft_tokens 0 takes p's.
 * With do_resize off the size is kept (it must then be a multiple of p·k).
 * OPTIQ_ERR_INVALID_ARG for sides outside [1, G4V_MAX_SIDE], a budget outside
 * [1, G4V_MAX_SOFT_TOKENS] or a 0 x 0 result (the reference's ValueError). */
optiq_status g4v_target_size(const g4v_params *p, int h, int w, int max_soft_tokens, int *th, int *tw,
                             optiq_error *err);

/* (th/p)·(tw/p) / k² for a processed size. */
int64_t g4v_soft_tokens(const g4v_params *p, int th, int tw);

/* Steps 1–3 on rgb (h, w, 3) uint8: *pixels = malloc'd [3, th, tw] f32 (free
 * with free()). Errors as g4v_target_size, OPTIQ_ERR_NOMEM; *pixels is NULL
 * on failure. */
optiq_status g4v_pixels(const g4v_params *p, const uint8_t *rgb, int h, int w, int max_soft_tokens, float **pixels,
                        int *th, int *tw, optiq_error *err);

typedef struct g4v_tower g4v_tower;

/* Dimensions of a loaded tower. */
typedef struct g4v_dims {
    int unified;
    int patch, pool;     /* p, k of the vision_config: processed sizes must be multiples of p·k */
    int64_t feat;        /* D (encoder) or E (unified): width of the pooled / embedded rows */
    int64_t text_hidden; /* H */
    int layers, heads, kv_heads, head_dim, intermediate; /* encoder only */
} g4v_dims;

/* Bind the tower to the tensors of `weights` (a sidecar or the model's own
 * file; it must outlive the tower). vision_config: config.json's object (NULL
 * or missing keys take the reference defaults, §2.3 / §2.6); cfg_label names
 * it in messages. Every tensor is checked: missing, wrong shape or a dtype
 * other than BF16 / F16 / F32 fails with OPTIQ_ERR_FORMAT naming the tensor. */
optiq_status g4v_load(const st_file *weights, const cJSON *vision_config, const char *cfg_label,
                      int64_t text_hidden, int unified, g4v_tower **out, optiq_error *err);
void g4v_free(g4v_tower *t);
const g4v_dims *g4v_tower_dims(const g4v_tower *t);

/* Soft tokens of one processed image: pixels [3, th, tw] (g4v_pixels), out
 * (g4v_soft_tokens rows, text_hidden) f32. th and tw must be positive
 * multiples of the tower's p·k. Scratch is allocated per call. */
optiq_status g4v_encode(const g4v_tower *t, thread_pool *pool, const float *pixels, int th, int tw, float *out,
                        optiq_error *err);

/* The same, also (or only) returning the rows before the projector:
 * pooled (n, feat) — the encoder's pooled (and standardized) output, or the
 * unified embedder's output. Either pointer may be NULL. */
optiq_status g4v_encode_ex(const g4v_tower *t, thread_pool *pool, const float *pixels, int th, int tw, float *pooled,
                           float *out, optiq_error *err);

#endif
