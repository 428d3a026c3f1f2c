/*
 * synthetic.h — random-weight models with the exact shapes of real
 * checkpoints, built in memory, for `optiq bench --synthetic NAME`.
 *
 * A row of the table (synthetic.c) gives a model's shapes and quantization;
 * the builder lays out every tensor an MLX-converted folder of that model
 * holds (names, dtypes, shapes as mlx-lm's convert writes them) in one
 * safetensors image in anonymous memory (2 MB aligned, transparent huge pages
 * asked for with madvise, as the loader does for weight files), fills it with random values and opens it as a
 * model_dir (model_dir_open_memory): the normal loader (lm_load_dir) then
 * binds it exactly as it binds a folder on disk. Nothing is written to disk.
 *
 * Values (the forward must stay finite, and dequantized weights look like a
 * trained model's: roughly zero-mean, std ~0.02):
 *   quantized weight   U32 words from a PRNG (every code equally likely)
 *   .scales            bf16 s = 0.02 / sd(codes) times a per-group factor in
 *                      [0.75, 1.25]; sd(codes) = sqrt((4^b - 1) / 12)
 *   .biases            bf16 -s * (2^b - 1) / 2: dequantized values centred on 0
 *   norm weights       1.0 (MLX-converted checkpoints store them uncentred)
 *   layer_scalar       1.0 (Gemma-4; bf16 [1])
 *   conv1d taps        uniform in [-0.25, 0.25]
 *   A_log (f32)        log(uniform in [1, 16]);  dt_bias 0
 * Every tensor's PRNG stream (splitmix64) is seeded from the seed, the
 * tensor's name (its module's for scales and biases, which draw the same
 * factors) and the chunk of 2^20 elements being filled, so the weights depend
 * on neither the fill order nor the thread count. Tensor data is laid out in
 * name order from a 64-byte aligned start (the header is padded with spaces).
 */
#ifndef OPTIQ_BENCH_SYNTHETIC_H
#define OPTIQ_BENCH_SYNTHETIC_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/model_dir.h"

/* One model of the table. The fields are those of the family's config
 * (text_config for Qwen3.5 and Gemma-4); every Linear and the embeddings
 * are quantized with (bits, group_size), affine, bf16 scales and biases.
 * Fields a family does not use are 0. */
typedef struct synth_model {
    const char *name;       /* "qwen3_5-0.8b" */
    const char *model_type; /* config.json model_type: picks the family's tensor list */
    int for_tests;          /* 1: a tiny shape for the test suite, not a real checkpoint */
    int64_t hidden, n_layers, inter, vocab;
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t lk_heads, lv_heads, lk_dim, lv_dim, conv_k; /* Qwen3.5 linear attention */
    /* layer i is full attention when (i + 1) % full_attention_interval == 0;
     * the others are linear attention (Qwen3.5) or sliding-window attention
     * (Gemma-4, whose sliding_window_pattern this is) */
    int64_t full_attention_interval;
    int64_t max_position;
    int tie;
    double rope_theta, partial_rotary; /* Gemma-4: those of the full layers ("proportional" RoPE) */
    int64_t mrope[3];
    /* Gemma-4 (spec gemma4.md §2.1-§2.2) */
    int64_t global_head_dim;   /* head size of full layers; 0: head_dim */
    int64_t n_global_kv_heads; /* KV heads of K-eq-V full layers; 0: unset (num_key_value_heads) */
    int64_t kv_shared;         /* num_kv_shared_layers: the last ones reuse earlier layers' K/V */
    int64_t ple, vocab_ple;    /* hidden_size_per_layer_input (0: no PLE), vocab_size_per_layer_input */
    int64_t sliding_window;
    int double_wide;           /* use_double_wide_mlp: KV-shared layers' MLP is 2 * inter wide */
    int k_eq_v;                /* attention_k_eq_v: full layers have no v_proj */
    double rope_local_theta;   /* sliding layers: default RoPE over the whole head */
    double softcap;            /* final_logit_softcapping; 0: null (none) */
    int bits, group_size;
} synth_model;

/* The row named `name`, or NULL. */
const synth_model *synthetic_find(const char *name);
size_t synthetic_count(void);
const synth_model *synthetic_at(size_t i); /* NULL past the end */
/* "qwen3_5-0.8b, qwen3_5-tiny (tests only), ..." — for messages and help (static). */
const char *synthetic_names(void);

/* config.json text of the model (caller frees). NULL when out of memory or
 * the family has no builder. */
char *synthetic_config_json(const synth_model *s);

/* Weight bytes one decode step reads, from the shapes alone: every matrix
 * a token multiplies with (the head once; the embedding row lookup not
 * counted), packed words + scales + biases. Gemma-4: the per-layer
 * embedding table (as large as the rest of E2B) counts one row, the only
 * part a token reads; KV-shared layers have no k/v projections. What
 * lm_decode_bytes must report for the loaded model. */
uint64_t synthetic_decode_bytes(const synth_model *s);
/* Unpacked parameter count of the quantized matrices (embedding included). */
uint64_t synthetic_matrix_params(const synth_model *s);

/* Build the weights in memory (pool may be NULL; it splits the filling) and
 * open them as a model_dir that owns the image. *image_bytes (may be NULL)
 * receives the size of the safetensors image. */
optiq_status synthetic_model_dir(const synth_model *s, uint64_t seed, thread_pool *pool, model_dir **out,
                                 uint64_t *image_bytes, optiq_error *err);

/* ---- the benchmark (bench_synthetic.c) ---- */

/* Build p->synthetic, load it with lm_load_dir, and time a prompt of
 * p->prefill_tokens and p->decode_tokens greedy decode steps with each thread
 * count of threads[0..n_threads) (the pool must hold the largest); adds the
 * "synthetic" object (keys in docs/cli.md) to root. */
optiq_status bench_synthetic(thread_pool *pool, const optiq_bench_params *p, const int *threads, int n_threads,
                             cJSON *root, optiq_error *err);

#endif
