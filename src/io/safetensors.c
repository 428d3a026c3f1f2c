/*
 * safetensors.c — see safetensors.h for the file layout and the checks.
 *
 * The header is parsed with cJSON. cJSON keeps numbers as doubles, so every
 * integer field is accepted only when the double is integral and at most 2^53
 * (exact in a double); real offsets are bounded by the file size anyway.
 */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull /* exclusive bound, as MLX and the Rust crate */
#define ST_MAX_INT 9007199254740992.0 /* 2^53 */

struct st_file {
    char *label;            /* path or caller's label */
    const uint8_t *base;    /* whole file */
    size_t size;
    int mapped;             /* base came from mmap and is ours to unmap */
    size_t map_len;         /* length of that mapping */
    uint64_t header_len;    /* N */
    st_tensor *tensors;     /* sorted by name */
    size_t n;
    char **meta_key, **meta_val; /* sorted by key */
    size_t n_meta;
    int meta_null;          /* "__metadata__": null (MLX writes it when there is no metadata) */
    char *strings;          /* one block holding every name, key and value */
};

/* ---- small helpers ------------------------------------------------------ */

static const char *jtype(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

/* A JSON number that is an exact non-negative integer (<= 2^53). */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT)) return 0;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0;
    *out = u;
    return 1;
}

/* "[3, 4]" into buf (truncated with "..." when long). */
static const char *fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    buf[k++] = '[';
    for (int i = 0; i < ndim && k + 24 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Short rendering of an arbitrary JSON value for messages. */
static const char *fmt_json(char *buf, size_t cap, const cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    if (!s) {
        snprintf(buf, cap, "%s", jtype(j));
        return buf;
    }
    if (strlen(s) < cap) snprintf(buf, cap, "%s", s);
    else snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
    cJSON_free(s);
    return buf;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* ---- header parsing ----------------------------------------------------- */

typedef struct span { uint64_t begin, end; const char *name; } span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static optiq_status parse_tensor(st_file *f, const cJSON *item, st_tensor *t, uint64_t data_start,
                                 optiq_error *err) {
    const char *L = f->label, *name = item->string;
    char b1[128], b2[128];
    if (!cJSON_IsObject(item))
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: tensor '%s': entry is %s, expected an object with dtype, shape and data_offsets", L,
                       name, jtype(item));

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(jd))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s': dtype is %s, expected a string such as \"BF16\"", L,
                       name, jd ? jtype(jd) : "missing");
    t->dtype = dtype_from_name(jd->valuestring, strlen(jd->valuestring));
    if (t->dtype == DT_INVALID)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: tensor '%s': unknown dtype \"%.40s\" (expected one of BF16, F16, F32, F64, U8, I8, "
                       "U16, I16, U32, I32, U64, I64, BOOL, F8_E4M3, F8_E5M2, F8_E8M0)",
                       L, name, jd->valuestring);

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(js))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s': shape is %s, expected an array of non-negative integers",
                       L, name, js ? jtype(js) : "missing");
    int ndim = cJSON_GetArraySize(js);
    if (ndim > ST_MAX_DIMS)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s': shape has %d dimensions, at most %d are supported", L,
                       name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t nelem = 1;
    int overflow = 0, d = 0;
    for (const cJSON *e = js->child; e; e = e->next, d++) {
        uint64_t v;
        if (!json_uint(e, &v))
            return err_set(err, OPTIQ_ERR_FORMAT,
                           "%s: tensor '%s': shape %s: dimension %d is %s, expected a non-negative integer", L, name,
                           fmt_json(b1, sizeof b1, js), d, fmt_json(b2, sizeof b2, e));
        t->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(nelem, v, &nelem)) overflow = 1;
    }
    uint64_t isz = dtype_size(t->dtype), nbytes = 0;
    if (overflow || __builtin_mul_overflow(nelem, isz, &nbytes))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows 64 bits", L, name,
                       fmt_shape(b1, sizeof b1, ndim, t->shape), dtype_name(t->dtype));
    t->nelem = nelem;
    t->nbytes = nbytes;

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    uint64_t begin = 0, end = 0;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &begin) ||
        !json_uint(jo->child->next, &end))
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets is %s, expected two non-negative integers [begin, end]", L, name,
                       jo ? fmt_json(b1, sizeof b1, jo) : "missing");
    if (begin > end)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] begin after end", L, name,
                       (unsigned long long)begin, (unsigned long long)end);
    if (end - begin != nbytes)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu", L,
                       name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin),
                       fmt_shape(b1, sizeof b1, ndim, t->shape), dtype_name(t->dtype), (unsigned long long)nbytes);
    if (end > (uint64_t)f->size - data_start)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] end at file byte %llu, past the end of the file "
                       "(%llu bytes)",
                       L, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(data_start + end), (unsigned long long)f->size);
    t->offset = data_start + begin;
    t->data = f->base + t->offset;
    return OPTIQ_OK;
}

static optiq_status parse_metadata(st_file *f, const cJSON *m, char **pool, optiq_error *err) {
    if (cJSON_IsNull(m)) {
        f->meta_null = 1;
        return OPTIQ_OK;
    }
    if (!cJSON_IsObject(m))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: __metadata__ is %s, expected an object of strings", f->label,
                       jtype(m));
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta_key = calloc(n ? n : 1, sizeof *f->meta_key);
    f->meta_val = calloc(n ? n : 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val) return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", f->label);
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: __metadata__ key '%s' is %s, expected a string", f->label,
                           e->string, jtype(e));
        for (size_t i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_key[i], e->string) == 0)
                return err_set(err, OPTIQ_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", f->label,
                               e->string);
        size_t kl = strlen(e->string) + 1, vl = strlen(e->valuestring) + 1;
        f->meta_key[f->n_meta] = memcpy(*pool, e->string, kl);
        *pool += kl;
        f->meta_val[f->n_meta] = memcpy(*pool, e->valuestring, vl);
        *pool += vl;
        f->n_meta++;
    }
    /* sorted by key for lookups (few entries: insertion sort) */
    for (size_t i = 1; i < f->n_meta; i++)
        for (size_t j = i; j > 0 && strcmp(f->meta_key[j - 1], f->meta_key[j]) > 0; j--) {
            char *k = f->meta_key[j], *v = f->meta_val[j];
            f->meta_key[j] = f->meta_key[j - 1], f->meta_val[j] = f->meta_val[j - 1];
            f->meta_key[j - 1] = k, f->meta_val[j - 1] = v;
        }
    return OPTIQ_OK;
}

/* Bytes needed to copy every name / metadata string of the header. */
static size_t pool_size(const cJSON *root) {
    size_t s = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        s += strlen(e->string) + 1;
        if (strcmp(e->string, "__metadata__") == 0 && cJSON_IsObject(e))
            for (const cJSON *m = e->child; m; m = m->next)
                s += strlen(m->string) + 1 + (cJSON_IsString(m) ? strlen(m->valuestring) + 1 : 0);
    }
    return s;
}

static optiq_status check_layout(st_file *f, optiq_error *err) {
    /* duplicates: tensors are sorted by name, so equal names are adjacent */
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->label,
                           f->tensors[i].name);
    if (f->n < 2) return OPTIQ_OK;
    span *s = malloc(f->n * sizeof *s);
    if (!s) return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", f->label);
    uint64_t ds = 8 + f->header_len;
    size_t m = 0;
    for (size_t i = 0; i < f->n; i++)
        if (f->tensors[i].nbytes) /* empty tensors occupy no bytes and cannot overlap */
            s[m++] = (span){f->tensors[i].offset - ds, f->tensors[i].offset - ds + f->tensors[i].nbytes,
                            f->tensors[i].name};
    qsort(s, m, sizeof *s, cmp_span);
    optiq_status st = OPTIQ_OK;
    for (size_t i = 1; i < m && st == OPTIQ_OK; i++)
        if (s[i].begin < s[i - 1].end)
            st = err_set(err, OPTIQ_ERR_FORMAT,
                         "%s: tensors '%s' (data_offsets [%llu, %llu]) and '%s' (data_offsets [%llu, %llu]) overlap",
                         f->label, s[i - 1].name, (unsigned long long)s[i - 1].begin,
                         (unsigned long long)s[i - 1].end, s[i].name, (unsigned long long)s[i].begin,
                         (unsigned long long)s[i].end);
    free(s);
    return st;
}

static optiq_status parse_header(st_file *f, optiq_error *err) {
    const char *L = f->label;
    if (f->size == 0)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: file is empty, expected an 8-byte header length and a JSON header",
                       L);
    if (f->size < 8)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", L,
                       f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->base[i];
    f->header_len = n;
    if (n == 0 || n >= ST_MAX_HEADER)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: header length %llu out of range (expected 1 to %llu bytes)", L,
                       (unsigned long long)n, ST_MAX_HEADER - 1);
    if (n > (uint64_t)f->size - 8)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes, header needs %llu)", L,
                       (unsigned long long)n, f->size, (unsigned long long)(8 + n));

    const char *hdr = (const char *)f->base + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: header is not valid JSON (parse error at header byte %zu of %llu)",
                       L, at, (unsigned long long)n);
    }
    /* Writers may pad the header with spaces (the Rust crate pads to 8 bytes). */
    for (const char *p = end; p < hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: header has stray bytes after the JSON object (at header byte %zu)",
                           L, (size_t)(p - hdr));
        }
    optiq_status st = OPTIQ_OK;
    if (!cJSON_IsObject(root)) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: header JSON is %s, expected an object", L, jtype(root));
        goto done;
    }

    size_t count = 0, nmeta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) nmeta++;
        else count++;
    }
    if (nmeta > 1) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: __metadata__ appears %zu times in the header", L, nmeta);
        goto done;
    }
    f->strings = malloc(pool_size(root) + 1);
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    if (!f->strings || !f->tensors) {
        st = err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory for %zu tensors", L, count);
        goto done;
    }
    char *pool = f->strings;
    uint64_t data_start = 8 + n;
    for (const cJSON *e = root->child; e && st == OPTIQ_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            st = parse_metadata(f, e, &pool, err);
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        st = parse_tensor(f, e, t, data_start, err);
        if (st != OPTIQ_OK) break;
        size_t l = strlen(e->string) + 1;
        t->name = memcpy(pool, e->string, l);
        pool += l;
        f->n++;
    }
    if (st != OPTIQ_OK) goto done;
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_tensor_name);
    st = check_layout(f, err);
done:
    cJSON_Delete(root);
    return st;
}

/* ---- opening ------------------------------------------------------------ */

static optiq_status open_common(st_file *f, st_file **out, optiq_error *err) {
    optiq_status st = parse_header(f, err);
    if (st != OPTIQ_OK) {
        st_close(f);
        return st;
    }
    *out = f;
    return OPTIQ_OK;
}

optiq_status st_open_memory(const void *buf, size_t len, const char *label, st_file **out, optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "st_open_memory: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && len) return err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: NULL buffer", label);
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", label);
    }
    f->base = buf;
    f->size = len;
    return open_common(f, out, err);
}

/* ---- loading ------------------------------------------------------------ */

#define HUGE_MIN ((size_t)32 << 20) /* files from this size are candidates for huge pages */
#define HUGE_PAGE ((size_t)2 << 20)

/* MemAvailable of /proc/meminfo in bytes, 0 when unknown. */
static size_t mem_available(void) {
    FILE *fp = fopen("/proc/meminfo", "r");
    if (!fp) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(fp);
    return (size_t)kb * 1024;
}

/* A weight file read into anonymous memory on transparent huge pages, or NULL
 * to fall back to mmap of the file. Decoding streams every weight byte once
 * per token; with 4 KB page-cache pages the hardware prefetchers stop at each
 * page boundary and the TLB misses add up (measured: decode about 10% faster
 * on huge pages). Used for files of at least 32 MB that take at most half of
 * MemAvailable (larger ones stay mapped, so the kernel can drop clean pages
 * under memory pressure). OPTIQ_MMAP=1 always maps, OPTIQ_MMAP=0 always reads. */
static void *read_huge(int fd, size_t size, size_t *len) {
    const char *env = getenv("OPTIQ_MMAP");
    int force = env && env[0] == '0' && !env[1];
    if (env && env[0] == '1' && !env[1]) return NULL;
    if (!force && (size < HUGE_MIN || size > mem_available() / 2)) return NULL;
    size_t n = (size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, n, MADV_HUGEPAGE);
    for (size_t off = 0; off < size;) {
        ssize_t r = pread(fd, p + off, size - off > ((size_t)1 << 30) ? (size_t)1 << 30 : size - off, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { /* error or the file shrank: leave it to mmap and the checks */
            munmap(p, n);
            return NULL;
        }
        off += (size_t)r;
    }
    mprotect(p, n, PROT_READ);
    *len = n;
    return p;
}

optiq_status st_open(const char *path, st_file **out, optiq_error *err) {
    if (!out || !path) return err_set(err, OPTIQ_ERR_INVALID_ARG, "st_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(err, OPTIQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return err_set(err, OPTIQ_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(err, OPTIQ_ERR_IO, "%s: not a regular file", path);
    }
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(path))) {
        free(f);
        close(fd);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        void *p = read_huge(fd, f->size, &f->map_len);
        if (!p) {
            f->map_len = f->size;
            p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        }
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f->label);
            free(f);
            return err_set(err, OPTIQ_ERR_IO, "%s: cannot map %llu bytes: %s", path, (unsigned long long)sb.st_size,
                           strerror(e));
        }
        f->base = p;
        f->mapped = 1;
    }
    close(fd);
    return open_common(f, out, err);
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->mapped) munmap((void *)f->base, f->map_len);
    free(f->tensors);
    free(f->meta_key);
    free(f->meta_val);
    free(f->strings);
    free(f->label);
    free(f);
}

/* ---- queries ------------------------------------------------------------ */

const char *st_path(const st_file *f) { return f->label; }
size_t st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, size_t i) { return i < f->n ? &f->tensors[i] : NULL; }
uint64_t st_file_size(const st_file *f) { return f->size; }
uint64_t st_header_length(const st_file *f) { return f->header_len; }
size_t st_metadata_count(const st_file *f) { return f->n_meta; }
int st_metadata_is_null(const st_file *f) { return f->meta_null; }

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_key[i], key) == 0) return f->meta_val[i];
    return NULL;
}

int st_metadata_at(const st_file *f, size_t i, const char **key, const char **value) {
    if (i >= f->n_meta) return 0;
    if (key) *key = f->meta_key[i];
    if (value) *value = f->meta_val[i];
    return 1;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct wt { char *name; dtype dt; int ndim; int64_t shape[ST_MAX_DIMS]; uint64_t nbytes; const void *data; } wt;
typedef struct wmeta { char *key, *val; } wmeta;

struct st_writer {
    wt *t;
    size_t n, cap;
    wmeta *m;
    size_t nm, capm;
    st_write_order order;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->nm; i++) free(w->m[i].key), free(w->m[i].val);
    free(w->t);
    free(w->m);
    free(w);
}

void st_writer_set_order(st_writer *w, st_write_order order) { w->order = order; }

/* nlohmann::json throws on invalid UTF-8 when dumping; refuse it up front. */
static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n;
        uint32_t cp;
        if (c < 0x80) { p++; continue; }
        if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07;
        else return 0;
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += n + 1;
    }
    return 1;
}

optiq_status st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                           const void *data, optiq_error *err) {
    if (!w || !name) return err_set(err, OPTIQ_ERR_INVALID_ARG, "st_writer_add: NULL argument");
    if (dtype_size(dt) == 0) return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor '%s': invalid dtype", name);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim && !shape))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor '%s': %d dimensions (expected 0 to %d)", name, ndim,
                       ST_MAX_DIMS);
    if (strcmp(name, "__metadata__") == 0 || !utf8_valid(name))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor name '%s' is reserved or not valid UTF-8", name);
    uint64_t nelem = 1, nbytes;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(nelem, (uint64_t)shape[i], &nelem))
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor '%s': dimension %d is %lld", name, i,
                           (long long)shape[i]);
    if (__builtin_mul_overflow(nelem, (uint64_t)dtype_size(dt), &nbytes) || (nbytes && !data))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor '%s': size overflows or data is NULL", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 16;
        wt *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory adding tensor '%s'", name);
        w->t = nt, w->cap = nc;
    }
    wt *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory adding tensor '%s'", name);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->data = data;
    w->n++;
    return OPTIQ_OK;
}

optiq_status st_writer_metadata(st_writer *w, const char *key, const char *value, optiq_error *err) {
    if (!w || !key || !value) return err_set(err, OPTIQ_ERR_INVALID_ARG, "st_writer_metadata: NULL argument");
    if (!utf8_valid(key) || !utf8_valid(value))
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "metadata '%s': not valid UTF-8", key);
    for (size_t i = 0; i < w->nm; i++)
        if (strcmp(w->m[i].key, key) == 0) {
            char *v = strdup(value);
            if (!v) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            free(w->m[i].val);
            w->m[i].val = v;
            return OPTIQ_OK;
        }
    if (w->nm == w->capm) {
        size_t nc = w->capm ? 2 * w->capm : 4;
        wmeta *nm = realloc(w->m, nc * sizeof *nm);
        if (!nm) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        w->m = nm, w->capm = nc;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k), free(v);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    w->m[w->nm++] = (wmeta){k, v};
    return OPTIQ_OK;
}

/* Growable byte buffer for the header. */
typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np, b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    sb_put(b, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}

/* A JSON string exactly as nlohmann::json::dump() writes it (ensure_ascii off):
 * UTF-8 passes through, the short escapes for " \ \b \f \n \r \t, other
 * control characters as \u00xx with lowercase hex; DEL and '/' unescaped. */
static void sb_jstr(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) sb_put(b, e, (size_t)snprintf(e, sizeof e, "\\u%04x", *p));
            else sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

typedef struct key_ref { const char *key; size_t idx; int is_meta; } key_ref;
static int cmp_key_ref(const void *a, const void *b) { return strcmp(((const key_ref *)a)->key, ((const key_ref *)b)->key); }
static int cmp_meta(const void *a, const void *b) { return strcmp(((const wmeta *)a)->key, ((const wmeta *)b)->key); }

/* Builds the header; offs[i] receives the data offset of tensor i (add order). */
static int build_header(const st_writer *w, sbuf *b, uint64_t *offs, size_t *data_order) {
    /* data layout */
    for (size_t i = 0; i < w->n; i++) data_order[i] = i;
    if (w->order == ST_ORDER_NAME) {
        key_ref *k = malloc((w->n ? w->n : 1) * sizeof *k);
        if (!k) return 0;
        for (size_t i = 0; i < w->n; i++) k[i] = (key_ref){w->t[i].name, i, 0};
        qsort(k, w->n, sizeof *k, cmp_key_ref);
        for (size_t i = 0; i < w->n; i++) data_order[i] = k[i].idx;
        free(k);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        offs[data_order[i]] = off;
        off += w->t[data_order[i]].nbytes;
    }
    /* header: every key of the top-level object sorted bytewise (std::map order) */
    key_ref *k = malloc((w->n + 1) * sizeof *k);
    wmeta *m = malloc((w->nm ? w->nm : 1) * sizeof *m);
    if (!k || !m) {
        free(k), free(m);
        return 0;
    }
    for (size_t i = 0; i < w->n; i++) k[i] = (key_ref){w->t[i].name, i, 0};
    k[w->n] = (key_ref){"__metadata__", 0, 1};
    qsort(k, w->n + 1, sizeof *k, cmp_key_ref);
    if (w->nm) memcpy(m, w->m, w->nm * sizeof *m);
    qsort(m, w->nm, sizeof *m, cmp_meta);
    sb_put(b, "{", 1);
    for (size_t i = 0; i <= w->n; i++) {
        if (i) sb_put(b, ",", 1);
        sb_jstr(b, k[i].key);
        sb_put(b, ":", 1);
        if (k[i].is_meta) {
            if (!w->nm) { sb_puts(b, "null"); continue; } /* MLX: an empty json value dumps as null */
            sb_put(b, "{", 1);
            for (size_t j = 0; j < w->nm; j++) {
                if (j) sb_put(b, ",", 1);
                sb_jstr(b, m[j].key);
                sb_put(b, ":", 1);
                sb_jstr(b, m[j].val);
            }
            sb_put(b, "}", 1);
            continue;
        }
        const wt *t = &w->t[k[i].idx];
        sb_puts(b, "{\"data_offsets\":[");
        sb_u64(b, offs[k[i].idx]);
        sb_put(b, ",", 1);
        sb_u64(b, offs[k[i].idx] + t->nbytes);
        sb_puts(b, "],\"dtype\":");
        sb_jstr(b, dtype_name(t->dt));
        sb_puts(b, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_put(b, ",", 1);
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_puts(b, "]}");
    }
    sb_put(b, "}", 1);
    free(k);
    free(m);
    return !b->oom;
}

static int write_all(int fd, const void *p, uint64_t n) {
    const uint8_t *s = p;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t r = write(fd, s, chunk);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        s += r;
        n -= (uint64_t)r;
    }
    return 1;
}

optiq_status st_writer_header(const st_writer *w, char **out, size_t *len, optiq_error *err) {
    size_t n = w->n ? w->n : 1;
    uint64_t *offs = malloc(n * sizeof *offs);
    size_t *order = malloc(n * sizeof *order);
    sbuf b = {0};
    int ok = offs && order && build_header(w, &b, offs, order);
    free(offs);
    free(order);
    if (!ok) {
        free(b.p);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory building a safetensors header");
    }
    *out = b.p;
    if (len) *len = b.n;
    return OPTIQ_OK;
}

optiq_status st_writer_save(const st_writer *w, const char *path, optiq_error *err) {
    if (!w || !path) return err_set(err, OPTIQ_ERR_INVALID_ARG, "st_writer_save: NULL argument");
    size_t n = w->n ? w->n : 1;
    uint64_t *offs = malloc(n * sizeof *offs);
    size_t *order = malloc(n * sizeof *order);
    sbuf b = {0};
    if (!offs || !order || !build_header(w, &b, offs, order)) {
        free(offs), free(order), free(b.p);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    free(offs);

    /* Write next to the target and rename over it, so a reader never sees a
     * half-written file. O_EXCL with a per-process name; mode 0666 & ~umask. */
    static unsigned counter;
    size_t plen = strlen(path) + 64;
    char *tmp = malloc(plen);
    int fd = -1;
    for (int attempt = 0; tmp && attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, plen, "%s.tmp-%ld-%u", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        int e = errno;
        free(tmp), free(order), free(b.p);
        return err_set(err, OPTIQ_ERR_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(e));
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)b.n >> (8 * i));
    int ok = write_all(fd, len8, 8) && write_all(fd, b.p, b.n);
    for (size_t i = 0; ok && i < w->n; i++) ok = write_all(fd, w->t[order[i]].data, w->t[order[i]].nbytes);
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) unlink(tmp);
    free(tmp), free(order), free(b.p);
    if (!ok) return err_set(err, OPTIQ_ERR_IO, "%s: write failed: %s", path, strerror(e));
    return OPTIQ_OK;
}
