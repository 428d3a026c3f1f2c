/*
 * image.h — decoding encoded images (JPEG, PNG, WebP, GIF, BMP) into 8-bit RGB.
 *
 * The result is pixel-identical to the reference loader (mlx-vlm's
 * utils.load_image: PIL.Image.open, ImageOps.exif_transpose, .convert("RGB"),
 * then np.asarray): the same libjpeg-turbo settings Pillow uses (islow IDCT,
 * fancy upsampling), the same libwebp decoder path (WebPAnimDecoder, RGBA,
 * first frame), and Pillow's own rules for turning every stored mode into RGB
 * (palette lookups, 16-bit samples, grey, CMYK, alpha dropped without
 * compositing). docs/images.md lists every rule and how it was checked.
 *
 * The format is sniffed from the first bytes, never from a file name:
 *   FF D8 FF                 JPEG        89 'PNG' 0D 0A 1A 0A   PNG
 *   'RIFF' .... 'WEBP'       WebP        'GIF87a' / 'GIF89a'     GIF
 *   'BM'                     BMP
 *
 * Limits are checked before any pixel buffer is allocated: the encoded size
 * first, then the dimensions read from the header (w * h against max_pixels;
 * zero or absurd sizes are refused). Errors:
 *   OPTIQ_ERR_FORMAT        unknown signature, corrupt or truncated data
 *   OPTIQ_ERR_INVALID_ARG   a limit is exceeded; bad data: URL; NULL arguments
 *   OPTIQ_ERR_UNSUPPORTED   valid input this build does not decode (RLE BMP,
 *                           12-bit JPEG, http(s) URLs, ...)
 *   OPTIQ_ERR_IO            a file cannot be read
 *   OPTIQ_ERR_NOMEM         an allocation failed
 * The libraries are given silent handlers: nothing is printed, nothing exits.
 */
#ifndef OPTIQ_IO_IMAGE_H
#define OPTIQ_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* An owned RGB image. */
typedef struct image_u8 {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) row-major, R G B */
} image_u8;

typedef struct image_limits {
    uint64_t max_bytes;  /* largest encoded input accepted */
    uint64_t max_pixels; /* largest w * h accepted (of the stored image, before EXIF rotation) */
} image_limits;

/* Defaults: 64 MiB encoded; 178956970 pixels, which is Pillow's
 * decompression-bomb error threshold (2 * Image.MAX_IMAGE_PIXELS): every image
 * the reference accepts by default is accepted here, and nothing larger. */
#define IMAGE_DEFAULT_MAX_BYTES  (64ull << 20)
#define IMAGE_DEFAULT_MAX_PIXELS (2ull * 89478485ull)

image_limits image_limits_default(void);

/* Decode n bytes. lim may be NULL (defaults). On success *out owns a new
 * buffer (free with image_free); on failure *out is zeroed and err says why. */
optiq_status image_decode(const void *data, size_t n, const image_limits *lim, image_u8 *out,
                          optiq_error *err);

/* src is a file path or a "data:image/<type>;base64,<payload>" URL (the payload
 * is decoded as base64 whatever the media type, as the reference does).
 * http:// and https:// URLs fail with OPTIQ_ERR_UNSUPPORTED. */
optiq_status image_load(const char *src, const image_limits *lim, image_u8 *out, optiq_error *err);

void image_free(image_u8 *img);

#endif
