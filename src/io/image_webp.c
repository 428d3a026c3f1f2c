/*
 * image_webp.c — WebP through libwebp's demuxer and animation decoder.
 *
 * Pillow (WebPImagePlugin + _webp.c) decodes every WebP, still or animated,
 * with WebPAnimDecoder in MODE_RGBA and takes the first frame: the canvas
 * starts fully transparent (0,0,0,0) and the first frame is drawn into it, so
 * an animation whose first frame does not cover the canvas shows black
 * outside it. convert("RGB") then drops alpha without compositing. Lossy
 * frames go through libwebp's default YUV->RGB path (fancy upsampling).
 *
 * The canvas size comes from the demuxer before the decoder (which allocates
 * the canvas) is created. The EXIF and XMP chunks are read from the demuxer
 * as Pillow reads them (first chunk of each).
 */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "io/image_int.h"

/* The canvas size as Pillow's WebPImagePlugin._get_size reads it from the
 * first chunk, checked before anything else looks at the file: a hostile
 * VP8X header may declare a canvas the demuxer would refuse as inconsistent,
 * and the limit must be the reason given. 0 when the header is too short. */
static void header_size(const uint8_t *p, size_t n, uint64_t *w, uint64_t *h) {
    *w = *h = 0;
    if (n >= 30 && memcmp(p + 12, "VP8X", 4) == 0) {
        *w = 1 + ((uint64_t)p[24] | (uint64_t)p[25] << 8 | (uint64_t)p[26] << 16);
        *h = 1 + ((uint64_t)p[27] | (uint64_t)p[28] << 8 | (uint64_t)p[29] << 16);
    } else if (n >= 30 && memcmp(p + 12, "VP8 ", 4) == 0 && p[23] == 0x9d && p[24] == 0x01 && p[25] == 0x2a) {
        *w = ((uint64_t)p[26] | (uint64_t)p[27] << 8) & 0x3fff;
        *h = ((uint64_t)p[28] | (uint64_t)p[29] << 8) & 0x3fff;
    } else if (n >= 25 && memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2f) {
        uint32_t b = (uint32_t)p[21] | (uint32_t)p[22] << 8 | (uint32_t)p[23] << 16 | (uint32_t)p[24] << 24;
        *w = (b & 0x3fff) + 1;
        *h = ((b >> 14) & 0x3fff) + 1;
    }
}

optiq_status img_decode_webp(const uint8_t *p, size_t n, const image_limits *lim, image_u8 *out, img_meta *m,
                             optiq_error *err) {
    uint64_t hw, hh;
    header_size(p, n, &hw, &hh);
    if (hw && hh) {
        optiq_status hs = img_check_dims(hw, hh, lim, "WebP", err);
        if (hs != OPTIQ_OK) return hs;
    }
    WebPData wd = {p, n};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (!dmx) return err_set(err, OPTIQ_ERR_FORMAT, "WebP: corrupt or truncated container (%zu bytes)", n);
    uint32_t w = WebPDemuxGetI(dmx, WEBP_FF_CANVAS_WIDTH), h = WebPDemuxGetI(dmx, WEBP_FF_CANVAS_HEIGHT);
    uint32_t frames = WebPDemuxGetI(dmx, WEBP_FF_FRAME_COUNT);
    optiq_status st = img_check_dims(w, h, lim, "WebP", err);
    if (st == OPTIQ_OK && frames == 0) st = err_set(err, OPTIQ_ERR_FORMAT, "WebP: no frame");
    if (st == OPTIQ_OK) {
        WebPChunkIterator it;
        if (WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
            img_parse_exif(it.chunk.bytes, it.chunk.size, m);
            WebPDemuxReleaseChunkIterator(&it);
        }
        if (WebPDemuxGetChunk(dmx, "XMP ", 1, &it)) {
            img_parse_xmp(it.chunk.bytes, it.chunk.size, m);
            WebPDemuxReleaseChunkIterator(&it);
        }
    }
    WebPDemuxDelete(dmx);
    if (st != OPTIQ_OK) return st;

    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt)) return err_set(err, OPTIQ_ERR_UNSUPPORTED, "WebP: decoder ABI mismatch");
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &opt);
    if (!dec) return err_set(err, OPTIQ_ERR_FORMAT, "WebP: cannot decode (corrupt bitstream or out of memory)");
    uint8_t *rgba = NULL;
    int ts = 0;
    if (!WebPAnimDecoderGetNext(dec, &rgba, &ts) || !rgba) {
        WebPAnimDecoderDelete(dec);
        return err_set(err, OPTIQ_ERR_FORMAT, "WebP: the first frame does not decode (corrupt or truncated)");
    }
    st = img_alloc(out, (int)w, (int)h, "WebP", err);
    if (st == OPTIQ_OK) {
        size_t np = (size_t)w * h;
        for (size_t i = 0; i < np; i++) {
            out->rgb[3 * i] = rgba[4 * i];
            out->rgb[3 * i + 1] = rgba[4 * i + 1];
            out->rgb[3 * i + 2] = rgba[4 * i + 2];
        }
    }
    WebPAnimDecoderDelete(dec);
    return st;
}
