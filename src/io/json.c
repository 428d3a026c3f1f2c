/* json.c — see json.h. */
#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files -------------------------------------------------------------- */

optiq_status json_read_file(const char *path, size_t cap, char **out, size_t *len, optiq_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(err, OPTIQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb = {0};
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = S_ISREG(sb.st_mode) ? errno : 0;
        close(fd);
        return err_set(err, OPTIQ_ERR_IO, "%s: not a readable regular file%s%s", path, e ? ": " : "",
                       e ? strerror(e) : "");
    }
    if ((uint64_t)sb.st_size > cap) {
        close(fd);
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %llu bytes, larger than the %zu-byte limit for this file", path,
                       (unsigned long long)sb.st_size, cap);
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    int e = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) e = errno;
        if (r <= 0) break; /* r == 0: the file shrank under us, keep what we have */
        got += (size_t)r;
    }
    close(fd);
    if (e) {
        free(buf);
        return err_set(err, OPTIQ_ERR_IO, "%s: read failed: %s", path, strerror(e));
    }
    buf[got] = 0;
    *out = buf;
    if (len) *len = got;
    return OPTIQ_OK;
}

optiq_status json_parse(const char *text, size_t len, const char *label, cJSON **out, optiq_error *err) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < at; i++) {
            if (text[i] == '\n') line++, col = 1;
            else col++;
        }
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: not valid JSON (syntax error at line %zu, column %zu)", label, line,
                       col);
    }
    for (const char *p = end; p && p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(*out);
            *out = NULL;
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: not valid JSON (extra text after the value at byte %zu)", label,
                           (size_t)(p - text));
        }
    return OPTIQ_OK;
}

optiq_status json_load_file(const char *path, const char *label, size_t cap, cJSON **out, optiq_error *err) {
    char *text;
    size_t len;
    *out = NULL;
    optiq_status st = json_read_file(path, cap ? cap : JSON_DEFAULT_CAP, &text, &len, err);
    if (st != OPTIQ_OK) return st;
    st = json_parse(text, len, label ? label : path, out, err);
    free(text);
    return st;
}

/* ---- lookups ------------------------------------------------------------ */

const char *json_type_name(const cJSON *j) {
    if (!j) return "missing";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

static const cJSON *step(const cJSON *node, const char *key, size_t n) {
    if (cJSON_IsObject(node)) {
        for (const cJSON *c = node->child; c; c = c->next)
            if (c->string && strlen(c->string) == n && memcmp(c->string, key, n) == 0) return c;
        return NULL;
    }
    if (cJSON_IsArray(node) && n > 0 && n < 10) {
        int idx = 0;
        for (size_t i = 0; i < n; i++) {
            if (key[i] < '0' || key[i] > '9') return NULL;
            idx = idx * 10 + (key[i] - '0');
        }
        return cJSON_GetArrayItem(node, idx);
    }
    return NULL;
}

const cJSON *json_path(const cJSON *root, const char *path) {
    const cJSON *node = root;
    const char *p = path;
    while (node) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        node = step(node, p, n);
        if (!dot) return node;
        p = dot + 1;
    }
    return NULL;
}

int json_as_int(const cJSON *j, int64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return 0;
    int64_t v = (int64_t)d;
    if ((double)v != d) return 0;
    *out = v;
    return 1;
}

/* Describe why a path is missing: the deepest existing parent that is not a container. */
static optiq_status missing(const cJSON *root, const char *label, const char *path, optiq_error *err) {
    const cJSON *node = root;
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        if (!dot) break;
        const cJSON *next = step(node, p, (size_t)(dot - p));
        if (!next) break;
        if (!cJSON_IsObject(next) && !cJSON_IsArray(next))
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s missing (%.*s is %s, not an object)", label, path,
                           (int)(dot - path), path, json_type_name(next));
        node = next;
        p = dot + 1;
    }
    return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s missing", label, path);
}

static optiq_status wrong(const char *label, const char *path, const cJSON *j, const char *want, optiq_error *err) {
    return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected %s", label, path, json_type_name(j), want);
}

#define ABSENT(j) (!(j) || cJSON_IsNull(j))

optiq_status json_get_int(const cJSON *root, const char *label, const char *path, int64_t *out, optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) return missing(root, label, path, err);
    if (!json_as_int(j, out)) {
        if (cJSON_IsNumber(j))
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %g, expected an integer", label, path, j->valuedouble);
        return wrong(label, path, j, "an integer", err);
    }
    return OPTIQ_OK;
}

optiq_status json_get_int_or(const cJSON *root, const char *label, const char *path, int64_t def, int64_t *out,
                             optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) {
        *out = def;
        return OPTIQ_OK;
    }
    return json_get_int(root, label, path, out, err);
}

optiq_status json_get_double(const cJSON *root, const char *label, const char *path, double *out, optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) return missing(root, label, path, err);
    if (!cJSON_IsNumber(j)) return wrong(label, path, j, "a number", err);
    *out = j->valuedouble;
    return OPTIQ_OK;
}

optiq_status json_get_double_or(const cJSON *root, const char *label, const char *path, double def, double *out,
                                optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) {
        *out = def;
        return OPTIQ_OK;
    }
    return json_get_double(root, label, path, out, err);
}

optiq_status json_get_bool(const cJSON *root, const char *label, const char *path, int *out, optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) return missing(root, label, path, err);
    if (!cJSON_IsBool(j)) return wrong(label, path, j, "true or false", err);
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return OPTIQ_OK;
}

optiq_status json_get_bool_or(const cJSON *root, const char *label, const char *path, int def, int *out,
                              optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) {
        *out = def;
        return OPTIQ_OK;
    }
    return json_get_bool(root, label, path, out, err);
}

optiq_status json_get_string(const cJSON *root, const char *label, const char *path, const char **out,
                             optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) return missing(root, label, path, err);
    if (!cJSON_IsString(j)) return wrong(label, path, j, "a string", err);
    *out = j->valuestring;
    return OPTIQ_OK;
}

optiq_status json_get_string_or(const cJSON *root, const char *label, const char *path, const char *def,
                                const char **out, optiq_error *err) {
    const cJSON *j = json_path(root, path);
    if (ABSENT(j)) {
        *out = def;
        return OPTIQ_OK;
    }
    return json_get_string(root, label, path, out, err);
}

static optiq_status get_container(const cJSON *root, const char *label, const char *path, const cJSON **out,
                                  int want_object, int optional, optiq_error *err) {
    const cJSON *j = json_path(root, path);
    *out = NULL;
    if (ABSENT(j)) return optional ? OPTIQ_OK : missing(root, label, path, err);
    if (want_object ? !cJSON_IsObject(j) : !cJSON_IsArray(j))
        return wrong(label, path, j, want_object ? "an object" : "an array", err);
    *out = j;
    return OPTIQ_OK;
}

optiq_status json_get_object(const cJSON *root, const char *label, const char *path, const cJSON **out,
                             optiq_error *err) {
    return get_container(root, label, path, out, 1, 0, err);
}
optiq_status json_get_object_opt(const cJSON *root, const char *label, const char *path, const cJSON **out,
                                 optiq_error *err) {
    return get_container(root, label, path, out, 1, 1, err);
}
optiq_status json_get_array(const cJSON *root, const char *label, const char *path, const cJSON **out,
                            optiq_error *err) {
    return get_container(root, label, path, out, 0, 0, err);
}
optiq_status json_get_array_opt(const cJSON *root, const char *label, const char *path, const cJSON **out,
                                optiq_error *err) {
    return get_container(root, label, path, out, 0, 1, err);
}

/* ---- Python-style printing ---------------------------------------------- */

typedef struct pbuf {
    char *p;
    size_t n, cap;
    int oom;
} pbuf;

static void pb_put(pbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void pb_str(pbuf *b, const char *s) { pb_put(b, s, strlen(s)); }

static void pb_newline(pbuf *b, int indent, int depth) {
    pb_put(b, "\n", 1);
    for (int i = 0; i < indent * depth; i++) pb_put(b, " ", 1);
}

/* Next code point of UTF-8 text (invalid bytes are taken as U+FFFD). */
static uint32_t utf8_next(const unsigned char **s) {
    const unsigned char *p = *s;
    uint32_t c = p[0];
    int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (n < 0) {
        *s = p + 1;
        return 0xFFFD;
    }
    if (n == 0) {
        *s = p + 1;
        return c;
    }
    c &= 0x3Fu >> n;
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *s = p + 1;
            return 0xFFFD;
        }
        c = (c << 6) | (p[i] & 0x3F);
    }
    *s = p + n + 1;
    return c;
}

static void pb_json_string(pbuf *b, const char *str) {
    char tmp[16];
    pb_put(b, "\"", 1);
    for (const unsigned char *s = (const unsigned char *)str; *s;) {
        uint32_t c = utf8_next(&s);
        switch (c) {
        case '"': pb_str(b, "\\\""); break;
        case '\\': pb_str(b, "\\\\"); break;
        case '\n': pb_str(b, "\\n"); break;
        case '\r': pb_str(b, "\\r"); break;
        case '\t': pb_str(b, "\\t"); break;
        case '\b': pb_str(b, "\\b"); break;
        case '\f': pb_str(b, "\\f"); break;
        default:
            if (c >= 0x20 && c < 0x7F) {
                char ch = (char)c;
                pb_put(b, &ch, 1);
            } else if (c < 0x10000) {
                snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)c);
                pb_str(b, tmp);
            } else {
                uint32_t v = c - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 + (v >> 10)), (unsigned)(0xDC00 + (v & 0x3FF)));
                pb_str(b, tmp);
            }
        }
    }
    pb_put(b, "\"", 1);
}

static void pb_number(pbuf *b, double v) {
    char tmp[40];
    if (v != v) {
        pb_str(b, "NaN");
        return;
    }
    if (v == 1.0 / 0.0 || v == -1.0 / 0.0) {
        pb_str(b, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == (double)(int64_t)v && v < 9007199254740992.0 && v > -9007199254740992.0) {
        snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, v);
            if (strtod(tmp, NULL) == v) break;
        }
        /* Python writes an exponent with at least two digits, as C does; a
         * mantissa without a point in fixed notation never occurs here
         * (integral values were handled above) */
    }
    pb_str(b, tmp);
}

static void pb_value(pbuf *b, const cJSON *j, int indent, int depth) {
    if (cJSON_IsNull(j)) pb_str(b, "null");
    else if (cJSON_IsTrue(j)) pb_str(b, "true");
    else if (cJSON_IsFalse(j)) pb_str(b, "false");
    else if (cJSON_IsNumber(j)) pb_number(b, j->valuedouble);
    else if (cJSON_IsString(j)) pb_json_string(b, j->valuestring ? j->valuestring : "");
    else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        int obj = cJSON_IsObject(j);
        if (!j->child) {
            pb_str(b, obj ? "{}" : "[]");
            return;
        }
        pb_str(b, obj ? "{" : "[");
        for (const cJSON *c = j->child; c; c = c->next) {
            pb_newline(b, indent, depth + 1);
            if (obj) {
                pb_json_string(b, c->string ? c->string : "");
                pb_str(b, ": ");
            }
            pb_value(b, c, indent, depth + 1);
            if (c->next) pb_str(b, ",");
        }
        pb_newline(b, indent, depth);
        pb_str(b, obj ? "}" : "]");
    } else
        pb_str(b, "null"); /* raw items do not occur in parsed trees */
}

char *json_print_python(const cJSON *j, int indent) {
    pbuf b = {0};
    pb_value(&b, j, indent, 0);
    if (b.oom || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
