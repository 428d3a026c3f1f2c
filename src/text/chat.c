/*
 * chat.c — chat templates of model folders and the rendering of messages
 * (the pipeline is described in chat.h).
 *
 * Where the template comes from follows transformers' precedence (the same
 * as model_dir_chat_template_source): chat_template.jinja, then
 * chat_template.json's "chat_template", then tokenizer_config.json's
 * "chat_template". A chat_template given as a list of {"name", "template"}
 * holds named templates: "tool_use" is used when tools are passed and it
 * exists, "default" otherwise (transformers get_chat_template). Only the
 * tokenizer files and config.json are read: no weights are needed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/json.h"
#include "text/chat.h"
#include "text/jinja_int.h"

#define CHAT_FILE_CAP (16u << 20)

struct optiq_chat_template {
    jinja_template *main;     /* "default" */
    jinja_template *tool_use; /* or NULL */
    jval *tokens;             /* dict: special tokens */
    char *model_type;         /* config.json model_type or NULL */
    char source[64];          /* file the template came from */
};

/* ---- model families ---- */

static const struct {
    const char *prefix, *placeholder;
} FAMILY_PLACEHOLDERS[] = {
    {"qwen", "<|vision_start|><|image_pad|><|vision_end|>"},
    {"gemma3", "<start_of_image>"},
    {"gemma4", "<|image|>"},
    {"mllama", "<|image|>"},
    {"llama", "<|image|>"},
};

const char *chat_family_placeholder(const char *model_type) {
    if (!model_type) return NULL;
    for (size_t i = 0; i < sizeof FAMILY_PLACEHOLDERS / sizeof FAMILY_PLACEHOLDERS[0]; i++)
        if (strncmp(model_type, FAMILY_PLACEHOLDERS[i].prefix, strlen(FAMILY_PLACEHOLDERS[i].prefix)) == 0)
            return FAMILY_PLACEHOLDERS[i].placeholder;
    return NULL;
}

/* ---- message preparation ---- */

static optiq_status nomem(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); }

static int is_type(const jval *part, const char *type) {
    size_t l;
    const char *s = jv_str_data(jv_dict_get(part, "type"), &l);
    return s && l == strlen(type) && memcmp(s, type, l) == 0;
}

/* {"type": "image_url", "image_url": {...}} -> {"type": "image", "url": U} */
static jval *normalize_part(const jval *part) {
    if (jv_type(part) != JV_DICT || !is_type(part, "image_url") || !jv_dict_get(part, "image_url")) return jv_ref(part);
    const jval *iu = jv_dict_get(part, "image_url");
    const jval *url = jv_type(iu) == JV_DICT ? jv_dict_get(iu, "url") : iu;
    jval *d = jv_dict();
    if (!d || jv_dict_set(d, "type", jv_cstr("image")) != 0 ||
        jv_dict_set(d, "url", url ? jv_ref(url) : jv_cstr("")) != 0) {
        jv_unref(d);
        return NULL;
    }
    return d;
}

static optiq_status flatten_content(const jval *content, const char *placeholder, size_t mi, jval **out,
                                    optiq_error *err) {
    jbuf b = {0};
    for (size_t i = 0; i < jv_len(content); i++) {
        const jval *p = jv_list_at(content, i);
        if (jv_type(p) != JV_DICT) {
            jbuf_free(&b);
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "messages[%zu].content[%zu] is not an object", mi, i);
        }
        if (is_type(p, "text")) {
            size_t l;
            const char *t = jv_str_data(jv_dict_get(p, "text"), &l);
            if (!t) {
                jbuf_free(&b);
                return err_set(err, OPTIQ_ERR_INVALID_ARG, "messages[%zu].content[%zu]: a text part without a string \"text\"", mi, i);
            }
            jbuf_put(&b, t, l);
        } else if (is_type(p, "image") || is_type(p, "image_url")) {
            if (!placeholder) {
                jbuf_free(&b);
                return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                               "messages[%zu].content[%zu]: the chat template has no image syntax and no image "
                               "placeholder is known for this model (set options.image_placeholder)", mi, i);
            }
            jbuf_puts(&b, placeholder);
        } else {
            size_t l;
            const char *t = jv_str_data(jv_dict_get(p, "type"), &l);
            jbuf_free(&b);
            return err_set(err, OPTIQ_ERR_UNSUPPORTED, "messages[%zu].content[%zu]: unsupported part type '%.*s'", mi, i,
                           t ? (int)(l > 40 ? 40 : l) : 7, t ? t : "missing");
        }
    }
    size_t len;
    char *s = jbuf_take(&b, &len);
    if (!s || !(*out = jv_str_take(s, len))) return nomem(err);
    return OPTIQ_OK;
}

static jval *prepare_tool_calls(const jval *calls) {
    if (jv_type(calls) != JV_LIST) return jv_ref(calls);
    jval *out = jv_list();
    for (size_t i = 0; out && i < jv_len(calls); i++) {
        const jval *tc = jv_list_at(calls, i);
        const jval *fn = jv_dict_get(tc, "function");
        size_t al;
        const char *args = jv_str_data(jv_dict_get(fn, "arguments"), &al);
        jval *parsed = NULL;
        if (args && jv_from_json(args, al, "arguments", &parsed, NULL) == OPTIQ_OK) {
            jval *tc2 = jv_copy(tc);
            jval *fn2 = tc2 ? (jval *)jv_dict_get(tc2, "function") : NULL;
            if (!fn2 || jv_dict_set(fn2, "arguments", parsed) != 0 || jv_list_push(out, tc2) != 0) {
                if (!fn2) jv_unref(parsed);
                jv_unref(tc2);
                jv_unref(out);
                return NULL;
            }
        } else if (jv_list_push(out, jv_ref(tc)) != 0) {
            jv_unref(out);
            return NULL;
        }
    }
    return out;
}

static const jval *first_reasoning(const jval *m) {
    static const char *const names[] = {"reasoning_content", "thinking", "reasoning"};
    for (int i = 0; i < 3; i++) {
        const jval *v = jv_dict_get(m, names[i]);
        if (v && jv_type(v) != JV_NONE) return v;
    }
    return NULL;
}

optiq_status chat_prepare_messages(const jval *messages, int flatten, const char *placeholder, jval **out,
                                   optiq_error *err) {
    *out = NULL;
    if (jv_type(messages) != JV_LIST) return err_set(err, OPTIQ_ERR_INVALID_ARG, "messages must be a JSON array");
    if (jv_len(messages) == 0)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "cannot apply the chat template to an empty conversation");
    jval *list = jv_list();
    if (!list) return nomem(err);
    for (size_t mi = 0; mi < jv_len(messages); mi++) {
        const jval *m = jv_list_at(messages, mi);
        if (jv_type(m) != JV_DICT) {
            jv_unref(list);
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "messages[%zu] is not an object", mi);
        }
        const jval *reasoning = first_reasoning(m);
        jval *d = jv_dict();
        if (!d) goto oom;
        if (reasoning && jv_dict_set(d, "thinking", jv_ref(reasoning)) != 0) goto oom_d;
        for (size_t k = 0; k < jv_len(m); k++) {
            const jval *key = jv_dict_key_at(m, k), *v = jv_dict_value_at(m, k);
            size_t kl;
            const char *ks = jv_str_data(key, &kl);
            int is_content = ks && strcmp(ks, "content") == 0;
            jval *nv = NULL;
            if (jv_type(v) == JV_NONE) {
                if (!is_content) continue;
                nv = jv_cstr("");
            } else if (is_content && jv_type(v) == JV_LIST) {
                if (flatten) {
                    optiq_status st = flatten_content(v, placeholder, mi, &nv, err);
                    if (st) {
                        jv_unref(d);
                        jv_unref(list);
                        return st;
                    }
                } else {
                    nv = jv_list();
                    for (size_t i = 0; nv && i < jv_len(v); i++)
                        if (jv_list_push(nv, normalize_part(jv_list_at(v, i))) != 0) {
                            jv_unref(nv);
                            nv = NULL;
                        }
                }
            } else if (ks && strcmp(ks, "tool_calls") == 0) {
                nv = prepare_tool_calls(v);
            } else nv = jv_copy(v);
            if (!nv || jv_dict_set_key(d, jv_ref(key), nv) != 0) goto oom_d;
        }
        if (reasoning && jv_dict_set(d, "reasoning_content", jv_ref(reasoning)) != 0) goto oom_d;
        if (jv_list_push(list, d) != 0) goto oom;
        continue;
    oom_d:
        jv_unref(d);
    oom:
        jv_unref(list);
        return nomem(err);
    }
    *out = list;
    return OPTIQ_OK;
}

/* ---- loading ---- */

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static optiq_status load_json(const char *dir, const char *name, jval **out, optiq_error *err) {
    char path[4096];
    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!file_exists(path)) return OPTIQ_OK;
    char *text;
    size_t len;
    optiq_status st = json_read_file(path, CHAT_FILE_CAP, &text, &len, err);
    if (st) return st;
    st = jv_from_json(text, len, name, out, err);
    free(text);
    return st;
}

/* bos_token etc.: a string or an AddedToken object {"content": ...} */
static void add_tokens(jval *tokens, const jval *cfg) {
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                       "pad_token", "cls_token", "mask_token"};
    if (jv_type(cfg) != JV_DICT) return;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const jval *v = jv_dict_get(cfg, keys[i]);
        if (jv_type(v) == JV_DICT) v = jv_dict_get(v, "content");
        if (jv_type(v) == JV_STRING) jv_dict_set(tokens, keys[i], jv_ref(v));
    }
    const jval *extra = jv_dict_get(cfg, "extra_special_tokens");
    for (size_t i = 0; jv_type(extra) == JV_DICT && i < jv_len(extra); i++) {
        const jval *v = jv_dict_value_at(extra, i);
        if (jv_type(v) == JV_DICT) v = jv_dict_get(v, "content");
        if (jv_type(v) == JV_STRING && jv_type(jv_dict_key_at(extra, i)) == JV_STRING)
            jv_dict_set_key(tokens, jv_ref(jv_dict_key_at(extra, i)), jv_ref(v));
    }
}

static optiq_status parse_template(const char *src, size_t len, const char *label, jinja_template **out,
                                   optiq_error *err) {
    return jinja_parse(src, len, JINJA_HF, label, out, err);
}

/* chat_template as a string or a list of named templates */
static optiq_status load_template_value(optiq_chat_template *t, const jval *v, const char *label, optiq_error *err) {
    size_t len;
    const char *s = jv_str_data(v, &len);
    if (s) return parse_template(s, len, label, &t->main, err);
    if (jv_type(v) != JV_LIST)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: chat_template is %s, expected a string or a list", label,
                       jv_type_name(v));
    for (size_t i = 0; i < jv_len(v); i++) {
        const jval *e = jv_list_at(v, i);
        size_t nl, tl;
        const char *name = jv_str_data(jv_dict_get(e, "name"), &nl);
        const char *tpl = jv_str_data(jv_dict_get(e, "template"), &tl);
        if (!name || !tpl)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: chat_template[%zu] needs string \"name\" and \"template\"", label, i);
        char lab[128];
        snprintf(lab, sizeof lab, "%s[%.40s]", label, name);
        jinja_template **slot = strcmp(name, "default") == 0 ? &t->main : strcmp(name, "tool_use") == 0 ? &t->tool_use : NULL;
        if (!slot || *slot) continue;
        optiq_status st = parse_template(tpl, tl, lab, slot, err);
        if (st) return st;
    }
    if (!t->main) return err_set(err, OPTIQ_ERR_FORMAT, "%s: chat_template list has no \"default\" template", label);
    return OPTIQ_OK;
}

optiq_status optiq_chat_template_load(const char *dir, optiq_chat_template **out, optiq_error *err) {
    if (!dir || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_chat_template_load: NULL argument");
    *out = NULL;
    optiq_chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->tokens = jv_dict())) {
        free(t);
        return nomem(err);
    }
    jval *tok_cfg = NULL, *stm = NULL, *config = NULL, *ctj = NULL;
    optiq_status st = load_json(dir, "tokenizer_config.json", &tok_cfg, err);
    if (!st) st = load_json(dir, "special_tokens_map.json", &stm, err);
    if (!st) st = load_json(dir, "config.json", &config, err);
    if (st) goto done;
    add_tokens(t->tokens, stm);
    add_tokens(t->tokens, tok_cfg);
    size_t ml;
    const char *mt = jv_str_data(jv_dict_get(config, "model_type"), &ml);
    if (mt && !(t->model_type = strndup(mt, ml))) {
        st = nomem(err);
        goto done;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (file_exists(path)) {
        char *text;
        size_t len;
        snprintf(t->source, sizeof t->source, "chat_template.jinja");
        st = json_read_file(path, CHAT_FILE_CAP, &text, &len, err);
        if (!st) {
            st = parse_template(text, len, "chat_template.jinja", &t->main, err);
            free(text);
        }
        goto done;
    }
    if ((st = load_json(dir, "chat_template.json", &ctj, err)) != OPTIQ_OK) goto done;
    if (ctj && jv_dict_get(ctj, "chat_template")) {
        snprintf(t->source, sizeof t->source, "chat_template.json");
        st = load_template_value(t, jv_dict_get(ctj, "chat_template"), "chat_template.json chat_template", err);
        goto done;
    }
    if (tok_cfg && jv_dict_get(tok_cfg, "chat_template") && jv_type(jv_dict_get(tok_cfg, "chat_template")) != JV_NONE) {
        snprintf(t->source, sizeof t->source, "tokenizer_config.json");
        st = load_template_value(t, jv_dict_get(tok_cfg, "chat_template"), "tokenizer_config.json chat_template", err);
        goto done;
    }
    st = err_set(err, OPTIQ_ERR_FORMAT,
                 "%s: no chat template (looked for chat_template.jinja, chat_template.json and "
                 "tokenizer_config.json's chat_template)", dir);
done:
    jv_unref(tok_cfg);
    jv_unref(stm);
    jv_unref(config);
    jv_unref(ctj);
    if (st) {
        optiq_chat_template_free(t);
        return st;
    }
    *out = t;
    return OPTIQ_OK;
}

optiq_status optiq_chat_template_from_string(const char *source, size_t len, const char *model_type,
                                             const char *tokens_json, optiq_chat_template **out, optiq_error *err) {
    if (!source || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_chat_template_from_string: NULL argument");
    *out = NULL;
    optiq_chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->tokens = jv_dict())) {
        free(t);
        return nomem(err);
    }
    snprintf(t->source, sizeof t->source, "string");
    optiq_status st = OPTIQ_OK;
    if (model_type && !(t->model_type = strdup(model_type))) st = nomem(err);
    if (!st && tokens_json) {
        jval *tok = NULL;
        st = jv_from_json(tokens_json, strlen(tokens_json), "special tokens", &tok, err);
        if (!st && jv_type(tok) != JV_DICT) st = err_set(err, OPTIQ_ERR_INVALID_ARG, "special tokens: expected an object");
        if (!st) add_tokens(t->tokens, tok);
        jv_unref(tok);
    }
    if (!st) st = parse_template(source, len, "template", &t->main, err);
    if (st) {
        optiq_chat_template_free(t);
        return st;
    }
    *out = t;
    return OPTIQ_OK;
}

void optiq_chat_template_free(optiq_chat_template *t) {
    if (!t) return;
    jinja_free(t->main);
    jinja_free(t->tool_use);
    jv_unref(t->tokens);
    free(t->model_type);
    free(t);
}

const char *optiq_chat_template_source(const optiq_chat_template *t) { return t ? t->source : NULL; }

/* ---- rendering ---- */

static int key_is(const jval *k, const char *name) {
    size_t l;
    const char *s = jv_str_data(k, &l);
    return s && l == strlen(name) && memcmp(s, name, l) == 0;
}

optiq_status optiq_chat_template_render(const optiq_chat_template *t, const char *messages_json, size_t messages_len,
                                        const char *options_json, char **prompt, size_t *prompt_len, optiq_error *err) {
    if (!t || !messages_json || !prompt) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_chat_template_render: NULL argument");
    *prompt = NULL;
    jval *doc = NULL, *opts = NULL, *vars = NULL, *msgs = NULL;
    const jval *messages, *tools = NULL, *kwargs = NULL;
    const char *placeholder = chat_family_placeholder(t->model_type);
    int add_gen = 1;
    jinja_config cfg;
    jinja_config_default(&cfg);
    optiq_status st = jv_from_json(messages_json, messages_len, "messages", &doc, err);
    if (st) goto done;
    messages = doc;
    if (jv_type(doc) == JV_DICT) { /* a request body: {"messages": [...], "tools": [...], ...} */
        messages = jv_dict_get(doc, "messages");
        if (!messages) {
            st = err_set(err, OPTIQ_ERR_INVALID_ARG, "messages: an object without a \"messages\" array");
            goto done;
        }
        tools = jv_dict_get(doc, "tools");
        kwargs = jv_dict_get(doc, "chat_template_kwargs");
    }
    if (options_json && *options_json) {
        st = jv_from_json(options_json, strlen(options_json), "options", &opts, err);
        if (st) goto done;
        if (jv_type(opts) != JV_DICT) {
            st = err_set(err, OPTIQ_ERR_INVALID_ARG, "options: expected a JSON object, found %s", jv_type_name(opts));
            goto done;
        }
    }
    if (!(vars = jv_dict())) {
        st = nomem(err);
        goto done;
    }
    for (size_t i = 0; i < jv_len(t->tokens); i++)
        jv_dict_set_key(vars, jv_ref(jv_dict_key_at(t->tokens, i)), jv_ref(jv_dict_value_at(t->tokens, i)));
    for (size_t i = 0; i < jv_len(opts); i++) {
        const jval *k = jv_dict_key_at(opts, i), *v = jv_dict_value_at(opts, i);
        if (key_is(k, "tools")) tools = v;
        else if (key_is(k, "chat_template_kwargs")) kwargs = v;
        else if (key_is(k, "add_generation_prompt")) {
            if (jv_type(v) != JV_BOOL) {
                st = err_set(err, OPTIQ_ERR_INVALID_ARG, "options.add_generation_prompt: expected true or false");
                goto done;
            }
            add_gen = jv_as_bool(v);
        } else if (key_is(k, "image_placeholder")) {
            placeholder = jv_str_data(v, NULL);
            if (!placeholder) {
                st = err_set(err, OPTIQ_ERR_INVALID_ARG, "options.image_placeholder: expected a string");
                goto done;
            }
        } else if (key_is(k, "now")) {
            if (jv_type(v) != JV_INT && jv_type(v) != JV_FLOAT) {
                st = err_set(err, OPTIQ_ERR_INVALID_ARG, "options.now: expected seconds since the epoch");
                goto done;
            }
            cfg.fixed_now = 1;
            cfg.now = jv_as_int(v);
        } else if (key_is(k, "messages") || key_is(k, "documents")) {
            continue;
        } else jv_dict_set_key(vars, jv_ref(k), jv_ref(v));
    }
    if (kwargs && jv_type(kwargs) != JV_NONE) {
        if (jv_type(kwargs) != JV_DICT) {
            st = err_set(err, OPTIQ_ERR_INVALID_ARG, "chat_template_kwargs: expected an object");
            goto done;
        }
        for (size_t i = 0; i < jv_len(kwargs); i++)
            jv_dict_set_key(vars, jv_ref(jv_dict_key_at(kwargs, i)), jv_ref(jv_dict_value_at(kwargs, i)));
    }
    if (tools && jv_type(tools) != JV_NONE && jv_type(tools) != JV_LIST) {
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "tools: expected an array, found %s", jv_type_name(tools));
        goto done;
    }
    const jinja_template *tpl = t->main;
    if (t->tool_use && tools && jv_type(tools) == JV_LIST) tpl = t->tool_use;
    st = chat_prepare_messages(messages, !jinja_source_mentions(tpl, "image"), placeholder, &msgs, err);
    if (st) goto done;
    if (jv_dict_set(vars, "messages", msgs) != 0 || jv_dict_set(vars, "tools", tools ? jv_copy(tools) : jv_none()) != 0 ||
        jv_dict_set(vars, "documents", jv_none()) != 0 || jv_dict_set(vars, "add_generation_prompt", jv_bool(add_gen)) != 0) {
        msgs = NULL;
        st = nomem(err);
        goto done;
    }
    msgs = NULL;
    st = jinja_render(tpl, vars, &cfg, prompt, prompt_len, err);
done:
    jv_unref(msgs);
    jv_unref(vars);
    jv_unref(opts);
    jv_unref(doc);
    return st;
}
