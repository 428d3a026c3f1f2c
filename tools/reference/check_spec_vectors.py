"""Check the worked vectors and behavioural claims of docs spec mlx-quant-format.md
(sections 5, 6, 7, 9) against the real MLX CPU build, and dump the vectors as MLX
computes them into tests/fixtures/quant/spec_vectors.safetensors.

Prints one line per claim: AGREE (MLX confirms the spec), DIFFER (MLX contradicts it,
with what MLX does instead) or INFO (a fact the spec does not state).  Then cross-checks
the numpy model in quant_model.py, which states the rules in tests/fixtures/quant/README.md,
against MLX on every fixture file and on random data.  Exits non-zero only if that model
check fails (i.e. the README's rules no longer describe the installed MLX).

Usage: python tools/reference/check_spec_vectors.py [--fixtures tests/fixtures/quant]
"""

import argparse
import glob
import json
import math
import os
import struct
import sys
import tempfile

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant_model as qm  # noqa: E402

RESULTS = {"AGREE": 0, "DIFFER": 0, "INFO": 0}


def report(kind, claim, evidence):
    RESULTS[kind] += 1
    print(f"{kind:6} {claim}\n       {evidence}")


def words(a):
    return " ".join("0x%08X" % int(v) for v in np.array(a).reshape(-1))


def bf16hex(a):
    return " ".join("0x%04X" % int(v) for v in np.array(a.view(mx.uint16)).reshape(-1))


def tonp(a):
    """mx array -> numpy (bf16 as exactly-representing float32)."""
    if a.dtype == mx.bfloat16:
        return qm.bf16_value(np.array(a.view(mx.uint16)))
    return np.array(a)


def parse_words(s):
    return [int(t, 16) for t in s.split()]


def check(claim, ok, evidence_ok, evidence_bad=None):
    report("AGREE" if ok else "DIFFER", claim, evidence_ok if ok else (evidence_bad or evidence_ok))


# ---- section 5: packing ----------------------------------------------------------------------

SPEC_PACK = {
    2: "0xE4E4E4E4 0xE4E4E4E4",
    3: "0x88FAC688 0xC688FAC6 0xFAC688FA",
    4: "0x76543210 0xFEDCBA98 0x76543210 0xFEDCBA98",
    5: "0x8A418820 0xC5A92839 0xCA307B9A 0x38BDAB49 0xFFBBCDEB",
    6: "0x440C2040 0xA2481C61 0x3CE34C2C 0x544D2450 0xA6585D65 0x7DE75C6D",
    8: " ".join("0x%08X" % (0x03020100 + 0x04040404 * k) for k in range(8)),
}


def pack_vector(bits):
    """Make mx.quantize emit the codes c_i = i mod 2^b (i < 32) in the first b words.

    Row of 64 values v_i = c_i - n (n = 2^b - 1) with c_i = n for i >= 32 and group size 64:
    min = -n, max = 0, so MLX picks scale 1 and bias -n and the codes are exactly c_i."""
    n = (1 << bits) - 1
    c = [i % (1 << bits) for i in range(32)] + [n] * 32
    w = mx.array([[float(v - n) for v in c]], dtype=mx.float32).astype(mx.bfloat16)
    wq, s, b = mx.quantize(w, group_size=64, bits=bits)
    assert float(s[0, 0].astype(mx.float32)) == 1.0 and float(b[0, 0].astype(mx.float32)) == -n
    return wq[:, :bits], c[:32]


def check_packing(out):
    for bits in (2, 3, 4, 5, 6, 8):
        wq, codes = pack_vector(bits)
        out[f"pack_b{bits}"] = wq
        got = words(wq)
        model = words(qm.pack(np.array([codes]), bits))
        check(f"sec.5 packing vector b={bits} (codes i mod 2^b)",
              got == SPEC_PACK[bits] and model == got,
              f"mx.quantize packs {got}",
              f"mx.quantize packs {got}; spec says {SPEC_PACK[bits]}; model {model}")


# ---- section 9: affine examples --------------------------------------------------------------

def affine_example(name, vals, bits, out):
    w = mx.array([vals], dtype=mx.float32).astype(mx.bfloat16)
    wq, s, b = mx.quantize(w, group_size=32, bits=bits)
    deq = mx.dequantize(wq, s, b, group_size=32, bits=bits)
    out[f"{name}_w"], out[f"{name}_wq"], out[f"{name}_scales"] = w, wq, s
    out[f"{name}_biases"], out[f"{name}_deq"] = b, deq
    codes = qm.unpack(np.array(wq), bits, 32).reshape(-1).tolist()
    return words(wq), bf16hex(s), bf16hex(b), codes


def check_affine_examples(out):
    a_vals = [-1 + i / 16 for i in range(32)]
    wds, s, b, q = affine_example("A", a_vals, 4, out)
    spec_cpu = "0x43222100 0x87666544 0xCBAAA988 0xFFEEEDCC"
    spec_metal = "0x43322110 0x87766554 0xCBBAA998 0xFFFEEDDC"
    check("sec.9 example A, CPU row (rint, ties to even): scale 0x3E00, bias 0xBF80, "
          "words " + spec_cpu,
          wds == spec_cpu and s == "0x3E00" and b == "0xBF80",
          f"MLX CPU: scale {s}, bias {b}, words {wds}, q = {' '.join(map(str, q))}",
          f"MLX CPU: scale {s}, bias {b}, words {wds}")
    report("INFO", "sec.9 example A, Metal row (round half away) cannot be run on a CPU build",
           f"CPU words differ from the spec's Metal row {spec_metal} exactly at the 15 "
           f"odd i (ties): so the CPU build is NOT bit-compatible with Metal-made files "
           f"when ties occur")

    b_vals = [-(0.5 + i / 64) for i in range(32)]
    wds, s, b, q = affine_example("B", b_vals, 4, out)
    ok = s == "0x3D06" and b == "0xBF7C" and q[:4] == [15, 14, 14, 13] and q[-3:] == [1, 0, 0]
    check("sec.9 example B, CPU row (true min/max): scale 0x3D06, bias 0xBF7C, "
          "q = 15 14 14 13 ... 1 0 0", ok,
          f"MLX CPU: scale {s}, bias {b}, words {wds}, q = {' '.join(map(str, q))}")

    c_vals = [float(v) for v in qm.to_t(np.array([0.05 * math.sin(0.37 * i)
                                                   for i in range(32)], np.float32), qm.BF16)]
    wds, s, b, q = affine_example("C", c_vals, 4, out)
    spec = "0x42001358 0xDFFFECA7 0x2001358B 0xFFFECA74"
    check("sec.9 example C (4-bit): scale 0xBBCC, bias 0x3D4C, words " + spec,
          wds == spec and s == "0xBBCC" and b == "0x3D4C",
          f"MLX CPU: scale {s}, bias {b}, words {wds}")
    wds, s, b, q = affine_example("C3", c_vals, 3, out)
    spec = "0xAB44005C 0x02E5FFFF 0xFFFD5A20"
    check("sec.9 example C (3-bit): scale 0xBC4C, words " + spec,
          wds == spec and s == "0xBC4C",
          f"MLX CPU: scale {s}, bias {b}, words {wds}")

    # 1-bit affine (the spec says MLX core does not support it)
    vals = [0.05 * math.sin(0.37 * i) for i in range(128)]
    w = mx.array([vals], dtype=mx.float32).astype(mx.bfloat16)
    try:
        wq, s, b = mx.quantize(w, group_size=32, bits=1)
        deq = mx.dequantize(wq, s, b, group_size=32, bits=1)
        out.update({"b1_w": w, "b1_wq": wq, "b1_scales": s, "b1_biases": b, "b1_deq": deq})
        codes, sc, bi = qm.affine_quantize_cpu(tonp(w), 32, 1, qm.BF16)
        same = (words(qm.pack(codes, 1)) == words(wq)
                and np.array_equal(qm.to_t(sc, qm.BF16), tonp(s))
                and np.array_equal(qm.to_t(bi, qm.BF16), tonp(b)))
        report("DIFFER", "sec.3.3 '1-bit is not supported by MLX core (bits 2,3,4,5,6,8 only)'",
               f"mx.quantize(..., bits=1) works in {mx.__version__}: scale = max - min, "
               f"bias = min, q = clamp(rint((w - min)/scale), 0, 1), bit i of the LSB-first "
               f"stream = element i (model agrees: {same}); words {words(wq)}")
    except Exception as e:  # older MLX
        report("AGREE", "sec.3.3 1-bit not supported by MLX core", f"mx.quantize raised {e}")


# ---- section 9: fp examples ------------------------------------------------------------------

def check_fp_examples(out):
    vals = [-1.55 + 0.1 * i for i in range(32)]
    w = mx.array([vals], dtype=mx.float32)
    out["fp_w"] = w
    res = {}
    for mode in ("mxfp4", "mxfp8", "nvfp4"):
        wq, s = mx.quantize(w, mode=mode)
        out[f"{mode}_wq"], out[f"{mode}_scales"] = wq, s
        out[f"{mode}_deq"] = mx.dequantize(wq, s, mode=mode, dtype=mx.float32)
        res[mode] = (words(wq), np.array(s).reshape(-1).tolist(),
                     np.array(wq).reshape(-1).view(np.uint8).tolist())

    wds, sc, _ = res["mxfp4"]
    nib = qm.unpack(np.array(out["mxfp4_wq"]), 4, 32).reshape(-1).tolist()
    spec = "0xDEEEEFFF 0x89ABCCDD 0x55443210 0x77766665"
    check("sec.9 fp example mxfp4: scale byte 125 (2^-2), words " + spec,
          sc == [125] and wds == spec, "",
          f"MLX CPU: scale byte {sc[0]} (2^{sc[0] - 127}), words {wds}, nibbles "
          f"{' '.join(map(str, nib))}.  amax = 1.55, amax/6 = 0.2583, log2 = -1.953: the spec "
          f"rounds log2 (-> -2), MLX CPU takes the ceiling (-> -1), so every |w|/scale <= 6")

    wds, sc, by = res["mxfp8"]
    spec_b = [0xFC, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xF7, 0xF6]
    check("sec.9 fp example mxfp8: scale byte 119; first bytes FC FC FB FA F9 F8 F7 F6",
          sc == [119] and by[:8] == spec_b,
          f"MLX CPU: scale byte {sc[0]}, words {wds}")

    wds, sc, _ = res["nvfp4"]
    nib = qm.unpack(np.array(out["nvfp4_wq"]), 4, 32).reshape(-1).tolist()
    spec = "0xDEEEEFFF 0x89ABCCDD"
    check("sec.9 fp example nvfp4 (first 16): scale byte 0x28, words " + spec,
          sc[0] == 0x28 and wds.startswith(spec), "",
          f"MLX CPU: scale bytes {[hex(v) for v in sc]}, words {wds}; element 15 is "
          f"-0.05/0.25 = -0.2 and gets nibble {nib[15]} (+0), the spec's vector has 8 (-0, "
          f"Metal rule); the spec's own 7.3 text predicts +0 for the CPU")

    allb = mx.arange(256).astype(mx.uint8)
    dec = np.array(mx.from_fp8(allb, mx.float32))
    out["e4m3_decode_f32"] = mx.from_fp8(allb, mx.float32)
    want = {0x01: 2.0 ** -9, 0x08: 2.0 ** -6, 0x38: 1.0, 0x7E: 448.0, 0xFE: -448.0}
    check("sec.9 e4m3 decode: 0x01->2^-9, 0x08->2^-6, 0x38->1, 0x7E->448, 0xFE->-448",
          all(dec[k] == v for k, v in want.items()), "mx.from_fp8 agrees")
    q8 = mx.array([[0x7F7E3800] * 8], dtype=mx.uint32)
    d8 = np.array(mx.dequantize(q8, mx.array([[127]], dtype=mx.uint8), mode="mxfp8",
                                dtype=mx.float32))[0, :4].tolist()
    check("sec.6.3 e4m3: MLX decodes 0x7F as 480", dec[0x7F] == 480.0, "",
          f"mx.from_fp8: 0x7F -> {dec[0x7F]}, 0xFF -> {dec[0xFF]}; mxfp8 dequantize of bytes "
          f"00 38 7E 7F at scale 2^0 -> {d8}")
    model_ok = np.array_equal(np.nan_to_num(qm.e4m3_decode(np.arange(256, dtype=np.uint8)),
                                            nan=7.0), np.nan_to_num(dec, nan=7.0))
    check("model e4m3_decode equals mx.from_fp8 for all 256 bytes", model_ok, "yes")


# ---- sections 6 and 7: behavioural claims ---------------------------------------------------

def check_behaviour():
    # fp4 tie policy on the CPU
    vals = [6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5,
            -5, -0.1, -0.0, 0.2, 0.3, 5.01, 4.99, -6, 2.49, 2.51, 0.26, 0.24, 1.76, 1.74,
            3.49, 3.51, 0.74, 0.76]
    w = mx.array([vals], dtype=mx.float32)
    wq, s = mx.quantize(w, mode="mxfp4")
    nib = qm.unpack(np.array(wq), 4, 32).reshape(-1)
    got = {v: qm.FP4_LUT[n] for v, n in zip(vals[:16], nib[:16])}
    ties_down = (got[0.75] == 0.5 and got[1.75] == 1.5 and got[3.5] == 3.0 and got[5] == 4.0
                 and got[0.25] == 0.0 and got[1.25] == 1.0 and got[2.5] == 2.0)
    check("sec.7.3 CPU fp4 = argmin |x - LUT|: ties go to the smaller magnitude "
          "(0.75->0.5, 1.75->1.5, 3.5->3, 5->4)", ties_down,
          "scale 2^0 group: " + ", ".join(f"{k}->{v:g}" for k, v in got.items()))
    check("sec.7.3 CPU fp4: small negatives map to +0 (nibble 0, not 8)",
          nib[8] == 0 and nib[15] == 0 and nib[16] == 0,
          f"-0.25 -> nibble {nib[8]}, -0.1 -> nibble {nib[15]}, -0.0 -> nibble {nib[16]}")
    rne = qm.fp4_encode_rne(np.array(vals, np.float32))
    report("INFO", "fp4: CPU result vs the Metal/spec FP4_RNE rule on the same 32 values",
           f"{int((rne != nib).sum())} of 32 nibbles differ (positions "
           f"{np.nonzero(rne != nib)[0].tolist()})")

    # e8m0 exponent rule
    rows = []
    for amax in (1.5, 1.55, 3.0, 3.01, 6.0, 6.01, 0.75, 1.0):
        ww = mx.zeros((1, 32))
        ww[0, 0] = amax
        _, sb = mx.quantize(ww, mode="mxfp4")
        rows.append((amax, int(sb[0, 0]) - 127, math.log2(amax / 6)))
    ceil_ok = all(e == math.ceil(l) for _, e, l in rows)
    check("sec.7.2 e8m0 exponent = ROUND_AWAY(log2(amax/maxval))", False, "",
          "MLX CPU uses e = ceil(log2(amax/maxval)) (smallest e with amax/maxval <= 2^e): "
          + ", ".join(f"amax {a}: e {e} (log2 {l:.3f})" for a, e, l in rows)
          + f"; ceil holds for all: {ceil_ok}")
    z = mx.zeros((2, 32))
    _, s4 = mx.quantize(z, mode="mxfp4")
    _, s8 = mx.quantize(z, mode="mxfp8")
    check("sec.7.2 amax == 0: the CPU op path yields scale byte 127",
          int(s4[0, 0]) == 127 and int(s8[0, 0]) == 127,
          f"mxfp4 {int(s4[0, 0])}, mxfp8 {int(s8[0, 0])}")
    tiny = mx.zeros((1, 32))
    tiny[0, 0] = 1e-40
    _, st = mx.quantize(tiny, mode="mxfp4")
    report("INFO", "e8m0 exponent is not clamped at -127 on the CPU",
           f"amax 1e-40 gives scale byte {int(st[0, 0])} ((e + 127) mod 256 with e = -135): "
           f"groups with amax below ~6*2^-127 get a wrapped, meaningless scale")

    # e8m0 decode
    q = mx.array([[0x77777777] * 4], dtype=mx.uint32)
    dec = {}
    for b in (0, 1, 127, 254, 255):
        sb = mx.array([[b]], dtype=mx.uint8)
        dec[b] = (float(mx.dequantize(q, sb, mode="mxfp4", dtype=mx.float32)[0, 0]),
                  float(mx.dequantize(q, sb, mode="mxfp4")[0, 0].astype(mx.float32)))
    check("sec.6.4 e8m0 byte 0 decodes to 2^-127 (not 0); byte 255 gives +inf",
          dec[0][0] == 6.0 * 2.0 ** -127 and math.isinf(dec[255][1]),
          "dequantized 6.0 * scale (f32, bf16): " + ", ".join(
              f"{b}: {v[0]:.6g}, {v[1]:.6g}" for b, v in dec.items()))

    # e4m3 encode
    xs = [448, 449, 463.9, 464, 465, 1e9, float("inf"), -float("inf"), float("nan"),
          2.0 ** -10, 1.5 * 2.0 ** -10, 1.0625, 1.1875, 248, -0.0, -1e-5]
    enc = np.array(mx.to_fp8(mx.array(xs)))
    model = qm.e4m3_encode(np.array(xs, np.float32))
    check("sec.7.3 E4M3_RNE_SAT: round to nearest even, |x| >= 448 (incl. inf) saturate to "
          "0x7E/0xFE, NaN -> 0x7E", np.array_equal(enc, model),
          "mx.to_fp8: " + ", ".join(f"{x:g}->{e:02X}" for x, e in zip(xs, enc)))

    # dequantize rounding and dtypes
    rng = np.random.default_rng(5)
    wn = qm.to_t((rng.standard_normal((64, 256)) * 0.05).astype(np.float32), qm.BF16)
    w = mx.array(wn).astype(mx.bfloat16)
    wq, s, b = mx.quantize(w, group_size=64, bits=4)
    d = tonp(mx.dequantize(wq, s, b, group_size=64, bits=4))
    codes = qm.unpack(np.array(wq), 4, 256)
    two = qm.affine_dequantize_two_roundings(codes, tonp(s), tonp(b), 64, qm.BF16)
    one = qm.affine_dequantize_one_rounding(codes, tonp(s), tonp(b), 64, qm.BF16)
    n2 = int((two.view(np.uint32) != d.view(np.uint32)).sum())
    n1 = int((one.view(np.uint32) != d.view(np.uint32)).sum())
    check("sec.6.1 mx.dequantize on CPU = two roundings in the scale dtype: "
          "T(T(q*s) + b)", n2 == 0,
          f"16384 bf16 elements: two-rounding model mismatches {n2}, one-rounding "
          f"T(q*s+b) mismatches {n1}")
    d32 = mx.dequantize(wq, s, b, group_size=64, bits=4, dtype=mx.float32)
    same = bool(mx.all(d32 == mx.dequantize(wq, s, b, group_size=64, bits=4)
                       .astype(mx.float32)))
    report("INFO", "mx.dequantize(..., dtype=mx.float32) with bf16 scales",
           f"bit-identical to the bf16 result upcast: {same} (the arithmetic is still done "
           f"in bf16; dtype only casts the result)")
    dt = {
        "affine bf16 scales": mx.dequantize(wq, s, b, group_size=64, bits=4).dtype,
    }
    for mode in ("mxfp4", "mxfp8", "nvfp4"):
        q2, s2 = mx.quantize(w.astype(mx.float32), mode=mode)
        dt[f"{mode} (f32 input)"] = mx.dequantize(q2, s2, mode=mode).dtype
    check("sec.6.5 default mx.dequantize output dtype for fp modes is bfloat16",
          all(v == mx.bfloat16 for v in dt.values()),
          ", ".join(f"{k}: {v}" for k, v in dt.items()).replace("mlx.core.", ""))

    # quantized_matmul dtypes
    x = mx.array(rng.standard_normal((4, 256)).astype(np.float32))
    info = []
    for xx, name in ((x, "x f32"), (x.astype(mx.bfloat16), "x bf16")):
        info.append(f"affine bf16 scales, {name}: "
                    f"{mx.quantized_matmul(xx, wq, s, b, group_size=64, bits=4).dtype}")
        q2, s2 = mx.quantize(w, mode="mxfp4")
        info.append(f"mxfp4, {name}: {mx.quantized_matmul(xx, q2, s2, mode='mxfp4').dtype}")
    report("INFO", "mx.quantized_matmul output dtype = promote(x, scales) for affine, "
           "x.dtype for fp modes", "; ".join(info).replace("mlx.core.", ""))

    # safetensors writer
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "t.safetensors")
        mx.save_safetensors(p, {"b": mx.zeros((3,), dtype=mx.bfloat16),
                                "a": mx.ones((1, 5), dtype=mx.uint8),
                                "c": mx.zeros((2, 2))}, metadata={"format": "mlx"})
        raw = open(p, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = raw[8:8 + n].decode()
        keys = list(json.loads(hdr).keys())
    check("sec.2 safetensors: compact JSON, sorted keys, no header padding",
          keys == sorted(keys) and " " not in hdr and (8 + n) % 8 != 0,
          f"header length {n} (data starts at byte {8 + n}); header {hdr}")


# ---- model cross-check ----------------------------------------------------------------------

def model_check_file(path):
    t = mx.load(path)
    meta = mx.load(path, return_metadata=True)[1]
    mode, bits, gs = meta["mode"], int(meta["bits"]), int(meta["group_size"])
    k = t["w"].shape[-1]
    bad = []
    for wname, suffix, tt in (("w", "", qm.BF16), ("w_f32", "_f32", qm.F32)):
        if wname not in t:
            continue
        w = tonp(t[wname])
        wq = np.array(t["wq" + suffix])
        sc = t["scales" + suffix]
        if mode == "affine":
            codes, s, b = qm.affine_quantize_cpu(w, gs, bits, tt)
            if not np.array_equal(qm.pack(codes, bits), wq):
                bad.append(f"{wname}: codes")
            if not np.array_equal(qm.to_t(s, tt), tonp(sc)):
                bad.append(f"{wname}: scales")
            if not np.array_equal(qm.to_t(b, tt), tonp(t["biases" + suffix])):
                bad.append(f"{wname}: biases")
            deq = qm.affine_dequantize_two_roundings(qm.unpack(wq, bits, k), tonp(sc),
                                                     tonp(t["biases" + suffix]), gs, tt)
        else:
            codes, sb = qm.fp_quantize_cpu(w, mode, tt)
            if not np.array_equal(qm.pack(codes, bits), wq):
                bad.append(f"{wname}: codes")
            if not np.array_equal(sb, np.array(sc)):
                bad.append(f"{wname}: scales")
            deq = qm.fp_dequantize_cpu(qm.unpack(wq, bits, k), np.array(sc), mode, qm.BF16)
        ref = tonp(t["deq" if suffix == "" else "deq_from_f32"])
        if not np.array_equal(deq.view(np.uint32), ref.view(np.uint32)):
            bad.append(f"{wname}: deq")
    if "deq_f32" in t:
        if mode == "affine":
            d32 = tonp(t["deq"])
        else:
            d32 = qm.fp_dequantize_cpu(qm.unpack(np.array(t["wq"]), bits, k),
                                       np.array(t["scales"]), mode, qm.F32)
        if not np.array_equal(d32.view(np.uint32), np.array(t["deq_f32"]).view(np.uint32)):
            bad.append("deq_f32")
    return bad


def model_check_random():
    rng = np.random.default_rng(77)
    bad = []
    n_groups = 0
    for tt, mt in ((qm.F32, mx.float32), (qm.BF16, mx.bfloat16)):
        w = (rng.standard_normal((1024, 256)) *
             np.exp(rng.uniform(-9, 4, (1024, 1)))).astype(np.float32)
        w[::5, :64] = np.abs(w[::5, :64])
        w[1::5, :64] = -np.abs(w[1::5, :64])
        w[2::5] = np.round(w[2::5] * 64) / 64
        w = qm.to_t(w, tt)
        wm = mx.array(w).astype(mt)
        for bits in (1, 2, 3, 4, 5, 6, 8):
            for gs in (32, 64, 128):
                wq, s, b = mx.quantize(wm, group_size=gs, bits=bits)
                codes, ms, mb = qm.affine_quantize_cpu(w, gs, bits, tt)
                n_groups += w.size // gs
                if not (np.array_equal(qm.pack(codes, bits), np.array(wq))
                        and np.array_equal(qm.to_t(ms, tt), tonp(s))
                        and np.array_equal(qm.to_t(mb, tt), tonp(b))):
                    bad.append(f"affine {tt} b{bits} g{gs}")
                d = tonp(mx.dequantize(wq, s, b, group_size=gs, bits=bits))
                dm = qm.affine_dequantize_two_roundings(codes, tonp(s), tonp(b), gs, tt)
                if not np.array_equal(d.view(np.uint32), dm.view(np.uint32)):
                    bad.append(f"affine deq {tt} b{bits} g{gs}")
        for mode in ("mxfp4", "mxfp8", "nvfp4"):
            bits = 8 if mode == "mxfp8" else 4
            wq, s = mx.quantize(wm, mode=mode)
            codes, sb = qm.fp_quantize_cpu(w, mode, tt)
            n_groups += w.size // (16 if mode == "nvfp4" else 32)
            if not (np.array_equal(qm.pack(codes, bits), np.array(wq))
                    and np.array_equal(sb, np.array(s))):
                bad.append(f"{mode} {tt}")
            if mode != "nvfp4":
                c2, s2 = qm.fp_quantize_cpu(w, mode, tt, exponent_rule="round_log2_t")
                n = int((s2 != np.array(s)).sum())
                report("INFO", f"{mode} {'bf16' if tt is qm.BF16 else 'f32'}: spec rule "
                       f"round(log2) vs MLX", f"{n} of {s.size} scale bytes would differ")
            for ot, mot in ((qm.BF16, None), (qm.F32, mx.float32)):
                d = tonp(mx.dequantize(wq, s, mode=mode, dtype=mot))
                dm = qm.fp_dequantize_cpu(qm.unpack(np.array(wq), bits, 256), np.array(s),
                                          mode, ot)
                if not np.array_equal(np.nan_to_num(d).view(np.uint32),
                                      np.nan_to_num(dm).view(np.uint32)):
                    bad.append(f"{mode} deq {ot}")
    return bad, n_groups


def matmul_error(fixtures):
    """How far mx.quantized_matmul is from an f64 product, against two weight matrices:
    "deq" (the bf16 mx.dequantize output) and "wx" (s*q + b evaluated in float32 from the
    stored scales/biases, which is what the CPU kernel does for float32 x).  The error is
    max |y - ref| / (|x| @ |W|.T) over rows with a non-zero denominator."""
    worst = {}
    for path in sorted(glob.glob(os.path.join(fixtures, "*_b*_g*.safetensors"))):
        if os.path.basename(path).startswith("moe"):
            continue
        t, meta = mx.load(path, return_metadata=True)
        mode, bits, gs = meta["mode"], int(meta["bits"]), int(meta["group_size"])
        k = t["w"].shape[-1]
        codes = qm.unpack(np.array(t["wq"]), bits, k)
        if mode == "affine":
            wx = qm.affine_dequantize_two_roundings(codes, tonp(t["scales"]),
                                                    tonp(t["biases"]), gs, qm.F32)
        else:
            wx = qm.fp_dequantize_cpu(codes, np.array(t["scales"]), mode, qm.F32)
        mats = {"deq": tonp(t["deq"]).astype(np.float64), "wx": wx.astype(np.float64)}
        for xn, yn in (("x", "y"), ("x1", "y1"), ("xb", "yb")):
            x = tonp(t[xn]).astype(np.float64)
            y = tonp(t[yn]).astype(np.float64)
            for wn, wm in mats.items():
                den = np.abs(x) @ np.abs(wm).T
                ok = den > 0
                err = np.abs(y - x @ wm.T)[ok] / den[ok]
                key = f"{'affine' if mode == 'affine' else 'fp'} {yn} vs {wn}"
                worst[key] = max(worst.get(key, 0.0), float(err.max()))
    return worst


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures",
                    default=os.path.join(here, "..", "..", "tests", "fixtures", "quant"))
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)
    print(f"MLX {mx.__version__} on {mx.default_device()}\n")

    out = {}
    check_packing(out)
    check_affine_examples(out)
    check_fp_examples(out)
    check_behaviour()

    print("\n-- model cross-check (quant_model.py vs MLX) --")
    failures = []
    files = sorted(glob.glob(os.path.join(args.fixtures, "*.safetensors")))
    files = [f for f in files if not os.path.basename(f).startswith(("spec_", "moe_"))]
    for f in files:
        bad = model_check_file(f)
        failures += [f"{os.path.basename(f)}: {b}" for b in bad]
    bad, n_groups = model_check_random()
    failures += bad
    if files:
        print(f"fixture files checked: {len(files)}")
    print(f"random groups checked: {n_groups}")
    if failures:
        report("DIFFER", "quant_model.py reproduces MLX bit for bit", "; ".join(failures))
    else:
        report("AGREE", "quant_model.py reproduces MLX bit for bit (quantize codes, scales, "
               "biases; dequantize; all formats, bf16 and f32 inputs)",
               f"{len(files)} fixture files and {n_groups} random groups, 0 mismatches")
    if files:
        worst = matmul_error(args.fixtures)
        report("INFO", "quantized_matmul vs f64 x @ W.T, max |y - ref| / (|x| @ |W|.T)",
               ", ".join(f"{k}: {v:.3g}" for k, v in sorted(worst.items())))

    path = os.path.join(args.fixtures, "spec_vectors.safetensors")
    os.makedirs(args.fixtures, exist_ok=True)
    mx.eval(list(out.values()))
    meta = {"format": "mlx", "generator": "tools/reference/check_spec_vectors.py",
            "mlx_version": mx.__version__, "device": str(mx.default_device()),
            "dtypes": "; ".join(f"{k}={v.dtype}{list(v.shape)}".replace("mlx.core.", "")
                                for k, v in sorted(out.items()))}
    mx.save_safetensors(path, out, metadata=meta)
    print(f"\nwrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes, {len(out)} tensors)")
    print(f"{RESULTS['AGREE']} agree, {RESULTS['DIFFER']} differ, {RESULTS['INFO']} info")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
