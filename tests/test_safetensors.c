/* test_safetensors.c — safetensors reader validation, writer layout, and
 * byte-identity with files written by MLX (mx.save_safetensors). */
#include "io/safetensors.h"
#include "test.h"

/* the fuzz harness, run here over its seed corpus as a plain program */
#include "fuzz/fuzz_safetensors.c"

#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

static char tmpdir[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* An image: 8-byte length of hdr, hdr, then ndata bytes 0,1,2,... */
static uint8_t *image(const char *hdr, size_t ndata, size_t *len) {
    size_t n = strlen(hdr);
    *len = 8 + n + ndata;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, hdr, n);
    for (size_t i = 0; i < ndata; i++) b[8 + n + i] = (uint8_t)i;
    return b;
}

/* Opening the image must fail with FORMAT and a message containing every needle. */
static void expect_bad(const char *hdr, size_t ndata, const char *n1, const char *n2) {
    size_t len;
    uint8_t *b = image(hdr, ndata, &len);
    st_file *f = (st_file *)1;
    optiq_error e = {0};
    optiq_status st = st_open_memory(b, len, "bad.safetensors", &f, &e);
    CHECKF(st == OPTIQ_ERR_FORMAT, "status %d for header %s", st, hdr);
    CHECK(f == NULL);
    CHECKF(strstr(e.message, "bad.safetensors: ") == e.message, "message does not start with the file: %s", e.message);
    CHECKF(!n1 || strstr(e.message, n1), "'%s' not in: %s", n1, e.message);
    CHECKF(!n2 || strstr(e.message, n2), "'%s' not in: %s", n2, e.message);
    free(b);
}

static int expect_ok(const char *hdr, size_t ndata) {
    size_t len;
    uint8_t *b = image(hdr, ndata, &len);
    st_file *f = NULL;
    optiq_error e = {0};
    optiq_status st = st_open_memory(b, len, "good.safetensors", &f, &e);
    CHECKF(st == OPTIQ_OK, "rejected %s: %s", hdr, e.message);
    int n = f ? (int)st_count(f) : -1;
    st_close(f);
    free(b);
    return n;
}

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Rewrite every tensor and metadata entry of f with the writer. */
static optiq_status rewrite(const st_file *f, st_write_order order, const char *out, optiq_error *e) {
    size_t n = st_count(f);
    const st_tensor **v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = st_at(f, i);
    if (order == ST_ORDER_ADDED) qsort(v, n, sizeof *v, cmp_offset);
    st_writer *w = st_writer_new();
    st_writer_set_order(w, order);
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < n && st == OPTIQ_OK; i++)
        st = st_writer_add(w, v[i]->name, v[i]->dtype, v[i]->ndim, v[i]->shape, v[i]->data, e);
    const char *k, *val;
    for (size_t i = 0; st == OPTIQ_OK && st_metadata_at(f, i, &k, &val); i++) st = st_writer_metadata(w, k, val, e);
    if (st == OPTIQ_OK) st = st_writer_save(w, out, e);
    st_writer_free(w);
    free(v);
    return st;
}

/* MLX 0.32.4 (Linux, CPU) header for the probe tensors below, from
 * mx.save_safetensors(path, a, metadata={"format": "mlx", "z": "a\"b"}). */
static const char MLX_PROBE_HEADER[] =
    "{\"B\":{\"data_offsets\":[0,4],\"dtype\":\"U32\",\"shape\":[1]},\"__metadata__\":{\"format\":\"mlx\""
    ",\"z\":\"a\\\"b\"},\"model.layers.0.weight\":{\"data_offsets\":[4,16],\"dtype\":\"BF16\",\"shape\":["
    "2,3]},\"t0\":{\"data_offsets\":[233,237],\"dtype\":\"F32\",\"shape\":[1]},\"t1\":{\"data_offsets\":["
    "192,200],\"dtype\":\"F32\",\"shape\":[2]},\"t2\":{\"data_offsets\":[152,164],\"dtype\":\"F32\",\"sha"
    "pe\":[3]},\"t3\":{\"data_offsets\":[136,152],\"dtype\":\"F32\",\"shape\":[4]},\"t4\":{\"data_offsets"
    "\":[116,136],\"dtype\":\"F32\",\"shape\":[5]},\"t5\":{\"data_offsets\":[92,116],\"dtype\":\"F32\",\""
    "shape\":[6]},\"t6\":{\"data_offsets\":[164,192],\"dtype\":\"F32\",\"shape\":[7]},\"t7\":{\"data_offs"
    "ets\":[201,233],\"dtype\":\"F32\",\"shape\":[8]},\"t8\":{\"data_offsets\":[56,92],\"dtype\":\"F32\","
    "\"shape\":[9]},\"t9\":{\"data_offsets\":[16,56],\"dtype\":\"F32\",\"shape\":[10]},\"\xc3"
    "\xa9"
    "\\n/"
    "\\u0001\x7f"
    "\":{\"data_offsets\":[200,201],\"dtype\":\"U8\",\"shape\":[1]}}";

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/optiq-test-st-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    optiq_error e = {0};

    /* ---- writer and round trips ---- */
    for (TEST_CASE("round trip: every dtype, scalar, empty tensor, metadata")) {
        static const dtype all[] = {DT_BF16, DT_F16, DT_F32, DT_F64, DT_U8, DT_I8, DT_U16, DT_I16,
                                    DT_U32, DT_I32, DT_U64, DT_I64, DT_BOOL, DT_F8_E4M3, DT_F8_E5M2, DT_F8_E8M0};
        uint8_t data[16][72];
        st_writer *w = st_writer_new();
        for (int d = 0; d < 16; d++) {
            for (int i = 0; i < 72; i++) data[d][i] = (uint8_t)(d * 31 + i * 7);
            char name[32];
            snprintf(name, sizeof name, "layer.%02d.%s", 15 - d, dtype_name(all[d]));
            int64_t shape[2] = {3, (int64_t)(24 / dtype_size(all[d]))};
            CHECK(st_writer_add(w, name, all[d], 2, shape, data[d], &e) == OPTIQ_OK);
        }
        float s = 3.5f;
        CHECK(st_writer_add(w, "scalar", DT_F32, 0, NULL, &s, &e) == OPTIQ_OK);
        int64_t z[2] = {0, 7};
        CHECK(st_writer_add(w, "empty", DT_BF16, 2, z, NULL, &e) == OPTIQ_OK);
        CHECK(st_writer_metadata(w, "format", "mlx", &e) == OPTIQ_OK);
        CHECK(st_writer_metadata(w, "a", "first", &e) == OPTIQ_OK);
        CHECK(st_writer_metadata(w, "a", "second", &e) == OPTIQ_OK); /* replaced */
        CHECK(st_writer_add(w, "scalar", DT_F32, 0, NULL, &s, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(st_writer_add(w, "__metadata__", DT_F32, 0, NULL, &s, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECK(st_writer_add(w, "bad\xff", DT_F32, 0, NULL, &s, &e) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(st_writer_save(w, tmp_path("rt.safetensors"), &e) == OPTIQ_OK, "%s", e.message);
        st_writer_free(w);

        st_file *f = NULL;
        CHECKF(st_open(tmp_path("rt.safetensors"), &f, &e) == OPTIQ_OK, "%s", e.message);
        if (f) {
            CHECK(st_count(f) == 18);
            for (size_t i = 1; i < st_count(f); i++) CHECK(strcmp(st_at(f, i - 1)->name, st_at(f, i)->name) < 0);
            /* name order on disk: each tensor starts where the previous ended */
            uint64_t off = 8 + st_header_length(f);
            for (size_t i = 0; i < st_count(f); i++) {
                CHECK(st_at(f, i)->offset == off);
                off += st_at(f, i)->nbytes;
            }
            CHECK(off == st_file_size(f));
            for (int d = 0; d < 16; d++) {
                char name[32];
                snprintf(name, sizeof name, "layer.%02d.%s", 15 - d, dtype_name(all[d]));
                const st_tensor *t = st_find(f, name);
                CHECKF(t != NULL, "%s missing", name);
                if (!t) continue;
                CHECK(t->dtype == all[d] && t->ndim == 2 && t->shape[0] == 3);
                CHECK(t->nbytes == 72 && memcmp(t->data, data[d], 72) == 0);
            }
            const st_tensor *t = st_find(f, "scalar");
            float got = 0;
            CHECK(t && t->ndim == 0 && t->nelem == 1 && t->nbytes == 4);
            if (t) memcpy(&got, t->data, 4);
            CHECK(got == 3.5f);
            t = st_find(f, "empty");
            CHECK(t && t->nelem == 0 && t->nbytes == 0 && t->shape[1] == 7);
            CHECK(st_find(f, "nope") == NULL);
            CHECK(st_metadata_count(f) == 2);
            CHECK(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "mlx") == 0);
            CHECK(st_metadata(f, "a") && strcmp(st_metadata(f, "a"), "second") == 0);
            CHECK(!st_metadata_is_null(f));
        }
        st_close(f);
        /* nothing left behind but the file itself */
        DIR *d = opendir(tmpdir);
        int others = 0;
        for (struct dirent *de; d && (de = readdir(d));)
            if (strstr(de->d_name, ".tmp-")) others++;
        if (d) closedir(d);
        CHECK(others == 0);
    }

    for (TEST_CASE("writer header matches MLX byte for byte (probe from mx.save_safetensors)")) {
        /* tensors added in the order MLX laid them out (its hash order) */
        static const char *order[] = {"B", "model.layers.0.weight", "t9", "t8", "t5", "t4", "t3", "t2", "t6",
                                      "t1", "\xc3\xa9\n/\x01\x7f", "t7", "t0"};
        float tv[10][10];
        uint16_t bf[6] = {0};
        uint32_t one = 1;
        uint8_t u8 = 1;
        st_writer *w = st_writer_new();
        st_writer_set_order(w, ST_ORDER_ADDED);
        for (int i = 0; i < 13; i++) {
            const char *n = order[i];
            if (n[0] == 't') {
                int k = n[1] - '0';
                for (int j = 0; j <= k; j++) tv[k][j] = (float)j;
                int64_t sh = k + 1;
                CHECK(st_writer_add(w, n, DT_F32, 1, &sh, tv[k], &e) == OPTIQ_OK);
            } else if (n[0] == 'B') {
                int64_t sh = 1;
                CHECK(st_writer_add(w, n, DT_U32, 1, &sh, &one, &e) == OPTIQ_OK);
            } else if (n[0] == 'm') {
                int64_t sh[2] = {2, 3};
                CHECK(st_writer_add(w, n, DT_BF16, 2, sh, bf, &e) == OPTIQ_OK);
            } else {
                int64_t sh = 1;
                CHECK(st_writer_add(w, n, DT_U8, 1, &sh, &u8, &e) == OPTIQ_OK);
            }
        }
        CHECK(st_writer_metadata(w, "z", "a\"b", &e) == OPTIQ_OK);
        CHECK(st_writer_metadata(w, "format", "mlx", &e) == OPTIQ_OK);
        char *h = NULL;
        size_t hl = 0;
        CHECK(st_writer_header(w, &h, &hl, &e) == OPTIQ_OK);
        CHECKF(h && hl == sizeof MLX_PROBE_HEADER - 1 && strcmp(h, MLX_PROBE_HEADER) == 0, "got %s", h ? h : "");
        CHECK(hl == 817); /* the MLX file was 1062 bytes: 8 + 817 header ... */
        free(h);
        CHECK(st_writer_save(w, tmp_path("probe.safetensors"), &e) == OPTIQ_OK);
        size_t n = 0;
        uint8_t *b = read_all(tmp_path("probe.safetensors"), &n);
        CHECK(b && n == 8 + 817 + 237); /* ... + 237 data bytes */
        free(b);
        st_writer_free(w);
    }

    for (TEST_CASE("writer without metadata writes \"__metadata__\":null like MLX")) {
        st_writer *w = st_writer_new();
        float s = 3.0f;
        st_writer_add(w, "s", DT_F32, 0, NULL, &s, &e);
        char *h = NULL;
        CHECK(st_writer_header(w, &h, NULL, &e) == OPTIQ_OK);
        CHECKF(h && strcmp(h, "{\"__metadata__\":null,\"s\":{\"data_offsets\":[0,4],\"dtype\":\"F32\",\"shape\":[]}}") == 0,
               "got %s", h ? h : "");
        free(h);
        CHECK(st_writer_save(w, tmp_path("null.safetensors"), &e) == OPTIQ_OK);
        st_writer_free(w);
        st_file *f = NULL;
        CHECKF(st_open(tmp_path("null.safetensors"), &f, &e) == OPTIQ_OK, "%s", e.message);
        CHECK(f && st_metadata_is_null(f) && st_metadata_count(f) == 0);
        st_close(f);
    }

    for (TEST_CASE("unaligned tensor data is readable")) {
        st_writer *w = st_writer_new();
        uint8_t two[2] = {7, 8};
        float v[5] = {1.5f, -2.25f, 3.0f, 1e-3f, -7.0f};
        int64_t s2 = 2, s5 = 5;
        st_writer_add(w, "a", DT_U8, 1, &s2, two, &e); /* b then starts at file byte 8 + 127 + 2 */
        st_writer_add(w, "b", DT_F32, 1, &s5, v, &e);
        CHECK(st_writer_save(w, tmp_path("unaligned.safetensors"), &e) == OPTIQ_OK);
        st_writer_free(w);
        st_file *f = NULL;
        CHECK(st_open(tmp_path("unaligned.safetensors"), &f, &e) == OPTIQ_OK);
        const st_tensor *t = f ? st_find(f, "b") : NULL;
        CHECK(t != NULL);
        if (t) {
            CHECKF(((uintptr_t)t->data & 3) != 0, "data happens to be aligned (offset %llu)",
                   (unsigned long long)t->offset);
            for (int i = 0; i < 5; i++) CHECK(load_as_f32(t->data, DT_F32, (size_t)i) == v[i]);
        }
        st_close(f);
    }

    for (TEST_CASE("MLX-written fixtures: rewrite is byte-identical, name order keeps header and data")) {
        DIR *d = opendir(test_path("tests/fixtures/quant"));
        int files = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
            size_t l = strlen(de->d_name);
            if (l < 12 || strcmp(de->d_name + l - 12, ".safetensors") != 0) continue;
            char src[1024];
            snprintf(src, sizeof src, "%s/%s", test_path("tests/fixtures/quant"), de->d_name);
            st_file *f = NULL;
            if (st_open(src, &f, &e) != OPTIQ_OK) {
                CHECKF(0, "%s", e.message);
                continue;
            }
            files++;
            CHECKF(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "mlx") == 0, "%s: no format=mlx",
                   de->d_name);
            /* same tensors, same metadata, laid out in the file's own order */
            CHECKF(rewrite(f, ST_ORDER_ADDED, tmp_path("same.safetensors"), &e) == OPTIQ_OK, "%s", e.message);
            size_t na, nb;
            uint8_t *a = read_all(src, &na), *b = read_all(tmp_path("same.safetensors"), &nb);
            CHECKF(a && b && na == nb && memcmp(a, b, na) == 0, "%s: rewrite differs (%zu vs %zu bytes)", de->d_name,
                   na, nb);
            free(a), free(b);
            /* name order: a different file, same header semantics and data */
            CHECK(rewrite(f, ST_ORDER_NAME, tmp_path("sorted.safetensors"), &e) == OPTIQ_OK);
            st_file *g = NULL;
            CHECK(st_open(tmp_path("sorted.safetensors"), &g, &e) == OPTIQ_OK);
            CHECK(g && st_count(g) == st_count(f) && st_metadata_count(g) == st_metadata_count(f));
            for (size_t i = 0; g && i < st_count(f); i++) {
                const st_tensor *x = st_at(f, i), *y = st_at(g, i);
                CHECKF(strcmp(x->name, y->name) == 0 && x->dtype == y->dtype && x->ndim == y->ndim &&
                           memcmp(x->shape, y->shape, sizeof x->shape) == 0 && x->nbytes == y->nbytes &&
                           memcmp(x->data, y->data, x->nbytes) == 0,
                       "%s: tensor %s differs after a name-order rewrite", de->d_name, x->name);
            }
            st_close(g);
            st_close(f);
        }
        if (d) closedir(d);
        printf("     (%d MLX fixture files)\n", files);
        CHECKF(files > 0, "no fixtures under tests/fixtures/quant");
    }

    for (TEST_CASE("read onto huge pages (OPTIQ_MMAP=0) gives the same tensors as mmap (OPTIQ_MMAP=1)")) {
        char src[1024];
        snprintf(src, sizeof src, "%s", test_path("tests/fixtures/models/qwen35-dense-mixed/model.safetensors"));
        st_file *f = NULL, *g = NULL;
        setenv("OPTIQ_MMAP", "1", 1);
        CHECKF(st_open(src, &f, &e) == OPTIQ_OK, "%s", e.message);
        setenv("OPTIQ_MMAP", "0", 1);
        CHECKF(st_open(src, &g, &e) == OPTIQ_OK, "%s", e.message);
        unsetenv("OPTIQ_MMAP");
        CHECK(f && g && st_count(f) == st_count(g) && st_count(f) > 0);
        for (size_t i = 0; f && g && i < st_count(f); i++) {
            const st_tensor *x = st_at(f, i), *y = st_at(g, i);
            CHECKF(strcmp(x->name, y->name) == 0 && x->nbytes == y->nbytes && x->data != y->data &&
                       memcmp(x->data, y->data, x->nbytes) == 0,
                   "tensor %s differs", x->name);
        }
        st_close(f);
        st_close(g);
    }

    /* ---- hostile files ---- */
    for (TEST_CASE("empty file")) {
        write_file(tmp_path("empty.safetensors"), "", 0);
        st_file *f = NULL;
        CHECK(st_open(tmp_path("empty.safetensors"), &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "empty.safetensors: file is empty"), "%s", e.message);
    }
    for (TEST_CASE("file shorter than the length prefix")) {
        write_file(tmp_path("short.safetensors"), "\x10\0\0", 3);
        st_file *f = NULL;
        CHECK(st_open(tmp_path("short.safetensors"), &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "short.safetensors: file is 3 bytes, too short"), "%s", e.message);
    }
    for (TEST_CASE("missing file and folder are I/O errors")) {
        st_file *f = NULL;
        CHECK(st_open(tmp_path("nope.safetensors"), &f, &e) == OPTIQ_ERR_IO);
        CHECKF(strstr(e.message, "nope.safetensors: cannot open"), "%s", e.message);
        CHECK(st_open(tmpdir, &f, &e) == OPTIQ_ERR_IO);
        CHECKF(strstr(e.message, "not a regular file"), "%s", e.message);
    }
    for (TEST_CASE("truncated file")) {
        st_writer *w = st_writer_new();
        float v[64] = {0};
        int64_t s = 64;
        st_writer_add(w, "x", DT_F32, 1, &s, v, &e);
        st_writer_save(w, tmp_path("full.safetensors"), &e);
        st_writer_free(w);
        size_t n;
        uint8_t *b = read_all(tmp_path("full.safetensors"), &n);
        write_file(tmp_path("trunc.safetensors"), b, n - 10);
        free(b);
        st_file *f = NULL;
        CHECK(st_open(tmp_path("trunc.safetensors"), &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "trunc.safetensors: tensor 'x': data_offsets [0, 256]") &&
                   strstr(e.message, "past the end of the file"),
               "%s", e.message);
        CHECK(f == NULL);
    }
    for (TEST_CASE("header length past the end of the file")) {
        uint8_t b[40] = {200};
        st_file *f = NULL;
        CHECK(st_open_memory(b, sizeof b, "h.safetensors", &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "h.safetensors: header length 200 runs past the end of the file (40 bytes"), "%s",
               e.message);
    }
    for (TEST_CASE("header length huge or zero")) {
        uint8_t b[16];
        memset(b, 0xff, sizeof b);
        st_file *f = NULL;
        CHECK(st_open_memory(b, sizeof b, "h.safetensors", &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "h.safetensors: header length 18446744073709551615 out of range"), "%s", e.message);
        uint8_t c[16] = {0x00, 0xe1, 0xf5, 0x05}; /* 100,000,000: one past the limit */
        CHECK(st_open_memory(c, sizeof c, "h.safetensors", &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "header length 100000000 out of range"), "%s", e.message);
        memset(c, 0, sizeof c);
        CHECK(st_open_memory(c, sizeof c, "h.safetensors", &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, "header length 0 out of range"), "%s", e.message);
    }
    for (TEST_CASE("header not JSON")) {
        expect_bad("{\"a\": {\"dtype\": \"F32\"", 0, "header is not valid JSON", NULL);
        expect_bad("hello", 0, "header is not valid JSON", NULL);
        expect_bad("{} x", 0, "stray bytes after the JSON", NULL);
    }
    for (TEST_CASE("header JSON not an object")) {
        expect_bad("[1, 2]", 0, "header JSON is an array, expected an object", NULL);
        expect_bad("\"x\"", 0, "header JSON is a string, expected an object", NULL);
    }
    for (TEST_CASE("tensor entry malformed")) {
        expect_bad("{\"w\": 3}", 0, "tensor 'w': entry is a number, expected an object", NULL);
        expect_bad("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor 'w': dtype is missing", NULL);
        expect_bad("{\"w\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                   "tensor 'w': dtype is a number", NULL);
    }
    for (TEST_CASE("unknown dtype")) {
        expect_bad("{\"w\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                   "tensor 'w': unknown dtype \"F33\"", "expected one of BF16");
        expect_bad("{\"w\": {\"dtype\": \"C64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
                   "unknown dtype \"C64\"", NULL);
    }
    for (TEST_CASE("shape / size mismatch")) {
        expect_bad("{\"x.weight\": {\"dtype\": \"BF16\", \"shape\": [3, 4], \"data_offsets\": [0, 100]}}", 100,
                   "bad.safetensors: tensor 'x.weight': data_offsets [0, 100] hold 100 bytes but shape [3, 4] of BF16 "
                   "needs 24",
                   NULL);
    }
    for (TEST_CASE("offsets outside the file")) {
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [24], \"data_offsets\": [0, 24]}}", 10,
                   "tensor 'w': data_offsets [0, 24] end at file byte", "past the end of the file");
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [9007199254740000, "
                   "9007199254740004]}}",
                   10, "tensor 'w'", "past the end of the file");
    }
    for (TEST_CASE("overlapping tensors")) {
        expect_bad("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
                   " \"b\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [4, 12]}}",
                   12, "tensors 'a' (data_offsets [0, 8]) and 'b' (data_offsets [4, 12]) overlap", NULL);
        expect_bad("{\"a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [3, 5]},"
                   " \"b\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}}",
                   12, "overlap", NULL);
    }
    for (TEST_CASE("duplicate names")) {
        expect_bad("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                   " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}",
                   8, "tensor 'a' appears twice", NULL);
        expect_bad("{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "__metadata__ appears 2 times", NULL);
    }
    for (TEST_CASE("negative or fractional dimensions")) {
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [-1, 4], \"data_offsets\": [0, 4]}}", 4,
                   "tensor 'w': shape [-1,4]: dimension 0 is -1, expected a non-negative integer", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [2, 2.5], \"data_offsets\": [0, 5]}}", 5,
                   "dimension 1 is 2.5", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [\"4\"], \"data_offsets\": [0, 4]}}", 4,
                   "dimension 0 is \"4\"", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": 4, \"data_offsets\": [0, 4]}}", 4,
                   "tensor 'w': shape is a number, expected an array", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1,
                   "shape has 9 dimensions, at most 8", NULL);
    }
    for (TEST_CASE("shape overflow")) {
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}", 0,
                   "tensor 'w': shape [4294967296, 4294967296] of U8 overflows 64 bits", NULL);
        expect_bad("{\"w\": {\"dtype\": \"F64\", \"shape\": [4294967296, 536870912], \"data_offsets\": [0, 0]}}", 0,
                   "of F64 overflows 64 bits", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [1e300], \"data_offsets\": [0, 0]}}", 0,
                   "expected a non-negative integer", NULL);
    }
    for (TEST_CASE("data_offsets malformed")) {
        const char *bad[] = {"[0]", "[0, 4, 8]", "\"0,4\"", "[0, 4.5]", "[-4, 0]", "[0, null]", "{}"};
        for (int i = 0; i < 7; i++) {
            char h[200];
            snprintf(h, sizeof h, "{\"w\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": %s}}", bad[i]);
            expect_bad(h, 8, "tensor 'w': data_offsets is", "expected two non-negative integers [begin, end]");
        }
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [4]}}", 8, "data_offsets is missing", NULL);
        expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [5, 1]}}", 8,
                   "data_offsets [5, 1] begin after end", NULL);
    }
    for (TEST_CASE("metadata not strings")) {
        expect_bad("{\"__metadata__\": {\"format\": \"mlx\", \"n\": 1}}", 0,
                   "__metadata__ key 'n' is a number, expected a string", NULL);
        expect_bad("{\"__metadata__\": [\"a\"]}", 0, "__metadata__ is an array, expected an object of strings", NULL);
        expect_bad("{\"__metadata__\": \"mlx\"}", 0, "__metadata__ is a string", NULL);
    }
    for (TEST_CASE("accepted oddities: padding, null metadata, gaps, empty tensors, no tensors")) {
        CHECK(expect_ok("{\"w\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}      ", 4) == 1);
        CHECK(expect_ok("{\"__metadata__\": null, \"w\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
                        4) == 1);
        CHECK(expect_ok("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [8, 12]},"
                        " \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}",
                        12) == 2);
        CHECK(expect_ok("{\"a\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [2, 2]},"
                        " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
                        4) == 2);
        CHECK(expect_ok("{}", 0) == 0);
        CHECK(expect_ok("{\"w\": {\"dtype\": \"F8_E4M3\", \"shape\": [2, 2], \"data_offsets\": [0, 4], \"x\": 1}}", 4) ==
              1);
    }
    for (TEST_CASE("messages name the file given to st_open")) {
        size_t len;
        uint8_t *b = image("{\"w\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, &len);
        write_file(tmp_path("named.safetensors"), b, len);
        free(b);
        st_file *f = NULL;
        CHECK(st_open(tmp_path("named.safetensors"), &f, &e) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(e.message, tmp_path("named.safetensors")) == e.message && strstr(e.message, "tensor 'w'"), "%s",
               e.message);
    }

    for (TEST_CASE("fuzz harness replays its seed corpus")) {
        DIR *d = opendir(test_path("tests/fuzz/corpus_safetensors"));
        int n = 0, valid = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
            if (de->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", test_path("tests/fuzz/corpus_safetensors"), de->d_name);
            size_t len = 0;
            uint8_t *b = read_all(p, &len);
            if (!b) continue;
            LLVMFuzzerTestOneInput(b, len); /* aborts on a broken invariant */
            st_file *f = NULL;
            if (st_open_memory(b, len, de->d_name, &f, &e) == OPTIQ_OK) valid++;
            CHECKF((strncmp(de->d_name, "valid_", 6) == 0 || strncmp(de->d_name, "mlx_", 4) == 0) == (f != NULL),
                   "%s: %s", de->d_name, f ? "accepted" : e.message);
            st_close(f);
            free(b);
            n++;
        }
        if (d) closedir(d);
        printf("     (%d corpus files, %d valid)\n", n, valid);
        CHECK(n >= 10);
    }

    nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
