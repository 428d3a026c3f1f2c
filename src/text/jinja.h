/*
 * jinja.h — the Jinja2 subset that chat templates are written in.
 *
 * A template is parsed once (jinja_parse) into a tree and rendered any number
 * of times (jinja_render) against a dictionary of variables. Behaviour follows
 * Jinja2 3.1 as Hugging Face transformers configures it for chat templates
 * (transformers/utils/chat_template_utils.py, _cached_compile_jinja_template):
 *   - ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
 *     extensions=[loopcontrols, the {% generation %} tag]);
 *   - tojson is json.dumps(x, ensure_ascii=False, indent=None, separators=None,
 *     sort_keys=False): insertion-ordered keys, raw non-ASCII, ", " / ": ";
 *   - globals raise_exception(msg), strftime_now(fmt), namespace(...), dict(...),
 *     range(...) (at most 100000 items, as the sandbox), and the default
 *     Undefined (prints as "", is falsy, iterates as empty, fails on
 *     attribute access, arithmetic and tojson);
 *   - keep_trailing_newline=False: one newline at the very end of the source
 *     is dropped; "\r\n" and "\r" in the source read as "\n".
 * Values print as Python's str() does: None, True, 1.0, 1e+16, [1, 'a'],
 * {'k': 2}. docs/templates.md lists what is and is not supported.
 *
 * Hostile templates are bounded by jinja_config: total output, the size of any
 * one string built while rendering, a step budget (every loop iteration,
 * statement and call counts) and the nesting depth of macro calls and of the
 * parser. Every failure — syntax or runtime — names the template line
 * ("line 12: ..."); nothing in here aborts.
 */
#ifndef OPTIQ_TEXT_JINJA_H
#define OPTIQ_TEXT_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct jinja_template jinja_template;
typedef struct jval jval;

/* Parse flags. JINJA_HF is what transformers uses. */
enum {
    JINJA_TRIM_BLOCKS = 1,            /* drop the first newline after a block or comment tag */
    JINJA_LSTRIP_BLOCKS = 2,          /* drop spaces/tabs before a block or comment tag on its line */
    JINJA_KEEP_TRAILING_NEWLINE = 4,  /* keep a final newline of the source */
    JINJA_HF = JINJA_TRIM_BLOCKS | JINJA_LSTRIP_BLOCKS
};

typedef struct jinja_config {
    size_t max_output;  /* bytes of rendered text */
    size_t max_string;  /* bytes of any one string (or items of one list) built while rendering */
    uint64_t max_steps; /* statements + loop iterations + calls */
    int max_depth;      /* nesting of macro calls and of expressions */
    int fixed_now;      /* 1: strftime_now formats `now` (seconds since the epoch, UTC) */
    int64_t now;        /*    0: it formats the local time of the call, as the reference does */
} jinja_config;

/* 64 MiB output and strings, 50 million steps, depth 1000, real clock. */
void jinja_config_default(jinja_config *cfg);

/* name labels messages ("chat_template.jinja"); NULL: "template". */
optiq_status jinja_parse(const char *src, size_t len, unsigned flags, const char *name, jinja_template **out,
                         optiq_error *err);
void jinja_free(jinja_template *t);

/* Render with the variables of `vars` (a dict value; NULL: none). cfg NULL:
 * defaults. *out is NUL-terminated, caller frees; *out_len may be NULL. */
optiq_status jinja_render(const jinja_template *t, const jval *vars, const jinja_config *cfg, char **out,
                          size_t *out_len, optiq_error *err);

/* True when text occurs anywhere in the template's source (a cheap look,
 * used to decide how to present message content to it). */
int jinja_source_mentions(const jinja_template *t, const char *text);

/* ---- values ---------------------------------------------------------------
 * Reference-counted. Constructors return a new reference (NULL when out of
 * memory); containers take ownership of what is stored in them ("steals").
 * Dicts keep insertion order, like Python's. */
typedef enum jtype {
    JV_UNDEFINED,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STRING,
    JV_LIST,
    JV_TUPLE,
    JV_DICT,
    JV_NAMESPACE,
    JV_MACRO,
    JV_FUNC,
    JV_LOOP
} jtype;

jval *jv_none(void);
jval *jv_bool(int b);
jval *jv_int(int64_t i);
jval *jv_float(double f);
jval *jv_str(const char *s, size_t len);
jval *jv_cstr(const char *s);
jval *jv_list(void);
jval *jv_dict(void);
jval *jv_undefined(void);
jval *jv_ref(const jval *v);
void jv_unref(jval *v);

jtype jv_type(const jval *v);
int jv_as_bool(const jval *v); /* Python truthiness */
int64_t jv_as_int(const jval *v);
double jv_as_float(const jval *v);
const char *jv_str_data(const jval *v, size_t *len); /* NULL unless a string */

size_t jv_len(const jval *v); /* items of a list/tuple/dict, 0 otherwise */
const jval *jv_list_at(const jval *list, size_t i);
int jv_list_push(jval *list, jval *item); /* steals item; 0 ok, -1 out of memory */

const jval *jv_dict_get(const jval *dict, const char *key);      /* NULL when absent */
const jval *jv_dict_key_at(const jval *dict, size_t i);
const jval *jv_dict_value_at(const jval *dict, size_t i);
int jv_dict_set(jval *dict, const char *key, jval *value);       /* steals value; keeps the position of an old key */
int jv_dict_set_key(jval *dict, jval *key, jval *value);         /* steals both */
int jv_dict_remove(jval *dict, const char *key);                 /* 1 when it was there */
jval *jv_copy(const jval *v);                                    /* deep copy of lists and dicts */

/* Python's json.loads of text (ints stay ints, 1.0 stays a float, duplicate keys:
 * the last value at the first position, NaN/Infinity accepted). label names the
 * document in messages. */
optiq_status jv_from_json(const char *text, size_t len, const char *label, jval **out, optiq_error *err);

/* Python's str(v) / json.dumps(v, ensure_ascii=False), caller frees; NULL when
 * out of memory or (json) when v holds something JSON cannot represent. */
char *jv_to_str(const jval *v, size_t *len);
char *jv_to_json(const jval *v, size_t *len);

#endif
