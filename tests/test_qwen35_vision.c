/*
 * test_qwen35_vision.c — parity of the Qwen3-VL vision tower (src/vision/qwen3_vl.c)
 * against mlx-vlm, and its load / input errors.
 *
 * Fixture: tests/fixtures/models/qwen35-vl-mixed (tools/reference/gen_qwen35_vl.py):
 * a tiny random Qwen3.5 VLM published as mlx-optiq does it (quantized language
 * tower + optiq_vision.safetensors from build_vision_sidecar), with
 * reference_vl.safetensors holding, per prompt (1 image, 2 images, 1 image), the
 * processor's pixel values (uint8 codes into a 256-entry f32 table), the grids,
 * and the tower's output after patch + position embedding, after block 0 and
 * after the merger, from mlx-vlm's f32 run (the same bf16 weights widened to
 * f32; stored F32) and its bf16 run (stored BF16, exact).
 *
 * Tolerances (why):
 *   f32 run   max|ours - ref| <= 1e-4 * max|ref| per stage: both compute in f32
 *             from the same weights; only summation order and libm differ.
 *   bf16 run  mlx rounds every intermediate to bf16; ours must be no farther
 *             from the bf16 run than mlx-vlm's own f32 run is (x 1.02 + 1e-5).
 *   threads   one thread and two threads give bit-identical soft tokens.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/dtype.h"
#include "base/threadpool.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test.h"
#include "vision/qwen3_vl.h"

#define FIXTURE "tests/fixtures/models/qwen35-vl-mixed"
#define N_PROMPTS 3
#define TOL_F32 1e-4

static thread_pool *pool;
static st_file *sidecar, *ref;
static cJSON *config;
static const cJSON *vcfg;

/* max |a - b| / max |b|, and max |a - b| in *abs_out */
static double rel_err(const float *a, const float *b, size_t n, double *abs_out) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d; /* NaN propagates */
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    if (abs_out) *abs_out = md;
    return mb > 0 ? md / mb : md;
}

/* A reference tensor as f32 (F32 or BF16), malloc'd; NULL when absent. */
static float *ref_f32(const char *name, size_t *n) {
    const st_tensor *t = st_find(ref, name);
    if (!t || (t->dtype != DT_F32 && t->dtype != DT_BF16)) return NULL;
    float *v = malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
    for (size_t i = 0; i < t->nelem; i++) v[i] = load_as_f32(t->data, t->dtype, i);
    *n = t->nelem;
    return v;
}

typedef struct prompt {
    float *pixels;  /* (n, patch_dim) */
    int64_t n;
    int32_t grid[3 * 8];
    int n_images;
    int64_t n_image_tokens; /* image-pad tokens in input_ids */
} prompt;

static int load_prompt(int i, prompt *p) {
    char name[64];
    memset(p, 0, sizeof *p);
    const st_tensor *tab = st_find(ref, "pixel_table");
    snprintf(name, sizeof name, "p%d.pixel_codes", i);
    const st_tensor *codes = st_find(ref, name);
    snprintf(name, sizeof name, "p%d.grid_thw", i);
    const st_tensor *g = st_find(ref, name);
    snprintf(name, sizeof name, "p%d.input_ids", i);
    const st_tensor *ids = st_find(ref, name);
    if (!tab || tab->dtype != DT_F32 || tab->nelem != 256 || !codes || codes->dtype != DT_U8 || codes->ndim != 2 ||
        !g || g->dtype != DT_I32 || g->ndim != 2 || g->shape[1] != 3 || g->shape[0] > 8 || !ids || ids->dtype != DT_I32)
        return 0;
    p->n = codes->shape[0];
    p->pixels = malloc(sizeof(float) * codes->nelem);
    const uint8_t *c = codes->data;
    for (size_t k = 0; k < codes->nelem; k++) p->pixels[k] = load_as_f32(tab->data, DT_F32, c[k]);
    p->n_images = (int)g->shape[0];
    memcpy(p->grid, g->data, sizeof(int32_t) * (size_t)g->nelem);
    int64_t image_id;
    if (json_get_int(config, "config.json", "image_token_id", &image_id, NULL)) return 0;
    for (size_t k = 0; k < ids->nelem; k++) {
        int32_t v;
        memcpy(&v, (const uint8_t *)ids->data + 4 * k, 4);
        p->n_image_tokens += v == image_id;
    }
    return 1;
}

typedef struct stages {
    float *s[2]; /* stage 0 (patch + pos), stage 1 (block 0) */
} stages;

static void on_stage(void *user, int stage, const float *x, int64_t n, int64_t hidden) {
    stages *s = user;
    if (stage < 2) {
        s->s[stage] = malloc(sizeof(float) * (size_t)(n * hidden));
        memcpy(s->s[stage], x, sizeof(float) * (size_t)(n * hidden));
    }
}

/* Write a copy of the sidecar with one tensor dropped (new_ndim < 0) or
 * reshaped, and open it. */
static st_file *sidecar_variant(const char *target, int new_ndim, const int64_t *new_shape, char *path,
                                size_t path_len) {
    snprintf(path, path_len, "/tmp/optiq_test_vision_%d.safetensors", (int)getpid());
    st_writer *w = st_writer_new();
    for (size_t i = 0; i < st_count(sidecar); i++) {
        const st_tensor *t = st_at(sidecar, i);
        if (!strcmp(t->name, target)) {
            if (new_ndim < 0) continue;
            st_writer_add(w, t->name, t->dtype, new_ndim, new_shape, t->data, NULL);
        } else {
            st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, NULL);
        }
    }
    optiq_error err;
    st_file *f = NULL;
    if (st_writer_save(w, path, &err) == OPTIQ_OK) st_open(path, &f, &err);
    st_writer_free(w);
    return f;
}

static void parity_cases(void) {
    qwen3_vl *vt = NULL;
    optiq_error err;
    for (TEST_CASE("load sidecar")) {
        optiq_status st = qwen3_vl_load(sidecar, vcfg, "config.json: vision_config", &vt, &err);
        CHECKF(st == OPTIQ_OK, "%s", err.message);
        if (vt) {
            const qwen3_vl_config *c = qwen3_vl_get_config(vt);
            CHECK(c->depth == 2 && c->hidden == 32 && c->head_dim == 16 && c->pos_side == 8 && c->patch_dim == 1536);
        }
    }
    if (!vt) return;
    const qwen3_vl_config *c = qwen3_vl_get_config(vt);
    double worst[3] = {0, 0, 0};
    for (int i = 0; i < N_PROMPTS; i++) {
        char cname[96];
        snprintf(cname, sizeof cname, "prompt %d: soft tokens, patch+pos, block 0 vs f32 and bf16 runs", i);
        for (TEST_CASE(cname)) {
            prompt p;
            if (!load_prompt(i, &p)) { CHECKF(0, "reference tensors of prompt %d missing", i); break; }
            int64_t n_tok = 0;
            CHECK(qwen3_vl_check_grid(c, p.grid, p.n_images, p.n, &n_tok, NULL) == OPTIQ_OK);
            CHECKF(n_tok == p.n_image_tokens, "%lld soft tokens, %lld image-pad tokens", (long long)n_tok,
                   (long long)p.n_image_tokens);
            float *out = malloc(sizeof(float) * (size_t)(n_tok * c->out_hidden));
            stages s = {{NULL, NULL}};
            optiq_status st = qwen3_vl_forward(vt, pool, p.pixels, p.n, p.grid, p.n_images, out, on_stage, &s, &err);
            CHECKF(st == OPTIQ_OK, "%s", err.message);
            const char *names[3] = {"patch_pos", "block0", "vision"};
            const float *ours[3] = {s.s[0], s.s[1], out};
            size_t want[3] = {(size_t)(p.n * c->hidden), (size_t)(p.n * c->hidden), (size_t)(n_tok * c->out_hidden)};
            for (int k = 0; k < 3 && st == OPTIQ_OK; k++) {
                char nm[64];
                size_t nf = 0, nb = 0;
                snprintf(nm, sizeof nm, "p%d.f32.%s", i, names[k]);
                float *rf = ref_f32(nm, &nf);
                snprintf(nm, sizeof nm, "p%d.bf16.%s", i, names[k]);
                float *rb = ref_f32(nm, &nb);
                CHECKF(rf && rb && nf == want[k] && nb == want[k], "%s: reference size", names[k]);
                if (rf && rb && nf == want[k] && nb == want[k]) {
                    double a_f32, a_bf16, a_ref;
                    double r_f32 = rel_err(ours[k], rf, nf, &a_f32);
                    double r_bf16 = rel_err(ours[k], rb, nb, &a_bf16);
                    double r_ref = rel_err(rf, rb, nb, &a_ref);
                    printf("     p%d %-9s vs f32: rel %.2e abs %.2e | vs bf16: rel %.2e abs %.2e "
                           "(f32 run vs bf16 run: rel %.2e abs %.2e)\n",
                           i, names[k], r_f32, a_f32, r_bf16, a_bf16, r_ref, a_ref);
                    if (r_f32 > worst[k]) worst[k] = r_f32;
                    CHECKF(r_f32 <= TOL_F32, "%s: %.3g from the f32 run", names[k], r_f32);
                    CHECKF(r_bf16 <= 1.02 * r_ref + 1e-5, "%s: %.3g from the bf16 run, mlx-vlm's f32 run is %.3g",
                           names[k], r_bf16, r_ref);
                }
                free(rf);
                free(rb);
            }
            if (st == OPTIQ_OK && i == 1) {
                /* same soft tokens on one thread (no pool) */
                float *out1 = malloc(sizeof(float) * (size_t)(n_tok * c->out_hidden));
                CHECK(qwen3_vl_forward(vt, NULL, p.pixels, p.n, p.grid, p.n_images, out1, NULL, NULL, &err) ==
                      OPTIQ_OK);
                CHECKF(!memcmp(out, out1, sizeof(float) * (size_t)(n_tok * c->out_hidden)),
                       "one thread and the pool differ");
                /* the images one at a time give the same rows as both together (segments) */
                int64_t n0 = (int64_t)p.grid[0] * p.grid[1] * p.grid[2];
                int64_t t0 = n0 / (c->merge * c->merge);
                CHECK(qwen3_vl_forward(vt, pool, p.pixels, n0, p.grid, 1, out1, NULL, NULL, &err) == OPTIQ_OK);
                CHECK(qwen3_vl_forward(vt, pool, p.pixels + n0 * c->patch_dim, p.n - n0, p.grid + 3, 1,
                                       out1 + t0 * c->out_hidden, NULL, NULL, &err) == OPTIQ_OK);
                CHECKF(!memcmp(out, out1, sizeof(float) * (size_t)(n_tok * c->out_hidden)),
                       "two images in one call differ from one call per image");
                free(out1);
            }
            free(s.s[0]);
            free(s.s[1]);
            free(out);
            free(p.pixels);
        }
    }
    printf("     worst vs f32 run: patch_pos %.2e, block0 %.2e, vision %.2e (tolerance %.0e)\n", worst[0], worst[1],
           worst[2], TOL_F32);

    for (TEST_CASE("bad grids")) {
        prompt p;
        if (!load_prompt(0, &p)) { CHECK(0); break; }
        float *out = malloc(sizeof(float) * (size_t)(p.n * c->out_hidden));
        int32_t g[3] = {1, p.grid[1] - 1, p.grid[2]};
        optiq_status st = qwen3_vl_forward(vt, pool, p.pixels, p.n, g, 1, out, NULL, NULL, &err);
        CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "multiple of the merge size"), "%s", err.message);
        int32_t g2[3] = {1, p.grid[1], p.grid[2] + 2};
        st = qwen3_vl_forward(vt, pool, p.pixels, p.n, g2, 1, out, NULL, NULL, &err);
        CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "pixel_values has"), "%s", err.message);
        st = qwen3_vl_forward(vt, pool, p.pixels, p.n - 4, p.grid, 1, out, NULL, NULL, &err);
        CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "pixel_values has"), "%s", err.message);
        int32_t g3[3] = {0, p.grid[1], p.grid[2]};
        st = qwen3_vl_forward(vt, pool, p.pixels, p.n, g3, 1, out, NULL, NULL, &err);
        CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "not positive"), "%s", err.message);
        st = qwen3_vl_forward(vt, pool, p.pixels, p.n, p.grid, 0, out, NULL, NULL, &err);
        CHECKF(st == OPTIQ_ERR_INVALID_ARG, "%s", err.message);
        free(out);
        free(p.pixels);
    }
    qwen3_vl_free(vt);
}

static void load_error_cases(void) {
    optiq_error err;
    qwen3_vl *vt = NULL;
    char path[256];
    for (TEST_CASE("missing tensor named")) {
        st_file *f = sidecar_variant("vision_tower.blocks.1.attn.proj.bias", -1, NULL, path, sizeof path);
        CHECK(f != NULL);
        if (!f) break;
        optiq_status st = qwen3_vl_load(f, vcfg, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && vt == NULL && strstr(err.message, "vision_tower.blocks.1.attn.proj.bias") &&
                   strstr(err.message, "missing") && strstr(err.message, "[32]"),
               "%d %s", st, err.message);
        st_close(f);
        unlink(path);
    }
    for (TEST_CASE("wrong shape: expected and found")) {
        int64_t shape[2] = {128, 64};
        st_file *f = sidecar_variant("vision_tower.merger.linear_fc2.weight", 2, shape, path, sizeof path);
        CHECK(f != NULL);
        if (!f) break;
        optiq_status st = qwen3_vl_load(f, vcfg, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && vt == NULL && strstr(err.message, "vision_tower.merger.linear_fc2.weight") &&
                   strstr(err.message, "[128, 64]") && strstr(err.message, "expected [64, 128]"),
               "%d %s", st, err.message);
        st_close(f);
        unlink(path);
    }
    for (TEST_CASE("channel-first patch embedding rejected")) {
        int64_t shape[5] = {32, 3, 2, 16, 16};
        st_file *f = sidecar_variant("vision_tower.patch_embed.proj.weight", 5, shape, path, sizeof path);
        CHECK(f != NULL);
        if (!f) break;
        optiq_status st = qwen3_vl_load(f, vcfg, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && strstr(err.message, "channel-first") &&
                   strstr(err.message, "expected [32, 2, 16, 16, 3]"),
               "%d %s", st, err.message);
        st_close(f);
        unlink(path);
    }
    for (TEST_CASE("config errors")) {
        cJSON *v = cJSON_Duplicate(vcfg, 1);
        cJSON_DeleteItemFromObject(v, "depth");
        optiq_status st = qwen3_vl_load(sidecar, v, "config.json: vision_config", &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && strstr(err.message, "config.json: vision_config") &&
                   strstr(err.message, "depth"),
               "%s", err.message);
        cJSON_Delete(v);
        v = cJSON_Duplicate(vcfg, 1);
        cJSON_ReplaceItemInObject(v, "num_heads", cJSON_CreateNumber(3));
        st = qwen3_vl_load(sidecar, v, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && strstr(err.message, "num_heads"), "%s", err.message);
        cJSON_Delete(v);
        v = cJSON_Duplicate(vcfg, 1);
        cJSON_ReplaceItemInObject(v, "num_position_embeddings", cJSON_CreateNumber(60));
        st = qwen3_vl_load(sidecar, v, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && strstr(err.message, "not a square"), "%s", err.message);
        cJSON_Delete(v);
        v = cJSON_Duplicate(vcfg, 1);
        cJSON_ReplaceItemInObject(v, "deepstack_visual_indexes", cJSON_CreateIntArray((const int[]){0}, 1));
        st = qwen3_vl_load(sidecar, v, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_UNSUPPORTED && strstr(err.message, "deepstack"), "%s", err.message);
        cJSON_Delete(v);
        v = cJSON_Duplicate(vcfg, 1);
        cJSON_ReplaceItemInObject(v, "intermediate_size", cJSON_CreateNumber(48));
        st = qwen3_vl_load(sidecar, v, NULL, &vt, &err);
        CHECKF(st == OPTIQ_ERR_FORMAT && strstr(err.message, "linear_fc1.weight") && strstr(err.message, "[48, 32]"),
               "%s", err.message);
        cJSON_Delete(v);
        CHECK(vt == NULL);
    }
}

int main(void) {
    optiq_error err;
    pool = pool_create(2);
    if (st_open(test_path(FIXTURE "/optiq_vision.safetensors"), &sidecar, &err) ||
        st_open(test_path(FIXTURE "/reference_vl.safetensors"), &ref, &err) ||
        json_load_file(test_path(FIXTURE "/config.json"), "config.json", 0, &config, &err) ||
        json_get_object(config, "config.json", "vision_config", &vcfg, &err)) {
        printf("FAIL fixture: %s\n", err.message);
        return 1;
    }
    parity_cases();
    load_error_cases();
    st_close(sidecar);
    st_close(ref);
    cJSON_Delete(config);
    pool_free(pool);
    return test_finish();
}
