"""Build two tiny MLX model folders with the real mlx-lm converter, for the model-folder
loader and `optiq inspect` tests:

  tests/fixtures/models/tiny-mixed/  qwen3, 4 layers, untied lm_head,
                                     mlx_lm convert -q --q-group-size 64 --quant-predicate mixed_3_6
  tests/fixtures/models/tiny-q4/     qwen3, 2 layers, tie_word_embeddings = true,
                                     mlx_lm convert -q --q-bits 4 --q-group-size 32
                                     + a synthetic vision sidecar optiq_vision.safetensors

Steps: write a random-weight Hugging Face style source folder (config.json, bf16
model.safetensors, a byte-level BPE tokenizer trained here on a few sentences) into a
temporary directory, run `python -m mlx_lm convert` on it, then load the result back with
mlx_lm and record what mlx-lm says about it in reference.json (a test-only file, not part of
a real model folder).

Usage: python tools/reference/gen_model.py [--out tests/fixtures/models]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

SEED = 20260822
VOCAB = 384

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model for testing the loader: weights, config and tokenizer files.",
    "Quantized weights are packed into 32-bit words with one scale and bias per group.",
    "Hello world! Hello optiq. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ' \"",
    "user: what is in the picture?\nassistant: a cat sitting on a red chair.",
    "The loader reads config.json, model.safetensors and the tokenizer.",
    "Mixed precision keeps v_proj and down_proj at six bits in some layers.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ---- source (Hugging Face layout) ------------------------------------------------------------

def make_tokenizer(dst):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 64, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dst)
    return fast


def hf_config(layers, tie):
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": VOCAB,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": tie,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
        "attention_bias": False,
        "bos_token_id": None,
        "eos_token_id": 2,
    }


def make_source(dst, layers, tie, seed):
    """Random-weight qwen3 checkpoint in the Hugging Face layout (bf16 safetensors)."""
    from mlx_lm.models import qwen3

    os.makedirs(dst, exist_ok=True)
    cfg = hf_config(layers, tie)
    mx.random.seed(seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(cfg))
    weights = {}
    for name, v in tree_flatten(model.parameters()):
        if name.endswith("norm.weight"):          # make norms distinguishable from ones
            v = 1.0 + 0.1 * mx.random.normal(v.shape)
        elif "embed_tokens" in name:
            v = 0.02 * mx.random.normal(v.shape)
        weights[name] = v.astype(mx.bfloat16)
    mx.save_safetensors(os.path.join(dst, "model.safetensors"), weights,
                        metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    make_tokenizer(dst)


def convert(src, dst, args):
    cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", src, "--mlx-path", dst] + args
    print("+ mlx_lm convert", " ".join(args))
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"mlx_lm convert failed ({r.returncode})")
    return r.stdout


# ---- vision sidecar ---------------------------------------------------------------------------

def write_vision_sidecar(path, seed):
    """Synthetic, file-handling only: a few bf16 tensors named like a vision tower."""
    rng = np.random.default_rng(seed)
    shapes = {
        "vision_tower.patch_embed.proj.weight": (16, 3, 2, 4, 4),
        "vision_tower.blocks.0.norm1.weight": (16,),
        "vision_tower.blocks.0.attn.qkv.weight": (48, 16),
        "vision_tower.blocks.0.attn.qkv.bias": (48,),
        "vision_tower.blocks.0.attn.proj.weight": (16, 16),
        "vision_tower.blocks.0.mlp.fc1.weight": (32, 16),
        "vision_tower.merger.ln_q.weight": (16,),
        "vision_tower.merger.mlp.0.weight": (64, 64),
        "vision_tower.merger.mlp.2.weight": (64, 64),
    }
    t = {k: mx.array((rng.standard_normal(s) * 0.02).astype(np.float32)).astype(mx.bfloat16)
         for k, s in shapes.items()}
    mx.save_safetensors(path, t, metadata={"format": "mlx"})
    return {k: list(s) for k, s in shapes.items()}


# ---- reference.json -----------------------------------------------------------------------------

def reference_info(folder, convert_args, stdout):
    from mlx_lm import utils as lmu

    model, config = lmu.load_model(__import__("pathlib").Path(folder))
    quantized, unquantized = {}, []
    for path, m in tree_flatten(model.leaf_modules(), is_leaf=lambda m: isinstance(m, nn.Module)):
        if hasattr(m, "bits"):
            quantized[path] = {
                "class": type(m).__name__,
                "bits": int(m.bits),
                "group_size": int(m.group_size),
                "mode": getattr(m, "mode", "affine"),
                "weight_shape_packed": list(m.weight.shape),
                "weight_elements_unpacked": int(m.weight.size * 32 // m.bits),
            }
        elif "weight" in m:
            unquantized.append({"module": path, "class": type(m).__name__,
                                "weight_shape": list(m.weight.shape),
                                "dtype": str(m.weight.dtype).replace("mlx.core.", "")})
    hist_modules, hist_weights = {}, {}
    for q in quantized.values():
        b = str(q["bits"])
        hist_modules[b] = hist_modules.get(b, 0) + 1
        hist_weights[b] = hist_weights.get(b, 0) + q["weight_elements_unpacked"]
    bpw_line = next((ln for ln in stdout.splitlines() if "bits per weight" in ln), "")
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    files = sorted(f for f in os.listdir(folder) if f != "reference.json")
    import mlx_lm
    return {
        "about": "Test-only file written by tools/reference/gen_model.py; not part of an MLX "
                 "model folder. Values are what mlx-lm reports after loading this folder.",
        "mlx_version": mx.__version__,
        "mlx_lm_version": mlx_lm.__version__,
        "convert_command": "mlx_lm convert --hf-path <random qwen3 source> --mlx-path <this> "
                           + " ".join(convert_args),
        "convert_stdout_bpw_line": bpw_line.strip(),
        "mlx_lm_bits_per_weight": lmu.compute_bits_per_weight(model),
        "mlx_lm_bits_per_weight_function": "mlx_lm.utils.compute_bits_per_weight(model): "
            "8 * (bytes of all model arrays) / mlx_lm.utils.get_total_parameters(model)",
        "mlx_lm_total_parameters_unpacked": int(lmu.get_total_parameters(model)),
        "index_metadata": index.get("metadata", {}),
        "files": files,
        "config_quantization": config.get("quantization"),
        "quantized_modules": quantized,
        "unquantized_modules": unquantized,
        "histogram_bits_to_module_count": dict(sorted(hist_modules.items())),
        "histogram_bits_to_weight_count": dict(sorted(hist_weights.items())),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


# ---- main -------------------------------------------------------------------------------------

def build(out_root, name, layers, tie, convert_args, seed, sidecar=False):
    dst = os.path.join(out_root, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "hf")
        make_source(src, layers, tie, seed)
        stdout = convert(src, dst, convert_args)
    # mlx-lm writes a model card (README.md); for a local source it is a generic template.
    # Drop it if it ever names the temporary source folder, so reruns stay byte-identical.
    readme = os.path.join(dst, "README.md")
    if os.path.exists(readme) and tempfile.gettempdir() in open(readme).read():
        os.remove(readme)
    sidecar_info = None
    if sidecar:
        sidecar_info = write_vision_sidecar(os.path.join(dst, "optiq_vision.safetensors"),
                                            seed + 1)
    ref = reference_info(dst, convert_args, stdout)
    if sidecar_info:
        ref["synthetic_vision_sidecar"] = {
            "file": "optiq_vision.safetensors",
            "note": "synthetic bf16 tensors for file-handling tests only; not a real vision "
                    "tower; ignored by mlx-lm (it loads model*.safetensors only)",
            "metadata": {"format": "mlx"},
            "tensors": sidecar_info,
        }
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2, sort_keys=False)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    print(f"{name}: {size} bytes, bpw {ref['mlx_lm_bits_per_weight']:.4f}, "
          f"params {ref['mlx_lm_total_parameters_unpacked']}, "
          f"bits histogram {ref['histogram_bits_to_module_count']}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "models"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    build(args.out, "tiny-mixed", layers=4, tie=False, seed=SEED,
          convert_args=["-q", "--q-group-size", "64", "--quant-predicate", "mixed_3_6"])
    build(args.out, "tiny-q4", layers=2, tie=True, seed=SEED + 100, sidecar=True,
          convert_args=["-q", "--q-bits", "4", "--q-group-size", "32"])


if __name__ == "__main__":
    main()
