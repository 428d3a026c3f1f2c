/*
 * gemma4_vision.c — Gemma 4 image processor and vision towers (see
 * gemma4_vision.h). Every formula names the reference function it follows;
 * all arithmetic on activations is f32, as the reference's f32 run.
 */
#include "vision/gemma4_vision.h"
#include "vision/preprocess.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dtype.h"
#include "io/json.h"
#include "kernels/matmul.h"
#include "kernels/nn.h"
#include "vision/resample.h"

#define QK_NORM_EPS 1e-6f  /* VisionRMSNorm / VisionRMSNormNoScale: fixed, not the config's eps */
#define LN_EPS 1e-5f       /* nn.LayerNorm default (unified embedder) */
#define ROW_BLOCK 16       /* rows per task of the row-wise passes */
#define ATT_BLOCK 32       /* query rows per attention task */
#define MLP_CHUNK 512      /* patch rows per MLP pass (bounds the (rows, I) scratch) */

g4v_params g4v_params_default(int unified) {
    g4v_params p = {
        .patch = 16,
        .pool = 3,
        .max_soft_tokens = 280,
        .unified = unified ? 1 : 0,
        .do_resize = 1,
        .do_rescale = 1,
        .rescale_factor = 1 / 255.0,
        .do_normalize = 0,
        .mean = {0.5f, 0.5f, 0.5f},
        .std = {0.5f, 0.5f, 0.5f},
    };
    return p;
}

/* ---- processor parameters from JSON ------------------------------------ */

/* An int-valued processor setting (pp_want_int's checks). */
static optiq_status want_int(const cJSON *j, const char *where, const char *key, int64_t lo, int64_t hi, int *out,
                             optiq_error *err) {
    int64_t v;
    optiq_status st = pp_want_int(j, where, key, lo, hi, &v, err);
    if (!st) *out = (int)v;
    return st;
}

/* The keys of `ip` (the image processor's kwargs) over the defaults. */
static optiq_status resolve(const cJSON *ip, const char *where, int unified, g4v_params *p, optiq_error *err) {
    const cJSON *j;
    optiq_status st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "patch_size")) &&
        (st = want_int(j, where, "patch_size", 1, 256, &p->patch, err)))
        return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "pooling_kernel_size")) &&
        (st = want_int(j, where, "pooling_kernel_size", 1, 256, &p->pool, err)))
        return st;
    j = cJSON_GetObjectItemCaseSensitive(ip, "max_soft_tokens");
    const char *key = "max_soft_tokens";
    if (!j && unified) { /* Gemma4UnifiedImageProcessor: num_soft_tokens is an alias when not None */
        j = cJSON_GetObjectItemCaseSensitive(ip, "num_soft_tokens");
        if (cJSON_IsNull(j)) j = NULL;
        key = "num_soft_tokens";
    }
    if (j && (st = want_int(j, where, key, 1, G4V_MAX_SOFT_TOKENS, &p->max_soft_tokens, err))) return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "do_resize")) &&
        (st = pp_want_bool(j, where, "do_resize", &p->do_resize, err)))
        return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "do_rescale")) &&
        (st = pp_want_bool(j, where, "do_rescale", &p->do_rescale, err)))
        return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "do_normalize")) &&
        (st = pp_want_bool(j, where, "do_normalize", &p->do_normalize, err)))
        return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "rescale_factor"))) {
        if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
            return err_set(err, OPTIQ_ERR_FORMAT, "%srescale_factor is %s, expected a finite number", where,
                           cJSON_IsNumber(j) ? "not finite" : json_type_name(j));
        p->rescale_factor = j->valuedouble;
    }
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "image_mean")) &&
        (st = pp_want_triple(j, where, "image_mean", 0, p->mean, err)))
        return st;
    if ((j = cJSON_GetObjectItemCaseSensitive(ip, "image_std")) &&
        (st = pp_want_triple(j, where, "image_std", 1, p->std, err)))
        return st;
    return OPTIQ_OK;
}

optiq_status g4v_params_from_json(const char *preprocessor_json, size_t n1, const char *processor_json, size_t n2,
                                  int unified, g4v_params *out, optiq_error *err) {
    /* from_pretrained: processor_config.json if the file exists, else preprocessor_config.json. */
    const char *text = processor_json ? processor_json : preprocessor_json;
    size_t len = processor_json ? n2 : n1;
    const char *label = processor_json ? "processor_config.json" : "preprocessor_config.json";
    g4v_params p = g4v_params_default(unified);
    if (!text) {
        *out = p;
        return OPTIQ_OK;
    }
    cJSON *cfg = NULL;
    optiq_status st = json_parse(text, len, label, &cfg, err);
    if (st) return st;
    if (!cJSON_IsObject(cfg)) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: top level is %s, expected an object", label, json_type_name(cfg));
        goto done;
    }
    char where[64];
    const cJSON *ip = cJSON_GetObjectItemCaseSensitive(cfg, "image_processor");
    if (cJSON_IsObject(ip)) {
        snprintf(where, sizeof where, "%s: image_processor.", label);
        st = resolve(ip, where, unified, &p, err);
    } else if (!unified && !cJSON_GetObjectItemCaseSensitive(cfg, "image_processor_type") &&
               (cJSON_GetObjectItemCaseSensitive(cfg, "patch_size") ||
                cJSON_GetObjectItemCaseSensitive(cfg, "max_soft_tokens") ||
                cJSON_GetObjectItemCaseSensitive(cfg, "pooling_kernel_size"))) {
        /* Gemma4Processor.from_pretrained's flat branch (errata A1); every key
         * resolve() reads is in its list of copied keys. */
        snprintf(where, sizeof where, "%s: ", label);
        st = resolve(cfg, where, 0, &p, err);
    }
    /* else: the reference builds the image processor from an empty dict. */
    if (!st) *out = p;
done:
    cJSON_Delete(cfg);
    return st;
}

/* ---- target size, pixels ----------------------------------------------- */

static optiq_status params_check(const g4v_params *p, int n_max, optiq_error *err) {
    if (!p) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL parameters");
    if (p->patch < 1 || p->patch > 256 || p->pool < 1 || p->pool > 256)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: patch_size %d, pooling_kernel_size %d, expected "
                       "1 to 256", p->patch, p->pool);
    if (n_max < 1 || n_max > G4V_MAX_SOFT_TOKENS)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: max_soft_tokens %d, expected 1 to %d "
                       "(0 would resize to a 0 x 0 image)", n_max, G4V_MAX_SOFT_TOKENS);
    if (!isfinite(p->rescale_factor))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: rescale_factor is not finite");
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0f)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image_mean[%d] %g / image_std[%d] %g, "
                           "expected finite values and a non-zero std", c, p->mean[c], c, p->std[c]);
    return OPTIQ_OK;
}

optiq_status g4v_target_size(const g4v_params *p, int h, int w, int max_soft_tokens, int *th, int *tw,
                             optiq_error *err) {
    int n_max = max_soft_tokens ? max_soft_tokens : (p ? p->max_soft_tokens : 0);
    optiq_status st = params_check(p, n_max, err);
    if (st) return st;
    if (h < 1 || w < 1 || h > G4V_MAX_SIDE || w > G4V_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image %dx%d (height x width), expected sides in "
                       "[1, %d]", h, w, G4V_MAX_SIDE);
    int64_t side = (int64_t)p->patch * p->pool;
    if (!p->do_resize) {
        if (h % side || w % side)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: do_resize is off and the image is %dx%d, "
                           "expected multiples of %lld", h, w, (long long)side);
        *th = h;
        *tw = w;
        return OPTIQ_OK;
    }
    /* get_aspect_ratio_preserving_size, in Python doubles. Every integer here
     * is below 2^53, so each int → double is exact and a true division rounds
     * once, as Python's int / int. */
    int64_t max_patches = (int64_t)n_max * p->pool * p->pool;
    int64_t target_px = max_patches * p->patch * p->patch;
    double factor = sqrt((double)target_px / ((double)h * (double)w));
    int64_t H = (int64_t)floor(factor * (double)h / (double)side) * side;
    int64_t W = (int64_t)floor(factor * (double)w / (double)side) * side;
    if (H == 0 && W == 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image %dx%d would be resized to 0 x 0", h, w);
    int64_t max_side = (max_patches / ((int64_t)p->pool * p->pool)) * side;
    if (H == 0) {
        H = side;
        W = (int64_t)floor((double)w / (double)h) * side;
        if (W > max_side) W = max_side;
    } else if (W == 0) {
        W = side;
        H = (int64_t)floor((double)h / (double)w) * side;
        if (H > max_side) H = max_side;
    }
    if (H > G4V_MAX_SIDE || W > G4V_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image %dx%d would be resized to %lldx%lld, "
                       "expected sides up to %d", h, w, (long long)H, (long long)W, G4V_MAX_SIDE);
    *th = (int)H;
    *tw = (int)W;
    return OPTIQ_OK;
}

int64_t g4v_soft_tokens(const g4v_params *p, int th, int tw) {
    if (!p || p->patch < 1 || p->pool < 1 || th < 0 || tw < 0) return 0;
    return ((int64_t)(th / p->patch) * (tw / p->patch)) / ((int64_t)p->pool * p->pool);
}

optiq_status g4v_pixels(const g4v_params *p, const uint8_t *rgb, int h, int w, int max_soft_tokens, float **pixels,
                        int *th, int *tw, optiq_error *err) {
    if (!pixels || !th || !tw) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL output");
    *pixels = NULL;
    if (!rgb) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL image");
    int H, W;
    optiq_status st = g4v_target_size(p, h, w, max_soft_tokens, &H, &W, err);
    if (st) return st;
    size_t n = (size_t)H * (size_t)W;
    float *out = malloc(3 * n * sizeof *out);
    uint8_t *resized = NULL;
    if (!out) return err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory for a %dx%d image", H, W);
    const uint8_t *src = rgb;
    if (H != h || W != w) {
        resized = malloc(n * 3);
        if (!resized) {
            free(out);
            return err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory for a %dx%d image", H, W);
        }
        if ((st = resample_bicubic_u8(rgb, w, h, 3, resized, W, H, err))) {
            free(resized);
            free(out);
            return st;
        }
        src = resized;
    }
    /* Gemma4ImageProcessor.preprocess: image.astype(float32) * rescale_factor
     * (a float32 multiply by the float32-rounded factor), then (x - mean) / std
     * in float32 when do_normalize, then channels first. */
    float lut[3][256];
    const float rf = (float)p->rescale_factor;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)v;
            if (p->do_rescale) x = x * rf;
            if (p->do_normalize) x = (x - p->mean[c]) / p->std[c];
            lut[c][v] = x;
        }
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) out[(size_t)c * n + i] = lut[c][src[i * 3 + c]];
    free(resized);
    *pixels = out;
    *th = H;
    *tw = W;
    return OPTIQ_OK;
}

/* ---- tower binding ------------------------------------------------------ */

typedef struct lin {
    const void *w; /* (rows, cols) as stored */
    dtype dt;
    int64_t rows, cols;
    float *bias;   /* (rows) or NULL, owned */
    int clip;      /* ClippableLinear bounds in use */
    float in_min, in_max, out_min, out_max;
} lin;

typedef struct layer {
    float *ln_in, *ln_post_attn, *ln_pre_ff, *ln_post_ff; /* (D) */
    float *q_norm, *k_norm;                                /* (hd) */
    lin q, k, v, o, gate, up, down;
} layer;

struct g4v_tower {
    g4v_dims d;
    float eps;           /* vision rms_norm_eps (block norms, projector pre-norm) */
    float theta;         /* 2-D RoPE base */
    int clipped, standardize;
    int64_t pos_size;    /* S (encoder) or M (unified) */
    /* encoder */
    lin input_proj;      /* (D, 3p²) */
    const void *pos;     /* (2, S, D) or (M, 2, E), as stored */
    dtype pos_dt;
    layer *layers;       /* (layers) */
    float *std_bias, *std_scale; /* (D) */
    /* unified */
    int model_patch;     /* P */
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *pn_w, *pn_b;
    lin dense;           /* (E, 3P²) + bias */
    /* both */
    lin proj;            /* embed_vision: (H, feat) */
};

const g4v_dims *g4v_tower_dims(const g4v_tower *t) { return &t->d; }

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* name (MLX key), or "model." + name (HF key), with the given shape and a
 * float dtype. ndim 0 accepts a scalar stored as [] or [1]. */
static optiq_status find(const st_file *f, const char *name, int ndim, const int64_t *shape, const st_tensor **out,
                         optiq_error *err) {
    const st_tensor *t = st_find(f, name);
    if (!t) {
        char hf[300];
        snprintf(hf, sizeof hf, "model.%s", name);
        t = st_find(f, hf);
    }
    char want[128], got[128];
    shape_str(want, sizeof want, shape, ndim);
    if (!t) return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s missing (expected shape %s)", st_path(f), name, want);
    int ok;
    if (ndim == 0) ok = t->nelem == 1 && t->ndim <= 1;
    else {
        ok = t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    }
    if (!ok) {
        shape_str(got, sizeof got, t->shape, t->ndim);
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", st_path(f), name, got, want);
    }
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s has dtype %s, expected BF16, F16 or F32", st_path(f),
                       name, dtype_name(t->dtype));
    *out = t;
    return OPTIQ_OK;
}

static optiq_status load_vec(const st_file *f, const char *name, int64_t n, float **out, optiq_error *err) {
    const st_tensor *t;
    optiq_status st = find(f, name, 1, &n, &t, err);
    if (st) return st;
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) v[i] = load_as_f32(t->data, t->dtype, (size_t)i);
    *out = v;
    return OPTIQ_OK;
}

static optiq_status load_scalar(const st_file *f, const char *name, float *out, optiq_error *err) {
    const st_tensor *t;
    optiq_status st = find(f, name, 0, NULL, &t, err);
    if (!st) *out = load_as_f32(t->data, t->dtype, 0);
    return st;
}

/* prefix + ".weight" (rows, cols); + ".bias" when bias; the four clip
 * scalars beside the wrapped Linear when clip (prefix ends in ".linear"). */
static optiq_status bind_lin(const st_file *f, const char *prefix, int64_t rows, int64_t cols, int bias, int clip,
                             lin *m, optiq_error *err) {
    char key[300];
    int64_t shape[2] = {rows, cols};
    const st_tensor *t;
    snprintf(key, sizeof key, "%s.weight", prefix);
    optiq_status st = find(f, key, 2, shape, &t, err);
    if (st) return st;
    m->w = t->data;
    m->dt = t->dtype;
    m->rows = rows;
    m->cols = cols;
    if (bias) {
        snprintf(key, sizeof key, "%s.bias", prefix);
        if ((st = load_vec(f, key, rows, &m->bias, err))) return st;
    }
    if (clip) {
        /* ClippableLinear keeps its bounds beside `linear`: q_proj.input_min */
        size_t pl = strlen(prefix);
        const char *suffix = ".linear";
        size_t sl = strlen(suffix);
        int base = (int)(pl > sl && !strcmp(prefix + pl - sl, suffix) ? pl - sl : pl);
        const char *names[4] = {"input_min", "input_max", "output_min", "output_max"};
        float *dst[4] = {&m->in_min, &m->in_max, &m->out_min, &m->out_max};
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%.*s.%s", base, prefix, names[i]);
            if ((st = load_scalar(f, key, dst[i], err))) return st;
        }
        m->clip = 1;
    }
    return OPTIQ_OK;
}

/* A positive integer of vision_config with a default (the dataclass's). */
static optiq_status cfg_int_lo(const cJSON *vc, const char *label, const char *key, int64_t def, int64_t lo,
                               int64_t hi, int *out, optiq_error *err) {
    int64_t v = def;
    optiq_status st = vc ? json_get_int_or(vc, label, key, def, &v, err) : OPTIQ_OK;
    if (st) return st;
    if (v < lo || v > hi)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s = %lld, expected %lld to %lld", label, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = (int)v;
    return OPTIQ_OK;
}

static optiq_status cfg_int(const cJSON *vc, const char *label, const char *key, int64_t def, int64_t hi, int *out,
                            optiq_error *err) {
    return cfg_int_lo(vc, label, key, def, 1, hi, out, err);
}

static optiq_status cfg_eps(const cJSON *vc, const char *label, float *out, optiq_error *err) {
    double v = 1e-6;
    optiq_status st = vc ? json_get_double_or(vc, label, "rms_norm_eps", 1e-6, &v, err) : OPTIQ_OK;
    if (st) return st;
    if (!(v >= 0) || !isfinite(v))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: rms_norm_eps = %g, expected a finite non-negative number", label, v);
    *out = (float)v;
    return OPTIQ_OK;
}

static optiq_status load_encoder(const st_file *f, const cJSON *vc, const char *label, g4v_tower *t,
                                 optiq_error *err) {
    g4v_dims *d = &t->d;
    int D = 0, S = 0;
    optiq_status st;
    if ((st = cfg_int(vc, label, "hidden_size", 768, 1 << 16, &D, err)) ||
        (st = cfg_int(vc, label, "intermediate_size", 3072, 1 << 18, &d->intermediate, err)) ||
        (st = cfg_int_lo(vc, label, "num_hidden_layers", 16, 0, 1024, &d->layers, err)) ||
        (st = cfg_int(vc, label, "num_attention_heads", 12, 1024, &d->heads, err)) ||
        (st = cfg_int(vc, label, "num_key_value_heads", 12, 1024, &d->kv_heads, err)) ||
        (st = cfg_int(vc, label, "head_dim", 64, 4096, &d->head_dim, err)) ||
        (st = cfg_int(vc, label, "patch_size", 16, 256, &d->patch, err)) ||
        (st = cfg_int(vc, label, "pooling_kernel_size", 3, 256, &d->pool, err)) ||
        (st = cfg_int(vc, label, "position_embedding_size", 10240, 1 << 20, &S, err)) ||
        (st = cfg_eps(vc, label, &t->eps, err)))
        return st;
    if (vc && ((st = json_get_bool_or(vc, label, "use_clipped_linears", 0, &t->clipped, err)) ||
               (st = json_get_bool_or(vc, label, "standardize", 0, &t->standardize, err))))
        return st;
    double theta = 100.0;
    const cJSON *rp = NULL;
    if (vc && (st = json_get_object_opt(vc, label, "rope_parameters", &rp, err))) return st;
    if (rp && (st = json_get_double(vc, label, "rope_parameters.rope_theta", &theta, err))) return st;
    if (!(theta > 0) || !isfinite(theta))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: rope_parameters.rope_theta = %g, expected a positive number", label,
                       theta);
    t->theta = (float)theta;
    if (d->heads % d->kv_heads)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       label, d->heads, d->kv_heads);
    /* apply_multidimensional_rope splits each head into two halves of
     * 2·⌊hd/4⌋ channels and drops any remainder, which the reference's
     * reshape then rejects: only multiples of 4 work. */
    if (d->head_dim % 4)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: head_dim %d is not a multiple of 4, as the 2-D RoPE needs", label,
                       d->head_dim);
    d->feat = D;
    t->pos_size = S;
    int64_t hd = d->head_dim, qd = (int64_t)d->heads * hd, kd = (int64_t)d->kv_heads * hd, I = d->intermediate;
    int64_t pd = 3 * (int64_t)d->patch * d->patch;
    if ((st = bind_lin(f, "vision_tower.patch_embedder.input_proj", D, pd, 0, 0, &t->input_proj, err))) return st;
    int64_t pshape[3] = {2, S, D};
    const st_tensor *pt;
    if ((st = find(f, "vision_tower.patch_embedder.position_embedding_table", 3, pshape, &pt, err))) return st;
    t->pos = pt->data;
    t->pos_dt = pt->dtype;
    t->layers = calloc((size_t)d->layers, sizeof *t->layers);
    if (!t->layers) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < d->layers; i++) {
        layer *L = &t->layers[i];
        char n[200];
        int c = t->clipped;
#define NAME(s) (snprintf(n, sizeof n, "vision_tower.encoder.layers.%d.%s", i, s), n)
        if ((st = load_vec(f, NAME("input_layernorm.weight"), D, &L->ln_in, err)) ||
            (st = load_vec(f, NAME("post_attention_layernorm.weight"), D, &L->ln_post_attn, err)) ||
            (st = load_vec(f, NAME("pre_feedforward_layernorm.weight"), D, &L->ln_pre_ff, err)) ||
            (st = load_vec(f, NAME("post_feedforward_layernorm.weight"), D, &L->ln_post_ff, err)) ||
            (st = load_vec(f, NAME("self_attn.q_norm.weight"), hd, &L->q_norm, err)) ||
            (st = load_vec(f, NAME("self_attn.k_norm.weight"), hd, &L->k_norm, err)) ||
            (st = bind_lin(f, NAME("self_attn.q_proj.linear"), qd, D, 0, c, &L->q, err)) ||
            (st = bind_lin(f, NAME("self_attn.k_proj.linear"), kd, D, 0, c, &L->k, err)) ||
            (st = bind_lin(f, NAME("self_attn.v_proj.linear"), kd, D, 0, c, &L->v, err)) ||
            (st = bind_lin(f, NAME("self_attn.o_proj.linear"), D, qd, 0, c, &L->o, err)) ||
            (st = bind_lin(f, NAME("mlp.gate_proj.linear"), I, D, 0, c, &L->gate, err)) ||
            (st = bind_lin(f, NAME("mlp.up_proj.linear"), I, D, 0, c, &L->up, err)) ||
            (st = bind_lin(f, NAME("mlp.down_proj.linear"), D, I, 0, c, &L->down, err)))
            return st;
#undef NAME
    }
    if (t->standardize && ((st = load_vec(f, "vision_tower.std_bias", D, &t->std_bias, err)) ||
                           (st = load_vec(f, "vision_tower.std_scale", D, &t->std_scale, err))))
        return st;
    return OPTIQ_OK;
}

static optiq_status load_unified(const st_file *f, const cJSON *vc, const char *label, g4v_tower *t,
                                 optiq_error *err) {
    g4v_dims *d = &t->d;
    int E = 0, M = 0, out_dims = 0;
    optiq_status st;
    if ((st = cfg_int(vc, label, "patch_size", 16, 256, &d->patch, err)) ||
        (st = cfg_int(vc, label, "pooling_kernel_size", 3, 256, &d->pool, err)) ||
        (st = cfg_int(vc, label, "model_patch_size", 48, 4096, &t->model_patch, err)) ||
        (st = cfg_int(vc, label, "mm_embed_dim", 3840, 1 << 18, &E, err)) ||
        (st = cfg_int(vc, label, "mm_posemb_size", 1120, 1 << 20, &M, err)) ||
        (st = cfg_int(vc, label, "output_proj_dims", 3840, 1 << 18, &out_dims, err)) ||
        (st = cfg_eps(vc, label, &t->eps, err)))
        return st;
    /* The processor always cuts p·k squares (errata B2) and embed_vision is
     * built for output_proj_dims while the embedder emits mm_embed_dim: the
     * reference only works when both pairs agree. */
    if (t->model_patch != d->patch * d->pool)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: model_patch_size %d, expected patch_size x pooling_kernel_size = "
                       "%d (the processor cuts patches of that size)", label, t->model_patch, d->patch * d->pool);
    if (out_dims != E)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: output_proj_dims %d differs from mm_embed_dim %d", label, out_dims,
                       E);
    d->feat = E;
    t->pos_size = M;
    int64_t pd = 3 * (int64_t)t->model_patch * t->model_patch;
    if ((st = load_vec(f, "vision_embedder.patch_ln1.weight", pd, &t->ln1_w, err)) ||
        (st = load_vec(f, "vision_embedder.patch_ln1.bias", pd, &t->ln1_b, err)) ||
        (st = bind_lin(f, "vision_embedder.patch_dense", E, pd, 1, 0, &t->dense, err)) ||
        (st = load_vec(f, "vision_embedder.patch_ln2.weight", E, &t->ln2_w, err)) ||
        (st = load_vec(f, "vision_embedder.patch_ln2.bias", E, &t->ln2_b, err)) ||
        (st = load_vec(f, "vision_embedder.pos_norm.weight", E, &t->pn_w, err)) ||
        (st = load_vec(f, "vision_embedder.pos_norm.bias", E, &t->pn_b, err)))
        return st;
    int64_t pshape[3] = {M, 2, E};
    const st_tensor *pt;
    if ((st = find(f, "vision_embedder.pos_embedding", 3, pshape, &pt, err))) return st;
    t->pos = pt->data;
    t->pos_dt = pt->dtype;
    return OPTIQ_OK;
}

optiq_status g4v_load(const st_file *f, const cJSON *vision_config, const char *cfg_label, int64_t text_hidden,
                      int unified, g4v_tower **out, optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL output");
    *out = NULL;
    if (!f) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: no weights file");
    if (text_hidden < 1 || text_hidden > (1 << 20))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: text hidden size %lld", (long long)text_hidden);
    const char *label = cfg_label ? cfg_label : "vision_config";
    if (vision_config && !cJSON_IsObject(vision_config) && !cJSON_IsNull(vision_config))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: expected an object", label);
    const cJSON *vc = cJSON_IsObject(vision_config) ? vision_config : NULL;
    g4v_tower *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    t->d.unified = unified ? 1 : 0;
    t->d.text_hidden = text_hidden;
    optiq_status st = unified ? load_unified(f, vc, label, t, err) : load_encoder(f, vc, label, t, err);
    if (!st) st = bind_lin(f, "embed_vision.embedding_projection", text_hidden, t->d.feat, 0, 0, &t->proj, err);
    if (st) {
        g4v_free(t);
        return st;
    }
    *out = t;
    return OPTIQ_OK;
}

void g4v_free(g4v_tower *t) {
    if (!t) return;
    if (t->layers)
        for (int i = 0; i < t->d.layers; i++) {
            layer *L = &t->layers[i];
            free(L->ln_in);
            free(L->ln_post_attn);
            free(L->ln_pre_ff);
            free(L->ln_post_ff);
            free(L->q_norm);
            free(L->k_norm);
        }
    free(t->layers);
    free(t->std_bias);
    free(t->std_scale);
    free(t->ln1_w);
    free(t->ln1_b);
    free(t->ln2_w);
    free(t->ln2_b);
    free(t->pn_w);
    free(t->pn_b);
    free(t->dense.bias);
    free(t);
}

/* ---- row-wise ops ------------------------------------------------------- */

/* mx.fast.rms_norm's fallback, and VisionRMSNorm(NoScale), in f32:
 * r = 1 / sqrtf(Σx² · (1/d) + eps), y = x·r (· w). */
static void rms_row(const float *x, int64_t d, const float *w, float eps, float *y) {
    float s = 0;
    for (int64_t i = 0; i < d; i++) s += x[i] * x[i];
    float r = 1.0f / sqrtf(s * (1.0f / (float)d) + eps);
    if (w)
        for (int64_t i = 0; i < d; i++) y[i] = (x[i] * r) * w[i];
    else
        for (int64_t i = 0; i < d; i++) y[i] = x[i] * r;
}

/* mx.fast.layer_norm's fallback: μ = Σx·(1/d), v = Σ(x−μ)²·(1/d),
 * y = (x−μ)·rsqrt(v + eps)·w + b. */
static void ln_row(const float *x, int64_t d, const float *w, const float *b, float eps, float *y) {
    float inv = 1.0f / (float)d, s = 0;
    for (int64_t i = 0; i < d; i++) s += x[i];
    float mu = s * inv, v = 0;
    for (int64_t i = 0; i < d; i++) v += (x[i] - mu) * (x[i] - mu);
    float r = 1.0f / sqrtf(v * inv + eps);
    for (int64_t i = 0; i < d; i++) y[i] = ((x[i] - mu) * r) * w[i] + b[i];
}

typedef struct rows_ctx rows_ctx;
typedef void (*row_fn)(const rows_ctx *c, int64_t r);
struct rows_ctx {
    row_fn fn;
    int64_t n;
    const g4v_tower *t;
    const layer *L;
    float *x, *y, *z;     /* per-op buffers */
    const float *cs, *sn; /* RoPE tables (positions, half) */
    int pw;               /* patches per row of the image */
};

static void rows_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    const rows_ctx *c = vctx;
    int64_t r0 = task * ROW_BLOCK, r1 = r0 + ROW_BLOCK < c->n ? r0 + ROW_BLOCK : c->n;
    for (int64_t r = r0; r < r1; r++) c->fn(c, r);
}

static void run_rows(thread_pool *pool, rows_ctx *c) { pool_run(pool, (c->n + ROW_BLOCK - 1) / ROW_BLOCK, rows_task, c); }

/* ClippableLinear: y = clip(clip(x, in)·Wᵀ (+ b), out). xc: scratch of
 * (n, cols) floats, used only when the bounds are in use. */
static optiq_status linear(thread_pool *pool, const lin *m, const float *x, int64_t n, float *y, float *xc,
                           optiq_error *err) {
    if (m->clip) {
        for (int64_t i = 0; i < n * m->cols; i++) xc[i] = fminf(fmaxf(x[i], m->in_min), m->in_max);
        x = xc;
    }
    optiq_status st = matmul(pool, x, n, m->cols, m->w, m->dt, m->rows, y, NULL, err);
    if (st) return st;
    if (m->bias)
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < m->rows; i++) y[r * m->rows + i] += m->bias[i];
    if (m->clip)
        for (int64_t i = 0; i < n * m->rows; i++) y[i] = fminf(fmaxf(y[i], m->out_min), m->out_max);
    return OPTIQ_OK;
}

/* ---- encoder: per-row steps -------------------------------------------- */

/* y = input_layernorm(x) */
static void op_ln_in(const rows_ctx *c, int64_t r) {
    int64_t D = c->t->d.feat;
    rms_row(c->x + r * D, D, c->L->ln_in, c->t->eps, c->y + r * D);
}

/* x += post_attention_layernorm(y); z = pre_feedforward_layernorm(x) */
static void op_attn_residual(const rows_ctx *c, int64_t r) {
    int64_t D = c->t->d.feat;
    float *x = c->x + r * D, *y = c->y + r * D;
    rms_row(y, D, c->L->ln_post_attn, c->t->eps, y);
    for (int64_t i = 0; i < D; i++) x[i] += y[i];
    rms_row(x, D, c->L->ln_pre_ff, c->t->eps, c->z + r * D);
}

/* x += post_feedforward_layernorm(y) */
static void op_ff_residual(const rows_ctx *c, int64_t r) {
    int64_t D = c->t->d.feat;
    float *x = c->x + r * D, *y = c->y + r * D;
    rms_row(y, D, c->L->ln_post_ff, c->t->eps, y);
    for (int64_t i = 0; i < D; i++) x[i] += y[i];
}

/* One head vector: VisionRMSNorm (w may be NULL), then the 2-D RoPE of
 * apply_multidimensional_rope: half 0 (channels [0, C)) turns with the
 * column, half 1 ([C, 2C)) with the row; inside a half, rotate_half pairs
 * (j, j + C/2): y_j = x_j·cos − x_{j+C/2}·sin, y_{j+C/2} = x_{j+C/2}·cos + x_j·sin. */
static void norm_rope_head(float *v, int hd, const float *w, int rope, const float *cs, const float *sn, int col,
                           int row) {
    rms_row(v, hd, w, QK_NORM_EPS, v);
    if (!rope) return;
    int C = hd / 2, h = C / 2;
    for (int part = 0; part < 2; part++) {
        int pos = part == 0 ? col : row;
        const float *cp = cs + (int64_t)pos * h, *sp = sn + (int64_t)pos * h;
        float *p = v + part * C;
        for (int j = 0; j < h; j++) {
            float a = p[j], b = p[j + h];
            p[j] = a * cp[j] + (-b) * sp[j];
            p[j + h] = b * cp[j] + a * sp[j];
        }
    }
}

/* q (x), k (y) normed and roped, v (z) normed, for patch r. */
static void op_qkv(const rows_ctx *c, int64_t r) {
    const g4v_dims *d = &c->t->d;
    int hd = d->head_dim, col = (int)(r % c->pw), row = (int)(r / c->pw);
    for (int h = 0; h < d->heads; h++)
        norm_rope_head(c->x + (r * d->heads + h) * hd, hd, c->L->q_norm, 1, c->cs, c->sn, col, row);
    for (int h = 0; h < d->kv_heads; h++) {
        norm_rope_head(c->y + (r * d->kv_heads + h) * hd, hd, c->L->k_norm, 1, c->cs, c->sn, col, row);
        norm_rope_head(c->z + (r * d->kv_heads + h) * hd, hd, NULL, 0, NULL, NULL, 0, 0);
    }
}

/* ---- encoder: attention ------------------------------------------------- */

typedef struct att_ctx {
    const float *q;   /* (n, heads, hd) */
    const float *kp;  /* (kv_heads, n, hd) */
    const float *vt;  /* (kv_heads, hd, n) */
    float *out;       /* (n, heads, hd) */
    float *scratch;   /* (threads, ATT_BLOCK, n) */
    int64_t n;
    int heads, kv_heads, hd;
} att_ctx;

/* Bidirectional attention, scale 1 (VisionAttention through
 * ensure_fused_sdpa): queries [q0, q1) of head h against every patch; the
 * mask of a plain image is all zeros. */
static void att_task(void *vctx, int64_t task, int thread) {
    const att_ctx *c = vctx;
    int64_t nb = (c->n + ATT_BLOCK - 1) / ATT_BLOCK, n = c->n;
    int h = (int)(task / nb), kvh = h / (c->heads / c->kv_heads);
    int64_t q0 = (task % nb) * ATT_BLOCK, q1 = q0 + ATT_BLOCK < n ? q0 + ATT_BLOCK : n, m = q1 - q0;
    int64_t hd = c->hd, ld = (int64_t)c->heads * hd;
    float *s = c->scratch + (size_t)thread * ATT_BLOCK * (size_t)n;
    mm_opts o = mm_opts_default();
    o.ldx = ld;
    o.ldy = n;
    /* f32 weights and positive sizes: these calls cannot fail */
    matmul(NULL, c->q + q0 * ld + h * hd, m, hd, c->kp + (int64_t)kvh * n * hd, DT_F32, n, s, &o, NULL);
    for (int64_t r = 0; r < m; r++) nn_softmax_scaled(s + r * n, n, 1.0f);
    o.ldx = n;
    o.ldy = ld;
    matmul(NULL, s, m, n, c->vt + (int64_t)kvh * hd * n, DT_F32, hd, c->out + q0 * ld + h * hd, &o, NULL);
}

/* ---- encoder forward ---------------------------------------------------- */

/* x (N, D) = input_proj(2·(patch − 0.5)) + T[0][col] + T[1][row]
 * (VisionPatchEmbedder._patchify / _position_embeddings). Positions beyond
 * the table select no row of the reference's one-hot product and add 0. */
static optiq_status embed_patches(const g4v_tower *t, thread_pool *pool, const float *px, int th, int tw, float *x,
                                  float *patches, optiq_error *err) {
    int p = t->d.patch, ph = th / p, pw = tw / p;
    int64_t D = t->d.feat, pd = 3 * (int64_t)p * p, plane = (int64_t)th * tw;
    for (int r = 0; r < ph; r++)
        for (int c = 0; c < pw; c++) {
            float *v = patches + ((int64_t)r * pw + c) * pd;
            for (int y = 0; y < p; y++)
                for (int xx = 0; xx < p; xx++)
                    for (int ch = 0; ch < 3; ch++) {
                        float a = px[ch * plane + (int64_t)(r * p + y) * tw + (c * p + xx)];
                        v[((int64_t)y * p + xx) * 3 + ch] = 2.0f * (a - 0.5f);
                    }
        }
    int64_t N = (int64_t)ph * pw;
    optiq_status st = linear(pool, &t->input_proj, patches, N, x, NULL, err);
    if (st) return st;
    int64_t S = t->pos_size;
    for (int r = 0; r < ph; r++)
        for (int c = 0; c < pw; c++) {
            float *xr = x + ((int64_t)r * pw + c) * D;
            for (int64_t i = 0; i < D; i++) {
                float ex = c < S ? load_as_f32(t->pos, t->pos_dt, (size_t)((int64_t)c * D + i)) : 0.0f;
                float ey = r < S ? load_as_f32(t->pos, t->pos_dt, (size_t)((S + r) * D + i)) : 0.0f;
                xr[i] = xr[i] + (ex + ey);
            }
        }
    return OPTIQ_OK;
}

/* cos / sin of pos / base^(j·(2/C)) for every position < npos, j < C/2
 * (apply_multidimensional_rope: freq_exponents = (2/C)·arange in f32,
 * timescale = power(base, ·), angle = position / timescale). */
static void rope_tables(const g4v_tower *t, int npos, float *cs, float *sn) {
    int C = t->d.head_dim / 2, h = C / 2;
    float e2 = (float)(2.0 / (double)C);
    for (int j = 0; j < h; j++) {
        float ts = powf(t->theta, e2 * (float)j);
        for (int pos = 0; pos < npos; pos++) {
            float a = (float)pos / ts;
            cs[(int64_t)pos * h + j] = cosf(a);
            sn[(int64_t)pos * h + j] = sinf(a);
        }
    }
}

static optiq_status encoder_forward(const g4v_tower *t, thread_pool *pool, const float *px, int th, int tw,
                                    float *pooled, optiq_error *err) {
    const g4v_dims *d = &t->d;
    int p = d->patch, k = d->pool, ph = th / p, pw = tw / p, hd = d->head_dim;
    int64_t N = (int64_t)ph * pw, D = d->feat, I = d->intermediate;
    int64_t qd = (int64_t)d->heads * hd, kd = (int64_t)d->kv_heads * hd, pd = 3 * (int64_t)p * p;
    int npos = ph > pw ? ph : pw, threads = pool_threads(pool);
    int64_t chunk = N < MLP_CHUNK ? N : MLP_CHUNK;
    int64_t widest = D > qd ? D : qd;
    if (I > widest) widest = I;
    if (pd > widest) widest = pd;
    /* x, a, z (N, D); q, att (N, qd); kb, vb, kp, vt (N, kd); g, u (chunk, I);
     * clip scratch (N, widest); scores (threads, ATT_BLOCK, N); RoPE tables;
     * the patch vectors (N, pd) reuse q's space when they fit, else their own. */
    size_t nf = (size_t)(3 * N * D + 2 * N * qd + 4 * N * kd + 2 * chunk * I) + (size_t)threads * ATT_BLOCK * (size_t)N +
                2 * (size_t)npos * (size_t)(hd / 4) + (t->clipped ? (size_t)(N * widest) : 0) + (size_t)(N * pd);
    float *buf = malloc(nf * sizeof(float));
    if (!buf) return err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory for %lld patches", (long long)N);
    float *x = buf, *a = x + N * D, *z = a + N * D;
    float *q = z + N * D, *att = q + N * qd;
    float *kb = att + N * qd, *vb = kb + N * kd, *kp = vb + N * kd, *vt = kp + N * kd;
    float *g = vt + N * kd, *u = g + chunk * I;
    float *scores = u + chunk * I;
    float *cs = scores + (size_t)threads * ATT_BLOCK * (size_t)N, *sn = cs + (int64_t)npos * (hd / 4);
    float *patches = sn + (int64_t)npos * (hd / 4);
    float *xc = patches + N * pd; /* only with clipped linears */

    optiq_status st = embed_patches(t, pool, px, th, tw, x, patches, err);
    if (st) goto done;
    rope_tables(t, npos, cs, sn);

    for (int li = 0; li < d->layers; li++) {
        const layer *L = &t->layers[li];
        rows_ctx rc = {.fn = op_ln_in, .n = N, .t = t, .L = L, .x = x, .y = a};
        run_rows(pool, &rc);
        if ((st = linear(pool, &L->q, a, N, q, xc, err)) || (st = linear(pool, &L->k, a, N, kb, xc, err)) ||
            (st = linear(pool, &L->v, a, N, vb, xc, err)))
            goto done;
        rows_ctx qk = {.fn = op_qkv, .n = N, .t = t, .L = L, .x = q, .y = kb, .z = vb, .cs = cs, .sn = sn, .pw = pw};
        run_rows(pool, &qk);
        for (int h = 0; h < d->kv_heads; h++)
            for (int64_t r = 0; r < N; r++) {
                memcpy(kp + ((int64_t)h * N + r) * hd, kb + (r * d->kv_heads + h) * hd, (size_t)hd * sizeof(float));
                for (int e = 0; e < hd; e++) vt[((int64_t)h * hd + e) * N + r] = vb[(r * d->kv_heads + h) * hd + e];
            }
        att_ctx ac = {.q = q, .kp = kp, .vt = vt, .out = att, .scratch = scores, .n = N, .heads = d->heads,
                      .kv_heads = d->kv_heads, .hd = hd};
        pool_run(pool, (int64_t)d->heads * ((N + ATT_BLOCK - 1) / ATT_BLOCK), att_task, &ac);
        if ((st = linear(pool, &L->o, att, N, a, xc, err))) goto done;
        rows_ctx rs = {.fn = op_attn_residual, .n = N, .t = t, .L = L, .x = x, .y = a, .z = z};
        run_rows(pool, &rs);
        /* MLP over row chunks: down(gelu(gate(z)) · up(z)), post norm, residual */
        for (int64_t r0 = 0; r0 < N; r0 += chunk) {
            int64_t m = N - r0 < chunk ? N - r0 : chunk;
            if ((st = linear(pool, &L->gate, z + r0 * D, m, g, xc, err)) ||
                (st = linear(pool, &L->up, z + r0 * D, m, u, xc, err)))
                goto done;
            nn_geglu(g, u, m * I);
            if ((st = linear(pool, &L->down, g, m, a + r0 * D, xc, err))) goto done;
        }
        rows_ctx rf = {.fn = op_ff_residual, .n = N, .t = t, .L = L, .x = x, .y = a};
        run_rows(pool, &rf);
    }

    /* VisionPooler._avg_pool_by_positions: cell = ⌊x/k⌋ + (pW/k)·⌊y/k⌋, each
     * cell the sum of fl(1/k²)·h over its patches (an f32 product with the
     * one-hot weights), then × float(sqrt(D)); cells in row-major order. */
    {
        int cw = pw / k, chh = ph / k;
        float wgt = 1.0f / (float)(k * k), root = (float)sqrt((double)D);
        for (int cy = 0; cy < chh; cy++)
            for (int cx = 0; cx < cw; cx++) {
                float *o = pooled + ((int64_t)cy * cw + cx) * D;
                for (int64_t i = 0; i < D; i++) o[i] = 0.0f;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) {
                        const float *hr = x + ((int64_t)(cy * k + dy) * pw + (cx * k + dx)) * D;
                        for (int64_t i = 0; i < D; i++) o[i] += wgt * hr[i];
                    }
                for (int64_t i = 0; i < D; i++) {
                    o[i] = o[i] * root;
                    if (t->standardize) o[i] = (o[i] - t->std_bias[i]) * t->std_scale[i];
                }
            }
    }
done:
    free(buf);
    return st;
}

/* ---- unified embedder --------------------------------------------------- */

/* VisionEmbedder.__call__ on the processor's rows (§7.1: P x P patches in
 * (row, column, channel) order, positions (x = column, y = row)). */
static optiq_status unified_forward(const g4v_tower *t, thread_pool *pool, const float *px, int th, int tw,
                                    float *emb, optiq_error *err) {
    int P = t->model_patch, gh = th / P, gw = tw / P;
    int64_t n = (int64_t)gh * gw, pd = 3 * (int64_t)P * P, E = t->d.feat, plane = (int64_t)th * tw;
    if (gw > t->pos_size || gh > t->pos_size)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: %d x %d patches, the position table has %lld rows",
                       gh, gw, (long long)t->pos_size);
    float *rows = calloc((size_t)(n * pd), sizeof(float)); /* calloc: quiets -Wmaybe-uninitialized */
    if (!rows) return err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory for %lld patches", (long long)n);
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *v = rows + ((int64_t)r * gw + c) * pd;
            for (int y = 0; y < P; y++)
                for (int x = 0; x < P; x++)
                    for (int ch = 0; ch < 3; ch++)
                        v[((int64_t)y * P + x) * 3 + ch] = px[ch * plane + (int64_t)(r * P + y) * tw + (c * P + x)];
            ln_row(v, pd, t->ln1_w, t->ln1_b, LN_EPS, v);
        }
    optiq_status st = linear(pool, &t->dense, rows, n, emb, NULL, err);
    free(rows);
    if (st) return st;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *z = emb + ((int64_t)r * gw + c) * E;
            ln_row(z, E, t->ln2_w, t->ln2_b, LN_EPS, z);
            /* hidden + (x_pos·valid_x + y_pos·valid_y): the two rows are added first */
            for (int64_t i = 0; i < E; i++) {
                float ex = load_as_f32(t->pos, t->pos_dt, (size_t)(((int64_t)c * 2 + 0) * E + i));
                float ey = load_as_f32(t->pos, t->pos_dt, (size_t)(((int64_t)r * 2 + 1) * E + i));
                z[i] = z[i] + (ex + ey);
            }
            ln_row(z, E, t->pn_w, t->pn_b, LN_EPS, z);
        }
    return OPTIQ_OK;
}

/* ---- entry points ------------------------------------------------------- */

optiq_status g4v_encode_ex(const g4v_tower *t, thread_pool *pool, const float *pixels, int th, int tw, float *pooled,
                           float *out, optiq_error *err) {
    if (!t || !pixels) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL tower or pixels");
    const g4v_dims *d = &t->d;
    int side = d->patch * d->pool;
    if (th < side || tw < side || th % side || tw % side || th > G4V_MAX_SIDE || tw > G4V_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image %dx%d, expected positive multiples of %d "
                       "(patch_size x pooling_kernel_size)", th, tw, side);
    int64_t n = (int64_t)(th / side) * (tw / side);
    if ((int64_t)(th / d->patch) * (tw / d->patch) > ((int64_t)1 << 24))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: image %dx%d has too many patches", th, tw);
    float *feat = pooled;
    if (!feat) {
        feat = malloc((size_t)(n * d->feat) * sizeof(float));
        if (!feat) return err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory");
    }
    optiq_status st = d->unified ? unified_forward(t, pool, pixels, th, tw, feat, err)
                                 : encoder_forward(t, pool, pixels, th, tw, feat, err);
    if (!st && out) {
        /* MultimodalEmbedder: weightless RMSNorm (vision eps), then the projection */
        float *normed = malloc((size_t)(n * d->feat) * sizeof(float));
        if (!normed) st = err_set(err, OPTIQ_ERR_NOMEM, "gemma4 vision: out of memory");
        else {
            for (int64_t r = 0; r < n; r++) rms_row(feat + r * d->feat, d->feat, NULL, t->eps, normed + r * d->feat);
            st = linear(pool, &t->proj, normed, n, out, NULL, err);
            free(normed);
        }
    }
    if (feat != pooled) free(feat);
    return st;
}

optiq_status g4v_encode(const g4v_tower *t, thread_pool *pool, const float *pixels, int th, int tw, float *out,
                        optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "gemma4 vision: NULL output");
    return g4v_encode_ex(t, pool, pixels, th, tw, NULL, out, err);
}
