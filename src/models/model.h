/*
 * model.h — the language-model interface every family implements.
 *
 * A family (qwen3_5.c, later gemma4.c, ...) fills an lm_ops table; the
 * registry (model.c) picks the family by config.json's model_type. The
 * runtime only talks to this header: it never sees a family's weights or
 * the layout of its caches.
 *
 *   lm_load        open a model folder, bind every tensor the family needs
 *                  (weights stay in the safetensors mapping, quantized ones
 *                  packed; small vectors such as norm weights are converted
 *                  to f32 copies), check every shape against config.json
 *   lm_cache_new   the per-sequence state of one timeline: KV caches of the
 *                  attention layers, conv and recurrent states of linear
 *                  layers; grows on demand up to `capacity` tokens
 *   lm_forward     run n new tokens (a prefill chunk, or one decode token)
 *                  through the model at the cache's current position and
 *                  advance it; optionally write logits and report hidden
 *                  states per layer (for `optiq dump` and the parity tests)
 *   lm_state_*     save a cache's state (rows cut at any length + a tail
 *                  valid at one position) and restore it, for prefix reuse
 *                  (runtime/prefix_cache.h)
 *
 * Numerics: activations are f32 throughout; weights are read in their stored
 * format (bf16/f16/f32, or MLX-quantized and dequantized inside the kernels).
 * Two paths. The exact path computes every product in f32; the parity tests
 * hold it to the f32 reference. The fast path (the default) lets products
 * with affine 4/8-bit weights write the activations as two int8 codes per
 * element (about 16 bits of precision, qkern.h) for integer dot products,
 * where the CPU has a kernel for it (AVX-512 VNNI); on the parity fixtures
 * it stays within a KL of 1e-5 of the exact path (docs/parity.md).
 * lm_set_exact(m, 1) selects the exact path.
 *
 * Thread safety: a loaded model is immutable and may be shared by many
 * caches; one forward call at a time per cache. Work inside a call is split
 * over the thread pool passed in.
 */
#ifndef OPTIQ_MODELS_MODEL_H
#define OPTIQ_MODELS_MODEL_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/model_dir.h"

typedef struct lm_model lm_model;
typedef struct lm_cache lm_cache;

/* What the runtime needs to know about a loaded model. */
typedef struct lm_info {
    const char *family;       /* "qwen3_5" */
    const char *model_type;   /* config.json's model_type (points into the config) */
    int64_t vocab_size;       /* width of a logits row */
    int64_t hidden_size;      /* width of an embedding / hidden-state row */
    int n_layers;
    int64_t max_position;     /* max_position_embeddings: the context limit */
    int mrope;                /* 1 when positions have three axes (t, h, w) */
    int tied_embeddings;
} lm_info;

/* Called with the hidden states (n, hidden_size) of the tokens of this call:
 * stage 0 after the embedding lookup, stage i (1..n_layers) after layer i-1,
 * stage n_layers + 1 after the final norm. */
typedef void (*lm_hidden_fn)(void *user, int stage, const float *h, int64_t n, int64_t hidden);

typedef struct lm_forward_args {
    const int32_t *tokens;   /* (n) token ids; may be NULL when embeds is set */
    const float *embeds;     /* (n, hidden) input embeddings used instead of the lookup, or NULL */
    int64_t n;               /* tokens in this call, >= 1 */
    const int32_t *positions;/* (3, n) MRoPE positions t/h/w, or NULL: cache position + 0..n-1 on every axis */
    float *logits;           /* (logits_all ? n : 1, vocab_size), or NULL for none */
    int logits_all;          /* 1: a logits row per token; 0: the last token's only */
    lm_hidden_fn on_hidden;  /* may be NULL */
    void *hidden_user;
    const uint8_t *is_image; /* (n) 1 where embeds holds an image soft token, or NULL. A run of
                                them is one image: families that need it see the ids there as
                                padding (Gemma-4's per-layer inputs) and may let the run attend
                                both ways; a run must not be split across calls. tokens must be
                                given too (the ids of the placeholders). */
} lm_forward_args;

/* A family's implementation. Every function receives the model it loaded. */
typedef struct lm_ops {
    const char *family;
    const char *const *model_types; /* NULL-terminated list of config model_type values */
    /* Takes ownership of md (also on failure). */
    optiq_status (*load)(model_dir *md, lm_model **out, optiq_error *err);
    void (*free)(lm_model *m);
    optiq_status (*cache_new)(const lm_model *m, int64_t capacity, lm_cache **out, optiq_error *err);
    void (*cache_free)(lm_cache *c);
    void (*cache_reset)(lm_cache *c);
    optiq_status (*forward)(const lm_model *m, lm_cache *c, thread_pool *pool, const lm_forward_args *a,
                            optiq_error *err);
    /* out (n, hidden) = the input embeddings of ids (what forward uses when embeds is NULL). */
    optiq_status (*embed)(const lm_model *m, const int32_t *ids, int64_t n, float *out, optiq_error *err);
    /* One decode step of n sequences at once: tokens[i] goes through
     * caches[i] at that cache's own position, logits row i (vocab_size
     * floats) comes out. Every weight matrix is read once for all rows
     * (linear_apply with n rows); attention and recurrent states stay per
     * sequence. NULL: lm_forward_batch runs the sequences one by one. */
    optiq_status (*forward_batch)(const lm_model *m, lm_cache *const *caches, const int32_t *tokens, int64_t n,
                                  thread_pool *pool, float *logits, optiq_error *err);
    /* Weight bytes one decode step reads (every matrix it multiplies with,
     * packed size incl. scales; for MoE only top-k experts), for the roofline. */
    uint64_t (*decode_bytes)(const lm_model *m);
    /* What config.json describes, without loading weights: {"family",
     * "variant", "layers", "hidden_size", "features": [...], ...}
     * (docs/model-folder.md). NULL with err on a config the family refuses. */
    cJSON *(*describe)(const model_dir *md, optiq_error *err);
    /* Saved states (prefix reuse, runtime/prefix_cache.h). A cache's state
     * is two parts: rows, one per position, that stay valid when the
     * sequence is cut at any length (full-attention K/V: position t's row
     * depends on tokens 0..t only), and a tail of fixed size that describes
     * the current position only (linear-attention conv and recurrent
     * states; sliding-window K/V of the last window - 1 positions).
     * state_layout: bytes of one position's rows, bytes of the tail.
     * state_save_rows: positions [from, to) (to <= pos), position-major (the
     * rows of positions 0..p-1 are the first p * row_bytes bytes).
     * state_save_tail: the tail at the current position.
     * state_restore: the cache as it was at position pos, from rows of
     * positions 0..pos-1 and the tail saved at pos; the next forward call
     * gives bit for bit what it gives on the cache that was saved. */
    void (*state_layout)(const lm_model *m, size_t *row_bytes, size_t *tail_bytes);
    void (*state_save_rows)(const lm_cache *c, int64_t from, int64_t to, void *dst);
    void (*state_save_tail)(const lm_cache *c, void *dst);
    optiq_status (*state_restore)(lm_cache *c, int64_t pos, const void *rows, const void *tail, optiq_error *err);
} lm_ops;

/* Every family's model struct starts with this header. */
struct lm_model {
    const lm_ops *ops;
    lm_info info;
    model_dir *md; /* owned: the weights point into its mappings */
    int exact;     /* 1: f32 activations in every product (lm_set_exact) */
};

/* Every family's cache struct starts with this header. */
struct lm_cache {
    const lm_model *model;
    int64_t pos;      /* tokens processed so far */
    int64_t capacity; /* most tokens this cache may hold */
    int64_t rope_delta; /* MRoPE: decode position = pos + rope_delta (0 for text) */
};

/* ---- registry and dispatch ---- */

/* Open a model folder and load it with the family its model_type names.
 * Unknown model types fail with OPTIQ_ERR_UNSUPPORTED listing the known ones. */
optiq_status lm_load(const char *dir, lm_model **out, optiq_error *err);
/* Same from an opened folder (ownership of md passes to the call). */
optiq_status lm_load_dir(model_dir *md, lm_model **out, optiq_error *err);
void lm_free(lm_model *m);
const lm_info *lm_get_info(const lm_model *m);
/* 1: exact path (f32 activations in every product); 0 (default): fast path. */
void lm_set_exact(lm_model *m, int exact);
model_dir *lm_model_dir(const lm_model *m);
/* The family table for a model_type, or NULL. */
const lm_ops *lm_find_family(const char *model_type);
/* Comma-separated list of the model types this build runs (static string). */
const char *lm_known_model_types(void);

/* capacity: most tokens the sequence may hold (1 .. info.max_position). */
optiq_status lm_cache_new(const lm_model *m, int64_t capacity, lm_cache **out, optiq_error *err);
void lm_cache_free(lm_cache *c);
void lm_cache_reset(lm_cache *c);
static inline int64_t lm_cache_pos(const lm_cache *c) { return c->pos; }

/* Runs a->n tokens at the cache position. Fails with OPTIQ_ERR_CONTEXT (and
 * leaves the cache unchanged) when pos + n exceeds the capacity, and with
 * OPTIQ_ERR_INVALID_ARG for a token id outside the vocabulary. */
optiq_status lm_forward(const lm_model *m, lm_cache *c, thread_pool *pool, const lm_forward_args *a,
                        optiq_error *err);
/* The family's description of an opened folder (lm_ops.describe); NULL with
 * err for an unknown model_type or a config the family refuses. */
cJSON *lm_describe(const model_dir *md, optiq_error *err);
optiq_status lm_embed(const lm_model *m, const int32_t *ids, int64_t n, float *out, optiq_error *err);
uint64_t lm_decode_bytes(const lm_model *m);

/* Saved states (lm_ops.state_*): 0 bytes everywhere when the family cannot
 * save its state (then nothing is saved or restored). lm_state_restore fails
 * with OPTIQ_ERR_CONTEXT for a position outside 1 .. capacity - 1 and
 * leaves the cache reset on any failure. */
static inline void lm_state_layout(const lm_model *m, size_t *row_bytes, size_t *tail_bytes) {
    *row_bytes = *tail_bytes = 0;
    if (m->ops->state_layout && m->ops->state_restore) m->ops->state_layout(m, row_bytes, tail_bytes);
}
static inline void lm_state_save_rows(const lm_cache *c, int64_t from, int64_t to, void *dst) {
    if (from < to) c->model->ops->state_save_rows(c, from, to, dst);
}
static inline void lm_state_save_tail(const lm_cache *c, void *dst) { c->model->ops->state_save_tail(c, dst); }
static inline optiq_status lm_state_restore(lm_cache *c, int64_t pos, const void *rows, const void *tail,
                                            optiq_error *err) {
    if (pos < 1 || pos >= c->capacity) {
        c->model->ops->cache_reset(c);
        return err_set(err, OPTIQ_ERR_CONTEXT, "restore: position %lld is outside 1..%lld", (long long)pos,
                       (long long)c->capacity - 1);
    }
    return c->model->ops->state_restore(c, pos, rows, tail, err);
}

/* One decode step for n sequences (lm_ops.forward_batch): token i appended
 * to caches[i] (distinct caches of this model, each with room for one more
 * token), logits (n, vocab_size). The logits equal what lm_forward gives for
 * each sequence alone, up to the matmul kernels' row-count independence
 * (docs/parity.md). On failure every cache is as before the call, or reset
 * when a family cannot undo a partial step (out of memory). */
optiq_status lm_forward_batch(const lm_model *m, lm_cache *const *caches, const int32_t *tokens, int64_t n,
                              thread_pool *pool, float *logits, optiq_error *err);

#endif
