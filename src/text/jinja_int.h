/*
 * jinja_int.h — private pieces shared by the Jinja lexer, parser and
 * interpreter (jinja_lex.c, jinja_parse.c, jinja_eval.c, jinja_lib.c,
 * jinja_value.c).
 */
#ifndef OPTIQ_TEXT_JINJA_INT_H
#define OPTIQ_TEXT_JINJA_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "text/jinja.h"

/* ---- growable byte buffer ---- */
typedef struct jbuf {
    char *p;
    size_t n, cap;
    int oom;
} jbuf;

int jbuf_put(jbuf *b, const char *s, size_t n); /* 0 ok, -1 out of memory (sets oom) */
int jbuf_putc(jbuf *b, char c);
int jbuf_puts(jbuf *b, const char *s);
int jbuf_printf(jbuf *b, const char *fmt, ...) OPTIQ_PRINTF(2, 3);
char *jbuf_take(jbuf *b, size_t *len); /* NUL-terminated; resets b */
void jbuf_free(jbuf *b);

/* ---- UTF-8 and Python string helpers ---- */
/* Code point at s[*i] (advances *i); a byte that does not start a valid
 * sequence reads as itself (0x80..0xFF) and advances by one. */
uint32_t u8_next(const char *s, size_t len, size_t *i);
/* Start of the character that ends at s[end-1]. */
size_t u8_prev(const char *s, size_t end);
int u8_put(jbuf *b, uint32_t cp);
size_t u8_count(const char *s, size_t len); /* code points */
int py_isspace(uint32_t cp);                 /* str.isspace / regex \s */
int py_isprintable(uint32_t cp);             /* str.isprintable, for repr() */
/* Python float repr ("1.0", "1e+16", "inf", "nan"). buf: at least 32 bytes. */
void py_float_repr(double f, char *buf);
/* Python repr of a string ('a', "it's"). */
int py_repr_str(jbuf *b, const char *s, size_t len);
/* Python str() of any value into b (repr for items inside containers). */
int jv_write_str(jbuf *b, const jval *v, int as_repr);
/* json.dumps options: indent < 0 means None; item_sep/key_sep NULL use
 * Python's defaults for the indent. */
typedef struct jjson_opts {
    int indent;
    const char *indent_str;
    const char *item_sep, *key_sep;
    int sort_keys;
    int ensure_ascii;
} jjson_opts;
/* Returns 0, -1 out of memory, -2 not serializable (*bad = the offending value). */
int jv_write_json(jbuf *b, const jval *v, const jjson_opts *o, int depth, const jval **bad);

/* ---- values ---- */
struct jnode;
struct jframe;
typedef struct jctx jctx;

/* Builtin callables: globals, bound methods and loop.cycle. */
typedef jval *(*jfunc_fn)(jctx *c, const jval *self, const char *name, jval **args, int nargs, const char **kwnames,
                          jval **kwargs, int nkw, int line);

struct jval {
    jtype type;
    int refs; /* < 0: static, never freed; changed with atomic operations only */
    union {
        int b;
        int64_t i;
        double f;
        struct {
            char *s;
            size_t len;
            int ascii; /* -1 unknown, 0 no, 1 yes */
        } str;
        struct {
            jval **items;
            size_t n, cap;
        } list; /* JV_LIST and JV_TUPLE */
        struct {
            jval **keys, **vals;
            size_t n, cap;
            uint32_t *index; /* open addressing over entries (entry + 1), built past a few entries */
            size_t index_cap;
        } dict; /* JV_DICT and JV_NAMESPACE */
        struct {
            const struct jnode *def; /* N_MACRO, or N_CALL_BLOCK for `caller` */
            struct jframe *frame;    /* a caller's call site; NULL once the call returned */
        } macro;
        struct {
            jfunc_fn fn;
            jval *self;
            const char *name;
        } func;
        struct {
            jval *items; /* the list being iterated */
            size_t index0;
        } loop;
        struct {
            char *hint; /* what was undefined, for messages ("'x' is undefined") */
        } undef;
    } u;
};

jval *jv_undefined_hint(const char *fmt, ...) OPTIQ_PRINTF(1, 2);
jval *jv_str_take(char *s, size_t len); /* takes ownership of malloc'd s */
jval *jv_tuple(void);
jval *jv_namespace(void);
jval *jv_func(jfunc_fn fn, const jval *self, const char *name);
const jval *jv_dict_find(const jval *dict, const jval *key); /* value or NULL */
int jv_equal(const jval *a, const jval *b);                   /* Python == */
/* Python <: 0 ok (*lt set), -1 when the types cannot be ordered. */
int jv_less(const jval *a, const jval *b, int *lt);
const char *jv_type_name(const jval *v); /* Python type name: 'str', 'dict', 'NoneType' */
int jv_is_string_ascii(jval *v);

/* ---- AST ---- */
typedef enum jnode_kind {
    /* statements */
    N_BODY,        /* kids: statements */
    N_TEXT,        /* value: string */
    N_OUTPUT,      /* a: expression */
    N_IF,          /* a: test, b: body, c: else (N_BODY or N_IF for elif) */
    N_FOR,         /* a: target, b: iterable, c: body, d: else body, e: filter test or NULL */
    N_SET,         /* a: target, b: expression */
    N_SET_BLOCK,   /* a: target, b: body, kids: filters (N_FILTER with a == NULL) */
    N_MACRO,       /* name; kids: parameters (N_NAME with a = default or NULL); b: body */
    N_CALL_BLOCK,  /* a: call expression, b: body, kids: caller parameters */
    N_FILTER_BLOCK,/* b: body, kids: filters (N_FILTER with a == NULL) */
    N_WITH,        /* kids: N_SET assignments, b: body */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    N_CONST,       /* value */
    N_NAME,        /* name (also assignment targets) */
    N_NSREF,       /* a.name as an assignment target: name = namespace variable, attr */
    N_TUPLE,       /* kids */
    N_LIST,        /* kids */
    N_DICT,        /* kids: alternating key, value */
    N_GETATTR,     /* a.attr */
    N_GETITEM,     /* a[b] */
    N_SLICE,       /* a[b:c:d] (b/c/d may be NULL) */
    N_CALL,        /* a(kids), kwnames[i] != NULL for keyword arguments */
    N_FILTER,      /* a | name(kids) */
    N_TEST,        /* a is name(kids); op = 1 when negated */
    N_UNARY,       /* op: '-', '+', '!' (not) ; a */
    N_BINARY,      /* op; a, b */
    N_AND,
    N_OR,
    N_COMPARE,     /* a, then kids: N_BINARY-like pairs with op and b */
    N_COND,        /* a if b else c (c may be NULL) */
    N_CONCAT       /* kids joined with ~ */
} jnode_kind;

enum {
    OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
    OP_NEG, OP_POS, OP_NOT
};

typedef struct jnode {
    jnode_kind kind;
    int line;
    int op;
    struct jnode *a, *b, *c, *d, *e;
    struct jnode **kids;
    const char **kwnames; /* parallel to kids for calls/filters/tests; NULL entries: positional */
    int nkids;
    const char *name;
    const char *attr;
    jval *value;
} jnode;

/* Bump allocator for the tree: everything is freed with the template. */
typedef struct jarena {
    struct jchunk *head;
} jarena;
void *jarena_alloc(jarena *a, size_t n);
char *jarena_strndup(jarena *a, const char *s, size_t n);
void jarena_free(jarena *a);

struct jinja_template {
    jarena arena;
    jnode *root;
    char *source; /* normalized source (newlines), for jinja_source_mentions */
    size_t source_len;
    char name[128];
    jval **consts; /* constant values owned by the template */
    size_t nconsts, cap_consts;
};

/* ---- lexer ---- */
typedef enum jtok_kind {
    T_EOF,
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP
} jtok_kind;

typedef struct jtok {
    jtok_kind kind;
    int line;
    const char *s; /* DATA/STRING: processed text (arena); NAME/OP: the text */
    size_t len;
    int64_t ival;
    double fval;
} jtok;

optiq_status jinja_lex(jinja_template *t, const char *src, size_t len, unsigned flags, jtok **toks, size_t *ntoks,
                       optiq_error *err);
optiq_status jinja_parse_tokens(jinja_template *t, const jtok *toks, size_t ntoks, optiq_error *err);

/* ---- interpreter context (jinja_eval.c), used by the library (jinja_lib.c) ---- */
struct jctx {
    const jinja_template *t;
    const jinja_config *cfg;
    optiq_error *err;
    int failed;
    uint64_t steps;
    int depth;
    struct jframe *root; /* template-level variables */
    const jval *vars;    /* render variables */
    jbuf *out;           /* current output */
    size_t total_out;
};

/* Record a runtime error (first one wins); returns NULL for convenience. */
jval *jerr(jctx *c, int line, const char *fmt, ...) OPTIQ_PRINTF(3, 4);
int jstep(jctx *c, int line, uint64_t n); /* 0 ok, -1 over budget (error set) */
/* Call a callable value. Consumes nothing; returns a new reference or NULL. */
jval *jcall(jctx *c, const jval *fn, jval **args, int nargs, const char **kwnames, jval **kwargs, int nkw, int line);
/* Library lookups (jinja_lib.c). */
int jlib_has_filter(const char *name);
int jlib_has_test(const char *name);
jval *jlib_filter(jctx *c, const char *name, const jval *v, jval **args, int nargs, const char **kwnames,
                  jval **kwargs, int nkw, int line);
/* Test result 0/1, or -1 on error. */
int jlib_test(jctx *c, const char *name, const jval *v, jval **args, int nargs, int line);
jval *jlib_global(jctx *c, const char *name); /* NULL when no such global */
/* Attribute of a value (methods of str/dict/list, namespace and loop fields).
 * NULL with no error set: no such attribute. */
jval *jlib_getattr(jctx *c, const jval *v, const char *name, int line);
/* Items of an iterable as a new list (dict: keys; string: characters;
 * undefined: empty). NULL with an error when not iterable. */
jval *jlib_iterate(jctx *c, const jval *v, int line);
/* String value from a new string within the size limit. */
jval *jlib_str(jctx *c, char *s, size_t len, int line);
/* Arithmetic and comparison (jinja_lib.c). */
jval *jlib_binary(jctx *c, int op, const jval *a, const jval *b, int line);
int jlib_contains(jctx *c, const jval *container, const jval *item, int line); /* 0/1, -1 error */
jval *jlib_getitem(jctx *c, const jval *obj, const jval *key, int line);
jval *jlib_slice(jctx *c, const jval *obj, const jval *start, const jval *stop, const jval *step, int line);

#endif
