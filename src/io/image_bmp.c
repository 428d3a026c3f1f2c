/*
 * image_bmp.c — Windows BMP, uncompressed and BI_BITFIELDS, written here (no
 * Debian library) after Pillow's BmpImagePlugin so that the same files decode
 * to the same pixels.
 *
 * File layout (little-endian):
 *   0   'BM', u32 file size, u32 reserved, u32 bfOffBits (pixel data offset)
 *   14  u32 header size: 12 (OS/2 v1: u16 w, u16 h, u16 planes, u16 bits) or
 *       40/52/56/64/108/124 (u32 w, u32 h, u16 planes, u16 bits,
 *       u32 compression, u32 data size, 2 x u32 pixels/metre, u32 colours
 *       used, u32 important; from 52 bytes on the R,G,B masks at 40, from
 *       56 the alpha mask at 52). A 40-byte header with BI_BITFIELDS is
 *       followed by the three masks.
 *   then the palette (1/4/8-bit): `colours` entries of B,G,R (OS/2 v1) or
 *       B,G,R,0; then rows padded to 4 bytes, bottom-up unless the height's
 *       top byte is 0xFF (Pillow's test for a negative height: top-down).
 *
 * Pillow's rules, reproduced:
 *   - width and height are read unsigned; a height with top byte 0xFF is
 *     2^32 - h rows top-down; colours 0 means 2^bits; a bfOffBits pointing at
 *     the palette start is moved past the palette; bfOffBits 0 means "right
 *     after the palette";
 *   - 1/4/8-bit: a palette that is exactly black/white (2 colours: 0 and 255)
 *     or the identity grey ramp is dropped and the data read as mode "1"
 *     (1 bit per pixel) or "L" (8 bits per pixel) whatever the stored depth
 *     (refused when that row is longer than the stored row, as Pillow does);
 *     otherwise palette lookup, an index past the palette giving 0,0,0; more
 *     than 256 colours fail (as they do in Pillow);
 *   - 16-bit: 5-5-5 (BI_RGB or masks 7C00/3E0/1F) or 5-6-5 (masks
 *     F800/7E0/1F), each field scaled v * 255 / max;
 *   - 24-bit B,G,R; 32-bit B,G,R,X for BI_RGB (alpha ignored), or one of
 *     Pillow's eight supported mask sets; other mask sets are refused.
 * Not decoded: RLE8 / RLE4 (Pillow decodes them; refused here with
 * OPTIQ_ERR_UNSUPPORTED), embedded JPEG/PNG, other depths.
 */
#include <stdlib.h>
#include <string.h>

#include "io/image_int.h"

enum { BMP_RGB = 0, BMP_RLE8 = 1, BMP_RLE4 = 2, BMP_BITFIELDS = 3 };

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef enum { PIX_BIT, PIX_GREY, PIX_PAL, PIX_555, PIX_565, PIX_24, PIX_32 } pix_kind;

typedef struct bmp_layout {
    pix_kind kind;
    int pbits;          /* bits per pixel as unpacked (1 / 8 for the grey modes) */
    int ri, gi, bi;     /* byte positions for PIX_24 / PIX_32 */
    uint8_t pal[256][3];
} bmp_layout;

/* The eight 32-bit mask sets Pillow accepts (r, g, b, a). */
static const uint32_t MASKS32[8][4] = {
    {0xFF0000, 0xFF00, 0xFF, 0x0},          {0xFF000000, 0xFF0000, 0xFF00, 0x0},
    {0xFF000000, 0xFF00, 0xFF, 0x0},        {0xFF000000, 0xFF0000, 0xFF00, 0xFF},
    {0xFF, 0xFF00, 0xFF0000, 0xFF000000},   {0xFF0000, 0xFF00, 0xFF, 0xFF000000},
    {0xFF000000, 0xFF00, 0xFF, 0xFF0000},   {0x0, 0x0, 0x0, 0x0},
};

static int byte_of(uint32_t mask) {
    int i = 0;
    while (i < 4 && mask != (0xFFu << (8 * i))) i++;
    return i;
}

static optiq_status masks_layout(int bits, const uint32_t mk[4], bmp_layout *L, optiq_error *err) {
    if (bits == 32) {
        for (int i = 0; i < 8; i++) {
            if (memcmp(mk, MASKS32[i], sizeof MASKS32[i]) != 0) continue;
            L->kind = PIX_32;
            if (i == 7) { L->ri = 2; L->gi = 1; L->bi = 0; } /* all zero: Pillow reads BGRA */
            else { L->ri = byte_of(mk[0]); L->gi = byte_of(mk[1]); L->bi = byte_of(mk[2]); }
            return OPTIQ_OK;
        }
    } else if (bits == 24) {
        if (mk[0] == 0xFF0000 && mk[1] == 0xFF00 && mk[2] == 0xFF) {
            L->kind = PIX_24;
            return OPTIQ_OK;
        }
    } else if (bits == 16) {
        if (mk[0] == 0xF800 && mk[1] == 0x7E0 && mk[2] == 0x1F) { L->kind = PIX_565; return OPTIQ_OK; }
        if (mk[0] == 0x7C00 && mk[1] == 0x3E0 && mk[2] == 0x1F) { L->kind = PIX_555; return OPTIQ_OK; }
    }
    return err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: unsupported bitfields layout (%d-bit, masks %08x %08x %08x %08x)",
                   bits, mk[0], mk[1], mk[2], mk[3]);
}

/* 1/4/8-bit: grey shortcut or palette, as BmpImagePlugin does. */
static optiq_status palette_layout(const uint8_t *p, size_t n, size_t pos, uint64_t colors, int pad, int bits,
                                   bmp_layout *L, optiq_error *err) {
    if (colors == 0 || colors > 256)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: %llu palette colours, expected 1..256",
                       (unsigned long long)colors);
    size_t avail = pos < n ? n - pos : 0;
    size_t plen = (size_t)colors * (size_t)pad;
    if (plen > avail) plen = avail; /* Pillow reads what is there */
    const uint8_t *pal = p + pos;
    int grey = 1;
    for (uint64_t i = 0; i < colors; i++) {
        unsigned val = colors == 2 ? (i ? 255u : 0u) : (unsigned)i;
        if (i * (size_t)pad + 3 > plen || pal[i * pad] != val || pal[i * pad + 1] != val ||
            pal[i * pad + 2] != val) {
            grey = 0;
            break;
        }
    }
    if (grey) {
        L->kind = colors <= 2 ? PIX_BIT : PIX_GREY;
        L->pbits = colors <= 2 ? 1 : 8;
        return OPTIQ_OK;
    }
    L->kind = PIX_PAL;
    L->pbits = bits;
    memset(L->pal, 0, sizeof L->pal);
    for (size_t i = 0; i < plen / (size_t)pad && i < 256; i++) {
        L->pal[i][0] = pal[i * pad + 2];
        L->pal[i][1] = pal[i * pad + 1];
        L->pal[i][2] = pal[i * pad];
    }
    return OPTIQ_OK;
}

static void convert_row(uint8_t *dst, const uint8_t *s, int w, const bmp_layout *L) {
    for (int x = 0; x < w; x++, dst += 3) {
        switch (L->kind) {
        case PIX_BIT: {
            uint8_t v = (s[x >> 3] >> (7 - (x & 7)) & 1) ? 255 : 0;
            dst[0] = dst[1] = dst[2] = v;
            break;
        }
        case PIX_GREY: dst[0] = dst[1] = dst[2] = s[x]; break;
        case PIX_PAL: {
            unsigned idx;
            if (L->pbits == 8) idx = s[x];
            else if (L->pbits == 4) idx = (s[x >> 1] >> (x & 1 ? 0 : 4)) & 15;
            else idx = s[x >> 3] >> (7 - (x & 7)) & 1;
            memcpy(dst, L->pal[idx], 3);
            break;
        }
        case PIX_555: case PIX_565: {
            unsigned v = le16(s + 2 * x);
            if (L->kind == PIX_555) {
                dst[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
                dst[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
            } else {
                dst[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
                dst[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
            }
            dst[2] = (uint8_t)((v & 31) * 255 / 31);
            break;
        }
        case PIX_24: dst[0] = s[3 * x + 2]; dst[1] = s[3 * x + 1]; dst[2] = s[3 * x]; break;
        default: dst[0] = s[4 * x + L->ri]; dst[1] = s[4 * x + L->gi]; dst[2] = s[4 * x + L->bi]; break;
        }
    }
}

optiq_status img_decode_bmp(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out, img_meta *m,
                            optiq_error *err) {
    (void)m; /* BMP has no orientation metadata */
    if (n < 18) return err_set(err, OPTIQ_ERR_FORMAT, "BMP: %zu bytes, shorter than the 18-byte header", n);
    uint64_t off = le32(p + 10);
    uint32_t hsize = le32(p + 14);
    int is_core = hsize == 12;
    if (!is_core && hsize != 40 && hsize != 52 && hsize != 56 && hsize != 64 && hsize != 108 && hsize != 124)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: header of %u bytes, expected 12, 40, 52, 56, 64, 108 or 124",
                       hsize);
    if (14 + (size_t)hsize > n)
        return err_set(err, OPTIQ_ERR_FORMAT, "BMP: %zu bytes, shorter than its %u-byte header", n, hsize);
    const uint8_t *hd = p + 18; /* header after its size field */
    uint64_t w, h;
    int bits, pad, top_down = 0;
    uint32_t compression = BMP_RGB;
    uint64_t colors = 0;
    uint32_t mk[4] = {0, 0, 0, 0};
    size_t pos = 14 + hsize; /* where the palette (or the 40-byte header's masks) start */
    if (is_core) {
        w = le16(hd);
        h = le16(hd + 2);
        bits = (int)le16(hd + 6);
        pad = 3;
    } else {
        top_down = hd[7] == 0xFF;
        w = le32(hd);
        h = top_down ? (1ull << 32) - le32(hd + 4) : le32(hd + 4);
        bits = (int)le16(hd + 10);
        compression = le32(hd + 12);
        colors = le32(hd + 28);
        pad = 4;
        if (compression == BMP_BITFIELDS) {
            if (hsize >= 52) {
                for (int i = 0; i < (hsize >= 56 ? 4 : 3); i++) mk[i] = le32(hd + 36 + 4 * i);
            } else {
                if (pos + 12 > n) return err_set(err, OPTIQ_ERR_FORMAT, "BMP: file ends inside the bitfield masks");
                for (int i = 0; i < 3; i++) mk[i] = le32(p + pos + 4 * i);
                pos += 12;
            }
        }
    }
    if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: %d bits per pixel, expected 1, 4, 8, 16, 24 or 32", bits);
    if (colors == 0) colors = 1ull << bits;
    if (off == 14 + (uint64_t)hsize && bits <= 8) off += (uint64_t)pad * colors;

    optiq_status st = img_check_dims(w, h, lim, "BMP", err);
    if (st != OPTIQ_OK) return st;

    bmp_layout *L = calloc(1, sizeof *L);
    if (!L) return err_set(err, OPTIQ_ERR_NOMEM, "BMP: out of memory");
    L->pbits = bits;
    if (compression == BMP_BITFIELDS) {
        st = masks_layout(bits, mk, L, err);
    } else if (compression == BMP_RGB) {
        L->kind = bits == 16 ? PIX_555 : bits == 24 ? PIX_24 : PIX_32;
        L->ri = 2; L->gi = 1; L->bi = 0;
        if (bits <= 8) st = palette_layout(p, n, pos, colors, pad, bits, L, err);
    } else if (compression == BMP_RLE8 || compression == BMP_RLE4) {
        st = err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: RLE%d compression is not supported",
                     compression == BMP_RLE8 ? 8 : 4);
    } else {
        st = err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: compression %u is not supported", compression);
    }
    if (st != OPTIQ_OK) {
        free(L);
        return st;
    }
    if (off == 0) off = pos + (bits <= 8 ? (uint64_t)pad * colors : 0);

    uint64_t stride = ((w * (uint64_t)bits + 31) >> 3) & ~(uint64_t)3;
    uint64_t rowlen = (w * (uint64_t)L->pbits + 7) / 8;
    if (rowlen > stride) {
        free(L);
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "BMP: grey palette on %d-bit data: %llu-byte rows in %llu-byte strides",
                       bits, (unsigned long long)rowlen, (unsigned long long)stride);
    }
    if (off > n || stride * h > n - off) {
        free(L);
        return err_set(err, OPTIQ_ERR_FORMAT, "BMP: %llu rows of %llu bytes at offset %llu, but the file has %zu bytes (truncated)",
                       (unsigned long long)h, (unsigned long long)stride, (unsigned long long)off, n);
    }
    st = img_alloc(out, (int)w, (int)h, "BMP", err);
    if (st == OPTIQ_OK) {
        for (uint64_t y = 0; y < h; y++) {
            uint64_t fy = top_down ? y : h - 1 - y; /* file row holding image row y */
            convert_row(out->rgb + y * w * 3, p + off + fy * stride, (int)w, L);
        }
    }
    free(L);
    return st;
}
