/*
 * tools.c — tool-call syntaxes of Qwen3.5 and Gemma-4 (see tools.h).
 *
 * Parsing follows mlx-lm's tool parsers (tool_parsers/qwen3_coder.py and
 * gemma4.py): Qwen's parameter values lose one leading and one trailing line
 * break, then a parameter the tool declares as a string stays text and any
 * other value is read as JSON when it parses (text otherwise); Gemma's
 * arguments are converted to JSON (<|"|>...<|"|> strings, bare keys quoted).
 */
#include "server/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

static const char QWEN_OPEN[] = "<tool_call>", QWEN_CLOSE[] = "</tool_call>";
static const char GEMMA_OPEN[] = "<|tool_call>", GEMMA_CLOSE[] = "<tool_call|>";
static const char GQ[] = "<|\"|>";

tool_syntax tools_syntax_for(const char *model_type) {
    return model_type && !strncmp(model_type, "gemma4", 6) ? TOOLS_GEMMA : TOOLS_QWEN;
}

static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return k <= n ? memmem(s, n, needle, k) : NULL;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

size_t tools_safe_prefix(tool_syntax syn, const char *text, size_t len) {
    const char *open = syn == TOOLS_GEMMA ? GEMMA_OPEN : QWEN_OPEN;
    const char *hit = find(text, len, open);
    if (hit) return (size_t)(hit - text);
    size_t k = strlen(open) - 1;
    if (k > len) k = len;
    for (; k > 0; k--)
        if (!memcmp(text + len - k, open, k)) break;
    return len - k;
}

/* ---- the tools array ---- */

static const cJSON *tool_function(const cJSON *tools, const char *name) {
    for (const cJSON *t = tools ? tools->child : NULL; t; t = t->next) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name)) return f;
    }
    return NULL;
}

static const char *param_type(const cJSON *tools, const char *fn, const char *key) {
    const cJSON *f = tool_function(tools, fn);
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(f, "parameters"), "properties");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(props, key), "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* ---- Qwen ---- */

/* The body between <tool_call> and </tool_call> -> name and arguments object. */
static int parse_qwen_body(const char *b, size_t n, const cJSON *tools, char **name, cJSON **args) {
    while (n && (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r')) b++, n--;
    if (n && *b == '{') { /* the JSON form */
        char *t = dupn(b, n);
        cJSON *j = t ? cJSON_Parse(t) : NULL;
        free(t);
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(j, "name");
        cJSON *a = cJSON_DetachItemFromObjectCaseSensitive(j, "arguments");
        if (!cJSON_IsString(nm) || (a && !cJSON_IsObject(a)) || !(*name = strdup(nm->valuestring))) {
            cJSON_Delete(a), cJSON_Delete(j);
            return 0;
        }
        *args = a ? a : cJSON_CreateObject();
        cJSON_Delete(j);
        return *args != NULL;
    }
    static const char fo[] = "<function=", fc[] = "</function>", po[] = "<parameter=", pc[] = "</parameter>";
    if (n < sizeof fo - 1 || memcmp(b, fo, sizeof fo - 1)) return 0;
    const char *p = b + sizeof fo - 1, *end = b + n;
    const char *gt = memchr(p, '>', (size_t)(end - p));
    if (!gt || gt == p) return 0;
    *name = dupn(p, (size_t)(gt - p));
    *args = cJSON_CreateObject();
    if (!*name || !*args) goto fail;
    p = gt + 1;
    for (;;) {
        while (p < end && (*p == '\n' || *p == ' ' || *p == '\r' || *p == '\t')) p++;
        if ((size_t)(end - p) >= sizeof fc - 1 && !memcmp(p, fc, sizeof fc - 1)) return 1;
        if ((size_t)(end - p) < sizeof po - 1 || memcmp(p, po, sizeof po - 1)) goto fail;
        p += sizeof po - 1;
        gt = memchr(p, '>', (size_t)(end - p));
        if (!gt) goto fail;
        char *key = dupn(p, (size_t)(gt - p));
        const char *v = gt + 1, *ve = find(v, (size_t)(end - v), pc);
        if (!key || !ve) {
            free(key);
            goto fail;
        }
        p = ve + sizeof pc - 1;
        if (v < ve && *v == '\n') v++;
        if (ve > v && ve[-1] == '\n') ve--;
        char *val = dupn(v, (size_t)(ve - v));
        const char *type = param_type(tools, *name, key);
        cJSON *jv = NULL;
        if (val && !(type && !strcmp(type, "string"))) jv = cJSON_Parse(val);
        if (!jv && val) jv = cJSON_CreateString(val);
        free(val);
        if (!jv || !cJSON_AddItemToObject(*args, key, jv)) {
            cJSON_Delete(jv);
            free(key);
            goto fail;
        }
        free(key);
    }
fail:
    free(*name), *name = NULL;
    cJSON_Delete(*args), *args = NULL;
    return 0;
}

/* ---- Gemma ---- */

typedef struct gp {
    const char *p, *end;
} gp;

static cJSON *gemma_value(gp *g, int depth);

static int gemma_lit(gp *g, const char *s) {
    size_t k = strlen(s);
    if ((size_t)(g->end - g->p) < k || memcmp(g->p, s, k)) return 0;
    g->p += k;
    return 1;
}

static char *gemma_string(gp *g) {
    if (!gemma_lit(g, GQ)) return NULL;
    const char *e = find(g->p, (size_t)(g->end - g->p), GQ);
    if (!e) return NULL;
    char *s = dupn(g->p, (size_t)(e - g->p));
    g->p = e + sizeof GQ - 1;
    return s;
}

/* key:value,... up to '}' (the '{' already read). */
static cJSON *gemma_object(gp *g, int depth) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (gemma_lit(g, "}")) return o;
    for (;;) {
        char *key;
        if ((size_t)(g->end - g->p) >= sizeof GQ - 1 && !memcmp(g->p, GQ, sizeof GQ - 1)) {
            key = gemma_string(g);
        } else {
            const char *c = memchr(g->p, ':', (size_t)(g->end - g->p));
            key = c && c > g->p ? dupn(g->p, (size_t)(c - g->p)) : NULL;
            if (key) g->p = c;
        }
        cJSON *v = key && gemma_lit(g, ":") ? gemma_value(g, depth + 1) : NULL;
        if (!v || !cJSON_AddItemToObject(o, key, v)) {
            cJSON_Delete(v), free(key), cJSON_Delete(o);
            return NULL;
        }
        free(key);
        if (gemma_lit(g, "}")) return o;
        if (!gemma_lit(g, ",")) break;
    }
    cJSON_Delete(o);
    return NULL;
}

static cJSON *gemma_value(gp *g, int depth) {
    if (depth > 64 || g->p >= g->end) return NULL;
    if (*g->p == '<') {
        char *s = gemma_string(g);
        cJSON *j = s ? cJSON_CreateString(s) : NULL;
        free(s);
        return j;
    }
    if (gemma_lit(g, "{")) return gemma_object(g, depth);
    if (gemma_lit(g, "[")) {
        cJSON *a = cJSON_CreateArray();
        if (!a || gemma_lit(g, "]")) return a;
        for (;;) {
            cJSON *v = gemma_value(g, depth + 1);
            if (!v || !cJSON_AddItemToArray(a, v)) break;
            if (gemma_lit(g, "]")) return a;
            if (!gemma_lit(g, ",")) break;
        }
        cJSON_Delete(a);
        return NULL;
    }
    if (gemma_lit(g, "true")) return cJSON_CreateTrue();
    if (gemma_lit(g, "false")) return cJSON_CreateFalse();
    if (gemma_lit(g, "null")) return cJSON_CreateNull();
    const char *q = g->p; /* a number, up to the next delimiter */
    while (q < g->end && *q != ',' && *q != '}' && *q != ']') q++;
    char *t = dupn(g->p, (size_t)(q - g->p));
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    free(t);
    if (j && !cJSON_IsNumber(j)) cJSON_Delete(j), j = NULL;
    if (j) g->p = q;
    return j;
}

static int parse_gemma_body(const char *b, size_t n, char **name, cJSON **args) {
    gp g = {b, b + n};
    if (!gemma_lit(&g, "call:")) return 0;
    const char *br = memchr(g.p, '{', (size_t)(g.end - g.p));
    if (!br || br == g.p) return 0;
    *name = dupn(g.p, (size_t)(br - g.p));
    g.p = br + 1;
    *args = *name ? gemma_object(&g, 0) : NULL;
    if (!*args || g.p != g.end) {
        free(*name), *name = NULL;
        cJSON_Delete(*args), *args = NULL;
        return 0;
    }
    return 1;
}

/* ---- parse ---- */

static int add_content(tool_parse *out, size_t *len, const char *s, size_t n) {
    char *c = realloc(out->content, *len + n + 1);
    if (!c) return 0;
    memcpy(c + *len, s, n);
    *len += n;
    c[*len] = 0;
    out->content = c;
    return 1;
}

int tools_parse(tool_syntax syn, const char *text, size_t len, const cJSON *tools, const char *id_prefix,
                tool_parse *out) {
    memset(out, 0, sizeof *out);
    const char *open = syn == TOOLS_GEMMA ? GEMMA_OPEN : QWEN_OPEN, *close = syn == TOOLS_GEMMA ? GEMMA_CLOSE : QWEN_CLOSE;
    size_t clen = 0, cap = 0;
    const char *p = text, *end = text + len;
    if (!add_content(out, &clen, "", 0)) return -1;
    while (p < end) {
        const char *o = find(p, (size_t)(end - p), open);
        if (!o) break;
        const char *body = o + strlen(open);
        const char *c = find(body, (size_t)(end - body), close);
        const char *body_end = c ? c : end; /* a call cut off at the end is still read */
        char *name = NULL;
        cJSON *args = NULL;
        int ok = syn == TOOLS_GEMMA ? parse_gemma_body(body, (size_t)(body_end - body), &name, &args)
                                    : parse_qwen_body(body, (size_t)(body_end - body), tools, &name, &args);
        if (!ok) { /* not a call: keep it as text */
            if (!add_content(out, &clen, p, (size_t)(body - p))) return -1;
            p = body;
            continue;
        }
        if (!add_content(out, &clen, p, (size_t)(o - p))) goto oom;
        if (out->n_calls == cap) {
            cap = cap ? cap * 2 : 4;
            tool_call *t = realloc(out->calls, cap * sizeof *t);
            if (!t) goto oom;
            out->calls = t;
        }
        tool_call *tc = &out->calls[out->n_calls];
        char id[96];
        snprintf(id, sizeof id, "%s_%zu", id_prefix ? id_prefix : "call", out->n_calls);
        tc->id = strdup(id);
        tc->name = name;
        tc->arguments = cJSON_PrintUnformatted(args);
        cJSON_Delete(args);
        out->n_calls++;
        if (!tc->id || !tc->arguments) return -1;
        p = c ? c + strlen(close) : end;
        continue;
    oom:
        free(name);
        cJSON_Delete(args);
        return -1;
    }
    return add_content(out, &clen, p, (size_t)(end - p)) ? 0 : -1;
}

void tools_parse_free(tool_parse *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_calls; i++) free(p->calls[i].id), free(p->calls[i].name), free(p->calls[i].arguments);
    free(p->calls);
    free(p->content);
    memset(p, 0, sizeof *p);
}

/* ---- forced calls ---- */

optiq_status tools_grammar(tool_syntax syn, const cJSON *tools, const char *only_name, grammar *g, optiq_error *err) {
    const char *lits[63];
    const cJSON *schemas[63];
    char *own[63];
    size_t n = 0;
    optiq_status st = OPTIQ_OK;
    for (const cJSON *t = tools ? tools->child : NULL; t && n < 63; t = t->next) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsString(nm) || (only_name && strcmp(nm->valuestring, only_name))) continue;
        if (strpbrk(nm->valuestring, syn == TOOLS_GEMMA ? "{<" : ">\n<")) {
            st = err_set(err, OPTIQ_ERR_INVALID_ARG, "tool name \"%.60s\" holds a character its call syntax cannot carry",
                         nm->valuestring);
            break;
        }
        size_t k = strlen(nm->valuestring) + 3;
        if (!(own[n] = malloc(k))) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(own[n], k, syn == TOOLS_GEMMA ? "%s{" : "%s>\n", nm->valuestring);
        lits[n] = own[n];
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        schemas[n] = cJSON_IsObject(params) ? params : NULL;
        n++;
    }
    if (!st && n == 0)
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, only_name ? "tool_choice names \"%.60s\", which is not in tools"
                                                           : "tool_choice requires a call but tools is empty",
                     only_name);
    if (!st) {
        if (syn == TOOLS_GEMMA) {
            st = grammar_add_literal(g, "<|tool_call>call:", 17, err);
            if (!st) st = grammar_add_choice(g, lits, schemas, n, GRAMMAR_GEMMA, err);
            if (!st) st = grammar_add_literal(g, GEMMA_CLOSE, sizeof GEMMA_CLOSE - 1, err);
        } else {
            st = grammar_add_literal(g, "<tool_call>\n<function=", 22, err);
            if (!st) st = grammar_add_choice(g, lits, schemas, n, GRAMMAR_QWEN_XML, err);
        }
    }
    for (size_t i = 0; i < n; i++) free(own[i]);
    return st;
}

/* ---- tool results for Gemma-4 ---- */

static const char *call_name(const cJSON *assistant, const char *call_id) {
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(assistant, "tool_calls");
    const char *first = NULL;
    for (const cJSON *c = calls ? calls->child : NULL; c; c = c->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "function"), "name");
        if (!cJSON_IsString(nm)) continue;
        if (!first) first = nm->valuestring;
        if (call_id && cJSON_IsString(id) && !strcmp(id->valuestring, call_id)) return nm->valuestring;
    }
    return first;
}

/* The text of a tool message's content (a string or text parts). */
static char *content_text(const cJSON *c) {
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    char *s = strdup("");
    for (const cJSON *p = cJSON_IsArray(c) ? c->child : NULL; p && s; p = p->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(t)) continue;
        char *n = realloc(s, strlen(s) + strlen(t->valuestring) + 1);
        if (!n) return free(s), NULL;
        s = strcat(n, t->valuestring);
    }
    return s;
}

char *tools_fold_results_gemma(const char *messages_json) {
    cJSON *msgs = cJSON_Parse(messages_json);
    if (!cJSON_IsArray(msgs)) {
        cJSON_Delete(msgs);
        return messages_json ? strdup(messages_json) : NULL;
    }
    cJSON *assistant = NULL;
    for (cJSON *m = msgs->child; m;) {
        cJSON *next = m->next;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        if (!strcmp(r, "assistant")) assistant = m;
        else if (strcmp(r, "tool") != 0) assistant = NULL;
        if (!strcmp(r, "tool") && assistant) {
            const cJSON *cid = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
            const char *name = call_name(assistant, cJSON_IsString(cid) ? cid->valuestring : NULL);
            if (!name && cJSON_IsString(nm)) name = nm->valuestring;
            char *text = content_text(cJSON_GetObjectItemCaseSensitive(m, "content"));
            cJSON *resp = text ? cJSON_Parse(text) : NULL;
            if (!resp && text) resp = cJSON_CreateString(text);
            free(text);
            cJSON *tr = cJSON_GetObjectItemCaseSensitive(assistant, "tool_responses");
            if (!tr) tr = cJSON_AddArrayToObject(assistant, "tool_responses");
            cJSON *e = cJSON_CreateObject();
            if (!resp || !tr || !e || !cJSON_AddStringToObject(e, "name", name ? name : "unknown")) {
                cJSON_Delete(resp), cJSON_Delete(e), cJSON_Delete(msgs);
                return NULL;
            }
            cJSON_AddItemToObject(e, "response", resp);
            cJSON_AddItemToArray(tr, e);
            cJSON_Delete(cJSON_DetachItemViaPointer(msgs, m));
        }
        m = next;
    }
    char *out = cJSON_PrintUnformatted(msgs);
    cJSON_Delete(msgs);
    return out;
}

/* ---- log-probabilities as the APIs write them ---- */

/* The text of one token (the decoder's, U+FFFD for a part of a character). */
static cJSON *token_text(const optiq_tokenizer *tok, int32_t id) {
    char *t = NULL;
    if (optiq_tokenizer_decode(tok, &id, 1, 0, &t, NULL, NULL) != OPTIQ_OK) return cJSON_CreateString("");
    cJSON *j = cJSON_CreateString(t ? t : "");
    optiq_free(t);
    return j;
}

/* The token's bytes (what it adds to the output), as a list of numbers. */
static cJSON *token_bytes_json(const optiq_tokenizer *tok, const grammar_vocab *v, int32_t id) {
    size_t n = 0;
    const uint8_t *b = grammar_vocab_bytes(v, id, &n);
    cJSON *a = cJSON_CreateArray();
    char *t = NULL;
    if (!b && optiq_tokenizer_decode(tok, &id, 1, 0, &t, &n, NULL) == OPTIQ_OK) b = (const uint8_t *)t;
    for (size_t i = 0; b && a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(b[i]));
    optiq_free(t);
    return a;
}

static cJSON *chat_entry(const optiq_tokenizer *tok, const grammar_vocab *v, int32_t id, float lp) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "token", token_text(tok, id));
    cJSON_AddNumberToObject(e, "logprob", lp);
    cJSON_AddItemToObject(e, "bytes", token_bytes_json(tok, v, id));
    return e;
}

char *tools_logprobs_chat(const optiq_tokenizer *tok, const grammar_vocab *v, const int32_t *ids, size_t n,
                          const float *lps, const int32_t *top_ids, const float *top_lps, int n_top) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *e = chat_entry(tok, v, ids[i], lps[i]), *tops = cJSON_CreateArray();
        for (int k = 0; k < n_top; k++)
            if (top_ids[i * (size_t)n_top + (size_t)k] >= 0)
                cJSON_AddItemToArray(tops, chat_entry(tok, v, top_ids[i * (size_t)n_top + (size_t)k],
                                                      top_lps[i * (size_t)n_top + (size_t)k]));
        cJSON_AddItemToObject(e, "top_logprobs", tops);
        cJSON_AddItemToArray(arr, e);
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

char *tools_logprobs_completion(const optiq_tokenizer *tok, const int32_t *ids, size_t n, const float *lps,
                                const int32_t *top_ids, const float *top_lps, int n_top, size_t offset) {
    cJSON *o = cJSON_CreateObject(), *toks = cJSON_AddArrayToObject(o, "tokens"),
          *tl = cJSON_AddArrayToObject(o, "token_logprobs"), *top = cJSON_AddArrayToObject(o, "top_logprobs"),
          *off = cJSON_AddArrayToObject(o, "text_offset");
    for (size_t i = 0; toks && tl && top && off && i < n; i++) {
        cJSON *t = token_text(tok, ids[i]);
        cJSON_AddItemToArray(toks, t);
        cJSON_AddItemToArray(tl, cJSON_CreateNumber(lps[i]));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        offset += t && t->valuestring ? strlen(t->valuestring) : 0;
        cJSON *d = cJSON_CreateObject();
        for (int k = 0; k < n_top; k++) {
            int32_t id = top_ids[i * (size_t)n_top + (size_t)k];
            if (id < 0) continue;
            cJSON *tt = token_text(tok, id);
            if (tt && tt->valuestring && !cJSON_HasObjectItem(d, tt->valuestring))
                cJSON_AddNumberToObject(d, tt->valuestring, top_lps[i * (size_t)n_top + (size_t)k]);
            cJSON_Delete(tt);
        }
        cJSON_AddItemToArray(top, d);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
