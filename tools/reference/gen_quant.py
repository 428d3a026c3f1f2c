"""Generate the quantization reference fixtures in tests/fixtures/quant/ with the real MLX.

One file per format, tests/fixtures/quant/{mode}_b{bits}_g{gs}.safetensors:
  affine  bits {2,3,4,5,6,8} x gs {32,64,128}
  mxfp4   b4 g32,  mxfp8 b8 g32,  nvfp4 b4 g16
plus the 3-D MoE file moe_affine_b4_g64.safetensors.

Every tensor is produced by MLX on its CPU device (the only device of the CPU build).
The input weights come from numpy's generator with a fixed seed, so the inputs do not
depend on MLX's random number generator.  Tensor list, dtypes and the exact MLX calls
are written into each file's __metadata__ and into tests/fixtures/quant/README.md.

Usage: python tools/reference/gen_quant.py [--out tests/fixtures/quant]
"""

import argparse
import os
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant_model as qm  # noqa: E402

SEED = 20260822
O, K = 40, 256
AFFINE_BITS = (2, 3, 4, 5, 6, 8)
AFFINE_GS = (32, 64, 128)
FP_FORMATS = (("mxfp4", 4, 32), ("mxfp8", 8, 32), ("nvfp4", 4, 16))

# Row roles inside w (the same for every file unless marked "mode specific").
ROWS = {
    0: "random normal * 0.05",
    1: "columns 128..255 are 0.0 (an all-zero group for every group size)",
    2: "columns 0..127 all negative (first group all negative for every group size)",
    3: "columns 0..127 all positive (first group all positive for every group size)",
    4: "-1 + (i mod 32)/16: the spec's example A repeated (exact .5 ties at 4 bits)",
    5: "mode specific: affine = a group built so that half the codes are exact .5 ties "
       "for this bit width (values (-2^b + j) * 2^-(b+4), j = 0 .. 2^(b+1)-2); "
       "mxfp4/nvfp4 = fp4 rounding midpoints times per-group factors; "
       "mxfp8 = e4m3 rounding midpoints (normal and subnormal) * 2^-8",
    6: "random with outliers 12.0 at column 5 and -7.5 at column 200",
    7: "random with a huge outlier 4992.0 at column 17 (saturates an nvfp4 e4m3 scale)",
    8: "0.05 * sin(0.37 * i): the spec's example C repeated",
    9: "random normal * 1e-4 (small magnitudes)",
    10: "constant groups: columns 0..127 = 0.03125, columns 128..255 = -0.0625",
    11: "nvfp4 scale midpoints: 16-column chunks whose amax/6 lies on an e4m3 tie "
        "(amax 6.375, 7.125, 6.75, 13.5 ...) or exactly on a power of two",
}
ROWS_RANDOM = "rows 12..39: random normal * 0.05"


# ---- input weights ------------------------------------------------------------------------

def fp4_midpoint_row():
    base = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,
            -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.1]
    # One factor per 32 columns: powers of two keep the values exact midpoints after the
    # e8m0 scale; 1.125 / 0.5625 put them on midpoints of the nvfp4 e4m3 scale.
    factors = [1.0, 2.0 ** -3, 2.0 ** -5, 1.125, 0.5625 * 2.0 ** -4, 2.0 ** -7, 0.3125, 0.5]
    row = []
    for f in factors:
        row += [v * f for v in base] * 2
    row[31] = -0.0
    return np.array(row, dtype=np.float32)


def e4m3_midpoint_row():
    sub = [(2 * k + 1) * 2.0 ** -10 for k in range(8)]        # subnormal midpoints
    norm = [1.0625, 1.1875, 1.3125, 2.125, 8.5, 9.5, 12.5, 13.5, 248.0,
            2.0 ** -6 + 2.0 ** -10, 0.5 * 1.0625, 232.0]             # normal midpoints
    g = [448.0] + sub + norm + [-v for v in norm[:8]] + [-0.0, -2.0 ** -10, 100.0]
    g = g[:32]
    assert len(g) == 32
    row = np.array(g * (K // 32), dtype=np.float32) * np.float32(2.0 ** -8)
    return row


def nvfp4_scale_row():
    amaxes = [6.375, 7.125, 6.75, 13.5, 6.0, 3.0, 0.1875, 2688.0 / 64,
              6.0 * 1.0625 * 0.5, 6.0 * 1.4375, 0.75, 12.0, 6.0 * 1.9375, 6.5, 5.25, 1.5]
    rng = np.random.default_rng(SEED + 11)
    row = []
    for a in amaxes:
        chunk = rng.uniform(-1, 1, 16).astype(np.float32) * np.float32(a * 0.9)
        chunk[3] = a
        row += list(chunk)
    return np.array(row, dtype=np.float32)


def affine_tie_row(bits):
    """Group with w_min = -2^b, w_max = 2^b - 2 (scaled): MLX derives scale = 2 and
    bias = -2^b, so each odd j gives the exact code j/2 (a .5 tie)."""
    hi = 2 ** (bits + 1) - 2
    rng = np.random.default_rng(SEED + bits)
    row = []
    for _ in range(K // 32):
        j = [0, hi] + list(rng.integers(0, hi // 2, 30) * 2 + 1)
        row += j
    row = (np.array(row, dtype=np.float32) - np.float32(2 ** bits)) * np.float32(2.0 ** -(bits + 4))
    return row


def make_weights(mode, bits):
    """Returns (w_f32_exact_specials, w_bf16_as_f32): the f32 input keeps full float32 random
    values, the bf16 input is the same matrix rounded to bf16.  Special rows hold values that
    are exact in bf16, so both inputs share them bit for bit."""
    rng = np.random.default_rng(SEED)
    w = (rng.standard_normal((O, K)) * 0.05).astype(np.float32)
    w[1, 128:] = 0.0
    w[2, :128] = -np.abs(w[2, :128])
    w[3, :128] = np.abs(w[3, :128])
    w[4] = np.array([-1 + (i % 32) / 16 for i in range(K)], dtype=np.float32)
    if mode == "affine":
        w[5] = affine_tie_row(bits)
    elif mode == "mxfp8":
        w[5] = e4m3_midpoint_row()
    else:
        w[5] = fp4_midpoint_row()
    w[6, 5] = 12.0
    w[6, 200] = -7.5
    w[7, 17] = 4992.0
    w[8] = qm.to_t(np.array([0.05 * np.sin(0.37 * (i % 32)) for i in range(K)],
                            dtype=np.float32), qm.BF16)
    w[9] = (rng.standard_normal(K) * 1e-4).astype(np.float32)
    w[10, :128] = 0.03125
    w[10, 128:] = -0.0625
    w[11] = nvfp4_scale_row()
    special = list(range(1, 12))
    w_bf = qm.to_t(w, qm.BF16)
    w_f32 = w.copy()
    # Special rows must be bit-identical in both inputs (only rows 0 and 12.. keep f32 noise;
    # rows 1-3, 6, 7, 9 and 11 are mostly random and take the bf16-rounded values too).
    w_f32[special] = w_bf[special]
    return w_f32, w_bf


def make_activations():
    rng = np.random.default_rng(SEED + 1000)
    x = rng.standard_normal((4, K)).astype(np.float32)
    x1 = rng.standard_normal((1, K)).astype(np.float32)
    xb = qm.to_t(rng.standard_normal((4, K)).astype(np.float32), qm.BF16)
    return x, x1, xb


# ---- one fixture file ----------------------------------------------------------------------

def quantize_set(w, gs, bits, mode):
    if mode == "affine":
        wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits, mode=mode)
    else:
        wq, scales = mx.quantize(w, group_size=gs, bits=bits, mode=mode)
        biases = None
    return wq, scales, biases


def fixture(mode, bits, gs):
    w_f32_np, w_bf_np = make_weights(mode, bits)
    w = mx.array(w_bf_np).astype(mx.bfloat16)          # exact: values are bf16 already
    w_f32 = mx.array(w_f32_np)
    x_np, x1_np, xb_np = make_activations()
    x, x1 = mx.array(x_np), mx.array(x1_np)
    xb = mx.array(xb_np).astype(mx.bfloat16)

    wq, scales, biases = quantize_set(w, gs, bits, mode)
    deq = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits, mode=mode)
    deq_f32 = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits, mode=mode,
                            dtype=mx.float32)
    wq32, scales32, biases32 = quantize_set(w_f32, gs, bits, mode)
    deq32 = mx.dequantize(wq32, scales32, biases32, group_size=gs, bits=bits, mode=mode)

    def qmm(xx):
        return mx.quantized_matmul(xx, wq, scales, biases, transpose=True,
                                   group_size=gs, bits=bits, mode=mode)

    y, y1, yb = qmm(x), qmm(x1), qmm(xb)

    t = {
        "w": w, "wq": wq, "scales": scales, "deq": deq, "deq_f32": deq_f32,
        "w_f32": w_f32, "wq_f32": wq32, "scales_f32": scales32, "deq_from_f32": deq32,
        "x": x, "y": y, "x1": x1, "y1": y1, "xb": xb, "yb": yb,
    }
    if mode == "affine":
        t["biases"] = biases
        t["biases_f32"] = biases32
    mx.eval(list(t.values()))

    b_arg = "biases" if mode == "affine" else "None"
    calls = {
        "wq,scales" + (",biases" if mode == "affine" else ""):
            f"mx.quantize(w, group_size={gs}, bits={bits}, mode='{mode}')",
        "deq": f"mx.dequantize(wq, scales, {b_arg}, group_size={gs}, bits={bits}, "
               f"mode='{mode}')",
        "deq_f32": f"mx.dequantize(wq, scales, {b_arg}, group_size={gs}, bits={bits}, "
                   f"mode='{mode}', dtype=mx.float32)",
        "wq_f32,scales_f32" + (",biases_f32" if mode == "affine" else ""):
            f"mx.quantize(w_f32, group_size={gs}, bits={bits}, mode='{mode}')",
        "deq_from_f32": f"mx.dequantize(wq_f32, scales_f32, "
                        f"{'biases_f32' if mode == 'affine' else 'None'}, group_size={gs}, "
                        f"bits={bits}, mode='{mode}')",
        "y / y1 / yb": f"mx.quantized_matmul(x | x1 | xb, wq, scales, {b_arg}, "
                       f"transpose=True, group_size={gs}, bits={bits}, mode='{mode}')",
    }
    meta = {
        "format": "mlx",
        "generator": "tools/reference/gen_quant.py",
        "mlx_version": mx.__version__,
        "device": str(mx.default_device()),
        "seed": str(SEED),
        "mode": mode, "bits": str(bits), "group_size": str(gs),
        "rows": "; ".join(f"{k}: {v}" for k, v in ROWS.items()) + "; " + ROWS_RANDOM,
        "dtypes": "; ".join(f"{k}={v.dtype}{list(v.shape)}".replace("mlx.core.", "")
                            for k, v in sorted(t.items())),
    }
    for k, v in calls.items():
        meta["call." + k] = v
    return t, meta


def moe_fixture():
    E, Om, Km, gs, bits = 3, 16, 128, 64, 4
    rng = np.random.default_rng(SEED + 7)
    w_np = qm.to_t((rng.standard_normal((E, Om, Km)) * 0.05).astype(np.float32), qm.BF16)
    w_np[1, 0, :64] = 0.0                      # one all-zero group in expert 1
    w_np[2, 1, :64] = -np.abs(w_np[2, 1, :64])  # one all-negative group in expert 2
    w = mx.array(w_np).astype(mx.bfloat16)
    x = mx.array(rng.standard_normal((2, Km)).astype(np.float32))
    idx = mx.array([2, 0], dtype=mx.int32)
    wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits, mode="affine")
    deq = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits, mode="affine")
    y3 = mx.gather_qmm(x[:, None, :], wq, scales, biases, rhs_indices=idx, transpose=True,
                       group_size=gs, bits=bits, mode="affine")
    y = y3[:, 0, :]
    t = {"w": w, "wq": wq, "scales": scales, "biases": biases, "deq": deq,
         "x": x, "idx": idx, "y": y}
    mx.eval(list(t.values()))
    meta = {
        "format": "mlx",
        "generator": "tools/reference/gen_quant.py",
        "mlx_version": mx.__version__,
        "device": str(mx.default_device()),
        "seed": str(SEED + 7),
        "mode": "affine", "bits": str(bits), "group_size": str(gs),
        "call.wq,scales,biases": f"mx.quantize(w, group_size={gs}, bits={bits}, mode='affine')"
                                 f"  # w is [E={E}, O={Om}, K={Km}]",
        "call.deq": f"mx.dequantize(wq, scales, biases, group_size={gs}, bits={bits}, "
                    f"mode='affine')",
        "call.y": f"mx.gather_qmm(x[:, None, :], wq, scales, biases, rhs_indices=idx, "
                  f"transpose=True, group_size={gs}, bits={bits}, mode='affine')[:, 0, :]"
                  f"  # raw result shape {list(y3.shape)}; row r uses expert idx[r]",
        "dtypes": "; ".join(f"{k}={v.dtype}{list(v.shape)}".replace("mlx.core.", "")
                            for k, v in sorted(t.items())),
    }
    return t, meta


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "quant"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    mx.set_default_device(mx.cpu)

    jobs = [("affine", b, g) for b in AFFINE_BITS for g in AFFINE_GS] + list(FP_FORMATS)
    total = 0
    for mode, bits, gs in jobs:
        t, meta = fixture(mode, bits, gs)
        path = os.path.join(args.out, f"{mode}_b{bits}_g{gs}.safetensors")
        mx.save_safetensors(path, t, metadata=meta)
        total += os.path.getsize(path)
        print(f"{os.path.relpath(path)}  {os.path.getsize(path)} bytes")
    t, meta = moe_fixture()
    path = os.path.join(args.out, "moe_affine_b4_g64.safetensors")
    mx.save_safetensors(path, t, metadata=meta)
    total += os.path.getsize(path)
    print(f"{os.path.relpath(path)}  {os.path.getsize(path)} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
