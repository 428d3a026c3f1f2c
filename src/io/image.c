/*
 * image.c — format sniffing, limits, EXIF/XMP orientation, transposition,
 * image_load (paths and data: URLs). The decoders live in image_<fmt>.c.
 *
 * Orientation follows PIL.ImageOps.exif_transpose as mlx-vlm's load_image
 * calls it: the EXIF Orientation tag (0x0112) of IFD0 wins; without it, the
 * first `tiff:Orientation="d"` / `tiff:Orientation>d` in the XMP packet; values
 * 2..8 transpose the image, anything else leaves it alone. Transposition and
 * the per-pixel conversion to RGB commute, so the decoders convert first and
 * the transposition runs on RGB.
 */
#include "io/image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base64.h"
#include "io/image_int.h"

/* A side longer than this is refused whatever the pixel limit (keeps every
 * size computation far from overflow: 2^30 * 2^30 * 8 < 2^64). */
#define IMG_MAX_SIDE (1u << 30)

image_limits image_limits_default(void) {
    image_limits l = {IMAGE_DEFAULT_MAX_BYTES, IMAGE_DEFAULT_MAX_PIXELS};
    return l;
}

void image_free(image_u8 *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

optiq_status img_check_dims(uint64_t w, uint64_t h, const image_limits *lim, const char *fmt,
                            optiq_error *err) {
    if (w == 0 || h == 0)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: image is %llux%llu, expected both sides >= 1", fmt,
                       (unsigned long long)w, (unsigned long long)h);
    if (w > IMG_MAX_SIDE || h > IMG_MAX_SIDE)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: image is %llux%llu, a side over %u is refused", fmt,
                       (unsigned long long)w, (unsigned long long)h, IMG_MAX_SIDE);
    if (w * h > lim->max_pixels)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: image is %llux%llu = %llu pixels, limit is %llu", fmt,
                       (unsigned long long)w, (unsigned long long)h, (unsigned long long)(w * h),
                       (unsigned long long)lim->max_pixels);
    return OPTIQ_OK;
}

optiq_status img_alloc(image_u8 *out, int w, int h, const char *fmt, optiq_error *err) {
    size_t bytes = (size_t)w * (size_t)h * 3;
    out->rgb = malloc(bytes);
    if (!out->rgb) return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory for %dx%d RGB", fmt, w, h);
    out->w = w;
    out->h = h;
    return OPTIQ_OK;
}

/* ---- EXIF / XMP ---- */

static uint32_t rd16(const uint8_t *p, int be) { return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0]; }
static uint32_t rd32(const uint8_t *p, int be) {
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* As PIL.Image.Exif.load: strip up to two "Exif\0\0" prefixes, read the TIFF
 * header (II*\0 or MM\0*), then the entries of IFD0 for as long as they are
 * inside the data (a truncated IFD keeps the entries read so far; the last
 * duplicate wins). A malformed header means no orientation here, where the
 * reference may raise instead (docs/images.md). */
void img_parse_exif(const uint8_t *p, size_t n, img_meta *m) {
    for (int i = 0; i < 2 && n >= 6 && memcmp(p, "Exif\0\0", 6) == 0; i++) p += 6, n -= 6;
    if (n < 8) return;
    int be;
    if (memcmp(p, "II*\0", 4) == 0) be = 0;
    else if (memcmp(p, "MM\0*", 4) == 0) be = 1;
    else return;
    uint64_t off = rd32(p + 4, be);
    if (off + 2 > n) return;
    uint32_t count = rd16(p + off, be);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t e = off + 2 + 12ull * i;
        if (e + 12 > n) break;
        const uint8_t *q = p + e;
        if (rd16(q, be) != 0x0112 || rd32(q + 4, be) != 1) continue;
        switch (rd16(q + 2, be)) {
        case 1: case 7: m->exif_orientation = q[8]; break;              /* BYTE, UNDEFINED */
        case 6: m->exif_orientation = (int8_t)q[8]; break;              /* SBYTE */
        case 3: m->exif_orientation = (int)rd16(q + 8, be); break;      /* SHORT */
        case 8: m->exif_orientation = (int16_t)rd16(q + 8, be); break;  /* SSHORT */
        case 4: m->exif_orientation = (int)(rd32(q + 8, be) & 0x7fffffff); break; /* LONG */
        case 9: m->exif_orientation = (int32_t)rd32(q + 8, be); break;  /* SLONG */
        default: break;
        }
    }
}

void img_parse_xmp(const uint8_t *p, size_t n, img_meta *m) {
    static const char key[] = "tiff:Orientation";
    const size_t k = sizeof key - 1;
    for (size_t i = 0; i + k < n; i++) {
        if (p[i] != 't' || memcmp(p + i, key, k) != 0) continue;
        size_t j = i + k;
        if (j + 2 < n && p[j] == '=' && p[j + 1] == '"') j += 2;
        else if (j + 1 < n && p[j] == '>') j += 1;
        else continue;
        if (j < n && p[j] >= '0' && p[j] <= '9') {
            m->xmp_orientation = p[j] - '0';
            return;
        }
    }
}

/* Pillow's Image.transpose for orientation o (ImageOps.exif_transpose table):
 * 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
 * 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90. Output pixel (x, y) of the result
 * (size W x H) comes from source pixel (sx, sy). */
static optiq_status transpose(image_u8 *img, int o, optiq_error *err) {
    if (o < 2 || o > 8) return OPTIQ_OK;
    int w = img->w, h = img->h;
    int swap = o >= 5;
    int W = swap ? h : w, H = swap ? w : h;
    uint8_t *dst = malloc((size_t)w * (size_t)h * 3);
    if (!dst) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory transposing a %dx%d image", w, h);
    for (int y = 0; y < H; y++) {
        uint8_t *d = dst + (size_t)y * (size_t)W * 3;
        for (int x = 0; x < W; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            const uint8_t *s = img->rgb + ((size_t)sy * (size_t)w + (size_t)sx) * 3;
            d[3 * x] = s[0];
            d[3 * x + 1] = s[1];
            d[3 * x + 2] = s[2];
        }
    }
    free(img->rgb);
    img->rgb = dst;
    img->w = W;
    img->h = H;
    return OPTIQ_OK;
}

/* ---- decode ---- */

typedef optiq_status (*decode_fn)(const uint8_t *, size_t, const image_limits *, image_u8 *, img_meta *,
                                  optiq_error *);

static decode_fn sniff(const uint8_t *p, size_t n) {
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return img_decode_jpeg;
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return img_decode_png;
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return img_decode_webp;
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return img_decode_gif;
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return img_decode_bmp;
    return NULL;
}

optiq_status image_decode(const void *data, size_t n, const image_limits *lim, image_u8 *out,
                          optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "image_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!data && n) return err_set(err, OPTIQ_ERR_INVALID_ARG, "image_decode: data is NULL");
    image_limits def = image_limits_default();
    if (!lim) lim = &def;
    if (n > lim->max_bytes)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "image is %zu bytes, limit is %llu", n,
                       (unsigned long long)lim->max_bytes);
    const uint8_t *p = data;
    decode_fn fn = sniff(p, n);
    if (!fn) {
        char hex[3 * 8 + 1] = "";
        for (size_t i = 0; i < n && i < 8; i++) snprintf(hex + 3 * i, 4, "%02x ", p[i]);
        if (n) hex[3 * (n < 8 ? n : 8) - 1] = 0;
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "unrecognized image data (%zu bytes, starting %s%s): expected JPEG, PNG, WebP, GIF or BMP",
                       n, n ? hex : "<empty>", n > 8 ? " ..." : "");
    }
    img_meta m = {-1, -1};
    optiq_status st = fn(p, n, lim, out, &m, err);
    if (st != OPTIQ_OK) {
        image_free(out);
        return st;
    }
    int o = m.exif_orientation >= 0 ? m.exif_orientation : m.xmp_orientation;
    st = transpose(out, o, err);
    if (st != OPTIQ_OK) image_free(out);
    return st;
}

/* ---- load ---- */

static optiq_status load_data_url(const char *src, const image_limits *lim, image_u8 *out, optiq_error *err) {
    const char *comma = strchr(src, ',');
    if (!comma)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "data: URL has no ',' before its payload (expected data:image/<type>;base64,<data>)");
    size_t n = strlen(comma + 1);
    if (n / 4 * 3 > lim->max_bytes + 3)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "data: URL payload of %zu base64 characters is over the %llu-byte limit",
                       n, (unsigned long long)lim->max_bytes);
    uint8_t *buf = malloc(base64_decoded_max(n));
    if (!buf) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory decoding a data: URL of %zu characters", n);
    size_t got = 0, bad = 0;
    if (base64_decode(comma + 1, n, buf, &got, &bad) != 0) {
        free(buf);
        if (bad >= n)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "data: URL: base64 payload ends inside a 4-character group (%zu characters)", n);
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "data: URL: invalid base64 character '%c' (0x%02x) at offset %zu of the payload",
                       comma[1 + bad] >= 0x20 && comma[1 + bad] < 0x7f ? comma[1 + bad] : '?',
                       (unsigned char)comma[1 + bad], bad);
    }
    optiq_status st = image_decode(buf, got, lim, out, err);
    free(buf);
    if (st != OPTIQ_OK) err_prefix(err, "data: URL: ");
    return st;
}

static optiq_status load_file(const char *path, const image_limits *lim, image_u8 *out, optiq_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, OPTIQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return err_set(err, OPTIQ_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > lim->max_bytes) {
        fclose(f);
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: file is %lld bytes, limit is %llu", path,
                       (long long)sb.st_size, (unsigned long long)lim->max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(buf);
        return err_set(err, OPTIQ_ERR_IO, "%s: read %zu of %zu bytes", path, got, n);
    }
    optiq_status st = image_decode(buf, n, lim, out, err);
    free(buf);
    if (st != OPTIQ_OK) err_prefix(err, "%s: ", path);
    return st;
}

optiq_status image_load(const char *src, const image_limits *lim, image_u8 *out, optiq_error *err) {
    if (!out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!src || !*src) return err_set(err, OPTIQ_ERR_INVALID_ARG, "image_load: empty image source");
    image_limits def = image_limits_default();
    if (!lim) lim = &def;
    if (strncmp(src, "data:", 5) == 0) {
        if (strncmp(src, "data:image/", 11) != 0)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "data: URL of type '%.40s', expected data:image/<type>;base64,<data>",
                           src + 5);
        return load_data_url(src, lim, out, err);
    }
    if (strncmp(src, "http://", 7) == 0 || strncmp(src, "https://", 8) == 0)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "image URL '%.200s': http(s) images are not supported in this build, "
                       "pass a file path or a data:image/...;base64 URL", src);
    return load_file(src, lim, out, err);
}
