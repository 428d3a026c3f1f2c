/*
 * api_openai.c — OpenAI /v1/chat/completions and /v1/completions: request
 * parsing and the chat.completion / text_completion objects and chunks.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_int.h"

/* ---- requests ---- */

static int is_role(const char *r) {
    return !strcmp(r, "system") || !strcmp(r, "developer") || !strcmp(r, "user") || !strcmp(r, "assistant") ||
           !strcmp(r, "tool");
}

/* content: a list of text / image_url parts, normalized to text / image parts. */
static int parse_parts(api_ctx *c, const cJSON *arr, size_t mi, const char *role, cJSON *out) {
    char param[96];
    size_t k = 0;
    for (const cJSON *p = arr->child; p; p = p->next, k++) {
        snprintf(param, sizeof param, "messages[%zu].content[%zu]", mi, k);
        const char *type;
        int rc0 = api_content_part(c, p, param, &type);
        if (rc0) return rc0;
        if (!strcmp(type, "text")) {
            const cJSON *text = api_opt(p, "text");
            if (!cJSON_IsString(text)) return api_error_set(c->err, 400, param, "%s.text: expected a string", param);
            int rc = api_add_text_part(c, out, text->valuestring);
            if (rc) return rc;
        } else if (!strcmp(type, "image_url")) {
            if (strcmp(role, "user") != 0)
                return api_error_set(c->err, 400, param, "%s: images are only accepted in user messages, not %s",
                                     param, role);
            const cJSON *iu = api_opt(p, "image_url");
            const cJSON *url = cJSON_IsObject(iu) ? api_opt(iu, "url") : iu;
            snprintf(param, sizeof param, "messages[%zu].content[%zu].image_url%s", mi, k,
                     cJSON_IsObject(iu) ? ".url" : "");
            if (!cJSON_IsString(url))
                return api_error_set(c->err, 400, param, "%s: expected a URL string or an object with \"url\"", param);
            int rc = api_add_image(c, url->valuestring, param);
            if (rc) return rc;
            cJSON *img = cJSON_CreateObject();
            if (!img || !cJSON_AddStringToObject(img, "type", "image") || !cJSON_AddItemToArray(out, img)) {
                cJSON_Delete(img);
                return api_nomem(c);
            }
        } else if (!strcmp(type, "input_audio") || !strcmp(type, "audio")) {
            return api_error_set(c->err, 400, param, "%s: audio input is not supported", param);
        } else {
            return api_error_set(c->err, 400, param, "%s.type: unsupported content part type \"%.40s\"", param,
                                 type);
        }
    }
    return 0;
}

/* Copy an optional string key of the message (name, tool_call_id, reasoning_content). */
static int copy_string(api_ctx *c, const cJSON *m, cJSON *out, const char *key, size_t mi) {
    const cJSON *v = api_opt(m, key);
    if (!v) return 0;
    char param[96];
    snprintf(param, sizeof param, "messages[%zu].%s", mi, key);
    if (!cJSON_IsString(v)) return api_error_set(c->err, 400, param, "%s: expected a string", param);
    return cJSON_AddStringToObject(out, key, v->valuestring) ? 0 : api_nomem(c);
}

static int parse_message(api_ctx *c, const cJSON *m, size_t mi, cJSON *msgs) {
    char param[96];
    snprintf(param, sizeof param, "messages[%zu]", mi);
    if (!cJSON_IsObject(m)) return api_error_set(c->err, 400, param, "%s: expected an object", param);
    const cJSON *role = api_opt(m, "role");
    snprintf(param, sizeof param, "messages[%zu].role", mi);
    if (!cJSON_IsString(role)) return api_error_set(c->err, 400, param, "%s: expected a string", param);
    if (!is_role(role->valuestring))
        return api_error_set(c->err, 400, param,
                             "%s: unknown role \"%.40s\" (expected system, developer, user, assistant or tool)",
                             param, role->valuestring);
    const char *r = !strcmp(role->valuestring, "developer") ? "system" : role->valuestring;
    const cJSON *content = api_opt(m, "content");
    snprintf(param, sizeof param, "messages[%zu].content", mi);
    cJSON *out_content = NULL;
    int rc = 0;
    if (!content) {
        if (strcmp(r, "assistant") != 0) return api_error_set(c->err, 400, param, "%s: required", param);
    } else if (cJSON_IsString(content)) {
        if (!(out_content = cJSON_CreateString(content->valuestring))) return api_nomem(c);
    } else if (cJSON_IsArray(content)) {
        if (!content->child && strcmp(r, "assistant") != 0)
            return api_error_set(c->err, 400, param, "%s: empty list of parts", param);
        if (!(out_content = cJSON_CreateArray())) return api_nomem(c);
        if ((rc = parse_parts(c, content, mi, r, out_content))) {
            cJSON_Delete(out_content);
            return rc;
        }
    } else {
        return api_error_set(c->err, 400, param, "%s: expected a string or a list of parts", param);
    }
    if ((rc = api_push_message(c, msgs, r, out_content))) return rc;
    cJSON *out = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    if ((rc = copy_string(c, m, out, "name", mi)) || (rc = copy_string(c, m, out, "tool_call_id", mi)) ||
        (rc = copy_string(c, m, out, "reasoning_content", mi)))
        return rc;
    const cJSON *calls = api_opt(m, "tool_calls");
    if (calls) {
        snprintf(param, sizeof param, "messages[%zu].tool_calls", mi);
        if (!cJSON_IsArray(calls)) return api_error_set(c->err, 400, param, "%s: expected an array", param);
        cJSON *dup = cJSON_Duplicate(calls, 1);
        if (!dup || !cJSON_AddItemToObject(out, "tool_calls", dup)) {
            cJSON_Delete(dup);
            return api_nomem(c);
        }
    }
    return 0;
}

static int parse_messages(api_ctx *c, const cJSON *body) {
    const cJSON *arr = api_opt(body, "messages");
    if (!arr) return api_error_set(c->err, 400, "messages", "messages: required");
    if (!cJSON_IsArray(arr)) return api_error_set(c->err, 400, "messages", "messages: expected an array");
    if (!arr->child) return api_error_set(c->err, 400, "messages", "messages: empty, at least one message is required");
    cJSON *msgs = cJSON_CreateArray();
    if (!msgs) return api_nomem(c);
    size_t i = 0;
    int rc = 0;
    for (const cJSON *m = arr->child; m && !rc; m = m->next, i++) rc = parse_message(c, m, i, msgs);
    if (!rc && !(c->req->messages_json = cJSON_PrintUnformatted(msgs))) rc = api_nomem(c);
    cJSON_Delete(msgs);
    return rc;
}

static int parse_prompt(api_ctx *c, const cJSON *body) {
    const cJSON *p = api_opt(body, "prompt");
    if (!p) return api_error_set(c->err, 400, "prompt", "prompt: required");
    if (cJSON_IsArray(p)) {
        if (cJSON_GetArraySize(p) != 1 || !cJSON_IsString(p->child))
            return api_error_set(c->err, 400, "prompt", "prompt: a list must hold exactly one string");
        p = p->child;
    }
    if (!cJSON_IsString(p)) return api_error_set(c->err, 400, "prompt", "prompt: expected a string");
    return (c->req->prompt = strdup(p->valuestring)) ? 0 : api_nomem(c);
}

static int print_object(api_ctx *c, const cJSON *body, const char *key, int array, char **out) {
    const cJSON *j = api_opt(body, key);
    if (!j) return 0;
    if (array ? !cJSON_IsArray(j) : !cJSON_IsObject(j))
        return api_error_set(c->err, 400, key, "%s: expected %s", key, array ? "an array" : "an object");
    return (*out = cJSON_PrintUnformatted(j)) ? 0 : api_nomem(c);
}

int api_parse_openai(api_ctx *c, const cJSON *body) {
    api_request *r = c->req;
    optiq_sampling *s = &r->sampling;
    const char *model = NULL;
    double temp = s->temperature, top_p = s->top_p, min_p = s->min_p, pres = s->presence_penalty,
           freq = s->frequency_penalty, rep = s->repetition_penalty;
    int64_t top_k = s->top_k, seed = (int64_t)s->seed, max_tokens = 0, n = 1, image_tokens = 0;
    int rc;
    if ((rc = api_get_string(c, body, "model", 0, &model))) return rc;
    if (model && !(r->model = strdup(model))) return api_nomem(c);
    if ((rc = r->kind == API_OPENAI_CHAT ? parse_messages(c, body) : parse_prompt(c, body))) return rc;
    if ((rc = api_get_number(c, body, "temperature", 0, 100, &temp)) ||
        (rc = api_get_number(c, body, "top_p", 0, 1, &top_p)) ||
        (rc = api_get_int(c, body, "top_k", -1, INT_MAX, &top_k)) ||
        (rc = api_get_number(c, body, "min_p", 0, 1, &min_p)) ||
        (rc = api_get_number(c, body, "presence_penalty", -2, 2, &pres)) ||
        (rc = api_get_number(c, body, "frequency_penalty", -2, 2, &freq)) ||
        (rc = api_get_number(c, body, "repetition_penalty", 0, 100, &rep)) ||
        (rc = api_get_int(c, body, "seed", -9007199254740991LL, 9007199254740991LL, &seed)) ||
        (rc = api_get_int(c, body, "max_tokens", 1, INT_MAX, &max_tokens)) ||
        (rc = api_get_int(c, body, "max_completion_tokens", 1, INT_MAX, &max_tokens)) ||
        (rc = api_get_int(c, body, "n", 1, INT_MAX, &n)) || (rc = api_get_stop(c, body, "stop", 1)) ||
        (rc = api_get_int(c, body, "image_tokens", 1, 1 << 20, &image_tokens)) ||
        (rc = api_get_bool(c, body, "stream", &r->stream)))
        return rc;
    if (n != 1) return api_error_set(c->err, 400, "n", "n: only n=1 is supported, got %lld", (long long)n);
    r->image_tokens = (int)image_tokens;
    const cJSON *so = api_opt(body, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return api_error_set(c->err, 400, "stream_options", "stream_options: expected an object");
        if ((rc = api_get_bool(c, so, "include_usage", &r->include_usage)))
            return snprintf(c->err->param, sizeof c->err->param, "stream_options.include_usage"), rc;
    }
    if ((rc = print_object(c, body, "chat_template_kwargs", 0, &r->chat_template_kwargs_json)) ||
        (rc = print_object(c, body, "tools", 1, &r->tools_json)))
        return rc;
    s->temperature = (float)temp;
    s->top_p = (float)top_p;
    s->top_k = top_k < 0 ? 0 : (int)top_k;
    s->min_p = (float)min_p;
    s->presence_penalty = (float)pres;
    s->frequency_penalty = (float)freq;
    s->repetition_penalty = (float)rep;
    s->seed = (uint64_t)seed;
    r->max_tokens = (int)max_tokens;
    return 0;
}

/* ---- responses ---- */

static const char *openai_finish(const char *fr) {
    if (!fr || !strcmp(fr, "abort")) return "stop";
    return fr;
}

static cJSON *usage_obj(int64_t p, int64_t c) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)p);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(p + c));
    return u;
}

/* {"id","object","created","model","choices":[choice]} */
static cJSON *envelope(const api_result *r, const char *object, cJSON *choice) {
    cJSON *root = cJSON_CreateObject(), *choices = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "id", r->id ? r->id : "");
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)r->created);
    cJSON_AddStringToObject(root, "model", r->model ? r->model : "");
    cJSON_AddItemToObject(root, "choices", choices);
    if (choice) cJSON_AddItemToArray(choices, choice);
    else cJSON_Delete(choice);
    return root;
}

char *api_openai_chat_response(const api_result *r) {
    cJSON *choice = cJSON_CreateObject(), *msg = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON_AddItemToObject(choice, "message", msg);
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", r->text ? r->text : "");
    if (r->reasoning) cJSON_AddStringToObject(msg, "reasoning_content", r->reasoning);
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason", openai_finish(r->finish_reason));
    cJSON *root = envelope(r, "chat.completion", choice);
    cJSON_AddItemToObject(root, "usage", usage_obj(r->prompt_tokens, r->completion_tokens));
    return api_print(root);
}

char *api_openai_completion_response(const api_result *r) {
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddStringToObject(choice, "text", r->text ? r->text : "");
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason", openai_finish(r->finish_reason));
    cJSON *root = envelope(r, "text_completion", choice);
    cJSON_AddItemToObject(root, "usage", usage_obj(r->prompt_tokens, r->completion_tokens));
    return api_print(root);
}

/* ---- streaming ---- */

static cJSON *dup_n(const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return NULL;
    memcpy(t, s, n);
    t[n] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    return j;
}

/* One chunk; delta (chat) or text (completions) is consumed. */
static char *chunk(api_stream *s, cJSON *delta, cJSON *text, const char *finish) {
    int chat = s->kind == API_OPENAI_CHAT;
    cJSON *choice = cJSON_CreateObject();
    if (chat) {
        cJSON_AddNumberToObject(choice, "index", 0);
        cJSON_AddItemToObject(choice, "delta", delta ? delta : cJSON_CreateObject());
    } else {
        cJSON_AddItemToObject(choice, "text", text ? text : cJSON_CreateString(""));
        cJSON_AddNumberToObject(choice, "index", 0);
    }
    cJSON_AddNullToObject(choice, "logprobs");
    if (finish) cJSON_AddStringToObject(choice, "finish_reason", finish);
    else cJSON_AddNullToObject(choice, "finish_reason");
    cJSON *root = envelope(&s->meta, chat ? "chat.completion.chunk" : "text_completion", choice);
    /* with include_usage every chunk carries "usage": null but the last one */
    if (s->include_usage) cJSON_AddNullToObject(root, "usage");
    return api_sse(NULL, root);
}

char *api_openai_stream_begin(api_stream *s) {
    if (s->kind != API_OPENAI_CHAT) return strdup("");
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    return chunk(s, d, NULL, NULL);
}

char *api_openai_stream_delta(api_stream *s, const char *r, size_t rn, const char *t, size_t tn) {
    char *out = strdup("");
    if (s->kind == API_OPENAI_CHAT && rn && out) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "reasoning_content", dup_n(r, rn));
        char *c = chunk(s, d, NULL, NULL);
        out = c ? api_concat(out, c, strlen(c)) : (free(out), NULL);
        free(c);
    }
    if (tn && out) {
        char *c;
        if (s->kind == API_OPENAI_CHAT) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddItemToObject(d, "content", dup_n(t, tn));
            c = chunk(s, d, NULL, NULL);
        } else {
            c = chunk(s, NULL, dup_n(t, tn), NULL);
        }
        out = c ? api_concat(out, c, strlen(c)) : (free(out), NULL);
        free(c);
    }
    return out;
}

char *api_openai_stream_end(api_stream *s, const char *finish_reason, int64_t completion_tokens) {
    char *out = chunk(s, NULL, NULL, openai_finish(finish_reason));
    if (out && s->include_usage) {
        cJSON *root = envelope(&s->meta, s->kind == API_OPENAI_CHAT ? "chat.completion.chunk" : "text_completion",
                               NULL);
        cJSON_AddItemToObject(root, "usage", usage_obj(s->meta.prompt_tokens, completion_tokens));
        char *u = api_sse(NULL, root);
        out = u ? api_concat(out, u, strlen(u)) : (free(out), NULL);
        free(u);
    }
    static const char done[] = "data: [DONE]\n\n";
    return out ? api_concat(out, done, sizeof done - 1) : NULL;
}

char *api_models_response(const char *model_id, int64_t created, int vision) {
    cJSON *root = cJSON_CreateObject(), *data = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON *mods = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddItemToObject(root, "data", data);
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", model_id ? model_id : "");
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "optiq");
    cJSON_AddItemToObject(m, "input_modalities", mods);
    cJSON_AddItemToArray(mods, cJSON_CreateString("text"));
    if (vision) cJSON_AddItemToArray(mods, cJSON_CreateString("image"));
    return api_print(root);
}
