"""Plain-numpy model of what MLX's CPU build does in mx.quantize / mx.dequantize.

Written from the observed behaviour of the pinned MLX release (see
tests/fixtures/quant/README.md) so that check_spec_vectors.py can prove, on
thousands of groups, that the rules written in the README are the rules MLX
follows.  The C implementation follows the same rules; this file is the
executable form of them, independent of MLX.

Every function works on numpy arrays.  "T" is the dtype of the input weights
(np.float32 or "bf16"); bf16 values are carried as float32 arrays that hold
exactly representable bf16 numbers, and `to_t` performs MLX's float -> T
rounding (round to nearest, ties to even).
"""

import numpy as np

BF16 = "bf16"
F32 = np.float32

FP4_LUT = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


# ---- float helpers -------------------------------------------------------------------------

def bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (NaN -> 0x7FC0)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, np.uint16(0x7FC0), r)


def bf16_value(bits):
    """uint16 bf16 bit patterns -> float32 values."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def to_t(x, t):
    """Round a float32 array to dtype t (F32 or BF16), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    if t is BF16:
        return bf16_value(bf16_bits(x))
    return x


# ---- fp8 e4m3 and fp4 e2m1 -----------------------------------------------------------------

def e4m3_decode(b):
    """uint8 e4m3 codes -> float32.  0x7F / 0xFF decode to NaN in this MLX release."""
    b = np.asarray(b, dtype=np.uint8).astype(np.int32)
    s = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 0xF
    m = b & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    v = np.where((b & 0x7F) == 0x7F, np.nan, v)
    return (s * v).astype(np.float32)


_E4M3_POS = e4m3_decode(np.arange(0x7F, dtype=np.uint8)).astype(np.float64)  # codes 0..0x7E


def e4m3_encode(x):
    """float32 -> uint8 e4m3: round to nearest, ties to even code, |x| >= 448 and
    +-inf saturate to 0x7E/0xFE, NaN -> 0x7E, sign kept for values that round to 0."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x).astype(np.float64)
    sign = np.where(np.signbit(x), 0x80, 0)
    hi = np.clip(np.searchsorted(_E4M3_POS, a, side="left"), 1, 0x7E)
    lo = hi - 1
    dlo = a - _E4M3_POS[lo]
    dhi = _E4M3_POS[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a >= 448.0, 0x7E, code)
    code = np.where(np.isnan(x), 0x7E, code)
    sign = np.where(np.isnan(x), 0, sign)
    return (code | sign).astype(np.uint8)


def fp4_encode_argmin(x, t):
    """MLX CPU fp4 element choice: index of the first minimum of T(|T(x - LUT[i])|) over the
    16-entry LUT (so ties go to the smaller magnitude and -0.2 becomes +0)."""
    x = np.asarray(x, dtype=np.float32)
    lut = to_t(FP4_LUT, t)
    d = np.abs(to_t(x[..., None] - lut, t))
    return np.argmin(d, axis=-1).astype(np.uint8)


def fp4_encode_rne(x):
    """fp4 rounding of the Metal kernel / the spec's FP4_RNE (ties to even mantissa, sign from
    signbit).  Not what the CPU build does; kept to show the difference."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    code = np.select(
        [a > 5.0, a >= 3.5, a > 2.5, a >= 1.75, a > 1.25, a >= 0.75, a > 0.25],
        [7, 6, 5, 4, 3, 2, 1], 0)
    return (code | np.where(np.signbit(x), 8, 0)).astype(np.uint8)


# ---- packing -------------------------------------------------------------------------------

def pack(codes, bits):
    """codes [..., K] (ints < 2^bits) -> uint32 [..., K*bits/32], LSB-first bit stream per row."""
    codes = np.asarray(codes, dtype=np.uint64)
    shape = codes.shape
    k = shape[-1]
    flat = codes.reshape(-1, k)
    nbits = k * bits
    out = np.zeros((flat.shape[0], nbits // 32), dtype=np.uint64)
    for i in range(k):
        for j in range(bits):
            bit = (flat[:, i] >> np.uint64(j)) & np.uint64(1)
            pos = i * bits + j
            out[:, pos // 32] |= bit << np.uint64(pos % 32)
    return out.astype(np.uint32).reshape(shape[:-1] + (nbits // 32,))


def unpack(words, bits, k):
    """uint32 [..., k*bits/32] -> codes [..., k] (inverse of pack)."""
    words = np.asarray(words, dtype=np.uint32)
    shape = words.shape
    b = words.reshape(-1, shape[-1]).view(np.uint8)  # little-endian host
    out = np.zeros((b.shape[0], k), dtype=np.uint32)
    for i in range(k):
        bit = i * bits
        byte, sh = bit >> 3, bit & 7
        v = b[:, byte].astype(np.uint32)
        if sh + bits > 8:
            v |= b[:, byte + 1].astype(np.uint32) << 8
        out[:, i] = (v >> sh) & ((1 << bits) - 1)
    return out.reshape(shape[:-1] + (k,))


# ---- affine ---------------------------------------------------------------------------------

def affine_quantize_cpu(w, gs, bits, t):
    """MLX CPU affine quantizer.  w: float32 array holding T values, last axis K.
    Returns (codes [..., K] uint32, scale_f32 [..., K/gs], bias_f32 [..., K/gs]) where the
    float32 scale/bias are the unrounded ones used for the codes; store to_t() of them."""
    w = np.asarray(w, dtype=np.float32)
    g = w.reshape(w.shape[:-1] + (w.shape[-1] // gs, gs))
    n_bins = np.float32((1 << bits) - 1)
    eps = np.float32(1e-7)
    w_max = g.max(axis=-1)
    w_min = g.min(axis=-1)
    if bits == 1:
        scale = np.maximum(w_max - w_min, eps)
        bias = w_min
    else:
        mask = np.abs(w_min) > np.abs(w_max)
        scale = np.maximum((w_max - w_min) / n_bins, eps).astype(np.float32)
        scale = np.where(mask, scale, -scale).astype(np.float32)
        edge = np.where(mask, w_min, w_max).astype(np.float32)
        q0 = np.rint(edge / scale).astype(np.float32)
        nz = q0 != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(nz, edge / q0, scale).astype(np.float32)
        bias = np.where(nz, edge, np.float32(0)).astype(np.float32)
    q = np.rint((g - bias[..., None]) / scale[..., None]).astype(np.float32)
    q = np.clip(q, 0, n_bins).astype(np.uint32)
    return q.reshape(w.shape), scale.astype(np.float32), bias.astype(np.float32)


def affine_dequantize_two_roundings(codes, scales, biases, gs, t):
    """T(T(q * s) + b): what mx.dequantize computes on the CPU (scales/biases of dtype T)."""
    q = np.asarray(codes, dtype=np.float32)
    g = q.reshape(q.shape[:-1] + (q.shape[-1] // gs, gs))
    out = to_t(to_t(g * scales[..., None], t) + biases[..., None], t)
    return out.reshape(q.shape)


def affine_dequantize_one_rounding(codes, scales, biases, gs, t):
    """T(float(q) * float(s) + float(b)) with one rounding at the end (float32 math)."""
    q = np.asarray(codes, dtype=np.float32)
    g = q.reshape(q.shape[:-1] + (q.shape[-1] // gs, gs))
    out = to_t(g * scales[..., None] + biases[..., None], t)
    return out.reshape(q.shape)


# ---- fp modes -------------------------------------------------------------------------------

def _log2_t(s, t):
    with np.errstate(divide="ignore"):
        return to_t(np.log2(s.astype(np.float32)), t)


def fp_quantize_cpu(w, mode, t, exponent_rule="ceil_exact"):
    """MLX CPU mxfp4 / mxfp8 / nvfp4 quantizer.  Returns (codes [..., K] uint8, scales uint8).

    exponent_rule (mx modes only) selects how the e8m0 exponent is derived from
    s = T(amax / maxval):
      "ceil_exact"   smallest integer e with s <= 2^e            -- what the pinned MLX CPU does
      "ceil_log2_t"  ceil(T(log2(s))), log2 rounded to T first  -- a plausible variant (rejected)
      "round_log2_t" rint(T(log2(s)))   -- the rule of older MLX releases / the spec's 7.2
    """
    w = np.asarray(w, dtype=np.float32)
    gs = 16 if mode == "nvfp4" else 32
    maxval = np.float32(448.0 if mode == "mxfp8" else 6.0)
    g = w.reshape(w.shape[:-1] + (w.shape[-1] // gs, gs))
    amax = np.abs(g).max(axis=-1)
    s = to_t(amax / maxval, t)
    if mode == "nvfp4":
        sb = e4m3_encode(s)
        sv = to_t(e4m3_decode(sb), t)
        # A group whose scale underflows to e4m3 0 gets all-zero codes.
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(sv[..., None] == 0, np.float32(0), to_t(g / sv[..., None], t))
    else:
        if exponent_rule == "ceil_log2_t":
            e = np.ceil(_log2_t(s, t))
        elif exponent_rule == "round_log2_t":
            e = np.rint(_log2_t(s, t))
        elif exponent_rule == "ceil_exact":
            m, ex = np.frexp(s.astype(np.float64))  # s = m * 2^ex, m in [0.5, 1)
            e = np.where(m == 0.5, ex - 1, ex).astype(np.float64)
        else:
            raise ValueError(exponent_rule)
        e = np.where(s == 0, 0, e).astype(np.int32)
        # No clamping: the byte is (e + 127) mod 256, so groups with amax below ~2^-125
        # wrap around to huge scale bytes (an MLX quirk, irrelevant for real weights).
        sb = ((e + 127) & 0xFF).astype(np.uint8)
        p = to_t(np.power(np.float32(2.0), e.astype(np.float32)), t)
        x = to_t(g / p[..., None], t)
    if mode == "mxfp8":
        codes = e4m3_encode(x)
    else:
        codes = fp4_encode_argmin(x, t)
    return codes.reshape(w.shape), sb


def fp_dequantize_cpu(codes, scales, mode, out_t):
    """MLX CPU fp dequantize: element value times group scale, computed in the output dtype."""
    gs = 16 if mode == "nvfp4" else 32
    c = np.asarray(codes)
    if mode == "mxfp8":
        v = to_t(e4m3_decode(c.astype(np.uint8)), out_t)
    else:
        v = to_t(FP4_LUT[c.astype(np.int64)], out_t)
    if mode == "nvfp4":
        s = to_t(e4m3_decode(scales), out_t)
    else:
        s = to_t(np.power(np.float32(2.0), scales.astype(np.float32) - 127), out_t)
    g = v.reshape(v.shape[:-1] + (v.shape[-1] // gs, gs))
    return to_t(g * s[..., None], out_t).reshape(v.shape)
