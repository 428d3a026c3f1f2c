"""Generate tests/fixtures/preprocess/ with mlx-vlm's Qwen3-VL image processor.

The reference is the processor mlx-vlm loads for model_type qwen3_5 (and
qwen3_vl): Qwen3VLImageProcessor in mlx_vlm/models/qwen3_vl/processing_qwen3_vl.py,
built the way Qwen3VLProcessor.from_pretrained builds it, from the kwargs that
_qwen_vl_image_kwargs reads out of a checkpoint folder.  For every processor
config below, the JSON files are written to a temporary folder and read back
by that function, so key resolution (size.shortest_edge / longest_edge,
explicit min_pixels / max_pixels, processor_config.json's image_processor
overrides) is the reference's own.

Per image case, tests/fixtures/preprocess/<case>.safetensors holds:
  input      (H, W, 3) uint8   the RGB image handed to the processor (absent
                               for "pattern" cases, whose pixels are the integer
                               formula pattern_image() below, recomputed by the test)
  resized    (h, w, 3) uint8   the image after _resize_video_frames (PIL BICUBIC),
                               stored when at most RESIZED_STORE_MAX bytes
  grid_thw   (3,) int64        image_grid_thw of the processor's output
and cases.json holds, per case: the config, sizes, the SHA-256 of the resized
image and of the float32 pixel_values bytes (little-endian, row-major), a few
sampled pixel_values (row, column, float32 bits, value), sampled resized pixels
when the image itself is not stored, the token count (num_image_tokens), and
for the error cases the reference's ValueError message.  "smart_resize" lists
(h, w) -> (h', w', tokens) per config from _resolved_size / num_image_tokens,
null for a ValueError.  "configs" has each config's file texts (the C test
parses exactly these) and the values the reference resolved from them.

Also checked and recorded ("vendored_optiq"): mlx-optiq 0.7.7's own copy of the
preprocessing (optiq/vlm/qwen3_5/image_processing.py) against mlx-vlm on the
Qwen3.5-config cases.

Usage: python tools/reference/gen_preprocess.py [--out tests/fixtures/preprocess]
Deterministic: rerunning gives byte-identical files.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # _load_qwen_vl_json falls back to the Hub

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from skimage import data  # noqa: E402

from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import (  # noqa: E402
    Qwen3VLImageProcessor,
    _qwen_vl_image_kwargs,
    _resize_video_frames,
    _to_numpy_image,
)

RESIZED_STORE_MAX = 150_000  # bytes; larger resized images are kept as digest + samples
SEED = 20260901

# ---- processor configs ------------------------------------------------------

# preprocessor_config.json of the Qwen3.5 / Qwen3.6 checkpoints (spec 1.6).
QWEN35 = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor",
    "image_processor_type": "Qwen2VLImageProcessorFast",
}

# Reduced budgets so small crops exercise both the up- and the down-scaling
# branch; the explicit min_pixels / max_pixels keys win over size.
REDUCED = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "min_pixels": 1024,
    "max_pixels": 16384,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "rescale_factor": 0.00392156862745098,
    "do_rescale": True,
    "do_normalize": True,
}

# Qwen2-VL-style geometry (patch 14, factor 28) with per-channel CLIP
# statistics; processor_config.json's image_processor overrides keys of
# preprocessor_config.json one by one (its size is replaced whole; the
# preprocessor's explicit min_pixels still wins over the new size).
CLIP14_PRE = {
    "size": {"shortest_edge": 56, "longest_edge": 999999},
    "min_pixels": 3136,
    "patch_size": 16,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
CLIP14_PROC = {
    "image_processor": {
        "patch_size": 14,
        "size": {"shortest_edge": 100, "longest_edge": 50176},
    },
    "processor_class": "Qwen2_5_VLProcessor",
}

CONFIGS = {
    "qwen35": (QWEN35, None),
    "reduced": (REDUCED, None),
    "clip14": (CLIP14_PRE, CLIP14_PROC),
}


def dump(obj):
    return json.dumps(obj, indent=2) + "\n"


def make_processor(name):
    pre, proc = CONFIGS[name]
    with tempfile.TemporaryDirectory() as d:
        Path(d, "preprocessor_config.json").write_text(dump(pre))
        if proc is not None:
            Path(d, "processor_config.json").write_text(dump(proc))
        kwargs = _qwen_vl_image_kwargs(d, default_patch_size=16)
    return Qwen3VLImageProcessor(**kwargs)


def resolved(p):
    return {
        "patch_size": p.patch_size,
        "temporal_patch_size": p.temporal_patch_size,
        "merge_size": p.merge_size,
        "min_pixels": p.min_pixels,
        "max_pixels": p.max_pixels,
        "do_rescale": bool(p.do_rescale),
        "rescale_factor": p.rescale_factor,
        "do_normalize": bool(p.do_normalize),
        # float32 values as the processor uses them
        "image_mean": [float(v) for v in np.array(p.image_mean, dtype=np.float32)],
        "image_std": [float(v) for v in np.array(p.image_std, dtype=np.float32)],
    }


# ---- images -----------------------------------------------------------------


def pattern_image(h, w):
    """Synthetic RGB image from integer arithmetic only (the C test recomputes
    it): v(y, x, c) = (7x^2 + 3y^2 + 5xy + 85c + 4((x xor y) mod 32)) mod 256."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    chans = [(7 * x * x + 3 * y * y + 5 * x * y + 85 * c + 4 * ((x ^ y) & 31)) & 255 for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def crop(img, y, x, h, w):
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def rgb_of(pil):
    """What mlx_vlm.utils.load_image / process_image hand over: convert("RGB")."""
    return np.array(pil.convert("RGB"))


def cases():
    ast, cof, che, roc = data.astronaut(), data.coffee(), data.chelsea(), data.rocket()
    cam, logo = data.camera(), data.logo()
    rng = np.random.default_rng(SEED)
    out = []

    def add(name, config, img=None, pattern=None, note=""):
        out.append({"name": name, "config": config, "img": img, "pattern": pattern, "note": note})

    # Qwen3.5 checkpoint config: everything small is scaled up to >= 65536 px.
    add("q35_astronaut_150x120", "qwen35", crop(ast, 20, 180, 150, 120), note="photo, up-scaled to min_pixels")
    add("q35_chelsea_200x260", "qwen35", crop(che, 40, 120, 200, 260), note="photo, up-scaled to min_pixels")
    add("q35_camera_gray_64x96", "qwen35", rgb_of(Image.fromarray(crop(cam, 100, 200, 64, 96), "L")),
        note="grayscale origin (L -> RGB)")
    add("q35_1x1", "qwen35", np.array([[[200, 30, 90]]], dtype=np.uint8), note="1x1 up-scaled to 256x256")
    add("q35_wide_31x6000", "qwen35", pattern=(31, 6000), note="very wide (193.5:1), both sides up by a few px")
    add("q35_ratio_1x200", "qwen35", pattern=(1, 200), note="aspect ratio exactly 200: allowed")
    add("q35_ratio_201x1", "qwen35", pattern=(201, 1), note="aspect ratio 201: ValueError")

    # Reduced budgets (min 1024, max 16384).
    add("red_astronaut_100x140", "reduced", crop(ast, 300, 200, 100, 140), note="both sides down a little")
    add("red_coffee_tie_80x112", "reduced", crop(cof, 150, 300, 80, 112),
        note="80/32 = 2.5 rounds to 2, 112/32 = 3.5 rounds to 4 (ties to even)")
    add("red_chelsea_odd_73x101", "reduced", crop(che, 101, 203, 73, 101), note="odd sizes")
    add("red_rocket_down_160x240", "reduced", crop(roc, 150, 250, 160, 240),
        note="h'w' > max_pixels: scaled down by beta")
    add("red_rocket_tall_200x20", "reduced", crop(roc, 100, 300, 200, 20),
        note="height down, width up: Pillow runs the vertical pass first")
    add("red_coffee_hdown_wdown_170x36", "reduced", crop(cof, 50, 60, 170, 36),
        note="both down, height by more than twice the width: vertical pass first")
    add("red_astronaut_hpass_64x100", "reduced", crop(ast, 10, 10, 64, 100), note="only the width changes")
    add("red_astronaut_vpass_100x64", "reduced", crop(ast, 200, 400, 100, 64), note="only the height changes")
    add("red_chelsea_exact_64x96", "reduced", crop(che, 0, 0, 64, 96), note="already a multiple of 32: no resize")
    add("red_camera_gray_90x70", "reduced", rgb_of(Image.fromarray(crop(cam, 300, 50, 90, 70), "L")),
        note="grayscale origin (L -> RGB)")
    add("red_logo_rgba_60x90", "reduced", rgb_of(Image.fromarray(crop(logo, 200, 150, 60, 90), "RGBA")),
        note="RGBA origin, alpha dropped by convert('RGB')")
    add("red_noise_37x53", "reduced", rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        note="uniform noise: overshoot clipped at 0 and 255")
    add("red_1x1", "reduced", np.array([[[0, 255, 128]]], dtype=np.uint8), note="1x1 up-scaled to 32x32")
    add("red_tall_6000x31", "reduced", pattern=(6000, 31), note="very tall: scaled down to 1760x32")
    add("red_ratio_1x201", "reduced", pattern=(1, 201), note="aspect ratio 201: ValueError")

    # Patch 14, CLIP mean/std, processor_config.json override.
    add("clip_coffee_150x200", "clip14", crop(cof, 100, 250, 150, 200), note="factor 28, per-channel mean/std")
    add("clip_astronaut_wide_40x300", "clip14", crop(ast, 400, 100, 40, 300), note="factor 28, wide up-scale")
    return out


# ---- reference runs -----------------------------------------------------------


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def f32bits(v):
    return int(np.float32(v).view(np.uint32))


def run_case(c, proc, rng):
    img = c["img"] if c["img"] is not None else pattern_image(*c["pattern"])
    h, w = img.shape[:2]
    rec = {"name": c["name"], "config": c["config"], "note": c["note"], "height": h, "width": w}
    if c["pattern"] is not None:
        rec["pattern"] = "v(y,x,c) = (7x^2 + 3y^2 + 5xy + 85c + 4((x^y)&31)) & 255"
    tensors = {}
    if c["img"] is not None:
        tensors["input"] = img
    pil = Image.fromarray(img)
    try:
        out = proc(images=[pil])
    except ValueError as e:
        rec["error"] = str(e)
        return rec, tensors, None
    pv = np.asarray(out["pixel_values"])
    thw = np.asarray(out["image_grid_thw"])[0]
    assert pv.dtype == np.float32 and thw.dtype == np.int64
    chw = _to_numpy_image(pil)
    rh, rw = proc._resolved_size(h, w)
    resized = np.ascontiguousarray(np.transpose(_resize_video_frames(chw[None], rh, rw)[0], (1, 2, 0)))
    rec.update(
        {
            "resized_height": rh,
            "resized_width": rw,
            "grid_thw": [int(v) for v in thw],
            "n_tokens": int(proc.num_image_tokens(h, w)),
            "pixel_values_shape": list(pv.shape),
            "pixel_values_sha256": sha(pv.astype("<f4")),
            "resized_sha256": sha(resized),
        }
    )
    rows = [0, pv.shape[0] - 1] + [int(r) for r in rng.integers(0, pv.shape[0], 6)]
    cols = [0, pv.shape[1] - 1] + [int(k) for k in rng.integers(0, pv.shape[1], 6)]
    rec["samples"] = [[r, k, f32bits(pv[r, k]), float(pv[r, k])] for r, k in zip(rows, cols)]
    tensors["grid_thw"] = thw.astype(np.int64)
    if resized.nbytes <= RESIZED_STORE_MAX:
        tensors["resized"] = resized
    else:
        ys = [int(v) for v in rng.integers(0, rh, 32)]
        xs = [int(v) for v in rng.integers(0, rw, 32)]
        rec["resized_samples"] = [[y, x] + [int(v) for v in resized[y, x]] for y, x in zip(ys, xs)]
    return rec, tensors, pv


def smart_resize_table(proc, rng):
    f = proc.patch_size * proc.merge_size
    sizes = set()
    for k in range(0, 8):  # ties: (k + 0.5)·f rounds to the even neighbour
        t = int((2 * k + 1) * f // 2)
        if t >= 1:
            for other in (f * 8, t, int(f * 12.5), 1000):
                sizes.add((t, other))
                sizes.add((other, t))
    for h, w in [(1, 1), (1, 200), (200, 1), (1, 201), (201, 1), (2, 401), (3, 600), (3, 601), (31, 6000),
                 (6000, 31), (16, 16), (f, f), (f - 1, f + 1), (480, 640), (1080, 1920), (3024, 4032),
                 (4000, 3000), (8000, 6000), (16384, 16384), (20000, 100), (100000, 500), (7, 1400)]:
        sizes.add((h, w))
    for _ in range(120):
        hi = int(rng.choice([64, 512, 4096, 20000]))
        sizes.add((int(rng.integers(1, hi)), int(rng.integers(1, hi))))
    table = []
    for h, w in sorted(sizes):
        try:
            rh, rw = proc._resolved_size(h, w)
            table.append([h, w, int(rh), int(rw), int(proc.num_image_tokens(h, w))])
        except ValueError:
            table.append([h, w, None])
    return table


def vendored_optiq_check(images):
    """mlx-optiq's own Qwen3.5 preprocessing against mlx-vlm (Qwen3.5 config)."""
    from optiq.vlm.qwen3_5.image_processing import preprocess_images

    report = []
    for name, img, ref in images:
        pv, thw = preprocess_images(Image.fromarray(img))
        same_shape = pv.shape == ref.shape
        ndiff = int(np.count_nonzero(pv != ref)) if same_shape else None
        maxd = float(np.max(np.abs(pv.astype(np.float64) - ref))) if same_shape else None
        report.append({"case": name, "same_shape": same_shape, "n_diff": ndiff, "size": int(ref.size),
                       "max_abs_diff": maxd})
    # The byte values where the two rescale formulas part: x / 255 (optiq) vs
    # x * float32(1/255) (mlx-vlm), each followed by (x - 0.5) / 0.5.
    x = np.arange(256, dtype=np.float32)
    a = (x * (1 / 255.0) - np.float32(0.5)) / np.float32(0.5)
    b = (x / 255.0 - 0.5) / 0.5
    return {"cases": report, "byte_values_differing": [int(v) for v in np.nonzero(a != b)[0]]}


def versions():
    pkgs = ["mlx-vlm", "mlx-optiq", "pillow", "numpy", "scikit-image", "safetensors", "transformers"]
    v = {"python": platform.python_version()}
    v.update({p: metadata.version(p) for p in pkgs})
    return v


def update_versions_md(path, vers):
    """Write (or replace) this generator's section at the end of VERSIONS.md."""
    head = "## Preprocessing fixtures (`tests/fixtures/preprocess/`)"
    pins = "\n".join(f"{k}=={v}" for k, v in vers.items())
    section = (
        f"{head}\n\n"
        "Produced by `tools/reference/gen_preprocess.py` from mlx-vlm's Qwen3VLImageProcessor\n"
        "(Pillow's bicubic resampler underneath) on crops of scikit-image's sample photographs:\n\n"
        f"```\n{pins}\n```\n"
    )
    text = Path(path).read_text() if Path(path).exists() else ""
    text = re.sub(r"\n*" + re.escape(head) + r".*?(?=\n## |\Z)", "", text, flags=re.S)
    Path(path).write_text(text.rstrip("\n") + "\n\n" + section)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/preprocess")
    ap.add_argument("--versions", default="tests/fixtures/VERSIONS.md")
    args = ap.parse_args()
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.safetensors"):
        old.unlink()

    rng = np.random.default_rng(SEED)
    procs = {name: make_processor(name) for name in CONFIGS}
    doc = {"versions": versions(), "configs": {}, "cases": [], "smart_resize": {}}
    for name, (pre, proc_cfg) in CONFIGS.items():
        doc["configs"][name] = {
            "preprocessor_config.json": dump(pre),
            "processor_config.json": dump(proc_cfg) if proc_cfg is not None else None,
            "resolved": resolved(procs[name]),
        }
    q35_runs = []
    for c in cases():
        rec, tensors, pv = run_case(c, procs[c["config"]], rng)
        doc["cases"].append(rec)
        if tensors:
            path = outdir / f"{c['name']}.safetensors"
            save_file(tensors, str(path))
            path.chmod(0o644)  # save_file leaves its temporary file's 0600
            rec["file"] = f"{c['name']}.safetensors"
        if pv is not None and c["config"] == "qwen35":
            img = c["img"] if c["img"] is not None else pattern_image(*c["pattern"])
            q35_runs.append((c["name"], img, pv))
    for name in CONFIGS:
        doc["smart_resize"][name] = smart_resize_table(procs[name], rng)
    doc["vendored_optiq"] = vendored_optiq_check(q35_runs)
    (outdir / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    update_versions_md(args.versions, doc["versions"])
    total = sum(p.stat().st_size for p in outdir.iterdir())
    print(f"wrote {len(doc['cases'])} cases to {outdir} ({total} bytes)")


if __name__ == "__main__":
    main()
