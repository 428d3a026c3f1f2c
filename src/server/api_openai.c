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

/* response_format: {"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}} */
static int parse_response_format(api_ctx *c, const cJSON *body) {
    const cJSON *rf = api_opt(body, "response_format");
    if (!rf) return 0;
    if (!cJSON_IsObject(rf)) return api_error_set(c->err, 400, "response_format", "response_format: expected an object");
    const cJSON *t = api_opt(rf, "type");
    if (!cJSON_IsString(t))
        return api_error_set(c->err, 400, "response_format.type", "response_format.type: expected a string");
    if (!strcmp(t->valuestring, "text")) return 0;
    if (!strcmp(t->valuestring, "json_object")) {
        c->req->response_format = API_FORMAT_JSON_OBJECT;
        return 0;
    }
    if (strcmp(t->valuestring, "json_schema") != 0)
        return api_error_set(c->err, 400, "response_format.type",
                             "response_format.type: expected \"text\", \"json_object\" or \"json_schema\", got \"%.40s\"",
                             t->valuestring);
    const cJSON *js = api_opt(rf, "json_schema");
    if (!cJSON_IsObject(js))
        return api_error_set(c->err, 400, "response_format.json_schema", "response_format.json_schema: expected an object");
    const cJSON *schema = api_opt(js, "schema");
    if (!cJSON_IsObject(schema) && !cJSON_IsTrue(schema))
        return api_error_set(c->err, 400, "response_format.json_schema.schema",
                             "response_format.json_schema.schema: expected a JSON schema object");
    c->req->response_format = API_FORMAT_JSON_SCHEMA;
    return (c->req->schema_json = cJSON_PrintUnformatted(schema)) ? 0 : api_nomem(c);
}

/* tool_choice: "auto" | "none" | "required" | {"type": "function", "function": {"name"}} */
static int parse_tool_choice(api_ctx *c, const cJSON *body) {
    const cJSON *tc = api_opt(body, "tool_choice");
    if (!tc) return 0;
    if (cJSON_IsString(tc)) {
        const char *v = tc->valuestring;
        if (!strcmp(v, "auto")) c->req->tool_choice = API_TOOLS_AUTO;
        else if (!strcmp(v, "none")) c->req->tool_choice = API_TOOLS_NONE;
        else if (!strcmp(v, "required")) c->req->tool_choice = API_TOOLS_REQUIRED;
        else
            return api_error_set(c->err, 400, "tool_choice",
                                 "tool_choice: expected \"auto\", \"none\", \"required\" or a function, got \"%.40s\"", v);
        return 0;
    }
    const cJSON *fn = cJSON_IsObject(tc) ? api_opt(tc, "function") : NULL;
    const cJSON *name = cJSON_IsObject(fn) ? api_opt(fn, "name") : NULL;
    if (!cJSON_IsString(name))
        return api_error_set(c->err, 400, "tool_choice",
                             "tool_choice: expected a string or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    c->req->tool_choice = API_TOOLS_NAMED;
    return (c->req->tool_choice_name = strdup(name->valuestring)) ? 0 : api_nomem(c);
}

/* chat: logprobs (bool) + top_logprobs (0..20); completions: logprobs (0..20, the legacy count). */
static int parse_logprobs(api_ctx *c, const cJSON *body) {
    api_request *r = c->req;
    int64_t top = 0;
    int rc;
    if (r->kind == API_OPENAI_CHAT) {
        if ((rc = api_get_bool(c, body, "logprobs", &r->logprobs)) ||
            (rc = api_get_int(c, body, "top_logprobs", 0, OPTIQ_MAX_TOP_LOGPROBS, &top)))
            return rc;
        if (top && !r->logprobs)
            return api_error_set(c->err, 400, "top_logprobs", "top_logprobs: needs \"logprobs\": true");
    } else {
        const cJSON *lp = api_opt(body, "logprobs");
        if (!lp) return 0;
        if ((rc = api_get_int(c, body, "logprobs", 0, OPTIQ_MAX_TOP_LOGPROBS, &top))) return rc;
        r->logprobs = 1;
    }
    r->top_logprobs = (int)top;
    return 0;
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
        (rc = print_object(c, body, "tools", 1, &r->tools_json)) || (rc = parse_response_format(c, body)) ||
        (rc = parse_tool_choice(c, body)) || (rc = parse_logprobs(c, body)))
        return rc;
    if ((r->tool_choice == API_TOOLS_REQUIRED || r->tool_choice == API_TOOLS_NAMED) && !r->tools_json)
        return api_error_set(c->err, 400, "tool_choice", "tool_choice: a call is required but no tools are given");
    if (r->tool_choice >= API_TOOLS_REQUIRED && r->response_format != API_FORMAT_TEXT)
        return api_error_set(c->err, 400, "response_format",
                             "response_format: cannot be combined with a required tool call (tool_choice)");
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

/* prompt_tokens counts the whole prompt; prompt_tokens_details.cached_tokens, present
 * when the prefix cache supplied some of it, says how many of those (OpenAI's meaning). */
static cJSON *usage_obj(int64_t p, int64_t cached, int64_t c) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)p);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(p + c));
    if (cached > 0) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
        cJSON_AddItemToObject(u, "prompt_tokens_details", d);
    }
    return u;
}

/* choice.logprobs: chat {"content": [...]}, completions the legacy object, or null. */
static void add_logprobs(cJSON *choice, const char *json, int chat) {
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    if (!j) {
        cJSON_AddNullToObject(choice, "logprobs");
        return;
    }
    if (chat) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "content", j);
        cJSON_AddNullToObject(o, "refusal");
        j = o;
    }
    cJSON_AddItemToObject(choice, "logprobs", j);
}

/* [{"id","name","arguments"}] -> OpenAI's tool_calls; stream deltas carry "index" (from index). */
static cJSON *openai_calls(const cJSON *calls, int with_index, int index) {
    cJSON *out = cJSON_CreateArray();
    for (const cJSON *c = calls ? calls->child : NULL; c; c = c->next, index++) {
        const cJSON *id = cJSON_GetObjectItem(c, "id"), *nm = cJSON_GetObjectItem(c, "name"),
                    *args = cJSON_GetObjectItem(c, "arguments");
        cJSON *tc = cJSON_CreateObject(), *fn = cJSON_CreateObject();
        if (with_index) cJSON_AddNumberToObject(tc, "index", index);
        cJSON_AddStringToObject(tc, "id", cJSON_IsString(id) ? id->valuestring : "");
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON_AddStringToObject(fn, "name", cJSON_IsString(nm) ? nm->valuestring : "");
        cJSON_AddStringToObject(fn, "arguments", cJSON_IsString(args) ? args->valuestring : "{}");
        cJSON_AddItemToObject(tc, "function", fn);
        cJSON_AddItemToArray(out, tc);
    }
    return out;
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
    cJSON *calls = r->tool_calls_json ? cJSON_Parse(r->tool_calls_json) : NULL;
    if (cJSON_GetArraySize(calls) > 0 && !(r->text && *r->text)) cJSON_AddNullToObject(msg, "content");
    else cJSON_AddStringToObject(msg, "content", r->text ? r->text : "");
    if (r->reasoning) cJSON_AddStringToObject(msg, "reasoning_content", r->reasoning);
    if (cJSON_GetArraySize(calls) > 0) cJSON_AddItemToObject(msg, "tool_calls", openai_calls(calls, 0, 0));
    cJSON_Delete(calls);
    add_logprobs(choice, r->logprobs_json, 1);
    cJSON_AddStringToObject(choice, "finish_reason", openai_finish(r->finish_reason));
    cJSON *root = envelope(r, "chat.completion", choice);
    cJSON_AddItemToObject(root, "usage", usage_obj(r->prompt_tokens, r->cached_tokens, r->completion_tokens));
    return api_print(root);
}

char *api_openai_completion_response(const api_result *r) {
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddStringToObject(choice, "text", r->text ? r->text : "");
    cJSON_AddNumberToObject(choice, "index", 0);
    add_logprobs(choice, r->logprobs_json, 0);
    cJSON_AddStringToObject(choice, "finish_reason", openai_finish(r->finish_reason));
    cJSON *root = envelope(r, "text_completion", choice);
    cJSON_AddItemToObject(root, "usage", usage_obj(r->prompt_tokens, r->cached_tokens, r->completion_tokens));
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
    add_logprobs(choice, s->logprobs_json, chat); /* the tokens since the last chunk */
    free(s->logprobs_json);
    s->logprobs_json = NULL;
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

char *api_openai_stream_tool_calls(api_stream *s, const char *calls_json) {
    cJSON *calls = calls_json ? cJSON_Parse(calls_json) : NULL;
    char *out = strdup("");
    int i = 0;
    for (const cJSON *c = calls ? calls->child : NULL; c && out; c = c->next, i++) {
        cJSON *one = cJSON_CreateArray(), *d = cJSON_CreateObject();
        cJSON_AddItemToArray(one, cJSON_Duplicate(c, 1));
        cJSON_AddItemToObject(d, "tool_calls", openai_calls(one, 1, s->n_tool_blocks++));
        cJSON_Delete(one);
        char *ch = chunk(s, d, NULL, NULL);
        out = ch ? api_concat(out, ch, strlen(ch)) : (free(out), NULL);
        free(ch);
    }
    cJSON_Delete(calls);
    return out;
}

char *api_openai_stream_end(api_stream *s, const char *finish_reason, int64_t completion_tokens) {
    char *out = chunk(s, NULL, NULL, openai_finish(finish_reason));
    if (out && s->include_usage) {
        cJSON *root = envelope(&s->meta, s->kind == API_OPENAI_CHAT ? "chat.completion.chunk" : "text_completion",
                               NULL);
        cJSON_AddItemToObject(root, "usage", usage_obj(s->meta.prompt_tokens, s->meta.cached_tokens, completion_tokens));
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
