/*
 * grammar.c — JSON-schema grammars as byte-level pushdown automata, and the
 * token masks they give (see grammar.h for what is accepted and why).
 *
 * Nodes (one array per grammar, children by index):
 *   N_SEQ     the top level: its elements in order (frame.count: next one)
 *   N_LIT     literal bytes (frame.pos: bytes matched)
 *   N_SWITCH  one of several literals, each optionally followed by a node
 *             (enum / const / true / false / null / a tool's name); frame.mask:
 *             literals still matching, frame.pos: bytes matched. A literal
 *             that is a prefix of another ends lazily, when the next byte
 *             continues none of them (the enum values 1 and 12)
 *   N_OBJECT  properties in schema order (frame.count: next property index,
 *             frame.mask: the keys still matching while a key is read)
 *   N_FREEOBJ an object of any keys (JSON dialect)
 *   N_ARRAY   items of one node (frame.count: items so far)
 *   N_STRING  frame.count: characters so far, frame.pos: UTF-8 continuation
 *             bytes still due (their allowed range in frame.mask)
 *   N_NUMBER  a small state machine in frame.mode, digits in frame.pos
 *   N_ANYOF   replaced on the stack by the first alternative that accepts
 *             the value's first byte
 * Values that end only when a byte arrives that cannot continue them
 * (numbers, lazily ended literals, Qwen's raw strings) pop themselves and
 * hand that byte to their parent (STEP_REFEED).
 */
#include "text/grammar.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "text/tokenizer_int.h"

#define MAX_PROPS 63
#define FREE_KEYS 6
#define FREE_KEY_LEN 16
#define ANY_DEPTH 3
#define INT_DIGITS 7
#define FRAC_DIGITS 6
#define MAX_TOKEN_BYTES 128
#define XML_CLOSE_BIT 63

enum { N_SEQ, N_LIT, N_SWITCH, N_OBJECT, N_FREEOBJ, N_ARRAY, N_STRING, N_NUMBER, N_ANYOF };

typedef struct gnode {
    uint8_t type;
    uint8_t dialect;   /* grammar_dialect of the value */
    uint8_t integer;   /* N_NUMBER: no fraction */
    uint8_t raw;       /* N_STRING: Qwen's raw parameter text */
    uint8_t opened;    /* N_OBJECT: its '{' was part of the literal before it */
    uint32_t kid;      /* first child in g->kids */
    uint32_t n;        /* children (N_SEQ, N_ANYOF, N_ARRAY: 1) / literals (N_SWITCH, N_OBJECT) */
    uint32_t lit;      /* first literal in g->lits (N_LIT: its one literal) */
    uint32_t min, max; /* string characters / array items */
    uint64_t required; /* N_OBJECT: bit i = property i is required */
    uint32_t key_node, value_node; /* N_FREEOBJ: the key string and the value */
} gnode;

typedef struct glit {
    uint32_t off, len;
} glit;

struct grammar {
    gnode *nodes;
    size_t n_nodes, cap_nodes;
    int32_t *kids; /* node index, or -1 for "nothing" */
    size_t n_kids, cap_kids;
    glit *lits;
    size_t n_lits, cap_lits;
    uint8_t *bytes;
    size_t n_bytes, cap_bytes;
    uint32_t root;     /* the N_SEQ node */
    int32_t *seq;      /* elements of the root, before they are copied into kids */
    size_t n_seq, cap_seq;
    int32_t any_nodes[ANY_DEPTH + 1]; /* cached "any value" nodes per depth, -1 unbuilt */
};

/* ---- building -------------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

static int32_t new_node(grammar *g, uint8_t type, uint8_t dialect) {
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes)) return -1;
    gnode *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->dialect = dialect;
    return (int32_t)g->n_nodes++;
}

static int32_t new_lit(grammar *g, const char *s, size_t len) {
    if (!grow((void **)&g->lits, &g->cap_lits, g->n_lits + 1, sizeof *g->lits) ||
        !grow((void **)&g->bytes, &g->cap_bytes, g->n_bytes + len + 1, 1))
        return -1;
    memcpy(g->bytes + g->n_bytes, s, len);
    g->lits[g->n_lits] = (glit){(uint32_t)g->n_bytes, (uint32_t)len};
    g->n_bytes += len;
    return (int32_t)g->n_lits++;
}

/* Reserve n consecutive child slots; index of the first, or -1. */
static int64_t new_kids(grammar *g, size_t n) {
    if (!grow((void **)&g->kids, &g->cap_kids, g->n_kids + n + 1, sizeof *g->kids)) return -1;
    int64_t at = (int64_t)g->n_kids;
    for (size_t i = 0; i < n; i++) g->kids[g->n_kids + i] = -1;
    g->n_kids += n;
    return at;
}

grammar *grammar_new(void) {
    grammar *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    for (int i = 0; i <= ANY_DEPTH; i++) g->any_nodes[i] = -1;
    int32_t r = new_node(g, N_SEQ, GRAMMAR_JSON);
    if (r < 0) {
        grammar_free(g);
        return NULL;
    }
    g->root = (uint32_t)r;
    return g;
}

void grammar_free(grammar *g) {
    if (!g) return;
    free(g->nodes), free(g->kids), free(g->lits), free(g->bytes), free(g->seq);
    free(g);
}

static optiq_status nomem(optiq_error *err) { return err_set(err, OPTIQ_ERR_NOMEM, "grammar: out of memory"); }

/* The root's kids are rebuilt from g->seq after each append (they must be consecutive). */
static optiq_status seq_push(grammar *g, int32_t node, optiq_error *err) {
    if (!grow((void **)&g->seq, &g->cap_seq, g->n_seq + 1, sizeof *g->seq)) return nomem(err);
    g->seq[g->n_seq++] = node;
    int64_t at = new_kids(g, g->n_seq);
    if (at < 0) return nomem(err);
    memcpy(g->kids + at, g->seq, g->n_seq * sizeof *g->seq);
    g->nodes[g->root].kid = (uint32_t)at;
    g->nodes[g->root].n = (uint32_t)g->n_seq;
    return OPTIQ_OK;
}

optiq_status grammar_add_literal(grammar *g, const char *s, size_t n, optiq_error *err) {
    if (!n) return OPTIQ_OK;
    int32_t node = new_node(g, N_LIT, GRAMMAR_JSON), lit = node >= 0 ? new_lit(g, s, n) : -1;
    if (lit < 0) return nomem(err);
    g->nodes[node].lit = (uint32_t)lit;
    g->nodes[node].n = 1;
    return seq_push(g, node, err);
}

/* ---- schema compilation ---- */

typedef struct cctx {
    grammar *g;
    optiq_error *err;
    char path[160]; /* where in the schema, for messages */
} cctx;

static optiq_status bad(cctx *c, const char *fmt, const char *what) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    return err_set(c->err, OPTIQ_ERR_INVALID_ARG, "schema%s: %s", c->path, msg);
}

static int32_t compile(cctx *c, const cJSON *s, uint8_t d, int depth, optiq_status *st);

/* A switch over literal alternatives (each followed by kids[i] or nothing). */
static int32_t make_switch(cctx *c, char **lits, size_t *lens, const int32_t *kids, size_t n, uint8_t d,
                           optiq_status *st) {
    grammar *g = c->g;
    if (n == 0 || n > MAX_PROPS) {
        *st = bad(c, "%s", n ? "more than 63 alternatives" : "an empty enum");
        return -1;
    }
    int32_t node = new_node(g, N_SWITCH, d);
    int64_t kid = node >= 0 ? new_kids(g, n) : -1;
    if (kid < 0) goto oom;
    g->nodes[node].kid = (uint32_t)kid;
    g->nodes[node].n = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        int32_t l = new_lit(g, lits[i], lens[i]);
        if (l < 0) goto oom;
        if (i == 0) g->nodes[node].lit = (uint32_t)l;
        g->kids[kid + (int64_t)i] = kids ? kids[i] : -1;
    }
    return node;
oom:
    *st = nomem(c->err);
    return -1;
}

/* A value as a literal in the dialect (enum / const entries). */
static char *value_text(const cJSON *v, uint8_t d, size_t *len) {
    char *s;
    if (d == GRAMMAR_GEMMA && cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        if (strchr(v->valuestring, '<')) return NULL;
        s = malloc(n + 11);
        if (!s) return NULL;
        snprintf(s, n + 11, "<|\"|>%s<|\"|>", v->valuestring);
    } else {
        s = cJSON_PrintUnformatted(v);
    }
    if (s) *len = strlen(s);
    return s;
}

static int32_t compile_enum(cctx *c, const cJSON *vals, uint8_t d, optiq_status *st) {
    size_t n = (size_t)cJSON_GetArraySize(vals);
    if (n == 0 || n > MAX_PROPS) {
        *st = bad(c, "%s", n ? "enum has more than 63 values" : "enum is empty");
        return -1;
    }
    char *lits[MAX_PROPS];
    size_t lens[MAX_PROPS], k = 0;
    int32_t node = -1;
    for (const cJSON *v = vals->child; v; v = v->next, k++) {
        if (d == GRAMMAR_GEMMA && (cJSON_IsObject(v) || cJSON_IsArray(v))) {
            *st = bad(c, "%s", "enum/const values in Gemma tool arguments must be scalars");
            goto done;
        }
        if (!(lits[k] = value_text(v, d, &lens[k]))) {
            *st = cJSON_IsString(v) && d == GRAMMAR_GEMMA ? bad(c, "%s", "enum string holds '<'") : nomem(c->err);
            goto done;
        }
    }
    node = make_switch(c, lits, lens, NULL, n, d, st);
done:
    for (size_t i = 0; i < k; i++) free(lits[i]);
    return node;
}

static int32_t literal_switch(cctx *c, const char *const *words, size_t n, uint8_t d, optiq_status *st) {
    char *lits[4];
    size_t lens[4];
    for (size_t i = 0; i < n; i++) lits[i] = (char *)words[i], lens[i] = strlen(words[i]);
    return make_switch(c, lits, lens, NULL, n, d, st);
}

static int get_count(const cJSON *s, const char *key, uint32_t def, uint32_t *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!j) {
        *out = def;
        return 1;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > 100000 || j->valuedouble != floor(j->valuedouble))
        return 0;
    *out = (uint32_t)j->valuedouble;
    return 1;
}

static int32_t compile_string(cctx *c, const cJSON *s, uint8_t d, int raw, optiq_status *st) {
    uint32_t mn, mx;
    if (!get_count(s, "minLength", 0, &mn) || !get_count(s, "maxLength", UINT32_MAX, &mx)) {
        *st = bad(c, "%s", "minLength / maxLength must be integers in 0..100000");
        return -1;
    }
    if (mx == UINT32_MAX) mx = mn > GRAMMAR_STRING_MAX ? mn : GRAMMAR_STRING_MAX;
    if (mn > mx) {
        *st = bad(c, "%s", "minLength is larger than maxLength");
        return -1;
    }
    int32_t node = new_node(c->g, N_STRING, d);
    if (node < 0) {
        *st = nomem(c->err);
        return -1;
    }
    c->g->nodes[node].min = mn;
    c->g->nodes[node].max = mx;
    c->g->nodes[node].raw = (uint8_t)raw;
    return node;
}

/* Any JSON value nested at most depth more levels (cached per depth). */
static int32_t any_value(cctx *c, uint8_t d, int depth, optiq_status *st);

static int32_t free_object(cctx *c, uint8_t d, int depth, optiq_status *st) {
    grammar *g = c->g;
    if (d != GRAMMAR_JSON || depth <= 0) { /* only {} (see grammar.h) */
        static const char *const empty[] = {"{}"};
        return literal_switch(c, empty, 1, d, st);
    }
    int32_t key = new_node(g, N_STRING, d);
    if (key < 0) return *st = nomem(c->err), -1;
    g->nodes[key].min = 1;
    g->nodes[key].max = FREE_KEY_LEN;
    int32_t val = any_value(c, d, depth - 1, st);
    if (val < 0) return -1;
    int32_t node = new_node(g, N_FREEOBJ, d);
    if (node < 0) return *st = nomem(c->err), -1;
    g->nodes[node].key_node = (uint32_t)key;
    g->nodes[node].value_node = (uint32_t)val;
    g->nodes[node].max = FREE_KEYS;
    return node;
}

static int32_t make_anyof(cctx *c, const int32_t *alts, size_t n, uint8_t d, optiq_status *st) {
    grammar *g = c->g;
    if (n == 1) return alts[0];
    int32_t node = new_node(g, N_ANYOF, d);
    int64_t kid = node >= 0 ? new_kids(g, n) : -1;
    if (kid < 0) return *st = nomem(c->err), -1;
    memcpy(g->kids + kid, alts, n * sizeof *alts);
    g->nodes[node].kid = (uint32_t)kid;
    g->nodes[node].n = (uint32_t)n;
    return node;
}

static int32_t any_value(cctx *c, uint8_t d, int depth, optiq_status *st) {
    grammar *g = c->g;
    if (d == GRAMMAR_JSON && depth >= 0 && depth <= ANY_DEPTH && g->any_nodes[depth] >= 0) return g->any_nodes[depth];
    int32_t alts[5];
    size_t n = 0;
    if ((alts[n] = compile_string(c, NULL, d, 0, st)) < 0) return -1;
    n++;
    if ((alts[n] = new_node(g, N_NUMBER, d)) < 0) return *st = nomem(c->err), -1;
    n++;
    static const char *const words[] = {"true", "false", "null"};
    if ((alts[n++] = literal_switch(c, words, 3, d, st)) < 0) return -1;
    if (d == GRAMMAR_JSON && depth > 0) {
        if ((alts[n++] = free_object(c, d, depth, st)) < 0) return -1;
        int32_t item = any_value(c, d, depth - 1, st);
        if (item < 0) return -1;
        int32_t arr = new_node(g, N_ARRAY, d);
        int64_t kid = arr >= 0 ? new_kids(g, 1) : -1;
        if (kid < 0) return *st = nomem(c->err), -1;
        g->kids[kid] = item;
        g->nodes[arr].kid = (uint32_t)kid;
        g->nodes[arr].n = 1;
        g->nodes[arr].max = GRAMMAR_ITEMS_MAX;
        alts[n++] = arr;
    }
    int32_t node = make_anyof(c, alts, n, d, st);
    if (node >= 0 && d == GRAMMAR_JSON && depth >= 0 && depth <= ANY_DEPTH) g->any_nodes[depth] = node;
    return node;
}

static int32_t compile_object(cctx *c, const cJSON *s, uint8_t d, int depth, int xml, optiq_status *st) {
    grammar *g = c->g;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return *st = bad(c, "%s", "properties must be an object"), -1;
    size_t n = props ? (size_t)cJSON_GetArraySize(props) : 0;
    if (!xml && n == 0 && !cJSON_IsFalse(addl)) return free_object(c, d, ANY_DEPTH, st);
    if (n > MAX_PROPS - 1) return *st = bad(c, "%s", "more than 62 properties"), -1;
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    if (req && !cJSON_IsArray(req)) return *st = bad(c, "%s", "required must be an array"), -1;
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
        if (!cJSON_IsString(r) || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
            return *st = bad(c, "%s", "required names a property that properties does not define"), -1;
    int32_t node = new_node(g, N_OBJECT, d);
    int64_t kid = node >= 0 ? new_kids(g, n) : -1;
    if (kid < 0) return *st = nomem(c->err), -1;
    g->nodes[node].kid = (uint32_t)kid;
    g->nodes[node].n = (uint32_t)n;
    g->nodes[node].raw = (uint8_t)xml; /* N_OBJECT: Qwen's XML parameters */
    size_t i = 0, plen = strlen(c->path);
    uint64_t required = 0;
    /* the keys as they are written, up to the start of the value: their
     * literals must be consecutive (then the XML close), so they come first */
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next, i++) {
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
            if (!strcmp(r->valuestring, p->string)) required |= 1ull << i;
        char *key;
        if (xml) {
            if (strpbrk(p->string, "<>\n")) return *st = bad(c, "%s", "a property name holds '<', '>' or a line break"), -1;
            size_t kl = strlen(p->string) + 16;
            if (!(key = malloc(kl))) return *st = nomem(c->err), -1;
            snprintf(key, kl, "<parameter=%s>\n", p->string);
        } else if (d == GRAMMAR_GEMMA) {
            for (const char *q = p->string; *q; q++)
                if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_'))
                    return *st = bad(c, "%s", "Gemma tool arguments need property names of letters, digits and _"), -1;
            if (!*p->string) return *st = bad(c, "%s", "empty property name"), -1;
            size_t kl = strlen(p->string) + 2;
            if (!(key = malloc(kl))) return *st = nomem(c->err), -1;
            snprintf(key, kl, "%s:", p->string);
        } else {
            cJSON *ks = cJSON_CreateString(p->string);
            char *q = ks ? cJSON_PrintUnformatted(ks) : NULL;
            cJSON_Delete(ks);
            if (!q || !(key = malloc(strlen(q) + 2))) return free(q), *st = nomem(c->err), -1;
            sprintf(key, "%s:", q);
            free(q);
        }
        int32_t l = new_lit(g, key, strlen(key));
        free(key);
        if (l < 0) return *st = nomem(c->err), -1;
        if (i == 0) g->nodes[node].lit = (uint32_t)l;
    }
    if (xml) { /* the close literal follows the keys */
        static const char close[] = "</function>\n</tool_call>";
        int32_t l = new_lit(g, close, sizeof close - 1);
        if (l < 0) return *st = nomem(c->err), -1;
        if (n == 0) g->nodes[node].lit = (uint32_t)l;
        g->nodes[node].dialect = GRAMMAR_QWEN_XML; /* no whitespace between its parts */
    }
    i = 0;
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next, i++) {
        snprintf(c->path + plen, sizeof c->path - plen, ".properties.%.40s", p->string);
        /* Qwen writes a string parameter as raw text, anything else as JSON */
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        int32_t v;
        if (xml && cJSON_IsString(ty) && !strcmp(ty->valuestring, "string") &&
            !cJSON_GetObjectItemCaseSensitive(p, "enum") && !cJSON_GetObjectItemCaseSensitive(p, "const"))
            v = compile_string(c, p, GRAMMAR_JSON, 1, st);
        else
            v = compile(c, p, xml ? GRAMMAR_JSON : d, depth + 1, st);
        c->path[plen] = 0;
        if (v < 0) return -1;
        g->kids[kid + (int64_t)i] = v;
    }
    g->nodes[node].required = required;
    return node;
}

static int32_t compile_type(cctx *c, const cJSON *s, const char *type, uint8_t d, int depth, optiq_status *st) {
    grammar *g = c->g;
    if (!strcmp(type, "object")) return compile_object(c, s, d, depth, 0, st);
    if (!strcmp(type, "string")) return compile_string(c, s, d, 0, st);
    if (!strcmp(type, "number") || !strcmp(type, "integer")) {
        int32_t node = new_node(g, N_NUMBER, d);
        if (node < 0) return *st = nomem(c->err), -1;
        g->nodes[node].integer = type[0] == 'i';
        return node;
    }
    if (!strcmp(type, "boolean")) {
        static const char *const words[] = {"true", "false"};
        return literal_switch(c, words, 2, d, st);
    }
    if (!strcmp(type, "null")) {
        static const char *const words[] = {"null"};
        return literal_switch(c, words, 1, d, st);
    }
    if (!strcmp(type, "array")) {
        uint32_t mn, mx;
        if (!get_count(s, "minItems", 0, &mn) || !get_count(s, "maxItems", UINT32_MAX, &mx))
            return *st = bad(c, "%s", "minItems / maxItems must be integers in 0..100000"), -1;
        if (mx == UINT32_MAX) mx = mn > GRAMMAR_ITEMS_MAX ? mn : GRAMMAR_ITEMS_MAX;
        if (mn > mx) return *st = bad(c, "%s", "minItems is larger than maxItems"), -1;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        size_t plen = strlen(c->path);
        snprintf(c->path + plen, sizeof c->path - plen, ".items");
        int32_t item = items ? compile(c, items, d, depth + 1, st) : any_value(c, d, 2, st);
        c->path[plen] = 0;
        if (item < 0) return -1;
        int32_t node = new_node(g, N_ARRAY, d);
        int64_t kid = node >= 0 ? new_kids(g, 1) : -1;
        if (kid < 0) return *st = nomem(c->err), -1;
        g->kids[kid] = item;
        g->nodes[node].kid = (uint32_t)kid;
        g->nodes[node].n = 1;
        g->nodes[node].min = mn;
        g->nodes[node].max = mx;
        return node;
    }
    return *st = bad(c, "unknown type \"%.40s\"", type), -1;
}

static const char *const IGNORED[] = {"title", "description", "default", "examples", "format", "strict",
                                      "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly"};
static const char *const HANDLED[] = {"type", "properties", "required", "additionalProperties", "items",
                                      "minItems", "maxItems", "minLength", "maxLength", "enum", "const", "anyOf"};

static int32_t compile(cctx *c, const cJSON *s, uint8_t d, int depth, optiq_status *st) {
    if (depth > GRAMMAR_MAX_DEPTH - 4) return *st = bad(c, "%s", "nests too deep"), -1;
    if (cJSON_IsTrue(s)) return any_value(c, d, 2, st);
    if (!cJSON_IsObject(s)) return *st = bad(c, "%s", "expected an object (or true)"), -1;
    for (const cJSON *k = s->child; k; k = k->next) {
        int known = 0;
        for (size_t i = 0; i < sizeof IGNORED / sizeof *IGNORED && !known; i++) known = !strcmp(k->string, IGNORED[i]);
        for (size_t i = 0; i < sizeof HANDLED / sizeof *HANDLED && !known; i++) known = !strcmp(k->string, HANDLED[i]);
        if (!known) return *st = bad(c, "keyword \"%.40s\" is not supported", k->string), -1;
    }
    const cJSON *cnst = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (cnst) {
        cJSON *arr = cJSON_CreateArray();
        cJSON *dup = cJSON_Duplicate(cnst, 1);
        if (!arr || !dup) return cJSON_Delete(arr), cJSON_Delete(dup), *st = nomem(c->err), -1;
        cJSON_AddItemToArray(arr, dup);
        int32_t node = compile_enum(c, arr, d, st);
        cJSON_Delete(arr);
        return node;
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (en) {
        if (!cJSON_IsArray(en)) return *st = bad(c, "%s", "enum must be an array"), -1;
        return compile_enum(c, en, d, st);
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (any) {
        if (!cJSON_IsArray(any) || !any->child || cJSON_GetArraySize(any) > 16)
            return *st = bad(c, "%s", "anyOf must be a list of 1..16 schemas"), -1;
        int32_t alts[16];
        size_t n = 0, plen = strlen(c->path);
        for (const cJSON *a = any->child; a; a = a->next, n++) {
            snprintf(c->path + plen, sizeof c->path - plen, ".anyOf[%zu]", n);
            if ((alts[n] = compile(c, a, d, depth + 1, st)) < 0) return -1;
            c->path[plen] = 0;
        }
        return make_anyof(c, alts, n, d, st);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!type) return cJSON_GetObjectItemCaseSensitive(s, "properties") ? compile_object(c, s, d, depth, 0, st)
                                                                           : any_value(c, d, 2, st);
    if (cJSON_IsString(type)) return compile_type(c, s, type->valuestring, d, depth, st);
    if (cJSON_IsArray(type) && type->child && cJSON_GetArraySize(type) <= 7) {
        int32_t alts[7];
        size_t n = 0;
        for (const cJSON *t = type->child; t; t = t->next, n++) {
            if (!cJSON_IsString(t)) return *st = bad(c, "%s", "type list entries must be strings"), -1;
            if ((alts[n] = compile_type(c, s, t->valuestring, d, depth, st)) < 0) return -1;
        }
        return make_anyof(c, alts, n, d, st);
    }
    return *st = bad(c, "%s", "type must be a string or a list of strings"), -1;
}

optiq_status grammar_add_schema(grammar *g, const cJSON *schema, grammar_dialect d, optiq_error *err) {
    cctx c = {.g = g, .err = err, .path = ""};
    optiq_status st = OPTIQ_OK;
    int32_t node;
    if (d == GRAMMAR_QWEN_XML) {
        if (schema && !cJSON_IsObject(schema)) return bad(&c, "%s", "tool parameters must be an object schema");
        const cJSON *ty = schema ? cJSON_GetObjectItemCaseSensitive(schema, "type") : NULL;
        if (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "object") != 0))
            return bad(&c, "%s", "tool parameters must be of type object");
        cJSON *empty = schema ? NULL : cJSON_CreateObject();
        node = compile_object(&c, schema ? schema : empty, GRAMMAR_JSON, 0, 1, &st);
        cJSON_Delete(empty);
    } else if (!schema) {
        node = free_object(&c, (uint8_t)d, ANY_DEPTH, &st);
    } else {
        node = compile(&c, schema, (uint8_t)d, 0, &st);
    }
    if (node < 0) return st ? st : nomem(err);
    return seq_push(g, node, err);
}

optiq_status grammar_add_choice(grammar *g, const char *const *lits, const cJSON *const *schemas, size_t n,
                                grammar_dialect d, optiq_error *err) {
    cctx c = {.g = g, .err = err, .path = ""};
    optiq_status st = OPTIQ_OK;
    if (n == 0 || n > MAX_PROPS) return bad(&c, "%s", "a choice needs 1..63 alternatives");
    int32_t kids[MAX_PROPS];
    size_t lens[MAX_PROPS];
    for (size_t i = 0; i < n; i++) {
        lens[i] = strlen(lits[i]);
        kids[i] = -1;
        if (!schemas || !schemas[i]) {
            if (d != GRAMMAR_JSON) { /* a tool without parameters: no arguments */
                cJSON *empty = cJSON_Parse("{\"type\":\"object\",\"additionalProperties\":false}");
                kids[i] = empty ? compile_object(&c, empty, d == GRAMMAR_GEMMA ? GRAMMAR_GEMMA : GRAMMAR_JSON, 0,
                                                 d == GRAMMAR_QWEN_XML, &st)
                                : -1;
                cJSON_Delete(empty);
                if (kids[i] < 0) return st ? st : nomem(err);
                if (d == GRAMMAR_GEMMA) g->nodes[kids[i]].opened = 1;
            }
            continue;
        }
        snprintf(c.path, sizeof c.path, " of %.60s", lits[i]);
        if (d == GRAMMAR_GEMMA) {
            const cJSON *props = cJSON_GetObjectItemCaseSensitive(schemas[i], "properties");
            if (props && !cJSON_GetArraySize(props)) props = NULL;
            cJSON *empty = props ? NULL : cJSON_Parse("{\"type\":\"object\",\"additionalProperties\":false}");
            if (!props && !empty) return nomem(err);
            kids[i] = compile_object(&c, props ? schemas[i] : empty, GRAMMAR_GEMMA, 0, 0, &st);
            cJSON_Delete(empty);
            if (kids[i] >= 0) g->nodes[kids[i]].opened = 1; /* the name literal ends with its '{' */
        } else if (d == GRAMMAR_QWEN_XML) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(schemas[i], "type");
            if (!cJSON_IsObject(schemas[i]) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "object"))))
                return bad(&c, "%s", "tool parameters must be an object schema");
            kids[i] = compile_object(&c, schemas[i], GRAMMAR_JSON, 0, 1, &st);
        } else {
            kids[i] = compile(&c, schemas[i], (uint8_t)d, 0, &st);
        }
        if (kids[i] < 0) return st ? st : nomem(err);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j && lens[i] <= lens[j] && !memcmp(lits[i], lits[j], lens[i]))
                return err_set(err, OPTIQ_ERR_INVALID_ARG, "grammar: choice \"%.60s\" is a prefix of another", lits[i]);
    c.path[0] = 0;
    int32_t node = make_switch(&c, (char **)lits, lens, kids, n, (uint8_t)d, &st);
    if (node < 0) return st ? st : nomem(err);
    return seq_push(g, node, err);
}

/* ---- the automaton ----------------------------------------------------------- */

enum { STEP_REJECT = 0, STEP_OK = 1, STEP_REFEED = 2 };

/* object / array modes */
enum { M_OPEN = 0, M_FIRST, M_NEXT, M_KEY, M_COLON, M_VALUE, M_AFTER, M_CLOSE_LIT };
/* string modes */
enum { S_OPEN = 0, S_BODY, S_ESC, S_CLOSE };
/* number modes */
enum { D_START = 0, D_MINUS, D_ZERO, D_INT, D_DOT, D_FRAC };

static int is_ws(uint8_t b) { return b == ' ' || b == '\n' || b == '\t'; }

static const uint8_t *lit_bytes(const grammar *g, uint32_t l) { return g->bytes + g->lits[l].off; }
static uint32_t lit_len(const grammar *g, uint32_t l) { return g->lits[l].len; }

static int push(grammar_state *st, uint32_t node) {
    if (st->depth >= GRAMMAR_MAX_DEPTH) return 0;
    grammar_frame *f = &st->f[st->depth++];
    memset(f, 0, sizeof *f);
    f->node = node;
    return 1;
}

/* Candidates of a switch still matching after byte b at offset pos. */
static uint64_t match_lits(const grammar *g, uint32_t first, uint64_t mask, uint32_t pos, uint8_t b) {
    uint64_t out = 0;
    for (uint64_t m = mask; m; m &= m - 1) {
        int i = __builtin_ctzll(m);
        uint32_t l = first + (uint32_t)i;
        if (lit_len(g, l) > pos && lit_bytes(g, l)[pos] == b) out |= 1ull << i;
    }
    return out;
}

static int lowest_complete(const grammar *g, uint32_t first, uint64_t mask, uint32_t pos) {
    for (uint64_t m = mask; m; m &= m - 1) {
        int i = __builtin_ctzll(m);
        if (lit_len(g, first + (uint32_t)i) == pos) return i;
    }
    return -1;
}

static int all_complete(const grammar *g, uint32_t first, uint64_t mask, uint32_t pos) {
    for (uint64_t m = mask; m; m &= m - 1)
        if (lit_len(g, first + (uint32_t)__builtin_ctzll(m)) != pos) return 0;
    return 1;
}

/* Object keys that may come next: from index `from` up to the first
 * required one (required properties cannot be skipped). */
static uint64_t key_candidates(const gnode *n, uint32_t from) {
    uint64_t m = 0;
    for (uint32_t i = from; i < n->n; i++) {
        m |= 1ull << i;
        if (n->required & (1ull << i)) break;
    }
    return m;
}

static int required_left(const gnode *n, uint32_t from) {
    return from < 64 && (n->required >> from) != 0;
}

static void child_done(const grammar *g, grammar_state *st);

static void pop(const grammar *g, grammar_state *st) {
    st->depth--;
    if (st->depth) child_done(g, st);
}

/* The frame below a finished value takes over. */
static void child_done(const grammar *g, grammar_state *st) {
    grammar_frame *f = &st->f[st->depth - 1];
    const gnode *n = &g->nodes[f->node];
    switch (n->type) {
    case N_SWITCH: pop(g, st); break;
    case N_OBJECT:
        f->mode = n->raw ? M_CLOSE_LIT : M_AFTER;
        f->pos = 0;
        f->ws = 0;
        break;
    case N_FREEOBJ:
        if (f->mode == M_KEY) f->mode = M_COLON;
        else f->mode = M_AFTER, f->count++;
        f->ws = 0;
        break;
    case N_ARRAY:
        f->mode = M_AFTER;
        f->count++;
        f->ws = 0;
        break;
    default: break;
    }
}

static int ws_step(grammar_frame *f, const gnode *n, uint8_t b) {
    if (n->dialect != GRAMMAR_JSON || !is_ws(b) || f->ws >= GRAMMAR_WS) return 0;
    f->ws++;
    return 1;
}

/* UTF-8 in strings: a lead byte sets the continuation count and the range
 * of the first continuation byte (RFC 3629 table: no overlongs, no surrogates). */
static int utf8_lead(grammar_frame *f, uint8_t b) {
    uint8_t lo = 0x80, hi = 0xBF;
    int k;
    if (b >= 0xC2 && b <= 0xDF) k = 1;
    else if (b >= 0xE0 && b <= 0xEF) k = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4) k = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    f->pos = (uint16_t)k;
    f->mask = (uint64_t)lo | (uint64_t)hi << 8;
    return 1;
}

static int step_string(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    static const char gq[] = "<|\"|>";
    int gemma = n->dialect == GRAMMAR_GEMMA;
    if (f->mode == S_OPEN) {
        if (n->raw) {
            f->mode = S_BODY;
            return STEP_REFEED;
        }
        if (gemma) {
            if ((uint8_t)gq[f->pos] != b) return STEP_REJECT;
            if (++f->pos == 5) f->mode = S_BODY, f->pos = 0;
            return STEP_OK;
        }
        if (b != '"') return STEP_REJECT;
        f->mode = S_BODY;
        return STEP_OK;
    }
    if (f->mode == S_CLOSE) { /* Gemma's <|"|> after its '<' */
        if ((uint8_t)gq[f->pos] != b) return STEP_REJECT;
        if (++f->pos == 5) pop(g, st);
        return STEP_OK;
    }
    if (f->mode == S_ESC) {
        if (!strchr("\"\\/bfnrt", b) || !b) return STEP_REJECT;
        f->mode = S_BODY;
        f->count++;
        return STEP_OK;
    }
    /* S_BODY */
    if (f->pos) { /* a continuation byte is due */
        uint8_t lo = (uint8_t)(f->mask & 0xFF), hi = (uint8_t)(f->mask >> 8);
        if (b < lo || b > hi) return STEP_REJECT;
        f->mask = 0x80 | 0xBF << 8;
        if (--f->pos == 0) f->count++;
        return STEP_OK;
    }
    if (n->raw) {
        if (b == '<' || b == '\n' || b == '\r' || b < 0x20) {
            if (f->count < n->min) return STEP_REJECT;
            pop(g, st);
            return STEP_REFEED;
        }
    } else if (gemma) {
        if (b == '<') {
            if (f->count < n->min) return STEP_REJECT;
            f->mode = S_CLOSE;
            f->pos = 1;
            return STEP_OK;
        }
    } else {
        if (b == '"') {
            if (f->count < n->min) return STEP_REJECT;
            pop(g, st);
            return STEP_OK;
        }
        if (b == '\\') {
            if (f->count >= n->max) return STEP_REJECT;
            f->mode = S_ESC;
            return STEP_OK;
        }
    }
    if (b < 0x20 || f->count >= n->max) return STEP_REJECT;
    if (b < 0x80) {
        f->count++;
        return STEP_OK;
    }
    return utf8_lead(f, b) ? STEP_OK : STEP_REJECT;
}

static int number_can_end(const grammar_frame *f) {
    return f->mode == D_ZERO || f->mode == D_INT || f->mode == D_FRAC;
}

static int step_number(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    int digit = b >= '0' && b <= '9';
    switch (f->mode) {
    case D_START:
    case D_MINUS:
        if (b == '-' && f->mode == D_START) return f->mode = D_MINUS, STEP_OK;
        if (b == '0') return f->mode = D_ZERO, STEP_OK;
        if (digit) return f->mode = D_INT, f->pos = 1, STEP_OK;
        return STEP_REJECT;
    case D_INT:
        if (digit && f->pos < INT_DIGITS) return f->pos++, STEP_OK;
        /* fall through */
    case D_ZERO:
        if (b == '.' && !n->integer) return f->mode = D_DOT, STEP_OK;
        break;
    case D_DOT:
        if (digit) return f->mode = D_FRAC, f->pos = 1, STEP_OK;
        return STEP_REJECT;
    case D_FRAC:
        if (digit && f->pos < FRAC_DIGITS) return f->pos++, STEP_OK;
        break;
    }
    if (digit) return STEP_REJECT; /* too many digits, or a digit after a leading 0 */
    pop(g, st);
    return STEP_REFEED;
}

static int step_switch(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    if (f->mode == 0 && f->pos == 0 && f->mask == 0) f->mask = n->n >= 64 ? ~0ull : (1ull << n->n) - 1;
    uint64_t m = match_lits(g, n->lit, f->mask, f->pos, b);
    if (!m) { /* a complete literal ends lazily */
        int i = lowest_complete(g, n->lit, f->mask, f->pos);
        if (i < 0) return STEP_REJECT;
        int32_t kid = g->kids[n->kid + (uint32_t)i];
        if (kid >= 0) {
            f->mode = 1;
            f->count = (uint32_t)i;
            return push(st, (uint32_t)kid) ? STEP_REFEED : STEP_REJECT;
        }
        pop(g, st);
        return STEP_REFEED;
    }
    f->mask = m;
    f->pos++;
    if (!all_complete(g, n->lit, m, f->pos)) return STEP_OK;
    int i = lowest_complete(g, n->lit, m, f->pos);
    int32_t kid = g->kids[n->kid + (uint32_t)i];
    if (kid < 0) {
        pop(g, st);
        return STEP_OK;
    }
    f->mode = 1;
    f->count = (uint32_t)i;
    return push(st, (uint32_t)kid) ? STEP_OK : STEP_REJECT;
}

static int step_object(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    int xml = n->raw;
    static const char param_close[] = "\n</parameter>\n";
    switch (f->mode) {
    case M_OPEN:
        if (xml || n->opened) {
            f->mode = M_FIRST;
            return STEP_REFEED;
        }
        if (b != '{') return STEP_REJECT;
        f->mode = M_FIRST;
        return STEP_OK;
    case M_FIRST:
    case M_NEXT: {
        if (ws_step(f, n, b)) return STEP_OK;
        if (!xml && b == '}' && f->mode == M_FIRST && !required_left(n, f->count)) {
            pop(g, st);
            return STEP_OK;
        }
        uint64_t cand = key_candidates(n, f->count);
        if (xml && !required_left(n, f->count)) cand |= 1ull << XML_CLOSE_BIT;
        f->mask = cand;
        f->pos = 0;
        f->mode = M_KEY;
    }
        /* fall through */
    case M_KEY: {
        uint64_t m = 0;
        for (uint64_t c = f->mask; c; c &= c - 1) {
            int i = __builtin_ctzll(c);
            uint32_t l = i == XML_CLOSE_BIT ? n->lit + n->n : n->lit + (uint32_t)i;
            if (lit_len(g, l) > f->pos && lit_bytes(g, l)[f->pos] == b) m |= 1ull << i;
        }
        if (!m) return STEP_REJECT;
        f->mask = m;
        f->pos++;
        int i = __builtin_ctzll(m);
        uint32_t l = i == XML_CLOSE_BIT ? n->lit + n->n : n->lit + (uint32_t)i;
        if ((m & (m - 1)) || lit_len(g, l) != f->pos) return STEP_OK; /* keys are prefix-free */
        if (i == XML_CLOSE_BIT) {
            pop(g, st);
            return STEP_OK;
        }
        f->count = (uint32_t)i + 1;
        f->mode = M_VALUE;
        f->ws = 0;
        f->pos = (uint16_t)i;
        return STEP_OK;
    }
    case M_VALUE:
        if (!xml && ws_step(f, n, b)) return STEP_OK;
        return push(st, (uint32_t)g->kids[n->kid + f->pos]) ? STEP_REFEED : STEP_REJECT;
    case M_AFTER:
        if (ws_step(f, n, b)) return STEP_OK;
        if (b == ',' && (key_candidates(n, f->count) != 0)) {
            f->mode = M_NEXT;
            f->ws = 0;
            return STEP_OK;
        }
        if (b == '}' && !required_left(n, f->count)) {
            pop(g, st);
            return STEP_OK;
        }
        return STEP_REJECT;
    case M_CLOSE_LIT:
        if ((uint8_t)param_close[f->pos] != b) return STEP_REJECT;
        if (++f->pos == sizeof param_close - 1) f->mode = M_NEXT, f->pos = 0, f->ws = 0;
        return STEP_OK;
    }
    return STEP_REJECT;
}

static int step_freeobj(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    switch (f->mode) {
    case M_OPEN:
        if (b != '{') return STEP_REJECT;
        f->mode = M_FIRST;
        return STEP_OK;
    case M_FIRST:
    case M_NEXT:
        if (ws_step(f, n, b)) return STEP_OK;
        if (b == '}' && f->mode == M_FIRST) {
            pop(g, st);
            return STEP_OK;
        }
        if (b != '"') return STEP_REJECT;
        f->mode = M_KEY;
        return push(st, n->key_node) ? STEP_REFEED : STEP_REJECT;
    case M_COLON:
        if (b != ':') return STEP_REJECT;
        f->mode = M_VALUE;
        f->ws = 0;
        return STEP_OK;
    case M_VALUE:
        if (ws_step(f, n, b)) return STEP_OK;
        return push(st, n->value_node) ? STEP_REFEED : STEP_REJECT;
    case M_AFTER:
        if (ws_step(f, n, b)) return STEP_OK;
        if (b == ',' && f->count < n->max) {
            f->mode = M_NEXT;
            f->ws = 0;
            return STEP_OK;
        }
        if (b == '}') {
            pop(g, st);
            return STEP_OK;
        }
        return STEP_REJECT;
    }
    return STEP_REJECT;
}

static int step_array(const grammar *g, grammar_state *st, grammar_frame *f, const gnode *n, uint8_t b) {
    switch (f->mode) {
    case M_OPEN:
        if (b != '[') return STEP_REJECT;
        f->mode = M_FIRST;
        return STEP_OK;
    case M_FIRST:
    case M_NEXT:
        if (ws_step(f, n, b)) return STEP_OK;
        if (b == ']' && f->mode == M_FIRST && n->min == 0) {
            pop(g, st);
            return STEP_OK;
        }
        if (f->count >= n->max) return STEP_REJECT;
        f->mode = M_VALUE;
        return push(st, (uint32_t)g->kids[n->kid]) ? STEP_REFEED : STEP_REJECT;
    case M_AFTER:
        if (ws_step(f, n, b)) return STEP_OK;
        if (b == ',' && f->count < n->max) {
            f->mode = M_NEXT;
            f->ws = 0;
            return STEP_OK;
        }
        if (b == ']' && f->count >= n->min) {
            pop(g, st);
            return STEP_OK;
        }
        return STEP_REJECT;
    }
    return STEP_REJECT;
}

static int feed_byte(const grammar *g, grammar_state *st, uint8_t b);

/* anyOf: the first alternative that takes the byte replaces the frame. */
static int step_anyof(const grammar *g, grammar_state *st, const gnode *n, uint8_t b) {
    grammar_state tmp;
    for (uint32_t i = 0; i < n->n; i++) {
        size_t bytes = offsetof(grammar_state, f) + st->depth * sizeof(grammar_frame);
        memcpy(&tmp, st, bytes);
        grammar_frame *f = &tmp.f[tmp.depth - 1];
        memset(f, 0, sizeof *f);
        f->node = (uint32_t)g->kids[n->kid + i];
        if (feed_byte(g, &tmp, b)) {
            memcpy(st, &tmp, offsetof(grammar_state, f) + tmp.depth * sizeof(grammar_frame));
            return STEP_OK;
        }
    }
    return STEP_REJECT;
}

static int feed_byte(const grammar *g, grammar_state *st, uint8_t b) {
    for (int guard = 0; guard < 4 * GRAMMAR_MAX_DEPTH; guard++) {
        if (st->depth == 0) return 0;
        grammar_frame *f = &st->f[st->depth - 1];
        const gnode *n = &g->nodes[f->node];
        int r;
        switch (n->type) {
        case N_SEQ:
            if (f->count >= n->n) return 0;
            f->count++;
            r = push(st, (uint32_t)g->kids[n->kid + f->count - 1]) ? STEP_REFEED : STEP_REJECT;
            break;
        case N_LIT:
            if (lit_bytes(g, n->lit)[f->pos] != b) return 0;
            if (++f->pos == lit_len(g, n->lit)) pop(g, st);
            return 1;
        case N_SWITCH: r = step_switch(g, st, f, n, b); break;
        case N_OBJECT: r = step_object(g, st, f, n, b); break;
        case N_FREEOBJ: r = step_freeobj(g, st, f, n, b); break;
        case N_ARRAY: r = step_array(g, st, f, n, b); break;
        case N_STRING: r = step_string(g, st, f, n, b); break;
        case N_NUMBER: r = step_number(g, st, f, n, b); break;
        case N_ANYOF: r = step_anyof(g, st, n, b); break;
        default: return 0;
        }
        if (r != STEP_REFEED) return r == STEP_OK;
    }
    return 0;
}

void grammar_start(const grammar *g, grammar_state *st) {
    st->depth = 0;
    push(st, g->root);
}

int grammar_feed(const grammar *g, grammar_state *st, const uint8_t *bytes, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!feed_byte(g, st, bytes[i])) return 0;
    return 1;
}

int grammar_complete(const grammar *g, const grammar_state *st0) {
    grammar_state st;
    memcpy(&st, st0, offsetof(grammar_state, f) + st0->depth * sizeof(grammar_frame));
    while (st.depth > 1) { /* values that end lazily may end here */
        grammar_frame *f = &st.f[st.depth - 1];
        const gnode *n = &g->nodes[f->node];
        if (n->type == N_NUMBER && number_can_end(f)) pop(g, &st);
        else if (n->type == N_SWITCH && f->mode == 0 && f->pos && lowest_complete(g, n->lit, f->mask, f->pos) >= 0 &&
                 g->kids[n->kid + (uint32_t)lowest_complete(g, n->lit, f->mask, f->pos)] < 0)
            pop(g, &st);
        else return 0;
    }
    return st.depth == 1 && st.f[0].count == g->nodes[g->root].n;
}

/* 1 when the top of the state is the text of a string (added tokens may not go there). */
static int in_string_text(const grammar *g, const grammar_state *st) {
    if (!st->depth) return 0;
    const grammar_frame *f = &st->f[st->depth - 1];
    const gnode *n = &g->nodes[f->node];
    return n->type == N_STRING && (f->mode == S_BODY || f->mode == S_ESC || (n->raw && f->mode == S_OPEN));
}

/* Feed an added token's bytes: none of them may be taken as the text of a
 * string (a delimiter such as Gemma's <|"|> may open or close one). */
static int feed_added(const grammar *g, grammar_state *st, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int was = in_string_text(g, st);
        if (!feed_byte(g, st, b[i])) return 0;
        if (was && in_string_text(g, st)) return 0;
    }
    return 1;
}

/* ---- vocabularies ------------------------------------------------------------ */

typedef struct tnode {
    int32_t first_child, next_sibling;
    int32_t first_token; /* ids ending here, linked through trie.next */
    uint8_t byte;
} tnode;

typedef struct trie {
    tnode *nodes;
    size_t n_nodes, cap_nodes;
    int32_t *next; /* (vocab) next id at the same node */
} trie;

struct grammar_vocab {
    int64_t vocab;
    uint8_t **tok_bytes; /* (vocab) bytes of each id, NULL when none */
    uint32_t *tok_len;
    uint8_t *is_added;   /* (vocab) added / special tokens: checked one by one */
    int32_t *added_ids;
    size_t n_added;
    trie all;            /* every token but the added ones */
    /* Inside the text of a string most tokens are "clean" (whole UTF-8
     * characters, none of " \ < or a control byte): each is allowed exactly
     * when its characters fit the string's budget, so they are listed by
     * character count and only the others are walked (trie special). */
    trie special;
    int32_t *clean_ids;  /* (n_clean) sorted by character count */
    uint32_t *clean_chars;
    size_t n_clean;
    uint8_t *is_eos;     /* (vocab) */
    int32_t *eos;
    size_t n_eos;
    grammar_state *stack; /* (MAX_TOKEN_BYTES + 2) the DFS's states */
    int32_t *path;        /* (MAX_TOKEN_BYTES + 2) trie nodes being walked */
    uint8_t *allowed;     /* (vocab) scratch of grammar_mask_logits */
};

/* The GPT-2 byte mapping (bytes_to_unicode): code point -> byte, -1 none. */
static void bytelevel_table(int16_t *cp_to_byte /* 324 */) {
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) cp_to_byte[b] = (int16_t)b;
        else cp_to_byte[256 + n++] = (int16_t)b;
    }
}

static int utf8_next(const uint8_t *s, size_t n, size_t *i, uint32_t *cp) {
    uint8_t c = s[*i];
    int k = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    if (*i + (size_t)k >= n) return 0;
    uint32_t v = k == 0 ? c : k == 1 ? c & 0x1F : k == 2 ? c & 0x0F : c & 0x07;
    for (int j = 1; j <= k; j++) v = v << 6 | (s[*i + (size_t)j] & 0x3F);
    *i += (size_t)k + 1;
    *cp = v;
    return 1;
}

/* The bytes a token stands for; 0 when it has none we can tell. */
static int token_bytes(const optiq_tokenizer *t, int bytelevel, const int16_t *map, const char *s, size_t n,
                       uint8_t *out, size_t *len) {
    size_t o = 0;
    if (bytelevel) {
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            if (!utf8_next((const uint8_t *)s, n, &i, &cp) || cp >= 324 || map[cp] < 0 || o >= MAX_TOKEN_BYTES) return 0;
            out[o++] = (uint8_t)map[cp];
        }
    } else {
        (void)t;
        if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
            unsigned v;
            if (sscanf(s + 3, "%2X", &v) != 1) return 0;
            out[0] = (uint8_t)v;
            *len = 1;
            return 1;
        }
        for (size_t i = 0; i < n; i++) {
            if (o >= MAX_TOKEN_BYTES) return 0;
            if (i + 2 < n && (uint8_t)s[i] == 0xE2 && (uint8_t)s[i + 1] == 0x96 && (uint8_t)s[i + 2] == 0x81) {
                out[o++] = ' ';
                i += 2;
            } else {
                out[o++] = (uint8_t)s[i];
            }
        }
    }
    *len = o;
    return o > 0;
}

static int trie_init(trie *t, size_t V) {
    t->next = malloc(V * sizeof *t->next);
    if (!t->next || !grow((void **)&t->nodes, &t->cap_nodes, 1, sizeof *t->nodes)) return 0;
    for (size_t i = 0; i < V; i++) t->next[i] = -1;
    t->nodes[0] = (tnode){.first_child = -1, .next_sibling = -1, .first_token = -1};
    t->n_nodes = 1;
    return 1;
}

static int32_t trie_child(trie *t, int32_t parent, uint8_t b) {
    for (int32_t c = t->nodes[parent].first_child; c >= 0; c = t->nodes[c].next_sibling)
        if (t->nodes[c].byte == b) return c;
    if (!grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes + 1, sizeof *t->nodes)) return -1;
    int32_t c = (int32_t)t->n_nodes++;
    t->nodes[c] = (tnode){.first_child = -1, .next_sibling = t->nodes[parent].first_child, .first_token = -1, .byte = b};
    t->nodes[parent].first_child = c;
    return c;
}

static int trie_add(trie *t, const uint8_t *b, size_t n, int32_t id) {
    int32_t node = 0;
    for (size_t k = 0; k < n; k++)
        if ((node = trie_child(t, node, b[k])) < 0) return 0;
    t->next[id] = t->nodes[node].first_token;
    t->nodes[node].first_token = id;
    return 1;
}

/* Characters of a clean token (see grammar_vocab), or -1. */
static int clean_chars(const uint8_t *b, size_t n) {
    int chars = 0;
    for (size_t i = 0; i < n;) {
        grammar_frame f = {0};
        uint8_t c = b[i];
        if (c < 0x20 || c == '"' || c == '\\' || c == '<') return -1;
        if (c < 0x80) {
            i++, chars++;
            continue;
        }
        if (!utf8_lead(&f, c)) return -1;
        size_t k = f.pos;
        if (i + k >= n) return -1;
        uint8_t lo = (uint8_t)(f.mask & 0xFF), hi = (uint8_t)(f.mask >> 8);
        if (b[i + 1] < lo || b[i + 1] > hi) return -1;
        for (size_t j = 2; j <= k; j++)
            if (b[i + j] < 0x80 || b[i + j] > 0xBF) return -1;
        i += k + 1, chars++;
    }
    return chars;
}

static int64_t *sort_keys; /* qsort context (vocab build only; single-threaded use) */
static int by_chars(const void *a, const void *b) {
    int64_t x = sort_keys[*(const int32_t *)a], y = sort_keys[*(const int32_t *)b];
    return x < y ? -1 : x > y ? 1 : *(const int32_t *)a - *(const int32_t *)b;
}

void grammar_vocab_free(grammar_vocab *v) {
    if (!v) return;
    for (int64_t i = 0; v->tok_bytes && i < v->vocab; i++) free(v->tok_bytes[i]);
    free(v->tok_bytes), free(v->tok_len), free(v->is_added), free(v->added_ids);
    free(v->all.nodes), free(v->all.next), free(v->special.nodes), free(v->special.next);
    free(v->clean_ids), free(v->clean_chars);
    free(v->is_eos), free(v->eos), free(v->stack), free(v->path), free(v->allowed);
    free(v);
}

grammar_vocab *grammar_vocab_new(const optiq_tokenizer *tok, int64_t vocab_size, const int32_t *eos, size_t n_eos) {
    if (!tok || vocab_size <= 0) return NULL;
    grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->vocab = vocab_size;
    size_t V = (size_t)vocab_size;
    int64_t *chars = malloc(V * sizeof *chars);
    v->tok_bytes = calloc(V, sizeof *v->tok_bytes);
    v->tok_len = calloc(V, sizeof *v->tok_len);
    v->is_added = calloc(V, 1);
    v->added_ids = malloc((tok->n_added + 1) * sizeof *v->added_ids);
    v->clean_ids = malloc(V * sizeof *v->clean_ids);
    v->clean_chars = malloc(V * sizeof *v->clean_chars);
    v->is_eos = calloc(V, 1);
    v->eos = malloc((n_eos + 1) * sizeof *v->eos);
    v->stack = malloc((MAX_TOKEN_BYTES + 2) * sizeof *v->stack);
    v->path = malloc((MAX_TOKEN_BYTES + 2) * sizeof *v->path);
    v->allowed = malloc(V);
    if (!chars || !v->tok_bytes || !v->tok_len || !v->is_added || !v->added_ids || !v->clean_ids || !v->clean_chars ||
        !v->is_eos || !v->eos || !v->stack || !v->path || !v->allowed || !trie_init(&v->all, V) ||
        !trie_init(&v->special, V))
        goto fail;
    for (size_t i = 0; i < n_eos; i++)
        if (eos[i] >= 0 && eos[i] < vocab_size) v->is_eos[eos[i]] = 1, v->eos[v->n_eos++] = eos[i];
    int bytelevel = 0;
    for (size_t i = 0; i < tok->n_decs; i++) bytelevel |= tok->decs[i].type == DEC_BYTELEVEL;
    int16_t map[324];
    bytelevel_table(map);
    for (size_t i = 0; i < tok->n_added; i++) {
        int32_t id = tok->added[i].id;
        if (id >= 0 && id < vocab_size && !v->is_added[id]) v->is_added[id] = 1, v->added_ids[v->n_added++] = id;
    }
    uint8_t buf[MAX_TOKEN_BYTES];
    for (int64_t id = 0; id < vocab_size; id++) {
        size_t sl = 0, bl = 0;
        const char *s = optiq_tokenizer_id_to_token(tok, (int32_t)id, &sl);
        if (!s || !sl || v->is_eos[id]) continue;
        int ok;
        if (v->is_added[id]) {
            ok = sl <= MAX_TOKEN_BYTES;
            if (ok) memcpy(buf, s, sl), bl = sl;
        } else {
            ok = token_bytes(tok, bytelevel, map, s, sl, buf, &bl);
        }
        if (!ok) continue;
        if (!(v->tok_bytes[id] = malloc(bl))) goto fail;
        memcpy(v->tok_bytes[id], buf, bl);
        v->tok_len[id] = (uint32_t)bl;
        if (v->is_added[id]) continue;
        if (!trie_add(&v->all, buf, bl, (int32_t)id)) goto fail;
        int c = clean_chars(buf, bl);
        if (c >= 0) {
            chars[id] = c;
            v->clean_ids[v->n_clean++] = (int32_t)id;
        } else if (!trie_add(&v->special, buf, bl, (int32_t)id)) {
            goto fail;
        }
    }
    sort_keys = chars;
    qsort(v->clean_ids, v->n_clean, sizeof *v->clean_ids, by_chars);
    for (size_t i = 0; i < v->n_clean; i++) v->clean_chars[i] = (uint32_t)chars[v->clean_ids[i]];
    free(chars);
    return v;
fail:
    free(chars);
    grammar_vocab_free(v);
    return NULL;
}

const uint8_t *grammar_vocab_bytes(const grammar_vocab *v, int32_t id, size_t *len) {
    if (!v || id < 0 || id >= v->vocab || !v->tok_bytes[id]) return NULL;
    if (len) *len = v->tok_len[id];
    return v->tok_bytes[id];
}

static void copy_state(grammar_state *dst, const grammar_state *src) {
    memcpy(dst, src, offsetof(grammar_state, f) + src->depth * sizeof(grammar_frame));
}

/* Depth-first walk of a trie from state st: marks the tokens whose bytes it accepts. */
static int64_t walk_trie(const grammar *g, const grammar_state *st, grammar_vocab *v, const trie *t,
                         uint8_t *allowed) {
    int64_t count = 0;
    copy_state(&v->stack[0], st);
    int depth = 0;
    v->path[0] = t->nodes[0].first_child;
    while (depth >= 0) {
        int32_t c = v->path[depth];
        if (c < 0) { /* this level is exhausted */
            depth--;
            if (depth >= 0) v->path[depth] = t->nodes[v->path[depth]].next_sibling;
            continue;
        }
        grammar_state *next = &v->stack[depth + 1];
        copy_state(next, &v->stack[depth]);
        if (!feed_byte(g, next, t->nodes[c].byte)) {
            v->path[depth] = t->nodes[c].next_sibling;
            continue;
        }
        for (int32_t id = t->nodes[c].first_token; id >= 0; id = t->next[id]) allowed[id] = 1, count++;
        if (t->nodes[c].first_child >= 0 && depth + 1 < MAX_TOKEN_BYTES) {
            depth++;
            v->path[depth] = t->nodes[c].first_child;
        } else {
            v->path[depth] = t->nodes[c].next_sibling;
        }
    }
    return count;
}

int64_t grammar_allowed(const grammar *g, const grammar_state *st, grammar_vocab *v, uint8_t *allowed) {
    memset(allowed, 0, (size_t)v->vocab);
    int64_t count = 0;
    if (grammar_complete(g, st))
        for (size_t i = 0; i < v->n_eos; i++) allowed[v->eos[i]] = 1, count++;
    const grammar_frame *top = st->depth ? &st->f[st->depth - 1] : NULL;
    const gnode *tn = top ? &g->nodes[top->node] : NULL;
    if (tn && tn->type == N_STRING && top->mode == S_BODY && top->pos == 0) {
        /* in a string's text, no continuation byte due: the clean tokens that fit */
        uint32_t room = tn->max > top->count ? tn->max - top->count : 0;
        for (size_t i = 0; i < v->n_clean && v->clean_chars[i] <= room; i++) allowed[v->clean_ids[i]] = 1, count++;
        count += walk_trie(g, st, v, &v->special, allowed);
    } else {
        count += walk_trie(g, st, v, &v->all, allowed);
    }
    /* added / special tokens, one by one */
    grammar_state tmp;
    for (size_t i = 0; i < v->n_added; i++) {
        int32_t id = v->added_ids[i];
        if (!v->tok_bytes[id]) continue;
        copy_state(&tmp, st);
        if (feed_added(g, &tmp, v->tok_bytes[id], v->tok_len[id])) {
            allowed[id] = 1;
            count++;
        }
    }
    return count;
}

int64_t grammar_mask_logits(const grammar *g, const grammar_state *st, grammar_vocab *v, float *logits) {
    int64_t n = grammar_allowed(g, st, v, v->allowed);
    for (int64_t i = 0; i < v->vocab; i++)
        if (!v->allowed[i]) logits[i] = -INFINITY;
    return n;
}

int grammar_accept(const grammar *g, grammar_state *st, const grammar_vocab *v, int32_t id) {
    if (id < 0 || id >= v->vocab) return 0;
    if (v->is_eos[id]) return grammar_complete(g, st);
    if (!v->tok_bytes[id]) return 0;
    grammar_state tmp;
    copy_state(&tmp, st);
    if (v->is_added[id] ? !feed_added(g, &tmp, v->tok_bytes[id], v->tok_len[id])
                        : !grammar_feed(g, &tmp, v->tok_bytes[id], v->tok_len[id]))
        return 0;
    copy_state(st, &tmp);
    return 1;
}
