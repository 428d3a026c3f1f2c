/*
 * jinja_value.c — values of the template language, printed and compared the
 * way Python does, and read from / written as JSON the way Python's json
 * module does.
 *
 * The JSON reader is our own rather than cJSON because the template sees the
 * difference between 1 and 1.0 ({{ x }} prints "1" or "1.0", tojson writes
 * them back as given) and cJSON keeps only a double.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_int.h"

/* ---- byte buffer ---- */

int jbuf_put(jbuf *b, const char *s, size_t n) {
    if (b->oom) return -1;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int jbuf_putc(jbuf *b, char c) { return jbuf_put(b, &c, 1); }
int jbuf_puts(jbuf *b, const char *s) { return jbuf_put(b, s, strlen(s)); }

int jbuf_printf(jbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return jbuf_put(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int r = jbuf_put(b, big, (size_t)n);
    free(big);
    return r;
}

char *jbuf_take(jbuf *b, size_t *len) {
    if (b->oom) {
        jbuf_free(b);
        return NULL;
    }
    if (!b->p && jbuf_put(b, "", 0) != 0) return NULL;
    char *p = b->p;
    if (len) *len = b->n;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

void jbuf_free(jbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->oom = 0;
}

/* ---- arena ---- */

struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *jarena_alloc(jarena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct jchunk *c = a->head;
    if (!c || c->used + n > c->cap) {
        size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strndup(jarena *a, const char *s, size_t n) {
    char *p = jarena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void jarena_free(jarena *a) {
    struct jchunk *c = a->head;
    while (c) {
        struct jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

/* ---- UTF-8 ---- */

uint32_t u8_next(const char *s, size_t len, size_t *i) {
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = len - *i;
    unsigned c = p[0];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    int n = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (n == 0 || (size_t)n > left) {
        (*i)++;
        return c;
    }
    uint32_t cp = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (int k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) {
            (*i)++;
            return c;
        }
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        (*i)++;
        return c;
    }
    *i += (size_t)n;
    return cp;
}

size_t u8_prev(const char *s, size_t end) {
    if (end == 0) return 0;
    size_t start = end - 1;
    int k = 0;
    while (start > 0 && k < 3 && ((unsigned char)s[start] & 0xC0) == 0x80) {
        start--;
        k++;
    }
    size_t i = start;
    u8_next(s, end, &i);
    return i == end ? start : end - 1;
}

int u8_put(jbuf *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return jbuf_put(b, t, n);
}

size_t u8_count(const char *s, size_t len) {
    size_t i = 0, n = 0;
    while (i < len) {
        u8_next(s, len, &i);
        n++;
    }
    return n;
}

int py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* str.isprintable: false for the categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs
 * (but ' '). Covers the control, format, separator, surrogate and private-use
 * ranges; unassigned code points outside these are taken as printable. */
int py_isprintable(uint32_t c) {
    if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return 0;
    if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x890 || c == 0x891 ||
        c == 0x8E2 || c == 0x180E || c == 0x1680)
        return 0;
    if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x2064) ||
        (c >= 0x2066 && c <= 0x206F) || c == 0x3000)
        return 0;
    if ((c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF)
        return 0;
    if (c == 0x110BD || c == 0x110CD || (c >= 0x13430 && c <= 0x1343F) || (c >= 0x1BCA0 && c <= 0x1BCA3) ||
        (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F) || c >= 0xF0000)
        return 0;
    return 1;
}

/* ---- numbers as Python prints them ---- */

void py_float_repr(double f, char *buf) {
    if (isnan(f)) {
        strcpy(buf, "nan");
        return;
    }
    if (isinf(f)) {
        strcpy(buf, f < 0 ? "-inf" : "inf");
        return;
    }
    /* shortest digit string that reads back as f (Python's repr) */
    char tmp[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    char digits[24];
    int nd = 0, neg = 0;
    const char *q = tmp;
    if (*q == '-') {
        neg = 1;
        q++;
    }
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q) && nd < 20) digits[nd++] = *q;
    int e10 = *q == 'e' ? atoi(q + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = e10 + 1;
    char *o = buf;
    if (neg) *o++ = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *o++ = '0';
            *o++ = '.';
            for (int k = 0; k < -decpt; k++) *o++ = '0';
            for (int k = 0; k < nd; k++) *o++ = digits[k];
        } else if (decpt < nd) {
            for (int k = 0; k < decpt; k++) *o++ = digits[k];
            *o++ = '.';
            for (int k = decpt; k < nd; k++) *o++ = digits[k];
        } else {
            for (int k = 0; k < nd; k++) *o++ = digits[k];
            for (int k = nd; k < decpt; k++) *o++ = '0';
            *o++ = '.';
            *o++ = '0';
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int k = 1; k < nd; k++) *o++ = digits[k];
        }
        int e = decpt - 1;
        sprintf(o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
}

int py_repr_str(jbuf *b, const char *s, size_t len) {
    int has_sq = memchr(s, '\'', len) != NULL, has_dq = memchr(s, '"', len) != NULL;
    char quote = has_sq && !has_dq ? '"' : '\'';
    jbuf_putc(b, quote);
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        uint32_t c = u8_next(s, len, &i);
        int invalid = (i == start + 1 && (unsigned char)s[start] >= 0x80);
        if (c == (uint32_t)quote || c == '\\') {
            jbuf_putc(b, '\\');
            jbuf_putc(b, (char)c);
        } else if (c == '\n') {
            jbuf_puts(b, "\\n");
        } else if (c == '\r') {
            jbuf_puts(b, "\\r");
        } else if (c == '\t') {
            jbuf_puts(b, "\\t");
        } else if (invalid) {
            jbuf_printf(b, "\\udc%02x", (unsigned char)s[start]); /* Python's surrogateescape */
        } else if (!py_isprintable(c)) {
            if (c < 0x100) jbuf_printf(b, "\\x%02x", c);
            else if (c < 0x10000) jbuf_printf(b, "\\u%04x", c);
            else jbuf_printf(b, "\\U%08x", c);
        } else {
            jbuf_put(b, s + start, i - start);
        }
    }
    return jbuf_putc(b, quote);
}

/* ---- values ---- */

static jval UNDEF_STATIC = {.type = JV_UNDEFINED, .refs = -1};
static jval NONE_STATIC = {.type = JV_NONE, .refs = -1};
static jval TRUE_STATIC = {.type = JV_BOOL, .refs = -1, .u.b = 1};
static jval FALSE_STATIC = {.type = JV_BOOL, .refs = -1, .u.b = 0};

static jval *jv_new(jtype t) {
    jval *v = calloc(1, sizeof *v);
    if (v) {
        v->type = t;
        v->refs = 1;
    }
    return v;
}

jval *jv_none(void) { return &NONE_STATIC; }
jval *jv_bool(int b) { return b ? &TRUE_STATIC : &FALSE_STATIC; }
jval *jv_undefined(void) { return &UNDEF_STATIC; }

jval *jv_undefined_hint(const char *fmt, ...) {
    jval *v = jv_new(JV_UNDEFINED);
    if (!v) return &UNDEF_STATIC;
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    v->u.undef.hint = strdup(tmp);
    return v;
}

jval *jv_int(int64_t i) {
    jval *v = jv_new(JV_INT);
    if (v) v->u.i = i;
    return v;
}

jval *jv_float(double f) {
    jval *v = jv_new(JV_FLOAT);
    if (v) v->u.f = f;
    return v;
}

jval *jv_str_take(char *s, size_t len) {
    if (!s) return NULL;
    jval *v = jv_new(JV_STRING);
    if (!v) {
        free(s);
        return NULL;
    }
    v->u.str.s = s;
    v->u.str.len = len;
    v->u.str.ascii = -1;
    return v;
}

jval *jv_str(const char *s, size_t len) {
    char *p = malloc(len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return jv_str_take(p, len);
}

jval *jv_cstr(const char *s) { return jv_str(s, strlen(s)); }
jval *jv_list(void) { return jv_new(JV_LIST); }
jval *jv_tuple(void) { return jv_new(JV_TUPLE); }
jval *jv_dict(void) { return jv_new(JV_DICT); }
jval *jv_namespace(void) { return jv_new(JV_NAMESPACE); }

jval *jv_func(jfunc_fn fn, const jval *self, const char *name) {
    jval *v = jv_new(JV_FUNC);
    if (!v) return NULL;
    v->u.func.fn = fn;
    v->u.func.self = self ? jv_ref(self) : NULL;
    v->u.func.name = name;
    return v;
}

/* Reference counts are atomic: a parsed template's constant values are
 * shared by every render, and renders may run on several threads at once. */
jval *jv_ref(const jval *cv) {
    jval *v = (jval *)cv;
    if (v && v->refs > 0) __atomic_fetch_add(&v->refs, 1, __ATOMIC_RELAXED);
    return v;
}

void jv_unref(jval *v) {
    if (!v || v->refs < 0 || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    switch (v->type) {
    case JV_STRING: free(v->u.str.s); break;
    case JV_LIST:
    case JV_TUPLE:
        for (size_t i = 0; i < v->u.list.n; i++) jv_unref(v->u.list.items[i]);
        free(v->u.list.items);
        break;
    case JV_DICT:
    case JV_NAMESPACE:
        for (size_t i = 0; i < v->u.dict.n; i++) {
            jv_unref(v->u.dict.keys[i]);
            jv_unref(v->u.dict.vals[i]);
        }
        free(v->u.dict.keys);
        free(v->u.dict.vals);
        free(v->u.dict.index);
        break;
    case JV_FUNC: jv_unref(v->u.func.self); break;
    case JV_LOOP: jv_unref(v->u.loop.items); break;
    case JV_UNDEFINED: free(v->u.undef.hint); break;
    default: break;
    }
    free(v);
}

jtype jv_type(const jval *v) { return v ? v->type : JV_UNDEFINED; }

int jv_as_bool(const jval *v) {
    switch (jv_type(v)) {
    case JV_UNDEFINED:
    case JV_NONE: return 0;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STRING: return v->u.str.len != 0;
    case JV_LIST:
    case JV_TUPLE: return v->u.list.n != 0;
    case JV_DICT: return v->u.dict.n != 0;
    default: return 1;
    }
}

int64_t jv_as_int(const jval *v) {
    switch (jv_type(v)) {
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i;
    case JV_FLOAT: return isfinite(v->u.f) && fabs(v->u.f) < 9.2e18 ? (int64_t)v->u.f : 0;
    default: return 0;
    }
}

double jv_as_float(const jval *v) {
    switch (jv_type(v)) {
    case JV_BOOL: return v->u.b;
    case JV_INT: return (double)v->u.i;
    case JV_FLOAT: return v->u.f;
    default: return 0;
    }
}

const char *jv_str_data(const jval *v, size_t *len) {
    if (jv_type(v) != JV_STRING) return NULL;
    if (len) *len = v->u.str.len;
    return v->u.str.s;
}

int jv_is_string_ascii(jval *v) {
    if (v->u.str.ascii < 0) {
        v->u.str.ascii = 1;
        for (size_t i = 0; i < v->u.str.len; i++)
            if ((unsigned char)v->u.str.s[i] >= 0x80) {
                v->u.str.ascii = 0;
                break;
            }
    }
    return v->u.str.ascii;
}

size_t jv_len(const jval *v) {
    switch (jv_type(v)) {
    case JV_LIST:
    case JV_TUPLE: return v->u.list.n;
    case JV_DICT:
    case JV_NAMESPACE: return v->u.dict.n;
    default: return 0;
    }
}

const jval *jv_list_at(const jval *l, size_t i) {
    return (jv_type(l) == JV_LIST || jv_type(l) == JV_TUPLE) && i < l->u.list.n ? l->u.list.items[i] : NULL;
}

int jv_list_push(jval *l, jval *item) {
    if (!item) return -1;
    if (l->u.list.n == l->u.list.cap) {
        size_t cap = l->u.list.cap ? l->u.list.cap * 2 : 4;
        jval **p = realloc(l->u.list.items, cap * sizeof *p);
        if (!p) {
            jv_unref(item);
            return -1;
        }
        l->u.list.items = p;
        l->u.list.cap = cap;
    }
    l->u.list.items[l->u.list.n++] = item;
    return 0;
}

/* ---- dict ---- */

/* Equal values hash equally: numbers by value (1, 1.0 and True are one key,
 * as in Python), strings by bytes. */
static uint64_t key_hash(const jval *k) {
    uint64_t h = 1469598103934665603ull;
    switch (jv_type(k)) {
    case JV_STRING:
        for (size_t i = 0; i < k->u.str.len; i++) h = (h ^ (unsigned char)k->u.str.s[i]) * 1099511628211ull;
        return h;
    case JV_BOOL:
    case JV_INT: return (uint64_t)jv_as_int(k) * 0x9E3779B97F4A7C15ull;
    case JV_FLOAT: {
        double f = k->u.f;
        if (f == floor(f) && fabs(f) < 9.2e18) return (uint64_t)(int64_t)f * 0x9E3779B97F4A7C15ull;
        uint64_t bits;
        memcpy(&bits, &f, sizeof bits);
        return bits * 0x9E3779B97F4A7C15ull;
    }
    case JV_NONE: return 7;
    default: return (uint64_t)(uintptr_t)k;
    }
}

static int dict_reindex(jval *d) {
    size_t cap = 16;
    while (cap < d->u.dict.n * 2 + 2) cap *= 2;
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx) return -1;
    for (size_t i = 0; i < d->u.dict.n; i++) {
        size_t h = key_hash(d->u.dict.keys[i]) & (cap - 1);
        while (idx[h]) h = (h + 1) & (cap - 1);
        idx[h] = (uint32_t)(i + 1);
    }
    free(d->u.dict.index);
    d->u.dict.index = idx;
    d->u.dict.index_cap = cap;
    return 0;
}

static long dict_pos(const jval *d, const jval *key) {
    if (d->u.dict.index) {
        size_t cap = d->u.dict.index_cap;
        size_t h = key_hash(key) & (cap - 1);
        while (d->u.dict.index[h]) {
            size_t e = d->u.dict.index[h] - 1;
            if (jv_equal(d->u.dict.keys[e], key)) return (long)e;
            h = (h + 1) & (cap - 1);
        }
        return -1;
    }
    for (size_t i = 0; i < d->u.dict.n; i++)
        if (jv_equal(d->u.dict.keys[i], key)) return (long)i;
    return -1;
}

const jval *jv_dict_find(const jval *d, const jval *key) {
    if (jv_type(d) != JV_DICT && jv_type(d) != JV_NAMESPACE) return NULL;
    long p = dict_pos(d, key);
    return p < 0 ? NULL : d->u.dict.vals[p];
}

const jval *jv_dict_get(const jval *d, const char *key) {
    if (jv_type(d) != JV_DICT && jv_type(d) != JV_NAMESPACE) return NULL;
    size_t kl = strlen(key);
    jval tmp = {.type = JV_STRING, .refs = -1, .u.str = {(char *)key, kl, -1}};
    return jv_dict_find(d, &tmp);
}

const jval *jv_dict_key_at(const jval *d, size_t i) {
    return (jv_type(d) == JV_DICT || jv_type(d) == JV_NAMESPACE) && i < d->u.dict.n ? d->u.dict.keys[i] : NULL;
}

const jval *jv_dict_value_at(const jval *d, size_t i) {
    return (jv_type(d) == JV_DICT || jv_type(d) == JV_NAMESPACE) && i < d->u.dict.n ? d->u.dict.vals[i] : NULL;
}

int jv_dict_set_key(jval *d, jval *key, jval *val) {
    if (!key || !val) {
        jv_unref(key);
        jv_unref(val);
        return -1;
    }
    long p = dict_pos(d, key);
    if (p >= 0) {
        jv_unref(key);
        jv_unref(d->u.dict.vals[p]);
        d->u.dict.vals[p] = val;
        return 0;
    }
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 4;
        jval **k = realloc(d->u.dict.keys, cap * sizeof *k);
        if (k) d->u.dict.keys = k;
        jval **v = k ? realloc(d->u.dict.vals, cap * sizeof *v) : NULL;
        if (v) d->u.dict.vals = v;
        if (!k || !v) {
            jv_unref(key);
            jv_unref(val);
            return -1;
        }
        d->u.dict.cap = cap;
    }
    d->u.dict.keys[d->u.dict.n] = key;
    d->u.dict.vals[d->u.dict.n] = val;
    d->u.dict.n++;
    if (d->u.dict.n > 8) {
        if (!d->u.dict.index || d->u.dict.n * 2 + 2 > d->u.dict.index_cap) {
            if (dict_reindex(d) != 0) return -1;
        } else {
            size_t cap = d->u.dict.index_cap;
            size_t h = key_hash(key) & (cap - 1);
            while (d->u.dict.index[h]) h = (h + 1) & (cap - 1);
            d->u.dict.index[h] = (uint32_t)d->u.dict.n;
        }
    }
    return 0;
}

int jv_dict_set(jval *d, const char *key, jval *val) { return jv_dict_set_key(d, jv_cstr(key), val); }

int jv_dict_remove(jval *d, const char *key) {
    if (jv_type(d) != JV_DICT && jv_type(d) != JV_NAMESPACE) return 0;
    jval *k = jv_cstr(key);
    if (!k) return 0;
    long p = dict_pos(d, k);
    jv_unref(k);
    if (p < 0) return 0;
    jv_unref(d->u.dict.keys[p]);
    jv_unref(d->u.dict.vals[p]);
    memmove(d->u.dict.keys + p, d->u.dict.keys + p + 1, (d->u.dict.n - (size_t)p - 1) * sizeof(jval *));
    memmove(d->u.dict.vals + p, d->u.dict.vals + p + 1, (d->u.dict.n - (size_t)p - 1) * sizeof(jval *));
    d->u.dict.n--;
    if (d->u.dict.index) dict_reindex(d);
    return 1;
}

jval *jv_copy(const jval *v) {
    switch (jv_type(v)) {
    case JV_LIST:
    case JV_TUPLE: {
        jval *l = jv_new(v->type);
        if (!l) return NULL;
        for (size_t i = 0; i < v->u.list.n; i++)
            if (jv_list_push(l, jv_copy(v->u.list.items[i])) != 0) {
                jv_unref(l);
                return NULL;
            }
        return l;
    }
    case JV_DICT: {
        jval *d = jv_dict();
        if (!d) return NULL;
        for (size_t i = 0; i < v->u.dict.n; i++)
            if (jv_dict_set_key(d, jv_ref(v->u.dict.keys[i]), jv_copy(v->u.dict.vals[i])) != 0) {
                jv_unref(d);
                return NULL;
            }
        return d;
    }
    default: return jv_ref(v);
    }
}

/* ---- comparison ---- */

static int is_num(const jval *v) { return v->type == JV_INT || v->type == JV_FLOAT || v->type == JV_BOOL; }

int jv_equal(const jval *a, const jval *b) {
    if (a == b) return 1;
    if (!a || !b) return 0;
    if (is_num(a) && is_num(b)) {
        if (a->type != JV_FLOAT && b->type != JV_FLOAT) return jv_as_int(a) == jv_as_int(b);
        return jv_as_float(a) == jv_as_float(b);
    }
    if (a->type != b->type) return 0;
    switch (a->type) {
    case JV_UNDEFINED:
    case JV_NONE: return 1;
    case JV_STRING: return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case JV_LIST:
    case JV_TUPLE:
        if (a->u.list.n != b->u.list.n) return 0;
        for (size_t i = 0; i < a->u.list.n; i++)
            if (!jv_equal(a->u.list.items[i], b->u.list.items[i])) return 0;
        return 1;
    case JV_DICT:
        if (a->u.dict.n != b->u.dict.n) return 0;
        for (size_t i = 0; i < a->u.dict.n; i++) {
            const jval *o = jv_dict_find(b, a->u.dict.keys[i]);
            if (!o || !jv_equal(a->u.dict.vals[i], o)) return 0;
        }
        return 1;
    default: return 0;
    }
}

int jv_less(const jval *a, const jval *b, int *lt) {
    if (is_num(a) && is_num(b)) {
        if (a->type != JV_FLOAT && b->type != JV_FLOAT) *lt = jv_as_int(a) < jv_as_int(b);
        else *lt = jv_as_float(a) < jv_as_float(b);
        return 0;
    }
    if (a->type != b->type) return -1;
    if (a->type == JV_STRING) {
        size_t n = a->u.str.len < b->u.str.len ? a->u.str.len : b->u.str.len;
        int c = memcmp(a->u.str.s, b->u.str.s, n);
        *lt = c < 0 || (c == 0 && a->u.str.len < b->u.str.len);
        return 0;
    }
    if (a->type == JV_LIST || a->type == JV_TUPLE) {
        size_t n = a->u.list.n < b->u.list.n ? a->u.list.n : b->u.list.n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a->u.list.items[i], b->u.list.items[i])) continue;
            return jv_less(a->u.list.items[i], b->u.list.items[i], lt);
        }
        *lt = a->u.list.n < b->u.list.n;
        return 0;
    }
    return -1;
}

const char *jv_type_name(const jval *v) {
    switch (jv_type(v)) {
    case JV_UNDEFINED: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STRING: return "str";
    case JV_LIST: return "list";
    case JV_TUPLE: return "tuple";
    case JV_DICT: return "dict";
    case JV_NAMESPACE: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "builtin_function_or_method";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

/* ---- str() / repr() ---- */

int jv_write_str(jbuf *b, const jval *v, int as_repr) {
    char num[40];
    switch (jv_type(v)) {
    case JV_UNDEFINED: return as_repr ? jbuf_puts(b, "Undefined") : 0;
    case JV_NONE: return jbuf_puts(b, "None");
    case JV_BOOL: return jbuf_puts(b, v->u.b ? "True" : "False");
    case JV_INT: return jbuf_printf(b, "%lld", (long long)v->u.i);
    case JV_FLOAT: py_float_repr(v->u.f, num); return jbuf_puts(b, num);
    case JV_STRING:
        return as_repr ? py_repr_str(b, v->u.str.s, v->u.str.len) : jbuf_put(b, v->u.str.s, v->u.str.len);
    case JV_LIST:
    case JV_TUPLE:
        jbuf_putc(b, v->type == JV_LIST ? '[' : '(');
        for (size_t i = 0; i < v->u.list.n; i++) {
            if (i) jbuf_puts(b, ", ");
            jv_write_str(b, v->u.list.items[i], 1);
        }
        if (v->type == JV_TUPLE && v->u.list.n == 1) jbuf_putc(b, ',');
        return jbuf_putc(b, v->type == JV_LIST ? ']' : ')');
    case JV_DICT:
    case JV_NAMESPACE:
        if (v->type == JV_NAMESPACE) jbuf_puts(b, "<Namespace ");
        jbuf_putc(b, '{');
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i) jbuf_puts(b, ", ");
            jv_write_str(b, v->u.dict.keys[i], 1);
            jbuf_puts(b, ": ");
            jv_write_str(b, v->u.dict.vals[i], 1);
        }
        jbuf_putc(b, '}');
        return v->type == JV_NAMESPACE ? jbuf_putc(b, '>') : 0;
    case JV_MACRO: return jbuf_printf(b, "<Macro '%s'>", v->u.macro.def && v->u.macro.def->name ? v->u.macro.def->name : "caller");
    case JV_FUNC: return jbuf_printf(b, "<built-in function %s>", v->u.func.name);
    case JV_LOOP: return jbuf_printf(b, "<LoopContext %zu/%zu>", v->u.loop.index0 + 1, jv_len(v->u.loop.items));
    }
    return 0;
}

char *jv_to_str(const jval *v, size_t *len) {
    jbuf b = {0};
    jv_write_str(&b, v, 0);
    return jbuf_take(&b, len);
}

/* ---- JSON out (json.dumps) ---- */

static void json_str(jbuf *b, const char *s, size_t len, int ensure_ascii) {
    jbuf_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 && ensure_ascii) {
            jbuf_put(b, s + run, i - run);
            size_t k = i;
            uint32_t cp = u8_next(s, len, &k);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                jbuf_printf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else jbuf_printf(b, "\\u%04x", cp);
            i = k - 1;
            run = k;
            continue;
        }
        const char *esc = NULL;
        char tmp[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        }
        if (esc) {
            jbuf_put(b, s + run, i - run);
            jbuf_puts(b, esc);
            run = i + 1;
        }
    }
    jbuf_put(b, s + run, len - run);
    jbuf_putc(b, '"');
}

static void json_float(jbuf *b, double f) {
    char num[40];
    if (isnan(f)) jbuf_puts(b, "NaN");
    else if (isinf(f)) jbuf_puts(b, f < 0 ? "-Infinity" : "Infinity");
    else {
        py_float_repr(f, num);
        jbuf_puts(b, num);
    }
}

static void json_newline(jbuf *b, const char *indent_str, int level) {
    jbuf_putc(b, '\n');
    for (int i = 0; i < level; i++) jbuf_puts(b, indent_str);
}

static int json_key(jbuf *b, const jval *k, int ensure_ascii, const jval **bad) {
    switch (jv_type(k)) {
    case JV_STRING: json_str(b, k->u.str.s, k->u.str.len, ensure_ascii); return 0;
    case JV_BOOL: jbuf_puts(b, k->u.b ? "\"true\"" : "\"false\""); return 0;
    case JV_NONE: jbuf_puts(b, "\"null\""); return 0;
    case JV_INT: jbuf_printf(b, "\"%lld\"", (long long)k->u.i); return 0;
    case JV_FLOAT:
        jbuf_putc(b, '"');
        json_float(b, k->u.f);
        jbuf_putc(b, '"');
        return 0;
    default: *bad = k; return -2;
    }
}

static int key_order(const void *x, const void *y) {
    const jval *const *a = x, *const *b = y;
    int lt = 0;
    if (jv_less(a[0], b[0], &lt) != 0) return 0;
    if (lt) return -1;
    return jv_less(b[0], a[0], &lt) == 0 && lt ? 1 : 0;
}

int jv_write_json(jbuf *b, const jval *v, const jjson_opts *o, int depth, const jval **bad) {
    if (depth > 512) {
        *bad = v;
        return -2;
    }
    int indent = o->indent, sort_keys = o->sort_keys;
    const char *indent_str = o->indent_str ? o->indent_str : "";
    const char *item_sep = o->item_sep ? o->item_sep : indent >= 0 ? "," : ", ";
    const char *key_sep = o->key_sep ? o->key_sep : ": ";
    switch (jv_type(v)) {
    case JV_NONE: jbuf_puts(b, "null"); break;
    case JV_BOOL: jbuf_puts(b, v->u.b ? "true" : "false"); break;
    case JV_INT: jbuf_printf(b, "%lld", (long long)v->u.i); break;
    case JV_FLOAT: json_float(b, v->u.f); break;
    case JV_STRING: json_str(b, v->u.str.s, v->u.str.len, o->ensure_ascii); break;
    case JV_LIST:
    case JV_TUPLE:
        if (v->u.list.n == 0) {
            jbuf_puts(b, "[]");
            break;
        }
        jbuf_putc(b, '[');
        for (size_t i = 0; i < v->u.list.n; i++) {
            if (i) jbuf_puts(b, item_sep);
            if (indent >= 0) json_newline(b, indent_str, depth + 1);
            int r = jv_write_json(b, v->u.list.items[i], o, depth + 1, bad);
            if (r) return r;
        }
        if (indent >= 0) json_newline(b, indent_str, depth);
        jbuf_putc(b, ']');
        break;
    case JV_DICT: {
        if (v->u.dict.n == 0) {
            jbuf_puts(b, "{}");
            break;
        }
        size_t n = v->u.dict.n;
        size_t *order = malloc(n * sizeof *order);
        const jval **pairs = sort_keys ? malloc(2 * n * sizeof *pairs) : NULL;
        if (!order || (sort_keys && !pairs)) {
            free(order);
            free(pairs);
            b->oom = 1;
            return -1;
        }
        for (size_t i = 0; i < n; i++) order[i] = i;
        if (sort_keys) {
            for (size_t i = 0; i < n; i++) {
                pairs[2 * i] = v->u.dict.keys[i];
                pairs[2 * i + 1] = (const jval *)(uintptr_t)i;
            }
            /* stable: qsort over (key, position) falls back to the position */
            for (size_t i = 1; i < n; i++) /* insertion sort keeps equal keys in order */
                for (size_t j = i; j > 0 && key_order(&pairs[2 * (j - 1)], &pairs[2 * j]) > 0; j--) {
                    const jval *t0 = pairs[2 * j], *t1 = pairs[2 * j + 1];
                    pairs[2 * j] = pairs[2 * (j - 1)];
                    pairs[2 * j + 1] = pairs[2 * (j - 1) + 1];
                    pairs[2 * (j - 1)] = t0;
                    pairs[2 * (j - 1) + 1] = t1;
                }
            for (size_t i = 0; i < n; i++) order[i] = (size_t)(uintptr_t)pairs[2 * i + 1];
        }
        free(pairs);
        jbuf_putc(b, '{');
        int r = 0;
        for (size_t k = 0; k < n && !r; k++) {
            size_t i = order[k];
            if (k) jbuf_puts(b, item_sep);
            if (indent >= 0) json_newline(b, indent_str, depth + 1);
            r = json_key(b, v->u.dict.keys[i], o->ensure_ascii, bad);
            if (r) break;
            jbuf_puts(b, key_sep);
            r = jv_write_json(b, v->u.dict.vals[i], o, depth + 1, bad);
        }
        free(order);
        if (r) return r;
        if (indent >= 0) json_newline(b, indent_str, depth);
        jbuf_putc(b, '}');
        break;
    }
    default: *bad = v; return -2;
    }
    return b->oom ? -1 : 0;
}

char *jv_to_json(const jval *v, size_t *len) {
    jbuf b = {0};
    const jval *bad = NULL;
    jjson_opts o = {.indent = -1};
    if (jv_write_json(&b, v, &o, 0, &bad) != 0) {
        jbuf_free(&b);
        return NULL;
    }
    return jbuf_take(&b, len);
}

/* ---- JSON in (json.loads) ---- */

typedef struct jreader {
    const char *s;
    size_t n, i;
    const char *label;
    optiq_error *err;
    int failed;
} jreader;

static void jr_fail(jreader *r, const char *what) {
    if (r->failed) return;
    r->failed = 1;
    size_t line = 1, col = 1;
    for (size_t k = 0; k < r->i && k < r->n; k++) {
        if (r->s[k] == '\n') {
            line++;
            col = 1;
        } else col++;
    }
    err_set(r->err, OPTIQ_ERR_FORMAT, "%s: line %zu column %zu: %s", r->label, line, col, what);
}

static void jr_ws(jreader *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r')) r->i++;
}

static int jr_lit(jreader *r, const char *lit) {
    size_t l = strlen(lit);
    if (r->n - r->i >= l && memcmp(r->s + r->i, lit, l) == 0) {
        r->i += l;
        return 1;
    }
    return 0;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static jval *jr_string(jreader *r) {
    r->i++; /* opening quote */
    jbuf b = {0};
    for (;;) {
        if (r->i >= r->n) {
            jbuf_free(&b);
            jr_fail(r, "unterminated string");
            return NULL;
        }
        unsigned char c = (unsigned char)r->s[r->i];
        if (c == '"') {
            r->i++;
            break;
        }
        if (c < 0x20) {
            jbuf_free(&b);
            jr_fail(r, "control character in a string");
            return NULL;
        }
        if (c != '\\') {
            size_t run = r->i;
            while (r->i < r->n && r->s[r->i] != '"' && r->s[r->i] != '\\' && (unsigned char)r->s[r->i] >= 0x20) r->i++;
            jbuf_put(&b, r->s + run, r->i - run);
            continue;
        }
        if (r->i + 1 >= r->n) {
            jbuf_free(&b);
            jr_fail(r, "unterminated string");
            return NULL;
        }
        char e = r->s[r->i + 1];
        r->i += 2;
        switch (e) {
        case '"': jbuf_putc(&b, '"'); break;
        case '\\': jbuf_putc(&b, '\\'); break;
        case '/': jbuf_putc(&b, '/'); break;
        case 'b': jbuf_putc(&b, '\b'); break;
        case 'f': jbuf_putc(&b, '\f'); break;
        case 'n': jbuf_putc(&b, '\n'); break;
        case 'r': jbuf_putc(&b, '\r'); break;
        case 't': jbuf_putc(&b, '\t'); break;
        case 'u': {
            uint32_t cp;
            if (r->n - r->i < 4 || hex4(r->s + r->i, &cp) != 0) {
                jbuf_free(&b);
                jr_fail(r, "invalid \\u escape");
                return NULL;
            }
            r->i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && r->n - r->i >= 6 && r->s[r->i] == '\\' && r->s[r->i + 1] == 'u') {
                uint32_t lo;
                if (hex4(r->s + r->i + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    r->i += 6;
                }
            }
            /* a lone surrogate cannot be written as UTF-8: U+FFFD stands in */
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            u8_put(&b, cp);
            break;
        }
        default:
            r->i -= 1;
            jbuf_free(&b);
            jr_fail(r, "invalid escape in a string");
            return NULL;
        }
    }
    size_t len;
    char *p = jbuf_take(&b, &len);
    if (!p) {
        jr_fail(r, "out of memory");
        return NULL;
    }
    return jv_str_take(p, len);
}

static jval *jr_number(jreader *r) {
    size_t start = r->i;
    int is_float = 0;
    if (r->s[r->i] == '-') r->i++;
    if (r->i < r->n && r->s[r->i] == '0') r->i++;
    else if (r->i < r->n && r->s[r->i] >= '1' && r->s[r->i] <= '9')
        while (r->i < r->n && isdigit((unsigned char)r->s[r->i])) r->i++;
    else {
        jr_fail(r, "invalid number");
        return NULL;
    }
    if (r->i < r->n && r->s[r->i] == '.' && r->i + 1 < r->n && isdigit((unsigned char)r->s[r->i + 1])) {
        is_float = 1;
        r->i++;
        while (r->i < r->n && isdigit((unsigned char)r->s[r->i])) r->i++;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        size_t save = r->i;
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        if (r->i < r->n && isdigit((unsigned char)r->s[r->i])) {
            is_float = 1;
            while (r->i < r->n && isdigit((unsigned char)r->s[r->i])) r->i++;
        } else r->i = save;
    }
    char tmp[64];
    size_t l = r->i - start;
    char *buf = l < sizeof tmp ? tmp : malloc(l + 1);
    if (!buf) {
        jr_fail(r, "out of memory");
        return NULL;
    }
    memcpy(buf, r->s + start, l);
    buf[l] = 0;
    jval *v;
    if (!is_float) {
        errno = 0;
        long long x = strtoll(buf, NULL, 10);
        /* beyond int64 (Python would keep an exact big integer): kept as a float */
        v = errno == ERANGE ? jv_float(strtod(buf, NULL)) : jv_int(x);
    } else v = jv_float(strtod(buf, NULL));
    if (buf != tmp) free(buf);
    if (!v) jr_fail(r, "out of memory");
    return v;
}

static jval *jr_value(jreader *r, int depth) {
    jr_ws(r);
    if (depth > 512) {
        jr_fail(r, "nested too deeply");
        return NULL;
    }
    if (r->i >= r->n) {
        jr_fail(r, "expected a value, found the end of the text");
        return NULL;
    }
    char c = r->s[r->i];
    if (c == '"') return jr_string(r);
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (jr_lit(r, "-Infinity")) return jv_float(-INFINITY);
        return jr_number(r);
    }
    if (jr_lit(r, "true")) return jv_bool(1);
    if (jr_lit(r, "false")) return jv_bool(0);
    if (jr_lit(r, "null")) return jv_none();
    if (jr_lit(r, "NaN")) return jv_float(NAN);
    if (jr_lit(r, "Infinity")) return jv_float(INFINITY);
    if (c == '[') {
        r->i++;
        jval *l = jv_list();
        if (!l) {
            jr_fail(r, "out of memory");
            return NULL;
        }
        jr_ws(r);
        if (r->i < r->n && r->s[r->i] == ']') {
            r->i++;
            return l;
        }
        for (;;) {
            jval *item = jr_value(r, depth + 1);
            if (!item || jv_list_push(l, item) != 0) {
                jr_fail(r, "out of memory");
                jv_unref(l);
                return NULL;
            }
            jr_ws(r);
            if (r->i < r->n && r->s[r->i] == ',') {
                r->i++;
                continue;
            }
            if (r->i < r->n && r->s[r->i] == ']') {
                r->i++;
                return l;
            }
            jr_fail(r, "expected ',' or ']' in an array");
            jv_unref(l);
            return NULL;
        }
    }
    if (c == '{') {
        r->i++;
        jval *d = jv_dict();
        if (!d) {
            jr_fail(r, "out of memory");
            return NULL;
        }
        jr_ws(r);
        if (r->i < r->n && r->s[r->i] == '}') {
            r->i++;
            return d;
        }
        for (;;) {
            jr_ws(r);
            if (r->i >= r->n || r->s[r->i] != '"') {
                jr_fail(r, "expected a string key in an object");
                jv_unref(d);
                return NULL;
            }
            jval *k = jr_string(r);
            if (!k) {
                jv_unref(d);
                return NULL;
            }
            jr_ws(r);
            if (r->i >= r->n || r->s[r->i] != ':') {
                jv_unref(k);
                jr_fail(r, "expected ':' after an object key");
                jv_unref(d);
                return NULL;
            }
            r->i++;
            jval *v = jr_value(r, depth + 1);
            if (!v || jv_dict_set_key(d, k, v) != 0) {
                if (!v) jv_unref(k);
                jr_fail(r, "out of memory");
                jv_unref(d);
                return NULL;
            }
            jr_ws(r);
            if (r->i < r->n && r->s[r->i] == ',') {
                r->i++;
                continue;
            }
            if (r->i < r->n && r->s[r->i] == '}') {
                r->i++;
                return d;
            }
            jr_fail(r, "expected ',' or '}' in an object");
            jv_unref(d);
            return NULL;
        }
    }
    jr_fail(r, "expected a value");
    return NULL;
}

optiq_status jv_from_json(const char *text, size_t len, const char *label, jval **out, optiq_error *err) {
    *out = NULL;
    jreader r = {text, len, 0, label ? label : "JSON", err, 0};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) r.i = 3;
    jval *v = jr_value(&r, 0);
    if (!v) {
        if (!r.failed) err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", r.label);
        return r.failed && err && err->status ? err->status : OPTIQ_ERR_FORMAT;
    }
    jr_ws(&r);
    if (r.i != r.n) {
        jv_unref(v);
        jr_fail(&r, "extra data after the value");
        return OPTIQ_ERR_FORMAT;
    }
    *out = v;
    return OPTIQ_OK;
}
