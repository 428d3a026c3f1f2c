"""Gemma 4 vision fixtures: the image processor on real photographs, and two tiny random-weight
vision-language folders with mlx-vlm reference outputs.

  tests/fixtures/preprocess/gemma4/          source images (small PNGs cut from scikit-image
                                             photos, plus synthetic edge cases) and cases.json:
                                             mlx-vlm's Gemma4ImageProcessor as its processor
                                             runs it (load_image -> exif/RGB -> aspect-ratio
                                             preserving resize with Pillow bicubic -> x * (1/255)
                                             -> channels first), per case th/tw, soft tokens,
                                             SHA-256 of the float32 [3, th, tw] pixel values and
                                             16 samples; SHA-256 of the patch rows for two cases
  tests/fixtures/models/gemma4-vl-mixed/     encoder-based `gemma4`: E2B-like text tower (PLE,
                                             KV sharing, double-wide MLP) quantized by
                                             mlx_lm.convert with a mixed table, tiny vision tower
                                             (hidden 32, 2 layers) + embed_vision in the bf16
                                             sidecar optiq_vision.safetensors written by
                                             optiq.vlm.sidecar.build_vision_sidecar
  tests/fixtures/models/gemma4-vl-unified/   encoder-free `gemma4_unified`: K-eq-V text side
                                             quantized the same way, vision_embedder (48x48
                                             patches, mm_embed_dim 16) + embed_vision in the
                                             sidecar, bidirectional image blocks

The bf16 Hugging Face style bases (model.language_model.*, model.vision_tower.* /
model.vision_embedder.*, model.embed_vision.*) are written to a temporary folder only.

Reference runs on the MLX CPU device with mlx_vlm.utils.load(<folder>): "bf16" as loaded,
"f32" after model.set_dtype(mx.float32). Test-only files per model folder:
reference_vl.safetensors + reference_vl.json (see its "tensors" and "tensor_notes").

Usage: tools/reference/.venv/bin/python tools/reference/gen_gemma4_vl.py [--out-root tests/fixtures]
"""

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile

import mlx.core as mx

mx.set_default_device(mx.cpu)  # before mlx_vlm.generate creates its stream

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import gen_gemma4 as g4  # noqa: E402  (tokenizer, template, text weights)
from gen_qwen35 import TablePredicate, add_false_entries, margins  # noqa: E402

N_GREEDY = 32
ROW_STEP = 16   # encoder rows kept
LOGIT_STEP = 32  # logits rows kept
PRE_DIR = "preprocess/gemma4"
MAX_SOFT = 70
LM = "language_model.model."

# ---- images ------------------------------------------------------------------------------------

# name -> how it is made; every file is written once and reused by the preprocess cases and by
# the model prompts (paths in the JSON files are relative to tests/fixtures)
PHOTOS = {
    # photo crops (h x w), RGB PNG
    "astronaut_96x128.png": ("astronaut", 30, 150, 96, 128, None),
    "chelsea_120x90.png": ("chelsea", 40, 120, 120, 90, None),
    "coffee_50x100.png": ("coffee", 150, 220, 50, 100, None),
    "coffee_8x8.png": ("coffee", 200, 300, 8, 8, None),
    "coffee_1x1.png": ("coffee", 210, 310, 1, 1, None),
    # grayscale photo (mode L PNG)
    "camera_gray_80x100.png": ("camera", 60, 200, 80, 100, "L"),
    # RGBA (alpha dropped by convert("RGB") without compositing) and palette PNGs
    "logo_rgba_60x72.png": ("logo", 0, 0, 0, 0, "RGBA"),
    "chelsea_palette_64x80.png": ("chelsea", 100, 200, 64, 80, "P"),
}
SYNTH = {
    # smooth synthetic RGB patterns (compress well): extreme aspect ratios and an image that
    # is already at the n_max = 70 target size
    "synth_wide_20x900.png": (20, 900),
    "synth_tall_900x20.png": (900, 20),
    "synth_exact_336x432.png": (336, 432),
}


def synth_pattern(h, w, seed):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.round((127.5 + 120 * np.sin(x / 37.0 + seed) * np.cos(y / 23.0)) / 16) * 16
    g = 255.0 * x / max(w - 1, 1)
    b = 255.0 * y / max(h - 1, 1)
    a = np.stack([r, g, b], axis=-1)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def make_images(dst):
    from PIL import Image
    import skimage.data
    os.makedirs(dst, exist_ok=True)
    info = {}
    for name, (photo, top, left, h, w, mode) in PHOTOS.items():
        a = getattr(skimage.data, photo)()
        if photo == "logo":
            im = Image.fromarray(a).resize((72, 60), Image.BICUBIC)  # RGBA 60 x 72
            assert im.mode == "RGBA"
        elif mode == "L":
            a = a[top:top + h, left:left + w]
            assert a.shape == (h, w) and a.dtype == np.uint8
            im = Image.fromarray(a, mode="L")
        else:
            a = a[top:top + h, left:left + w, :3]
            assert a.shape == (h, w, 3) and a.dtype == np.uint8
            im = Image.fromarray(a)
            if mode == "P":
                im = im.quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=0)
        path = os.path.join(dst, name)
        im.save(path, optimize=True)
        info[name] = {"source": f"skimage.data.{photo}()",
                      "crop_top_left_h_w": None if photo == "logo" else [top, left, h, w],
                      "made": ("Pillow resize of the whole 500x500 RGBA logo to 72x60 "
                               "(bicubic), saved RGBA" if photo == "logo" else
                               {"L": "grayscale crop, saved mode L",
                                "P": "crop quantized to a 32-colour palette (median cut, "
                                     "no dither), saved mode P"}.get(mode, "RGB crop")),
                      "png_mode": im.mode}
    for i, (name, (h, w)) in enumerate(SYNTH.items()):
        im = Image.fromarray(synth_pattern(h, w, i))
        im.save(os.path.join(dst, name), optimize=True)
        info[name] = {"source": "synthetic: r = 16 round((127.5 + 120 sin(x/37 + seed) "
                                "cos(y/23)) / 16), g = 255 x/(w-1), b = 255 y/(h-1), "
                                "rounded, clipped to 0..255",
                      "seed": i, "png_mode": "RGB"}
    return info


def sha(a):
    a = np.ascontiguousarray(a, dtype="<f4")
    return hashlib.sha256(a.tobytes()).hexdigest()


def samples(a):
    flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    idx = np.unique(np.linspace(0, flat.size - 1, 16).round().astype(np.int64))
    return {str(int(i)): float(flat[i]) for i in idx}


def patch_rows(pv_chw, p=16):
    """VisionPatchEmbedder._patchify's reshape/transpose (numpy): [n_patches, p*p*3] in
    (row-in-patch, col-in-patch, channel) order, patches row-major."""
    C, H, W = pv_chw.shape
    x = pv_chw.reshape(C, H // p, p, W // p, p).transpose(1, 3, 2, 4, 0)
    return x.reshape((H // p) * (W // p), p * p * C)


# ---- preprocess cases --------------------------------------------------------------------------

PRE_CASES = (
    [("astronaut_96x128.png", n) for n in (70, 140, 280, 560, 1120)]
    + [("chelsea_120x90.png", n) for n in (70, 140, 280, 560, 1120)]
    + [("camera_gray_80x100.png", 70), ("camera_gray_80x100.png", 280),
       ("coffee_50x100.png", 70),
       ("synth_wide_20x900.png", 70), ("synth_wide_20x900.png", 280),
       ("synth_tall_900x20.png", 70), ("synth_tall_900x20.png", 1120),
       ("coffee_8x8.png", 70), ("coffee_1x1.png", 70), ("coffee_1x1.png", 1120),
       ("synth_exact_336x432.png", 70), ("synth_exact_336x432.png", 140),
       ("logo_rgba_60x72.png", 70), ("chelsea_palette_64x80.png", 70)]
)
PATCH_CHECK = [("astronaut_96x128.png", 70), ("synth_wide_20x900.png", 70)]


def preprocess_cases(img_dir, info):
    from PIL import Image
    from mlx_vlm.models.gemma4.processing_gemma4 import (Gemma4ImageProcessor,
                                                          get_aspect_ratio_preserving_size)
    from mlx_vlm.utils import load_image
    ip = Gemma4ImageProcessor()  # class defaults: p 16, k 3, rescale 1/255, no normalize
    cases = []
    for name, n in PRE_CASES:
        path = os.path.join(img_dir, name)
        raw = Image.open(path)
        img = load_image(path)
        w0, h0 = img.size
        case = {"input": f"{PRE_DIR}/{name}", "png_mode": raw.mode, "h": h0, "w": w0,
                "max_soft_tokens": n}
        try:
            data, counts = ip([img], max_soft_tokens=n)
        except Exception as e:  # noqa: BLE001
            case["error"] = f"{type(e).__name__}: {e}"
            cases.append(case)
            continue
        pv = data["pixel_values"]
        pv = pv[0] if isinstance(pv, list) else pv[0]
        assert pv.dtype == np.float32 and pv.ndim == 3 and pv.shape[0] == 3
        th, tw = int(pv.shape[1]), int(pv.shape[2])
        assert (th, tw) == get_aspect_ratio_preserving_size(h0, w0, 16, n * 9, 3)
        # the steps by hand: Pillow bicubic on uint8 RGB, then u8 * f32(1/255), channels first
        u8 = np.array(img)
        if (th, tw) != (h0, w0):
            u8 = np.array(Image.fromarray(u8).resize((tw, th), resample=Image.BICUBIC))
        mine = (u8.astype(np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)
        assert np.array_equal(mine, pv), name
        case.update({"th": th, "tw": tw, "resized": (th, tw) != (h0, w0),
                     "patches_hw": [th // 16, tw // 16],
                     "num_soft_tokens": int(counts[0]),
                     "pixel_values_shape": [3, th, tw],
                     "pixel_values_sha256": sha(pv),
                     "samples": samples(pv)})
        assert counts[0] == (th // 48) * (tw // 48) <= n
        if (name, n) in PATCH_CHECK:
            rows = patch_rows(pv)
            # explicit formula of spec 6.6: v[(y*16 + x)*3 + ch] = pixel[ch, r*16 + y, c*16 + x]
            pW = tw // 16
            for nidx in (0, 1, pW, rows.shape[0] - 1):
                r, c = divmod(nidx, pW)
                for (y, x, ch) in ((0, 0, 0), (3, 5, 2), (15, 15, 1), (7, 0, 2)):
                    assert rows[nidx, (y * 16 + x) * 3 + ch] == pv[ch, r * 16 + y, c * 16 + x]
            # as the tower computes it (mx ops, f32): reshape/transpose, then 2 * (v - 0.5)
            mpv = mx.array(pv)[None]
            B, C, H, W = mpv.shape
            mrows = mpv.reshape(B, C, H // 16, 16, W // 16, 16).transpose(0, 2, 4, 3, 5, 1)
            mrows = mrows.reshape(B, (H // 16) * (W // 16), C * 256)
            scaled = 2 * (mrows - 0.5)
            mx.eval(mrows, scaled)
            assert np.array_equal(np.array(mrows[0]), rows)
            case["patch_check"] = {
                "shape": list(rows.shape),
                "rows_sha256": sha(rows),
                "rows_scaled_sha256": sha(np.array(scaled[0])),
                "rows_samples": samples(rows),
                "what": "rows_sha256: SHA-256 of the float32 LE [n_patches, 768] patch rows "
                        "(VisionPatchEmbedder._patchify reshape/transpose, order (row-in-patch,"
                        " col-in-patch, channel), patches row-major) before the tower's "
                        "2*(v-0.5); rows_scaled_sha256: after 2*(v-0.5) in float32 (mx ops), "
                        "i.e. the input of input_proj before the cast to the weight dtype"}
        cases.append(case)
    return cases


# ---- model configs -----------------------------------------------------------------------------

VISION_CONFIG = {
    "model_type": "gemma4_vision",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 16,
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "position_embedding_size": 64,
    "default_output_length": 70,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"},
    "use_clipped_linears": False,
    "standardize": False,
    "hidden_activation": "gelu_pytorch_tanh",
    "attention_bias": False,
    "attention_dropout": 0.0,
}

UNIFIED_VISION_CONFIG = {
    "model_type": "gemma4_unified_vision",
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "model_patch_size": 48,
    "mm_embed_dim": 16,
    "mm_posemb_size": 64,
    "num_soft_tokens": 70,
    "output_proj_dims": 16,
    "rms_norm_eps": 1e-6,
}

PROCESSOR_CONFIG = {
    "processor_class": "Gemma4Processor",
    "image_seq_length": MAX_SOFT,
    "image_processor": {
        "image_processor_type": "Gemma4ImageProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": False, "do_convert_rgb": True,
        "patch_size": 16, "pooling_kernel_size": 3, "max_soft_tokens": MAX_SOFT,
    },
}
UNIFIED_PROCESSOR_CONFIG = {
    "processor_class": "Gemma4UnifiedProcessor",
    "image_seq_length": MAX_SOFT,
    "image_processor": {
        "image_processor_type": "Gemma4UnifiedImageProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": False, "do_convert_rgb": True,
        "patch_size": 16, "pooling_kernel_size": 3, "max_soft_tokens": MAX_SOFT,
        "model_patch_size": 48, "mm_posemb_size": 64,
    },
}

# tokenizer attributes the Gemma 4 processors read (tokenizer.image_token etc.)
EXTRA_SPECIAL = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                 "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}

VL_TABLE = {
    LM + "embed_tokens": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.mlp.down_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.1.self_attn.q_proj": {"group_size": 64, "bits": 3, "mode": "affine"},
    LM + "layers.3.self_attn.o_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.6.mlp.up_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.5.mlp.gate_proj": False,
}
UNIFIED_TABLE = {
    LM + "embed_tokens": {"group_size": 64, "bits": 6, "mode": "affine"},
    LM + "layers.3.self_attn.k_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.2.mlp.down_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.4.self_attn.o_proj": False,
}

MODELS = [
    {"name": "gemma4-vl-mixed", "kind": "e2b", "seed": 14, "intermediate_size": 64,
     "table": VL_TABLE},
    {"name": "gemma4-vl-unified", "kind": "unified", "seed": 16, "intermediate_size": 64,
     "table": UNIFIED_TABLE},
]

PROMPTS = [
    {"images": ["astronaut_96x128.png"], "text": "What is in the picture? Describe it."},
    {"images": ["chelsea_120x90.png", "coffee_50x100.png"],
     "text": "Compare the two pictures."},
]

VISION_SCALES = {
    "patch": 1.0,        # input_proj / patch_dense gain / sqrt(fan_in)
    "pos": 0.5,          # position table std
    "proj": 1.0,         # q/k/v/gate/up/down gain / sqrt(fan_in)
    "out": 0.6,          # o_proj gain
    "pre_norm": [1.0, 0.1],      # input_layernorm, pre_feedforward_layernorm
    "post_norm": [0.4, 0.04],    # post_attention_layernorm, post_feedforward_layernorm
    "qk_norm": [0.5, 0.05],      # q_norm / k_norm (attention scale 1.0)
    "layernorm": 0.1,            # unified LayerNorms: weight 1 + 0.1 N, bias 0.1 N
    "dense_bias": 0.1,
    "embed_vision": 1.0,         # embedding_projection gain / sqrt(D_v)
}


def hf_config(kind, ids, inter):
    cfg = g4.hf_config(kind, ids, inter)
    if kind == "unified":
        cfg["vision_config"] = copy.deepcopy(UNIFIED_VISION_CONFIG)
    else:
        cfg["vision_config"] = copy.deepcopy(VISION_CONFIG)
    cfg["vision_soft_tokens_per_image"] = MAX_SOFT
    return cfg


def vision_weights(kind, cfg, rng):
    S = VISION_SCALES
    H = cfg["text_config"]["hidden_size"]
    w = {}

    def n(shape, std, mean=0.0):
        return mean + rng.standard_normal(shape) * std

    if kind == "unified":
        vc = cfg["vision_config"]
        P = vc["model_patch_size"] ** 2 * 3
        D = vc["mm_embed_dim"]
        p = "model.vision_embedder."
        w[p + "patch_ln1.weight"] = 1.0 + n(P, S["layernorm"])
        w[p + "patch_ln1.bias"] = n(P, S["layernorm"])
        w[p + "patch_dense.weight"] = n((D, P), S["patch"] / np.sqrt(P))
        w[p + "patch_dense.bias"] = n(D, S["dense_bias"])
        w[p + "patch_ln2.weight"] = 1.0 + n(D, S["layernorm"])
        w[p + "patch_ln2.bias"] = n(D, S["layernorm"])
        w[p + "pos_embedding"] = n((vc["mm_posemb_size"], 2, D), S["pos"])
        w[p + "pos_norm.weight"] = 1.0 + n(D, S["layernorm"])
        w[p + "pos_norm.bias"] = n(D, S["layernorm"])
        w["model.embed_vision.embedding_projection.weight"] = n(
            (H, vc["output_proj_dims"]), S["embed_vision"] / np.sqrt(vc["output_proj_dims"]))
        return w
    vc = cfg["vision_config"]
    D, I, ps = vc["hidden_size"], vc["intermediate_size"], vc["patch_size"]
    nh, nkv, d = vc["num_attention_heads"], vc["num_key_value_heads"], vc["head_dim"]
    p = "model.vision_tower."
    w[p + "patch_embedder.input_proj.weight"] = n((D, 3 * ps * ps),
                                                  S["patch"] / np.sqrt(3 * ps * ps))
    w[p + "patch_embedder.position_embedding_table"] = n(
        (2, vc["position_embedding_size"], D), S["pos"])
    for i in range(vc["num_hidden_layers"]):
        b = f"{p}encoder.layers.{i}."
        w[b + "self_attn.q_proj.linear.weight"] = n((nh * d, D), S["proj"] / np.sqrt(D))
        w[b + "self_attn.k_proj.linear.weight"] = n((nkv * d, D), S["proj"] / np.sqrt(D))
        w[b + "self_attn.v_proj.linear.weight"] = n((nkv * d, D), S["proj"] / np.sqrt(D))
        w[b + "self_attn.o_proj.linear.weight"] = n((D, nh * d), S["out"] / np.sqrt(nh * d))
        w[b + "self_attn.q_norm.weight"] = n(d, S["qk_norm"][1], S["qk_norm"][0])
        w[b + "self_attn.k_norm.weight"] = n(d, S["qk_norm"][1], S["qk_norm"][0])
        w[b + "mlp.gate_proj.linear.weight"] = n((I, D), S["proj"] / np.sqrt(D))
        w[b + "mlp.up_proj.linear.weight"] = n((I, D), S["proj"] / np.sqrt(D))
        w[b + "mlp.down_proj.linear.weight"] = n((D, I), S["proj"] / np.sqrt(I))
        for nm in ("input_layernorm", "pre_feedforward_layernorm"):
            w[b + nm + ".weight"] = n(D, S["pre_norm"][1], S["pre_norm"][0])
        for nm in ("post_attention_layernorm", "post_feedforward_layernorm"):
            w[b + nm + ".weight"] = n(D, S["post_norm"][1], S["post_norm"][0])
    w["model.embed_vision.embedding_projection.weight"] = n(
        (H, D), S["embed_vision"] / np.sqrt(D))
    return w


def make_base(dst, cfg, kind, tok_dir, ids, seed):
    os.makedirs(dst, exist_ok=True)
    text = g4.make_weights(cfg["text_config"], "model.language_model.", seed, g4.SCALES)
    vis = vision_weights(kind, cfg, np.random.default_rng(seed + 1000))
    arrays, table = {}, {}
    for k, v in list(text.items()) + list(vis.items()):
        arrays[k] = mx.array(v.astype(np.float32)).astype(mx.bfloat16)
        table[k] = "bf16 " + json.dumps(list(v.shape))
    mx.save_safetensors(os.path.join(dst, "model.safetensors"), arrays,
                        metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump(g4.generation_config(ids), f, indent=2)
    with open(os.path.join(dst, "processor_config.json"), "w") as f:
        json.dump(UNIFIED_PROCESSOR_CONFIG if kind == "unified" else PROCESSOR_CONFIG, f,
                  indent=2)
    for name in sorted(os.listdir(tok_dir)):
        shutil.copy(os.path.join(tok_dir, name), dst)
    return table


def make_tokenizer(dst):
    vocab, ids = g4.make_tokenizer(dst)
    p = os.path.join(dst, "tokenizer_config.json")
    with open(p) as f:
        tc = json.load(f)
    tc["extra_special_tokens"] = dict(EXTRA_SPECIAL)
    with open(p, "w") as f:
        json.dump(tc, f, indent=2)
    return vocab, ids


# ---- reference runs ----------------------------------------------------------------------------

def f32np(a):
    return np.array(a.astype(mx.float32))


def logits_rows(T):
    rows = list(range(0, T, LOGIT_STEP))
    if rows[-1] != T - 1:
        rows.append(T - 1)
    return np.array(rows, dtype=np.int32)


def enc_rows(n):
    rows = list(range(0, n, ROW_STEP))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    return np.array(rows, dtype=np.int32)


def tower_stages_gemma4(model, pv_list):
    """VisionModel.__call__ (list branch, one image at a time) step by step."""
    vt = model.vision_tower
    out = []
    for img in pv_list:
        if not isinstance(img, mx.array):
            img = mx.array(img)
        x = img[None] if img.ndim == 3 else img
        B, C, H, W = x.shape
        n_real = (H // vt.patch_size) * (W // vt.patch_size)
        pos, pad, _ = vt._patch_positions_single(H, W, max_patches=n_real)
        pos = mx.array(pos[None])
        pad = mx.array(pad[None])
        emb = vt.patch_embedder(x, pos, pad)
        valid = ~pad
        am = mx.expand_dims(valid, 1) * mx.expand_dims(valid, 2)
        am = mx.where(am, mx.array(0.0, dtype=emb.dtype), mx.array(-1e4, dtype=emb.dtype))
        am = mx.expand_dims(am, 1)
        h = emb
        blocks = []
        for layer in vt.encoder.layers:
            h = layer(h, pos, am)
            blocks.append(h)
        pooled, pmask = vt.pooler(h, pos, pad, output_length=n_real // vt.pooling_kernel_size
                                  ** 2)
        mx.eval(emb, h, pooled, pmask)
        assert bool(pmask.all())
        out.append({"patch_embed": emb[0], "encoder": h[0], "pooled": pooled[0],
                    "grid": [H // vt.patch_size, W // vt.patch_size]})
    ref = vt(pv_list)
    mx.eval(ref)
    cat = mx.concatenate([o["pooled"] for o in out], axis=0)
    assert np.array_equal(f32np(cat), f32np(ref[0]))
    return out, cat


def run_prompt(model, inputs, kind, image_token):
    from mlx_vlm.generate.ar import generate_step
    from mlx_vlm.generate.common import _chunked_prefill_enabled
    from mlx_vlm.models import cache as vcache

    ids, pv, mask = inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"]
    kwargs = {k: v for k, v in inputs.items()
              if k not in ("input_ids", "pixel_values", "attention_mask")}
    lm = model.language_model
    res = {}
    if kind == "unified":
        ipos = inputs["image_position_ids"]
        emb = model.vision_embedder(pv, ipos)
        proj = model.embed_vision(emb)
        soft = model.get_image_features(pv, ipos)
        mx.eval(emb, proj, soft)
        valid = ~np.array(mx.all(ipos == -1, axis=-1))
        res["vision"] = np.concatenate([f32np(emb[i])[valid[i]] for i in range(emb.shape[0])])
        assert np.array_equal(np.concatenate(
            [f32np(proj[i])[valid[i]] for i in range(proj.shape[0])]), f32np(soft))
        res["vision_dtype"] = str(emb.dtype)
        res["soft_dtype_before_cast"] = str(soft.dtype)
    else:
        pv_list = pv if isinstance(pv, list) else [pv[i] for i in range(pv.shape[0])]
        stages, pooled = tower_stages_gemma4(model, pv_list)
        soft = model.embed_vision(pooled)
        mx.eval(soft)
        res["stages"] = stages
        res["vision"] = f32np(pooled)
        res["soft_dtype_before_cast"] = str(soft.dtype)
        res["vision_dtype"] = str(pooled.dtype)

    feat = model.get_input_embeddings(ids, pv, mask=mask, **kwargs)
    x, pli = feat.inputs_embeds, feat.per_layer_inputs
    mx.eval(x)
    res["soft"] = f32np(soft.astype(x.dtype))
    sel = np.array(ids[0]) == image_token
    assert np.array_equal(f32np(x[0])[sel], res["soft"]), "scatter"
    tm = lm.model
    text_rows = f32np(tm.embed_tokens(ids) * tm.embed_scale)[0]
    assert np.array_equal(f32np(x[0])[~sel], text_rows[~sel]), "text rows"
    res["embeds"] = f32np(x[0])
    if pli is not None:
        ids0 = mx.where(mx.array(sel)[None], mx.zeros_like(ids), ids)
        ref_pli = tm.get_per_layer_inputs(ids0)
        mx.eval(pli, ref_pli)
        assert np.array_equal(f32np(pli), f32np(ref_pli)), "PLE ids"
        res["ple_check"] = "per_layer_inputs == get_per_layer_inputs(where(image, 0, ids))"

    # one prefill call over the whole prompt, fresh prompt cache, all processor kwargs
    cache = vcache.make_prompt_cache(lm)
    lm_kwargs = {k: v for k, v in kwargs.items()
                 if k in ("mm_token_type_ids", "token_type_ids")}
    out = lm(ids, inputs_embeds=x, cache=cache, per_layer_inputs=pli, **lm_kwargs)
    mx.eval(out.logits)
    res["logits"] = f32np(out.logits[0])

    # masks the prefill builds
    mm = kwargs.get("mm_token_type_ids")
    masks = tm._make_masks(x, [None] * len(tm.layers), mm)
    res["mask_kinds"] = {}
    for layer, m in zip(tm.layers, masks):
        res["mask_kinds"][layer.layer_type] = ("array" if isinstance(m, mx.array)
                                               else repr(m))
    res["masks"] = {layer.layer_type: m for layer, m in zip(tm.layers, masks)}
    res["chunked_prefill"] = bool(_chunked_prefill_enabled(
        model, input_ids=ids, inputs_embeds=x, prompt_cache=None, draft_model=None,
        draft_kind="dflash", prefill_kwargs=dict(kwargs, per_layer_inputs=pli)))

    toks, lps = [], []
    for tok, lp in generate_step(ids, model, pv, mask, max_tokens=N_GREEDY,
                                 temperature=0.0, **kwargs):
        toks.append(int(tok))
        lps.append(f32np(lp))
    res["greedy"] = np.array(toks, dtype=np.int32)
    res["greedy_logprobs"] = np.stack(lps)
    assert np.array_equal(np.argmax(res["greedy_logprobs"], axis=-1), res["greedy"])
    return res


def spans_from_types(types):
    spans, start = [], None
    for t, v in enumerate(list(types) + [0]):
        vis = v in (1, 2)
        if vis and start is None:
            start = t
        elif not vis and start is not None:
            spans.append([start, t])
            start = None
    return spans


def check_overlay(mask, spans, T, window):
    """Verify the boolean mask: inside a span everything sees everything; elsewhere causal
    (sliding: causal within the window)."""
    m = np.array(mask).reshape(-1, T, T)[0]
    blk = -np.ones(T, dtype=np.int64)
    for b, (s, e) in enumerate(spans):
        blk[s:e] = b
    q = np.arange(T)[:, None]
    k = np.arange(T)[None, :]
    base = k <= q
    if window is not None:
        base = base & (q - k < window)
    expect = base | ((blk[:, None] != -1) & (blk[:, None] == blk[None, :]))
    return bool(np.array_equal(m, expect))


def build_model(out_models, fx, tok_dir, ids, img_dir):
    from mlx_lm import convert
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import load, load_image, prepare_inputs, should_add_special_tokens
    from optiq.vlm.sidecar import build_vision_sidecar

    name, kind, seed = fx["name"], fx["kind"], fx["seed"]
    dst = os.path.join(out_models, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    cfg = hf_config(kind, ids, fx["intermediate_size"])
    pred = TablePredicate(fx["table"])
    base_label = f"<temporary bf16 base of {name}>"
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        base_tensors = make_base(base, cfg, kind, tok_dir, ids, seed)
        print(f"+ mlx_lm.convert {name}")
        convert(hf_path=base, mlx_path=dst, quantize=True, q_group_size=64, q_bits=4,
                quant_predicate=pred)
        readme = os.path.join(dst, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        add_false_entries(dst, pred.seen)
        with open(os.path.join(dst, "config.json")) as f:
            cfg_before = json.load(f)
        files_before = sorted(os.listdir(dst))
        idx_path = os.path.join(dst, "model.safetensors.index.json")
        with open(idx_path) as f:
            idx_before = json.load(f)
        summary = build_vision_sidecar(base=base, quant_dir=dst)
        assert cfg_before is not None
        with open(os.path.join(dst, "config.json")) as f:
            cfg_after = json.load(f)
        assert cfg_after["optiq_vision"]["base_model"] == base
        cfg_after["optiq_vision"]["base_model"] = base_label
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg_after, f, indent=2)
        files_after = sorted(os.listdir(dst))
        with open(idx_path) as f:
            idx_after = json.load(f)
        # the base's own tower, for the bit-identity check below
        model_base, _ = load(base)
    summary = dict(summary, sidecar=os.path.relpath(summary["sidecar"], dst), base=base_label)
    sidecar = mx.load(os.path.join(dst, "optiq_vision.safetensors"))
    sidecar_table = {k: {"shape": list(v.shape),
                         "dtype": str(v.dtype).replace("mlx.core.", "")}
                     for k, v in sorted(sidecar.items())}
    config_edits = {
        "added": {k: cfg_after[k] for k in cfg_after if k not in cfg_before},
        "changed": {k: [cfg_before[k], cfg_after[k]] for k in cfg_after
                    if k in cfg_before and cfg_before[k] != cfg_after[k]},
        "removed": [k for k in cfg_before if k not in cfg_after],
    }
    wb, wa = idx_before["weight_map"], idx_after["weight_map"]
    index_edits = {"added": {k: wa[k] for k in sorted(wa) if k not in wb},
                   "changed": {k: [wb[k], wa[k]] for k in wb if wb[k] != wa.get(k)}}

    model_bf16, processor = load(dst)
    model_f32, _ = load(dst)
    model_f32.set_dtype(mx.float32)
    models = {"f32": model_f32, "bf16": model_bf16}
    image_token = model_bf16.config.image_token_id
    assert image_token == ids["<|image|>"]
    tm = model_bf16.language_model.model
    loaded_ip = {"class": type(processor.image_processor).__name__,
                 "max_soft_tokens": processor.image_processor.max_soft_tokens}
    if kind == "unified":
        # mlx_vlm.utils.load replaced the image processor that
        # Gemma4UnifiedProcessor.from_pretrained built from processor_config.json by
        # Gemma4UnifiedImageProcessor() (class defaults, max_soft_tokens 280): restore the
        # configured budget
        assert loaded_ip["max_soft_tokens"] == 280
        processor.image_processor.max_soft_tokens = MAX_SOFT
    assert processor.image_processor.max_soft_tokens == MAX_SOFT

    tensors, per_prompt = {}, []
    for i, p in enumerate(PROMPTS):
        paths = [os.path.join(img_dir, n) for n in p["images"]]
        images = [load_image(q) for q in paths]
        text = apply_chat_template(processor, model_bf16.config, p["text"],
                                   num_images=len(images))
        inputs = prepare_inputs(processor, images=images, prompts=[text],
                                image_token_index=getattr(model_bf16.config,
                                                          "image_token_index", None),
                                add_special_tokens=should_add_special_tokens(
                                    model_bf16.config.model_type, processor))
        ids_np = np.array(inputs["input_ids"][0]).astype(np.int32)
        T = len(ids_np)
        rows = logits_rows(T)
        types = np.array(inputs["mm_token_type_ids"][0]).astype(np.int32)
        assert np.array_equal(types, (ids_np == image_token).astype(np.int32))
        pv = inputs["pixel_values"]
        pv_info = []
        if kind == "unified":
            pv_np = np.array(pv)
            pos_np = np.array(inputs["image_position_ids"])
            for j in range(pv_np.shape[0]):
                valid = ~np.all(pos_np[j] == -1, axis=-1)
                pv_info.append({"pixel_values_shape": list(pv_np[j].shape),
                                "patch_rows_valid": int(valid.sum()),
                                "pixel_values_sha256": sha(pv_np[j]),
                                "image_position_ids_valid": pos_np[j][valid].tolist()[:3]
                                + ["..."] + pos_np[j][valid].tolist()[-1:]})
        else:
            pv_list = pv if isinstance(pv, list) else [pv[j] for j in range(pv.shape[0])]
            for a in pv_list:
                a = np.array(a)
                a = a[0] if a.ndim == 4 else a
                pv_info.append({"pixel_values_shape": list(a.shape),
                                "pixel_values_sha256": sha(a)})
        res = {run: run_prompt(m, inputs, kind, image_token) for run, m in models.items()}
        if kind == "unified":
            pb = model_base.get_image_features(pv, inputs["image_position_ids"])
        else:
            _, pooled = tower_stages_gemma4(model_base, pv if isinstance(pv, list) else
                                            [pv[j] for j in range(pv.shape[0])])
            pb = model_base.embed_vision(pooled)
        mx.eval(pb)
        assert np.array_equal(f32np(pb.astype(mx.bfloat16)), res["bf16"]["soft"]), \
            "base tower != sidecar tower"

        tensors[f"p{i}.input_ids"] = ids_np
        tensors[f"p{i}.logits_rows"] = rows
        for run in ("f32", "bf16"):
            r = res[run]
            if kind != "unified":
                if i == 0:
                    er = enc_rows(r["stages"][0]["encoder"].shape[0])
                    tensors["p0.encoder_rows"] = er
                    tensors[f"p0.{run}.patch_embed"] = f32np(r["stages"][0]["patch_embed"])[er]
                    tensors[f"p0.{run}.encoder"] = f32np(r["stages"][0]["encoder"])[er]
                tensors[f"p{i}.{run}.pooled"] = r["vision"]
            elif run == "f32":
                # f32 in both runs (f32 pixels promote every op; bf16 weights widened are
                # the same numbers): stored once
                assert np.array_equal(res["bf16"]["vision"], res["f32"]["vision"])
                tensors[f"p{i}.embedder"] = r["vision"]
            tensors[f"p{i}.{run}.soft_tokens"] = r["soft"]
            tensors[f"p{i}.{run}.logits"] = r["logits"][rows]
            tensors[f"p{i}.{run}.greedy"] = r["greedy"]
        if i == 0:
            tensors["p0.f32.inputs_embeds"] = res["f32"]["embeds"]

        spans = spans_from_types(types)
        blk = np.array(tm._block_sequence_ids_for_mask(mx.array(types)[None]))[0]
        assert spans == spans_from_types(np.where(blk >= 0, 1, 0))
        mask_check = {}
        for lt, m in res["bf16"]["masks"].items():
            if isinstance(m, mx.array):
                window = tm.window_size if lt == "sliding_attention" else None
                mask_check[lt] = {"kind": "boolean array [1, 1, T, T]",
                                  "equals_causal_plus_spans": check_overlay(m, spans, T,
                                                                            window),
                                  "equals_plain_causal": check_overlay(m, [], T, window)}
            else:
                mask_check[lt] = {"kind": repr(m)}
        m_bf16 = margins(res["bf16"]["greedy_logprobs"])
        m_f32 = margins(res["f32"]["greedy_logprobs"])
        agree = bool(np.array_equal(res["f32"]["greedy"], res["bf16"]["greedy"]))
        n_soft = [int(s[1] - s[0]) for s in spans]
        per_prompt.append({
            "images": [f"{PRE_DIR}/{n}" for n in p["images"]],
            "image_sizes_hw": [[im.height, im.width] for im in images],
            "question": p["text"],
            "rendered_text": text,
            "num_tokens": T,
            "num_soft_tokens_per_image": n_soft,
            "image_spans": spans,
            "pixel_values": pv_info,
            "input_ids": ids_np.tolist(),
            "starts_with_double_bos": bool(ids_np[0] == ids_np[1] == ids["<bos>"]),
            "logits_rows": rows.tolist(),
            "mm_token_type_ids": "1 where input_ids == image_token_id, else 0 (checked)",
            "masks_in_prefill": mask_check,
            "prefill_chunked_by_generate_step": res["bf16"]["chunked_prefill"],
            "vision_dtype_bf16_run": res["bf16"]["vision_dtype"],
            "soft_tokens_dtype_before_scatter_cast_bf16_run":
                res["bf16"]["soft_dtype_before_cast"],
            "greedy_f32": res["f32"]["greedy"].tolist(),
            "greedy_bf16": res["bf16"]["greedy"].tolist(),
            "greedy_text_bf16": processor.tokenizer.decode(res["bf16"]["greedy"].tolist()),
            "greedy_agree": agree,
            "greedy_first_divergence": None if agree else int(
                np.argmax(res["f32"]["greedy"] != res["bf16"]["greedy"])),
            "bf16_margin_top1_top2": [round(float(v), 6) for v in m_bf16],
            "bf16_margin_min": float(m_bf16.min()),
            "f32_margin_min": float(m_f32.min()),
            "max_abs_diff_bf16_vs_f32": {
                k: float(np.abs(res["bf16"][k] - res["f32"][k]).max())
                for k in ("vision", "soft", "embeds", "logits")},
            "f32_rms": {k: float(np.sqrt((res["f32"][k] ** 2).mean()))
                        for k in ("vision", "soft", "embeds")},
            "f32_logits_std": float(res["f32"]["logits"].std()),
        })

    out = {}
    for k, v in tensors.items():
        a = mx.array(v)
        if ".bf16." in k and v.dtype == np.float32:
            a = a.astype(mx.bfloat16)  # bf16 run values are bf16 numbers: exact
        out[k] = a
    mx.save_safetensors(os.path.join(dst, "reference_vl.safetensors"), out,
                        metadata={"format": "mlx"})
    described = {k: {"dtype": str(v.dtype).replace("mlx.core.", ""), "shape": list(v.shape)}
                 for k, v in out.items()}
    return {"dst": dst, "cfg": cfg, "cfg_after": cfg_after, "base_tensors": base_tensors,
            "summary": summary, "sidecar_table": sidecar_table, "files_before": files_before,
            "files_after": files_after, "config_edits": config_edits,
            "index_edits": index_edits, "described": described, "per_prompt": per_prompt,
            "pred": pred, "loaded_ip": loaded_ip}


def tensor_notes(kind):
    common = {
        "p{i}.input_ids": "I32 [T]: prompt after the processor's expansion (boi + image "
                          "token x n + eoi per image), chat template, no extra special tokens",
        "p{i}.logits_rows": "I32 [R]: positions kept (every 32nd and the last)",
        "p{i}.{run}.soft_tokens": "[n_soft, H]: embed_vision output cast to the embedding "
                                  "dtype = exactly the rows scattered into inputs_embeds "
                                  "(all images of the prompt, in order)",
        "p0.f32.inputs_embeds": "F32 [T, H]: p0 only: after the scatter (f32 run): text "
                                "rows embed_tokens(ids) * embed_scale, image rows = "
                                "soft tokens (the same holds for p1: checked)",
        "p{i}.{run}.logits": "[R, V]: logits (after the soft-cap) at logits_rows of one "
                             "language_model call over the whole prompt with a fresh prompt "
                             "cache, the inputs_embeds / per_layer_inputs of "
                             "get_input_embeddings and the processor's mm_token_type_ids",
        "p{i}.{run}.greedy": "I32 [32]: mlx_vlm.generate.ar.generate_step, temperature 0, "
                             "all processor outputs passed as keyword arguments as "
                             "mlx_vlm.generate does",
        "runs": "f32 tensors F32; bf16 run tensors BF16 (exact values)",
    }
    if kind == "unified":
        common["p{i}.embedder"] = ("F32 [n_soft, mm_embed_dim]: vision_embedder output "
                                   "(pos_norm) at the valid patch rows, all images in order; "
                                   "computed in f32 in both runs (f32 pixels promote every "
                                   "op) and bit-identical between them (checked)")
    else:
        common["p0.encoder_rows"] = "I32 [R_e]: patch rows kept for p0 (every 16th and last)"
        common["p0.{run}.patch_embed"] = ("[R_e, D_v]: patch_embedder output (input_proj + "
                                          "position embedding) of p0's image at encoder_rows")
        common["p0.{run}.encoder"] = "[R_e, D_v]: output of the last encoder block at " \
                                     "encoder_rows (before pooling)"
        common["p{i}.{run}.pooled"] = ("[n_soft, D_v]: VisionModel output: 3x3 average "
                                       "pooling x bf(sqrt(D_v)) (standardize off), all "
                                       "images concatenated")
    return common


NOTES_COMMON = [
    "Reference folder = the published layout: mlx_lm.convert of a bf16 Hugging Face style base "
    "(language tower quantized with a per-module table; mlx-lm drops every vision tensor), then "
    "optiq.vlm.sidecar.build_vision_sidecar(base, folder) writes optiq_vision.safetensors "
    "(bf16, keys with 'model.' stripped), adds those keys to model.safetensors.index.json "
    "(that is how mlx-vlm finds them; total_size is left alone) and restores the multimodal "
    "config keys. mlx_vlm.utils.load(folder) loads the quantized language tower from "
    "model.safetensors (modules with .scales) and the bf16 tower from the sidecar. The bf16 "
    "base itself was written to a temporary folder only; its tower gives bit-identical soft "
    "tokens (checked).",
    "Images: prepare_inputs(processor, images=[load_image(path) ...], prompts=[text]) with "
    "text = mlx_vlm.prompt_utils.apply_chat_template(processor, config, question, "
    "num_images=n): one user turn, images first ({'type': 'image'} entries render as "
    "'\\n\\n<|image|>\\n\\n'), then the text, add_generation_prompt, enable_thinking False "
    "(the prompt ends with '<|turn>model\\n<|channel>thought\\n<channel|>'). DOUBLE <bos>: "
    "should_add_special_tokens says False (the template writes <bos>), but "
    "mlx_vlm.utils.process_inputs forwards add_special_tokens only when the processor's "
    "__call__ names it, and Gemma4Processor.__call__ (images, text, audio, videos, fps, "
    "return_mm_token_type_ids, **kwargs) does not, so the tokenizer adds its own <bos> "
    "(add_bos_token true) in front of the template's: input_ids start [2, 2, ...] "
    "(spec 6.5 says add_special_tokens=False; the ids here are what mlx-vlm feeds the "
    "model). The processor replaces the i-th '<|image|>' by '<|image>' + '<|image|>' x n_i + '<image|>'.",
    "Processor config: processor_config.json with a nested image_processor object "
    "(max_soft_tokens 70). A flat file carrying image_processor_type would be ignored by "
    "Gemma4Processor.from_pretrained (spec errata A1), and Gemma4UnifiedProcessor reads only "
    "the nested object (errata B2).",
    "Embedding scale (spec 5.1 / 6.11, as run): Model.get_input_embeddings computes "
    "embed_tokens(input_ids) * embed_scale for EVERY position (image placeholders included), "
    "then masked_scatter overwrites the image-token rows with the projected features cast to "
    "the embedding dtype; the features are neither multiplied nor divided by embed_scale, and "
    "the language model uses inputs_embeds as given (checked: image rows == soft_tokens, text "
    "rows == embed * embed_scale, bit for bit).",
    "greedy: generate_step(input_ids, model, pixel_values, attention_mask, max_tokens=32, "
    "temperature=0.0, **other processor outputs) - exactly what mlx_vlm.generate passes. "
    "logprobs = logits - logsumexp in the model dtype; greedy = argmax.",
    "f32 run: model.set_dtype(mx.float32) after load: bf16 weights, scales and biases widened "
    "(packed weights unchanged); pixel values are f32 in both runs.",
]
NOTES_E2B = [
    "PLE ids at image positions (as run): get_input_embeddings builds per_layer_inputs = "
    "get_per_layer_inputs(where(ids is image/audio/video token, 0, ids)), i.e. PLE token id 0 "
    "(<pad>) at every image placeholder, whatever pad_token_id says (checked bit for bit); "
    "boi/eoi keep their own ids. The projection part of PLE uses the scattered inputs_embeds.",
    "Vision tower: pixel values f32 -> _patchify (reshape/transpose, 2*(v-0.5) in f32, cast to "
    "the weight dtype) -> input_proj + position rows (table[0][x] + table[1][y]) -> 2 encoder "
    "blocks (bidirectional, additive mask of zeros) -> 3x3 average pooling (fp32 einsum, cast) "
    "-> * bf(sqrt(32)) -> embed_vision (weightless RMSNorm, Linear 32 -> 64). Images of "
    "different sizes are a list and are encoded one by one.",
    "position_embedding_size is 64: patch positions >= 64 per axis would select an all-zero "
    "one-hot row (no error) - the prompt images have at most 33 patches per axis.",
    "text_config.use_bidirectional_attention is null here (the mlx-vlm default for gemma4): "
    "mask_kinds show the prefill masks; image tokens attend causally, and generate_step "
    "pre-fills T-1 tokens then the last one (chunked prefill enabled for this model).",
]
NOTES_UNIFIED = [
    "gemma4_unified: processor cuts the [3, th, tw] image into 48x48 patches (rows of 6912 "
    "values ordered (row-in-patch, col-in-patch, channel)), pads to max_soft_tokens = 70 rows "
    "with zero rows and positions (-1, -1); pixel_values [N_img, 70, 6912] f32 in [0, 1], "
    "image_position_ids [N_img, 70, 2] (x = column, y = row). All images of a prompt are "
    "stacked (same padded length), so p1's two images of different sizes form one batch.",
    "vision_embedder runs in f32 in both runs (f32 pixels promote every op; weights bf16 in the "
    "bf16 run), then embed_vision (weightless RMSNorm, Linear 16 -> 64) also in f32; the valid "
    "rows (a prefix per image) are concatenated and cast to the embedding dtype at the "
    "scatter (bf16 in the bf16 run).",
    "No PLE in this model (hidden_size_per_layer_input 0): per_layer_inputs is None.",
    "Bidirectional image blocks (text_config.use_bidirectional_attention 'vision'): "
    "_make_masks materialises boolean masks for both layer kinds and ORs in same-block pairs; "
    "blocks = maximal runs of mm_token_type_ids in {1, 2}, i.e. exactly the image-token runs "
    "(boi/eoi are type 0 and stay causal). image_spans lists them as [start, end) per prompt; "
    "masks_in_prefill checks the masks equal causal (sliding: causal within 32) OR same-span. "
    "generate_step does NOT chunk the prefill for these prompts (Model.chunked_prefill_policy "
    "-> False), so the whole prompt is one call and the overlay applies; decode steps are "
    "causal.",
    "mlx_vlm.utils.load(folder) (utils.load -> load_image_processor) replaces the "
    "processor's image processor by the model module's ImageProcessor built with NO "
    "arguments: gemma4_unified exports ImageProcessor = Gemma4UnifiedImageProcessor, so after "
    "load the image budget is the class default max_soft_tokens 280, whatever "
    "processor_config.json says (Gemma4UnifiedProcessor.from_pretrained alone reads 70). "
    "See image_processor_after_mlx_vlm_load. prepare_inputs does not forward a "
    "max_soft_tokens keyword to the processor, so the reference sets "
    "processor.image_processor.max_soft_tokens = 70 after load (the budget of "
    "processor_config.json, as Gemma4UnifiedProcessor.from_pretrained builds it); with the loader's default the p0 image would give 14 x 19 = 266 "
    "soft tokens (672 x 912 pixels). The encoder-based gemma4 module exports no "
    "ImageProcessor, so its processor keeps the configured 70.",
    "mlx_lm.convert keeps model_type gemma4_unified in config.json (mlx-lm remaps it to gemma4 "
    "internally and drops vision_embedder / embed_vision).",
]


def write_reference(r, kind, versions, pre_rel):
    dst = r["dst"]
    ref = {
        "about": "Test-only file written by tools/reference/gen_gemma4_vl.py; not part of an "
                 "MLX model folder. Tensors in reference_vl.safetensors; all runs on the MLX "
                 "CPU device.",
        "versions": versions,
        "model_type": r["cfg"]["model_type"],
        "init_scales_text": g4.SCALES,
        "init_scales_vision": VISION_SCALES,
        "source_config": r["cfg"],
        "processor_config": (UNIFIED_PROCESSOR_CONFIG if kind == "unified"
                             else PROCESSOR_CONFIG),
        "base_tensors": r["base_tensors"],
        "convert_call": {"function": "mlx_lm.convert",
                         "arguments": {"hf_path": r["summary"]["base"],
                                       "mlx_path": os.path.basename(dst), "quantize": True,
                                       "q_group_size": 64, "q_bits": 4,
                                       "quant_predicate": "<table, see quant_table>"}},
        "quant_table": {"per_path": r["pred"].table if hasattr(r["pred"], "table") else None,
                        "otherwise": "True (global default)"},
        "sidecar_call": {"function": "optiq.vlm.sidecar.build_vision_sidecar",
                         "arguments": {"base": r["summary"]["base"],
                                       "quant_dir": os.path.basename(dst)},
                         "returned": r["summary"]},
        "sidecar_tensors": r["sidecar_table"],
        "sidecar_files_before": r["files_before"],
        "sidecar_files_after": r["files_after"],
        "sidecar_config_edits": r["config_edits"],
        "sidecar_index_edits": {"added": r["index_edits"]["added"],
                                "changed": r["index_edits"]["changed"]},
        "images_dir": pre_rel,
        "image_processor_after_mlx_vlm_load": r["loaded_ip"],
        "tensors": r["described"],
        "tensor_notes": tensor_notes(kind),
        "prompts": r["per_prompt"],
        "notes": NOTES_COMMON + (NOTES_UNIFIED if kind == "unified" else NOTES_E2B),
    }
    with open(os.path.join(dst, "reference_vl.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-root", default=os.path.join(ROOT, "tests", "fixtures"))
    ap.add_argument("--only", default=None, help="preprocess | gemma4-vl-mixed | "
                                                  "gemma4-vl-unified")
    args = ap.parse_args()
    import mlx_lm
    import mlx_vlm
    import PIL
    import transformers
    from importlib import metadata
    versions = {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__,
                "mlx_vlm": mlx_vlm.__version__, "mlx_optiq": metadata.version("mlx-optiq"),
                "pillow": PIL.__version__, "numpy": np.__version__,
                "transformers": transformers.__version__,
                "scikit_image": metadata.version("scikit-image")}

    img_dir = os.path.join(args.out_root, PRE_DIR)
    if args.only in (None, "preprocess"):
        if os.path.exists(img_dir):
            shutil.rmtree(img_dir)
        info = make_images(img_dir)
        cases = preprocess_cases(img_dir, info)
        doc = {
            "about": "Written by tools/reference/gen_gemma4_vl.py: mlx-vlm's "
                     "Gemma4ImageProcessor (class defaults: patch_size 16, "
                     "pooling_kernel_size 3, rescale_factor 1/255, do_normalize False) on "
                     "each input as mlx-vlm's processor runs it: mlx_vlm.utils.load_image "
                     "(ImageOps.exif_transpose, convert('RGB')), aspect_ratio_preserving_resize "
                     "(Pillow BICUBIC on uint8 RGB, skipped when the target equals the input "
                     "size), x.astype(float32) * (1/255) (numpy: float32 times the float32 "
                     "rounding of 1/255), transpose to [3, th, tw]. Each case is checked "
                     "against those steps done by hand with Pillow/numpy.",
            "versions": versions,
            "pixel_values_sha256": "SHA-256 of the float32 little-endian bytes of the "
                                   "[3, th, tw] array (channels first, C order)",
            "samples": "{flat index into [3, th, tw]: value}: 16 evenly spaced indices "
                       "round(linspace(0, 3*th*tw - 1, 16))",
            "soft_tokens": "(th / 48) * (tw / 48) = (th/16)*(tw/16) // 9",
            "max_soft_tokens_note": "the image processor takes any max_soft_tokens (only "
                                    "the video processor restricts it to 70/140/280/560/"
                                    "1120). No input here raises: for these budgets "
                                    "sqrt(n_max*9*256) >= 48 so th and tw are never both 0; "
                                    "a 0 side is replaced by 48 and the other by "
                                    "min(floor(long/short) * 48, n_max * 48).",
            "images": info,
            "cases": cases,
        }
        with open(os.path.join(img_dir, "cases.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"preprocess: {len(cases)} cases")

    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = os.path.join(tmp, "tokenizer")
        vocab, ids = make_tokenizer(tok_dir)
        assert vocab == g4.VOCAB
        for fx in MODELS:
            if args.only not in (None, fx["name"]):
                continue
            r = build_model(os.path.join(args.out_root, "models"), fx, tok_dir, ids, img_dir)
            write_reference(r, fx["kind"], versions, PRE_DIR)
            size = sum(os.path.getsize(os.path.join(r["dst"], f))
                       for f in os.listdir(r["dst"]))
            print(f"{fx['name']}: {size} bytes; " + "; ".join(
                f"T={e['num_tokens']} soft={e['num_soft_tokens_per_image']} "
                f"spans={e['image_spans']} agree={e['greedy_agree']} "
                f"m_bf16={e['bf16_margin_min']:.4f}" for e in r["per_prompt"]))


if __name__ == "__main__":
    main()
