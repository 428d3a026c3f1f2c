/*
 * test_qwen35_vl.c — images end to end on the Qwen3.5 vision fixture
 * (tests/fixtures/models/qwen35-vl-mixed: a quantized language tower plus
 * the bf16 sidecar mlx-optiq's build_vision_sidecar wrote; references from
 * mlx-vlm 0.7.10, tools/reference/gen_qwen35_vl.py).
 *
 * Per prompt (one image, two images, a small image):
 *   pixels     the PNG files decoded and preprocessed here == the reference
 *              processor's pixel_values, max abs diff 0;
 *   layout     placeholders expanded == the reference's input_ids; the
 *              three-axis positions == get_rope_index's, and rope_delta;
 *   tower      soft tokens (from our pixels) within 1e-4 of the f32 run
 *              (max |d| / max |ref|), within bf16 noise of the bf16 run;
 *   embeds     the merged input embeddings likewise;
 *   logits     after the prompt (exact path): 1e-4 of the f32 run, bf16 noise;
 *   greedy     32 tokens (generate_step's split prefill) == the f32 run's;
 *              the fast path's too. Against the bf16 run divergences are
 *              printed with the reference's margins.
 * Also: the folder without its sidecar is a text-only model whose text
 * results equal the full folder's, and refuses images with a clear error;
 * errors for a broken image and for more images than placeholders.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/dtype.h"
#include "io/json.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "optiq.h"
#include "test.h"
#include "vision/frontend.h"
#include "vision/mm_prompt.h"

#define FIX "tests/fixtures/models/qwen35-vl-mixed"

static optiq_error e;
static st_file *ref;

static const st_tensor *T(const char *fmt, int p) {
    char name[128];
    snprintf(name, sizeof name, fmt, p);
    const st_tensor *t = st_find(ref, name);
    if (!t) printf("     (reference tensor %s missing)\n", name);
    return t;
}

/* f32 copy of a reference tensor (F32 or BF16). */
static float *as_f32(const st_tensor *t) {
    if (!t) return NULL;
    float *o = malloc(t->nelem * sizeof *o + 1);
    for (uint64_t i = 0; o && i < t->nelem; i++) o[i] = load_as_f32(t->data, t->dtype, (size_t)i);
    return o;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* ours vs the f32 run (<= 1e-4) and vs the bf16 run (no farther than the f32 run is, x1.01 + 1e-4) */
static void compare(const char *what, const float *ours, const st_tensor *f32, const st_tensor *b16, size_t n) {
    float *a = as_f32(f32), *b = as_f32(b16);
    CHECKF(a && b && f32->nelem == n && b16->nelem == n, "%s: reference shape (%llu values) != ours (%zu)", what,
           f32 ? (unsigned long long)f32->nelem : 0ull, n);
    if (a && b && f32->nelem == n && b16->nelem == n) {
        double e32 = rel_err(ours, a, n), e16 = rel_err(ours, b, n), ref16 = rel_err(a, b, n);
        printf("     %s: vs f32 run %.2e, vs bf16 run %.2e (mlx f32 vs bf16: %.2e)\n", what, e32, e16, ref16);
        CHECKF(e32 <= 1e-4, "%s: %.3g from the f32 run (budget 1e-4)", what, e32);
        CHECKF(e16 <= ref16 * 1.01 + 1e-4, "%s: %.3g from the bf16 run, beyond its own %.3g", what, e16, ref16);
    }
    free(a), free(b);
}

/* Images of prompt p as optiq_image paths (static storage). */
static size_t prompt_images(const cJSON *prompt, optiq_image *im, char paths[][512]) {
    const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(prompt, "images");
    size_t n = 0;
    for (const cJSON *x = imgs ? imgs->child : NULL; x && n < 4; x = x->next, n++) {
        snprintf(paths[n], 512, "%s/%s", test_path(FIX), x->valuestring);
        im[n] = (optiq_image){.source = paths[n]};
    }
    return n;
}

static int32_t *encode(const optiq_engine *en, const char *text, size_t *n) {
    int32_t *ids = NULL;
    *n = 0;
    if (optiq_tokenizer_encode(optiq_engine_tokenizer(en), text, strlen(text), 0, &ids, n, &e)) return NULL;
    return ids;
}

static int copy_file(const char *from, const char *to) {
    char *d = NULL;
    size_t n = 0;
    optiq_error er;
    if (json_read_file(from, 1u << 28, &d, &n, &er)) return 1;
    FILE *f = fopen(to, "wb");
    int bad = !f || fwrite(d, 1, n, f) != n;
    if (f) bad |= fclose(f) != 0;
    free(d);
    return bad;
}

int main(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/reference_vl.safetensors", test_path(FIX));
    struct stat sb;
    if (stat(path, &sb) != 0) {
        printf("FAIL fixture %s missing\n", path);
        return 1;
    }
    cJSON *meta = NULL;
    snprintf(path, sizeof path, "%s/reference_vl.json", test_path(FIX));
    if (json_load_file(path, NULL, 0, &meta, &e)) {
        printf("FAIL %s\n", e.message);
        return 1;
    }
    snprintf(path, sizeof path, "%s/reference_vl.safetensors", test_path(FIX));
    if (st_open(path, &ref, &e)) {
        printf("FAIL %s\n", e.message);
        return 1;
    }
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(meta, "prompts");
    const st_tensor *table_t = st_find(ref, "pixel_table");

    model_dir *md = NULL;
    vision_fe *fe = NULL;
    optiq_engine *ex = NULL, *fast = NULL;
    optiq_engine_params ep = optiq_engine_default();
    ep.exact = 1;
    for (TEST_CASE("load: the folder has a vision front-end")) {
        CHECKF(model_dir_open(test_path(FIX), &md, &e) == OPTIQ_OK, "%s", e.message);
        CHECKF(md && vision_fe_load(md, 64, &fe, &e) == OPTIQ_OK && fe, "%s", e.message);
        CHECKF(optiq_engine_load(test_path(FIX), &ep, &ex, &e) == OPTIQ_OK, "%s", e.message);
        CHECKF(optiq_engine_load(test_path(FIX), NULL, &fast, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(ex && optiq_engine_has_vision(ex) && fast && optiq_engine_has_vision(fast));
    }
    if (!fe || !ex || !fast || !table_t) return test_finish();
    float *table = as_f32(table_t);
    const mm_tokens *tk = vision_fe_tokens(fe);

    int pi = 0;
    for (const cJSON *pr = prompts ? prompts->child : NULL; pr; pr = pr->next, pi++) {
        optiq_image im[4];
        char paths[4][512];
        size_t n_img = prompt_images(pr, im, paths);
        const char *text = cJSON_GetObjectItemCaseSensitive(pr, "rendered_text")->valuestring;
        size_t n_ids = 0;
        int32_t *ids = encode(ex, text, &n_ids);
        int32_t grid[12];
        char name[160];

        snprintf(name, sizeof name, "p%d (%zu image%s): pixel_values == the processor's, max abs diff 0", pi, n_img,
                 n_img == 1 ? "" : "s");
        for (TEST_CASE(name)) {
            float *px = NULL;
            int64_t np = 0, dim = 0;
            CHECKF(vision_fe_pixels(fe, im, n_img, &px, &np, &dim, grid, &e) == OPTIQ_OK, "%s", e.message);
            const st_tensor *codes = T("p%d.pixel_codes", pi), *g = T("p%d.grid_thw", pi);
            CHECK(codes && g && (int64_t)codes->shape[0] == np && (int64_t)codes->shape[1] == dim);
            if (px && codes && (int64_t)codes->shape[0] == np) {
                size_t diff = 0, first = (size_t)-1;
                for (size_t i = 0; i < (size_t)(np * dim); i++)
                    if (px[i] != table[((const uint8_t *)codes->data)[i]]) diff++, first = first == (size_t)-1 ? i : first;
                CHECKF(diff == 0, "%zu of %lld values differ (first at patch %zu, feature %zu)", diff,
                       (long long)(np * dim), first / (size_t)dim, first % (size_t)dim);
                CHECK(memcmp(g->data, grid, 3 * n_img * sizeof(int32_t)) == 0);
            }
            free(px);
        }

        snprintf(name, sizeof name, "p%d: expanded ids, MRoPE positions and rope_delta == get_rope_index's", pi);
        for (TEST_CASE(name)) {
            const st_tensor *want = T("p%d.input_ids", pi), *wpos = T("p%d.position_ids", pi), *wd = T("p%d.rope_delta", pi);
            int64_t per[4];
            for (size_t i = 0; i < n_img; i++) per[i] = (int64_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2] / 4;
            int32_t *x = NULL;
            size_t nx = 0;
            CHECKF(ids && mm_expand(tk, ids, n_ids, per, n_img, &x, &nx, &e) == OPTIQ_OK, "%s", e.message);
            CHECK(x && want && want->nelem == nx && memcmp(x, want->data, nx * 4) == 0);
            int32_t *pos = x ? malloc(3 * nx * sizeof *pos) : NULL;
            int64_t next = 0;
            CHECKF(pos && mm_positions(tk, x, nx, grid, n_img, 0, pos, &next, &e) == OPTIQ_OK, "%s", e.message);
            CHECK(pos && wpos && wpos->nelem == 3 * nx && memcmp(pos, wpos->data, 3 * nx * 4) == 0);
            int32_t delta = 0;
            if (wd) memcpy(&delta, wd->data, 4);
            CHECKF(next - (int64_t)nx == delta, "rope_delta %lld, reference %d", (long long)(next - (int64_t)nx), delta);
            free(x), free(pos);
        }

        snprintf(name, sizeof name, "p%d: soft tokens (from our pixels) vs the f32 and bf16 runs", pi);
        for (TEST_CASE(name)) {
            float *feats = NULL;
            int64_t nt[4], total = 0;
            thread_pool *pool = pool_create(0);
            CHECKF(vision_fe_encode(fe, pool, im, n_img, &feats, grid, nt, &e) == OPTIQ_OK, "%s", e.message);
            for (size_t i = 0; i < n_img; i++) total += nt[i];
            if (feats) compare("soft tokens", feats, T("p%d.f32.vision", pi), T("p%d.bf16.vision", pi), (size_t)(total * 64));
            free(feats);
            pool_free(pool);
        }

        snprintf(name, sizeof name, "p%d: logits after the prompt (exact path) vs the f32 and bf16 runs", pi);
        for (TEST_CASE(name)) {
            optiq_session *s = NULL;
            float logits[512];
            CHECKF(optiq_session_new(ex, &s, &e) == OPTIQ_OK, "%s", e.message);
            CHECKF(s && optiq_session_eval_images(s, ids, n_ids, im, n_img, logits, &e) == OPTIQ_OK, "%s", e.message);
            const st_tensor *want = T("p%d.input_ids", pi);
            CHECK(s && want && optiq_session_position(s) == (int64_t)want->nelem);
            compare("logits", logits, T("p%d.f32.logits", pi), T("p%d.bf16.logits", pi), 512);
            optiq_session_free(s);
        }

        snprintf(name, sizeof name, "p%d: optiq_dump_images: merged embeddings, positions, ids (f32 and bf16 runs)", pi);
        for (TEST_CASE(name)) {
            char out[256];
            snprintf(out, sizeof out, "/tmp/optiq_test_vl_dump_%ld.safetensors", (long)getpid());
            CHECKF(optiq_dump_images(ex, ids, n_ids, im, n_img, out, &e) == OPTIQ_OK, "%s", e.message);
            st_file *d = NULL;
            CHECKF(st_open(out, &d, &e) == OPTIQ_OK, "%s", e.message);
            const st_tensor *emb = d ? st_find(d, "embeds") : NULL, *pos = d ? st_find(d, "positions") : NULL;
            const st_tensor *tok = d ? st_find(d, "tokens") : NULL, *px = d ? st_find(d, "pixel_values") : NULL;
            const st_tensor *wpos = T("p%d.position_ids", pi), *wids = T("p%d.input_ids", pi);
            CHECK(emb && pos && tok && px && wpos && wids);
            if (emb && pos && tok && wpos && wids) {
                float *ours = as_f32(emb); /* the file's data may be unaligned */
                compare("embeds", ours, T("p%d.f32.embeds", pi), T("p%d.bf16.embeds", pi), (size_t)emb->nelem);
                free(ours);
                CHECK(pos->nbytes == wpos->nbytes && memcmp(pos->data, wpos->data, pos->nbytes) == 0);
                CHECK(tok->nbytes == wids->nbytes && memcmp(tok->data, wids->data, tok->nbytes) == 0);
                CHECK(px->nelem == T("p%d.pixel_codes", pi)->nelem);
            }
            st_close(d);
            unlink(out);
        }

        for (int f = 0; f < 2; f++) {
            snprintf(name, sizeof name, "p%d: 32 greedy tokens (%s path) == the f32 run's", pi, f ? "fast" : "exact");
            for (TEST_CASE(name)) {
                optiq_session *s = NULL;
                CHECKF(optiq_session_new(f ? fast : ex, &s, &e) == OPTIQ_OK, "%s", e.message);
                optiq_generate_params gp = optiq_generate_default();
                gp.max_tokens = 32;
                gp.ignore_eos = 1;
                gp.images = im;
                gp.n_images = n_img;
                optiq_generation g;
                CHECKF(s && optiq_generate(s, ids, n_ids, &gp, &g, &e) == OPTIQ_OK, "%s", e.message);
                const st_tensor *w = T("p%d.f32.greedy", pi), *wb = T("p%d.bf16.greedy", pi);
                if (s && w && g.n_tokens == 32) {
                    int first = -1, first_b = -1;
                    for (int i = 0; i < 32; i++) {
                        int32_t a, b;
                        memcpy(&a, (const uint8_t *)w->data + 4 * i, 4);
                        memcpy(&b, (const uint8_t *)wb->data + 4 * i, 4);
                        if (first < 0 && g.tokens[i] != a) first = i;
                        if (first_b < 0 && g.tokens[i] != b) first_b = i;
                    }
                    CHECKF(first < 0, "differs from the f32 run at step %d", first);
                    if (first_b >= 0)
                        printf("     differs from the bf16 run at step %d (the bf16 run's own smallest margin: %g)\n",
                               first_b, cJSON_GetObjectItemCaseSensitive(pr, "bf16_margin_min")->valuedouble);
                    else
                        printf("     = the bf16 run too\n");
                } else
                    CHECKF(0, "%zu tokens", s ? g.n_tokens : 0);
                if (s) optiq_generation_free(&g);
                optiq_session_free(s);
            }
        }
        optiq_free(ids);
    }

    for (TEST_CASE("errors: more images than placeholders, a broken image, a session left usable")) {
        optiq_session *s = NULL;
        CHECK(optiq_session_new(ex, &s, &e) == OPTIQ_OK);
        size_t n = 0;
        int32_t *ids = encode(ex, "<|vision_start|><|image_pad|><|vision_end|>hi", &n);
        char p0[512];
        snprintf(p0, sizeof p0, "%s/images/img0.png", test_path(FIX));
        optiq_image two[2] = {{.source = p0}, {.source = p0}};
        CHECK(optiq_session_eval_images(s, ids, n, two, 2, NULL, &e) == OPTIQ_ERR_INVALID_ARG &&
              strstr(e.message, "1 image placeholders for 2 images"));
        static const uint8_t junk[] = {0x89, 'P', 'N', 'G', 1, 2, 3};
        optiq_image bad = {.data = junk, .size = sizeof junk};
        optiq_status st = optiq_session_eval_images(s, ids, n, &bad, 1, NULL, &e);
        CHECKF(st != OPTIQ_OK && strstr(e.message, "image 1"), "%s", e.message);
        CHECK(optiq_session_position(s) == 0);
        CHECKF(optiq_session_eval_images(s, ids, n, two, 1, NULL, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(optiq_session_position(s) == (int64_t)n - 1 + 24);
        optiq_free(ids);
        optiq_session_free(s);
    }

    for (TEST_CASE("the folder without its sidecar: text-only, same text results, images refused")) {
        char dir[256];
        snprintf(dir, sizeof dir, "/tmp/optiq_test_vl_%ld", (long)getpid());
        mkdir(dir, 0755);
        static const char *const FILES[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                            "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                            "generation_config.json", "preprocessor_config.json"};
        char a[700], b[700];
        for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
            snprintf(a, sizeof a, "%s/%s", test_path(FIX), FILES[i]);
            snprintf(b, sizeof b, "%s/%s", dir, FILES[i]);
            CHECKF(copy_file(a, b) == 0, "cannot copy %s", FILES[i]);
        }
        optiq_engine *t = NULL;
        CHECKF(optiq_engine_load(dir, &ep, &t, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(t && !optiq_engine_has_vision(t));
        size_t n = 0;
        int32_t *ids = t ? encode(t, "<|im_start|>user\nDescribe a cat.<|im_end|>\n<|im_start|>assistant\n", &n) : NULL;
        optiq_session *s1 = NULL, *s2 = NULL;
        float l1[512], l2[512];
        CHECK(optiq_session_new(ex, &s1, &e) == OPTIQ_OK && t && optiq_session_new(t, &s2, &e) == OPTIQ_OK);
        CHECK(s1 && s2 && optiq_session_eval(s1, ids, n, l1, &e) == OPTIQ_OK &&
              optiq_session_eval(s2, ids, n, l2, &e) == OPTIQ_OK && memcmp(l1, l2, sizeof l1) == 0);
        char p0[512];
        snprintf(p0, sizeof p0, "%s/images/img0.png", test_path(FIX));
        optiq_image one = {.source = p0};
        optiq_session_reset(s2);
        CHECK(s2 && optiq_session_eval_images(s2, ids, n, &one, 1, NULL, &e) == OPTIQ_ERR_UNSUPPORTED &&
              strstr(e.message, "text-only"));
        optiq_session_free(s1), optiq_session_free(s2);
        optiq_free(ids);
        optiq_engine_free(t);
        for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
            snprintf(b, sizeof b, "%s/%s", dir, FILES[i]);
            unlink(b);
        }
        rmdir(dir);
    }

    free(table);
    optiq_engine_free(ex);
    optiq_engine_free(fast);
    vision_fe_free(fe);
    model_dir_close(md);
    st_close(ref);
    cJSON_Delete(meta);
    return test_finish();
}
