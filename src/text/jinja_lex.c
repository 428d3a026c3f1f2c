/*
 * jinja_lex.c — template text to tokens, rule for rule as Jinja2's lexer
 * (jinja2/lexer.py) with the default delimiters:
 *
 *   {{ ... }}  {% ... %}  {# ... #}   ("-" after the opener / before the
 *   closer strips whitespace on that side; "+" turns lstrip/trim off)
 *
 *   - the data before a tag: "{%-" etc. strip all whitespace (Python's
 *     str.rstrip); otherwise, with lstrip_blocks and a block or comment tag,
 *     the spaces between the last newline (or the start of a line) and the tag
 *     are dropped when nothing else is there;
 *   - "-%}" eats the whitespace after it; "%}" and "#}" eat one "\n" with
 *     trim_blocks; "}}" never does;
 *   - inside a tag, "%}" / "}}" only close it when every bracket opened in the
 *     tag is closed (so {{ {'a': {'b': 1}} }} works);
 *   - {% raw %}...{% endraw %} is data (the opening tag is never trimmed, the
 *     closing one is);
 *   - string literals use Python escapes (\n, \t, \xNN, \uNNNN, \UNNNNNNNN,
 *     octal, \<newline>); unknown escapes keep the backslash.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_int.h"

typedef struct lexer {
    jinja_template *t;
    const char *s;
    size_t n, pos;
    int line;
    unsigned flags;
    jtok *toks;
    size_t ntoks, cap;
    optiq_error *err;
    char brackets[256];
    int nbrackets;
} lexer;

static optiq_status lex_fail(lexer *L, int line, const char *msg, const char *arg) {
    return err_set(L->err, OPTIQ_ERR_FORMAT, "%s: line %d: %s%s", L->t->name, line, msg, arg ? arg : "");
}

static int push(lexer *L, jtok_kind kind, int line, const char *s, size_t len) {
    if (L->ntoks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtok *p = realloc(L->toks, cap * sizeof *p);
        if (!p) return -1;
        L->toks = p;
        L->cap = cap;
    }
    jtok *t = &L->toks[L->ntoks++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->line = line;
    t->s = s;
    t->len = len;
    return 0;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Length of the whitespace run (Python \s) at s[i..n). */
static size_t space_run(const char *s, size_t n, size_t i) {
    size_t j = i;
    while (j < n) {
        size_t k = j;
        uint32_t c = u8_next(s, n, &k);
        if (!py_isspace(c)) break;
        j = k;
    }
    return j - i;
}

/* Python str.rstrip() length. */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t p = u8_prev(s, n);
        size_t k = p;
        uint32_t c = u8_next(s, n, &k);
        if (!py_isspace(c)) break;
        n = p;
    }
    return n;
}

/* The data before a tag after whitespace control. sign: '-', '+' or 0. */
static size_t strip_data(lexer *L, const char *text, size_t len, char sign, int is_var, int line_starting) {
    if (sign == '-') return rstrip_len(text, len);
    if (sign == '+' || is_var || !(L->flags & JINJA_LSTRIP_BLOCKS)) return len;
    size_t l_pos = len;
    while (l_pos > 0 && text[l_pos - 1] != '\n') l_pos--;
    if (l_pos > 0 || line_starting) {
        if (len > l_pos && space_run(text, len, l_pos) == len - l_pos) return l_pos;
    }
    return len;
}

static int emit_data(lexer *L, const char *text, size_t len, int line) {
    if (len == 0) return 0;
    char *p = jarena_strndup(&L->t->arena, text, len);
    if (!p) return -1;
    return push(L, T_DATA, line, p, len);
}

/* Python-escaped string literal body s[0..n) into the arena. */
static optiq_status unescape(lexer *L, const char *s, size_t n, int line, const char **out, size_t *outlen) {
    jbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= n) {
            jbuf_putc(&b, c);
            continue;
        }
        char e = s[++i];
        uint32_t cp;
        int digits;
        switch (e) {
        case '\n': break;
        case '\\': jbuf_putc(&b, '\\'); break;
        case '\'': jbuf_putc(&b, '\''); break;
        case '"': jbuf_putc(&b, '"'); break;
        case 'a': jbuf_putc(&b, '\a'); break;
        case 'b': jbuf_putc(&b, '\b'); break;
        case 'f': jbuf_putc(&b, '\f'); break;
        case 'n': jbuf_putc(&b, '\n'); break;
        case 'r': jbuf_putc(&b, '\r'); break;
        case 't': jbuf_putc(&b, '\t'); break;
        case 'v': jbuf_putc(&b, '\v'); break;
        case 'x':
        case 'u':
        case 'U':
            digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            cp = 0;
            for (int k = 0; k < digits; k++) {
                char h = i + 1 + (size_t)k < n ? s[i + 1 + (size_t)k] : 0;
                if (!isxdigit((unsigned char)h)) {
                    jbuf_free(&b);
                    return lex_fail(L, line, "invalid escape in a string literal", NULL);
                }
                cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            i += (size_t)digits;
            if (cp > 0x10FFFF) {
                jbuf_free(&b);
                return lex_fail(L, line, "escape out of the Unicode range in a string literal", NULL);
            }
            u8_put(&b, cp >= 0xD800 && cp < 0xE000 ? 0xFFFD : cp);
            break;
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(s[++i] - '0');
                u8_put(&b, cp);
            } else {
                jbuf_putc(&b, '\\');
                jbuf_putc(&b, e);
            }
        }
    }
    if (b.oom) {
        jbuf_free(&b);
        return err_set(L->err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    *out = jarena_strndup(&L->t->arena, b.p ? b.p : "", b.n);
    *outlen = b.n;
    jbuf_free(&b);
    return *out ? OPTIQ_OK : err_set(L->err, OPTIQ_ERR_NOMEM, "out of memory");
}

static const char *const OPS[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                  "]",  "(",  ")",  "{",  "}",  "=",  ".", ":", "|", ",", ";", ">", "<"};

/* Number at s[i]: float per Jinja's float_re, else integer per integer_re.
 * Returns the length, 0 when none. */
static size_t lex_number(lexer *L, size_t i, jtok *t) {
    const char *s = L->s;
    size_t n = L->n, j = i;
    char buf[128];
    size_t bl = 0;
    /* digits with single underscores between them */
#define DIGITS(k)                                                                                       \
    do {                                                                                                \
        while (k < n && (isdigit((unsigned char)s[k]) || (s[k] == '_' && k + 1 < n && isdigit((unsigned char)s[k + 1])))) k++; \
    } while (0)
    if (!(i > 0 && s[i - 1] == '.')) {
        DIGITS(j);
        size_t k = j;
        int is_float = 0;
        if (k < n && s[k] == '.' && k + 1 < n && isdigit((unsigned char)s[k + 1])) {
            k++;
            DIGITS(k);
            is_float = 1;
        }
        if (k < n && (s[k] == 'e' || s[k] == 'E')) {
            size_t m = k + 1;
            if (m < n && (s[m] == '+' || s[m] == '-')) m++;
            if (m < n && isdigit((unsigned char)s[m])) {
                DIGITS(m);
                k = m;
                is_float = 1;
            }
        }
        if (is_float) {
            for (size_t q = i; q < k && bl < sizeof buf - 1; q++)
                if (s[q] != '_') buf[bl++] = s[q];
            buf[bl] = 0;
            t->kind = T_FLOAT;
            t->fval = strtod(buf, NULL);
            return k - i;
        }
    }
#undef DIGITS
    /* integers: 0b.., 0o.., 0x.., [1-9](_?\d)*, 0(_?0)* */
    int base = 10;
    j = i;
    if (s[j] == '0' && j + 1 < n && strchr("bBoOxX", s[j + 1]) && s[j + 1]) {
        char p = (char)tolower((unsigned char)s[j + 1]);
        base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
        size_t k = j + 2;
        size_t start = k;
        for (;;) {
            size_t m = k;
            if (m < n && s[m] == '_') m++;
            if (m < n && ((base == 2 && (s[m] == '0' || s[m] == '1')) || (base == 8 && s[m] >= '0' && s[m] <= '7') ||
                          (base == 16 && isxdigit((unsigned char)s[m])))) {
                if (bl < sizeof buf - 1) buf[bl++] = s[m];
                k = m + 1;
            } else break;
        }
        if (k == start) base = 10; /* just "0" */
        else {
            buf[bl] = 0;
            t->kind = T_INT;
            t->ival = (int64_t)strtoull(buf, NULL, base);
            return k - i;
        }
    }
    j = i;
    if (s[j] == '0') {
        j++;
        while (j + 1 < n && s[j] == '_' && s[j + 1] == '0') j += 2;
        while (j < n && s[j] == '0') j++; /* "00" reads as one zero, like 0(_?0)* */
        t->kind = T_INT;
        t->ival = 0;
        return j - i;
    }
    while (j < n && (isdigit((unsigned char)s[j]) || (s[j] == '_' && j + 1 < n && isdigit((unsigned char)s[j + 1])))) {
        if (s[j] != '_' && bl < sizeof buf - 1) buf[bl++] = s[j];
        j++;
    }
    buf[bl] = 0;
    t->kind = T_INT;
    t->ival = (int64_t)strtoull(buf, NULL, 10);
    return j - i;
}

/* Tokens inside {{ }} or {% %} until the closer. */
static optiq_status lex_tag(lexer *L, int is_block) {
    const char *s = L->s;
    size_t n = L->n;
    L->nbrackets = 0;
    for (;;) {
        size_t i = L->pos;
        if (i >= n) return lex_fail(L, L->line, is_block ? "missing '%}' at the end of the template" : "missing '}}' at the end of the template", NULL);
        if (L->nbrackets == 0) {
            char c0 = s[i], c1 = i + 1 < n ? s[i + 1] : 0, c2 = i + 2 < n ? s[i + 2] : 0;
            char close = is_block ? '%' : '}';
            size_t end = 0;
            if (is_block && c0 == '+' && c1 == '%' && c2 == '}') end = i + 3;
            else if (c0 == '-' && c1 == close && c2 == '}') {
                end = i + 3;
                end += space_run(s, n, end);
            } else if (c0 == close && c1 == '}') {
                end = i + 2;
                if (is_block && (L->flags & JINJA_TRIM_BLOCKS) && end < n && s[end] == '\n') end++;
            }
            if (end) {
                if (push(L, is_block ? T_BLOCK_END : T_VAR_END, L->line, NULL, 0) != 0) goto oom;
                L->line += count_nl(s + i, end - i);
                L->pos = end;
                return OPTIQ_OK;
            }
        }
        size_t ws = space_run(s, n, i);
        if (ws) {
            L->line += count_nl(s + i, ws);
            L->pos = i + ws;
            continue;
        }
        char c = s[i];
        if (isdigit((unsigned char)c)) {
            jtok t = {0};
            size_t len = lex_number(L, i, &t);
            if (push(L, t.kind, L->line, s + i, len) != 0) goto oom;
            L->toks[L->ntoks - 1].ival = t.ival;
            L->toks[L->ntoks - 1].fval = t.fval;
            L->pos = i + len;
            continue;
        }
        if (isalpha((unsigned char)c) || c == '_') {
            size_t j = i;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            if (push(L, T_NAME, L->line, s + i, j - i) != 0) goto oom;
            L->pos = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != c) j += s[j] == '\\' ? 2 : 1;
            if (j >= n) return lex_fail(L, L->line, "unterminated string literal", NULL);
            const char *val = NULL;
            size_t vlen = 0;
            optiq_status st = unescape(L, s + i + 1, j - i - 1, L->line, &val, &vlen);
            if (st) return st;
            if (push(L, T_STRING, L->line, val, vlen) != 0) goto oom;
            L->line += count_nl(s + i, j + 1 - i);
            L->pos = j + 1;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
            size_t ol = strlen(OPS[k]);
            if (n - i >= ol && memcmp(s + i, OPS[k], ol) == 0) break;
        }
        if (k == sizeof OPS / sizeof OPS[0]) {
            char what[16];
            size_t q = i;
            u8_next(s, n, &q);
            snprintf(what, sizeof what, "%.*s'", (int)(q - i), s + i);
            return lex_fail(L, L->line, "unexpected character '", what);
        }
        const char *op = OPS[k];
        if (op[1] == 0 && strchr("([{", op[0])) {
            if (L->nbrackets >= (int)sizeof L->brackets) return lex_fail(L, L->line, "brackets nested too deeply", NULL);
            L->brackets[L->nbrackets++] = op[0] == '(' ? ')' : op[0] == '[' ? ']' : '}';
        } else if (op[1] == 0 && strchr(")]}", op[0])) {
            char msg[8] = {op[0], '\'', 0};
            if (L->nbrackets == 0) return lex_fail(L, L->line, "unexpected '", msg);
            if (L->brackets[L->nbrackets - 1] != op[0]) return lex_fail(L, L->line, "unexpected '", msg);
            L->nbrackets--;
        }
        if (push(L, T_OP, L->line, op, strlen(op)) != 0) goto oom;
        L->pos = i + strlen(op);
    }
oom:
    return err_set(L->err, OPTIQ_ERR_NOMEM, "out of memory");
}

/* At s[i] == '{' and s[i+1] == '%': "{%(-|+|)\s*raw\s*(-%}\s*|%})"; returns the end or 0. */
static size_t match_raw_begin(lexer *L, size_t i) {
    const char *s = L->s;
    size_t n = L->n, j = i + 2;
    if (j < n && (s[j] == '-' || s[j] == '+')) j++;
    j += space_run(s, n, j);
    if (n - j < 3 || memcmp(s + j, "raw", 3) != 0) return 0;
    j += 3;
    if (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) return 0;
    j += space_run(s, n, j);
    if (n - j >= 3 && s[j] == '-' && s[j + 1] == '%' && s[j + 2] == '}') return j + 3 + space_run(s, n, j + 3);
    if (n - j >= 2 && s[j] == '%' && s[j + 1] == '}') return j + 2;
    return 0;
}

/* Finds "{%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?)" from i: sets *tag (its start),
 * *sign and returns the end, or 0. */
static size_t find_endraw(lexer *L, size_t i, size_t *tag, char *sign) {
    const char *s = L->s;
    size_t n = L->n;
    for (size_t p = i; p + 1 < n; p++) {
        if (s[p] != '{' || s[p + 1] != '%') continue;
        size_t j = p + 2;
        char sg = 0;
        if (j < n && (s[j] == '-' || s[j] == '+')) sg = s[j++];
        j += space_run(s, n, j);
        if (n - j < 6 || memcmp(s + j, "endraw", 6) != 0) continue;
        j += 6;
        j += space_run(s, n, j);
        size_t end = 0;
        if (n - j >= 3 && s[j] == '+' && s[j + 1] == '%' && s[j + 2] == '}') end = j + 3;
        else if (n - j >= 3 && s[j] == '-' && s[j + 1] == '%' && s[j + 2] == '}') end = j + 3 + space_run(s, n, j + 3);
        else if (n - j >= 2 && s[j] == '%' && s[j + 1] == '}') {
            end = j + 2;
            if ((L->flags & JINJA_TRIM_BLOCKS) && end < n && s[end] == '\n') end++;
        }
        if (end) {
            *tag = p;
            *sign = sg;
            return end;
        }
    }
    return 0;
}

optiq_status jinja_lex(jinja_template *t, const char *src, size_t len, unsigned flags, jtok **toks, size_t *ntoks,
                       optiq_error *err) {
    lexer L = {.t = t, .flags = flags, .err = err, .line = 1};
    /* newlines: "\r\n" and "\r" read as "\n"; one final newline dropped */
    char *norm = malloc(len + 1);
    if (!norm) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[m++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else norm[m++] = src[i];
    }
    if (!(flags & JINJA_KEEP_TRAILING_NEWLINE) && m > 0 && norm[m - 1] == '\n') m--;
    norm[m] = 0;
    t->source = norm;
    t->source_len = m;
    L.s = norm;
    L.n = m;

    optiq_status st = OPTIQ_OK;
    const char *s = norm;
    size_t n = m;
    while (L.pos < n && st == OPTIQ_OK) {
        size_t start = L.pos;
        int line_starting = start == 0 || s[start - 1] == '\n';
        size_t i = start;
        int kind = 0; /* '{', '%', '#', 'r' (raw) */
        for (; i + 1 < n; i++) {
            if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) {
                kind = s[i + 1];
                break;
            }
        }
        if (!kind) {
            if (emit_data(&L, s + start, n - start, L.line) != 0) goto oom;
            break;
        }
        size_t raw_end = kind == '%' ? match_raw_begin(&L, i) : 0;
        char sign = i + 2 < n && (s[i + 2] == '-' || s[i + 2] == '+') ? s[i + 2] : 0;
        size_t keep = strip_data(&L, s + start, i - start, sign, kind == '{', line_starting);
        if (emit_data(&L, s + start, keep, L.line) != 0) goto oom;
        L.line += count_nl(s + start, i - start);
        if (raw_end) {
            L.line += count_nl(s + i, raw_end - i);
            size_t tag;
            char esign;
            size_t end = find_endraw(&L, raw_end, &tag, &esign);
            if (!end) {
                st = lex_fail(&L, L.line, "missing end of raw directive", NULL);
                break;
            }
            int ls = s[raw_end - 1] == '\n';
            size_t k = strip_data(&L, s + raw_end, tag - raw_end, esign, 0, ls);
            if (emit_data(&L, s + raw_end, k, L.line) != 0) goto oom;
            L.line += count_nl(s + raw_end, end - raw_end);
            L.pos = end;
            continue;
        }
        size_t after = i + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t p = after, end = 0;
            for (; p + 1 < n; p++) {
                if ((s[p] == '+' || s[p] == '-') && p + 2 < n && s[p + 1] == '#' && s[p + 2] == '}') {
                    end = p + 3;
                    if (s[p] == '-') end += space_run(s, n, end);
                    break;
                }
                if (s[p] == '#' && s[p + 1] == '}') {
                    end = p + 2;
                    if ((flags & JINJA_TRIM_BLOCKS) && end < n && s[end] == '\n') end++;
                    break;
                }
            }
            if (!end) {
                st = lex_fail(&L, L.line, "missing end of comment tag", NULL);
                break;
            }
            L.line += count_nl(s + i, end - i);
            L.pos = end;
            continue;
        }
        if (push(&L, kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, L.line, NULL, 0) != 0) goto oom;
        L.pos = after;
        st = lex_tag(&L, kind == '%');
    }
    if (st == OPTIQ_OK && push(&L, T_EOF, L.line, NULL, 0) != 0) goto oom;
    if (st != OPTIQ_OK) {
        free(L.toks);
        return st;
    }
    *toks = L.toks;
    *ntoks = L.ntoks;
    return OPTIQ_OK;
oom:
    free(L.toks);
    return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
}
