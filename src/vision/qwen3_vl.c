/*
 * qwen3_vl.c — Qwen3-VL vision tower + patch merger (see qwen3_vl.h).
 *
 * The computation follows mlx-vlm 0.7.10's qwen3_vl/vision.py (spec §5.6) in
 * f32: every op widens the stored weights and keeps activations in f32, so
 * the result is held to mlx-vlm's f32 run of the same weights (docs/vision.md
 * has the measured figures).
 *
 *   x  = patch_embed(pixels) + bias                    (a linear over the patch vector)
 *   x += bilinear(pos_embed, grid)                     (per image, merge-block order)
 *   per block: x += proj(attn(rope(qkv(LN1(x)))));  x += fc2(gelu_tanh(fc1(LN2(x))))
 *   out = fc2(gelu_erf(fc1(LN(x) viewed as (n/m², m²Hv))))
 *
 * Attention runs within one segment per image frame (t segments of h*w
 * patches per image), without a mask.
 */
#include "vision/qwen3_vl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dtype.h"
#include "io/json.h"
#include "kernels/matmul.h"
#include "kernels/nn.h"

#define LN_EPS 1e-6f       /* hard-coded in mlx-vlm (the config's layer_norm_eps is not read) */
#define ROPE_THETA 10000.0f
#define ROW_BLOCK 32       /* rows per task of the element-wise passes */
#define ATT_BLOCK 32       /* query rows per attention task */

typedef struct mat {
    const void *w; /* (rows, cols) as stored */
    dtype dt;
    int64_t rows, cols;
    float *bias;   /* (rows), owned */
} mat;

typedef struct vec_pair {
    float *w, *b; /* LayerNorm weight and bias (Hv), owned */
} vec_pair;

typedef struct block {
    vec_pair norm1, norm2;
    mat qkv, proj, fc1, fc2;
} block;

struct qwen3_vl {
    qwen3_vl_config cfg;
    mat patch;          /* (Hv, patch_dim), repacked copy in `patch_buf` */
    void *patch_buf;
    const void *pos;    /* (S*S, Hv) as stored */
    dtype pos_dt;
    block *blocks;      /* (depth) */
    vec_pair merger_norm;
    mat merger_fc1, merger_fc2;
};

/* ---- config ---- */

static optiq_status get_pos_int(const cJSON *vc, const char *label, const char *key, int has_def, int64_t def,
                                int *out, optiq_error *err) {
    int64_t v;
    optiq_status st = has_def ? json_get_int_or(vc, label, key, def, &v, err) : json_get_int(vc, label, key, &v, err);
    if (st) return st;
    if (v <= 0 || v > (1 << 20))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s = %lld, expected a positive integer below 2^20", label, key,
                       (long long)v);
    *out = (int)v;
    return OPTIQ_OK;
}

optiq_status qwen3_vl_config_parse(const cJSON *vc, const char *label, qwen3_vl_config *c, optiq_error *err) {
    if (!label) label = "vision_config";
    if (!cJSON_IsObject(vc)) return err_set(err, OPTIQ_ERR_FORMAT, "%s: expected an object", label);
    memset(c, 0, sizeof *c);
    optiq_status st;
    if ((st = get_pos_int(vc, label, "depth", 0, 0, &c->depth, err)) ||
        (st = get_pos_int(vc, label, "hidden_size", 0, 0, &c->hidden, err)) ||
        (st = get_pos_int(vc, label, "intermediate_size", 0, 0, &c->intermediate, err)) ||
        (st = get_pos_int(vc, label, "num_heads", 0, 0, &c->num_heads, err)) ||
        (st = get_pos_int(vc, label, "out_hidden_size", 0, 0, &c->out_hidden, err)) ||
        (st = get_pos_int(vc, label, "patch_size", 0, 0, &c->patch_size, err)) ||
        (st = get_pos_int(vc, label, "spatial_merge_size", 0, 0, &c->merge, err)) ||
        (st = get_pos_int(vc, label, "num_position_embeddings", 0, 0, &c->num_pos, err)) ||
        (st = get_pos_int(vc, label, "temporal_patch_size", 1, 2, &c->temporal_patch, err)) ||
        (st = get_pos_int(vc, label, "in_channels", 1, 3, &c->in_channels, err)))
        return st;
    const cJSON *ds;
    if ((st = json_get_array_opt(vc, label, "deepstack_visual_indexes", &ds, err))) return st;
    if (ds && cJSON_GetArraySize(ds) > 0)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: deepstack_visual_indexes has %d entries, expected none "
                       "(Qwen3-VL deepstack mergers are not supported)", label, cJSON_GetArraySize(ds));
    if (c->hidden % c->num_heads)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_heads %d", label,
                       c->hidden, c->num_heads);
    c->head_dim = c->hidden / c->num_heads;
    if (c->head_dim % 4)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: head dim %d (hidden_size / num_heads) is not a multiple of 4, "
                       "as the 2-D rotary embedding needs", label, c->head_dim);
    int s = (int)sqrt((double)c->num_pos);
    while ((int64_t)s * s > c->num_pos) s--;
    while ((int64_t)(s + 1) * (s + 1) <= c->num_pos) s++;
    if ((int64_t)s * s != c->num_pos)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: num_position_embeddings %d is not a square", label, c->num_pos);
    c->pos_side = s;
    int64_t pd = (int64_t)c->in_channels * c->temporal_patch * c->patch_size * c->patch_size;
    if (pd > (1 << 24)) return err_set(err, OPTIQ_ERR_FORMAT, "%s: patch vector of %lld values is too large", label,
                                       (long long)pd);
    c->patch_dim = (int)pd;
    return OPTIQ_OK;
}

/* ---- binding ---- */

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static int is_float(dtype dt) { return dt == DT_BF16 || dt == DT_F16 || dt == DT_F32; }

static optiq_status find(const st_file *f, const char *name, int ndim, const int64_t *shape, const st_tensor **out,
                         optiq_error *err) {
    char full[256];
    snprintf(full, sizeof full, "vision_tower.%s", name);
    const st_tensor *t = st_find(f, full);
    char want[128], got[128];
    shape_str(want, sizeof want, shape, ndim);
    if (!t) return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s missing (expected shape %s)", st_path(f), full, want);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        shape_str(got, sizeof got, t->shape, t->ndim);
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", st_path(f), full, got, want);
    }
    if (!is_float(t->dtype))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor %s has dtype %s, expected BF16, F16 or F32", st_path(f),
                       full, dtype_name(t->dtype));
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

/* name + ".weight" (rows, cols) and name + ".bias" (rows) */
static optiq_status bind_mat(const st_file *f, const char *name, int64_t rows, int64_t cols, mat *m, optiq_error *err) {
    char key[200];
    int64_t shape[2] = {rows, cols};
    const st_tensor *t;
    snprintf(key, sizeof key, "%s.weight", name);
    optiq_status st = find(f, key, 2, shape, &t, err);
    if (st) return st;
    m->w = t->data;
    m->dt = t->dtype;
    m->rows = rows;
    m->cols = cols;
    snprintf(key, sizeof key, "%s.bias", name);
    return load_vec(f, key, rows, &m->bias, err);
}

static optiq_status bind_norm(const st_file *f, const char *name, int64_t n, vec_pair *p, optiq_error *err) {
    char key[200];
    snprintf(key, sizeof key, "%s.weight", name);
    optiq_status st = load_vec(f, key, n, &p->w, err);
    if (st) return st;
    snprintf(key, sizeof key, "%s.bias", name);
    return load_vec(f, key, n, &p->b, err);
}

/* The Conv3d weight [Hv, T, P, P, C] (MLX channel-last) repacked as the
 * matrix [Hv, C*T*P*P] whose columns follow the pixel feature order
 * (c, t, py, px) of spec §5.5: the convolution with stride = kernel is then a
 * linear map of each patch vector. Elements are copied, not converted. */
static optiq_status bind_patch(const st_file *f, qwen3_vl *vt, optiq_error *err) {
    const qwen3_vl_config *c = &vt->cfg;
    int64_t shape[5] = {c->hidden, c->temporal_patch, c->patch_size, c->patch_size, c->in_channels};
    const st_tensor *t;
    optiq_status st = find(f, "patch_embed.proj.weight", 5, shape, &t, err);
    if (st) {
        const st_tensor *raw = st_find(f, "vision_tower.patch_embed.proj.weight");
        if (raw && raw->ndim == 5 && raw->shape[1] == c->in_channels && raw->shape[4] != c->in_channels)
            err_prefix(err, "PyTorch channel-first Conv3d layout (a base checkpoint, not a sidecar?): ");
        return st;
    }
    size_t es = dtype_size(t->dtype);
    int64_t C = c->in_channels, T = c->temporal_patch, P = c->patch_size, K = c->patch_dim;
    vt->patch_buf = malloc((size_t)c->hidden * (size_t)K * es);
    if (!vt->patch_buf) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    const uint8_t *src = t->data;
    uint8_t *dst = vt->patch_buf;
    for (int64_t o = 0; o < c->hidden; o++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t tt = 0; tt < T; tt++)
                for (int64_t y = 0; y < P; y++)
                    for (int64_t x = 0; x < P; x++) {
                        int64_t di = o * K + ((ch * T + tt) * P + y) * P + x;
                        int64_t si = (((o * T + tt) * P + y) * P + x) * C + ch;
                        memcpy(dst + (size_t)di * es, src + (size_t)si * es, es);
                    }
    vt->patch.w = vt->patch_buf;
    vt->patch.dt = t->dtype;
    vt->patch.rows = c->hidden;
    vt->patch.cols = K;
    return load_vec(f, "patch_embed.proj.bias", c->hidden, &vt->patch.bias, err);
}

optiq_status qwen3_vl_load(const st_file *f, const cJSON *vision_config, const char *label, qwen3_vl **out,
                           optiq_error *err) {
    *out = NULL;
    qwen3_vl *vt = calloc(1, sizeof *vt);
    if (!vt) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = qwen3_vl_config_parse(vision_config, label, &vt->cfg, err);
    if (st) goto fail;
    const qwen3_vl_config *c = &vt->cfg;
    int64_t Hv = c->hidden, mm = (int64_t)c->merge * c->merge;
    vt->blocks = calloc((size_t)c->depth, sizeof *vt->blocks);
    if (!vt->blocks) { st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); goto fail; }
    if ((st = bind_patch(f, vt, err))) goto fail;
    int64_t pshape[2] = {c->num_pos, Hv};
    const st_tensor *pt;
    if ((st = find(f, "pos_embed.weight", 2, pshape, &pt, err))) goto fail;
    vt->pos = pt->data;
    vt->pos_dt = pt->dtype;
    for (int j = 0; j < c->depth; j++) {
        block *b = &vt->blocks[j];
        char name[96];
#define NAME(s) (snprintf(name, sizeof name, "blocks.%d.%s", j, s), name)
        if ((st = bind_norm(f, NAME("norm1"), Hv, &b->norm1, err)) ||
            (st = bind_norm(f, NAME("norm2"), Hv, &b->norm2, err)) ||
            (st = bind_mat(f, NAME("attn.qkv"), 3 * Hv, Hv, &b->qkv, err)) ||
            (st = bind_mat(f, NAME("attn.proj"), Hv, Hv, &b->proj, err)) ||
            (st = bind_mat(f, NAME("mlp.linear_fc1"), c->intermediate, Hv, &b->fc1, err)) ||
            (st = bind_mat(f, NAME("mlp.linear_fc2"), Hv, c->intermediate, &b->fc2, err)))
            goto fail;
#undef NAME
    }
    if ((st = bind_norm(f, "merger.norm", Hv, &vt->merger_norm, err)) ||
        (st = bind_mat(f, "merger.linear_fc1", mm * Hv, mm * Hv, &vt->merger_fc1, err)) ||
        (st = bind_mat(f, "merger.linear_fc2", c->out_hidden, mm * Hv, &vt->merger_fc2, err)))
        goto fail;
    *out = vt;
    return OPTIQ_OK;
fail:
    qwen3_vl_free(vt);
    return st;
}

static void free_pair(vec_pair *p) { free(p->w); free(p->b); }

void qwen3_vl_free(qwen3_vl *vt) {
    if (!vt) return;
    if (vt->blocks)
        for (int j = 0; j < vt->cfg.depth; j++) {
            block *b = &vt->blocks[j];
            free_pair(&b->norm1);
            free_pair(&b->norm2);
            free(b->qkv.bias);
            free(b->proj.bias);
            free(b->fc1.bias);
            free(b->fc2.bias);
        }
    free(vt->blocks);
    free(vt->patch_buf);
    free(vt->patch.bias);
    free_pair(&vt->merger_norm);
    free(vt->merger_fc1.bias);
    free(vt->merger_fc2.bias);
    free(vt);
}

const qwen3_vl_config *qwen3_vl_get_config(const qwen3_vl *vt) { return &vt->cfg; }

optiq_status qwen3_vl_check_grid(const qwen3_vl_config *c, const int32_t *g, int n_images, int64_t n_patches,
                                 int64_t *n_tokens, optiq_error *err) {
    if (n_images <= 0 || !g) return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: no images (n_images = %d)", n_images);
    int64_t total = 0;
    for (int i = 0; i < n_images; i++) {
        int32_t t = g[3 * i], h = g[3 * i + 1], w = g[3 * i + 2];
        if (t <= 0 || h <= 0 || w <= 0 || h > (1 << 16) || w > (1 << 16) || t > (1 << 16))
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: image %d grid (%d, %d, %d) is not positive and "
                           "below 65536", i, t, h, w);
        if (h % c->merge || w % c->merge)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: image %d grid %d x %d patches is not a multiple of "
                           "the merge size %d", i, h, w, c->merge);
        total += (int64_t)t * h * w;
        if (total > ((int64_t)1 << 40)) return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: grid too large");
    }
    if (total != n_patches)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: the grids hold %lld patches, pixel_values has %lld rows",
                       (long long)total, (long long)n_patches);
    if (n_tokens) *n_tokens = total / ((int64_t)c->merge * c->merge);
    return OPTIQ_OK;
}

/* ---- element-wise passes (split over row blocks) ---- */

/* y = (x - mean) / sqrt(var + eps) * w + b over d features, two-pass in f32. */
static void layer_norm_row(const float *x, int64_t d, const float *w, const float *b, float *y) {
    float mean = 0;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (float)d;
    float var = 0;
    for (int64_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (float)d;
    float r = 1.0f / sqrtf(var + LN_EPS);
    for (int64_t i = 0; i < d; i++) y[i] = (x[i] - mean) * r * w[i] + b[i];
}

/* MLX nn.GELU(approx="tanh"): 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u³))) */
static inline float gelu_tanh(float u) {
    return 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
}
/* MLX nn.GELU(): u (1 + erf(u / sqrt 2)) / 2 */
static inline float gelu_erf(float u) { return u * (1.0f + erff(u * 0.7071067811865476f)) * 0.5f; }

enum { OP_LN, OP_GELU_TANH, OP_GELU_ERF, OP_ROPE };

typedef struct rows_ctx {
    int op;
    int64_t n, d;
    const float *x;
    float *y;
    const float *w, *b;
    /* rope */
    const float *cosv, *sinv; /* (n, hd/2) */
    int heads, hd;
} rows_ctx;

static void rope_row(float *v, const float *cs, const float *sn, int hd) {
    int h2 = hd / 2;
    for (int i = 0; i < h2; i++) {
        float a = v[i], b = v[i + h2];
        v[i] = a * cs[i] - b * sn[i];
        v[i + h2] = b * cs[i] + a * sn[i];
    }
}

static void rows_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    const rows_ctx *c = vctx;
    int64_t r0 = task * ROW_BLOCK, r1 = r0 + ROW_BLOCK < c->n ? r0 + ROW_BLOCK : c->n;
    for (int64_t r = r0; r < r1; r++) {
        switch (c->op) {
        case OP_LN: layer_norm_row(c->x + r * c->d, c->d, c->w, c->b, c->y + r * c->d); break;
        case OP_GELU_TANH:
            for (int64_t i = 0; i < c->d; i++) c->y[r * c->d + i] = gelu_tanh(c->y[r * c->d + i]);
            break;
        case OP_GELU_ERF:
            for (int64_t i = 0; i < c->d; i++) c->y[r * c->d + i] = gelu_erf(c->y[r * c->d + i]);
            break;
        case OP_ROPE: {
            /* y row = (q heads | k heads | v heads); rotate q and k */
            const float *cs = c->cosv + r * (c->hd / 2), *sn = c->sinv + r * (c->hd / 2);
            for (int h = 0; h < 2 * c->heads; h++) rope_row(c->y + r * c->d + (int64_t)h * c->hd, cs, sn, c->hd);
            break;
        }
        }
    }
}

static void run_rows(thread_pool *pool, rows_ctx *c) {
    pool_run(pool, (c->n + ROW_BLOCK - 1) / ROW_BLOCK, rows_task, c);
}

/* y (n, rows) = x · Wᵀ + bias */
static optiq_status linear(thread_pool *pool, const mat *m, const float *x, int64_t n, float *y, optiq_error *err) {
    optiq_status st = matmul(pool, x, n, m->cols, m->w, m->dt, m->rows, y, NULL, err);
    if (st) return st;
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m->rows; i++) y[r * m->rows + i] += m->bias[i];
    return OPTIQ_OK;
}

/* ---- attention within segments ---- */

typedef struct att_ctx {
    const float *qkv;       /* (n, 3, heads, hd) */
    const float *kp;        /* (heads, n, hd) keys of each head, contiguous */
    const float *vt;        /* (heads, ...) per head and segment [a, b): values transposed, (hd, b - a) at hd * a */
    float *out;             /* (n, heads, hd) */
    const int64_t *seg0;    /* (n) first row of the row's segment */
    const int64_t *seg1;    /* (n) one past its last row */
    int64_t n;
    int heads, hd;
    float scale;
    float *scratch;         /* (threads, ATT_BLOCK, max_seg) */
    int64_t max_seg;
} att_ctx;

/* Queries [q0, q1) of one head: scores = q·kᵀ over the row's segment (as
 * matrix products: the f32 matmul kernels, one thread per task), softmax,
 * then the weighted sum of the values. Rows of a task that fall in different
 * segments are handled a run of same-segment rows at a time. */
static void att_task(void *vctx, int64_t task, int thread) {
    const att_ctx *c = vctx;
    int64_t nb = (c->n + ATT_BLOCK - 1) / ATT_BLOCK;
    int h = (int)(task / nb);
    int64_t q0 = (task % nb) * ATT_BLOCK, q1 = q0 + ATT_BLOCK < c->n ? q0 + ATT_BLOCK : c->n;
    int64_t stride = 3 * (int64_t)c->heads * c->hd, hd = c->hd;
    float *s = c->scratch + (size_t)thread * (size_t)ATT_BLOCK * (size_t)c->max_seg;
    for (int64_t i0 = q0; i0 < q1;) {
        int64_t a = c->seg0[i0], b = c->seg1[i0], L = b - a;
        int64_t i1 = i0;
        while (i1 < q1 && c->seg0[i1] == a) i1++;
        int64_t m = i1 - i0;
        mm_opts o = mm_opts_default();
        o.ldx = stride;
        o.ldy = L;
        /* the kernels cannot fail on these shapes (f32 weights, positive sizes) */
        matmul(NULL, c->qkv + i0 * stride + (int64_t)h * hd, m, hd, c->kp + ((int64_t)h * c->n + a) * hd, DT_F32, L,
               s, &o, NULL);
        for (int64_t r = 0; r < m; r++) nn_softmax_scaled(s + r * L, L, c->scale);
        o.ldx = L;
        o.ldy = (int64_t)c->heads * hd;
        matmul(NULL, s, m, L, c->vt + (int64_t)h * c->n * hd + hd * a, DT_F32, hd,
               c->out + (i0 * c->heads + h) * hd, &o, NULL);
        i0 = i1;
    }
}

/* kp and vt of att_ctx from the (roped) qkv rows. */
static void pack_kv(const float *qkv, int64_t n, int heads, int hd, const int64_t *seg0, const int64_t *seg1,
                    float *kp, float *vt) {
    int64_t stride = 3 * (int64_t)heads * hd;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < n; i++) {
            const float *k = qkv + i * stride + ((int64_t)heads + h) * hd;
            const float *v = qkv + i * stride + (2 * (int64_t)heads + h) * hd;
            memcpy(kp + ((int64_t)h * n + i) * hd, k, (size_t)hd * sizeof *kp);
            int64_t a = seg0[i], L = seg1[i] - a;
            float *blk = vt + (int64_t)h * n * hd + (int64_t)hd * a;
            for (int e = 0; e < hd; e++) blk[e * L + (i - a)] = v[e];
        }
}

/* ---- forward ---- */

/* x (n, Hv) += bilinearly interpolated position embeddings, per image in
 * merge-block order (mlx-vlm fast_pos_embed_interpolate). The grid
 * coordinates are linspace(0, S-1, h) in f32, the four corner weights f32
 * products summed left to right. */
static void add_pos_embed(const qwen3_vl *vt, const int32_t *g, int n_images, float *x, float *row) {
    const qwen3_vl_config *c = &vt->cfg;
    int64_t Hv = c->hidden, S = c->pos_side, m = c->merge;
    int64_t n = 0;
    for (int im = 0; im < n_images; im++) {
        int64_t t = g[3 * im], h = g[3 * im + 1], w = g[3 * im + 2];
        float sh = h > 1 ? (float)(S - 1) / (float)(h - 1) : 0.0f;
        float sw = w > 1 ? (float)(S - 1) / (float)(w - 1) : 0.0f;
        for (int64_t f = 0; f < t; f++)
            for (int64_t bh = 0; bh < h / m; bh++)
                for (int64_t bw = 0; bw < w / m; bw++)
                    for (int64_t mh = 0; mh < m; mh++)
                        for (int64_t mw = 0; mw < m; mw++, n++) {
                            int64_t r = bh * m + mh, cc = bw * m + mw;
                            float hs = (float)r * sh, ws = (float)cc * sw;
                            int64_t h0 = (int64_t)hs, w0 = (int64_t)ws;
                            int64_t h1 = h0 + 1 < S - 1 ? h0 + 1 : S - 1, w1 = w0 + 1 < S - 1 ? w0 + 1 : S - 1;
                            float dh = hs - (float)h0, dw = ws - (float)w0;
                            float wt[4] = {(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw};
                            int64_t idx[4] = {h0 * S + w0, h0 * S + w1, h1 * S + w0, h1 * S + w1};
                            for (int64_t i = 0; i < Hv; i++) row[i] = 0;
                            for (int k = 0; k < 4; k++)
                                for (int64_t i = 0; i < Hv; i++)
                                    row[i] += load_as_f32(vt->pos, vt->pos_dt, (size_t)(idx[k] * Hv + i)) * wt[k];
                            float *xr = x + n * Hv;
                            for (int64_t i = 0; i < Hv; i++) xr[i] += row[i];
                        }
    }
}

/* cos / sin (n, hd/2) of the 2-D rotary angles: dims k < hd/4 turn with the
 * patch row, hd/4 <= k < hd/2 with the column (mlx-vlm rot_pos_emb), at
 * inv_freq[k] = 1 / 10000^(2k / (hd/2)). Segment bounds per row too. */
static void rope_tables(const qwen3_vl_config *c, const int32_t *g, int n_images, float *cosv, float *sinv,
                        int64_t *seg0, int64_t *seg1) {
    int q = c->head_dim / 4, h2 = c->head_dim / 2;
    float inv[1024];
    for (int k = 0; k < q; k++) inv[k] = 1.0f / powf(ROPE_THETA, (float)(2 * k) / (float)h2);
    int64_t m = c->merge, n = 0;
    for (int im = 0; im < n_images; im++) {
        int64_t t = g[3 * im], h = g[3 * im + 1], w = g[3 * im + 2];
        for (int64_t f = 0; f < t; f++) {
            int64_t start = n, end = n + h * w;
            for (int64_t bh = 0; bh < h / m; bh++)
                for (int64_t bw = 0; bw < w / m; bw++)
                    for (int64_t mh = 0; mh < m; mh++)
                        for (int64_t mw = 0; mw < m; mw++, n++) {
                            float r = (float)(bh * m + mh), cc = (float)(bw * m + mw);
                            for (int k = 0; k < q; k++) {
                                float ar = r * inv[k], ac = cc * inv[k];
                                cosv[n * h2 + k] = cosf(ar);
                                sinv[n * h2 + k] = sinf(ar);
                                cosv[n * h2 + q + k] = cosf(ac);
                                sinv[n * h2 + q + k] = sinf(ac);
                            }
                            seg0[n] = start;
                            seg1[n] = end;
                        }
        }
    }
}

optiq_status qwen3_vl_forward(const qwen3_vl *vt, thread_pool *pool, const float *pixels, int64_t n,
                              const int32_t *grid, int n_images, float *out, qwen3_vl_stage_fn on_stage, void *user,
                              optiq_error *err) {
    const qwen3_vl_config *c = &vt->cfg;
    if (!pixels || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: pixels and out are required");
    if (n <= 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "vision: %lld patches", (long long)n);
    if (c->head_dim / 4 > 1024)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "vision: head dim %d above 4096", c->head_dim);
    int64_t n_tok;
    optiq_status st = qwen3_vl_check_grid(c, grid, n_images, n, &n_tok, err);
    if (st) return st;
    int64_t Hv = c->hidden, I = c->intermediate, hd = c->head_dim, mm = (int64_t)c->merge * c->merge;
    int64_t max_seg = 0;
    for (int im = 0; im < n_images; im++) {
        int64_t s = (int64_t)grid[3 * im + 1] * grid[3 * im + 2];
        if (s > max_seg) max_seg = s;
    }
    int threads = pool_threads(pool);
    int64_t wide = 3 * Hv > I ? 3 * Hv : I; /* qkv or fc1 output */
    if (mm * Hv > wide) wide = mm * Hv;
    /* one scratch block: x, a (LN out / attention out), wide, cos, sin, segments, scores */
    size_t nf = (size_t)(n * Hv) * 4 + (size_t)(n * wide) + (size_t)(n * hd) +
                (size_t)threads * ATT_BLOCK * (size_t)max_seg + (size_t)Hv;
    int64_t *seg0 = malloc(2 * (size_t)n * sizeof(int64_t) + nf * sizeof(float));
    if (!seg0) return err_set(err, OPTIQ_ERR_NOMEM, "vision: out of memory for %lld patches", (long long)n);
    int64_t *seg1 = seg0 + n;             /* (n) segment bounds of each row */
    float *x = (float *)(seg1 + n);       /* (n, Hv) residual stream */
    float *a = x + n * Hv;                /* (n, Hv) */
    float *wbuf = a + n * Hv;             /* (n, wide) */
    float *cosv = wbuf + n * wide;        /* (n, hd/2) */
    float *sinv = cosv + n * (hd / 2);    /* (n, hd/2) */
    float *kp = sinv + n * (hd / 2);      /* (heads, n, hd) keys per head */
    float *vtp = kp + n * Hv;             /* (heads, ...) values transposed per segment */
    float *scores = vtp + n * Hv;         /* (threads, ATT_BLOCK, max_seg) */
    float *row = scores + (size_t)threads * ATT_BLOCK * (size_t)max_seg; /* (Hv) */

    /* patch embedding + position embedding */
    if ((st = linear(pool, &vt->patch, pixels, n, x, err))) goto done;
    add_pos_embed(vt, grid, n_images, x, row);
    if (on_stage) on_stage(user, 0, x, n, Hv);
    rope_tables(c, grid, n_images, cosv, sinv, seg0, seg1);

    for (int j = 0; j < c->depth; j++) {
        const block *b = &vt->blocks[j];
        rows_ctx ln = {.op = OP_LN, .n = n, .d = Hv, .x = x, .y = a, .w = b->norm1.w, .b = b->norm1.b};
        run_rows(pool, &ln);
        if ((st = linear(pool, &b->qkv, a, n, wbuf, err))) goto done;
        rows_ctx rope = {.op = OP_ROPE, .n = n, .d = 3 * Hv, .y = wbuf, .cosv = cosv, .sinv = sinv,
                         .heads = c->num_heads, .hd = c->head_dim};
        run_rows(pool, &rope);
        pack_kv(wbuf, n, c->num_heads, c->head_dim, seg0, seg1, kp, vtp);
        att_ctx at = {.qkv = wbuf, .kp = kp, .vt = vtp, .out = a, .seg0 = seg0, .seg1 = seg1, .n = n, .heads = c->num_heads,
                      .hd = c->head_dim, .scale = 1.0f / sqrtf((float)c->head_dim), .scratch = scores,
                      .max_seg = max_seg};
        pool_run(pool, (int64_t)c->num_heads * ((n + ATT_BLOCK - 1) / ATT_BLOCK), att_task, &at);
        /* proj into wbuf (n, Hv), then residual */
        if ((st = linear(pool, &b->proj, a, n, wbuf, err))) goto done;
        for (int64_t i = 0; i < n * Hv; i++) x[i] += wbuf[i];
        rows_ctx ln2 = {.op = OP_LN, .n = n, .d = Hv, .x = x, .y = a, .w = b->norm2.w, .b = b->norm2.b};
        run_rows(pool, &ln2);
        if ((st = linear(pool, &b->fc1, a, n, wbuf, err))) goto done;
        rows_ctx g = {.op = OP_GELU_TANH, .n = n, .d = I, .y = wbuf};
        run_rows(pool, &g);
        if ((st = linear(pool, &b->fc2, wbuf, n, a, err))) goto done;
        for (int64_t i = 0; i < n * Hv; i++) x[i] += a[i];
        if (on_stage) on_stage(user, j + 1, x, n, Hv);
    }

    /* merger: per-patch LayerNorm, the m² patches of a block side by side */
    rows_ctx ln = {.op = OP_LN, .n = n, .d = Hv, .x = x, .y = a, .w = vt->merger_norm.w, .b = vt->merger_norm.b};
    run_rows(pool, &ln);
    if ((st = linear(pool, &vt->merger_fc1, a, n_tok, wbuf, err))) goto done;
    rows_ctx g = {.op = OP_GELU_ERF, .n = n_tok, .d = mm * Hv, .y = wbuf};
    run_rows(pool, &g);
    st = linear(pool, &vt->merger_fc2, wbuf, n_tok, out, err);
done:
    free(seg0);
    return st;
}
