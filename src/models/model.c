/*
 * model.c — the family registry and the lm_* dispatch (see model.h).
 */
#include "models/model.h"

#include <stdlib.h>
#include <string.h>

extern const lm_ops qwen3_5_ops;
extern const lm_ops gemma4_ops;

static const lm_ops *const FAMILIES[] = {&qwen3_5_ops, &gemma4_ops};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

const lm_ops *lm_find_family(const char *model_type) {
    if (!model_type) return NULL;
    for (size_t f = 0; f < N_FAMILIES; f++)
        for (const char *const *t = FAMILIES[f]->model_types; *t; t++)
            if (!strcmp(*t, model_type)) return FAMILIES[f];
    return NULL;
}

const char *lm_known_model_types(void) {
    static char buf[256];
    if (!buf[0]) {
        size_t n = 0;
        for (size_t f = 0; f < N_FAMILIES; f++)
            for (const char *const *t = FAMILIES[f]->model_types; *t; t++) {
                size_t l = strlen(*t);
                if (n + l + 3 >= sizeof buf) break;
                if (n) { memcpy(buf + n, ", ", 2); n += 2; }
                memcpy(buf + n, *t, l);
                n += l;
            }
        buf[n] = 0;
    }
    return buf;
}

optiq_status lm_load_dir(model_dir *md, lm_model **out, optiq_error *err) {
    *out = NULL;
    const char *type = model_dir_model_type(md);
    const lm_ops *ops = lm_find_family(type);
    if (!ops) {
        optiq_status st = err_set(err, OPTIQ_ERR_UNSUPPORTED,
                                  "%s: model_type \"%s\" is not supported (supported: %s)",
                                  model_dir_config_path(md), type ? type : "", lm_known_model_types());
        model_dir_close(md);
        return st;
    }
    return ops->load(md, out, err);
}

optiq_status lm_load(const char *dir, lm_model **out, optiq_error *err) {
    *out = NULL;
    model_dir *md = NULL;
    optiq_status st = model_dir_open(dir, &md, err);
    if (st) return st;
    return lm_load_dir(md, out, err);
}

void lm_free(lm_model *m) {
    if (m) m->ops->free(m);
}

const lm_info *lm_get_info(const lm_model *m) { return &m->info; }
void lm_set_exact(lm_model *m, int exact) { m->exact = exact != 0; }
model_dir *lm_model_dir(const lm_model *m) { return m->md; }

optiq_status lm_cache_new(const lm_model *m, int64_t capacity, lm_cache **out, optiq_error *err) {
    *out = NULL;
    if (capacity < 1 || capacity > m->info.max_position)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "context of %lld tokens: the model supports 1 to %lld",
                       (long long)capacity, (long long)m->info.max_position);
    return m->ops->cache_new(m, capacity, out, err);
}

void lm_cache_free(lm_cache *c) {
    if (c) c->model->ops->cache_free(c);
}

void lm_cache_reset(lm_cache *c) { c->model->ops->cache_reset(c); }

optiq_status lm_forward(const lm_model *m, lm_cache *c, thread_pool *pool, const lm_forward_args *a,
                        optiq_error *err) {
    if (a->n < 1 || (!a->tokens && !a->embeds))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward: no tokens");
    if (c->model != m) return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward: cache belongs to another model");
    if (a->n > c->capacity - c->pos)
        return err_set(err, OPTIQ_ERR_CONTEXT,
                       "%lld tokens do not fit: %lld of the context's %lld tokens are in use",
                       (long long)a->n, (long long)c->pos, (long long)c->capacity);
    if (a->tokens && !a->embeds)
        for (int64_t i = 0; i < a->n; i++)
            if (a->tokens[i] < 0 || a->tokens[i] >= m->info.vocab_size)
                return err_set(err, OPTIQ_ERR_INVALID_ARG, "token id %d at %lld is outside the vocabulary (0..%lld)",
                               (int)a->tokens[i], (long long)i, (long long)m->info.vocab_size - 1);
    return m->ops->forward(m, c, pool, a, err);
}

optiq_status lm_embed(const lm_model *m, const int32_t *ids, int64_t n, float *out, optiq_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->info.vocab_size)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "token id %d is outside the vocabulary (0..%lld)",
                           (int)ids[i], (long long)m->info.vocab_size - 1);
    return m->ops->embed(m, ids, n, out, err);
}

uint64_t lm_decode_bytes(const lm_model *m) { return m->ops->decode_bytes ? m->ops->decode_bytes(m) : 0; }

cJSON *lm_describe(const model_dir *md, optiq_error *err) {
    const char *type = model_dir_model_type(md);
    const lm_ops *ops = lm_find_family(type);
    if (!ops) {
        err_set(err, OPTIQ_ERR_UNSUPPORTED, "model_type \"%s\" is not supported (supported: %s)", type ? type : "",
                lm_known_model_types());
        return NULL;
    }
    return ops->describe(md, err);
}

optiq_status lm_forward_batch(const lm_model *m, lm_cache *const *caches, const int32_t *tokens, int64_t n,
                              thread_pool *pool, float *logits, optiq_error *err) {
    if (n < 1 || !caches || !tokens || !logits) return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward_batch: no sequences");
    for (int64_t i = 0; i < n; i++) {
        if (!caches[i] || caches[i]->model != m)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward_batch: cache %lld belongs to another model", (long long)i);
        for (int64_t j = 0; j < i; j++)
            if (caches[j] == caches[i])
                return err_set(err, OPTIQ_ERR_INVALID_ARG, "forward_batch: cache %lld appears twice", (long long)i);
        if (caches[i]->pos >= caches[i]->capacity)
            return err_set(err, OPTIQ_ERR_CONTEXT, "forward_batch: sequence %lld is full (%lld tokens)", (long long)i,
                           (long long)caches[i]->capacity);
        if (tokens[i] < 0 || tokens[i] >= m->info.vocab_size)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "token id %d of sequence %lld is outside the vocabulary",
                           (int)tokens[i], (long long)i);
    }
    if (m->ops->forward_batch) return m->ops->forward_batch(m, caches, tokens, n, pool, logits, err);
    for (int64_t i = 0; i < n; i++) {
        lm_forward_args a = {.tokens = tokens + i, .n = 1, .logits = logits + i * m->info.vocab_size};
        optiq_status st = lm_forward(m, caches[i], pool, &a, err);
        if (st) return st;
    }
    return OPTIQ_OK;
}
