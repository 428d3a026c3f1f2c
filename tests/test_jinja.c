/* test_jinja.c — the template language against Jinja2: every case of
 * tests/fixtures/templates/jinja_cases.jsonl (template, context, and the
 * output or failure Jinja2 3.1.6 gave in transformers' chat-template
 * environment, made by tools/reference/gen_templates.py) must render to the
 * same bytes, or fail too. Then the defences against hostile templates: each
 * limit gives a clear error (with the line) instead of a hang or a crash. */
#include "test.h"
#include "text/jinja.h"

#include <stdint.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (b) b[got] = 0;
    if (len) *len = got;
    return b;
}

/* Parse and render; returns the status, *out the text (or NULL). */
static optiq_status render(const char *tpl, const jval *vars, const jinja_config *cfg, char **out, optiq_error *e) {
    jinja_template *t = NULL;
    *out = NULL;
    optiq_status st = jinja_parse(tpl, strlen(tpl), JINJA_HF, "case", &t, e);
    if (st == OPTIQ_OK) st = jinja_render(t, vars, cfg, out, NULL, e);
    jinja_free(t);
    return st;
}

static void fixture_cases(void) {
    size_t len;
    char *text = slurp(test_path("tests/fixtures/templates/jinja_cases.jsonl"), &len);
    for (TEST_CASE("jinja cases fixture readable")) CHECKF(text != NULL, "cannot read jinja_cases.jsonl");
    if (!text) return;
    jval *context = NULL;
    int n_cases = 0, n_ok = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line) continue;
        optiq_error e = {0};
        jval *rec = NULL;
        if (jv_from_json(line, strlen(line), "case", &rec, &e) != OPTIQ_OK) {
            for (TEST_CASE("jinja case parses")) CHECKF(0, "%s", e.message);
            continue;
        }
        const char *name = jv_str_data(jv_dict_get(rec, "name"), NULL);
        if (name && strcmp(name, "default_context") == 0) {
            jv_unref(context);
            context = jv_ref(jv_dict_get(rec, "context"));
            jv_unref(rec);
            continue;
        }
        char label[160];
        snprintf(label, sizeof label, "jinja %s", name ? name : "?");
        const jval *ctx = jv_dict_get(rec, "context") ? jv_dict_get(rec, "context") : context;
        const char *tpl = jv_str_data(jv_dict_get(rec, "template"), NULL);
        size_t elen = 0;
        const char *expected = jv_str_data(jv_dict_get(rec, "expected"), &elen);
        const char *ref_error = jv_str_data(jv_dict_get(rec, "error"), NULL);
        jinja_config cfg;
        jinja_config_default(&cfg);
        cfg.fixed_now = 1;
        cfg.now = 1773489600; /* the instant the generator pinned strftime_now to */
        char *out = NULL;
        optiq_status st = render(tpl ? tpl : "", ctx, &cfg, &out, &e);
        n_cases++;
        for (TEST_CASE(label)) {
            if (expected) {
                CHECKF(st == OPTIQ_OK, "failed: %s", e.message);
                if (st == OPTIQ_OK)
                    CHECKF(strlen(out) == elen && memcmp(out, expected, elen) == 0, "got [%s] want [%s]", out, expected);
            } else {
                CHECKF(st != OPTIQ_OK, "rendered [%s], Jinja2 failed with: %s", out ? out : "", ref_error ? ref_error : "");
                if (st != OPTIQ_OK) CHECKF(strstr(e.message, "line ") != NULL, "error without a line: %s", e.message);
            }
            if (!t_case_failed) n_ok++;
        }
        free(out);
        jv_unref(rec);
    }
    for (TEST_CASE("jinja cases: all match Jinja2")) CHECKF(n_ok == n_cases && n_cases >= 100, "%d of %d", n_ok, n_cases);
    printf("jinja fixture: %d/%d cases match\n", n_ok, n_cases);
    jv_unref(context);
    free(text);
}

/* A template that must fail; the message must contain want. */
static void expect_failure(const char *name, const char *tpl, const jinja_config *cfg, const char *want) {
    optiq_error e = {0};
    char *out = NULL;
    optiq_status st = render(tpl, NULL, cfg, &out, &e);
    for (TEST_CASE(name)) {
        CHECKF(st != OPTIQ_OK, "rendered %zu bytes", out ? strlen(out) : 0);
        CHECKF(strstr(e.message, want) != NULL, "message [%s] lacks [%s]", e.message, want);
    }
    free(out);
}

static void limits(void) {
    jinja_config cfg;
    jinja_config_default(&cfg);
    cfg.max_steps = 2000000;
    cfg.max_output = 1 << 20;
    cfg.max_string = 1 << 20;
    expect_failure("limit: loop bomb stops on the step budget",
                   "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", &cfg, "steps");
    expect_failure("limit: output bomb stops on the output size",
                   "{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}", &cfg,
                   "output larger");
    expect_failure("limit: string repetition", "{{ 'x' * 100000000 }}", &cfg, "string longer");
    expect_failure("limit: doubling a string", "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", &cfg,
                   "string longer");
    expect_failure("limit: list repetition", "{{ ([1] * 100000000) | length }}", &cfg, "list too long");
    expect_failure("limit: unbounded macro recursion", "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", &cfg,
                   "deeper than");
    /* the parser's own nesting limit */
    char deep[5000];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof deep, "{{ ");
    for (int i = 0; i < 2000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 2000; i++) deep[k++] = ')';
    snprintf(deep + k, sizeof deep - k, " }}");
    expect_failure("limit: deeply nested expression", deep, &cfg, "nested too deeply");
    expect_failure("limit: range larger than the sandbox allows", "{{ range(200000) | length }}", &cfg, "MAX_RANGE");
}

static void errors_carry_lines(void) {
    expect_failure("error: syntax error names its line", "line one\n{% if x %}\nthree\n{{ 1 + }}\n", NULL, "line 4");
    expect_failure("error: unclosed block names the end", "a\n{% for x in y %}\nb\n", NULL, "expected 'endfor'");
    expect_failure("error: runtime error names its line", "a\nb\n{{ undefined_thing.attr }}", NULL, "line 3");
    expect_failure("error: raise_exception carries the template's message",
                   "{% if true %}\n  {{ raise_exception('Conversation roles must alternate') }}\n{% endif %}", NULL,
                   "line 2: Conversation roles must alternate");
    expect_failure("error: unknown filter at parse time", "{% if false %}{{ x | frobnicate }}{% endif %}", NULL,
                   "no filter named 'frobnicate'");
    expect_failure("error: break outside a loop", "{% break %}", NULL, "outside of a loop");
    expect_failure("error: caller kept past its call",
                   "{% set ns = namespace(c=none) %}{% macro keep() %}{% set ns.c = caller %}{% endmacro %}"
                   "{% call keep() %}x{% endcall %}{{ ns.c() }}",
                   NULL, "after its call returned");
}

static void values_and_json(void) {
    for (TEST_CASE("json: ints stay ints, floats stay floats, order kept")) {
        jval *v = NULL;
        optiq_error e = {0};
        const char *src = "{\"b\": 1, \"a\": 1.0, \"c\": [1e3, -0.0, 12345678901234567890, \"\\u00e9\\ud83d\\ude00\"], \"b\": 2}";
        CHECK(jv_from_json(src, strlen(src), "t", &v, &e) == OPTIQ_OK);
        char *s = jv_to_json(v, NULL);
        CHECKF(s && strcmp(s, "{\"b\": 2, \"a\": 1.0, \"c\": [1000.0, -0.0, 1.2345678901234567e+19, \"é😀\"]}") == 0,
               "got %s", s ? s : "(null)");
        free(s);
        s = jv_to_str(v, NULL);
        CHECKF(s && strcmp(s, "{'b': 2, 'a': 1.0, 'c': [1000.0, -0.0, 1.2345678901234567e+19, 'é😀']}") == 0, "got %s",
               s ? s : "(null)");
        free(s);
        jv_unref(v);
    }
    for (TEST_CASE("json: malformed input names line and column")) {
        jval *v = NULL;
        optiq_error e = {0};
        const char *src = "[\n  {\"role\": \"user\",\n   \"content\": }\n]";
        CHECK(jv_from_json(src, strlen(src), "messages", &v, &e) != OPTIQ_OK);
        CHECKF(strstr(e.message, "messages: line 3 column") != NULL, "message: %s", e.message);
        CHECK(v == NULL);
    }
}

int main(void) {
    fixture_cases();
    limits();
    errors_carry_lines();
    values_and_json();
    return test_finish();
}
