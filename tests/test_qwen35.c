/*
 * test_qwen35.c — parity of the Qwen3.5 text tower against mlx-lm.
 *
 * Fixtures: tests/fixtures/models/qwen35-* (tools/reference/gen_qwen35.py):
 * tiny random-weight models of both variants (dense, MoE), bf16 and
 * MLX-quantized with a mixed per-module table, tied and untied heads, each
 * with reference.safetensors holding, per prompt, the token ids, mlx-lm's
 * per-layer hidden states and logits of an f32 run (the same weights with
 * activations in f32; stored F32) and of the bf16 run (stored BF16, its exact
 * values), and 32 greedy tokens of both.
 *
 * The cases and their tolerances are lm_parity.h's; this file adds the
 * family's bad-input cases.
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

static const char *const FIXTURES[] = {"qwen35-dense-bf16", "qwen35-dense-mixed", "qwen35-moe-mixed", "qwen35-moe-bf16"};
#define N_FIX (sizeof FIXTURES / sizeof FIXTURES[0])

/* ---- bad input ---- */

static void edit_type(cJSON *cfg) { cJSON_ReplaceItemInObject(cfg, "model_type", cJSON_CreateString("qwen9_next")); }
static void edit_missing(cJSON *cfg) { cJSON_DeleteItemFromObject(text_cfg(cfg), "hidden_size"); }
static void edit_shape(cJSON *cfg) {
    cJSON_ReplaceItemInObject(text_cfg(cfg), "intermediate_size", cJSON_CreateNumber(256));
}
static void edit_heads(cJSON *cfg) {
    cJSON_ReplaceItemInObject(text_cfg(cfg), "linear_num_value_heads", cJSON_CreateNumber(3));
}
static void edit_none(cJSON *cfg) { (void)cfg; }

static void test_bad_input(void) {
    snprintf(tmproot, sizeof tmproot, "/tmp/optiq-test-q35-XXXXXX");
    if (!mkdtemp(tmproot)) return;
    expect_load_error("unknown model_type is refused, naming the supported ones",
                      edited_copy("qwen35-dense-bf16", "type", edit_type), OPTIQ_ERR_UNSUPPORTED, "qwen3_5_moe");
    expect_load_error("config without text_config.hidden_size is refused",
                      edited_copy("qwen35-dense-bf16", "missing", edit_missing), OPTIQ_ERR_FORMAT, "hidden_size missing");
    expect_load_error("weights of the wrong shape are refused, naming the tensor",
                      edited_copy("qwen35-dense-bf16", "shape", edit_shape), OPTIQ_ERR_FORMAT, "mlp.gate_proj");
    expect_load_error("linear_num_value_heads not a multiple of the key heads is refused",
                      edited_copy("qwen35-dense-mixed", "heads", edit_heads), OPTIQ_ERR_FORMAT, "linear_num_value_heads");

    const char *ok_dir = edited_copy("qwen35-dense-bf16", "same", edit_none);
    for (TEST_CASE("context: a prompt longer than the cache fails cleanly, the cache stays usable")) {
        lm_model *m = NULL;
        optiq_error e;
        CHECKF(ok_dir && lm_load(ok_dir, &m, &e) == OPTIQ_OK, "%s", e.message);
        if (!m) break;
        lm_cache *c = NULL;
        CHECK(lm_cache_new(m, 8, &c, &e) == OPTIQ_OK);
        CHECK(lm_cache_new(m, lm_get_info(m)->max_position + 1, &(lm_cache *){NULL}, &e) == OPTIQ_ERR_INVALID_ARG);
        int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        float *lg = malloc(sizeof(float) * (size_t)lm_get_info(m)->vocab_size);
        lm_forward_args a = {tok, NULL, 9, NULL, lg, 0, NULL, NULL, NULL};
        CHECK(lm_forward(m, c, pool, &a, &e) == OPTIQ_ERR_CONTEXT);
        CHECKF(strstr(e.message, "do not fit") != NULL, "%s", e.message);
        CHECK(lm_cache_pos(c) == 0);
        a.n = 8;
        CHECK(lm_forward(m, c, pool, &a, &e) == OPTIQ_OK);
        a.n = 1;
        CHECK(lm_forward(m, c, pool, &a, &e) == OPTIQ_ERR_CONTEXT);
        int32_t bad = (int32_t)lm_get_info(m)->vocab_size;
        lm_cache_reset(c);
        lm_forward_args b = {&bad, NULL, 1, NULL, lg, 0, NULL, NULL, NULL};
        CHECK(lm_forward(m, c, pool, &b, &e) == OPTIQ_ERR_INVALID_ARG);
        bad = -1;
        CHECK(lm_forward(m, c, pool, &b, &e) == OPTIQ_ERR_INVALID_ARG);
        free(lg);
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
    test_bad_input();
    printf("---- summary ----\n%s", g_summary);
    pool_free(pool);
    return test_finish();
}
