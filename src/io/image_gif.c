/*
 * image_gif.c — GIF (first frame) through giflib, as Pillow's GifImagePlugin
 * builds it.
 *
 * Pillow's first frame:
 *   - canvas = logical screen, grown to cover the frame when the frame's
 *     rectangle reaches past it;
 *   - canvas filled with the frame's transparency index (graphic control
 *     extension before the image, flag bit 0) or else with index 0; the frame
 *     is then decoded into its rectangle, every pixel written (transparent
 *     ones too);
 *   - palette = the local colour table, else the global one. A table that is
 *     the identity grey ramp (entry i = (i, i, i)) or no table at all gives
 *     mode "L": the index itself is the grey level. Otherwise mode "P": an
 *     index past the table's entries maps to 0,0,0.
 * Interlaced frames are stored in four passes (rows 0,8,.. / 4,12,.. /
 * 2,6,.. / 1,3,..).
 */
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

#include "io/image_int.h"

typedef struct gif_src {
    const uint8_t *p;
    size_t n, pos;
} gif_src;

static int on_read(GifFileType *g, GifByteType *dst, int len) {
    gif_src *s = g->UserData;
    size_t k = len > 0 ? (size_t)len : 0;
    if (k > s->n - s->pos) k = s->n - s->pos;
    memcpy(dst, s->p + s->pos, k);
    s->pos += k;
    return (int)k;
}

static optiq_status gif_fail(GifFileType *g, const char *what, optiq_error *err) {
    const char *why = GifErrorString(g->Error);
    return err_set(err, OPTIQ_ERR_FORMAT, "GIF: %s: %s", what, why ? why : "corrupt data");
}

/* Reads records up to the first image descriptor; *trans = transparency index or -1. */
static optiq_status find_image(GifFileType *g, int *trans, optiq_error *err) {
    *trans = -1;
    for (;;) {
        GifRecordType t;
        if (DGifGetRecordType(g, &t) == GIF_ERROR) return gif_fail(g, "reading a record", err);
        if (t == IMAGE_DESC_RECORD_TYPE) {
            if (DGifGetImageDesc(g) == GIF_ERROR) return gif_fail(g, "reading the image descriptor", err);
            return OPTIQ_OK;
        }
        if (t == TERMINATE_RECORD_TYPE) return err_set(err, OPTIQ_ERR_FORMAT, "GIF: no image before the trailer");
        if (t != EXTENSION_RECORD_TYPE) return err_set(err, OPTIQ_ERR_FORMAT, "GIF: unexpected record type %d", (int)t);
        int code = 0;
        GifByteType *ext = NULL;
        if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) return gif_fail(g, "reading an extension", err);
        if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4 && (ext[1] & 1)) *trans = ext[4];
        while (ext) {
            if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) return gif_fail(g, "reading an extension", err);
        }
    }
}

static void build_palette(const ColorMapObject *map, uint8_t pal[256][3]) {
    memset(pal, 0, 256 * 3);
    int identity = 1, count = map ? map->ColorCount : 0;
    if (count > 256) count = 256;
    for (int i = 0; i < count; i++) {
        GifColorType c = map->Colors[i];
        pal[i][0] = c.Red;
        pal[i][1] = c.Green;
        pal[i][2] = c.Blue;
        if (c.Red != i || c.Green != i || c.Blue != i) identity = 0;
    }
    if (!map || identity)
        for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
}

static optiq_status decode(GifFileType *g, const image_limits *lim, image_u8 *out, optiq_error *err) {
    optiq_status st;
    /* the screen alone may already be too large; a 0-sized screen is fine as
     * long as the frame gives the canvas a size (checked below) */
    if (g->SWidth > 0 && g->SHeight > 0) {
        st = img_check_dims((uint64_t)g->SWidth, (uint64_t)g->SHeight, lim, "GIF", err);
        if (st != OPTIQ_OK) return st;
    }
    int trans;
    st = find_image(g, &trans, err);
    if (st != OPTIQ_OK) return st;
    const GifImageDesc *d = &g->Image;
    if (d->Left < 0 || d->Top < 0 || d->Width < 0 || d->Height < 0)
        return err_set(err, OPTIQ_ERR_FORMAT, "GIF: bad frame rectangle");
    uint64_t x1 = (uint64_t)d->Left + (uint64_t)d->Width, y1 = (uint64_t)d->Top + (uint64_t)d->Height;
    uint64_t cw = x1 > (uint64_t)g->SWidth ? x1 : (uint64_t)g->SWidth;
    uint64_t ch = y1 > (uint64_t)g->SHeight ? y1 : (uint64_t)g->SHeight;
    st = img_check_dims(cw, ch, lim, "GIF", err);
    if (st != OPTIQ_OK) return st;

    uint8_t pal[256][3];
    build_palette(d->ColorMap ? d->ColorMap : g->SColorMap, pal);
    st = img_alloc(out, (int)cw, (int)ch, "GIF", err);
    if (st != OPTIQ_OK) return st;
    const uint8_t *fill = pal[trans >= 0 ? trans : 0];
    size_t np = (size_t)cw * ch;
    for (size_t i = 0; i < np; i++) memcpy(out->rgb + 3 * i, fill, 3);
    if (d->Width == 0 || d->Height == 0) return OPTIQ_OK;

    GifPixelType *line = malloc((size_t)d->Width);
    if (!line) return err_set(err, OPTIQ_ERR_NOMEM, "GIF: out of memory for a %d-pixel row", d->Width);
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int npass = d->Interlace ? 4 : 1;
    for (int pass = 0; pass < npass; pass++) {
        int y0 = d->Interlace ? start[pass] : 0, dy = d->Interlace ? step[pass] : 1;
        for (int y = y0; y < d->Height; y += dy) {
            if (DGifGetLine(g, line, d->Width) == GIF_ERROR) {
                free(line);
                return gif_fail(g, "decoding the image data", err);
            }
            uint8_t *dst = out->rgb + (((size_t)(d->Top + y)) * cw + (size_t)d->Left) * 3;
            for (int x = 0; x < d->Width; x++) memcpy(dst + 3 * x, pal[line[x]], 3);
        }
    }
    free(line);
    return OPTIQ_OK;
}

optiq_status img_decode_gif(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out, img_meta *m,
                            optiq_error *err) {
    (void)m; /* Pillow reads no orientation from GIF */
    gif_src src = {p, n, 0};
    int e = 0;
    GifFileType *g = DGifOpen(&src, on_read, &e);
    if (!g) {
        const char *why = GifErrorString(e);
        return err_set(err, OPTIQ_ERR_FORMAT, "GIF: cannot read the header: %s", why ? why : "corrupt data");
    }
    optiq_status st = decode(g, lim, out, err);
    DGifCloseFile(g, &e);
    if (st != OPTIQ_OK) image_free(out);
    return st;
}
