/*
 * test_image.c — image decoding against the reference loader's pixels.
 *
 * tests/fixtures/images/expected.json (tools/reference/gen_images.py) lists
 * every fixture with the outcome of mlx-vlm's load_image + np.asarray: (w, h),
 * the SHA-256 of the (h, w, 3) uint8 bytes and a few sample pixels, or
 * "error". Tolerance: none; the digest must match exactly (max abs diff 0).
 * Then: limits (refused before allocation), data: URLs, http URLs, paths.
 *
 * OPTIQ_IMAGE_DUMP=dir writes each decoded image there as <file>.rgb, for
 * comparing a mismatch with the reference pixel by pixel.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "io/image.h"
#include "sha256.h"
#include "test.h"

#define FIX_DIR "tests/fixtures/images/"

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len + 1 : 1);
    size_t got = b ? fread(b, 1, (size_t)(len > 0 ? len : 0), f) : 0;
    fclose(f);
    if (!b || got != (size_t)(len > 0 ? len : 0)) {
        free(b);
        return NULL;
    }
    b[got] = 0;
    *n = got;
    return b;
}

static uint8_t *read_fixture(const char *name, size_t *n) {
    char rel[512];
    snprintf(rel, sizeof rel, FIX_DIR "%s", name);
    return read_all(test_path(rel), n);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static char *b64_encode(const uint8_t *p, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1), *q = o;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *q++ = A[v >> 18 & 63];
        *q++ = A[v >> 12 & 63];
        *q++ = i + 1 < n ? A[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? A[v & 63] : '=';
    }
    *q = 0;
    return o;
}

static void dump(const char *name, const image_u8 *im) {
    const char *dir = getenv("OPTIQ_IMAGE_DUMP");
    if (!dir || !*dir || !im->rgb) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.rgb", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(im->rgb, 1, (size_t)im->w * im->h * 3, f);
    fclose(f);
}

/* ---- fixtures ---- */

static void check_ok(const cJSON *e, const image_u8 *im) {
    int w = jint(e, "w"), h = jint(e, "h");
    CHECKF(im->w == w && im->h == h, "size %dx%d, reference %dx%d", im->w, im->h, w, h);
    if (im->w != w || im->h != h) return;
    const cJSON *px;
    cJSON_ArrayForEach(px, cJSON_GetObjectItemCaseSensitive(e, "pixels")) {
        int x = cJSON_GetArrayItem(px, 0)->valueint, y = cJSON_GetArrayItem(px, 1)->valueint;
        const uint8_t *s = im->rgb + ((size_t)y * w + x) * 3;
        int r = cJSON_GetArrayItem(px, 2)->valueint, g = cJSON_GetArrayItem(px, 3)->valueint,
            b = cJSON_GetArrayItem(px, 4)->valueint;
        CHECKF(s[0] == r && s[1] == g && s[2] == b, "pixel (%d,%d) = %d,%d,%d, reference %d,%d,%d", x, y, s[0], s[1],
               s[2], r, g, b);
    }
    char hex[65];
    sha256_hex(im->rgb, (size_t)w * h * 3, hex);
    CHECKF(strcmp(hex, jstr(e, "sha256")) == 0, "sha256 %s, reference %s", hex, jstr(e, "sha256"));
}

static void test_fixtures(const cJSON *fx, int *n_ok, int *n_err) {
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(fx, "files")) {
        const char *name = jstr(e, "file");
        int want_ok = strcmp(jstr(e, "expect"), "ok") == 0;
        char label[300];
        snprintf(label, sizeof label, "%s (%s)", name, jstr(e, "note"));
        for (TEST_CASE(label)) {
            size_t n = 0;
            uint8_t *buf = read_fixture(name, &n);
            CHECKF(buf != NULL, "cannot read %s", name);
            if (!buf) continue;
            image_u8 im = {1, 1, (uint8_t *)&im};
            optiq_error err = {0};
            optiq_status st = image_decode(buf, n, NULL, &im, &err);
            if (want_ok) {
                CHECKF(st == OPTIQ_OK, "decode failed: %s", err.message);
                if (st == OPTIQ_OK) check_ok(e, &im);
                dump(name, &im);
                (*n_ok)++;
            } else {
                CHECKF(st != OPTIQ_OK, "decoded (%dx%d) a file the reference refuses: %s", im.w, im.h,
                       jstr(e, "reference"));
                CHECKF(err.message[0] != 0 && err.status == st, "no error message");
                CHECKF(im.rgb == NULL && im.w == 0 && im.h == 0, "output not cleared on error");
                printf("     %s -> %s\n", name, err.message);
                (*n_err)++;
            }
            image_free(&im);
            free(buf);
        }
    }
}

/* ---- limits ---- */

static void test_limits(void) {
    static const char *files[] = {"jpeg_q75_420.jpg", "jpeg_q50_prog.jpg", "png_rgb.png", "png_adam7.png",
                                  "webp_lossy.webp", "webp_anim.webp", "gif_photo.gif", "gif_offset_trns.gif",
                                  "bmp_24.bmp", "bmp_8pal.bmp"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char label[200];
        snprintf(label, sizeof label, "limits: %s at, under and over max_pixels / max_bytes", files[i]);
        for (TEST_CASE(label)) {
            size_t n = 0;
            uint8_t *buf = read_fixture(files[i], &n);
            CHECK(buf != NULL);
            if (!buf) continue;
            image_u8 im;
            optiq_error err;
            CHECK(image_decode(buf, n, NULL, &im, &err) == OPTIQ_OK);
            uint64_t px = (uint64_t)im.w * (uint64_t)im.h;
            image_free(&im);
            image_limits lim = image_limits_default();
            lim.max_pixels = px;
            CHECKF(image_decode(buf, n, &lim, &im, &err) == OPTIQ_OK, "at the limit: %s", err.message);
            image_free(&im);
            lim.max_pixels = px - 1;
            optiq_status st = image_decode(buf, n, &lim, &im, &err);
            CHECKF(st == OPTIQ_ERR_INVALID_ARG && im.rgb == NULL, "one pixel over: status %d", (int)st);
            CHECKF(strstr(err.message, "limit is") != NULL, "message: %s", err.message);
            lim = image_limits_default();
            lim.max_bytes = n - 1;
            st = image_decode(buf, n, &lim, &im, &err);
            CHECKF(st == OPTIQ_ERR_INVALID_ARG && im.rgb == NULL, "one byte over: status %d", (int)st);
            lim.max_bytes = n;
            CHECK(image_decode(buf, n, &lim, &im, &err) == OPTIQ_OK);
            image_free(&im);
            free(buf);
        }
    }
    /* Tiny files declaring huge images: refused from the header alone. An
     * allocation for the declared size (30 GB for 100000^2 RGB) would have
     * failed with OPTIQ_ERR_NOMEM, or succeeded lazily and then failed on the
     * missing data with OPTIQ_ERR_FORMAT, not with the limit error. */
    static const char *huge[] = {"bad_png_huge.png", "bad_jpeg_huge.jpg", "bad_gif_huge.gif", "bad_bmp_huge.bmp",
                                 "bad_webp_huge.webp"};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        char label[200];
        snprintf(label, sizeof label, "limits: %s refused from its header", huge[i]);
        for (TEST_CASE(label)) {
            size_t n = 0;
            uint8_t *buf = read_fixture(huge[i], &n);
            CHECK(buf != NULL);
            if (!buf) continue;
            image_u8 im;
            optiq_error err;
            optiq_status st = image_decode(buf, n, NULL, &im, &err);
            CHECKF(st == OPTIQ_ERR_INVALID_ARG, "status %d: %s", (int)st, err.message);
            CHECKF(strstr(err.message, "limit is 178956970") != NULL, "message: %s", err.message);
            free(buf);
        }
    }
    for (TEST_CASE("limits: defaults are 64 MiB and Pillow's 2 * 89478485 pixels")) {
        image_limits l = image_limits_default();
        CHECK(l.max_bytes == 64ull * 1024 * 1024);
        CHECK(l.max_pixels == 178956970ull);
    }
    for (TEST_CASE("decode: NULL and empty arguments")) {
        image_u8 im;
        optiq_error err;
        CHECK(image_decode(NULL, 0, NULL, &im, &err) == OPTIQ_ERR_FORMAT && im.rgb == NULL);
        CHECK(image_decode(NULL, 5, NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(image_decode("x", 1, NULL, NULL, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(image_load(NULL, NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(image_load("", NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        image_free(NULL);
    }
    for (TEST_CASE("decode: unknown signature names the first bytes")) {
        image_u8 im;
        optiq_error err;
        CHECK(image_decode("II*\0abcdefgh", 12, NULL, &im, &err) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(err.message, "49 49 2a 00") != NULL && strstr(err.message, "expected JPEG"), "%s", err.message);
    }
}

/* ---- base64, data: URLs, paths ---- */

static int b64(const char *s, char *out, size_t *n) {
    size_t bad;
    return base64_decode(s, strlen(s), (uint8_t *)out, n, &bad);
}

static void test_sources(const cJSON *fx) {
    for (TEST_CASE("base64: RFC 4648 vectors, whitespace, strictness")) {
        static const char *in[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "Zm9v\r\nYmFy"};
        static const char *want[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "foobar"};
        char out[64];
        size_t n;
        for (int i = 0; i < 8; i++) {
            CHECKF(b64(in[i], out, &n) == 0 && n == strlen(want[i]) && memcmp(out, want[i], n) == 0, "%s", in[i]);
        }
        static const char *bad[] = {"Zg", "Zg=", "Zm9", "Z===", "Zg==Zg==", "Zh==", "Zm9=", "Zm-v", "Zm_v", "Zm9v!",
                                    "=Zm9", "Zg=a"};
        for (int i = 0; i < 12; i++) CHECKF(b64(bad[i], out, &n) != 0, "accepted %s", bad[i]);
    }
    /* every decodable fixture through a data: URL gives the same pixels */
    for (TEST_CASE("data: URL: each format decodes as from bytes")) {
        static const char *names[] = {"jpeg_exif6.jpg", "png_palette_trns.png", "webp_lossless.webp", "gif_anim.gif",
                                      "bmp_4bit.bmp"};
        static const char *types[] = {"jpeg", "png", "webp", "gif", "bmp"};
        for (int i = 0; i < 5; i++) {
            size_t n = 0;
            uint8_t *buf = read_fixture(names[i], &n);
            CHECK(buf != NULL);
            if (!buf) continue;
            char *enc = b64_encode(buf, n);
            size_t ul = strlen(enc) + 64;
            char *url = malloc(ul);
            snprintf(url, ul, "data:image/%s;base64,%s", types[i], enc);
            image_u8 a, b;
            optiq_error err;
            CHECKF(image_load(url, NULL, &a, &err) == OPTIQ_OK, "%s: %s", names[i], err.message);
            CHECK(image_decode(buf, n, NULL, &b, &err) == OPTIQ_OK);
            CHECK(a.w == b.w && a.h == b.h && a.rgb && b.rgb && memcmp(a.rgb, b.rgb, (size_t)a.w * a.h * 3) == 0);
            /* the media type is not trusted: a PNG labelled jpeg still decodes (as in the reference) */
            snprintf(url, ul, "data:image/x-anything;base64,%s", enc);
            image_u8 c;
            CHECK(image_load(url, NULL, &c, &err) == OPTIQ_OK && c.w == b.w);
            image_free(&a);
            image_free(&b);
            image_free(&c);
            free(url);
            free(enc);
            free(buf);
        }
    }
    for (TEST_CASE("data: URL: invalid base64, wrong prefix, no comma, bad image, limit")) {
        image_u8 im;
        optiq_error err;
        CHECK(image_load("data:image/png;base64,iVBO@@@@", NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(err.message, "invalid base64 character '@'") != NULL, "%s", err.message);
        CHECK(image_load("data:image/png;base64,iVBORw0", NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(err.message, "ends inside") != NULL, "%s", err.message);
        CHECK(image_load("data:text/plain;base64,iVBORw0K", NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(err.message, "expected data:image/") != NULL, "%s", err.message);
        CHECK(image_load("data:image/png;base64", NULL, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECKF(strstr(err.message, "no ','") != NULL, "%s", err.message);
        CHECK(image_load("data:image/png;base64,", NULL, &im, &err) == OPTIQ_ERR_FORMAT);
        CHECK(image_load("data:image/png;base64,aGVsbG8gd29ybGQ=", NULL, &im, &err) == OPTIQ_ERR_FORMAT);
        CHECKF(strncmp(err.message, "data: URL: unrecognized image data", 34) == 0, "%s", err.message);
        image_limits lim = image_limits_default();
        lim.max_bytes = 4;
        CHECK(image_load("data:image/png;base64,aGVsbG8gd29ybGQ=", &lim, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(im.rgb == NULL);
    }
    for (TEST_CASE("http(s) URLs are refused as unsupported")) {
        image_u8 im;
        optiq_error err;
        CHECK(image_load("http://example.com/cat.jpg", NULL, &im, &err) == OPTIQ_ERR_UNSUPPORTED);
        CHECKF(strstr(err.message, "http(s) images are not supported") != NULL, "%s", err.message);
        CHECK(image_load("https://example.com/cat.jpg", NULL, &im, &err) == OPTIQ_ERR_UNSUPPORTED);
        CHECK(im.rgb == NULL);
    }
    for (TEST_CASE("image_load: path gives the reference pixels; missing path, directory, limit")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(fx, "files")) {
            if (strcmp(jstr(e, "file"), "jpeg_exif6.jpg") != 0) continue;
            image_u8 im;
            optiq_error err;
            CHECKF(image_load(test_path(FIX_DIR "jpeg_exif6.jpg"), NULL, &im, &err) == OPTIQ_OK, "%s", err.message);
            if (im.rgb) check_ok(e, &im);
            image_free(&im);
        }
        image_u8 im;
        optiq_error err;
        CHECK(image_load(test_path(FIX_DIR "no_such_file.png"), NULL, &im, &err) == OPTIQ_ERR_IO);
        CHECKF(strstr(err.message, "no_such_file.png: cannot open") != NULL, "%s", err.message);
        CHECK(image_load(test_path(FIX_DIR), NULL, &im, &err) == OPTIQ_ERR_IO);
        CHECK(image_load(test_path(FIX_DIR "bad_png_truncated.png"), NULL, &im, &err) == OPTIQ_ERR_FORMAT);
        CHECKF(strstr(err.message, "bad_png_truncated.png: PNG: ") != NULL, "%s", err.message);
        image_limits lim = image_limits_default();
        lim.max_bytes = 100;
        CHECK(image_load(test_path(FIX_DIR "png_rgb.png"), &lim, &im, &err) == OPTIQ_ERR_INVALID_ARG);
        CHECK(im.rgb == NULL);
    }
}

int main(void) {
    size_t n = 0;
    uint8_t *txt = read_fixture("expected.json", &n);
    cJSON *fx = txt ? cJSON_Parse((const char *)txt) : NULL;
    free(txt);
    for (TEST_CASE("fixtures: expected.json loads")) CHECKF(fx != NULL, "cannot read " FIX_DIR "expected.json");
    if (!fx) return test_finish();
    int n_ok = 0, n_err = 0;
    test_fixtures(fx, &n_ok, &n_err);
    for (TEST_CASE("fixtures: counts")) {
        printf("     %d decoded against the reference, %d refused\n", n_ok, n_err);
        CHECK(n_ok >= 60 && n_err >= 15);
    }
    test_limits();
    test_sources(fx);
    cJSON_Delete(fx);
    return test_finish();
}
