/*
 * image_png.c — PNG through libpng, converted to RGB with Pillow's rules.
 *
 * libpng is asked for the raw samples only (sub-byte samples unpacked to one
 * byte, no scaling, no gamma, no palette expansion, 16-bit kept big-endian);
 * the conversion below reproduces what Pillow's PngImagePlugin (_MODES) +
 * Image.convert("RGB") give for each (bit depth, colour type):
 *
 *   grey 1          mode "1"       0 -> 0, 1 -> 255
 *   grey 2 / 4 / 8  mode "L"       v * 85 / v * 17 / v, replicated
 *   grey 16         mode "I;16"    I16_RGB clips: v > 255 -> 255, else v (no scaling)
 *   RGB 8 / 16      mode "RGB"     16-bit: high byte ("RGB;16B")
 *   palette 1..8    mode "P"       PLTE lookup; an index past the PLTE gives 0,0,0
 *   grey+alpha 8    mode "LA"      grey replicated, alpha dropped
 *   grey+alpha 16   mode "RGBA"    high byte of grey ("LA;16B"), alpha dropped
 *   RGBA 8 / 16     mode "RGBA"    alpha dropped, no compositing; 16-bit: high bytes
 *   tRNS            ignored by convert("RGB") for every mode
 *
 * Chunk CRCs: Pillow checks the CRC of every chunk before IDAT, critical or
 * not; libpng is set to fail on a bad ancillary CRC as well. (libpng also
 * checks the IDAT CRCs, which Pillow skips: such a file is refused here.)
 * Chunks after the image data are never needed, so a file that ends after its
 * last IDAT decodes as it does in Pillow.
 *
 * Metadata (scanned directly over the chunk list, up to IEND): eXIf (the last
 * one) and the iTXt "XML:com.adobe.xmp" packet, zlib-compressed or not.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <zlib.h>

#include "io/image_int.h"

typedef struct png_ctx {
    jmp_buf jb;
    const uint8_t *p;
    size_t n, pos;
    char msg[256];
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void on_read(png_structp png, png_bytep dst, size_t len) {
    png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) png_error(png, "data ends before the image is complete (truncated file)");
    memcpy(dst, c->p + c->pos, len);
    c->pos += len;
}

/* ---- metadata ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Pillow's MAX_TEXT_CHUNK: larger text is not kept. */
#define PNG_MAX_TEXT (1u << 20)

static void itxt_xmp(const uint8_t *d, size_t len, img_meta *m) {
    static const char key[] = "XML:com.adobe.xmp";
    if (len < sizeof key + 2 || memcmp(d, key, sizeof key) != 0) return; /* keyword + NUL */
    size_t i = sizeof key;
    int compressed = d[i], method = d[i + 1];
    i += 2;
    const uint8_t *z = memchr(d + i, 0, len - i); /* language tag */
    if (!z) return;
    i = (size_t)(z - d) + 1;
    z = memchr(d + i, 0, len - i); /* translated keyword */
    if (!z) return;
    i = (size_t)(z - d) + 1;
    if (!compressed) {
        img_parse_xmp(d + i, len - i, m);
        return;
    }
    if (method != 0) return;
    uint8_t *buf = malloc(PNG_MAX_TEXT);
    if (!buf) return;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) == Z_OK) {
        zs.next_in = (Bytef *)(d + i);
        zs.avail_in = (uInt)(len - i);
        zs.next_out = buf;
        zs.avail_out = PNG_MAX_TEXT;
        int r = inflate(&zs, Z_FINISH);
        if (r == Z_STREAM_END) img_parse_xmp(buf, zs.total_out, m);
        inflateEnd(&zs);
    }
    free(buf);
}

static int is_xmp_itxt(const uint8_t *d, size_t len) {
    static const char key[] = "XML:com.adobe.xmp";
    return len >= sizeof key && memcmp(d, key, sizeof key) == 0;
}

/* Only the last eXIf and the last XMP iTXt count (each replaces the previous
 * one in Pillow's info dict), so each is parsed once: a file of many small
 * compressed XMP chunks cannot make us inflate a megabyte per chunk. */
static void scan_chunks(const uint8_t *p, size_t n, img_meta *m) {
    const uint8_t *exif = NULL, *xmp = NULL;
    size_t exif_len = 0, xmp_len = 0, off = 8;
    while (off + 12 <= n) {
        uint32_t len = be32(p + off);
        const uint8_t *type = p + off + 4;
        if (len > n - off - 12) break;
        const uint8_t *d = p + off + 8;
        if (memcmp(type, "eXIf", 4) == 0) {
            exif = d;
            exif_len = len;
        } else if (memcmp(type, "iTXt", 4) == 0 && is_xmp_itxt(d, len)) {
            xmp = d;
            xmp_len = len;
        } else if (memcmp(type, "IEND", 4) == 0) {
            break;
        }
        off += 12 + (size_t)len;
    }
    if (exif) img_parse_exif(exif, exif_len, m);
    if (xmp) itxt_xmp(xmp, xmp_len, m);
}

/* ---- pixels ---- */

static void convert_row(uint8_t *dst, const uint8_t *s, int w, int depth, int ctype, const uint8_t pal[256][3]) {
    int i;
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
        for (i = 0; i < w; i++) {
            unsigned v;
            switch (depth) {
            case 1: v = s[i] ? 255 : 0; break;
            case 2: v = s[i] * 85u; break;
            case 4: v = s[i] * 17u; break;
            case 8: v = s[i]; break;
            default: v = s[2 * i] ? 255 : s[2 * i + 1]; break; /* 16: I16_RGB clip */
            }
            dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = (uint8_t)v;
        }
        break;
    case PNG_COLOR_TYPE_RGB:
        if (depth == 8) memcpy(dst, s, (size_t)w * 3);
        else for (i = 0; i < 3 * w; i++) dst[i] = s[2 * i];
        break;
    case PNG_COLOR_TYPE_PALETTE:
        for (i = 0; i < w; i++) memcpy(dst + 3 * i, pal[s[i]], 3);
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        int step = depth == 8 ? 2 : 4;
        for (i = 0; i < w; i++) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = s[step * i];
        break;
    }
    default: { /* RGBA */
        int b = depth / 8;
        for (i = 0; i < w; i++) {
            dst[3 * i] = s[4 * b * i];
            dst[3 * i + 1] = s[4 * b * i + b];
            dst[3 * i + 2] = s[4 * b * i + 2 * b];
        }
        break;
    }
    }
}

static optiq_status decode(png_structp png, png_infop info, png_ctx *c, const image_limits *lim, image_u8 *out,
                           uint8_t *volatile *buf, optiq_error *err) {
    /* Pillow accepts any size up to its pixel limit; libpng's default caps
     * a side at 10^6 */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    /* Ancillary chunks never change the pixels (eXIf/iTXt are read by
     * scan_chunks), so libpng skips them all, known ones included: it then
     * streams their bytes through the CRC check instead of allocating the
     * declared length (a tiny file could declare a 4 GB iCCP or zTXt). */
    static const png_byte ancillary[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0"
                                        "sCAL\0sPLT\0sRGB\0tEXt\0tIME\0tRNS\0zTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ancillary, (int)(sizeof ancillary / 5));
    png_set_chunk_malloc_max(png, 1u << 20);
    png_set_read_fn(png, c, on_read);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    optiq_status st = img_check_dims(w, h, lim, "PNG", err);
    if (st != OPTIQ_OK) return st;

    uint8_t pal[256][3];
    memset(pal, 0, sizeof pal);
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int np = 0;
        if (!png_get_PLTE(png, info, &plte, &np) || np <= 0)
            return err_set(err, OPTIQ_ERR_FORMAT, "PNG: palette image without PLTE");
        for (int i = 0; i < np && i < 256; i++) {
            pal[i][0] = plte[i].red;
            pal[i][1] = plte[i].green;
            pal[i][2] = plte[i].blue;
        }
    }
    if (depth < 8) png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    size_t need = (size_t)w * (size_t)(ctype == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : ctype == PNG_COLOR_TYPE_RGB ? 3
                                       : ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1) * (depth == 16 ? 2 : 1);
    if (rowbytes < need) return err_set(err, OPTIQ_ERR_FORMAT, "PNG: row of %zu bytes, expected %zu", rowbytes, need);

    st = img_alloc(out, (int)w, (int)h, "PNG", err);
    if (st != OPTIQ_OK) return st;
    size_t rows = passes > 1 ? h : 1;
    *buf = malloc(rowbytes * rows);
    if (!*buf) return err_set(err, OPTIQ_ERR_NOMEM, "PNG: out of memory for %zu raw rows of %zu bytes", rows, rowbytes);
    uint8_t *raw = *buf;
    if (passes > 1) {
        memset(raw, 0, rowbytes * rows);
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, raw + (size_t)y * rowbytes, NULL);
        for (png_uint_32 y = 0; y < h; y++)
            convert_row(out->rgb + (size_t)y * w * 3, raw + (size_t)y * rowbytes, (int)w, depth, ctype,
                        (const uint8_t(*)[3])pal);
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, raw, NULL);
            convert_row(out->rgb + (size_t)y * w * 3, raw, (int)w, depth, ctype, (const uint8_t(*)[3])pal);
        }
    }
    return OPTIQ_OK;
}

optiq_status img_decode_png(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out, img_meta *m,
                            optiq_error *err) {
    png_ctx c;
    memset(&c, 0, sizeof c);
    c.p = p;
    c.n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
    if (!png) return err_set(err, OPTIQ_ERR_NOMEM, "PNG: cannot create a decoder");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return err_set(err, OPTIQ_ERR_NOMEM, "PNG: cannot create a decoder");
    }
    uint8_t *volatile buf = NULL;
    if (setjmp(c.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(buf);
        image_free(out);
        return err_set(err, OPTIQ_ERR_FORMAT, "PNG: %s", c.msg);
    }
    optiq_status st = decode(png, info, &c, lim, out, &buf, err);
    png_destroy_read_struct(&png, &info, NULL);
    free(buf);
    if (st != OPTIQ_OK) {
        image_free(out);
        return st;
    }
    scan_chunks(p, n, m);
    return OPTIQ_OK;
}
