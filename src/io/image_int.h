/*
 * image_int.h — what the per-format decoders of image.c share (private).
 *
 * Each decoder gets the whole encoded buffer, checks the dimensions in its
 * header with img_check_dims before allocating anything sized by them, fills
 * *out with the stored (not yet EXIF-rotated) image, and reports the
 * orientation it found in the file's metadata (1 when none). image.c applies
 * the orientation afterwards.
 */
#ifndef OPTIQ_IO_IMAGE_INT_H
#define OPTIQ_IO_IMAGE_INT_H

#include "io/image.h"

/* Orientation sources, kept separately because the reference gives an EXIF
 * Orientation tag precedence over an XMP one (PIL Image.getexif). */
typedef struct img_meta {
    int exif_orientation; /* value of EXIF tag 0x0112 in IFD0, -1 when absent */
    int xmp_orientation;  /* digit after tiff:Orientation in XMP, -1 when absent */
} img_meta;

/* Zero dimensions, dimensions past 2^30 on a side, or w*h over the limit are
 * refused with a message naming fmt. */
optiq_status img_check_dims(uint64_t w, uint64_t h, const image_limits *lim, const char *fmt,
                            optiq_error *err);

/* Allocate out->rgb for w x h (already checked). */
optiq_status img_alloc(image_u8 *out, int w, int h, const char *fmt, optiq_error *err);

/* EXIF: p points at the APP1 / eXIf / EXIF payload, with or without the
 * "Exif\0\0" prefix. Sets m->exif_orientation when IFD0 has the tag. */
void img_parse_exif(const uint8_t *p, size_t n, img_meta *m);

/* XMP packet: first "tiff:Orientation" followed by '="' or '>' and a digit. */
void img_parse_xmp(const uint8_t *p, size_t n, img_meta *m);

optiq_status img_decode_jpeg(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                             img_meta *m, optiq_error *err);
optiq_status img_decode_png(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                            img_meta *m, optiq_error *err);
optiq_status img_decode_webp(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                             img_meta *m, optiq_error *err);
optiq_status img_decode_gif(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                            img_meta *m, optiq_error *err);
optiq_status img_decode_bmp(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out,
                            img_meta *m, optiq_error *err);

#endif
