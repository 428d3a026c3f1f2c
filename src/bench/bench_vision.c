/*
 * bench_vision.c — the image-encoding part of `optiq bench --synthetic NAME`:
 * a vision tower with the exact shapes of the model's (random bf16 weights,
 * built in memory as a sidecar image and bound by the normal loader) encodes
 * one 1024 x 768 image (random pixels; preprocessing with the checkpoints'
 * processor settings) at each thread count: preprocessing and tower times.
 *
 * The shared steps (the sidecar image, the picture, the timed runs, the
 * JSON) are written once; what differs per family — tensor list,
 * vision_config, loader, processor and forward — is one row of FAMILIES.
 */
#include "bench/bench_vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dtype.h"
#include "io/safetensors.h"
#include "vision/gemma4_vision.h"
#include "vision/preprocess.h"
#include "vision/qwen3_vl.h"

typedef enum { VIS_QWEN3_VL, VIS_GEMMA4 } vis_family;

typedef struct vis_shape {
    const char *model;
    vis_family family;
    int depth, hidden, heads, kv_heads, head_dim, inter;
    int out;     /* Qwen: merger out_hidden_size; Gemma-4: the text hidden size (embed_vision's rows) */
    int num_pos; /* Qwen: num_position_embeddings; Gemma-4: position_embedding_size */
    int max_soft_tokens; /* Gemma-4: the processor's budget; 0 for Qwen (its pixel limits decide) */
} vis_shape;

static const vis_shape SHAPES[] = {
    /* spec qwen3_5.md §1.5 (confirmed for 0.8B) */
    {"qwen3_5-0.8b", VIS_QWEN3_VL, 12, 768, 12, 12, 64, 3072, 1024, 2304, 0},
    /* spec gemma4.md §2.3, §3.3: E2B's vision_config (no clipped linears, no
     * standardize), embed_vision [1536, 768]; the default budget of 280 */
    {"gemma4-e2b", VIS_GEMMA4, 16, 768, 12, 12, 64, 3072, 1536, 10240, 280},
    /* test-only: the same layout at a tiny width; 64 table rows cover the 57
     * patch columns of the 912-wide processed picture */
    {"gemma4-tiny", VIS_GEMMA4, 2, 64, 4, 2, 16, 128, 64, 64, 280},
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- tensor lists ---- */

typedef struct vt {
    char name[96];
    int ndim;
    int64_t shape[5];
    int ones; /* norm weight */
    int zero; /* biases */
} vt;

/* Appends a tensor to l (l NULL: only counts). */
static int add(vt *l, int n, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    if (!l) return n + 1;
    vt *t = &l[n];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t s[5] = {a, b, c, d, e};
    memcpy(t->shape, s, sizeof s);
    size_t L = strlen(name);
    t->ones = L > 7 && strstr(name, "norm") && !strcmp(name + L - 7, ".weight");
    t->zero = L > 5 && !strcmp(name + L - 5, ".bias");
    return n + 1;
}

/* spec qwen3_5.md §3 (vision_tower.*, the sidecar's keys) */
static int qwen_tensors(const vis_shape *v, vt *l) {
    int n = 0, H = v->hidden, I = v->inter, M = 4 * H;
    char b[96];
    n = add(l, n, "vision_tower.patch_embed.proj.weight", 5, H, 2, 16, 16, 3);
    n = add(l, n, "vision_tower.patch_embed.proj.bias", 1, H, 0, 0, 0, 0);
    n = add(l, n, "vision_tower.pos_embed.weight", 2, v->num_pos, H, 0, 0, 0);
    for (int j = 0; j < v->depth; j++) {
#define B(suffix, ...) (snprintf(b, sizeof b, "vision_tower.blocks.%d.%s", j, suffix), n = add(l, n, b, __VA_ARGS__))
        B("norm1.weight", 1, H, 0, 0, 0, 0);
        B("norm1.bias", 1, H, 0, 0, 0, 0);
        B("norm2.weight", 1, H, 0, 0, 0, 0);
        B("norm2.bias", 1, H, 0, 0, 0, 0);
        B("attn.qkv.weight", 2, 3 * H, H, 0, 0, 0);
        B("attn.qkv.bias", 1, 3 * H, 0, 0, 0, 0);
        B("attn.proj.weight", 2, H, H, 0, 0, 0);
        B("attn.proj.bias", 1, H, 0, 0, 0, 0);
        B("mlp.linear_fc1.weight", 2, I, H, 0, 0, 0);
        B("mlp.linear_fc1.bias", 1, I, 0, 0, 0, 0);
        B("mlp.linear_fc2.weight", 2, H, I, 0, 0, 0);
        B("mlp.linear_fc2.bias", 1, H, 0, 0, 0, 0);
#undef B
    }
    n = add(l, n, "vision_tower.merger.norm.weight", 1, H, 0, 0, 0, 0);
    n = add(l, n, "vision_tower.merger.norm.bias", 1, H, 0, 0, 0, 0);
    n = add(l, n, "vision_tower.merger.linear_fc1.weight", 2, M, M, 0, 0, 0);
    n = add(l, n, "vision_tower.merger.linear_fc1.bias", 1, M, 0, 0, 0, 0);
    n = add(l, n, "vision_tower.merger.linear_fc2.weight", 2, v->out, M, 0, 0, 0);
    n = add(l, n, "vision_tower.merger.linear_fc2.bias", 1, v->out, 0, 0, 0, 0);
    return n;
}

/* spec gemma4.md §3.3 (patch size 16: input_proj [D, 3·16²]; no clip
 * scalars, no std_bias / std_scale) */
static int gemma4_tensors(const vis_shape *v, vt *l) {
    int n = 0, D = v->hidden, I = v->inter, qd = v->heads * v->head_dim, kd = v->kv_heads * v->head_dim;
    char b[128];
    n = add(l, n, "vision_tower.patch_embedder.input_proj.weight", 2, D, 3 * 16 * 16, 0, 0, 0);
    n = add(l, n, "vision_tower.patch_embedder.position_embedding_table", 3, 2, v->num_pos, D, 0, 0);
    for (int j = 0; j < v->depth; j++) {
#define B(suffix, ...) \
    (snprintf(b, sizeof b, "vision_tower.encoder.layers.%d.%s", j, suffix), n = add(l, n, b, __VA_ARGS__))
        B("input_layernorm.weight", 1, D, 0, 0, 0, 0);
        B("post_attention_layernorm.weight", 1, D, 0, 0, 0, 0);
        B("pre_feedforward_layernorm.weight", 1, D, 0, 0, 0, 0);
        B("post_feedforward_layernorm.weight", 1, D, 0, 0, 0, 0);
        B("self_attn.q_norm.weight", 1, v->head_dim, 0, 0, 0, 0);
        B("self_attn.k_norm.weight", 1, v->head_dim, 0, 0, 0, 0);
        B("self_attn.q_proj.linear.weight", 2, qd, D, 0, 0, 0);
        B("self_attn.k_proj.linear.weight", 2, kd, D, 0, 0, 0);
        B("self_attn.v_proj.linear.weight", 2, kd, D, 0, 0, 0);
        B("self_attn.o_proj.linear.weight", 2, D, qd, 0, 0, 0);
        B("mlp.gate_proj.linear.weight", 2, I, D, 0, 0, 0);
        B("mlp.up_proj.linear.weight", 2, I, D, 0, 0, 0);
        B("mlp.down_proj.linear.weight", 2, D, I, 0, 0, 0);
#undef B
    }
    n = add(l, n, "embed_vision.embedding_projection.weight", 2, v->out, D, 0, 0, 0);
    return n;
}

/* ---- vision_config objects ---- */

static cJSON *qwen_config(const vis_shape *v) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "model_type", "qwen3_5");
    cJSON_AddNumberToObject(c, "depth", v->depth);
    cJSON_AddNumberToObject(c, "hidden_size", v->hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", v->inter);
    cJSON_AddNumberToObject(c, "num_heads", v->heads);
    cJSON_AddNumberToObject(c, "out_hidden_size", v->out);
    cJSON_AddNumberToObject(c, "patch_size", 16);
    cJSON_AddNumberToObject(c, "temporal_patch_size", 2);
    cJSON_AddNumberToObject(c, "spatial_merge_size", 2);
    cJSON_AddNumberToObject(c, "in_channels", 3);
    cJSON_AddNumberToObject(c, "num_position_embeddings", v->num_pos);
    cJSON_AddItemToObject(c, "deepstack_visual_indexes", cJSON_CreateArray());
    return c;
}

static cJSON *gemma4_config(const vis_shape *v) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "model_type", "gemma4_vision");
    cJSON_AddNumberToObject(c, "hidden_size", v->hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", v->inter);
    cJSON_AddNumberToObject(c, "num_hidden_layers", v->depth);
    cJSON_AddNumberToObject(c, "num_attention_heads", v->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", v->kv_heads);
    cJSON_AddNumberToObject(c, "head_dim", v->head_dim);
    cJSON_AddNumberToObject(c, "patch_size", 16);
    cJSON_AddNumberToObject(c, "pooling_kernel_size", 3);
    cJSON_AddNumberToObject(c, "position_embedding_size", v->num_pos);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
    cJSON_AddNumberToObject(c, "default_output_length", v->max_soft_tokens);
    cJSON_AddBoolToObject(c, "use_clipped_linears", 0);
    cJSON_AddBoolToObject(c, "standardize", 0);
    cJSON *rp = cJSON_AddObjectToObject(c, "rope_parameters");
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddNumberToObject(rp, "rope_theta", 100.0);
    return c;
}

/* ---- loaders, processors, forwards ---- */

/* One processed picture, in the family's layout. */
typedef struct vis_image {
    qvl_image q;       /* Qwen: patches (n_patches, 1536) */
    float *pixels;     /* Gemma-4: [3, height, width] */
    int width, height; /* the processed size */
    int64_t patches, tokens;
} vis_image;

static void vis_image_free(vis_image *im) {
    qvl_image_free(&im->q);
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

static optiq_status qwen_load(const vis_shape *v, const st_file *sc, const cJSON *vc, void **tower,
                              optiq_error *err) {
    (void)v;
    return qwen3_vl_load(sc, vc, "synthetic vision_config", (qwen3_vl **)tower, err);
}

static void qwen_free(void *tower) { qwen3_vl_free(tower); }

/* the checkpoints' processor settings (spec qwen3_5.md §1.6) */
static optiq_status qwen_preprocess(const vis_shape *v, const uint8_t *rgb, int w, int h, vis_image *im,
                                    optiq_error *err) {
    (void)v;
    qvl_params pp = qvl_params_default();
    pp.min_pixels = 65536;
    pp.max_pixels = 16777216;
    optiq_status st = qvl_preprocess(&pp, rgb, w, h, &im->q, err);
    if (st) return st;
    im->width = im->q.resized_width;
    im->height = im->q.resized_height;
    im->patches = im->q.n_patches;
    im->tokens = im->q.n_tokens;
    return OPTIQ_OK;
}

static optiq_status qwen_encode(const void *tower, thread_pool *pool, const vis_image *im, float *out,
                                optiq_error *err) {
    const qvl_image *q = &im->q;
    int32_t grid[3] = {(int32_t)q->grid_thw[0], (int32_t)q->grid_thw[1], (int32_t)q->grid_thw[2]};
    return qwen3_vl_forward(tower, pool, q->pixel_values, q->n_patches, grid, 1, out, NULL, NULL, err);
}

static optiq_status gemma4_load(const vis_shape *v, const st_file *sc, const cJSON *vc, void **tower,
                                optiq_error *err) {
    return g4v_load(sc, vc, "synthetic vision_config", v->out, 0, (g4v_tower **)tower, err);
}

static void gemma4_free(void *tower) { g4v_free(tower); }

/* Gemma4ImageProcessor's defaults (p 16, k 3, rescale 1/255, no normalize)
 * at the row's budget */
static optiq_status gemma4_preprocess(const vis_shape *v, const uint8_t *rgb, int w, int h, vis_image *im,
                                      optiq_error *err) {
    g4v_params pp = g4v_params_default(0);
    optiq_status st = g4v_pixels(&pp, rgb, h, w, v->max_soft_tokens, &im->pixels, &im->height, &im->width, err);
    if (st) return st;
    im->patches = (int64_t)(im->height / pp.patch) * (im->width / pp.patch);
    im->tokens = g4v_soft_tokens(&pp, im->height, im->width);
    return OPTIQ_OK;
}

static optiq_status gemma4_encode(const void *tower, thread_pool *pool, const vis_image *im, float *out,
                                  optiq_error *err) {
    return g4v_encode(tower, pool, im->pixels, im->height, im->width, out, err);
}

typedef struct vis_ops {
    int (*tensors)(const vis_shape *v, vt *l); /* l NULL: the count */
    cJSON *(*config)(const vis_shape *v);
    optiq_status (*load)(const vis_shape *v, const st_file *sc, const cJSON *vc, void **tower, optiq_error *err);
    void (*free)(void *tower);
    optiq_status (*preprocess)(const vis_shape *v, const uint8_t *rgb, int w, int h, vis_image *im,
                               optiq_error *err);
    /* out: (im->tokens, v->out) */
    optiq_status (*encode)(const void *tower, thread_pool *pool, const vis_image *im, float *out, optiq_error *err);
} vis_ops;

static const vis_ops FAMILIES[] = {
    [VIS_QWEN3_VL] = {qwen_tensors, qwen_config, qwen_load, qwen_free, qwen_preprocess, qwen_encode},
    [VIS_GEMMA4] = {gemma4_tensors, gemma4_config, gemma4_load, gemma4_free, gemma4_preprocess, gemma4_encode},
};

/* ---- the sidecar image ---- */

/* The header from the writer, data filled in place. */
static optiq_status build_sidecar(const vt *l, int n, uint8_t **img_out, st_file **out, optiq_error *err) {
    static const uint8_t DUMMY[1];
    st_writer *w = st_writer_new();
    optiq_status st = w ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    uint64_t data = 0;
    for (int i = 0; i < n && !st; i++) {
        st = st_writer_add(w, l[i].name, DT_BF16, l[i].ndim, l[i].shape, DUMMY, err);
        uint64_t e = 1;
        for (int d = 0; d < l[i].ndim; d++) e *= (uint64_t)l[i].shape[d];
        data += 2 * e;
    }
    char *hdr = NULL;
    size_t hl = 0;
    if (!st) st = st_writer_header(w, &hdr, &hl, err);
    st_writer_free(w);
    uint8_t *img = NULL;
    if (!st && !(img = malloc(8 + hl + data))) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    if (st) {
        free(hdr);
        return st;
    }
    for (int b = 0; b < 8; b++) img[b] = (uint8_t)((uint64_t)hl >> (8 * b));
    memcpy(img + 8, hdr, hl);
    free(hdr);
    st_file *f = NULL;
    if ((st = st_open_memory(img, 8 + hl + data, "<memory>/optiq_vision.safetensors", &f, err))) {
        free(img);
        return st;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_find(f, l[i].name);
        uint8_t *p = (uint8_t *)t->data; /* the image is ours */
        for (uint64_t k = 0; k < t->nelem; k++) {
            float v;
            if (l[i].ones) v = 1.0f;
            else if (l[i].zero) v = 0.0f;
            else {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                v = ((float)(x >> 40) / 16777216.0f - 0.5f) * 0.06f;
            }
            uint16_t h = f32_to_bf16(v);
            memcpy(p + 2 * k, &h, 2);
        }
    }
    *img_out = img;
    *out = f;
    return OPTIQ_OK;
}

/* ---- the benchmark ---- */

static void add_shape(cJSON *o, const vis_shape *v, int w, int h, const vis_image *im, double t_build) {
    cJSON_AddStringToObject(o, "model", v->model);
    cJSON_AddNumberToObject(o, "depth", v->depth);
    cJSON_AddNumberToObject(o, "hidden_size", v->hidden);
    cJSON_AddNumberToObject(o, "num_heads", v->heads);
    cJSON_AddNumberToObject(o, "num_kv_heads", v->kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", v->head_dim);
    cJSON_AddNumberToObject(o, "intermediate_size", v->inter);
    cJSON_AddNumberToObject(o, "out_hidden_size", v->out);
    cJSON_AddNumberToObject(o, "image_width", w);
    cJSON_AddNumberToObject(o, "image_height", h);
    cJSON_AddNumberToObject(o, "processed_width", im->width);
    cJSON_AddNumberToObject(o, "processed_height", im->height);
    if (v->max_soft_tokens) cJSON_AddNumberToObject(o, "max_soft_tokens", v->max_soft_tokens);
    cJSON_AddNumberToObject(o, "patches", (double)im->patches);
    cJSON_AddNumberToObject(o, "soft_tokens", (double)im->tokens);
    cJSON_AddNumberToObject(o, "build_seconds", t_build);
}

optiq_status bench_vision(thread_pool *pool, const char *model, const int *threads, int n_threads, cJSON *root,
                          optiq_error *err) {
    const vis_shape *v = NULL;
    for (size_t i = 0; model && i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(SHAPES[i].model, model)) v = &SHAPES[i];
    if (!v) return OPTIQ_OK; /* no vision shape for this model */
    const vis_ops *ops = &FAMILIES[v->family];
    vt *l = calloc((size_t)ops->tensors(v, NULL), sizeof *l);
    if (!l) return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    int n = ops->tensors(v, l);
    uint8_t *img = NULL;
    st_file *sc = NULL;
    void *tower = NULL;
    cJSON *vc = ops->config(v);
    double t0 = now_s();
    optiq_status st = vc ? build_sidecar(l, n, &img, &sc, err) : err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    double t_build = now_s() - t0;
    if (!st) st = ops->load(v, sc, vc, &tower, err);

    /* a 1024 x 768 (w x h) picture of random pixels */
    const int W = 1024, Hh = 768;
    uint8_t *rgb = malloc((size_t)W * Hh * 3);
    if (!st && !rgb) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; !st && i < (size_t)W * Hh * 3; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rgb[i] = (uint8_t)(x >> 56);
    }
    cJSON *runs = cJSON_CreateArray();
    vis_image im = {0};
    float *out = NULL;
    for (int k = 0; k < n_threads && !st; k++) {
        int nt = pool_set_threads(pool, threads[k]);
        vis_image_free(&im);
        double a = now_s();
        st = ops->preprocess(v, rgb, W, Hh, &im, err);
        double b = now_s();
        if (st) break;
        if (!out && !(out = malloc((size_t)(im.tokens * v->out) * sizeof *out))) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
            break;
        }
        st = ops->encode(tower, pool, &im, out, err);
        double c = now_s();
        if (st) break;
        int finite = 1;
        for (int64_t i = 0; i < im.tokens * v->out && finite; i++) finite = isfinite(out[i]);
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "threads", nt);
        cJSON_AddNumberToObject(r, "preprocess_seconds", b - a);
        cJSON_AddNumberToObject(r, "tower_seconds", c - b);
        cJSON_AddNumberToObject(r, "total_seconds", c - a);
        cJSON_AddBoolToObject(r, "finite", finite);
        cJSON_AddItemToArray(runs, r);
    }
    if (!st) {
        cJSON *o = cJSON_AddObjectToObject(root, "vision");
        add_shape(o, v, W, Hh, &im, t_build);
        cJSON_AddItemToObject(o, "runs", runs);
        runs = NULL;
    }
    cJSON_Delete(runs);
    vis_image_free(&im);
    free(out), free(rgb);
    if (tower) ops->free(tower);
    st_close(sc);
    free(img);
    cJSON_Delete(vc);
    free(l);
    return st;
}
