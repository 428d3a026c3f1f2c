/*
 * test_sidecar.c — `optiq sidecar` (vision/sidecar.h) on small folders built
 * here: which tensors go in and under which names, the channel-last convs,
 * the bf16 cast, the index and config.json edits, the processor files, the
 * refusal to overwrite, the same bytes on a second run with force, and the
 * errors. When the Qwen3.5 vision fixture is present, the sidecar built from
 * its bf16 base is compared tensor by tensor with the one mlx-optiq 0.7.7's
 * build_vision_sidecar wrote for it.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dtype.h"
#include "io/json.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "optiq.h"
#include "test.h"
#include "vision/sidecar.h"

static char root[256];
static optiq_error e;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *pj(const char *dir, const char *name) {
    static char buf[8][700];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put(const char *dir, const char *name, const char *text) {
    FILE *f = fopen(pj(dir, name), "wb");
    if (f) fputs(text, f), fclose(f);
}

static char *slurp(const char *path, size_t *n) {
    char *s = NULL;
    optiq_error er;
    if (json_read_file(path, 1u << 26, &s, n, &er)) return NULL;
    return s;
}

/* base: model.visual.* (conv3d channel-first, f32 and bf16), language tensors, audio */
static float CONV[4 * 3 * 2 * 2 * 2];
static uint16_t QKV[6 * 4];
static float LM[8];

static void make_base(const char *d, int with_index) {
    mkdir(d, 0755);
    for (size_t i = 0; i < sizeof CONV / sizeof CONV[0]; i++) CONV[i] = (float)i * 0.37f - 3.0f;
    for (size_t i = 0; i < sizeof QKV / sizeof QKV[0]; i++) QKV[i] = f32_to_bf16((float)i / 7.0f);
    st_writer *w = st_writer_new();
    int64_t sc[5] = {4, 3, 2, 2, 2}, sq[2] = {6, 4}, sl[2] = {2, 4}, sa[3] = {5, 1, 3};
    st_writer_add(w, "model.visual.patch_embed.proj.weight", DT_F32, 5, sc, CONV, &e);
    st_writer_add(w, "model.visual.blocks.0.attn.qkv.weight", DT_BF16, 2, sq, QKV, &e);
    st_writer_add(w, "model.language_model.embed_tokens.weight", DT_F32, 2, sl, LM, &e);
    st_writer_save(w, pj(d, with_index ? "model-00001-of-00002.safetensors" : "model.safetensors"), &e);
    st_writer_free(w);
    if (with_index) {
        w = st_writer_new();
        st_writer_add(w, "model.audio_tower.depthwise_conv1d.weight", DT_F32, 3, sa, CONV, &e);
        st_writer_add(w, "lm_head.weight", DT_F32, 2, sl, LM, &e);
        st_writer_save(w, pj(d, "model-00002-of-00002.safetensors"), &e);
        st_writer_free(w);
        put(d, "model.safetensors.index.json",
            "{\"metadata\": {}, \"weight_map\": {"
            "\"model.visual.patch_embed.proj.weight\": \"model-00001-of-00002.safetensors\","
            "\"model.visual.blocks.0.attn.qkv.weight\": \"model-00001-of-00002.safetensors\","
            "\"model.language_model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
            "\"model.audio_tower.depthwise_conv1d.weight\": \"model-00002-of-00002.safetensors\","
            "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
    }
    put(d, "config.json",
        "{\"model_type\": \"qwen3_5\", \"image_token_id\": 7, \"video_token_id\": 8, \"vision_start_token_id\": 5,"
        " \"vision_end_token_id\": 6, \"vision_config\": {\"depth\": 1, \"hidden_size\": 4, \"eps\": 1e-06},"
        " \"text_config\": {\"hidden_size\": 4}}");
    put(d, "preprocessor_config.json", "{\"patch_size\": 16}\n");
}

static void make_quant(const char *d, int with_index) {
    mkdir(d, 0755);
    st_writer *w = st_writer_new();
    int64_t sl[2] = {2, 4};
    st_writer_add(w, "language_model.model.embed_tokens.weight", DT_F32, 2, sl, LM, &e);
    st_writer_save(w, pj(d, "model.safetensors"), &e);
    st_writer_free(w);
    put(d, "config.json", "{\"model_type\": \"qwen3_5\", \"text_config\": {\"hidden_size\": 4}, \"quantization\": "
                          "{\"group_size\": 64, \"bits\": 4}}");
    if (with_index)
        put(d, "model.safetensors.index.json",
            "{\"metadata\": {\"total_size\": 32}, \"weight_map\": {\"language_model.model.embed_tokens.weight\": "
            "\"model.safetensors\"}}");
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/optiq_test_sidecar_%ld", (long)getpid());
    mkdir(root, 0755);

    for (TEST_CASE("multimodal names: containers stripped before matching")) {
        CHECK(sidecar_is_mm_key("model.visual.blocks.0.norm1.weight"));
        CHECK(sidecar_is_mm_key("model.vision_tower.encoder.layers.0.weight"));
        CHECK(sidecar_is_mm_key("model.encoder.audio_tower.x"));
        CHECK(sidecar_is_mm_key("embed_vision.embedding_projection.weight"));
        CHECK(sidecar_is_mm_key("model.merger.fc.weight"));
        CHECK(!sidecar_is_mm_key("model.language_model.layers.0.mlp.gate_proj.weight"));
        CHECK(!sidecar_is_mm_key("lm_head.weight"));
        CHECK(!sidecar_is_mm_key("model.decoder.visual.x")); /* only model. / encoder. are containers */
    }

    const char *base = pj(root, "base"), *quant = pj(root, "quant");
    char b1[700], q1[700];
    snprintf(b1, sizeof b1, "%s", base);
    snprintf(q1, sizeof q1, "%s", quant);
    make_base(b1, 1);
    make_quant(q1, 1);

    for (TEST_CASE("build: tensors, names, channel-last conv, bf16, index, config, processor files")) {
        cJSON *sum = NULL;
        CHECKF(sidecar_build(b1, q1, 0, &sum, &e) == OPTIQ_OK, "%s", e.message);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(sum, "n_tensors");
        CHECK(cJSON_IsNumber(n) && n->valuedouble == 3);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sum, "index_updated")));
        cJSON_Delete(sum);
        st_file *f = NULL;
        CHECKF(st_open(pj(q1, "optiq_vision.safetensors"), &f, &e) == OPTIQ_OK, "%s", e.message);
        if (f) {
            CHECK(st_count(f) == 3);
            CHECK(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "mlx") == 0);
            const st_tensor *c = st_find(f, "vision_tower.patch_embed.proj.weight");
            CHECK(c && c->dtype == DT_BF16 && c->ndim == 5 && c->shape[0] == 4 && c->shape[1] == 2 &&
                  c->shape[2] == 2 && c->shape[3] == 2 && c->shape[4] == 3);
            /* out[o][t][h][w][i] = in[o][i][t][h][w], rounded to bf16 */
            int bad = 0;
            for (int o = 0; c && o < 4; o++)
                for (int t = 0; t < 2; t++)
                    for (int h = 0; h < 2; h++)
                        for (int w = 0; w < 2; w++)
                            for (int i = 0; i < 3; i++) {
                                uint16_t got;
                                memcpy(&got, (const uint8_t *)c->data + 2 * ((((o * 2 + t) * 2 + h) * 2 + w) * 3 + i), 2);
                                bad += got != f32_to_bf16(CONV[(((o * 3 + i) * 2 + t) * 2 + h) * 2 + w]);
                            }
            CHECKF(!bad, "%d conv elements differ", bad);
            const st_tensor *q = st_find(f, "vision_tower.blocks.0.attn.qkv.weight");
            CHECK(q && q->dtype == DT_BF16 && memcmp(q->data, QKV, sizeof QKV) == 0);
            const st_tensor *a = st_find(f, "audio_tower.depthwise_conv1d.weight");
            CHECK(a && a->ndim == 3 && a->shape[0] == 5 && a->shape[1] == 3 && a->shape[2] == 1);
            CHECK(!st_find(f, "language_model.embed_tokens.weight") && !st_find(f, "lm_head.weight"));
            st_close(f);
        }
        cJSON *idx = NULL, *cfg = NULL;
        CHECK(json_load_file(pj(q1, "model.safetensors.index.json"), NULL, 0, &idx, &e) == OPTIQ_OK);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
        CHECK(cJSON_GetArraySize(wm) == 4);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(wm, "vision_tower.patch_embed.proj.weight");
        CHECK(cJSON_IsString(v) && strcmp(v->valuestring, "optiq_vision.safetensors") == 0);
        CHECK(json_load_file(pj(q1, "config.json"), NULL, 0, &cfg, &e) == OPTIQ_OK);
        CHECK(cJSON_GetObjectItemCaseSensitive(cfg, "vision_config") &&
              cJSON_GetObjectItemCaseSensitive(cfg, "image_token_id") &&
              cJSON_GetObjectItemCaseSensitive(cfg, "vision_start_token_id") &&
              cJSON_GetObjectItemCaseSensitive(cfg, "quantization"));
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(cfg, "optiq_vision");
        int64_t nt = 0;
        CHECK(ov && json_as_int(cJSON_GetObjectItemCaseSensitive(ov, "n_tensors"), &nt) && nt == 3);
        cJSON_Delete(idx), cJSON_Delete(cfg);
        size_t n1 = 0;
        char *pp = slurp(pj(q1, "preprocessor_config.json"), &n1);
        CHECK(pp && strcmp(pp, "{\"patch_size\": 16}\n") == 0);
        free(pp);
        /* the folder still loads: index entries naming the sidecar are accepted */
        model_dir *md = NULL;
        CHECKF(model_dir_open(q1, &md, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(md && model_dir_sidecar(md) && model_dir_tensor_count(md) == 1);
        model_dir_close(md);
    }

    for (TEST_CASE("existing sidecar refused without force; with force the same bytes")) {
        size_t a1, a2, a3, c1, c2, c3, i1, i3;
        char *s1 = slurp(pj(q1, "optiq_vision.safetensors"), &a1), *cf1 = slurp(pj(q1, "config.json"), &c1);
        char *ix1 = slurp(pj(q1, "model.safetensors.index.json"), &i1);
        CHECK(sidecar_build(b1, q1, 0, NULL, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "--force"));
        char *s2 = slurp(pj(q1, "optiq_vision.safetensors"), &a2), *cf2 = slurp(pj(q1, "config.json"), &c2);
        CHECK(s1 && s2 && a1 == a2 && memcmp(s1, s2, a1) == 0 && cf2 && c1 == c2);
        CHECKF(sidecar_build(b1, q1, 1, NULL, &e) == OPTIQ_OK, "%s", e.message);
        char *s3 = slurp(pj(q1, "optiq_vision.safetensors"), &a3), *cf3 = slurp(pj(q1, "config.json"), &c3);
        char *ix3 = slurp(pj(q1, "model.safetensors.index.json"), &i3);
        CHECK(s3 && a3 == a1 && memcmp(s1, s3, a1) == 0);
        CHECK(cf3 && c3 == c1 && memcmp(cf1, cf3, c1) == 0);
        CHECK(ix1 && ix3 && i3 == i1 && memcmp(ix1, ix3, i1) == 0);
        free(s1), free(s2), free(s3), free(cf1), free(cf2), free(cf3), free(ix1), free(ix3);
    }

    for (TEST_CASE("base without an index: the first model*.safetensors; quant without an index")) {
        char b2[700], q2[700];
        snprintf(b2, sizeof b2, "%s", pj(root, "base2"));
        snprintf(q2, sizeof q2, "%s", pj(root, "quant2"));
        make_base(b2, 0);
        make_quant(q2, 0);
        cJSON *sum = NULL;
        CHECKF(sidecar_build(b2, q2, 0, &sum, &e) == OPTIQ_OK, "%s", e.message);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(sum, "n_tensors");
        CHECK(cJSON_IsNumber(n) && n->valuedouble == 2);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(sum, "index_updated")));
        cJSON_Delete(sum);
    }

    for (TEST_CASE("errors: not a folder, no towers, sidecar in optiq/ in the way, non-float tower tensor")) {
        CHECK(sidecar_build(pj(root, "nope"), q1, 1, NULL, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "not a folder"));
        char b3[700], q3[700];
        snprintf(b3, sizeof b3, "%s", pj(root, "base3"));
        snprintf(q3, sizeof q3, "%s", pj(root, "quant3"));
        mkdir(b3, 0755);
        make_quant(q3, 0);
        st_writer *w = st_writer_new();
        int64_t sl[2] = {2, 4};
        st_writer_add(w, "model.language_model.embed_tokens.weight", DT_F32, 2, sl, LM, &e);
        st_writer_save(w, pj(b3, "model.safetensors"), &e);
        st_writer_free(w);
        put(b3, "config.json", "{}");
        CHECK(sidecar_build(b3, q3, 0, NULL, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "no vision/audio"));
        w = st_writer_new();
        int32_t ints[8] = {0};
        st_writer_add(w, "model.visual.pos_ids", DT_I32, 2, sl, ints, &e);
        st_writer_save(w, pj(b3, "model.safetensors"), &e);
        st_writer_free(w);
        CHECK(sidecar_build(b3, q3, 0, NULL, &e) == OPTIQ_ERR_UNSUPPORTED && strstr(e.message, "model.visual.pos_ids"));
        mkdir(pj(q1, "optiq"), 0755);
        put(q1, "optiq/optiq_vision.safetensors", "x");
        CHECK(sidecar_build(b1, q1, 1, NULL, &e) == OPTIQ_ERR_INVALID_ARG && strstr(e.message, "remove it first"));
    }

    /* ---- against mlx-optiq's own output on the Qwen3.5 vision fixture ---- */
    const char *fx_base = test_path("tests/fixtures/models/qwen35-vl-base");
    const char *fx_quant = test_path("tests/fixtures/models/qwen35-vl-mixed");
    struct stat sb;
    char fxq[700], fxb[700];
    snprintf(fxb, sizeof fxb, "%s", fx_base);
    snprintf(fxq, sizeof fxq, "%s", fx_quant);
    if (stat(pj(fxq, "optiq_vision.safetensors"), &sb) == 0) {
        for (TEST_CASE("qwen35-vl fixture: the sidecar built here == the one mlx-optiq built")) {
            char q4[700];
            snprintf(q4, sizeof q4, "%s", pj(root, "quant4"));
            mkdir(q4, 0755);
            /* the quant folder as it was before mlx-optiq: its config without the keys it adds */
            cJSON *cfg = NULL;
            CHECK(json_load_file(pj(fxq, "config.json"), NULL, 0, &cfg, &e) == OPTIQ_OK);
            cJSON_DeleteItemFromObjectCaseSensitive(cfg, "optiq_vision");
            char *t = cJSON_Print(cfg);
            put(q4, "config.json", t ? t : "{}");
            free(t);
            cJSON_Delete(cfg);
            CHECKF(sidecar_build(fxb, q4, 0, NULL, &e) == OPTIQ_OK, "%s", e.message);
            st_file *ours = NULL, *ref = NULL;
            CHECK(st_open(pj(q4, "optiq_vision.safetensors"), &ours, &e) == OPTIQ_OK);
            CHECK(st_open(pj(fxq, "optiq_vision.safetensors"), &ref, &e) == OPTIQ_OK);
            if (ours && ref) {
                CHECKF(st_count(ours) == st_count(ref), "%zu tensors, mlx-optiq wrote %zu", st_count(ours), st_count(ref));
                for (size_t i = 0; i < st_count(ref); i++) {
                    const st_tensor *r = st_at(ref, i), *o = st_find(ours, r->name);
                    CHECKF(o && o->dtype == r->dtype && o->ndim == r->ndim &&
                               memcmp(o->shape, r->shape, sizeof o->shape) == 0 && o->nbytes == r->nbytes &&
                               memcmp(o->data, r->data, r->nbytes) == 0,
                           "tensor %s differs from mlx-optiq's", r->name);
                }
                printf("     (%zu tensors identical to mlx-optiq's sidecar)\n", st_count(ref));
            }
            st_close(ours), st_close(ref);
            cJSON *mine = NULL, *theirs = NULL;
            CHECK(json_load_file(pj(q4, "config.json"), NULL, 0, &mine, &e) == OPTIQ_OK);
            CHECK(json_load_file(pj(fxq, "config.json"), NULL, 0, &theirs, &e) == OPTIQ_OK);
            static const char *const KEYS[] = {"vision_config", "image_token_id", "video_token_id",
                                               "vision_start_token_id", "vision_end_token_id"};
            for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++)
                CHECKF(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(mine, KEYS[k]),
                                     cJSON_GetObjectItemCaseSensitive(theirs, KEYS[k]), 1),
                       "config key %s differs from mlx-optiq's", KEYS[k]);
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(mine, "optiq_vision"),
                        *b = cJSON_GetObjectItemCaseSensitive(theirs, "optiq_vision");
            CHECK(a && b && cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "n_tensors"),
                                          cJSON_GetObjectItemCaseSensitive(b, "n_tensors"), 1));
            cJSON_Delete(mine), cJSON_Delete(theirs);
        }
    }

    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
