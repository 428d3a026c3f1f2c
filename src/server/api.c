/*
 * api.c — request parsing shared by both APIs, error bodies, the streaming
 * sequencer and the reasoning splitter. The API-specific halves are
 * api_openai.c and api_anthropic.c.
 */
#include "server/api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/base64.h"
#include "server/api_int.h"
#include "text/tokenizer_unicode.h"

api_limits api_limits_default(void) {
    api_limits l = {.max_body = 32u << 20, .max_depth = 64, .max_images = 32, .max_stop = 16};
    return l;
}

/* ---- errors ---- */

static const char *type_for_status(int s) {
    switch (s) {
    case 400: case 413: case 422: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return "api_error";
    }
}

int api_error_set(api_error *e, int http_status, const char *param, const char *fmt, ...) {
    if (!e) return http_status;
    e->http_status = http_status;
    snprintf(e->type, sizeof e->type, "%s", type_for_status(http_status));
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    /* quoted request text is cut at a byte count ("%.40s") and the buffer may
     * truncate: keep the message well-formed UTF-8 for the JSON body */
    unsigned char *m = (unsigned char *)e->message;
    size_t n = strlen(e->message), i = 0, o = 0, bad;
    while (i < n) {
        size_t k = tok_utf8_check_one(m + i, n - i, &bad);
        if (!k) { i += bad; continue; } /* drop the ill-formed bytes */
        memmove(m + o, m + i, k);
        o += k;
        i += k;
    }
    m[o] = 0;
    return http_status;
}

char *api_print(cJSON *j) {
    if (!j) return NULL;
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

char *api_sse(const char *event, cJSON *j) {
    char *data = api_print(j);
    if (!data) return NULL;
    size_t n = strlen(data) + (event ? strlen(event) : 0) + 32;
    char *out = malloc(n);
    if (out) {
        if (event) snprintf(out, n, "event: %s\ndata: %s\n\n", event, data);
        else snprintf(out, n, "data: %s\n\n", data);
    }
    free(data);
    return out;
}

char *api_error_json(int anthropic, const api_error *e) {
    cJSON *root = cJSON_CreateObject(), *inner = cJSON_CreateObject();
    if (!root || !inner) { cJSON_Delete(root); cJSON_Delete(inner); return NULL; }
    if (anthropic) {
        const char *type = e->http_status == 413 ? "request_too_large"
                         : e->http_status >= 500 && e->http_status != 503 ? "api_error"
                         : e->type[0] ? e->type : type_for_status(e->http_status);
        cJSON_AddStringToObject(root, "type", "error");
        cJSON_AddItemToObject(root, "error", inner);
        cJSON_AddStringToObject(inner, "type", type);
        cJSON_AddStringToObject(inner, "message", e->message);
    } else {
        /* OpenAI reports server failures as "server_error" */
        const char *type = e->http_status >= 500 ? "server_error" : e->type[0] ? e->type : type_for_status(e->http_status);
        cJSON_AddItemToObject(root, "error", inner);
        cJSON_AddStringToObject(inner, "message", e->message);
        cJSON_AddStringToObject(inner, "type", type);
        if (e->param[0]) cJSON_AddStringToObject(inner, "param", e->param);
        else cJSON_AddNullToObject(inner, "param");
        cJSON_AddNullToObject(inner, "code");
    }
    return api_print(root);
}

int api_nomem(api_ctx *c) { return api_error_set(c->err, 500, NULL, "out of memory"); }

/* ---- typed getters ---- */

const cJSON *api_opt(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return j && !cJSON_IsNull(j) ? j : NULL;
}

int api_content_part(api_ctx *c, const cJSON *part, const char *param, const char **type) {
    if (!cJSON_IsObject(part)) return api_error_set(c->err, 400, param, "%s: expected an object", param);
    const cJSON *t = api_opt(part, "type");
    if (!cJSON_IsString(t)) return api_error_set(c->err, 400, param, "%s.type: expected a string", param);
    *type = t->valuestring;
    return 0;
}

static const char *type_name(const cJSON *j) {
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "null";
}

int api_get_string(api_ctx *c, const cJSON *obj, const char *key, int required, const char **out) {
    const cJSON *j = api_opt(obj, key);
    *out = NULL;
    if (!j) return required ? api_error_set(c->err, 400, key, "%s: required", key) : 0;
    if (!cJSON_IsString(j)) return api_error_set(c->err, 400, key, "%s: expected a string, got %s", key, type_name(j));
    *out = j->valuestring;
    return 0;
}

int api_get_bool(api_ctx *c, const cJSON *obj, const char *key, int *out) {
    const cJSON *j = api_opt(obj, key);
    if (!j) return 0;
    if (!cJSON_IsBool(j)) return api_error_set(c->err, 400, key, "%s: expected a boolean, got %s", key, type_name(j));
    *out = cJSON_IsTrue(j);
    return 0;
}

int api_get_number(api_ctx *c, const cJSON *obj, const char *key, double lo, double hi, double *out) {
    const cJSON *j = api_opt(obj, key);
    if (!j) return 0;
    if (!cJSON_IsNumber(j)) return api_error_set(c->err, 400, key, "%s: expected a number, got %s", key, type_name(j));
    double v = j->valuedouble;
    if (!isfinite(v) || v < lo || v > hi)
        return api_error_set(c->err, 400, key, "%s: %g is out of range [%g, %g]", key, v, lo, hi);
    *out = v;
    return 0;
}

int api_get_int(api_ctx *c, const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *j = api_opt(obj, key);
    if (!j) return 0;
    if (!cJSON_IsNumber(j)) return api_error_set(c->err, 400, key, "%s: expected an integer, got %s", key, type_name(j));
    double v = j->valuedouble;
    if (!isfinite(v) || v != floor(v)) return api_error_set(c->err, 400, key, "%s: expected an integer, got %g", key, v);
    if (v < (double)lo || v > (double)hi)
        return api_error_set(c->err, 400, key, "%s: %.0f is out of range [%lld, %lld]", key, v, (long long)lo,
                             (long long)hi);
    *out = (int64_t)v;
    return 0;
}

int api_get_stop(api_ctx *c, const cJSON *obj, const char *key, int allow_string) {
    const cJSON *j = api_opt(obj, key);
    if (!j) return 0;
    api_request *r = c->req;
    size_t n = cJSON_IsString(j) && allow_string ? 1 : cJSON_IsArray(j) ? (size_t)cJSON_GetArraySize(j) : 0;
    if (!cJSON_IsArray(j) && !(allow_string && cJSON_IsString(j)))
        return api_error_set(c->err, 400, key, "%s: expected %s, got %s", key,
                             allow_string ? "a string or an array of strings" : "an array of strings", type_name(j));
    if (n > c->lim->max_stop)
        return api_error_set(c->err, 400, key, "%s: %zu stop strings, at most %zu allowed", key, n, c->lim->max_stop);
    if (n == 0) return 0;
    r->stop = calloc(n, sizeof *r->stop);
    if (!r->stop) return api_nomem(c);
    const cJSON *it = cJSON_IsString(j) ? j : j->child;
    for (size_t i = 0; i < n; i++, it = it->next) {
        if (!cJSON_IsString(it))
            return api_error_set(c->err, 400, key, "%s[%zu]: expected a string, got %s", key, i, type_name(it));
        if (!it->valuestring[0]) return api_error_set(c->err, 400, key, "%s[%zu]: empty stop string", key, i);
        if (!(r->stop[i] = strdup(it->valuestring))) return api_nomem(c);
        r->n_stop = i + 1;
    }
    return 0;
}

/* ---- images ---- */

/* data:[<media type>][;param=value]*;base64,<payload> with a strict base64 payload. */
static int check_data_url(api_ctx *c, const char *url, const char *param) {
    const char *comma = strchr(url, ',');
    if (!comma) return api_error_set(c->err, 400, param, "%s: data: URL without a ',' before its payload", param);
    size_t head = (size_t)(comma - url); /* "data:" + media type + ";base64" */
    const char *b64 = head >= 5 + 7 && strncasecmp(comma - 7, ";base64", 7) == 0 ? comma - 7 : NULL;
    if (!b64) return api_error_set(c->err, 400, param, "%s: only base64 data: URLs are accepted", param);
    if (strncasecmp(url + 5, "image/", 6) != 0 && url + 5 != b64)
        return api_error_set(c->err, 400, param, "%s: data: URL media type is not image/*", param);
    const char *p = comma + 1;
    size_t n = strlen(p);
    if (n == 0) return api_error_set(c->err, 400, param, "%s: empty image data", param);
    uint8_t *tmp = malloc(base64_decoded_max(n));
    if (!tmp) return api_nomem(c);
    size_t got = 0, bad = 0;
    int rc = base64_decode(p, n, tmp, &got, &bad);
    free(tmp);
    if (rc != 0) return api_error_set(c->err, 400, param, "%s: invalid base64 at offset %zu", param, bad);
    return 0;
}

int api_add_image(api_ctx *c, const char *url, const char *param) {
    api_request *r = c->req;
    if (r->n_images >= c->lim->max_images)
        return api_error_set(c->err, 400, param, "too many images: at most %zu per request", c->lim->max_images);
    if (strncasecmp(url, "data:", 5) == 0) {
        int rc = check_data_url(c, url, param);
        if (rc) return rc;
    } else if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0) {
        const char *host = url + (url[4] == ':' ? 7 : 8);
        if (!*host || *host == '/') return api_error_set(c->err, 400, param, "%s: URL without a host", param);
        for (const char *q = url; *q; q++)
            if ((unsigned char)*q <= 0x20 || *q == 0x7f)
                return api_error_set(c->err, 400, param, "%s: URL contains a space or control character", param);
    } else {
        return api_error_set(c->err, 400, param, "%s: unsupported image URL (expected data:, http:// or https://)",
                             param);
    }
    if (r->n_images == c->cap_images) {
        size_t cap = c->cap_images ? c->cap_images * 2 : 4;
        char **p = realloc(r->images, cap * sizeof *p);
        if (!p) return api_nomem(c);
        r->images = p;
        c->cap_images = cap;
    }
    char *copy = strdup(url);
    if (!copy) return api_nomem(c);
    /* schemes are case-insensitive (RFC 3986 §3.1); consumers see them in lower case */
    for (char *q = copy; *q && *q != ':'; q++)
        if (*q >= 'A' && *q <= 'Z') *q = (char)(*q - 'A' + 'a');
    r->images[r->n_images++] = copy;
    return 0;
}

int api_add_text_part(api_ctx *c, cJSON *parts, const char *s) {
    cJSON *p = cJSON_CreateObject();
    if (!p || !cJSON_AddStringToObject(p, "type", "text") || !cJSON_AddStringToObject(p, "text", s) ||
        !cJSON_AddItemToArray(parts, p)) {
        cJSON_Delete(p);
        return api_nomem(c);
    }
    return 0;
}

/* ---- entry point ---- */

/* What cJSON does not check itself, before it parses: array/object nesting
 * past max (cJSON recurses per level) -> 1, and a raw control byte (below
 * 0x20, NUL included) inside a string, which JSON (RFC 8259 section 7) requires
 * to be escaped and which would otherwise cut the C string cJSON returns
 * -> 2 with its offset in *at. 0 when neither. */
static int json_prescan(const char *s, size_t n, int max, size_t *at) {
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (in_str) {
            if (ch < 0x20) {
                *at = i;
                return 2;
            }
            if (ch == '\\') i++;
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max) return 1;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return 0;
}

void api_request_free(api_request *r) {
    if (!r) return;
    free(r->model);
    free(r->messages_json);
    free(r->prompt);
    for (size_t i = 0; i < r->n_images; i++) free(r->images[i]);
    free(r->images);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->chat_template_kwargs_json);
    free(r->tools_json);
    free(r->tool_choice_name);
    free(r->schema_json);
    memset(r, 0, sizeof *r);
}

int api_parse_request(api_kind kind, const char *body, size_t len, const api_limits *lim, api_request *out,
                      api_error *err) {
    api_limits def = api_limits_default();
    if (!lim) lim = &def;
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->sampling = optiq_sampling_default();
    api_error scratch;
    if (!err) err = &scratch;
    memset(err, 0, sizeof *err);
    api_ctx c = {.lim = lim, .req = out, .err = err};

    if (len > lim->max_body)
        return api_error_set(err, 413, NULL, "request body of %zu bytes is larger than the limit of %zu bytes", len,
                             lim->max_body);
    if (!body || len == 0) return api_error_set(err, 400, NULL, "empty request body: expected a JSON object");
    if (!tok_utf8_valid(body, len)) return api_error_set(err, 400, NULL, "request body is not valid UTF-8");
    size_t bad_at = 0;
    int scan = json_prescan(body, len, lim->max_depth, &bad_at);
    if (scan == 1)
        return api_error_set(err, 400, NULL, "request body nests arrays/objects deeper than %d levels", lim->max_depth);
    if (scan == 2)
        return api_error_set(err, 400, NULL,
                             "request body is not valid JSON (unescaped control character 0x%02x in a string at byte %zu)",
                             (unsigned char)body[bad_at], bad_at);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return api_error_set(err, 400, NULL, "request body is not valid JSON (error near byte %zu)", at);
    }
    /* trailing bytes other than whitespace after the document */
    for (const char *p = end; p && p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return api_error_set(err, 400, NULL, "request body is not valid JSON (trailing data at byte %zu)",
                                 (size_t)(p - body));
        }
    }
    int rc;
    if (!cJSON_IsObject(root))
        rc = api_error_set(err, 400, NULL, "request body must be a JSON object, got %s", type_name(root));
    else
        rc = api_kind_is_anthropic(kind) ? api_parse_anthropic(&c, root) : api_parse_openai(&c, root);
    cJSON_Delete(root);
    if (rc) api_request_free(out), out->kind = kind;
    return rc;
}

/* ---- streaming ---- */

void api_stream_init(api_stream *s, api_kind kind, const char *id, int64_t created, const char *model,
                     int64_t prompt_tokens, int include_usage) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->meta.id = id;
    s->meta.created = created;
    s->meta.model = model;
    s->meta.prompt_tokens = prompt_tokens;
    s->include_usage = include_usage || api_kind_is_anthropic(kind);
    s->block = -1;
}


/* ---- shared builders ---- */

int api_push_message(api_ctx *c, cJSON *msgs, const char *role, cJSON *content) {
    cJSON *m = cJSON_CreateObject();
    if (!m || !cJSON_AddStringToObject(m, "role", role) || !cJSON_AddItemToArray(msgs, m)) {
        cJSON_Delete(m);
        cJSON_Delete(content);
        return api_nomem(c);
    }
    if (content && !cJSON_AddItemToObject(m, "content", content)) {
        cJSON_Delete(content);
        return api_nomem(c);
    }
    return 0;
}

char *api_concat(char *acc, const char *s, size_t n) {
    size_t a = acc ? strlen(acc) : 0;
    char *p = realloc(acc, a + n + 1);
    if (!p) { free(acc); return NULL; }
    memcpy(p + a, s, n);
    p[a + n] = 0;
    return p;
}

char *api_stream_begin(api_stream *s) {
    return api_kind_is_anthropic(s->kind) ? api_anthropic_stream_begin(s) : api_openai_stream_begin(s);
}

char *api_stream_delta(api_stream *s, const char *reasoning, size_t reasoning_len, const char *text,
                       size_t text_len) {
    if (!reasoning) reasoning_len = 0;
    if (!text) text_len = 0;
    return api_kind_is_anthropic(s->kind) ? api_anthropic_stream_delta(s, reasoning, reasoning_len, text, text_len)
                                          : api_openai_stream_delta(s, reasoning, reasoning_len, text, text_len);
}

char *api_stream_end(api_stream *s, const char *finish_reason, const char *stop_sequence,
                     int64_t completion_tokens) {
    char *out = api_kind_is_anthropic(s->kind)
                    ? api_anthropic_stream_end(s, finish_reason, stop_sequence, completion_tokens)
                    : api_openai_stream_end(s, finish_reason, completion_tokens);
    free(s->logprobs_json);
    s->logprobs_json = NULL;
    return out;
}

char *api_stream_tool_calls(api_stream *s, const char *calls_json) {
    return api_kind_is_anthropic(s->kind) ? api_anthropic_stream_tool_calls(s, calls_json)
                                          : api_openai_stream_tool_calls(s, calls_json);
}
