/*
 * model_dir.h — a model folder as mlx-lm / mlx-vlm / OptIQ lay it out.
 *
 *   config.json                     HF config (+ "quantization"); kept as a cJSON tree
 *   model*.safetensors              the language tower: the same glob stock mlx-lm
 *                                   uses (load_model), sorted by file name
 *   model.safetensors.index.json    optional; when present it must describe the
 *                                   tower exactly: every tensor of weight_map is in
 *                                   the shard it names, every shard it names exists
 *                                   and is a model*.safetensors file, every shard on
 *                                   disk is named, every tower tensor is listed;
 *                                   entries naming the sidecar (mlx-optiq adds them
 *                                   for index-reading loaders) must be sidecar tensors,
 *                                   and are ignored when the sidecar is absent
 *   optiq_vision.safetensors        OptIQ's bf16 vision/audio sidecar, in optiq/ or
 *                                   beside the shards (optiq/ wins, as mlx-optiq's
 *                                   resolver), opened on its own: its tensors are not
 *                                   part of the tower
 *   other *.safetensors             (mtp.safetensors, adapters.safetensors, ...)
 *                                   not opened, only listed
 *   tokenizer / template files      located, not parsed (tokenizer_config.json is
 *                                   parsed to see whether it carries a chat_template)
 *
 * Files are found through stat(), so a Hugging Face cache snapshot (symlinks
 * into blobs/) works. Weights are loaded once by st_open (huge pages or mmap). A tensor name
 * found in two shards is an error. Tower tensors are found by name through a
 * hash table over all shards.
 *
 * Configuration lookups for language-model keys (model_dir_lang_*) look at the
 * top level of config.json first and fall back to "text_config" (the nested
 * form of VLM configs such as Gemma 3/4 and Qwen3-VL/3.5).
 */
#ifndef OPTIQ_IO_MODEL_DIR_H
#define OPTIQ_IO_MODEL_DIR_H

#include <cjson/cJSON.h>

#include "io/safetensors.h"

#define MD_SIDECAR_NAME "optiq_vision.safetensors"
#define MD_SIDECAR_SUBDIR "optiq"
#define MD_INDEX_NAME "model.safetensors.index.json"

typedef struct model_dir model_dir;

/* Tokenizer, template and processor files a folder may carry. */
typedef enum md_file {
    MD_TOKENIZER_JSON,       /* tokenizer.json */
    MD_TOKENIZER_CONFIG,     /* tokenizer_config.json */
    MD_SPECIAL_TOKENS_MAP,   /* special_tokens_map.json */
    MD_GENERATION_CONFIG,    /* generation_config.json */
    MD_CHAT_TEMPLATE_JINJA,  /* chat_template.jinja */
    MD_CHAT_TEMPLATE_JSON,   /* chat_template.json */
    MD_PREPROCESSOR_CONFIG,  /* preprocessor_config.json */
    MD_PROCESSOR_CONFIG,     /* processor_config.json */
    MD_TOKENIZER_MODEL,      /* tokenizer.model (SentencePiece) */
    MD_FILE_COUNT
} md_file;

optiq_status model_dir_open(const char *path, model_dir **out, optiq_error *err);
/* A model folder that exists only in memory (the synthetic benchmark models,
 * tests): config.json given as text, and one language-tower shard already
 * opened (st_open_memory). The config gets the same checks as a folder's;
 * the path reads "<memory>", the shard is named "model.safetensors", and
 * there is no index, sidecar, other safetensors or tokenizer/template file.
 * Ownership of shard passes to the call, also on failure; so does that of
 * shard_data when not NULL: the buffer the shard borrows (st_open_memory
 * does not copy), released with free() after the shard is closed. */
optiq_status model_dir_open_memory(const char *config_json, st_file *shard, void *shard_data, model_dir **out,
                                   optiq_error *err);
void model_dir_close(model_dir *md);

const char *model_dir_path(const model_dir *md);

/* ---- config.json ---- */
const cJSON *model_dir_config(const model_dir *md);
const char *model_dir_config_path(const model_dir *md);
const char *model_dir_model_type(const model_dir *md);      /* top-level model_type (required) */
const char *model_dir_text_model_type(const model_dir *md); /* text_config.model_type, or NULL */
const cJSON *model_dir_text_config(const model_dir *md);    /* object or NULL */
const cJSON *model_dir_vision_config(const model_dir *md);  /* object or NULL */
const cJSON *model_dir_architectures(const model_dir *md);  /* array or NULL */

/* Language key: top level, else text_config. *where (may be NULL) receives
 * "" or "text_config". NULL when absent (or null) in both. */
const cJSON *model_dir_lang_item(const model_dir *md, const char *key, const char **where);
/* Typed forms; a missing key fails with "config.json: key missing (looked at the
 * top level and in text_config)", the _or forms return def instead. */
optiq_status model_dir_lang_int(const model_dir *md, const char *key, int64_t *out, optiq_error *err);
optiq_status model_dir_lang_int_or(const model_dir *md, const char *key, int64_t def, int64_t *out, optiq_error *err);
optiq_status model_dir_lang_double_or(const model_dir *md, const char *key, double def, double *out,
                                      optiq_error *err);
optiq_status model_dir_lang_bool_or(const model_dir *md, const char *key, int def, int *out, optiq_error *err);
optiq_status model_dir_lang_string_or(const model_dir *md, const char *key, const char *def, const char **out,
                                      optiq_error *err);

/* ---- language tower ---- */
size_t model_dir_shard_count(const model_dir *md);
const st_file *model_dir_shard(const model_dir *md, size_t i);
const char *model_dir_shard_name(const model_dir *md, size_t i); /* file name, no folder */
size_t model_dir_tensor_count(const model_dir *md);              /* over all shards */
/* Tower tensor by name; *shard (may be NULL) receives its shard index. */
const st_tensor *model_dir_find(const model_dir *md, const char *name, size_t *shard);
/* Tower tensor i in name order over all shards (0 <= i < tensor_count). */
const st_tensor *model_dir_tensor_at(const model_dir *md, size_t i, size_t *shard);
uint64_t model_dir_tower_file_bytes(const model_dir *md);   /* sum of shard file sizes */
uint64_t model_dir_tower_tensor_bytes(const model_dir *md); /* sum of tensor sizes (mlx-lm total_size) */

/* The parsed index, or NULL when the folder has none. */
const cJSON *model_dir_index(const model_dir *md);

/* ---- other files ---- */
const st_file *model_dir_sidecar(const model_dir *md); /* optiq_vision.safetensors or NULL */
const char *model_dir_sidecar_rel(const model_dir *md); /* its path relative to the folder, or NULL */
size_t model_dir_other_count(const model_dir *md);     /* *.safetensors that are neither tower nor sidecar */
const char *model_dir_other(const model_dir *md, size_t i);
/* Full path of a tokenizer/template file, or NULL when the folder lacks it. */
const char *model_dir_file(const model_dir *md, md_file which);
const char *md_file_name(md_file which);
/* Where the chat template comes from, by the precedence transformers uses:
 * "chat_template.jinja", "chat_template.json", "tokenizer_config.json", or NULL. */
const char *model_dir_chat_template_source(const model_dir *md);

#endif
