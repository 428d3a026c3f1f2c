/*
 * bench_vision.c — the image-encoding part of `optiq bench --synthetic NAME`:
 * a vision tower with the exact shapes of the model's (random bf16 weights,
 * built in memory as a sidecar image and bound by the normal loader) encodes
 * one 1024 x 768 image (random pixels; preprocessing with the checkpoints'
 * processor settings) at each thread count: preprocessing and tower times.
 */
#include "bench/bench_vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dtype.h"
#include "io/safetensors.h"
#include "vision/preprocess.h"
#include "vision/qwen3_vl.h"

typedef struct vis_shape {
    const char *model;
    int depth, hidden, heads, inter, out, num_pos;
} vis_shape;

/* spec qwen3_5.md §1.5 (confirmed for 0.8B) */
static const vis_shape SHAPES[] = {{"qwen3_5-0.8b", 12, 768, 12, 3072, 1024, 2304}};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct vt {
    char name[96];
    int ndim;
    int64_t shape[5];
    int ones; /* LayerNorm weight */
    int zero; /* biases */
} vt;

static int add(vt *l, int n, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
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

static int tower_tensors(const vis_shape *v, vt *l) {
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

static cJSON *vision_config(const vis_shape *v) {
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

/* The sidecar image: header from the writer, data filled in place. */
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

optiq_status bench_vision(thread_pool *pool, const char *model, const int *threads, int n_threads, cJSON *root,
                          optiq_error *err) {
    const vis_shape *v = NULL;
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(SHAPES[i].model, model)) v = &SHAPES[i];
    if (!v) return OPTIQ_OK; /* no vision shape for this model */
    vt *l = calloc((size_t)(3 + 12 * v->depth + 6), sizeof *l);
    if (!l) return err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    int n = tower_tensors(v, l);
    uint8_t *img = NULL;
    st_file *sc = NULL;
    qwen3_vl *tower = NULL;
    cJSON *vc = vision_config(v);
    double t0 = now_s();
    optiq_status st = build_sidecar(l, n, &img, &sc, err);
    double t_build = now_s() - t0;
    if (!st) st = qwen3_vl_load(sc, vc, "synthetic vision_config", &tower, err);

    /* a 1024 x 768 (w x h) picture of random pixels, the checkpoints' processor settings (spec §1.6) */
    const int W = 1024, Hh = 768;
    uint8_t *rgb = malloc((size_t)W * Hh * 3);
    qvl_params pp = qvl_params_default();
    pp.min_pixels = 65536;
    pp.max_pixels = 16777216;
    if (!st && !rgb) st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; !st && i < (size_t)W * Hh * 3; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rgb[i] = (uint8_t)(x >> 56);
    }
    cJSON *runs = cJSON_CreateArray();
    qvl_image pre = {0};
    float *out = NULL;
    for (int k = 0; k < n_threads && !st; k++) {
        int nt = pool_set_threads(pool, threads[k]);
        qvl_image_free(&pre);
        double a = now_s();
        st = qvl_preprocess(&pp, rgb, W, Hh, &pre, err);
        double b = now_s();
        if (st) break;
        int32_t grid[3] = {(int32_t)pre.grid_thw[0], (int32_t)pre.grid_thw[1], (int32_t)pre.grid_thw[2]};
        if (!out && !(out = malloc((size_t)(pre.n_tokens * v->out) * sizeof *out))) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "bench: out of memory");
            break;
        }
        st = qwen3_vl_forward(tower, pool, pre.pixel_values, pre.n_patches, grid, 1, out, NULL, NULL, err);
        double c = now_s();
        if (st) break;
        int finite = 1;
        for (int64_t i = 0; i < pre.n_tokens * v->out && finite; i++) finite = isfinite(out[i]);
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
        cJSON_AddStringToObject(o, "model", v->model);
        cJSON_AddNumberToObject(o, "depth", v->depth);
        cJSON_AddNumberToObject(o, "hidden_size", v->hidden);
        cJSON_AddNumberToObject(o, "num_heads", v->heads);
        cJSON_AddNumberToObject(o, "intermediate_size", v->inter);
        cJSON_AddNumberToObject(o, "out_hidden_size", v->out);
        cJSON_AddNumberToObject(o, "image_width", W);
        cJSON_AddNumberToObject(o, "image_height", Hh);
        cJSON_AddNumberToObject(o, "patches", (double)pre.n_patches);
        cJSON_AddNumberToObject(o, "soft_tokens", (double)pre.n_tokens);
        cJSON_AddNumberToObject(o, "build_seconds", t_build);
        cJSON_AddItemToObject(o, "runs", runs);
        runs = NULL;
    }
    cJSON_Delete(runs);
    qvl_image_free(&pre);
    free(out), free(rgb);
    qwen3_vl_free(tower);
    st_close(sc);
    free(img);
    cJSON_Delete(vc);
    free(l);
    return st;
}
