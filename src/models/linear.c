/*
 * linear.c — binding and applying weight matrices (see linear.h).
 */
#include "models/linear.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"

static void shape_str(const int64_t *s, int n, char *buf, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

static optiq_status load_bias(const weight_src *src, const char *name, int64_t n_mats, int64_t rows, int want,
                              linear *out, optiq_error *err) {
    char key[512];
    snprintf(key, sizeof key, "%s.bias", name);
    const st_tensor *t = model_dir_find(src->md, key, NULL);
    if (!t) {
        if (want == 2) return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s missing", key);
        return OPTIQ_OK;
    }
    if (want == 0) return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s present but the config says no bias", key);
    int64_t shape[2] = {n_mats, rows};
    return weight_vec_f32(src, key, n_mats > 0 ? 2 : 1, n_mats > 0 ? shape : shape + 1, &out->bias, err);
}

optiq_status linear_bind(const weight_src *src, const char *name, int64_t n_mats, int64_t rows, int64_t cols,
                         int want_bias, linear *out, optiq_error *err) {
    memset(out, 0, sizeof *out);
    int nd = n_mats > 0 ? 3 : 2;
    int64_t want[3] = {n_mats, rows, cols};
    const int64_t *ws = n_mats > 0 ? want : want + 1;
    char exp[96], got[96];
    shape_str(ws, nd, exp, sizeof exp);
    const qmodule *qmod = quant_modules_find(src->qm, name);
    out->n_mats = n_mats > 0 ? n_mats : 1;
    out->rows = rows;
    out->cols = cols;
    if (qmod) {
        const qweight *q = &qmod->q;
        int ok = q->rows == rows && q->cols == cols && qmod->weight->ndim == nd && (n_mats > 0 ? q->n_mats == n_mats : 1);
        if (!ok) {
            int64_t s[3] = {q->n_mats, q->rows, q->cols};
            shape_str(n_mats > 0 ? s : s + 1, qmod->weight->ndim, got, sizeof got);
            return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s.weight: expected shape %s (unpacked), found %s", name, exp,
                           got);
        }
        out->quantized = 1;
        out->q = *q;
    } else {
        char key[512];
        snprintf(key, sizeof key, "%s.weight", name);
        const st_tensor *t = model_dir_find(src->md, key, NULL);
        if (!t) return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s missing (expected shape %s)", key, exp);
        if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
            return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s: dtype %s, expected BF16, F16 or F32 (or a quantized weight "
                           "with scales)", key, dtype_name(t->dtype));
        int ok = t->ndim == nd;
        for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == ws[i];
        if (!ok) {
            shape_str(t->shape, t->ndim, got, sizeof got);
            return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s: expected shape %s, found %s", key, exp, got);
        }
        out->w = t->data;
        out->dt = t->dtype;
    }
    return load_bias(src, name, n_mats, rows, want_bias, out, err);
}

void linear_free(linear *l) {
    if (!l) return;
    free(l->bias);
    l->bias = NULL;
}

optiq_status linear_apply(thread_pool *pool, const linear *l, int64_t mat, const float *x, int64_t m, float *y,
                          int64_t ldy, int q8, optiq_error *err) {
    optiq_status st;
    if (ldy == 0) ldy = l->rows;
    if (l->quantized) {
        qmm_opts o = qmm_opts_default();
        o.mat = mat;
        o.ldy = ldy;
        o.q8 = q8;
        st = qmatmul_ex(pool, &l->q, x, m, y, &o, err);
    } else {
        mm_opts o = mm_opts_default();
        o.ldy = ldy;
        const uint8_t *w = (const uint8_t *)l->w + (size_t)mat * (size_t)(l->rows * l->cols) * dtype_size(l->dt);
        st = matmul(pool, x, m, l->cols, w, l->dt, l->rows, y, &o, err);
    }
    if (st) return st;
    if (l->bias) {
        const float *b = l->bias + mat * l->rows;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < l->rows; j++) y[i * ldy + j] += b[j];
    }
    return OPTIQ_OK;
}

optiq_status linear_rows(const linear *l, const int32_t *ids, int64_t n, float *out, optiq_error *err) {
    if (l->quantized) return qdequant_gather_f32(&l->q, 0, ids, n, out, err);
    size_t es = dtype_size(l->dt);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= l->rows)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "embedding lookup: id %d outside [0, %lld)", ids[i],
                           (long long)l->rows);
        const uint8_t *row = (const uint8_t *)l->w + (size_t)ids[i] * (size_t)l->cols * es;
        for (int64_t j = 0; j < l->cols; j++) out[i * l->cols + j] = load_as_f32(row, l->dt, (size_t)j);
    }
    return OPTIQ_OK;
}

uint64_t linear_bytes(const linear *l) {
    if (!l->quantized) return (uint64_t)l->n_mats * (uint64_t)l->rows * (uint64_t)l->cols * dtype_size(l->dt);
    uint64_t rows = (uint64_t)qweight_total_rows(&l->q);
    uint64_t sb = qweight_scale_row_bytes(&l->q);
    return rows * (qweight_row_bytes(&l->q) + sb * (l->q.biases ? 2 : 1));
}

optiq_status weight_vec_f32(const weight_src *src, const char *name, int ndim, const int64_t *shape, float **out,
                            optiq_error *err) {
    *out = NULL;
    const st_tensor *t = model_dir_find(src->md, name, NULL);
    if (!t) return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s missing", name);
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s: dtype %s, expected BF16, F16 or F32", name,
                       dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char exp[96], got[96];
        shape_str(shape, ndim, exp, sizeof exp);
        shape_str(t->shape, t->ndim, got, sizeof got);
        return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s: expected shape %s, found %s", name, exp, got);
    }
    float *v = malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
    if (!v) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory reading %s", name);
    for (uint64_t i = 0; i < t->nelem; i++) v[i] = load_as_f32(t->data, t->dtype, (size_t)i);
    *out = v;
    return OPTIQ_OK;
}

optiq_status linear_apply_moe(thread_pool *pool, const linear *l, const int32_t *expert, const float *x, int64_t m,
                              float *y, int q8, optiq_error *err) {
    for (int64_t i = 0; i < m; i++)
        if (expert[i] < 0 || expert[i] >= l->n_mats)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "expert %d outside [0, %lld)", expert[i], (long long)l->n_mats);
    if (l->quantized && !l->bias) {
        qmm_opts o = qmm_opts_default();
        o.q8 = q8;
        return qmatmul_moe(pool, &l->q, expert, x, m, y, &o, err);
    }
    /* Float experts (or biased ones): one call per row run of the same expert. */
    for (int64_t i = 0; i < m;) {
        int64_t j = i + 1;
        while (j < m && expert[j] == expert[i]) j++;
        optiq_status st = linear_apply(pool, l, expert[i], x + i * l->cols, j - i, y + i * l->rows, 0, q8, err);
        if (st) return st;
        i = j;
    }
    return OPTIQ_OK;
}

uint64_t linear_expert_bytes(const linear *l, int64_t k) {
    return l->rows && l->n_mats ? linear_bytes(l) / (uint64_t)l->n_mats * (uint64_t)k : 0;
}

const char *weight_prefix(const model_dir *md) {
    static const char *const PREFIXES[] = {"language_model.model.", "model.language_model.", "model.", ""};
    for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
        char key[128];
        snprintf(key, sizeof key, "%sembed_tokens.weight", PREFIXES[i]);
        if (model_dir_find(md, key, NULL)) return PREFIXES[i];
    }
    return NULL;
}

int grow_f32(float **p, size_t n) {
    float *q = realloc(*p, sizeof(float) * (n ? n : 1));
    if (!q) return 0;
    *p = q;
    return 1;
}
