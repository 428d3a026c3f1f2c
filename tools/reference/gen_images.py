"""Generate tests/fixtures/images/: encoded images + the reference's decoded pixels.

The reference path is mlx-vlm's own loader, exactly as a request goes through it:
    img = mlx_vlm.utils.load_image(BytesIO(data))   # Image.open, ImageOps.exif_transpose, convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)           # (h, w, 3), what processing_qwen3_vl._to_numpy_image sees
For every file expected.json records (w, h), the SHA-256 of arr.tobytes() and a few
sample pixels; for the hostile files it records that the reference fails (or, for the
few files the C decoder refuses on purpose, why) under "expect": "error".

Sources are crops of scikit-image's sample photographs (skimage.data), encoded with
Pillow at several qualities / subsamplings / modes, plus small synthetic files written
byte by byte for the layouts Pillow's encoders do not produce (16-bit and sub-byte PNG,
Adam7, 4-bit / 16-bit / top-down BMP, GIF frame smaller than the screen, out-of-range
palette indices).  Output is deterministic.

Also keeps its section of tests/fixtures/VERSIONS.md up to date (generate_all.sh runs
this after rewriting that file).

Usage: python tools/reference/gen_images.py [--out tests/fixtures/images]
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import struct
import zlib
from importlib import metadata

import numpy as np
from PIL import Image, features
from skimage import data as skd

from mlx_vlm.utils import load_image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_TOTAL = 1_500_000


# ---- reference ---------------------------------------------------------------

def reference(blob):
    """mlx-vlm's load path; returns (h, w, 3) uint8 or raises."""
    img = load_image(io.BytesIO(blob))
    arr = np.asarray(img, dtype=np.uint8)
    assert arr.ndim == 3 and arr.shape[2] == 3, arr.shape
    return arr


def samples(arr):
    h, w, _ = arr.shape
    pts = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2), (w // 3, (2 * h) // 3)]
    out = []
    for x, y in pts:
        r, g, b = (int(v) for v in arr[y, x])
        out.append([x, y, r, g, b])
    return out


# ---- encoders ----------------------------------------------------------------

def enc(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def png_raw(w, h, depth, ctype, rows, plte=None, trns=None, extra=b"", interlace=False):
    """rows: list of already packed scanline bytes (no filter byte) per pass image."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += extra + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return out


def pack_bits(vals, depth):
    """Pack a row of small ints MSB first (PNG / BMP order)."""
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(vals), per):
        byte = 0
        for j in range(per):
            v = vals[i + j] if i + j < len(vals) else 0
            byte |= (v & ((1 << depth) - 1)) << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_adam7_rgb(arr):
    h, w, _ = arr.shape
    rows = []
    for x0, y0, dx, dy in ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows += [sub[y].tobytes() for y in range(sub.shape[0])]
    return png_raw(w, h, 8, 2, rows, interlace=True)


def bmp_file(w, h, bits, rows_bottom_up, palette=None, compression=0, masks=None,
             header_size=40, top_down=False, colors=0):
    """rows_bottom_up: packed pixel rows (without padding) in file order."""
    stride = ((w * bits + 31) >> 3) & ~3
    pix = b"".join(r + b"\0" * (stride - len(r)) for r in rows_bottom_up)
    pal = b""
    if palette is not None:
        pal = b"".join(bytes([b, g, r, 0]) for (r, g, b) in palette)
    hh = -h if top_down else h
    info = struct.pack("<IiiHHIIiiII", header_size, w, hh, 1, bits, compression, len(pix), 2835, 2835,
                       colors, 0)
    if header_size > 40:
        m = masks or (0, 0, 0, 0)
        info += struct.pack("<IIII", *m)
        info += b"\0" * (header_size - len(info))
    elif masks is not None:
        info += struct.pack("<III", *masks[:3])
    off = 14 + len(info) + len(pal)
    head = b"BM" + struct.pack("<IHHI", off + len(pix), 0, 0, off)
    return head + info + pal + pix


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


# ---- the photographs -----------------------------------------------------------

def photos():
    astro = Image.fromarray(skd.astronaut())           # 512x512 RGB
    chelsea = Image.fromarray(skd.chelsea())           # 451x300 RGB
    coffee = Image.fromarray(skd.coffee())             # 600x400 RGB
    camera = Image.fromarray(skd.camera())             # 512x512 L
    return {
        "astro": astro.crop((150, 30, 307, 143)),      # 157x113: odd sizes, partial MCUs
        "chelsea": chelsea.crop((120, 40, 280, 160)),  # 160x120
        "coffee": coffee.crop((200, 100, 296, 172)),   # 96x72
        "camera": camera.crop((180, 60, 301, 151)),    # 121x91 grey
    }


def build_files():
    p = photos()
    astro, chelsea, coffee, camera = p["astro"], p["chelsea"], p["coffee"], p["camera"]
    small = astro.resize((40, 29), Image.Resampling.BILINEAR)
    files = []  # (name, bytes, note)

    def add(name, blob, note):
        files.append((name, blob, note))

    # JPEG: Pillow's encoder (libjpeg-turbo), several qualities and samplings.
    add("jpeg_q95_420.jpg", enc(astro, "JPEG", quality=95, subsampling="4:2:0"), "baseline 4:2:0 q95")
    add("jpeg_q75_420.jpg", enc(chelsea, "JPEG", quality=75, subsampling="4:2:0"), "baseline 4:2:0 q75")
    add("jpeg_q90_444.jpg", enc(astro, "JPEG", quality=90, subsampling="4:4:4"), "baseline 4:4:4 q90")
    add("jpeg_q85_422.jpg", enc(coffee, "JPEG", quality=85, subsampling="4:2:2"), "baseline 4:2:2 q85")
    add("jpeg_q50_prog.jpg", enc(chelsea, "JPEG", quality=50, progressive=True), "progressive 4:2:0 q50")
    add("jpeg_q80_opt_rst.jpg", enc(coffee, "JPEG", quality=80, optimize=True, restart_marker_blocks=4),
        "optimized Huffman tables, restart markers")
    add("jpeg_gray.jpg", enc(camera, "JPEG", quality=85), "1 component (L)")
    add("jpeg_cmyk.jpg", enc(coffee.convert("CMYK"), "JPEG", quality=90), "4 components, Adobe CMYK (inverted)")
    add("jpeg_exif6.jpg", enc(chelsea, "JPEG", quality=85, exif=exif_bytes(6)), "EXIF orientation 6 (rotate)")
    add("jpeg_exif3_prog.jpg", enc(coffee, "JPEG", quality=70, progressive=True, exif=exif_bytes(3)),
        "EXIF orientation 3, progressive")
    xmp6 = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"><tiff:Orientation>7</tiff:Orientation>'
            b'</rdf:Description></rdf:RDF></x:xmpmeta>')
    add("jpeg_xmp7.jpg", enc(coffee, "JPEG", quality=80, xmp=xmp6), "XMP orientation 7 (no EXIF)")
    add("jpeg_exif1_xmp7.jpg", enc(coffee, "JPEG", quality=80, xmp=xmp6, exif=exif_bytes(1)),
        "EXIF orientation 1 wins over XMP 7")
    add("jpeg_1x1.jpg", enc(astro.crop((0, 0, 1, 1)), "JPEG", quality=90), "1x1")
    add("jpeg_wide.jpg", enc(astro.resize((700, 3), Image.Resampling.BILINEAR), "JPEG", quality=80), "700x3")
    add("jpeg_tall.jpg", enc(astro.resize((5, 300), Image.Resampling.BILINEAR), "JPEG", quality=80), "5x300")
    with open(os.path.join(os.path.dirname(skd.__file__), "rocket.jpg"), "rb") as f:
        rocket = Image.open(f)
        rocket.load()
    add("jpeg_rocket_crop.jpg", enc(rocket.crop((100, 200, 260, 330)), "JPEG", quality=88), "rocket crop q88")

    # PNG: Pillow's encoder for the common modes.
    add("png_rgb.png", enc(coffee, "PNG"), "8-bit RGB")
    rgba = small.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = np.tile(np.linspace(0, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1))
    a[:5, :5, 3] = 0
    add("png_rgba.png", enc(Image.fromarray(a, "RGBA"), "PNG"), "8-bit RGBA, alpha dropped")
    pal = small.quantize(colors=40)
    pal.info["transparency"] = bytes([0, 128] + [255] * 38)
    add("png_palette_trns.png", enc(pal, "PNG", transparency=bytes([0, 128] + [255] * 38)),
        "palette with tRNS")
    add("png_palette_4bit.png", enc(small.quantize(colors=12), "PNG", bits=4), "4-bit palette")
    add("png_gray8.png", enc(camera, "PNG"), "8-bit grey")
    g16 = (np.asarray(camera.resize((50, 37)), dtype=np.uint16) * 4).astype(np.uint16)
    add("png_gray16.png", png_raw(50, 37, 16, 0, [g16[y].astype(">u2").tobytes() for y in range(37)]),
        "16-bit grey (I;16: values > 255 clip to 255)")
    la = Image.merge("LA", (camera.resize((50, 37)), camera.resize((50, 37)).point(lambda v: 255 - v)))
    add("png_gray_alpha.png", enc(la, "PNG"), "8-bit grey + alpha")
    add("png_bilevel.png", enc(camera.resize((61, 45)).convert("1"), "PNG"), "1-bit grey")
    add("png_1x1.png", enc(Image.new("RGB", (1, 1), (12, 200, 77)), "PNG"), "1x1")
    add("png_wide.png", enc(astro.resize((1500, 2)), "PNG"), "1500x2")
    add("png_tall.png", enc(astro.resize((1, 900)), "PNG"), "1x900")

    # PNG: synthetic layouts.
    ar = np.asarray(small)
    h, w, _ = ar.shape
    add("png_rgb16.png", png_raw(w, h, 16, 2, [(ar[y].astype(">u2") * 257 + y).tobytes() for y in range(h)]),
        "16-bit RGB (high byte)")
    add("png_rgba16.png",
        png_raw(w, h, 16, 6, [np.concatenate([ar[y].astype(">u2") * 256 + 3,
                                              np.full((w, 1), 40000, ">u2")], axis=1).astype(">u2").tobytes()
                              for y in range(h)]),
        "16-bit RGBA")
    gl = np.asarray(camera.resize((w, h)))
    add("png_la16.png",
        png_raw(w, h, 16, 4, [np.stack([gl[y].astype(">u2") * 256 + 7, np.full(w, 9, ">u2")], axis=1)
                              .astype(">u2").tobytes() for y in range(h)]),
        "16-bit grey + alpha (becomes RGBA in Pillow)")
    for depth in (2, 4):
        vals = [[(gl[y, x] >> (8 - depth)) for x in range(w)] for y in range(h)]
        add(f"png_gray{depth}.png", png_raw(w, h, depth, 0, [pack_bits(r, depth) for r in vals]),
            f"{depth}-bit grey (scaled like Pillow's L;{depth})")
    add("png_gray8_trns.png", png_raw(w, h, 8, 0, [gl[y].tobytes() for y in range(h)], trns=b"\x00\x80"),
        "grey with tRNS (ignored)")
    add("png_rgb_trns.png", png_raw(w, h, 8, 2, [ar[y].tobytes() for y in range(h)], trns=b"\0\1\0\2\0\3"),
        "RGB with tRNS (ignored)")
    add("png_adam7.png", png_adam7_rgb(ar), "Adam7 interlaced RGB")
    idx = [[(x * 7 + y * 3) % 9 for x in range(w)] for y in range(h)]
    add("png_palette_short.png",
        png_raw(w, h, 8, 3, [bytes(r) for r in idx], plte=bytes([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 0])),
        "PLTE of 4 entries, indices up to 8 (outside the palette -> black)")
    for o in range(1, 9):
        add(f"png_exif{o}.png", enc(Image.fromarray(ar[:7, :5].copy()), "PNG", exif=exif_bytes(o)),
            f"eXIf orientation {o}")
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>')
    itxt = b"XML:com.adobe.xmp\0\0\0\0\0" + xmp
    add("png_xmp8.png", png_raw(5, 7, 8, 2, [ar[y, :5].tobytes() for y in range(7)], extra=png_chunk(b"iTXt", itxt)),
        "XMP (iTXt) orientation 8")
    itxtz = b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(xmp.replace(b'"8"', b'"5"'))
    add("png_xmpz5.png", png_raw(5, 7, 8, 2, [ar[y, :5].tobytes() for y in range(7)],
                                 extra=png_chunk(b"iTXt", itxtz)), "compressed XMP (iTXt) orientation 5")

    # WebP (libwebp through Pillow).
    add("webp_lossy.webp", enc(chelsea, "WEBP", quality=80), "lossy VP8")
    add("webp_lossless.webp", enc(coffee, "WEBP", lossless=True), "lossless VP8L")
    add("webp_lossy_alpha.webp", enc(Image.fromarray(a, "RGBA"), "WEBP", quality=70), "lossy + alpha (VP8X)")
    add("webp_lossless_alpha.webp", enc(Image.fromarray(a, "RGBA"), "WEBP", lossless=True, exact=True),
        "lossless + alpha, exact RGB under alpha 0")
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    add("webp_anim.webp", enc(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, quality=75),
        "animated: first frame")
    add("webp_exif6.webp", enc(small, "WEBP", quality=80, exif=exif_bytes(6)), "EXIF orientation 6")
    add("webp_1x1.webp", enc(Image.new("RGB", (1, 1), (1, 2, 3)), "WEBP", lossless=True), "1x1")

    # GIF (Pillow's encoder + patches).
    add("gif_photo.gif", enc(coffee.quantize(colors=255), "GIF"), "photo, 255-colour palette")
    add("gif_gray.gif", enc(camera.resize((60, 45)), "GIF"), "grey (identity palette -> Pillow mode L)")
    anim = enc(small.quantize(colors=64), "GIF", save_all=True,
               append_images=[small.transpose(Image.Transpose.FLIP_TOP_BOTTOM).quantize(colors=64)],
               duration=80, loop=0)
    add("gif_anim.gif", anim, "animated: first frame")
    g = bytearray(enc(small.quantize(colors=16), "GIF", transparency=3))
    gw, gh = struct.unpack("<HH", g[6:10])
    g[6:10] = struct.pack("<HH", gw + 11, gh + 6)           # bigger screen than the frame
    pos = g.index(b"\x2c", 13 + (3 << ((g[10] & 7) + 1)))
    g[pos + 1:pos + 5] = struct.pack("<HH", 4, 3)            # frame at (4, 3)
    add("gif_offset_trns.gif", bytes(g), "frame smaller than screen, transparency index fills the rest")
    g2 = bytearray(enc(small.quantize(colors=16), "GIF"))
    gw, gh = struct.unpack("<HH", g2[6:10])
    pos = g2.index(b"\x2c", 13 + (3 << ((g2[10] & 7) + 1)))
    g2[pos + 1:pos + 5] = struct.pack("<HH", 5, 2)           # frame extends past the screen
    add("gif_past_screen.gif", bytes(g2), "frame past the screen edge: canvas grows, index 0 fills")
    q64 = Image.fromarray((np.arange(40 * 29).reshape(29, 40) % 64).astype(np.uint8), "P")
    q64.putpalette([v for i in range(64) for v in (i * 4, 255 - i * 4, (i * 37) % 256)])
    gs = bytearray(enc(q64, "GIF"))
    assert gs[10] & 0x80 and (gs[10] & 7) == 5, gs[10]     # 64-entry global table
    gs[10] = (gs[10] & ~7) | 3                              # declare 16 entries ...
    gs = gs[:13 + 16 * 3] + gs[13 + 64 * 3:]                 # ... and keep only those
    add("gif_short_table.gif", bytes(gs), "16-entry colour table, indices up to 63 (outside -> black)")
    add("gif_interlaced.gif", enc(coffee.quantize(colors=64), "GIF", interlace=True), "interlaced")
    add("gif_1x1.gif", enc(Image.new("P", (1, 1), 0), "GIF"), "1x1")

    # BMP.
    add("bmp_24.bmp", enc(coffee, "BMP"), "24-bit bottom-up")
    add("bmp_32.bmp", enc(small.convert("RGBA"), "BMP"), "32-bit (alpha ignored)")
    add("bmp_8pal.bmp", enc(small.quantize(colors=50), "BMP"), "8-bit palette")
    add("bmp_8gray.bmp", enc(camera.resize((37, 23)), "BMP"), "8-bit grey")
    add("bmp_1bit.bmp", enc(camera.resize((37, 23)).convert("1"), "BMP"), "1-bit")
    rows = [ar[y, :, ::-1].tobytes() for y in range(h)]
    add("bmp_24_topdown.bmp", bmp_file(w, h, 24, rows, top_down=True), "24-bit top-down")
    add("bmp_24_v5.bmp", bmp_file(w, h, 24, rows[::-1], header_size=124), "24-bit, BITMAPV5HEADER")
    add("bmp_32_bitfields.bmp",
        bmp_file(w, h, 32, [bytes(v for px in ar[y] for v in (px[0], px[1], px[2], 77)) for y in range(h)][::-1],
                 compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000), header_size=56),
        "32-bit BITFIELDS RGBA order")
    q = small.quantize(colors=16)
    qi = np.asarray(q)
    qp = q.getpalette()[:48]
    add("bmp_4bit.bmp", bmp_file(w, h, 4, [pack_bits(list(qi[y]), 4) for y in range(h)][::-1],
                                 palette=[tuple(qp[i * 3:i * 3 + 3]) for i in range(16)]), "4-bit palette")
    add("bmp_8_short_palette.bmp",
        bmp_file(w, h, 8, [bytes((x + y) % 7 for x in range(w)) for y in range(h)],
                 palette=[(250, 0, 0), (0, 250, 0), (0, 0, 250)], colors=3),
        "3-colour palette, indices up to 6")

    def rgb16(px, five65):
        r, g_, b = (int(v) for v in px)
        if five65:
            return struct.pack("<H", ((r >> 3) << 11) | ((g_ >> 2) << 5) | (b >> 3))
        return struct.pack("<H", ((r >> 3) << 10) | ((g_ >> 3) << 5) | (b >> 3))
    add("bmp_16_555.bmp", bmp_file(w, h, 16, [b"".join(rgb16(px, False) for px in ar[y]) for y in range(h)][::-1]),
        "16-bit 5-5-5")
    add("bmp_16_565.bmp", bmp_file(w, h, 16, [b"".join(rgb16(px, True) for px in ar[y]) for y in range(h)][::-1],
                                   compression=3, masks=(0xF800, 0x7E0, 0x1F)), "16-bit 5-6-5 BITFIELDS")
    add("bmp_1x1.bmp", enc(Image.new("RGB", (1, 1), (9, 8, 7)), "BMP"), "1x1")

    # Files the C decoder refuses on purpose although the reference reads them.
    rle = bytearray(bmp_file(4, 2, 8, [bytes(4), bytes(4)], palette=[(0, 0, 0), (255, 255, 255)]))
    rle_data = bytes([4, 1, 0, 0, 4, 0, 0, 1])
    off = struct.unpack("<I", rle[10:14])[0]
    rle = rle[:off] + rle_data
    rle[30:34] = struct.pack("<I", 1)
    rle[34:38] = struct.pack("<I", len(rle_data))
    rle[2:6] = struct.pack("<I", len(rle))
    files.append(("unsupported_bmp_rle8.bmp", bytes(rle), "RLE8 BMP: the reference decodes it, optiq refuses it"))

    # Hostile files: the reference fails on every one of them.
    jq = enc(astro, "JPEG", quality=90)
    add("bad_jpeg_truncated.jpg", jq[: len(jq) // 2], "baseline JPEG cut in half")
    jp = enc(chelsea, "JPEG", quality=60, progressive=True)
    add("bad_jpeg_prog_truncated.jpg", jp[: len(jp) * 2 // 3], "progressive JPEG cut at 2/3")
    add("bad_jpeg_header_only.jpg", jq[:300], "JPEG cut inside its headers")
    pq = enc(coffee, "PNG")
    add("bad_png_truncated.png", pq[: len(pq) // 2], "PNG cut in half")
    add("bad_png_sig_only.png", pq[:8], "PNG signature only")
    add("bad_garbage.bin", bytes((i * 37 + 11) % 256 for i in range(200)), "no known signature")
    add("bad_empty.bin", b"", "empty")
    add("bad_png_huge.png",
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""),
        "PNG declaring 100000x100000 in a tiny file")
    jb = bytearray(enc(Image.new("RGB", (8, 8)), "JPEG"))
    sof = jb.index(b"\xff\xc0")
    jb[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    add("bad_jpeg_huge.jpg", bytes(jb), "JPEG SOF declaring 65000x65000")
    gb = bytearray(enc(Image.new("P", (4, 4)), "GIF"))
    gb[6:10] = struct.pack("<HH", 65535, 65535)
    add("bad_gif_huge.gif", bytes(gb), "GIF screen 65535x65535")
    add("bad_bmp_huge.bmp", bmp_file(100000, 100000, 24, []), "BMP declaring 100000x100000, no pixels")
    add("bad_bmp_truncated.bmp", enc(coffee, "BMP")[:5000], "BMP with most pixel rows missing")
    wb = bytearray(enc(Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "WEBP", lossless=True, exif=exif_bytes(1)))
    add("bad_webp_truncated.webp", enc(chelsea, "WEBP", quality=80)[:700], "WebP cut short")
    vx = wb.index(b"VP8X")
    wb[vx + 12:vx + 18] = bytes([0xFF, 0x3F, 0x00, 0xFF, 0x3F, 0x00])   # canvas 16384x16384
    add("bad_webp_huge.webp", bytes(wb), "WebP VP8X canvas 16384x16384")
    gt = enc(coffee.quantize(colors=64), "GIF")
    add("bad_gif_truncated.gif", gt[: len(gt) // 2], "GIF cut in half")
    return files


# ---- main ----------------------------------------------------------------------

VERSIONS_HEAD = "## Image fixtures (`tests/fixtures/images/`)"


def versions():
    return {
        "python": platform.python_version(),
        "mlx-vlm": metadata.version("mlx-vlm"),
        "pillow": metadata.version("pillow"),
        "scikit-image": metadata.version("scikit-image"),
        "numpy": metadata.version("numpy"),
        "libjpeg-turbo (Pillow's)": features.version("libjpeg_turbo"),
        "libwebp (Pillow's)": features.version("webp"),
        "zlib (Pillow's)": features.version("zlib"),
    }


def update_versions_md(vers):
    path = os.path.join(ROOT, "tests", "fixtures", "VERSIONS.md")
    text = open(path).read() if os.path.exists(path) else ""
    pins = "\n".join(f"{k}=={v}" for k, v in vers.items())
    section = (f"{VERSIONS_HEAD}\n\nWritten by `tools/reference/gen_images.py` (mlx-vlm's `load_image` + "
               f"`np.asarray`), with:\n\n```\n{pins}\n```\n")
    if VERSIONS_HEAD in text:  # replace this section only, up to the next "## " heading
        start = text.index(VERSIONS_HEAD)
        nxt = text.find("\n## ", start + len(VERSIONS_HEAD))
        rest = text[nxt + 1:] if nxt >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "images"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for fn in os.listdir(args.out):
        os.remove(os.path.join(args.out, fn))

    entries = []
    total = 0
    for name, blob, note in build_files():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(blob)
        total += len(blob)
        e = {"file": name, "note": note, "bytes": len(blob)}
        try:
            arr = reference(blob)
        except Exception as ex:  # the reference refuses the file
            if not name.startswith("bad_"):
                raise SystemExit(f"{name}: reference failed unexpectedly: {ex}")
            msg = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "<bytes>", f"{type(ex).__name__}: {ex}")
            e.update(expect="error", reference=msg[:200])
        else:
            if name.startswith("bad_"):
                raise SystemExit(f"{name}: the reference decoded a file meant to be hostile")
            h, w, _ = arr.shape
            ok = not name.startswith("unsupported_")
            e.update(expect="ok" if ok else "error", w=w, h=h,
                     sha256=hashlib.sha256(arr.tobytes()).hexdigest(), pixels=samples(arr))
            if not ok:
                e["reference"] = "decoded by the reference; refused by optiq (see note)"
        entries.append(e)

    vers = versions()
    doc = {
        "generator": "tools/reference/gen_images.py",
        "reference": "mlx_vlm.utils.load_image(BytesIO(bytes)) -> np.asarray(img, dtype=np.uint8), (h, w, 3)",
        "versions": vers,
        "files": entries,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total += os.path.getsize(os.path.join(args.out, "expected.json"))
    update_versions_md(vers)
    print(f"wrote {len(entries)} files to {args.out}, {total} bytes")
    if total > MAX_TOTAL:
        raise SystemExit(f"fixtures are {total} bytes, over the {MAX_TOTAL} budget")


if __name__ == "__main__":
    main()
