/*
 * jinja_parse.c — tokens to a tree, following Jinja2's parser
 * (jinja2/parser.py) production for production:
 *
 *   expression  := or ("if" or ("else" expression)?)*
 *   or / and / not / compare (==, !=, <, <=, >, >=, in, not in; chained)
 *   math1 (+ -)  >  concat (~)  >  math2 (* / // %)  >  pow (**, left-assoc)
 *   unary (- +)  >  primary postfix* (filter | test | call)*
 *   postfix     := .name | .int | [subscript or slice] | (args)
 *
 * so `a ~ b | trim` trims b, `-x | abs` is abs(-x), `not x is none` is
 * not (x is none). Unknown filters and tests fail at parse time, as Jinja2
 * fails when compiling.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_int.h"

typedef struct parser {
    jinja_template *t;
    const jtok *toks;
    size_t n, i;
    optiq_error *err;
    int failed;
    int depth;
    int loop_depth;
} parser;

#define MAX_PARSE_DEPTH 200

static const jtok *cur(parser *p) { return &p->toks[p->i < p->n ? p->i : p->n - 1]; }
static const jtok *peek(parser *p, size_t k) { return &p->toks[p->i + k < p->n ? p->i + k : p->n - 1]; }
static void adv(parser *p) {
    if (p->i < p->n - 1) p->i++;
}

static const char *tok_desc(const jtok *t, char *buf, size_t cap) {
    switch (t->kind) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "'%}'";
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->s); return buf;
    }
}

static void *pfail(parser *p, int line, const char *fmt, const char *arg) {
    if (!p->failed) {
        p->failed = 1;
        char msg[300];
        snprintf(msg, sizeof msg, fmt, arg ? arg : "");
        err_set(p->err, OPTIQ_ERR_FORMAT, "%s: line %d: %s", p->t->name, line, msg);
    }
    return NULL;
}

static void *pfail_tok(parser *p, const char *what) {
    char buf[64], msg[200];
    snprintf(msg, sizeof msg, "%s, found %s", what, tok_desc(cur(p), buf, sizeof buf));
    return pfail(p, cur(p)->line, "%s", msg);
}

static int is_op(const jtok *t, const char *op) {
    return t->kind == T_OP && t->len == strlen(op) && memcmp(t->s, op, t->len) == 0;
}
static int is_name(const jtok *t, const char *name) {
    return t->kind == T_NAME && t->len == strlen(name) && memcmp(t->s, name, t->len) == 0;
}
static int skip_op(parser *p, const char *op) {
    if (is_op(cur(p), op)) {
        adv(p);
        return 1;
    }
    return 0;
}
static int skip_name(parser *p, const char *name) {
    if (is_name(cur(p), name)) {
        adv(p);
        return 1;
    }
    return 0;
}
static int expect_op(parser *p, const char *op) {
    if (skip_op(p, op)) return 1;
    char what[32];
    snprintf(what, sizeof what, "expected '%s'", op);
    pfail_tok(p, what);
    return 0;
}

static jnode *mk(parser *p, jnode_kind kind, int line) {
    jnode *n = jarena_alloc(&p->t->arena, sizeof *n);
    if (!n) {
        if (!p->failed) {
            p->failed = 1;
            err_set(p->err, OPTIQ_ERR_NOMEM, "out of memory");
        }
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    return n;
}

static const char *tok_str(parser *p, const jtok *t) {
    const char *s = jarena_strndup(&p->t->arena, t->s, t->len);
    if (!s) pfail(p, t->line, "out of memory", NULL);
    return s;
}

static int keep_const(parser *p, jval *v) {
    jinja_template *t = p->t;
    if (!v) return -1;
    if (t->nconsts == t->cap_consts) {
        size_t cap = t->cap_consts ? t->cap_consts * 2 : 32;
        jval **c = realloc(t->consts, cap * sizeof *c);
        if (!c) {
            jv_unref(v);
            return -1;
        }
        t->consts = c;
        t->cap_consts = cap;
    }
    t->consts[t->nconsts++] = v;
    return 0;
}

static jnode *mk_const(parser *p, int line, jval *v) {
    if (keep_const(p, v) != 0) {
        pfail(p, line, "out of memory", NULL);
        return NULL;
    }
    jnode *n = mk(p, N_CONST, line);
    if (n) n->value = v;
    return n;
}

/* growable child list */
typedef struct kids {
    jnode **v;
    const char **names;
    int n, cap;
} kids;

static int kids_push(parser *p, kids *k, jnode *node, const char *name) {
    if (!node) return -1;
    if (k->n == k->cap) {
        int cap = k->cap ? k->cap * 2 : 4;
        jnode **v = jarena_alloc(&p->t->arena, (size_t)cap * sizeof *v);
        const char **nm = jarena_alloc(&p->t->arena, (size_t)cap * sizeof *nm);
        if (!v || !nm) {
            pfail(p, cur(p)->line, "out of memory", NULL);
            return -1;
        }
        if (k->n) {
            memcpy(v, k->v, (size_t)k->n * sizeof *v);
            memcpy(nm, k->names, (size_t)k->n * sizeof *nm);
        }
        k->v = v;
        k->names = nm;
        k->cap = cap;
    }
    k->v[k->n] = node;
    k->names[k->n] = name;
    k->n++;
    return 0;
}

static void kids_attach(jnode *n, kids *k) {
    n->kids = k->v;
    n->kwnames = k->names;
    n->nkids = k->n;
}

/* ---- expressions ---- */

static jnode *parse_expression(parser *p, int with_condexpr);
static jnode *parse_or(parser *p);
static jnode *parse_unary(parser *p, int with_filter);
static jnode *parse_primary(parser *p);
static jnode *parse_postfix(parser *p, jnode *node);
static jnode *parse_filter_expr(parser *p, jnode *node);
static jnode *parse_tuple(parser *p, int simplified, int with_condexpr, const char *extra_end, int explicit_parens);

static int enter(parser *p) {
    if (++p->depth > MAX_PARSE_DEPTH) {
        pfail(p, cur(p)->line, "expression nested too deeply", NULL);
        return 0;
    }
    return 1;
}

static jnode *parse_condexpr(parser *p) {
    int line = cur(p)->line;
    jnode *e1 = parse_or(p);
    while (e1 && is_name(cur(p), "if")) {
        adv(p);
        jnode *e2 = parse_or(p);
        jnode *e3 = NULL;
        if (!e2) return NULL;
        if (skip_name(p, "else")) {
            e3 = parse_condexpr(p);
            if (!e3) return NULL;
        }
        jnode *c = mk(p, N_COND, line);
        if (!c) return NULL;
        c->a = e1;
        c->b = e2;
        c->c = e3;
        e1 = c;
    }
    return e1;
}

static jnode *parse_expression(parser *p, int with_condexpr) {
    if (!enter(p)) return NULL;
    jnode *r = with_condexpr ? parse_condexpr(p) : parse_or(p);
    p->depth--;
    return r;
}

static jnode *parse_not(parser *p);
static jnode *parse_and(parser *p) {
    jnode *l = parse_not(p);
    while (l && is_name(cur(p), "and")) {
        int line = cur(p)->line;
        adv(p);
        jnode *r = parse_not(p);
        if (!r) return NULL;
        jnode *n = mk(p, N_AND, line);
        if (!n) return NULL;
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static jnode *parse_or(parser *p) {
    jnode *l = parse_and(p);
    while (l && is_name(cur(p), "or")) {
        int line = cur(p)->line;
        adv(p);
        jnode *r = parse_and(p);
        if (!r) return NULL;
        jnode *n = mk(p, N_OR, line);
        if (!n) return NULL;
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static jnode *parse_compare(parser *p);
static jnode *parse_not(parser *p) {
    if (is_name(cur(p), "not")) {
        int line = cur(p)->line;
        adv(p);
        if (!enter(p)) return NULL;
        jnode *a = parse_not(p);
        p->depth--;
        if (!a) return NULL;
        jnode *n = mk(p, N_UNARY, line);
        if (!n) return NULL;
        n->op = OP_NOT;
        n->a = a;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_math1(parser *p);
static jnode *parse_compare(parser *p) {
    int line = cur(p)->line;
    jnode *e = parse_math1(p);
    if (!e) return NULL;
    kids ops = {0};
    for (;;) {
        const jtok *t = cur(p);
        int op = 0;
        if (is_op(t, "==")) op = OP_EQ;
        else if (is_op(t, "!=")) op = OP_NE;
        else if (is_op(t, "<")) op = OP_LT;
        else if (is_op(t, "<=")) op = OP_LE;
        else if (is_op(t, ">")) op = OP_GT;
        else if (is_op(t, ">=")) op = OP_GE;
        else if (is_name(t, "in")) op = OP_IN;
        else if (is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = OP_NOTIN;
            adv(p);
        }
        if (!op) break;
        int oline = t->line;
        adv(p);
        jnode *r = parse_math1(p);
        if (!r) return NULL;
        jnode *o = mk(p, N_BINARY, oline);
        if (!o) return NULL;
        o->op = op;
        o->b = r;
        if (kids_push(p, &ops, o, NULL) != 0) return NULL;
    }
    if (!ops.n) return e;
    jnode *c = mk(p, N_COMPARE, line);
    if (!c) return NULL;
    c->a = e;
    kids_attach(c, &ops);
    return c;
}

static jnode *binop(parser *p, int op, int line, jnode *a, jnode *b) {
    if (!a || !b) return NULL;
    jnode *n = mk(p, N_BINARY, line);
    if (!n) return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_concat(parser *p);
static jnode *parse_math1(parser *p) {
    jnode *l = parse_concat(p);
    while (l && (is_op(cur(p), "+") || is_op(cur(p), "-"))) {
        int op = is_op(cur(p), "+") ? OP_ADD : OP_SUB, line = cur(p)->line;
        adv(p);
        l = binop(p, op, line, l, parse_concat(p));
    }
    return l;
}

static jnode *parse_math2(parser *p);
static jnode *parse_concat(parser *p) {
    int line = cur(p)->line;
    jnode *first = parse_math2(p);
    if (!first || !is_op(cur(p), "~")) return first;
    kids args = {0};
    if (kids_push(p, &args, first, NULL) != 0) return NULL;
    while (skip_op(p, "~"))
        if (kids_push(p, &args, parse_math2(p), NULL) != 0) return NULL;
    jnode *n = mk(p, N_CONCAT, line);
    if (!n) return NULL;
    kids_attach(n, &args);
    return n;
}

static jnode *parse_pow(parser *p);
static jnode *parse_math2(parser *p) {
    jnode *l = parse_pow(p);
    for (;;) {
        if (!l) return NULL;
        const jtok *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV : is_op(t, "%") ? OP_MOD : 0;
        if (!op) return l;
        int line = t->line;
        adv(p);
        l = binop(p, op, line, l, parse_pow(p));
    }
}

static jnode *parse_pow(parser *p) {
    jnode *l = parse_unary(p, 1);
    while (l && is_op(cur(p), "**")) {
        int line = cur(p)->line;
        adv(p);
        l = binop(p, OP_POW, line, l, parse_unary(p, 1));
    }
    return l;
}

static jnode *parse_unary(parser *p, int with_filter) {
    const jtok *t = cur(p);
    jnode *node;
    if (!enter(p)) return NULL;
    if (is_op(t, "-") || is_op(t, "+")) {
        int op = is_op(t, "-") ? OP_NEG : OP_POS;
        adv(p);
        jnode *a = parse_unary(p, 0);
        if (!a) return NULL;
        node = mk(p, N_UNARY, t->line);
        if (!node) return NULL;
        node->op = op;
        node->a = a;
    } else {
        node = parse_primary(p);
    }
    node = parse_postfix(p, node);
    if (with_filter) node = parse_filter_expr(p, node);
    p->depth--;
    return node;
}

static jnode *parse_list_or_dict(parser *p, int is_dict) {
    int line = cur(p)->line;
    adv(p);
    const char *close = is_dict ? "}" : "]";
    kids items = {0};
    int count = 0;
    while (!is_op(cur(p), close)) {
        if (count && !expect_op(p, ",")) return NULL;
        if (is_op(cur(p), close)) break;
        jnode *k = parse_expression(p, 1);
        if (!k || kids_push(p, &items, k, NULL) != 0) return NULL;
        if (is_dict) {
            if (!expect_op(p, ":")) return NULL;
            jnode *v = parse_expression(p, 1);
            if (!v || kids_push(p, &items, v, NULL) != 0) return NULL;
        }
        count++;
    }
    if (!expect_op(p, close)) return NULL;
    jnode *n = mk(p, is_dict ? N_DICT : N_LIST, line);
    if (!n) return NULL;
    kids_attach(n, &items);
    return n;
}

static jnode *parse_primary(parser *p) {
    const jtok *t = cur(p);
    if (p->failed) return NULL;
    switch (t->kind) {
    case T_NAME:
        adv(p);
        if (is_name(t, "true") || is_name(t, "True")) return mk_const(p, t->line, jv_bool(1));
        if (is_name(t, "false") || is_name(t, "False")) return mk_const(p, t->line, jv_bool(0));
        if (is_name(t, "none") || is_name(t, "None")) return mk_const(p, t->line, jv_none());
        {
            jnode *n = mk(p, N_NAME, t->line);
            if (n) n->name = tok_str(p, t);
            return n;
        }
    case T_STRING: {
        jbuf b = {0};
        int line = t->line;
        while (cur(p)->kind == T_STRING) {
            jbuf_put(&b, cur(p)->s, cur(p)->len);
            adv(p);
        }
        size_t len;
        char *s = jbuf_take(&b, &len);
        return mk_const(p, line, jv_str_take(s, len));
    }
    case T_INT: adv(p); return mk_const(p, t->line, jv_int(t->ival));
    case T_FLOAT: adv(p); return mk_const(p, t->line, jv_float(t->fval));
    case T_OP:
        if (is_op(t, "(")) {
            adv(p);
            jnode *n = parse_tuple(p, 0, 1, NULL, 1);
            if (!n || !expect_op(p, ")")) return NULL;
            return n;
        }
        if (is_op(t, "[")) return parse_list_or_dict(p, 0);
        if (is_op(t, "{")) return parse_list_or_dict(p, 1);
        /* fallthrough */
    default: return pfail_tok(p, "expected an expression");
    }
}

static int at_tuple_end(parser *p, const char *extra_end) {
    const jtok *t = cur(p);
    if (t->kind == T_VAR_END || t->kind == T_BLOCK_END || t->kind == T_EOF || is_op(t, ")")) return 1;
    return extra_end && is_name(t, extra_end);
}

static jnode *parse_tuple(parser *p, int simplified, int with_condexpr, const char *extra_end, int explicit_parens) {
    int line = cur(p)->line;
    kids items = {0};
    int is_tuple = 0;
    for (;;) {
        if (items.n && !expect_op(p, ",")) return NULL;
        if (at_tuple_end(p, extra_end)) break;
        jnode *e = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
        if (!e || kids_push(p, &items, e, NULL) != 0) return NULL;
        if (is_op(cur(p), ",")) is_tuple = 1;
        else break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) return pfail_tok(p, "expected an expression");
    }
    jnode *n = mk(p, N_TUPLE, line);
    if (!n) return NULL;
    kids_attach(n, &items);
    return n;
}

/* (args) with keyword arguments name=value. */
static int parse_call_args(parser *p, kids *args) {
    if (!expect_op(p, "(")) return -1;
    int need_comma = 0, seen_kw = 0;
    while (!is_op(cur(p), ")")) {
        if (need_comma) {
            if (!expect_op(p, ",")) return -1;
            if (is_op(cur(p), ")")) break;
        }
        if (is_op(cur(p), "*") || is_op(cur(p), "**")) {
            pfail(p, cur(p)->line, "*args and **kwargs in calls are not supported", NULL);
            return -1;
        }
        if (cur(p)->kind == T_NAME && is_op(peek(p, 1), "=")) {
            const char *key = tok_str(p, cur(p));
            adv(p);
            adv(p);
            if (kids_push(p, args, parse_expression(p, 1), key) != 0) return -1;
            seen_kw = 1;
        } else {
            if (seen_kw) {
                pfail(p, cur(p)->line, "positional argument after a keyword argument", NULL);
                return -1;
            }
            if (kids_push(p, args, parse_expression(p, 1), NULL) != 0) return -1;
        }
        need_comma = 1;
    }
    adv(p);
    return 0;
}

static jnode *parse_call(parser *p, jnode *fn) {
    jnode *n = mk(p, N_CALL, cur(p)->line);
    if (!n) return NULL;
    kids args = {0};
    if (parse_call_args(p, &args) != 0) return NULL;
    n->a = fn;
    kids_attach(n, &args);
    return n;
}

static jnode *parse_subscribed(parser *p) {
    int line = cur(p)->line;
    jnode *parts[3] = {NULL, NULL, NULL};
    if (is_op(cur(p), ":")) {
        adv(p);
    } else {
        jnode *e = parse_expression(p, 1);
        if (!e) return NULL;
        if (!is_op(cur(p), ":")) return e;
        adv(p);
        parts[0] = e;
    }
    if (!is_op(cur(p), ":") && !is_op(cur(p), "]") && !is_op(cur(p), ",")) {
        parts[1] = parse_expression(p, 1);
        if (!parts[1]) return NULL;
    }
    if (skip_op(p, ":")) {
        if (!is_op(cur(p), "]") && !is_op(cur(p), ",")) {
            parts[2] = parse_expression(p, 1);
            if (!parts[2]) return NULL;
        }
    }
    jnode *s = mk(p, N_SLICE, line);
    if (!s) return NULL;
    s->b = parts[0];
    s->c = parts[1];
    s->d = parts[2];
    return s;
}

static jnode *parse_subscript(parser *p, jnode *node) {
    const jtok *t = cur(p);
    adv(p);
    if (is_op(t, ".")) {
        const jtok *a = cur(p);
        if (a->kind == T_NAME) {
            adv(p);
            jnode *n = mk(p, N_GETATTR, a->line);
            if (!n) return NULL;
            n->a = node;
            n->attr = tok_str(p, a);
            return n;
        }
        if (a->kind == T_INT) {
            adv(p);
            jnode *n = mk(p, N_GETITEM, a->line);
            if (!n) return NULL;
            n->a = node;
            n->b = mk_const(p, a->line, jv_int(a->ival));
            return n->b ? n : NULL;
        }
        return pfail_tok(p, "expected a name or a number after '.'");
    }
    /* '[' */
    kids args = {0};
    while (!is_op(cur(p), "]")) {
        if (args.n && !expect_op(p, ",")) return NULL;
        if (kids_push(p, &args, parse_subscribed(p), NULL) != 0) return NULL;
    }
    adv(p);
    if (args.n == 0) return pfail(p, t->line, "expected a subscript", NULL);
    jnode *sub;
    if (args.n == 1) sub = args.v[0];
    else {
        for (int i = 0; i < args.n; i++)
            if (args.v[i]->kind == N_SLICE) return pfail(p, t->line, "slices inside a tuple subscript are not supported", NULL);
        sub = mk(p, N_TUPLE, t->line);
        if (!sub) return NULL;
        kids_attach(sub, &args);
    }
    if (sub->kind == N_SLICE) {
        sub->a = node;
        return sub;
    }
    jnode *n = mk(p, N_GETITEM, t->line);
    if (!n) return NULL;
    n->a = node;
    n->b = sub;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *node) {
    while (node) {
        const jtok *t = cur(p);
        if (is_op(t, ".") || is_op(t, "[")) node = parse_subscript(p, node);
        else if (is_op(t, "(")) node = parse_call(p, node);
        else break;
    }
    return node;
}

/* `| name(args)` repeated; node may be NULL for the filter of a block. */
static jnode *parse_filter(parser *p, jnode *node, int start_inline) {
    while (is_op(cur(p), "|") || start_inline) {
        if (!start_inline) adv(p);
        start_inline = 0;
        const jtok *t = cur(p);
        if (t->kind != T_NAME) return pfail_tok(p, "expected a filter name");
        adv(p);
        jnode *f = mk(p, N_FILTER, t->line);
        if (!f) return NULL;
        f->name = tok_str(p, t);
        if (!f->name) return NULL;
        if (!jlib_has_filter(f->name)) return pfail(p, t->line, "no filter named '%s'", f->name);
        f->a = node;
        if (is_op(cur(p), "(")) {
            kids args = {0};
            if (parse_call_args(p, &args) != 0) return NULL;
            kids_attach(f, &args);
        }
        node = f;
    }
    return node;
}

static jnode *parse_test(parser *p, jnode *node) {
    int line = cur(p)->line;
    adv(p); /* is */
    int negated = skip_name(p, "not");
    const jtok *t = cur(p);
    if (t->kind != T_NAME) return pfail_tok(p, "expected a test name");
    adv(p);
    jnode *n = mk(p, N_TEST, line);
    if (!n) return NULL;
    n->name = tok_str(p, t);
    if (!n->name) return NULL;
    if (!jlib_has_test(n->name)) return pfail(p, t->line, "no test named '%s'", n->name);
    n->a = node;
    n->op = negated;
    const jtok *c = cur(p);
    if (is_op(c, "(")) {
        kids args = {0};
        if (parse_call_args(p, &args) != 0) return NULL;
        kids_attach(n, &args);
    } else if ((c->kind == T_NAME || c->kind == T_STRING || c->kind == T_INT || c->kind == T_FLOAT || is_op(c, "[") ||
                is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) return pfail(p, c->line, "tests cannot be chained with 'is'", NULL);
        kids args = {0};
        jnode *a = parse_postfix(p, parse_primary(p));
        if (kids_push(p, &args, a, NULL) != 0) return NULL;
        kids_attach(n, &args);
    }
    return n;
}

static jnode *parse_filter_expr(parser *p, jnode *node) {
    while (node) {
        const jtok *t = cur(p);
        if (is_op(t, "|")) node = parse_filter(p, node, 0);
        else if (is_name(t, "is")) node = parse_test(p, node);
        else if (is_op(t, "(")) node = parse_call(p, node);
        else break;
    }
    return node;
}

/* ---- statements ---- */

static jnode *parse_body(parser *p, const char *const *ends, const char **which);

/* After the tag's own tokens: expect '%}', parse a body up to one of ends;
 * the end tag name is left as the current token. */
static jnode *parse_statements(parser *p, const char *const *ends, int drop_needle) {
    skip_op(p, ":");
    if (cur(p)->kind != T_BLOCK_END) return pfail_tok(p, "expected '%}'");
    adv(p);
    const char *which = NULL;
    jnode *body = parse_body(p, ends, &which);
    if (!body) return NULL;
    if (!which) {
        char msg[160];
        const char *close = ends[0];
        for (int i = 0; ends[i]; i++)
            if (strncmp(ends[i], "end", 3) == 0) close = ends[i];
        snprintf(msg, sizeof msg, "unexpected end of template, expected '%s'", close);
        return pfail(p, cur(p)->line, "%s", msg);
    }
    if (drop_needle) adv(p);
    return body;
}

static jnode *parse_assign_target(parser *p, int name_only, const char *extra_end, int with_namespace) {
    const jtok *t = cur(p);
    if (with_namespace && t->kind == T_NAME && is_op(peek(p, 1), ".")) {
        adv(p);
        adv(p);
        const jtok *a = cur(p);
        if (a->kind != T_NAME) return pfail_tok(p, "expected an attribute name");
        adv(p);
        jnode *n = mk(p, N_NSREF, t->line);
        if (!n) return NULL;
        n->name = tok_str(p, t);
        n->attr = tok_str(p, a);
        return n;
    }
    if (name_only) {
        if (t->kind != T_NAME) return pfail_tok(p, "expected a name");
        adv(p);
        jnode *n = mk(p, N_NAME, t->line);
        if (n) n->name = tok_str(p, t);
        return n;
    }
    jnode *target = parse_tuple(p, 1, 1, extra_end, 0);
    if (!target) return NULL;
    if (target->kind == N_NAME) return target;
    if (target->kind == N_TUPLE) {
        for (int i = 0; i < target->nkids; i++)
            if (target->kids[i]->kind != N_NAME) return pfail(p, target->line, "cannot assign to this expression", NULL);
        return target;
    }
    return pfail(p, target->line, "cannot assign to this expression", NULL);
}

static jnode *parse_if(parser *p, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const endif[] = {"endif", NULL};
    jnode *top = mk(p, N_IF, line), *node = top;
    if (!top) return NULL;
    for (;;) {
        node->a = parse_tuple(p, 0, 0, NULL, 0);
        if (!node->a) return NULL;
        node->b = parse_statements(p, ends, 0);
        if (!node->b) return NULL;
        const jtok *t = cur(p);
        adv(p);
        if (is_name(t, "elif")) {
            jnode *n = mk(p, N_IF, t->line);
            if (!n) return NULL;
            node->c = n;
            node = n;
            continue;
        }
        if (is_name(t, "else")) {
            node->c = parse_statements(p, endif, 1);
            if (!node->c) return NULL;
        }
        return top;
    }
}

static int mentions_name(const jnode *n, const char *name);

static jnode *parse_for(parser *p, int line) {
    static const char *const ends[] = {"endfor", "else", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    jnode *n = mk(p, N_FOR, line);
    if (!n) return NULL;
    n->a = parse_assign_target(p, 0, "in", 0);
    if (!n->a) return NULL;
    if (!skip_name(p, "in")) return pfail_tok(p, "expected 'in'");
    n->b = parse_tuple(p, 0, 0, "recursive", 0);
    if (!n->b) return NULL;
    if (skip_name(p, "if")) {
        n->e = parse_expression(p, 1);
        if (!n->e) return NULL;
    }
    if (is_name(cur(p), "recursive")) return pfail(p, cur(p)->line, "recursive loops are not supported", NULL);
    p->loop_depth++;
    n->c = parse_statements(p, ends, 0);
    p->loop_depth--;
    if (!n->c) return NULL;
    if (is_name(cur(p), "else")) {
        adv(p);
        n->d = parse_statements(p, endfor, 1);
        if (!n->d) return NULL;
    } else adv(p);
    return n;
}

static jnode *parse_set(parser *p, int line) {
    static const char *const ends[] = {"endset", NULL};
    jnode *target = parse_assign_target(p, 0, NULL, 1);
    if (!target) return NULL;
    if (skip_op(p, "=")) {
        jnode *n = mk(p, N_SET, line);
        if (!n) return NULL;
        n->a = target;
        n->b = parse_tuple(p, 0, 1, NULL, 0);
        return n->b ? n : NULL;
    }
    jnode *n = mk(p, N_SET_BLOCK, line);
    if (!n) return NULL;
    n->a = target;
    if (is_op(cur(p), "|")) {
        n->c = parse_filter(p, NULL, 0);
        if (!n->c) return NULL;
    }
    n->b = parse_statements(p, ends, 1);
    return n->b ? n : NULL;
}

/* (a, b=default, ...) for macros and call blocks */
static int parse_signature(parser *p, kids *params) {
    if (!expect_op(p, "(")) return -1;
    while (!is_op(cur(p), ")")) {
        if (params->n && !expect_op(p, ",")) return -1;
        jnode *a = parse_assign_target(p, 1, NULL, 0);
        if (!a) return -1;
        if (skip_op(p, "=")) {
            a->a = parse_expression(p, 1);
            if (!a->a) return -1;
        } else if (params->n && params->v[params->n - 1]->a) {
            pfail(p, a->line, "a parameter without a default follows one with a default", NULL);
            return -1;
        }
        if (kids_push(p, params, a, NULL) != 0) return -1;
    }
    adv(p);
    return 0;
}

static jnode *parse_macro(parser *p, int line) {
    static const char *const ends[] = {"endmacro", NULL};
    jnode *n = mk(p, N_MACRO, line);
    if (!n) return NULL;
    jnode *name = parse_assign_target(p, 1, NULL, 0);
    if (!name) return NULL;
    n->name = name->name;
    kids params = {0};
    if (parse_signature(p, &params) != 0) return NULL;
    kids_attach(n, &params);
    int saved = p->loop_depth;
    p->loop_depth = 0;
    n->b = parse_statements(p, ends, 1);
    p->loop_depth = saved;
    if (!n->b) return NULL;
    /* which of varargs / kwargs / caller the body reads (Jinja2 accepts extra
     * arguments only then) */
    n->op = (mentions_name(n->b, "varargs") ? 1 : 0) | (mentions_name(n->b, "kwargs") ? 2 : 0) |
            (mentions_name(n->b, "caller") ? 4 : 0);
    return n;
}

static jnode *parse_call_block(parser *p, int line) {
    static const char *const ends[] = {"endcall", NULL};
    jnode *n = mk(p, N_CALL_BLOCK, line);
    if (!n) return NULL;
    kids params = {0};
    if (is_op(cur(p), "(") && parse_signature(p, &params) != 0) return NULL;
    kids_attach(n, &params);
    n->a = parse_expression(p, 1);
    if (!n->a) return NULL;
    if (n->a->kind != N_CALL) return pfail(p, line, "expected a call after 'call'", NULL);
    n->b = parse_statements(p, ends, 1);
    if (!n->b) return NULL;
    n->op = (mentions_name(n->b, "varargs") ? 1 : 0) | (mentions_name(n->b, "kwargs") ? 2 : 0);
    return n;
}

static jnode *parse_filter_block(parser *p, int line) {
    static const char *const ends[] = {"endfilter", NULL};
    jnode *n = mk(p, N_FILTER_BLOCK, line);
    if (!n) return NULL;
    n->c = parse_filter(p, NULL, 1);
    if (!n->c) return NULL;
    n->b = parse_statements(p, ends, 1);
    return n->b ? n : NULL;
}

static jnode *parse_with(parser *p, int line) {
    static const char *const ends[] = {"endwith", NULL};
    jnode *n = mk(p, N_WITH, line);
    if (!n) return NULL;
    kids sets = {0};
    while (cur(p)->kind != T_BLOCK_END) {
        if (sets.n && !expect_op(p, ",")) return NULL;
        jnode *s = mk(p, N_SET, cur(p)->line);
        if (!s) return NULL;
        s->a = parse_assign_target(p, 0, NULL, 0);
        if (!s->a || !expect_op(p, "=")) return NULL;
        s->b = parse_expression(p, 1);
        if (!s->b || kids_push(p, &sets, s, NULL) != 0) return NULL;
    }
    kids_attach(n, &sets);
    n->b = parse_statements(p, ends, 1);
    return n->b ? n : NULL;
}

static jnode *parse_statement(parser *p) {
    const jtok *t = cur(p);
    if (t->kind != T_NAME) return pfail_tok(p, "expected a statement name");
    int line = t->line;
    adv(p);
    if (is_name(t, "if")) return parse_if(p, line);
    if (is_name(t, "for")) return parse_for(p, line);
    if (is_name(t, "set")) return parse_set(p, line);
    if (is_name(t, "macro")) return parse_macro(p, line);
    if (is_name(t, "call")) return parse_call_block(p, line);
    if (is_name(t, "filter")) return parse_filter_block(p, line);
    if (is_name(t, "with")) return parse_with(p, line);
    if (is_name(t, "break") || is_name(t, "continue")) {
        if (!p->loop_depth) return pfail(p, line, "'%s' outside of a loop", is_name(t, "break") ? "break" : "continue");
        return mk(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, line);
    }
    if (is_name(t, "generation")) {
        /* transformers' {% generation %} marks assistant text; it renders its body */
        static const char *const ends[] = {"endgeneration", NULL};
        return parse_statements(p, ends, 1);
    }
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(t->len > 40 ? 40 : t->len), t->s);
    return pfail(p, line, "unknown tag '%s'", name);
}

static int is_end(const jtok *t, const char *const *ends) {
    if (!ends || t->kind != T_NAME) return 0;
    for (int i = 0; ends[i]; i++)
        if (is_name(t, ends[i])) return 1;
    return 0;
}

static jnode *parse_body(parser *p, const char *const *ends, const char **which) {
    jnode *body = mk(p, N_BODY, cur(p)->line);
    if (!body) return NULL;
    kids stmts = {0};
    *which = NULL;
    if (!enter(p)) return NULL;
    while (!p->failed) {
        const jtok *t = cur(p);
        if (t->kind == T_EOF) break;
        if (t->kind == T_DATA) {
            jnode *n = mk(p, N_TEXT, t->line);
            if (!n) return NULL;
            n->value = jv_str(t->s, t->len);
            if (keep_const(p, n->value) != 0) return pfail(p, t->line, "out of memory", NULL);
            if (kids_push(p, &stmts, n, NULL) != 0) return NULL;
            adv(p);
        } else if (t->kind == T_VAR_BEGIN) {
            adv(p);
            jnode *n = mk(p, N_OUTPUT, t->line);
            if (!n) return NULL;
            n->a = parse_tuple(p, 0, 1, NULL, 0);
            if (!n->a) return NULL;
            if (cur(p)->kind != T_VAR_END) return pfail_tok(p, "expected '}}'");
            adv(p);
            if (kids_push(p, &stmts, n, NULL) != 0) return NULL;
        } else if (t->kind == T_BLOCK_BEGIN) {
            adv(p);
            if (is_end(cur(p), ends)) {
                *which = ends[0];
                break;
            }
            jnode *n = parse_statement(p);
            if (!n) return NULL;
            if (cur(p)->kind != T_BLOCK_END) return pfail_tok(p, "expected '%}'");
            adv(p);
            if (kids_push(p, &stmts, n, NULL) != 0) return NULL;
        } else {
            return pfail_tok(p, "unexpected token");
        }
    }
    p->depth--;
    if (p->failed) return NULL;
    kids_attach(body, &stmts);
    return body;
}

static int mentions_name(const jnode *n, const char *name) {
    if (!n) return 0;
    if (n->kind == N_NAME && n->name && strcmp(n->name, name) == 0) return 1;
    if (n->kind == N_MACRO) return 0; /* a nested macro has its own */
    if (mentions_name(n->a, name) || mentions_name(n->b, name) || mentions_name(n->c, name) ||
        mentions_name(n->d, name) || mentions_name(n->e, name))
        return 1;
    for (int i = 0; i < n->nkids; i++)
        if (mentions_name(n->kids[i], name)) return 1;
    return 0;
}

optiq_status jinja_parse_tokens(jinja_template *t, const jtok *toks, size_t ntoks, optiq_error *err) {
    parser p = {.t = t, .toks = toks, .n = ntoks, .err = err};
    const char *which = NULL;
    jnode *root = parse_body(&p, NULL, &which);
    if (!root) {
        if (!p.failed) err_set(err, OPTIQ_ERR_FORMAT, "%s: syntax error", t->name);
        return err && err->status ? err->status : OPTIQ_ERR_FORMAT;
    }
    if (cur(&p)->kind != T_EOF) {
        pfail_tok(&p, "unexpected end tag");
        return OPTIQ_ERR_FORMAT;
    }
    t->root = root;
    return OPTIQ_OK;
}
