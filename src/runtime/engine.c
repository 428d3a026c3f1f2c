/*
 * engine.c — engines, sessions and the generation loop (optiq.h, section
 * "engine, sessions, generation").
 *
 * An engine bundles what one model folder needs to generate: the language
 * model (models/model.h), the tokenizer, the chat template (NULL when the
 * folder has none), the stop tokens and the thread pool. It is never written
 * to after optiq_engine_load returns, but for its prefix cache and the vision
 * front-end's cache, which take their own locks.
 *
 * A session is a timeline: the list of its tokens and the model's cache. The
 * cache may lag the list by tokens that were accepted but not evaluated yet:
 * the last token a generation samples is kept in the list but only run
 * through the model by the next call on the session (the reference's
 * generate_step never evaluates its last token either, and a session that is
 * dropped after the reply should not pay for it). Invariants:
 *   cache position <= n_tokens <= context;
 *   has_logits => cache position == n_tokens and logits is the model's
 *   output after tokens[n_tokens - 1].
 *
 * Images (a folder with a vision front-end, vision/frontend.h): a prompt's
 * placeholders are expanded to the images' soft tokens before they enter the
 * timeline; the prompt is then fed with input embeddings (the token lookup,
 * soft tokens at the image positions) and three-axis positions. After an
 * image the text positions run behind the token count (a block of gh x gw
 * soft tokens advances them by max(gh, gw)); pos_delta keeps the difference
 * (mlx-vlm's rope_delta) for every later token of the session. Models
 * without multimodal RoPE (Gemma-4) take one position per token; the image
 * rows are flagged (lm_forward_args.is_image) and each image's run stays in
 * one forward call.
 *
 * A generation is a state machine (gen_run: start, prefill one chunk,
 * sample, forward, finish): optiq_generate runs one to its end; an
 * optiq_batch interleaves many, one prefill chunk of the oldest new prompt
 * per step and one token of every other generation, whose forward calls go
 * through lm_forward_batch together. Generated text is split into the
 * thinking block and the answer (text/reasoning.h). At each sample the
 * log-probabilities (when asked) are taken from the raw logits, then the
 * caller's process_logits may forbid tokens (a grammar's mask,
 * docs/structured-output.md), then the sampler picks; on_sampled hears the
 * token before it is kept.
 *
 * Prefix reuse (engine->prefix, runtime/prefix_cache.h): a generation that
 * starts on an empty session restores the longest cached prefix of its
 * prompt before its prefill, and every finished generation offers its
 * state. Sessions therefore record their images' runs (keys) and take
 * checkpoints of the model's tail state while feeding (section "prefix
 * reuse"); prefill chunks then end at the checkpoint block boundaries.
 * The vision front-end keeps its own cache of encoded images.
 *
 * EOS rule (mlx-lm's utils.load: load_config, then TokenizerWrapper):
 * generation_config.json's eos_token_id when present and truthy (an id or a
 * list of ids), else config.json's top-level eos_token_id, else (our
 * addition, for VLM-style configs that keep it nested) text_config's
 * eos_token_id, else the tokenizer's EOS ids.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/threadpool.h"
#include "io/json.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "runtime/prefix_cache.h"
#include "runtime/sampler.h"
#include "text/reasoning.h"
#include "vision/frontend.h"

#define DEFAULT_PREFILL_CHUNK 512
#define DEFAULT_PREFIX_BLOCK 256
#define MAX_EOS 64

struct optiq_engine {
    lm_model *model;
    const lm_info *info;
    optiq_tokenizer *tok;
    optiq_chat_template *tmpl; /* NULL when the folder has none */
    thread_pool *pool;
    int32_t eos[MAX_EOS];
    size_t n_eos;
    int64_t context;       /* tokens a session may hold (<= info->max_position) */
    int64_t prefill_chunk; /* tokens per prefill forward call */
    vision_fe *vision;     /* NULL: text only */
    reasoning_tags think;  /* the vocabulary's thinking markers (none: open == NULL) */
    prefix_cache *prefix;  /* NULL: no prefix reuse (runtime/prefix_cache.h) */
    size_t max_ckpts;      /* checkpoints a session keeps (their tails stay within an eighth of the cache
                            * budget, so eight busy sessions add at most the budget again) */
};

/* One image's run of soft tokens in a timeline, for the prefix cache's keys. */
typedef struct img_span {
    int64_t from, n;
    uint64_t hash;
} img_span;

struct optiq_session {
    optiq_engine *e;
    lm_cache *cache;
    int32_t *tokens; /* (cap_tokens) the timeline; tokens[cache pos ..] not evaluated yet */
    size_t n_tokens, cap_tokens;
    float *logits;   /* (vocab) after the last evaluated token; valid when has_logits */
    float *scratch;  /* (vocab) the sampler's working copy (it overwrites its input) */
    int has_logits;
    int64_t pos_delta; /* text position of a token - its index in the timeline (images make it < 0) */
    int32_t *pos_buf;  /* (3, buf_n) positions of one forward call, when needed */
    float *emb_buf;    /* (buf_n, hidden) input embeddings of one call, when needed */
    uint8_t *img_buf;  /* (buf_n) which tokens of the call are image soft tokens */
    int64_t buf_n;     /* tokens the three buffers hold (a call is at most a prefill chunk, or one image's run) */
    int (*stop_fn)(void *user); /* polled between prefill calls while optiq_generate runs, or NULL */
    void *stop_user;
    int aborted;       /* set by feed when stop_fn asked to stop (the session was reset) */
    /* prefix reuse (engine->prefix set): the images' runs in the timeline and the
     * checkpoints of the tail taken along it (increasing positions, <= cache position) */
    img_span *spans;
    size_t n_spans, cap_spans;
    pc_ckpt **ckpts;
    size_t n_ckpts, cap_ckpts;
};

/* A prompt segment with images, tokens [from, from + n) of the timeline:
 * its positions and the soft tokens that replace its image placeholders. */
typedef struct mm_seg {
    int64_t from, n;
    const int32_t *pos;  /* (3, n) */
    const float *feats;  /* (placeholders, hidden), in order */
    int32_t image_pad;
    int64_t used;        /* soft tokens consumed so far */
} mm_seg;

static optiq_status nomem(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- engine ------------------------------------------------------------ */

optiq_engine_params optiq_engine_default(void) {
    optiq_engine_params p = {.n_threads = 0, .context = 0, .prefill_chunk = 0, .exact = 0,
                             .prefix_cache_mb = 1024, .prefix_block = 0, .vision_cache_mb = 256};
    return p;
}

static void add_eos(optiq_engine *e, int64_t id) {
    if (id < 0 || id > INT32_MAX) return;
    for (size_t i = 0; i < e->n_eos; i++)
        if (e->eos[i] == (int32_t)id) return;
    if (e->n_eos < MAX_EOS) e->eos[e->n_eos++] = (int32_t)id;
}

/* Add the ids of an eos_token_id value (a number or a list of numbers);
 * entries that are not integers are skipped. Returns 1 when j was usable. */
static int add_eos_value(optiq_engine *e, const cJSON *j) {
    int64_t v;
    if (!j || cJSON_IsNull(j)) return 0;
    if (cJSON_IsArray(j)) {
        for (const cJSON *x = j->child; x; x = x->next)
            if (json_as_int(x, &v)) add_eos(e, v);
        return 1;
    }
    if (json_as_int(j, &v)) {
        add_eos(e, v);
        return 1;
    }
    return 0;
}

/* generation_config.json counts only when its eos_token_id is truthy in
 * Python's sense (load_config's `if eos_token_id := ...get(..., False)`): a
 * 0 or an empty list there falls through to config.json. An unreadable
 * generation_config.json is ignored, as load_config ignores a JSONDecodeError. */
static int truthy_eos(const cJSON *j) {
    int64_t v;
    if (cJSON_IsArray(j)) return cJSON_GetArraySize(j) > 0;
    return json_as_int(j, &v) && v != 0;
}

static void resolve_eos(optiq_engine *e) {
    model_dir *md = lm_model_dir(e->model);
    const char *gc_path = model_dir_file(md, MD_GENERATION_CONFIG);
    if (gc_path) {
        cJSON *gc = NULL;
        if (json_load_file(gc_path, NULL, 0, &gc, NULL) == OPTIQ_OK) {
            const cJSON *j = cJSON_GetObjectItemCaseSensitive(gc, "eos_token_id");
            int used = truthy_eos(j) && add_eos_value(e, j);
            cJSON_Delete(gc);
            if (used) return;
        }
    }
    if (add_eos_value(e, cJSON_GetObjectItemCaseSensitive(model_dir_config(md), "eos_token_id"))) return;
    const cJSON *tc = model_dir_text_config(md);
    if (tc && add_eos_value(e, cJSON_GetObjectItemCaseSensitive(tc, "eos_token_id"))) return;
    const int32_t *ids;
    size_t n = optiq_tokenizer_eos_ids(e->tok, &ids);
    for (size_t i = 0; i < n; i++) add_eos(e, ids[i]);
}

optiq_status optiq_engine_load(const char *dir, const optiq_engine_params *params, optiq_engine **out,
                               optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_engine_load: no output handle");
    *out = NULL;
    if (!dir) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_engine_load: no model folder");
    optiq_engine_params p = params ? *params : optiq_engine_default();
    if (p.n_threads < 0 || p.context < 0 || p.prefill_chunk < 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "engine parameters must not be negative (n_threads %d, context %lld, prefill_chunk %lld)",
                       p.n_threads, (long long)p.context, (long long)p.prefill_chunk);
    if (p.prefix_cache_mb < 0 || p.prefix_cache_mb > (1ll << 30) || p.prefix_block < 0 || p.vision_cache_mb < 0 ||
        p.vision_cache_mb > (1ll << 30))
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "cache sizes must be 0..2^30 MiB and prefix_block >= 0 (prefix_cache_mb %lld, prefix_block "
                       "%lld, vision_cache_mb %lld)",
                       (long long)p.prefix_cache_mb, (long long)p.prefix_block, (long long)p.vision_cache_mb);
    optiq_engine *e = calloc(1, sizeof *e);
    if (!e) return nomem(err);
    optiq_status st = lm_load(dir, &e->model, err);
    if (st == OPTIQ_OK) lm_set_exact(e->model, p.exact);
    if (st) goto fail;
    e->info = lm_get_info(e->model);
    if ((st = optiq_tokenizer_load(dir, &e->tok, err)) != OPTIQ_OK) goto fail;
    reasoning_tags_infer(e->tok, &e->think);
    if (model_dir_chat_template_source(lm_model_dir(e->model)) &&
        (st = optiq_chat_template_load(dir, &e->tmpl, err)) != OPTIQ_OK)
        goto fail;
    e->context = p.context ? p.context : e->info->max_position;
    if (e->context > e->info->max_position) {
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "context of %lld tokens is larger than the model's %lld (max_position_embeddings)",
                     (long long)e->context, (long long)e->info->max_position);
        goto fail;
    }
    e->prefill_chunk = p.prefill_chunk ? p.prefill_chunk : DEFAULT_PREFILL_CHUNK;
    if (!(e->pool = pool_create(p.n_threads))) {
        st = err_set(err, OPTIQ_ERR_NOMEM, "cannot start a thread pool of %d threads", p.n_threads);
        goto fail;
    }
    resolve_eos(e);
    if ((st = vision_fe_load(lm_model_dir(e->model), e->info->hidden_size, &e->vision, err)) != OPTIQ_OK) goto fail;
    if (e->vision) vision_fe_set_cache(e->vision, (size_t)p.vision_cache_mb << 20);
    e->prefix = prefix_cache_new(e->model, (size_t)p.prefix_cache_mb << 20,
                                 p.prefix_block ? p.prefix_block : DEFAULT_PREFIX_BLOCK);
    if (e->prefix) {
        size_t tail = prefix_cache_tail_bytes(e->prefix);
        e->max_ckpts = tail ? ((size_t)p.prefix_cache_mb << 20) / 8 / tail : 64;
        if (e->max_ckpts < 2) e->max_ckpts = 2;
    }
    *out = e;
    return OPTIQ_OK;
fail:
    optiq_engine_free(e);
    return st;
}

void optiq_engine_free(optiq_engine *e) {
    if (!e) return;
    prefix_cache_free(e->prefix);
    pool_free(e->pool);
    vision_fe_free(e->vision);
    optiq_chat_template_free(e->tmpl);
    optiq_tokenizer_free(e->tok);
    lm_free(e->model);
    free(e);
}

const optiq_tokenizer *optiq_engine_tokenizer(const optiq_engine *e) { return e->tok; }
const optiq_chat_template *optiq_engine_chat_template(const optiq_engine *e) { return e->tmpl; }
const char *optiq_engine_model_type(const optiq_engine *e) { return e->info->model_type; }
int64_t optiq_engine_vocab_size(const optiq_engine *e) { return e->info->vocab_size; }
int64_t optiq_engine_context(const optiq_engine *e) { return e->context; }
int optiq_engine_has_vision(const optiq_engine *e) { return e && e->vision != NULL; }
int optiq_engine_has_thinking(const optiq_engine *e) { return e && e->think.open != NULL; }

void optiq_engine_cache_stats(const optiq_engine *e, optiq_cache_stats *out) {
    memset(out, 0, sizeof *out);
    if (!e) return;
    prefix_cache_stats p;
    prefix_cache_get_stats(e->prefix, &p);
    out->prefix_hits = p.hits, out->prefix_misses = p.misses, out->prefix_tokens_reused = p.tokens_reused;
    out->prefix_evictions = p.evictions, out->prefix_bytes = p.bytes, out->prefix_entries = p.entries;
    out->prefix_max_bytes = p.max_bytes;
    if (e->vision) {
        vision_cache_stats v;
        vision_fe_cache_stats(e->vision, &v);
        out->vision_hits = v.hits, out->vision_misses = v.misses, out->vision_encoded = v.encoded;
        out->vision_bytes = v.bytes, out->vision_entries = v.entries, out->vision_max_bytes = v.max_bytes;
    }
}

optiq_status optiq_engine_image_tokens(const optiq_engine *e, const optiq_image *image, int64_t *tokens,
                                       optiq_error *err) {
    if (!e || !image || !tokens) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_engine_image_tokens: NULL argument");
    if (!e->vision)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "this model folder is text-only (no %s); it cannot take images",
                       MD_SIDECAR_NAME);
    return vision_fe_image_tokens(e->vision, image, tokens, err);
}

size_t optiq_engine_eos_ids(const optiq_engine *e, const int32_t **ids) {
    if (ids) *ids = e->eos;
    return e->n_eos;
}

static int is_eos(const optiq_engine *e, int32_t id) {
    for (size_t i = 0; i < e->n_eos; i++)
        if (e->eos[i] == id) return 1;
    return 0;
}

/* ---- sessions ------------------------------------------------------------ */

optiq_status optiq_session_new(optiq_engine *e, optiq_session **out, optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_session_new: no output handle");
    *out = NULL;
    if (!e) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_session_new: no engine");
    optiq_session *s = calloc(1, sizeof *s);
    if (!s) return nomem(err);
    s->e = e;
    size_t vocab = (size_t)e->info->vocab_size;
    s->cap_tokens = e->context < 1024 ? (size_t)e->context : 1024;
    s->tokens = malloc(s->cap_tokens * sizeof *s->tokens);
    s->logits = malloc(vocab * sizeof *s->logits);
    s->scratch = malloc(vocab * sizeof *s->scratch);
    optiq_status st = OPTIQ_OK;
    if (!s->tokens || !s->logits || !s->scratch) st = nomem(err);
    else st = lm_cache_new(e->model, e->context, &s->cache, err);
    if (st) {
        optiq_session_free(s);
        return st;
    }
    *out = s;
    return OPTIQ_OK;
}

/* The session's checkpoints from index k on go. */
static void drop_ckpts(optiq_session *s, size_t k) {
    for (size_t i = k; i < s->n_ckpts; i++) pc_ckpt_unref(s->e->prefix, s->ckpts[i]);
    if (k < s->n_ckpts) s->n_ckpts = k;
}

void optiq_session_free(optiq_session *s) {
    if (!s) return;
    drop_ckpts(s, 0);
    free(s->ckpts);
    free(s->spans);
    lm_cache_free(s->cache);
    free(s->tokens);
    free(s->logits);
    free(s->scratch);
    free(s->pos_buf);
    free(s->emb_buf);
    free(s->img_buf);
    free(s);
}

void optiq_session_reset(optiq_session *s) {
    if (!s) return;
    lm_cache_reset(s->cache);
    s->n_tokens = 0;
    s->has_logits = 0;
    s->pos_delta = 0;
    s->n_spans = 0;
    drop_ckpts(s, 0);
}

int64_t optiq_session_position(const optiq_session *s) { return s ? (int64_t)s->n_tokens : 0; }

/* Room for `need` tokens in the timeline; need <= context. */
static optiq_status reserve_tokens(optiq_session *s, size_t need, optiq_error *err) {
    if (need <= s->cap_tokens) return OPTIQ_OK;
    size_t cap = s->cap_tokens * 2 > need ? s->cap_tokens * 2 : need;
    if (cap > (size_t)s->e->context) cap = (size_t)s->e->context;
    int32_t *t = realloc(s->tokens, cap * sizeof *t);
    if (!t) return nomem(err);
    s->tokens = t;
    s->cap_tokens = cap;
    return OPTIQ_OK;
}

static optiq_status check_ids(const optiq_engine *e, const int32_t *ids, size_t n, optiq_error *err) {
    if (n && !ids) return err_set(err, OPTIQ_ERR_INVALID_ARG, "%zu tokens given but no token array", n);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->info->vocab_size)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "token id %d at %zu is outside the vocabulary (0..%lld)",
                           (int)ids[i], i, (long long)e->info->vocab_size - 1);
    return OPTIQ_OK;
}

/* ---- prefix reuse (runtime/prefix_cache.h) ----
 *
 * A session records where its images' soft tokens are (spans, for the keys)
 * and takes checkpoints of the model's tail state while it feeds prompts:
 * prefill chunks end at multiples of the cache's block, and a checkpoint is
 * taken there and at the end of each prompt. A finished generation offers
 * its whole state (prefix_offer); a generation on an empty session first
 * looks for the longest cached prefix of its prompt (prefix_resume). */

static optiq_status add_span(optiq_session *s, int64_t from, int64_t n, uint64_t hash, optiq_error *err) {
    if (s->n_spans == s->cap_spans) {
        size_t cap = s->cap_spans ? 2 * s->cap_spans : 8;
        img_span *t = realloc(s->spans, cap * sizeof *t);
        if (!t) return nomem(err);
        s->spans = t, s->cap_spans = cap;
    }
    s->spans[s->n_spans++] = (img_span){from, n, hash};
    return OPTIQ_OK;
}

/* Keys of timeline positions [0, n) (malloc'd; NULL when out of memory). */
static uint64_t *timeline_keys(const optiq_session *s, int64_t n) {
    uint64_t *k = malloc((size_t)(n ? n : 1) * sizeof *k);
    if (!k) return NULL;
    for (int64_t i = 0; i < n; i++) k[i] = (uint32_t)s->tokens[i];
    for (size_t j = 0; j < s->n_spans; j++)
        for (int64_t i = 0; i < s->spans[j].n && s->spans[j].from + i < n; i++)
            k[s->spans[j].from + i] = pc_image_key(s->spans[j].hash, i);
    return k;
}

/* A checkpoint at the cache position (none when one is there already, or
 * out of memory: checkpoints only save time). Past max_ckpts every other
 * one goes, so a long session keeps a bounded, thinning set. */
static void take_ckpt(optiq_session *s) {
    prefix_cache *pc = s->e->prefix;
    int64_t pos = lm_cache_pos(s->cache);
    if (!pc || pos < 1 || (s->n_ckpts && s->ckpts[s->n_ckpts - 1]->pos >= pos)) return;
    if (s->n_ckpts >= s->e->max_ckpts) {
        size_t k = 0;
        for (size_t i = 0; i < s->n_ckpts; i++) {
            if (i % 2 == 0) s->ckpts[k++] = s->ckpts[i];
            else pc_ckpt_unref(pc, s->ckpts[i]);
        }
        s->n_ckpts = k;
    }
    if (s->n_ckpts == s->cap_ckpts) {
        size_t cap = s->cap_ckpts ? 2 * s->cap_ckpts : 8;
        pc_ckpt **t = realloc(s->ckpts, cap * sizeof *t);
        if (!t) return;
        s->ckpts = t, s->cap_ckpts = cap;
    }
    pc_ckpt *k = prefix_cache_checkpoint(pc, s->cache);
    if (k) s->ckpts[s->n_ckpts++] = k;
}

/* Offer the session's evaluated timeline to the cache. */
static void prefix_offer(optiq_session *s) {
    int64_t pos = lm_cache_pos(s->cache);
    if (!s->e->prefix || pos < 1) return;
    take_ckpt(s);
    uint64_t *keys = timeline_keys(s, pos);
    if (keys) prefix_cache_insert(s->e->prefix, s->cache, keys, s->ckpts, s->n_ckpts);
    free(keys);
}

/* The session was empty and now holds a prompt of n_tokens: restore the
 * longest cached prefix (leaving at least the last token to run, for the
 * logits). Returns the position restored (0: none, the cache untouched). */
static int64_t prefix_resume(optiq_session *s) {
    int64_t n = (int64_t)s->n_tokens;
    if (!s->e->prefix || n < 2 || lm_cache_pos(s->cache) != 0) return 0;
    uint64_t *keys = timeline_keys(s, n);
    if (!keys) return 0;
    pc_ckpt **inh = NULL;
    size_t n_inh = 0;
    int64_t p = prefix_cache_restore(s->e->prefix, s->cache, keys, n, n - 1, &inh, &n_inh);
    free(keys);
    drop_ckpts(s, 0);
    if (p > 0 && n_inh > s->cap_ckpts) {
        pc_ckpt **t = realloc(s->ckpts, n_inh * sizeof *t);
        if (t) s->ckpts = t, s->cap_ckpts = n_inh;
    }
    for (size_t i = 0; i < n_inh; i++) {
        if (i < s->cap_ckpts) s->ckpts[s->n_ckpts++] = inh[i];
        else pc_ckpt_unref(s->e->prefix, inh[i]);
    }
    free(inh);
    return p;
}

/* A failure inside the model leaves caches we cannot trust (a recurrent
 * state may be half updated), so the session starts over and says so. */
static optiq_status fail_reset(optiq_session *s, optiq_status st, optiq_error *err) {
    optiq_session_reset(s);
    if (err) {
        size_t l = strlen(err->message);
        snprintf(err->message + l, sizeof err->message - l, " (the session was reset)");
    }
    return st;
}

/* One forward call over tokens [pos, pos + n) of the timeline (pos = cache
 * position). Positions: from seg when the tokens are in it, else the
 * timeline index + pos_delta on every axis (NULL, the model's default, when
 * pos_delta is 0). Embeddings: the lookup with seg's soft tokens at its
 * placeholders, when the tokens are in seg. */
static optiq_status forward(optiq_session *s, int64_t pos, int64_t n, mm_seg *seg, float *logits, optiq_error *err) {
    optiq_engine *e = s->e;
    lm_forward_args a = {.tokens = s->tokens + pos, .n = n, .logits = logits};
    int in_seg = seg && pos >= seg->from && pos < seg->from + seg->n;
    if ((in_seg || s->pos_delta) && n > s->buf_n) {
        int64_t H = e->info->hidden_size, k = n > e->prefill_chunk ? n : e->prefill_chunk;
        free(s->pos_buf), free(s->emb_buf), free(s->img_buf);
        s->pos_buf = malloc(3 * (size_t)k * sizeof *s->pos_buf);
        s->emb_buf = malloc((size_t)(k * H) * sizeof *s->emb_buf);
        s->img_buf = malloc((size_t)k);
        s->buf_n = s->pos_buf && s->emb_buf && s->img_buf ? k : 0;
        if (!s->buf_n) return nomem(err);
    }
    if (in_seg || s->pos_delta) {
        for (int64_t i = 0; i < n; i++)
            for (int ax = 0; ax < 3; ax++)
                s->pos_buf[ax * n + i] = in_seg ? seg->pos[ax * seg->n + (pos - seg->from) + i]
                                                : (int32_t)(pos + i + s->pos_delta);
        a.positions = s->pos_buf;
    }
    if (in_seg) {
        int64_t H = e->info->hidden_size;
        optiq_status st = lm_embed(e->model, s->tokens + pos, n, s->emb_buf, err);
        if (st) return st;
        for (int64_t i = 0; i < n; i++) {
            s->img_buf[i] = s->tokens[pos + i] == seg->image_pad;
            if (s->img_buf[i])
                memcpy(s->emb_buf + i * H, seg->feats + (seg->used++) * H, (size_t)H * sizeof *s->emb_buf);
        }
        a.embeds = s->emb_buf; /* image rows as the tower made them: not scaled like text embeddings */
        a.is_image = s->img_buf;
    }
    return lm_forward(e->model, s->cache, e->pool, &a, err);
}

/* Run the tokens the cache has not seen yet, tokens[pos .. n_tokens), in
 * chunks of prefill_chunk (not crossing the start or end of seg, nor
 * splitting an image's run); the logits of the last one land in s->logits.
 * feed_step runs one chunk (*done when the logits are ready, or when
 * stop_fn asked to stop: then the session is reset and aborted set).
 * split_last: run the last token on its own, as mlx-lm's generate_step does
 * (the prompt but its last token in chunks, then the last token produces the
 * first logits) — the reference fixtures were made that way, and a different
 * split changes the rounding of the attention sums. */
static optiq_status feed_step(optiq_session *s, int split_last, mm_seg *seg, int *done, optiq_error *err) {
    optiq_engine *e = s->e;
    int64_t pos = lm_cache_pos(s->cache), end = (int64_t)s->n_tokens;
    int64_t body_end = split_last ? end - 1 : end;
    *done = 0;
    if (pos >= end) {
        s->has_logits = 1;
        *done = 1;
        return OPTIQ_OK;
    }
    if (s->stop_fn && s->stop_fn(s->stop_user)) { /* the caller gave up: an empty, consistent session */
        optiq_session_reset(s);
        s->aborted = 1;
        *done = 1;
        return OPTIQ_OK;
    }
    int64_t stop = pos < body_end ? (body_end - pos > e->prefill_chunk ? pos + e->prefill_chunk : body_end) : end;
    if (e->prefix) { /* chunks end at the checkpoints' block boundaries */
        int64_t block = prefix_cache_block(e->prefix), b = (pos / block + 1) * block;
        if (b < stop) stop = b;
    }
    if (seg && pos < seg->from && stop > seg->from) stop = seg->from;
    if (seg && pos < seg->from + seg->n && stop > seg->from + seg->n) stop = seg->from + seg->n;
    /* one image's run of soft tokens stays in one call (it may attend both ways) */
    if (seg && stop > seg->from && stop < seg->from + seg->n)
        while (stop < seg->from + seg->n && s->tokens[stop] == seg->image_pad && s->tokens[stop - 1] == seg->image_pad)
            stop++;
    optiq_status st = forward(s, pos, stop - pos, seg, stop == end ? s->logits : NULL, err);
    if (st) return fail_reset(s, st, err);
    if (e->prefix && (stop % prefix_cache_block(e->prefix) == 0 || stop == body_end)) take_ckpt(s);
    if (stop == end) {
        s->has_logits = 1;
        *done = 1;
    }
    return OPTIQ_OK;
}

static optiq_status feed(optiq_session *s, int split_last, mm_seg *seg, optiq_error *err) {
    int done = 0;
    while (!done) {
        optiq_status st = feed_step(s, split_last, seg, &done, err);
        if (st) return st;
    }
    return OPTIQ_OK;
}

static optiq_status context_error(const optiq_session *s, size_t n, optiq_error *err) {
    return err_set(err, OPTIQ_ERR_CONTEXT, "prompt of %zu tokens does not fit the context of %lld tokens (%zu in use)",
                   n, (long long)s->e->context, s->n_tokens);
}

optiq_status optiq_session_eval(optiq_session *s, const int32_t *ids, size_t n, float *logits, optiq_error *err) {
    if (!s) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_session_eval: no session");
    optiq_status st = check_ids(s->e, ids, n, err);
    if (st) return st;
    if (n > (size_t)s->e->context - s->n_tokens) return context_error(s, n, err);
    if (n == 0 && s->n_tokens == 0)
        return logits ? err_set(err, OPTIQ_ERR_INVALID_ARG, "no tokens evaluated yet: there are no logits") : OPTIQ_OK;
    if ((st = reserve_tokens(s, s->n_tokens + n, err)) != OPTIQ_OK) return st;
    if (n) {
        memcpy(s->tokens + s->n_tokens, ids, n * sizeof *ids);
        s->n_tokens += n;
        s->has_logits = 0;
    }
    if (!s->has_logits && (st = feed(s, 0, NULL, err)) != OPTIQ_OK) return st;
    if (logits) memcpy(logits, s->logits, (size_t)s->e->info->vocab_size * sizeof *logits);
    return OPTIQ_OK;
}

/* ---- prompts with images ------------------------------------------------- */

/* A prompt with its images made ready: placeholders expanded, soft tokens
 * encoded, positions computed from the session's next text position. */
typedef struct mm_prompt {
    int32_t *ids;
    size_t n;
    int32_t *pos;  /* (3, n) */
    float *feats;
    int64_t next;  /* text position after the prompt */
    int64_t *per;  /* (n_images) soft tokens of each image */
    uint64_t *hashes; /* (n_images) each image's key (vision_fe_encode_keyed) */
    size_t n_images;
} mm_prompt;

static void mm_prompt_free(mm_prompt *p) {
    free(p->ids), free(p->pos), free(p->feats), free(p->per), free(p->hashes);
    memset(p, 0, sizeof *p);
}

/* Record the images' runs of a prompt placed at timeline position `at`
 * (image i's soft tokens: the next run of per[i] image tokens). */
static optiq_status mm_add_spans(optiq_session *s, int64_t at, const mm_prompt *p, optiq_error *err) {
    if (!s->e->prefix) return OPTIQ_OK;
    int32_t pad = vision_fe_tokens(s->e->vision)->image_pad;
    size_t c = 0, before = s->n_spans;
    for (size_t i = 0; i < p->n_images; i++) {
        while (c < p->n && p->ids[c] != pad) c++;
        if (c + (size_t)p->per[i] > p->n) break;
        optiq_status st = add_span(s, at + (int64_t)c, p->per[i], p->hashes[i], err);
        if (st) {
            s->n_spans = before; /* the prompt is not appended */
            return st;
        }
        c += (size_t)p->per[i];
    }
    return OPTIQ_OK;
}

static optiq_status mm_prepare(optiq_session *s, const int32_t *ids, size_t n, const optiq_image *images,
                               size_t n_images, size_t room, mm_prompt *out, optiq_error *err) {
    optiq_engine *e = s->e;
    memset(out, 0, sizeof *out);
    if (!e->vision)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                       "this model folder is text-only (no %s vision sidecar with a vision_config); it cannot take images",
                       MD_SIDECAR_NAME);
    if (n_images && !images) return err_set(err, OPTIQ_ERR_INVALID_ARG, "%zu images given but no image array", n_images);
    const mm_tokens *t = vision_fe_tokens(e->vision);
    int32_t *grid = malloc((n_images ? n_images : 1) * 3 * sizeof *grid);
    int64_t *per = malloc((n_images ? n_images : 1) * sizeof *per);
    out->hashes = malloc((n_images ? n_images : 1) * sizeof *out->hashes);
    out->per = per;
    out->n_images = n_images;
    optiq_status st = grid && per && out->hashes ? OPTIQ_OK : nomem(err);
    /* count placeholders first: a prompt without room for its images fails before the tower runs */
    size_t markers = 0;
    for (size_t i = 0; i < n; i++) markers += ids[i] == t->image_pad;
    if (!st && markers < n_images)
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "the prompt has %zu image placeholders for %zu images", markers,
                     n_images);
    if (!st && n_images)
        st = vision_fe_encode_keyed(e->vision, e->pool, images, n_images, &out->feats, grid, per, out->hashes, err);
    if (!st) st = mm_expand(t, ids, n, per, n_images, &out->ids, &out->n, err);
    if (!st && out->n > room)
        st = err_set(err, OPTIQ_ERR_CONTEXT,
                     "prompt of %zu tokens (images expanded) does not fit the context of %lld tokens (%zu in use)",
                     out->n, (long long)e->context, s->n_tokens);
    if (!st && !(out->pos = malloc((out->n ? out->n : 1) * 3 * sizeof *out->pos))) st = nomem(err);
    if (!st)
        st = mm_positions(t, out->ids, out->n, grid, n_images, (int64_t)s->n_tokens + s->pos_delta, out->pos,
                          &out->next, err);
    free(grid);
    if (st) mm_prompt_free(out);
    return st;
}

/* Append a prepared prompt to the timeline and feed it. */
static optiq_status mm_feed(optiq_session *s, mm_prompt *p, int split_last, optiq_error *err) {
    optiq_status st = mm_add_spans(s, (int64_t)s->n_tokens, p, err);
    if (st) return st;
    memcpy(s->tokens + s->n_tokens, p->ids, p->n * sizeof *p->ids);
    mm_seg seg = {.from = (int64_t)s->n_tokens, .n = (int64_t)p->n, .pos = p->pos, .feats = p->feats,
                  .image_pad = vision_fe_tokens(s->e->vision)->image_pad};
    s->n_tokens += p->n;
    s->has_logits = 0;
    st = feed(s, split_last, &seg, err);
    if (!st && !s->aborted) s->pos_delta = p->next - (int64_t)s->n_tokens;
    return st;
}

optiq_status optiq_session_eval_images(optiq_session *s, const int32_t *ids, size_t n, const optiq_image *images,
                                       size_t n_images, float *logits, optiq_error *err) {
    if (!s) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_session_eval_images: no session");
    optiq_status st = check_ids(s->e, ids, n, err);
    if (st) return st;
    if (n == 0 && n_images == 0) return optiq_session_eval(s, ids, 0, logits, err);
    mm_prompt p;
    if ((st = mm_prepare(s, ids, n, images, n_images, (size_t)s->e->context - s->n_tokens, &p, err)) != OPTIQ_OK)
        return st;
    /* (tokens the cache has not seen yet run first, as text, inside feed) */
    if (!(st = reserve_tokens(s, s->n_tokens + p.n, err))) st = mm_feed(s, &p, 0, err);
    mm_prompt_free(&p);
    if (!st && logits) memcpy(logits, s->logits, (size_t)s->e->info->vocab_size * sizeof *logits);
    return st;
}

/* ---- generation ---------------------------------------------------------- */

optiq_generate_params optiq_generate_default(void) {
    optiq_generate_params p;
    memset(&p, 0, sizeof p);
    p.sampling = optiq_sampling_default();
    p.max_tokens = 256;
    return p;
}

void optiq_generation_free(optiq_generation *g) {
    if (!g) return;
    free(g->tokens);
    free(g->text);
    free(g->reasoning);
    free(g->answer);
    free(g->logprobs);
    free(g->top_ids);
    free(g->top_logprobs);
    memset(g, 0, sizeof *g);
}

static optiq_status check_params(const optiq_generate_params *p, optiq_error *err) {
    const optiq_sampling *q = &p->sampling;
    if (p->max_tokens < 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "max_tokens %d is negative", p->max_tokens);
    if (p->n_stop && !p->stop) return err_set(err, OPTIQ_ERR_INVALID_ARG, "%zu stop strings but no array", p->n_stop);
    for (size_t i = 0; i < p->n_stop; i++)
        if (!p->stop[i]) return err_set(err, OPTIQ_ERR_INVALID_ARG, "stop string %zu is NULL", i);
    if (!(q->temperature >= 0) || !isfinite(q->temperature))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "temperature %g: expected a finite value >= 0", q->temperature);
    if (!(q->top_p >= 0 && q->top_p <= 1))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "top_p %g: expected 0..1", q->top_p);
    if (!(q->min_p >= 0 && q->min_p <= 1))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "min_p %g: expected 0..1", q->min_p);
    if (q->top_k < 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "top_k %d is negative", q->top_k);
    if (!(q->repetition_penalty >= 0) || !isfinite(q->repetition_penalty))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "repetition_penalty %g: expected a finite value >= 0",
                       q->repetition_penalty);
    if (!isfinite(q->presence_penalty) || !isfinite(q->frequency_penalty))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "presence/frequency penalties must be finite");
    if (p->logprobs && (p->top_logprobs < 0 || p->top_logprobs > OPTIQ_MAX_TOP_LOGPROBS))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "top_logprobs %d: expected 0..%d", p->top_logprobs,
                       OPTIQ_MAX_TOP_LOGPROBS);
    if (q->penalty_context < 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "penalty_context %d is negative", q->penalty_context);
    return OPTIQ_OK;
}

/* The state of one optiq_generate call: the output under construction and
 * the stop-string scanner. text[0 .. emitted) has gone to the callback. */
typedef struct gen {
    const optiq_generate_params *p;
    size_t max_stop;   /* longest stop string */
    int32_t *tokens;
    size_t n_tokens, cap_tokens;
    char *text;        /* NUL-terminated */
    size_t len, cap;
    size_t emitted;
    int cut;           /* a stop string was found: text ends before it */
} gen;

static int grow_text(gen *g, size_t add) {
    if (g->len + add + 1 <= g->cap) return 1;
    size_t cap = g->cap * 2 > g->len + add + 1 ? g->cap * 2 : g->len + add + 1;
    char *t = realloc(g->text, cap);
    if (!t) return 0;
    g->text = t;
    g->cap = cap;
    return 1;
}

/* Append a piece of text and cut at the first stop string it completes.
 * Occurrences wholly inside the older text were found before, so the scan
 * starts max_stop - 1 bytes before the new piece. */
static int add_text(gen *g, const char *piece, size_t n) {
    if (!n) return 1;
    if (!grow_text(g, n)) return 0;
    size_t old = g->len;
    memcpy(g->text + g->len, piece, n);
    g->len += n;
    g->text[g->len] = 0;
    size_t from = old + 1 > g->max_stop ? old + 1 - g->max_stop : 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < g->p->n_stop; i++) {
        size_t sl = strlen(g->p->stop[i]);
        if (!sl || sl > g->len - from) continue;
        const char *hit = memmem(g->text + from, g->len - from, g->p->stop[i], sl);
        if (hit && (size_t)(hit - g->text) < best) best = (size_t)(hit - g->text);
    }
    if (best != SIZE_MAX) {
        g->len = best;
        g->text[best] = 0;
        g->cut = 1;
    }
    return 1;
}

/* End of the text that is safe to stream: everything but the longest tail
 * that is the start of some stop string (held back until it is decided). */
static size_t safe_end(const gen *g) {
    size_t hold = 0;
    for (size_t i = 0; i < g->p->n_stop; i++) {
        size_t sl = strlen(g->p->stop[i]);
        size_t k = sl - (sl > 0);
        if (k > g->len) k = g->len;
        for (; k > hold; k--)
            if (!memcmp(g->text + g->len - k, g->p->stop[i], k)) break;
        if (k > hold) hold = k;
    }
    size_t end = g->len - hold;
    /* never split a character (only a stop string that is not UTF-8 could make us) */
    while (end > g->emitted && end < g->len && ((unsigned char)g->text[end] & 0xC0) == 0x80) end--;
    return end > g->emitted ? end : g->emitted;
}

/* Stream text[emitted .. end) for token id; returns the callback's verdict. */
static int emit(gen *g, int32_t id, size_t end) {
    size_t from = g->emitted;
    g->emitted = end;
    return g->p->on_token ? g->p->on_token(g->p->user, id, g->text + from, end - from) : 0;
}

static int add_token(gen *g, int32_t id) {
    if (g->n_tokens == g->cap_tokens) {
        size_t cap = g->cap_tokens * 2;
        int32_t *t = realloc(g->tokens, cap * sizeof *t);
        if (!t) return 0;
        g->tokens = t;
        g->cap_tokens = cap;
    }
    g->tokens[g->n_tokens++] = id;
    return 1;
}

/* out->reasoning / out->answer from the generated text (reasoning.h). */
static optiq_status split_reasoning(const optiq_engine *e, int in_reasoning, const char *text, size_t len,
                                    optiq_generation *out, optiq_error *err) {
    reasoning_split rs;
    reasoning_split_init(&rs, &e->think, in_reasoning);
    char *r = NULL, *a = NULL;
    size_t rl = 0, al = 0;
    int ok = 1;
    for (int pass = 0; ok && pass < 2; pass++) {
        ok = (pass ? reasoning_split_finish(&rs) : reasoning_split_feed(&rs, text, len)) == 0;
        if (!ok) break;
        char *r2 = realloc(r, rl + rs.reasoning_len + 1), *a2 = r2 ? realloc(a, al + rs.content_len + 1) : NULL;
        if (r2) r = r2;
        if (a2) a = a2;
        if (!r2 || !a2) {
            ok = 0;
            break;
        }
        memcpy(r + rl, rs.reasoning, rs.reasoning_len), rl += rs.reasoning_len, r[rl] = 0;
        memcpy(a + al, rs.content, rs.content_len), al += rs.content_len, a[al] = 0;
    }
    /* reasoning only when a block was opened (by the prompt or the text) */
    int opened = rs.opened;
    reasoning_split_free(&rs);
    if (!ok) {
        free(r), free(a);
        return nomem(err);
    }
    if (!opened) free(r), r = NULL;
    out->reasoning = r;
    out->answer = a;
    return OPTIQ_OK;
}

/* One generation as a state machine, so that optiq_generate can run it to
 * the end and a batch can interleave many: start (prompt appended, images
 * encoded) → prefill, one chunk per step → sample (stops decided, text
 * streamed) ⇄ forward of the sampled token (alone, or batched with other
 * runs' tokens) → finish (the result filled). */
typedef enum { RUN_PREFILL, RUN_SAMPLE, RUN_FORWARD, RUN_DONE } run_state;

typedef struct gen_run {
    optiq_session *s;
    optiq_generate_params p;  /* copied: the caller's stop strings must outlive the run */
    optiq_generation *out;
    run_state state;
    gen g;
    mm_prompt mp;
    mm_seg seg;
    int has_seg;
    sampler *sm;
    optiq_detokenizer *dt;
    size_t n_prompt;          /* after image expansion */
    int64_t cached;           /* prompt tokens restored from the prefix cache */
    int in_reasoning;
    const char *finish;
    int32_t last;             /* the token whose callback is still due at the end, or -1 */
    double t0, t_first;
    optiq_status status;      /* the first failure; the run is then done */
    optiq_error err;
    float *lp;                /* (cap_lp) with p.logprobs: each kept token's log-probability */
    int32_t *top_ids;         /* (cap_lp, top_logprobs) */
    float *top_lp;            /* (cap_lp, top_logprobs) */
    size_t cap_lp;
} gen_run;

static void run_free(gen_run *r) {
    if (!r) return;
    if (r->s) r->s->stop_fn = NULL;
    mm_prompt_free(&r->mp);
    optiq_detokenizer_free(r->dt);
    sampler_free(r->sm);
    free(r->lp), free(r->top_ids), free(r->top_lp);
    free(r->g.tokens);
    free(r->g.text);
    free(r);
}

static optiq_status run_fail(gen_run *r, optiq_status st) {
    r->status = st;
    r->state = RUN_DONE;
    if (r->s) r->s->stop_fn = NULL;
    return st;
}

/* Checks, buffers, the prompt appended to the session (images encoded). */
static optiq_status run_start(optiq_session *s, const int32_t *prompt, size_t n_prompt, const optiq_generate_params *p,
                              optiq_generation *out, gen_run **rout, optiq_error *err) {
    *rout = NULL;
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_generate: no output");
    memset(out, 0, sizeof *out);
    if (!s || !p) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_generate: no session or parameters");
    optiq_engine *e = s->e;
    optiq_status st = check_params(p, err);
    if (!st) st = check_ids(e, prompt, n_prompt, err);
    if (st) return st;
    if (n_prompt == 0 && s->n_tokens == 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "empty prompt and an empty session: nothing to continue from");
    /* Room for the prompt and the first generated token. */
    if (n_prompt >= (size_t)e->context - s->n_tokens)
        return err_set(err, OPTIQ_ERR_CONTEXT,
                       "prompt of %zu tokens does not fit the context of %lld tokens (%zu in use, 1 needed for "
                       "the reply)",
                       n_prompt, (long long)e->context, s->n_tokens);
    gen_run *r = calloc(1, sizeof *r);
    if (!r) return nomem(err);
    int was_empty = s->n_tokens == 0;
    r->s = s;
    r->p = *p;
    r->out = out;
    r->last = -1;
    r->t0 = now_seconds();
    gen *g = &r->g;
    g->p = &r->p;
    for (size_t i = 0; i < p->n_stop; i++)
        if (strlen(p->stop[i]) > g->max_stop) g->max_stop = strlen(p->stop[i]);
    g->cap_tokens = p->max_tokens && p->max_tokens < 256 ? (size_t)p->max_tokens : 256;
    g->cap = 1024;
    g->tokens = malloc(g->cap_tokens * sizeof *g->tokens);
    g->text = malloc(g->cap);
    r->sm = sampler_new(&p->sampling, e->info->vocab_size);
    if (!g->tokens || !g->text || !r->sm) st = nomem(err);
    if (!st) st = optiq_detokenizer_new(e->tok, 0, &r->dt, err);
    if (!st) st = reserve_tokens(s, s->n_tokens + n_prompt + 1, err);
    if (!st) g->text[0] = 0;
    if (!st && p->n_images) {
        /* the images expand the prompt: prepare it, then make room again */
        st = mm_prepare(s, prompt, n_prompt, p->images, p->n_images, (size_t)e->context - s->n_tokens - 1, &r->mp, err);
        if (!st) st = reserve_tokens(s, s->n_tokens + r->mp.n + 1, err);
        if (!st) st = mm_add_spans(s, (int64_t)s->n_tokens, &r->mp, err);
        if (!st) {
            n_prompt = r->mp.n;
            memcpy(s->tokens + s->n_tokens, r->mp.ids, r->mp.n * sizeof *r->mp.ids);
            r->seg = (mm_seg){.from = (int64_t)s->n_tokens, .n = (int64_t)r->mp.n, .pos = r->mp.pos,
                              .feats = r->mp.feats, .image_pad = vision_fe_tokens(e->vision)->image_pad};
            r->has_seg = 1;
            s->n_tokens += r->mp.n;
            s->has_logits = 0;
        }
    } else if (!st && n_prompt) {
        memcpy(s->tokens + s->n_tokens, prompt, n_prompt * sizeof *prompt);
        s->n_tokens += n_prompt;
        s->has_logits = 0;
    }
    if (st) {
        run_free(r);
        return st;
    }
    r->n_prompt = n_prompt;
    if (was_empty && (r->cached = prefix_resume(s)) > 0 && r->has_seg)
        for (int64_t i = r->seg.from; i < r->cached; i++) /* the soft tokens already in the restored state */
            r->seg.used += s->tokens[i] == r->seg.image_pad;
    s->stop_fn = p->should_stop;
    s->stop_user = p->user;
    s->aborted = 0;
    r->state = s->has_logits ? RUN_SAMPLE : RUN_PREFILL;
    if (r->state == RUN_SAMPLE) r->in_reasoning = reasoning_ids_open(&e->think, s->tokens, s->n_tokens);
    *rout = r;
    return OPTIQ_OK;
}

/* One prefill chunk. */
static void run_prefill_step(gen_run *r) {
    optiq_session *s = r->s;
    int done = 0;
    optiq_status st = feed_step(s, 1, r->has_seg ? &r->seg : NULL, &done, &r->err);
    if (st) {
        run_fail(r, st);
        return;
    }
    if (!done) return;
    s->stop_fn = NULL;
    if (s->aborted) { /* stopped during the prefill: no tokens, the session is empty */
        s->aborted = 0;
        r->finish = "abort";
        r->state = RUN_DONE;
        return;
    }
    if (r->has_seg) s->pos_delta = r->mp.next - (int64_t)s->n_tokens;
    r->in_reasoning = reasoning_ids_open(&s->e->think, s->tokens, s->n_tokens);
    r->state = RUN_SAMPLE;
}

/* The log-probability of token id and the top_logprobs most likely tokens
 * from the raw logits, at slot n_tokens of the run's arrays (mlx-lm's
 * logprobs = logits - logsumexp(logits), before any processor). */
static int record_logprobs(gen_run *r, const float *logits, size_t vocab, int32_t id) {
    size_t k = r->g.n_tokens, nt = (size_t)r->p.top_logprobs;
    if (k >= r->cap_lp) {
        size_t cap = r->cap_lp ? r->cap_lp * 2 : 64;
        float *lp = realloc(r->lp, cap * sizeof *lp);
        if (lp) r->lp = lp;
        int32_t *ti = nt ? realloc(r->top_ids, cap * nt * sizeof *ti) : NULL;
        if (ti) r->top_ids = ti;
        float *tl = nt ? realloc(r->top_lp, cap * nt * sizeof *tl) : NULL;
        if (tl) r->top_lp = tl;
        if (!lp || (nt && (!ti || !tl))) return 0;
        r->cap_lp = cap;
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (size_t i = 0; i < vocab; i++) sum += exp((double)logits[i] - (double)mx);
    float lse = mx + (float)log(sum);
    r->lp[k] = logits[id] - lse;
    if (!nt) return 1;
    int32_t *ti = r->top_ids + k * nt;
    float *tl = r->top_lp + k * nt;
    size_t have = 0;
    for (size_t i = 0; i < vocab; i++) { /* insertion into a sorted list of at most nt */
        float v = logits[i];
        if (have == nt && !(v > tl[nt - 1])) continue;
        size_t j = have < nt ? have++ : nt - 1;
        while (j > 0 && v > tl[j - 1]) tl[j] = tl[j - 1], ti[j] = ti[j - 1], j--;
        tl[j] = v;
        ti[j] = (int32_t)i;
    }
    for (size_t j = have; j < nt; j++) ti[j] = -1, tl[j] = -INFINITY;
    for (size_t j = 0; j < have; j++) tl[j] -= lse;
    return 1;
}

/* Sample from the session's logits: the token is kept and streamed, or a
 * stop condition ends the run; otherwise the token awaits its forward call. */
static void run_sample(gen_run *r) {
    optiq_session *s = r->s;
    optiq_engine *e = s->e;
    gen *g = &r->g;
    optiq_status st;
    size_t vocab = (size_t)e->info->vocab_size;
    memcpy(s->scratch, s->logits, vocab * sizeof *s->scratch);
    if (r->p.process_logits && r->p.process_logits(r->p.user, s->scratch, (int64_t)vocab)) {
        run_fail(r, err_set(&r->err, OPTIQ_ERR_INVALID_ARG, "the logits processor allows no token to follow"));
        return;
    }
    int32_t id = sampler_sample(r->sm, s->scratch, s->tokens, s->n_tokens);
    if (g->n_tokens == 0) r->t_first = now_seconds();
    if (r->p.logprobs && !record_logprobs(r, s->logits, vocab, id)) {
        run_fail(r, nomem(&r->err));
        return;
    }
    if (r->p.on_sampled) {
        size_t k = g->n_tokens, nt = (size_t)r->p.top_logprobs;
        optiq_token_logprobs lp = {0};
        if (r->p.logprobs)
            lp = (optiq_token_logprobs){r->lp[k], (int)nt, nt ? r->top_ids + k * nt : NULL, nt ? r->top_lp + k * nt : NULL};
        r->p.on_sampled(r->p.user, id, r->p.logprobs ? &lp : NULL);
    }
    if (!r->p.ignore_eos && is_eos(e, id)) {
        r->finish = "stop";
        r->state = RUN_DONE;
        return;
    }
    if ((st = reserve_tokens(s, s->n_tokens + 1, &r->err)) != OPTIQ_OK) {
        run_fail(r, st);
        return;
    }
    if (!add_token(g, id)) {
        run_fail(r, nomem(&r->err));
        return;
    }
    s->tokens[s->n_tokens++] = id;
    s->has_logits = 0;
    const char *piece;
    size_t plen;
    if ((st = optiq_detokenizer_push(r->dt, id, &piece, &plen, &r->err)) != OPTIQ_OK) {
        run_fail(r, st);
        return;
    }
    if (!add_text(g, piece, plen)) {
        run_fail(r, nomem(&r->err));
        return;
    }
    if (g->cut) {
        r->finish = "stop";
        emit(g, id, g->len);
        r->state = RUN_DONE;
        return;
    }
    if ((r->p.max_tokens && g->n_tokens == (size_t)r->p.max_tokens) || s->n_tokens == (size_t)e->context) {
        r->finish = "length";
        r->last = id;
        r->state = RUN_DONE;
        return;
    }
    if (emit(g, id, safe_end(g))) {
        r->finish = "abort";
        r->state = RUN_DONE;
        return;
    }
    r->state = RUN_FORWARD;
}

/* The forward call of the sampled token, alone. */
static void run_forward(gen_run *r) {
    optiq_session *s = r->s;
    optiq_status st = forward(s, (int64_t)s->n_tokens - 1, 1, NULL, s->logits, &r->err);
    if (st) {
        fail_reset(s, st, &r->err);
        run_fail(r, st);
        return;
    }
    s->has_logits = 1;
    r->state = RUN_SAMPLE;
}

/* The result of a finished run (also of one stopped during its prefill). */
static optiq_status run_finish(gen_run *r) {
    if (r->status) return r->status;
    optiq_session *s = r->s;
    gen *g = &r->g;
    optiq_generation *out = r->out;
    optiq_status st;
    if (!r->t_first) r->t_first = now_seconds();
    /* The text the detokenizer still held, then whatever was held back for
     * a possible stop string: it is final now. */
    if (!g->cut && g->n_tokens) {
        const char *piece;
        size_t plen;
        if ((st = optiq_detokenizer_finish(r->dt, &piece, &plen, &r->err)) != OPTIQ_OK) return run_fail(r, st);
        if (!add_text(g, piece, plen)) return run_fail(r, nomem(&r->err));
        if (g->cut && strcmp(r->finish, "abort") != 0) r->finish = "stop";
    }
    if (r->last >= 0) emit(g, r->last, g->len);
    else if (strcmp(r->finish, "abort") != 0 && g->len > g->emitted) emit(g, -1, g->len);
    double t_end = now_seconds();
    if ((st = split_reasoning(s->e, r->in_reasoning, g->text, g->len, out, &r->err)) != OPTIQ_OK)
        return run_fail(r, st);
    out->tokens = g->tokens;
    out->n_tokens = g->n_tokens;
    out->text = g->text;
    out->text_len = g->len;
    out->finish_reason = r->finish;
    out->prompt_tokens = (int64_t)r->n_prompt;
    out->cached_tokens = r->cached;
    if (r->p.logprobs) { /* the arrays of the kept tokens (a stopping EOS was recorded last: dropped) */
        out->logprobs = r->lp, out->top_ids = r->top_ids, out->top_logprobs = r->top_lp;
        out->n_top = r->p.top_logprobs;
        r->lp = NULL, r->top_ids = NULL, r->top_lp = NULL;
    }
    out->prefill_seconds = r->t_first - r->t0;
    out->decode_seconds = t_end - r->t_first;
    g->tokens = NULL;
    g->text = NULL;
    prefix_offer(s);
    return OPTIQ_OK;
}

optiq_status optiq_generate(optiq_session *s, const int32_t *prompt, size_t n_prompt, const optiq_generate_params *p,
                            optiq_generation *out, optiq_error *err) {
    gen_run *r = NULL;
    optiq_status st = run_start(s, prompt, n_prompt, p, out, &r, err);
    if (st) return st;
    while (r->state != RUN_DONE) {
        if (r->state == RUN_PREFILL) run_prefill_step(r);
        else if (r->state == RUN_SAMPLE) run_sample(r);
        else run_forward(r);
    }
    st = run_finish(r);
    if (st && err) *err = r->err;
    run_free(r);
    return st;
}

/* ---- batches --------------------------------------------------------------- */

struct optiq_batch {
    optiq_engine *e;
    gen_run **runs;           /* (cap) active runs, in arrival order */
    size_t n, cap;
    lm_cache **caches;        /* (cap) scratch for one batched step */
    int32_t *ids;
    float *logits;            /* (cap, vocab) */
};

optiq_status optiq_batch_new(optiq_engine *e, size_t max_sequences, optiq_batch **out, optiq_error *err) {
    *out = NULL;
    if (!e || max_sequences < 1 || max_sequences > 4096)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_new: an engine and 1..4096 sequences are needed");
    optiq_batch *b = calloc(1, sizeof *b);
    if (!b) return nomem(err);
    b->e = e;
    b->cap = max_sequences;
    b->runs = calloc(max_sequences, sizeof *b->runs);
    b->caches = calloc(max_sequences, sizeof *b->caches);
    b->ids = calloc(max_sequences, sizeof *b->ids);
    b->logits = malloc(max_sequences * (size_t)e->info->vocab_size * sizeof *b->logits);
    if (!b->runs || !b->caches || !b->ids || !b->logits) {
        optiq_batch_free(b);
        return nomem(err);
    }
    *out = b;
    return OPTIQ_OK;
}

void optiq_batch_free(optiq_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) run_free(b->runs[i]);
    free(b->runs), free(b->caches), free(b->ids), free(b->logits);
    free(b);
}

size_t optiq_batch_size(const optiq_batch *b) { return b ? b->n : 0; }

optiq_status optiq_batch_add(optiq_batch *b, optiq_session *s, const int32_t *prompt, size_t n_prompt,
                             const optiq_generate_params *p, optiq_generation *out, optiq_error *err) {
    if (!b) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_add: no batch");
    if (b->n == b->cap) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_add: the batch is full (%zu)", b->cap);
    if (s && s->e != b->e) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_add: session of another engine");
    for (size_t i = 0; s && i < b->n; i++)
        if (b->runs[i]->s == s) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_add: the session is busy");
    gen_run *r = NULL;
    optiq_status st = run_start(s, prompt, n_prompt, p, out, &r, err);
    if (st) return st;
    b->runs[b->n++] = r;
    return OPTIQ_OK;
}

/* A finished run: its result, the callback, out of the batch. */
static void batch_retire(optiq_batch *b, size_t i) {
    gen_run *r = b->runs[i];
    optiq_status st = run_finish(r);
    if (r->p.on_done) r->p.on_done(r->p.user, st, st ? r->err.message : NULL);
    run_free(r);
    memmove(b->runs + i, b->runs + i + 1, (b->n - i - 1) * sizeof *b->runs);
    b->n--;
}

optiq_status optiq_batch_step(optiq_batch *b, optiq_error *err) {
    if (!b) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_batch_step: no batch");
    /* one prefill chunk, for the oldest run still prefilling: new prompts
     * move on while the others keep decoding */
    for (size_t i = 0; i < b->n; i++)
        if (b->runs[i]->state == RUN_PREFILL) {
            run_prefill_step(b->runs[i]);
            break;
        }
    for (size_t i = 0; i < b->n; i++)
        if (b->runs[i]->state == RUN_SAMPLE) run_sample(b->runs[i]);
    /* every sampled token in one forward call: the weights are read once */
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        gen_run *r = b->runs[i];
        if (r->state != RUN_FORWARD) continue;
        r->s->cache->rope_delta = r->s->pos_delta; /* text decoding after images (multimodal RoPE) */
        b->caches[k] = r->s->cache;
        b->ids[k] = r->s->tokens[r->s->n_tokens - 1];
        k++;
    }
    if (k == 1) {
        for (size_t i = 0; i < b->n; i++)
            if (b->runs[i]->state == RUN_FORWARD) run_forward(b->runs[i]);
    } else if (k > 1) {
        optiq_error ferr = {0};
        optiq_status st = lm_forward_batch(b->e->model, b->caches, b->ids, (int64_t)k, b->e->pool, b->logits, &ferr);
        size_t j = 0, vocab = (size_t)b->e->info->vocab_size;
        for (size_t i = 0; i < b->n; i++) {
            gen_run *r = b->runs[i];
            if (r->state != RUN_FORWARD) continue;
            if (st) {
                r->err = ferr;
                fail_reset(r->s, st, &r->err);
                run_fail(r, st);
            } else {
                memcpy(r->s->logits, b->logits + j * vocab, vocab * sizeof *b->logits);
                r->s->has_logits = 1;
                r->state = RUN_SAMPLE;
            }
            j++;
        }
    }
    for (size_t i = 0; i < b->n;) {
        if (b->runs[i]->state == RUN_DONE) batch_retire(b, i);
        else i++;
    }
    return OPTIQ_OK;
}

/* ---- dump ---------------------------------------------------------------- */

typedef struct dump_ctx {
    float *hidden;    /* (n_stages, n, hidden_size) */
    int64_t n, hidden_size;
    int n_stages;
    unsigned char *seen;
    int bad_stage;    /* first stage reported with the wrong shape, or -1 */
} dump_ctx;

static void dump_hidden(void *user, int stage, const float *h, int64_t n, int64_t hidden) {
    dump_ctx *d = user;
    if (stage < 0 || stage >= d->n_stages || n != d->n || hidden != d->hidden_size) {
        if (d->bad_stage < 0) d->bad_stage = stage;
        return;
    }
    memcpy(d->hidden + (size_t)stage * (size_t)n * (size_t)hidden, h, (size_t)n * (size_t)hidden * sizeof *h);
    d->seen[stage] = 1;
}

/* The images' part of a dump: expanded ids, positions, pixel values, soft
 * tokens and merged embeddings (all malloc'd into the fields). */
typedef struct dump_mm {
    int32_t *ids, *pos, grid[3 * 64];
    size_t n;
    float *pixels, *feats, *embeds;
    uint8_t *is_image;
    int64_t n_patches, patch_dim, n_feats;
} dump_mm;

static void dump_mm_free(dump_mm *m) {
    free(m->ids), free(m->pos), free(m->pixels), free(m->feats), free(m->embeds), free(m->is_image);
}

static optiq_status dump_prepare(optiq_engine *e, const int32_t *ids, size_t n, const optiq_image *images,
                                 size_t n_images, dump_mm *m, optiq_error *err) {
    if (!e->vision)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "this model folder is text-only (no %s); it cannot take images",
                       MD_SIDECAR_NAME);
    if (n_images > 64) return err_set(err, OPTIQ_ERR_INVALID_ARG, "dump: at most 64 images (%zu given)", n_images);
    const mm_tokens *t = vision_fe_tokens(e->vision);
    int64_t per[64];
    optiq_status st = vision_fe_pixels(e->vision, images, n_images, &m->pixels, &m->n_patches, &m->patch_dim, m->grid, err);
    if (!st)
        st = vision_fe_encode_pixels(e->vision, e->pool, m->pixels, m->n_patches, m->grid, n_images, &m->feats, per, err);
    if (!st) st = mm_expand(t, ids, n, per, n_images, &m->ids, &m->n, err);
    for (size_t i = 0; i < n_images; i++) m->n_feats += per[i];
    if (!st && (int64_t)m->n > e->info->max_position)
        st = err_set(err, OPTIQ_ERR_CONTEXT, "prompt of %zu tokens (images expanded) does not fit the context of %lld tokens",
                     m->n, (long long)e->info->max_position);
    int64_t next = 0, H = e->info->hidden_size;
    if (!st && (!(m->pos = malloc(3 * m->n * sizeof *m->pos)) ||
                !(m->embeds = malloc(m->n * (size_t)H * sizeof *m->embeds)) || !(m->is_image = malloc(m->n))))
        st = nomem(err);
    if (!st) st = mm_positions(t, m->ids, m->n, m->grid, n_images, 0, m->pos, &next, err);
    if (!st) st = lm_embed(e->model, m->ids, (int64_t)m->n, m->embeds, err);
    for (size_t i = 0, k = 0; !st && i < m->n; i++) {
        m->is_image[i] = m->ids[i] == t->image_pad;
        if (m->is_image[i]) memcpy(m->embeds + i * (size_t)H, m->feats + (k++) * (size_t)H, (size_t)H * sizeof(float));
    }
    return st;
}

optiq_status optiq_dump(optiq_engine *e, const int32_t *ids, size_t n, const char *path, optiq_error *err) {
    return optiq_dump_images(e, ids, n, NULL, 0, path, err);
}

optiq_status optiq_dump_images(optiq_engine *e, const int32_t *ids, size_t n, const optiq_image *images,
                               size_t n_images, const char *path, optiq_error *err) {
    if (!e || !path) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_dump: no engine or path");
    if (n == 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_dump: no tokens");
    if (n_images && !images) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_dump: %zu images but no array", n_images);
    optiq_status st = check_ids(e, ids, n, err);
    if (st) return st;
    dump_mm mm = {0};
    if (n_images) {
        if ((st = dump_prepare(e, ids, n, images, n_images, &mm, err)) != OPTIQ_OK) {
            dump_mm_free(&mm);
            return st;
        }
        ids = mm.ids;
        n = mm.n;
    }
    const lm_info *info = e->info;
    if ((int64_t)n > info->max_position) {
        dump_mm_free(&mm);
        return err_set(err, OPTIQ_ERR_CONTEXT, "prompt of %zu tokens does not fit the context of %lld tokens (0 in use)",
                       n, (long long)info->max_position);
    }
    dump_ctx d = {.n = (int64_t)n, .hidden_size = info->hidden_size, .n_stages = info->n_layers + 2, .bad_stage = -1};
    size_t n_hidden = (size_t)d.n_stages * n, n_logits = n;
    if (n_hidden > SIZE_MAX / sizeof(float) / (size_t)info->hidden_size ||
        n_logits > SIZE_MAX / sizeof(float) / (size_t)info->vocab_size) {
        dump_mm_free(&mm);
        return nomem(err);
    }
    d.hidden = malloc(n_hidden * (size_t)info->hidden_size * sizeof(float));
    d.seen = calloc((size_t)d.n_stages, 1);
    float *logits = malloc(n_logits * (size_t)info->vocab_size * sizeof(float));
    lm_cache *cache = NULL;
    st_writer *w = NULL;
    if (!d.hidden || !d.seen || !logits) {
        st = nomem(err);
        goto done;
    }
    if ((st = lm_cache_new(e->model, (int64_t)n, &cache, err)) != OPTIQ_OK) goto done;
    lm_forward_args a = {.tokens = ids, .embeds = n_images ? mm.embeds : NULL, .positions = mm.pos,
                         .n = (int64_t)n, .logits = logits, .logits_all = 1, .on_hidden = dump_hidden, .hidden_user = &d,
                         .is_image = n_images ? mm.is_image : NULL};
    if ((st = lm_forward(e->model, cache, e->pool, &a, err)) != OPTIQ_OK) goto done;
    if (d.bad_stage >= 0) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "dump: hidden states of stage %d reported with an unexpected shape",
                     d.bad_stage);
        goto done;
    }
    for (int i = 0; i < d.n_stages; i++)
        if (!d.seen[i]) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "dump: the model reported no hidden states for stage %d of 0..%d", i,
                         d.n_stages - 1);
            goto done;
        }
    if (!(w = st_writer_new())) {
        st = nomem(err);
        goto done;
    }
    int64_t tshape[1] = {(int64_t)n};
    int64_t hshape[3] = {d.n_stages, (int64_t)n, info->hidden_size};
    int64_t lshape[2] = {(int64_t)n, info->vocab_size};
    if (!(st = st_writer_add(w, "tokens", DT_I32, 1, tshape, ids, err)) &&
        !(st = st_writer_add(w, "hidden", DT_F32, 3, hshape, d.hidden, err)) &&
        !(st = st_writer_add(w, "logits", DT_F32, 2, lshape, logits, err)) &&
        !(st = st_writer_metadata(w, "model_type", info->model_type ? info->model_type : "", err)) && n_images) {
        int64_t pshape[2] = {mm.n_patches, mm.patch_dim}, gshape[2] = {(int64_t)n_images, 3};
        int64_t vshape[2] = {mm.n_feats, info->hidden_size}, eshape[2] = {(int64_t)n, info->hidden_size};
        int64_t qshape[2] = {3, (int64_t)n};
        if (!(st = st_writer_add(w, "pixel_values", DT_F32, 2, pshape, mm.pixels, err)) &&
            !(st = st_writer_add(w, "grid_thw", DT_I32, 2, gshape, mm.grid, err)) &&
            !(st = st_writer_add(w, "vision", DT_F32, 2, vshape, mm.feats, err)) &&
            !(st = st_writer_add(w, "embeds", DT_F32, 2, eshape, mm.embeds, err)))
            st = st_writer_add(w, "positions", DT_I32, 2, qshape, mm.pos, err);
    }
    if (!st) st = st_writer_save(w, path, err);
done:
    st_writer_free(w);
    lm_cache_free(cache);
    free(logits);
    free(d.seen);
    free(d.hidden);
    dump_mm_free(&mm);
    return st;
}
