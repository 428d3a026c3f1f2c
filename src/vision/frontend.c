/* frontend.c — see frontend.h. */
#include "vision/frontend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "io/json.h"
#include "vision/gemma4_vision.h"
#include "vision/preprocess.h"
#include "vision/qwen3_vl.h"
#include "vision/vision_cache.h"

struct vision_fe {
    qwen3_vl *tower;   /* Qwen3.5 / Qwen3.6 */
    qvl_params pp;
    g4v_tower *g4;     /* Gemma-4 (encoder-based or unified) */
    g4v_params g4p;
    mm_tokens tok;
    int64_t hidden; /* text hidden size = the merger's output */
    image_limits limits;
    vision_key settings; /* hash of the model type and the processor JSON texts */
    vision_cache *cache; /* NULL: every image is encoded */
};

/* The settings part of every image key: what the folder's processor files say. */
static void hash_settings(vision_fe *fe, const char *type, const char *pre, size_t pre_n, const char *proc,
                          size_t proc_n) {
    fe->settings = vision_key_init();
    vision_key_add(&fe->settings, type, strlen(type) + 1);
    vision_key_add(&fe->settings, &pre_n, sizeof pre_n);
    if (pre) vision_key_add(&fe->settings, pre, pre_n);
    vision_key_add(&fe->settings, &proc_n, sizeof proc_n);
    if (proc) vision_key_add(&fe->settings, proc, proc_n);
}

/* config.json integer at the top level, else in text_config / vision_config; def when absent. */
static optiq_status token_id(const model_dir *md, const char *key, int64_t def, int32_t *out, optiq_error *err) {
    const cJSON *cfg = model_dir_config(md);
    int64_t v = def;
    optiq_status st = json_get_int_or(cfg, "config.json", key, def, &v, err);
    if (st) return st;
    if (v < -1 || v > INT32_MAX) return err_set(err, OPTIQ_ERR_FORMAT, "config.json: %s = %lld is not a token id", key, (long long)v);
    *out = (int32_t)v;
    return OPTIQ_OK;
}

static optiq_status read_optional(const model_dir *md, md_file which, char **text, size_t *len, optiq_error *err) {
    *text = NULL, *len = 0;
    const char *p = model_dir_file(md, which);
    return p ? json_read_file(p, JSON_DEFAULT_CAP, text, len, err) : OPTIQ_OK;
}

/* Gemma-4 (gemma4: the SigLIP-style tower; gemma4_unified: the patch
 * embedder), both with the embed_vision projector, from the sidecar. Token
 * ids: the image token and the begin / end-of-image tokens around each
 * image's run (spec §6.5, §9.2 for the defaults). */
static optiq_status load_gemma4(const model_dir *md, int64_t text_hidden, vision_fe **out, optiq_error *err) {
    int unified = !strcmp(model_dir_model_type(md), "gemma4_unified");
    vision_fe *fe = calloc(1, sizeof *fe);
    if (!fe) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    fe->hidden = text_hidden;
    fe->limits = image_limits_default();
    optiq_status st = g4v_load(model_dir_sidecar(md), model_dir_vision_config(md), "config.json: vision_config",
                               text_hidden, unified, &fe->g4, err);
    char *pre = NULL, *proc = NULL;
    size_t pre_n = 0, proc_n = 0;
    if (!st) st = read_optional(md, MD_PREPROCESSOR_CONFIG, &pre, &pre_n, err);
    if (!st) st = read_optional(md, MD_PROCESSOR_CONFIG, &proc, &proc_n, err);
    if (!st) st = g4v_params_from_json(pre, pre_n, proc, proc_n, unified, &fe->g4p, err);
    if (!st) hash_settings(fe, unified ? "gemma4_unified" : "gemma4", pre, pre_n, proc, proc_n);
    free(pre), free(proc);
    if (!st) {
        const g4v_dims *d = g4v_tower_dims(fe->g4);
        if (fe->g4p.patch != d->patch || fe->g4p.pool != d->pool)
            st = err_set(err, OPTIQ_ERR_FORMAT,
                         "the image processor's patch %d / pooling %d do not match config.json's vision_config (%d / %d)",
                         fe->g4p.patch, fe->g4p.pool, d->patch, d->pool);
    }
    fe->tok.mrope = 0;
    fe->tok.wrap = 1;
    fe->tok.vision_start = fe->tok.vision_end = -1;
    if (!st) st = token_id(md, "image_token_id", 258880, &fe->tok.image_pad, err);
    if (!st) st = token_id(md, "video_token_id", -1, &fe->tok.video_pad, err);
    if (!st) st = token_id(md, "boi_token_id", 255999, &fe->tok.boi, err);
    if (!st) st = token_id(md, "eoi_token_id", 258882, &fe->tok.eoi, err);
    if (st) {
        vision_fe_free(fe);
        return st;
    }
    *out = fe;
    return OPTIQ_OK;
}

optiq_status vision_fe_load(const model_dir *md, int64_t text_hidden, vision_fe **out, optiq_error *err) {
    *out = NULL;
    const st_file *sc = model_dir_sidecar(md);
    const cJSON *vc = model_dir_vision_config(md);
    if (!sc || !vc) return OPTIQ_OK;
    const char *mt = model_dir_model_type(md);
    if (mt && (!strcmp(mt, "gemma4") || !strcmp(mt, "gemma4_unified"))) return load_gemma4(md, text_hidden, out, err);
    if (!mt || (strcmp(mt, "qwen3_5") && strcmp(mt, "qwen3_5_moe")))
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: images are not supported for model_type %s yet",
                       model_dir_sidecar_rel(md), mt ? mt : "(none)");
    vision_fe *fe = calloc(1, sizeof *fe);
    if (!fe) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    fe->hidden = text_hidden;
    fe->limits = image_limits_default();
    optiq_status st = qwen3_vl_load(sc, vc, "config.json: vision_config", &fe->tower, err);
    if (!st && qwen3_vl_get_config(fe->tower)->out_hidden != text_hidden)
        st = err_set(err, OPTIQ_ERR_FORMAT, "config.json: vision_config.out_hidden_size %d != the text hidden size %lld",
                     qwen3_vl_get_config(fe->tower)->out_hidden, (long long)text_hidden);
    char *pre = NULL, *proc = NULL;
    size_t pre_n = 0, proc_n = 0;
    if (!st) st = read_optional(md, MD_PREPROCESSOR_CONFIG, &pre, &pre_n, err);
    if (!st) st = read_optional(md, MD_PROCESSOR_CONFIG, &proc, &proc_n, err);
    if (!st) st = qvl_params_from_json(pre, pre_n, proc, proc_n, &fe->pp, err);
    if (!st) hash_settings(fe, "qwen3_5", pre, pre_n, proc, proc_n);
    free(pre), free(proc);
    if (!st) {
        const qwen3_vl_config *c = qwen3_vl_get_config(fe->tower);
        if (fe->pp.patch_size != c->patch_size || fe->pp.temporal_patch_size != c->temporal_patch ||
            fe->pp.merge_size != c->merge)
            st = err_set(err, OPTIQ_ERR_FORMAT,
                         "preprocessor_config.json (patch %d, temporal %d, merge %d) does not match "
                         "config.json's vision_config (patch %d, temporal %d, merge %d)",
                         fe->pp.patch_size, fe->pp.temporal_patch_size, fe->pp.merge_size, c->patch_size,
                         c->temporal_patch, c->merge);
        fe->tok.merge = c->merge;
        fe->tok.mrope = 1;
    }
    /* the ids Qwen3.5 checkpoints use when config.json does not say */
    if (!st) st = token_id(md, "image_token_id", 248056, &fe->tok.image_pad, err);
    if (!st) st = token_id(md, "video_token_id", 248057, &fe->tok.video_pad, err);
    if (!st) st = token_id(md, "vision_start_token_id", 248053, &fe->tok.vision_start, err);
    if (!st) st = token_id(md, "vision_end_token_id", 248054, &fe->tok.vision_end, err);
    if (st) {
        vision_fe_free(fe);
        return st;
    }
    *out = fe;
    return OPTIQ_OK;
}

void vision_fe_free(vision_fe *fe) {
    if (!fe) return;
    vision_cache_free(fe->cache);
    qwen3_vl_free(fe->tower);
    g4v_free(fe->g4);
    free(fe);
}

const mm_tokens *vision_fe_tokens(const vision_fe *fe) { return &fe->tok; }

static optiq_status decode_one(const vision_fe *fe, const optiq_image *im, size_t i, image_u8 *img, optiq_error *err) {
    optiq_status st;
    if (im->data)
        st = image_decode(im->data, im->size, &fe->limits, img, err);
    else if (im->source)
        st = image_load(im->source, &fe->limits, img, err);
    else
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu: neither a source nor data", i + 1);
    if (st && err) {
        /* say which image */
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "image %zu: %.480s", i + 1, err->message);
        memcpy(err->message, msg, sizeof msg);
    }
    return st;
}

/* A request's budget for one image: 0 (the processor's), or one of the
 * values the Gemma-4 processors accept. */
static optiq_status check_budget(const vision_fe *fe, const optiq_image *im, size_t i, optiq_error *err) {
    int b = im->max_soft_tokens;
    if (b == 0) return OPTIQ_OK;
    if (!fe->g4)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu: this model has no soft-token budget to set (%d asked)",
                       i + 1, b);
    if (b != 70 && b != 140 && b != 280 && b != 560 && b != 1120)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "image %zu: a soft-token budget of %d is not one of 70, 140, 280, 560, 1120", i + 1, b);
    return OPTIQ_OK;
}

/* Gemma-4: each image's [3, th, tw] block (the processor's layout), back
 * to back; grid (1, th/p, tw/p); n_patches x patch_dim (3p²) floats in all. */
static optiq_status gemma4_pixels(const vision_fe *fe, const image_u8 *imgs, const int *budgets, size_t n,
                                  float **pixels, int64_t *n_patches, int64_t *patch_dim, int32_t *grid_thw,
                                  optiq_error *err) {
    int p = fe->g4p.patch;
    float *all = NULL;
    size_t used = 0;
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < n && !st; i++) {
        float *px = NULL;
        int th = 0, tw = 0;
        st = g4v_pixels(&fe->g4p, imgs[i].rgb, imgs[i].h, imgs[i].w, budgets[i], &px, &th, &tw, err);
        if (st) break;
        size_t k = (size_t)3 * (size_t)th * (size_t)tw;
        float *grown = realloc(all, (used + k) * sizeof *all);
        if (!grown) {
            free(px);
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            break;
        }
        all = grown;
        memcpy(all + used, px, k * sizeof *all);
        free(px);
        used += k;
        grid_thw[3 * i] = 1, grid_thw[3 * i + 1] = th / p, grid_thw[3 * i + 2] = tw / p;
        *n_patches += (int64_t)(th / p) * (tw / p);
    }
    if (st) {
        free(all);
        *n_patches = 0;
        return st;
    }
    *pixels = all, *patch_dim = (int64_t)3 * p * p;
    return OPTIQ_OK;
}

static optiq_status gemma4_encode_pixels(const vision_fe *fe, thread_pool *pool, const float *pixels,
                                         int64_t n_patches, const int32_t *grid_thw, size_t n, float **feats,
                                         int64_t *n_tokens, optiq_error *err) {
    int p = fe->g4p.patch;
    int64_t total = 0, patches = 0;
    for (size_t i = 0; i < n; i++) {
        if (grid_thw[3 * i] != 1 || grid_thw[3 * i + 1] <= 0 || grid_thw[3 * i + 2] <= 0)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu: bad grid", i + 1);
        n_tokens[i] = g4v_soft_tokens(&fe->g4p, grid_thw[3 * i + 1] * p, grid_thw[3 * i + 2] * p);
        total += n_tokens[i];
        patches += (int64_t)grid_thw[3 * i + 1] * grid_thw[3 * i + 2];
    }
    if (patches != n_patches) return err_set(err, OPTIQ_ERR_INVALID_ARG, "pixel values do not match the grids");
    float *f = malloc((size_t)(total * fe->hidden) * sizeof *f + 1);
    if (!f) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = OPTIQ_OK;
    size_t off = 0;
    int64_t row = 0;
    for (size_t i = 0; i < n && !st; i++) {
        int th = grid_thw[3 * i + 1] * p, tw = grid_thw[3 * i + 2] * p;
        st = g4v_encode(fe->g4, pool, pixels + off, th, tw, f + row * fe->hidden, err);
        if (st) {
            char msg[sizeof err->message];
            snprintf(msg, sizeof msg, "image %zu: %.480s", i + 1, err->message);
            memcpy(err->message, msg, sizeof msg);
        }
        off += (size_t)3 * (size_t)th * (size_t)tw;
        row += n_tokens[i];
    }
    if (st) {
        free(f);
        return st;
    }
    *feats = f;
    return OPTIQ_OK;
}

/* Pixel values and grids of decoded images (budgets: each image's
 * max_soft_tokens, already checked). */
static optiq_status pixels_decoded(const vision_fe *fe, const image_u8 *imgs, const int *budgets, size_t n,
                                   float **pixels, int64_t *n_patches, int64_t *patch_dim, int32_t *grid_thw,
                                   optiq_error *err) {
    *pixels = NULL, *n_patches = 0, *patch_dim = 0;
    if (fe->g4) return gemma4_pixels(fe, imgs, budgets, n, pixels, n_patches, patch_dim, grid_thw, err);
    qvl_image *pre = calloc(n ? n : 1, sizeof *pre);
    if (!pre) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = OPTIQ_OK;
    int64_t total = 0, dim = 0;
    for (size_t i = 0; i < n && !st; i++) {
        st = qvl_preprocess(&fe->pp, imgs[i].rgb, imgs[i].w, imgs[i].h, &pre[i], err);
        if (st) break;
        for (int k = 0; k < 3; k++) grid_thw[3 * i + k] = (int32_t)pre[i].grid_thw[k];
        total += pre[i].n_patches;
        dim = pre[i].patch_dim;
    }
    float *px = NULL;
    if (!st && !(px = malloc((size_t)(total * dim) * sizeof *px + 1))) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0, off = 0; !st && i < n; i++) {
        memcpy(px + off, pre[i].pixel_values, (size_t)(pre[i].n_patches * dim) * sizeof *px);
        off += (size_t)(pre[i].n_patches * dim);
    }
    for (size_t i = 0; i < n; i++) qvl_image_free(&pre[i]);
    free(pre);
    if (st) {
        free(px);
        return st;
    }
    *pixels = px, *n_patches = total, *patch_dim = dim;
    return OPTIQ_OK;
}

/* Decode every image (its budget checked first); imgs and budgets have n slots. */
static optiq_status decode_all(const vision_fe *fe, const optiq_image *images, size_t n, image_u8 *imgs, int *budgets,
                               optiq_error *err) {
    for (size_t i = 0; i < n; i++) {
        optiq_status st = check_budget(fe, &images[i], i, err);
        if (!st) st = decode_one(fe, &images[i], i, &imgs[i], err);
        if (st) return st;
        budgets[i] = images[i].max_soft_tokens;
    }
    return OPTIQ_OK;
}

static void free_all(image_u8 *imgs, size_t n) {
    for (size_t i = 0; imgs && i < n; i++) image_free(&imgs[i]);
    free(imgs);
}

optiq_status vision_fe_pixels(const vision_fe *fe, const optiq_image *images, size_t n, float **pixels,
                              int64_t *n_patches, int64_t *patch_dim, int32_t *grid_thw, optiq_error *err) {
    *pixels = NULL, *n_patches = 0, *patch_dim = 0;
    image_u8 *imgs = calloc(n ? n : 1, sizeof *imgs);
    int *budgets = calloc(n ? n : 1, sizeof *budgets);
    optiq_status st = imgs && budgets ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!st) st = decode_all(fe, images, n, imgs, budgets, err);
    if (!st) st = pixels_decoded(fe, imgs, budgets, n, pixels, n_patches, patch_dim, grid_thw, err);
    free_all(imgs, n);
    free(budgets);
    return st;
}

optiq_status vision_fe_encode_pixels(const vision_fe *fe, thread_pool *pool, const float *pixels, int64_t n_patches,
                                     const int32_t *grid_thw, size_t n, float **feats, int64_t *n_tokens,
                                     optiq_error *err) {
    *feats = NULL;
    if (fe->g4) return gemma4_encode_pixels(fe, pool, pixels, n_patches, grid_thw, n, feats, n_tokens, err);
    int64_t nt = 0;
    optiq_status st = qwen3_vl_check_grid(qwen3_vl_get_config(fe->tower), grid_thw, (int)n, n_patches, &nt, err);
    float *f = NULL;
    if (!st && !(f = malloc((size_t)(nt * fe->hidden) * sizeof *f + 1))) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!st) st = qwen3_vl_forward(fe->tower, pool, pixels, n_patches, grid_thw, (int)n, f, NULL, NULL, err);
    if (st) {
        free(f);
        return st;
    }
    int m2 = fe->tok.merge * fe->tok.merge;
    for (size_t i = 0; i < n; i++)
        n_tokens[i] = (int64_t)grid_thw[3 * i] * grid_thw[3 * i + 1] * grid_thw[3 * i + 2] / m2;
    *feats = f;
    return OPTIQ_OK;
}

/* ---- encoding, with the vision cache ---- */

static vision_key image_key(const vision_fe *fe, const image_u8 *img, int budget) {
    vision_key k = fe->settings;
    int64_t hdr[3] = {img->w, img->h, budget};
    vision_key_add(&k, hdr, sizeof hdr);
    vision_key_add(&k, img->rgb, (size_t)img->w * (size_t)img->h * 3);
    return k;
}

optiq_status vision_fe_encode(const vision_fe *fe, thread_pool *pool, const optiq_image *images, size_t n,
                              float **feats, int32_t *grid_thw, int64_t *n_tokens, optiq_error *err) {
    return vision_fe_encode_keyed(fe, pool, images, n, feats, grid_thw, n_tokens, NULL, err);
}

/* Images found in the cache are copied from it; the others go through
 * the tower together (one call, as before) and into the cache. The tower
 * encodes each image on its own (its own attention segment; every product
 * is per row), so an image's soft tokens do not depend on the others of the
 * call, and a cached copy equals a fresh encoding bit for bit. */
optiq_status vision_fe_encode_keyed(const vision_fe *fe, thread_pool *pool, const optiq_image *images, size_t n,
                                    float **feats, int32_t *grid_thw, int64_t *n_tokens, uint64_t *hashes,
                                    optiq_error *err) {
    *feats = NULL;
    size_t m = n ? n : 1, n_miss = 0;
    image_u8 *imgs = calloc(m, sizeof *imgs), *miss_imgs = calloc(m, sizeof *miss_imgs);
    int *budgets = calloc(m, sizeof *budgets), *miss_budgets = calloc(m, sizeof *miss_budgets);
    float **hit = calloc(m, sizeof *hit), *px = NULL, *fmiss = NULL, *out = NULL;
    vision_key *keys = calloc(m, sizeof *keys);
    size_t *miss_of = calloc(m, sizeof *miss_of);
    int32_t *miss_grid = calloc(m * 3, sizeof *miss_grid);
    int64_t *miss_nt = calloc(m, sizeof *miss_nt), np = 0, dim = 0, total = 0;
    optiq_status st = imgs && miss_imgs && budgets && miss_budgets && hit && keys && miss_of && miss_grid && miss_nt
                          ? OPTIQ_OK
                          : err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!st) st = decode_all(fe, images, n, imgs, budgets, err);
    for (size_t i = 0; !st && i < n; i++) {
        keys[i] = image_key(fe, &imgs[i], budgets[i]);
        if (hashes) hashes[i] = keys[i].h[0] ^ (keys[i].h[1] * 0x9E3779B97F4A7C15ull);
        if (!vision_cache_get(fe->cache, &keys[i], fe->hidden, &hit[i], &n_tokens[i], grid_thw + 3 * i)) {
            miss_of[n_miss] = i;
            miss_imgs[n_miss] = imgs[i];
            miss_budgets[n_miss++] = budgets[i];
        }
    }
    if (!st && n_miss) {
        st = pixels_decoded(fe, miss_imgs, miss_budgets, n_miss, &px, &np, &dim, miss_grid, err);
        if (!st) st = vision_fe_encode_pixels(fe, pool, px, np, miss_grid, n_miss, &fmiss, miss_nt, err);
        if (!st) vision_cache_count_encoded(fe->cache, n_miss);
        for (size_t j = 0, row = 0; !st && j < n_miss; row += (size_t)miss_nt[j], j++) {
            size_t i = miss_of[j];
            memcpy(grid_thw + 3 * i, miss_grid + 3 * j, 3 * sizeof *grid_thw);
            n_tokens[i] = miss_nt[j];
            vision_cache_put(fe->cache, &keys[i], fmiss + row * (size_t)fe->hidden, miss_nt[j], fe->hidden,
                             miss_grid + 3 * j);
        }
    }
    for (size_t i = 0; !st && i < n; i++) total += n_tokens[i];
    if (!st && !(out = malloc((size_t)(total * fe->hidden) * sizeof *out + 1)))
        st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0, row = 0, j = 0; !st && i < n; row += (size_t)n_tokens[i], i++) {
        size_t bytes = (size_t)(n_tokens[i] * fe->hidden) * sizeof *out;
        const float *src = hit[i];
        if (!src) { /* a miss: its rows in fmiss follow the misses before it */
            size_t off = 0;
            for (size_t q = 0; q < j; q++) off += (size_t)miss_nt[q];
            src = fmiss + off * (size_t)fe->hidden;
            j++;
        }
        memcpy(out + row * (size_t)fe->hidden, src, bytes);
    }
    for (size_t i = 0; hit && i < n; i++) free(hit[i]);
    free(hit), free(px), free(fmiss), free(keys), free(miss_of), free(miss_grid), free(miss_nt);
    free(miss_imgs), free(budgets), free(miss_budgets); /* miss_imgs alias imgs' pixels */
    free_all(imgs, n);
    if (st) {
        free(out);
        return st;
    }
    *feats = out;
    return OPTIQ_OK;
}

void vision_fe_set_cache(vision_fe *fe, size_t max_bytes) {
    vision_cache_free(fe->cache);
    fe->cache = vision_cache_new(max_bytes);
}

void vision_fe_cache_stats(const vision_fe *fe, vision_cache_stats *out) { vision_cache_get_stats(fe->cache, out); }

optiq_status vision_fe_image_tokens(const vision_fe *fe, const optiq_image *image, int64_t *tokens, optiq_error *err) {
    image_u8 img = {0};
    optiq_status st = check_budget(fe, image, 0, err);
    if (!st) st = decode_one(fe, image, 0, &img, err);
    if (st) return st;
    if (fe->g4) {
        int th = 0, tw = 0;
        st = g4v_target_size(&fe->g4p, img.h, img.w, image->max_soft_tokens, &th, &tw, err);
        if (!st) *tokens = g4v_soft_tokens(&fe->g4p, th, tw) + (fe->tok.wrap ? 2 : 0);
    } else {
        st = qvl_num_image_tokens(&fe->pp, img.h, img.w, tokens, err);
    }
    image_free(&img);
    return st;
}
