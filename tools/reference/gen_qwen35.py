"""Build four tiny random-weight Qwen3.5 model folders with the real mlx-lm converter and dump
reference activations for the text forward pass and greedy generation:

  tests/fixtures/models/qwen35-dense-bf16/   qwen3_5, 8 layers (GDN x3, full, GDN x3, full),
                                             untied lm_head, bf16 (convert without quantization)
  tests/fixtures/models/qwen35-dense-mixed/  qwen3_5, 8 layers, tie_word_embeddings = true,
                                             affine 4-bit g64 by default with per-module
                                             overrides (8-bit, 3-bit, g32, one module left
                                             unquantized: a `false` entry in `quantization`)
  tests/fixtures/models/qwen35-moe-mixed/    qwen3_5_moe, 4 layers, 4 experts top-2, untied,
                                             affine 4-bit g64 + the model's own predicate
                                             (router and shared_expert_gate at 8 bits) + two
                                             extra 8-bit modules
  tests/fixtures/models/qwen35-moe-bf16/     qwen3_5_moe, 4 layers, tie_word_embeddings = true,
                                             bf16

Steps per folder: write a random-weight checkpoint in the Hugging Face layout of the real
Qwen3.5 releases (tensor names `model.language_model.*`, zero-centred RMSNorm weights, conv1d
[C, 1, K], `A_log` and `linear_attn.norm.weight` stored fp32, fused MoE experts
`experts.gate_up_proj` / `experts.down_proj`, a byte-level BPE tokenizer trained here with the
Qwen special tokens, the real Qwen3.5 chat template, generation_config.json) into a temporary
directory, convert it with `mlx_lm.convert(...)`, then load the result with
`mlx_lm.utils.load` and run it on the MLX CPU device. Init scales (SCALES, TIED_SCALES) and the
per-folder seeds are chosen so that hidden states stay around RMS 1 across layers and greedy
top-1 / top-2 logprob margins are mostly well above bf16 noise (recorded per step).

Test-only files added to each folder (not part of an MLX model folder):

  reference.safetensors   for prompts i = 0 (chat template, one user turn), 1 (chat template,
                          system + two user turns), 2 (about 100 tokens of plain text):
                            p{i}.tokens                   I32 [T]
                            p{i}.{f32,bf16}.hidden        [L+2, T, H]: embedding output,
                                                          output of each decoder layer, final norm
                            p{i}.{f32,bf16}.logits        [T, V]  (one forward, no cache)
                            p{i}.{f32,bf16}.greedy        I32 [32]    mlx_lm generate_step, greedy
                            p{i}.bf16.greedy_logprobs     [32, V]  logprobs it yields
                          (f32 run: F32; bf16 run: BF16, its exact values)
                          "bf16" = the folder as loaded by mlx_lm (bf16 activations);
                          "f32" = the same model after model.set_dtype(mx.float32) (quantized
                          weights unchanged, scales/biases and float weights widened).
  reference.json          versions, the convert call, config, prompts, greedy ids, margins,
                          f32/bf16 agreement, notes on where mlx-lm differs from the spec.

Usage: tools/reference/.venv/bin/python tools/reference/gen_qwen35.py [--out tests/fixtures/models]
"""

import argparse
import contextlib
import copy
import json
import os
import shutil
import tempfile

import mlx.core as mx

mx.set_default_device(mx.cpu)  # before mlx_lm.generate creates its stream

import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

VOCAB = 512
N_GREEDY = 32

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(ROOT, "tests", "fixtures", "templates", "qwen3_5", "chat_template.jinja")

# Added tokens in the order and with the flags of the real Qwen tokenizers: the <|...|> ones
# are special, the XML-like ones are plain added tokens (special = false).
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|image_pad|>", True),
    ("<|video_pad|>", True), ("<think>", False), ("</think>", False),
    ("<tool_call>", False), ("</tool_call>", False),
]

# Qwen3.5 pre-tokenizer split pattern (letters include marks \p{M}); transformers 5 rebuilds the
# pipeline with it when mlx_lm loads the tokenizer of a qwen3_5 model (Qwen3_5Tokenizer), so
# the source uses the same one
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
               r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is in the picture? Describe it in a few words.",
    "The picture shows a cat sitting on a red chair next to a window.",
    "You are a helpful assistant. Answer the question briefly.",
    "Name a color. Blue. Another one? Green, or maybe yellow.",
    "A tiny model for testing the loader: weights, config and tokenizer files.",
    "Gated delta networks keep a recurrent state per head and decay it at every step.",
    "Every fourth layer uses full attention with rotary positions and an output gate.",
    "Quantized weights are packed into 32-bit words with one scale and bias per group.",
    "Mixture of experts layers route every token to two of four experts.",
    "The river runs through the old town, under seven stone bridges, to the sea.",
    "In the morning the market opens early; farmers bring bread, cheese and apples.",
    "Hello world! Hello optiq. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ' \"",
    "user: what is in the picture?\nassistant: a cat sitting on a red chair.",
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
        "fishermen sell what the night gave them. Later, the bells ring at noon.")},
]

# Init scales (see make_weights)
SCALES = {
    "embed": 1.0,        # embed_tokens std (also the output matrix when tied: logits std ~8)
    "lm_head": 1.0,      # untied lm_head std
    "proj": 0.8,         # gain of input-side projections (std gain / sqrt(fan_in))
    "out": 0.6,          # gain of branch outputs: out_proj, o_proj, down_proj (MLP, experts)
    "router": 2.0,       # gain of the MoE router
    "znorm": 0.1,        # std of zero-centred norm weights
    "dt_bias_mean": -3.0,
    "dt_bias_std": 0.5,
    "final_norm_random_sign": False,
}

ROPE = {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
        "mrope_section": [2, 1, 1], "mrope_interleaved": True}


# ---- tokenizer ---------------------------------------------------------------------------------

def make_tokenizer(dst):
    """Byte-level BPE in the Qwen style (NFC, split regex, ByteLevel), added tokens at the end."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - len(ADDED_TOKENS), special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    for content, special in ADDED_TOKENS:
        t = AddedToken(content, single_word=False, lstrip=False, rstrip=False,
                       normalized=False, special=special)
        if special:
            tok.add_special_tokens([t])
        else:
            tok.add_tokens([t])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None)
    with open(TEMPLATE) as f:
        fast.chat_template = f.read()
    fast.save_pretrained(dst)
    ids = {c: tok.token_to_id(c) for c, _ in ADDED_TOKENS}
    return tok.get_vocab_size(with_added_tokens=True), ids


# ---- source checkpoint (Hugging Face layout) ---------------------------------------------------

def text_config(moe, tie, vocab, ids):
    layers = 4 if moe else 8
    tc = {
        "model_type": "qwen3_5_moe_text" if moe else "qwen3_5_text",
        "hidden_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 32,
        "linear_value_head_dim": 32,
        "linear_conv_kernel_dim": 4,
        "full_attention_interval": 4,
        "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "linear_attention"
                        for i in range(layers)],
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 512,
        "rope_parameters": copy.deepcopy(ROPE),
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        "attention_bias": False,
        "attn_output_gate": True,
        "hidden_act": "silu",
        "mamba_ssm_dtype": "float32",
        "dtype": "bfloat16",
        "eos_token_id": ids["<|endoftext|>"],
    }
    if moe:
        tc.update({"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                   "shared_expert_intermediate_size": 64, "norm_topk_prob": True})
    else:
        tc["intermediate_size"] = 128
    return tc


def hf_config(moe, tie, vocab, ids):
    return {
        "architectures": ["Qwen3_5MoeForConditionalGeneration" if moe
                          else "Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5_moe" if moe else "qwen3_5",
        "text_config": text_config(moe, tie, vocab, ids),
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": tie,
    }


def make_weights(tc, seed, scales):
    """Random weights with HF names and layouts: {name: (float64 numpy array, "bf16"|"f32")}.

    Scales (SCALES): projections ~ N(0, (gain / sqrt(fan_in))^2) with gain SCALES["proj"] on
    the input side and SCALES["out"] on the branch outputs (out_proj, o_proj, down_proj);
    embeddings / lm_head ~ N(0, SCALES[...]^2); zero-centred norms SCALES["znorm"] * N(0, 1);
    gated norm 1 + 0.1 * N(0, 1); conv1d N(0, 1/K); GDN decay A_log = log U(1, 16),
    dt_bias ~ N(dt_bias_mean, dt_bias_std^2), so the per-step decay is mostly 0.5..0.99 and
    the recurrent state carries information over many tokens.
    """
    S = scales
    rng = np.random.default_rng(seed)
    H, V = tc["hidden_size"], tc["vocab_size"]
    D, Hq, Hkv = tc["head_dim"], tc["num_attention_heads"], tc["num_key_value_heads"]
    Hk, Hv = tc["linear_num_key_heads"], tc["linear_num_value_heads"]
    Dk, Dv = tc["linear_key_head_dim"], tc["linear_value_head_dim"]
    K = tc["linear_conv_kernel_dim"]
    conv_dim = 2 * Hk * Dk + Hv * Dv
    moe = tc.get("num_experts", 0) > 0
    w = {}

    def normal(shape, std):
        return rng.standard_normal(shape) * std

    def lin(name, out_f, in_f, gain):
        w[name] = (normal((out_f, in_f), gain / np.sqrt(in_f)), "bf16")

    def znorm(name, n):
        w[name] = (normal(n, S["znorm"]), "bf16")

    p = "model.language_model."
    w[p + "embed_tokens.weight"] = (normal((V, H), S["embed"]), "bf16")
    for i in range(tc["num_hidden_layers"]):
        q = f"{p}layers.{i}."
        znorm(q + "input_layernorm.weight", H)
        if (i + 1) % tc["full_attention_interval"] == 0:
            a = q + "self_attn."
            lin(a + "q_proj.weight", 2 * Hq * D, H, S["proj"])
            lin(a + "k_proj.weight", Hkv * D, H, S["proj"])
            lin(a + "v_proj.weight", Hkv * D, H, S["proj"])
            lin(a + "o_proj.weight", H, Hq * D, S["out"])
            znorm(a + "q_norm.weight", D)
            znorm(a + "k_norm.weight", D)
        else:
            a = q + "linear_attn."
            lin(a + "in_proj_qkv.weight", conv_dim, H, S["proj"])
            lin(a + "in_proj_z.weight", Hv * Dv, H, S["proj"])
            lin(a + "in_proj_b.weight", Hv, H, S["proj"])
            lin(a + "in_proj_a.weight", Hv, H, S["proj"])
            w[a + "conv1d.weight"] = (normal((conv_dim, 1, K), 1 / np.sqrt(K)), "bf16")
            w[a + "dt_bias"] = (S["dt_bias_mean"] + normal(Hv, S["dt_bias_std"]), "bf16")
            w[a + "A_log"] = (np.log(rng.uniform(1.0, 16.0, Hv)), "f32")
            w[a + "norm.weight"] = (1.0 + normal(Dv, 0.1), "f32")
            lin(a + "out_proj.weight", H, Hv * Dv, S["out"])
        znorm(q + "post_attention_layernorm.weight", H)
        m = q + "mlp."
        if moe:
            E, Ie = tc["num_experts"], tc["moe_intermediate_size"]
            Is = tc["shared_expert_intermediate_size"]
            lin(m + "gate.weight", E, H, S["router"])
            # fused experts: gate rows [0, Ie) then up rows [Ie, 2 Ie); no ".weight" suffix
            w[m + "experts.gate_up_proj"] = (normal((E, 2 * Ie, H), S["proj"] / np.sqrt(H)),
                                             "bf16")
            w[m + "experts.down_proj"] = (normal((E, H, Ie), S["out"] / np.sqrt(Ie)), "bf16")
            lin(m + "shared_expert.gate_proj.weight", Is, H, S["proj"])
            lin(m + "shared_expert.up_proj.weight", Is, H, S["proj"])
            lin(m + "shared_expert.down_proj.weight", H, Is, S["out"])
            lin(m + "shared_expert_gate.weight", 1, H, S["proj"])
        else:
            I = tc["intermediate_size"]
            lin(m + "gate_proj.weight", I, H, S["proj"])
            lin(m + "up_proj.weight", I, H, S["proj"])
            lin(m + "down_proj.weight", H, I, S["out"])
    znorm(p + "norm.weight", H)
    if S["final_norm_random_sign"]:
        w[p + "norm.weight"] = (w[p + "norm.weight"][0] - 2.0 * (rng.uniform(size=H) < 0.5),
                                "bf16")
    if not tc["tie_word_embeddings"]:
        # a tied checkpoint must not carry lm_head.weight: mlx-lm renames it to
        # language_model.lm_head.weight before TextModel.sanitize tries to drop it
        w["lm_head.weight"] = (normal((V, H), S["lm_head"]), "bf16")
    return w


def make_source(dst, cfg, tok_dir, ids, seed, scales):
    os.makedirs(dst, exist_ok=True)
    weights = make_weights(cfg["text_config"], seed, scales)
    arrays = {}
    for k, (v, dt) in weights.items():
        a = mx.array(v.astype(np.float32))
        arrays[k] = a if dt == "f32" else a.astype(mx.bfloat16)
    mx.save_safetensors(os.path.join(dst, "model.safetensors"), arrays,
                        metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    for name in sorted(os.listdir(tok_dir)):
        shutil.copy(os.path.join(tok_dir, name), dst)
    return {k: {"shape": list(v.shape), "dtype": dt} for k, (v, dt) in weights.items()}


# ---- quantization predicates -------------------------------------------------------------------

LM = "language_model.model."

DENSE_MIXED = {
    LM + "embed_tokens": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.mlp.down_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.7.self_attn.v_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.1.linear_attn.in_proj_z": {"group_size": 64, "bits": 3, "mode": "affine"},
    LM + "layers.3.self_attn.o_proj": {"group_size": 32, "bits": 4, "mode": "affine"},
    LM + "layers.5.mlp.gate_proj": False,
}

MOE_EXTRA = {
    LM + "layers.3.self_attn.v_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
    LM + "layers.0.mlp.switch_mlp.down_proj": {"group_size": 64, "bits": 8, "mode": "affine"},
}


class TablePredicate:
    """quant_predicate for mlx_lm.convert: per-path dict (quantize with these parameters),
    False (keep float), otherwise defer to `base` (the model's own predicate) or True
    (global default). Remembers every decision in call order."""

    def __init__(self, table, base=None):
        self.table, self.base, self.seen = table, base, []

    def __call__(self, path, module):
        if path in self.table:
            r = self.table[path]
        elif self.base is not None:
            r = self.base(path, module)
        else:
            r = True
        self.seen.append((path, copy.deepcopy(r)))
        return copy.deepcopy(r)


def model_predicate(cfg):
    """The predicate mlx-lm itself uses for this config (qwen3_5 TextModel.quant_predicate)."""
    from mlx_lm.utils import _get_classes
    model_class, args_class = _get_classes(config=cfg)
    return model_class(args_class.from_dict(copy.deepcopy(cfg))).quant_predicate


def add_false_entries(dst, seen):
    """mlx_lm.utils.quantize_model records only dict results of the predicate in
    config["quantization"]; a module the predicate refuses (False) gets no entry. Write the
    `false` entries an OptIQ-style table carries, in module order, and save the config the way
    mlx-lm does (mlx_lm.utils.save_config)."""
    from mlx_lm.utils import save_config
    path = os.path.join(dst, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    q = cfg["quantization"]
    new = {k: q[k] for k in ("group_size", "bits", "mode") if k in q}
    for p, r in seen:
        if r is False:
            new[p] = False
        elif p in q:
            new[p] = q[p]
    missing = set(q) - set(new)
    assert not missing, missing
    cfg["quantization"] = new
    cfg.pop("quantization_config", None)
    save_config(cfg, path)


# ---- reference runs ----------------------------------------------------------------------------

def render_prompts(tokenizer):
    out = []
    for p in PROMPTS:
        if p["kind"] == "chat":
            # as `mlx_lm generate` does: render with the wrapper (it passes enable_thinking
            # = has_thinking, True here), then encode without special tokens
            text = tokenizer.apply_chat_template(p["messages"], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer.encode(text, add_special_tokens=False)
        else:
            text = p["text"]
            ids = tokenizer.encode(text, add_special_tokens=True)
            assert ids == tokenizer.encode(text, add_special_tokens=False)
        out.append({**p, "rendered": text, "tokens": list(ids)})
    return out


class _GatherMMInFloat32:
    """Stand-in for `mlx.core` inside mlx_lm.models.switch_layers: forwards everything to
    mlx.core, but evaluates a bf16 gather_mm as float32 gather_mm rounded to bf16 (which is
    what MLX's CPU backend does for a bf16 matmul). Needed because the MLX CPU backend has no
    bf16 gather_mm ("[GatherMM::eval] Currently only supports float32"); used only then."""

    def __getattr__(self, name):
        return getattr(mx, name)

    @staticmethod
    def gather_mm(a, b, *args, **kwargs):
        if a.dtype == mx.bfloat16 and b.dtype == mx.bfloat16:
            out = mx.gather_mm(a.astype(mx.float32), b.astype(mx.float32), *args, **kwargs)
            return out.astype(mx.bfloat16)
        return mx.gather_mm(a, b, *args, **kwargs)


def cpu_has_bf16_gather_mm():
    a = mx.ones((1, 1, 1, 1, 32), dtype=mx.bfloat16)
    w = mx.ones((2, 32, 8), dtype=mx.bfloat16)
    try:
        mx.eval(mx.gather_mm(a, w, rhs_indices=mx.array([[[1]]])))
        return True
    except RuntimeError:
        return False


@contextlib.contextmanager
def gather_mm_shim(active):
    from mlx_lm.models import switch_layers
    saved = switch_layers.mx
    if active:
        switch_layers.mx = _GatherMMInFloat32()
    try:
        yield
    finally:
        switch_layers.mx = saved


def forward_stages(model, tokens):
    """Run Qwen3_5TextModel.__call__ layer by layer (cache=None) and keep every stage."""
    from mlx_lm.models.base import create_attention_mask, create_ssm_mask
    tm = model.language_model.model
    x = mx.array(tokens, dtype=mx.int32)[None]
    h = tm.embed_tokens(x)
    fa_mask = create_attention_mask(h, None)
    ssm_mask = create_ssm_mask(h, None)
    stages = [h]
    router = {"ties": 0, "min_rel_gap": None}
    for layer in tm.pipeline_layers:
        if hasattr(layer.mlp, "switch_mlp"):
            # analysis only: is the top-k set of the router decided with room to spare?
            # ties = tokens whose k-th and (k+1)-th softmax probabilities are equal (in the
            # run's dtype); rel gap = (p_k - p_k+1) / p_k
            r = (layer.linear_attn if layer.is_linear else layer.self_attn)(
                layer.input_layernorm(h), ssm_mask if layer.is_linear else fa_mask, None)
            g = mx.softmax(layer.mlp.gate(layer.post_attention_layernorm(h + r)), axis=-1,
                           precise=True)
            g = np.sort(np.array(g.astype(mx.float32))[0], axis=-1)
            k = layer.mlp.top_k
            router["ties"] += int(np.sum(g[:, -k] == g[:, -k - 1]))
            rel = float(((g[:, -k] - g[:, -k - 1]) / g[:, -k]).min())
            router["min_rel_gap"] = rel if router["min_rel_gap"] is None else \
                min(router["min_rel_gap"], rel)
        h = layer(h, mask=ssm_mask if layer.is_linear else fa_mask, cache=None)
        stages.append(h)
    stages.append(tm.norm(h))
    logits = model(x)
    lm = model.language_model
    direct = (tm.embed_tokens.as_linear(stages[-1]) if lm.args.tie_word_embeddings
              else lm.lm_head(stages[-1]))
    mx.eval(stages, logits, direct)
    assert np.array_equal(np.array(logits.astype(mx.float32)), np.array(direct.astype(mx.float32)))
    hid = np.stack([np.array(s.astype(mx.float32))[0] for s in stages])
    return hid, np.array(logits.astype(mx.float32))[0], router


def greedy(model, tokens):
    from mlx_lm.generate import generate_step
    ids, lps = [], []
    for tok, lp in generate_step(mx.array(tokens, dtype=mx.int32), model, max_tokens=N_GREEDY):
        ids.append(int(tok))
        lps.append(np.array(lp.astype(mx.float32)))
    return np.array(ids, dtype=np.int32), np.stack(lps)


def margins(lps):
    s = np.sort(lps, axis=-1)
    return s[:, -1] - s[:, -2]


def load_runs(folder):
    from mlx_lm.utils import load
    model_bf16, tokenizer = load(folder)
    model_f32, _ = load(folder)
    before = {k: np.array(v) for k, v in tree_flatten(model_f32.parameters())
              if not mx.issubdtype(v.dtype, mx.floating)}
    model_f32.set_dtype(mx.float32)
    for k, v in tree_flatten(model_f32.parameters()):
        if mx.issubdtype(v.dtype, mx.floating):
            assert v.dtype == mx.float32, (k, v.dtype)
        else:
            assert v.dtype == mx.uint32 and np.array_equal(np.array(v), before[k]), k
    assert len(before) == sum(1 for _, v in tree_flatten(model_f32.parameters())
                              if not mx.issubdtype(v.dtype, mx.floating))
    return {"f32": model_f32, "bf16": model_bf16}, tokenizer


def module_table(model):
    quantized, unquantized = {}, {}
    for path, m in tree_flatten(model.leaf_modules(), is_leaf=lambda m: isinstance(m, nn.Module)):
        if hasattr(m, "bits"):
            quantized[path] = {"class": type(m).__name__, "bits": int(m.bits),
                               "group_size": int(m.group_size),
                               "mode": getattr(m, "mode", "affine")}
        elif "weight" in m:
            unquantized[path] = {"class": type(m).__name__,
                                 "dtype": str(m.weight.dtype).replace("mlx.core.", "")}
    return quantized, unquantized


# ---- notes -------------------------------------------------------------------------------------

NOTES = [
    "GDN q/k normalisation (mlx_lm/models/gated_delta.py normalize_qk): mlx-lm calls "
    "mx.fast.rms_norm(x, None, eps * inv_scale**2) with eps = 1e-6 and inv_scale = Dk**-0.5, "
    "i.e. rms eps = 1e-6 / Dk (3.125e-8 here), so k = x / sqrt(sum(x^2) + 1e-6) exactly as the "
    "reference l2norm; spec section 3.6 step 5 says the rms_norm eps is 1e-6 (on the mean). "
    "q = (1/Dk) * rms_norm(q), k = Dk**-0.5 * rms_norm(k), Python scalars (bf16 in the bf16 run).",
    "Gated delta recurrence on the CPU device: gated_delta_update uses gated_delta_ops (the "
    "sequential ops reference; q/k repeated to Hv heads, fp32 state, y cast to the input dtype "
    "per step), not the Metal kernel (Dk = 32 here in any case).",
    "Conversion: mlx_lm.convert casts every floating parameter to text_config.dtype (bfloat16) "
    "except paths ending in A_log (cast_predicate), so the source's fp32 linear_attn.norm.weight "
    "is bf16 in the converted folder and A_log stays fp32. The +1 shift of the zero-centred "
    "norms (input/post_attention/final/q_norm/k_norm) happens at conversion in bf16.",
    "mlx_lm.utils.quantize_model writes config['quantization'][path] only when the predicate "
    "returns a dict; a module the predicate refuses (False) gets no entry (mlx-lm's loader then "
    "keeps it float because it has no .scales). For qwen35-dense-mixed this generator adds the "
    "`false` entry afterwards, in module order, to both quantization and quantization_config "
    "(mlx_lm.utils.save_config); mlx-lm's loader honours it.",
    "TextModelArgs.__post_init__ renames rope_parameters.rope_type to 'type' in place, so the "
    "converted config.json carries rope_parameters.type (not rope_type). mrope_section and "
    "mrope_interleaved are ignored by mlx-lm (text only: nn.RoPE(8, traditional=False, "
    "base=1e7) on the first 8 features of each head).",
    "Tied checkpoints carry no lm_head.weight in the source: mlx-lm's Model.sanitize prefixes "
    "it to language_model.lm_head.weight before TextModel.sanitize pops 'lm_head.weight', so a "
    "tied source with that tensor would fail to load (spec errata E6).",
    "generate_step (prefill_step_size 2048): the prompt minus its last token is one forward "
    "call with the cache, then the last prompt token alone gives the first logits, then one "
    "token per call; logprobs = logits - logsumexp(logits) in the model dtype; greedy = argmax.",
    "f32 run: model.set_dtype(mx.float32) after mlx_lm.utils.load; packed uint32 weights are "
    "unchanged, scales/biases and all float parameters become float32 (checked).",
    "generation_config.json is copied by mlx_lm.convert (utils.save). mlx_lm.utils.load_config "
    "puts its eos_token_id list into the config, and convert saves that config, so the "
    "converted config.json has a top-level eos_token_id list [<|im_end|>, <|endoftext|>] that "
    "the source config did not have (text_config.eos_token_id stays <|endoftext|>).",
    "Tokenizer: the source is saved by transformers as a generic TokenizersBackend; when "
    "mlx_lm loads it for a qwen3_5 model, transformers 5 uses Qwen3_5Tokenizer, which rebuilds "
    "the pre-tokenizer/decoder, so the converted tokenizer.json has the Qwen3.5 split regex, "
    "ByteLevel(trim_offsets=true) and a ByteLevel decoder with add_prefix_space=true, and "
    "tokenizer_config.json names tokenizer_class Qwen3_5Tokenizer. The prompt ids were checked "
    "against tokenizers.Tokenizer.from_file(<folder>/tokenizer.json).",
    "MLX 0.32.4's CPU backend has no bf16 gather_mm ('[GatherMM::eval] Currently only supports "
    "float32'), so mlx-lm cannot run an unquantized MoE (SwitchLinear) in bf16 on the CPU. For "
    "the bf16 run of such a folder (bf16_run_gather_mm_in_float32 = true) the generator "
    "evaluates gather_mm in float32 and rounds the result to bf16, which is what the CPU "
    "backend does for an ordinary bf16 matmul (checked bit-exact for mx.matmul). Quantized "
    "experts (gather_qmm) run in bf16 natively.",
    "Tied models here use random signs in the final norm's effective weight (zero-centred w = "
    "-2 or 0, plus 0.1 N(0,1)); see init_scales.final_norm_random_sign. With positive weights "
    "the current token's own embedding row dominates the tied logits of a random model and "
    "greedy decoding just repeats the input token.",
]


# ---- main --------------------------------------------------------------------------------------

# Tied models: logits = h . E^T, and the residual stream still holds the current token's own
# embedding row, so a random tied model with a positive final norm weight just repeats its
# input token (the self term |e_t|^2 dominates). Random signs in the final norm's effective
# weight (zero-centred w = -2 or 0, plus noise) remove that bias without making the residual
# stream more sensitive to rounding (smaller embeddings / larger branches would).
TIED_SCALES = {"final_norm_random_sign": True}

FIXTURES = [
    {"name": "qwen35-dense-bf16", "moe": False, "tie": False, "seed": 14,
     "convert": {}, "table": None},
    {"name": "qwen35-dense-mixed", "moe": False, "tie": True, "seed": 14,
     "convert": {"quantize": True, "q_group_size": 64, "q_bits": 4}, "table": DENSE_MIXED},
    {"name": "qwen35-moe-mixed", "moe": True, "tie": False, "seed": 15,
     "convert": {"quantize": True, "q_group_size": 64, "q_bits": 4}, "table": MOE_EXTRA},
    {"name": "qwen35-moe-bf16", "moe": True, "tie": True, "seed": 11,
     "convert": {}, "table": None},
]


def describe_predicate(table, with_model):
    if table is None:
        return None
    d = {"per_path": table,
         "otherwise": ("qwen3_5 TextModel.quant_predicate (paths ending in mlp.gate or "
                       "shared_expert_gate -> {group_size: 64, bits: 8}), else True"
                       if with_model else "True (global default)")}
    return d


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
    }


def build(out_root, fx, tok_dir, vocab, ids, seed):
    from mlx_lm import convert
    import mlx_lm
    import tokenizers
    import transformers

    name, moe, tie, kwargs, table = fx["name"], fx["moe"], fx["tie"], fx["convert"], fx["table"]
    scales = dict(SCALES, **(TIED_SCALES if tie else {}))
    dst = os.path.join(out_root, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    cfg = hf_config(moe, tie, vocab, ids)
    pred = None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "hf")
        src_tensors = make_source(src, cfg, tok_dir, ids, seed, scales)
        if table is not None:
            pred = TablePredicate(table, model_predicate(cfg) if moe else None)
        print(f"+ mlx_lm.convert {name}: {kwargs}")
        convert(hf_path=src, mlx_path=dst, quant_predicate=pred, **kwargs)
    readme = os.path.join(dst, "README.md")
    if os.path.exists(readme) and tempfile.gettempdir() in open(readme).read():
        os.remove(readme)
    assert os.path.exists(os.path.join(dst, "generation_config.json"))
    if pred is not None and any(r is False for _, r in pred.seen):
        add_false_entries(dst, pred.seen)

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
        assert raw_tok.encode(p["rendered"], add_special_tokens=False).ids == p["tokens"]
    L = models["bf16"].language_model.args.num_hidden_layers
    H = models["bf16"].language_model.args.hidden_size
    V = models["bf16"].language_model.args.vocab_size

    # an unquantized MoE (SwitchLinear) in bf16 needs gather_mm in bf16
    use_shim = (any(type(m).__name__ == "SwitchLinear" for _, m in
                    tree_flatten(models["bf16"].leaf_modules(),
                                 is_leaf=lambda m: isinstance(m, nn.Module)))
                and not cpu_has_bf16_gather_mm())
    tensors, per_prompt = {}, []
    for i, p in enumerate(prompts):
        T = len(p["tokens"])
        tensors[f"p{i}.tokens"] = np.array(p["tokens"], dtype=np.int32)
        res = {}
        for run in ("f32", "bf16"):
            with gather_mm_shim(use_shim and run == "bf16"):
                hid, logits, gap = forward_stages(models[run], p["tokens"])
                g_ids, g_lps = greedy(models[run], p["tokens"])
            assert hid.shape == (L + 2, T, H) and logits.shape == (T, V)
            tensors[f"p{i}.{run}.hidden"] = hid
            tensors[f"p{i}.{run}.logits"] = logits
            tensors[f"p{i}.{run}.greedy"] = g_ids
            if run == "bf16":  # the f32 run's are not needed by the tests
                tensors[f"p{i}.{run}.greedy_logprobs"] = g_lps
            assert np.array_equal(np.argmax(g_lps, axis=-1), g_ids)
            res[run] = {"hid": hid, "logits": logits, "ids": g_ids, "lps": g_lps, "gap": gap}
        m_bf16 = margins(res["bf16"]["lps"])
        m_f32 = margins(res["f32"]["lps"])
        agree = bool(np.array_equal(res["f32"]["ids"], res["bf16"]["ids"]))
        div = None if agree else int(np.argmax(res["f32"]["ids"] != res["bf16"]["ids"]))
        entry = {
            "kind": p["kind"],
            "rendered_text": p["rendered"],
            "num_tokens": len(p["tokens"]),
            "tokens": p["tokens"],
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
            "f32_hidden_rms_per_stage": [round(float(np.sqrt((s ** 2).mean())), 4)
                                         for s in res["f32"]["hid"]],
        }
        if "messages" in p:
            entry["messages"] = p["messages"]
        else:
            entry["text"] = p["text"]
        if moe:
            entry["router_topk_boundary"] = {run: res[run]["gap"] for run in ("f32", "bf16")}
        per_prompt.append(entry)

    ref_path = os.path.join(dst, "reference.safetensors")
    # The bf16 run's values are bf16 numbers: stored as BF16 they are exact and half the size.
    mx.save_safetensors(ref_path, {k: (mx.array(v).astype(mx.bfloat16) if ".bf16." in k and v.dtype == np.float32
                                       else mx.array(v)) for k, v in tensors.items()},
                        metadata={"format": "mlx"})

    with open(os.path.join(dst, "config.json")) as f:
        config = json.load(f)
    conv_args = {"hf_path": "<temporary Hugging Face style source>", "mlx_path": name}
    conv_args.update(kwargs)
    conv_args["quant_predicate"] = ("<callable, see quant_predicate>" if table is not None
                                    else None)
    ref = {
        "about": "Test-only file written by tools/reference/gen_qwen35.py; not part of an MLX "
                 "model folder. Tensors are in reference.safetensors (all runs on the MLX CPU "
                 "device).",
        "mlx_version": mx.__version__,
        "mlx_lm_version": mlx_lm.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "seed": seed,
        "init_scales": scales,
        "bf16_run_gather_mm_in_float32": use_shim,
        "convert_call": {"function": "mlx_lm.convert", "arguments": conv_args,
                         "quant_predicate": describe_predicate(table, moe)},
        "source_checkpoint": {
            "layout": "Hugging Face Qwen3.5 (model.language_model.*, lm_head.weight)",
            "config": cfg,
            "generation_config": {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]},
            "tensors": src_tensors,
        },
        "config": config,
        "tokenizer": {"vocab_size": vocab, "added_tokens": ids,
                      "special": {c: s for c, s in ADDED_TOKENS},
                      "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
        "quantized_modules": quantized,
        "unquantized_modules": unquantized,
        "reference_tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                              for k, v in tensors.items()},
        "runs": {
            "bf16": "mlx_lm.utils.load(folder) as is: bf16 activations",
            "f32": "mlx_lm.utils.load(folder) then model.set_dtype(mx.float32)",
            "hidden": "[L+2, T, H]: embed_tokens output, output of decoder layer 0..L-1 "
                      "(Qwen3_5TextModel.__call__ with cache=None: fa_mask = "
                      "create_attention_mask(h, None) = 'causal', ssm_mask = None), final norm",
            "logits": "[T, V]: model(tokens[None]) without cache",
            "greedy": f"mlx_lm.generate.generate_step(prompt, model, max_tokens={N_GREEDY}) "
                      "with the default greedy sampler; greedy_logprobs are the logprobs it "
                      "yields with each token",
        },
        "summary": summary(per_prompt),
        "prompts": per_prompt,
        "notes": NOTES,
    }
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    print(f"{name}: {size} bytes; T = {[e['num_tokens'] for e in per_prompt]}; "
          + json.dumps(ref["summary"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    ap.add_argument("--only", default=None, help="build only this folder name")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = os.path.join(tmp, "tokenizer")
        vocab, ids = make_tokenizer(tok_dir)
        assert vocab == VOCAB, vocab
        for fx in FIXTURES:
            if args.only and fx["name"] != args.only:
                continue
            build(args.out, fx, tok_dir, vocab, ids, fx["seed"])


if __name__ == "__main__":
    main()
