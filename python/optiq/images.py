"""Turning the images a caller passes into liboptiq's optiq_image entries.

Accepted: a file path (str or os.PathLike, or a file:// URL), a data: URL
(decoded by the library), an http(s) URL (downloaded here, see below), the
encoded bytes of a JPEG / PNG / WebP / GIF / BMP file (bytes, bytearray,
memoryview), and a PIL image when Pillow is installed (encoded to PNG here,
losslessly). Decoding, resizing and everything after it happen in the library.

http(s) URLs are fetched with urllib rather than with the server's fetcher
(src/server/fetch.c): that one refuses loopback, private and link-local
addresses because the server fetches on behalf of remote clients, while here
the caller fetches for itself (a URL on localhost or the LAN is a legitimate
input), and urllib honours the usual proxy variables. The same limits as the
server's defaults apply: 20 MiB per image and a 10 s timeout.
"""
import ctypes
import os
import urllib.error
import urllib.parse
import urllib.request

from .errors import OptiqError

MAX_IMAGE_BYTES = 20 << 20
FETCH_TIMEOUT_S = 10.0


def _pil_image_class():
    try:
        from PIL import Image  # noqa: F401  (optional dependency)
    except Exception:
        return None
    return Image.Image


def fetch_url(url, max_bytes=MAX_IMAGE_BYTES, timeout=FETCH_TIMEOUT_S):
    """The bytes at an http(s) URL (at most max_bytes)."""
    req = urllib.request.Request(url, headers={"User-Agent": "optiq-python"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise OptiqError("image %s: HTTP %d %s" % (url, e.code, e.reason), status=1) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise OptiqError("image %s: %s" % (url, reason), status=1) from None
    if len(data) > max_bytes:
        raise OptiqError("image %s: larger than %d bytes" % (url, max_bytes), status=3)
    if not data:
        raise OptiqError("image %s: empty response" % url, status=3)
    return data


def is_inline_source(obj):
    """True when obj can travel inside a JSON message as a string source."""
    return isinstance(obj, str)


class ImageArray:
    """A C array of optiq_image built from Python images; keeps every buffer
    it points to alive for as long as the object lives."""

    def __init__(self, images, max_soft_tokens=0):
        from ._native import Image

        self._keep = []
        n = len(images)
        self.array = (Image * n)() if n else None
        self.count = n
        for i, obj in enumerate(images):
            entry = self.array[i]
            entry.max_soft_tokens = int(max_soft_tokens or 0)
            kind, value = normalize(obj, i)
            if kind == "source":
                b = value.encode("utf-8")
                self._keep.append(b)
                entry.source = b
            else:
                buf = ctypes.create_string_buffer(value, len(value))
                self._keep.append(buf)
                entry.data = ctypes.cast(buf, ctypes.c_void_p)
                entry.size = len(value)

    def pointer(self):
        return self.array


def normalize(obj, index=0):
    """("source", path-or-data-URL) or ("bytes", encoded image bytes) for one image."""
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, bytes) and not obj.startswith(b"data:"):
        if not obj:
            raise OptiqError("image %d: empty bytes" % (index + 1), status=3)
        return "bytes", obj
    if isinstance(obj, (bytearray, memoryview)):
        data = bytes(obj)
        if not data:
            raise OptiqError("image %d: empty bytes" % (index + 1), status=3)
        return "bytes", data
    if isinstance(obj, bytes):
        obj = obj.decode("ascii", "replace")
    if isinstance(obj, str):
        low = obj[:8].lower()
        if low.startswith("http://") or low.startswith("https://"):
            return "bytes", fetch_url(obj)
        if low.startswith("file://"):
            return "source", urllib.request.url2pathname(urllib.parse.urlparse(obj).path)
        if not obj:
            raise OptiqError("image %d: empty string (expected a path or URL)" % (index + 1), status=3)
        return "source", obj
    pil = _pil_image_class()
    if pil is not None and isinstance(obj, pil):
        import io

        out = io.BytesIO()
        img = obj
        if img.mode not in ("RGB", "RGBA", "L", "LA", "P", "I;16", "1"):
            img = img.convert("RGB")
        img.save(out, format="PNG")
        return "bytes", out.getvalue()
    raise OptiqError(
        "image %d: unsupported type %s (expected a path, an http(s) or data: URL, bytes%s)"
        % (index + 1, type(obj).__name__, ", or a PIL image" if pil is not None else "; PIL images need Pillow"),
        status=3,
    )
