/*
 * sidecar.h — building OptIQ's vision sidecar, as mlx-optiq 0.7.7's
 * build_vision_sidecar(base=..., quant_dir=...) does (optiq/vlm/sidecar.py).
 *
 * From a bf16 base folder (the Hugging Face checkpoint that still has its
 * vision / audio towers) into an existing quantized language folder:
 *   1. the multimodal tensors of the base: names whose first component, after
 *      an optional "model." and "encoder.", is one of vision_tower, audio_tower,
 *      multi_modal_projector, embed_vision, embed_audio, vision_embedder,
 *      audio_embedder, visual, vision_adapter, vision_projection, merger; found
 *      through model.safetensors.index.json when the base has one, else in the
 *      first model*.safetensors;
 *   2. stored under the name without those containers, "visual." renamed
 *      "vision_tower." (what the front-ends load); PyTorch channel-first convs
 *      made MLX channel-last (Conv3d patch embeddings [O,I,T,H,W] -> [O,T,H,W,I]
 *      unless the last axis is already 3; Gemma-4 audio conv2d / depthwise
 *      conv1d and Pixtral's patch_conv likewise, with the same guards, so a
 *      second run changes nothing); cast to bf16 (round to nearest even);
 *   3. written to QUANT/optiq_vision.safetensors (metadata format=mlx);
 *   4. listed in QUANT/model.safetensors.index.json's weight_map when the quant
 *      has an index (so index-reading loaders such as mlx-vlm find the tower;
 *      mlx-lm globs model*.safetensors and never sees it);
 *   5. config.json: the multimodal keys of the base config copied over
 *      (vision_config, audio_config, image/video/audio token ids, vision
 *      start/end ids, ...) and "optiq_vision": {sidecar, dtype, n_tensors,
 *      base_model} set; JSON files are written as Python's json.dump(indent=2)
 *      writes them (float literals such as 10000.0 stay floats);
 *   6. preprocessor_config.json, processor_config.json and
 *      video_preprocessor_config.json copied from the base when the quant lacks them.
 * Every other file of the quant is left untouched. An existing sidecar is an
 * error unless force is set; running twice with force gives the same bytes.
 * Differences from the original: the base must be a local folder (no Hub
 * download), and tensor data in the file and the sidecar keys appended to the
 * index are in name order (MLX writes its hash order), which loaders do not
 * see. As the original, the base's model_type is not compared with the
 * folder's.
 */
#ifndef OPTIQ_VISION_SIDECAR_H
#define OPTIQ_VISION_SIDECAR_H

#include <cjson/cJSON.h>

#include "base/error.h"

/* 1 when a tensor name of a base checkpoint belongs to a multimodal tower. */
int sidecar_is_mm_key(const char *name);

/* *summary (may be NULL): {"sidecar": path, "n_tensors", "bytes", "dtype": "bfloat16",
 * "base": base, "index_updated": bool, "config_keys": [...], "copied": [...]}. */
optiq_status sidecar_build(const char *base, const char *quant_dir, int force, cJSON **summary, optiq_error *err);

#endif
