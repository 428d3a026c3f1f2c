/*
 * qformat.h — identity of an MLX quantized format: (mode, bits, group size).
 *
 * Shared by the model-folder loader (which resolves each module's format from
 * config.json's "quantization" object) and the quantized kernels (which look
 * up their row in the format table by it). See ../shared/spec/mlx-quant-format.md
 * and docs/formats.md.
 *
 * Mode defaults (what mlx's to_quantized uses when a per-module entry omits a
 * field): affine 64/4, mxfp4 32/4, nvfp4 16/4, mxfp8 32/8. An entry without
 * "mode" means affine, not the global mode.
 */
#ifndef OPTIQ_QUANT_QFORMAT_H
#define OPTIQ_QUANT_QFORMAT_H

typedef enum qmode { QMODE_AFFINE = 0, QMODE_MXFP4, QMODE_MXFP8, QMODE_NVFP4, QMODE_COUNT } qmode;

#include <stdint.h>

#include "base/dtype.h"

typedef struct qformat {
    qmode mode;
    int bits;       /* affine: 2,3,4,5,6,8; mxfp4/nvfp4: 4; mxfp8: 8 */
    int group_size; /* affine: 32,64,128; mx*: 32; nvfp4: 16 */
} qformat;

/* A quantized matrix (or stack of matrices: MoE experts) as stored on disk.
 * Pointers go into the safetensors mapping and may be unaligned.
 * Row-major: element (m, r, c) of the unpacked weight lives in row
 * (m * rows + r) of the packed data, code c of that row's bit stream. */
typedef struct qweight {
    qformat fmt;
    int64_t n_mats;        /* 1 for a 2-D weight, E for MoE expert stacks */
    int64_t rows;          /* O: output features (per matrix) */
    int64_t cols;          /* K: input features, unpacked */
    const void *w;         /* U32 words: [n_mats, rows, cols * bits / 32] */
    const void *scales;    /* [n_mats, rows, cols / group_size] of scale_dtype */
    const void *biases;    /* affine only (same shape and dtype as scales), else NULL */
    dtype scale_dtype;     /* affine: BF16, F16 or F32; fp modes: U8 */
} qweight;

/* "affine", "mxfp4", "mxfp8", "nvfp4". */
const char *qmode_name(qmode m);
/* Parse a mode name; returns -1 when unknown. */
int qmode_from_name(const char *s);
/* Defaults of a mode (bits, group size). */
qformat qformat_default(qmode m);
/* 1 when MLX supports this combination (see the list above). */
int qformat_valid(qformat f);
/* Storage cost in bits per weight including scales (and biases, affine),
 * given the byte size of one scale/bias element for affine (2 for bf16). */
double qformat_bits_per_weight(qformat f, int scale_bytes);

#endif
