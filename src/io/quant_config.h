/*
 * quant_config.h — config.json's "quantization" object, and which tower
 * modules are quantized with which format.
 *
 * Where the object comes from (as mlx-lm's load_model):
 *   1. "quantization" when present;
 *   2. otherwise "quantization_config", or "text_config.quantization_config"
 *      when the top level has none — used only when it is an MLX-style object
 *      (no "quant_method"); foreign formats (awq, gptq, compressed-tensors,
 *      mxfp4 checkpoints, bitnet) need tensor conversion and are refused with
 *      OPTIQ_ERR_UNSUPPORTED;
 *   3. none: the model is not quantized (every module must then be float).
 *
 * Entries (spec §3.1): the top-level "bits", "group_size", "mode" give the
 * default format ("mode" absent: affine; missing bits / group_size: the mode's
 * defaults, affine 64/4, mxfp4 32/4, nvfp4 16/4, mxfp8 32/8). Every other key
 * whose value is an object, true or false is a per-module entry keyed by module
 * path: an object is passed to to_quantized, so a missing "mode" means affine
 * (not the default mode) and missing bits / group_size mean the defaults of
 * that mode — except for MoE expert stacks (3-D weights), whose to_quantized
 * (mlx-lm SwitchLinear) defaults to 64/4 whatever the mode; true means the
 * default format; false means "stays float". Other scalar keys are ignored,
 * as mlx-lm ignores them.
 *
 * Resolution (spec §3.3): module X is quantized iff tensor X.scales exists and
 * X.weight is U32. Checked for each: the format is one MLX supports,
 * weight.shape[-1] * 32 / bits == scales.shape[-1] * group_size (K % gs == 0),
 * scales and weight agree on every other axis, scales are U8 for fp modes and
 * BF16/F16/F32 for affine, X.biases present iff affine with the scales' shape
 * and dtype, X.bias (layer bias, optional) of shape weight.shape[:-1]; a false
 * entry whose module has scales, and an entry asking for quantization of a
 * float weight without scales, are errors. Weights are 2-D [O, K*b/32] or 3-D
 * expert stacks [E, O, K*b/32].
 */
#ifndef OPTIQ_IO_QUANT_CONFIG_H
#define OPTIQ_IO_QUANT_CONFIG_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "io/model_dir.h"
#include "quant/qformat.h"

enum { QC_HAS_BITS = 1, QC_HAS_GROUP_SIZE = 2, QC_HAS_MODE = 4 };

typedef struct qc_entry {
    char *module;  /* module path, e.g. "model.layers.0.mlp.down_proj" */
    int quantize;  /* 0 for a false entry */
    qformat fmt;   /* with the mode defaults filled in (2-D rule) */
    unsigned has;  /* QC_HAS_* fields given in the entry */
} qc_entry;

typedef struct quant_config {
    int present;          /* a quantization object was found */
    const char *source;   /* "quantization", "quantization_config", "text_config.quantization_config" or NULL */
    qformat dflt;         /* top-level format */
    int quantize_activations;
    qc_entry *entries;    /* sorted by module */
    size_t n_entries;
    size_t n_false;       /* entries that are false */
} quant_config;

optiq_status quant_config_parse(const cJSON *config, const char *label, quant_config *qc, optiq_error *err);
void quant_config_free(quant_config *qc);
const qc_entry *quant_config_find(const quant_config *qc, const char *module);

/* A quantized module of the tower. */
typedef struct qmodule {
    char *name;                 /* module path X */
    qweight q;                  /* pointers into the shard mapping */
    const st_tensor *weight;    /* X.weight U32 [E?, O, K*b/32] */
    const st_tensor *scales;    /* X.scales [E?, O, K/gs] */
    const st_tensor *biases;    /* X.biases, affine only */
    const st_tensor *bias;      /* X.bias (layer bias) or NULL */
    int from_entry;             /* format came from a per-module entry */
    uint64_t params;            /* unpacked weights (+ layer bias), as mlx-lm counts them */
} qmodule;

typedef struct quant_modules {
    qmodule *mods;              /* sorted by name */
    size_t n;
    char **unquantized;         /* modules with a float X.weight and no X.scales, sorted */
    size_t n_unquantized;
} quant_modules;

optiq_status quant_resolve(const model_dir *md, const quant_config *qc, quant_modules *out, optiq_error *err);
void quant_modules_free(quant_modules *qm);
const qmodule *quant_modules_find(const quant_modules *qm, const char *name);

/* Parameter count of the tower the way mlx-lm's get_total_parameters counts
 * it: the sum over leaf modules (modules with no child module) of, for a
 * quantized module, weight.size * 32 / bits (+ its layer bias), and for any
 * other module the size of all its tensors. A leaf is recognised from the
 * names: module P (a tensor name minus its last component) is not a leaf when
 * some other tensor lives under P.child.*; tensors held directly by non-leaf
 * modules (e.g. A_log beside a linear-attention block's projections) are not
 * counted, as in mlx-lm. */
optiq_status quant_parameter_count(const model_dir *md, const quant_modules *qm, uint64_t *out, optiq_error *err);

#endif
