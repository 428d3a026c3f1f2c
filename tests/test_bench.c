/*
 * test_bench.c — the synthetic models of `optiq bench --synthetic`: the
 * table, the in-memory builder (loaded through the normal loader, forward
 * finite), the decode byte count against the shapes, and the JSON the
 * benchmark returns, and the vision part (bench_vision) on gemma4-tiny's
 * tower. No timing is asserted: only that the figures exist and are
 * positive.
 */
#include <cjson/cJSON.h>
#include <math.h>

#include "bench/bench_vision.h"
#include "bench/synthetic.h"
#include "io/model_dir.h"
#include "models/model.h"
#include "optiq.h"
#include "test.h"
#include "vision/gemma4_vision.h"

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

/* What one Gemma-4 decode step reads, from gemma4.md §2.2 / §5: the head,
 * the PLE model projection and one row of the per-layer table, and per
 * layer q/o, k/v where the layer owns its K/V (no v with K-eq-V), the MLP
 * (twice as wide on KV-shared layers with use_double_wide_mlp) and the PLE
 * gate and projection. Layer kinds by the spec's pattern rule: layer i is
 * full when i % pattern == pattern - 1. */
static uint64_t g4_expected(const synth_model *s) {
    int64_t H = s->hidden, P = s->ple, NP = s->n_layers * s->ple, pat = s->full_attention_interval;
    int64_t first_shared = s->n_layers - s->kv_shared;
    uint64_t b = qbytes(s, s->vocab, H);
    if (P > 0) b += qbytes(s, NP, H) + qbytes(s, 1, NP);
    for (int64_t i = 0; i < s->n_layers; i++) {
        int full = i % pat == pat - 1, shared = s->kv_shared > 0 && i >= first_shared, keqv = s->k_eq_v && full;
        int64_t d = full && s->global_head_dim ? s->global_head_dim : s->head_dim;
        int64_t nkv = keqv && s->n_global_kv_heads > 0 ? s->n_global_kv_heads : s->n_kv_heads;
        int64_t I = s->inter * (shared && s->double_wide ? 2 : 1);
        b += qbytes(s, s->n_heads * d, H) + qbytes(s, H, s->n_heads * d);
        if (!shared) b += (keqv ? 1 : 2) * qbytes(s, nkv * d, H);
        b += 2 * qbytes(s, I, H) + qbytes(s, H, I);
        if (P > 0) b += qbytes(s, P, H) + qbytes(s, H, P);
    }
    return b;
}

static uint64_t expected(const synth_model *s) {
    return strcmp(s->model_type, "gemma4") == 0 ? g4_expected(s) : q35_expected(s);
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

/* Case names that carry the row's name (TEST_CASE keeps the pointer until
 * the case ends; one case at a time). */
static const char *named(const char *model, const char *what) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s: %s", model, what);
    return buf;
}

/* Family-specific tensors of a built tiny row (md not yet loaded). */
static void check_family_tensors(const synth_model *s, const model_dir *md) {
    if (strcmp(s->model_type, "qwen3_5") == 0) {
        const st_tensor *a = model_dir_find(md, "language_model.model.layers.0.linear_attn.A_log", NULL);
        CHECK(a && a->dtype == DT_F32);
        const st_tensor *cv = model_dir_find(md, "language_model.model.layers.0.linear_attn.conv1d.weight", NULL);
        CHECK(cv && cv->ndim == 3 && cv->shape[1] == s->conv_k && cv->shape[2] == 1);
        return;
    }
    /* gemma4-tiny: layers 0-2 own K/V (2 full), 3-5 shared (5 full) */
    const st_tensor *ls = model_dir_find(md, "language_model.model.layers.0.layer_scalar", NULL);
    CHECK(ls && ls->dtype == DT_BF16 && ls->ndim == 1 && ls->shape[0] == 1);
    const st_tensor *pt = model_dir_find(md, "language_model.model.embed_tokens_per_layer.scales", NULL);
    CHECK(pt && pt->shape[0] == s->vocab_ple && pt->shape[1] == s->n_layers * s->ple / s->group_size);
    const st_tensor *q = model_dir_find(md, "language_model.model.layers.2.self_attn.q_proj.scales", NULL);
    CHECK(q && q->shape[0] == s->n_heads * s->global_head_dim);
    q = model_dir_find(md, "language_model.model.layers.1.self_attn.q_proj.scales", NULL);
    CHECK(q && q->shape[0] == s->n_heads * s->head_dim);
    CHECK(model_dir_find(md, "language_model.model.layers.2.self_attn.v_proj.weight", NULL));
    CHECK(!model_dir_find(md, "language_model.model.layers.3.self_attn.k_proj.weight", NULL));
    CHECK(!model_dir_find(md, "language_model.model.layers.5.self_attn.k_norm.weight", NULL));
    const st_tensor *g = model_dir_find(md, "language_model.model.layers.3.mlp.gate_proj.scales", NULL);
    CHECK(g && g->shape[0] == 2 * s->inter);
    g = model_dir_find(md, "language_model.model.layers.2.mlp.gate_proj.scales", NULL);
    CHECK(g && g->shape[0] == s->inter);
}

/* Build, load, run and benchmark one tiny row; n_tensors: what the folder holds. */
static void tiny_cases(const synth_model *tiny, size_t n_tensors, thread_pool *pool) {
    model_dir *md = NULL;
    lm_model *m = NULL;
    uint64_t image = 0;
    const char *nm = tiny->name;
    for (TEST_CASE(named(nm, "built in memory, loaded by lm_load_dir"))) {
        CHECKF(synthetic_model_dir(tiny, 1, pool, &md, &image, &e) == OPTIQ_OK, "%s", e.message);
        if (!md) break;
        CHECK(strcmp(model_dir_path(md), "<memory>") == 0 && model_dir_shard_count(md) == 1);
        CHECKF(model_dir_tensor_count(md) == n_tensors, "%zu tensors, expected %zu", model_dir_tensor_count(md),
               n_tensors);
        CHECK(model_dir_tower_file_bytes(md) == image);
        check_family_tensors(tiny, md);
        /* data in name order, starting 64-byte aligned */
        CHECK(((uintptr_t)model_dir_tensor_at(md, 0, NULL)->data & 63) == 0);
        CHECKF(lm_load_dir(md, &m, &e) == OPTIQ_OK, "%s", e.message); /* owns md from here */
        md = NULL;
        if (!m) break;
        const lm_info *in = lm_get_info(m);
        CHECK(in->vocab_size == tiny->vocab && in->hidden_size == tiny->hidden && in->n_layers == tiny->n_layers);
        CHECK(in->tied_embeddings == 1);
        CHECK(strcmp(in->family, tiny->model_type) == 0);
    }
    for (TEST_CASE(named(nm, "lm_decode_bytes equals the sum from the shapes"))) {
        CHECK(m);
        if (!m) break;
        CHECKF(lm_decode_bytes(m) == expected(tiny), "%llu, expected %llu", (unsigned long long)lm_decode_bytes(m),
               (unsigned long long)expected(tiny));
    }
    for (TEST_CASE(named(nm, "prefill and greedy decode give finite, non-constant logits"))) {
        CHECK(m);
        if (!m) break;
        int64_t V = tiny->vocab, T = 24;
        lm_cache *c = NULL;
        CHECKF(lm_cache_new(m, T + 8, &c, &e) == OPTIQ_OK, "%s", e.message);
        float *lg = malloc(sizeof(float) * (size_t)(T * V));
        int32_t tok[24];
        for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 37 + 11) % V);
        if (c && lg) {
            lm_forward_args a = {tok, NULL, T, NULL, lg, 1, NULL, NULL, NULL};
            CHECKF(lm_forward(m, c, pool, &a, &e) == OPTIQ_OK, "%s", e.message);
            CHECK(all_finite(lg, T * V));
            float lo = lg[0], hi = lg[0];
            for (int64_t i = 0; i < T * V; i++) lo = fminf(lo, lg[i]), hi = fmaxf(hi, lg[i]);
            CHECKF(hi > lo, "logits all %g", lo);
            int32_t next = 0;
            for (int s = 0; s < 8; s++) {
                for (int64_t i = 1; i < V; i++)
                    if (lg[i] > lg[next]) next = (int32_t)i;
                lm_forward_args d = {&next, NULL, 1, NULL, lg, 0, NULL, NULL, NULL};
                CHECKF(lm_forward(m, c, pool, &d, &e) == OPTIQ_OK, "%s", e.message);
                CHECK(all_finite(lg, V));
            }
            CHECK(lm_cache_pos(c) == T + 8);
        }
        free(lg);
        lm_cache_free(c);
    }
    for (TEST_CASE(named(nm, "the same seed gives the same weights, another seed others"))) {
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

    for (TEST_CASE(named(nm, "optiq_bench_run reports every documented figure"))) {
        optiq_bench_params p = optiq_bench_default();
        CHECK(p.synthetic == NULL && p.prefill_tokens == 512 && p.decode_tokens == 128);
        p.synthetic = nm;
        p.max_threads = 2;
        p.prefill_tokens = 20;
        p.decode_tokens = 4;
        char *text = NULL;
        CHECKF(optiq_bench_run(&p, &text, &e) == OPTIQ_OK, "%s", e.message);
        cJSON *d = text ? cJSON_Parse(text) : NULL;
        const cJSON *s = get(d, "synthetic"), *r;
        CHECK(s && get(d, "qmatvec") == NULL && cJSON_GetArraySize(get(d, "memory_read_bandwidth")) == 2);
        CHECK(cJSON_IsString(get(s, "model")) && strcmp(get(s, "model")->valuestring, nm) == 0);
        const char *keys[] = {"matrix_parameters", "weight_bytes", "decode_bytes_per_token", "load_peak_rss_bytes",
                              "prompt_tokens", "prefill_chunk", "decode_tokens"};
        CHECK(cJSON_IsNumber(get(s, "weights_rss_bytes"))); /* a few kB here: may be 0 when freed pages are reused */
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECKF(positive(s, keys[i]), "%s", keys[i]);
        CHECK(get(s, "decode_tokens")->valuedouble == 4 && get(s, "prompt_tokens")->valuedouble == 20);
        CHECK(get(s, "decode_bytes_per_token")->valuedouble == (double)expected(tiny));
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
}

/* ---- the vision part ---- */

static double num(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void vision_cases(const synth_model *gtiny, thread_pool *pool) {
    for (TEST_CASE("gemma4-tiny: vision bench encodes the 1024x768 picture at 280 soft tokens, counts consistent")) {
        int counts[2] = {1, 2};
        cJSON *root = cJSON_CreateObject();
        CHECKF(bench_vision(pool, "gemma4-tiny", counts, 2, root, &e) == OPTIQ_OK, "%s", e.message);
        const cJSON *v = get(root, "vision"), *r;
        CHECK(v != NULL);
        /* the processor's size for this picture and budget (spec gemma4.md §6.2) */
        g4v_params pp = g4v_params_default(0);
        int th = 0, tw = 0;
        CHECKF(g4v_target_size(&pp, 768, 1024, 280, &th, &tw, &e) == OPTIQ_OK, "%s", e.message);
        CHECKF(th == 672 && tw == 912, "target %dx%d", tw, th);
        if (v) {
            CHECK(cJSON_IsString(get(v, "model")) && strcmp(get(v, "model")->valuestring, "gemma4-tiny") == 0);
            CHECK(num(v, "depth") == 2 && num(v, "hidden_size") == 64 && num(v, "num_heads") == 4 &&
                  num(v, "num_kv_heads") == 2 && num(v, "head_dim") == 16 && num(v, "intermediate_size") == 128);
            CHECK(gtiny && num(v, "out_hidden_size") == (double)gtiny->hidden);
            CHECK(num(v, "image_width") == 1024 && num(v, "image_height") == 768 && num(v, "max_soft_tokens") == 280);
            CHECKF(num(v, "processed_width") == tw && num(v, "processed_height") == th, "%gx%g",
                   num(v, "processed_width"), num(v, "processed_height"));
            CHECKF(num(v, "patches") == (double)(th / 16) * (tw / 16), "patches %g", num(v, "patches"));
            CHECKF(num(v, "soft_tokens") == (double)g4v_soft_tokens(&pp, th, tw) && num(v, "soft_tokens") == 266,
                   "soft_tokens %g", num(v, "soft_tokens"));
            CHECK(positive(v, "build_seconds"));
            CHECK(cJSON_GetArraySize(get(v, "runs")) == 2);
            int k = 0;
            cJSON_ArrayForEach(r, get(v, "runs")) {
                CHECK(num(r, "threads") == counts[k]);
                k++;
                CHECK(positive(r, "preprocess_seconds") && positive(r, "tower_seconds") &&
                      positive(r, "total_seconds"));
                CHECK(num(r, "total_seconds") >= num(r, "tower_seconds"));
                CHECK(cJSON_IsTrue(get(r, "finite")));
            }
        }
        cJSON_Delete(root);
    }
    for (TEST_CASE("vision bench: a row without a vision shape adds nothing")) {
        int counts[1] = {1};
        cJSON *root = cJSON_CreateObject();
        CHECK(bench_vision(pool, "qwen3_5-tiny", counts, 1, root, &e) == OPTIQ_OK);
        CHECK(get(root, "vision") == NULL && cJSON_GetArraySize(root) == 0);
        cJSON_Delete(root);
    }
}

int main(void) {
    const synth_model *qtiny = synthetic_find("qwen3_5-tiny"), *gtiny = synthetic_find("gemma4-tiny");
    thread_pool *pool = pool_create(2);

    for (TEST_CASE("table: rows found by name, the test rows marked, unknown names refused")) {
        CHECK(qtiny && qtiny->for_tests && gtiny && gtiny->for_tests);
        const synth_model *m08 = synthetic_find("qwen3_5-0.8b");
        CHECK(m08 && !m08->for_tests && m08->hidden == 1024 && m08->n_layers == 24 && m08->vocab == 248320);
        const synth_model *e2b = synthetic_find("gemma4-e2b");
        CHECK(e2b && !e2b->for_tests && e2b->hidden == 1536 && e2b->n_layers == 35 && e2b->vocab == 262144 &&
              e2b->kv_shared == 20 && e2b->ple == 256 && e2b->global_head_dim == 512);
        CHECK(synthetic_find("nosuch") == NULL && synthetic_find(NULL) == NULL);
        CHECK(strstr(synthetic_names(), "qwen3_5-0.8b") && strstr(synthetic_names(), "qwen3_5-tiny (tests only)"));
        CHECK(strstr(synthetic_names(), "gemma4-e2b") && strstr(synthetic_names(), "gemma4-tiny (tests only)"));
        CHECK(synthetic_at(synthetic_count()) == NULL);
    }
    for (TEST_CASE("gemma4-e2b: config.json has E2B's layer kinds, RoPE and soft-cap")) {
        const synth_model *e2b = synthetic_find("gemma4-e2b");
        char *text = e2b ? synthetic_config_json(e2b) : NULL;
        cJSON *c = text ? cJSON_Parse(text) : NULL;
        const cJSON *t = get(c, "text_config"), *lt = get(t, "layer_types");
        CHECK(c && strcmp(get(c, "model_type")->valuestring, "gemma4") == 0 &&
              strcmp(get(t, "model_type")->valuestring, "gemma4_text") == 0);
        CHECK(cJSON_GetArraySize(lt) == 35);
        for (int i = 0; i < cJSON_GetArraySize(lt); i++) {
            const char *k = cJSON_GetArrayItem(lt, i)->valuestring;
            CHECKF(strcmp(k, i % 5 == 4 ? "full_attention" : "sliding_attention") == 0, "layer_types[%d] %s", i, k);
        }
        const cJSON *rp = get(t, "rope_parameters");
        const cJSON *rf = get(rp, "full_attention"), *rs = get(rp, "sliding_attention");
        CHECK(rf && strcmp(get(rf, "rope_type")->valuestring, "proportional") == 0 &&
              get(rf, "rope_theta")->valuedouble == 1e6 && get(rf, "partial_rotary_factor")->valuedouble == 0.25);
        CHECK(rs && strcmp(get(rs, "rope_type")->valuestring, "default") == 0 &&
              get(rs, "rope_theta")->valuedouble == 1e4);
        CHECK(get(t, "final_logit_softcapping")->valuedouble == 30 && get(t, "sliding_window")->valuedouble == 512 &&
              get(t, "vocab_size_per_layer_input")->valuedouble == 262144 &&
              cJSON_IsTrue(get(t, "use_double_wide_mlp")) && cJSON_IsFalse(get(t, "attention_k_eq_v")));
        cJSON_Delete(c);
        free(text);
    }
    for (TEST_CASE("decode bytes of every row equal the sum over the architecture's matrices")) {
        for (size_t i = 0; i < synthetic_count(); i++) {
            const synth_model *s = synthetic_at(i);
            CHECKF(synthetic_decode_bytes(s) == expected(s), "%s: %llu, expected %llu", s->name,
                   (unsigned long long)synthetic_decode_bytes(s), (unsigned long long)expected(s));
        }
    }
    /* qwen3_5-tiny: embed (3) + norm; linear layer: 2 norms, 5 matrices, conv,
     * A_log, dt_bias, norm; full layer: 2 norms, 4 matrices, q/k norms; 3 MLP
     * matrices each */
    if (qtiny) tiny_cases(qtiny, 4 + 21 + 16 + 18, pool);
    /* gemma4-tiny: embed, PLE table, PLE projection (3 each) + 2 norms; every
     * layer 4 norms, q/o (6), q_norm, MLP (9), PLE gate/projection (6) + norm,
     * layer_scalar = 28; the 3 K/V owners k/v (6) + k_norm more */
    if (gtiny) tiny_cases(gtiny, 11 + 6 * 28 + 3 * 7, pool);
    vision_cases(gtiny, pool);

    for (TEST_CASE("gemma4-tiny with K-eq-V full layers: loads, decode bytes agree, decode finite")) {
        if (!gtiny) break;
        synth_model kv = *gtiny; /* full layers: 1 global KV head, no v_proj; sliding: 2 KV heads */
        kv.name = "gemma4-tiny-keqv";
        kv.k_eq_v = 1, kv.n_kv_heads = 2, kv.n_global_kv_heads = 1;
        model_dir *md = NULL;
        lm_model *m = NULL;
        CHECKF(synthetic_model_dir(&kv, 3, pool, &md, NULL, &e) == OPTIQ_OK, "%s", e.message);
        if (!md) break;
        CHECK(!model_dir_find(md, "language_model.model.layers.2.self_attn.v_proj.weight", NULL));
        const st_tensor *k = model_dir_find(md, "language_model.model.layers.2.self_attn.k_proj.scales", NULL);
        CHECK(k && k->shape[0] == kv.global_head_dim);
        CHECKF(lm_load_dir(md, &m, &e) == OPTIQ_OK, "%s", e.message);
        if (!m) break;
        CHECKF(lm_decode_bytes(m) == expected(&kv) && synthetic_decode_bytes(&kv) == expected(&kv),
               "%llu, %llu, expected %llu", (unsigned long long)lm_decode_bytes(m),
               (unsigned long long)synthetic_decode_bytes(&kv), (unsigned long long)expected(&kv));
        lm_cache *c = NULL;
        float lg[256];
        int32_t tok[12];
        for (int i = 0; i < 12; i++) tok[i] = (int32_t)(i * 29 % kv.vocab);
        CHECKF(lm_cache_new(m, 16, &c, &e) == OPTIQ_OK, "%s", e.message);
        lm_forward_args a = {tok, NULL, 12, NULL, lg, 0, NULL, NULL, NULL};
        if (c) CHECKF(lm_forward(m, c, pool, &a, &e) == OPTIQ_OK && all_finite(lg, kv.vocab), "%s", e.message);
        lm_cache_free(c);
        lm_free(m);
    }
    for (TEST_CASE("optiq_bench_run: unknown synthetic name fails, listing the known ones")) {
        optiq_bench_params p = optiq_bench_default();
        p.synthetic = "nosuch";
        char *text = NULL;
        CHECK(optiq_bench_run(&p, &text, &e) == OPTIQ_ERR_INVALID_ARG && text == NULL);
        CHECKF(strstr(e.message, "'nosuch'") && strstr(e.message, "qwen3_5-0.8b") && strstr(e.message, "gemma4-e2b"),
               "%s", e.message);
        p.synthetic = "qwen3_5-tiny";
        p.prefill_tokens = 4000;
        p.decode_tokens = 200; /* past the tiny row's 4096 positions */
        CHECK(optiq_bench_run(&p, &text, &e) == OPTIQ_ERR_INVALID_ARG && text == NULL);
        CHECKF(strstr(e.message, "exceed"), "%s", e.message);
    }
    pool_free(pool);
    return test_finish();
}
