/*
 * tokenizer_load.c — tokenizer.json (and the folder's config files) → optiq_tokenizer.
 *
 * Every part of tokenizer.json is read the way the reference deserializes it; a part this
 * build does not implement is refused with OPTIQ_ERR_UNSUPPORTED naming it, never skipped,
 * because a skipped normalizer or pre-tokenizer would silently give different ids.
 *
 * Added tokens get their ids the way the reference's AddedVocabulary::add_tokens assigns
 * them: an existing added token or vocabulary entry with the same content keeps its id;
 * otherwise the next id after the model vocabulary (or after the largest added id when that
 * is already past it). The "id" written in the file is only checked against that, as the
 * reference only warns about a mismatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/json.h"
#include "text/tokenizer_int.h"
#include "text/tokenizer_unicode.h"

#define TOKENIZER_JSON_CAP (1024u << 20) /* tokenizer.json files are large (Gemma's is 33 MB) */

/* ---- pool ---- */

char *tok_pool_strdup(optiq_tokenizer *t, const char *s, size_t len) {
    tok_pool_block *b = t->pool;
    if (!b || b->cap - b->used < len + 1) {
        size_t cap = len + 1 > (1u << 20) ? len + 1 : (1u << 20);
        tok_pool_block *nb = malloc(sizeof *nb + cap);
        if (!nb) return NULL;
        nb->next = t->pool;
        nb->used = 0;
        nb->cap = cap;
        t->pool = nb;
        b = nb;
    }
    char *p = b->data + b->used;
    memcpy(p, s, len);
    p[len] = 0;
    b->used += len + 1;
    return p;
}

/* ---- small JSON helpers (messages: "<label>: <path>: ...") ---- */

typedef struct ld {
    optiq_tokenizer *t;
    const char *label;
    optiq_error *err;
} ld;

static optiq_status fmt_err(ld *L, const char *path, const char *what) {
    return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s %s", L->label, path, what);
}

static optiq_status nomem(ld *L) { return err_set(L->err, OPTIQ_ERR_NOMEM, "%s: out of memory", L->label); }

/* Optional boolean member; absent or null → def. */
static optiq_status get_bool(ld *L, const cJSON *o, const char *key, const char *path, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) { *out = def; return OPTIQ_OK; }
    if (!cJSON_IsBool(j))
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s is %s, expected a boolean", L->label, path, key,
                       json_type_name(j));
    *out = cJSON_IsTrue(j);
    return OPTIQ_OK;
}

/* Optional string member: NULL when absent or null. */
static optiq_status get_str(ld *L, const cJSON *o, const char *key, const char *path, const char **out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return OPTIQ_OK;
    if (!cJSON_IsString(j))
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s is %s, expected a string", L->label, path, key,
                       json_type_name(j));
    *out = j->valuestring;
    return OPTIQ_OK;
}

static optiq_status get_req_str(ld *L, const cJSON *o, const char *key, const char *path, const char **out) {
    optiq_status st = get_str(L, o, key, path, out);
    if (st) return st;
    if (!*out) return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s missing", L->label, path, key);
    return OPTIQ_OK;
}

static optiq_status get_size(ld *L, const cJSON *o, const char *key, const char *path, size_t def, size_t *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    int64_t v;
    if (!j || cJSON_IsNull(j)) { *out = def; return OPTIQ_OK; }
    if (!json_as_int(j, &v) || v < 0)
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s is not a non-negative integer", L->label, path, key);
    *out = (size_t)v;
    return OPTIQ_OK;
}

/* A pattern object {"String": s} or {"Regex": r}. */
static optiq_status get_pattern(ld *L, const cJSON *o, const char *path, tok_regex **out, const char **lit,
                                size_t *lit_len) {
    char where[160];
    snprintf(where, sizeof where, "%s: %s.pattern", L->label, path);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    if (!cJSON_IsObject(p)) return err_set(L->err, OPTIQ_ERR_FORMAT, "%s missing or not an object", where);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    const cJSON *j = s ? s : r;
    if (!cJSON_IsString(j))
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: expected {\"String\": ...} or {\"Regex\": ...}", where);
    if (lit) {
        *lit = s ? tok_pool_strdup(L->t, j->valuestring, strlen(j->valuestring)) : NULL;
        if (s && !*lit) return nomem(L);
        *lit_len = s ? strlen(j->valuestring) : 0;
    }
    return tok_regex_new(j->valuestring, strlen(j->valuestring), s == NULL, where, out, L->err);
}

static const char *type_of(const cJSON *o) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static optiq_status need_type(ld *L, const cJSON *o, const char *path, const char **ty) {
    if (!cJSON_IsObject(o)) return fmt_err(L, path, "is not an object");
    *ty = type_of(o);
    if (!*ty) return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.type missing", L->label, path);
    return OPTIQ_OK;
}

static optiq_status unsupported(ld *L, const char *path, const char *ty, const char *supported) {
    return err_set(L->err, OPTIQ_ERR_UNSUPPORTED, "%s: %s type \"%s\" is not supported (supported: %s)", L->label, path,
                   ty, supported);
}

/* One character of a JSON string (Metaspace replacement, Strip content). */
static optiq_status get_char(ld *L, const cJSON *o, const char *key, const char *path, const char *def, char *out,
                             size_t *out_len) {
    const char *s;
    optiq_status st = get_str(L, o, key, path, &s);
    if (st) return st;
    if (!s) s = def;
    size_t n = strlen(s);
    if (n == 0 || n > 4 || (size_t)tok_utf8_len((unsigned char)s[0]) != n)
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s must be one character", L->label, path, key);
    memcpy(out, s, n);
    out[n] = 0;
    *out_len = n;
    return OPTIQ_OK;
}

static optiq_status get_prepend_scheme(ld *L, const cJSON *o, const char *path, tok_prepend_scheme *out) {
    const char *ps;
    int aps;
    optiq_status st = get_str(L, o, "prepend_scheme", path, &ps);
    if (st) return st;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
    if ((st = get_bool(L, o, "add_prefix_space", path, 1, &aps))) return st;
    *out = PREPEND_ALWAYS;
    if (ps) {
        if (!strcmp(ps, "always")) *out = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *out = PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *out = PREPEND_NEVER;
        else
            return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.prepend_scheme \"%s\" is not always/first/never", L->label,
                           path, ps);
    }
    /* legacy files carry add_prefix_space instead; false means never */
    if (a && cJSON_IsBool(a) && !aps) {
        if (ps && *out != PREPEND_NEVER)
            return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s: add_prefix_space false contradicts prepend_scheme \"%s\"",
                           L->label, path, ps);
        *out = PREPEND_NEVER;
    }
    return OPTIQ_OK;
}

/* ---- normalizer ---- */

static optiq_status add_norm(ld *L, const cJSON *o, const char *path, int depth) {
    optiq_tokenizer *t = L->t;
    const char *ty;
    optiq_status st = need_type(L, o, path, &ty);
    if (st) return st;
    if (depth > 8) return fmt_err(L, path, "nests Sequences too deeply");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(arr)) return fmt_err(L, path, "(Sequence) has no normalizers array");
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", path, i);
            if ((st = add_norm(L, c, sub, depth + 1))) return st;
        }
        return OPTIQ_OK;
    }
    tok_norm n = {0};
    if (!strcmp(ty, "NFC")) n.type = NORM_NFC;
    else if (!strcmp(ty, "NFD")) n.type = NORM_NFD;
    else if (!strcmp(ty, "NFKC")) n.type = NORM_NFKC;
    else if (!strcmp(ty, "NFKD")) n.type = NORM_NFKD;
    else if (!strcmp(ty, "Replace")) {
        const char *c;
        n.type = NORM_REPLACE;
        if ((st = get_req_str(L, o, "content", path, &c))) return st;
        n.content_len = strlen(c);
        if (!(n.content = tok_pool_strdup(t, c, n.content_len))) return nomem(L);
        if ((st = get_pattern(L, o, path, &n.pat, NULL, NULL))) return st;
    } else if (!strcmp(ty, "Prepend")) {
        const char *c;
        n.type = NORM_PREPEND;
        if ((st = get_req_str(L, o, "prepend", path, &c))) return st;
        n.content_len = strlen(c);
        if (!(n.content = tok_pool_strdup(t, c, n.content_len))) return nomem(L);
    } else if (!strcmp(ty, "Strip")) {
        n.type = NORM_STRIP;
        if ((st = get_bool(L, o, "strip_left", path, 0, &n.strip_left))) return st;
        if ((st = get_bool(L, o, "strip_right", path, 0, &n.strip_right))) return st;
    } else {
        return unsupported(L, path, ty, "NFC, NFD, NFKC, NFKD, Replace, Prepend, Strip, Sequence");
    }
    tok_norm *p = realloc(t->norms, (t->n_norms + 1) * sizeof *p);
    if (!p) { tok_regex_free(n.pat); return nomem(L); }
    t->norms = p;
    t->norms[t->n_norms++] = n;
    return OPTIQ_OK;
}

/* ---- pre-tokenizer ---- */

/* GPT-2's split pattern, used by ByteLevel with use_regex (tokenizers/src/pre_tokenizers/byte_level.rs). */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static optiq_status add_pretok(ld *L, const cJSON *o, const char *path, int depth) {
    optiq_tokenizer *t = L->t;
    const char *ty;
    optiq_status st = need_type(L, o, path, &ty);
    if (st) return st;
    if (depth > 8) return fmt_err(L, path, "nests Sequences too deeply");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(arr)) return fmt_err(L, path, "(Sequence) has no pretokenizers array");
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", path, i);
            if ((st = add_pretok(L, c, sub, depth + 1))) return st;
        }
        return OPTIQ_OK;
    }
    if (t->n_pretoks == TOK_MAX_PRETOK)
        return err_set(L->err, OPTIQ_ERR_UNSUPPORTED, "%s: %s: more than %d pre-tokenizer steps", L->label, path,
                       TOK_MAX_PRETOK);
    tok_pretok *p = &t->pretoks[t->n_pretoks];
    memset(p, 0, sizeof *p);
    if (!strcmp(ty, "Split")) {
        const char *b;
        p->type = PRE_SPLIT;
        if ((st = get_req_str(L, o, "behavior", path, &b))) return st;
        if (!strcmp(b, "Removed")) p->behavior = SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated")) p->behavior = SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p->behavior = SPLIT_MERGED_WITH_PREVIOUS;
        else if (!strcmp(b, "MergedWithNext")) p->behavior = SPLIT_MERGED_WITH_NEXT;
        else if (!strcmp(b, "Contiguous")) p->behavior = SPLIT_CONTIGUOUS;
        else
            return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.behavior \"%s\" is not a split behavior", L->label, path, b);
        if ((st = get_bool(L, o, "invert", path, 0, &p->invert))) return st;
        if ((st = get_pattern(L, o, path, &p->pat, NULL, NULL))) return st;
    } else if (!strcmp(ty, "ByteLevel")) {
        p->type = PRE_BYTELEVEL;
        if ((st = get_bool(L, o, "add_prefix_space", path, 1, &p->add_prefix_space))) return st;
        if ((st = get_bool(L, o, "use_regex", path, 1, &p->use_regex))) return st;
        if (p->use_regex) {
            p->behavior = SPLIT_ISOLATED;
            if ((st = tok_regex_new(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 1, "ByteLevel", &p->pat, L->err))) return st;
        }
    } else if (!strcmp(ty, "Metaspace")) {
        p->type = PRE_METASPACE;
        if ((st = get_char(L, o, "replacement", path, "\xe2\x96\x81", p->rep, &p->rep_len))) return st;
        if ((st = get_prepend_scheme(L, o, path, &p->prepend))) return st;
        if ((st = get_bool(L, o, "split", path, 1, &p->split))) return st;
    } else if (!strcmp(ty, "Digits")) {
        p->type = PRE_DIGITS;
        if ((st = get_bool(L, o, "individual_digits", path, 0, &p->individual_digits))) return st;
    } else {
        return unsupported(L, path, ty, "Split, ByteLevel, Metaspace, Digits, Sequence");
    }
    t->n_pretoks++;
    return OPTIQ_OK;
}

/* ---- decoder ---- */

static optiq_status add_dec(ld *L, const cJSON *o, const char *path, int depth) {
    optiq_tokenizer *t = L->t;
    const char *ty;
    optiq_status st = need_type(L, o, path, &ty);
    if (st) return st;
    if (depth > 8) return fmt_err(L, path, "nests Sequences too deeply");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(arr)) return fmt_err(L, path, "(Sequence) has no decoders array");
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", path, i);
            if ((st = add_dec(L, c, sub, depth + 1))) return st;
        }
        return OPTIQ_OK;
    }
    tok_dec d = {0};
    if (!strcmp(ty, "ByteLevel")) d.type = DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback")) d.type = DEC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse")) d.type = DEC_FUSE;
    else if (!strcmp(ty, "Replace")) {
        const char *c;
        d.type = DEC_REPLACE;
        if ((st = get_req_str(L, o, "content", path, &c))) return st;
        d.content_len = strlen(c);
        if (!(d.content = tok_pool_strdup(t, c, d.content_len))) return nomem(L);
        if ((st = get_pattern(L, o, path, &d.pat, &d.pat_lit, &d.pat_lit_len))) return st;
    } else if (!strcmp(ty, "Strip")) {
        char c[8];
        size_t cl;
        d.type = DEC_STRIP;
        if ((st = get_char(L, o, "content", path, " ", c, &cl))) return st;
        if (!(d.content = tok_pool_strdup(t, c, cl))) return nomem(L);
        d.content_len = cl;
        if ((st = get_size(L, o, "start", path, 0, &d.start))) return st;
        if ((st = get_size(L, o, "stop", path, 0, &d.stop))) return st;
    } else if (!strcmp(ty, "Metaspace")) {
        d.type = DEC_METASPACE;
        if ((st = get_char(L, o, "replacement", path, "\xe2\x96\x81", d.rep, &d.rep_len))) return st;
        if ((st = get_prepend_scheme(L, o, path, &d.prepend))) return st;
    } else {
        return unsupported(L, path, ty, "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence");
    }
    tok_dec *p = realloc(t->decs, (t->n_decs + 1) * sizeof *p);
    if (!p) { tok_regex_free(d.pat); return nomem(L); }
    t->decs = p;
    t->decs[t->n_decs++] = d;
    return OPTIQ_OK;
}

/* ---- post-processor ---- */

static optiq_status ids_push(ld *L, int32_t **arr, size_t *n, int32_t id) {
    int32_t *p = realloc(*arr, (*n + 1) * sizeof *p);
    if (!p) return nomem(L);
    *arr = p;
    p[(*n)++] = id;
    return OPTIQ_OK;
}

/* Wrap the current before/after lists: a later processor in a Sequence wraps the output of
 * the earlier ones. */
static optiq_status post_wrap(ld *L, const int32_t *b, size_t nb, const int32_t *a, size_t na) {
    tok_post *p = &L->t->post;
    int32_t *nbv = malloc((nb + p->n_before + 1) * sizeof *nbv);
    int32_t *nav = malloc((na + p->n_after + 1) * sizeof *nav);
    if (!nbv || !nav) { free(nbv); free(nav); return nomem(L); }
    if (nb) memcpy(nbv, b, nb * sizeof *b);
    if (p->n_before) memcpy(nbv + nb, p->before, p->n_before * sizeof *nbv);
    if (p->n_after) memcpy(nav, p->after, p->n_after * sizeof *nav);
    if (na) memcpy(nav + p->n_after, a, na * sizeof *a);
    free(p->before);
    free(p->after);
    p->before = nbv;
    p->after = nav;
    p->n_before += nb;
    p->n_after += na;
    return OPTIQ_OK;
}

/* ["<s>", 0] of Bert/RobertaProcessing */
static optiq_status pair_id(ld *L, const cJSON *o, const char *key, const char *path, int32_t *id) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    int64_t v;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 2 || !json_as_int(cJSON_GetArrayItem(j, 1), &v) || v < 0 ||
        v > INT32_MAX)
        return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.%s is not a [token, id] pair", L->label, path, key);
    *id = (int32_t)v;
    return OPTIQ_OK;
}

static optiq_status add_post(ld *L, const cJSON *o, const char *path, int depth) {
    const char *ty;
    optiq_status st = need_type(L, o, path, &ty);
    if (st) return st;
    if (depth > 8) return fmt_err(L, path, "nests Sequences too deeply");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(arr)) return fmt_err(L, path, "(Sequence) has no processors array");
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.processors[%d]", path, i);
            if ((st = add_post(L, c, sub, depth + 1))) return st;
        }
        return OPTIQ_OK;
    }
    if (!strcmp(ty, "ByteLevel")) return OPTIQ_OK; /* offsets only */
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        int32_t cls, sep;
        if ((st = pair_id(L, o, "cls", path, &cls)) || (st = pair_id(L, o, "sep", path, &sep))) return st;
        return post_wrap(L, &cls, 1, &sep, 1);
    }
    if (strcmp(ty, "TemplateProcessing"))
        return unsupported(L, path, ty, "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single)) return fmt_err(L, path, "(TemplateProcessing) has no single template array");
    int32_t *b = NULL, *a = NULL;
    size_t nb = 0, na = 0;
    int seen_seq = 0, i = 0;
    for (const cJSON *it = single->child; it; it = it->next, i++) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        if (sq) {
            if (seen_seq++) { st = err_set(L->err, OPTIQ_ERR_UNSUPPORTED, "%s: %s.single uses the sequence twice", L->label, path); break; }
            continue;
        }
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(sp, "id");
        if (!cJSON_IsString(sid)) {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.single[%d] is neither a SpecialToken nor a Sequence", L->label,
                         path, i);
            break;
        }
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, sid->valuestring);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids)) {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.special_tokens has no ids for \"%s\"", L->label, path,
                         sid->valuestring);
            break;
        }
        for (const cJSON *x = ids->child; x && !st; x = x->next) {
            int64_t v;
            if (!json_as_int(x, &v) || v < 0 || v > INT32_MAX) {
                st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.special_tokens[\"%s\"].ids holds a non-id", L->label, path,
                             sid->valuestring);
                break;
            }
            st = seen_seq ? ids_push(L, &a, &na, (int32_t)v) : ids_push(L, &b, &nb, (int32_t)v);
        }
        if (st) break;
    }
    if (!st && !seen_seq) st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: %s.single has no Sequence item", L->label, path);
    if (!st) st = post_wrap(L, b, nb, a, na);
    free(b);
    free(a);
    return st;
}

/* ---- model ---- */

static optiq_status load_bpe(ld *L, const cJSON *model) {
    optiq_tokenizer *t = L->t;
    tok_bpe *b = &t->bpe;
    optiq_status st;
    const char *ty = type_of(model);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!ty && merges) ty = "BPE"; /* old files leave the type out; the reference infers it */
    if (!ty) return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.type missing", L->label);
    if (strcmp(ty, "BPE")) return unsupported(L, "model", ty, "BPE");
    if (!cJSON_IsObject(vocab)) return fmt_err(L, "model.vocab", "missing or not an object");
    if (!cJSON_IsArray(merges)) return fmt_err(L, "model.merges", "missing or not an array");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return err_set(L->err, OPTIQ_ERR_UNSUPPORTED, "%s: model.dropout is set: randomised BPE is not supported",
                       L->label);

    /* vocab */
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int64_t v;
        if (!json_as_int(e, &v) || v < 0 || v > INT32_MAX - 1)
            return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.vocab[\"%.80s\"] is not a token id", L->label, e->string);
        size_t len = strlen(e->string);
        char *s = tok_pool_strdup(t, e->string, len);
        if (!s || tok_strmap_put(&b->vocab, s, len, (int32_t)v)) return nomem(L);
    }
    b->vocab_count = b->vocab.n;

    const char *unk, *pre, *suf;
    if ((st = get_str(L, model, "unk_token", "model", &unk))) return st;
    if ((st = get_str(L, model, "continuing_subword_prefix", "model", &pre))) return st;
    if ((st = get_str(L, model, "end_of_word_suffix", "model", &suf))) return st;
    if ((st = get_bool(L, model, "fuse_unk", "model", 0, &b->fuse_unk))) return st;
    if ((st = get_bool(L, model, "byte_fallback", "model", 0, &b->byte_fallback))) return st;
    if ((st = get_bool(L, model, "ignore_merges", "model", 0, &b->ignore_merges))) return st;
    b->unk_id = -1;
    if (unk) {
        b->unk_id = tok_strmap_get(&b->vocab, unk, strlen(unk));
        if (b->unk_id < 0) b->unk_id = -2; /* named but absent: an error only if it is ever needed */
    }
    if (pre && *pre) {
        b->prefix_len = strlen(pre);
        if (!(b->prefix = strdup(pre))) return nomem(L);
    }
    if (suf && *suf) {
        b->suffix_len = strlen(suf);
        if (!(b->suffix = strdup(suf))) return nomem(L);
    }

    /* merges: [["a", "b"], ...] or the older ["a b", ...] */
    if (tok_bpe_reserve_merges(b, (size_t)cJSON_GetArraySize(merges))) return nomem(L);
    char *buf = NULL;
    size_t buf_cap = 0;
    uint32_t rank = 0;
    st = OPTIQ_OK;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *c;
        size_t al, cl;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.merges[%u] \"%.80s\" is not two tokens separated by a space",
                             L->label, rank, m->valuestring);
                break;
            }
            a = m->valuestring;
            al = (size_t)(sp - a);
            c = sp + 1;
            cl = strlen(c);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            al = strlen(a);
            c = m->child->next->valuestring;
            cl = strlen(c);
        } else {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.merges[%u] is not a pair of tokens", L->label, rank);
            break;
        }
        int32_t ia = tok_strmap_get(&b->vocab, a, al), ic = tok_strmap_get(&b->vocab, c, cl);
        if (ia < 0 || ic < 0) {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.merges[%u]: token \"%.*s\" is not in the vocabulary",
                         L->label, rank, (int)(ia < 0 ? al : cl), ia < 0 ? a : c);
            break;
        }
        /* the merged token drops the right part's continuing_subword_prefix */
        size_t skip = b->prefix_len;
        if (skip > cl) {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.merges[%u]: \"%.*s\" is shorter than the subword prefix",
                         L->label, rank, (int)cl, c);
            break;
        }
        if (al + cl + 1 > buf_cap) {
            buf_cap = (al + cl + 1) * 2;
            char *nb = realloc(buf, buf_cap);
            if (!nb) { st = nomem(L); break; }
            buf = nb;
        }
        memcpy(buf, a, al);
        memcpy(buf + al, c + skip, cl - skip);
        int32_t in = tok_strmap_get(&b->vocab, buf, al + cl - skip);
        if (in < 0) {
            st = err_set(L->err, OPTIQ_ERR_FORMAT, "%s: model.merges[%u]: merged token \"%.*s\" is not in the vocabulary",
                         L->label, rank, (int)(al + cl - skip), buf);
            break;
        }
        tok_bpe_add_merge(b, ia, ic, rank, in, a, al, c, cl);
    }
    free(buf);
    if (st) return st;
    if (tok_bpe_finish(b)) return nomem(L);
    return OPTIQ_OK;
}

/* ---- added tokens ---- */

static optiq_status load_added(ld *L, const cJSON *arr) {
    optiq_tokenizer *t = L->t;
    if (!arr || cJSON_IsNull(arr)) return OPTIQ_OK;
    if (!cJSON_IsArray(arr)) return fmt_err(L, "added_tokens", "is not an array");
    size_t n = (size_t)cJSON_GetArraySize(arr);
    tok_added *in = calloc(n ? n : 1, sizeof *in);
    if (!in) return nomem(L);
    optiq_status st = OPTIQ_OK;
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        int64_t v;
        int special, normalized, lstrip, rstrip, single;
        if (!cJSON_IsObject(e)) { st = fmt_err(L, path, "is not an object"); break; }
        if (!json_as_int(id, &v) || v < 0 || v > INT32_MAX - 1) { st = fmt_err(L, path, "has no valid id"); break; }
        if (!cJSON_IsString(content)) { st = fmt_err(L, path, "has no content string"); break; }
        if ((st = get_bool(L, e, "special", path, 0, &special)) || (st = get_bool(L, e, "lstrip", path, 0, &lstrip)) ||
            (st = get_bool(L, e, "rstrip", path, 0, &rstrip)) ||
            (st = get_bool(L, e, "single_word", path, 0, &single)) ||
            (st = get_bool(L, e, "normalized", path, !special, &normalized)))
            break;
        size_t len = strlen(content->valuestring);
        const char *c = tok_pool_strdup(t, content->valuestring, len);
        if (!c) { st = nomem(L); break; }
        in[i] = (tok_added){c, len, (int32_t)v, (uint8_t)special, (uint8_t)normalized, (uint8_t)lstrip,
                            (uint8_t)rstrip, (uint8_t)single};
    }
    if (st) { free(in); return st; }

    /* AddedVocabulary::add_tokens: specials first in their order, then the rest; ids from an
     * existing entry with the same content, else allocated after the vocabulary */
    tok_added *out = calloc(n ? n : 1, sizeof *out);
    tok_strmap special_set = {0};
    if (!out) { free(in); return nomem(L); }
    size_t n_special = 0, n_plain = 0;
    for (i = 0; i < n && !st; i++)
        if (in[i].special && in[i].len && tok_strmap_get(&special_set, in[i].content, in[i].len) < 0) {
            if (tok_strmap_put(&special_set, in[i].content, in[i].len, 1)) st = nomem(L);
            else out[n_special++] = in[i];
        }
    tok_added *plain = out + n_special;
    int32_t max_added = -1;
    size_t vocab_size = t->bpe.vocab_count;
    for (i = 0; i < n && !st; i++) {
        tok_added *a = &in[i];
        if (!a->len) continue;
        int32_t id = tok_strmap_get(&t->added_map, a->content, a->len);
        if (id < 0) id = tok_strmap_get(&t->bpe.vocab, a->content, a->len);
        if (id < 0) {
            if (max_added < 0) id = (int32_t)vocab_size;
            else id = ((size_t)max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : (int32_t)vocab_size;
        }
        if (tok_strmap_put(&t->added_map, a->content, a->len, id)) { st = nomem(L); break; }
        if (id > max_added) max_added = id;
        a->id = id;
        if (tok_strmap_get(&special_set, a->content, a->len) < 0) plain[n_plain++] = *a;
    }
    /* the special entries take the ids just resolved */
    for (i = 0; i < n_special; i++) out[i].id = tok_strmap_get(&t->added_map, out[i].content, out[i].len);
    tok_strmap_free(&special_set);
    free(in);
    if (st) { free(out); return st; }
    t->added = out;
    t->n_added = n_special + n_plain;
    return OPTIQ_OK;
}

/* The id tables: model vocabulary, then added tokens over it. */
static optiq_status build_ids(ld *L) {
    optiq_tokenizer *t = L->t;
    int32_t max = -1;
    for (size_t i = 0; i < t->bpe.vocab.n; i++)
        if (t->bpe.vocab.ent[i].val > max) max = t->bpe.vocab.ent[i].val;
    for (size_t i = 0; i < t->added_map.n; i++)
        if (t->added_map.ent[i].val > max) max = t->added_map.ent[i].val;
    t->n_ids = (size_t)(max + 1);
    t->id_str = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_str);
    t->id_len = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_len);
    t->id_special = calloc(t->n_ids ? t->n_ids : 1, 1);
    if (!t->id_str || !t->id_len || !t->id_special) return nomem(L);
    for (size_t i = 0; i < t->bpe.vocab.n; i++) {
        const struct tok_strent *e = &t->bpe.vocab.ent[i];
        t->id_str[e->val] = e->s;
        t->id_len[e->val] = e->len;
    }
    tok_strmap special_set = {0};
    for (size_t i = 0; i < t->added_map.n; i++) {
        const struct tok_strent *e = &t->added_map.ent[i];
        t->id_str[e->val] = e->s;
        t->id_len[e->val] = e->len;
    }
    /* the reference gives a "normalized" added token's id the normalized content (so decoding
     * it, and looking it up among the special tokens, uses that form) */
    tok_buf nb = {0};
    tok_match_scratch ms = {0};
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < t->n_added && !st; i++) {
        const tok_added *a = &t->added[i];
        if (!a->normalized || !t->has_normalizer) continue;
        if ((st = tok_normalize(t, a->content, a->len, &nb, &ms, L->err))) break;
        const char *c = tok_pool_strdup(t, nb.p ? nb.p : "", nb.n);
        if (!c) { st = nomem(L); break; }
        t->id_str[a->id] = c;
        t->id_len[a->id] = (uint32_t)nb.n;
    }
    tok_buf_free(&nb);
    tok_match_scratch_free(&ms);
    if (st) return st;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].special && tok_strmap_put(&special_set, t->added[i].content, t->added[i].len, 1)) {
            tok_strmap_free(&special_set);
            return nomem(L);
        }
    /* skip_special_tokens drops ids whose string is a special token's content */
    for (size_t id = 0; id < t->n_ids; id++)
        if (t->id_str[id] && tok_strmap_get(&special_set, t->id_str[id], t->id_len[id]) >= 0) t->id_special[id] = 1;
    tok_strmap_free(&special_set);
    return OPTIQ_OK;
}

static optiq_status build_tries(ld *L) {
    optiq_tokenizer *t = L->t;
    tok_buf nb = {0};
    tok_match_scratch ms = {0};
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < t->n_added && !st; i++) {
        tok_added *a = &t->added[i];
        if (!a->normalized) {
            if (tok_trie_add(&t->trie_raw, a->content, a->len, (int32_t)i)) st = nomem(L);
            continue;
        }
        /* a normalized token matches its normalized form */
        if ((st = tok_normalize(t, a->content, a->len, &nb, &ms, L->err))) break;
        if (nb.n && tok_trie_add(&t->trie_norm, nb.p, nb.n, (int32_t)i)) st = nomem(L);
    }
    tok_buf_free(&nb);
    tok_match_scratch_free(&ms);
    return st;
}

/* ---- folder configs ---- */

/* "bos_token": "<s>" or {"content": "<s>", ...} or null */
static const char *token_field(const cJSON *cfg, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(j)) return j->valuestring;
    if (cJSON_IsObject(j)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static void add_eos(optiq_tokenizer *t, int32_t id) {
    if (id < 0) return;
    for (size_t i = 0; i < t->n_eos; i++)
        if (t->eos_ids[i] == id) return;
    if (t->n_eos < sizeof t->eos_ids / sizeof t->eos_ids[0]) t->eos_ids[t->n_eos++] = id;
}

static optiq_status load_configs(ld *L, const cJSON *tc, const cJSON *stm, const cJSON *gc) {
    optiq_tokenizer *t = L->t;
    const char *bos = token_field(tc, "bos_token");
    const char *eos = token_field(tc, "eos_token");
    if (!bos) bos = token_field(stm, "bos_token");
    if (!eos) eos = token_field(stm, "eos_token");
    t->bos_id = -1;
    if (bos) {
        t->bos_id = optiq_tokenizer_token_to_id(t, bos, strlen(bos));
        if (!(t->bos_token = strdup(bos))) return nomem(L);
    }
    if (eos) {
        add_eos(t, optiq_tokenizer_token_to_id(t, eos, strlen(eos)));
        if (!(t->eos_token = strdup(eos))) return nomem(L);
    }
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(tc, "add_bos_token");
    t->add_bos_token = cJSON_IsTrue(j);
    if (gc) {
        int64_t v;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(gc, "eos_token_id");
        if (cJSON_IsArray(e)) {
            for (const cJSON *x = e->child; x; x = x->next)
                if (json_as_int(x, &v) && v >= 0 && v <= INT32_MAX) add_eos(t, (int32_t)v);
        } else if (json_as_int(e, &v) && v >= 0 && v <= INT32_MAX) {
            add_eos(t, (int32_t)v);
        }
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(gc, "bos_token_id");
        if (t->bos_id < 0 && json_as_int(b, &v) && v >= 0 && v <= INT32_MAX) t->bos_id = (int32_t)v;
    }
    return OPTIQ_OK;
}

/* ---- entry points ---- */

/* Every key and string of the document must be UTF-8, as the reference's JSON reader demands
 * (the C reader does not check): a token string that is not would decode to bytes that are
 * not text. Returns the offending item or NULL. */
static const cJSON *bad_utf8(const cJSON *j, int depth) {
    for (; j; j = j->next) {
        if (j->string && !tok_utf8_valid(j->string, strlen(j->string))) return j;
        if (cJSON_IsString(j) && !tok_utf8_valid(j->valuestring, strlen(j->valuestring))) return j;
        if (j->child && depth < 64) {
            const cJSON *b = bad_utf8(j->child, depth + 1);
            if (b) return b;
        }
    }
    return NULL;
}

optiq_status tokenizer_from_json(const cJSON *root, const char *label, const cJSON *tc, const cJSON *stm,
                                 const cJSON *gc, optiq_tokenizer **out, optiq_error *err) {
    *out = NULL;
    if (!cJSON_IsObject(root)) return err_set(err, OPTIQ_ERR_FORMAT, "%s: not a JSON object", label);
    const cJSON *bad = bad_utf8(root->child, 0);
    if (bad)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: a string%s%.60s%s is not valid UTF-8", label,
                       bad->string ? " under key \"" : "", bad->string ? bad->string : "", bad->string ? "\"" : "");
    optiq_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    ld L = {t, label, err};
    optiq_status st = OPTIQ_OK;
    if (!(t->source = strdup(label))) st = nomem(&L);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!st && !cJSON_IsObject(model)) st = fmt_err(&L, "model", "missing or not an object");
    if (!st) st = load_bpe(&L, model);
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!st && j && !cJSON_IsNull(j)) {
        t->has_normalizer = 1;
        st = add_norm(&L, j, "normalizer", 0);
    }
    j = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!st && j && !cJSON_IsNull(j)) st = add_pretok(&L, j, "pre_tokenizer", 0);
    j = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!st && j && !cJSON_IsNull(j)) {
        t->has_decoder = 1;
        st = add_dec(&L, j, "decoder", 0);
    }
    j = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!st && j && !cJSON_IsNull(j)) st = add_post(&L, j, "post_processor", 0);
    if (!st) st = load_added(&L, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    if (!st) st = build_ids(&L);
    if (!st) st = build_tries(&L);
    if (!st) st = load_configs(&L, tc, stm, gc);
    if (!st) {
        for (size_t c = 0; c < sizeof t->bl_byte / sizeof t->bl_byte[0]; c++) t->bl_byte[c] = -1;
        for (int b = 0; b < 256; b++) t->bl_byte[tok_bytelevel_cp((unsigned char)b)] = (int16_t)b;
    }
    if (st) {
        optiq_tokenizer_free(t);
        return st;
    }
    *out = t;
    return OPTIQ_OK;
}

void optiq_tokenizer_free(optiq_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_norms; i++) tok_regex_free(t->norms[i].pat);
    for (size_t i = 0; i < t->n_pretoks; i++) tok_regex_free(t->pretoks[i].pat);
    for (size_t i = 0; i < t->n_decs; i++) tok_regex_free(t->decs[i].pat);
    free(t->norms);
    free(t->decs);
    free(t->post.before);
    free(t->post.after);
    tok_bpe_free(&t->bpe);
    free(t->added);
    tok_strmap_free(&t->added_map);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    free(t->id_str);
    free(t->id_len);
    free(t->id_special);
    free(t->bos_token);
    free(t->eos_token);
    free(t->source);
    while (t->pool) {
        tok_pool_block *n = t->pool->next;
        free(t->pool);
        t->pool = n;
    }
    free(t);
}

static optiq_status load_opt(const char *path, const char *label, cJSON **out, optiq_error *err) {
    *out = NULL;
    if (!path) return OPTIQ_OK;
    return json_load_file(path, label, 0, out, err);
}

optiq_status optiq_tokenizer_load_files(const optiq_tokenizer_files *f, optiq_tokenizer **out, optiq_error *err) {
    if (out) *out = NULL;
    if (!f || !f->tokenizer_json || !out)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_tokenizer_load_files: tokenizer_json path required");
    cJSON *root = NULL, *tc = NULL, *stm = NULL, *gc = NULL;
    optiq_status st = json_load_file(f->tokenizer_json, f->tokenizer_json, TOKENIZER_JSON_CAP, &root, err);
    if (!st) st = load_opt(f->tokenizer_config, f->tokenizer_config, &tc, err);
    if (!st) st = load_opt(f->special_tokens_map, f->special_tokens_map, &stm, err);
    if (!st) st = load_opt(f->generation_config, f->generation_config, &gc, err);
    if (!st) st = tokenizer_from_json(root, f->tokenizer_json, tc, stm, gc, out, err);
    cJSON_Delete(root);
    cJSON_Delete(tc);
    cJSON_Delete(stm);
    cJSON_Delete(gc);
    return st;
}

optiq_status optiq_tokenizer_load(const char *dir, optiq_tokenizer **out, optiq_error *err) {
    if (out) *out = NULL;
    if (!dir || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_tokenizer_load: folder required");
    static const char *names[4] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                   "generation_config.json"};
    char *paths[4] = {0};
    optiq_status st = OPTIQ_OK;
    for (int i = 0; i < 4 && !st; i++) {
        size_t n = strlen(dir) + strlen(names[i]) + 2;
        if (!(paths[i] = malloc(n))) { st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory"); break; }
        snprintf(paths[i], n, "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(paths[i], &sb) != 0) {
            if (i == 0) st = err_set(err, OPTIQ_ERR_IO, "%s: no tokenizer.json in the folder", dir);
            free(paths[i]);
            paths[i] = NULL;
        }
    }
    if (!st) {
        optiq_tokenizer_files f = {paths[0], paths[1], paths[2], paths[3]};
        st = optiq_tokenizer_load_files(&f, out, err);
    }
    for (int i = 0; i < 4; i++) free(paths[i]);
    return st;
}
