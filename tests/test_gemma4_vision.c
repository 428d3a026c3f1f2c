/*
 * test_gemma4_vision.c — the Gemma 4 image front-end (src/vision/gemma4_vision.h).
 *
 * Spec cases: the §6.2 target-size table and its errors, the processor-config
 * selection rules (errata A1, B2), rescale/layout, patch order and 2·(x − 0.5),
 * pooling, and whole tiny towers (encoder with GQA and 2-D RoPE; unified
 * embedder) against straightforward f64 re-computations written here; bad
 * weight files.
 *
 * Parity cases (run when the fixtures of tools/reference/gen_gemma4_vl.py are
 * present): pixel values of every tests/fixtures/preprocess/gemma4 case must
 * hash to the reference's SHA-256 (max abs diff 0); the towers of
 * tests/fixtures/models/gemma4-vl-{mixed,unified} must match the reference's
 * f32 run within 1e-4 relative (max|ours − ref| / max|ref|): the reference
 * sums in another order (BLAS sgemm, MLX reductions) and uses its own
 * sin/cos/exp, so bit equality is not expected in f32.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dtype.h"
#include "io/image.h"
#include "io/json.h"
#include "sha256.h"
#include "test.h"
#include "vision/gemma4_vision.h"
#include "vision/resample.h"

#define PARITY_TOL 1e-4 /* relative, vs the reference's f32 run */
#define F64_TOL 2e-5    /* relative, vs the f64 re-computations here */

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float nrand(float s) { return (float)((urand() * 2 - 1) * 1.7320508 * s); }
static float bfr(float x) { return bf16_to_f32(f32_to_bf16(x)); } /* a bf16-representable value */

static double rel_err(const float *a, const double *b, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > r) r = fabs(b[i]);
    }
    return r > 0 ? m / r : m;
}

/* A weights file under construction: tensors kept as f32 values (already
 * bf16-representable when stored as bf16), written with st_writer. */
#define MAXT 96
typedef struct wfile {
    int n;
    char name[MAXT][128];
    int ndim[MAXT];
    int64_t shape[MAXT][3];
    float *val[MAXT];
    uint16_t *bf[MAXT];
    dtype dt[MAXT];
} wfile;

static float *wadd(wfile *w, const char *name, dtype dt, int ndim, int64_t a, int64_t b, int64_t c, float scale,
                   float mean) {
    int i = w->n++;
    snprintf(w->name[i], sizeof w->name[i], "%s", name);
    w->ndim[i] = ndim;
    w->shape[i][0] = a, w->shape[i][1] = b, w->shape[i][2] = c;
    int64_t n = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
    if (ndim == 0) n = 1;
    w->val[i] = malloc(sizeof(float) * (size_t)n);
    w->bf[i] = malloc(sizeof(uint16_t) * (size_t)n);
    w->dt[i] = dt;
    for (int64_t j = 0; j < n; j++) {
        float v = mean + nrand(scale);
        if (dt == DT_BF16) v = bfr(v);
        if (dt == DT_F16) v = f16_to_f32(f32_to_f16(v));
        w->val[i][j] = v;
    }
    return w->val[i];
}

static float *wget(wfile *w, const char *name) {
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->name[i], name)) return w->val[i];
    return NULL;
}

/* Save (skipping `skip`, and storing `reshape` with a wrong first dimension). */
static int wsave(wfile *w, const char *path, const char *skip, const char *reshape, dtype force_dt) {
    st_writer *sw = st_writer_new();
    optiq_error err = {0};
    int ok = 1;
    int32_t *ints[MAXT] = {0};
    for (int i = 0; i < w->n && ok; i++) {
        if (skip && !strcmp(skip, w->name[i])) continue;
        int64_t shape[3] = {w->shape[i][0], w->shape[i][1], w->shape[i][2]};
        int64_t n = w->ndim[i] == 0 ? 1 : shape[0] * (w->ndim[i] > 1 ? shape[1] : 1) * (w->ndim[i] > 2 ? shape[2] : 1);
        const void *data = w->val[i];
        dtype dt = w->dt[i];
        if (reshape && !strcmp(reshape, w->name[i])) {
            if (force_dt == DT_I32) {
                ints[i] = calloc((size_t)n, sizeof(int32_t));
                data = ints[i];
                dt = DT_I32;
            } else if (w->ndim[i] >= 2) {
                shape[0] = shape[0] * shape[1], shape[1] = 1; /* same bytes, wrong shape */
            } else {
                shape[0] -= 1;
            }
        }
        if ((dt == DT_BF16 || dt == DT_F16) && data == w->val[i]) {
            for (int64_t j = 0; j < n; j++)
                w->bf[i][j] = dt == DT_BF16 ? f32_to_bf16(w->val[i][j]) : f32_to_f16(w->val[i][j]);
            data = w->bf[i];
        }
        ok = st_writer_add(sw, w->name[i], dt, w->ndim[i], shape, data, &err) == OPTIQ_OK;
    }
    if (ok) ok = st_writer_save(sw, path, &err) == OPTIQ_OK;
    if (!ok) printf("    (writer: %s)\n", err.message);
    st_writer_free(sw);
    for (int i = 0; i < MAXT; i++) free(ints[i]);
    return ok;
}

static void wfree(wfile *w) {
    for (int i = 0; i < w->n; i++) {
        free(w->val[i]);
        free(w->bf[i]);
    }
    w->n = 0;
}

static char tmp_path[256];

/* ---- f64 re-computations ------------------------------------------------ */

typedef struct tcfg {
    int D, I, layers, heads, kvh, hd, p, k, S, H;
    double eps, theta;
    int swap_rope_axes; /* sensitivity check: rotate with (row, column) instead */
} tcfg;

static void rms64(double *x, int d, const float *w, double eps) {
    double s = 0;
    for (int i = 0; i < d; i++) s += x[i] * x[i];
    double r = 1 / sqrt(s / d + eps);
    for (int i = 0; i < d; i++) x[i] = x[i] * r * (w ? w[i] : 1.0);
}

static void matvec64(const double *x, const float *W, int rows, int cols, double *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += x[c] * W[(int64_t)r * cols + c];
        y[r] = s;
    }
}

/* 2-D RoPE on one head (spec §6.8): half 0 turns with the column, half 1 with the row. */
static void rope64(double *v, int hd, int col, int row, double theta, int swap) {
    int C = hd / 2, h = C / 2;
    for (int part = 0; part < 2; part++) {
        int pos = (part == 0) != (swap != 0) ? col : row;
        double *q = v + part * C;
        for (int j = 0; j < h; j++) {
            double ang = pos / pow(theta, 2.0 * j / C);
            double a = q[j], b = q[j + h];
            q[j] = a * cos(ang) - b * sin(ang);
            q[j + h] = b * cos(ang) + a * sin(ang);
        }
    }
}

static double gelu64(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

/* The encoder tower and projector in f64: pooled (n, D), out (n, H). */
static void encoder64(const tcfg *c, wfile *w, const float *px, int th, int tw, double *pooled, double *out) {
    int p = c->p, ph = th / p, pw = tw / p, N = ph * pw, D = c->D, hd = c->hd, pd = 3 * p * p;
    double *x = calloc((size_t)N * D, sizeof(double)), *a = calloc((size_t)N * D, sizeof(double));
    double *q = calloc((size_t)N * c->heads * hd, sizeof(double)), *kk = calloc((size_t)N * c->kvh * hd, sizeof(double));
    double *vv = calloc((size_t)N * c->kvh * hd, sizeof(double)), *att = calloc((size_t)N * c->heads * hd, sizeof(double));
    double *v = calloc((size_t)pd, sizeof(double)), *s = calloc((size_t)N, sizeof(double));
    double *g = calloc((size_t)c->I, sizeof(double)), *u = calloc((size_t)c->I, sizeof(double));
    double *tmp = calloc((size_t)(D > c->heads * hd ? D : c->heads * hd), sizeof(double));
    const float *ip = wget(w, "vision_tower.patch_embedder.input_proj.weight");
    const float *T = wget(w, "vision_tower.patch_embedder.position_embedding_table");
    for (int r = 0; r < ph; r++)
        for (int cc = 0; cc < pw; cc++) {
            for (int y = 0; y < p; y++)
                for (int xx = 0; xx < p; xx++)
                    for (int ch = 0; ch < 3; ch++)
                        v[(y * p + xx) * 3 + ch] = 2.0 * (px[(int64_t)ch * th * tw + (r * p + y) * tw + cc * p + xx] - 0.5);
            double *xr = x + (int64_t)(r * pw + cc) * D;
            matvec64(v, ip, D, pd, xr);
            for (int i = 0; i < D; i++) xr[i] += (double)T[(int64_t)cc * D + i] + T[(int64_t)(c->S + r) * D + i];
        }
    for (int l = 0; l < c->layers; l++) {
        char nm[160];
#define W(s) (snprintf(nm, sizeof nm, "vision_tower.encoder.layers.%d.%s", l, s), wget(w, nm))
        for (int n = 0; n < N; n++) {
            memcpy(a + (int64_t)n * D, x + (int64_t)n * D, sizeof(double) * D);
            rms64(a + (int64_t)n * D, D, W("input_layernorm.weight"), c->eps);
            matvec64(a + (int64_t)n * D, W("self_attn.q_proj.linear.weight"), c->heads * hd, D, q + (int64_t)n * c->heads * hd);
            matvec64(a + (int64_t)n * D, W("self_attn.k_proj.linear.weight"), c->kvh * hd, D, kk + (int64_t)n * c->kvh * hd);
            matvec64(a + (int64_t)n * D, W("self_attn.v_proj.linear.weight"), c->kvh * hd, D, vv + (int64_t)n * c->kvh * hd);
            int col = n % pw, row = n / pw;
            for (int h = 0; h < c->heads; h++) {
                double *qh = q + ((int64_t)n * c->heads + h) * hd;
                rms64(qh, hd, W("self_attn.q_norm.weight"), 1e-6);
                rope64(qh, hd, col, row, c->theta, c->swap_rope_axes);
            }
            for (int h = 0; h < c->kvh; h++) {
                double *kh = kk + ((int64_t)n * c->kvh + h) * hd;
                rms64(kh, hd, W("self_attn.k_norm.weight"), 1e-6);
                rope64(kh, hd, col, row, c->theta, c->swap_rope_axes);
                rms64(vv + ((int64_t)n * c->kvh + h) * hd, hd, NULL, 1e-6);
            }
        }
        for (int n = 0; n < N; n++)
            for (int h = 0; h < c->heads; h++) {
                int kvh = h / (c->heads / c->kvh);
                const double *qh = q + ((int64_t)n * c->heads + h) * hd;
                double mx = -INFINITY, z = 0;
                for (int m = 0; m < N; m++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += qh[e] * kk[((int64_t)m * c->kvh + kvh) * hd + e];
                    s[m] = d; /* scale 1.0 */
                    if (d > mx) mx = d;
                }
                for (int m = 0; m < N; m++) z += (s[m] = exp(s[m] - mx));
                double *o = att + ((int64_t)n * c->heads + h) * hd;
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int m = 0; m < N; m++) acc += s[m] / z * vv[((int64_t)m * c->kvh + kvh) * hd + e];
                    o[e] = acc;
                }
            }
        for (int n = 0; n < N; n++) {
            double *xr = x + (int64_t)n * D;
            matvec64(att + (int64_t)n * c->heads * hd, W("self_attn.o_proj.linear.weight"), D, c->heads * hd, tmp);
            rms64(tmp, D, W("post_attention_layernorm.weight"), c->eps);
            for (int i = 0; i < D; i++) xr[i] += tmp[i];
            memcpy(tmp, xr, sizeof(double) * D);
            rms64(tmp, D, W("pre_feedforward_layernorm.weight"), c->eps);
            matvec64(tmp, W("mlp.gate_proj.linear.weight"), c->I, D, g);
            matvec64(tmp, W("mlp.up_proj.linear.weight"), c->I, D, u);
            for (int i = 0; i < c->I; i++) g[i] = gelu64(g[i]) * u[i];
            matvec64(g, W("mlp.down_proj.linear.weight"), D, c->I, tmp);
            rms64(tmp, D, W("post_feedforward_layernorm.weight"), c->eps);
            for (int i = 0; i < D; i++) xr[i] += tmp[i];
        }
#undef W
    }
    int k = c->k, cw = pw / k, chh = ph / k;
    for (int cy = 0; cy < chh; cy++)
        for (int cx = 0; cx < cw; cx++) {
            double *o = pooled + (int64_t)(cy * cw + cx) * D;
            for (int i = 0; i < D; i++) {
                double acc = 0;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) acc += x[((int64_t)(cy * k + dy) * pw + cx * k + dx) * D + i];
                o[i] = acc / (k * k) * sqrt((double)D);
            }
            if (out) {
                memcpy(tmp, o, sizeof(double) * D);
                rms64(tmp, D, NULL, c->eps);
                matvec64(tmp, wget(w, "embed_vision.embedding_projection.weight"), c->H, D,
                         out + (int64_t)(cy * cw + cx) * c->H);
            }
        }
    free(x), free(a), free(q), free(kk), free(vv), free(att), free(v), free(s), free(g), free(u), free(tmp);
}

static void encoder_weights(const tcfg *c, wfile *w) {
    int D = c->D, hd = c->hd, pd = 3 * c->p * c->p;
    wadd(w, "vision_tower.patch_embedder.input_proj.weight", DT_BF16, 2, D, pd, 0, 1.0f / sqrtf((float)pd), 0);
    wadd(w, "vision_tower.patch_embedder.position_embedding_table", DT_BF16, 3, 2, c->S, D, 0.5f, 0);
    for (int l = 0; l < c->layers; l++) {
        char nm[160];
#define N(s) (snprintf(nm, sizeof nm, "vision_tower.encoder.layers.%d.%s", l, s), nm)
        wadd(w, N("self_attn.q_proj.linear.weight"), DT_BF16, 2, c->heads * hd, D, 0, 1.0f / sqrtf((float)D), 0);
        wadd(w, N("self_attn.k_proj.linear.weight"), DT_BF16, 2, c->kvh * hd, D, 0, 1.0f / sqrtf((float)D), 0);
        wadd(w, N("self_attn.v_proj.linear.weight"), DT_BF16, 2, c->kvh * hd, D, 0, 1.0f / sqrtf((float)D), 0);
        wadd(w, N("self_attn.o_proj.linear.weight"), DT_F16, 2, D, c->heads * hd, 0, 0.6f / sqrtf((float)D), 0);
        wadd(w, N("self_attn.q_norm.weight"), DT_F32, 1, hd, 0, 0, 0.05f, 0.5f);
        wadd(w, N("self_attn.k_norm.weight"), DT_F32, 1, hd, 0, 0, 0.05f, 0.5f);
        wadd(w, N("mlp.gate_proj.linear.weight"), DT_BF16, 2, c->I, D, 0, 1.0f / sqrtf((float)D), 0);
        wadd(w, N("mlp.up_proj.linear.weight"), DT_BF16, 2, c->I, D, 0, 1.0f / sqrtf((float)D), 0);
        wadd(w, N("mlp.down_proj.linear.weight"), DT_BF16, 2, D, c->I, 0, 1.0f / sqrtf((float)c->I), 0);
        wadd(w, N("input_layernorm.weight"), DT_BF16, 1, D, 0, 0, 0.1f, 1.0f);
        wadd(w, N("post_attention_layernorm.weight"), DT_BF16, 1, D, 0, 0, 0.04f, 0.4f);
        wadd(w, N("pre_feedforward_layernorm.weight"), DT_BF16, 1, D, 0, 0, 0.1f, 1.0f);
        wadd(w, N("post_feedforward_layernorm.weight"), DT_BF16, 1, D, 0, 0, 0.04f, 0.4f);
#undef N
    }
    wadd(w, "embed_vision.embedding_projection.weight", DT_BF16, 2, c->H, D, 0, 1.0f / sqrtf((float)D), 0);
}

static cJSON *encoder_config(const tcfg *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "hidden_size", c->D);
    cJSON_AddNumberToObject(j, "intermediate_size", c->I);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->kvh);
    cJSON_AddNumberToObject(j, "head_dim", c->hd);
    cJSON_AddNumberToObject(j, "patch_size", c->p);
    cJSON_AddNumberToObject(j, "pooling_kernel_size", c->k);
    cJSON_AddNumberToObject(j, "position_embedding_size", c->S);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->eps);
    cJSON *rp = cJSON_AddObjectToObject(j, "rope_parameters");
    cJSON_AddNumberToObject(rp, "rope_theta", c->theta);
    cJSON_AddStringToObject(rp, "rope_type", "default");
    return j;
}

static float *random_pixels(int th, int tw) {
    float *px = malloc(sizeof(float) * 3 * (size_t)th * tw);
    for (int64_t i = 0; i < 3 * (int64_t)th * tw; i++) px[i] = (float)(int)(urand() * 256) * (1.0f / 255.0f);
    return px;
}

/* ---- spec cases: processor ---------------------------------------------- */

static void test_target_sizes(void) {
    static const int sizes[][2] = {{768, 1024}, {480, 640}, {3000, 4000}, {1125, 1500},
                                   {896, 896},  {224, 224}, {1080, 1920}, {100, 4000}};
    static const int want[][3][3] = {
        /* th, tw, tokens at 280 / 70 / 1120 (spec §6.2 table) */
        {{672, 912, 266}, {336, 432, 63}, {1344, 1824, 1064}}, {{672, 912, 266}, {336, 432, 63}, {1344, 1824, 1064}},
        {{672, 912, 266}, {336, 432, 63}, {1344, 1824, 1064}}, {{672, 912, 266}, {336, 432, 63}, {1344, 1824, 1064}},
        {{768, 768, 256}, {384, 384, 64}, {1584, 1584, 1089}}, {{768, 768, 256}, {384, 384, 64}, {1584, 1584, 1089}},
        {{576, 1056, 264}, {288, 528, 66}, {1200, 2112, 1100}}, {{96, 5040, 210}, {48, 2496, 52}, {240, 10128, 1055}},
    };
    static const int budgets[3] = {280, 70, 1120};
    for (TEST_CASE("target size table (spec 6.2)")) {
        g4v_params p = g4v_params_default(0);
        optiq_error err = {0};
        for (int i = 0; i < 8; i++)
            for (int b = 0; b < 3; b++) {
                int th = -1, tw = -1;
                optiq_status st = g4v_target_size(&p, sizes[i][0], sizes[i][1], budgets[b], &th, &tw, &err);
                CHECKF(!st && th == want[i][b][0] && tw == want[i][b][1] &&
                           g4v_soft_tokens(&p, th, tw) == want[i][b][2],
                       "%dx%d at %d: got %dx%d (%lld tokens), want %dx%d (%d) %s", sizes[i][0], sizes[i][1],
                       budgets[b], th, tw, (long long)g4v_soft_tokens(&p, th, tw), want[i][b][0], want[i][b][1],
                       want[i][b][2], st ? err.message : "");
            }
        /* 0 takes the parameters' budget (280) */
        int th, tw;
        CHECK(!g4v_target_size(&p, 768, 1024, 0, &th, &tw, &err) && th == 672 && tw == 912);
        /* a zero side: th = 48, tw = min(floor(w/h)·48, n·48) */
        CHECK(!g4v_target_size(&p, 1, 100000, 70, &th, &tw, &err) && th == 48 && tw == 70 * 48);
        /* values from mlx-vlm's get_aspect_ratio_preserving_size */
        CHECK(!g4v_target_size(&p, 20, 900, 70, &th, &tw, &err) && th == 48 && tw == 2688);
        CHECK(!g4v_target_size(&p, 900, 20, 1120, &th, &tw, &err) && th == 10752 && tw == 192);
        CHECK(!g4v_target_size(&p, 7, 100, 5, &th, &tw, &err) && th == 48 && tw == 240);
        CHECK(!g4v_target_size(&p, 100, 7, 5, &th, &tw, &err) && th == 240 && tw == 48);
        CHECK(!g4v_target_size(&p, 10, 25, 2, &th, &tw, &err) && th == 48 && tw == 96);
        /* an image already at its target is kept */
        CHECK(!g4v_target_size(&p, 336, 432, 70, &th, &tw, &err) && th == 336 && tw == 432);
        CHECK(!g4v_target_size(&p, 1, 1, 70, &th, &tw, &err) && th == 384 && tw == 384);
    }
    for (TEST_CASE("target size errors")) {
        g4v_params p = g4v_params_default(0);
        optiq_error err = {0};
        int th = 7, tw = 7;
        CHECK(g4v_target_size(&p, 0, 10, 280, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(g4v_target_size(&p, 10, -1, 280, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(g4v_target_size(&p, 10, 10, -5, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(g4v_target_size(&p, 10, 10, G4V_MAX_SOFT_TOKENS + 1, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        p.max_soft_tokens = 0; /* the reference: "Attempting to resize to a 0 x 0 image." */
        CHECK(g4v_target_size(&p, 10, 10, 0, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(err.message, "0 x 0") != NULL, "message: %s", err.message);
        CHECK(th == 7 && tw == 7);
        p = g4v_params_default(0);
        p.do_resize = 0;
        CHECK(g4v_target_size(&p, 100, 96, 280, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(!g4v_target_size(&p, 96, 144, 280, &th, &tw, &err) && th == 96 && tw == 144);
        p.patch = 0;
        CHECK(g4v_target_size(&p, 96, 144, 280, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(g4v_target_size(NULL, 96, 144, 280, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG);
    }
}

static int params_of(const char *pre, const char *proc, int unified, g4v_params *p, optiq_error *err) {
    return g4v_params_from_json(pre, pre ? strlen(pre) : 0, proc, proc ? strlen(proc) : 0, unified, p, err);
}

static void test_params(void) {
    for (TEST_CASE("processor config selection (errata A1, B2)")) {
        g4v_params p;
        optiq_error err = {0};
        /* no files: class defaults */
        CHECK(!params_of(NULL, NULL, 0, &p, &err) && p.max_soft_tokens == 280 && p.patch == 16 && p.pool == 3 &&
              !p.do_normalize && p.do_rescale && p.do_resize && p.mean[0] == 0.5f);
        /* nested image_processor: every key */
        CHECK(!params_of(NULL, "{\"image_processor\": {\"image_processor_type\": \"Gemma4ImageProcessor\", "
                               "\"max_soft_tokens\": 70, \"do_normalize\": true, \"image_mean\": [0.25], "
                               "\"image_std\": [1, 2, 4]}}", 0, &p, &err) &&
              p.max_soft_tokens == 70 && p.do_normalize && p.mean[2] == 0.25f && p.std[2] == 4.0f);
        /* processor_config.json wins over preprocessor_config.json, even without image_processor */
        CHECK(!params_of("{\"max_soft_tokens\": 140}", "{\"processor_class\": \"Gemma4Processor\"}", 0, &p, &err) &&
              p.max_soft_tokens == 280);
        /* flat file without image_processor_type: read */
        CHECK(!params_of("{\"max_soft_tokens\": 140, \"patch_size\": 14}", NULL, 0, &p, &err) &&
              p.max_soft_tokens == 140 && p.patch == 14);
        /* flat file with image_processor_type: ignored (A1) */
        CHECK(!params_of("{\"image_processor_type\": \"Gemma4ImageProcessor\", \"max_soft_tokens\": 140}", NULL, 0,
                         &p, &err) && p.max_soft_tokens == 280);
        /* flat file with none of patch_size / max_soft_tokens / pooling_kernel_size: ignored */
        CHECK(!params_of("{\"do_normalize\": true}", NULL, 0, &p, &err) && !p.do_normalize);
        /* unified: flat keys ignored (B2), num_soft_tokens alias, max_soft_tokens wins */
        CHECK(!params_of("{\"max_soft_tokens\": 140}", NULL, 1, &p, &err) && p.max_soft_tokens == 280);
        CHECK(!params_of(NULL, "{\"image_processor\": {\"num_soft_tokens\": 560}}", 1, &p, &err) &&
              p.max_soft_tokens == 560 && p.unified);
        CHECK(!params_of(NULL, "{\"image_processor\": {\"num_soft_tokens\": 560, \"max_soft_tokens\": 70}}", 1, &p,
                         &err) && p.max_soft_tokens == 70);
        /* the encoder-based processor has no alias */
        CHECK(!params_of(NULL, "{\"image_processor\": {\"num_soft_tokens\": 560}}", 0, &p, &err) &&
              p.max_soft_tokens == 280);
    }
    for (TEST_CASE("processor config errors")) {
        g4v_params p = g4v_params_default(0), keep = p;
        optiq_error err = {0};
        CHECK(params_of(NULL, "[1]", 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(params_of(NULL, "{\"image_processor\": {\"max_soft_tokens\": \"70\"}}", 0, &p, &err) ==
              OPTIQ_ERR_FORMAT);
        CHECKF(strstr(err.message, "processor_config.json: image_processor.max_soft_tokens") != NULL, "%s",
               err.message);
        CHECK(params_of("{\"patch_size\": 0}", NULL, 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(params_of("{\"patch_size\": 16, \"image_std\": [0.5, 0, 1]}", NULL, 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(params_of("{\"patch_size\": 16, \"max_soft_tokens\": null}", NULL, 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(params_of("{\"patch_size\": 16, \"rescale_factor\": \"x\"}", NULL, 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(params_of("{\"patch_size\": ", NULL, 0, &p, &err) == OPTIQ_ERR_FORMAT);
        CHECK(!memcmp(&p, &keep, sizeof p));
    }
    for (TEST_CASE("pixels: resize, x*(1/255), channels first")) {
        g4v_params p = g4v_params_default(0);
        optiq_error err = {0};
        int h = 50, w = 70;
        uint8_t *rgb = malloc((size_t)h * w * 3);
        for (int i = 0; i < h * w * 3; i++) rgb[i] = (uint8_t)(urand() * 256);
        float *px = NULL;
        int th, tw;
        CHECK(!g4v_pixels(&p, rgb, h, w, 70, &px, &th, &tw, &err));
        int eh, ew;
        CHECK(!g4v_target_size(&p, h, w, 70, &eh, &ew, &err) && th == eh && tw == ew);
        uint8_t *rs = malloc((size_t)th * tw * 3);
        CHECK(!resample_bicubic_u8(rgb, w, h, 3, rs, tw, th, &err));
        int bad = 0;
        for (int c = 0; c < 3 && px; c++)
            for (int i = 0; i < th * tw; i++)
                bad += px[(size_t)c * th * tw + i] != (float)rs[(size_t)i * 3 + c] * (float)(1 / 255.0);
        CHECKF(!bad, "%d values differ", bad);
        free(px);
        free(rs);
        /* normalisation when configured, no resize at the exact size */
        p.do_normalize = 1;
        p.mean[1] = 0.25f, p.std[1] = 2.0f;
        uint8_t sq[48 * 48 * 3];
        for (int i = 0; i < 48 * 48 * 3; i++) sq[i] = (uint8_t)(i * 7);
        p.do_resize = 0;
        CHECK(!g4v_pixels(&p, sq, 48, 48, 0, &px, &th, &tw, &err) && th == 48 && tw == 48);
        if (px) CHECK(px[48 * 48 + 5] == ((float)sq[5 * 3 + 1] * (float)(1 / 255.0) - 0.25f) / 2.0f);
        free(px);
        CHECK(g4v_pixels(&p, NULL, 48, 48, 0, &px, &th, &tw, &err) == OPTIQ_ERR_INVALID_ARG && !px);
        free(rgb);
    }
}

/* ---- spec cases: towers ------------------------------------------------- */

static g4v_tower *load_tower(wfile *w, cJSON *cfg, int64_t H, int unified, optiq_error *err, st_file **f) {
    g4v_tower *t = NULL;
    *f = NULL;
    if (!wsave(w, tmp_path, NULL, NULL, DT_F32)) return NULL;
    if (st_open(tmp_path, f, err)) return NULL;
    if (g4v_load(*f, cfg, "vision_config", H, unified, &t, err)) return NULL;
    return t;
}

/* Identity input_proj (D = 3p²), zero layers: pooled / √D shows the patch rows. */
static void test_patch_order(void) {
    for (TEST_CASE("patch order (row, col, channel), 2*(x-0.5), position rows")) {
        tcfg c = {.D = 12, .I = 4, .layers = 0, .heads = 1, .kvh = 1, .hd = 4, .p = 2, .k = 1, .S = 8, .H = 5,
                  .eps = 1e-6, .theta = 100};
        wfile w = {0};
        encoder_weights(&c, &w);
        float *ip = wget(&w, "vision_tower.patch_embedder.input_proj.weight");
        for (int i = 0; i < 12 * 12; i++) ip[i] = (i / 12 == i % 12) ? 1.0f : 0.0f;
        float *T = wget(&w, "vision_tower.patch_embedder.position_embedding_table");
        /* T[0][x] = 100·x in feature 0, T[1][y] = 1000·y in feature 1, else 0 */
        for (int i = 0; i < 2 * 8 * 12; i++) T[i] = 0;
        for (int x = 0; x < 8; x++) T[x * 12 + 0] = 100.0f * x;
        for (int y = 0; y < 8; y++) T[(8 + y) * 12 + 1] = 1000.0f * y;
        cJSON *cfg = encoder_config(&c);
        optiq_error err = {0};
        st_file *f;
        g4v_tower *t = load_tower(&w, cfg, c.H, 0, &err, &f);
        CHECKF(t != NULL, "load: %s", err.message);
        int th = 4, tw = 6, pw = 3; /* 2 x 3 patches */
        float *px = random_pixels(th, tw);
        float pooled[6 * 12], out[6 * 5];
        if (t) CHECKF(!g4v_encode_ex(t, NULL, px, th, tw, pooled, out, &err), "encode: %s", err.message);
        int bad = 0;
        float root = (float)sqrt(12.0);
        for (int n = 0; t && n < 6; n++) {
            int r = n / pw, cc = n % pw;
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 2; x++)
                    for (int ch = 0; ch < 3; ch++) {
                        int i = (y * 2 + x) * 3 + ch;
                        float v = 2.0f * (px[ch * th * tw + (r * 2 + y) * tw + cc * 2 + x] - 0.5f);
                        if (i == 0) v = v + (100.0f * cc + 0.0f);
                        if (i == 1) v = v + (0.0f + 1000.0f * r);
                        bad += pooled[n * 12 + i] != v * root;
                    }
        }
        CHECKF(!bad, "%d of 72 values differ", bad);
        g4v_free(t);
        st_close(f);
        cJSON_Delete(cfg);
        free(px);
        wfree(&w);
    }
}

static void test_pooling(void) {
    for (TEST_CASE("k x k average pooling by position, x sqrt(D)")) {
        tcfg c = {.D = 12, .I = 4, .layers = 0, .heads = 1, .kvh = 1, .hd = 4, .p = 2, .k = 3, .S = 16, .H = 5,
                  .eps = 1e-6, .theta = 100};
        wfile w = {0};
        encoder_weights(&c, &w);
        cJSON *cfg = encoder_config(&c);
        optiq_error err = {0};
        st_file *f;
        g4v_tower *t = load_tower(&w, cfg, c.H, 0, &err, &f);
        CHECKF(t != NULL, "load: %s", err.message);
        int th = 12, tw = 18; /* 6 x 9 patches → 2 x 3 cells */
        float *px = random_pixels(th, tw);
        float pooled[6 * 12], out[6 * 5];
        double rp[6 * 12], ro[6 * 5];
        if (t) CHECKF(!g4v_encode_ex(t, NULL, px, th, tw, pooled, out, &err), "encode: %s", err.message);
        encoder64(&c, &w, px, th, tw, rp, ro);
        double e1 = rel_err(pooled, rp, 72), e2 = rel_err(out, ro, 30);
        printf("    pooled rel err %.2e, projected %.2e (budget %.0e)\n", e1, e2, F64_TOL);
        CHECK(e1 < F64_TOL && e2 < F64_TOL);
        /* wrong sizes are refused */
        CHECK(t && g4v_encode(t, NULL, px, 12, 16, out, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(t && g4v_encode(t, NULL, px, 0, 18, out, &err) == OPTIQ_ERR_INVALID_ARG);
        g4v_free(t);
        st_close(f);
        cJSON_Delete(cfg);
        free(px);
        wfree(&w);
    }
}

static void test_encoder_f64(void) {
    for (TEST_CASE("encoder tower vs f64 (GQA, 2-D RoPE, GeGLU, pooling, projector)")) {
        tcfg c = {.D = 16, .I = 24, .layers = 2, .heads = 4, .kvh = 2, .hd = 8, .p = 2, .k = 2, .S = 12, .H = 10,
                  .eps = 1e-5, .theta = 100};
        wfile w = {0};
        encoder_weights(&c, &w);
        cJSON *cfg = encoder_config(&c);
        optiq_error err = {0};
        st_file *f;
        g4v_tower *t = load_tower(&w, cfg, c.H, 0, &err, &f);
        CHECKF(t != NULL, "load: %s", err.message);
        int th = 12, tw = 16, n = (th / 4) * (tw / 4); /* 6 x 8 patches, 12 soft tokens */
        float *px = random_pixels(th, tw);
        float *pooled = malloc(sizeof(float) * n * 16), *out = malloc(sizeof(float) * n * 10);
        double *rp = malloc(sizeof(double) * n * 16), *ro = malloc(sizeof(double) * n * 10);
        thread_pool *pool = pool_create(3);
        if (t) CHECKF(!g4v_encode_ex(t, pool, px, th, tw, pooled, out, &err), "encode: %s", err.message);
        encoder64(&c, &w, px, th, tw, rp, ro);
        double e1 = rel_err(pooled, rp, (size_t)n * 16), e2 = rel_err(out, ro, (size_t)n * 10);
        /* the same with the RoPE axes swapped must be far off, or the test could not see them */
        c.swap_rope_axes = 1;
        encoder64(&c, &w, px, th, tw, rp, ro);
        double e3 = rel_err(out, ro, (size_t)n * 10);
        printf("    pooled rel err %.2e, projected %.2e (budget %.0e); with swapped RoPE axes %.2e\n", e1, e2,
               F64_TOL, e3);
        CHECK(e1 < F64_TOL && e2 < F64_TOL && e3 > 1e-3);
        /* g4v_encode = the projected rows, thread count does not matter */
        float *out1 = malloc(sizeof(float) * n * 10);
        if (t) CHECK(!g4v_encode(t, NULL, px, th, tw, out1, &err) && !memcmp(out1, out, sizeof(float) * n * 10));
        const g4v_dims *d = t ? g4v_tower_dims(t) : NULL;
        CHECK(d && d->feat == 16 && d->text_hidden == 10 && d->layers == 2 && d->kv_heads == 2 && !d->unified);
        pool_free(pool);
        g4v_free(t);
        st_close(f);
        cJSON_Delete(cfg);
        free(px), free(pooled), free(out), free(rp), free(ro), free(out1);
        wfree(&w);
    }
}

static void ln64(double *x, int d, const float *w, const float *b) {
    double m = 0, v = 0;
    for (int i = 0; i < d; i++) m += x[i];
    m /= d;
    for (int i = 0; i < d; i++) v += (x[i] - m) * (x[i] - m);
    v /= d;
    for (int i = 0; i < d; i++) x[i] = (x[i] - m) / sqrt(v + 1e-5) * w[i] + b[i];
}

static void test_unified_f64(void) {
    for (TEST_CASE("unified embedder vs f64 (LayerNorm/Linear/LayerNorm, x/y rows, pos_norm, projector)")) {
        int P = 4, E = 8, M = 6, H = 7, pd = 3 * P * P;
        wfile w = {0};
        wadd(&w, "vision_embedder.patch_ln1.weight", DT_BF16, 1, pd, 0, 0, 0.1f, 1.0f);
        wadd(&w, "vision_embedder.patch_ln1.bias", DT_BF16, 1, pd, 0, 0, 0.1f, 0);
        wadd(&w, "vision_embedder.patch_dense.weight", DT_BF16, 2, E, pd, 0, 1.0f / sqrtf((float)pd), 0);
        wadd(&w, "vision_embedder.patch_dense.bias", DT_BF16, 1, E, 0, 0, 0.1f, 0);
        wadd(&w, "vision_embedder.patch_ln2.weight", DT_BF16, 1, E, 0, 0, 0.1f, 1.0f);
        wadd(&w, "vision_embedder.patch_ln2.bias", DT_BF16, 1, E, 0, 0, 0.1f, 0);
        wadd(&w, "vision_embedder.pos_embedding", DT_BF16, 3, M, 2, E, 0.5f, 0);
        wadd(&w, "vision_embedder.pos_norm.weight", DT_BF16, 1, E, 0, 0, 0.1f, 1.0f);
        wadd(&w, "vision_embedder.pos_norm.bias", DT_BF16, 1, E, 0, 0, 0.1f, 0);
        wadd(&w, "embed_vision.embedding_projection.weight", DT_BF16, 2, H, E, 0, 1.0f / sqrtf((float)E), 0);
        cJSON *cfg = cJSON_Parse("{\"patch_size\": 2, \"pooling_kernel_size\": 2, \"model_patch_size\": 4, "
                                 "\"mm_embed_dim\": 8, \"mm_posemb_size\": 6, \"output_proj_dims\": 8, "
                                 "\"rms_norm_eps\": 1e-6}");
        optiq_error err = {0};
        st_file *f;
        g4v_tower *t = load_tower(&w, cfg, H, 1, &err, &f);
        CHECKF(t != NULL, "load: %s", err.message);
        int th = 12, tw = 20, gh = 3, gw = 5, n = gh * gw;
        float *px = random_pixels(th, tw);
        float *emb = malloc(sizeof(float) * n * E), *out = malloc(sizeof(float) * n * H);
        double *re = malloc(sizeof(double) * n * E), *ro = malloc(sizeof(double) * n * H);
        double v[48], z[8];
        if (t) CHECKF(!g4v_encode_ex(t, NULL, px, th, tw, emb, out, &err), "encode: %s", err.message);
        const float *pos = wget(&w, "vision_embedder.pos_embedding");
        for (int r = 0; r < gh; r++)
            for (int c = 0; c < gw; c++) {
                for (int y = 0; y < P; y++)
                    for (int x = 0; x < P; x++)
                        for (int ch = 0; ch < 3; ch++)
                            v[(y * P + x) * 3 + ch] = px[ch * th * tw + (r * P + y) * tw + c * P + x];
                ln64(v, pd, wget(&w, "vision_embedder.patch_ln1.weight"), wget(&w, "vision_embedder.patch_ln1.bias"));
                matvec64(v, wget(&w, "vision_embedder.patch_dense.weight"), E, pd, z);
                for (int i = 0; i < E; i++) z[i] += wget(&w, "vision_embedder.patch_dense.bias")[i];
                ln64(z, E, wget(&w, "vision_embedder.patch_ln2.weight"), wget(&w, "vision_embedder.patch_ln2.bias"));
                for (int i = 0; i < E; i++) z[i] += (double)pos[(c * 2 + 0) * E + i] + pos[(r * 2 + 1) * E + i];
                ln64(z, E, wget(&w, "vision_embedder.pos_norm.weight"), wget(&w, "vision_embedder.pos_norm.bias"));
                memcpy(re + (r * gw + c) * E, z, sizeof z);
                rms64(z, E, NULL, 1e-6);
                matvec64(z, wget(&w, "embed_vision.embedding_projection.weight"), H, E, ro + (r * gw + c) * H);
            }
        double e1 = rel_err(emb, re, (size_t)n * E), e2 = rel_err(out, ro, (size_t)n * H);
        printf("    embedder rel err %.2e, projected %.2e (budget %.0e)\n", e1, e2, F64_TOL);
        CHECK(e1 < F64_TOL && e2 < F64_TOL);
        /* positions beyond the table (gw = 7 > 6 rows) are refused */
        float *big = random_pixels(4, 28);
        CHECK(t && g4v_encode(t, NULL, big, 4, 28, out, &err) == OPTIQ_ERR_INVALID_ARG);
        g4v_free(t);
        st_close(f);
        cJSON_Delete(cfg);
        free(px), free(emb), free(out), free(re), free(ro), free(big);
        wfree(&w);
    }
}

static void test_bad_weights(void) {
    for (TEST_CASE("bad weight files (missing, wrong shape, dtype, config)")) {
        tcfg c = {.D = 12, .I = 8, .layers = 1, .heads = 2, .kvh = 1, .hd = 4, .p = 2, .k = 1, .S = 8, .H = 5,
                  .eps = 1e-6, .theta = 100};
        wfile w = {0};
        encoder_weights(&c, &w);
        cJSON *cfg = encoder_config(&c);
        optiq_error err = {0};
        st_file *f = NULL;
        g4v_tower *t = NULL;
        static const char *miss = "vision_tower.encoder.layers.0.self_attn.k_norm.weight";
        CHECK(wsave(&w, tmp_path, miss, NULL, DT_F32) && !st_open(tmp_path, &f, &err));
        CHECK(f && g4v_load(f, cfg, "config.json: vision_config", c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, miss) && strstr(err.message, "missing"), "%s", err.message);
        st_close(f);
        static const char *bad = "vision_tower.encoder.layers.0.mlp.down_proj.linear.weight";
        CHECK(wsave(&w, tmp_path, NULL, bad, DT_F32) && !st_open(tmp_path, &f, &err));
        CHECK(f && g4v_load(f, cfg, NULL, c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, bad) && strstr(err.message, "[96, 1]") && strstr(err.message, "[12, 8]"), "%s",
               err.message);
        st_close(f);
        CHECK(wsave(&w, tmp_path, NULL, "embed_vision.embedding_projection.weight", DT_I32) &&
              !st_open(tmp_path, &f, &err));
        CHECK(f && g4v_load(f, cfg, NULL, c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "embed_vision.embedding_projection.weight") && strstr(err.message, "dtype"), "%s",
               err.message);
        st_close(f);
        /* a text hidden size that disagrees with the projector */
        CHECK(wsave(&w, tmp_path, NULL, NULL, DT_F32) && !st_open(tmp_path, &f, &err));
        CHECK(f && g4v_load(f, cfg, NULL, c.H + 1, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        /* clipped linears need their bounds; standardize needs std_bias / std_scale */
        cJSON_AddBoolToObject(cfg, "use_clipped_linears", 1);
        CHECK(f && g4v_load(f, cfg, NULL, c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "q_proj.input_min"), "%s", err.message);
        cJSON_DeleteItemFromObject(cfg, "use_clipped_linears");
        cJSON_AddBoolToObject(cfg, "standardize", 1);
        CHECK(f && g4v_load(f, cfg, NULL, c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "vision_tower.std_bias"), "%s", err.message);
        cJSON_DeleteItemFromObject(cfg, "standardize");
        /* head_dim not a multiple of 4; heads not a multiple of kv heads */
        cJSON_ReplaceItemInObject(cfg, "head_dim", cJSON_CreateNumber(6));
        CHECK(f && g4v_load(f, cfg, "vision_config", c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "vision_config: head_dim"), "%s", err.message);
        cJSON_ReplaceItemInObject(cfg, "head_dim", cJSON_CreateNumber(4));
        cJSON_ReplaceItemInObject(cfg, "num_key_value_heads", cJSON_CreateNumber(3));
        CHECK(f && g4v_load(f, cfg, "vision_config", c.H, 0, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        cJSON_ReplaceItemInObject(cfg, "num_key_value_heads", cJSON_CreateNumber(1));
        /* the right file loads, HF-style "model." names too */
        CHECK(f && !g4v_load(f, cfg, NULL, c.H, 0, &t, &err) && t);
        g4v_free(t);
        t = NULL;
        st_close(f);
        f = NULL;
        for (int i = 0; i < w.n; i++) {
            char tmp[128];
            snprintf(tmp, sizeof tmp, "model.%s", w.name[i]);
            snprintf(w.name[i], sizeof w.name[i], "%s", tmp);
        }
        CHECK(wsave(&w, tmp_path, NULL, NULL, DT_F32) && !st_open(tmp_path, &f, &err));
        CHECKF(f && !g4v_load(f, cfg, NULL, c.H, 0, &t, &err) && t, "%s", err.message);
        g4v_free(t);
        st_close(f);
        /* the unified embedder: a missing tensor names it */
        wfile u = {0};
        wadd(&u, "vision_embedder.patch_ln1.weight", DT_BF16, 1, 48, 0, 0, 0.1f, 1.0f);
        cJSON *ucfg = cJSON_Parse("{\"patch_size\": 2, \"pooling_kernel_size\": 2, \"model_patch_size\": 4, "
                                  "\"mm_embed_dim\": 8, \"mm_posemb_size\": 6, \"output_proj_dims\": 8}");
        CHECK(wsave(&u, tmp_path, NULL, NULL, DT_F32) && !st_open(tmp_path, &f, &err));
        CHECK(f && g4v_load(f, ucfg, NULL, 7, 1, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "vision_embedder.patch_ln1.bias"), "%s", err.message);
        cJSON_ReplaceItemInObject(ucfg, "model_patch_size", cJSON_CreateNumber(6));
        CHECK(f && g4v_load(f, ucfg, NULL, 7, 1, &t, &err) == OPTIQ_ERR_FORMAT && !t);
        CHECKF(strstr(err.message, "model_patch_size"), "%s", err.message);
        st_close(f);
        cJSON_Delete(ucfg);
        cJSON_Delete(cfg);
        wfree(&u);
        wfree(&w);
    }
}

/* ---- parity with the reference fixtures --------------------------------- */

static void test_preprocess_parity(void) {
    char *text = NULL;
    size_t len;
    optiq_error err = {0};
    const char *cases_path = test_path("tests/fixtures/preprocess/gemma4/cases.json");
    if (access(cases_path, F_OK)) {
        printf("skip preprocess parity: tests/fixtures/preprocess/gemma4/cases.json not present\n");
        return;
    }
    json_read_file(cases_path, JSON_DEFAULT_CAP, &text, &len, &err);
    for (TEST_CASE("parity: pixel values SHA-256 of every preprocess case")) {
        CHECKF(text != NULL, "%s", err.message);
        cJSON *doc = text ? cJSON_ParseWithLength(text, len) : NULL;
        const cJSON *cases = cJSON_GetObjectItem(doc, "cases"), *cs;
        CHECK(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0);
        int n = 0, same = 0, patch_checks = 0;
        g4v_params p = g4v_params_default(0);
        cJSON_ArrayForEach(cs, cases) {
            const char *in = cJSON_GetStringValue(cJSON_GetObjectItem(cs, "input"));
            int nmax = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cs, "max_soft_tokens"));
            char rel[512];
            snprintf(rel, sizeof rel, "tests/fixtures/%s", in ? in : "?");
            image_u8 img = {0};
            if (image_load(test_path(rel), NULL, &img, &err)) {
                CHECKF(0, "%s: %s", rel, err.message);
                continue;
            }
            float *px = NULL;
            int th = 0, tw = 0;
            optiq_status st = g4v_pixels(&p, img.rgb, img.h, img.w, nmax, &px, &th, &tw, &err);
            n++;
            if (cJSON_GetObjectItem(cs, "error")) {
                CHECKF(st != OPTIQ_OK, "%s at %d: the reference failed, this did not", in, nmax);
                same += st != OPTIQ_OK;
            } else if (st) {
                CHECKF(0, "%s at %d: %s", in, nmax, err.message);
            } else {
                char hex[65];
                sha256_hex(px, sizeof(float) * 3 * (size_t)th * tw, hex);
                int ok = th == (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cs, "th")) &&
                         tw == (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cs, "tw")) &&
                         g4v_soft_tokens(&p, th, tw) ==
                             (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(cs, "num_soft_tokens")) &&
                         !strcmp(hex, cJSON_GetStringValue(cJSON_GetObjectItem(cs, "pixel_values_sha256")));
                const cJSON *smp = cJSON_GetObjectItem(cs, "samples"), *e;
                double maxd = 0;
                cJSON_ArrayForEach(e, smp) {
                    double d = fabs(px[atol(e->string)] - e->valuedouble);
                    if (d > maxd) maxd = d;
                }
                CHECKF(ok && maxd == 0, "%s at %d: %dx%d, sha %s, samples max abs diff %g", in, nmax, th, tw, hex,
                       maxd);
                same += ok && maxd == 0;
                /* patch rows as the tower cuts them ((row, col, channel) order), before and after 2(v-0.5) */
                const cJSON *pc = cJSON_GetObjectItem(cs, "patch_check");
                if (pc) {
                    int ph = th / 16, pw = tw / 16;
                    size_t np = (size_t)ph * pw, pd = 768;
                    float *rows = malloc(sizeof(float) * np * pd), *sc = malloc(sizeof(float) * np * pd);
                    for (size_t r = 0; r < np; r++)
                        for (int y = 0; y < 16; y++)
                            for (int x = 0; x < 16; x++)
                                for (int ch = 0; ch < 3; ch++) {
                                    size_t i = r * pd + (size_t)(y * 16 + x) * 3 + ch;
                                    rows[i] = px[(size_t)ch * th * tw + (r / pw * 16 + y) * (size_t)tw + r % pw * 16 + x];
                                    sc[i] = 2.0f * (rows[i] - 0.5f);
                                }
                    char h1[65], h2[65];
                    sha256_hex(rows, sizeof(float) * np * pd, h1);
                    sha256_hex(sc, sizeof(float) * np * pd, h2);
                    CHECKF(!strcmp(h1, cJSON_GetStringValue(cJSON_GetObjectItem(pc, "rows_sha256"))) &&
                               !strcmp(h2, cJSON_GetStringValue(cJSON_GetObjectItem(pc, "rows_scaled_sha256"))),
                           "%s: patch rows differ", in);
                    patch_checks++;
                    free(rows);
                    free(sc);
                }
            }
            free(px);
            image_free(&img);
        }
        printf("    %d/%d cases identical (SHA-256 of [3, th, tw] f32, max abs diff 0), %d patch-row checks\n",
               same, n, patch_checks);
        cJSON_Delete(doc);
    }
    free(text);
}

/* Read a tensor of the reference file as f32. */
static float *ref_tensor(st_file *f, const char *name, int64_t *rows, int64_t *cols) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->ndim != 2) return NULL;
    float *v = malloc(sizeof(float) * t->nelem);
    for (uint64_t i = 0; i < t->nelem; i++) v[i] = load_as_f32(t->data, t->dtype, i);
    *rows = t->shape[0];
    *cols = t->shape[1];
    return v;
}

static double rel_err32(const float *a, const float *b, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > r) r = fabs(b[i]);
    }
    return r > 0 ? m / r : m;
}

static void test_tower_parity(const char *folder, int unified) {
    char rel[256], name[96];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s/reference_vl.json", folder);
    char *text = NULL;
    size_t len;
    optiq_error err = {0};
    if (access(test_path(rel), F_OK)) {
        printf("skip tower parity %s: %s not present\n", folder, rel);
        return;
    }
    json_read_file(test_path(rel), JSON_DEFAULT_CAP, &text, &len, &err);
    char title[160];
    snprintf(title, sizeof title, "parity: %s tower and projector vs the reference f32 run", folder);
    for (TEST_CASE(title)) {
        CHECKF(text != NULL, "%s", err.message);
        cJSON *ref = text ? cJSON_ParseWithLength(text, len) : NULL, *cfg = NULL;
        char *proc = NULL;
        size_t plen = 0;
        st_file *side = NULL, *rf = NULL;
        g4v_tower *t = NULL;
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/config.json", folder);
        CHECKF(!json_load_file(test_path(rel), "config.json", 0, &cfg, &err), "%s", err.message);
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/processor_config.json", folder);
        if (access(test_path(rel), F_OK)) proc = NULL; /* absent: class defaults */
        else CHECKF(!json_read_file(test_path(rel), JSON_DEFAULT_CAP, &proc, &plen, &err), "%s", err.message);
        g4v_params p;
        CHECKF(!g4v_params_from_json(NULL, 0, proc, plen, unified, &p, &err), "%s", err.message);
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/optiq_vision.safetensors", folder);
        CHECKF(!st_open(test_path(rel), &side, &err), "%s", err.message);
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/reference_vl.safetensors", folder);
        CHECKF(!st_open(test_path(rel), &rf, &err), "%s", err.message);
        int64_t H = 0;
        if (cfg) json_get_int(cfg, "config.json", "text_config.hidden_size", &H, &err);
        if (cfg && side)
            CHECKF(!g4v_load(side, cJSON_GetObjectItem(cfg, "vision_config"), "config.json: vision_config", H, unified,
                             &t, &err),
                   "load: %s", err.message);
        thread_pool *pool = pool_create(2);
        const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts"), *pr;
        int pi = 0;
        cJSON_ArrayForEach(pr, prompts) {
            if (!t || !rf) break;
            int64_t vr, vc, sr, sc;
            snprintf(name, sizeof name, unified ? "p%d.f32.embedder" : "p%d.f32.pooled", pi);
            float *rv = ref_tensor(rf, name, &vr, &vc);
            if (!rv && unified) { /* the embedder runs in f32 in both runs: stored once */
                snprintf(name, sizeof name, "p%d.embedder", pi);
                rv = ref_tensor(rf, name, &vr, &vc);
            }
            snprintf(name, sizeof name, "p%d.f32.soft_tokens", pi);
            float *rs = ref_tensor(rf, name, &sr, &sc);
            CHECKF(rv && rs && vr == sr && sc == H && vc == g4v_tower_dims(t)->feat, "p%d: reference tensors", pi);
            float *ov = rv ? calloc((size_t)(vr * vc), sizeof(float)) : NULL;
            float *os = rs ? calloc((size_t)(sr * sc), sizeof(float)) : NULL;
            int64_t row = 0;
            const cJSON *im;
            int ii = 0;
            cJSON_ArrayForEach(im, cJSON_GetObjectItem(pr, "images")) {
                snprintf(rel, sizeof rel, "tests/fixtures/%s", cJSON_GetStringValue(im));
                image_u8 img = {0};
                float *px = NULL;
                int th, tw;
                if (image_load(test_path(rel), NULL, &img, &err) ||
                    g4v_pixels(&p, img.rgb, img.h, img.w, 0, &px, &th, &tw, &err)) {
                    CHECKF(0, "%s: %s", rel, err.message);
                    image_free(&img);
                    break;
                }
                int64_t n = g4v_soft_tokens(&p, th, tw);
                const cJSON *ns = cJSON_GetArrayItem(cJSON_GetObjectItem(pr, "num_soft_tokens_per_image"), ii);
                CHECKF(ns && n == (int64_t)ns->valuedouble, "p%d image %d: %lld soft tokens, reference %g", pi, ii,
                       (long long)n, ns ? ns->valuedouble : -1.0);
                if (!ov || !os || row + n > vr) {
                    CHECKF(0, "p%d: more soft tokens than the reference", pi);
                } else {
                    CHECKF(!g4v_encode_ex(t, pool, px, th, tw, ov + row * vc, os + row * sc, &err), "encode: %s",
                           err.message);
                }
                row += n;
                free(px);
                image_free(&img);
                ii++;
            }
            if (ov && os && row == vr) {
                double e1 = rel_err32(ov, rv, (size_t)(vr * vc)), e2 = rel_err32(os, rs, (size_t)(sr * sc));
                printf("    p%d: %lld soft tokens; %s rel err %.2e, soft tokens rel err %.2e (budget %.0e)\n", pi,
                       (long long)vr, unified ? "embedder" : "pooled", e1, e2, PARITY_TOL);
                CHECKF(e1 < PARITY_TOL && e2 < PARITY_TOL, "p%d: %.3g / %.3g", pi, e1, e2);
            } else {
                CHECKF(0, "p%d: %lld rows, reference %lld", pi, (long long)row, (long long)vr);
            }
            free(rv), free(rs), free(ov), free(os);
            pi++;
        }
        CHECK(pi > 0);
        pool_free(pool);
        g4v_free(t);
        st_close(side);
        st_close(rf);
        cJSON_Delete(cfg);
        cJSON_Delete(ref);
        free(proc);
    }
    free(text);
}

int main(void) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/optiq_test_g4v_%d.safetensors", (int)getpid());
    test_target_sizes();
    test_params();
    test_patch_order();
    test_pooling();
    test_encoder_f64();
    test_unified_f64();
    test_bad_weights();
    test_preprocess_parity();
    test_tower_parity("gemma4-vl-mixed", 0);
    test_tower_parity("gemma4-vl-unified", 1);
    unlink(tmp_path);
    return test_finish();
}
