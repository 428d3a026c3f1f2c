/* test_preprocess.c — Qwen-VL image preprocessing against mlx-vlm's
 * Qwen3VLImageProcessor (tests/fixtures/preprocess/, written by
 * tools/reference/gen_preprocess.py).
 *
 * Tolerance: none. Per image case the resized uint8 image must equal the
 * reference's (Pillow BICUBIC) byte for byte — the first differing pixel is
 * reported — and the float32 pixel_values must have the reference's SHA-256,
 * grid_thw and token count. The smart-resize rule is checked on a table of
 * (h, w) → (h', w', tokens) from the reference per config, ties included;
 * config parsing against the values the reference resolved from the same
 * JSON text; then defaults, bad values and the error paths. */
#include "vision/preprocess.h"
#include "vision/resample.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>

#include "io/json.h"
#include "io/safetensors.h"
#include "sha256.h"
#include "test.h"

#define FIXDIR "tests/fixtures/preprocess/"
#define NCONF 8

/* ---- fixture access ------------------------------------------------------ */

typedef struct conf {
    const char *name;
    qvl_params p;
    int ok;
} conf;

static conf confs[NCONF];
static int nconf;

static const qvl_params *find_conf(const char *name) {
    for (int i = 0; i < nconf; i++)
        if (!strcmp(confs[i].name, name) && confs[i].ok) return &confs[i].p;
    return NULL;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t jint(const cJSON *o, const char *key) {
    int64_t v = -1;
    if (!json_as_int(cJSON_GetObjectItemCaseSensitive(o, key), &v)) return -1;
    return v;
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Synthetic image of the "pattern" cases (gen_preprocess.py: pattern_image). */
static uint8_t *pattern_image(int h, int w) {
    uint8_t *img = malloc((size_t)h * (size_t)w * 3);
    if (!img) return NULL;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++)
            for (int64_t c = 0; c < 3; c++)
                img[((size_t)y * (size_t)w + (size_t)x) * 3 + (size_t)c] =
                    (uint8_t)((7 * x * x + 3 * y * y + 5 * x * y + 85 * c + 4 * ((x ^ y) & 31)) & 255);
    return img;
}

/* A uint8 tensor of shape (h, w, 3), or NULL. */
static const uint8_t *u8_image(const st_file *f, const char *name, int h, int w) {
    const st_tensor *t = f ? st_find(f, name) : NULL;
    if (!t || t->dtype != DT_U8 || t->ndim != 3 || t->shape[0] != h || t->shape[1] != w || t->shape[2] != 3)
        return NULL;
    return t->data;
}

/* ---- config resolution ---------------------------------------------------- */

static void check_configs(const cJSON *fx) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "configs")) {
        char name[128];
        snprintf(name, sizeof name, "config %s resolves as the reference", c->string);
        for (TEST_CASE(name)) {
            const char *pre = jstr(c, "preprocessor_config.json"), *proc = jstr(c, "processor_config.json");
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(c, "resolved");
            qvl_params p;
            optiq_error e = {0};
            CHECKF(nconf < NCONF, "too many configs");
            if (nconf >= NCONF) break;
            optiq_status st = qvl_params_from_json(pre, pre ? strlen(pre) : 0, proc, proc ? strlen(proc) : 0, &p, &e);
            CHECKF(st == OPTIQ_OK, "%s", e.message);
            if (st) break;
            CHECK(p.patch_size == jint(r, "patch_size"));
            CHECK(p.temporal_patch_size == jint(r, "temporal_patch_size"));
            CHECK(p.merge_size == jint(r, "merge_size"));
            CHECKF(p.min_pixels == jint(r, "min_pixels"), "min_pixels %lld, reference %lld", (long long)p.min_pixels,
                   (long long)jint(r, "min_pixels"));
            CHECKF(p.max_pixels == jint(r, "max_pixels"), "max_pixels %lld, reference %lld", (long long)p.max_pixels,
                   (long long)jint(r, "max_pixels"));
            CHECK(p.rescale_factor == jnum(r, "rescale_factor"));
            CHECK(p.do_rescale == cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "do_rescale")));
            CHECK(p.do_normalize == cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "do_normalize")));
            for (int k = 0; k < 3; k++) {
                const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "image_mean"), k);
                const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "image_std"), k);
                CHECKF(m && p.image_mean[k] == (float)m->valuedouble, "image_mean[%d] %.9g", k, p.image_mean[k]);
                CHECKF(s && p.image_std[k] == (float)s->valuedouble, "image_std[%d] %.9g", k, p.image_std[k]);
            }
            confs[nconf++] = (conf){c->string, p, !t_case_failed};
        }
    }
}

/* ---- image cases ---------------------------------------------------------- */

/* First differing pixel of two (h, w, 3) images, as "(y, x): got (..) want (..)". */
static int first_diff(const uint8_t *got, const uint8_t *want, int h, int w, char *msg, size_t cap) {
    for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
        if (memcmp(got + 3 * i, want + 3 * i, 3)) {
            snprintf(msg, cap, "(y %zu, x %zu): got (%d, %d, %d), reference (%d, %d, %d)", i / (size_t)w,
                     i % (size_t)w, got[3 * i], got[3 * i + 1], got[3 * i + 2], want[3 * i], want[3 * i + 1],
                     want[3 * i + 2]);
            return 1;
        }
    return 0;
}

static void check_error_case(const qvl_params *p, const uint8_t *img, int h, int w, const char *want) {
    qvl_image out;
    optiq_error e = {0};
    int64_t rh, rw;
    optiq_status st = qvl_preprocess(p, img, w, h, &out, &e);
    CHECKF(st == OPTIQ_ERR_INVALID_ARG, "expected the reference's ValueError (%s), got status %d", want, st);
    CHECKF(strstr(e.message, "aspect ratio must be smaller than 200"), "message: %s", e.message);
    CHECK(out.pixel_values == NULL);
    CHECK(qvl_smart_resize(p, h, w, &rh, &rw, NULL) == OPTIQ_ERR_INVALID_ARG);
}

static void check_resized(const cJSON *c, const st_file *f, const uint8_t *resized, int rh, int rw) {
    char hex[65], msg[200];
    const uint8_t *ref = u8_image(f, "resized", rh, rw);
    if (ref) {
        CHECKF(!first_diff(resized, ref, rh, rw, msg, sizeof msg), "resized image differs at %s", msg);
    } else {
        /* Not stored (large): sampled pixels localize a difference. */
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(c, "resized_samples")) {
            int v[5];
            for (int k = 0; k < 5; k++) v[k] = cJSON_GetArrayItem(s, k)->valueint;
            const uint8_t *px = resized + ((size_t)v[0] * (size_t)rw + (size_t)v[1]) * 3;
            CHECKF(px[0] == v[2] && px[1] == v[3] && px[2] == v[4],
                   "resized (y %d, x %d): got (%d, %d, %d), reference (%d, %d, %d)", v[0], v[1], px[0], px[1],
                   px[2], v[2], v[3], v[4]);
        }
    }
    sha256_hex(resized, (size_t)rh * (size_t)rw * 3, hex);
    CHECKF(!strcmp(hex, jstr(c, "resized_sha256")), "resized image digest %s differs from the reference's", hex);
}

static void check_pixels(const cJSON *c, const qvl_image *im, const char *what) {
    char hex[65];
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(c, "pixel_values_shape");
    CHECKF(im->n_patches == cJSON_GetArrayItem(shape, 0)->valuedouble &&
               im->patch_dim == cJSON_GetArrayItem(shape, 1)->valuedouble,
           "%s: pixel_values (%lld, %lld), reference (%g, %g)", what, (long long)im->n_patches,
           (long long)im->patch_dim, cJSON_GetArrayItem(shape, 0)->valuedouble,
           cJSON_GetArrayItem(shape, 1)->valuedouble);
    if (t_case_failed) return;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(c, "samples")) {
        int64_t r = (int64_t)cJSON_GetArrayItem(s, 0)->valuedouble, k = (int64_t)cJSON_GetArrayItem(s, 1)->valuedouble;
        uint32_t want = (uint32_t)cJSON_GetArrayItem(s, 2)->valuedouble, got;
        memcpy(&got, &im->pixel_values[r * im->patch_dim + k], 4);
        CHECKF(got == want, "%s: pixel_values[%lld, %lld] = %.9g (0x%08x), reference %.9g (0x%08x)", what,
               (long long)r, (long long)k, im->pixel_values[r * im->patch_dim + k], got,
               cJSON_GetArrayItem(s, 3)->valuedouble, want);
    }
    sha256_hex(im->pixel_values, (size_t)im->n_patches * (size_t)im->patch_dim * sizeof(float), hex);
    CHECKF(!strcmp(hex, jstr(c, "pixel_values_sha256")), "%s: pixel_values digest %s differs from the reference's",
           what, hex);
}

static void check_case(const cJSON *c) {
    const char *name = jstr(c, "name"), *cname = jstr(c, "config"), *file = jstr(c, "file");
    char label[160], path[256];
    const qvl_params *p = cname ? find_conf(cname) : NULL;
    int h = (int)jint(c, "height"), w = (int)jint(c, "width");
    snprintf(label, sizeof label, "%s [%s]", name ? name : "?", cname ? cname : "?");
    for (TEST_CASE(label)) {
        CHECKF(p, "config %s not resolved", cname ? cname : "?");
        if (!p) break;
        st_file *f = NULL;
        optiq_error e = {0};
        if (file) {
            snprintf(path, sizeof path, "%s", test_path(FIXDIR));
            strncat(path, file, sizeof path - strlen(path) - 1);
            CHECKF(st_open(path, &f, &e) == OPTIQ_OK, "%s", e.message);
            if (!f) break;
        }
        uint8_t *owned = NULL;
        const uint8_t *img = jstr(c, "pattern") ? (owned = pattern_image(h, w)) : u8_image(f, "input", h, w);
        CHECKF(img, "no input image (%dx%d)", w, h);
        if (img && jstr(c, "error")) {
            check_error_case(p, img, h, w, jstr(c, "error"));
        } else if (img) {
            int64_t rh = -1, rw = -1, tokens = -1;
            CHECKF(qvl_smart_resize(p, h, w, &rh, &rw, &e) == OPTIQ_OK, "%s", e.message);
            CHECKF(rh == jint(c, "resized_height") && rw == jint(c, "resized_width"),
                   "resized to %lldx%lld, reference %lldx%lld", (long long)rw, (long long)rh,
                   (long long)jint(c, "resized_width"), (long long)jint(c, "resized_height"));
            CHECK(qvl_num_image_tokens(p, h, w, &tokens, NULL) == OPTIQ_OK && tokens == jint(c, "n_tokens"));
            uint8_t *resized = t_case_failed ? NULL : malloc((size_t)rh * (size_t)rw * 3);
            if (resized) {
                CHECKF(resample_bicubic_u8(img, w, h, 3, resized, (int)rw, (int)rh, &e) == OPTIQ_OK, "%s", e.message);
                if (!t_case_failed) check_resized(c, f, resized, (int)rh, (int)rw);
                free(resized);
            }
            qvl_image im;
            if (!t_case_failed) {
                CHECKF(qvl_preprocess(p, img, w, h, &im, &e) == OPTIQ_OK, "%s", e.message);
                if (!t_case_failed) {
                    const cJSON *g = cJSON_GetObjectItemCaseSensitive(c, "grid_thw");
                    const st_tensor *gt = f ? st_find(f, "grid_thw") : NULL;
                    for (int k = 0; k < 3; k++) {
                        CHECKF(im.grid_thw[k] == (int64_t)cJSON_GetArrayItem(g, k)->valuedouble,
                               "grid_thw[%d] %lld, reference %g", k, (long long)im.grid_thw[k],
                               cJSON_GetArrayItem(g, k)->valuedouble);
                        int64_t v;
                        if (gt && gt->dtype == DT_I64 && gt->nelem == 3) {
                            memcpy(&v, (const char *)gt->data + 8 * k, 8);
                            CHECKF(im.grid_thw[k] == v, "grid_thw[%d] %lld, fixture tensor %lld", k,
                                   (long long)im.grid_thw[k], (long long)v);
                        }
                    }
                    CHECKF(im.n_tokens == jint(c, "n_tokens"), "%lld tokens, reference %lld", (long long)im.n_tokens,
                           (long long)jint(c, "n_tokens"));
                    CHECK(im.resized_height == rh && im.resized_width == rw);
                    check_pixels(c, &im, "preprocess");
                }
                qvl_image_free(&im);
            }
            /* Steps 3-4 alone, from the reference's own resized image. */
            const uint8_t *ref = u8_image(f, "resized", (int)rh, (int)rw);
            if (ref && !t_case_failed) {
                CHECKF(qvl_patchify(p, ref, (int)rw, (int)rh, &im, &e) == OPTIQ_OK, "%s", e.message);
                if (!t_case_failed) check_pixels(c, &im, "patchify(reference resized)");
                qvl_image_free(&im);
            }
        }
        free(owned);
        st_close(f);
    }
}

/* ---- smart resize table ---------------------------------------------------- */

static void check_smart_resize(const cJSON *fx) {
    const cJSON *tab;
    cJSON_ArrayForEach(tab, cJSON_GetObjectItemCaseSensitive(fx, "smart_resize")) {
        char label[128];
        snprintf(label, sizeof label, "smart resize table %s (%d sizes)", tab->string, cJSON_GetArraySize(tab));
        for (TEST_CASE(label)) {
            const qvl_params *p = find_conf(tab->string);
            CHECKF(p, "config %s not resolved", tab->string);
            if (!p) break;
            const cJSON *row;
            int ties = 0, errors = 0;
            int64_t f = (int64_t)p->patch_size * p->merge_size;
            cJSON_ArrayForEach(row, tab) {
                int64_t h = (int64_t)cJSON_GetArrayItem(row, 0)->valuedouble;
                int64_t w = (int64_t)cJSON_GetArrayItem(row, 1)->valuedouble;
                const cJSON *r2 = cJSON_GetArrayItem(row, 2);
                int64_t rh = -1, rw = -1, tok = -1;
                optiq_error e = {0};
                optiq_status st = qvl_smart_resize(p, h, w, &rh, &rw, &e);
                ties += (2 * h) % f == 0 && (2 * h / f) % 2 == 1;
                if (cJSON_IsNull(r2)) {
                    errors++;
                    CHECKF(st == OPTIQ_ERR_INVALID_ARG, "%lldx%lld: expected an error, got %lldx%lld", (long long)w,
                           (long long)h, (long long)rw, (long long)rh);
                    continue;
                }
                int64_t wh = (int64_t)r2->valuedouble, ww = (int64_t)cJSON_GetArrayItem(row, 3)->valuedouble;
                int64_t wt = (int64_t)cJSON_GetArrayItem(row, 4)->valuedouble;
                CHECKF(st == OPTIQ_OK && rh == wh && rw == ww,
                       "(h %lld, w %lld) -> (%lld, %lld), reference (%lld, %lld) %s",
                       (long long)h, (long long)w, (long long)rh, (long long)rw, (long long)wh, (long long)ww,
                       e.message);
                CHECKF(qvl_num_image_tokens(p, h, w, &tok, NULL) == OPTIQ_OK && tok == wt,
                       "(h %lld, w %lld): %lld tokens, reference %lld", (long long)h, (long long)w, (long long)tok,
                       (long long)wt);
            }
            CHECKF(ties >= 8, "only %d rows with a height on a rounding tie", ties);
            CHECKF(errors >= 2, "only %d error rows", errors);
        }
    }
}

/* ---- parsing ------------------------------------------------------------------ */

static optiq_status parse(const char *json, qvl_params *p, optiq_error *e) {
    return qvl_params_parse(json, strlen(json), p, e);
}

static optiq_status parse2(const char *pre, const char *proc, qvl_params *p, optiq_error *e) {
    return qvl_params_from_json(pre, pre ? strlen(pre) : 0, proc, proc ? strlen(proc) : 0, p, e);
}

/* Field by field: the struct has padding that memcmp would see. */
static int same_params(const qvl_params *a, const qvl_params *b) {
    int same = a->patch_size == b->patch_size && a->temporal_patch_size == b->temporal_patch_size &&
               a->merge_size == b->merge_size && a->min_pixels == b->min_pixels && a->max_pixels == b->max_pixels &&
               a->do_rescale == b->do_rescale && a->rescale_factor == b->rescale_factor &&
               a->do_normalize == b->do_normalize;
    for (int c = 0; c < 3; c++) same &= a->image_mean[c] == b->image_mean[c] && a->image_std[c] == b->image_std[c];
    return same;
}

static void check_parsing(void) {
    qvl_params d = qvl_params_default(), p;
    optiq_error e = {0};

    for (TEST_CASE("params: class defaults (no file, empty object, null)")) {
        CHECK(d.patch_size == 16 && d.temporal_patch_size == 2 && d.merge_size == 2);
        CHECK(d.min_pixels == 3136 && d.max_pixels == 1003520);
        CHECK(d.do_rescale == 1 && d.do_normalize == 1 && d.rescale_factor == 1 / 255.0);
        CHECK(d.image_mean[0] == 0.5f && d.image_mean[2] == 0.5f && d.image_std[1] == 0.5f);
        CHECK(parse2(NULL, NULL, &p, &e) == OPTIQ_OK && same_params(&p, &d));
        CHECK(parse("{}", &p, &e) == OPTIQ_OK && same_params(&p, &d));
        CHECK(parse("null", &p, &e) == OPTIQ_OK && same_params(&p, &d));
        CHECK(parse("{\"image_mean\": null, \"image_std\": [], \"size\": null, \"min_pixels\": null}", &p, &e) ==
                  OPTIQ_OK &&
              same_params(&p, &d));
    }
    for (TEST_CASE("params: size keys, explicit min/max_pixels win, null ignored")) {
        CHECK(parse("{\"size\": {\"shortest_edge\": 65536, \"longest_edge\": 16777216}}", &p, &e) == OPTIQ_OK);
        CHECK(p.min_pixels == 65536 && p.max_pixels == 16777216);
        CHECK(parse("{\"min_pixels\": 100, \"max_pixels\": 200}", &p, &e) == OPTIQ_OK);
        CHECK(p.min_pixels == 100 && p.max_pixels == 200);
        CHECK(parse("{\"max_pixels\": 5000, \"size\": {\"shortest_edge\": 7, \"longest_edge\": 9000}}", &p, &e) ==
              OPTIQ_OK);
        CHECK(p.min_pixels == 7 && p.max_pixels == 5000);
        CHECK(parse("{\"min_pixels\": null, \"size\": {\"shortest_edge\": 70, \"longest_edge\": null}}", &p, &e) ==
              OPTIQ_OK);
        CHECK(p.min_pixels == 70 && p.max_pixels == d.max_pixels);
        CHECK(parse("{\"size\": {\"height\": 224, \"width\": 224}}", &p, &e) == OPTIQ_OK);
        CHECK(p.min_pixels == d.min_pixels && p.max_pixels == d.max_pixels);
    }
    for (TEST_CASE("params: processor_config.json image_processor overrides key by key")) {
        const char *pre = "{\"patch_size\": 16, \"min_pixels\": 999, \"size\": {\"longest_edge\": 4000}}";
        CHECK(parse2(pre, "{\"image_processor\": {\"patch_size\": 14, \"size\": {\"shortest_edge\": 5}}}", &p, &e) ==
              OPTIQ_OK);
        CHECK(p.patch_size == 14 && p.min_pixels == 999 && p.max_pixels == d.max_pixels);
        CHECK(parse2(pre, "{\"image_processor\": null, \"chat_template\": \"x\"}", &p, &e) == OPTIQ_OK);
        CHECK(p.patch_size == 16 && p.min_pixels == 999 && p.max_pixels == 4000);
        CHECK(parse2(NULL, "{\"image_processor\": {\"max_pixels\": 77777}}", &p, &e) == OPTIQ_OK);
        CHECK(p.max_pixels == 77777 && p.patch_size == 16);
        /* A key present in image_processor wins even when null: here it resets to the class default. */
        CHECK(parse2("{\"image_mean\": [0.1, 0.2, 0.3]}", "{\"image_processor\": {\"image_mean\": null}}", &p, &e) ==
              OPTIQ_OK);
        CHECK(p.image_mean[0] == 0.5f);
    }
    for (TEST_CASE("params: mean/std broadcast and float32, booleans, rescale_factor")) {
        CHECK(parse("{\"image_mean\": [0.25], \"image_std\": [0.48145466, 0.4578275, 0.40821073]}", &p, &e) ==
              OPTIQ_OK);
        CHECK(p.image_mean[0] == 0.25f && p.image_mean[1] == 0.25f && p.image_mean[2] == 0.25f);
        CHECK(p.image_std[0] == (float)0.48145466 && p.image_std[2] == (float)0.40821073);
        CHECK(parse("{\"do_rescale\": false, \"do_normalize\": 0, \"rescale_factor\": 0.5}", &p, &e) == OPTIQ_OK);
        CHECK(p.do_rescale == 0 && p.do_normalize == 0 && p.rescale_factor == 0.5);
        CHECK(parse("{\"do_rescale\": null, \"do_normalize\": 2}", &p, &e) == OPTIQ_OK);
        CHECK(p.do_rescale == 0 && p.do_normalize == 1);
    }
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"patch_size\": \"16\"}", "patch_size is a string, expected an integer"},
        {"{\"patch_size\": 16.5}", "patch_size is 16.5, expected an integer"},
        {"{\"patch_size\": 0}", "patch_size is 0, expected 1 to 1024"},
        {"{\"patch_size\": null}", "patch_size is null"},
        {"{\"merge_size\": true}", "merge_size is a boolean"},
        {"{\"temporal_patch_size\": 65}", "temporal_patch_size is 65"},
        {"{\"min_pixels\": -1}", "min_pixels is -1"},
        {"{\"max_pixels\": 0}", "max_pixels is 0"},
        {"{\"max_pixels\": 1099511627776}", "max_pixels is 1099511627776"},
        {"{\"size\": {\"shortest_edge\": \"big\"}}", "size.shortest_edge is a string"},
        {"{\"size\": {\"longest_edge\": 0}}", "size.longest_edge is 0"},
        {"{\"size\": 224}", "size is a number, expected an object"},
        {"{\"image_mean\": 0.5}", "image_mean is a number, expected an array"},
        {"{\"image_mean\": [0.5, 0.5]}", "image_mean has 2 values"},
        {"{\"image_std\": [0.5, 0, 0.5]}", "image_std[1] is 0"},
        {"{\"image_std\": [0.5, \"a\", 0.5]}", "image_std[1] is a string"},
        {"{\"rescale_factor\": null}", "rescale_factor is null"},
        {"{\"rescale_factor\": \"1/255\"}", "rescale_factor is a string"},
        {"{\"do_rescale\": \"yes\"}", "do_rescale is a string, expected a boolean"},
        {"[1, 2]", "top level is an array"},
        {"{\"patch_size\": 16,}", "preprocessor_config.json"},
    };
    for (TEST_CASE("params: wrong types and values are refused with the key named")) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            qvl_params q = d;
            optiq_error e2 = {0};
            optiq_status st = parse(bad[i].json, &q, &e2);
            CHECKF(st == OPTIQ_ERR_FORMAT && strstr(e2.message, bad[i].want) &&
                       strstr(e2.message, "preprocessor_config.json"),
                   "%s: status %d, message '%s', expected '%s'", bad[i].json, st, e2.message, bad[i].want);
            CHECKF(same_params(&q, &d), "%s: output written on failure", bad[i].json);
        }
        optiq_error e2 = {0};
        CHECK(parse2("{}", "{\"image_processor\": \"x\"}", &p, &e2) == OPTIQ_ERR_FORMAT &&
              strstr(e2.message, "processor_config.json: image_processor is a string"));
        CHECK(parse2("{}", "{\"image_processor\": {\"patch_size\": -3}}", &p, &e2) == OPTIQ_ERR_FORMAT &&
              strstr(e2.message, "processor_config.json: image_processor.patch_size is -3"));
        CHECK(parse2("{}", "7", &p, &e2) == OPTIQ_ERR_FORMAT && strstr(e2.message, "top level is a number"));
    }
}

/* ---- normalization and error paths ----------------------------------------------- */

static void check_values_and_errors(void) {
    for (TEST_CASE("patchify: values per channel, rescale/normalize switches, layout")) {
        qvl_params p = qvl_params_default();
        p.patch_size = 2;
        p.merge_size = 2;
        p.temporal_patch_size = 3;
        p.image_mean[1] = 0.25f;
        p.image_std[2] = 0.125f;
        enum { H = 4, W = 8 };
        uint8_t img[H * W * 3];
        for (int i = 0; i < H * W * 3; i++) img[i] = (uint8_t)(i * 37 + 11);
        qvl_image im;
        optiq_error e = {0};
        CHECKF(qvl_patchify(&p, img, W, H, &im, &e) == OPTIQ_OK, "%s", e.message);
        if (t_case_failed) break;
        CHECK(im.n_patches == 8 && im.patch_dim == 3 * 3 * 4 && im.grid_thw[1] == 2 && im.grid_thw[2] == 4);
        CHECK(im.n_tokens == 2);
        const float rf = (float)(1 / 255.0);
        for (int n = 0; n < 8; n++) {
            int bw = n / 4, mh = (n / 2) % 2, mw = n % 2; /* gh/M = 1 block row, gw/M = 2 block columns */
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < 3; t++)
                    for (int py = 0; py < 2; py++)
                        for (int px = 0; px < 2; px++) {
                            int y = mh * 2 + py, x = (bw * 2 + mw) * 2 + px;
                            float want = ((float)img[(y * W + x) * 3 + c] * rf - p.image_mean[c]) / p.image_std[c];
                            float got = im.pixel_values[n * im.patch_dim + ((c * 3 + t) * 2 + py) * 2 + px];
                            CHECKF(got == want, "patch %d c %d t %d (%d, %d): %.9g, expected %.9g", n, c, t, py, px,
                                   got, want);
                        }
        }
        qvl_image_free(&im);
        CHECK(im.pixel_values == NULL);
        p.do_rescale = 0;
        p.do_normalize = 0;
        CHECK(qvl_patchify(&p, img, W, H, &im, &e) == OPTIQ_OK);
        CHECK(im.pixel_values && im.pixel_values[0] == (float)img[0]);
        qvl_image_free(&im);
    }
    for (TEST_CASE("errors: sizes, aspect ratio, budgets, buffers")) {
        qvl_params p = qvl_params_default();
        uint8_t px[3 * 64] = {0};
        qvl_image im;
        optiq_error e = {0};
        int64_t rh, rw;
        CHECK(qvl_preprocess(&p, NULL, 1, 1, &im, &e) == OPTIQ_ERR_INVALID_ARG && im.pixel_values == NULL);
        CHECK(qvl_preprocess(&p, px, 0, 1, &im, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "0x1"));
        CHECK(qvl_preprocess(&p, px, 1, -5, &im, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(qvl_preprocess(&p, px, 1, 1, NULL, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(qvl_preprocess(NULL, px, 1, 1, &im, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(qvl_smart_resize(&p, 1, INT64_C(1) << 40, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(qvl_smart_resize(&p, 1, 200, &rh, &rw, &e) == OPTIQ_OK);
        CHECK(qvl_smart_resize(&p, 201, 1, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG &&
              strstr(e.message, "absolute aspect ratio must be smaller than 200, got 201"));
        CHECK(qvl_smart_resize(&p, 3, 601, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG);
        p.min_pixels = 0; /* a tiny image then rounds to 0x0, which cannot be processed */
        CHECK(qvl_smart_resize(&p, 1, 1, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "0x0"));
        CHECK(qvl_preprocess(&p, px, 1, 1, &im, &e) == OPTIQ_ERR_INVALID_ARG && im.pixel_values == NULL);
        p = qvl_params_default();
        p.min_pixels = QVL_MAX_PIXELS; /* 1x200 scaled up to 2^26 px overshoots the limit */
        CHECK(qvl_smart_resize(&p, 1, 200, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "at most"));
        p = qvl_params_default();
        p.patch_size = 0;
        CHECK(qvl_smart_resize(&p, 64, 64, &rh, &rw, &e) == OPTIQ_ERR_INVALID_ARG);
        p = qvl_params_default();
        p.image_std[1] = 0.0f;
        CHECK(qvl_preprocess(&p, px, 8, 8, &im, &e) == OPTIQ_ERR_INVALID_ARG);
        p = qvl_params_default();
        CHECK(qvl_patchify(&p, px, 8, 8, &im, &e) == OPTIQ_ERR_INVALID_ARG); /* not a multiple of 32 */
        CHECK(qvl_patchify(&p, px, 32, 0, &im, &e) == OPTIQ_ERR_INVALID_ARG);
        qvl_image_free(NULL);
    }
    for (TEST_CASE("resample: argument checks, copy, channels independent")) {
        uint8_t a[6 * 5 * 3], b[9 * 4 * 3], one[9 * 4];
        for (int i = 0; i < 90; i++) a[i] = (uint8_t)(i * 53 + 7);
        optiq_error e = {0};
        CHECK(resample_bicubic_u8(NULL, 5, 6, 3, b, 4, 9, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(resample_bicubic_u8(a, 5, 6, 0, b, 4, 9, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(resample_bicubic_u8(a, 5, 6, 5, b, 4, 9, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(resample_bicubic_u8(a, 0, 6, 3, b, 4, 9, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(resample_bicubic_u8(a, 5, 6, 3, b, 4, 1 << 24, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(resample_bicubic_u8(a, 5, 6, 3, b, 5, 6, &e) == OPTIQ_OK && !memcmp(a, b, 90));
        CHECK(resample_bicubic_u8(a, 5, 6, 3, b, 4, 9, &e) == OPTIQ_OK);
        for (int c = 0; c < 3; c++) {
            uint8_t plane[30];
            for (int i = 0; i < 30; i++) plane[i] = a[3 * i + c];
            CHECK(resample_bicubic_u8(plane, 5, 6, 1, one, 4, 9, &e) == OPTIQ_OK);
            for (int i = 0; i < 36; i++) CHECKF(one[i] == b[3 * i + c], "channel %d sample %d", c, i);
        }
    }
}

int main(void) {
    char *text = NULL;
    optiq_error e = {0};
    cJSON *fx = NULL;
    if (json_read_file(test_path(FIXDIR "cases.json"), JSON_DEFAULT_CAP, &text, NULL, &e) == OPTIQ_OK)
        fx = cJSON_Parse(text);
    free(text);
    for (TEST_CASE("fixture " FIXDIR "cases.json loads")) CHECKF(fx != NULL, "cannot read or parse: %s", e.message);
    if (fx) {
        check_configs(fx);
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "cases")) check_case(c);
        check_smart_resize(fx);
    }
    check_parsing();
    check_values_and_errors();
    cJSON_Delete(fx);
    return test_finish();
}
