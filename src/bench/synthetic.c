/* synthetic.c — see synthetic.h. */
#include "bench/synthetic.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/dtype.h"
#include "io/safetensors.h"

/* ---- the table ---------------------------------------------------------- */

/* Shapes from the released checkpoints' config.json (Qwen3.5:
 * ../shared/spec/qwen3_5.md §1.5; Gemma-4: gemma4.md §2); eps and the
 * rest a family shares are in its config builder. A new size is a row. */
static const synth_model MODELS[] = {
    {.name = "qwen3_5-0.8b", .model_type = "qwen3_5", .hidden = 1024, .n_layers = 24, .inter = 3584,
     .vocab = 248320, .n_heads = 8, .n_kv_heads = 2, .head_dim = 256, .lk_heads = 16, .lv_heads = 16,
     .lk_dim = 128, .lv_dim = 128, .conv_k = 4, .full_attention_interval = 4, .max_position = 262144, .tie = 1,
     .rope_theta = 10000000.0, .partial_rotary = 0.25, .mrope = {11, 11, 10}, .bits = 4, .group_size = 64},
    /* Test-only: every kind of layer (a linear-attention and a full-attention
     * one), GQA on both, in a few hundred kB. */
    {.name = "qwen3_5-tiny", .model_type = "qwen3_5", .for_tests = 1, .hidden = 64, .n_layers = 2, .inter = 128,
     .vocab = 256, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .lk_heads = 2, .lv_heads = 4, .lk_dim = 16,
     .lv_dim = 16, .conv_k = 4, .full_attention_interval = 2, .max_position = 4096, .tie = 1,
     .rope_theta = 10000000.0, .partial_rotary = 0.25, .mrope = {2, 1, 1}, .bits = 4, .group_size = 64},
    /* Gemma-4 E2B text tower (spec gemma4.md §2.1, §2.8: the config.json of
     * google/gemma-4-e2b): PLE, the last 20 layers KV-shared with a
     * double-wide MLP, every 5th layer full attention (4, 9, 14, ...). */
    {.name = "gemma4-e2b", .model_type = "gemma4", .hidden = 1536, .n_layers = 35, .inter = 6144, .vocab = 262144,
     .n_heads = 8, .n_kv_heads = 1, .head_dim = 256, .global_head_dim = 512, .kv_shared = 20, .ple = 256,
     .vocab_ple = 262144, .sliding_window = 512, .full_attention_interval = 5, .double_wide = 1,
     .max_position = 131072, .tie = 1, .rope_theta = 1000000.0, .partial_rotary = 0.25, .rope_local_theta = 10000.0,
     .softcap = 30.0, .bits = 4, .group_size = 64},
    /* Test-only: both layer kinds among the K/V owners (0-2) and among the
     * KV-shared layers (3-5: 3 and 4 read layer 1, 5 reads layer 2), PLE,
     * the double-wide MLP, a window of 8 that a 24-token prompt wraps. P is 64
     * (not smaller) so per_layer_projection [H, P] splits into whole groups. */
    {.name = "gemma4-tiny", .model_type = "gemma4", .for_tests = 1, .hidden = 64, .n_layers = 6, .inter = 128,
     .vocab = 256, .n_heads = 4, .n_kv_heads = 1, .head_dim = 16, .global_head_dim = 32, .kv_shared = 3, .ple = 64,
     .vocab_ple = 256, .sliding_window = 8, .full_attention_interval = 3, .double_wide = 1, .max_position = 4096,
     .tie = 1, .rope_theta = 1000000.0, .partial_rotary = 0.25, .rope_local_theta = 10000.0, .softcap = 30.0,
     .bits = 4, .group_size = 64},
};
#define N_MODELS (sizeof MODELS / sizeof MODELS[0])

const synth_model *synthetic_find(const char *name) {
    for (size_t i = 0; name && i < N_MODELS; i++)
        if (strcmp(MODELS[i].name, name) == 0) return &MODELS[i];
    return NULL;
}

size_t synthetic_count(void) { return N_MODELS; }
const synth_model *synthetic_at(size_t i) { return i < N_MODELS ? &MODELS[i] : NULL; }

const char *synthetic_names(void) {
    static char buf[512];
    if (!buf[0]) {
        size_t k = 0;
        for (size_t i = 0; i < N_MODELS && k < sizeof buf; i++)
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s%s", i ? ", " : "", MODELS[i].name,
                                  MODELS[i].for_tests ? " (tests only)" : "");
    }
    return buf;
}

/* ---- tensor lists ------------------------------------------------------- */

/* What one decode step reads of a tensor. */
enum { DECODE_NONE, DECODE_ALL /* a matrix the token multiplies with */, DECODE_ROW /* one row: a table lookup */ };

typedef enum fill_kind { FILL_CODES, FILL_SCALES, FILL_BIASES, FILL_ONES, FILL_ZEROS, FILL_A_LOG, FILL_CONV } fill_kind;

typedef struct syn_tensor {
    char *name;
    dtype dt;
    int ndim;
    int64_t shape[3];
    fill_kind fill;
    int decode;        /* DECODE_*: what of it every decode step reads */
    uint64_t stream;   /* PRNG stream: hash of the module (scales and biases share it) */
    uint8_t *data;     /* in the image, once laid out */
    uint64_t nelem;
} syn_tensor;

typedef struct tlist {
    const synth_model *s;
    syn_tensor *t;
    size_t n, cap;
    int oom;
} tlist;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void add(tlist *l, const char *name, dtype dt, int ndim, int64_t a, int64_t b, int64_t c, fill_kind fill,
                int decode) {
    if (l->oom) return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 256;
        syn_tensor *nt = realloc(l->t, nc * sizeof *nt);
        if (!nt) {
            l->oom = 1;
            return;
        }
        l->t = nt, l->cap = nc;
    }
    syn_tensor *t = &l->t[l->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        l->oom = 1;
        return;
    }
    t->dt = dt, t->ndim = ndim, t->fill = fill, t->decode = decode;
    t->shape[0] = a, t->shape[1] = b, t->shape[2] = c;
    t->nelem = 1;
    for (int i = 0; i < ndim; i++) t->nelem *= (uint64_t)t->shape[i];
    /* scales and biases of one module draw the same factors: hash the module path */
    const char *dot = strrchr(name, '.');
    t->stream = fnv1a(name, (fill == FILL_SCALES || fill == FILL_BIASES) && dot ? (size_t)(dot - name) : strlen(name));
    l->n++;
}

/* Module X quantized as MLX stores it: X.weight U32 [rows, cols * bits / 32],
 * X.scales and X.biases bf16 [rows, cols / group_size]. */
static void add_linear(tlist *l, const char *X, int64_t rows, int64_t cols, int decode) {
    char n[256];
    int64_t words = cols * l->s->bits / 32, groups = cols / l->s->group_size;
    snprintf(n, sizeof n, "%s.weight", X);
    add(l, n, DT_U32, 2, rows, words, 0, FILL_CODES, decode);
    snprintf(n, sizeof n, "%s.scales", X);
    add(l, n, DT_BF16, 2, rows, groups, 0, FILL_SCALES, decode);
    snprintf(n, sizeof n, "%s.biases", X);
    add(l, n, DT_BF16, 2, rows, groups, 0, FILL_BIASES, decode);
}

static void tlist_free(tlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->t[i].name);
    free(l->t);
    memset(l, 0, sizeof *l);
}

/* ---- family: qwen3_5 ---------------------------------------------------- */

/* The tensors of an MLX-converted Qwen3.5 text tower (the names and shapes
 * qwen3_5.c's q35_load / bind_layer bind): every nn.Linear and the embedding
 * quantized, as mlx-lm's convert does for a dense qwen3_5; conv1d [C, K, 1],
 * norms, dt_bias bf16; A_log f32. */
static void q35_tensors(tlist *l) {
    const synth_model *s = l->s;
    const char *P = "language_model.model.";
    char n[256];
    int64_t H = s->hidden, key_dim = s->lk_heads * s->lk_dim, value_dim = s->lv_heads * s->lv_dim;
    int64_t conv_dim = 2 * key_dim + value_dim, D = s->head_dim;
    snprintf(n, sizeof n, "%sembed_tokens", P);
    add_linear(l, n, s->vocab, H, s->tie ? DECODE_ALL : DECODE_NONE); /* read per token only as the tied head */
    snprintf(n, sizeof n, "%snorm.weight", P);
    add(l, n, DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
    if (!s->tie) add_linear(l, "language_model.lm_head", s->vocab, H, DECODE_ALL);
    for (int64_t i = 0; i < s->n_layers; i++) {
        char L[128];
        snprintf(L, sizeof L, "%slayers.%lld.", P, (long long)i);
#define NAME(suffix) (snprintf(n, sizeof n, "%s%s", L, suffix), n)
        add(l, NAME("input_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        add(l, NAME("post_attention_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        if ((i + 1) % s->full_attention_interval != 0) {
            add_linear(l, NAME("linear_attn.in_proj_qkv"), conv_dim, H, DECODE_ALL);
            add_linear(l, NAME("linear_attn.in_proj_z"), value_dim, H, DECODE_ALL);
            add_linear(l, NAME("linear_attn.in_proj_b"), s->lv_heads, H, DECODE_ALL);
            add_linear(l, NAME("linear_attn.in_proj_a"), s->lv_heads, H, DECODE_ALL);
            add_linear(l, NAME("linear_attn.out_proj"), H, value_dim, DECODE_ALL);
            add(l, NAME("linear_attn.conv1d.weight"), DT_BF16, 3, conv_dim, s->conv_k, 1, FILL_CONV, DECODE_NONE);
            add(l, NAME("linear_attn.A_log"), DT_F32, 1, s->lv_heads, 0, 0, FILL_A_LOG, DECODE_NONE);
            add(l, NAME("linear_attn.dt_bias"), DT_BF16, 1, s->lv_heads, 0, 0, FILL_ZEROS, DECODE_NONE);
            add(l, NAME("linear_attn.norm.weight"), DT_BF16, 1, s->lv_dim, 0, 0, FILL_ONES, DECODE_NONE);
        } else {
            add_linear(l, NAME("self_attn.q_proj"), 2 * s->n_heads * D, H, DECODE_ALL); /* query | gate per head */
            add_linear(l, NAME("self_attn.k_proj"), s->n_kv_heads * D, H, DECODE_ALL);
            add_linear(l, NAME("self_attn.v_proj"), s->n_kv_heads * D, H, DECODE_ALL);
            add_linear(l, NAME("self_attn.o_proj"), H, s->n_heads * D, DECODE_ALL);
            add(l, NAME("self_attn.q_norm.weight"), DT_BF16, 1, D, 0, 0, FILL_ONES, DECODE_NONE);
            add(l, NAME("self_attn.k_norm.weight"), DT_BF16, 1, D, 0, 0, FILL_ONES, DECODE_NONE);
        }
        add_linear(l, NAME("mlp.gate_proj"), s->inter, H, DECODE_ALL);
        add_linear(l, NAME("mlp.up_proj"), s->inter, H, DECODE_ALL);
        add_linear(l, NAME("mlp.down_proj"), H, s->inter, DECODE_ALL);
#undef NAME
    }
}

static cJSON *q35_config(const synth_model *s) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "model_type", s->model_type);
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3_5ForConditionalGeneration"));
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tie);
    cJSON *q = cJSON_AddObjectToObject(c, "quantization");
    cJSON_AddNumberToObject(q, "group_size", s->group_size);
    cJSON_AddNumberToObject(q, "bits", s->bits);
    cJSON *t = cJSON_AddObjectToObject(c, "text_config");
    cJSON_AddStringToObject(t, "model_type", "qwen3_5_text");
    cJSON_AddNumberToObject(t, "hidden_size", (double)s->hidden);
    cJSON_AddNumberToObject(t, "num_hidden_layers", (double)s->n_layers);
    cJSON_AddNumberToObject(t, "intermediate_size", (double)s->inter);
    cJSON_AddNumberToObject(t, "num_attention_heads", (double)s->n_heads);
    cJSON_AddNumberToObject(t, "num_key_value_heads", (double)s->n_kv_heads);
    cJSON_AddNumberToObject(t, "head_dim", (double)s->head_dim);
    cJSON_AddNumberToObject(t, "linear_num_key_heads", (double)s->lk_heads);
    cJSON_AddNumberToObject(t, "linear_num_value_heads", (double)s->lv_heads);
    cJSON_AddNumberToObject(t, "linear_key_head_dim", (double)s->lk_dim);
    cJSON_AddNumberToObject(t, "linear_value_head_dim", (double)s->lv_dim);
    cJSON_AddNumberToObject(t, "linear_conv_kernel_dim", (double)s->conv_k);
    cJSON_AddNumberToObject(t, "full_attention_interval", (double)s->full_attention_interval);
    cJSON *lt = cJSON_AddArrayToObject(t, "layer_types");
    for (int64_t i = 0; i < s->n_layers; i++)
        cJSON_AddItemToArray(lt, cJSON_CreateString((i + 1) % s->full_attention_interval ? "linear_attention"
                                                                                          : "full_attention"));
    cJSON_AddNumberToObject(t, "vocab_size", (double)s->vocab);
    cJSON_AddBoolToObject(t, "tie_word_embeddings", s->tie);
    cJSON_AddNumberToObject(t, "rms_norm_eps", 1e-6);
    cJSON_AddNumberToObject(t, "max_position_embeddings", (double)s->max_position);
    cJSON_AddBoolToObject(t, "attention_bias", 0);
    cJSON *r = cJSON_AddObjectToObject(t, "rope_parameters");
    cJSON_AddStringToObject(r, "rope_type", "default");
    cJSON_AddNumberToObject(r, "rope_theta", s->rope_theta);
    cJSON_AddNumberToObject(r, "partial_rotary_factor", s->partial_rotary);
    cJSON *ms = cJSON_AddArrayToObject(r, "mrope_section");
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(ms, cJSON_CreateNumber((double)s->mrope[i]));
    cJSON_AddBoolToObject(r, "mrope_interleaved", 1);
    return c;
}

/* ---- family: gemma4 ----------------------------------------------------- */

/* Per-layer shapes, spec gemma4.md §2.2 (what gemma4.c's derive_layers derives). */
typedef struct g4_shape {
    int full, owner, keqv;  /* owner: not KV-shared, holds k_proj (and v_proj unless keqv) */
    int64_t d, n_kv, inter; /* head size, KV heads, MLP width */
} g4_shape;

static g4_shape g4_layer_shape(const synth_model *s, int64_t i) {
    g4_shape g;
    g.full = (i + 1) % s->full_attention_interval == 0;
    g.d = g.full && s->global_head_dim ? s->global_head_dim : s->head_dim;
    g.keqv = s->k_eq_v && g.full;
    g.n_kv = g.keqv && s->n_global_kv_heads > 0 ? s->n_global_kv_heads : s->n_kv_heads;
    g.owner = !(s->kv_shared > 0 && i >= s->n_layers - s->kv_shared);
    g.inter = s->inter * (s->double_wide && !g.owner ? 2 : 1);
    return g;
}

/* The tensors of an MLX-converted Gemma-4 text tower (the names and shapes
 * gemma4.c's g4_load / bind_layer bind; spec §3.2): every nn.Linear and both
 * embeddings quantized (mlx-lm's convert quantizes embed_tokens_per_layer as
 * a QuantizedEmbedding too, spec §10); norms and layer_scalar bf16. KV-shared
 * layers carry no k_proj / v_proj / k_norm (the converters drop them). No MoE
 * (enable_moe_block): no row needs it. */
static void g4_tensors(tlist *l) {
    const synth_model *s = l->s;
    const char *P = "language_model.model.";
    char n[256];
    int64_t H = s->hidden, NP = s->n_layers * s->ple;
    snprintf(n, sizeof n, "%sembed_tokens", P);
    add_linear(l, n, s->vocab, H, s->tie ? DECODE_ALL : DECODE_NONE); /* read per token only as the tied head */
    snprintf(n, sizeof n, "%snorm.weight", P);
    add(l, n, DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
    if (!s->tie) add_linear(l, "language_model.lm_head", s->vocab, H, DECODE_ALL);
    if (s->ple > 0) {
        snprintf(n, sizeof n, "%sembed_tokens_per_layer", P);
        add_linear(l, n, s->vocab_ple, NP, DECODE_ROW); /* [V_p, N_L * P]: a token reads its row */
        snprintf(n, sizeof n, "%sper_layer_model_projection", P);
        add_linear(l, n, NP, H, DECODE_ALL);
        snprintf(n, sizeof n, "%sper_layer_projection_norm.weight", P);
        add(l, n, DT_BF16, 1, s->ple, 0, 0, FILL_ONES, DECODE_NONE);
    }
    for (int64_t i = 0; i < s->n_layers; i++) {
        g4_shape g = g4_layer_shape(s, i);
        char L[128];
        snprintf(L, sizeof L, "%slayers.%lld.", P, (long long)i);
#define NAME(suffix) (snprintf(n, sizeof n, "%s%s", L, suffix), n)
        add(l, NAME("input_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        add(l, NAME("post_attention_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        add(l, NAME("pre_feedforward_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        add(l, NAME("post_feedforward_layernorm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        add_linear(l, NAME("self_attn.q_proj"), s->n_heads * g.d, H, DECODE_ALL);
        add_linear(l, NAME("self_attn.o_proj"), H, s->n_heads * g.d, DECODE_ALL);
        add(l, NAME("self_attn.q_norm.weight"), DT_BF16, 1, g.d, 0, 0, FILL_ONES, DECODE_NONE);
        if (g.owner) {
            add_linear(l, NAME("self_attn.k_proj"), g.n_kv * g.d, H, DECODE_ALL);
            if (!g.keqv) add_linear(l, NAME("self_attn.v_proj"), g.n_kv * g.d, H, DECODE_ALL);
            add(l, NAME("self_attn.k_norm.weight"), DT_BF16, 1, g.d, 0, 0, FILL_ONES, DECODE_NONE);
        }
        add_linear(l, NAME("mlp.gate_proj"), g.inter, H, DECODE_ALL);
        add_linear(l, NAME("mlp.up_proj"), g.inter, H, DECODE_ALL);
        add_linear(l, NAME("mlp.down_proj"), H, g.inter, DECODE_ALL);
        if (s->ple > 0) {
            add_linear(l, NAME("per_layer_input_gate"), s->ple, H, DECODE_ALL);
            add_linear(l, NAME("per_layer_projection"), H, s->ple, DECODE_ALL);
            add(l, NAME("post_per_layer_input_norm.weight"), DT_BF16, 1, H, 0, 0, FILL_ONES, DECODE_NONE);
        }
        add(l, NAME("layer_scalar"), DT_BF16, 1, 1, 0, 0, FILL_ONES, DECODE_NONE);
#undef NAME
    }
}

static void g4_rope(cJSON *rp, const char *kind, const char *type, double theta, double partial) {
    cJSON *r = cJSON_AddObjectToObject(rp, kind);
    cJSON_AddStringToObject(r, "rope_type", type);
    cJSON_AddNumberToObject(r, "rope_theta", theta);
    if (partial > 0) cJSON_AddNumberToObject(r, "partial_rotary_factor", partial);
}

/* config.json as the released Gemma-4 checkpoints have it after mlx-vlm's
 * convert: model_type gemma4 at the top, the text tower in text_config
 * (model_type gemma4_text) with an explicit layer_types. */
static cJSON *g4_config(const synth_model *s) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "model_type", s->model_type);
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Gemma4ForConditionalGeneration"));
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tie);
    cJSON_AddNumberToObject(c, "vocab_size", (double)s->vocab);
    cJSON *q = cJSON_AddObjectToObject(c, "quantization");
    cJSON_AddNumberToObject(q, "group_size", s->group_size);
    cJSON_AddNumberToObject(q, "bits", s->bits);
    cJSON *t = cJSON_AddObjectToObject(c, "text_config");
    cJSON_AddStringToObject(t, "model_type", "gemma4_text");
    cJSON_AddNumberToObject(t, "hidden_size", (double)s->hidden);
    cJSON_AddNumberToObject(t, "num_hidden_layers", (double)s->n_layers);
    cJSON_AddNumberToObject(t, "intermediate_size", (double)s->inter);
    cJSON_AddNumberToObject(t, "num_attention_heads", (double)s->n_heads);
    cJSON_AddNumberToObject(t, "num_key_value_heads", (double)s->n_kv_heads);
    if (s->n_global_kv_heads > 0)
        cJSON_AddNumberToObject(t, "num_global_key_value_heads", (double)s->n_global_kv_heads);
    else
        cJSON_AddNullToObject(t, "num_global_key_value_heads"); /* unset: the reference's None */
    cJSON_AddNumberToObject(t, "head_dim", (double)s->head_dim);
    cJSON_AddNumberToObject(t, "global_head_dim", (double)s->global_head_dim);
    cJSON_AddBoolToObject(t, "attention_k_eq_v", s->k_eq_v);
    cJSON_AddNumberToObject(t, "num_kv_shared_layers", (double)s->kv_shared);
    cJSON_AddNumberToObject(t, "hidden_size_per_layer_input", (double)s->ple);
    cJSON_AddNumberToObject(t, "vocab_size", (double)s->vocab);
    cJSON_AddNumberToObject(t, "vocab_size_per_layer_input", (double)s->vocab_ple);
    cJSON_AddBoolToObject(t, "use_double_wide_mlp", s->double_wide);
    cJSON_AddBoolToObject(t, "enable_moe_block", 0);
    cJSON_AddNumberToObject(t, "sliding_window", (double)s->sliding_window);
    cJSON_AddNumberToObject(t, "sliding_window_pattern", (double)s->full_attention_interval);
    cJSON *lt = cJSON_AddArrayToObject(t, "layer_types");
    for (int64_t i = 0; i < s->n_layers; i++)
        cJSON_AddItemToArray(lt, cJSON_CreateString(g4_layer_shape(s, i).full ? "full_attention"
                                                                               : "sliding_attention"));
    cJSON *rp = cJSON_AddObjectToObject(t, "rope_parameters");
    g4_rope(rp, "sliding_attention", "default", s->rope_local_theta, 0);
    g4_rope(rp, "full_attention", "proportional", s->rope_theta, s->partial_rotary);
    cJSON_AddNumberToObject(t, "rms_norm_eps", 1e-6);
    if (s->softcap > 0) cJSON_AddNumberToObject(t, "final_logit_softcapping", s->softcap);
    else cJSON_AddNullToObject(t, "final_logit_softcapping");
    cJSON_AddBoolToObject(t, "tie_word_embeddings", s->tie);
    cJSON_AddNumberToObject(t, "max_position_embeddings", (double)s->max_position);
    cJSON_AddStringToObject(t, "hidden_activation", "gelu_pytorch_tanh");
    return c;
}

/* ---- families ----------------------------------------------------------- */

typedef struct synth_family {
    const char *model_type;
    void (*tensors)(tlist *l);
    cJSON *(*config)(const synth_model *s);
} synth_family;

static const synth_family FAMILIES[] = {
    {"qwen3_5", q35_tensors, q35_config},
    {"gemma4", g4_tensors, g4_config},
};

static const synth_family *family_of(const synth_model *s) {
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
        if (strcmp(FAMILIES[i].model_type, s->model_type) == 0) return &FAMILIES[i];
    return NULL;
}

static int build_list(const synth_model *s, tlist *l) {
    memset(l, 0, sizeof *l);
    l->s = s;
    const synth_family *f = family_of(s);
    if (!f) return 0;
    f->tensors(l);
    if (l->oom) {
        tlist_free(l);
        return 0;
    }
    return 1;
}

char *synthetic_config_json(const synth_model *s) {
    const synth_family *f = family_of(s);
    cJSON *c = f ? f->config(s) : NULL;
    char *text = c ? cJSON_Print(c) : NULL;
    cJSON_Delete(c);
    return text;
}

uint64_t synthetic_decode_bytes(const synth_model *s) {
    tlist l;
    if (!build_list(s, &l)) return 0;
    uint64_t b = 0;
    for (size_t i = 0; i < l.n; i++) {
        const syn_tensor *t = &l.t[i];
        uint64_t bytes = t->nelem * dtype_size(t->dt);
        if (t->decode == DECODE_ALL) b += bytes;
        else if (t->decode == DECODE_ROW) b += bytes / (uint64_t)t->shape[0];
    }
    tlist_free(&l);
    return b;
}

uint64_t synthetic_matrix_params(const synth_model *s) {
    tlist l;
    if (!build_list(s, &l)) return 0;
    uint64_t p = 0;
    for (size_t i = 0; i < l.n; i++)
        if (l.t[i].fill == FILL_CODES) p += l.t[i].nelem * 32 / (uint64_t)s->bits;
    tlist_free(&l);
    return p;
}

/* ---- filling ------------------------------------------------------------ */

/* splitmix64: one multiply-xorshift step per 8 bytes, enough to fill a
 * model's worth of codes in well under a second. */
static inline uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float unit(uint64_t r) { return (float)(r >> 40) * (1.0f / 16777216.0f); } /* [0, 1) */

#define CHUNK ((uint64_t)1 << 20) /* elements per fill task */

typedef struct fill_job {
    const syn_tensor *t;
    size_t n;
    uint64_t *first_task; /* (n + 1) prefix sums of chunks per tensor */
    uint64_t seed;
    float scale0, bias_per_scale;
} fill_job;

static void put_bf16(uint8_t *p, uint64_t i, float v) {
    uint16_t h = f32_to_bf16(v);
    memcpy(p + 2 * i, &h, 2);
}

static void fill_chunk(void *ctx, int64_t task, int thread) {
    (void)thread;
    const fill_job *j = ctx;
    size_t lo = 0, hi = j->n; /* the tensor whose chunk range holds task */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (j->first_task[mid] <= (uint64_t)task) lo = mid;
        else hi = mid;
    }
    const syn_tensor *t = &j->t[lo];
    uint64_t c = (uint64_t)task - j->first_task[lo];
    uint64_t b = c * CHUNK, e = b + CHUNK < t->nelem ? b + CHUNK : t->nelem;
    uint64_t x = j->seed ^ t->stream ^ (c * 0xd1b54a32d192ed03ull);
    splitmix(&x);
    switch (t->fill) {
    case FILL_CODES: /* U32 words: every code equally likely */
        for (uint64_t i = b; i < e; i += 2) {
            uint64_t r = splitmix(&x);
            memcpy(t->data + 4 * i, &r, i + 1 < e ? 8 : 4);
        }
        break;
    case FILL_SCALES:
    case FILL_BIASES: /* the same factor stream for both: biases follow their scales */
        for (uint64_t i = b; i < e; i++) {
            float s = bf16_to_f32(f32_to_bf16(j->scale0 * (0.75f + 0.5f * unit(splitmix(&x)))));
            put_bf16(t->data, i, t->fill == FILL_SCALES ? s : -s * j->bias_per_scale);
        }
        break;
    case FILL_ONES:
    case FILL_ZEROS:
        for (uint64_t i = b; i < e; i++) put_bf16(t->data, i, t->fill == FILL_ONES ? 1.0f : 0.0f);
        break;
    case FILL_CONV:
        for (uint64_t i = b; i < e; i++) put_bf16(t->data, i, 0.5f * unit(splitmix(&x)) - 0.25f);
        break;
    case FILL_A_LOG:
        for (uint64_t i = b; i < e; i++) {
            float v = logf(1.0f + 15.0f * unit(splitmix(&x)));
            memcpy(t->data + 4 * i, &v, 4);
        }
        break;
    }
}

/* ---- building ----------------------------------------------------------- */

optiq_status synthetic_model_dir(const synth_model *s, uint64_t seed, thread_pool *pool, model_dir **out,
                                 uint64_t *image_bytes, optiq_error *err) {
    *out = NULL;
    const synth_family *fam = family_of(s);
    if (!fam)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "synthetic %s: no builder for model_type %s", s->name,
                       s->model_type);
    tlist l;
    if (!build_list(s, &l)) return err_set(err, OPTIQ_ERR_NOMEM, "synthetic %s: out of memory", s->name);

    /* header: the writer's JSON (data in name order, back to back), padded
     * with spaces (which readers allow) so tensor data starts 64-byte aligned */
    static const uint8_t DUMMY[1];
    st_writer *w = st_writer_new();
    optiq_status st = w ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "synthetic %s: out of memory", s->name);
    uint64_t data_bytes = 0;
    for (size_t i = 0; i < l.n && !st; i++) {
        st = st_writer_add(w, l.t[i].name, l.t[i].dt, l.t[i].ndim, l.t[i].shape, DUMMY, err);
        data_bytes += l.t[i].nelem * dtype_size(l.t[i].dt);
    }
    char *hdr = NULL;
    size_t hlen = 0;
    if (!st) st = st_writer_header(w, &hdr, &hlen, err);
    st_writer_free(w);
    uint8_t *img = NULL;
    size_t padded = (8 + hlen + 63) / 64 * 64 - 8, size = 8 + padded + (size_t)data_bytes;
    if (!st && !(img = aligned_alloc(2u << 20, (size + (2u << 20) - 1) / (2u << 20) * (2u << 20))))
        st = err_set(err, OPTIQ_ERR_NOMEM, "synthetic %s: cannot allocate %zu bytes of weights", s->name, size);
    if (st) {
        free(hdr);
        tlist_free(&l);
        return st;
    }
    madvise(img, (size + (2u << 20) - 1) / (2u << 20) * (2u << 20), MADV_HUGEPAGE);
    for (int b = 0; b < 8; b++) img[b] = (uint8_t)((uint64_t)padded >> (8 * b));
    memcpy(img + 8, hdr, hlen);
    memset(img + 8 + hlen, ' ', padded - hlen);
    free(hdr);

    st_file *sf = NULL;
    char label[128];
    snprintf(label, sizeof label, "<memory>/%s", s->name);
    if ((st = st_open_memory(img, size, label, &sf, err))) {
        free(img);
        tlist_free(&l);
        return st;
    }
    /* Fill in place (the st_file only borrows img), chunks split over the pool. */
    uint64_t *first = malloc((l.n + 1) * sizeof *first);
    if (!first) {
        st_close(sf);
        free(img);
        tlist_free(&l);
        return err_set(err, OPTIQ_ERR_NOMEM, "synthetic %s: out of memory", s->name);
    }
    first[0] = 0;
    for (size_t i = 0; i < l.n; i++) {
        l.t[i].data = img + st_find(sf, l.t[i].name)->offset;
        first[i + 1] = first[i] + (l.t[i].nelem + CHUNK - 1) / CHUNK;
    }
    double levels = ldexp(1.0, s->bits) - 1.0;
    fill_job job = {.t = l.t, .n = l.n, .first_task = first, .seed = seed * 0x2545f4914f6cdd1dull,
                    .scale0 = (float)(0.02 / sqrt((levels + 2.0) * levels / 12.0)), /* sd of uniform codes 0..levels */
                    .bias_per_scale = (float)(levels / 2.0)};
    pool_run(pool, (int64_t)first[l.n], fill_chunk, &job);
    free(first);
    tlist_free(&l);

    char *cfg = synthetic_config_json(s);
    if (!cfg) {
        st_close(sf);
        free(img);
        return err_set(err, OPTIQ_ERR_NOMEM, "synthetic %s: out of memory", s->name);
    }
    st = model_dir_open_memory(cfg, sf, img, out, err); /* owns sf and img from here */
    free(cfg);
    if (!st && image_bytes) *image_bytes = size;
    return st;
}
