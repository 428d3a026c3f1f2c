/*
 * qwen3_5.c — the Qwen3.5 / Qwen3.6 text tower (model_type qwen3_5, qwen3_5_moe).
 *
 * Spec: ../shared/spec/qwen3_5.md; the reference is mlx-lm 0.32.2
 * (models/qwen3_5.py, qwen3_next.py, gated_delta.py). Layer i is full
 * attention iff (i + 1) % full_attention_interval == 0, else a Gated DeltaNet
 * (linear attention) layer; every layer has a SwiGLU MLP, or for qwen3_5_moe a
 * sparse MoE block with a gated shared expert.
 *
 *   h = embed(tokens)
 *   per layer: h += mixer(rmsnorm(h)); h += mlp(rmsnorm(h))
 *   logits = head(rmsnorm(h))            head = lm_head, or embed_tokens when tied
 *
 * Full attention: q_proj gives per head [query D | gate D]; q/k RMSNorm over
 * D; rotary on the first R = D * partial_rotary_factor features ("rotate
 * half", interleaved MRoPE axis per frequency slot; for text all three
 * position axes are equal); causal GQA softmax attention, scale D^-1/2;
 * output * sigmoid(gate); o_proj. The KV cache holds post-RoPE keys.
 * Saved states (prefix reuse, q35_state_*): the KV rows cut at any length;
 * the Gated DeltaNet conv and recurrent states only at the position taken.
 *
 * Gated DeltaNet (per token t, v-head h reading k-head h / (Hv / Hk)):
 *   qkv = in_proj_qkv(x); causal depthwise conv (kernel K, no bias) over
 *   [conv state (K-1 rows) ; qkv]; silu; split q | k | v;
 *   q, k L2-normalized as mlx-lm's normalize_qk: x / sqrt(mean(x²) + 1e-6/Dk)
 *   times 1/Dk (q) or Dk^-1/2 (k) — i.e. x / sqrt(Σx² + 1e-6), q also scaled
 *   by Dk^-1/2 (mlx-lm scales the epsilon; the spec's text predates that);
 *   beta = sigmoid(in_proj_b(x)); g = exp(-exp(A_log) * softplus(in_proj_a(x) + dt_bias));
 *   S ← g S;  δ = (v − S k) β;  S ← S + δ kᵀ;  y = S q       (S: Dv x Dk, f32)
 *   out = out_proj(rmsnorm(y; norm.weight) * silu(z)),  z = in_proj_z(x)
 * The conv state (last K-1 pre-conv rows) and S carry across calls, so a
 * prompt fed in chunks gives the same result as one pass.
 *
 * MoE: softmax over the router logits, the k largest probabilities,
 * renormalized to sum 1 when norm_topk_prob (default true), experts run as
 * SwiGLU, weighted sum; plus sigmoid(shared_expert_gate(x)) * shared SwiGLU.
 *
 * Weights: MLX-converted folders name them language_model.model.* (and
 * language_model.lm_head); raw Hugging Face checkpoints model.language_model.*
 * with conv1d as [C, 1, K] and zero-centred norms, which get mlx-lm's +1
 * shift (rounded to the stored dtype, as mlx-lm does). A tied model ignores
 * any lm_head tensor. Quantized matrices stay packed; norm weights, conv
 * taps, A_log and dt_bias are copied to f32.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/dtype.h"
#include "kernels/gdn.h"
#include "kernels/nn.h"
#include "models/config.h"
#include "models/linear.h"
#include "models/model.h"

/* ---- configuration ---- */

typedef struct q35_config {
    int64_t hidden, n_layers, vocab, inter;
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t lk_heads, lv_heads, lk_dim, lv_dim, conv_k;
    int64_t interval;
    double eps;
    int tie, attn_bias;
    int64_t max_pos;
    double rope_theta, partial;
    int rope_dims; /* R */
    int64_t mrope[3];
    /* moe */
    int64_t n_experts, top_k, moe_inter, shared_inter;
    int norm_topk;
} q35_config;

static optiq_status parse_config(const model_dir *md, int moe, q35_config *c, optiq_error *err) {
    memset(c, 0, sizeof *c);
    const cJSON *tc = model_dir_text_config(md);
    /* mlx-lm: the text_config object when present, else the whole config. */
    cfg_reader r = {tc ? tc : model_dir_config(md), tc ? "text_config." : "", model_dir_config_path(md)};
    optiq_status st;
#define INT(key, req, def, lo, dst) \
    if ((st = cfg_int(&r, key, req, def, lo, dst, err))) return st
    INT("hidden_size", 1, 0, 1, &c->hidden);
    INT("num_hidden_layers", 1, 0, 1, &c->n_layers);
    INT("vocab_size", 1, 0, 1, &c->vocab);
    INT("num_attention_heads", 1, 0, 1, &c->n_heads);
    INT("num_key_value_heads", 1, 0, 1, &c->n_kv_heads);
    INT("head_dim", 0, c->hidden / c->n_heads, 1, &c->head_dim);
    INT("linear_num_key_heads", 1, 0, 1, &c->lk_heads);
    INT("linear_num_value_heads", 1, 0, 1, &c->lv_heads);
    INT("linear_key_head_dim", 1, 0, 1, &c->lk_dim);
    INT("linear_value_head_dim", 1, 0, 1, &c->lv_dim);
    INT("linear_conv_kernel_dim", 0, 4, 1, &c->conv_k);
    INT("full_attention_interval", 0, 4, 1, &c->interval);
    INT("max_position_embeddings", 0, 131072, 1, &c->max_pos);
    INT("num_experts", 0, 0, 0, &c->n_experts);
    if (moe && c->n_experts == 0)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %snum_experts missing (required for qwen3_5_moe)", r.path, r.where);
    if (c->n_experts > 0) {
        INT("num_experts_per_tok", 1, 0, 1, &c->top_k);
        INT("moe_intermediate_size", 1, 0, 1, &c->moe_inter);
        INT("shared_expert_intermediate_size", 1, 0, 1, &c->shared_inter);
        if (c->top_k > c->n_experts)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %snum_experts_per_tok %lld > num_experts %lld", r.path, r.where,
                           (long long)c->top_k, (long long)c->n_experts);
    } else {
        INT("intermediate_size", 1, 0, 1, &c->inter);
    }
#undef INT
    if ((st = cfg_num(&r, r.obj, "rms_norm_eps", 1e-6, &c->eps, err))) return st;
    c->tie = cfg_bool(&r, "tie_word_embeddings", 0);
    c->attn_bias = cfg_bool(&r, "attention_bias", 0);
    c->norm_topk = cfg_bool(&r, "norm_topk_prob", 1);
    if (c->n_heads % c->n_kv_heads)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %snum_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                       r.path, r.where, (long long)c->n_heads, (long long)c->n_kv_heads);
    if (c->lv_heads % c->lk_heads)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: %slinear_num_value_heads %lld is not a multiple of linear_num_key_heads %lld", r.path,
                       r.where, (long long)c->lv_heads, (long long)c->lk_heads);

    /* Rope: mlx-lm takes theta and the partial factor from rope_parameters
     * (its defaults when the dict is absent: theta 1e5, factor 0.25), never
     * from flat keys. */
    const cJSON *rp = cfg_get(&r, "rope_parameters");
    if (!rp) rp = cfg_get(&r, "rope_scaling");
    c->rope_theta = 100000.0;
    c->partial = 0.25;
    c->mrope[0] = 11, c->mrope[1] = 11, c->mrope[2] = 10;
    if (rp) {
        if (!cJSON_IsObject(rp)) return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters must be an object", r.path, r.where);
        if ((st = cfg_num(&r, rp, "rope_theta", 100000.0, &c->rope_theta, err))) return st;
        if ((st = cfg_num(&r, rp, "partial_rotary_factor", 0.25, &c->partial, err))) return st;
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rp, "type");
        if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "default")))
            return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: %srope_parameters.type \"%s\": only \"default\" is supported",
                           r.path, r.where, cJSON_IsString(ty) ? ty->valuestring : "?");
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(rp, "mrope_section");
        if (ms) {
            if (!cJSON_IsArray(ms) || cJSON_GetArraySize(ms) != 3)
                return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters.mrope_section must be 3 integers", r.path,
                               r.where);
            for (int i = 0; i < 3; i++) {
                const cJSON *e = cJSON_GetArrayItem(ms, i);
                if (!cJSON_IsNumber(e) || e->valuedouble < 0)
                    return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters.mrope_section must be 3 integers",
                                   r.path, r.where);
                c->mrope[i] = (int64_t)e->valuedouble;
            }
        }
    }
    if (!(c->rope_theta > 0) || !(c->partial > 0) || c->partial > 1)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters: rope_theta must be > 0 and partial_rotary_factor in (0, 1]",
                       r.path, r.where);
    c->rope_dims = (int)(c->head_dim * c->partial);
    if (c->rope_dims < 2 || c->rope_dims % 2 || c->rope_dims > 512)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: rotary dims %d (head_dim * partial_rotary_factor) must be even, 2..512",
                       r.path, c->rope_dims);
    if (c->head_dim > 4096 || c->lk_dim > 4096 || c->lv_dim > 4096 || c->conv_k > 64)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: head dims above 4096 or conv kernel above 64", r.path);
    return OPTIQ_OK;
}

/* ---- model ---- */

typedef struct q35_layer {
    int is_linear;
    float *in_norm, *post_norm; /* (H) */
    /* gated deltanet */
    linear in_qkv, in_z, in_b, in_a, out_proj;
    float *conv_w;  /* (conv_dim, K) */
    float *neg_a;   /* (Hv) -exp(A_log) */
    float *dt_bias; /* (Hv) */
    float *gnorm;   /* (Dv) */
    /* full attention */
    linear q, k, v, o;
    float *q_norm, *k_norm; /* (D) */
    /* mlp */
    linear gate, up, down;
    /* moe */
    linear router, ex_gate, ex_up, ex_down, sh_gate, sh_up, sh_down, sh_router;
} q35_layer;

typedef struct q35_model {
    lm_model base;
    q35_config c;
    quant_config qc;
    quant_modules qm;
    linear embed, head; /* head unused when tied */
    float *final_norm;
    q35_layer *layers;
    float *inv_freq;    /* (R/2) */
    uint8_t *axis;      /* (R/2) MRoPE axis of each slot */
    int64_t key_dim, value_dim, conv_dim;
} q35_model;

static const char *const Q35_TYPES[] = {"qwen3_5", "qwen3_5_moe", NULL};

static void q35_free(lm_model *bm) {
    q35_model *m = (q35_model *)bm;
    if (!m) return;
    if (m->layers) {
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            q35_layer *L = &m->layers[i];
            free(L->in_norm), free(L->post_norm), free(L->conv_w), free(L->neg_a), free(L->dt_bias), free(L->gnorm);
            free(L->q_norm), free(L->k_norm);
            linear *ls[] = {&L->in_qkv, &L->in_z, &L->in_b, &L->in_a, &L->out_proj, &L->q, &L->k, &L->v, &L->o,
                            &L->gate, &L->up, &L->down, &L->router, &L->ex_gate, &L->ex_up, &L->ex_down,
                            &L->sh_gate, &L->sh_up, &L->sh_down, &L->sh_router};
            for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++) linear_free(ls[j]);
        }
        free(m->layers);
    }
    linear_free(&m->embed);
    linear_free(&m->head);
    free(m->final_norm);
    free(m->inv_freq);
    free(m->axis);
    quant_modules_free(&m->qm);
    quant_config_free(&m->qc);
    model_dir_close(m->base.md);
    free(m);
}

typedef struct binder {
    weight_src src;
    const char *prefix; /* "language_model.model." etc. */
    int raw_hf;         /* zero-centred norms to shift */
    char buf[512];
} binder;

static const char *nm(binder *b, int64_t layer, const char *suffix) {
    if (layer >= 0) snprintf(b->buf, sizeof b->buf, "%slayers.%lld.%s", b->prefix, (long long)layer, suffix);
    else snprintf(b->buf, sizeof b->buf, "%s%s", b->prefix, suffix);
    return b->buf;
}

/* A norm weight (d) as f32; zero-centred families of raw checkpoints get
 * mlx-lm's +1, computed in the stored dtype. */
static optiq_status bind_norm(binder *b, const char *name, int64_t d, int centred, float **out, optiq_error *err) {
    optiq_status st = weight_vec_f32(&b->src, name, 1, &d, out, err);
    if (st || !centred || !b->raw_hf) return st;
    const st_tensor *t = model_dir_find(b->src.md, name, NULL);
    for (int64_t i = 0; i < d; i++) {
        float v = (*out)[i] + 1.0f;
        if (t->dtype == DT_BF16) v = bf16_to_f32(f32_to_bf16(v));
        else if (t->dtype == DT_F16) v = f16_to_f32(f32_to_f16(v));
        (*out)[i] = v;
    }
    return OPTIQ_OK;
}

static optiq_status bind_layer(q35_model *m, binder *b, int64_t i, optiq_error *err) {
    const q35_config *c = &m->c;
    q35_layer *L = &m->layers[i];
    optiq_status st;
    int64_t H = c->hidden;
#define TRY(x) \
    if ((st = (x))) return st
    L->is_linear = (i + 1) % c->interval != 0;
    TRY(bind_norm(b, nm(b, i, "input_layernorm.weight"), H, 1, &L->in_norm, err));
    TRY(bind_norm(b, nm(b, i, "post_attention_layernorm.weight"), H, 1, &L->post_norm, err));
    if (L->is_linear) {
        int64_t Hv = c->lv_heads;
        TRY(linear_bind(&b->src, nm(b, i, "linear_attn.in_proj_qkv"), 0, m->conv_dim, H, 0, &L->in_qkv, err));
        TRY(linear_bind(&b->src, nm(b, i, "linear_attn.in_proj_z"), 0, m->value_dim, H, 0, &L->in_z, err));
        TRY(linear_bind(&b->src, nm(b, i, "linear_attn.in_proj_b"), 0, Hv, H, 0, &L->in_b, err));
        TRY(linear_bind(&b->src, nm(b, i, "linear_attn.in_proj_a"), 0, Hv, H, 0, &L->in_a, err));
        TRY(linear_bind(&b->src, nm(b, i, "linear_attn.out_proj"), 0, H, m->value_dim, 0, &L->out_proj, err));
        /* conv1d: MLX [C, K, 1] or HF [C, 1, K]; both store tap j of channel c at c*K + j. */
        const char *cn = nm(b, i, "linear_attn.conv1d.weight");
        const st_tensor *t = model_dir_find(b->src.md, cn, NULL);
        if (!t) return err_set(err, OPTIQ_ERR_FORMAT, "tensor %s missing", cn);
        int64_t want_mlx[3] = {m->conv_dim, c->conv_k, 1}, want_hf[3] = {m->conv_dim, 1, c->conv_k};
        int hf = t->ndim == 3 && t->shape[1] == 1 && t->shape[2] == c->conv_k && c->conv_k != 1;
        TRY(weight_vec_f32(&b->src, cn, 3, hf ? want_hf : want_mlx, &L->conv_w, err));
        float *alog = NULL;
        TRY(weight_vec_f32(&b->src, nm(b, i, "linear_attn.A_log"), 1, &Hv, &alog, err));
        L->neg_a = alog;
        for (int64_t h = 0; h < Hv; h++) L->neg_a[h] = -expf(alog[h]);
        TRY(weight_vec_f32(&b->src, nm(b, i, "linear_attn.dt_bias"), 1, &Hv, &L->dt_bias, err));
        TRY(bind_norm(b, nm(b, i, "linear_attn.norm.weight"), c->lv_dim, 0, &L->gnorm, err));
    } else {
        int64_t D = c->head_dim;
        int bias = c->attn_bias ? 2 : 0;
        TRY(linear_bind(&b->src, nm(b, i, "self_attn.q_proj"), 0, 2 * c->n_heads * D, H, bias, &L->q, err));
        TRY(linear_bind(&b->src, nm(b, i, "self_attn.k_proj"), 0, c->n_kv_heads * D, H, bias, &L->k, err));
        TRY(linear_bind(&b->src, nm(b, i, "self_attn.v_proj"), 0, c->n_kv_heads * D, H, bias, &L->v, err));
        TRY(linear_bind(&b->src, nm(b, i, "self_attn.o_proj"), 0, H, c->n_heads * D, bias, &L->o, err));
        TRY(bind_norm(b, nm(b, i, "self_attn.q_norm.weight"), D, 1, &L->q_norm, err));
        TRY(bind_norm(b, nm(b, i, "self_attn.k_norm.weight"), D, 1, &L->k_norm, err));
    }
    if (c->n_experts > 0) {
        int64_t E = c->n_experts, Ie = c->moe_inter, Is = c->shared_inter;
        TRY(linear_bind(&b->src, nm(b, i, "mlp.gate"), 0, E, H, 0, &L->router, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.switch_mlp.gate_proj"), E, Ie, H, 0, &L->ex_gate, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.switch_mlp.up_proj"), E, Ie, H, 0, &L->ex_up, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.switch_mlp.down_proj"), E, H, Ie, 0, &L->ex_down, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.shared_expert.gate_proj"), 0, Is, H, 0, &L->sh_gate, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.shared_expert.up_proj"), 0, Is, H, 0, &L->sh_up, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.shared_expert.down_proj"), 0, H, Is, 0, &L->sh_down, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.shared_expert_gate"), 0, 1, H, 0, &L->sh_router, err));
    } else {
        TRY(linear_bind(&b->src, nm(b, i, "mlp.gate_proj"), 0, c->inter, H, 0, &L->gate, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.up_proj"), 0, c->inter, H, 0, &L->up, err));
        TRY(linear_bind(&b->src, nm(b, i, "mlp.down_proj"), 0, H, c->inter, 0, &L->down, err));
    }
#undef TRY
    return OPTIQ_OK;
}

static optiq_status q35_load(model_dir *md, lm_model **out, optiq_error *err) {
    *out = NULL;
    q35_model *m = calloc(1, sizeof *m);
    if (!m) {
        model_dir_close(md);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    m->base.md = md;
    extern const lm_ops qwen3_5_ops;
    m->base.ops = &qwen3_5_ops;
    const char *type = model_dir_model_type(md);
    optiq_status st = parse_config(md, !strcmp(type, "qwen3_5_moe"), &m->c, err);
    if (st == OPTIQ_OK) st = quant_config_parse(model_dir_config(md), model_dir_config_path(md), &m->qc, err);
    if (st == OPTIQ_OK) st = quant_resolve(md, &m->qc, &m->qm, err);
    if (st) {
        q35_free(&m->base);
        return st;
    }
    const q35_config *c = &m->c;
    m->key_dim = c->lk_heads * c->lk_dim;
    m->value_dim = c->lv_heads * c->lv_dim;
    m->conv_dim = 2 * m->key_dim + m->value_dim;

    binder b = {{md, &m->qm}, NULL, 0, {0}};
    b.prefix = weight_prefix(md);
    if (!b.prefix) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: no embed_tokens.weight (looked for language_model.model.embed_tokens.weight, "
                     "model.language_model.embed_tokens.weight, model.embed_tokens.weight)", model_dir_path(md));
        q35_free(&m->base);
        return st;
    }
    /* A raw Hugging Face checkpoint (conv1d stored [C, 1, K]) has zero-centred norms. */
    for (int64_t i = 0; i < c->n_layers && !b.raw_hf; i++) {
        if ((i + 1) % c->interval == 0) continue;
        const st_tensor *t = model_dir_find(md, nm(&b, i, "linear_attn.conv1d.weight"), NULL);
        if (t && t->ndim == 3 && t->shape[2] != 1) b.raw_hf = 1;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->inv_freq = malloc(sizeof(float) * (size_t)(c->rope_dims / 2));
    m->axis = malloc((size_t)(c->rope_dims / 2));
    if (!m->layers || !m->inv_freq || !m->axis) {
        q35_free(&m->base);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    st = linear_bind(&b.src, nm(&b, -1, "embed_tokens"), 0, c->vocab, c->hidden, 0, &m->embed, err);
    if (st == OPTIQ_OK) st = bind_norm(&b, nm(&b, -1, "norm.weight"), c->hidden, 1, &m->final_norm, err);
    if (st == OPTIQ_OK && !c->tie) {
        const char *head = !strcmp(b.prefix, "language_model.model.") ? "language_model.lm_head" : "lm_head";
        st = linear_bind(&b.src, head, 0, c->vocab, c->hidden, 0, &m->head, err);
    }
    for (int64_t i = 0; st == OPTIQ_OK && i < c->n_layers; i++) st = bind_layer(m, &b, i, err);
    if (st) {
        q35_free(&m->base);
        return st;
    }
    int nf = c->rope_dims / 2;
    for (int j = 0; j < nf; j++) {
        m->inv_freq[j] = (float)pow(c->rope_theta, -(double)(2 * j) / (double)c->rope_dims);
        /* interleaved MRoPE: h on slots 1, 4, 7, ... below 3*sec[1], w on 2, 5, ... below 3*sec[2], t elsewhere */
        m->axis[j] = (j % 3 == 1 && j < 3 * c->mrope[1]) ? 1 : (j % 3 == 2 && j < 3 * c->mrope[2]) ? 2 : 0;
    }
    lm_info *in = &m->base.info;
    in->family = "qwen3_5";
    in->model_type = type;
    in->vocab_size = c->vocab;
    in->hidden_size = c->hidden;
    in->n_layers = (int)c->n_layers;
    in->max_position = c->max_pos;
    in->mrope = 1;
    in->tied_embeddings = c->tie;
    *out = &m->base;
    return OPTIQ_OK;
}

/* ---- cache ---- */

typedef struct q35_cache {
    lm_cache base;
    float **conv;     /* per layer (K-1, conv_dim) or NULL */
    float **ssm;      /* per layer (Hv, Dv, Dk) or NULL */
    float **kc, **vc; /* per layer (kv_alloc, Hkv, D) or NULL */
    int64_t kv_alloc;
    /* scratch, sized for scr_n tokens */
    int64_t scr_n;
    float *h, *xn, *r, *big1, *big2, *big3, *big4, *small1, *small2;
    int32_t *pos3, *ids;
    float *att;       /* (threads, kv_alloc) */
    int att_threads;
    int64_t att_alloc;
} q35_cache;

static void q35_cache_free(lm_cache *bc) {
    q35_cache *c = (q35_cache *)bc;
    if (!c) return;
    const q35_model *m = (const q35_model *)c->base.model;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (c->conv) free(c->conv[i]);
        if (c->ssm) free(c->ssm[i]);
        if (c->kc) free(c->kc[i]);
        if (c->vc) free(c->vc[i]);
    }
    free(c->conv), free(c->ssm), free(c->kc), free(c->vc);
    free(c->h), free(c->xn), free(c->r), free(c->big1), free(c->big2), free(c->big3), free(c->big4);
    free(c->small1), free(c->small2), free(c->pos3), free(c->ids), free(c->att);
    free(c);
}

static void q35_cache_reset(lm_cache *bc) {
    q35_cache *c = (q35_cache *)bc;
    const q35_model *m = (const q35_model *)c->base.model;
    size_t conv_n = (size_t)((m->c.conv_k - 1) * m->conv_dim);
    size_t ssm_n = (size_t)(m->c.lv_heads * m->c.lv_dim * m->c.lk_dim);
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (c->conv[i]) memset(c->conv[i], 0, sizeof(float) * conv_n);
        if (c->ssm[i]) memset(c->ssm[i], 0, sizeof(float) * ssm_n);
    }
    c->base.pos = 0;
    c->base.rope_delta = 0;
}

static optiq_status q35_cache_new(const lm_model *bm, int64_t capacity, lm_cache **out, optiq_error *err) {
    const q35_model *m = (const q35_model *)bm;
    q35_cache *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    c->base.model = bm;
    c->base.capacity = capacity;
    size_t nl = (size_t)m->c.n_layers;
    c->conv = calloc(nl, sizeof(float *));
    c->ssm = calloc(nl, sizeof(float *));
    c->kc = calloc(nl, sizeof(float *));
    c->vc = calloc(nl, sizeof(float *));
    int ok = c->conv && c->ssm && c->kc && c->vc;
    size_t conv_n = (size_t)((m->c.conv_k - 1) * m->conv_dim);
    size_t ssm_n = (size_t)(m->c.lv_heads * m->c.lv_dim * m->c.lk_dim);
    for (size_t i = 0; ok && i < nl; i++) {
        if (!m->layers[i].is_linear) continue;
        c->conv[i] = calloc(conv_n ? conv_n : 1, sizeof(float));
        c->ssm[i] = calloc(ssm_n, sizeof(float));
        ok = c->conv[i] && c->ssm[i];
    }
    if (!ok) {
        q35_cache_free(&c->base);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory allocating the sequence state");
    }
    *out = &c->base;
    return OPTIQ_OK;
}

/* KV rows for `need` tokens, grown in steps of 256 (existing rows kept). */
static optiq_status ensure_kv(q35_cache *c, const q35_model *m, int64_t need, optiq_error *err) {
    if (need <= c->kv_alloc) return OPTIQ_OK;
    int64_t n = (need + 255) / 256 * 256;
    if (n > c->base.capacity) n = c->base.capacity;
    size_t row = (size_t)(m->c.n_kv_heads * m->c.head_dim);
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (m->layers[i].is_linear) continue;
        if (!grow_f32(&c->kc[i], (size_t)n * row) || !grow_f32(&c->vc[i], (size_t)n * row))
            return err_set(err, OPTIQ_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens", (long long)n);
    }
    c->kv_alloc = n;
    return OPTIQ_OK;
}

/* Scratch for n tokens, and attention scratch of (threads, att_len) floats
 * (att_len: the most keys a query of the call sees). */
static optiq_status ensure_scratch(q35_cache *c, const q35_model *m, int64_t n, int threads, int64_t att_len,
                                   optiq_error *err) {
    const q35_config *k = &m->c;
    if (n > c->scr_n) {
        int64_t H = k->hidden;
        int64_t kk = k->n_experts > 0 ? k->top_k : 1;
        /* big buffers: the widest per-token activation of any op, times tokens (times k for experts) */
        int64_t w1 = m->conv_dim;
        if (2 * k->n_heads * k->head_dim > w1) w1 = 2 * k->n_heads * k->head_dim;
        if (k->inter > w1) w1 = k->inter;
        if (kk * k->moe_inter > w1) w1 = kk * k->moe_inter;
        if (k->shared_inter > w1) w1 = k->shared_inter;
        if (kk * H > w1) w1 = kk * H;
        int64_t ws = k->lv_heads > k->n_experts ? k->lv_heads : k->n_experts;
        if (ws < 2 * kk) ws = 2 * kk;
        size_t N = (size_t)n;
        size_t win = (size_t)((k->conv_k - 1) * m->conv_dim); /* conv window rows before the new ones */
        int ok = grow_f32(&c->h, N * (size_t)H) && grow_f32(&c->xn, N * (size_t)H) && grow_f32(&c->r, N * (size_t)H) &&
                 grow_f32(&c->big1, N * (size_t)w1 + win) && grow_f32(&c->big2, N * (size_t)w1) && grow_f32(&c->big3, N * (size_t)w1) &&
                 grow_f32(&c->big4, N * (size_t)w1) && grow_f32(&c->small1, N * (size_t)ws) && grow_f32(&c->small2, N * (size_t)ws);
        int32_t *p = ok ? realloc(c->pos3, sizeof(int32_t) * 3 * N) : NULL;
        if (p) c->pos3 = p;
        int32_t *ids = p ? realloc(c->ids, sizeof(int32_t) * N * (size_t)kk) : NULL;
        if (ids) c->ids = ids;
        if (!ids) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory for %lld tokens of scratch", (long long)n);
        c->scr_n = n;
    }
    if (threads > c->att_threads || att_len > c->att_alloc) {
        if (!grow_f32(&c->att, (size_t)threads * (size_t)att_len))
            return err_set(err, OPTIQ_ERR_NOMEM, "out of memory for attention scratch");
        c->att_threads = threads;
        c->att_alloc = att_len;
    }
    return OPTIQ_OK;
}

/* Quantized products use int8 activations unless the model is set to exact. */
#define Q8(m) (!(m)->base.exact)

/* ---- gated deltanet ---- */

typedef struct gdn_ctx {
    const q35_model *m;
    float *state;      /* (Hv, Dv, Dk) */
    const float *u;    /* (n, conv_dim) conv output: q | k | v, q and k normalized */
    const float *g, *beta; /* (n, Hv) */
    float *y;          /* (n, Hv, Dv) */
    int64_t n;
} gdn_ctx;

static void gdn_head(void *vctx, int64_t h, int thread) {
    (void)thread;
    const gdn_ctx *a = vctx;
    const q35_model *m = a->m;
    int64_t Hv = m->c.lv_heads, Dv = m->c.lv_dim, Dk = m->c.lk_dim;
    int64_t kh = h / (Hv / m->c.lk_heads);
    float *S = a->state + h * Dv * Dk;
    for (int64_t t = 0; t < a->n; t++) {
        const float *u = a->u + t * m->conv_dim;
        const float *q = u + kh * Dk, *k = u + m->key_dim + kh * Dk, *v = u + 2 * m->key_dim + h * Dv;
        float g = a->g[t * Hv + h], beta = a->beta[t * Hv + h];
        gdn_step(S, q, k, v, g, beta, Dv, Dk, a->y + (t * Hv + h) * Dv);
    }
}

/* The conv output row of one token (conv_dim): q and k normalized as
 * mlx-lm's normalize_qk, x / sqrt(mean(x²) + 1e-6/Dk) times 1/Dk (q) and
 * Dk^-1/2 (k), in place. */
static void gdn_norm_qk(const q35_model *m, float *u) {
    int64_t Dk = m->c.lk_dim;
    float inv_scale = (float)(1.0 / sqrt((double)Dk));
    float qs = (float)(1.0 / (double)Dk);
    float eps = (float)(1e-6 / (double)Dk);
    float *q = u, *kk = u + m->key_dim;
    nn_rmsnorm(q, m->c.lk_heads, Dk, NULL, eps, q);
    nn_rmsnorm(kk, m->c.lk_heads, Dk, NULL, eps, kk);
    for (int64_t j = 0; j < m->key_dim; j++) {
        q[j] *= qs;
        kk[j] *= inv_scale;
    }
}

/* In place over (n, Hv): bb = beta = sigmoid(b), aa = g = exp(-exp(A_log) * softplus(a + dt_bias)). */
static void gdn_gates(const q35_layer *L, int64_t Hv, int64_t n, float *bb, float *aa) {
    for (int64_t i = 0; i < n * Hv; i++) {
        int64_t h = i % Hv;
        bb[i] = nn_sigmoid(bb[i]);
        aa[i] = expf(L->neg_a[h] * nn_softplus(aa[i] + L->dt_bias[h]));
    }
}

/* out (n, H) = out_proj(rmsnorm(y; norm.weight) * silu(z)), the norm per
 * (token, head); y (n, Hv*Dv) is overwritten. */
static optiq_status gdn_output(const q35_model *m, const q35_layer *L, thread_pool *pool, float *y, const float *z,
                               int64_t n, float *out, optiq_error *err) {
    int64_t Hv = m->c.lv_heads, Dv = m->c.lv_dim;
    nn_rmsnorm(y, n * Hv, Dv, L->gnorm, (float)m->c.eps, y);
    for (int64_t i = 0; i < n * Hv * Dv; i++) y[i] *= nn_silu(z[i]);
    return linear_apply(pool, &L->out_proj, 0, y, n, out, 0, Q8(m), err);
}

static optiq_status gdn_forward(const q35_model *m, const q35_layer *L, q35_cache *c, int64_t li, thread_pool *pool,
                                const float *x, int64_t n, float *out, optiq_error *err) {
    const q35_config *k = &m->c;
    int64_t C = m->conv_dim, K = k->conv_k, Hv = k->lv_heads;
    float *win = c->big1;            /* (K-1+n, C) conv window */
    float *qkv = win + (K - 1) * C;  /* (n, C) the new rows */
    float *u = c->big2;              /* (n, C) conv output */
    float *z = c->big3;              /* (n, Hv*Dv) */
    float *y = c->big4;              /* (n, Hv*Dv) */
    float *bb = c->small1, *aa = c->small2; /* (n, Hv) */
    optiq_status st;
    if ((st = linear_apply(pool, &L->in_qkv, 0, x, n, qkv, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_z, 0, x, n, z, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_b, 0, x, n, bb, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_a, 0, x, n, aa, 0, Q8(m), err))) return st;
    float *cs = c->conv[li];
    memcpy(win, cs, sizeof(float) * (size_t)((K - 1) * C));
    for (int64_t t = 0; t < n; t++)
        for (int64_t ch = 0; ch < C; ch++) {
            const float *w = L->conv_w + ch * K;
            float s = 0.0f;
            for (int64_t j = 0; j < K; j++) s += w[j] * win[(t + j) * C + ch];
            u[t * C + ch] = nn_silu(s);
        }
    memcpy(cs, win + n * C, sizeof(float) * (size_t)((K - 1) * C));
    for (int64_t t = 0; t < n; t++) gdn_norm_qk(m, u + t * C);
    gdn_gates(L, Hv, n, bb, aa);
    gdn_ctx g = {m, c->ssm[li], u, aa, bb, y, n};
    pool_run(pool, Hv, gdn_head, &g);
    return gdn_output(m, L, pool, y, z, n, out, err);
}

/* ---- full attention ---- */

/* q (rows, D) = the query halves of qg (rows, 2D); rows = tokens x heads. */
static void attn_split_q(const float *qg, int64_t rows, int64_t D, float *q) {
    for (int64_t r = 0; r < rows; r++) memcpy(q + r * D, qg + r * 2 * D, sizeof(float) * (size_t)D);
}

/* o (rows, D) *= sigmoid(the gate halves of qg (rows, 2D)). */
static void attn_gate(float *o, const float *qg, int64_t rows, int64_t D) {
    for (int64_t r = 0; r < rows; r++) {
        float *oh = o + r * D;
        const float *gate = qg + r * 2 * D + D;
        for (int64_t e = 0; e < D; e++) oh[e] *= nn_sigmoid(gate[e]);
    }
}

static optiq_status attn_forward(const q35_model *m, const q35_layer *L, q35_cache *c, int64_t li, thread_pool *pool,
                                 const float *x, int64_t n, const int32_t *pos3, float *out, optiq_error *err) {
    const q35_config *k = &m->c;
    int64_t D = k->head_dim, Hq = k->n_heads, Hkv = k->n_kv_heads, p0 = c->base.pos;
    float *qg = c->big2;  /* (n, Hq, 2D) */
    float *q = c->big3;   /* (n, Hq, D), later the attention output */
    float *o = c->big4;   /* (n, Hq, D) */
    float *kn = c->kc[li] + p0 * Hkv * D, *vn = c->vc[li] + p0 * Hkv * D;
    optiq_status st;
    if ((st = linear_apply(pool, &L->q, 0, x, n, qg, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->k, 0, x, n, kn, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->v, 0, x, n, vn, 0, Q8(m), err))) return st;
    attn_split_q(qg, n * Hq, D, q);
    nn_rmsnorm(q, n * Hq, D, L->q_norm, (float)k->eps, q);
    nn_rmsnorm(kn, n * Hkv, D, L->k_norm, (float)k->eps, kn);
    nn_rope(q, n, (int)Hq, (int)D, k->rope_dims / 2, m->inv_freq, pos3, m->axis);
    nn_rope(kn, n, (int)Hkv, (int)D, k->rope_dims / 2, m->inv_freq, pos3, m->axis);
    nn_attention(pool, q, c->kc[li], c->vc[li], n, p0, (int)Hq, (int)Hkv, (int)D, (float)(1.0 / sqrt((double)D)), o,
                 c->att);
    attn_gate(o, qg, n * Hq, D);
    return linear_apply(pool, &L->o, 0, o, n, out, 0, Q8(m), err);
}

/* ---- mlp / moe ---- */

static optiq_status mlp_forward(const q35_model *m, const q35_layer *L, q35_cache *c, thread_pool *pool,
                                const float *x, int64_t n, float *out, optiq_error *err) {
    int64_t I = m->c.inter;
    optiq_status st;
    if ((st = linear_apply(pool, &L->gate, 0, x, n, c->big2, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->up, 0, x, n, c->big3, 0, Q8(m), err))) return st;
    nn_swiglu(c->big2, c->big3, n * I);
    return linear_apply(pool, &L->down, 0, c->big2, n, out, 0, Q8(m), err);
}

static optiq_status moe_forward(const q35_model *m, const q35_layer *L, q35_cache *c, thread_pool *pool,
                                const float *x, int64_t n, float *out, optiq_error *err) {
    const q35_config *k = &m->c;
    int64_t E = k->n_experts, K = k->top_k, H = k->hidden, Ie = k->moe_inter, Is = k->shared_inter;
    float *probs = c->small1;   /* (n, E) */
    float *scores = c->small2;  /* (n, K) */
    float *xr = c->big1;        /* (n*K, H) tokens repeated per expert slot */
    float *g = c->big2, *u = c->big3, *d = c->big4; /* (n*K, Ie), (n*K, Ie), (n*K, H) */
    optiq_status st;
    /* f32 activations for the router on every path (expert choice is discontinuous) */
    if ((st = linear_apply(pool, &L->router, 0, x, n, probs, 0, 0, err))) return st;
    for (int64_t t = 0; t < n; t++) {
        float *p = probs + t * E;
        nn_softmax(p, E);
        float sum = 0.0f;
        for (int64_t s = 0; s < K; s++) { /* the K largest, first index on ties */
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                int taken = 0;
                for (int64_t q = 0; q < s; q++) taken |= c->ids[t * K + q] == (int32_t)e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            c->ids[t * K + s] = (int32_t)best;
            scores[t * K + s] = p[best];
            sum += p[best];
        }
        if (k->norm_topk)
            for (int64_t s = 0; s < K; s++) scores[t * K + s] /= sum;
        for (int64_t s = 0; s < K; s++) memcpy(xr + (t * K + s) * H, x + t * H, sizeof(float) * (size_t)H);
    }
    if ((st = linear_apply_moe(pool, &L->ex_gate, c->ids, xr, n * K, g, Q8(m), err))) return st;
    if ((st = linear_apply_moe(pool, &L->ex_up, c->ids, xr, n * K, u, Q8(m), err))) return st;
    nn_swiglu(g, u, n * K * Ie);
    if ((st = linear_apply_moe(pool, &L->ex_down, c->ids, g, n * K, d, Q8(m), err))) return st;
    for (int64_t t = 0; t < n; t++) {
        float *o = out + t * H;
        memset(o, 0, sizeof(float) * (size_t)H);
        for (int64_t s = 0; s < K; s++) {
            const float *ds = d + (t * K + s) * H;
            float w = scores[t * K + s];
            for (int64_t e = 0; e < H; e++) o[e] += ds[e] * w;
        }
    }
    /* shared expert, gated per token */
    float *sg = c->small1; /* (n) */
    if ((st = linear_apply(pool, &L->sh_router, 0, x, n, sg, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->sh_gate, 0, x, n, g, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->sh_up, 0, x, n, u, 0, Q8(m), err))) return st;
    nn_swiglu(g, u, n * Is);
    if ((st = linear_apply(pool, &L->sh_down, 0, g, n, d, 0, Q8(m), err))) return st;
    for (int64_t t = 0; t < n; t++) {
        float w = nn_sigmoid(sg[t]);
        for (int64_t e = 0; e < H; e++) out[t * H + e] += w * d[t * H + e];
    }
    return OPTIQ_OK;
}

/* ---- forward ---- */

static optiq_status q35_embed(const lm_model *bm, const int32_t *ids, int64_t n, float *out, optiq_error *err) {
    const q35_model *m = (const q35_model *)bm;
    return linear_rows(&m->embed, ids, n, out, err);
}

static optiq_status q35_forward(const lm_model *bm, lm_cache *bc, thread_pool *pool, const lm_forward_args *a,
                                optiq_error *err) {
    const q35_model *m = (const q35_model *)bm;
    q35_cache *c = (q35_cache *)bc;
    const q35_config *k = &m->c;
    int64_t n = a->n, H = k->hidden;
    optiq_status st = ensure_kv(c, m, c->base.pos + n, err);
    if (st == OPTIQ_OK) st = ensure_scratch(c, m, n, pool_threads(pool), c->kv_alloc, err);
    if (st) return st;
    if (a->positions) {
        memcpy(c->pos3, a->positions, sizeof(int32_t) * 3 * (size_t)n);
    } else {
        for (int ax = 0; ax < 3; ax++)
            for (int64_t t = 0; t < n; t++) c->pos3[ax * n + t] = (int32_t)(c->base.pos + c->base.rope_delta + t);
    }
    float *h = c->h;
    if (a->embeds) memcpy(h, a->embeds, sizeof(float) * (size_t)(n * H));
    else if ((st = linear_rows(&m->embed, a->tokens, n, h, err))) return st;
    if (a->on_hidden) a->on_hidden(a->hidden_user, 0, h, n, H);
    /* The state of linear layers changes as layers run; a failure part way
     * (out of memory only, shapes were checked at load) leaves the cache
     * inconsistent, so it is reset. */
    for (int64_t li = 0; li < k->n_layers; li++) {
        const q35_layer *L = &m->layers[li];
        nn_rmsnorm(h, n, H, L->in_norm, (float)k->eps, c->xn);
        if (L->is_linear) st = gdn_forward(m, L, c, li, pool, c->xn, n, c->r, err);
        else st = attn_forward(m, L, c, li, pool, c->xn, n, c->pos3, c->r, err);
        if (st) goto fail;
        for (int64_t i = 0; i < n * H; i++) h[i] += c->r[i];
        nn_rmsnorm(h, n, H, L->post_norm, (float)k->eps, c->xn);
        if (k->n_experts > 0) st = moe_forward(m, L, c, pool, c->xn, n, c->r, err);
        else st = mlp_forward(m, L, c, pool, c->xn, n, c->r, err);
        if (st) goto fail;
        for (int64_t i = 0; i < n * H; i++) h[i] += c->r[i];
        if (a->on_hidden) a->on_hidden(a->hidden_user, (int)li + 1, h, n, H);
    }
    c->base.pos += n;
    nn_rmsnorm(h, n, H, m->final_norm, (float)k->eps, h);
    if (a->on_hidden) a->on_hidden(a->hidden_user, (int)k->n_layers + 1, h, n, H);
    if (a->logits) {
        const linear *head = k->tie ? &m->embed : &m->head;
        int64_t rows = a->logits_all ? n : 1;
        const float *src = a->logits_all ? h : h + (n - 1) * H;
        if ((st = linear_apply(pool, head, 0, src, rows, a->logits, 0, Q8(m), err))) return st;
    }
    return OPTIQ_OK;
fail:
    q35_cache_reset(&c->base);
    return err_prefix(err, "forward: ");
}

/* ---- batched decode ----
 *
 * One decode token for each of n sequences. Every matrix is applied once to
 * the n rows (one pass over its weights, linear_apply with m = n); what is
 * per sequence (conv and recurrent states, KV cache, position) is indexed by
 * the row. Each row computes exactly what q35_forward computes for that
 * sequence alone (same ops, same order), up to the matmul kernels'
 * independence of the row count.
 *
 * Scratch: the call runs in caches[0]'s scratch, grown to n rows (and its
 * attention scratch to the longest sequence). The caller holds every cache of
 * the batch for the duration of the call (one forward at a time per cache),
 * so that scratch is as private to the call as in q35_forward. A buffer owned
 * by the model would need a lock: a loaded model is immutable and shared by
 * every thread that runs its caches. */

static q35_cache *seq_cache(lm_cache *const *cs, int64_t i) { return (q35_cache *)cs[i]; }

typedef struct batch_ctx {
    const q35_model *m;
    const q35_layer *L;
    lm_cache *const *cs; /* (n) */
    int64_t li;
    /* gated deltanet */
    const float *qkv;      /* (n, C) the new conv rows */
    float *u;              /* (n, C) conv output: q | k | v, q and k normalized */
    const float *g, *beta; /* (n, Hv) */
    float *y;              /* (n, Hv, Dv) */
    /* attention */
    const float *q;        /* (n, Hq, D) */
    float *o;              /* (n, Hq, D) */
    float *att;            /* (threads, att_stride) */
    int64_t att_stride;
} batch_ctx;

/* Sequence i: the causal conv of its new row over its conv state (then
 * shifted by one row), silu, q/k normalization. Same products in the same
 * order as gdn_forward with n = 1. */
static void gdn_conv_seq(void *vctx, int64_t i, int thread) {
    (void)thread;
    const batch_ctx *a = vctx;
    const q35_model *m = a->m;
    int64_t C = m->conv_dim, K = m->c.conv_k;
    float *cs = seq_cache(a->cs, i)->conv[a->li]; /* (K-1, C) */
    const float *x = a->qkv + i * C;
    float *u = a->u + i * C;
    for (int64_t ch = 0; ch < C; ch++) {
        const float *w = a->L->conv_w + ch * K;
        float s = 0.0f;
        for (int64_t j = 0; j < K - 1; j++) s += w[j] * cs[j * C + ch];
        s += w[K - 1] * x[ch];
        u[ch] = nn_silu(s);
    }
    if (K > 1) {
        memmove(cs, cs + C, sizeof(float) * (size_t)((K - 2) * C));
        memcpy(cs + (K - 2) * C, x, sizeof(float) * (size_t)C);
    }
    gdn_norm_qk(m, u);
}

/* Task (sequence i, v-head h): one recurrence step on that sequence's state. */
static void gdn_step_seq(void *vctx, int64_t task, int thread) {
    (void)thread;
    const batch_ctx *a = vctx;
    const q35_model *m = a->m;
    int64_t Hv = m->c.lv_heads, Dv = m->c.lv_dim, Dk = m->c.lk_dim;
    int64_t i = task / Hv, h = task % Hv, kh = h / (Hv / m->c.lk_heads);
    float *S = seq_cache(a->cs, i)->ssm[a->li] + h * Dv * Dk;
    const float *u = a->u + i * m->conv_dim;
    const float *q = u + kh * Dk, *k = u + m->key_dim + kh * Dk, *v = u + 2 * m->key_dim + h * Dv;
    gdn_step(S, q, k, v, a->g[i * Hv + h], a->beta[i * Hv + h], Dv, Dk, a->y + (i * Hv + h) * Dv);
}

static optiq_status gdn_batch(const q35_model *m, const q35_layer *L, lm_cache *const *cs, int64_t n, int64_t li,
                              thread_pool *pool, const float *x, float *out, optiq_error *err) {
    q35_cache *c0 = seq_cache(cs, 0);
    int64_t Hv = m->c.lv_heads;
    float *qkv = c0->big1;                      /* (n, C) */
    float *u = c0->big2;                        /* (n, C) */
    float *z = c0->big3;                        /* (n, Hv*Dv) */
    float *y = c0->big4;                        /* (n, Hv*Dv) */
    float *bb = c0->small1, *aa = c0->small2;   /* (n, Hv) */
    optiq_status st;
    if ((st = linear_apply(pool, &L->in_qkv, 0, x, n, qkv, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_z, 0, x, n, z, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_b, 0, x, n, bb, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->in_a, 0, x, n, aa, 0, Q8(m), err))) return st;
    gdn_gates(L, Hv, n, bb, aa);
    batch_ctx a = {.m = m, .L = L, .cs = cs, .li = li, .qkv = qkv, .u = u, .g = aa, .beta = bb, .y = y};
    pool_run(pool, n, gdn_conv_seq, &a);
    pool_run(pool, n * Hv, gdn_step_seq, &a);
    return gdn_output(m, L, pool, y, z, n, out, err);
}

/* a · b with 8 partial sums, combined as nn.c's attention does. */
static inline float dot8(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    for (; j < n; j++) acc[0] += a[j] * b[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Task (sequence i, query head h): the decode query against keys 0 .. pos
 * of that sequence's own cache. The arithmetic is nn_attention's (kernels/
 * nn.c) for one causal query, so a row equals q35_forward's; it is not
 * called directly because its scratch is indexed by thread times the key
 * count, which differs per sequence, and a batch splits over sequences x
 * heads rather than one sequence's heads. */
static void attn_seq_head(void *vctx, int64_t task, int thread) {
    const batch_ctx *a = vctx;
    const q35_config *k = &a->m->c;
    int64_t D = k->head_dim, Hq = k->n_heads, Hkv = k->n_kv_heads;
    int64_t i = task / Hq, h = task % Hq, g = h / (Hq / Hkv);
    const q35_cache *c = seq_cache(a->cs, i);
    const float *q = a->q + (i * Hq + h) * D;
    const float *kc = c->kc[a->li] + g * D, *vc = c->vc[a->li] + g * D; /* row stride Hkv * D */
    float *p = a->att + (int64_t)thread * a->att_stride;                /* (n_kv) */
    int64_t n_kv = c->base.pos + 1;
    float scale = (float)(1.0 / sqrt((double)D)), mx = -INFINITY;
    for (int64_t t = 0; t < n_kv; t++) {
        float d = dot8(q, kc + t * Hkv * D, D) * scale;
        p[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n_kv; t++) {
        p[t] = expf(p[t] - mx);
        sum += p[t];
    }
    float inv = 1.0f / sum;
    float *o = a->o + (i * Hq + h) * D;
    memset(o, 0, sizeof(float) * (size_t)D);
    for (int64_t t = 0; t < n_kv; t++) {
        const float *v = vc + t * Hkv * D;
        float w = p[t] * inv;
        for (int64_t e = 0; e < D; e++) o[e] += w * v[e];
    }
}

static optiq_status attn_batch(const q35_model *m, const q35_layer *L, lm_cache *const *cs, int64_t n, int64_t li,
                               thread_pool *pool, const float *x, float *out, optiq_error *err) {
    const q35_config *k = &m->c;
    q35_cache *c0 = seq_cache(cs, 0);
    int64_t D = k->head_dim, Hq = k->n_heads, Hkv = k->n_kv_heads, kvw = Hkv * D;
    float *qg = c0->big2;          /* (n, Hq, 2D) */
    float *q = c0->big3;           /* (n, Hq, D) */
    float *o = c0->big4;           /* (n, Hq, D) */
    float *kn = c0->big1;          /* (n, Hkv, D): big1 holds n * max(conv_dim, 2 Hq D, ...) >= 2 n Hkv D */
    float *vn = kn + n * kvw;      /* (n, Hkv, D) */
    optiq_status st;
    if ((st = linear_apply(pool, &L->q, 0, x, n, qg, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->k, 0, x, n, kn, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->v, 0, x, n, vn, 0, Q8(m), err))) return st;
    attn_split_q(qg, n * Hq, D, q);
    nn_rmsnorm(q, n * Hq, D, L->q_norm, (float)k->eps, q);
    nn_rmsnorm(kn, n * Hkv, D, L->k_norm, (float)k->eps, kn);
    for (int64_t i = 0; i < n; i++) {
        q35_cache *c = seq_cache(cs, i);
        int64_t p = c->base.pos;
        /* text decode: the same position on all three MRoPE axes */
        int32_t p3[3] = {(int32_t)(p + c->base.rope_delta), (int32_t)(p + c->base.rope_delta),
                         (int32_t)(p + c->base.rope_delta)};
        nn_rope(q + i * Hq * D, 1, (int)Hq, (int)D, k->rope_dims / 2, m->inv_freq, p3, m->axis);
        nn_rope(kn + i * kvw, 1, (int)Hkv, (int)D, k->rope_dims / 2, m->inv_freq, p3, m->axis);
        memcpy(c->kc[li] + p * kvw, kn + i * kvw, sizeof(float) * (size_t)kvw);
        memcpy(c->vc[li] + p * kvw, vn + i * kvw, sizeof(float) * (size_t)kvw);
    }
    batch_ctx a = {.m = m, .L = L, .cs = cs, .li = li, .q = q, .o = o, .att = c0->att, .att_stride = c0->att_alloc};
    pool_run(pool, n * Hq, attn_seq_head, &a);
    attn_gate(o, qg, n * Hq, D);
    return linear_apply(pool, &L->o, 0, o, n, out, 0, Q8(m), err);
}

static optiq_status q35_forward_batch(const lm_model *bm, lm_cache *const *cs, const int32_t *tokens, int64_t n,
                                      thread_pool *pool, float *logits, optiq_error *err) {
    const q35_model *m = (const q35_model *)bm;
    const q35_config *k = &m->c;
    int64_t H = k->hidden;
    q35_cache *c0 = seq_cache(cs, 0);
    /* Growing allocations leaves every sequence as it was: no reset needed
     * when one fails. */
    int64_t att_len = 1;
    optiq_status st = OPTIQ_OK;
    for (int64_t i = 0; i < n && st == OPTIQ_OK; i++) {
        q35_cache *c = seq_cache(cs, i);
        st = ensure_kv(c, m, c->base.pos + 1, err);
        if (c->kv_alloc > att_len) att_len = c->kv_alloc;
    }
    if (st == OPTIQ_OK) st = ensure_scratch(c0, m, n, pool_threads(pool), att_len, err);
    float *h = c0->h; /* (n, H) */
    if (st == OPTIQ_OK) st = linear_rows(&m->embed, tokens, n, h, err);
    if (st) return err_prefix(err, "forward_batch: ");
    /* From here the linear layers' states change; a failure part way (out of
     * memory only) leaves the sequences inconsistent, so all are reset. */
    for (int64_t li = 0; li < k->n_layers; li++) {
        const q35_layer *L = &m->layers[li];
        nn_rmsnorm(h, n, H, L->in_norm, (float)k->eps, c0->xn);
        if (L->is_linear) st = gdn_batch(m, L, cs, n, li, pool, c0->xn, c0->r, err);
        else st = attn_batch(m, L, cs, n, li, pool, c0->xn, c0->r, err);
        if (st) goto fail;
        for (int64_t i = 0; i < n * H; i++) h[i] += c0->r[i];
        nn_rmsnorm(h, n, H, L->post_norm, (float)k->eps, c0->xn);
        if (k->n_experts > 0) st = moe_forward(m, L, c0, pool, c0->xn, n, c0->r, err);
        else st = mlp_forward(m, L, c0, pool, c0->xn, n, c0->r, err);
        if (st) goto fail;
        for (int64_t i = 0; i < n * H; i++) h[i] += c0->r[i];
    }
    for (int64_t i = 0; i < n; i++) cs[i]->pos++;
    nn_rmsnorm(h, n, H, m->final_norm, (float)k->eps, h);
    return linear_apply(pool, k->tie ? &m->embed : &m->head, 0, h, n, logits, 0, Q8(m), err);
fail:
    for (int64_t i = 0; i < n; i++) q35_cache_reset(cs[i]);
    return err_prefix(err, "forward_batch: ");
}

static uint64_t q35_decode_bytes(const lm_model *bm) {
    const q35_model *m = (const q35_model *)bm;
    const q35_config *k = &m->c;
    uint64_t b = linear_bytes(k->tie ? &m->embed : &m->head);
    for (int64_t i = 0; i < k->n_layers; i++) {
        const q35_layer *L = &m->layers[i];
        const linear *ls[] = {&L->in_qkv, &L->in_z, &L->in_b, &L->in_a, &L->out_proj, &L->q, &L->k, &L->v, &L->o,
                              &L->gate, &L->up, &L->down, &L->router, &L->sh_gate, &L->sh_up, &L->sh_down, &L->sh_router};
        for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++)
            if (ls[j]->rows) b += linear_bytes(ls[j]);
        b += linear_expert_bytes(&L->ex_gate, k->top_k) + linear_expert_bytes(&L->ex_up, k->top_k) +
             linear_expert_bytes(&L->ex_down, k->top_k);
    }
    return b;
}

/* ---- saved states (lm_ops.state_*) ----
 *
 * Rows: per position, the K then V row (Hkv * D floats each) of every
 * full-attention layer in layer order. Tail: per Gated DeltaNet layer, the
 * conv window ((K-1) * conv_dim floats) then the recurrent state (Hv * Dv *
 * Dk floats); it only holds for the position it was taken at, which is why
 * the runtime keeps checkpoints of it. */

static void q35_state_layout(const lm_model *bm, size_t *row_bytes, size_t *tail_bytes) {
    const q35_model *m = (const q35_model *)bm;
    size_t kv = (size_t)(m->c.n_kv_heads * m->c.head_dim), conv = (size_t)((m->c.conv_k - 1) * m->conv_dim);
    size_t ssm = (size_t)(m->c.lv_heads * m->c.lv_dim * m->c.lk_dim);
    *row_bytes = *tail_bytes = 0;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (m->layers[i].is_linear) *tail_bytes += (conv + ssm) * sizeof(float);
        else *row_bytes += 2 * kv * sizeof(float);
    }
}

static void q35_state_save_rows(const lm_cache *bc, int64_t from, int64_t to, void *dst) {
    const q35_cache *c = (const q35_cache *)bc;
    const q35_model *m = (const q35_model *)c->base.model;
    size_t kv = (size_t)(m->c.n_kv_heads * m->c.head_dim);
    float *o = dst;
    for (int64_t t = from; t < to; t++)
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            if (m->layers[i].is_linear) continue;
            memcpy(o, c->kc[i] + (size_t)t * kv, kv * sizeof(float)), o += kv;
            memcpy(o, c->vc[i] + (size_t)t * kv, kv * sizeof(float)), o += kv;
        }
}

static void q35_state_save_tail(const lm_cache *bc, void *dst) {
    const q35_cache *c = (const q35_cache *)bc;
    const q35_model *m = (const q35_model *)c->base.model;
    size_t conv = (size_t)((m->c.conv_k - 1) * m->conv_dim), ssm = (size_t)(m->c.lv_heads * m->c.lv_dim * m->c.lk_dim);
    float *o = dst;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (!m->layers[i].is_linear) continue;
        memcpy(o, c->conv[i], conv * sizeof(float)), o += conv;
        memcpy(o, c->ssm[i], ssm * sizeof(float)), o += ssm;
    }
}

static optiq_status q35_state_restore(lm_cache *bc, int64_t pos, const void *rows, const void *tail,
                                      optiq_error *err) {
    q35_cache *c = (q35_cache *)bc;
    const q35_model *m = (const q35_model *)c->base.model;
    q35_cache_reset(bc);
    optiq_status st = ensure_kv(c, m, pos, err);
    if (st) return st;
    size_t kv = (size_t)(m->c.n_kv_heads * m->c.head_dim), conv = (size_t)((m->c.conv_k - 1) * m->conv_dim);
    size_t ssm = (size_t)(m->c.lv_heads * m->c.lv_dim * m->c.lk_dim);
    const float *r = rows, *tl = tail;
    for (int64_t t = 0; t < pos; t++)
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            if (m->layers[i].is_linear) continue;
            memcpy(c->kc[i] + (size_t)t * kv, r, kv * sizeof(float)), r += kv;
            memcpy(c->vc[i] + (size_t)t * kv, r, kv * sizeof(float)), r += kv;
        }
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        if (!m->layers[i].is_linear) continue;
        memcpy(c->conv[i], tl, conv * sizeof(float)), tl += conv;
        memcpy(c->ssm[i], tl, ssm * sizeof(float)), tl += ssm;
    }
    c->base.pos = pos;
    return OPTIQ_OK;
}

/* ---- description (optiq inspect) ---- */

static cJSON *q35_describe(const model_dir *md, optiq_error *err) {
    q35_config c;
    if (parse_config(md, !strcmp(model_dir_model_type(md), "qwen3_5_moe"), &c, err)) return NULL;
    int64_t n_full = c.n_layers / c.interval;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "family", "qwen3_5");
    cJSON_AddStringToObject(o, "variant", c.n_experts > 0 ? "MoE" : "dense");
    cJSON_AddNumberToObject(o, "layers", (double)c.n_layers);
    cJSON_AddNumberToObject(o, "hidden_size", (double)c.hidden);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c.vocab);
    cJSON_AddNumberToObject(o, "context", (double)c.max_pos);
    cJSON *f = cJSON_AddArrayToObject(o, "features");
    cfg_add_feature(f, "%lld Gated DeltaNet (linear attention) layers and %lld full-attention layers (every %lld)",
                (long long)(c.n_layers - n_full), (long long)n_full, (long long)c.interval);
    cfg_add_feature(f, "full attention: %lld query heads, %lld KV heads, head %lld, output gate", (long long)c.n_heads,
                (long long)c.n_kv_heads, (long long)c.head_dim);
    cfg_add_feature(f, "MRoPE on %d of %lld features (theta %.3g)", c.rope_dims, (long long)c.head_dim, c.rope_theta);
    if (c.n_experts > 0)
        cfg_add_feature(f, "MoE: %lld experts, top %lld, width %lld, gated shared expert (%lld)", (long long)c.n_experts,
                    (long long)c.top_k, (long long)c.moe_inter, (long long)c.shared_inter);
    else cfg_add_feature(f, "SwiGLU MLP (%lld)", (long long)c.inter);
    cfg_add_feature(f, c.tie ? "tied input/output embeddings" : "separate lm_head");
    return o;
}

const lm_ops qwen3_5_ops = {
    .family = "qwen3_5",
    .model_types = Q35_TYPES,
    .load = q35_load,
    .free = q35_free,
    .cache_new = q35_cache_new,
    .cache_free = q35_cache_free,
    .cache_reset = q35_cache_reset,
    .forward = q35_forward,
    .embed = q35_embed,
    .forward_batch = q35_forward_batch,
    .decode_bytes = q35_decode_bytes,
    .describe = q35_describe,
    .state_layout = q35_state_layout,
    .state_save_rows = q35_state_save_rows,
    .state_save_tail = q35_state_save_tail,
    .state_restore = q35_state_restore,
};
