/*
 * test_gemma4_vl.c — Gemma-4 images end to end on the vision fixtures
 * (tests/fixtures/models/gemma4-vl-mixed: the SigLIP-style tower, and
 * gemma4-vl-unified: the encoder-free 12B-style embedder; quantized language
 * towers plus the bf16 sidecar mlx-optiq's build_vision_sidecar wrote;
 * references from mlx-vlm 0.7.10, tools/reference/gen_gemma4_vl.py).
 *
 * Per prompt (one image; two images of different sizes), through the
 * public API on the exact path:
 *   pixels     the PNGs decoded and preprocessed here hash (SHA-256 of the
 *              f32 [3, th, tw] values) to the reference processor's;
 *   layout     each <|image|> expanded to <boi> + n image tokens + <eoi>
 *              == mlx-vlm's input_ids;
 *   tower      soft tokens within 1e-4 of the f32 run (max |d| / max |ref|);
 *   embeds     the merged input embeddings (scaled text rows, unscaled image
 *              rows, as mlx-vlm scatters them) likewise;
 *   logits     at the stored positions, 1e-4 of the f32 run;
 *   greedy     32 tokens == the f32 run's (the exact path; mlx-vlm's bf16
 *              run diverges from its own f32 run on these tiny models).
 * mlx-vlm 0.7.10 starts these prompts with two <bos> (its processor adds
 * special tokens on top of the template's); the prompts here are mlx-vlm's
 * ids with the image runs collapsed back to one <|image|> each.
 *
 * The mask: on the unified fixture (use_bidirectional_attention "vision")
 * the first token of an image span changes when a later token of the same
 * span changes, while text before the span does not; on the encoder-based
 * fixture (plain causal) it does not.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/dtype.h"
#include "base/threadpool.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "optiq.h"
#include "sha256.h"
#include "test.h"

static optiq_error e;

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

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

static const st_tensor *find(const st_file *f, const char *fmt, int p) {
    char name[128];
    snprintf(name, sizeof name, fmt, p);
    return st_find(f, name);
}

/* ---- one fixture ---- */

static void test_fixture(const char *name, int image_token, int boi, int eoi) {
    char dir[512], path[700], label[256];
    snprintf(dir, sizeof dir, "%s", test_path("tests/fixtures/models/"));
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    snprintf(path, sizeof path, "%s/reference_vl.json", dir);
    cJSON *rj = load_json(path);
    snprintf(path, sizeof path, "%s/reference_vl.safetensors", dir);
    st_file *ref = NULL;
    optiq_engine *eng = NULL;
    optiq_engine_params ep = optiq_engine_default();
    ep.exact = 1;
    ep.n_threads = 2;
    snprintf(label, sizeof label, "%s: load the folder with its sidecar and the reference", name);
    for (TEST_CASE(label)) {
        CHECK(rj != NULL);
        CHECKF(st_open(path, &ref, &e) == OPTIQ_OK, "%s", e.message);
        CHECKF(optiq_engine_load(dir, &ep, &eng, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(eng && optiq_engine_has_vision(eng));
    }
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(rj, "prompts");
    for (int p = 0; eng && ref && p < cJSON_GetArraySize(prompts); p++) {
        const cJSON *pr = cJSON_GetArrayItem(prompts, p);
        const st_tensor *tid = find(ref, "p%d.input_ids", p);
        if (!tid) break;
        size_t T = (size_t)tid->shape[0];
        int32_t *want_ids = malloc(T * sizeof *want_ids), *ids = malloc(T * sizeof *ids);
        memcpy(want_ids, tid->data, T * sizeof *want_ids);
        /* collapse each <boi> image... <eoi> back to one placeholder */
        size_t n = 0;
        for (size_t i = 0; i < T; i++) {
            if (want_ids[i] == boi || want_ids[i] == eoi) continue;
            if (want_ids[i] == image_token && i > 0 && want_ids[i - 1] == image_token) continue;
            ids[n++] = want_ids[i];
        }
        const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(pr, "images");
        int n_img = cJSON_GetArraySize(imgs);
        optiq_image im[4];
        char img_path[4][600];
        for (int k = 0; k < n_img && k < 4; k++) {
            snprintf(img_path[k], sizeof img_path[k], "%s/%s", test_path("tests/fixtures"),
                     cJSON_GetArrayItem(imgs, k)->valuestring);
            im[k] = (optiq_image){.source = img_path[k]};
        }

        snprintf(label, sizeof label, "%s p%d (%d image%s): pixels, layout, tower, embeddings, logits vs mlx-vlm f32",
                 name, p, n_img, n_img == 1 ? "" : "s");
        for (TEST_CASE(label)) {
            char out[] = "/tmp/optiq_g4vl_XXXXXX";
            int fd = mkstemp(out);
            CHECK(fd >= 0);
            if (fd < 0) break;
            close(fd);
            CHECKF(optiq_dump_images(eng, ids, n, im, (size_t)n_img, out, &e) == OPTIQ_OK, "%s", e.message);
            st_file *d = NULL;
            if (st_open(out, &d, &e) != OPTIQ_OK) {
                CHECKF(0, "%s", e.message);
                unlink(out);
                break;
            }
            /* layout */
            const st_tensor *tk = st_find(d, "tokens");
            CHECKF(tk && (size_t)tk->shape[0] == T && !memcmp(tk->data, want_ids, T * sizeof *want_ids),
                   "expanded ids differ from mlx-vlm's (%lld vs %zu tokens)", tk ? (long long)tk->shape[0] : -1LL, T);
            /* pixels: each image's [3, th, tw] block hashes to the reference's */
            const st_tensor *px = st_find(d, "pixel_values");
            const cJSON *pv = cJSON_GetObjectItemCaseSensitive(pr, "pixel_values");
            const st_tensor *grid = st_find(d, "grid_thw");
            size_t off = 0;
            for (int k = 0; px && grid && k < n_img; k++) {
                const cJSON *pk = cJSON_GetArrayItem(pv, k);
                const cJSON *shape = cJSON_GetObjectItemCaseSensitive(pk, "pixel_values_shape");
                int32_t g[3];
                memcpy(g, (const char *)grid->data + 12 * k, 12);
                size_t th = (size_t)g[1] * 16, tw = (size_t)g[2] * 16, cnt = 3 * th * tw;
                CHECK((off + cnt) * 4 <= px->nbytes);
                if ((off + cnt) * 4 > px->nbytes) break;
                float *blk = malloc(cnt * sizeof *blk);
                memcpy(blk, (const char *)px->data + off * 4, cnt * 4);
                float *hashed = blk;
                size_t hn = cnt;
                if (cJSON_GetArraySize(shape) == 2) {
                    /* the unified processor's layout: 48x48 patch rows in (row, col, channel)
                     * order, raster over the patches, zero rows up to the budget */
                    size_t R = (size_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
                    size_t P = 48, D = P * P * 3, gw = tw / P;
                    hashed = calloc(R * D, sizeof *hashed);
                    hn = R * D;
                    for (size_t r = 0; r < (th / P) * gw && r < R; r++)
                        for (size_t y = 0; y < P; y++)
                            for (size_t x = 0; x < P; x++)
                                for (size_t ch = 0; ch < 3; ch++)
                                    hashed[r * D + (y * P + x) * 3 + ch] =
                                        blk[(ch * th + (r / gw) * P + y) * tw + (r % gw) * P + x];
                }
                char hex[65];
                sha256_hex(hashed, hn * 4, hex);
                const cJSON *want = cJSON_GetObjectItemCaseSensitive(pk, "pixel_values_sha256");
                CHECKF(cJSON_IsString(want) && !strcmp(hex, want->valuestring), "image %d: pixel values differ", k);
                if (hashed != blk) free(hashed);
                free(blk);
                off += cnt;
            }
            /* tower */
            float *soft = as_f32(find(ref, "p%d.f32.soft_tokens", p));
            const st_tensor *vis = st_find(d, "vision");
            double ev = -1, ee = -1, el = -1;
            if (soft && vis) {
                float *v = as_f32(vis);
                CHECK(vis->nelem == find(ref, "p%d.f32.soft_tokens", p)->nelem);
                if (vis->nelem == find(ref, "p%d.f32.soft_tokens", p)->nelem) ev = rel_err(v, soft, vis->nelem);
                CHECKF(ev >= 0 && ev <= 1e-4, "soft tokens: relative error %.3g vs the f32 run", ev);
                /* within bf16 noise of mlx-vlm's bf16 run: no farther from it than its own f32 run is */
                const st_tensor *bt = find(ref, "p%d.bf16.soft_tokens", p);
                if (bt && bt->nelem == vis->nelem) {
                    float *b16 = as_f32(bt);
                    double eb = rel_err(v, b16, vis->nelem), eref = rel_err(soft, b16, vis->nelem);
                    CHECKF(eb <= eref * 1.01 + 1e-4, "soft tokens: %.3g from the bf16 run, mlx-vlm's f32 run is %.3g",
                           eb, eref);
                    printf("     %s p%d: soft tokens vs the bf16 run %.2e (mlx-vlm's f32 run: %.2e)\n", name, p, eb, eref);
                    free(b16);
                }
                free(v);
            } else
                CHECK(0);
            /* embeddings (stored for p0) */
            const st_tensor *rembt = find(ref, "p%d.f32.inputs_embeds", p), *emb = st_find(d, "embeds");
            if (rembt && emb && rembt->nelem == emb->nelem) {
                float *a = as_f32(emb), *b = as_f32(rembt);
                ee = rel_err(a, b, emb->nelem);
                CHECKF(ee <= 1e-4, "input embeddings: relative error %.3g vs the f32 run", ee);
                free(a), free(b);
            }
            /* logits at the stored rows */
            const st_tensor *rows = find(ref, "p%d.logits_rows", p), *rl = find(ref, "p%d.f32.logits", p);
            const st_tensor *lg = st_find(d, "logits");
            if (rows && rl && lg) {
                int64_t R = rows->shape[0], V = rl->shape[1];
                float *all = as_f32(lg), *want = as_f32(rl), *sel = malloc((size_t)(R * V) * sizeof *sel);
                for (int64_t j = 0; j < R; j++) {
                    int32_t r;
                    memcpy(&r, (const char *)rows->data + 4 * j, 4);
                    memcpy(sel + j * V, all + (int64_t)r * V, (size_t)V * sizeof *sel);
                }
                el = rel_err(sel, want, (size_t)(R * V));
                CHECKF(el <= 1e-4, "logits: relative error %.3g vs the f32 run", el);
                free(all), free(want), free(sel);
            } else
                CHECK(0);
            printf("     %s p%d: soft tokens %.2e, embeddings %.2e, logits %.2e (relative, vs f32)\n", name, p, ev, ee,
                   el);
            free(soft);
            st_close(d);
            unlink(out);
        }

        snprintf(label, sizeof label, "%s p%d: 32 greedy tokens == mlx-vlm's f32 run", name, p);
        for (TEST_CASE(label)) {
            optiq_session *s = NULL;
            CHECK(optiq_session_new(eng, &s, &e) == OPTIQ_OK);
            if (!s) break;
            optiq_generate_params gp = optiq_generate_default();
            gp.max_tokens = 32;
            gp.ignore_eos = 1;
            gp.images = im;
            gp.n_images = (size_t)n_img;
            optiq_generation g = {0};
            CHECKF(optiq_generate(s, ids, n, &gp, &g, &e) == OPTIQ_OK, "%s", e.message);
            const st_tensor *fg = find(ref, "p%d.f32.greedy", p);
            CHECK(fg && g.n_tokens == 32 && g.prompt_tokens == (int64_t)T);
            if (fg && g.n_tokens == 32) {
                int32_t want[32];
                memcpy(want, fg->data, sizeof want);
                for (int k = 0; k < 32; k++) CHECKF(g.tokens[k] == want[k], "step %d: %d, mlx-vlm f32 %d", k, g.tokens[k], want[k]);
            }
            optiq_generation_free(&g);
            optiq_session_free(s);
        }
        free(ids), free(want_ids);
    }
    optiq_engine_free(eng);
    st_close(ref);
    cJSON_Delete(rj);
}

/* ---- the mask ---- */

typedef struct capture {
    float *last; /* (n, H) the last stage */
    int64_t n, H;
    int want;
} capture;

static void on_hidden(void *user, int stage, const float *h, int64_t n, int64_t H) {
    capture *c = user;
    if (stage == c->want) memcpy(c->last, h, sizeof(float) * (size_t)(n * H));
    (void)n;
}

/* Hidden states after the last layer for tokens with 12 image rows at
 * [4, 16), the rows taken from emb (random), where row `bump` gets +1. */
static int run_masked(lm_model *m, thread_pool *pool, const int32_t *tok, const float *emb, int64_t n, int bump,
                      float *out) {
    const lm_info *in = lm_get_info(m);
    int64_t H = in->hidden_size;
    float *x = malloc(sizeof(float) * (size_t)(n * H));
    uint8_t img[32] = {0};
    memcpy(x, emb, sizeof(float) * (size_t)(n * H));
    for (int i = 4; i < 16; i++) img[i] = 1;
    if (bump >= 0)
        for (int64_t k = 0; k < H; k++) x[bump * H + k] += 1.0f;
    lm_cache *c = NULL;
    optiq_error er;
    capture cap = {out, n, H, in->n_layers};
    int ok = lm_cache_new(m, 64, &c, &er) == OPTIQ_OK;
    lm_forward_args a = {tok, x, n, NULL, NULL, 0, on_hidden, &cap, img};
    ok = ok && lm_forward(m, c, pool, &a, &er) == OPTIQ_OK;
    lm_cache_free(c);
    free(x);
    return ok;
}

static void test_mask(const char *name, int bidirectional) {
    char label[256];
    snprintf(label, sizeof label, "%s: a change at the end of an image span %s its first token; text before it "
             "never changes", name, bidirectional ? "reaches" : "does not reach");
    for (TEST_CASE(label)) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s", test_path("tests/fixtures/models/"));
        strncat(dir, name, sizeof dir - strlen(dir) - 1);
        lm_model *m = NULL;
        CHECKF(lm_load(dir, &m, &e) == OPTIQ_OK, "%s", e.message);
        if (!m) break;
        lm_set_exact(m, 1);
        thread_pool *pool = pool_create(2);
        int64_t n = 24, H = lm_get_info(m)->hidden_size;
        int32_t tok[24];
        for (int i = 0; i < 24; i++) tok[i] = 20 + i;
        float *emb = malloc(sizeof(float) * (size_t)(n * H));
        CHECK(lm_embed(m, tok, n, emb, &e) == OPTIQ_OK);
        uint64_t x = 7;
        for (int64_t i = 4 * H; i < 16 * H; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            emb[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
        }
        float *a = malloc(sizeof(float) * (size_t)(n * H)), *b = malloc(sizeof(float) * (size_t)(n * H));
        CHECK(run_masked(m, pool, tok, emb, n, -1, a) && run_masked(m, pool, tok, emb, n, 15, b));
        double first = 0, text = 0, after = 0;
        for (int64_t k = 0; k < H; k++) {
            first = fmax(first, fabs(a[4 * H + k] - b[4 * H + k]));
            for (int i = 0; i < 4; i++) text = fmax(text, fabs(a[i * H + k] - b[i * H + k]));
            after = fmax(after, fabs(a[20 * H + k] - b[20 * H + k]));
        }
        CHECKF(text == 0, "text before the span changed by %g", text);
        CHECKF(bidirectional ? first > 1e-3 : first == 0, "the span's first token changed by %g", first);
        CHECKF(after > 1e-3, "text after the span did not see the change (%g)", after);
        free(a), free(b), free(emb);
        pool_free(pool);
        lm_free(m);
    }
}

/* ---- per-image budgets ---- */

static void test_budgets(void) {
    for (TEST_CASE("soft-token budgets per image: counts, prompt lengths, refusals")) {
        char dir[512], img[600];
        snprintf(dir, sizeof dir, "%s", test_path("tests/fixtures/models/gemma4-vl-mixed"));
        snprintf(img, sizeof img, "%s", test_path("tests/fixtures/preprocess/gemma4/astronaut_96x128.png"));
        optiq_engine *eng = NULL;
        CHECKF(optiq_engine_load(dir, NULL, &eng, &e) == OPTIQ_OK, "%s", e.message);
        if (!eng) break;
        /* 96 x 128 (h x w): 70 -> 336 x 432 (63), 140 -> 480 x 624 (130), 280 -> 672 x 912 (266) soft tokens,
         * plus <boi> and <eoi> */
        static const int budget[] = {0, 70, 140, 280};
        static const int64_t want[] = {65, 65, 132, 268}; /* the folder's processor config says 70 */
        int64_t prev = -1;
        for (int k = 0; k < 4; k++) {
            optiq_image im = {.source = img, .max_soft_tokens = budget[k]};
            int64_t n = -1;
            CHECKF(optiq_engine_image_tokens(eng, &im, &n, &e) == OPTIQ_OK, "%s", e.message);
            CHECKF(n == want[k], "budget %d: %lld tokens, expected %lld", budget[k], (long long)n, (long long)want[k]);
            /* the prompt a generation sees grows by the same count */
            optiq_session *s = NULL;
            CHECK(optiq_session_new(eng, &s, &e) == OPTIQ_OK);
            const optiq_tokenizer *tok = optiq_engine_tokenizer(eng);
            int32_t img_id = optiq_tokenizer_token_to_id(tok, "<|image|>", 9), ids[3] = {2, img_id, 20};
            optiq_generate_params gp = optiq_generate_default();
            gp.max_tokens = 1;
            gp.images = &im;
            gp.n_images = 1;
            optiq_generation g = {0};
            CHECKF(optiq_generate(s, ids, 3, &gp, &g, &e) == OPTIQ_OK, "%s", e.message);
            CHECK(g.prompt_tokens == 2 + n);
            if (k > 0) CHECK(g.prompt_tokens >= prev);
            prev = g.prompt_tokens;
            optiq_generation_free(&g);
            optiq_session_free(s);
        }
        optiq_image bad = {.source = img, .max_soft_tokens = 100};
        int64_t n = 0;
        CHECK(optiq_engine_image_tokens(eng, &bad, &n, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(e.message, "70, 140, 280, 560, 1120") != NULL, "%s", e.message);
        optiq_engine_free(eng);
    }
}

int main(void) {
    /* image / boi / eoi ids of the fixture tokenizer (config.json) */
    for (int f = 0; f < 2; f++) {
        const char *name = f ? "gemma4-vl-unified" : "gemma4-vl-mixed";
        char path[600];
        snprintf(path, sizeof path, "%s/%s/config.json", test_path("tests/fixtures/models"), name);
        cJSON *cfg = load_json(path);
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, "image_token_id");
        const cJSON *bo = cJSON_GetObjectItemCaseSensitive(cfg, "boi_token_id");
        const cJSON *eo = cJSON_GetObjectItemCaseSensitive(cfg, "eoi_token_id");
        if (cJSON_IsNumber(it) && cJSON_IsNumber(bo) && cJSON_IsNumber(eo))
            test_fixture(name, it->valueint, bo->valueint, eo->valueint);
        else
            for (TEST_CASE("fixture config has image, boi and eoi token ids")) CHECK(0);
        cJSON_Delete(cfg);
    }
    test_mask("gemma4-vl-unified", 1);
    test_mask("gemma4-vl-mixed", 0);
    test_budgets();
    return test_finish();
}
