/*
 * api_anthropic.c — Anthropic /v1/messages and /v1/messages/count_tokens:
 * request parsing (system, text / image / thinking blocks) into the
 * OpenAI-style messages the chat template takes, the message object and the
 * streaming event sequence.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/api_int.h"

/* ---- requests ---- */

static int is_media_type(const char *m) {
    return !strcmp(m, "image/jpeg") || !strcmp(m, "image/png") || !strcmp(m, "image/gif") ||
           !strcmp(m, "image/webp");
}

/* An image block's source -> a data: or http(s) URL in the request's images. */
static int parse_image(api_ctx *c, const cJSON *blk, const char *param) {
    char p2[128];
    const cJSON *src = api_opt(blk, "source");
    snprintf(p2, sizeof p2, "%s.source", param);
    if (!cJSON_IsObject(src)) return api_error_set(c->err, 400, p2, "%s: expected an object", p2);
    const cJSON *type = api_opt(src, "type");
    if (!cJSON_IsString(type)) return api_error_set(c->err, 400, p2, "%s.type: expected a string", p2);
    if (!strcmp(type->valuestring, "base64")) {
        const cJSON *mt = api_opt(src, "media_type"), *data = api_opt(src, "data");
        if (!cJSON_IsString(mt) || !is_media_type(mt->valuestring))
            return api_error_set(c->err, 400, p2,
                                 "%s.media_type: expected image/jpeg, image/png, image/gif or image/webp", p2);
        snprintf(p2, sizeof p2, "%s.source.data", param);
        if (!cJSON_IsString(data)) return api_error_set(c->err, 400, p2, "%s: expected a string", p2);
        size_t n = strlen(data->valuestring) + strlen(mt->valuestring) + 16;
        char *url = malloc(n);
        if (!url) return api_nomem(c);
        snprintf(url, n, "data:%s;base64,%s", mt->valuestring, data->valuestring);
        int rc = api_add_image(c, url, p2);
        free(url);
        return rc;
    }
    if (!strcmp(type->valuestring, "url")) {
        const cJSON *url = api_opt(src, "url");
        snprintf(p2, sizeof p2, "%s.source.url", param);
        if (!cJSON_IsString(url)) return api_error_set(c->err, 400, p2, "%s: expected a string", p2);
        if (strncasecmp(url->valuestring, "http://", 7) != 0 && strncasecmp(url->valuestring, "https://", 8) != 0)
            return api_error_set(c->err, 400, p2, "%s: expected an http:// or https:// URL", p2);
        return api_add_image(c, url->valuestring, p2);
    }
    return api_error_set(c->err, 400, p2, "%s.type: expected \"base64\" or \"url\", got \"%.40s\"", p2,
                         type->valuestring);
}

/* tool_use {id, name, input} -> an OpenAI tool call of the assistant message. */
static int parse_tool_use(api_ctx *c, const cJSON *b, const char *param, cJSON *calls) {
    const cJSON *id = api_opt(b, "id"), *name = api_opt(b, "name"), *input = api_opt(b, "input");
    if (!cJSON_IsString(id) || !cJSON_IsString(name))
        return api_error_set(c->err, 400, param, "%s: tool_use needs string \"id\" and \"name\"", param);
    if (input && !cJSON_IsObject(input))
        return api_error_set(c->err, 400, param, "%s.input: expected an object", param);
    cJSON *tc = cJSON_CreateObject(), *fn = cJSON_CreateObject();
    cJSON *args = input ? cJSON_Duplicate(input, 1) : cJSON_CreateObject();
    if (!tc || !fn || !args || !cJSON_AddItemToArray(calls, tc)) {
        cJSON_Delete(tc), cJSON_Delete(fn), cJSON_Delete(args);
        return api_nomem(c);
    }
    cJSON_AddStringToObject(tc, "id", id->valuestring);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON_AddItemToObject(tc, "function", fn);
    cJSON_AddStringToObject(fn, "name", name->valuestring);
    cJSON_AddItemToObject(fn, "arguments", args);
    return 0;
}

/* tool_result {tool_use_id, content} -> a "tool" message (before the rest of the user turn). */
static int parse_tool_result(api_ctx *c, const cJSON *b, const char *param, cJSON *msgs) {
    const cJSON *id = api_opt(b, "tool_use_id"), *content = api_opt(b, "content");
    if (!cJSON_IsString(id)) return api_error_set(c->err, 400, param, "%s.tool_use_id: expected a string", param);
    char *text = NULL;
    if (cJSON_IsString(content)) {
        text = strdup(content->valuestring);
    } else if (cJSON_IsArray(content)) {
        text = strdup("");
        for (const cJSON *p = content->child; p && text; p = p->next) {
            const cJSON *t = cJSON_IsObject(p) ? api_opt(p, "text") : NULL;
            if (!cJSON_IsString(t))
                return free(text), api_error_set(c->err, 400, param, "%s.content: only text blocks are supported", param);
            text = api_concat(text, t->valuestring, strlen(t->valuestring));
        }
    } else if (!content) {
        text = strdup("");
    } else {
        return api_error_set(c->err, 400, param, "%s.content: expected a string or a list of text blocks", param);
    }
    if (!text) return api_nomem(c);
    cJSON *s = cJSON_CreateString(text);
    free(text);
    int rc = s ? api_push_message(c, msgs, "tool", s) : api_nomem(c);
    if (rc) return rc;
    cJSON *m = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    return cJSON_AddStringToObject(m, "tool_call_id", id->valuestring) ? 0 : api_nomem(c);
}

static int parse_blocks(api_ctx *c, const cJSON *arr, size_t mi, const char *role, cJSON *parts, char **thinking,
                        cJSON *msgs, cJSON *calls) {
    char param[96];
    size_t k = 0;
    for (const cJSON *b = arr->child; b; b = b->next, k++) {
        snprintf(param, sizeof param, "messages[%zu].content[%zu]", mi, k);
        const char *t;
        int rc;
        if ((rc = api_content_part(c, b, param, &t))) return rc;
        if (!strcmp(t, "text")) {
            const cJSON *text = api_opt(b, "text");
            if (!cJSON_IsString(text)) return api_error_set(c->err, 400, param, "%s.text: expected a string", param);
            if ((rc = api_add_text_part(c, parts, text->valuestring))) return rc;
        } else if (!strcmp(t, "image")) {
            if (strcmp(role, "user") != 0)
                return api_error_set(c->err, 400, param, "%s: images are only accepted in user messages", param);
            if ((rc = parse_image(c, b, param))) return rc;
            cJSON *img = cJSON_CreateObject();
            if (!img || !cJSON_AddStringToObject(img, "type", "image") || !cJSON_AddItemToArray(parts, img)) {
                cJSON_Delete(img);
                return api_nomem(c);
            }
        } else if (!strcmp(t, "thinking") && !strcmp(role, "assistant")) {
            const cJSON *th = api_opt(b, "thinking");
            if (!cJSON_IsString(th))
                return api_error_set(c->err, 400, param, "%s.thinking: expected a string", param);
            if (!(*thinking = api_concat(*thinking, th->valuestring, strlen(th->valuestring)))) return api_nomem(c);
        } else if (!strcmp(t, "redacted_thinking") && !strcmp(role, "assistant")) {
            continue; /* opaque to a local model */
        } else if (!strcmp(t, "tool_use") && !strcmp(role, "assistant")) {
            if ((rc = parse_tool_use(c, b, param, calls))) return rc;
        } else if (!strcmp(t, "tool_result") && !strcmp(role, "user")) {
            if ((rc = parse_tool_result(c, b, param, msgs))) return rc;
        } else if (!strcmp(t, "audio") || !strcmp(t, "input_audio")) {
            return api_error_set(c->err, 400, param, "%s: audio input is not supported", param);
        } else {
            return api_error_set(c->err, 400, param, "%s.type: unsupported content block type \"%.40s\"", param, t);
        }
    }
    return 0;
}

static int parse_message(api_ctx *c, const cJSON *m, size_t mi, cJSON *msgs) {
    char param[96];
    snprintf(param, sizeof param, "messages[%zu]", mi);
    if (!cJSON_IsObject(m)) return api_error_set(c->err, 400, param, "%s: expected an object", param);
    const cJSON *role = api_opt(m, "role");
    snprintf(param, sizeof param, "messages[%zu].role", mi);
    if (!cJSON_IsString(role)) return api_error_set(c->err, 400, param, "%s: expected a string", param);
    const char *r = role->valuestring;
    if (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0)
        return api_error_set(c->err, 400, param, "%s: unknown role \"%.40s\" (expected user or assistant)", param, r);
    const cJSON *content = api_opt(m, "content");
    snprintf(param, sizeof param, "messages[%zu].content", mi);
    if (cJSON_IsString(content)) {
        cJSON *s = cJSON_CreateString(content->valuestring);
        return s ? api_push_message(c, msgs, r, s) : api_nomem(c);
    }
    if (!cJSON_IsArray(content))
        return api_error_set(c->err, 400, param, "%s: %s", param,
                             content ? "expected a string or a list of content blocks" : "required");
    if (!content->child && !strcmp(r, "user"))
        return api_error_set(c->err, 400, param, "%s: empty list of content blocks", param);
    cJSON *parts = cJSON_CreateArray(), *calls = cJSON_CreateArray();
    char *thinking = NULL;
    if (!parts || !calls) return cJSON_Delete(parts), cJSON_Delete(calls), api_nomem(c);
    int n_before = cJSON_GetArraySize(msgs);
    int rc = parse_blocks(c, content, mi, r, parts, &thinking, msgs, calls);
    if (rc) {
        cJSON_Delete(parts), cJSON_Delete(calls);
        free(thinking);
        return rc;
    }
    /* a user turn of tool results only: the "tool" messages stand for it */
    if (!parts->child && cJSON_GetArraySize(msgs) > n_before && !strcmp(r, "user")) {
        cJSON_Delete(parts), cJSON_Delete(calls);
        free(thinking);
        return 0;
    }
    if ((rc = api_push_message(c, msgs, r, parts))) {
        cJSON_Delete(calls);
        free(thinking);
        return rc;
    }
    cJSON *out = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    if (calls->child) {
        if (!cJSON_AddItemToObject(out, "tool_calls", calls)) rc = api_nomem(c);
    } else {
        cJSON_Delete(calls);
    }
    if (thinking) {
        if (!cJSON_AddStringToObject(out, "reasoning_content", thinking)) rc = api_nomem(c);
        free(thinking);
    }
    return rc;
}

/* system: a string or a list of text blocks, joined by newlines. */
static int parse_system(api_ctx *c, const cJSON *body, cJSON *msgs) {
    const cJSON *sys = api_opt(body, "system");
    if (!sys) return 0;
    if (cJSON_IsString(sys)) {
        cJSON *s = cJSON_CreateString(sys->valuestring);
        return s ? api_push_message(c, msgs, "system", s) : api_nomem(c);
    }
    if (!cJSON_IsArray(sys))
        return api_error_set(c->err, 400, "system", "system: expected a string or a list of text blocks");
    char *text = NULL;
    size_t k = 0;
    char param[64];
    for (const cJSON *b = sys->child; b; b = b->next, k++) {
        snprintf(param, sizeof param, "system[%zu]", k);
        const cJSON *type = cJSON_IsObject(b) ? api_opt(b, "type") : NULL, *t = cJSON_IsObject(b) ? api_opt(b, "text") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(t)) {
            free(text);
            return api_error_set(c->err, 400, param, "%s: expected a text block {\"type\":\"text\",\"text\":...}%s",
                                 param, cJSON_IsString(type) && !strcmp(type->valuestring, "image")
                                            ? " (images are not accepted in the system prompt)" : "");
        }
        if ((k && !(text = api_concat(text, "\n", 1))) || !(text = api_concat(text, t->valuestring, strlen(t->valuestring))))
            return api_nomem(c);
    }
    if (!text) return 0;
    cJSON *s = cJSON_CreateString(text);
    free(text);
    return s ? api_push_message(c, msgs, "system", s) : api_nomem(c);
}

static int parse_thinking(api_ctx *c, const cJSON *body) {
    const cJSON *th = api_opt(body, "thinking");
    if (!th) return 0;
    if (!cJSON_IsObject(th)) return api_error_set(c->err, 400, "thinking", "thinking: expected an object");
    const cJSON *type = api_opt(th, "type");
    if (!cJSON_IsString(type))
        return api_error_set(c->err, 400, "thinking.type", "thinking.type: expected \"enabled\" or \"disabled\"");
    int on;
    if (!strcmp(type->valuestring, "enabled") || !strcmp(type->valuestring, "adaptive")) on = 1;
    else if (!strcmp(type->valuestring, "disabled")) on = 0;
    else
        return api_error_set(c->err, 400, "thinking.type",
                             "thinking.type: expected \"enabled\" or \"disabled\", got \"%.40s\"", type->valuestring);
    int64_t budget = 0;
    int rc = api_get_int(c, th, "budget_tokens", 0, INT_MAX, &budget);
    if (rc) return snprintf(c->err->param, sizeof c->err->param, "thinking.budget_tokens"), rc;
    c->req->chat_template_kwargs_json = strdup(on ? "{\"enable_thinking\":true}" : "{\"enable_thinking\":false}");
    return c->req->chat_template_kwargs_json ? 0 : api_nomem(c);
}

/* tools [{name, description, input_schema}] -> OpenAI's tools array; tool_choice
 * {type: auto | any | tool | none, name}. */
static int parse_tools(api_ctx *c, const cJSON *body) {
    api_request *r = c->req;
    const cJSON *tools = api_opt(body, "tools");
    if (tools) {
        if (!cJSON_IsArray(tools)) return api_error_set(c->err, 400, "tools", "tools: expected an array");
        cJSON *out = cJSON_CreateArray();
        if (!out) return api_nomem(c);
        size_t k = 0;
        char param[64];
        for (const cJSON *t = tools->child; t; t = t->next, k++) {
            snprintf(param, sizeof param, "tools[%zu]", k);
            const cJSON *name = cJSON_IsObject(t) ? api_opt(t, "name") : NULL;
            const cJSON *desc = cJSON_IsObject(t) ? api_opt(t, "description") : NULL;
            const cJSON *schema = cJSON_IsObject(t) ? api_opt(t, "input_schema") : NULL;
            if (!cJSON_IsString(name) || (schema && !cJSON_IsObject(schema))) {
                cJSON_Delete(out);
                return api_error_set(c->err, 400, param, "%s: expected {\"name\": string, \"input_schema\": object}",
                                     param);
            }
            cJSON *o = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            cJSON_AddItemToArray(out, o);
            cJSON_AddStringToObject(o, "type", "function");
            cJSON_AddItemToObject(o, "function", fn);
            cJSON_AddStringToObject(fn, "name", name->valuestring);
            if (cJSON_IsString(desc)) cJSON_AddStringToObject(fn, "description", desc->valuestring);
            cJSON_AddItemToObject(fn, "parameters",
                                  schema ? cJSON_Duplicate(schema, 1) : cJSON_Parse("{\"type\":\"object\",\"properties\":{}}"));
        }
        r->tools_json = cJSON_PrintUnformatted(out);
        cJSON_Delete(out);
        if (!r->tools_json) return api_nomem(c);
    }
    const cJSON *tc = api_opt(body, "tool_choice");
    if (!tc) return 0;
    const cJSON *type = cJSON_IsObject(tc) ? api_opt(tc, "type") : NULL;
    if (!cJSON_IsString(type))
        return api_error_set(c->err, 400, "tool_choice", "tool_choice: expected an object with a string \"type\"");
    const char *t = type->valuestring;
    if (!strcmp(t, "auto")) r->tool_choice = API_TOOLS_AUTO;
    else if (!strcmp(t, "none")) r->tool_choice = API_TOOLS_NONE;
    else if (!strcmp(t, "any")) r->tool_choice = API_TOOLS_REQUIRED;
    else if (!strcmp(t, "tool")) {
        const cJSON *name = api_opt(tc, "name");
        if (!cJSON_IsString(name))
            return api_error_set(c->err, 400, "tool_choice.name", "tool_choice.name: expected a string");
        r->tool_choice = API_TOOLS_NAMED;
        if (!(r->tool_choice_name = strdup(name->valuestring))) return api_nomem(c);
    } else {
        return api_error_set(c->err, 400, "tool_choice.type",
                             "tool_choice.type: expected \"auto\", \"any\", \"tool\" or \"none\", got \"%.40s\"", t);
    }
    if (r->tool_choice >= API_TOOLS_REQUIRED && !r->tools_json)
        return api_error_set(c->err, 400, "tool_choice", "tool_choice: a call is required but no tools are given");
    return 0;
}

int api_parse_anthropic(api_ctx *c, const cJSON *body) {
    api_request *r = c->req;
    const char *model = NULL;
    double temp = r->sampling.temperature, top_p = r->sampling.top_p;
    int64_t top_k = r->sampling.top_k, max_tokens = 0, image_tokens = 0;
    int rc;
    if ((rc = api_get_string(c, body, "model", 0, &model))) return rc;
    if (model && !(r->model = strdup(model))) return api_nomem(c);
    if (r->kind == API_ANTHROPIC_MESSAGES && !api_opt(body, "max_tokens"))
        return api_error_set(c->err, 400, "max_tokens", "max_tokens: required");
    if ((rc = api_get_int(c, body, "max_tokens", 1, INT_MAX, &max_tokens)) ||
        (rc = api_get_number(c, body, "temperature", 0, 1, &temp)) ||
        (rc = api_get_number(c, body, "top_p", 0, 1, &top_p)) ||
        (rc = api_get_int(c, body, "top_k", 0, INT_MAX, &top_k)) ||
        (rc = api_get_stop(c, body, "stop_sequences", 0)) || (rc = api_get_bool(c, body, "stream", &r->stream)) ||
        (rc = api_get_int(c, body, "image_tokens", 1, 1 << 20, &image_tokens)) || (rc = parse_thinking(c, body)) ||
        (rc = parse_tools(c, body)))
        return rc;
    r->image_tokens = (int)image_tokens;
    const cJSON *arr = api_opt(body, "messages");
    if (!arr) return api_error_set(c->err, 400, "messages", "messages: required");
    if (!cJSON_IsArray(arr)) return api_error_set(c->err, 400, "messages", "messages: expected an array");
    if (!arr->child) return api_error_set(c->err, 400, "messages", "messages: empty, at least one message is required");
    cJSON *msgs = cJSON_CreateArray();
    if (!msgs) return api_nomem(c);
    rc = parse_system(c, body, msgs);
    size_t i = 0;
    for (const cJSON *m = arr->child; m && !rc; m = m->next, i++) rc = parse_message(c, m, i, msgs);
    if (!rc && !(r->messages_json = cJSON_PrintUnformatted(msgs))) rc = api_nomem(c);
    cJSON_Delete(msgs);
    if (rc) return rc;
    r->sampling.temperature = (float)temp;
    r->sampling.top_p = (float)top_p;
    r->sampling.top_k = (int)top_k;
    r->max_tokens = (int)max_tokens;
    r->include_usage = 1;
    return 0;
}

/* ---- responses ---- */

const char *api_anthropic_stop_reason(const char *finish_reason, const char *stop_sequence) {
    if (finish_reason && !strcmp(finish_reason, "length")) return "max_tokens";
    if (finish_reason && !strcmp(finish_reason, "tool_calls")) return "tool_use";
    if (stop_sequence) return "stop_sequence";
    return "end_turn";
}

/* {"id","name","arguments"} -> a tool_use block (input {} when streamed: the input follows as deltas). */
static cJSON *tool_use_block(const cJSON *tc, int with_input) {
    cJSON *b = cJSON_CreateObject();
    const cJSON *id = cJSON_GetObjectItem(tc, "id"), *nm = cJSON_GetObjectItem(tc, "name"),
                *args = cJSON_GetObjectItem(tc, "arguments");
    cJSON_AddStringToObject(b, "type", "tool_use");
    cJSON_AddStringToObject(b, "id", cJSON_IsString(id) ? id->valuestring : "");
    cJSON_AddStringToObject(b, "name", cJSON_IsString(nm) ? nm->valuestring : "");
    cJSON *in = with_input && cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
    cJSON_AddItemToObject(b, "input", in ? in : cJSON_CreateObject());
    return b;
}

static cJSON *message_obj(const api_result *r, int streaming) {
    cJSON *m = cJSON_CreateObject(), *content = cJSON_CreateArray(), *usage = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", r->id ? r->id : "");
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "model", r->model ? r->model : "");
    cJSON_AddItemToObject(m, "content", content);
    if (streaming) {
        cJSON_AddNullToObject(m, "stop_reason");
        cJSON_AddNullToObject(m, "stop_sequence");
    } else {
        if (r->reasoning) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "thinking");
            cJSON_AddStringToObject(b, "thinking", r->reasoning);
            cJSON_AddStringToObject(b, "signature", "");
            cJSON_AddItemToArray(content, b);
        }
        cJSON *calls = r->tool_calls_json ? cJSON_Parse(r->tool_calls_json) : NULL;
        if (!calls || !calls->child || (r->text && *r->text)) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "text");
            cJSON_AddStringToObject(b, "text", r->text ? r->text : "");
            cJSON_AddItemToArray(content, b);
        }
        for (const cJSON *tc = calls ? calls->child : NULL; tc; tc = tc->next) cJSON_AddItemToArray(content, tool_use_block(tc, 1));
        cJSON_Delete(calls);
        cJSON_AddStringToObject(m, "stop_reason", api_anthropic_stop_reason(r->finish_reason, r->stop_sequence));
        if (r->stop_sequence) cJSON_AddStringToObject(m, "stop_sequence", r->stop_sequence);
        else cJSON_AddNullToObject(m, "stop_sequence");
    }
    cJSON_AddItemToObject(m, "usage", usage);
    cJSON_AddNumberToObject(usage, "input_tokens", (double)r->prompt_tokens);
    cJSON_AddNumberToObject(usage, "output_tokens", (double)(streaming ? 0 : r->completion_tokens));
    return m;
}

char *api_anthropic_message_response(const api_result *r) { return api_print(message_obj(r, 0)); }

char *api_anthropic_count_tokens_response(int64_t input_tokens) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "input_tokens", (double)input_tokens);
    return api_print(root);
}

/* ---- streaming ---- */

static char *append_event(char *out, const char *event, cJSON *j) {
    if (!out) { cJSON_Delete(j); return NULL; }
    char *e = api_sse(event, j);
    if (!e) { free(out); return NULL; }
    out = api_concat(out, e, strlen(e));
    free(e);
    return out;
}

static cJSON *typed(const char *type) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", type);
    return j;
}

static char *block_stop(api_stream *s, char *out) {
    if (s->block_type == 0) return out;
    cJSON *j = typed("content_block_stop");
    cJSON_AddNumberToObject(j, "index", s->block);
    s->block_type = 0;
    return append_event(out, "content_block_stop", j);
}

/* Make sure a block of the type (1 thinking, 2 text) is open. */
static char *block_open(api_stream *s, char *out, int type) {
    if (s->block_type == type) return out;
    out = block_stop(s, out);
    s->block++;
    s->block_type = type;
    cJSON *j = typed("content_block_start"), *b = typed(type == 1 ? "thinking" : "text");
    cJSON_AddNumberToObject(j, "index", s->block);
    if (type == 1) {
        cJSON_AddStringToObject(b, "thinking", "");
        cJSON_AddStringToObject(b, "signature", "");
    } else {
        cJSON_AddStringToObject(b, "text", "");
    }
    cJSON_AddItemToObject(j, "content_block", b);
    return append_event(out, "content_block_start", j);
}

static char *block_delta(api_stream *s, char *out, int type, const char *p, size_t n) {
    out = block_open(s, out, type);
    char *t = malloc(n + 1);
    if (!t) { free(out); return NULL; }
    memcpy(t, p, n);
    t[n] = 0;
    cJSON *j = typed("content_block_delta"), *d = typed(type == 1 ? "thinking_delta" : "text_delta");
    cJSON_AddNumberToObject(j, "index", s->block);
    cJSON_AddStringToObject(d, type == 1 ? "thinking" : "text", t);
    free(t);
    cJSON_AddItemToObject(j, "delta", d);
    return append_event(out, "content_block_delta", j);
}

char *api_anthropic_stream_begin(api_stream *s) {
    cJSON *j = typed("message_start");
    cJSON_AddItemToObject(j, "message", message_obj(&s->meta, 1));
    return append_event(strdup(""), "message_start", j);
}

char *api_anthropic_stream_delta(api_stream *s, const char *r, size_t rn, const char *t, size_t tn) {
    char *out = strdup("");
    if (rn) out = block_delta(s, out, 1, r, rn);
    if (tn) out = block_delta(s, out, 2, t, tn);
    return out;
}

char *api_anthropic_stream_tool_calls(api_stream *s, const char *calls_json) {
    cJSON *calls = calls_json ? cJSON_Parse(calls_json) : NULL;
    char *out = strdup("");
    for (const cJSON *tc = calls ? calls->child : NULL; tc && out; tc = tc->next) {
        out = block_stop(s, out);
        s->block++;
        s->n_tool_blocks++;
        cJSON *j = typed("content_block_start");
        cJSON_AddNumberToObject(j, "index", s->block);
        cJSON_AddItemToObject(j, "content_block", tool_use_block(tc, 0));
        out = append_event(out, "content_block_start", j);
        const cJSON *args = cJSON_GetObjectItem(tc, "arguments");
        j = typed("content_block_delta");
        cJSON *d = typed("input_json_delta");
        cJSON_AddNumberToObject(j, "index", s->block);
        cJSON_AddStringToObject(d, "partial_json", cJSON_IsString(args) ? args->valuestring : "{}");
        cJSON_AddItemToObject(j, "delta", d);
        out = append_event(out, "content_block_delta", j);
        j = typed("content_block_stop");
        cJSON_AddNumberToObject(j, "index", s->block);
        out = append_event(out, "content_block_stop", j);
    }
    cJSON_Delete(calls);
    return out;
}

char *api_anthropic_stream_end(api_stream *s, const char *finish_reason, const char *stop_sequence,
                               int64_t completion_tokens) {
    char *out = strdup("");
    /* the message always has a text block, as the non-stream one does (unless it made tool calls) */
    if (s->block_type != 2 && !s->n_tool_blocks) out = block_open(s, out, 2);
    out = block_stop(s, out);
    cJSON *j = typed("message_delta"), *d = cJSON_CreateObject(), *u = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "stop_reason", api_anthropic_stop_reason(finish_reason, stop_sequence));
    if (stop_sequence) cJSON_AddStringToObject(d, "stop_sequence", stop_sequence);
    else cJSON_AddNullToObject(d, "stop_sequence");
    cJSON_AddItemToObject(j, "delta", d);
    cJSON_AddNumberToObject(u, "output_tokens", (double)completion_tokens);
    cJSON_AddItemToObject(j, "usage", u);
    out = append_event(out, "message_delta", j);
    return append_event(out, "message_stop", typed("message_stop"));
}
