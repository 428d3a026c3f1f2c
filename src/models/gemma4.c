/*
 * gemma4.c — the Gemma-4 text tower (model_type gemma4, gemma4_text, and the
 * text side of gemma4_unified).
 *
 * Spec: ../shared/spec/gemma4.md §2-§5; the reference is mlx-lm 0.32.2
 * (models/gemma4.py, gemma4_text.py). Per layer l, with kind sliding or full
 * from config.layer_types:
 *
 *   h = embed(tokens) * sqrt(H)
 *   a = post_attention_norm(attn(input_norm(h)));  h += a
 *   f = mlp(pre_ff_norm(h))                        (GeGLU, tanh GELU)
 *     MoE layers: f = post_ff_norm_1(f) + post_ff_norm_2(experts(pre_ff_norm_2(h)))
 *   h += post_ff_norm(f)
 *   PLE:  h += post_ple_norm(ple_proj(gelu(ple_gate(h)) * ple_l))
 *   h *= layer_scalar_l
 *   logits = softcap * tanh(head(final_norm(h)) / softcap)   head = embed_tokens when tied
 *
 * Attention: q/k RMSNorm with weights, v RMSNorm without; scale 1.0; RoPE on
 * q and k ("rotate half"): sliding layers the default RoPE over the whole
 * head (head_dim), full layers their own head size (global_head_dim) with
 * "proportional" RoPE — inverse frequencies 1 / (factor * theta^(2i/d)) for
 * the first d*partial/2 slots, 0 (no rotation) for the rest. K-eq-V full
 * layers have no v_proj: values are the raw k_proj output through the
 * weightless norm. Sliding layers see the last sliding_window positions
 * (the query included), full layers all. The last num_kv_shared_layers
 * layers own no K/V: each reads the cache of the last earlier layer of its
 * kind, as updated in the same forward call.
 *
 * Per-layer inputs (PLE, hidden_size_per_layer_input P > 0), once per call:
 *   ple = (rmsnorm_P(per_layer_model_projection(h0) * H^-1/2) + E_ple[ids] * sqrt(P)) * 2^-1/2
 * split layer-major into (n_layers, P). Only the E_ple rows of the call's
 * tokens are read (the table stays in the weight file's mapping or copy).
 *
 * MoE (enable_moe_block): router = proj(rmsnorm(h; scale * H^-1/2)); the
 * top_k scores (ties: larger index, as mlx's argpartition), softmax over
 * those k, times per_expert_scale; experts are GeGLU; their weighted sum.
 *
 * Constants: the reference multiplies by Python floats, which take the
 * activation dtype; the f32 reference run therefore uses the f32 values of
 * sqrt(H), sqrt(P), H^-1/2, 2^-1/2 and the GELU constants, and so does this
 * file (a bf16 run rounds them to bf16 first, e.g. sqrt(1536) = 39.25).
 *
 * Images (lm_forward_args.is_image): the rows come as embeddings (not
 * scaled), the per-layer table is read at id 0 there, and with
 * use_bidirectional_attention "vision" each run of image rows attends both
 * ways (nn_attention_masked spans). forward_batch runs one decode step of
 * several caches with every weight read once.
 *
 * Caches: full layers keep every position (grown in steps of 256); sliding
 * layers a ring of rows, position t in row t % ring, with ring >= window +
 * (tokens of the call) - 1, so memory stays bounded on long generations.
 * Saved states (prefix reuse): the full layers' rows cut at any length; the
 * sliding rings are saved as their last window - 1 positions, valid at the
 * position they were taken at only (g4_state_*).
 *
 * Weights: language_model.model.* (gemma4, mlx-converted), model.* (flat
 * gemma4_text) or model.language_model.* (raw Hugging Face; fused MoE experts
 * are not split here). Norm weights are used as stored (no 1 + w). Tensors
 * the model does not use (k/v projections of KV-shared layers, which some
 * quantized folders carry, vision and audio towers) are ignored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kernels/nn.h"
#include "models/config.h"
#include "models/linear.h"
#include "models/model.h"

#define MAX_LAYERS 1024

/* ---- configuration ---- */

typedef struct g4_rope {
    int proportional;   /* 0: default (whole head) */
    double theta, partial, factor;
} g4_rope;

typedef struct g4_config {
    int64_t hidden, n_layers, inter, vocab, n_heads;
    int64_t head_dim, global_head_dim;   /* sliding / full layers */
    int64_t n_kv_heads, n_global_kv_heads; /* the latter -1 when unset */
    int k_eq_v, double_wide, moe, tie;
    int bidir_vision;                   /* use_bidirectional_attention == "vision" */
    int64_t kv_shared, ple, vocab_ple;
    int64_t n_experts, top_k, moe_inter;
    int64_t window, max_pos;
    double eps, softcap;                /* softcap 0: none */
    g4_rope rope_sliding, rope_full;
    uint8_t *full;                      /* (n_layers) 1 = full attention */
} g4_config;

static optiq_status parse_rope(const cfg_reader *r, const cJSON *rp, const char *kind, int proportional_default,
                               double theta_default, double partial_default, g4_rope *out, optiq_error *err) {
    out->proportional = proportional_default;
    out->theta = theta_default;
    out->partial = partial_default;
    out->factor = 1.0;
    const cJSON *e = rp ? cJSON_GetObjectItemCaseSensitive(rp, kind) : NULL;
    if (rp && !e) {
        /* the reference takes {} for a missing kind: default RoPE, theta 10000 */
        out->proportional = 0;
        out->theta = 10000.0;
        return OPTIQ_OK;
    }
    if (!e) return OPTIQ_OK;
    if (!cJSON_IsObject(e))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters.%s must be an object", r->path, r->where, kind);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(e, "type");
    if (!ty || cJSON_IsNull(ty)) ty = cJSON_GetObjectItemCaseSensitive(e, "rope_type");
    const char *t = ty && cJSON_IsString(ty) ? ty->valuestring : "default";
    if (ty && !cJSON_IsNull(ty) && !cJSON_IsString(ty))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters.%s.rope_type must be a string", r->path, r->where,
                       kind);
    optiq_status st;
    if ((st = cfg_num(r, e, "rope_theta", 10000.0, &out->theta, err))) return st;
    if ((st = cfg_num(r, e, "partial_rotary_factor", 1.0, &out->partial, err))) return st;
    if (!strcmp(t, "default")) {
        out->proportional = 0;
    } else if (!strcmp(t, "proportional")) {
        out->proportional = 1;
        if ((st = cfg_num(r, e, "factor", 1.0, &out->factor, err))) return st;
    } else {
        return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                       "%s: %srope_parameters.%s.rope_type \"%s\": only \"default\" and \"proportional\" are supported",
                       r->path, r->where, kind, t);
    }
    if (!(out->theta > 0) || !(out->factor > 0) || out->partial < 0 || out->partial > 1)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: %srope_parameters.%s: rope_theta and factor must be > 0, partial_rotary_factor in [0, 1]",
                       r->path, r->where, kind);
    return OPTIQ_OK;
}

/* Defaults are mlx-lm's ModelArgs (gemma4, gemma4_text); gemma4_unified,
 * which mlx-lm cannot load without every key stated, takes mlx-vlm's
 * unified defaults. Real checkpoints state every key. */
static optiq_status parse_config(const model_dir *md, g4_config *c, optiq_error *err) {
    memset(c, 0, sizeof *c);
    const char *type = model_dir_model_type(md);
    int unified = !strcmp(type, "gemma4_unified");
    const cJSON *root = model_dir_config(md);
    const cJSON *tc = model_dir_text_config(md);
    cfg_reader r = {tc ? tc : root, tc ? "text_config." : "", model_dir_config_path(md)};
    cfg_reader top = {root, "", r.path};
    optiq_status st;
#define INT(rd, key, req, def, lo, dst) \
    if ((st = cfg_int(rd, key, req, def, lo, dst, err))) return st
    INT(&r, "hidden_size", 0, unified ? 3840 : 1536, 1, &c->hidden);
    INT(&r, "num_hidden_layers", 0, unified ? 48 : 35, 1, &c->n_layers);
    INT(&r, "intermediate_size", 0, unified ? 15360 : 6144, 1, &c->inter);
    INT(&r, "num_attention_heads", 0, unified ? 16 : 8, 1, &c->n_heads);
    INT(&r, "head_dim", 0, 256, 1, &c->head_dim);
    INT(&r, "global_head_dim", 0, 512, 0, &c->global_head_dim);
    INT(&r, "num_key_value_heads", 0, unified ? 8 : 1, 1, &c->n_kv_heads);
    INT(&r, "num_global_key_value_heads", 0, unified ? 1 : -1, 1, &c->n_global_kv_heads);
    INT(&r, "num_kv_shared_layers", 0, unified ? 0 : 20, 0, &c->kv_shared);
    INT(&r, "hidden_size_per_layer_input", 0, unified ? 0 : 256, 0, &c->ple);
    INT(&r, "sliding_window", 0, unified ? 1024 : 512, 1, &c->window);
    INT(&r, "max_position_embeddings", 0, 131072, 1, &c->max_pos);
    int64_t pattern;
    INT(&r, "sliding_window_pattern", 0, unified ? 6 : 5, 1, &pattern);
    /* vocab: text_config's, else the top level's (mlx-lm copies the top level into text_config) */
    int64_t top_vocab;
    INT(&top, "vocab_size", 0, 262144, 1, &top_vocab);
    INT(&r, "vocab_size", 0, top_vocab, 1, &c->vocab);
    INT(&r, "vocab_size_per_layer_input", 0, 262144, 1, &c->vocab_ple);
#undef INT
    c->k_eq_v = cfg_bool(&r, "attention_k_eq_v", unified);
    c->double_wide = cfg_bool(&r, "use_double_wide_mlp", !unified);
    c->moe = cfg_bool(&r, "enable_moe_block", 0);
    c->tie = cfg_bool(&r, "tie_word_embeddings", 1);
    const cJSON *bd = cfg_get(&r, "use_bidirectional_attention");
    c->bidir_vision = bd ? cJSON_IsString(bd) && !strcmp(bd->valuestring, "vision") : unified;
    if (c->moe) {
        if ((st = cfg_int(&r, "num_experts", 1, 0, 1, &c->n_experts, err)) ||
            (st = cfg_int(&r, "top_k_experts", 1, 0, 1, &c->top_k, err)) ||
            (st = cfg_int(&r, "moe_intermediate_size", 1, 0, 1, &c->moe_inter, err)))
            return st;
        if (c->top_k > c->n_experts)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %stop_k_experts %lld > num_experts %lld", r.path, r.where,
                           (long long)c->top_k, (long long)c->n_experts);
    }
    if ((st = cfg_num(&r, r.obj, "rms_norm_eps", 1e-6, &c->eps, err))) return st;
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(r.obj, "final_logit_softcapping");
    if (sc && !cJSON_IsNull(sc)) {
        if ((st = cfg_num(&r, r.obj, "final_logit_softcapping", 30.0, &c->softcap, err))) return st;
        if (!(c->softcap > 0))
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %sfinal_logit_softcapping must be > 0 or null", r.path, r.where);
    } else {
        c->softcap = sc ? 0.0 : 30.0;
    }
    if (c->n_layers > MAX_LAYERS)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: %snum_hidden_layers %lld is above %d", r.path, r.where,
                       (long long)c->n_layers, MAX_LAYERS);
    if (c->kv_shared >= c->n_layers && c->kv_shared > 0)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %snum_kv_shared_layers %lld must be below num_hidden_layers %lld",
                       r.path, r.where, (long long)c->kv_shared, (long long)c->n_layers);

    c->full = calloc((size_t)c->n_layers, 1);
    if (!c->full) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    const cJSON *lt = cfg_get(&r, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) < c->n_layers)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %slayer_types must list num_hidden_layers (%lld) kinds", r.path,
                           r.where, (long long)c->n_layers);
        for (int64_t i = 0; i < c->n_layers; i++) {
            const cJSON *e = cJSON_GetArrayItem(lt, (int)i);
            const char *s = cJSON_IsString(e) ? e->valuestring : "";
            if (!strcmp(s, "full_attention")) c->full[i] = 1;
            else if (strcmp(s, "sliding_attention"))
                return err_set(err, OPTIQ_ERR_FORMAT,
                               "%s: %slayer_types[%lld] must be \"sliding_attention\" or \"full_attention\"", r.path,
                               r.where, (long long)i);
        }
    } else {
        for (int64_t i = 0; i < c->n_layers; i++) c->full[i] = (i % pattern) == pattern - 1;
    }

    const cJSON *rp = cfg_get(&r, "rope_parameters");
    if (rp && !cJSON_IsObject(rp))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %srope_parameters must be an object", r.path, r.where);
    if ((st = parse_rope(&r, rp, "sliding_attention", 0, 10000.0, 1.0, &c->rope_sliding, err))) return st;
    if ((st = parse_rope(&r, rp, "full_attention", 1, 1000000.0, 0.25, &c->rope_full, err))) return st;
    if (c->head_dim > 512 || c->global_head_dim > 512 || c->head_dim % 2 || c->global_head_dim % 2)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "%s: head_dim and global_head_dim must be even and at most 512",
                       r.path);
    return OPTIQ_OK;
}

/* ---- model ---- */

typedef struct g4_layer {
    int full, keqv, owner;          /* owner: has its own K/V (not KV-shared) */
    int src;                        /* layer whose cache this layer reads */
    int64_t d, n_kv, inter;         /* head size, KV heads, MLP width */
    float *in_norm, *post_attn_norm, *pre_ff_norm, *post_ff_norm; /* (H) */
    float *q_norm, *k_norm;         /* (d) */
    linear q, k, v, o;
    linear gate, up, down;
    /* moe */
    float *pre_ff_norm2, *post_ff_norm1, *post_ff_norm2; /* (H) */
    float *router_w;                /* (H) router.scale * H^-1/2 */
    float *expert_scale;            /* (E) */
    linear router, ex_gate, ex_up, ex_down;
    /* per-layer inputs */
    linear ple_gate, ple_proj;      /* (P, H), (H, P) */
    float *ple_norm;                /* (H) */
    float scalar;
} g4_layer;

typedef struct g4_model {
    lm_model base;
    g4_config c;
    quant_config qc;
    quant_modules qm;
    linear embed, head, embed_ple, ple_model_proj;
    float *final_norm;              /* (H) */
    float *ple_proj_norm;           /* (P) */
    g4_layer *layers;
    float *inv_sliding, *inv_full;  /* (head_dim/2), (global_head_dim/2) */
    int64_t max_d, max_inter, max_q;
} g4_model;

static const char *const G4_TYPES[] = {"gemma4", "gemma4_text", "gemma4_unified", NULL};

static void g4_free(lm_model *bm) {
    g4_model *m = (g4_model *)bm;
    if (!m) return;
    if (m->layers) {
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            g4_layer *L = &m->layers[i];
            float *fs[] = {L->in_norm, L->post_attn_norm, L->pre_ff_norm, L->post_ff_norm, L->q_norm, L->k_norm,
                           L->pre_ff_norm2, L->post_ff_norm1, L->post_ff_norm2, L->router_w, L->expert_scale,
                           L->ple_norm};
            for (size_t j = 0; j < sizeof fs / sizeof fs[0]; j++) free(fs[j]);
            linear *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down, &L->router,
                            &L->ex_gate, &L->ex_up, &L->ex_down, &L->ple_gate, &L->ple_proj};
            for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++) linear_free(ls[j]);
        }
        free(m->layers);
    }
    linear_free(&m->embed);
    linear_free(&m->head);
    linear_free(&m->embed_ple);
    linear_free(&m->ple_model_proj);
    free(m->final_norm);
    free(m->ple_proj_norm);
    free(m->inv_sliding);
    free(m->inv_full);
    free(m->c.full);
    quant_modules_free(&m->qm);
    quant_config_free(&m->qc);
    model_dir_close(m->base.md);
    free(m);
}

typedef struct binder {
    weight_src src;
    const char *prefix;
    char buf[512];
} binder;

static const char *nm(binder *b, int64_t layer, const char *suffix) {
    if (layer >= 0) snprintf(b->buf, sizeof b->buf, "%slayers.%lld.%s", b->prefix, (long long)layer, suffix);
    else snprintf(b->buf, sizeof b->buf, "%s%s", b->prefix, suffix);
    return b->buf;
}

static optiq_status bind_vec(binder *b, int64_t layer, const char *suffix, int64_t n, float **out, optiq_error *err) {
    return weight_vec_f32(&b->src, nm(b, layer, suffix), 1, &n, out, err);
}

/* Head size, KV heads, K-eq-V and KV source of every layer (spec §2.2). */
static optiq_status derive_layers(g4_model *m, optiq_error *err) {
    const g4_config *c = &m->c;
    int64_t first_shared = c->n_layers - c->kv_shared;
    for (int64_t i = 0; i < c->n_layers; i++) {
        g4_layer *L = &m->layers[i];
        L->full = c->full[i];
        L->d = L->full && c->global_head_dim ? c->global_head_dim : c->head_dim;
        L->keqv = c->k_eq_v && L->full;
        L->n_kv = L->keqv && c->n_global_kv_heads > 0 ? c->n_global_kv_heads : c->n_kv_heads;
        int shared = c->kv_shared > 0 && i >= first_shared;
        L->owner = !shared;
        L->inter = c->inter * (c->double_wide && shared ? 2 : 1);
        L->src = (int)i;
        if (shared) {
            L->src = -1;
            for (int64_t j = 0; j < first_shared; j++)
                if (c->full[j] == c->full[i]) L->src = (int)j;
            if (L->src < 0)
                return err_set(err, OPTIQ_ERR_FORMAT,
                               "%s: KV-shared layer %lld (%s) has no earlier layer of its kind to share with",
                               model_dir_config_path(m->base.md), (long long)i, L->full ? "full" : "sliding");
        }
        if (c->n_heads % L->n_kv)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: num_attention_heads %lld is not a multiple of %lld KV heads (layer %lld)",
                           model_dir_config_path(m->base.md), (long long)c->n_heads, (long long)L->n_kv, (long long)i);
        if (L->d > m->max_d) m->max_d = L->d;
        if (L->inter > m->max_inter) m->max_inter = L->inter;
        if (c->n_heads * L->d > m->max_q) m->max_q = c->n_heads * L->d;
    }
    /* a shared layer reads its source's K/V with its own query heads */
    for (int64_t i = 0; i < c->n_layers; i++) {
        g4_layer *L = &m->layers[i];
        const g4_layer *S = &m->layers[L->src];
        if (S->d != L->d || S->n_kv != L->n_kv)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: layer %lld shares the K/V of layer %d of another shape",
                           model_dir_config_path(m->base.md), (long long)i, L->src);
    }
    return OPTIQ_OK;
}

static optiq_status bind_layer(g4_model *m, binder *b, int64_t i, optiq_error *err) {
    const g4_config *c = &m->c;
    g4_layer *L = &m->layers[i];
    int64_t H = c->hidden, D = L->d;
    optiq_status st;
#define TRY(x) \
    if ((st = (x))) return st
    TRY(bind_vec(b, i, "input_layernorm.weight", H, &L->in_norm, err));
    TRY(bind_vec(b, i, "post_attention_layernorm.weight", H, &L->post_attn_norm, err));
    TRY(bind_vec(b, i, "pre_feedforward_layernorm.weight", H, &L->pre_ff_norm, err));
    TRY(bind_vec(b, i, "post_feedforward_layernorm.weight", H, &L->post_ff_norm, err));
    TRY(linear_bind(&b->src, nm(b, i, "self_attn.q_proj"), 0, c->n_heads * D, H, 0, &L->q, err));
    TRY(linear_bind(&b->src, nm(b, i, "self_attn.o_proj"), 0, H, c->n_heads * D, 0, &L->o, err));
    TRY(bind_vec(b, i, "self_attn.q_norm.weight", D, &L->q_norm, err));
    if (L->owner) {
        TRY(linear_bind(&b->src, nm(b, i, "self_attn.k_proj"), 0, L->n_kv * D, H, 0, &L->k, err));
        if (!L->keqv) TRY(linear_bind(&b->src, nm(b, i, "self_attn.v_proj"), 0, L->n_kv * D, H, 0, &L->v, err));
        TRY(bind_vec(b, i, "self_attn.k_norm.weight", D, &L->k_norm, err));
    }
    TRY(linear_bind(&b->src, nm(b, i, "mlp.gate_proj"), 0, L->inter, H, 0, &L->gate, err));
    TRY(linear_bind(&b->src, nm(b, i, "mlp.up_proj"), 0, L->inter, H, 0, &L->up, err));
    TRY(linear_bind(&b->src, nm(b, i, "mlp.down_proj"), 0, H, L->inter, 0, &L->down, err));
    if (c->moe) {
        int64_t E = c->n_experts, Im = c->moe_inter;
        if (model_dir_find(b->src.md, nm(b, i, "experts.gate_up_proj"), NULL))
            return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                           "%s: fused expert tensors (experts.gate_up_proj) of a raw checkpoint; convert the folder "
                           "with mlx_lm.convert or mlx_vlm.convert first", model_dir_path(b->src.md));
        TRY(bind_vec(b, i, "pre_feedforward_layernorm_2.weight", H, &L->pre_ff_norm2, err));
        TRY(bind_vec(b, i, "post_feedforward_layernorm_1.weight", H, &L->post_ff_norm1, err));
        TRY(bind_vec(b, i, "post_feedforward_layernorm_2.weight", H, &L->post_ff_norm2, err));
        TRY(linear_bind(&b->src, nm(b, i, "router.proj"), 0, E, H, 0, &L->router, err));
        TRY(bind_vec(b, i, "router.scale", H, &L->router_w, err));
        TRY(bind_vec(b, i, "router.per_expert_scale", E, &L->expert_scale, err));
        float root = (float)(1.0 / sqrt((double)H));
        for (int64_t e = 0; e < H; e++) L->router_w[e] *= root;
        TRY(linear_bind(&b->src, nm(b, i, "experts.switch_glu.gate_proj"), E, Im, H, 0, &L->ex_gate, err));
        TRY(linear_bind(&b->src, nm(b, i, "experts.switch_glu.up_proj"), E, Im, H, 0, &L->ex_up, err));
        TRY(linear_bind(&b->src, nm(b, i, "experts.switch_glu.down_proj"), E, H, Im, 0, &L->ex_down, err));
    }
    if (c->ple > 0) {
        TRY(linear_bind(&b->src, nm(b, i, "per_layer_input_gate"), 0, c->ple, H, 0, &L->ple_gate, err));
        TRY(linear_bind(&b->src, nm(b, i, "per_layer_projection"), 0, H, c->ple, 0, &L->ple_proj, err));
        TRY(bind_vec(b, i, "post_per_layer_input_norm.weight", H, &L->ple_norm, err));
    }
    float *scalar = NULL;
    TRY(bind_vec(b, i, "layer_scalar", 1, &scalar, err));
    L->scalar = scalar[0];
    free(scalar);
#undef TRY
    return OPTIQ_OK;
}

/* Inverse frequencies of one layer kind: d/2 slots, the unrotated ones 0. */
static float *rope_table(const g4_rope *r, int64_t d) {
    int64_t half = d / 2;
    float *inv = calloc((size_t)(half ? half : 1), sizeof(float));
    if (!inv) return NULL;
    if (!r->proportional) {
        for (int64_t i = 0; i < half; i++) inv[i] = (float)pow(r->theta, -(double)(2 * i) / (double)d);
        return inv;
    }
    /* mlx-lm: rotated = int(d * partial); freqs = factor * theta^(2i/d) for 2i < rotated, inf after */
    int64_t rotated = (int64_t)((double)d * r->partial);
    for (int64_t i = 0; 2 * i < rotated && i < half; i++)
        inv[i] = (float)(1.0 / (r->factor * pow(r->theta, (double)(2 * i) / (double)d)));
    return inv;
}

static optiq_status g4_load(model_dir *md, lm_model **out, optiq_error *err) {
    *out = NULL;
    g4_model *m = calloc(1, sizeof *m);
    if (!m) {
        model_dir_close(md);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    m->base.md = md;
    extern const lm_ops gemma4_ops;
    m->base.ops = &gemma4_ops;
    optiq_status st = parse_config(md, &m->c, err);
    if (st == OPTIQ_OK) st = quant_config_parse(model_dir_config(md), model_dir_config_path(md), &m->qc, err);
    if (st == OPTIQ_OK) st = quant_resolve(md, &m->qc, &m->qm, err);
    if (st == OPTIQ_OK) {
        m->layers = calloc((size_t)m->c.n_layers, sizeof *m->layers);
        if (!m->layers) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    if (st == OPTIQ_OK) st = derive_layers(m, err);
    if (st) {
        g4_free(&m->base);
        return st;
    }
    const g4_config *c = &m->c;
    binder b = {{md, &m->qm}, NULL, {0}};
    b.prefix = weight_prefix(md);
    if (!b.prefix) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: no embed_tokens.weight (looked for language_model.model.embed_tokens.weight, "
                     "model.language_model.embed_tokens.weight, model.embed_tokens.weight)", model_dir_path(md));
        g4_free(&m->base);
        return st;
    }
    int64_t H = c->hidden, NP = c->n_layers * c->ple;
    st = linear_bind(&b.src, nm(&b, -1, "embed_tokens"), 0, c->vocab, H, 0, &m->embed, err);
    if (st == OPTIQ_OK) st = bind_vec(&b, -1, "norm.weight", H, &m->final_norm, err);
    if (st == OPTIQ_OK && !c->tie) {
        const char *head = !strcmp(b.prefix, "language_model.model.") ? "language_model.lm_head" : "lm_head";
        st = linear_bind(&b.src, head, 0, c->vocab, H, 0, &m->head, err);
    }
    if (st == OPTIQ_OK && c->ple > 0) {
        st = linear_bind(&b.src, nm(&b, -1, "embed_tokens_per_layer"), 0, c->vocab_ple, NP, 0, &m->embed_ple, err);
        if (st == OPTIQ_OK)
            st = linear_bind(&b.src, nm(&b, -1, "per_layer_model_projection"), 0, NP, H, 0, &m->ple_model_proj, err);
        if (st == OPTIQ_OK) st = bind_vec(&b, -1, "per_layer_projection_norm.weight", c->ple, &m->ple_proj_norm, err);
    }
    for (int64_t i = 0; st == OPTIQ_OK && i < c->n_layers; i++) st = bind_layer(m, &b, i, err);
    if (st == OPTIQ_OK) {
        m->inv_sliding = rope_table(&c->rope_sliding, c->head_dim);
        m->inv_full = rope_table(&c->rope_full, c->global_head_dim ? c->global_head_dim : c->head_dim);
        if (!m->inv_sliding || !m->inv_full) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    if (st) {
        g4_free(&m->base);
        return st;
    }
    lm_info *in = &m->base.info;
    in->family = "gemma4";
    in->model_type = model_dir_model_type(md);
    in->vocab_size = c->vocab;
    in->hidden_size = H;
    in->n_layers = (int)c->n_layers;
    in->max_position = c->max_pos;
    in->mrope = 0;
    in->tied_embeddings = c->tie;
    *out = &m->base;
    return OPTIQ_OK;
}

/* ---- cache ---- */

typedef struct g4_kv {
    float *k, *v;      /* (rows, n_kv, d) */
    int64_t rows;      /* allocated rows; sliding: the ring size */
} g4_kv;

typedef struct g4_cache {
    lm_cache base;
    g4_kv *kv;         /* per layer; only owners allocate */
    int64_t full_rows; /* rows of every full layer's cache */
    /* scratch, sized for scr_n tokens */
    int64_t scr_n;
    float *h, *xn, *r, *r2, *xe, *q, *o, *kraw, *knew, *vnew, *big1, *big2, *big3, *small1, *small2;
    float *ple;        /* (n, n_layers, P) */
    int32_t *pos, *ids;
    int32_t *ple_ids;  /* (n) the ids the per-layer table is read at (0 at image tokens) */
    int32_t *span_lo, *span_hi; /* (n) bidirectional image span of each token, -1 when none */
    float *att;
    int64_t att_n;     /* floats per thread in att */
    int att_threads;
} g4_cache;

static void g4_cache_free(lm_cache *bc) {
    g4_cache *c = (g4_cache *)bc;
    if (!c) return;
    const g4_model *m = (const g4_model *)c->base.model;
    if (c->kv)
        for (int64_t i = 0; i < m->c.n_layers; i++) free(c->kv[i].k), free(c->kv[i].v);
    free(c->kv);
    float *fs[] = {c->h, c->xn, c->r, c->r2, c->xe, c->q, c->o, c->kraw, c->knew, c->vnew, c->big1, c->big2,
                   c->big3, c->small1, c->small2, c->ple, c->att};
    for (size_t j = 0; j < sizeof fs / sizeof fs[0]; j++) free(fs[j]);
    free(c->pos), free(c->ids), free(c->ple_ids), free(c->span_lo), free(c->span_hi);
    free(c);
}

static void g4_cache_reset(lm_cache *bc) {
    g4_cache *c = (g4_cache *)bc;
    c->base.pos = 0;
    c->base.rope_delta = 0;
}

static optiq_status g4_cache_new(const lm_model *bm, int64_t capacity, lm_cache **out, optiq_error *err) {
    const g4_model *m = (const g4_model *)bm;
    g4_cache *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    c->base.model = bm;
    c->base.capacity = capacity;
    c->kv = calloc((size_t)m->c.n_layers, sizeof *c->kv);
    if (!c->kv) {
        g4_cache_free(&c->base);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory allocating the sequence state");
    }
    *out = &c->base;
    return OPTIQ_OK;
}

/* Rows for n new tokens at position pos. Full layers: pos + n rows (grown in
 * steps of 256, rows kept). Sliding layers: a ring that holds the window
 * before pos plus the n new positions; a larger ring re-lays out the kept
 * positions (t moves from row t % old to t % new). */
static optiq_status ensure_kv(g4_cache *c, const g4_model *m, int64_t n, optiq_error *err) {
    int64_t pos = c->base.pos, W = m->c.window;
    int64_t need_full = pos + n;
    int64_t full_rows = c->full_rows;
    if (need_full > full_rows) {
        full_rows = (need_full + 255) / 256 * 256;
        if (full_rows > c->base.capacity) full_rows = c->base.capacity;
    }
    int64_t need_ring = pos + n < W - 1 + n ? pos + n : W - 1 + n;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        if (!L->owner) continue;
        g4_kv *kv = &c->kv[i];
        size_t row = (size_t)(L->n_kv * L->d);
        if (L->full) {
            if (kv->rows >= full_rows) continue;
            if (!grow_f32(&kv->k, (size_t)full_rows * row) || !grow_f32(&kv->v, (size_t)full_rows * row))
                return err_set(err, OPTIQ_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens",
                               (long long)full_rows);
            kv->rows = full_rows;
            continue;
        }
        if (kv->rows >= need_ring) continue;
        int64_t rows = (need_ring + 255) / 256 * 256;
        float *nk = malloc(sizeof(float) * (size_t)rows * row), *nv = malloc(sizeof(float) * (size_t)rows * row);
        if (!nk || !nv) {
            free(nk), free(nv);
            return err_set(err, OPTIQ_ERR_NOMEM, "out of memory growing the sliding-window cache");
        }
        int64_t lo = pos - W + 1 > 0 ? pos - W + 1 : 0;
        for (int64_t t = lo; t < pos; t++) {
            memcpy(nk + (t % rows) * (int64_t)row, kv->k + (t % kv->rows) * (int64_t)row, sizeof(float) * row);
            memcpy(nv + (t % rows) * (int64_t)row, kv->v + (t % kv->rows) * (int64_t)row, sizeof(float) * row);
        }
        free(kv->k), free(kv->v);
        kv->k = nk, kv->v = nv, kv->rows = rows;
    }
    c->full_rows = full_rows;
    return OPTIQ_OK;
}

static optiq_status ensure_scratch(g4_cache *c, const g4_model *m, int64_t n, int threads, optiq_error *err) {
    const g4_config *k = &m->c;
    if (n > c->scr_n) {
        size_t N = (size_t)n, H = (size_t)k->hidden;
        int64_t kk = k->moe ? k->top_k : 1;
        /* widest per-token activation of an MLP / expert / PLE product */
        int64_t w1 = m->max_inter;
        if (kk * k->moe_inter > w1) w1 = kk * k->moe_inter;
        if (kk * k->hidden > w1) w1 = kk * k->hidden;
        if (k->n_layers * k->ple > w1) w1 = k->n_layers * k->ple;
        int64_t kvw = 0;
        for (int64_t i = 0; i < k->n_layers; i++)
            if (m->layers[i].n_kv * m->layers[i].d > kvw) kvw = m->layers[i].n_kv * m->layers[i].d;
        int64_t ws = k->n_experts > 2 * kk ? k->n_experts : 2 * kk;
        int ok = grow_f32(&c->h, N * H) && grow_f32(&c->xn, N * H) && grow_f32(&c->r, N * H) && grow_f32(&c->r2, N * H) &&
                 grow_f32(&c->xe, N * H) && grow_f32(&c->small2, N * (size_t)kk) &&
                 grow_f32(&c->q, N * (size_t)m->max_q) && grow_f32(&c->o, N * (size_t)m->max_q) &&
                 grow_f32(&c->kraw, N * (size_t)kvw) && grow_f32(&c->knew, N * (size_t)kvw) &&
                 grow_f32(&c->vnew, N * (size_t)kvw) && grow_f32(&c->big1, N * (size_t)w1) &&
                 grow_f32(&c->big2, N * (size_t)w1) && grow_f32(&c->big3, N * (size_t)w1) &&
                 grow_f32(&c->small1, N * (size_t)ws) && grow_f32(&c->ple, N * (size_t)(k->n_layers * k->ple));
        int32_t *p = ok ? realloc(c->pos, sizeof(int32_t) * N) : NULL;
        if (p) c->pos = p;
        int32_t *ids = p ? realloc(c->ids, sizeof(int32_t) * N * (size_t)kk) : NULL;
        if (ids) c->ids = ids;
        int32_t *pi = ids ? realloc(c->ple_ids, sizeof(int32_t) * N) : NULL;
        if (pi) c->ple_ids = pi;
        int32_t *sl = pi ? realloc(c->span_lo, sizeof(int32_t) * N) : NULL;
        if (sl) c->span_lo = sl;
        int32_t *sh = sl ? realloc(c->span_hi, sizeof(int32_t) * N) : NULL;
        if (sh) c->span_hi = sh;
        if (!sh) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory for %lld tokens of scratch", (long long)n);
        c->scr_n = n;
    }
    int64_t att_n = c->base.pos + n;
    if (threads > c->att_threads || att_n > c->att_n) {
        int64_t an = att_n > c->att_n ? (att_n + 255) / 256 * 256 : c->att_n;
        int at = threads > c->att_threads ? threads : c->att_threads;
        if (!grow_f32(&c->att, (size_t)at * (size_t)an))
            return err_set(err, OPTIQ_ERR_NOMEM, "out of memory for attention scratch");
        c->att_n = an;
        c->att_threads = at;
    }
    return OPTIQ_OK;
}

/* Quantized products use int8 activations unless the model is set to exact. */
#define Q8(m) (!(m)->base.exact)

/* ---- attention ---- */

/* The n rows of x through layer L's projections, norms and RoPE (positions
 * c->pos): queries into c->q (n, Hq, D) and, when L owns its K/V, the new
 * keys and values into c->knew, c->vnew (n, Hkv, D). */
static optiq_status qkv_project(const g4_model *m, const g4_layer *L, g4_cache *c, thread_pool *pool,
                                const float *x, int64_t n, optiq_error *err) {
    const g4_config *k = &m->c;
    int64_t D = L->d, Hq = k->n_heads, Hkv = L->n_kv;
    const float *inv = L->full ? m->inv_full : m->inv_sliding;
    optiq_status st;
    if ((st = linear_apply(pool, &L->q, 0, x, n, c->q, 0, Q8(m), err))) return st;
    nn_rmsnorm(c->q, n * Hq, D, L->q_norm, (float)k->eps, c->q);
    nn_rope(c->q, n, (int)Hq, (int)D, (int)(D / 2), inv, c->pos, NULL);
    if (!L->owner) return OPTIQ_OK;
    float *kr = c->kraw, *kn = c->knew, *vn = c->vnew;
    if ((st = linear_apply(pool, &L->k, 0, x, n, kr, 0, Q8(m), err))) return st;
    if (L->keqv) nn_rmsnorm(kr, n * Hkv, D, NULL, (float)k->eps, vn);
    else {
        if ((st = linear_apply(pool, &L->v, 0, x, n, vn, 0, Q8(m), err))) return st;
        nn_rmsnorm(vn, n * Hkv, D, NULL, (float)k->eps, vn);
    }
    nn_rmsnorm(kr, n * Hkv, D, L->k_norm, (float)k->eps, kn);
    nn_rope(kn, n, (int)Hkv, (int)D, (int)(D / 2), inv, c->pos, NULL);
    return OPTIQ_OK;
}

static optiq_status attn_forward(const g4_model *m, const g4_layer *L, g4_cache *c, thread_pool *pool,
                                 const float *x, int64_t n, int spans, float *out, optiq_error *err) {
    const g4_config *k = &m->c;
    int64_t D = L->d, Hq = k->n_heads, Hkv = L->n_kv, p0 = c->base.pos;
    float *q = c->q; /* (n, Hq, D) */
    optiq_status st;
    if ((st = qkv_project(m, L, c, pool, x, n, err))) return st;
    g4_kv *kv = &c->kv[L->src];
    if (L->owner) {
        const float *kn = c->knew, *vn = c->vnew; /* (n, Hkv, D) */
        size_t row = (size_t)(Hkv * D);
        for (int64_t t = 0; t < n; t++) {
            int64_t r = (p0 + t) % kv->rows;
            memcpy(kv->k + r * (int64_t)row, kn + t * (int64_t)row, sizeof(float) * row);
            memcpy(kv->v + r * (int64_t)row, vn + t * (int64_t)row, sizeof(float) * row);
        }
    }
    float *o = c->o; /* (n, Hq, D) */
    nn_attn_mask mask = {L->full ? 0 : k->window, L->full ? 0 : kv->rows, spans ? c->span_lo : NULL,
                         spans ? c->span_hi : NULL};
    nn_attention_masked(pool, q, kv->k, kv->v, n, p0, &mask, (int)Hq, (int)Hkv, (int)D, 1.0f, o, c->att, c->att_n);
    return linear_apply(pool, &L->o, 0, o, n, out, 0, Q8(m), err);
}

/* ---- mlp / moe / per-layer inputs ---- */

static optiq_status mlp_forward(const g4_model *m, const g4_layer *L, g4_cache *c, thread_pool *pool,
                                const float *x, int64_t n, float *out, optiq_error *err) {
    optiq_status st;
    if ((st = linear_apply(pool, &L->gate, 0, x, n, c->big1, 0, Q8(m), err))) return st;
    if ((st = linear_apply(pool, &L->up, 0, x, n, c->big2, 0, Q8(m), err))) return st;
    nn_geglu(c->big1, c->big2, n * L->inter);
    return linear_apply(pool, &L->down, 0, c->big1, n, out, 0, Q8(m), err);
}

/* Router on h (not normed by the layer's norms), experts on xe. */
static optiq_status moe_forward(const g4_model *m, const g4_layer *L, g4_cache *c, thread_pool *pool,
                                const float *h, const float *xe, int64_t n, float *out, optiq_error *err) {
    const g4_config *k = &m->c;
    int64_t E = k->n_experts, K = k->top_k, H = k->hidden, Im = k->moe_inter;
    float *scores = c->small1; /* (n, E) */
    float *xr = c->big1;       /* (n*K, H) tokens repeated per expert slot */
    float *g = c->big2, *u = c->big3; /* (n*K, Im) */
    float *d = c->big1;        /* (n*K, H) after xr is consumed */
    float wts[256];
    optiq_status st;
    if (K > 256) return err_set(err, OPTIQ_ERR_UNSUPPORTED, "top_k_experts above 256");
    nn_rmsnorm(h, n, H, L->router_w, (float)k->eps, c->xn);
    /* f32 activations for the router on every path: expert choice is discontinuous, and a near tie
     * decided by int8 activation rounding would change the output far more than the rounding */
    if ((st = linear_apply(pool, &L->router, 0, c->xn, n, scores, 0, 0, err))) return st;
    float *wall = c->small2; /* (n, K) expert weights */
    for (int64_t t = 0; t < n; t++) {
        const float *s = scores + t * E;
        int32_t *ids = c->ids + t * K;
        /* the K largest scores; on equal scores the larger index wins (argpartition) */
        for (int64_t j = 0; j < K; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                int taken = 0;
                for (int64_t q = 0; q < j; q++) taken |= ids[q] == (int32_t)e;
                if (!taken && (best < 0 || s[e] >= s[best])) best = e;
            }
            ids[j] = (int32_t)best;
            wts[j] = s[best];
        }
        nn_softmax(wts, K);
        for (int64_t j = 0; j < K; j++) wall[t * K + j] = wts[j] * L->expert_scale[ids[j]];
        for (int64_t j = 0; j < K; j++) memcpy(xr + (t * K + j) * H, xe + t * H, sizeof(float) * (size_t)H);
    }
    if ((st = linear_apply_moe(pool, &L->ex_gate, c->ids, xr, n * K, g, Q8(m), err))) return st;
    if ((st = linear_apply_moe(pool, &L->ex_up, c->ids, xr, n * K, u, Q8(m), err))) return st;
    nn_geglu(g, u, n * K * Im);
    if ((st = linear_apply_moe(pool, &L->ex_down, c->ids, g, n * K, d, Q8(m), err))) return st;
    for (int64_t t = 0; t < n; t++) {
        float *o = out + t * H;
        memset(o, 0, sizeof(float) * (size_t)H);
        for (int64_t j = 0; j < K; j++) {
            const float *dj = d + (t * K + j) * H;
            float w = wall[t * K + j];
            for (int64_t e = 0; e < H; e++) o[e] += w * dj[e];
        }
    }
    return OPTIQ_OK;
}

/* ple (n, n_layers, P) from the scaled embeddings h0 and the token ids. */
static optiq_status ple_inputs(const g4_model *m, g4_cache *c, thread_pool *pool, const int32_t *ids,
                               const float *h0, int64_t n, optiq_error *err) {
    const g4_config *k = &m->c;
    int64_t NP = k->n_layers * k->ple;
    float *proj = c->ple, *tok = c->big1; /* (n, NP) */
    optiq_status st;
    if ((st = linear_apply(pool, &m->ple_model_proj, 0, h0, n, proj, 0, Q8(m), err))) return st;
    float ps = (float)(1.0 / sqrt((double)k->hidden));
    for (int64_t i = 0; i < n * NP; i++) proj[i] *= ps;
    nn_rmsnorm(proj, n * k->n_layers, k->ple, m->ple_proj_norm, (float)k->eps, proj);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= k->vocab_ple)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "token id %d outside the per-layer embedding table (%lld rows)",
                           ids[t], (long long)k->vocab_ple);
    if ((st = linear_rows(&m->embed_ple, ids, n, tok, err))) return st;
    float ts = (float)sqrt((double)k->ple), is = (float)(1.0 / sqrt(2.0));
    for (int64_t i = 0; i < n * NP; i++) proj[i] = (proj[i] + tok[i] * ts) * is;
    return OPTIQ_OK;
}

static optiq_status ple_forward(const g4_model *m, const g4_layer *L, g4_cache *c, thread_pool *pool, int64_t li,
                                const float *h, int64_t n, float *out, optiq_error *err) {
    const g4_config *k = &m->c;
    int64_t P = k->ple, NP = k->n_layers * P;
    float *g = c->big2; /* (n, P) */
    optiq_status st;
    if ((st = linear_apply(pool, &L->ple_gate, 0, h, n, g, 0, Q8(m), err))) return st;
    for (int64_t t = 0; t < n; t++) nn_geglu(g + t * P, c->ple + t * NP + li * P, P);
    if ((st = linear_apply(pool, &L->ple_proj, 0, g, n, out, 0, Q8(m), err))) return st;
    nn_rmsnorm(out, n, k->hidden, L->ple_norm, (float)k->eps, out);
    return OPTIQ_OK;
}

/* ---- forward ---- */

static optiq_status g4_embed(const lm_model *bm, const int32_t *ids, int64_t n, float *out, optiq_error *err) {
    const g4_model *m = (const g4_model *)bm;
    optiq_status st = linear_rows(&m->embed, ids, n, out, err);
    if (st) return st;
    float s = (float)sqrt((double)m->c.hidden);
    for (int64_t i = 0; i < n * m->c.hidden; i++) out[i] *= s;
    return OPTIQ_OK;
}

/* Everything of layer li after attention, on n rows of c's scratch: the
 * attention output in r (n, H) is added to h, then MLP / MoE, PLE, scalar.
 * Row-wise throughout, so the single-sequence and the batched step share it. */
static optiq_status layer_after_attn(const g4_model *m, g4_cache *c, thread_pool *pool, int64_t li, int64_t n,
                                     optiq_error *err) {
    const g4_config *k = &m->c;
    const g4_layer *L = &m->layers[li];
    int64_t H = k->hidden;
    float *h = c->h, *xn = c->xn, *r = c->r, *r2 = c->r2;
    optiq_status st;
    nn_rmsnorm(r, n, H, L->post_attn_norm, (float)k->eps, r);
    for (int64_t i = 0; i < n * H; i++) h[i] += r[i];
    nn_rmsnorm(h, n, H, L->pre_ff_norm, (float)k->eps, xn);
    if ((st = mlp_forward(m, L, c, pool, xn, n, r, err))) return st;
    if (k->moe) {
        nn_rmsnorm(r, n, H, L->post_ff_norm1, (float)k->eps, r);
        float *xe = c->xe, *f2 = r2; /* (n, H) expert input and output */
        nn_rmsnorm(h, n, H, L->pre_ff_norm2, (float)k->eps, xe);
        if ((st = moe_forward(m, L, c, pool, h, xe, n, f2, err))) return st;
        nn_rmsnorm(f2, n, H, L->post_ff_norm2, (float)k->eps, f2);
        for (int64_t i = 0; i < n * H; i++) r[i] += f2[i];
    }
    nn_rmsnorm(r, n, H, L->post_ff_norm, (float)k->eps, r);
    for (int64_t i = 0; i < n * H; i++) h[i] += r[i];
    if (k->ple > 0) {
        if ((st = ple_forward(m, L, c, pool, li, h, n, r2, err))) return st;
        for (int64_t i = 0; i < n * H; i++) h[i] += r2[i];
    }
    for (int64_t i = 0; i < n * H; i++) h[i] *= L->scalar;
    return OPTIQ_OK;
}

static optiq_status layer_forward(const g4_model *m, g4_cache *c, thread_pool *pool, int64_t li, int64_t n,
                                  int spans, optiq_error *err) {
    const g4_layer *L = &m->layers[li];
    nn_rmsnorm(c->h, n, m->c.hidden, L->in_norm, (float)m->c.eps, c->xn);
    optiq_status st = attn_forward(m, L, c, pool, c->xn, n, spans, c->r, err);
    return st ? st : layer_after_attn(m, c, pool, li, n, err);
}

static optiq_status g4_forward(const lm_model *bm, lm_cache *bc, thread_pool *pool, const lm_forward_args *a,
                               optiq_error *err) {
    const g4_model *m = (const g4_model *)bm;
    g4_cache *c = (g4_cache *)bc;
    const g4_config *k = &m->c;
    int64_t n = a->n, H = k->hidden;
    if ((k->ple > 0 || a->is_image) && !a->tokens)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward: this model's per-layer inputs need the token ids");
    optiq_status st = ensure_kv(c, m, n, err);
    if (st == OPTIQ_OK) st = ensure_scratch(c, m, n, pool_threads(pool), err);
    if (st) return st;
    for (int64_t t = 0; t < n; t++) c->pos[t] = (int32_t)(c->base.pos + t);
    float *h = c->h;
    if (a->embeds) memcpy(h, a->embeds, sizeof(float) * (size_t)(n * H));
    else if ((st = g4_embed(bm, a->tokens, n, h, err))) return st;
    if (a->on_hidden) a->on_hidden(a->hidden_user, 0, h, n, H);
    /* image soft tokens: the per-layer table is read at id 0 there (mlx-vlm
     * passes zeros for placeholder ids); with use_bidirectional_attention
     * "vision" each run of them is a span that attends both ways */
    int spans = 0;
    const int32_t *ple_ids = a->tokens;
    if (a->is_image) {
        for (int64_t t = 0; t < n; t++) c->ple_ids[t] = a->is_image[t] ? 0 : a->tokens[t];
        ple_ids = c->ple_ids;
        for (int64_t t = 0; t < n; t++) c->span_lo[t] = c->span_hi[t] = -1;
        for (int64_t t = 0; k->bidir_vision && t < n;) {
            if (!a->is_image[t]) {
                t++;
                continue;
            }
            int64_t e = t;
            while (e < n && a->is_image[e]) e++;
            for (int64_t j = t; j < e; j++)
                c->span_lo[j] = (int32_t)(c->base.pos + t), c->span_hi[j] = (int32_t)(c->base.pos + e - 1);
            spans = 1;
            t = e;
        }
    }
    if (k->ple > 0 && (st = ple_inputs(m, c, pool, ple_ids, h, n, err))) return st;
    /* Caches are written as layers run; a failure part way (out of memory
     * only, shapes were checked at load) leaves them inconsistent: reset. */
    for (int64_t li = 0; li < k->n_layers; li++) {
        if ((st = layer_forward(m, c, pool, li, n, spans, err))) {
            g4_cache_reset(&c->base);
            return err_prefix(err, "forward: ");
        }
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
        if (k->softcap > 0) {
            float cap = (float)k->softcap, inv = 1.0f / cap;
            nn_tanh_scaled(a->logits, rows * k->vocab, inv, cap);
        }
    }
    return OPTIQ_OK;
}

/* ---- batched decode (lm_forward_batch) ----
 *
 * One token for each of n sequences. Every product runs once over the n rows
 * (the kernels read each weight matrix once per call), on the scratch of the
 * first cache grown to n rows; each row's q/k norms, RoPE, K/V write and
 * attention use that sequence's own position and caches (a KV-shared layer
 * reads its source layer in the same sequence's cache). Attention scratch is
 * each sequence's own (sized for its position by ensure_scratch). */

typedef struct batch_attn {
    const g4_model *m;
    const g4_layer *L;
    g4_cache *const *caches;
    const float *q; /* (n, Hq, D) */
    float *o;       /* (n, Hq, D) */
} batch_attn;

/* Attention of sequence i's one query. Called from a pool task (pool NULL),
 * it runs inline with that task's thread index, which picks the row of the
 * sequence's attention scratch. */
static void batch_attn_one(const batch_attn *b, int64_t i, thread_pool *pool) {
    const g4_layer *L = b->L;
    const g4_cache *ci = b->caches[i];
    const g4_kv *kv = &ci->kv[L->src];
    int64_t Hq = b->m->c.n_heads, D = L->d;
    nn_attn_mask mask = {L->full ? 0 : b->m->c.window, L->full ? 0 : kv->rows, NULL, NULL};
    nn_attention_masked(pool, b->q + i * Hq * D, kv->k, kv->v, 1, ci->base.pos, &mask, (int)Hq, (int)L->n_kv, (int)D,
                        1.0f, b->o + i * Hq * D, ci->att, ci->att_n);
}

static void batch_attn_task(void *ctx, int64_t i, int thread) {
    (void)thread;
    batch_attn_one(ctx, i, NULL);
}

/* Attention of layer L for the n rows of xn (n, H) into out (n, H). */
static optiq_status attn_batch(const g4_model *m, const g4_layer *L, g4_cache *const *caches, int64_t n,
                               thread_pool *pool, const float *x, float *out, optiq_error *err) {
    g4_cache *c = caches[0]; /* holds the scratch; c->pos (n) the position of each row */
    int64_t D = L->d, Hkv = L->n_kv;
    float *q = c->q; /* (n, Hq, D) */
    optiq_status st;
    if ((st = qkv_project(m, L, c, pool, x, n, err))) return st;
    if (L->owner) {
        const float *kn = c->knew, *vn = c->vnew; /* (n, Hkv, D) */
        size_t row = (size_t)(Hkv * D);
        for (int64_t i = 0; i < n; i++) {
            g4_kv *kv = &caches[i]->kv[L->src];
            int64_t r = caches[i]->base.pos % kv->rows;
            memcpy(kv->k + r * (int64_t)row, kn + i * (int64_t)row, sizeof(float) * row);
            memcpy(kv->v + r * (int64_t)row, vn + i * (int64_t)row, sizeof(float) * row);
        }
    }
    batch_attn b = {m, L, caches, q, c->o};
    /* enough sequences to keep every thread busy: one task per sequence;
     * else each sequence's heads over the pool (same result either way) */
    if (n >= pool_threads(pool)) pool_run(pool, n, batch_attn_task, &b);
    else
        for (int64_t i = 0; i < n; i++) batch_attn_one(&b, i, pool);
    return linear_apply(pool, &L->o, 0, c->o, n, out, 0, Q8(m), err);
}

static optiq_status g4_forward_batch(const lm_model *bm, lm_cache *const *bcs, const int32_t *tokens, int64_t n,
                                     thread_pool *pool, float *logits, optiq_error *err) {
    const g4_model *m = (const g4_model *)bm;
    g4_cache *const *caches = (g4_cache *const *)bcs;
    const g4_config *k = &m->c;
    int64_t H = k->hidden;
    int threads = pool_threads(pool);
    optiq_status st = OPTIQ_OK;
    /* Room first (none of these changes what a cache holds): each sequence's
     * K/V rows and attention scratch for one more token, then n rows of
     * scratch in the first cache. */
    for (int64_t i = 0; i < n && st == OPTIQ_OK; i++) {
        st = ensure_kv(caches[i], m, 1, err);
        if (st == OPTIQ_OK) st = ensure_scratch(caches[i], m, 1, threads, err);
    }
    g4_cache *c = caches[0];
    if (st == OPTIQ_OK) st = ensure_scratch(c, m, n, threads, err);
    if (st) return err_prefix(err, "forward_batch: ");
    for (int64_t i = 0; i < n; i++) c->pos[i] = (int32_t)caches[i]->base.pos;
    float *h = c->h; /* (n, H) */
    if ((st = g4_embed(bm, tokens, n, h, err))) return st;
    if (k->ple > 0 && (st = ple_inputs(m, c, pool, tokens, h, n, err))) return st;
    /* A failure from here on (out of memory only) leaves every cache valid
     * at its old position: the step wrote K/V only at row pos of each
     * sequence, which no query sees before the next step rewrites it (a
     * sliding ring's row pos % ring held position <= pos - window, outside
     * every later window, and ensure_kv never copies it), and pos advances
     * only at the end. So no cache needs a reset. */
    for (int64_t li = 0; li < k->n_layers; li++) {
        const g4_layer *L = &m->layers[li];
        nn_rmsnorm(h, n, H, L->in_norm, (float)k->eps, c->xn);
        if ((st = attn_batch(m, L, caches, n, pool, c->xn, c->r, err)) ||
            (st = layer_after_attn(m, c, pool, li, n, err)))
            return err_prefix(err, "forward_batch: ");
    }
    nn_rmsnorm(h, n, H, m->final_norm, (float)k->eps, h);
    const linear *head = k->tie ? &m->embed : &m->head;
    if ((st = linear_apply(pool, head, 0, h, n, logits, 0, Q8(m), err))) return err_prefix(err, "forward_batch: ");
    if (k->softcap > 0) {
        float cap = (float)k->softcap, inv = 1.0f / cap;
        nn_tanh_scaled(logits, n * k->vocab, inv, cap);
    }
    for (int64_t i = 0; i < n; i++) caches[i]->base.pos++;
    return OPTIQ_OK;
}

static uint64_t g4_decode_bytes(const lm_model *bm) {
    const g4_model *m = (const g4_model *)bm;
    const g4_config *k = &m->c;
    uint64_t b = linear_bytes(k->tie ? &m->embed : &m->head);
    if (k->ple > 0) {
        b += linear_bytes(&m->ple_model_proj);
        b += linear_bytes(&m->embed_ple) / (uint64_t)k->vocab_ple; /* one row */
    }
    for (int64_t i = 0; i < k->n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        const linear *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down, &L->router,
                              &L->ple_gate, &L->ple_proj};
        for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++)
            if (ls[j]->rows) b += linear_bytes(ls[j]);
        b += linear_expert_bytes(&L->ex_gate, k->top_k) + linear_expert_bytes(&L->ex_up, k->top_k) +
             linear_expert_bytes(&L->ex_down, k->top_k);
    }
    return b;
}

/* ---- description (optiq inspect) ---- */

static cJSON *g4_describe(const model_dir *md, optiq_error *err) {
    g4_config c;
    if (parse_config(md, &c, err)) {
        free(c.full);
        return NULL;
    }
    int64_t n_full = 0;
    for (int64_t i = 0; i < c.n_layers; i++) n_full += c.full[i];
    int unified = !strcmp(model_dir_model_type(md), "gemma4_unified");
    const char *variant = unified ? "unified (encoder-free, 12B-style)"
                          : c.moe ? "MoE (26B-A4B-style)"
                          : c.ple > 0 ? "E-series (E2B/E4B-style)"
                          : c.k_eq_v ? "dense K-eq-V (31B-style)"
                                     : "dense";
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "family", "gemma4");
    cJSON_AddStringToObject(o, "variant", variant);
    cJSON_AddNumberToObject(o, "layers", (double)c.n_layers);
    cJSON_AddNumberToObject(o, "hidden_size", (double)c.hidden);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c.vocab);
    cJSON_AddNumberToObject(o, "context", (double)c.max_pos);
    cJSON *f = cJSON_AddArrayToObject(o, "features");
    cfg_add_feature(f, "%lld sliding-window layers (window %lld, head %lld) and %lld full-attention layers (head %lld)",
                (long long)(c.n_layers - n_full), (long long)c.window, (long long)c.head_dim, (long long)n_full,
                (long long)(c.global_head_dim ? c.global_head_dim : c.head_dim));
    cfg_add_feature(f, "%lld query heads, %lld KV heads", (long long)c.n_heads, (long long)c.n_kv_heads);
    if (c.rope_full.proportional)
        cfg_add_feature(f, "proportional RoPE on full layers (partial %.3g, theta %.3g)", c.rope_full.partial,
                    c.rope_full.theta);
    if (c.k_eq_v)
        cfg_add_feature(f, "K-eq-V on full layers (%lld KV heads, values = keys)",
                    (long long)(c.n_global_kv_heads > 0 ? c.n_global_kv_heads : c.n_kv_heads));
    if (c.ple > 0) cfg_add_feature(f, "per-layer input embeddings (%lld per layer)", (long long)c.ple);
    if (c.kv_shared > 0) {
        cfg_add_feature(f, "KV sharing: the last %lld layers reuse earlier layers' K/V", (long long)c.kv_shared);
        if (c.double_wide) cfg_add_feature(f, "double-wide MLP (%lld) on KV-shared layers", (long long)(2 * c.inter));
    }
    if (c.moe)
        cfg_add_feature(f, "MoE: %lld experts, top %lld, width %lld, beside a dense MLP (%lld)", (long long)c.n_experts,
                    (long long)c.top_k, (long long)c.moe_inter, (long long)c.inter);
    else cfg_add_feature(f, "GeGLU MLP (%lld)", (long long)c.inter);
    if (c.softcap > 0) cfg_add_feature(f, "final logit soft-cap %.3g", c.softcap);
    cfg_add_feature(f, c.tie ? "tied input/output embeddings" : "separate lm_head");
    free(c.full);
    return o;
}

/* ---- saved states (lm_ops.state_*) ----
 *
 * Rows: per position, the K then V row (n_kv * d floats each) of every
 * full layer that owns its cache, in layer order. Tail: per owning sliding
 * layer, the K rows then the V rows of positions pos - window + 1 .. pos - 1
 * (window - 1 slots; slots before position 0 are zeros): what a ring must
 * hold to go on from pos, and only valid at that pos. */

static int64_t g4_tail_slots(const g4_model *m) { return m->c.window > 1 ? m->c.window - 1 : 0; }

static void g4_state_layout(const lm_model *bm, size_t *row_bytes, size_t *tail_bytes) {
    const g4_model *m = (const g4_model *)bm;
    *row_bytes = *tail_bytes = 0;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        if (!L->owner) continue;
        size_t row = 2 * (size_t)(L->n_kv * L->d) * sizeof(float);
        if (L->full) *row_bytes += row;
        else *tail_bytes += (size_t)g4_tail_slots(m) * row;
    }
}

static void g4_state_save_rows(const lm_cache *bc, int64_t from, int64_t to, void *dst) {
    const g4_cache *c = (const g4_cache *)bc;
    const g4_model *m = (const g4_model *)c->base.model;
    float *o = dst;
    for (int64_t t = from; t < to; t++)
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            const g4_layer *L = &m->layers[i];
            if (!L->owner || !L->full) continue;
            size_t row = (size_t)(L->n_kv * L->d);
            memcpy(o, c->kv[i].k + (size_t)t * row, row * sizeof(float)), o += row;
            memcpy(o, c->kv[i].v + (size_t)t * row, row * sizeof(float)), o += row;
        }
}

static void g4_state_save_tail(const lm_cache *bc, void *dst) {
    const g4_cache *c = (const g4_cache *)bc;
    const g4_model *m = (const g4_model *)c->base.model;
    int64_t S = g4_tail_slots(m), pos = c->base.pos;
    float *o = dst;
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        if (!L->owner || L->full) continue;
        const g4_kv *kv = &c->kv[i];
        size_t row = (size_t)(L->n_kv * L->d);
        for (int64_t j = 0; j < S; j++) {
            int64_t t = pos - S + j;
            if (t < 0) memset(o + j * row, 0, row * sizeof(float));
            else memcpy(o + j * row, kv->k + (size_t)(t % kv->rows) * row, row * sizeof(float));
            if (t < 0) memset(o + (S + j) * row, 0, row * sizeof(float));
            else memcpy(o + (S + j) * row, kv->v + (size_t)(t % kv->rows) * row, row * sizeof(float));
        }
        o += 2 * (size_t)S * row;
    }
}

static optiq_status g4_state_restore(lm_cache *bc, int64_t pos, const void *rows, const void *tail, optiq_error *err) {
    g4_cache *c = (g4_cache *)bc;
    const g4_model *m = (const g4_model *)c->base.model;
    int64_t S = g4_tail_slots(m);
    g4_cache_reset(bc);
    int64_t full_rows = c->full_rows;
    if (pos > full_rows) {
        full_rows = (pos + 255) / 256 * 256;
        if (full_rows > c->base.capacity) full_rows = c->base.capacity;
    }
    int64_t ring = (S + 1 + 255) / 256 * 256; /* the window before pos and one new position */
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        if (!L->owner) continue;
        g4_kv *kv = &c->kv[i];
        size_t row = (size_t)(L->n_kv * L->d);
        if (L->full && kv->rows < full_rows) {
            if (!grow_f32(&kv->k, (size_t)full_rows * row) || !grow_f32(&kv->v, (size_t)full_rows * row))
                return err_set(err, OPTIQ_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens",
                               (long long)full_rows);
            kv->rows = full_rows;
        } else if (!L->full && kv->rows < ring) {
            if (!grow_f32(&kv->k, (size_t)ring * row) || !grow_f32(&kv->v, (size_t)ring * row))
                return err_set(err, OPTIQ_ERR_NOMEM, "out of memory growing the sliding-window cache");
            kv->rows = ring;
        }
    }
    c->full_rows = full_rows;
    const float *r = rows, *tl = tail;
    for (int64_t t = 0; t < pos; t++)
        for (int64_t i = 0; i < m->c.n_layers; i++) {
            const g4_layer *L = &m->layers[i];
            if (!L->owner || !L->full) continue;
            size_t row = (size_t)(L->n_kv * L->d);
            memcpy(c->kv[i].k + (size_t)t * row, r, row * sizeof(float)), r += row;
            memcpy(c->kv[i].v + (size_t)t * row, r, row * sizeof(float)), r += row;
        }
    for (int64_t i = 0; i < m->c.n_layers; i++) {
        const g4_layer *L = &m->layers[i];
        if (!L->owner || L->full) continue;
        g4_kv *kv = &c->kv[i];
        size_t row = (size_t)(L->n_kv * L->d);
        for (int64_t j = 0; j < S; j++) {
            int64_t t = pos - S + j;
            if (t < 0) continue;
            memcpy(kv->k + (size_t)(t % kv->rows) * row, tl + j * row, row * sizeof(float));
            memcpy(kv->v + (size_t)(t % kv->rows) * row, tl + (S + j) * row, row * sizeof(float));
        }
        tl += 2 * (size_t)S * row;
    }
    c->base.pos = pos;
    return OPTIQ_OK;
}

const lm_ops gemma4_ops = {
    .family = "gemma4",
    .model_types = G4_TYPES,
    .load = g4_load,
    .free = g4_free,
    .cache_new = g4_cache_new,
    .cache_free = g4_cache_free,
    .cache_reset = g4_cache_reset,
    .forward = g4_forward,
    .forward_batch = g4_forward_batch,
    .embed = g4_embed,
    .decode_bytes = g4_decode_bytes,
    .describe = g4_describe,
    .state_layout = g4_state_layout,
    .state_save_rows = g4_state_save_rows,
    .state_save_tail = g4_state_save_tail,
    .state_restore = g4_state_restore,
};
