/*
 * image_jpeg.c — JPEG through libjpeg-turbo, with Pillow's decoder settings.
 *
 * Pillow (JpegImagePlugin + JpegDecode.c) opens a JPEG as mode L, RGB or CMYK
 * after the number of components in SOF (1, 3, 4; anything else and any
 * precision other than 8 bits is refused), and asks libjpeg for
 * JCS_GRAYSCALE / JCS_RGB / JCS_CMYK output with the library defaults:
 * JDCT_ISLOW, fancy upsampling, no scaling. libjpeg picks the stored colour
 * space itself (JFIF / Adobe transform / component ids), as it does here.
 * CMYK is read as "CMYK;I" (Adobe's inverted convention, always assumed) and
 * then converted by Pillow's cmyk2rgb.
 *
 * Truncation: Pillow feeds libjpeg through a suspending source, so running out
 * of data anywhere before the last scanline is an error ("image file is
 * truncated"), while running out inside jpeg_finish_decompress (a missing EOI
 * after complete image data) is accepted. Here jpeg_mem_src's end-of-data
 * warning (JWRN_JPEG_EOF) is turned into the same error outside the finish
 * phase. Other libjpeg warnings (corrupt entropy data and the like) are
 * ignored, as Pillow ignores them.
 *
 * Metadata: APP1 "Exif\0\0" (the first one) and APP1 XMP
 * ("http://ns.adobe.com/xap/1.0/\0", the last one) before the first SOS, as
 * Pillow collects them.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "io/image_int.h"

/* A progressive file may have any number of scans; each is a full pass over
 * the coefficients, so a hostile file of tiny scans is a CPU bomb. Real
 * encoders write about ten. */
#define JPEG_MAX_SCANS 1000

typedef struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int finishing; /* inside jpeg_finish_decompress */
    optiq_status status;
    char msg[JMSG_LENGTH_MAX + 64];
} jpeg_ctx;

static void on_error(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    char buf[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, buf);
    snprintf(x->msg, sizeof x->msg, "%s", buf);
    x->status = OPTIQ_ERR_FORMAT;
    longjmp(x->jb, 1);
}

static void on_emit(j_common_ptr c, int level) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF && !x->finishing) {
        snprintf(x->msg, sizeof x->msg, "data ends before the image is complete (truncated file)");
        x->status = OPTIQ_ERR_FORMAT;
        longjmp(x->jb, 1);
    }
}

static void on_output(j_common_ptr c) { (void)c; }

static void on_progress(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        snprintf(x->msg, sizeof x->msg, "more than %d scans", JPEG_MAX_SCANS);
        x->status = OPTIQ_ERR_UNSUPPORTED;
        longjmp(x->jb, 1);
    }
}

static void read_markers(j_decompress_ptr d, img_meta *m) {
    static const char xmp_ns[] = "http://ns.adobe.com/xap/1.0/";
    int have_exif = 0;
    for (jpeg_saved_marker_ptr k = d->marker_list; k; k = k->next) {
        if (k->marker != JPEG_APP0 + 1) continue;
        if (!have_exif && k->data_length >= 6 && memcmp(k->data, "Exif\0\0", 6) == 0) {
            img_parse_exif(k->data, k->data_length, m);
            have_exif = 1;
        } else if (k->data_length >= sizeof xmp_ns && memcmp(k->data, xmp_ns, sizeof xmp_ns) == 0) {
            m->xmp_orientation = -1; /* the last XMP packet replaces earlier ones */
            img_parse_xmp(k->data + sizeof xmp_ns, k->data_length - sizeof xmp_ns, m);
        }
    }
}

/* Pillow: unpack "CMYK;I" (inverts), then cmyk2rgb with MULDIV255. */
static inline uint8_t cmyk_channel(unsigned v, unsigned k) {
    unsigned c = 255 - v;       /* CMYK;I */
    unsigned nk = k;            /* 255 - (255 - k) */
    unsigned t = c * nk + 128;
    int r = (int)nk - (int)((t + (t >> 8)) >> 8);
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

static optiq_status decode(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                           img_meta *m, struct jpeg_decompress_struct *d, jpeg_ctx *x,
                           uint8_t *volatile *row, optiq_error *err) {
    jpeg_mem_src(d, p, (unsigned long)n);
    jpeg_save_markers(d, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(d, TRUE);
    read_markers(d, m);

    int nc = d->num_components;
    if (d->data_precision != 8)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "JPEG: %d-bit samples, expected 8", d->data_precision);
    if (nc != 1 && nc != 3 && nc != 4)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "JPEG: %d components, expected 1, 3 or 4", nc);
    optiq_status st = img_check_dims(d->image_width, d->image_height, lim, "JPEG", err);
    if (st != OPTIQ_OK) return st;

    d->out_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    d->dct_method = JDCT_ISLOW;
    d->do_fancy_upsampling = TRUE;
    d->scale_num = d->scale_denom = 1;
    jpeg_start_decompress(d);
    if ((int)d->output_components != nc || d->output_width != d->image_width ||
        d->output_height != d->image_height)
        return err_set(err, OPTIQ_ERR_FORMAT, "JPEG: unexpected output layout");

    int w = (int)d->output_width, h = (int)d->output_height;
    st = img_alloc(out, w, h, "JPEG", err);
    if (st != OPTIQ_OK) return st;
    if (nc != 3) {
        *row = malloc((size_t)w * (size_t)nc);
        if (!*row) return err_set(err, OPTIQ_ERR_NOMEM, "JPEG: out of memory for a %d-pixel row", w);
    }
    while (d->output_scanline < d->output_height) {
        int y = (int)d->output_scanline;
        uint8_t *dst = out->rgb + (size_t)y * (size_t)w * 3;
        JSAMPROW r = nc == 3 ? dst : *row;
        if (jpeg_read_scanlines(d, &r, 1) != 1)
            return err_set(err, OPTIQ_ERR_FORMAT, "JPEG: decoder stopped at row %d of %d", y, h);
        const uint8_t *s = *row;
        if (nc == 1) {
            for (int i = 0; i < w; i++) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = s[i];
        } else if (nc == 4) {
            for (int i = 0; i < w; i++) {
                unsigned k = s[4 * i + 3];
                dst[3 * i] = cmyk_channel(s[4 * i], k);
                dst[3 * i + 1] = cmyk_channel(s[4 * i + 1], k);
                dst[3 * i + 2] = cmyk_channel(s[4 * i + 2], k);
            }
        }
    }
    x->finishing = 1;
    jpeg_finish_decompress(d);
    return OPTIQ_OK;
}

optiq_status img_decode_jpeg(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                             img_meta *m, optiq_error *err) {
    struct jpeg_decompress_struct d;
    struct jpeg_progress_mgr prog;
    jpeg_ctx x;
    uint8_t *volatile row = NULL;
    memset(&x, 0, sizeof x);
    d.err = jpeg_std_error(&x.pub);
    x.pub.error_exit = on_error;
    x.pub.emit_message = on_emit;
    x.pub.output_message = on_output;
    if (setjmp(x.jb)) {
        jpeg_destroy_decompress(&d);
        free(row);
        image_free(out);
        return err_set(err, x.status, "JPEG: %s", x.msg);
    }
    jpeg_create_decompress(&d);
    prog.progress_monitor = on_progress;
    d.progress = &prog;
    optiq_status st = decode(p, n, lim, out, m, &d, &x, &row, err);
    jpeg_destroy_decompress(&d);
    free(row);
    if (st != OPTIQ_OK) image_free(out);
    return st;
}
