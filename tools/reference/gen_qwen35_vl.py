"""Build a tiny random-weight Qwen3.5 vision-language model the way the original product
publishes one, and dump mlx-vlm's reference outputs for prompts with images:

  tests/fixtures/models/qwen35-vl-base/    the bf16 "base" in the Hugging Face layout of the real
                                           Qwen3.5 releases: model.visual.* (Conv3d patch embed
                                           [out, in, kT, kH, kW]), model.language_model.*,
                                           lm_head.weight (untied), config.json with text_config
                                           and vision_config, preprocessor_config.json (a small
                                           pixel budget: 4096 .. 65536 pixels), tokenizer files,
                                           the real Qwen3.5 chat template, generation_config.json
  tests/fixtures/models/qwen35-vl-mixed/   mlx_lm.convert of the base with a mixed-precision
                                           quantization table (language tower only; mlx-lm drops
                                           the vision weights), then
                                           optiq.vlm.sidecar.build_vision_sidecar(base, quant_dir)
                                           (mlx-optiq): optiq_vision.safetensors with the bf16
                                           tower (vision_tower.*, Conv3d weight channel-last),
                                           vision keys registered in model.safetensors.index.json,
                                           multimodal config keys restored in config.json, the
                                           preprocessor config copied.
  tests/fixtures/models/qwen35-vl-mixed/images/img{0,1,2}.png   the input images (crops of
                                           scikit-image photos, three aspect ratios)

Reference runs (MLX CPU device): mlx_vlm.utils.load(<mixed folder>), i.e. exactly what mlx-vlm
makes of the published folder (the quantized language tower stays quantized; the sidecar tower
is read through the index). "bf16" = as loaded; "f32" = the same model after
model.set_dtype(mx.float32) (packed weights unchanged; bf16 tower weights, scales and biases
widened, pixel values enter the tower in f32 because the model casts them to the patch-embed
dtype). The tower is also run from the base folder (mlx_vlm.utils.load(<base>)) and checked
bit-identical to the mixed folder's bf16 tower.

Test-only files in the mixed folder: reference_vl.safetensors + reference_vl.json (see
reference_vl.json "tensors" for names, shapes and how each was produced).

Usage: tools/reference/.venv/bin/python tools/reference/gen_qwen35_vl.py [--out tests/fixtures/models]
"""

import argparse
import copy
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
import gen_qwen35 as q35  # noqa: E402  (tokenizer, text weights, quantization helpers)

N_GREEDY = 32
SEED = int(os.environ.get("GEN_QWEN35_VL_SEED", "27"))
BASE_NAME = "qwen35-vl-base"
MIXED_NAME = "qwen35-vl-mixed"

VISION_CONFIG = {
    "model_type": "qwen3_5",
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "in_channels": 3,
    "num_position_embeddings": 64,
    "deepstack_visual_indexes": [],
    "hidden_act": "gelu_pytorch_tanh",
    "initializer_range": 0.02,
}

# The real checkpoints' preprocessor config (spec 1.6) with a small pixel budget so that the
# fixture images give a few dozen patches.
PREPROCESSOR = {
    "size": {"shortest_edge": 4096, "longest_edge": 65536},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "rescale_factor": 0.00392156862745098,
    "do_rescale": True,
    "do_normalize": True,
    "do_resize": True,
    "do_convert_rgb": True,
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "processor_class": "Qwen3VLProcessor",
}

# Crops of scikit-image photos: (photo, top, left, height, width). Sizes are not multiples of
# 32, so smart resize and the bicubic resampling are exercised.
IMAGES = [
    ("chelsea", 40, 100, 120, 200),   # wide: 128 x 192 after resize, grid 8 x 12
    ("astronaut", 20, 180, 150, 100),  # tall: 160 x 96, grid 10 x 6
    ("coffee", 120, 200, 70, 90),     # small: 64 x 96, grid 4 x 6
]

PROMPTS = [
    {"images": [0], "text": "What is in the picture? Describe it."},
    {"images": [1, 2], "text": "Compare the two pictures."},
    {"images": [2], "text": "Name a color in this picture."},
]

LM = "language_model.model."
MIXED_TABLE = {
    LM + "embed_tokens": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.mlp.down_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.1.linear_attn.in_proj_z": {"group_size": 64, "bits": 3, "mode": "affine"},
    LM + "layers.3.self_attn.o_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.3.self_attn.v_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.2.mlp.gate_proj": False,
}

VISION_SCALES = {
    "patch": 1.0,     # patch embedding gain / sqrt(1536)
    "pos": 0.5,       # pos_embed std
    "proj": 1.0,      # block / merger input-side gain / sqrt(fan_in)
    "out": 0.6,       # attn.proj, mlp.linear_fc2 gain
    "bias": 0.1,      # std of every bias
    "norm": 0.1,      # LayerNorm weight = 1 + norm * N(0,1), bias = norm * N(0,1)
    "merger_out": 1.0,
}


# ---- checkpoint --------------------------------------------------------------------------------

def text_config(vocab, ids):
    tc = q35.text_config(False, False, vocab, ids)
    n = 4
    tc["num_hidden_layers"] = n
    tc["layer_types"] = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention"
                         for i in range(n)]
    return tc


def hf_config(vocab, ids):
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "text_config": text_config(vocab, ids),
        "vision_config": copy.deepcopy(VISION_CONFIG),
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }


def vision_weights(vc, rng):
    """HF names and layouts (model.visual.*), float64 values, all stored bf16."""
    S = VISION_SCALES
    Hv, I, O = vc["hidden_size"], vc["intermediate_size"], vc["out_hidden_size"]
    C, T, P, m = vc["in_channels"], vc["temporal_patch_size"], vc["patch_size"], \
        vc["spatial_merge_size"]
    K = C * T * P * P
    w = {}
    p = "model.visual."

    def n(shape, std):
        return rng.standard_normal(shape) * std

    def lin(name, out_f, in_f, gain):
        w[name + ".weight"] = n((out_f, in_f), gain / np.sqrt(in_f))
        w[name + ".bias"] = n(out_f, S["bias"])

    def ln(name, dim):
        w[name + ".weight"] = 1.0 + n(dim, S["norm"])
        w[name + ".bias"] = n(dim, S["norm"])

    w[p + "patch_embed.proj.weight"] = n((Hv, C, T, P, P), S["patch"] / np.sqrt(K))
    w[p + "patch_embed.proj.bias"] = n(Hv, S["bias"])
    w[p + "pos_embed.weight"] = n((vc["num_position_embeddings"], Hv), S["pos"])
    for j in range(vc["depth"]):
        b = f"{p}blocks.{j}."
        ln(b + "norm1", Hv)
        ln(b + "norm2", Hv)
        lin(b + "attn.qkv", 3 * Hv, Hv, S["proj"])
        lin(b + "attn.proj", Hv, Hv, S["out"])
        lin(b + "mlp.linear_fc1", I, Hv, S["proj"])
        lin(b + "mlp.linear_fc2", Hv, I, S["out"])
    ln(p + "merger.norm", Hv)
    lin(p + "merger.linear_fc1", m * m * Hv, m * m * Hv, S["proj"])
    lin(p + "merger.linear_fc2", O, m * m * Hv, S["merger_out"])
    return w


def make_base(dst, cfg, tok_dir, ids):
    os.makedirs(dst, exist_ok=True)
    rng = np.random.default_rng(SEED + 1000)
    text = q35.make_weights(cfg["text_config"], SEED, q35.SCALES)
    vis = vision_weights(cfg["vision_config"], rng)
    arrays, table = {}, {}
    for k, (v, dt) in text.items():
        a = mx.array(v.astype(np.float32))
        arrays[k] = a if dt == "f32" else a.astype(mx.bfloat16)
        table[k] = {"shape": list(v.shape), "dtype": dt}
    for k, v in vis.items():
        arrays[k] = mx.array(v.astype(np.float32)).astype(mx.bfloat16)
        table[k] = {"shape": list(v.shape), "dtype": "bf16"}
    mx.save_safetensors(os.path.join(dst, "model.safetensors"), arrays,
                        metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}, f, indent=2)
    with open(os.path.join(dst, "preprocessor_config.json"), "w") as f:
        json.dump(PREPROCESSOR, f, indent=2)
    for name in sorted(os.listdir(tok_dir)):
        shutil.copy(os.path.join(tok_dir, name), dst)
    return table


def make_images(dst):
    from PIL import Image
    import skimage.data
    os.makedirs(dst, exist_ok=True)
    paths = []
    for i, (photo, top, left, h, w) in enumerate(IMAGES):
        a = getattr(skimage.data, photo)()[top:top + h, left:left + w, :3]
        assert a.shape == (h, w, 3) and a.dtype == np.uint8
        path = os.path.join(dst, f"img{i}.png")
        Image.fromarray(a).save(path, optimize=True)
        paths.append(path)
    return paths


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---- reference runs ----------------------------------------------------------------------------

def tower_stages(model, pixel_values, grid):
    """VisionModel.__call__ step by step, keeping the patch+position embedding and block 0."""
    vt = model.vision_tower
    pv = pixel_values.astype(vt.patch_embed.proj.weight.dtype)  # as Model.get_input_embeddings
    h = vt.patch_embed(pv)
    h = h + vt.fast_pos_embed_interpolate(grid)
    stage0 = h
    rot = vt.rot_pos_emb(grid)
    cu = [0]
    for t, gh, gw in grid.tolist():
        for _ in range(int(t)):
            cu.append(cu[-1] + int(gh) * int(gw))
    cu = mx.array(cu, dtype=mx.int32)
    blocks = []
    for blk in vt.blocks:
        h = blk(h, cu_seqlens=cu, rotary_pos_emb=rot)
        blocks.append(h)
    out = vt.merger(h)
    ref, _ = vt(pv, grid)
    mx.eval(stage0, blocks, out, ref)
    assert np.array_equal(np.array(out.astype(mx.float32)), np.array(ref.astype(mx.float32)))
    return stage0, blocks[0], out


def f32np(a):
    return np.array(a.astype(mx.float32))


def run_prompt(model, inputs):
    from mlx_vlm.generate.ar import generate_step
    from mlx_vlm.models import cache as vcache

    ids, pv, grid, mask = (inputs["input_ids"], inputs["pixel_values"],
                           inputs["image_grid_thw"], inputs["attention_mask"])
    lm = model.language_model
    stage0, block0, vis = tower_stages(model, pv, grid)

    lm._position_ids, lm._rope_deltas = None, None
    emb = model.get_input_embeddings(ids, pv, mask=mask, image_grid_thw=grid)
    x, pos, delta = emb.inputs_embeds, emb.position_ids, emb.rope_deltas
    mx.eval(x, pos, delta)
    # the soft tokens are scattered unchanged into the image-pad rows
    sel = np.array(ids[0]) == model.config.image_token_index
    assert np.array_equal(f32np(x[0])[sel], f32np(vis))

    # prefill in one call (fresh cache), explicit MRoPE ids, as generate_step passes them
    lm._position_ids, lm._rope_deltas = None, None
    cache = vcache.make_prompt_cache(lm) if hasattr(vcache, "make_prompt_cache") else None
    out = lm(ids, inputs_embeds=x, cache=cache, position_ids=pos, rope_deltas=delta)
    logits = out.logits[0, -1]
    mx.eval(logits)

    lm._position_ids, lm._rope_deltas = None, None
    toks, lps = [], []
    for tok, lp in generate_step(ids, model, pv, mask, max_tokens=N_GREEDY, temperature=0.0,
                                 image_grid_thw=grid):
        toks.append(int(tok))
        lps.append(f32np(lp))
    lm._position_ids, lm._rope_deltas = None, None
    return {
        "patch_pos": f32np(stage0), "block0": f32np(block0), "vision": f32np(vis),
        "embeds": f32np(x[0]), "position_ids": np.array(pos[:, 0]).astype(np.int32),
        "rope_delta": np.array(delta).reshape(-1).astype(np.int32),
        "logits": f32np(logits), "greedy": np.array(toks, dtype=np.int32),
        "greedy_logprobs": np.stack(lps),
    }


def pixel_codes(pv):
    """Pixel values are (u8 * f32(1/255) - 0.5) / 0.5 in float32 (spec 5.4): 256 values."""
    u = np.arange(256, dtype=np.float32)
    table = ((u * np.float32(1 / 255)) - np.float32(0.5)) / np.float32(0.5)
    table = table.astype(np.float32)
    codes = np.searchsorted(table, pv)
    codes = np.clip(codes, 0, 255).astype(np.uint8)
    assert np.array_equal(table[codes], pv), "pixel values are not all table entries"
    return table, codes


NOTES = [
    "Reference folder: the mixed (published) folder, loaded by mlx_vlm.utils.load; mlx-vlm reads "
    "model.safetensors.index.json, whose weight_map build_vision_sidecar extended with the "
    "vision_tower.* keys -> optiq_vision.safetensors. The language tower is the quantized one "
    "a C engine loads from the same folder, so logits and greedy tokens are comparable.",
    "The tower of the bf16 base (mlx_vlm.utils.load(<base>)) gives bit-identical soft tokens to "
    "the mixed folder's bf16 tower (checked): the sidecar holds the same bf16 values.",
    "f32 run: model.set_dtype(mx.float32) after load; the tower weights become f32 (bf16 values "
    "widened) and Model.get_input_embeddings casts pixel_values to the patch-embed dtype, so the "
    "f32 run's tower input is the exact f32 pixel values; the bf16 run rounds them to bf16.",
    "patch_pos = patch_embed(pixel_values) + fast_pos_embed_interpolate(grid) (before block 0); "
    "block0 = output of vision block 0; vision = merger output (soft tokens). Tower stages are "
    "computed step by step and the final one asserted equal to VisionModel.__call__.",
    "position_ids / rope_delta: Model.get_input_embeddings -> LanguageModel.get_rope_index, "
    "identical in both runs (checked). embeds = inputs_embeds after the masked scatter.",
    "logits: one LanguageModel call over the whole prompt with a fresh prompt cache and the "
    "explicit MRoPE ids; last position. greedy: mlx_vlm.generate.ar.generate_step, "
    "temperature 0 (its prefill is chunked: all but the last token, then the last one).",
    "pixel values: p{i}.pixel_codes (uint8) index pixel_table (f32, 256 entries, "
    "(u8 * f32(1/255) - 0.5) / 0.5); table[codes] equals the processor output exactly (checked).",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    args = ap.parse_args()

    from mlx_lm import convert
    import mlx_lm
    import mlx_vlm
    import transformers
    from importlib import metadata
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import load, load_image, prepare_inputs
    from optiq.vlm.sidecar import build_vision_sidecar

    base = os.path.join(args.out, BASE_NAME)
    mixed = os.path.join(args.out, MIXED_NAME)
    for d in (base, mixed):
        if os.path.exists(d):
            shutil.rmtree(d)

    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = os.path.join(tmp, "tokenizer")
        vocab, ids = q35.make_tokenizer(tok_dir)
        assert vocab == q35.VOCAB, vocab
        cfg = hf_config(vocab, ids)
        base_tensors = make_base(base, cfg, tok_dir, ids)

    pred = q35.TablePredicate(MIXED_TABLE)
    convert(hf_path=base, mlx_path=mixed, quantize=True, q_group_size=64, q_bits=4,
            quant_predicate=pred)
    readme = os.path.join(mixed, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    q35.add_false_entries(mixed, pred.seen)

    # what build_vision_sidecar changes: snapshot the folder before and after
    before_files = sorted(os.listdir(mixed))
    cfg_before = read_json(os.path.join(mixed, "config.json"))
    idx_path = os.path.join(mixed, "model.safetensors.index.json")
    idx_before = read_json(idx_path) if os.path.exists(idx_path) else None
    sidecar_summary = build_vision_sidecar(base=base, quant_dir=mixed)
    sidecar_summary["sidecar"] = os.path.relpath(sidecar_summary["sidecar"], mixed)
    after_files = sorted(os.listdir(mixed))
    cfg_after = read_json(os.path.join(mixed, "config.json"))
    idx_after = read_json(idx_path) if os.path.exists(idx_path) else None
    # the sidecar builder records the base path it was given; keep the fixture path-free
    assert cfg_after["optiq_vision"]["base_model"] == base
    cfg_after["optiq_vision"]["base_model"] = BASE_NAME
    with open(os.path.join(mixed, "config.json"), "w") as f:
        json.dump(cfg_after, f, indent=2)
    sidecar = mx.load(os.path.join(mixed, "optiq_vision.safetensors"))
    sidecar_table = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("mlx.core.", "")}
                     for k, v in sorted(sidecar.items())}
    config_edits = {
        "added": {k: cfg_after[k] for k in cfg_after if k not in cfg_before},
        "changed": {k: [cfg_before[k], cfg_after[k]] for k in cfg_after
                    if k in cfg_before and cfg_before[k] != cfg_after[k]},
        "removed": [k for k in cfg_before if k not in cfg_after],
    }
    index_edits = None
    if idx_before is not None:
        wb, wa = idx_before.get("weight_map", {}), idx_after.get("weight_map", {})
        index_edits = {"added": {k: wa[k] for k in sorted(wa) if k not in wb},
                       "changed": {k: [wb[k], wa[k]] for k in wb if k in wa and wb[k] != wa[k]},
                       "metadata_before": idx_before.get("metadata"),
                       "metadata_after": idx_after.get("metadata")}

    img_paths = make_images(os.path.join(mixed, "images"))

    # ---- runs
    model_bf16, processor = load(mixed)
    model_f32, _ = load(mixed)
    model_f32.set_dtype(mx.float32)
    model_base, _ = load(base)
    models = {"f32": model_f32, "bf16": model_bf16}
    image_token = cfg["image_token_id"]

    tensors, per_prompt, table = {}, [], None
    for i, p in enumerate(PROMPTS):
        images = [load_image(img_paths[j]) for j in p["images"]]
        text = apply_chat_template(processor, model_bf16.config, p["text"],
                                   num_images=len(images))
        inputs = prepare_inputs(processor, images=images, prompts=[text],
                                image_token_index=image_token)
        pv = np.array(inputs["pixel_values"])
        assert pv.dtype == np.float32, pv.dtype
        table, codes = pixel_codes(pv)
        grid = np.array(inputs["image_grid_thw"]).astype(np.int32)
        L = inputs["input_ids"].shape[1]
        assert np.array(inputs["attention_mask"]).all()
        tensors[f"p{i}.pixel_codes"] = codes
        tensors[f"p{i}.grid_thw"] = grid
        tensors[f"p{i}.input_ids"] = np.array(inputs["input_ids"][0]).astype(np.int32)
        res = {run: run_prompt(m, inputs) for run, m in models.items()}
        # the base folder's tower equals the sidecar's
        _, _, vis_base = tower_stages(model_base, inputs["pixel_values"], inputs["image_grid_thw"])
        assert np.array_equal(f32np(vis_base), res["bf16"]["vision"])
        for key in ("position_ids", "rope_delta"):
            assert np.array_equal(res["f32"][key], res["bf16"][key]), key
        tensors[f"p{i}.position_ids"] = res["f32"]["position_ids"]
        tensors[f"p{i}.rope_delta"] = res["f32"]["rope_delta"]
        for run in ("f32", "bf16"):
            for key in ("patch_pos", "block0", "vision", "embeds", "logits", "greedy"):
                tensors[f"p{i}.{run}.{key}"] = res[run][key]
        agree = bool(np.array_equal(res["f32"]["greedy"], res["bf16"]["greedy"]))
        m = q35.margins(res["bf16"]["greedy_logprobs"])
        n_tok = int((np.array(inputs["input_ids"][0]) == image_token).sum())
        per_prompt.append({
            "images": [os.path.relpath(img_paths[j], mixed) for j in p["images"]],
            "image_sizes_hw": [list(np.array(im).shape[:2]) for im in images],
            "question": p["text"],
            "rendered_text": text,
            "num_tokens": L,
            "num_image_tokens": n_tok,
            "grid_thw": grid.tolist(),
            "rope_delta": int(res["f32"]["rope_delta"][0]),
            "input_ids": tensors[f"p{i}.input_ids"].tolist(),
            "greedy_f32": res["f32"]["greedy"].tolist(),
            "greedy_bf16": res["bf16"]["greedy"].tolist(),
            "greedy_agree": agree,
            "greedy_first_divergence": None if agree else int(
                np.argmax(res["f32"]["greedy"] != res["bf16"]["greedy"])),
            "bf16_margin_min": float(m.min()),
            "f32_margin_min": float(q35.margins(res["f32"]["greedy_logprobs"]).min()),
            "f32_margin_top1_top2": [round(float(x), 6)
                                     for x in q35.margins(res["f32"]["greedy_logprobs"])],
            "greedy_text_f32": processor.tokenizer.decode(res["f32"]["greedy"].tolist()),
            "max_abs_diff_bf16_vs_f32": {
                k: float(np.abs(res["bf16"][k] - res["f32"][k]).max())
                for k in ("patch_pos", "block0", "vision", "embeds", "logits")},
            "max_rel_diff_bf16_vs_f32": {
                k: float(np.abs(res["bf16"][k] - res["f32"][k]).max()
                         / np.abs(res["f32"][k]).max())
                for k in ("patch_pos", "block0", "vision", "embeds", "logits")},
            "f32_rms": {k: float(np.sqrt((res["f32"][k] ** 2).mean()))
                        for k in ("patch_pos", "block0", "vision", "embeds")},
        })
    tensors["pixel_table"] = table

    out = {}
    for k, v in tensors.items():
        a = mx.array(v)
        if ".bf16." in k and v.dtype == np.float32:
            a = a.astype(mx.bfloat16)  # bf16 run values are bf16 numbers: exact
        out[k] = a
    mx.save_safetensors(os.path.join(mixed, "reference_vl.safetensors"), out,
                        metadata={"format": "mlx"})

    described = {}
    for k, v in out.items():
        described[k] = {"dtype": str(v.dtype).replace("mlx.core.", ""), "shape": list(v.shape)}
    ref = {
        "about": "Test-only file written by tools/reference/gen_qwen35_vl.py; not part of an "
                 "MLX model folder. Tensors in reference_vl.safetensors; all runs on the MLX "
                 "CPU device.",
        "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__,
                     "mlx_vlm": mlx_vlm.__version__, "transformers": transformers.__version__,
                     "mlx_optiq": metadata.version("mlx-optiq")},
        "seed": SEED,
        "vision_scales": VISION_SCALES,
        "base_folder": BASE_NAME,
        "base_tensors": base_tensors,
        "convert_call": {"function": "mlx_lm.convert",
                         "arguments": {"hf_path": BASE_NAME, "mlx_path": MIXED_NAME,
                                       "quantize": True, "q_group_size": 64, "q_bits": 4,
                                       "quant_predicate": "<table, see quant_table>"}},
        "quant_table": {"per_path": MIXED_TABLE, "otherwise": "True (global default)"},
        "sidecar_call": {"function": "optiq.vlm.sidecar.build_vision_sidecar",
                         "arguments": {"base": BASE_NAME, "quant_dir": MIXED_NAME},
                         "returned": dict(sidecar_summary, base=BASE_NAME)},
        "sidecar_files_before": before_files,
        "sidecar_files_after": after_files,
        "sidecar_tensors": sidecar_table,
        "sidecar_config_edits": config_edits,
        "sidecar_index_edits": index_edits,
        "tokenizer": {"vocab_size": q35.VOCAB, "added_tokens": ids},
        "preprocessor_config": PREPROCESSOR,
        "tensors": described,
        "tensor_notes": {
            "pixel_table": "F32 [256]: value of each uint8 code after rescale + normalise",
            "p{i}.pixel_codes": "U8 [N, 1536]: pixel_values = pixel_table[codes] (processor "
                                "output, all images of the prompt concatenated)",
            "p{i}.grid_thw": "I32 [n_images, 3]: image_grid_thw",
            "p{i}.input_ids": "I32 [L]: after placeholder expansion",
            "p{i}.position_ids": "I32 [3, L]: MRoPE ids (t, h, w) from get_rope_index",
            "p{i}.rope_delta": "I32 [1]",
            "p{i}.{run}.patch_pos": "[N, Hv]: patch embedding + interpolated position embedding",
            "p{i}.{run}.block0": "[N, Hv]: output of vision block 0",
            "p{i}.{run}.vision": "[N/4, out_hidden]: merger output (soft tokens)",
            "p{i}.{run}.embeds": "[L, H]: input embeddings after the scatter",
            "p{i}.{run}.logits": "[V]: last-position logits of the prefill",
            "p{i}.{run}.greedy": "I32 [32]: greedy tokens from generate_step",
            "runs": "f32 tensors F32; bf16 run tensors BF16 (exact values)",
        },
        "prompts": per_prompt,
        "notes": NOTES,
    }
    with open(os.path.join(mixed, "reference_vl.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    for d in (base, mixed):
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"{os.path.basename(d)}: {size} bytes")
    for e in per_prompt:
        print(e["grid_thw"], e["num_tokens"], e["greedy_first_divergence"],
              round(e["f32_margin_min"], 5), round(e["bf16_margin_min"], 5))


if __name__ == "__main__":
    main()
