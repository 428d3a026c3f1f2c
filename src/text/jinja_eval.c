/*
 * jinja_eval.c — renders a parsed template: statements, scopes, macros.
 *
 * Scoping is Jinja2's: a for-loop iteration, a macro call and the body of a
 * block set / filter / call / with block each get a frame of their own, so a
 * {% set %} there does not leak out; {% if %} does not open one. Names are
 * looked up through the frames, then the render variables, then the globals.
 * A macro's frame sits on the template's top level (macros are defined there
 * in practice), a caller's on its call site, valid only while that call runs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_int.h"

typedef struct jframe {
    struct jframe *parent;
    jval *vars; /* dict, created on first assignment */
} jframe;

enum { EX_OK = 0, EX_BREAK = 1, EX_CONTINUE = 2, EX_ERR = -1 };

void jinja_config_default(jinja_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->max_output = 64u << 20;
    cfg->max_string = 64u << 20;
    cfg->max_steps = 50000000;
    cfg->max_depth = 1000;
}

jval *jerr(jctx *c, int line, const char *fmt, ...) {
    if (c->failed) return NULL;
    c->failed = 1;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(c->err, OPTIQ_ERR_INVALID_ARG, "%s: line %d: %s", c->t->name, line, msg);
    return NULL;
}

int jstep(jctx *c, int line, uint64_t n) {
    c->steps += n;
    if (c->steps > c->cfg->max_steps) {
        jerr(c, line, "template ran more than %llu steps (a loop that does not end?)",
             (unsigned long long)c->cfg->max_steps);
        return -1;
    }
    return 0;
}

static int emit(jctx *c, int line, const char *s, size_t n) {
    if (c->out->n + n > c->cfg->max_output) {
        jerr(c, line, "output larger than %zu bytes", c->cfg->max_output);
        return -1;
    }
    if (jbuf_put(c->out, s, n) != 0) {
        jerr(c, line, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- frames ---- */

static jval *lookup(jctx *c, jframe *f, const char *name) {
    for (; f; f = f->parent) {
        const jval *v = f->vars ? jv_dict_get(f->vars, name) : NULL;
        if (v) return jv_ref(v);
    }
    const jval *v = c->vars ? jv_dict_get(c->vars, name) : NULL;
    if (v) return jv_ref(v);
    jval *g = jlib_global(c, name);
    if (g) return g;
    return jv_undefined_hint("'%s' is undefined", name);
}

static int frame_set(jctx *c, jframe *f, const char *name, jval *v, int line) {
    if (!v) return -1;
    if (!f->vars && !(f->vars = jv_dict())) {
        jv_unref(v);
        jerr(c, line, "out of memory");
        return -1;
    }
    if (jv_dict_set(f->vars, name, v) != 0) {
        jerr(c, line, "out of memory");
        return -1;
    }
    return 0;
}

static jval *eval(jctx *c, jframe *f, const jnode *n);
static int exec(jctx *c, jframe *f, const jnode *n);

static int assign(jctx *c, jframe *f, const jnode *target, jval *v) {
    if (!v) return -1;
    if (target->kind == N_NAME) return frame_set(c, f, target->name, v, target->line);
    if (target->kind == N_NSREF) {
        jval *ns = lookup(c, f, target->name);
        int r = -1;
        if (jv_type(ns) != JV_NAMESPACE) jerr(c, target->line, "cannot assign attribute on non-namespace object");
        else if (target->attr[0] == '_')
            jerr(c, target->line, "cannot store the underscore-prefixed attribute '%s' on a namespace", target->attr);
        else if (jv_dict_set(ns, target->attr, jv_ref(v)) != 0) jerr(c, target->line, "out of memory");
        else r = 0;
        jv_unref(ns);
        jv_unref(v);
        return r;
    }
    /* tuple unpacking */
    jval *items = jlib_iterate(c, v, target->line);
    jv_unref(v);
    if (!items) return -1;
    size_t n = jv_len(items);
    if (n != (size_t)target->nkids) {
        jv_unref(items);
        jerr(c, target->line, n > (size_t)target->nkids ? "too many values to unpack (expected %d)" : "not enough values to unpack (expected %d)", target->nkids);
        return -1;
    }
    for (int i = 0; i < target->nkids; i++)
        if (assign(c, f, target->kids[i], jv_ref(jv_list_at(items, (size_t)i))) != 0) {
            jv_unref(items);
            return -1;
        }
    jv_unref(items);
    return 0;
}

/* Render a body in a frame of its own into a new string value. */
static jval *render_body(jctx *c, jframe *parent, const jnode *body, jframe *use) {
    jbuf buf = {0}, *saved = c->out;
    jframe local = {parent, NULL};
    jframe *f = use ? use : &local;
    c->out = &buf;
    int r = exec(c, f, body);
    c->out = saved;
    jv_unref(local.vars);
    if (r != EX_OK) {
        if (r != EX_ERR) jerr(c, body->line, "'break' or 'continue' outside of a loop");
        jbuf_free(&buf);
        return NULL;
    }
    size_t len;
    char *s = jbuf_take(&buf, &len);
    if (!s) return jerr(c, body->line, "out of memory");
    return jv_str_take(s, len);
}

/* ---- calls ---- */

static jval *call_macro(jctx *c, const jval *m, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw,
                        int line) {
    const jnode *def = m->u.macro.def;
    int is_caller = def->kind == N_CALL_BLOCK;
    const char *mname = is_caller ? "caller" : def->name;
    if (is_caller && !m->u.macro.frame) return jerr(c, line, "'caller' called after its call returned");
    if (c->depth >= c->cfg->max_depth) return jerr(c, line, "macro calls nested deeper than %d", c->cfg->max_depth);
    if (jstep(c, line, 1) != 0) return NULL;
    jframe mf = {is_caller ? m->u.macro.frame : c->root, NULL};
    jval *varargs = jv_tuple(), *kw = jv_dict();
    jval *result = NULL;
    int np = def->nkids;
    char *given = calloc((size_t)np + 1, 1);
    if (!varargs || !kw || !given) {
        jerr(c, line, "out of memory");
        goto done;
    }
    for (int i = 0; i < nargs; i++) {
        if (i < np) {
            if (frame_set(c, &mf, def->kids[i]->name, jv_ref(args[i]), line) != 0) goto done;
            given[i] = 1;
        } else if (def->op & 1) {
            if (jv_list_push(varargs, jv_ref(args[i])) != 0) {
                jerr(c, line, "out of memory");
                goto done;
            }
        } else {
            jerr(c, line, "macro '%s' takes not more than %d argument(s)", mname, np);
            goto done;
        }
    }
    for (int k = 0; k < nkw; k++) {
        int found = -1;
        for (int i = 0; i < np; i++)
            if (strcmp(def->kids[i]->name, kwnames[k]) == 0) found = i;
        if (found >= 0) {
            if (given[found]) {
                jerr(c, line, "macro '%s' got multiple values for argument '%s'", mname, kwnames[k]);
                goto done;
            }
            if (frame_set(c, &mf, kwnames[k], jv_ref(kwargs[k]), line) != 0) goto done;
            given[found] = 1;
        } else if (strcmp(kwnames[k], "caller") == 0 && (def->op & 4)) {
            if (frame_set(c, &mf, "caller", jv_ref(kwargs[k]), line) != 0) goto done;
        } else if (def->op & 2) {
            if (jv_dict_set(kw, kwnames[k], jv_ref(kwargs[k])) != 0) {
                jerr(c, line, "out of memory");
                goto done;
            }
        } else {
            jerr(c, line, "macro '%s' takes no keyword argument '%s'", mname, kwnames[k]);
            goto done;
        }
    }
    c->depth++;
    for (int i = 0; i < np; i++) {
        if (given[i]) continue;
        const jnode *p = def->kids[i];
        jval *v = p->a ? eval(c, &mf, p->a) : jv_undefined_hint("parameter '%s' was not provided", p->name);
        if (!v || frame_set(c, &mf, p->name, v, line) != 0) {
            c->depth--;
            goto done;
        }
    }
    if (frame_set(c, &mf, "varargs", jv_ref(varargs), line) != 0 || frame_set(c, &mf, "kwargs", jv_ref(kw), line) != 0) {
        c->depth--;
        goto done;
    }
    result = render_body(c, NULL, def->b, &mf);
    c->depth--;
done:
    free(given);
    jv_unref(varargs);
    jv_unref(kw);
    jv_unref(mf.vars);
    return result;
}

jval *jcall(jctx *c, const jval *fn, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw, int line) {
    switch (jv_type(fn)) {
    case JV_FUNC: return fn->u.func.fn(c, fn->u.func.self, fn->u.func.name, args, nargs, kwnames, kwargs, nkw, line);
    case JV_MACRO: return call_macro(c, fn, args, nargs, kwnames, kwargs, nkw, line);
    case JV_UNDEFINED:
        return jerr(c, line, "%s", fn->u.undef.hint ? fn->u.undef.hint : "called an undefined value");
    default: return jerr(c, line, "'%s' object is not callable", jv_type_name(fn));
    }
}

/* Evaluate call arguments: positional into args, keyword into kwargs. */
static int eval_args(jctx *c, jframe *f, const jnode *n, jval ***args, int *nargs, const char ***kwnames, jval ***kwargs,
                     int *nkw, jval *extra_kw, const char *extra_name) {
    int total = n->nkids + (extra_kw ? 1 : 0);
    *args = calloc((size_t)total + 1, sizeof **args);
    *kwargs = calloc((size_t)total + 1, sizeof **kwargs);
    *kwnames = calloc((size_t)total + 1, sizeof **kwnames);
    *nargs = *nkw = 0;
    if (!*args || !*kwargs || !*kwnames) {
        jerr(c, n->line, "out of memory");
        return -1;
    }
    for (int i = 0; i < n->nkids; i++) {
        jval *v = eval(c, f, n->kids[i]);
        if (!v) return -1;
        if (n->kwnames && n->kwnames[i]) {
            (*kwnames)[*nkw] = n->kwnames[i];
            (*kwargs)[(*nkw)++] = v;
        } else (*args)[(*nargs)++] = v;
    }
    if (extra_kw) {
        (*kwnames)[*nkw] = extra_name;
        (*kwargs)[(*nkw)++] = jv_ref(extra_kw);
    }
    return 0;
}

static void free_args(jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw) {
    if (args)
        for (int i = 0; i < nargs; i++) jv_unref(args[i]);
    if (kwargs)
        for (int i = 0; i < nkw; i++) jv_unref(kwargs[i]);
    free(args);
    free(kwargs);
    free((void *)kwnames);
}

static jval *eval_call(jctx *c, jframe *f, const jnode *n, jval *extra_kw, const char *extra_name) {
    jval *fn = eval(c, f, n->a);
    if (!fn) return NULL;
    jval **args = NULL, **kwargs = NULL;
    const char **kwnames = NULL;
    int nargs = 0, nkw = 0;
    jval *r = NULL;
    if (eval_args(c, f, n, &args, &nargs, &kwnames, &kwargs, &nkw, extra_kw, extra_name) == 0)
        r = jcall(c, fn, args, nargs, kwnames, kwargs, nkw, n->line);
    free_args(args, nargs, kwnames, kwargs, nkw);
    jv_unref(fn);
    return r;
}

/* Apply a filter chain; the innermost filter's input is `hole` when its
 * operand is NULL (block filters). */
static jval *eval_filter(jctx *c, jframe *f, const jnode *n, const jval *hole) {
    jval *v;
    if (n->a && n->a->kind == N_FILTER) v = eval_filter(c, f, n->a, hole);
    else v = n->a ? eval(c, f, n->a) : jv_ref(hole);
    if (!v) return NULL;
    jval **args = NULL, **kwargs = NULL;
    const char **kwnames = NULL;
    int nargs = 0, nkw = 0;
    jval *r = NULL;
    if (eval_args(c, f, n, &args, &nargs, &kwnames, &kwargs, &nkw, NULL, NULL) == 0)
        r = jlib_filter(c, n->name, v, args, nargs, kwnames, kwargs, nkw, n->line);
    free_args(args, nargs, kwnames, kwargs, nkw);
    jv_unref(v);
    return r;
}

/* ---- expressions ---- */

static jval *undefined_error(jctx *c, const jval *u, int line) {
    return jerr(c, line, "%s", u->u.undef.hint ? u->u.undef.hint : "value is undefined");
}

static jval *eval_getattr(jctx *c, jframe *f, const jnode *n) {
    jval *obj = eval(c, f, n->a);
    if (!obj) return NULL;
    jval *r = NULL;
    if (jv_type(obj) == JV_UNDEFINED) {
        undefined_error(c, obj, n->line);
    } else {
        r = jlib_getattr(c, obj, n->attr, n->line);
        if (!r && !c->failed) {
            jval *key = jv_cstr(n->attr);
            if (!key) jerr(c, n->line, "out of memory");
            else {
                const jval *item = jv_type(obj) == JV_DICT ? jv_dict_find(obj, key) : NULL;
                r = item ? jv_ref(item)
                         : jv_undefined_hint("'%s object' has no attribute '%s'", jv_type_name(obj), n->attr);
                jv_unref(key);
            }
        }
    }
    jv_unref(obj);
    return r;
}

static jval *eval_compare(jctx *c, jframe *f, const jnode *n) {
    jval *left = eval(c, f, n->a);
    for (int i = 0; left && i < n->nkids; i++) {
        const jnode *o = n->kids[i];
        jval *right = eval(c, f, o->b);
        if (!right) {
            jv_unref(left);
            return NULL;
        }
        int ok;
        if (o->op == OP_EQ || o->op == OP_NE) ok = jv_equal(left, right) == (o->op == OP_EQ);
        else if (o->op == OP_IN || o->op == OP_NOTIN) {
            ok = jlib_contains(c, right, left, o->line);
            if (ok >= 0 && o->op == OP_NOTIN) ok = !ok;
        } else if (jv_type(left) == JV_UNDEFINED || jv_type(right) == JV_UNDEFINED) {
            undefined_error(c, jv_type(left) == JV_UNDEFINED ? left : right, o->line);
            ok = -1;
        } else {
            /* a<b, a>b as b<a, a<=b as a<b or a==b (false for NaN, as Python) */
            int swap = o->op == OP_GT || o->op == OP_GE, lt;
            if (jv_less(swap ? right : left, swap ? left : right, &lt) != 0) {
                static const char *const names[] = {[OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">", [OP_GE] = ">="};
                jerr(c, o->line, "'%s' not supported between instances of '%s' and '%s'", names[o->op],
                     jv_type_name(left), jv_type_name(right));
                ok = -1;
            } else ok = lt || ((o->op == OP_LE || o->op == OP_GE) && jv_equal(left, right));
        }
        jv_unref(left);
        if (ok < 0) {
            jv_unref(right);
            return NULL;
        }
        if (!ok) {
            jv_unref(right);
            return jv_bool(0);
        }
        left = right;
    }
    if (!left) return NULL;
    jv_unref(left);
    return jv_bool(1);
}

static jval *eval(jctx *c, jframe *f, const jnode *n) {
    if (c->failed) return NULL;
    if (!n) return jerr(c, 0, "internal error: missing expression");
    if (++c->depth > c->cfg->max_depth) {
        c->depth--;
        return jerr(c, n->line, "expressions nested deeper than %d", c->cfg->max_depth);
    }
    jval *r = NULL, *a = NULL, *b = NULL;
    switch (n->kind) {
    case N_CONST: r = jv_ref(n->value); break;
    case N_NAME: r = lookup(c, f, n->name); break;
    case N_TUPLE:
    case N_LIST: {
        r = n->kind == N_LIST ? jv_list() : jv_tuple();
        if (!r) {
            jerr(c, n->line, "out of memory");
            break;
        }
        for (int i = 0; i < n->nkids; i++) {
            jval *v = eval(c, f, n->kids[i]);
            if (!v || jv_list_push(r, v) != 0) {
                if (v) jerr(c, n->line, "out of memory");
                jv_unref(r);
                r = NULL;
                break;
            }
        }
        break;
    }
    case N_DICT: {
        r = jv_dict();
        if (!r) {
            jerr(c, n->line, "out of memory");
            break;
        }
        for (int i = 0; i + 1 < n->nkids; i += 2) {
            jval *k = eval(c, f, n->kids[i]);
            jval *v = k ? eval(c, f, n->kids[i + 1]) : NULL;
            if (!k || !v) {
                jv_unref(k);
                jv_unref(r);
                r = NULL;
                break;
            }
            jtype kt = jv_type(k);
            if (kt == JV_LIST || kt == JV_DICT || kt == JV_NAMESPACE || kt == JV_UNDEFINED) {
                jerr(c, n->line, "unhashable type: '%s'", jv_type_name(k));
                jv_unref(k);
                jv_unref(v);
                jv_unref(r);
                r = NULL;
                break;
            }
            if (jv_dict_set_key(r, k, v) != 0) {
                jerr(c, n->line, "out of memory");
                jv_unref(r);
                r = NULL;
                break;
            }
        }
        break;
    }
    case N_GETATTR: r = eval_getattr(c, f, n); break;
    case N_GETITEM:
        a = eval(c, f, n->a);
        b = a ? eval(c, f, n->b) : NULL;
        if (b) r = jv_type(a) == JV_UNDEFINED ? undefined_error(c, a, n->line) : jlib_getitem(c, a, b, n->line);
        break;
    case N_SLICE: {
        jval *parts[3] = {NULL, NULL, NULL};
        const jnode *pn[3] = {n->b, n->c, n->d};
        a = eval(c, f, n->a);
        int ok = a != NULL;
        for (int i = 0; i < 3 && ok; i++)
            if (pn[i] && !(parts[i] = eval(c, f, pn[i]))) ok = 0;
        if (ok) r = jv_type(a) == JV_UNDEFINED ? undefined_error(c, a, n->line)
                                               : jlib_slice(c, a, parts[0], parts[1], parts[2], n->line);
        for (int i = 0; i < 3; i++) jv_unref(parts[i]);
        break;
    }
    case N_CALL: r = eval_call(c, f, n, NULL, NULL); break;
    case N_FILTER: r = eval_filter(c, f, n, NULL); break;
    case N_TEST: {
        a = eval(c, f, n->a);
        if (!a) break;
        jval *args[8] = {0};
        int nargs = 0, ok = 1;
        if (n->nkids > 8) {
            jerr(c, n->line, "too many test arguments");
            break;
        }
        for (int i = 0; i < n->nkids && ok; i++)
            if (!(args[nargs++] = eval(c, f, n->kids[i]))) ok = 0;
        if (ok) {
            int t = jlib_test(c, n->name, a, args, nargs, n->line);
            if (t >= 0) r = jv_bool(n->op ? !t : t);
        }
        for (int i = 0; i < nargs; i++) jv_unref(args[i]);
        break;
    }
    case N_UNARY:
        a = eval(c, f, n->a);
        if (!a) break;
        if (n->op == OP_NOT) r = jv_bool(!jv_as_bool(a));
        else if (jv_type(a) == JV_INT || jv_type(a) == JV_BOOL)
            r = jv_int(n->op == OP_NEG ? -jv_as_int(a) : jv_as_int(a));
        else if (jv_type(a) == JV_FLOAT) r = jv_float(n->op == OP_NEG ? -a->u.f : a->u.f);
        else if (jv_type(a) == JV_UNDEFINED) undefined_error(c, a, n->line);
        else jerr(c, n->line, "bad operand type for unary %c: '%s'", n->op == OP_NEG ? '-' : '+', jv_type_name(a));
        break;
    case N_BINARY:
        a = eval(c, f, n->a);
        b = a ? eval(c, f, n->b) : NULL;
        if (b) r = jlib_binary(c, n->op, a, b, n->line);
        break;
    case N_AND:
    case N_OR:
        a = eval(c, f, n->a);
        if (!a) break;
        if (jv_as_bool(a) == (n->kind == N_OR)) r = jv_ref(a);
        else r = eval(c, f, n->b);
        break;
    case N_COMPARE: r = eval_compare(c, f, n); break;
    case N_COND:
        a = eval(c, f, n->b);
        if (!a) break;
        if (jv_as_bool(a)) r = eval(c, f, n->a);
        else r = n->c ? eval(c, f, n->c) : jv_undefined_hint("the inline if-expression evaluated to false and no else section was defined.");
        break;
    case N_CONCAT: {
        jbuf buf = {0};
        int ok = 1;
        for (int i = 0; i < n->nkids && ok; i++) {
            jval *v = eval(c, f, n->kids[i]);
            if (!v) ok = 0;
            else {
                jv_write_str(&buf, v, 0);
                jv_unref(v);
                if (buf.n > c->cfg->max_string) {
                    jerr(c, n->line, "string longer than %zu bytes", c->cfg->max_string);
                    ok = 0;
                }
            }
        }
        if (ok) {
            size_t len;
            char *s = jbuf_take(&buf, &len);
            r = s ? jlib_str(c, s, len, n->line) : jerr(c, n->line, "out of memory");
        } else jbuf_free(&buf);
        break;
    }
    default: jerr(c, n->line, "internal error: statement used as an expression"); break;
    }
    jv_unref(a);
    jv_unref(b);
    c->depth--;
    if (!r && !c->failed) jerr(c, n->line, "out of memory");
    if (r && c->failed) {
        jv_unref(r);
        r = NULL;
    }
    return r;
}

/* ---- statements ---- */

static int exec_for(jctx *c, jframe *f, const jnode *n) {
    jval *iter = eval(c, f, n->b);
    if (!iter) return EX_ERR;
    jval *items = jlib_iterate(c, iter, n->line);
    jv_unref(iter);
    if (!items) return EX_ERR;
    if (n->e) { /* {% for x in xs if cond %}: loop.* counts the kept items */
        jval *kept = jv_list();
        if (!kept) {
            jv_unref(items);
            jerr(c, n->line, "out of memory");
            return EX_ERR;
        }
        for (size_t i = 0; i < jv_len(items); i++) {
            if (jstep(c, n->line, 1) != 0) break;
            jframe tf = {f, NULL};
            jval *cond = NULL;
            if (assign(c, &tf, n->a, jv_ref(jv_list_at(items, i))) == 0) cond = eval(c, &tf, n->e);
            jv_unref(tf.vars);
            if (!cond) break;
            int keep = jv_as_bool(cond);
            jv_unref(cond);
            if (keep && jv_list_push(kept, jv_ref(jv_list_at(items, i))) != 0) {
                jerr(c, n->line, "out of memory");
                break;
            }
        }
        jv_unref(items);
        items = kept;
        if (c->failed) {
            jv_unref(items);
            return EX_ERR;
        }
    }
    size_t count = jv_len(items);
    int r = EX_OK;
    for (size_t i = 0; i < count; i++) {
        if (jstep(c, n->line, 1) != 0) {
            r = EX_ERR;
            break;
        }
        jframe lf = {f, NULL};
        jval *loop = calloc(1, sizeof *loop);
        if (!loop) {
            jerr(c, n->line, "out of memory");
            r = EX_ERR;
            break;
        }
        loop->type = JV_LOOP;
        loop->refs = 1;
        loop->u.loop.items = jv_ref(items);
        loop->u.loop.index0 = i;
        if (frame_set(c, &lf, "loop", loop, n->line) != 0 || assign(c, &lf, n->a, jv_ref(jv_list_at(items, i))) != 0) {
            jv_unref(lf.vars);
            r = EX_ERR;
            break;
        }
        r = exec(c, &lf, n->c);
        jv_unref(lf.vars);
        if (r == EX_CONTINUE) r = EX_OK;
        if (r == EX_BREAK) {
            r = EX_OK;
            break;
        }
        if (r != EX_OK) break;
    }
    jv_unref(items);
    if (r == EX_OK && count == 0 && n->d) {
        jframe ef = {f, NULL};
        r = exec(c, &ef, n->d);
        jv_unref(ef.vars);
    }
    return r;
}

static int exec(jctx *c, jframe *f, const jnode *n) {
    if (c->failed) return EX_ERR;
    if (jstep(c, n->line, 1) != 0) return EX_ERR;
    if (++c->depth > c->cfg->max_depth) {
        c->depth--;
        jerr(c, n->line, "statements nested deeper than %d", c->cfg->max_depth);
        return EX_ERR;
    }
    int r = EX_OK;
    switch (n->kind) {
    case N_BODY:
        for (int i = 0; i < n->nkids && r == EX_OK; i++) r = exec(c, f, n->kids[i]);
        break;
    case N_TEXT: r = emit(c, n->line, n->value->u.str.s, n->value->u.str.len) ? EX_ERR : EX_OK; break;
    case N_OUTPUT: {
        jval *v = eval(c, f, n->a);
        if (!v) {
            r = EX_ERR;
            break;
        }
        if (jv_type(v) == JV_STRING) r = emit(c, n->line, v->u.str.s, v->u.str.len) ? EX_ERR : EX_OK;
        else {
            size_t len;
            char *s = jv_to_str(v, &len);
            r = !s ? (jerr(c, n->line, "out of memory"), EX_ERR) : emit(c, n->line, s, len) ? EX_ERR : EX_OK;
            free(s);
        }
        jv_unref(v);
        break;
    }
    case N_IF: {
        jval *v = eval(c, f, n->a);
        if (!v) {
            r = EX_ERR;
            break;
        }
        int t = jv_as_bool(v);
        jv_unref(v);
        if (t) r = exec(c, f, n->b);
        else if (n->c) r = exec(c, f, n->c);
        break;
    }
    case N_FOR: r = exec_for(c, f, n); break;
    case N_SET: r = assign(c, f, n->a, eval(c, f, n->b)) ? EX_ERR : EX_OK; break;
    case N_SET_BLOCK: {
        jval *s = render_body(c, f, n->b, NULL);
        if (s && n->c) {
            jval *t = eval_filter(c, f, n->c, s);
            jv_unref(s);
            s = t;
        }
        r = s && assign(c, f, n->a, s) == 0 ? EX_OK : EX_ERR;
        break;
    }
    case N_FILTER_BLOCK: {
        jval *s = render_body(c, f, n->b, NULL);
        jval *t = s ? eval_filter(c, f, n->c, s) : NULL;
        jv_unref(s);
        if (!t) {
            r = EX_ERR;
            break;
        }
        size_t len;
        char *str = jv_to_str(t, &len);
        r = !str ? (jerr(c, n->line, "out of memory"), EX_ERR) : emit(c, n->line, str, len) ? EX_ERR : EX_OK;
        free(str);
        jv_unref(t);
        break;
    }
    case N_MACRO: {
        jval *m = calloc(1, sizeof *m);
        if (!m) {
            jerr(c, n->line, "out of memory");
            r = EX_ERR;
            break;
        }
        m->type = JV_MACRO;
        m->refs = 1;
        m->u.macro.def = n;
        r = frame_set(c, f, n->name, m, n->line) ? EX_ERR : EX_OK;
        break;
    }
    case N_CALL_BLOCK: {
        jval *caller = calloc(1, sizeof *caller);
        if (!caller) {
            jerr(c, n->line, "out of memory");
            r = EX_ERR;
            break;
        }
        caller->type = JV_MACRO;
        caller->refs = 1;
        caller->u.macro.def = n;
        caller->u.macro.frame = f;
        jval *v = eval_call(c, f, n->a, caller, "caller");
        caller->u.macro.frame = NULL;
        jv_unref(caller);
        if (!v) {
            r = EX_ERR;
            break;
        }
        size_t len;
        char *s = jv_to_str(v, &len);
        r = !s ? (jerr(c, n->line, "out of memory"), EX_ERR) : emit(c, n->line, s, len) ? EX_ERR : EX_OK;
        free(s);
        jv_unref(v);
        break;
    }
    case N_WITH: {
        jframe wf = {f, NULL};
        for (int i = 0; i < n->nkids && r == EX_OK; i++)
            r = assign(c, &wf, n->kids[i]->a, eval(c, f, n->kids[i]->b)) ? EX_ERR : EX_OK;
        if (r == EX_OK) r = exec(c, &wf, n->b);
        jv_unref(wf.vars);
        break;
    }
    case N_BREAK: r = EX_BREAK; break;
    case N_CONTINUE: r = EX_CONTINUE; break;
    default: jerr(c, n->line, "internal error: expression used as a statement"); r = EX_ERR;
    }
    c->depth--;
    if (c->failed) r = EX_ERR;
    return r;
}

/* ---- entry points ---- */

optiq_status jinja_parse(const char *src, size_t len, unsigned flags, const char *name, jinja_template **out,
                         optiq_error *err) {
    *out = NULL;
    jinja_template *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    snprintf(t->name, sizeof t->name, "%s", name ? name : "template");
    jtok *toks = NULL;
    size_t ntoks = 0;
    optiq_status st = jinja_lex(t, src, len, flags, &toks, &ntoks, err);
    if (st == OPTIQ_OK) st = jinja_parse_tokens(t, toks, ntoks, err);
    free(toks);
    if (st != OPTIQ_OK) {
        jinja_free(t);
        return st;
    }
    *out = t;
    return OPTIQ_OK;
}

void jinja_free(jinja_template *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nconsts; i++) jv_unref(t->consts[i]);
    free(t->consts);
    free(t->source);
    jarena_free(&t->arena);
    free(t);
}

int jinja_source_mentions(const jinja_template *t, const char *text) {
    return t && t->source && text && *text && strstr(t->source, text) != NULL;
}

optiq_status jinja_render(const jinja_template *t, const jval *vars, const jinja_config *cfg, char **out,
                          size_t *out_len, optiq_error *err) {
    *out = NULL;
    jinja_config def;
    if (!cfg) {
        jinja_config_default(&def);
        cfg = &def;
    }
    jbuf buf = {0};
    jframe root = {NULL, NULL};
    jctx c = {.t = t, .cfg = cfg, .err = err, .root = &root, .vars = vars, .out = &buf};
    int r = exec(&c, &root, t->root);
    jv_unref(root.vars);
    if (r != EX_OK || c.failed) {
        jbuf_free(&buf);
        if (!c.failed) err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: 'break' or 'continue' outside of a loop", t->name);
        return err && err->status ? err->status : OPTIQ_ERR_INVALID_ARG;
    }
    char *s = jbuf_take(&buf, out_len);
    if (!s) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    *out = s;
    return OPTIQ_OK;
}
