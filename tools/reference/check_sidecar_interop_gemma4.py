"""Cross-check `optiq sidecar` against mlx-optiq 0.7.7's build_vision_sidecar on Gemma-4.

For three bf16 bases made as tools/reference/gen_gemma4_vl.py makes them (make_base):
  gemma4          the gemma4-vl-mixed base (vision_tower.* + embed_vision.*),
  gemma4+audio    the same with an E2B-style audio tower (audio_tower.*, embed_audio.*, an
                  audio_config; PyTorch conv layouts, f32 clip scalars), built from mlx-vlm's own
                  AudioEncoder so that mlx-vlm can load it,
  gemma4_unified  the gemma4-vl-unified base (vision_embedder.* + embed_vision.*),
the quantized folder is made with mlx_lm.convert, copied twice, and equipped once by mlx-optiq's
builder and once by `optiq sidecar`, both given the same base path. Then:
  * sidecar: same tensor names, dtypes, shapes and data bytes, same metadata (the files differ
    only in the order of the data, which MLX writes in hash order);
  * model.safetensors.index.json: equal as JSON (and whether the bytes are equal: MLX's hash order
    decides the order of the appended keys there too);
  * config.json and the copied processor files: equal byte for byte;
  * mlx-vlm loads both folders (through the index), and the soft tokens of one fixture image
    (the rows of get_input_embeddings at the image token) are bit-identical.

Usage: tools/reference/.venv/bin/python tools/reference/check_sidecar_interop_gemma4.py BUILD_DIR
(BUILD_DIR holds the optiq binary, e.g. build). Prints one line per check; exits 1 on a mismatch.
"""
import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import gen_gemma4_vl as gv  # noqa: E402  (sets the MLX default device to the CPU)

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

OPTIQ = os.path.join(ROOT, sys.argv[1] if len(sys.argv) > 1 else "build", "optiq")
IMAGE = os.path.join(ROOT, "tests", "fixtures", gv.PRE_DIR, "astronaut_96x128.png")

ok = True


def check(name, cond, detail=""):
    global ok
    print(("ok   " if cond else "FAIL ") + name + (f" ({detail})" if detail else ""))
    ok = ok and bool(cond)


# ---- the audio tower ------------------------------------------------------------------------

AUDIO_CONFIG = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "subsampling_conv_channels": [8, 4], "conv_kernel_size": 5,
                "output_proj_dims": 16, "rms_norm_eps": 1e-06, "residual_weight": 0.5,
                "gradient_clipping": 10000000000.0}


def audio_weights(text_hidden, seed):
    """mlx-vlm's AudioEncoder + embed_audio parameters, random, as a Hugging Face base stores
    them: model.audio_tower.* / model.embed_audio.*, convs channel-first, clip scalars f32."""
    from mlx_vlm.models.gemma4.audio import AudioEncoder
    from mlx_vlm.models.gemma4.config import AudioConfig
    from mlx_vlm.models.gemma4.gemma4 import MultimodalEmbedder
    rng = np.random.default_rng(seed)
    enc = AudioEncoder(AudioConfig(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in AUDIO_CONFIG.items()}))
    emb = MultimodalEmbedder(AUDIO_CONFIG["output_proj_dims"], text_hidden)
    out = {}
    for prefix, mod in (("model.audio_tower.", enc), ("model.embed_audio.", emb)):
        for k, v in tree_flatten(mod.parameters()):
            shape = tuple(v.shape)
            if k.endswith(("input_min", "output_min")):
                a = np.float32(-8.0 - rng.random())
            elif k.endswith(("input_max", "output_max")):
                a = np.float32(8.0 + rng.random())
            else:
                a = (rng.standard_normal(shape) * 0.2).astype(np.float32)
            a = np.asarray(a)
            if "subsample_conv_projection" in k and "conv.weight" in k:
                a = a.transpose(0, 3, 1, 2)  # MLX [O, kH, kW, I] -> PyTorch [O, I, kH, kW]
            if "depthwise_conv1d.weight" in k:
                a = a.transpose(0, 2, 1)     # MLX [O, kW, 1] -> PyTorch [O, 1, kW]
            arr = mx.array(a)
            out[prefix + k] = arr if a.ndim == 0 else arr.astype(mx.bfloat16)
    return out


def add_audio(base):
    cfg_path = os.path.join(base, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["audio_config"] = copy.deepcopy(AUDIO_CONFIG)
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    st = os.path.join(base, "model.safetensors")
    w = dict(mx.load(st))
    w.update(audio_weights(cfg["text_config"]["hidden_size"], 7))
    mx.save_safetensors(st, w, metadata={"format": "pt"})
    return sum(1 for k in w if k.startswith(("model.audio_tower.", "model.embed_audio.")))


# ---- comparisons ----------------------------------------------------------------------------

def st_read(path):
    """{name: (dtype, shape, bytes)}, metadata of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    meta = head.pop("__metadata__", {})
    return {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in head.items()}, meta


def soft_tokens(folder, unified):
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import load, load_image, prepare_inputs, should_add_special_tokens
    model, processor = load(folder)
    if unified:
        processor.image_processor.max_soft_tokens = gv.MAX_SOFT  # as gen_gemma4_vl does
    text = apply_chat_template(processor, model.config, "Describe it.", num_images=1)
    inputs = prepare_inputs(processor, images=[load_image(IMAGE)], prompts=[text],
                            add_special_tokens=should_add_special_tokens(
                                model.config.model_type, processor))
    args = {k: v for k, v in inputs.items() if k not in ("attention_mask", "mm_token_type_ids")}
    emb = model.get_input_embeddings(**args).inputs_embeds
    mask = np.array(inputs["input_ids"][0]) == model.config.image_token_id
    return np.array(emb[0].astype(mx.float32))[mask], int(mask.sum())


def run_case(tmp, fx, audio):
    from mlx_lm import convert
    from optiq.vlm.sidecar import build_vision_sidecar
    label = fx["name"] + ("+audio" if audio else "")
    unified = fx["kind"] == "unified"
    work = os.path.join(tmp, label)
    os.makedirs(work)
    base = os.path.join(work, "base")
    cfg = gv.hf_config(fx["kind"], IDS, fx["intermediate_size"])
    gv.make_base(base, cfg, fx["kind"], TOK_DIR, IDS, fx["seed"])
    n_audio = add_audio(base) if audio else 0
    quant = os.path.join(work, "quant")
    convert(hf_path=base, mlx_path=quant, quantize=True, q_group_size=64, q_bits=4,
            quant_predicate=gv.TablePredicate(fx["table"]))
    py, c = os.path.join(work, "py"), os.path.join(work, "c")
    shutil.copytree(quant, py)
    shutil.copytree(quant, c)
    summary = build_vision_sidecar(base=base, quant_dir=py)
    r = subprocess.run([OPTIQ, "sidecar", "--base", base, "--quant-dir", c, "--json"],
                       capture_output=True, text=True)
    check(f"{label}: optiq sidecar ran", r.returncode == 0, (r.stdout or r.stderr).strip()[:200])
    if r.returncode:
        return
    cs = json.loads(r.stdout)
    check(f"{label}: n_tensors / bytes as mlx-optiq's summary",
          cs["n_tensors"] == summary["n_tensors"] and cs["bytes"] == summary["bytes"],
          f"{cs['n_tensors']} tensors ({n_audio} audio), {cs['bytes']} bytes")

    tp, mp = st_read(os.path.join(py, "optiq_vision.safetensors"))
    tc, mc = st_read(os.path.join(c, "optiq_vision.safetensors"))
    diff = sorted(k for k in set(tp) | set(tc) if tp.get(k) != tc.get(k))
    check(f"{label}: sidecar tensors (names, dtypes, shapes, data bytes) identical",
          not diff and mp == mc, f"{len(tp)} tensors" + (f"; differ: {diff[:4]}" if diff else ""))
    if audio:
        check(f"{label}: audio tensors carried (mlx-optiq carries audio_tower.* / embed_audio.*)",
              sum(1 for k in tc if k.startswith(("audio_tower.", "embed_audio."))) == n_audio)
    fp = open(os.path.join(py, "optiq_vision.safetensors"), "rb").read()
    fc = open(os.path.join(c, "optiq_vision.safetensors"), "rb").read()
    print(f"     sidecar files byte-identical: {fp == fc} (header equal: "
          f"{fp[:8 + struct.unpack('<Q', fp[:8])[0]] == fc[:8 + struct.unpack('<Q', fc[:8])[0]]})")

    ip = open(os.path.join(py, "model.safetensors.index.json")).read()
    ic = open(os.path.join(c, "model.safetensors.index.json")).read()
    check(f"{label}: model.safetensors.index.json equal as JSON", json.loads(ip) == json.loads(ic))
    print(f"     index byte-identical: {ip == ic}")
    for name in ("config.json", "processor_config.json"):
        a = open(os.path.join(py, name), "rb").read()
        b = open(os.path.join(c, name), "rb").read()
        check(f"{label}: {name} byte-identical", a == b)
    check(f"{label}: same files", sorted(os.listdir(py)) == sorted(os.listdir(c)))

    sp, n = soft_tokens(py, unified)
    sc, _ = soft_tokens(c, unified)
    check(f"{label}: mlx-vlm loads the optiq-equipped folder; soft tokens == with mlx-optiq's "
          f"sidecar", np.array_equal(sp, sc), f"{n} soft tokens")


with tempfile.TemporaryDirectory() as TMP:
    TOK_DIR = os.path.join(TMP, "tokenizer")
    _, IDS = gv.make_tokenizer(TOK_DIR)
    fxs = {m["name"]: m for m in gv.MODELS}
    run_case(TMP, fxs["gemma4-vl-mixed"], audio=False)
    run_case(TMP, fxs["gemma4-vl-mixed"], audio=True)
    run_case(TMP, fxs["gemma4-vl-unified"], audio=False)

sys.exit(0 if ok else 1)
