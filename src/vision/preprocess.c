/* preprocess.c — see preprocess.h and docs/preprocess.md. */
#include "vision/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "vision/resample.h"

qvl_params qvl_params_default(void) {
    qvl_params p = {
        .patch_size = 16,
        .temporal_patch_size = 2,
        .merge_size = 2,
        .min_pixels = 56 * 56,
        .max_pixels = 14 * 14 * 4 * 1280,
        .do_rescale = 1,
        .rescale_factor = 1 / 255.0,
        .do_normalize = 1,
        .image_mean = {0.5f, 0.5f, 0.5f},
        .image_std = {0.5f, 0.5f, 0.5f},
    };
    return p;
}

/* ---- parameters from JSON ----------------------------------------------- */

/* The two documents a key can come from, in the reference's precedence:
 * processor_config.json's "image_processor" object over preprocessor_config.json. */
typedef struct cfg_src {
    const cJSON *over; /* image_processor object, or NULL */
    const cJSON *base; /* preprocessor_config.json root, or NULL */
} cfg_src;

/* The item for key (NULL when neither document has it) and the prefix that
 * names where it came from in messages. */
static const cJSON *cfg_get(const cfg_src *s, const char *key, const char **where) {
    const cJSON *j = s->over ? cJSON_GetObjectItemCaseSensitive(s->over, key) : NULL;
    if (j) {
        *where = "processor_config.json: image_processor.";
        return j;
    }
    j = s->base ? cJSON_GetObjectItemCaseSensitive(s->base, key) : NULL;
    *where = "preprocessor_config.json: ";
    return j;
}

optiq_status pp_want_int(const cJSON *j, const char *where, const char *key, int64_t lo, int64_t hi,
                             int64_t *out, optiq_error *err) {
    int64_t v;
    if (!cJSON_IsNumber(j))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s%s is %s, expected an integer", where, key, json_type_name(j));
    if (!json_as_int(j, &v))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s%s is %g, expected an integer", where, key, j->valuedouble);
    if (v < lo || v > hi)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s%s is %lld, expected %lld to %lld", where, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = v;
    return OPTIQ_OK;
}

/* Python truthiness of a JSON scalar, as `if self.do_rescale and ...` reads it. */
optiq_status pp_want_bool(const cJSON *j, const char *where, const char *key, int *out, optiq_error *err) {
    if (cJSON_IsBool(j)) *out = cJSON_IsTrue(j);
    else if (cJSON_IsNull(j)) *out = 0;
    else if (cJSON_IsNumber(j)) *out = j->valuedouble != 0.0;
    else return err_set(err, OPTIQ_ERR_FORMAT, "%s%s is %s, expected a boolean", where, key, json_type_name(j));
    return OPTIQ_OK;
}

/* image_mean / image_std: null or [] keep the default (`image_mean or [0.5]*3`);
 * one value broadcasts over the channels as numpy does. */
optiq_status pp_want_triple(const cJSON *j, const char *where, const char *key, int nonzero, float out[3],
                                optiq_error *err) {
    if (cJSON_IsNull(j)) return OPTIQ_OK;
    if (!cJSON_IsArray(j))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s%s is %s, expected an array of 3 numbers", where, key,
                       json_type_name(j));
    int n = cJSON_GetArraySize(j);
    if (n == 0) return OPTIQ_OK;
    if (n != 1 && n != 3)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s%s has %d values, expected 3 (or 1)", where, key, n);
    float v[3];
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(j, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return err_set(err, OPTIQ_ERR_FORMAT, "%s%s[%d] is %s, expected a finite number", where, key, i,
                           cJSON_IsNumber(e) ? "not finite" : json_type_name(e));
        v[i] = (float)e->valuedouble; /* np.array(list, dtype=np.float32) */
        if (nonzero && v[i] == 0.0f)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s%s[%d] is 0, expected a non-zero divisor", where, key, i);
    }
    for (int c = 0; c < 3; c++) out[c] = v[n == 1 ? 0 : c];
    return OPTIQ_OK;
}

/* A pixel budget: present and not null overrides *out. */
static optiq_status want_budget(const cJSON *j, const char *where, const char *key, int64_t lo, int64_t *out,
                                optiq_error *err) {
    if (!j || cJSON_IsNull(j)) return OPTIQ_OK;
    return pp_want_int(j, where, key, lo, QVL_MAX_PIXELS, out, err);
}

static optiq_status resolve(const cfg_src *s, qvl_params *p, optiq_error *err) {
    const struct {
        const char *key;
        int64_t hi;
        int *dst;
    } ints[] = {
        {"patch_size", 1024, &p->patch_size},
        {"temporal_patch_size", 64, &p->temporal_patch_size},
        {"merge_size", 64, &p->merge_size},
    };
    const char *where;
    const cJSON *j;
    optiq_status st;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        if (!(j = cfg_get(s, ints[i].key, &where))) continue;
        if ((st = pp_want_int(j, where, ints[i].key, 1, ints[i].hi, &v, err))) return st;
        *ints[i].dst = (int)v;
    }
    if ((j = cfg_get(s, "rescale_factor", &where))) {
        if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
            return err_set(err, OPTIQ_ERR_FORMAT, "%srescale_factor is %s, expected a finite number", where,
                           cJSON_IsNumber(j) ? "not finite" : json_type_name(j));
        p->rescale_factor = j->valuedouble;
    }
    if ((j = cfg_get(s, "do_rescale", &where)) && (st = pp_want_bool(j, where, "do_rescale", &p->do_rescale, err)))
        return st;
    if ((j = cfg_get(s, "do_normalize", &where)) &&
        (st = pp_want_bool(j, where, "do_normalize", &p->do_normalize, err)))
        return st;
    if ((j = cfg_get(s, "image_mean", &where)) &&
        (st = pp_want_triple(j, where, "image_mean", 0, p->image_mean, err)))
        return st;
    if ((j = cfg_get(s, "image_std", &where)) && (st = pp_want_triple(j, where, "image_std", 1, p->image_std, err)))
        return st;

    /* size = raw.get("size") or {}: null and {} mean nothing. */
    if ((j = cfg_get(s, "size", &where)) && !cJSON_IsNull(j)) {
        if (!cJSON_IsObject(j))
            return err_set(err, OPTIQ_ERR_FORMAT, "%ssize is %s, expected an object", where, json_type_name(j));
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "shortest_edge");
        if ((st = want_budget(e, where, "size.shortest_edge", 0, &p->min_pixels, err))) return st;
        e = cJSON_GetObjectItemCaseSensitive(j, "longest_edge");
        if ((st = want_budget(e, where, "size.longest_edge", 1, &p->max_pixels, err))) return st;
    }
    if ((j = cfg_get(s, "min_pixels", &where)) && (st = want_budget(j, where, "min_pixels", 0, &p->min_pixels, err)))
        return st;
    if ((j = cfg_get(s, "max_pixels", &where)) && (st = want_budget(j, where, "max_pixels", 1, &p->max_pixels, err)))
        return st;
    return OPTIQ_OK;
}

optiq_status qvl_params_from_json(const char *preprocessor_json, size_t preprocessor_len,
                                  const char *processor_json, size_t processor_len, qvl_params *out,
                                  optiq_error *err) {
    cJSON *pre = NULL, *proc = NULL;
    cfg_src s = {0};
    optiq_status st = OPTIQ_OK;
    if (preprocessor_json) {
        if ((st = json_parse(preprocessor_json, preprocessor_len, "preprocessor_config.json", &pre, err))) goto done;
        if (!cJSON_IsObject(pre) && !cJSON_IsNull(pre)) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "preprocessor_config.json: top level is %s, expected an object",
                         json_type_name(pre));
            goto done;
        }
        s.base = cJSON_IsObject(pre) ? pre : NULL;
    }
    if (processor_json) {
        if ((st = json_parse(processor_json, processor_len, "processor_config.json", &proc, err))) goto done;
        if (!cJSON_IsObject(proc)) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "processor_config.json: top level is %s, expected an object",
                         json_type_name(proc));
            goto done;
        }
        const cJSON *ip = cJSON_GetObjectItemCaseSensitive(proc, "image_processor");
        if (ip && !cJSON_IsNull(ip) && !cJSON_IsObject(ip)) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "processor_config.json: image_processor is %s, expected an object",
                         json_type_name(ip));
            goto done;
        }
        s.over = cJSON_IsObject(ip) ? ip : NULL;
    }
    qvl_params p = qvl_params_default();
    if (!(st = resolve(&s, &p, err))) *out = p;
done:
    cJSON_Delete(pre);
    cJSON_Delete(proc);
    return st;
}

optiq_status qvl_params_parse(const char *json, size_t len, qvl_params *out, optiq_error *err) {
    return qvl_params_from_json(json, len, NULL, 0, out, err);
}

/* Parameters built by hand get the same checks as parsed ones. */
static optiq_status params_check(const qvl_params *p, optiq_error *err) {
    if (!p) return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: NULL parameters");
    if (p->patch_size < 1 || p->patch_size > 1024 || p->temporal_patch_size < 1 || p->temporal_patch_size > 64 ||
        p->merge_size < 1 || p->merge_size > 64)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: patch_size %d, temporal_patch_size %d, merge_size %d, expected [1, 1024], "
                       "[1, 64], [1, 64]",
                       p->patch_size, p->temporal_patch_size, p->merge_size);
    if (p->min_pixels < 0 || p->min_pixels > QVL_MAX_PIXELS || p->max_pixels < 1 || p->max_pixels > QVL_MAX_PIXELS)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: min_pixels %lld, max_pixels %lld, expected [0, %lld], [1, %lld]",
                       (long long)p->min_pixels, (long long)p->max_pixels, (long long)QVL_MAX_PIXELS,
                       (long long)QVL_MAX_PIXELS);
    if (!isfinite(p->rescale_factor))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: rescale_factor is not finite");
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->image_mean[c]) || !isfinite(p->image_std[c]) || p->image_std[c] == 0.0f)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: image_mean[%d] %g / image_std[%d] %g, expected "
                           "finite values and a non-zero std", c, p->image_mean[c], c, p->image_std[c]);
    return OPTIQ_OK;
}

/* ---- smart resize ------------------------------------------------------- */

/* Python's round() of a non-negative double: nearest integer, ties to even.
 * x − floor(x) is exact here (x < 2^52). */
static double round_half_even(double x) {
    double f = floor(x), d = x - f;
    if (d > 0.5) return f + 1.0;
    if (d < 0.5) return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

optiq_status qvl_smart_resize(const qvl_params *p, int64_t height, int64_t width, int64_t *out_height,
                              int64_t *out_width, optiq_error *err) {
    optiq_status st = params_check(p, err);
    if (st) return st;
    if (height < 1 || width < 1 || height > QVL_MAX_SIDE || width > QVL_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: image %lldx%lld (width x height), expected sides in [1, %d]", (long long)width,
                       (long long)height, QVL_MAX_SIDE);
    /* Every product below stays under 2^53, so each int→double conversion is
     * exact and a division of two of them rounds once, like Python's int / int. */
    int64_t lo = height < width ? height : width, hi = height < width ? width : height;
    double ratio = (double)hi / (double)lo;
    if (ratio > QVL_MAX_ASPECT)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: image %lldx%lld: absolute aspect ratio must be smaller than 200, got %.17g",
                       (long long)width, (long long)height, ratio);

    int64_t f = (int64_t)p->patch_size * p->merge_size;
    double fd = (double)f, hd = (double)height, wd = (double)width, area = (double)(height * width);
    int64_t h = (int64_t)round_half_even(hd / fd) * f;
    int64_t w = (int64_t)round_half_even(wd / fd) * f;
    if (h * w > p->max_pixels) {
        double beta = sqrt(area / (double)p->max_pixels);
        h = (int64_t)floor(hd / beta / fd) * f;
        w = (int64_t)floor(wd / beta / fd) * f;
        if (h < f) h = f;
        if (w < f) w = f;
    } else if (h * w < p->min_pixels) {
        double beta = sqrt((double)p->min_pixels / area);
        h = (int64_t)ceil(hd * beta / fd) * f;
        w = (int64_t)ceil(wd * beta / fd) * f;
    }
    if (h < 1 || w < 1 || h > QVL_MAX_SIDE || w > QVL_MAX_SIDE || h * w > QVL_MAX_PIXELS)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: image %lldx%lld would be resized to %lldx%lld, expected sides in [1, %d] and at "
                       "most %lld pixels (min_pixels %lld, max_pixels %lld)",
                       (long long)width, (long long)height, (long long)w, (long long)h, QVL_MAX_SIDE,
                       (long long)QVL_MAX_PIXELS, (long long)p->min_pixels, (long long)p->max_pixels);
    *out_height = h;
    *out_width = w;
    return OPTIQ_OK;
}

optiq_status qvl_num_image_tokens(const qvl_params *p, int64_t height, int64_t width, int64_t *out,
                                  optiq_error *err) {
    int64_t h, w;
    optiq_status st = qvl_smart_resize(p, height, width, &h, &w, err);
    if (st) return st;
    int64_t m = p->merge_size;
    *out = (h / p->patch_size) * (w / p->patch_size) / (m * m);
    return OPTIQ_OK;
}

/* ---- rescale, normalize, patches ---------------------------------------- */

void qvl_image_free(qvl_image *img) {
    if (!img) return;
    free(img->pixel_values);
    memset(img, 0, sizeof *img);
}

optiq_status qvl_patchify(const qvl_params *p, const uint8_t *rgb, int w, int h, qvl_image *out,
                          optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: NULL output");
    memset(out, 0, sizeof *out);
    optiq_status st = params_check(p, err);
    if (st) return st;
    if (!rgb) return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: NULL image");
    const int P = p->patch_size, T = p->temporal_patch_size, M = p->merge_size, f = P * M;
    if (w < f || h < f || w % f || h % f || (int64_t)w * h > QVL_MAX_PIXELS)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "preprocess: resized image %dx%d, expected positive multiples of %d and at most %lld pixels", w,
                       h, f, (long long)QVL_MAX_PIXELS);

    /* One float per (channel, byte value), computed exactly as the reference's
     * float32 array ops: x·float32(rescale_factor), then (x − mean) / std. */
    float lut[3][256];
    const float rescale = (float)p->rescale_factor;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)v;
            if (p->do_rescale) x = x * rescale;
            if (p->do_normalize) x = (x - p->image_mean[c]) / p->image_std[c];
            lut[c][v] = x;
        }

    const int gh = h / P, gw = w / P;
    const size_t pp = (size_t)P * (size_t)P, dim = 3 * (size_t)T * pp, n = (size_t)gh * (size_t)gw;
    float *pv = malloc(n * dim * sizeof *pv);
    if (!pv) return err_set(err, OPTIQ_ERR_NOMEM, "preprocess: out of memory for %zu x %zu pixel values", n, dim);

    /* Patch rows in merge-block order: blocks (bh, bw) in raster order, the
     * M×M patches (mh, mw) of a block in raster order. */
    float *row = pv;
    for (int bh = 0; bh < gh / M; bh++)
        for (int bw = 0; bw < gw / M; bw++)
            for (int mh = 0; mh < M; mh++)
                for (int mw = 0; mw < M; mw++, row += dim) {
                    size_t y0 = (size_t)(bh * M + mh) * P, x0 = (size_t)(bw * M + mw) * P;
                    const uint8_t *src = rgb + (y0 * (size_t)w + x0) * 3;
                    for (int c = 0; c < 3; c++) {
                        float *dst = row + (size_t)c * T * pp; /* τ = 0 */
                        for (int py = 0; py < P; py++)
                            for (int px = 0; px < P; px++)
                                dst[(size_t)py * P + px] = lut[c][src[((size_t)py * w + px) * 3 + c]];
                        for (int t = 1; t < T; t++) memcpy(dst + t * pp, dst, pp * sizeof *dst);
                    }
                }

    out->pixel_values = pv;
    out->n_patches = (int64_t)n;
    out->patch_dim = (int64_t)dim;
    out->grid_thw[0] = 1;
    out->grid_thw[1] = gh;
    out->grid_thw[2] = gw;
    out->n_tokens = (int64_t)n / ((int64_t)M * M);
    out->resized_height = h;
    out->resized_width = w;
    return OPTIQ_OK;
}

/* ---- the whole pipeline ------------------------------------------------- */

optiq_status qvl_preprocess(const qvl_params *p, const uint8_t *rgb, int w, int h, qvl_image *out,
                            optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: NULL output");
    memset(out, 0, sizeof *out);
    if (!rgb) return err_set(err, OPTIQ_ERR_INVALID_ARG, "preprocess: NULL image");
    int64_t rh, rw;
    optiq_status st = qvl_smart_resize(p, h, w, &rh, &rw, err);
    if (st) return st;
    if (rh == h && rw == w) return qvl_patchify(p, rgb, w, h, out, err);

    uint8_t *resized = malloc((size_t)rh * (size_t)rw * 3);
    if (!resized)
        return err_set(err, OPTIQ_ERR_NOMEM, "preprocess: out of memory for a %lldx%lld image", (long long)rw,
                       (long long)rh);
    st = resample_bicubic_u8(rgb, w, h, 3, resized, (int)rw, (int)rh, err);
    if (!st) st = qvl_patchify(p, resized, (int)rw, (int)rh, out, err);
    free(resized);
    return st;
}
