/*
 * test_gemma4.c — parity of the Gemma-4 text tower against mlx-lm.
 *
 * Fixtures: tests/fixtures/models/gemma4-* (tools/reference/gen_gemma4.py):
 * tiny random-weight models of each variant's distinguishing features —
 *   e2b     per-layer inputs, KV sharing, double-wide MLP (bf16 and mixed;
 *           the mixed folder also carries the k projections of the
 *           KV-shared layers, as some quantized folders do)
 *   keqv    K-eq-V full layers, untied lm_head (gemma4_text, flat config)
 *   moe     router + experts beside the dense MLP, K-eq-V
 *   unified the text side of gemma4_unified
 * all with a sliding window (32) shorter than the longest prompt, so the
 * window slides during prefill and during the 32 greedy tokens.
 *
 * The parity cases and their tolerances are lm_parity.h's. This file adds
 * the sliding-window cache's memory bound and the family's bad-input cases.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/dtype.h"
#include "base/threadpool.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "lm_parity.h"
#include "test.h"

/* The cache layout, to check the ring's size (file-static in gemma4.c). */
#include "../src/models/gemma4.c"

static const char *const FIXTURES[] = {"gemma4-e2b-bf16", "gemma4-e2b-mixed", "gemma4-keqv-mixed", "gemma4-moe-mixed",
                                       "gemma4-unified-bf16"};
#define N_FIX (sizeof FIXTURES / sizeof FIXTURES[0])

/* ---- the sliding window keeps memory bounded ---- */

static void test_window_memory(void) {
    for (TEST_CASE("sliding layers keep a bounded ring: 600 decode steps after a 40-token prompt")) {
        lm_model *m = NULL;
        optiq_error e;
        CHECKF(lm_load(fixture_dir("gemma4-e2b-bf16"), &m, &e) == OPTIQ_OK, "%s", e.message);
        if (!m) break;
        const g4_model *gm = (const g4_model *)m;
        lm_cache *c = NULL;
        CHECK(lm_cache_new(m, 1024, &c, &e) == OPTIQ_OK);
        if (!c) {
            lm_free(m);
            break;
        }
        int64_t V = lm_get_info(m)->vocab_size;
        float *lg = malloc(sizeof(float) * (size_t)V);
        int32_t tok[40];
        for (int i = 0; i < 40; i++) tok[i] = 10 + i;
        lm_forward_args a = {tok, NULL, 40, NULL, lg, 0, NULL, NULL, NULL};
        CHECK(lm_forward(m, c, pool, &a, &e) == OPTIQ_OK);
        int32_t cur = argmax(lg, V);
        for (int s = 0; s < 600; s++) {
            lm_forward_args d = {&cur, NULL, 1, NULL, lg, 0, NULL, NULL, NULL};
            if (lm_forward(m, c, pool, &d, &e) != OPTIQ_OK) {
                CHECKF(0, "step %d: %s", s, e.message);
                break;
            }
            cur = argmax(lg, V);
        }
        const g4_cache *gc = (const g4_cache *)c;
        int64_t W = gm->c.window, most = 0;
        for (int64_t i = 0; i < gm->c.n_layers; i++)
            if (gm->layers[i].owner && !gm->layers[i].full && gc->kv[i].rows > most) most = gc->kv[i].rows;
        /* ring: the window plus the largest call (40), rounded up to 256 rows */
        CHECKF(most > 0 && most <= (W + 40 + 255) / 256 * 256, "sliding ring holds %lld rows (window %lld)",
               (long long)most, (long long)W);
        CHECK(lm_cache_pos(c) == 640);
        free(lg);
        lm_cache_free(c);
        lm_free(m);
    }
}

/* ---- bad input ---- */

static void edit_layer_types(cJSON *cfg) {
    cJSON *lt = cJSON_GetObjectItem(text_cfg(cfg), "layer_types");
    cJSON_DeleteItemFromArray(lt, 0);
}
static void edit_layer_kind(cJSON *cfg) {
    cJSON *lt = cJSON_GetObjectItem(text_cfg(cfg), "layer_types");
    cJSON_ReplaceItemInArray(lt, 1, cJSON_CreateString("chunked_attention"));
}
static void edit_rope(cJSON *cfg) {
    cJSON *rp = cJSON_GetObjectItem(text_cfg(cfg), "rope_parameters");
    cJSON *full = cJSON_GetObjectItem(rp, "full_attention");
    cJSON_DeleteItemFromObject(full, "rope_type");
    cJSON_DeleteItemFromObject(full, "type");
    cJSON_AddStringToObject(full, "rope_type", "yarn");
}
static void edit_shared(cJSON *cfg) {
    /* all layers but the last shared: the last (full) layer has no earlier full layer */
    cJSON *t = text_cfg(cfg);
    int n = cJSON_GetObjectItem(t, "num_hidden_layers")->valueint;
    cJSON_ReplaceItemInObject(t, "num_kv_shared_layers", cJSON_CreateNumber(n - 1));
}
static void edit_inter(cJSON *cfg) { cJSON_ReplaceItemInObject(text_cfg(cfg), "intermediate_size", cJSON_CreateNumber(96)); }
static void edit_heads(cJSON *cfg) { cJSON_ReplaceItemInObject(text_cfg(cfg), "num_key_value_heads", cJSON_CreateNumber(3)); }
static void edit_topk(cJSON *cfg) { cJSON_ReplaceItemInObject(text_cfg(cfg), "top_k_experts", cJSON_CreateNumber(99)); }
static void edit_head_dim(cJSON *cfg) { cJSON_ReplaceItemInObject(text_cfg(cfg), "global_head_dim", cJSON_CreateNumber(2048)); }

static void test_bad_input(void) {
    snprintf(tmproot, sizeof tmproot, "/tmp/optiq-test-g4-XXXXXX");
    if (!mkdtemp(tmproot)) return;
    expect_load_error("layer_types shorter than num_hidden_layers is refused",
                      edited_copy("gemma4-e2b-bf16", "lt", edit_layer_types), OPTIQ_ERR_FORMAT, "layer_types");
    expect_load_error("an unknown layer kind is refused", edited_copy("gemma4-e2b-bf16", "kind", edit_layer_kind),
                      OPTIQ_ERR_FORMAT, "layer_types[1]");
    expect_load_error("an unsupported rope_type is refused, naming it",
                      edited_copy("gemma4-e2b-bf16", "rope", edit_rope), OPTIQ_ERR_UNSUPPORTED, "yarn");
    expect_load_error("a KV-shared layer without an earlier layer of its kind is refused",
                      edited_copy("gemma4-e2b-bf16", "shared", edit_shared), OPTIQ_ERR_FORMAT, "KV-shared layer");
    expect_load_error("weights of the wrong shape are refused, naming the tensor",
                      edited_copy("gemma4-keqv-mixed", "inter", edit_inter), OPTIQ_ERR_FORMAT, "mlp.gate_proj");
    expect_load_error("heads not a multiple of the KV heads are refused",
                      edited_copy("gemma4-keqv-mixed", "heads", edit_heads), OPTIQ_ERR_FORMAT, "KV heads");
    expect_load_error("top_k_experts above num_experts is refused", edited_copy("gemma4-moe-mixed", "topk", edit_topk),
                      OPTIQ_ERR_FORMAT, "top_k_experts");
    expect_load_error("a head size above 512 is refused", edited_copy("gemma4-moe-mixed", "hd", edit_head_dim),
                      OPTIQ_ERR_UNSUPPORTED, "global_head_dim");
    for (TEST_CASE("a model with per-layer inputs refuses a forward call without token ids")) {
        lm_model *m = NULL;
        optiq_error e;
        CHECKF(lm_load(fixture_dir("gemma4-e2b-bf16"), &m, &e) == OPTIQ_OK, "%s", e.message);
        if (!m) break;
        lm_cache *c = NULL;
        CHECK(lm_cache_new(m, 8, &c, &e) == OPTIQ_OK);
        float *emb = calloc((size_t)lm_get_info(m)->hidden_size, sizeof(float));
        lm_forward_args a = {NULL, emb, 1, NULL, NULL, 0, NULL, NULL, NULL};
        CHECK(lm_forward(m, c, pool, &a, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(e.message, "token ids") != NULL, "%s", e.message);
        CHECK(lm_cache_pos(c) == 0);
        free(emb);
        lm_cache_free(c);
        lm_free(m);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmproot);
    if (system(cmd) != 0) printf("  could not remove %s\n", tmproot);
}

int main(void) {
    pool = pool_create(2);
    for (size_t i = 0; i < N_FIX; i++) test_fixture(FIXTURES[i]);
    test_window_memory();
    test_bad_input();
    printf("---- summary ----\n%s", g_summary);
    pool_free(pool);
    return test_finish();
}
