"""Cross-check `optiq sidecar` against the original product: a quantized folder equipped by
the C builder must load in mlx-vlm (through the index, as LM Studio / oMLX do) and in
mlx-optiq 0.7.7's own Qwen3.5 vision front-end, and give the soft tokens the folder that
mlx-optiq's build_vision_sidecar equipped gives (tests/fixtures/models/qwen35-vl-mixed).

Usage: tools/reference/.venv/bin/python tools/reference/check_sidecar_interop.py BUILD_DIR
(BUILD_DIR holds the optiq binary, e.g. build). Prints one line per check; exits 1 on a mismatch.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import mlx.core as mx
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", ".."))
fix = os.path.join(root, "tests", "fixtures", "models")
ref_dir = os.path.join(fix, "qwen35-vl-mixed")
base_dir = os.path.join(fix, "qwen35-vl-base")
optiq = os.path.join(root, sys.argv[1] if len(sys.argv) > 1 else "build", "optiq")

ok = True


def check(name, cond):
    global ok
    print(("ok   " if cond else "FAIL ") + name)
    ok = ok and bool(cond)


def soft_tokens_mlx_vlm(folder, pv, grid):
    from mlx_vlm.utils import load
    model, _ = load(folder)
    feats, _ = model.vision_tower(pv.astype(mx.bfloat16), grid)
    return np.array(feats.astype(mx.float32))


def soft_tokens_optiq(folder, pv, grid):
    from optiq.vlm.qwen3_5.frontend import Qwen35VisionFrontend
    fe = Qwen35VisionFrontend.from_pretrained(folder, None)
    feats, _ = fe.vision_tower(pv.astype(fe.vision_tower.patch_embed.proj.weight.dtype), grid)
    return np.array(feats.astype(mx.float32))


with tempfile.TemporaryDirectory() as tmp:
    q = os.path.join(tmp, "quant")
    os.mkdir(q)
    # the quantized folder as mlx-lm's convert left it, before any sidecar
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "generation_config.json"]:
        shutil.copy(os.path.join(ref_dir, f), q)
    cfg = json.load(open(os.path.join(ref_dir, "config.json")))
    for k in ["vision_config", "optiq_vision"]:
        cfg.pop(k, None)
    json.dump(cfg, open(os.path.join(q, "config.json"), "w"), indent=2)
    idx = json.load(open(os.path.join(ref_dir, "model.safetensors.index.json")))
    idx["weight_map"] = {k: v for k, v in idx["weight_map"].items() if v != "optiq_vision.safetensors"}
    json.dump(idx, open(os.path.join(q, "model.safetensors.index.json"), "w"), indent=2)

    r = subprocess.run([optiq, "sidecar", "--base", base_dir, "--quant-dir", q, "--json"], capture_output=True, text=True)
    check("optiq sidecar ran: " + (r.stdout.strip() or r.stderr.strip()), r.returncode == 0)

    ref = mx.load(os.path.join(ref_dir, "reference_vl.safetensors"))
    table = np.array(ref["pixel_table"])
    for p in range(3):
        pv = mx.array(table[np.array(ref[f"p{p}.pixel_codes"])])
        grid = ref[f"p{p}.grid_thw"]
        a = soft_tokens_mlx_vlm(q, pv, grid)
        b = soft_tokens_mlx_vlm(ref_dir, pv, grid)
        check(f"p{p}: mlx-vlm loads the optiq-built folder; soft tokens == with mlx-optiq's sidecar", np.array_equal(a, b))
        c = soft_tokens_optiq(q, pv, grid)
        d = soft_tokens_optiq(ref_dir, pv, grid)
        check(f"p{p}: mlx-optiq's front-end loads it; soft tokens == with its own sidecar", np.array_equal(c, d))

sys.exit(0 if ok else 1)
