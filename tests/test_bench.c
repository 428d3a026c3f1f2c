/*
 * test_bench.c — the synthetic models of `optiq bench --synthetic`: the
 * table, the in-memory builder (loaded through the normal loader, forward
 * finite), the decode byte count against the shapes, and the JSON the
 * benchmark returns. No timing is asserted: only that the figures exist and
 * are positive.
 */
#include <cjson/cJSON.h>
#include <math.h>

#include "bench/synthetic.h"
#include "io/model_dir.h"
#include "models/model.h"
#include "optiq.h"
#include "test.h"

static optiq_error e;

/* Bytes of one MLX-affine matrix [rows, cols] with bf16 scales and biases. */
static uint64_t qbytes(const synth_model *s, int64_t rows, int64_t cols) {
    return (uint64_t)rows * ((uint64_t)cols * (uint64_t)s->bits / 8 + 2 * 2 * (uint64_t)(cols / s->group_size));
}

/* What one Qwen3.5 decode step reads, written out from the architecture
 * (spec §1): every projection of every layer, the MLP, and the head. */
static uint64_t q35_expected(const synth_model *s) {
    int64_t H = s->hidden, kd = s->lk_heads * s->lk_dim, vd = s->lv_heads * s->lv_dim, D = s->head_dim;
    uint64_t b = qbytes(s, s->vocab, H); /* head (tied or not, one matrix) */
    for (int64_t i = 0; i < s->n_layers; i++) {
        if ((i + 1) % s->full_attention_interval)
            b += qbytes(s, 2 * kd + vd, H) + qbytes(s, vd, H) + 2 * qbytes(s, s->lv_heads, H) + qbytes(s, H, vd);
        else
            b += qbytes(s, 2 * s->n_heads * D, H) + 2 * qbytes(s, s->n_kv_heads * D, H) + qbytes(s, H, s->n_heads * D);
        b += 2 * qbytes(s, s->inter, H) + qbytes(s, H, s->inter);
    }
    return b;
}

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int positive(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    return cJSON_IsNumber(v) && v->valuedouble > 0 && isfinite(v->valuedouble);
}

int main(void) {
    const synth_model *tiny = synthetic_find("qwen3_5-tiny");
    thread_pool *pool = pool_create(2);

    for (TEST_CASE("table: rows found by name, the test row marked, unknown names refused")) {
        CHECK(tiny && tiny->for_tests);
        const synth_model *m08 = synthetic_find("qwen3_5-0.8b");
        CHECK(m08 && !m08->for_tests && m08->hidden == 1024 && m08->n_layers == 24 && m08->vocab == 248320);
        CHECK(synthetic_find("nosuch") == NULL && synthetic_find(NULL) == NULL);
        CHECK(strstr(synthetic_names(), "qwen3_5-0.8b") && strstr(synthetic_names(), "qwen3_5-tiny (tests only)"));
        CHECK(synthetic_at(synthetic_count()) == NULL);
    }
    for (TEST_CASE("decode bytes of every row equal the sum over the architecture's matrices")) {
        for (size_t i = 0; i < synthetic_count(); i++) {
            const synth_model *s = synthetic_at(i);
            CHECKF(synthetic_decode_bytes(s) == q35_expected(s), "%s: %llu, expected %llu", s->name,
                   (unsigned long long)synthetic_decode_bytes(s), (unsigned long long)q35_expected(s));
        }
    }
    if (!tiny) return test_finish();

    model_dir *md = NULL;
    lm_model *m = NULL;
    uint64_t image = 0;
    for (TEST_CASE("qwen3_5-tiny: built in memory, loaded by lm_load_dir")) {
        CHECKF(synthetic_model_dir(tiny, 1, pool, &md, &image, &e) == OPTIQ_OK, "%s", e.message);
        if (!md) break;
        CHECK(strcmp(model_dir_path(md), "<memory>") == 0 && model_dir_shard_count(md) == 1);
        /* embed (3) + norm; linear layer: 2 norms, 5 matrices, conv, A_log, dt_bias, norm;
         * full layer: 2 norms, 4 matrices, q/k norms; 3 MLP matrices each */
        CHECKF(model_dir_tensor_count(md) == 4 + 21 + 16 + 18, "%zu tensors", model_dir_tensor_count(md));
        CHECK(model_dir_tower_file_bytes(md) == image);
        const st_tensor *a = model_dir_find(md, "language_model.model.layers.0.linear_attn.A_log", NULL);
        CHECK(a && a->dtype == DT_F32);
        const st_tensor *cv = model_dir_find(md, "language_model.model.layers.0.linear_attn.conv1d.weight", NULL);
        CHECK(cv && cv->ndim == 3 && cv->shape[1] == tiny->conv_k && cv->shape[2] == 1);
        /* data in name order, starting 64-byte aligned */
        CHECK(((uintptr_t)model_dir_tensor_at(md, 0, NULL)->data & 63) == 0);
        CHECKF(lm_load_dir(md, &m, &e) == OPTIQ_OK, "%s", e.message); /* owns md from here */
        md = NULL;
        if (!m) break;
        const lm_info *in = lm_get_info(m);
        CHECK(in->vocab_size == tiny->vocab && in->hidden_size == tiny->hidden && in->n_layers == tiny->n_layers);
        CHECK(in->tied_embeddings == 1);
    }
    for (TEST_CASE("qwen3_5-tiny: lm_decode_bytes equals the sum from the shapes")) {
        CHECK(m);
        if (!m) break;
        CHECKF(lm_decode_bytes(m) == q35_expected(tiny), "%llu, expected %llu", (unsigned long long)lm_decode_bytes(m),
               (unsigned long long)q35_expected(tiny));
    }
    for (TEST_CASE("qwen3_5-tiny: prefill and greedy decode give finite, non-constant logits")) {
        CHECK(m);
        if (!m) break;
        int64_t V = tiny->vocab, T = 24;
        lm_cache *c = NULL;
        CHECKF(lm_cache_new(m, T + 8, &c, &e) == OPTIQ_OK, "%s", e.message);
        float *lg = malloc(sizeof(float) * (size_t)(T * V));
        int32_t tok[24];
        for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 37 + 11) % V);
        if (c && lg) {
            lm_forward_args a = {tok, NULL, T, NULL, lg, 1, NULL, NULL};
            CHECKF(lm_forward(m, c, pool, &a, &e) == OPTIQ_OK, "%s", e.message);
            CHECK(all_finite(lg, T * V));
            float lo = lg[0], hi = lg[0];
            for (int64_t i = 0; i < T * V; i++) lo = fminf(lo, lg[i]), hi = fmaxf(hi, lg[i]);
            CHECKF(hi > lo, "logits all %g", lo);
            int32_t next = 0;
            for (int s = 0; s < 8; s++) {
                for (int64_t i = 1; i < V; i++)
                    if (lg[i] > lg[next]) next = (int32_t)i;
                lm_forward_args d = {&next, NULL, 1, NULL, lg, 0, NULL, NULL};
                CHECKF(lm_forward(m, c, pool, &d, &e) == OPTIQ_OK, "%s", e.message);
                CHECK(all_finite(lg, V));
            }
            CHECK(lm_cache_pos(c) == T + 8);
        }
        free(lg);
        lm_cache_free(c);
    }
    for (TEST_CASE("qwen3_5-tiny: the same seed gives the same weights, another seed others")) {
        model_dir *a = NULL, *b = NULL, *d = NULL;
        CHECK(synthetic_model_dir(tiny, 7, NULL, &a, NULL, &e) == OPTIQ_OK);
        CHECK(synthetic_model_dir(tiny, 7, pool, &b, NULL, &e) == OPTIQ_OK);
        CHECK(synthetic_model_dir(tiny, 8, pool, &d, NULL, &e) == OPTIQ_OK);
        if (a && b && d) {
            const char *n = "language_model.model.layers.1.mlp.down_proj.scales";
            const st_tensor *ta = model_dir_find(a, n, NULL), *tb = model_dir_find(b, n, NULL);
            const st_tensor *td = model_dir_find(d, n, NULL);
            CHECK(ta && tb && td && memcmp(ta->data, tb->data, ta->nbytes) == 0 &&
                  memcmp(ta->data, td->data, ta->nbytes) != 0);
        }
        model_dir_close(a), model_dir_close(b), model_dir_close(d);
    }
    lm_free(m);

    for (TEST_CASE("optiq_bench_run: synthetic qwen3_5-tiny reports every documented figure")) {
        optiq_bench_params p = optiq_bench_default();
        CHECK(p.synthetic == NULL && p.prefill_tokens == 512 && p.decode_tokens == 128);
        p.synthetic = "qwen3_5-tiny";
        p.max_threads = 2;
        p.prefill_tokens = 20;
        p.decode_tokens = 4;
        char *text = NULL;
        CHECKF(optiq_bench_run(&p, &text, &e) == OPTIQ_OK, "%s", e.message);
        cJSON *d = text ? cJSON_Parse(text) : NULL;
        const cJSON *s = get(d, "synthetic"), *r;
        CHECK(s && get(d, "qmatvec") == NULL && cJSON_GetArraySize(get(d, "memory_read_bandwidth")) == 2);
        CHECK(cJSON_IsString(get(s, "model")) && strcmp(get(s, "model")->valuestring, "qwen3_5-tiny") == 0);
        const char *keys[] = {"matrix_parameters", "weight_bytes", "decode_bytes_per_token", "load_peak_rss_bytes",
                              "prompt_tokens", "prefill_chunk", "decode_tokens"};
        CHECK(cJSON_IsNumber(get(s, "weights_rss_bytes"))); /* a few kB here: may be 0 when freed pages are reused */
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECKF(positive(s, keys[i]), "%s", keys[i]);
        CHECK(get(s, "decode_tokens")->valuedouble == 4 && get(s, "prompt_tokens")->valuedouble == 20);
        CHECK(get(s, "decode_bytes_per_token")->valuedouble == (double)q35_expected(tiny));
        CHECK(cJSON_IsTrue(get(s, "logits_finite")));
        CHECK(cJSON_GetArraySize(get(s, "runs")) == 2);
        int k = 0;
        cJSON_ArrayForEach(r, get(s, "runs")) {
            CHECK(get(r, "threads")->valuedouble == ++k);
            const char *rk[] = {"prefill_seconds", "prefill_tokens_per_s", "decode_seconds", "decode_tokens_per_s",
                                "decode_ms_per_token", "decode_median_ms_per_token", "memory_bw_before_gbs",
                                "memory_bw_after_gbs", "roofline_tokens_per_s", "decode_fraction_of_roofline",
                                "decode_gbs", "peak_rss_bytes"};
            for (size_t i = 0; i < sizeof rk / sizeof rk[0]; i++) CHECKF(positive(r, rk[i]), "runs[%d].%s", k, rk[i]);
            CHECK(cJSON_IsBool(get(r, "peak_rss_reset")));
        }
        cJSON_Delete(d);
        optiq_free(text);
    }
    for (TEST_CASE("optiq_bench_run: unknown synthetic name fails, listing the known ones")) {
        optiq_bench_params p = optiq_bench_default();
        p.synthetic = "nosuch";
        char *text = NULL;
        CHECK(optiq_bench_run(&p, &text, &e) == OPTIQ_ERR_INVALID_ARG && text == NULL);
        CHECKF(strstr(e.message, "'nosuch'") && strstr(e.message, "qwen3_5-0.8b"), "%s", e.message);
        p.synthetic = "qwen3_5-tiny";
        p.prefill_tokens = 4000;
        p.decode_tokens = 200; /* past the tiny row's 4096 positions */
        CHECK(optiq_bench_run(&p, &text, &e) == OPTIQ_ERR_INVALID_ARG && text == NULL);
        CHECKF(strstr(e.message, "exceed"), "%s", e.message);
    }
    pool_free(pool);
    return test_finish();
}
