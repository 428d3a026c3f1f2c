/*
 * binding.c — what language bindings (python/optiq) need beyond the rest of
 * the API: chat messages to prompt token ids with an engine's own template
 * (optiq_engine_render_prompt), and the sizes of the public structures
 * (optiq_struct_size), so that a binding that declares them itself (ctypes)
 * can refuse a library whose layout it does not know.
 *
 * optiq_engine_render_prompt:
 * The steps are those `optiq generate` and `optiq serve` take before they
 * call optiq_generate: the template options start from
 * add_generation_prompt = true and enable_thinking = (no images and the
 * vocabulary has thinking markers, as mlx-lm's server and mlx-vlm set it),
 * the caller's options win; the folder's chat template renders the messages
 * (optiq_chat_template_render) and the text is encoded without adding
 * special tokens (the template writes them), as mlx-lm does. Besides the ids
 * the caller gets the image sources of the messages' image parts in order,
 * so that it can hand them to optiq_generate as optiq_image entries.
 *
 * Renders are serialized by one process-wide lock: the template evaluator
 * shares reference-counted values of a parsed template between renders
 * without atomics (the server takes the same precaution around its renders).
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "optiq.h"

static pthread_mutex_t render_mu = PTHREAD_MUTEX_INITIALIZER;

static optiq_status nomem(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); }

static int type_is(const cJSON *part, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

/* The source an image part names: {"type": "image_url", "image_url": U or {"url": U}},
 * {"type": "image", "image": U} or {"type": "image", "url": U}; NULL for a bare
 * {"type": "image"} (the caller supplies that image). *bad when the part has a
 * source key that is not a string. */
static const char *image_source(const cJSON *part, int *bad) {
    const cJSON *v = NULL;
    *bad = 0;
    if (type_is(part, "image_url")) {
        v = cJSON_GetObjectItemCaseSensitive(part, "image_url");
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "url");
        if (!cJSON_IsString(v)) *bad = 1;
    } else {
        v = cJSON_GetObjectItemCaseSensitive(part, "image");
        if (!v || cJSON_IsNull(v)) v = cJSON_GetObjectItemCaseSensitive(part, "url");
        if (!v || cJSON_IsNull(v)) return NULL;
        if (!cJSON_IsString(v)) *bad = 1;
    }
    return *bad ? NULL : v->valuestring;
}

/* out->images from the image parts of the messages, in order. */
static optiq_status collect_images(const cJSON *messages, optiq_prompt *out, optiq_error *err) {
    size_t cap = 0, mi = 0;
    for (const cJSON *m = messages->child; m; m = m->next, mi++) {
        const cJSON *content = cJSON_IsObject(m) ? cJSON_GetObjectItemCaseSensitive(m, "content") : NULL;
        if (!cJSON_IsArray(content)) continue; /* the template reports malformed messages itself */
        size_t pi = 0;
        for (const cJSON *p = content->child; p; p = p->next, pi++) {
            if (!cJSON_IsObject(p) || !(type_is(p, "image_url") || type_is(p, "image"))) continue;
            int bad;
            const char *src = image_source(p, &bad);
            if (bad)
                return err_set(err, OPTIQ_ERR_INVALID_ARG,
                               "messages[%zu].content[%zu]: the image source is not a string (expected a path, a "
                               "data: URL or an http(s) URL)",
                               mi, pi);
            if (out->n_images == cap) {
                size_t nc = cap ? 2 * cap : 4;
                char **g = realloc(out->images, nc * sizeof *g);
                if (!g) return nomem(err);
                out->images = g;
                cap = nc;
            }
            out->images[out->n_images] = NULL;
            if (src && !(out->images[out->n_images] = strdup(src))) return nomem(err);
            out->n_images++;
        }
    }
    return OPTIQ_OK;
}

/* The options the template renders with: the defaults, then the caller's keys. */
static optiq_status build_options(const optiq_engine *e, size_t n_images, const char *options_json, char **out,
                                  optiq_error *err) {
    cJSON *user = NULL;
    if (options_json && *options_json) {
        user = cJSON_Parse(options_json);
        if (!cJSON_IsObject(user)) {
            cJSON_Delete(user);
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "options: expected a JSON object");
        }
    }
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddBoolToObject(o, "add_generation_prompt", 1) &&
             cJSON_AddBoolToObject(o, "enable_thinking", !n_images && optiq_engine_has_thinking(e));
    for (cJSON *it = user ? user->child : NULL; ok && it; it = it->next) {
        cJSON *dup = cJSON_Duplicate(it, 1);
        if (!dup) ok = 0;
        else if (cJSON_HasObjectItem(o, it->string)) ok = cJSON_ReplaceItemInObjectCaseSensitive(o, it->string, dup);
        else ok = cJSON_AddItemToObject(o, it->string, dup);
    }
    *out = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    cJSON_Delete(user);
    return *out ? OPTIQ_OK : nomem(err);
}

optiq_status optiq_engine_render_prompt(const optiq_engine *e, const char *messages_json, size_t messages_len,
                                        const char *options_json, optiq_prompt *out, optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_engine_render_prompt: NULL argument");
    memset(out, 0, sizeof *out);
    if (!e || !messages_json) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_engine_render_prompt: NULL argument");
    const optiq_chat_template *t = optiq_engine_chat_template(e);
    if (!t)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                       "the model folder has no chat template (chat_template.jinja, chat_template.json or "
                       "tokenizer_config.json's chat_template): encode the prompt text instead");
    cJSON *doc = cJSON_ParseWithLength(messages_json, messages_len);
    const cJSON *messages = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "messages") : doc;
    optiq_status st = OPTIQ_OK;
    char *opts = NULL;
    if (!doc) st = err_set(err, OPTIQ_ERR_INVALID_ARG, "messages: not valid JSON");
    else if (!cJSON_IsArray(messages))
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "messages: expected an array of messages (or an object holding one)");
    else if ((st = collect_images(messages, out, err)) == OPTIQ_OK && out->n_images && !optiq_engine_has_vision(e))
        st = err_set(err, OPTIQ_ERR_UNSUPPORTED,
                     "the messages hold %zu image(s) but the model folder is text-only (no optiq_vision.safetensors "
                     "sidecar)",
                     out->n_images);
    cJSON_Delete(doc);
    if (st == OPTIQ_OK) st = build_options(e, out->n_images, options_json, &opts, err);
    size_t len = 0;
    if (st == OPTIQ_OK) {
        pthread_mutex_lock(&render_mu);
        st = optiq_chat_template_render(t, messages_json, messages_len, opts, &out->text, &len, err);
        pthread_mutex_unlock(&render_mu);
    }
    if (st == OPTIQ_OK)
        st = optiq_tokenizer_encode(optiq_engine_tokenizer(e), out->text, len, 0, &out->ids, &out->n_ids, err);
    if (st == OPTIQ_OK && out->n_ids == 0) st = err_set(err, OPTIQ_ERR_INVALID_ARG, "the prompt encodes to no tokens");
    free(opts);
    if (st != OPTIQ_OK) optiq_prompt_free(out);
    return st;
}

void optiq_prompt_free(optiq_prompt *p) {
    if (!p) return;
    optiq_free(p->ids);
    optiq_free(p->text);
    for (size_t i = 0; i < p->n_images; i++) free(p->images[i]);
    free(p->images);
    memset(p, 0, sizeof *p);
}

/* ---- structure sizes ---- */

size_t optiq_struct_size(const char *name) {
    static const struct {
        const char *name;
        size_t size;
    } SIZES[] = {
        {"optiq_error", sizeof(optiq_error)},
        {"optiq_engine_params", sizeof(optiq_engine_params)},
        {"optiq_image", sizeof(optiq_image)},
        {"optiq_sampling", sizeof(optiq_sampling)},
        {"optiq_generate_params", sizeof(optiq_generate_params)},
        {"optiq_generation", sizeof(optiq_generation)},
        {"optiq_prompt", sizeof(optiq_prompt)},
    };
    for (size_t i = 0; name && i < sizeof SIZES / sizeof SIZES[0]; i++)
        if (strcmp(name, SIZES[i].name) == 0) return SIZES[i].size;
    return 0;
}
