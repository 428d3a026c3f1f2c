"""Build five tiny random-weight Gemma-4 language-model folders with the real mlx-lm converter
and dump reference activations for the text forward pass and greedy generation:

  tests/fixtures/models/gemma4-e2b-bf16/     gemma4 (nested text_config, E2B-like): PLE (P = 16),
                                             KV sharing (last 4 of 8 layers), double-wide MLP on
                                             the shared layers, 1 KV head, tied, bf16
  tests/fixtures/models/gemma4-e2b-mixed/    the same architecture (other seed), affine 4-bit
                                             g64 default with per-module overrides (8-bit,
                                             3-bit, g32, one `false` entry), embed_tokens and
                                             embed_tokens_per_layer quantized; AFTER conversion
                                             k_proj (4-bit g64) and k_norm of the KV-shared
                                             layers 4..7 are added to model.safetensors (as
                                             OptIQ-built quants carry them; mlx-lm drops them)
  tests/fixtures/models/gemma4-keqv-mixed/   gemma4_text (flat config, 31B-like dense):
                                             attention_k_eq_v on the full layers, 2 KV heads
                                             (1 on full layers), no PLE, no KV sharing, untied
                                             lm_head, affine 4-bit g64 + overrides
  tests/fixtures/models/gemma4-moe-mixed/    gemma4 (26B-A4B-like): MoE block in every layer (8
                                             experts, top-2, I_m = 32) beside a dense MLP (I =
                                             64), K-eq-V, no PLE, no KV sharing, tied, affine
                                             4-bit g32 + the model's own predicate (router.proj
                                             8-bit g64); source in the HF layout with fused
                                             experts.gate_up_proj / experts.down_proj
  tests/fixtures/models/gemma4-unified-bf16/ gemma4_unified (text side of the encoder-free 12B,
                                             mlx-lm remaps it to gemma4): K-eq-V, no PLE, no KV
                                             sharing, use_bidirectional_attention "vision", bf16

All: hidden 64, 4 heads, head_dim 16 (sliding) / global_head_dim 32 (full), 8 layers
[s, s, s, full, s, s, s, full], sliding_window 32, rope_parameters sliding default 1e4 / full
proportional 1e6 partial 0.25, final_logit_softcapping 30, vocab 512 (a SentencePiece-style
byte-fallback BPE built here with Gemma-4's special tokens and the real Gemma-4 chat template).
Every text_config key that mlx-lm or mlx-vlm reads is written explicitly (their defaults
differ from the real checkpoints).

Steps per folder: write a random-weight checkpoint in the Hugging Face layout (tensor names
`model.language_model.*`, or `model.*` for gemma4_text) into a temporary directory, convert it
with `mlx_lm.convert(...)`, then load the result with `mlx_lm.utils.load` and run it on the MLX
CPU device.

Test-only files added to each folder (not part of an MLX model folder):

  reference.safetensors   for prompts i = 0 (chat template, one user turn, generation prompt,
                          enable_thinking false), 1 (system + two user turns), 2 (about 100
                          tokens of plain text with <bos>):
                            p{i}.tokens               I32 [T]
                            p{i}.logits_rows          I32 [R]: the positions kept (every 16th
                                                      and the last one)
                            p{i}.f32.hidden           F32 [L+2, R, H] at those positions:
                                                      embedding output (after the embed
                                                      scale), output of each decoder layer,
                                                      final norm
                            p{i}.{f32,bf16}.logits    [R, V] after the soft-cap (one forward,
                                                      no cache), F32 / BF16 (exact values)
                            p{i}.{f32,bf16}.greedy    I32 [32]  mlx_lm generate_step, greedy
                          "bf16" = the folder as loaded by mlx_lm (bf16 activations);
                          "f32" = the same model after model.set_dtype(mx.float32).
                          (No bf16 hidden states and no greedy logprobs: all gemma4-* folders
                          must stay under 3.5 MB; the margins are in reference.json.)
  reference.json          versions, the convert call, configs, prompts, greedy ids, margins,
                          f32/bf16 agreement, hidden RMS per stage, notes.

Usage: tools/reference/.venv/bin/python tools/reference/gen_gemma4.py [--out DIR] [--only NAME]
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

import mlx.core as mx

mx.set_default_device(mx.cpu)  # before mlx_lm.generate creates its stream

import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# generic helpers shared with the Qwen3.5 generator
from gen_qwen35 import (N_GREEDY, TablePredicate, add_false_entries,  # noqa: E402
                        cpu_has_bf16_gather_mm, gather_mm_shim, greedy, load_runs,
                        margins, module_table)

VOCAB = 512
ROW_STEP = 16  # positions kept in the reference: every 16th and the last

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(ROOT, "tests", "fixtures", "templates", "gemma4", "chat_template.jinja")

# ids 0..3 as in the real Gemma tokenizers, then <mask> and Gemma-4's control tokens (the ones
# the chat template writes, plus the image/audio begin/end markers), all special
SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>",
    "<|image|>", "<|image>", "<image|>", "<|audio|>", "<|audio>", "<audio|>", "<|video|>",
    "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
    "<tool_response|>", '<|"|>',
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is in the picture? Describe it in a few words.",
    "The picture shows a cat sitting on a red chair next to a window.",
    "You are a helpful assistant. Answer the question briefly.",
    "Name a color. Blue. Another one? Green, or maybe yellow.",
    "A tiny model for testing the loader: weights, config and tokenizer files.",
    "Sliding window layers attend to the last few tokens; full layers see everything.",
    "Per-layer embeddings add a small vector to every layer of the model.",
    "Quantized weights are packed into 32-bit words with one scale and bias per group.",
    "Mixture of experts layers route every token to two of eight experts.",
    "The river runs through the old town, under seven stone bridges, to the sea.",
    "In the morning the market opens early; farmers bring bread, cheese and apples.",
    "Hello world! Hello optiq. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ' \"",
    "user\nWhat is in the picture?\nmodel\nA cat sitting on a red chair.\nthought\n",
    "def main():\n    print('hello')\n    return 0\n",
]

PROMPTS = [
    {"kind": "chat", "messages": [
        {"role": "user", "content": "What is in the picture? Describe it."}]},
    {"kind": "chat", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"}]},
    {"kind": "text", "text": (
        "The river runs through the old town, under seven stone bridges, to the sea. In the "
        "morning the market opens early; farmers bring bread, cheese and apples, and the "
        "fishermen sell what the night gave them.")},
]

SCALES = {
    "embed": 0.125,          # embed_tokens std: h0 = E * sqrt(64) has RMS ~1
    "ple_embed": 1.0,        # embed_tokens_per_layer std (x sqrt(P) = 4 in the model)
    "lm_head": 0.5,          # untied lm_head std (logits std ~4)
    "proj": 1.0,             # projections: std gain / sqrt(fan_in)
    "router": 2.0,           # router.proj gain
    "pre_norm": [1.0, 0.1],  # mean, std of input/pre-feedforward/k/PLE-projection norms
    "q_norm": [0.5, 0.05],   # q_norm: attention scale is 1.0, so scores have std ~0.5 sqrt(d)
    "branch_norm": [0.4, 0.04],  # post_attention / post_feedforward(_1,_2) / post_per_layer
    "layer_scalar": [0.8, 0.9],  # uniform range
    "router_scale": [1.0, 0.1],
    "per_expert_scale": [0.5, 1.5],  # uniform range
    "final_norm": [1.0, 0.1],        # untied
    "final_norm_tied_abs": [6.0, 0.6],  # tied: random sign x N(6, 0.6^2)
}

ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "rope_theta": 1000000.0,
                           "partial_rotary_factor": 0.25}}
LAYER_TYPES = ["sliding_attention"] * 3 + ["full_attention"] + \
              ["sliding_attention"] * 3 + ["full_attention"]


# ---- tokenizer ---------------------------------------------------------------------------------

def make_tokenizer(dst):
    """SentencePiece-style BPE as the real Gemma tokenizers are serialised: Replace(" ", "▁")
    normalizer, Split(" ", MergedWithPrevious) pre-tokenizer, BPE with byte_fallback and
    fuse_unk, <bos> TemplateProcessing, Replace/ByteFallback/Fuse decoder. Ids: the special
    tokens 0..23, the byte tokens <0x00>..<0xFF> 24..279, then the trained pieces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    n_trained = VOCAB - len(SPECIAL_TOKENS) - 256
    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    t.normalizer = normalizers.Replace(" ", "\u2581")
    t.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    trainer = trainers.BpeTrainer(vocab_size=n_trained, special_tokens=[], show_progress=False)
    t.train_from_iterator(CORPUS * 4, trainer=trainer)
    trained = json.loads(t.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    assert len(pieces) == n_trained, len(pieces)
    vocab = {}
    for s in SPECIAL_TOKENS:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for p, _ in pieces:
        assert p not in vocab, p
        vocab[p] = len(vocab)
    assert len(vocab) == VOCAB
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": vocab[s], "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for s in SPECIAL_TOKENS],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [vocab["<bos>"]],
                                         "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": trained["merges"]},
    }
    tok = Tokenizer.from_str(json.dumps(tj))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>")
    with open(TEMPLATE) as f:
        fast.chat_template = f.read()
    fast.save_pretrained(dst)
    # name the class the real Gemma checkpoints name
    p = os.path.join(dst, "tokenizer_config.json")
    with open(p) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "GemmaTokenizer"
    tc["add_bos_token"] = True
    tc["add_eos_token"] = False
    with open(p, "w") as f:
        json.dump(tc, f, indent=2)
    ids = {s: vocab[s] for s in SPECIAL_TOKENS}
    return len(vocab), ids


# ---- source checkpoint (Hugging Face layout) ---------------------------------------------------

def text_config(kind, ids, inter):
    e2b, keqv_dense, moe, unified = (kind == "e2b", kind == "keqv", kind == "moe",
                                     kind == "unified")
    tc = {
        "model_type": "gemma4_unified_text" if unified else "gemma4_text",
        "hidden_size": 64,
        "num_hidden_layers": 8,
        "intermediate_size": inter,
        "num_attention_heads": 4,
        "head_dim": 16,
        "global_head_dim": 32,
        "num_key_value_heads": 1 if e2b else 2,
        "num_global_key_value_heads": None if e2b else 1,
        "attention_k_eq_v": not e2b,
        "num_kv_shared_layers": 4 if e2b else 0,
        "hidden_size_per_layer_input": 16 if e2b else 0,
        "vocab_size_per_layer_input": VOCAB,
        "vocab_size": VOCAB,
        "use_double_wide_mlp": e2b,
        "enable_moe_block": moe,
        "num_experts": 8 if moe else None,
        "top_k_experts": 2 if moe else None,
        "moe_intermediate_size": 32 if moe else None,
        "sliding_window": 32,
        "sliding_window_pattern": 4,
        "layer_types": list(LAYER_TYPES),
        "rope_parameters": copy.deepcopy(ROPE),
        "rope_traditional": False,
        "rms_norm_eps": 1e-6,
        "final_logit_softcapping": 30.0,
        "tie_word_embeddings": not keqv_dense,
        "max_position_embeddings": 4096,
        "hidden_activation": "gelu_pytorch_tanh",
        "use_bidirectional_attention": "vision" if unified else None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<bos>"],
        "eos_token_id": ids["<eos>"],
        "dtype": "bfloat16",
    }
    return tc


def hf_config(kind, ids, inter):
    tc = text_config(kind, ids, inter)
    if kind == "keqv":  # flat gemma4_text
        cfg = {"architectures": ["Gemma4ForCausalLM"]}
        cfg.update(tc)
        return cfg
    return {
        "architectures": ["Gemma4UnifiedForConditionalGeneration" if kind == "unified"
                          else "Gemma4ForConditionalGeneration"],
        "model_type": "gemma4_unified" if kind == "unified" else "gemma4",
        "text_config": tc,
        "vision_config": None,
        "audio_config": None,
        "vocab_size": VOCAB,  # mlx-lm's gemma4.ModelArgs copies this into text_config
        "hidden_size": 64,
        "tie_word_embeddings": tc["tie_word_embeddings"],
        "image_token_id": ids["<|image|>"],
        "audio_token_id": ids["<|audio|>"],
        "video_token_id": ids["<|video|>"],
        "boi_token_id": ids["<|image>"],
        "eoi_token_id": ids["<image|>"],
        "boa_token_id": ids["<|audio>"],
        "eoa_token_id": ids["<audio|>"],
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<bos>"],
        "eos_token_id": ids["<eos>"],
        "dtype": "bfloat16",
    }


def make_weights(tc, prefix, seed, S):
    """Random weights with HF names: {name: float64 numpy array} (all stored bf16).

    Projections ~ N(0, (gain / sqrt(fan_in))^2); embeddings N(0, std^2); norm weights N(mean,
    std^2) (Gemma-4 uses the weight directly, no 1 + w): the norms in front of a branch around
    1, the norms after a branch (post_attention, post_feedforward*, post_per_layer_input) around
    0.4, q_norm around 0.5 (the attention scale is 1.0), layer_scalar U(0.8, 0.9), so the
    residual stream keeps an RMS around 1; a tied model's final norm has random signs and
    magnitude ~6 (logits std ~6, and the current token's own
    embedding does not dominate its tied logits)."""
    rng = np.random.default_rng(seed)
    H, V, L = tc["hidden_size"], tc["vocab_size"], tc["num_hidden_layers"]
    nh, P = tc["num_attention_heads"], tc["hidden_size_per_layer_input"]
    first_shared = L - tc["num_kv_shared_layers"]
    w = {}

    def normal(shape, std, mean=0.0):
        return mean + rng.standard_normal(shape) * std

    def lin(name, out_f, in_f, gain=S["proj"]):
        w[name] = normal((out_f, in_f), gain / np.sqrt(in_f))

    def norm(name, n, ms):
        w[name] = normal(n, ms[1], ms[0])

    p = prefix
    w[p + "embed_tokens.weight"] = normal((V, H), S["embed"])
    if P:
        w[p + "embed_tokens_per_layer.weight"] = normal((tc["vocab_size_per_layer_input"],
                                                         L * P), S["ple_embed"])
        lin(p + "per_layer_model_projection.weight", L * P, H)
        norm(p + "per_layer_projection_norm.weight", P, S["pre_norm"])
    for i in range(L):
        q = f"{p}layers.{i}."
        full = tc["layer_types"][i] == "full_attention"
        d = tc["global_head_dim"] if full else tc["head_dim"]
        keqv = tc["attention_k_eq_v"] and full
        nkv = (tc["num_global_key_value_heads"] if keqv and tc["num_global_key_value_heads"]
               is not None else tc["num_key_value_heads"])
        shared = i >= first_shared > 0
        a = q + "self_attn."
        lin(a + "q_proj.weight", nh * d, H)
        # the KV-shared layers of the HF checkpoints still carry k/v projections and k_norm
        # (mlx-lm's sanitize drops them); the source here does too
        lin(a + "k_proj.weight", nkv * d, H)
        if not keqv:
            lin(a + "v_proj.weight", nkv * d, H)
        lin(a + "o_proj.weight", H, nh * d)
        norm(a + "q_norm.weight", d, S["q_norm"])
        norm(a + "k_norm.weight", d, S["pre_norm"])
        norm(q + "input_layernorm.weight", H, S["pre_norm"])
        norm(q + "post_attention_layernorm.weight", H, S["branch_norm"])
        norm(q + "pre_feedforward_layernorm.weight", H, S["pre_norm"])
        norm(q + "post_feedforward_layernorm.weight", H, S["branch_norm"])
        I = tc["intermediate_size"] * (2 if tc["use_double_wide_mlp"] and shared else 1)
        lin(q + "mlp.gate_proj.weight", I, H)
        lin(q + "mlp.up_proj.weight", I, H)
        lin(q + "mlp.down_proj.weight", H, I)
        if tc["enable_moe_block"]:
            E, Im = tc["num_experts"], tc["moe_intermediate_size"]
            lin(q + "router.proj.weight", E, H, S["router"])
            norm(q + "router.scale", H, S["router_scale"])
            w[q + "router.per_expert_scale"] = rng.uniform(*S["per_expert_scale"], E)
            # fused experts: gate rows [0, Im) then up rows [Im, 2 Im); no ".weight" suffix
            w[q + "experts.gate_up_proj"] = normal((E, 2 * Im, H), S["proj"] / np.sqrt(H))
            w[q + "experts.down_proj"] = normal((E, H, Im), S["proj"] / np.sqrt(Im))
            norm(q + "pre_feedforward_layernorm_2.weight", H, S["pre_norm"])
            norm(q + "post_feedforward_layernorm_1.weight", H, S["branch_norm"])
            norm(q + "post_feedforward_layernorm_2.weight", H, S["branch_norm"])
        if P:
            lin(q + "per_layer_input_gate.weight", P, H)
            lin(q + "per_layer_projection.weight", H, P)
            norm(q + "post_per_layer_input_norm.weight", H, S["branch_norm"])
        w[q + "layer_scalar"] = rng.uniform(*S["layer_scalar"], 1)
    if tc["tie_word_embeddings"]:
        m, s = S["final_norm_tied_abs"]
        w[p + "norm.weight"] = normal(H, s, m) * np.where(rng.uniform(size=H) < 0.5, -1.0, 1.0)
        # a tied checkpoint carries no lm_head.weight (errata A3: mlx-lm keeps a top-level
        # lm_head.weight verbatim and strict loading would fail)
    else:
        norm(p + "norm.weight", H, S["final_norm"])
        w["lm_head.weight"] = normal((V, H), S["lm_head"])
    return w


def make_source(dst, cfg, kind, tok_dir, ids, seed):
    os.makedirs(dst, exist_ok=True)
    tc = cfg if kind == "keqv" else cfg["text_config"]
    prefix = "model." if kind == "keqv" else "model.language_model."
    weights = make_weights(tc, prefix, seed, SCALES)
    arrays = {k: mx.array(v.astype(np.float32)).astype(mx.bfloat16) for k, v in weights.items()}
    mx.save_safetensors(os.path.join(dst, "model.safetensors"), arrays,
                        metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump(generation_config(ids), f, indent=2)
    for name in sorted(os.listdir(tok_dir)):
        shutil.copy(os.path.join(tok_dir, name), dst)
    return {k: "bf16 " + json.dumps(list(v.shape)) for k, v in weights.items()}


def generation_config(ids):
    # <turn|> closes every turn the template writes, so it ends a model turn
    return {"bos_token_id": ids["<bos>"], "pad_token_id": ids["<pad>"],
            "eos_token_id": [ids["<eos>"], ids["<turn|>"]]}


# ---- quantization predicates -------------------------------------------------------------------

LM = "language_model.model."

E2B_MIXED = {
    LM + "embed_tokens": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.mlp.down_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.3.self_attn.v_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.1.self_attn.q_proj": {"group_size": 64, "bits": 3, "mode": "affine"},
    LM + "layers.3.self_attn.o_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.6.mlp.up_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.5.mlp.gate_proj": False,
}

KEQV_MIXED = {
    "model.layers.3.self_attn.k_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    "model.layers.2.mlp.down_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    "lm_head": {"group_size": 64, "bits": 6, "mode": "affine"},
}

MOE_EXTRA = {
    LM + "layers.3.self_attn.o_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.experts.switch_glu.up_proj": {"group_size": 64, "bits": 8,
                                                 "mode": "affine"},
}


def model_predicate(cfg):
    """The predicate mlx-lm itself uses (gemma4_text Model.quant_predicate: router.proj ->
    {group_size 64, bits 8}, else True)."""
    from mlx_lm.utils import _get_classes
    model_class, args_class = _get_classes(config=cfg)
    return model_class(args_class.from_dict(copy.deepcopy(cfg))).quant_predicate


FIXTURES = [
    # intermediate_size 64 in the bf16 folders (128 in the quantized ones) keeps all gemma4-*
    # folders within their 3.5 MB share of the fixture budget
    {"name": "gemma4-e2b-bf16", "kind": "e2b", "seed": 4, "intermediate_size": 64,
     "convert": {}, "table": None},
    {"name": "gemma4-e2b-mixed", "kind": "e2b", "seed": 6, "intermediate_size": 128,
     "convert": {"quantize": True, "q_group_size": 64, "q_bits": 4}, "table": E2B_MIXED,
     "extra_shared_kv": True},
    {"name": "gemma4-keqv-mixed", "kind": "keqv", "seed": 2, "intermediate_size": 128,
     "convert": {"quantize": True, "q_group_size": 64, "q_bits": 4}, "table": KEQV_MIXED},
    # g32 default: moe_intermediate_size 32 (the experts' down_proj input) is not a multiple
    # of 64, and mlx-lm refuses a per-module group size that the global one does not divide
    {"name": "gemma4-moe-mixed", "kind": "moe", "seed": 8, "intermediate_size": 64,
     "convert": {"quantize": True, "q_group_size": 32, "q_bits": 4}, "table": MOE_EXTRA},
    {"name": "gemma4-unified-bf16", "kind": "unified", "seed": 2,
     "intermediate_size": 64, "convert": {},
     "table": None},
]


# ---- extra tensors of OptIQ-built quants -------------------------------------------------------

def add_shared_kv_tensors(dst, cfg, seed):
    """Add k_proj (quantized like the default: .weight/.scales/.biases) and k_norm.weight of the
    KV-shared layers to the converted folder, as OptIQ-built quants carry them. mlx-lm's
    gemma4_text.Model.sanitize drops '.self_attn.k_proj' / '.self_attn.k_norm' keys of layers
    >= first_shared on load, so the reference is unaffected."""
    tc = cfg["text_config"]
    q = cfg["quantization"]
    gs, bits = q["group_size"], q["bits"]
    L = tc["num_hidden_layers"]
    first = L - tc["num_kv_shared_layers"]
    rng = np.random.default_rng(1000 + seed)
    extra = {}
    for i in range(first, L):
        full = tc["layer_types"][i] == "full_attention"
        d = tc["global_head_dim"] if full else tc["head_dim"]
        nkv = tc["num_key_value_heads"]
        H = tc["hidden_size"]
        wk = mx.array((rng.standard_normal((nkv * d, H)) / np.sqrt(H)).astype(np.float32))
        wq, sc, bi = mx.quantize(wk.astype(mx.bfloat16), group_size=gs, bits=bits)
        base = f"{LM}layers.{i}.self_attn."
        extra[base + "k_proj.weight"] = wq
        extra[base + "k_proj.scales"] = sc
        extra[base + "k_proj.biases"] = bi
        extra[base + "k_norm.weight"] = mx.array(
            (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)).astype(mx.bfloat16)
    files = sorted(f for f in os.listdir(dst) if f.startswith("model") and
                   f.endswith(".safetensors"))
    assert files == ["model.safetensors"], files
    path = os.path.join(dst, "model.safetensors")
    tensors, meta = mx.load(path, return_metadata=True)
    assert not (set(extra) & set(tensors))
    tensors.update(extra)
    mx.save_safetensors(path, dict(sorted(tensors.items())), metadata=meta)
    idx = os.path.join(dst, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        for k in extra:
            index["weight_map"][k] = "model.safetensors"
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        total = sum(v.nbytes for v in tensors.values())
        index.setdefault("metadata", {})["total_size"] = total
        with open(idx, "w") as f:
            json.dump(index, f, indent=4)
    return {k: str(v.dtype).replace("mlx.core.", "") + " " + json.dumps(list(v.shape))
            for k, v in extra.items()}


# ---- reference runs ----------------------------------------------------------------------------

def render_prompts(tokenizer):
    out = []
    for p in PROMPTS:
        if p["kind"] == "chat":
            # the template writes <bos> itself; mlx_lm generate then encodes without special
            # tokens (the prompt starts with bos_token)
            text = tokenizer.apply_chat_template(p["messages"], tokenize=False,
                                                 add_generation_prompt=True,
                                                 enable_thinking=False)
            assert text.startswith("<bos>")
            ids = tokenizer.encode(text, add_special_tokens=False)
        else:
            text = p["text"]
            ids = tokenizer.encode(text, add_special_tokens=True)
            assert ids[0] == tokenizer.bos_token_id
        out.append({**p, "rendered": text, "tokens": list(ids)})
    return out


def text_model(model):
    return model.language_model if hasattr(model, "language_model") else model


def forward_stages(model, tokens):
    """Gemma4TextModel.__call__ (mlx_lm/models/gemma4_text.py) with cache=None, layer by layer,
    keeping every stage; asserts that the logits equal model(tokens)."""
    lm = text_model(model)
    tm = lm.model
    x = mx.array(tokens, dtype=mx.int32)[None]
    emb = tm.embed_tokens(x)
    h = emb * tm.embed_scale
    stages = [h]
    if tm.hidden_size_per_layer_input:
        pli = tm._get_per_layer_inputs(x, emb)
        pli = tm._project_per_layer_inputs(h, pli)
        pli = [pli[:, :, i, :] for i in range(len(tm.layers))]
    else:
        pli = [None] * len(tm.layers)
    cache = [None] * len(tm.layers)
    masks = tm._make_masks(h, cache)
    inter = [(None, None)] * len(tm.layers)
    router = {"ties": 0, "min_rel_gap": None}
    for idx, (layer, mask, prev) in enumerate(zip(tm.layers, masks, tm.previous_kvs)):
        kvs, off = inter[prev]
        if layer.enable_moe:
            # analysis only: is the top-k set decided with room to spare? (router scores in
            # the run's dtype; ties = k-th and (k+1)-th largest equal; min gap between them)
            a, _, _ = layer.self_attn(layer.input_layernorm(h), mask, None)
            hh = h + layer.post_attention_layernorm(a)
            r = layer.router
            xr = mx.fast.rms_norm(hh, r.scale * r._root_size, r.eps)
            g = np.sort(np.array(r.proj(xr).astype(mx.float32))[0], axis=-1)
            k = r.config.top_k_experts
            router["ties"] += int(np.sum(g[:, -k] == g[:, -k - 1]))
            gap = float((g[:, -k] - g[:, -k - 1]).min())
            router["min_rel_gap"] = gap if router["min_rel_gap"] is None else \
                min(router["min_rel_gap"], gap)
        h, kvs, off = layer(h, mask, None, per_layer_input=pli[idx], shared_kv=kvs, offset=off)
        inter[idx] = (kvs, off)
        stages.append(h)
    stages.append(tm.norm(h))
    logits = model(x)
    from mlx_lm.models.gemma4_text import logit_softcap
    direct = (tm.embed_tokens.as_linear(stages[-1]) if lm.tie_word_embeddings
              else lm.lm_head(stages[-1]))
    direct = logit_softcap(lm.final_logit_softcapping, direct)
    mx.eval(stages, logits, direct)
    assert np.array_equal(np.array(logits.astype(mx.float32)),
                          np.array(direct.astype(mx.float32)))
    hid = np.stack([np.array(s.astype(mx.float32))[0] for s in stages])
    if router["min_rel_gap"] is not None:
        router = {"ties": router["ties"], "min_score_gap_kth_vs_next": router["min_rel_gap"]}
    else:
        router = None
    return hid, np.array(logits.astype(mx.float32))[0], router


def vlm_compare(folder, tokens, lm_logits_bf16):
    """mlx-vlm's gemma4 LanguageModel built from text_config with the converted weights
    (language_model.* keys, prefix removed), one forward without cache, bf16."""
    from mlx_vlm.models.gemma4.config import TextConfig
    from mlx_vlm.models.gemma4.language import LanguageModel
    import mlx_vlm
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    lmv = LanguageModel(TextConfig.from_dict(cfg["text_config"]))
    w = mx.load(os.path.join(folder, "model.safetensors"))
    w = {k.removeprefix("language_model."): v for k, v in w.items()}
    w = lmv.sanitize(w)
    lmv.load_weights(list(w.items()), strict=True)
    out = lmv(mx.array(tokens, dtype=mx.int32)[None]).logits
    out = np.array(out.astype(mx.float32))[0]
    return {"mlx_vlm_version": mlx_vlm.__version__,
            "how": "mlx_vlm.models.gemma4.language.LanguageModel(TextConfig.from_dict("
                   "text_config)), weights of this folder with 'language_model.' removed, "
                   "strict load, one bf16 forward of p0 without cache",
            "max_abs_diff_logits_vs_mlx_lm_bf16": float(np.abs(out - lm_logits_bf16).max()),
            "bit_identical": bool(np.array_equal(out, lm_logits_bf16))}


def logits_rows(T):
    rows = list(range(0, T, ROW_STEP))
    if rows[-1] != T - 1:
        rows.append(T - 1)
    return np.array(rows, dtype=np.int32)


def summary(per_prompt):
    m = np.concatenate([e["bf16_margin_top1_top2"] for e in per_prompt])
    return {
        "bf16_greedy_margin_min": float(m.min()),
        "bf16_greedy_margin_median": float(np.median(m)),
        "bf16_greedy_steps_with_margin_below_0.1": int((m < 0.1).sum()),
        "greedy_agree_f32_bf16": [e["greedy_agree"] for e in per_prompt],
        "greedy_first_divergence": [e["greedy_first_divergence"] for e in per_prompt],
        "max_abs_diff_logits_bf16_vs_f32": [round(e["max_abs_diff_logits_bf16_vs_f32"], 4)
                                            for e in per_prompt],
        "distinct_greedy_tokens_bf16": [len(set(e["greedy_bf16"])) for e in per_prompt],
    }


def describe_predicate(table, with_model):
    if table is None:
        return None
    return {"per_path": table,
            "otherwise": ("gemma4_text Model.quant_predicate (paths ending in router.proj -> "
                          "{group_size: 64, bits: 8}), else True" if with_model
                          else "True (global default)")}


def build(out_root, fx, tok_dir, vocab, ids):
    from mlx_lm import convert
    import mlx_lm
    import tokenizers
    import transformers

    name, kind, seed = fx["name"], fx["kind"], fx["seed"]
    kwargs, table = fx["convert"], fx["table"]
    dst = os.path.join(out_root, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    cfg = hf_config(kind, ids, fx["intermediate_size"])
    pred = None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "hf")
        src_tensors = make_source(src, cfg, kind, tok_dir, ids, seed)
        if table is not None:
            pred = TablePredicate(table, model_predicate(cfg) if kind == "moe" else None)
        print(f"+ mlx_lm.convert {name}: {kwargs}")
        convert(hf_path=src, mlx_path=dst, quant_predicate=pred, **kwargs)
    readme = os.path.join(dst, "README.md")
    if os.path.exists(readme) and tempfile.gettempdir() in open(readme).read():
        os.remove(readme)
    assert os.path.exists(os.path.join(dst, "generation_config.json"))
    assert os.path.exists(os.path.join(dst, "chat_template.jinja"))
    if pred is not None and any(r is False for _, r in pred.seen):
        add_false_entries(dst, pred.seen)
    with open(os.path.join(dst, "config.json")) as f:
        config = json.load(f)
    extra = None
    if fx.get("extra_shared_kv"):
        extra = add_shared_kv_tensors(dst, config, seed)
    weights_after = mx.load(os.path.join(dst, "model.safetensors"))

    models, tokenizer = load_runs(dst)
    quantized, unquantized = module_table(models["bf16"])
    for p, r in (pred.seen if pred else []):
        if r is False:
            assert p in unquantized and p not in quantized, p
        elif isinstance(r, dict):
            assert quantized[p]["bits"] == r["bits"], p
            assert quantized[p]["group_size"] == r["group_size"], p
    prompts = render_prompts(tokenizer)
    raw_tok = tokenizers.Tokenizer.from_file(os.path.join(dst, "tokenizer.json"))
    for p in prompts:
        assert raw_tok.encode(p["rendered"], add_special_tokens=(p["kind"] == "text")).ids \
            == p["tokens"]
    lm = text_model(models["bf16"])
    L, H, V = lm.args.num_hidden_layers, lm.args.hidden_size, lm.args.vocab_size
    assert V == VOCAB

    use_shim = (any(type(m).__name__ == "SwitchLinear" for _, m in
                    tree_flatten(models["bf16"].leaf_modules(),
                                 is_leaf=lambda m: isinstance(m, nn.Module)))
                and not cpu_has_bf16_gather_mm())
    tensors, per_prompt, vlm = {}, [], None
    for i, p in enumerate(prompts):
        T = len(p["tokens"])
        rows = logits_rows(T)
        tensors[f"p{i}.tokens"] = np.array(p["tokens"], dtype=np.int32)
        tensors[f"p{i}.logits_rows"] = rows
        res = {}
        for run in ("f32", "bf16"):
            with gather_mm_shim(use_shim and run == "bf16"):
                hid, logits, gap = forward_stages(models[run], p["tokens"])
                g_ids, g_lps = greedy(models[run], p["tokens"])
            assert hid.shape == (L + 2, T, H) and logits.shape == (T, V)
            if run == "f32":
                tensors[f"p{i}.f32.hidden"] = hid[:, rows]
            tensors[f"p{i}.{run}.logits"] = logits[rows]
            tensors[f"p{i}.{run}.greedy"] = g_ids
            assert np.array_equal(np.argmax(g_lps, axis=-1), g_ids)
            res[run] = {"hid": hid, "logits": logits, "ids": g_ids, "lps": g_lps, "gap": gap}
        if i == 0 and name == "gemma4-e2b-bf16":
            vlm = vlm_compare(dst, p["tokens"], res["bf16"]["logits"])
        m_bf16 = margins(res["bf16"]["lps"])
        m_f32 = margins(res["f32"]["lps"])
        agree = bool(np.array_equal(res["f32"]["ids"], res["bf16"]["ids"]))
        div = None if agree else int(np.argmax(res["f32"]["ids"] != res["bf16"]["ids"]))
        entry = {
            "kind": p["kind"],
            "rendered_text": p["rendered"],
            "num_tokens": T,
            "tokens": p["tokens"],
            "logits_rows": rows.tolist(),
            "greedy_f32": res["f32"]["ids"].tolist(),
            "greedy_bf16": res["bf16"]["ids"].tolist(),
            "greedy_text_bf16": tokenizer.decode(res["bf16"]["ids"].tolist()),
            "greedy_agree": agree,
            "greedy_first_divergence": div,
            "bf16_margin_top1_top2": [round(float(x), 6) for x in m_bf16],
            "bf16_margin_min": float(m_bf16.min()),
            "bf16_margin_median": float(np.median(m_bf16)),
            "f32_margin_min": float(m_f32.min()),
            "f32_margin_median": float(np.median(m_f32)),
            "max_abs_diff_logits_bf16_vs_f32": float(
                np.abs(res["bf16"]["logits"] - res["f32"]["logits"]).max()),
            "max_abs_diff_final_hidden_bf16_vs_f32": float(
                np.abs(res["bf16"]["hid"][-1] - res["f32"]["hid"][-1]).max()),
            "max_abs_f32_logits": float(np.abs(res["f32"]["logits"]).max()),
            "f32_logits_std": float(res["f32"]["logits"].std()),
            "f32_hidden_rms_per_stage": [round(float(np.sqrt((s ** 2).mean())), 4)
                                         for s in res["f32"]["hid"]],
        }
        if "messages" in p:
            entry["messages"] = p["messages"]
        else:
            entry["text"] = p["text"]
        if kind == "moe":
            entry["router_topk_boundary"] = {run: res[run]["gap"] for run in ("f32", "bf16")}
        per_prompt.append(entry)

    ref_path = os.path.join(dst, "reference.safetensors")
    mx.save_safetensors(ref_path, {k: (mx.array(v).astype(mx.bfloat16)
                                       if ".bf16." in k and v.dtype == np.float32
                                       else mx.array(v)) for k, v in tensors.items()},
                        metadata={"format": "mlx"})

    conv_args = {"hf_path": "<temporary Hugging Face style source>", "mlx_path": name}
    conv_args.update(kwargs)
    conv_args["quant_predicate"] = ("<callable, see quant_predicate>" if table is not None
                                    else None)
    tm = lm.model
    ref = {
        "about": "Test-only file written by tools/reference/gen_gemma4.py; not part of an MLX "
                 "model folder. Tensors are in reference.safetensors (all runs on the MLX CPU "
                 "device).",
        "mlx_version": mx.__version__,
        "mlx_lm_version": mlx_lm.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "seed": seed,
        "init_scales": SCALES,
        "bf16_run_gather_mm_in_float32": use_shim,
        "convert_call": {"function": "mlx_lm.convert", "arguments": conv_args,
                         "quant_predicate": describe_predicate(table, kind == "moe")},
        "source_checkpoint": {
            "layout": ("Hugging Face Gemma 4 (" + ("model.*" if kind == "keqv"
                                                    else "model.language_model.*")
                       + (", lm_head.weight" if kind == "keqv" else ", no lm_head.weight")
                       + "; all tensors bf16)"),
            "config": cfg,
            "generation_config": generation_config(ids),
            "tensors": src_tensors,
        },
        "config": config,
        "tensors_added_after_conversion": extra,
        "kv_shared_layers": {str(j): tm.previous_kvs[j] for j in range(L)
                             if tm.previous_kvs[j] != j},
        "tokenizer": {"vocab_size": vocab, "special_tokens": ids,
                      "byte_fallback_ids": [ids['<|"|>'] + 1, ids['<|"|>'] + 256],
                      "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                      "unk_token": "<unk>"},
        "quantized_modules": {k: f"{v['class']} {v['mode']} {v['bits']}-bit "
                                 f"g{v['group_size']}" for k, v in quantized.items()},
        "unquantized_modules": {k: f"{v['class']} {v['dtype']}"
                                for k, v in unquantized.items()},
        "reference_tensors": {k: ("bfloat16" if ".bf16." in k and v.dtype == np.float32
                                  else str(v.dtype)) + " " + json.dumps(list(v.shape))
                              for k, v in tensors.items()},
        "runs": {
            "bf16": "mlx_lm.utils.load(folder) as is: bf16 activations",
            "f32": "mlx_lm.utils.load(folder) then model.set_dtype(mx.float32)",
            "hidden": "f32 run only, [L+2, R, H] at the logits_rows positions (the stages "
                      "are computed over all T positions): embed_tokens(ids) * embed_scale, "
                      "output of "
                      "decoder layer 0..L-1 (Gemma4TextModel.__call__ with cache=None: masks "
                      "from _make_masks: full 'causal', sliding 'causal' when T <= 32 else a "
                      "boolean causal+window array), final norm (before the output matrix)",
            "logits": f"rows logits_rows (every {ROW_STEP}th position and the last) of "
                      "model(tokens[None]) without cache, after the final soft-cap",
            "greedy": f"mlx_lm.generate.generate_step(prompt, model, max_tokens={N_GREEDY}) "
                      "with the default greedy sampler; greedy_logprobs (bf16 run) are the "
                      "logprobs it yields with each token",
        },
        "mlx_vlm_comparison": vlm,
        "summary": summary(per_prompt),
        "prompts": per_prompt,
        "notes": NOTES + (EXTRA_NOTE if extra else []),
    }
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    del weights_after
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    print(f"{name}: {size} bytes; T = {[e['num_tokens'] for e in per_prompt]}; "
          + json.dumps(ref["summary"]) + (f"; vlm {json.dumps(vlm)}" if vlm else ""))


# ---- notes -------------------------------------------------------------------------------------

NOTES = [
    "Constants (mlx_lm/models/gemma4_text.py): embed_scale = hidden_size**0.5, "
    "embed_tokens_per_layer_scale = P**0.5, per_layer_projection_scale = hidden_size**-0.5, "
    "per_layer_input_scale = 2.0**-0.5, Router._root_size = hidden_size**-0.5, the soft-cap "
    "30.0 and the GELU constants sqrt(2/pi) and 0.044715 (mlx.nn.gelu_approx) are Python "
    "floats, never stored as mx.array; MLX rounds a Python scalar to the other operand's dtype. "
    "So the bf16 run uses bf16-rounded constants and the f32 run (model.set_dtype(float32)) "
    "fp32-rounded ones: here sqrt(64) = 8, sqrt(16) = 4, 64**-0.5 = 0.125 and 30 are exact in "
    "both, 2**-0.5 is 0.70703125 (bf16) vs 0.70710677 (fp32), sqrt(2/pi) 0.796875 vs "
    "0.7978846, 0.044715 0.044677734 vs 0.044715. Arrays: layer_scalar, router.scale, "
    "router.per_expert_scale and all norm weights are parameters (loaded from the checkpoint "
    "as bf16, converted to fp32 by set_dtype). The only non-parameter array is "
    "ProportionalRoPE._freqs (underscore: not a parameter), built in float32 in both runs; "
    "the sliding layers use nn.RoPE (base 1e4, all 16 dims). Full layers: ProportionalRoPE "
    "with rotated_dims = int(32 * 0.25) = 8, freqs = 1e6**(arange(0, 8, 2)/32) then inf for "
    "the other 12 pairs (mx.fast.rope with freqs, rotate-half pairing (i, i+16)).",
    "Router: mx.fast.rms_norm(h, router.scale * _root_size, eps): the product is an array op "
    "in the run's dtype (bf16: bf(scale * bf(0.125))).",
    "KV sharing (gemma4-e2b-*): Gemma4TextModel.previous_kvs maps each layer >= "
    "num_hidden_layers - num_kv_shared_layers to the LAST earlier layer of the same kind: "
    "layers 4, 5, 6 (sliding) use the K/V of layer 2, layer 7 (full) uses layer 3 (see "
    "kv_shared_layers). The shared layer also takes the source layer's RoPE offset and the "
    "per-kind mask; make_cache creates caches for layers 0..3 only.",
    "KV-shared layers have use_double_wide_mlp: their MLP is 2 * intermediate_size wide "
    "(layers 4..7 of gemma4-e2b-*: 128 in e2b-bf16, 256 in e2b-mixed).",
    "Converter: mlx_lm.convert dropped the source's k_proj / v_proj / k_norm of the KV-shared "
    "layers (gemma4_text.Model.sanitize), split experts.gate_up_proj [E, 2 Im, H] into "
    "experts.switch_glu.gate_proj (first Im rows) and up_proj, renamed experts.down_proj to "
    "experts.switch_glu.down_proj.weight, and renamed model.language_model.* to "
    "language_model.model.* (gemma4_text: model.* unchanged). No norm shift (Gemma 4 uses "
    "its norm weights directly). Every weight stays bf16.",
    "mlx_lm.utils.quantize_model only offers a module to the predicate if its weight's last "
    "dimension is a multiple of the GLOBAL group size: per_layer_projection [64, 16] of the "
    "PLE layers stays bf16 in gemma4-e2b-mixed (no config entry), and moe-mixed uses g32 "
    "globally so that the experts' down_proj (input 32) is quantized. embed_tokens and "
    "embed_tokens_per_layer (an nn.Embedding) are quantized (QuantizedEmbedding) by the "
    "default predicate; the tied output uses embed_tokens.as_linear (quantized matmul).",
    "A `false` entry: quantize_model writes config['quantization'][path] only when the "
    "predicate returns a dict; the generator adds the `false` entries afterwards in module "
    "order (mlx_lm.utils.save_config), as gen_qwen35 does.",
    "generate_step (errata A2): the prompt minus its last token is one forward call with the "
    "cache (prefill_step_size 2048), then the last prompt token alone gives the first logits, "
    "then one token per call. Sliding layers use RotatingKVCache(max_size=32, keep=0): a "
    "multi-token update (_update_concat) puts the buffer in temporal order, trims it to the "
    "last max_size - 1 entries and appends the new ones (so during the prefill call the "
    "buffer may hold more than 32 entries and the mask does the windowing); a one-token "
    "update (_update_in_place) writes into the slot of the oldest entry once the buffer holds "
    "32. The CPU attention sums over keys in buffer order. The KV-shared layers attend to "
    "exactly the tensors the source layer's update_and_fetch returned.",
    "Logits: tied models use embed_tokens.as_linear, untied (gemma4-keqv-mixed) lm_head; then "
    "logit_softcap (mx.compile'd tanh(x / 30) * 30) in the run's dtype. logprobs = logits - "
    "logsumexp(logits) in the model dtype; greedy = argmax.",
    "Tied models: the final norm weight has random signs (magnitude ~6), see init_scales; with "
    "a positive final norm a random tied model keeps predicting its current input token.",
    "Tokenizer: SentencePiece-style byte-fallback BPE (tokenizer.json as the real Gemma "
    "tokenizers serialise it; tokenizer_config.json names GemmaTokenizer, whose transformers 5 "
    "class rebuilds the same normalizer / pre-tokenizer / decoder). The Gemma-4 chat template "
    "(tests/fixtures/templates/gemma4/chat_template.jinja) is saved by transformers as "
    "chat_template.jinja and copied by mlx_lm.convert; the template writes <bos> itself, so "
    "chat prompts are encoded without special tokens, the plain text with <bos>. "
    "enable_thinking=False makes the generation prompt end with '<|channel>thought\\n"
    "<channel|>'. generation_config.json: eos_token_id [<eos>, <turn|>] (<turn|> closes "
    "every turn the template writes). Prompt ids checked with "
    "tokenizers.Tokenizer.from_file(<folder>/tokenizer.json).",
    "Source configs state every key mlx-lm / mlx-vlm read (errata A3: mlx-lm's defaults "
    "differ), including the top-level vocab_size, which mlx_lm's gemma4.ModelArgs copies "
    "into text_config (default 262144). vision_config / audio_config are null (no towers). "
    "gemma4_unified is remapped to gemma4 by mlx_lm (MODEL_REMAPPING); its source has no "
    "lm_head.weight.",
]

EXTRA_NOTE = [
    "gemma4-e2b-mixed only: AFTER conversion, k_proj (.weight/.scales/.biases, affine 4-bit "
    "g64 like the default) and k_norm.weight of the KV-shared layers 4..7 were added to "
    "model.safetensors (and model.safetensors.index.json), as OptIQ-built quants carry them "
    "(see tensors_added_after_conversion). mlx-lm's gemma4_text.Model.sanitize drops "
    "'.self_attn.k_proj' / '.self_attn.k_norm' keys of layers >= first_shared on load, so "
    "the reference runs do not see them; a loader must tolerate (ignore) them.",
]


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    ap.add_argument("--only", default=None, help="build only this folder name")
    ap.add_argument("--seed", type=int, default=None, help="override the seed (with --only)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = os.path.join(tmp, "tokenizer")
        vocab, ids = make_tokenizer(tok_dir)
        assert vocab == VOCAB, vocab
        for fx in FIXTURES:
            if args.only and fx["name"] != args.only:
                continue
            if args.seed is not None:
                fx = dict(fx, seed=args.seed)
            build(args.out, fx, tok_dir, vocab, ids)


if __name__ == "__main__":
    main()
