/*
 * jinja_lib.c — what templates call: operators, item and attribute access,
 * filters, tests, the methods of str / dict / list, the loop object and the
 * globals transformers provides. Each matches the Python it stands for
 * (jinja2/filters.py, jinja2/tests.py, jinja2/sandbox.py, the str methods)
 * for the inputs chat templates give it; docs/templates.md lists the gaps.
 *
 * Case mapping (upper, lower, title, capitalize) covers ASCII, Latin-1,
 * Greek and Cyrillic; other scripts pass through unchanged.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "text/jinja_int.h"

#define MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

/* ---- small helpers ---- */

jval *jlib_str(jctx *c, char *s, size_t len, int line) {
    if (!s) return jerr(c, line, "out of memory");
    if (len > c->cfg->max_string) {
        free(s);
        return jerr(c, line, "string longer than %zu bytes", c->cfg->max_string);
    }
    jval *v = jv_str_take(s, len);
    return v ? v : jerr(c, line, "out of memory");
}

static jval *buf_str(jctx *c, jbuf *b, int line) {
    if (b->n > c->cfg->max_string) {
        jbuf_free(b);
        return jerr(c, line, "string longer than %zu bytes", c->cfg->max_string);
    }
    size_t len;
    char *s = jbuf_take(b, &len);
    return jlib_str(c, s, len, line);
}

static jval *oom(jctx *c, int line) { return jerr(c, line, "out of memory"); }

static int is_str(const jval *v) { return jv_type(v) == JV_STRING; }
static int is_intlike(const jval *v) { return jv_type(v) == JV_INT || jv_type(v) == JV_BOOL; }
static int is_number(const jval *v) { return is_intlike(v) || jv_type(v) == JV_FLOAT; }
static int is_seq(const jval *v) { return jv_type(v) == JV_LIST || jv_type(v) == JV_TUPLE; }

static jval *undef_error(jctx *c, const jval *u, int line) {
    return jerr(c, line, "%s", u->u.undef.hint ? u->u.undef.hint : "value is undefined");
}

/* str(v) as a new malloc'd string */
static char *to_cstr(const jval *v, size_t *len) { return jv_to_str(v, len); }

/* Byte offset of each code point of s (n + 1 entries). */
static size_t *cp_offsets(const char *s, size_t len, size_t *n) {
    size_t *o = malloc((len + 1) * sizeof *o);
    if (!o) return NULL;
    size_t i = 0, k = 0;
    while (i < len) {
        o[k++] = i;
        u8_next(s, len, &i);
    }
    o[k] = len;
    *n = k;
    return o;
}

static uint32_t cp_upper(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

static uint32_t cp_lower(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

static int cp_cased(uint32_t c) { return cp_upper(c) != c || cp_lower(c) != c || c == 0xDF; }

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' str.title, 's' swapcase */
static jval *case_map(jctx *c, const char *s, size_t len, int mode, int line) {
    jbuf b = {0};
    size_t i = 0;
    int first = 1, prev_cased = 0;
    while (i < len) {
        size_t st = i;
        uint32_t cp = u8_next(s, len, &i);
        if (i == st + 1 && (unsigned char)s[st] >= 0x80) { /* invalid byte: keep */
            jbuf_put(&b, s + st, 1);
            continue;
        }
        uint32_t o = cp;
        switch (mode) {
        case 'u':
            if (cp == 0xDF) {
                jbuf_puts(&b, "SS");
                continue;
            }
            o = cp_upper(cp);
            break;
        case 'l': o = cp_lower(cp); break;
        case 'c': o = first ? cp_upper(cp) : cp_lower(cp); break;
        case 't':
            o = prev_cased ? cp_lower(cp) : cp_upper(cp);
            prev_cased = cp_cased(cp);
            break;
        case 's': o = cp_upper(cp) != cp ? cp_upper(cp) : cp_lower(cp); break;
        }
        first = 0;
        u8_put(&b, o);
    }
    return buf_str(c, &b, line);
}

/* Python str.strip family; chars NULL: whitespace. which: 1 left, 2 right, 3 both */
static jval *strip(jctx *c, const char *s, size_t len, const jval *chars, int which, int line) {
    size_t cl = 0, nset = 0;
    const char *cs = chars && is_str(chars) ? jv_str_data(chars, &cl) : NULL;
    uint32_t set[256];
    if (cs) {
        size_t i = 0;
        while (i < cl && nset < 256) set[nset++] = u8_next(cs, cl, &i);
    }
    size_t a = 0, z = len;
    if (which & 1)
        while (a < z) {
            size_t k = a;
            uint32_t cp = u8_next(s, z, &k);
            int hit = 0;
            if (cs) {
                for (size_t q = 0; q < nset && !hit; q++) hit = set[q] == cp;
            } else hit = py_isspace(cp);
            if (!hit) break;
            a = k;
        }
    if (which & 2)
        while (z > a) {
            size_t p = u8_prev(s, z);
            if (p < a) p = a;
            size_t k = p;
            uint32_t cp = u8_next(s, z, &k);
            int hit = 0;
            if (cs) {
                for (size_t q = 0; q < nset && !hit; q++) hit = set[q] == cp;
            } else hit = py_isspace(cp);
            if (!hit) break;
            z = p;
        }
    jval *r = jv_str(s + a, z - a);
    return r ? r : oom(c, line);
}

static const char *find_sub(const char *h, size_t hl, const char *n, size_t nl) {
    if (nl == 0) return h;
    if (nl > hl) return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nl) == 0) return h + i;
    return NULL;
}

static const char *rfind_sub(const char *h, size_t hl, const char *n, size_t nl) {
    if (nl > hl) return NULL;
    for (size_t i = hl - nl + 1; i-- > 0;)
        if (memcmp(h + i, n, nl) == 0) return h + i;
    return NULL;
}

/* ---- argument binding ---- */

typedef struct bound {
    const jval *v[8];
    int n; /* positional count beyond the declared ones (varargs), in extra */
    jval **extra;
    int nextra;
} bound;

/* Bind positional and keyword arguments to declared names (NULL-terminated). */
static int bind(jctx *c, const char *what, const char *const *names, jval **args, int nargs, const char **kwnames,
                jval **kwargs, int nkw, bound *b, int allow_varargs, int line) {
    memset(b, 0, sizeof *b);
    int np = 0;
    while (names[np]) np++;
    for (int i = 0; i < nargs; i++) {
        if (i < np) b->v[i] = args[i];
        else if (allow_varargs) {
            if (!b->extra) b->extra = args + i;
            b->nextra++;
        } else {
            jerr(c, line, "%s takes at most %d argument(s), %d given", what, np, nargs);
            return -1;
        }
    }
    for (int k = 0; k < nkw; k++) {
        int i;
        for (i = 0; i < np; i++)
            if (strcmp(names[i], kwnames[k]) == 0) break;
        if (i == np) {
            jerr(c, line, "%s got an unexpected keyword argument '%s'", what, kwnames[k]);
            return -1;
        }
        if (b->v[i]) {
            jerr(c, line, "%s got multiple values for argument '%s'", what, kwnames[k]);
            return -1;
        }
        b->v[i] = kwargs[k];
    }
    return 0;
}

static int get_int_arg(jctx *c, const jval *v, int64_t def, int64_t *out, const char *what, int line) {
    if (!v || jv_type(v) == JV_NONE) {
        *out = def;
        return 0;
    }
    if (!is_intlike(v)) {
        jerr(c, line, "%s must be an integer, not '%s'", what, jv_type_name(v));
        return -1;
    }
    *out = jv_as_int(v);
    return 0;
}

/* ---- iteration, items, slices ---- */

jval *jlib_iterate(jctx *c, const jval *v, int line) {
    switch (jv_type(v)) {
    case JV_LIST:
    case JV_TUPLE: return jv_ref(v);
    case JV_UNDEFINED: {
        jval *l = jv_list();
        return l ? l : oom(c, line);
    }
    case JV_DICT: {
        jval *l = jv_list();
        if (!l) return oom(c, line);
        for (size_t i = 0; i < v->u.dict.n; i++)
            if (jv_list_push(l, jv_ref(v->u.dict.keys[i])) != 0) {
                jv_unref(l);
                return oom(c, line);
            }
        return l;
    }
    case JV_STRING: {
        jval *l = jv_list();
        if (!l) return oom(c, line);
        size_t i = 0, len = v->u.str.len;
        if (jstep(c, line, len / 16) != 0) {
            jv_unref(l);
            return NULL;
        }
        while (i < len) {
            size_t st = i;
            u8_next(v->u.str.s, len, &i);
            if (jv_list_push(l, jv_str(v->u.str.s + st, i - st)) != 0) {
                jv_unref(l);
                return oom(c, line);
            }
        }
        return l;
    }
    default: return jerr(c, line, "'%s' object is not iterable", jv_type_name(v));
    }
}

static jval *char_at(jctx *c, jval *s, int64_t idx, int line, int *found) {
    size_t len = s->u.str.len;
    *found = 0;
    if (jv_is_string_ascii(s)) {
        if (idx < 0) idx += (int64_t)len;
        if (idx < 0 || (uint64_t)idx >= len) return NULL;
        *found = 1;
        jval *r = jv_str(s->u.str.s + idx, 1);
        return r ? r : oom(c, line);
    }
    size_t n;
    size_t *o = cp_offsets(s->u.str.s, len, &n);
    if (!o) return oom(c, line);
    if (idx < 0) idx += (int64_t)n;
    jval *r = NULL;
    if (idx >= 0 && (uint64_t)idx < n) {
        *found = 1;
        r = jv_str(s->u.str.s + o[idx], o[idx + 1] - o[idx]);
        if (!r) oom(c, line);
    }
    free(o);
    return r;
}

jval *jlib_getitem(jctx *c, const jval *obj, const jval *key, int line) {
    if (jv_type(key) == JV_TUPLE && (is_seq(obj) || is_str(obj)))
        return jv_undefined_hint("'%s object' has no element %s", jv_type_name(obj), "(tuple)");
    switch (jv_type(obj)) {
    case JV_LIST:
    case JV_TUPLE:
        if (is_intlike(key)) {
            int64_t i = jv_as_int(key), n = (int64_t)obj->u.list.n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return jv_ref(obj->u.list.items[i]);
            return jv_undefined_hint("'%s object' has no element %lld", jv_type_name(obj), (long long)jv_as_int(key));
        }
        break;
    case JV_STRING:
        if (is_intlike(key)) {
            int found;
            jval *r = char_at(c, (jval *)obj, jv_as_int(key), line, &found);
            if (found || c->failed) return r;
            return jv_undefined_hint("'str object' has no element %lld", (long long)jv_as_int(key));
        }
        break;
    case JV_DICT: {
        jtype kt = jv_type(key);
        if (kt != JV_LIST && kt != JV_DICT && kt != JV_NAMESPACE) {
            const jval *v = jv_dict_find(obj, key);
            if (v) return jv_ref(v);
        }
        break;
    }
    default: break;
    }
    /* jinja2's sandbox getitem falls back to an attribute for string keys */
    if (is_str(key)) {
        jval *r = jlib_getattr(c, obj, key->u.str.s, line);
        if (r || c->failed) return r;
        return jv_undefined_hint("'%s object' has no attribute '%s'", jv_type_name(obj), key->u.str.s);
    }
    char *k = to_cstr(key, NULL);
    jval *r = jv_undefined_hint("'%s object' has no element %s", jv_type_name(obj), k ? k : "?");
    free(k);
    return r;
}

jval *jlib_slice(jctx *c, const jval *obj, const jval *start, const jval *stop, const jval *step, int line) {
    const jval *parts[3] = {start, stop, step};
    for (int i = 0; i < 3; i++)
        if (parts[i] && jv_type(parts[i]) != JV_NONE && !is_intlike(parts[i]))
            return jv_undefined_hint("'%s object' has no element (slice)", jv_type_name(obj));
    int64_t st = step && jv_type(step) != JV_NONE ? jv_as_int(step) : 1;
    if (st == 0) return jerr(c, line, "slice step cannot be zero");
    size_t *offs = NULL;
    int64_t n;
    if (is_seq(obj)) n = (int64_t)obj->u.list.n;
    else if (is_str(obj)) {
        if (jv_is_string_ascii((jval *)obj)) n = (int64_t)obj->u.str.len;
        else {
            size_t cnt;
            offs = cp_offsets(obj->u.str.s, obj->u.str.len, &cnt);
            if (!offs) return oom(c, line);
            n = (int64_t)cnt;
        }
    } else return jv_undefined_hint("'%s object' has no element (slice)", jv_type_name(obj));
    /* PySlice_AdjustIndices */
    int64_t a, z;
    if (start && jv_type(start) != JV_NONE) {
        a = jv_as_int(start);
        if (a < 0) {
            a += n;
            if (a < 0) a = st < 0 ? -1 : 0;
        } else if (a >= n) a = st < 0 ? n - 1 : n;
    } else a = st < 0 ? n - 1 : 0;
    if (stop && jv_type(stop) != JV_NONE) {
        z = jv_as_int(stop);
        if (z < 0) {
            z += n;
            if (z < 0) z = st < 0 ? -1 : 0;
        } else if (z >= n) z = st < 0 ? n - 1 : n;
    } else z = st < 0 ? -1 : n;
    jval *r = NULL;
    if (is_seq(obj)) {
        r = obj->type == JV_LIST ? jv_list() : jv_tuple();
        if (!r) return oom(c, line);
        for (int64_t i = a; st > 0 ? i < z : i > z; i += st)
            if (jv_list_push(r, jv_ref(obj->u.list.items[i])) != 0) {
                jv_unref(r);
                return oom(c, line);
            }
        return r;
    }
    jbuf b = {0};
    for (int64_t i = a; st > 0 ? i < z : i > z; i += st) {
        if (offs) jbuf_put(&b, obj->u.str.s + offs[i], offs[i + 1] - offs[i]);
        else jbuf_putc(&b, obj->u.str.s[i]);
    }
    free(offs);
    return buf_str(c, &b, line);
}

int jlib_contains(jctx *c, const jval *container, const jval *item, int line) {
    switch (jv_type(container)) {
    case JV_STRING:
        if (!is_str(item)) {
            jerr(c, line, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
            return -1;
        }
        return find_sub(container->u.str.s, container->u.str.len, item->u.str.s, item->u.str.len) != NULL;
    case JV_LIST:
    case JV_TUPLE:
        for (size_t i = 0; i < container->u.list.n; i++)
            if (jv_equal(container->u.list.items[i], item)) return 1;
        return 0;
    case JV_DICT:
        if (jv_type(item) == JV_LIST || jv_type(item) == JV_DICT) {
            jerr(c, line, "unhashable type: '%s'", jv_type_name(item));
            return -1;
        }
        return jv_dict_find(container, item) != NULL;
    case JV_UNDEFINED: return 0;
    default: jerr(c, line, "argument of type '%s' is not iterable", jv_type_name(container)); return -1;
    }
}

/* ---- arithmetic ---- */

static jval *num_result(jctx *c, int is_float, double f, int64_t i, int line) {
    jval *r = is_float ? jv_float(f) : jv_int(i);
    return r ? r : oom(c, line);
}

static jval *repeat(jctx *c, const jval *seq, int64_t times, int line) {
    if (times < 0) times = 0;
    if (is_str(seq)) {
        size_t len = seq->u.str.len;
        if (len && (uint64_t)times > c->cfg->max_string / len)
            return jerr(c, line, "string longer than %zu bytes", c->cfg->max_string);
        jbuf b = {0};
        for (int64_t k = 0; k < times; k++) jbuf_put(&b, seq->u.str.s, len);
        return buf_str(c, &b, line);
    }
    size_t n = seq->u.list.n;
    if (n && (uint64_t)times > c->cfg->max_string / 8 / n) return jerr(c, line, "list too long");
    if (jstep(c, line, n * (uint64_t)times / 16) != 0) return NULL;
    jval *r = seq->type == JV_LIST ? jv_list() : jv_tuple();
    if (!r) return oom(c, line);
    for (int64_t k = 0; k < times; k++)
        for (size_t i = 0; i < n; i++)
            if (jv_list_push(r, jv_ref(seq->u.list.items[i])) != 0) {
                jv_unref(r);
                return oom(c, line);
            }
    return r;
}

static jval *percent_format(jctx *c, const jval *fmtv, const jval *args, int line);

jval *jlib_binary(jctx *c, int op, const jval *a, const jval *b, int line) {
    static const char *const opname[] = {[OP_ADD] = "+", [OP_SUB] = "-", [OP_MUL] = "*", [OP_DIV] = "/",
                                         [OP_FLOORDIV] = "//", [OP_MOD] = "%", [OP_POW] = "**"};
    if (jv_type(a) == JV_UNDEFINED) return undef_error(c, a, line);
    if (jv_type(b) == JV_UNDEFINED) return undef_error(c, b, line);
    if (is_number(a) && is_number(b)) {
        int fl = jv_type(a) == JV_FLOAT || jv_type(b) == JV_FLOAT;
        double x = jv_as_float(a), y = jv_as_float(b);
        int64_t i = jv_as_int(a), j = jv_as_int(b), r;
        switch (op) {
        case OP_ADD:
            if (!fl && __builtin_add_overflow(i, j, &r)) return jerr(c, line, "integer overflow");
            return num_result(c, fl, x + y, fl ? 0 : i + j, line);
        case OP_SUB:
            if (!fl && __builtin_sub_overflow(i, j, &r)) return jerr(c, line, "integer overflow");
            return num_result(c, fl, x - y, fl ? 0 : i - j, line);
        case OP_MUL:
            if (!fl && __builtin_mul_overflow(i, j, &r)) return jerr(c, line, "integer overflow");
            return num_result(c, fl, x * y, fl ? 0 : r, line);
        case OP_DIV:
            if (y == 0) return jerr(c, line, "division by zero");
            return num_result(c, 1, x / y, 0, line);
        case OP_FLOORDIV:
        case OP_MOD:
            if ((fl && y == 0) || (!fl && j == 0)) return jerr(c, line, op == OP_MOD ? "modulo by zero" : "integer division or modulo by zero");
            if (!fl) {
                if (i == INT64_MIN && j == -1) return jerr(c, line, "integer overflow");
                int64_t q = i / j, m = i % j;
                if (m != 0 && ((m < 0) != (j < 0))) {
                    q--;
                    m += j;
                }
                return num_result(c, 0, 0, op == OP_MOD ? m : q, line);
            } else {
                double m = fmod(x, y);
                if (m != 0 && ((m < 0) != (y < 0))) m += y;
                else if (m == 0) m = copysign(0.0, y);
                double q = floor((x - m) / y);
                return num_result(c, 1, op == OP_MOD ? m : q, 0, line);
            }
        case OP_POW:
            if (!fl && j >= 0) {
                int64_t acc = 1, base = i;
                for (int64_t k = j; k > 0; k >>= 1) {
                    if ((k & 1) && __builtin_mul_overflow(acc, base, &acc)) return jerr(c, line, "integer overflow");
                    if (k > 1 && __builtin_mul_overflow(base, base, &base)) return jerr(c, line, "integer overflow");
                }
                return num_result(c, 0, 0, acc, line);
            }
            if (x == 0 && y < 0) return jerr(c, line, "0.0 cannot be raised to a negative power");
            return num_result(c, 1, pow(x, y), 0, line);
        }
    }
    if (op == OP_ADD && is_str(a) && is_str(b)) {
        if (a->u.str.len + b->u.str.len > c->cfg->max_string)
            return jerr(c, line, "string longer than %zu bytes", c->cfg->max_string);
        jbuf buf = {0};
        jbuf_put(&buf, a->u.str.s, a->u.str.len);
        jbuf_put(&buf, b->u.str.s, b->u.str.len);
        return buf_str(c, &buf, line);
    }
    if (op == OP_ADD && is_seq(a) && jv_type(a) == jv_type(b)) {
        jval *r = a->type == JV_LIST ? jv_list() : jv_tuple();
        if (!r) return oom(c, line);
        if (jstep(c, line, (a->u.list.n + b->u.list.n) / 16) != 0) {
            jv_unref(r);
            return NULL;
        }
        for (size_t i = 0; i < a->u.list.n + b->u.list.n; i++) {
            const jval *it = i < a->u.list.n ? a->u.list.items[i] : b->u.list.items[i - a->u.list.n];
            if (jv_list_push(r, jv_ref(it)) != 0) {
                jv_unref(r);
                return oom(c, line);
            }
        }
        return r;
    }
    if (op == OP_MUL && (is_str(a) || is_seq(a)) && is_intlike(b)) return repeat(c, a, jv_as_int(b), line);
    if (op == OP_MUL && (is_str(b) || is_seq(b)) && is_intlike(a)) return repeat(c, b, jv_as_int(a), line);
    if (op == OP_MOD && is_str(a)) return percent_format(c, a, b, line);
    if (op == OP_ADD && is_str(a))
        return jerr(c, line, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
    return jerr(c, line, "unsupported operand type(s) for %s: '%s' and '%s'", opname[op], jv_type_name(a),
                jv_type_name(b));
}

/* "fmt" % args for %s %r %d %i %f %x %% (with flags, width and precision). */
static jval *percent_format(jctx *c, const jval *fmtv, const jval *args, int line) {
    const char *f = fmtv->u.str.s;
    size_t n = fmtv->u.str.len, ai = 0;
    size_t nargs = jv_type(args) == JV_TUPLE ? args->u.list.n : 1;
    jbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '%') {
            jbuf_putc(&b, f[i]);
            continue;
        }
        if (i + 1 < n && f[i + 1] == '%') {
            jbuf_putc(&b, '%');
            i++;
            continue;
        }
        char spec[32] = "%";
        size_t sl = 1;
        i++;
        while (i < n && strchr("-+ 0#", f[i]) && sl < 8) spec[sl++] = f[i++];
        while (i < n && f[i] >= '0' && f[i] <= '9' && sl < 16) spec[sl++] = f[i++];
        if (i < n && f[i] == '.') {
            spec[sl++] = f[i++];
            while (i < n && f[i] >= '0' && f[i] <= '9' && sl < 24) spec[sl++] = f[i++];
        }
        if (i >= n) {
            jbuf_free(&b);
            return jerr(c, line, "incomplete format");
        }
        char conv = f[i];
        if (ai >= nargs) {
            jbuf_free(&b);
            return jerr(c, line, "not enough arguments for format string");
        }
        const jval *v = jv_type(args) == JV_TUPLE ? args->u.list.items[ai] : args;
        ai++;
        if (conv == 's' || conv == 'r') {
            jbuf tmp = {0};
            jv_write_str(&tmp, v, conv == 'r');
            spec[sl++] = 's';
            spec[sl] = 0;
            jbuf_printf(&b, spec, tmp.p ? tmp.p : "");
            jbuf_free(&tmp);
        } else if (strchr("dixXo", conv) && is_number(v)) {
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = conv == 'i' ? 'd' : conv;
            spec[sl] = 0;
            jbuf_printf(&b, spec, (long long)jv_as_int(v));
        } else if (strchr("feEgG", conv) && is_number(v)) {
            spec[sl++] = conv;
            spec[sl] = 0;
            jbuf_printf(&b, spec, jv_as_float(v));
        } else {
            jbuf_free(&b);
            return jerr(c, line, "unsupported format character '%c' or argument type '%s'", conv, jv_type_name(v));
        }
    }
    if (ai < nargs && jv_type(args) == JV_TUPLE) {
        jbuf_free(&b);
        return jerr(c, line, "not all arguments converted during string formatting");
    }
    return buf_str(c, &b, line);
}

/* ---- tests ---- */

static const char *const TESTS[] = {"defined", "undefined", "none", "string", "mapping", "sequence", "iterable",
                                    "boolean", "number", "integer", "float", "true", "false", "even", "odd",
                                    "divisibleby", "callable", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan",
                                    "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "lower",
                                    "upper", "escaped", NULL};

int jlib_has_test(const char *name) {
    for (int i = 0; TESTS[i]; i++)
        if (strcmp(TESTS[i], name) == 0) return 1;
    return 0;
}

int jlib_test(jctx *c, const char *name, const jval *v, jval **args, int nargs, int line) {
    jtype t = jv_type(v);
    const jval *a0 = nargs > 0 ? args[0] : NULL;
#define IS(s) (strcmp(name, s) == 0)
    if (IS("defined")) return t != JV_UNDEFINED;
    if (IS("undefined")) return t == JV_UNDEFINED;
    if (IS("none")) return t == JV_NONE;
    if (IS("string")) return t == JV_STRING;
    if (IS("mapping")) return t == JV_DICT;
    /* Undefined has __len__ and __getitem__ / __iter__, so it passes both */
    if (IS("sequence")) return t == JV_STRING || t == JV_LIST || t == JV_TUPLE || t == JV_DICT || t == JV_UNDEFINED;
    if (IS("iterable")) return t == JV_STRING || t == JV_LIST || t == JV_TUPLE || t == JV_DICT || t == JV_UNDEFINED;
    if (IS("boolean")) return t == JV_BOOL;
    if (IS("number")) return t == JV_INT || t == JV_FLOAT || t == JV_BOOL;
    if (IS("integer")) return t == JV_INT;
    if (IS("float")) return t == JV_FLOAT;
    if (IS("true")) return t == JV_BOOL && v->u.b;
    if (IS("false")) return t == JV_BOOL && !v->u.b;
    if (IS("callable")) return t == JV_FUNC || t == JV_MACRO;
    if (IS("escaped")) return 0;
    if (IS("lower") || IS("upper")) {
        char *s = to_cstr(v, NULL);
        if (!s) return oom(c, line), -1;
        int cased = 0, ok = 1;
        size_t len = strlen(s), i = 0;
        while (i < len) {
            uint32_t cp = u8_next(s, len, &i);
            if (cp_cased(cp)) {
                cased = 1;
                if (IS("lower") ? cp_lower(cp) != cp : cp_upper(cp) != cp) ok = 0;
            }
        }
        free(s);
        return cased && ok;
    }
    if (IS("even") || IS("odd") || IS("divisibleby")) {
        if (t == JV_UNDEFINED) return undef_error(c, v, line), -1;
        int64_t d = 2;
        if (IS("divisibleby")) {
            if (!a0 || !is_number(a0)) return jerr(c, line, "divisibleby needs a number"), -1;
            if (jv_as_float(a0) == 0) return jerr(c, line, "integer division or modulo by zero"), -1;
            if (jv_type(a0) == JV_FLOAT || t == JV_FLOAT) return fmod(jv_as_float(v), jv_as_float(a0)) == 0;
            d = jv_as_int(a0);
        }
        if (!is_number(v)) return jerr(c, line, "unsupported operand type(s) for %%: '%s' and 'int'", jv_type_name(v)), -1;
        if (t == JV_FLOAT) {
            double m = fmod(v->u.f, (double)d);
            return IS("odd") ? m != 0 : m == 0;
        }
        int64_t m = jv_as_int(v) % d;
        return IS("odd") ? m != 0 : m == 0;
    }
    if (!a0) return jerr(c, line, "test '%s' needs an argument", name), -1;
    if (IS("eq") || IS("equalto") || IS("==")) return jv_equal(v, a0);
    if (IS("ne") || IS("!=")) return !jv_equal(v, a0);
    if (IS("sameas")) {
        if (t == JV_NONE || t == JV_BOOL || jv_type(a0) == JV_NONE || jv_type(a0) == JV_BOOL)
            return t == jv_type(a0) && (t == JV_NONE || v->u.b == a0->u.b);
        return v == a0;
    }
    if (IS("in")) return jlib_contains(c, a0, v, line);
    int lt;
    int swap = IS("gt") || IS("greaterthan") || IS(">") || IS("le") || IS("<=");
    if (jv_less(swap ? a0 : v, swap ? v : a0, &lt) != 0)
        return jerr(c, line, "'%s' not supported between instances of '%s' and '%s'", name, jv_type_name(v),
                    jv_type_name(a0)),
               -1;
    if (IS("lt") || IS("lessthan") || IS("<") || IS("gt") || IS("greaterthan") || IS(">")) return lt;
    return !lt; /* le / ge */
#undef IS
}

/* ---- attribute lookup for map/sort/... (jinja2 make_attrgetter) ---- */

static jval *attr_get(jctx *c, const jval *item, const jval *attribute, int line) {
    if (!attribute) return jv_ref(item);
    if (is_intlike(attribute)) return jlib_getitem(c, item, attribute, line);
    if (!is_str(attribute)) return jerr(c, line, "attribute must be a string");
    jval *cur = jv_ref(item);
    const char *s = attribute->u.str.s;
    size_t len = attribute->u.str.len, i = 0;
    while (cur && i <= len) {
        size_t j = i;
        while (j < len && s[j] != '.') j++;
        jval *key;
        int digits = j > i;
        for (size_t k = i; k < j; k++)
            if (s[k] < '0' || s[k] > '9') digits = 0;
        if (digits) key = jv_int(strtoll(s + i, NULL, 10));
        else key = jv_str(s + i, j - i);
        if (!key) {
            jv_unref(cur);
            return oom(c, line);
        }
        jval *next = jv_type(cur) == JV_UNDEFINED ? undef_error(c, cur, line) : jlib_getitem(c, cur, key, line);
        jv_unref(key);
        jv_unref(cur);
        cur = next;
        i = j + 1;
    }
    return cur;
}

/* key for sorting with case_sensitive=False: lower-cased strings */
static jval *sort_key(jctx *c, const jval *v, int case_sensitive, int line) {
    if (!case_sensitive && is_str(v)) return case_map(c, v->u.str.s, v->u.str.len, 'l', line);
    return jv_ref(v);
}

/* Stable merge sort of keys[] carrying vals[]; fails on unorderable keys. */
static int msort(jctx *c, jval **keys, jval **vals, size_t n, int reverse, int line) {
    if (n < 2) return 0;
    size_t h = n / 2;
    if (msort(c, keys, vals, h, reverse, line) || msort(c, keys + h, vals + h, n - h, reverse, line)) return -1;
    jval **tk = malloc(n * sizeof *tk), **tv = malloc(n * sizeof *tv);
    if (!tk || !tv) {
        free(tk);
        free(tv);
        oom(c, line);
        return -1;
    }
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int lt;
        /* take from the right only when strictly before the left one */
        if (jv_less(reverse ? keys[i] : keys[j], reverse ? keys[j] : keys[i], &lt) != 0) {
            free(tk);
            free(tv);
            jerr(c, line, "'<' not supported between instances of '%s' and '%s'", jv_type_name(keys[j]),
                 jv_type_name(keys[i]));
            return -1;
        }
        if (lt) {
            tk[k] = keys[j];
            tv[k++] = vals[j++];
        } else {
            tk[k] = keys[i];
            tv[k++] = vals[i++];
        }
    }
    while (i < h) {
        tk[k] = keys[i];
        tv[k++] = vals[i++];
    }
    while (j < n) {
        tk[k] = keys[j];
        tv[k++] = vals[j++];
    }
    memcpy(keys, tk, n * sizeof *tk);
    memcpy(vals, tv, n * sizeof *tv);
    free(tk);
    free(tv);
    return 0;
}

/* sorted copy of items (a list value) by key(item) */
static jval *sorted_by(jctx *c, const jval *items, const jval *attribute, int case_sensitive, int reverse, int by_value,
                       int pairs, int line) {
    size_t n = jv_len(items);
    jval **keys = calloc(n + 1, sizeof *keys), **vals = calloc(n + 1, sizeof *vals);
    jval *r = NULL;
    if (!keys || !vals) {
        oom(c, line);
        goto out;
    }
    if (jstep(c, line, n) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        const jval *it = jv_list_at(items, i);
        vals[i] = (jval *)it;
        jval *k = pairs ? jv_ref(jv_list_at(it, by_value ? 1 : 0)) : attr_get(c, it, attribute, line);
        if (!k) goto out;
        keys[i] = sort_key(c, k, case_sensitive, line);
        jv_unref(k);
        if (!keys[i]) goto out;
    }
    if (msort(c, keys, vals, n, reverse, line) != 0) goto out;
    r = jv_list();
    if (!r) {
        oom(c, line);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (jv_list_push(r, jv_ref(vals[i])) != 0) {
            jv_unref(r);
            r = oom(c, line);
            break;
        }
out:
    if (keys)
        for (size_t i = 0; i < n; i++) jv_unref(keys[i]);
    free(keys);
    free(vals);
    return r;
}

/* ---- filters ---- */

typedef jval *(*filter_fn)(jctx *c, const jval *v, bound *b, int line);

static jval *f_default(jctx *c, const jval *v, bound *b, int line) {
    (void)c;
    (void)line;
    if (jv_type(v) == JV_UNDEFINED || (b->v[1] && jv_as_bool(b->v[1]) && !jv_as_bool(v)))
        return b->v[0] ? jv_ref(b->v[0]) : jv_cstr("");
    return jv_ref(v);
}

static jval *f_length(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    switch (jv_type(v)) {
    case JV_STRING: return jv_int((int64_t)u8_count(v->u.str.s, v->u.str.len));
    case JV_LIST:
    case JV_TUPLE:
    case JV_DICT: return jv_int((int64_t)jv_len(v));
    case JV_UNDEFINED: return jv_int(0);
    default: return jerr(c, line, "object of type '%s' has no len()", jv_type_name(v));
    }
}

static jval *str_filter(jctx *c, const jval *v, int mode, int line) {
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    jval *r = case_map(c, s, len, mode, line);
    free(s);
    return r;
}

static jval *f_upper(jctx *c, const jval *v, bound *b, int line) { (void)b; return str_filter(c, v, 'u', line); }
static jval *f_lower(jctx *c, const jval *v, bound *b, int line) { (void)b; return str_filter(c, v, 'l', line); }
static jval *f_capitalize(jctx *c, const jval *v, bound *b, int line) { (void)b; return str_filter(c, v, 'c', line); }

/* jinja2 do_title: words start after [-\s({\[<]+ */
static jval *f_title(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    jbuf out = {0};
    size_t i = 0;
    int at_start = 1;
    while (i < len) {
        size_t st = i;
        uint32_t cp = u8_next(s, len, &i);
        int sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py_isspace(cp);
        if (sep) {
            jbuf_put(&out, s + st, i - st);
            at_start = 1;
        } else {
            u8_put(&out, at_start ? cp_upper(cp) : cp_lower(cp));
            at_start = 0;
        }
    }
    free(s);
    return buf_str(c, &out, line);
}

static jval *f_trim(jctx *c, const jval *v, bound *b, int line) {
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    jval *r = strip(c, s, len, b->v[0], 3, line);
    free(s);
    return r;
}

static jval *f_string(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    if (is_str(v)) return jv_ref(v);
    size_t len;
    char *s = to_cstr(v, &len);
    return jlib_str(c, s, len, line);
}

static jval *tojson_impl(jctx *c, const jval *v, const jval *ensure_ascii, const jval *indent, const jval *separators,
                         const jval *sort_keys, int line) {
    jjson_opts o = {.indent = -1};
    char spaces[64];
    if (indent && jv_type(indent) != JV_NONE) {
        if (is_str(indent)) {
            o.indent = 1;
            o.indent_str = indent->u.str.s;
        } else if (is_intlike(indent)) {
            int64_t k = jv_as_int(indent);
            if (k > 60) return jerr(c, line, "tojson indent larger than 60");
            if (k < 0) k = 0;
            memset(spaces, ' ', (size_t)k);
            spaces[k] = 0;
            o.indent = (int)k;
            o.indent_str = spaces;
        } else return jerr(c, line, "tojson indent must be an integer or a string");
    }
    if (separators && jv_type(separators) != JV_NONE) {
        if (!is_seq(separators) || separators->u.list.n != 2 || !is_str(separators->u.list.items[0]) ||
            !is_str(separators->u.list.items[1]))
            return jerr(c, line, "tojson separators must be a pair of strings");
        o.item_sep = separators->u.list.items[0]->u.str.s;
        o.key_sep = separators->u.list.items[1]->u.str.s;
    }
    o.sort_keys = sort_keys && jv_as_bool(sort_keys);
    o.ensure_ascii = ensure_ascii && jv_as_bool(ensure_ascii);
    jbuf out = {0};
    const jval *bad = NULL;
    int r = jv_write_json(&out, v, &o, 0, &bad);
    if (r == -2) {
        jbuf_free(&out);
        return jerr(c, line, "Object of type %s is not JSON serializable", jv_type_name(bad));
    }
    if (r != 0) {
        jbuf_free(&out);
        return oom(c, line);
    }
    return buf_str(c, &out, line);
}

static jval *f_tojson(jctx *c, const jval *v, bound *b, int line) {
    return tojson_impl(c, v, b->v[0], b->v[1], b->v[2], b->v[3], line);
}

static jval *f_list(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = jv_list();
    if (!r) {
        jv_unref(it);
        return oom(c, line);
    }
    for (size_t i = 0; i < jv_len(it); i++)
        if (jv_list_push(r, jv_ref(jv_list_at(it, i))) != 0) {
            jv_unref(r);
            r = oom(c, line);
            break;
        }
    jv_unref(it);
    return r;
}

static jval *f_join(jctx *c, const jval *v, bound *b, int line) {
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    const jval *sep = b->v[0];
    jbuf out = {0};
    size_t sl = 0;
    char *seps = sep ? to_cstr(sep, &sl) : NULL;
    int ok = 1;
    if (jstep(c, line, jv_len(it) / 16) != 0) ok = 0;
    for (size_t i = 0; ok && i < jv_len(it); i++) {
        if (i && seps) jbuf_put(&out, seps, sl);
        jval *x = attr_get(c, jv_list_at(it, i), b->v[1], line);
        if (!x) {
            ok = 0;
            break;
        }
        jv_write_str(&out, x, 0);
        jv_unref(x);
        if (out.n > c->cfg->max_string) {
            jerr(c, line, "string longer than %zu bytes", c->cfg->max_string);
            ok = 0;
        }
    }
    free(seps);
    jv_unref(it);
    if (!ok) {
        jbuf_free(&out);
        return NULL;
    }
    return buf_str(c, &out, line);
}

static jval *str_replace(jctx *c, const char *s, size_t len, const jval *old, const jval *new_, int64_t count, int line) {
    if (!is_str(old) || !is_str(new_)) return jerr(c, line, "replace() arguments must be strings");
    const char *o = old->u.str.s, *nw = new_->u.str.s;
    size_t ol = old->u.str.len, nl = new_->u.str.len;
    jbuf out = {0};
    int64_t done = 0;
    if (ol == 0) { /* Python inserts between every character */
        size_t i = 0;
        while (i <= len) {
            if (count < 0 || done < count) {
                jbuf_put(&out, nw, nl);
                done++;
            }
            if (i == len) break;
            size_t st = i;
            u8_next(s, len, &i);
            jbuf_put(&out, s + st, i - st);
            if (out.n > c->cfg->max_string) break;
        }
        return buf_str(c, &out, line);
    }
    size_t i = 0;
    while (i < len) {
        const char *hit = (count < 0 || done < count) ? find_sub(s + i, len - i, o, ol) : NULL;
        if (!hit) {
            jbuf_put(&out, s + i, len - i);
            break;
        }
        jbuf_put(&out, s + i, (size_t)(hit - (s + i)));
        jbuf_put(&out, nw, nl);
        i = (size_t)(hit - s) + ol;
        done++;
        if (out.n > c->cfg->max_string) break;
    }
    return buf_str(c, &out, line);
}

static jval *f_replace(jctx *c, const jval *v, bound *b, int line) {
    if (!b->v[0] || !b->v[1]) return jerr(c, line, "replace needs two arguments");
    int64_t count;
    if (get_int_arg(c, b->v[2], -1, &count, "count", line) != 0) return NULL;
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    char *os = to_cstr(b->v[0], NULL), *ns = to_cstr(b->v[1], NULL);
    jval *ov = os ? jv_str_take(os, strlen(os)) : NULL, *nv = ns ? jv_str_take(ns, strlen(ns)) : NULL;
    jval *r = ov && nv ? str_replace(c, s, len, ov, nv, count, line) : oom(c, line);
    jv_unref(ov);
    jv_unref(nv);
    free(s);
    return r;
}

static jval *f_first(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = jv_len(it) ? jv_ref(jv_list_at(it, 0)) : jv_undefined_hint("No first item, sequence was empty.");
    jv_unref(it);
    return r;
}

static jval *f_last(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    size_t n = jv_len(it);
    jval *r = n ? jv_ref(jv_list_at(it, n - 1)) : jv_undefined_hint("No last item, sequence was empty.");
    jv_unref(it);
    return r;
}

static jval *f_reverse(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    size_t n = jv_len(it);
    jval *r;
    if (is_str(v)) {
        jbuf out = {0};
        for (size_t i = n; i-- > 0;) {
            size_t l;
            const char *s = jv_str_data(jv_list_at(it, i), &l);
            jbuf_put(&out, s, l);
        }
        r = buf_str(c, &out, line);
    } else {
        r = jv_list();
        for (size_t i = n; r && i-- > 0;)
            if (jv_list_push(r, jv_ref(jv_list_at(it, i))) != 0) {
                jv_unref(r);
                r = NULL;
            }
        if (!r) oom(c, line);
    }
    jv_unref(it);
    return r;
}

static jval *f_items(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    if (jv_type(v) == JV_UNDEFINED) return jv_list();
    if (jv_type(v) != JV_DICT) return jerr(c, line, "Can only get item pairs from a mapping.");
    jval *r = jv_list();
    if (!r) return oom(c, line);
    for (size_t i = 0; i < v->u.dict.n; i++) {
        jval *t = jv_tuple();
        if (!t || jv_list_push(t, jv_ref(v->u.dict.keys[i])) != 0 || jv_list_push(t, jv_ref(v->u.dict.vals[i])) != 0 ||
            jv_list_push(r, t) != 0) {
            jv_unref(r);
            return oom(c, line);
        }
    }
    return r;
}

static jval *f_dictsort(jctx *c, const jval *v, bound *b, int line) {
    if (jv_type(v) != JV_DICT) return jerr(c, line, "dictsort needs a mapping, not '%s'", jv_type_name(v));
    int by_value = 0;
    if (b->v[1]) {
        if (is_str(b->v[1]) && strcmp(b->v[1]->u.str.s, "value") == 0) by_value = 1;
        else if (!(is_str(b->v[1]) && strcmp(b->v[1]->u.str.s, "key") == 0))
            return jerr(c, line, "You can only sort by either \"key\" or \"value\"");
    }
    jval *pairs = f_items(c, v, b, line);
    if (!pairs) return NULL;
    jval *r = sorted_by(c, pairs, NULL, b->v[0] && jv_as_bool(b->v[0]), b->v[2] && jv_as_bool(b->v[2]), by_value, 1, line);
    jv_unref(pairs);
    return r;
}

static jval *f_sort(jctx *c, const jval *v, bound *b, int line) {
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = sorted_by(c, it, b->v[2], b->v[1] && jv_as_bool(b->v[1]), b->v[0] && jv_as_bool(b->v[0]), 0, 0, line);
    jv_unref(it);
    return r;
}

static jval *f_unique(jctx *c, const jval *v, bound *b, int line) {
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = jv_list(), *seen = jv_list();
    int cs = b->v[0] && jv_as_bool(b->v[0]);
    if (!r || !seen) goto fail_oom;
    for (size_t i = 0; i < jv_len(it); i++) {
        if (jstep(c, line, jv_len(seen) / 16 + 1) != 0) goto fail;
        const jval *x = jv_list_at(it, i);
        jval *a = attr_get(c, x, b->v[1], line);
        jval *k = a ? sort_key(c, a, cs, line) : NULL;
        jv_unref(a);
        if (!k) goto fail;
        int dup = 0;
        for (size_t j = 0; j < jv_len(seen) && !dup; j++) dup = jv_equal(jv_list_at(seen, j), k);
        if (dup) jv_unref(k);
        else if (jv_list_push(seen, k) != 0 || jv_list_push(r, jv_ref(x)) != 0) goto fail_oom;
    }
    jv_unref(seen);
    jv_unref(it);
    return r;
fail_oom:
    oom(c, line);
fail:
    jv_unref(r);
    jv_unref(seen);
    jv_unref(it);
    return NULL;
}

static jval *minmax(jctx *c, const jval *v, bound *b, int want_max, int line) {
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    int cs = b->v[0] && jv_as_bool(b->v[0]);
    jval *best = NULL, *best_key = NULL;
    for (size_t i = 0; i < jv_len(it); i++) {
        const jval *x = jv_list_at(it, i);
        jval *a = attr_get(c, x, b->v[1], line);
        jval *k = a ? sort_key(c, a, cs, line) : NULL;
        jv_unref(a);
        if (!k) goto fail;
        int lt = 0;
        if (best_key && jv_less(want_max ? best_key : k, want_max ? k : best_key, &lt) != 0) {
            jv_unref(k);
            jerr(c, line, "'<' not supported between these values");
            goto fail;
        }
        if (!best_key || lt) {
            jv_unref(best_key);
            jv_unref(best);
            best_key = k;
            best = jv_ref(x);
        } else jv_unref(k);
    }
    jv_unref(it);
    jv_unref(best_key);
    return best ? best : jv_undefined_hint("No aggregated item, sequence was empty.");
fail:
    jv_unref(best);
    jv_unref(best_key);
    jv_unref(it);
    return NULL;
}

static jval *f_min(jctx *c, const jval *v, bound *b, int line) { return minmax(c, v, b, 0, line); }
static jval *f_max(jctx *c, const jval *v, bound *b, int line) { return minmax(c, v, b, 1, line); }

static jval *f_sum(jctx *c, const jval *v, bound *b, int line) {
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *acc = b->v[1] ? jv_ref(b->v[1]) : jv_int(0);
    for (size_t i = 0; acc && i < jv_len(it); i++) {
        jval *x = attr_get(c, jv_list_at(it, i), b->v[0], line);
        jval *n = x ? jlib_binary(c, OP_ADD, acc, x, line) : NULL;
        jv_unref(x);
        jv_unref(acc);
        acc = n;
    }
    jv_unref(it);
    return acc;
}

static jval *f_abs(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    if (is_intlike(v)) {
        int64_t i = jv_as_int(v);
        if (i == INT64_MIN) return jerr(c, line, "integer overflow");
        return jv_int(i < 0 ? -i : i);
    }
    if (jv_type(v) == JV_FLOAT) return jv_float(fabs(v->u.f));
    return jerr(c, line, "bad operand type for abs(): '%s'", jv_type_name(v));
}

/* Python float(str): optional spaces, sign, digits with underscores, inf/nan. */
static int parse_py_float(const char *s, double *out) {
    size_t len = strlen(s), a = 0, z = len;
    while (a < z && py_isspace((unsigned char)s[a])) a++;
    while (z > a && py_isspace((unsigned char)s[z - 1])) z--;
    if (a == z || z - a > 300) return -1;
    char buf[320];
    size_t bl = 0;
    for (size_t i = a; i < z; i++) {
        if (s[i] == '_') {
            if (i == a || i + 1 == z || !(s[i - 1] >= '0' && s[i - 1] <= '9') || !(s[i + 1] >= '0' && s[i + 1] <= '9'))
                return -1;
            continue;
        }
        buf[bl++] = s[i];
    }
    buf[bl] = 0;
    const char *p = buf + (buf[0] == '+' || buf[0] == '-');
    if (strcasecmp(p, "inf") == 0 || strcasecmp(p, "infinity") == 0 || strcasecmp(p, "nan") == 0) {
        *out = strcasecmp(p, "nan") == 0 ? NAN : INFINITY;
        if (buf[0] == '-') *out = -*out;
        return 0;
    }
    for (const char *q = p; *q; q++)
        if (!((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) return -1;
    char *end;
    *out = strtod(buf, &end);
    return *end == 0 && end != buf ? 0 : -1;
}

/* Python int(str, base) */
static int parse_py_int(const char *s, int base, int64_t *out) {
    size_t len = strlen(s), a = 0, z = len;
    while (a < z && py_isspace((unsigned char)s[a])) a++;
    while (z > a && py_isspace((unsigned char)s[z - 1])) z--;
    if (a == z) return -1;
    int neg = 0;
    if (s[a] == '+' || s[a] == '-') neg = s[a++] == '-';
    if ((base == 16 || base == 0) && z - a > 2 && s[a] == '0' && (s[a + 1] == 'x' || s[a + 1] == 'X')) {
        base = 16;
        a += 2;
    } else if ((base == 8 || base == 0) && z - a > 2 && s[a] == '0' && (s[a + 1] == 'o' || s[a + 1] == 'O')) {
        base = 8;
        a += 2;
    } else if ((base == 2 || base == 0) && z - a > 2 && s[a] == '0' && (s[a + 1] == 'b' || s[a + 1] == 'B')) {
        base = 2;
        a += 2;
    }
    if (base == 0) base = 10;
    if (a == z) return -1;
    uint64_t acc = 0;
    for (size_t i = a; i < z; i++) {
        char ch = s[i];
        if (ch == '_' && i > a && i + 1 < z && s[i + 1] != '_') continue;
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'Z' ? ch - 'A' + 10 : 99;
        if (d >= base) return -1;
        if (acc > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return -1;
        acc = acc * (uint64_t)base + (uint64_t)d;
    }
    if (acc > (uint64_t)INT64_MAX + (uint64_t)neg) return -1;
    *out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return 0;
}

static jval *f_int(jctx *c, const jval *v, bound *b, int line) {
    int64_t base = 10, r;
    if (get_int_arg(c, b->v[1], 10, &base, "base", line) != 0) return NULL;
    if (is_intlike(v)) return jv_int(jv_as_int(v));
    if (jv_type(v) == JV_FLOAT && isfinite(v->u.f) && fabs(v->u.f) < 9.2e18) return jv_int((int64_t)v->u.f);
    if (is_str(v)) {
        if (parse_py_int(v->u.str.s, (int)base, &r) == 0) return jv_int(r);
        double f;
        if (parse_py_float(v->u.str.s, &f) == 0 && isfinite(f) && fabs(f) < 9.2e18) return jv_int((int64_t)f);
    }
    return b->v[0] ? jv_ref(b->v[0]) : jv_int(0);
}

static jval *f_float(jctx *c, const jval *v, bound *b, int line) {
    (void)c;
    (void)line;
    if (is_number(v)) return jv_float(jv_as_float(v));
    double f;
    if (is_str(v) && parse_py_float(v->u.str.s, &f) == 0) return jv_float(f);
    return b->v[0] ? jv_ref(b->v[0]) : jv_float(0.0);
}

/* Python round(x, n): correctly rounded, ties to even on the exact binary value */
static double py_round(double x, int64_t n) {
    if (!isfinite(x)) return x;
    if (n >= 0 && n <= 300) {
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)n, x);
        return strtod(buf, NULL);
    }
    double p = pow(10.0, (double)-n);
    return nearbyint(x / p) * p;
}

static jval *f_round(jctx *c, const jval *v, bound *b, int line) {
    int64_t prec;
    if (get_int_arg(c, b->v[0], 0, &prec, "precision", line) != 0) return NULL;
    const char *method = b->v[1] && is_str(b->v[1]) ? b->v[1]->u.str.s : "common";
    if (!is_number(v)) return jerr(c, line, "type %s doesn't define __round__ method", jv_type_name(v));
    if (strcmp(method, "common") == 0) {
        if (is_intlike(v) && prec >= 0) return jv_int(jv_as_int(v));
        return jv_float(py_round(jv_as_float(v), prec));
    }
    if (strcmp(method, "ceil") != 0 && strcmp(method, "floor") != 0)
        return jerr(c, line, "method must be common, ceil or floor");
    double p = pow(10.0, (double)prec), x = jv_as_float(v) * p;
    return jv_float((strcmp(method, "ceil") == 0 ? ceil(x) : floor(x)) / p);
}

/* str.splitlines() boundaries */
static int line_break_at(const char *s, size_t len, size_t i, size_t *next) {
    size_t k = i;
    uint32_t cp = u8_next(s, len, &k);
    if (cp == '\r' && k < len && s[k] == '\n') k++;
    *next = k;
    return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D || cp == 0x1E ||
           cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

/* lines of s (without their line breaks) as a list of strings */
static jval *splitlines(jctx *c, const char *s, size_t len, int keepends, int line) {
    jval *r = jv_list();
    if (!r) return oom(c, line);
    size_t start = 0, i = 0;
    while (i < len) {
        size_t next;
        if (line_break_at(s, len, i, &next)) {
            if (jv_list_push(r, jv_str(s + start, (keepends ? next : i) - start)) != 0) {
                jv_unref(r);
                return oom(c, line);
            }
            start = i = next;
        } else i = next;
    }
    if (start < len && jv_list_push(r, jv_str(s + start, len - start)) != 0) {
        jv_unref(r);
        return oom(c, line);
    }
    return r;
}

static jval *f_indent(jctx *c, const jval *v, bound *b, int line) {
    char ind[256];
    const char *indent = "    ";
    if (b->v[0] && is_str(b->v[0])) indent = b->v[0]->u.str.s;
    else if (b->v[0]) {
        int64_t w;
        if (get_int_arg(c, b->v[0], 4, &w, "width", line) != 0) return NULL;
        if (w < 0) w = 0;
        if (w > 255) return jerr(c, line, "indent width larger than 255");
        memset(ind, ' ', (size_t)w);
        ind[w] = 0;
        indent = ind;
    }
    int first = b->v[1] && jv_as_bool(b->v[1]), blank = b->v[2] && jv_as_bool(b->v[2]);
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    char *s2 = realloc(s, len + 2);
    if (!s2) {
        free(s);
        return oom(c, line);
    }
    s = s2;
    s[len++] = '\n'; /* jinja2: "this quirk is necessary for splitlines method" */
    s[len] = 0;
    jval *lines = splitlines(c, s, len, 0, line);
    free(s);
    if (!lines) return NULL;
    jbuf out = {0};
    if (first) jbuf_puts(&out, indent);
    for (size_t i = 0; i < jv_len(lines); i++) {
        size_t l;
        const char *t = jv_str_data(jv_list_at(lines, i), &l);
        if (i) {
            jbuf_putc(&out, '\n');
            if (blank || l) jbuf_puts(&out, indent);
        }
        jbuf_put(&out, t, l);
        if (out.n > c->cfg->max_string) break;
    }
    jv_unref(lines);
    return buf_str(c, &out, line);
}

static int is_word_cp(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    return !py_isspace(cp) && py_isprintable(cp) && !(cp >= 0x2010 && cp <= 0x205E) && !(cp >= 0x3000 && cp <= 0x303F) &&
           !(cp >= 0xA1 && cp <= 0xBF) && cp != 0xD7 && cp != 0xF7;
}

static jval *f_wordcount(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    int64_t n = 0;
    int in = 0;
    size_t i = 0;
    while (i < len) {
        int w = is_word_cp(u8_next(s, len, &i));
        if (w && !in) n++;
        in = w;
    }
    free(s);
    return jv_int(n);
}

static jval *f_safe(jctx *c, const jval *v, bound *b, int line) { return f_string(c, v, b, line); }

static jval *f_escape(jctx *c, const jval *v, bound *b, int line) {
    (void)b;
    size_t len;
    char *s = to_cstr(v, &len);
    if (!s) return oom(c, line);
    jbuf out = {0};
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '&': jbuf_puts(&out, "&amp;"); break;
        case '<': jbuf_puts(&out, "&lt;"); break;
        case '>': jbuf_puts(&out, "&gt;"); break;
        case '"': jbuf_puts(&out, "&#34;"); break;
        case '\'': jbuf_puts(&out, "&#39;"); break;
        default: jbuf_putc(&out, s[i]);
        }
    }
    free(s);
    return buf_str(c, &out, line);
}

static jval *f_attr(jctx *c, const jval *v, bound *b, int line) {
    if (!b->v[0] || !is_str(b->v[0])) return jerr(c, line, "attr needs a name");
    /* Python attributes only: unlike `.name`, attr() does not fall back to items */
    jval *r = jlib_getattr(c, v, b->v[0]->u.str.s, line);
    if (r || c->failed) return r;
    return jv_undefined_hint("'%s object' has no attribute '%s'", jv_type_name(v), b->v[0]->u.str.s);
}

static jval *f_format(jctx *c, const jval *v, bound *b, int line) {
    if (!is_str(v)) return jerr(c, line, "format needs a string");
    jval *t = jv_tuple();
    if (!t) return oom(c, line);
    for (int i = 0; i < b->nextra; i++)
        if (jv_list_push(t, jv_ref(b->extra[i])) != 0) {
            jv_unref(t);
            return oom(c, line);
        }
    jval *r = percent_format(c, v, t, line);
    jv_unref(t);
    return r;
}

/* map / select / reject / selectattr / rejectattr get their raw arguments */
typedef jval *(*raw_filter_fn)(jctx *c, const jval *v, jval **args, int nargs, const char **kwnames, jval **kwargs,
                               int nkw, int line);

static jval *f_map(jctx *c, const jval *v, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw,
                   int line) {
    const jval *attribute = NULL, *deflt = NULL;
    for (int k = 0; k < nkw; k++) {
        if (strcmp(kwnames[k], "attribute") == 0) attribute = kwargs[k];
        else if (strcmp(kwnames[k], "default") == 0) deflt = kwargs[k];
        else if (attribute || nargs == 0) return jerr(c, line, "map got an unexpected keyword argument '%s'", kwnames[k]);
    }
    if (!attribute && nargs == 0) return jerr(c, line, "map requires a filter argument");
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = jv_list();
    if (!r) {
        jv_unref(it);
        return oom(c, line);
    }
    if (!attribute && (!is_str(args[0]) || !jlib_has_filter(args[0]->u.str.s))) {
        jv_unref(it);
        jv_unref(r);
        return jerr(c, line, "no filter named '%s'", is_str(args[0]) ? args[0]->u.str.s : "?");
    }
    for (size_t i = 0; i < jv_len(it); i++) {
        const jval *x = jv_list_at(it, i);
        jval *y;
        if (attribute) {
            y = attr_get(c, x, attribute, line);
            if (y && deflt && jv_type(y) == JV_UNDEFINED) {
                jv_unref(y);
                y = jv_ref(deflt);
            }
        } else y = jlib_filter(c, args[0]->u.str.s, x, args + 1, nargs - 1, kwnames, kwargs, nkw, line);
        if (!y || jv_list_push(r, y) != 0) {
            if (y) oom(c, line);
            jv_unref(r);
            r = NULL;
            break;
        }
    }
    jv_unref(it);
    return r;
}

static jval *select_impl(jctx *c, const jval *v, jval **args, int nargs, int nkw, int keep, int by_attr, int line) {
    if (nkw) return jerr(c, line, "select filters take no keyword arguments");
    const jval *attribute = NULL;
    if (by_attr) {
        if (nargs < 1) return jerr(c, line, "missing attribute argument");
        attribute = args[0];
        args++;
        nargs--;
    }
    const char *test = NULL;
    if (nargs > 0) {
        if (!is_str(args[0]) || !jlib_has_test(args[0]->u.str.s))
            return jerr(c, line, "no test named '%s'", is_str(args[0]) ? args[0]->u.str.s : "?");
        test = args[0]->u.str.s;
        args++;
        nargs--;
    }
    jval *it = jlib_iterate(c, v, line);
    if (!it) return NULL;
    jval *r = jv_list();
    for (size_t i = 0; r && i < jv_len(it); i++) {
        const jval *x = jv_list_at(it, i);
        jval *y = attribute ? attr_get(c, x, attribute, line) : jv_ref(x);
        if (!y) {
            jv_unref(r);
            r = NULL;
            break;
        }
        int t = test ? jlib_test(c, test, y, args, nargs, line) : jv_as_bool(y);
        jv_unref(y);
        if (t < 0) {
            jv_unref(r);
            r = NULL;
            break;
        }
        if (t == keep && jv_list_push(r, jv_ref(x)) != 0) {
            jv_unref(r);
            r = oom(c, line);
        }
    }
    jv_unref(it);
    return r;
}

static jval *f_select(jctx *c, const jval *v, jval **a, int n, const char **kn, jval **kw, int nk, int line) {
    (void)kn;
    (void)kw;
    return select_impl(c, v, a, n, nk, 1, 0, line);
}
static jval *f_reject(jctx *c, const jval *v, jval **a, int n, const char **kn, jval **kw, int nk, int line) {
    (void)kn;
    (void)kw;
    return select_impl(c, v, a, n, nk, 0, 0, line);
}
static jval *f_selectattr(jctx *c, const jval *v, jval **a, int n, const char **kn, jval **kw, int nk, int line) {
    (void)kn;
    (void)kw;
    return select_impl(c, v, a, n, nk, 1, 1, line);
}
static jval *f_rejectattr(jctx *c, const jval *v, jval **a, int n, const char **kn, jval **kw, int nk, int line) {
    (void)kn;
    (void)kw;
    return select_impl(c, v, a, n, nk, 0, 1, line);
}

typedef struct filter_def {
    const char *name;
    filter_fn fn;
    raw_filter_fn raw;
    const char *params[6];
    int varargs;
} filter_def;

static const filter_def FILTERS[] = {
    {"abs", f_abs, NULL, {NULL}, 0},
    {"attr", f_attr, NULL, {"name", NULL}, 0},
    {"capitalize", f_capitalize, NULL, {NULL}, 0},
    {"count", f_length, NULL, {NULL}, 0},
    {"d", f_default, NULL, {"default_value", "boolean", NULL}, 0},
    {"default", f_default, NULL, {"default_value", "boolean", NULL}, 0},
    {"dictsort", f_dictsort, NULL, {"case_sensitive", "by", "reverse", NULL}, 0},
    {"e", f_escape, NULL, {NULL}, 0},
    {"escape", f_escape, NULL, {NULL}, 0},
    {"first", f_first, NULL, {NULL}, 0},
    {"float", f_float, NULL, {"default", NULL}, 0},
    {"format", f_format, NULL, {NULL}, 1},
    {"indent", f_indent, NULL, {"width", "first", "blank", NULL}, 0},
    {"int", f_int, NULL, {"default", "base", NULL}, 0},
    {"items", f_items, NULL, {NULL}, 0},
    {"join", f_join, NULL, {"d", "attribute", NULL}, 0},
    {"last", f_last, NULL, {NULL}, 0},
    {"length", f_length, NULL, {NULL}, 0},
    {"list", f_list, NULL, {NULL}, 0},
    {"lower", f_lower, NULL, {NULL}, 0},
    {"map", NULL, f_map, {NULL}, 0},
    {"max", f_max, NULL, {"case_sensitive", "attribute", NULL}, 0},
    {"min", f_min, NULL, {"case_sensitive", "attribute", NULL}, 0},
    {"reject", NULL, f_reject, {NULL}, 0},
    {"rejectattr", NULL, f_rejectattr, {NULL}, 0},
    {"replace", f_replace, NULL, {"old", "new", "count", NULL}, 0},
    {"reverse", f_reverse, NULL, {NULL}, 0},
    {"round", f_round, NULL, {"precision", "method", NULL}, 0},
    {"safe", f_safe, NULL, {NULL}, 0},
    {"select", NULL, f_select, {NULL}, 0},
    {"selectattr", NULL, f_selectattr, {NULL}, 0},
    {"sort", f_sort, NULL, {"reverse", "case_sensitive", "attribute", NULL}, 0},
    {"string", f_string, NULL, {NULL}, 0},
    {"sum", f_sum, NULL, {"attribute", "start", NULL}, 0},
    {"title", f_title, NULL, {NULL}, 0},
    /* transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    {"tojson", f_tojson, NULL, {"ensure_ascii", "indent", "separators", "sort_keys", NULL}, 0},
    {"trim", f_trim, NULL, {"chars", NULL}, 0},
    {"unique", f_unique, NULL, {"case_sensitive", "attribute", NULL}, 0},
    {"upper", f_upper, NULL, {NULL}, 0},
    {"wordcount", f_wordcount, NULL, {NULL}, 0},
};

static const filter_def *find_filter(const char *name) {
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (strcmp(FILTERS[i].name, name) == 0) return &FILTERS[i];
    return NULL;
}

int jlib_has_filter(const char *name) { return find_filter(name) != NULL; }

jval *jlib_filter(jctx *c, const char *name, const jval *v, jval **args, int nargs, const char **kwnames, jval **kwargs,
                  int nkw, int line) {
    const filter_def *f = find_filter(name);
    if (!f) return jerr(c, line, "no filter named '%s'", name);
    if (jstep(c, line, 1) != 0) return NULL;
    if (f->raw) return f->raw(c, v, args, nargs, kwnames, kwargs, nkw, line);
    bound b;
    char what[64];
    snprintf(what, sizeof what, "filter '%s'", name);
    if (bind(c, what, f->params, args, nargs, kwnames, kwargs, nkw, &b, f->varargs, line) != 0) return NULL;
    return f->fn(c, v, &b, line);
}

/* ---- methods of str, dict and list ---- */

static jval *str_split(jctx *c, const jval *self, const jval *sep, int64_t maxsplit, int from_right, int line) {
    const char *s = self->u.str.s;
    size_t len = self->u.str.len;
    jval *r = jv_list();
    if (!r) return oom(c, line);
    if (jstep(c, line, len / 16) != 0) {
        jv_unref(r);
        return NULL;
    }
    if (!sep || jv_type(sep) == JV_NONE) {
        /* runs of whitespace; leading/trailing ignored */
        jval *parts = jv_list();
        size_t i = 0;
        int64_t splits = 0;
        if (!parts) {
            jv_unref(r);
            return oom(c, line);
        }
        if (!from_right) {
            while (i < len) {
                size_t k = i;
                while (k < len) {
                    size_t q = k;
                    if (!py_isspace(u8_next(s, len, &q))) break;
                    k = q;
                }
                i = k;
                if (i >= len) break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    /* rest of the string, trailing whitespace kept (Python) */
                    jv_list_push(r, jv_str(s + i, len - i));
                    break;
                }
                size_t st = i;
                while (i < len) {
                    size_t q = i;
                    if (py_isspace(u8_next(s, len, &q))) break;
                    i = q;
                }
                jv_list_push(r, jv_str(s + st, i - st));
                splits++;
            }
            jv_unref(parts);
            return r;
        }
        /* rsplit(None, n) */
        size_t z = len;
        while (z > 0) {
            while (z > 0) {
                size_t p = u8_prev(s, z), q = p;
                if (!py_isspace(u8_next(s, len, &q))) break;
                z = p;
            }
            if (z == 0) break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                jv_list_push(parts, jv_str(s, z));
                break;
            }
            size_t e = z;
            while (z > 0) {
                size_t p = u8_prev(s, z), q = p;
                if (py_isspace(u8_next(s, len, &q))) break;
                z = p;
            }
            jv_list_push(parts, jv_str(s + z, e - z));
            splits++;
        }
        for (size_t k = jv_len(parts); k-- > 0;) jv_list_push(r, jv_ref(jv_list_at(parts, k)));
        jv_unref(parts);
        return r;
    }
    if (!is_str(sep)) {
        jv_unref(r);
        return jerr(c, line, "must be str or None, not %s", jv_type_name(sep));
    }
    size_t sl = sep->u.str.len;
    if (sl == 0) {
        jv_unref(r);
        return jerr(c, line, "empty separator");
    }
    if (!from_right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || splits < maxsplit) ? find_sub(s + i, len - i, sep->u.str.s, sl) : NULL;
            if (!hit) {
                jv_list_push(r, jv_str(s + i, len - i));
                break;
            }
            jv_list_push(r, jv_str(s + i, (size_t)(hit - (s + i))));
            i = (size_t)(hit - s) + sl;
            splits++;
        }
        return r;
    }
    jval *parts = jv_list();
    size_t z = len;
    int64_t splits = 0;
    for (;;) {
        const char *hit = (maxsplit < 0 || splits < maxsplit) ? rfind_sub(s, z, sep->u.str.s, sl) : NULL;
        if (!hit) {
            jv_list_push(parts, jv_str(s, z));
            break;
        }
        size_t h = (size_t)(hit - s);
        jv_list_push(parts, jv_str(s + h + sl, z - h - sl));
        z = h;
        splits++;
    }
    for (size_t k = jv_len(parts); k-- > 0;) jv_list_push(r, jv_ref(jv_list_at(parts, k)));
    jv_unref(parts);
    return r;
}

/* str.format with {} / {0} / {name} fields (no format specs) */
static jval *str_format(jctx *c, const jval *self, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw,
                        int line) {
    const char *s = self->u.str.s;
    size_t len = self->u.str.len;
    jbuf out = {0};
    int auto_idx = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '{' && i + 1 < len && s[i + 1] == '{') {
            jbuf_putc(&out, '{');
            i++;
        } else if (s[i] == '}' && i + 1 < len && s[i + 1] == '}') {
            jbuf_putc(&out, '}');
            i++;
        } else if (s[i] == '{') {
            size_t j = i + 1;
            while (j < len && s[j] != '}') j++;
            if (j >= len) {
                jbuf_free(&out);
                return jerr(c, line, "Single '{' encountered in format string");
            }
            char field[128];
            size_t fl = j - i - 1 < sizeof field - 1 ? j - i - 1 : sizeof field - 1;
            memcpy(field, s + i + 1, fl);
            field[fl] = 0;
            if (strpbrk(field, ":!.[")) {
                jbuf_free(&out);
                return jerr(c, line, "format specs in str.format are not supported");
            }
            const jval *v = NULL;
            if (fl == 0) v = auto_idx < nargs ? args[auto_idx++] : NULL;
            else if (field[0] >= '0' && field[0] <= '9') {
                int k = atoi(field);
                v = k < nargs ? args[k] : NULL;
            } else
                for (int k = 0; k < nkw; k++)
                    if (strcmp(kwnames[k], field) == 0) v = kwargs[k];
            if (!v) {
                jbuf_free(&out);
                return jerr(c, line, "str.format: no value for field '{%s}'", field);
            }
            jv_write_str(&out, v, 0);
            i = j;
        } else if (s[i] == '}') {
            jbuf_free(&out);
            return jerr(c, line, "Single '}' encountered in format string");
        } else jbuf_putc(&out, s[i]);
    }
    return buf_str(c, &out, line);
}

static int str_pred(const char *s, size_t len, const char *which) {
    if (len == 0) return 0;
    size_t i = 0;
    int cased = 0;
    while (i < len) {
        uint32_t cp = u8_next(s, len, &i);
        int digit = cp >= '0' && cp <= '9';
        int alpha = cp_cased(cp) || (cp >= 0x80 && is_word_cp(cp) && !digit);
        if (strcmp(which, "isdigit") == 0 || strcmp(which, "isdecimal") == 0 || strcmp(which, "isnumeric") == 0) {
            if (!digit) return 0;
        } else if (strcmp(which, "isalpha") == 0) {
            if (!alpha) return 0;
        } else if (strcmp(which, "isalnum") == 0) {
            if (!alpha && !digit) return 0;
        } else if (strcmp(which, "isspace") == 0) {
            if (!py_isspace(cp)) return 0;
        } else if (strcmp(which, "isupper") == 0 || strcmp(which, "islower") == 0) {
            if (cp_cased(cp)) {
                cased = 1;
                if (which[2] == 'u' ? cp_lower(cp) == cp && cp != 0xDF : cp_upper(cp) == cp) return 0;
            }
        }
    }
    if (strcmp(which, "isupper") == 0 || strcmp(which, "islower") == 0) return cased;
    return 1;
}

static jval *affix_test(jctx *c, const jval *self, const jval *arg, int end, int line) {
    const char *s = self->u.str.s;
    size_t len = self->u.str.len;
    if (is_seq(arg)) {
        for (size_t i = 0; i < arg->u.list.n; i++) {
            jval *r = affix_test(c, self, arg->u.list.items[i], end, line);
            if (!r) return NULL;
            if (jv_as_bool(r)) return r;
        }
        return jv_bool(0);
    }
    if (!is_str(arg))
        return jerr(c, line, "%s first arg must be str or a tuple of str, not %s", end ? "endswith" : "startswith",
                    jv_type_name(arg));
    size_t al = arg->u.str.len;
    if (al > len) return jv_bool(0);
    return jv_bool(memcmp(end ? s + len - al : s, arg->u.str.s, al) == 0);
}

static jval *m_str(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                   jval **kwargs, int nkw, int line) {
    const char *s = self->u.str.s;
    size_t len = self->u.str.len;
    bound b;
    char what[48];
    snprintf(what, sizeof what, "str.%s()", name);
#define M(n) (strcmp(name, n) == 0)
#define BIND(...)                                                                                    \
    do {                                                                                             \
        static const char *const p_[] = {__VA_ARGS__, NULL};                                         \
        if (bind(c, what, p_, args, nargs, kwnames, kwargs, nkw, &b, 0, line) != 0) return NULL;     \
    } while (0)
    if (M("format")) return str_format(c, self, args, nargs, kwnames, kwargs, nkw, line);
    if (M("upper") || M("lower") || M("title") || M("capitalize") || M("swapcase")) {
        if (nargs || nkw) return jerr(c, line, "%s takes no arguments", what);
        return case_map(c, s, len, M("upper") ? 'u' : M("lower") ? 'l' : M("title") ? 't' : M("capitalize") ? 'c' : 's', line);
    }
    if (M("strip") || M("lstrip") || M("rstrip")) {
        BIND("chars");
        if (b.v[0] && jv_type(b.v[0]) != JV_NONE && !is_str(b.v[0]))
            return jerr(c, line, "%s arg must be None or str", name);
        return strip(c, s, len, b.v[0] && is_str(b.v[0]) ? b.v[0] : NULL, M("strip") ? 3 : M("lstrip") ? 1 : 2, line);
    }
    if (M("split") || M("rsplit")) {
        BIND("sep", "maxsplit");
        int64_t maxsplit;
        if (get_int_arg(c, b.v[1], -1, &maxsplit, "maxsplit", line) != 0) return NULL;
        return str_split(c, self, b.v[0], maxsplit, M("rsplit"), line);
    }
    if (M("splitlines")) {
        BIND("keepends");
        return splitlines(c, s, len, b.v[0] && jv_as_bool(b.v[0]), line);
    }
    if (M("startswith") || M("endswith")) {
        BIND("prefix");
        if (!b.v[0]) return jerr(c, line, "%s takes at least 1 argument", what);
        return affix_test(c, self, b.v[0], M("endswith"), line);
    }
    if (M("replace")) {
        BIND("old", "new", "count");
        int64_t count;
        if (!b.v[0] || !b.v[1]) return jerr(c, line, "%s takes at least 2 arguments", what);
        if (get_int_arg(c, b.v[2], -1, &count, "count", line) != 0) return NULL;
        return str_replace(c, s, len, b.v[0], b.v[1], count, line);
    }
    if (M("find") || M("rfind") || M("index") || M("rindex") || M("count")) {
        BIND("sub");
        if (!b.v[0] || !is_str(b.v[0])) return jerr(c, line, "%s needs a string argument", what);
        const char *sub = b.v[0]->u.str.s;
        size_t sl = b.v[0]->u.str.len;
        if (M("count")) {
            int64_t n = 0;
            if (sl == 0) return jv_int((int64_t)u8_count(s, len) + 1);
            for (size_t i = 0; i + sl <= len;) {
                const char *h = find_sub(s + i, len - i, sub, sl);
                if (!h) break;
                n++;
                i = (size_t)(h - s) + sl;
            }
            return jv_int(n);
        }
        const char *h = (M("find") || M("index")) ? find_sub(s, len, sub, sl) : rfind_sub(s, len, sub, sl);
        if (!h) {
            if (M("index") || M("rindex")) return jerr(c, line, "substring not found");
            return jv_int(-1);
        }
        return jv_int((int64_t)u8_count(s, (size_t)(h - s)));
    }
    if (M("join")) {
        BIND("iterable");
        if (!b.v[0]) return jerr(c, line, "join takes exactly one argument");
        jval *it = jlib_iterate(c, b.v[0], line);
        if (!it) return NULL;
        jbuf out = {0};
        for (size_t i = 0; i < jv_len(it); i++) {
            const jval *x = jv_list_at(it, i);
            if (!is_str(x)) {
                jv_unref(it);
                jbuf_free(&out);
                return jerr(c, line, "sequence item %zu: expected str instance, %s found", i, jv_type_name(x));
            }
            if (i) jbuf_put(&out, s, len);
            jbuf_put(&out, x->u.str.s, x->u.str.len);
            if (out.n > c->cfg->max_string) break;
        }
        jv_unref(it);
        return buf_str(c, &out, line);
    }
    if (M("removeprefix") || M("removesuffix")) {
        BIND("affix");
        if (!b.v[0] || !is_str(b.v[0])) return jerr(c, line, "%s needs a string argument", what);
        size_t al = b.v[0]->u.str.len;
        int end = M("removesuffix");
        if (al <= len && memcmp(end ? s + len - al : s, b.v[0]->u.str.s, al) == 0)
            return jv_str(end ? s : s + al, len - al);
        return jv_ref(self);
    }
    if (M("partition") || M("rpartition")) {
        BIND("sep");
        if (!b.v[0] || !is_str(b.v[0]) || b.v[0]->u.str.len == 0) return jerr(c, line, "%s needs a non-empty string", what);
        size_t sl = b.v[0]->u.str.len;
        const char *h = M("partition") ? find_sub(s, len, b.v[0]->u.str.s, sl) : rfind_sub(s, len, b.v[0]->u.str.s, sl);
        jval *t = jv_tuple();
        if (!t) return oom(c, line);
        if (!h) {
            int right = M("rpartition");
            jv_list_push(t, right ? jv_cstr("") : jv_ref(self));
            jv_list_push(t, jv_cstr(""));
            jv_list_push(t, right ? jv_ref(self) : jv_cstr(""));
        } else {
            jv_list_push(t, jv_str(s, (size_t)(h - s)));
            jv_list_push(t, jv_ref(b.v[0]));
            jv_list_push(t, jv_str(h + sl, len - (size_t)(h - s) - sl));
        }
        return t;
    }
    if (M("isdigit") || M("isdecimal") || M("isnumeric") || M("isalpha") || M("isalnum") || M("isspace") ||
        M("isupper") || M("islower")) {
        if (nargs || nkw) return jerr(c, line, "%s takes no arguments", what);
        return jv_bool(str_pred(s, len, name));
    }
    return jerr(c, line, "str.%s() is not supported", name);
#undef BIND
}

static jval *m_dict(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                    jval **kwargs, int nkw, int line) {
    (void)kwnames;
    (void)kwargs;
    if (M("get")) {
        if (nkw || nargs < 1 || nargs > 2) return jerr(c, line, "dict.get() takes 1 or 2 arguments");
        jtype kt = jv_type(args[0]);
        if (kt == JV_LIST || kt == JV_DICT) return jerr(c, line, "unhashable type: '%s'", jv_type_name(args[0]));
        const jval *v = jv_dict_find(self, args[0]);
        return v ? jv_ref(v) : nargs > 1 ? jv_ref(args[1]) : jv_none();
    }
    if (nargs || nkw) return jerr(c, line, "dict.%s() takes no arguments", name);
    if (M("items")) {
        bound b = {0};
        return f_items(c, self, &b, line);
    }
    if (M("keys") || M("values")) {
        jval *r = jv_list();
        for (size_t i = 0; r && i < self->u.dict.n; i++)
            if (jv_list_push(r, jv_ref(M("keys") ? self->u.dict.keys[i] : self->u.dict.vals[i])) != 0) {
                jv_unref(r);
                r = NULL;
            }
        return r ? r : oom(c, line);
    }
    if (M("copy")) return jv_copy(self);
    return jerr(c, line, "access to attribute '%s' of 'dict' object is unsafe", name);
}

static jval *m_list(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                    jval **kwargs, int nkw, int line) {
    (void)kwnames;
    (void)kwargs;
    if (M("count") || M("index")) {
        if (nkw || nargs != 1) return jerr(c, line, "%s.%s() takes exactly one argument", jv_type_name(self), name);
        int64_t n = 0;
        for (size_t i = 0; i < self->u.list.n; i++)
            if (jv_equal(self->u.list.items[i], args[0])) {
                if (M("index")) return jv_int((int64_t)i);
                n++;
            }
        if (M("index")) return jerr(c, line, "value is not in list");
        return jv_int(n);
    }
    if (M("copy") && self->type == JV_LIST) return jv_copy(self);
    /* ImmutableSandboxedEnvironment: methods that change the list are unsafe */
    return jerr(c, line, "access to attribute '%s' of '%s' object is unsafe", name, jv_type_name(self));
}

static jval *m_cycle(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                     jval **kwargs, int nkw, int line) {
    (void)name;
    (void)kwnames;
    (void)kwargs;
    if (nkw) return jerr(c, line, "loop.cycle() takes no keyword arguments");
    if (nargs == 0) return jerr(c, line, "no items for cycling given");
    return jv_ref(args[self->u.loop.index0 % (size_t)nargs]);
}

static int in_list(const char *name, const char *const *names) {
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], name) == 0) return 1;
    return 0;
}

static const char *const STR_METHODS[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
    "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
    "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans",
    "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
    "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill", NULL};
static const char *const DICT_METHODS[] = {"clear", "copy", "fromkeys", "get", "items", "keys", "pop",
                                           "popitem", "setdefault", "update", "values", NULL};
static const char *const LIST_METHODS[] = {"append", "clear", "copy", "count", "extend", "index",
                                           "insert", "pop", "remove", "reverse", "sort", NULL};

jval *jlib_getattr(jctx *c, const jval *v, const char *name, int line) {
    if (name[0] == '_') return NULL; /* the sandbox hides private attributes */
    switch (jv_type(v)) {
    case JV_STRING:
        if (in_list(name, STR_METHODS)) {
            jval *f = jv_func(m_str, v, name);
            return f ? f : oom(c, line);
        }
        return NULL;
    case JV_DICT:
        if (in_list(name, DICT_METHODS)) {
            jval *f = jv_func(m_dict, v, name);
            return f ? f : oom(c, line);
        }
        return NULL;
    case JV_LIST:
    case JV_TUPLE:
        if (in_list(name, LIST_METHODS) && (v->type == JV_LIST || M("count") || M("index"))) {
            jval *f = jv_func(m_list, v, name);
            return f ? f : oom(c, line);
        }
        return NULL;
    case JV_NAMESPACE: {
        const jval *a = jv_dict_get(v, name);
        return a ? jv_ref(a) : NULL;
    }
    case JV_LOOP: {
        size_t i = v->u.loop.index0, n = jv_len(v->u.loop.items);
        if (M("index")) return jv_int((int64_t)i + 1);
        if (M("index0")) return jv_int((int64_t)i);
        if (M("revindex")) return jv_int((int64_t)(n - i));
        if (M("revindex0")) return jv_int((int64_t)(n - i - 1));
        if (M("first")) return jv_bool(i == 0);
        if (M("last")) return jv_bool(i + 1 == n);
        if (M("length")) return jv_int((int64_t)n);
        if (M("depth")) return jv_int(1);
        if (M("depth0")) return jv_int(0);
        if (M("previtem"))
            return i > 0 ? jv_ref(jv_list_at(v->u.loop.items, i - 1)) : jv_undefined_hint("there is no previous item");
        if (M("nextitem"))
            return i + 1 < n ? jv_ref(jv_list_at(v->u.loop.items, i + 1)) : jv_undefined_hint("there is no next item");
        if (M("cycle")) {
            jval *f = jv_func(m_cycle, v, "cycle");
            return f ? f : oom(c, line);
        }
        return NULL;
    }
    default: return NULL;
    }
}
#undef M

/* ---- globals ---- */

static jval *g_range(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                     jval **kwargs, int nkw, int line) {
    (void)self;
    (void)name;
    (void)kwnames;
    (void)kwargs;
    if (nkw || nargs < 1 || nargs > 3) return jerr(c, line, "range expected 1 to 3 integer arguments");
    for (int i = 0; i < nargs; i++)
        if (!is_intlike(args[i])) return jerr(c, line, "'%s' object cannot be interpreted as an integer", jv_type_name(args[i]));
    int64_t a = 0, z, st = 1;
    if (nargs == 1) z = jv_as_int(args[0]);
    else {
        a = jv_as_int(args[0]);
        z = jv_as_int(args[1]);
        if (nargs == 3) st = jv_as_int(args[2]);
    }
    if (st == 0) return jerr(c, line, "range() arg 3 must not be zero");
    double count = st > 0 ? (z > a ? ceil(((double)z - (double)a) / (double)st) : 0)
                          : (a > z ? ceil(((double)a - (double)z) / (double)-st) : 0);
    if (count > MAX_RANGE)
        return jerr(c, line, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
    if (jstep(c, line, (uint64_t)count / 16) != 0) return NULL;
    jval *r = jv_list();
    if (!r) return oom(c, line);
    for (int64_t k = 0; k < (int64_t)count; k++)
        if (jv_list_push(r, jv_int(a + k * st)) != 0) {
            jv_unref(r);
            return oom(c, line);
        }
    return r;
}

/* dict(...) / namespace(...): a mapping or list of pairs, then keyword arguments */
static jval *make_mapping(jctx *c, jval *d, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw,
                          int check_names, int line) {
    if (!d) return oom(c, line);
    if (nargs > 1) {
        jv_unref(d);
        return jerr(c, line, "expected at most 1 positional argument, got %d", nargs);
    }
    if (nargs == 1) {
        const jval *src = args[0];
        if (jv_type(src) == JV_DICT || jv_type(src) == JV_NAMESPACE) {
            for (size_t i = 0; i < src->u.dict.n; i++)
                if (jv_dict_set_key(d, jv_ref(src->u.dict.keys[i]), jv_ref(src->u.dict.vals[i])) != 0) {
                    jv_unref(d);
                    return oom(c, line);
                }
        } else {
            jval *it = jlib_iterate(c, src, line);
            if (!it) {
                jv_unref(d);
                return NULL;
            }
            for (size_t i = 0; i < jv_len(it); i++) {
                const jval *pair = jv_list_at(it, i);
                jval *kv = jlib_iterate(c, pair, line);
                if (!kv || jv_len(kv) != 2) {
                    jv_unref(kv);
                    jv_unref(it);
                    jv_unref(d);
                    return c->failed ? NULL : jerr(c, line, "dictionary update sequence element #%zu has the wrong length", i);
                }
                int r = jv_dict_set_key(d, jv_ref(jv_list_at(kv, 0)), jv_ref(jv_list_at(kv, 1)));
                jv_unref(kv);
                if (r != 0) {
                    jv_unref(it);
                    jv_unref(d);
                    return oom(c, line);
                }
            }
            jv_unref(it);
        }
    }
    for (int k = 0; k < nkw; k++)
        if (jv_dict_set(d, kwnames[k], jv_ref(kwargs[k])) != 0) {
            jv_unref(d);
            return oom(c, line);
        }
    if (check_names)
        for (size_t i = 0; i < d->u.dict.n; i++)
            if (is_str(d->u.dict.keys[i]) && d->u.dict.keys[i]->u.str.s[0] == '_') {
                jval *r = jerr(c, line, "cannot store the underscore-prefixed attribute '%s' on a namespace",
                               d->u.dict.keys[i]->u.str.s);
                jv_unref(d);
                return r;
            }
    return d;
}

static jval *g_dict(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                    jval **kwargs, int nkw, int line) {
    (void)self;
    (void)name;
    return make_mapping(c, jv_dict(), args, nargs, kwnames, kwargs, nkw, 0, line);
}

static jval *g_namespace(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                         jval **kwargs, int nkw, int line) {
    (void)self;
    (void)name;
    return make_mapping(c, jv_namespace(), args, nargs, kwnames, kwargs, nkw, 1, line);
}

static jval *g_raise(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                     jval **kwargs, int nkw, int line) {
    (void)self;
    (void)name;
    (void)kwnames;
    const jval *m = nargs ? args[0] : nkw ? kwargs[0] : NULL;
    char *s = m ? to_cstr(m, NULL) : NULL;
    jerr(c, line, "%s", s ? s : "raise_exception called");
    free(s);
    return NULL;
}

static jval *g_strftime_now(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                            jval **kwargs, int nkw, int line) {
    (void)self;
    (void)name;
    (void)kwnames;
    (void)kwargs;
    if (nargs != 1 || nkw || !is_str(args[0])) return jerr(c, line, "strftime_now() takes one format string");
    struct tm tm;
    time_t now = c->cfg->fixed_now ? (time_t)c->cfg->now : time(NULL);
    if (c->cfg->fixed_now) gmtime_r(&now, &tm);
    else localtime_r(&now, &tm);
    char out[512];
    if (args[0]->u.str.len > 200) return jerr(c, line, "strftime_now format too long");
    size_t n = args[0]->u.str.len ? strftime(out, sizeof out, args[0]->u.str.s, &tm) : 0;
    jval *r = jv_str(out, n);
    return r ? r : oom(c, line);
}

jval *jlib_global(jctx *c, const char *name) {
    jfunc_fn fn = NULL;
    if (strcmp(name, "range") == 0) fn = g_range;
    else if (strcmp(name, "dict") == 0) fn = g_dict;
    else if (strcmp(name, "namespace") == 0) fn = g_namespace;
    else if (strcmp(name, "raise_exception") == 0) fn = g_raise;
    else if (strcmp(name, "strftime_now") == 0) fn = g_strftime_now;
    if (!fn) return NULL;
    jval *f = jv_func(fn, NULL, name);
    return f ? f : oom(c, 0);
}
