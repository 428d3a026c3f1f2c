#!/usr/bin/env python3
"""Tokenizer conformance fixtures: tests/fixtures/tokenizers/.

For the real tokenizers (Qwen3 and Gemma 3 tokenizer.json from ../shared/tokenizers) and for
small synthetic tokenizers built here from them (each exercising the tokenizer.json features
the real ones do not use), writes what the reference `tokenizers` library gives for every
corpus string (tokenizer_corpus.py):

  ids          Tokenizer.encode(text, add_special_tokens=False).ids
  ids_special  ...encode(text, add_special_tokens=True).ids
  ids_split    the same as ids with encode_special_tokens = True (special-token text read as
               plain text); left out when equal to ids
  dec          Tokenizer.decode(ids_special, skip_special_tokens=False)
  dec_skip     Tokenizer.decode(ids_special, skip_special_tokens=True)
  dec_error, dec_skip_error   instead of dec / dec_skip when the reference fails (its Strip
               decoder panics on an empty text)

Inputs that are not valid UTF-8 are stored as hex bytes ("hex") and encoded by the reference as
bytes.decode("utf-8", "replace") (Python's `tokenizers` refuses a str with lone surrogates, so
replacement is the only comparable behaviour). Strings containing U+0000 are stored as hex
too ("text_hex", "dec_hex", "dec_skip_hex") because the C JSON reader stops at NUL.

Files (all deterministic for the pinned versions):
  {qwen3,gemma3}/tokenizer.json.xz, tokenizer_config.json.xz   copies of the real files
  synth/<name>/tokenizer.json                                   synthetic tokenizers
  <name>.jsonl.xz       first line {"meta": ...}, then one line per corpus string
  VERSIONS.md           versions and sizes

Usage: tools/reference/.venv/bin/python tools/reference/gen_tokenizer.py [--shared DIR]
"""
import argparse
import hashlib
import json
import lzma
import os
import platform
import random
import site
import sys

# the reference's Strip decoder panics on an empty text (recorded as dec_error); keep the
# panic message it prints to one line
os.environ["RUST_BACKTRACE"] = "0"

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")


def xz_write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME))


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def added(id_, content, special=False, normalized=None, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def bpe(vocab, merges, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    m.update(kw)
    m["vocab"] = vocab
    m["merges"] = merges
    return m


def closed_merges(merges, vocab, limit, alphabet=None):
    """Keep merges (in order) whose parts are already known; grow the vocabulary with them."""
    out = []
    for a, b in merges:
        if len(out) >= limit:
            break
        if alphabet is not None and not all(c in alphabet for c in a + b):
            continue
        if a in vocab and b in vocab:
            out.append([a, b])
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
    return out


def synth_tokenizers(qwen, gemma):
    """Small tokenizers covering what the real two do not: other normalizers, pre-tokenizers,
    decoders, post-processors, added-token flags, unk handling, subword affixes."""
    out = {}
    # byte-level BPE in the GPT-2 style: prefix space, GPT-2 regex, NFKC, ignore_merges,
    # TemplateProcessing with BOS and EOS, added tokens with lstrip/rstrip/single_word/normalized
    bl = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(bl)}
    merges = closed_merges(qwen["model"]["merges"], vocab, 3000)
    n = len(vocab)
    toks = [added(n, "<s>", True), added(n + 1, "</s>", True), added(n + 2, "[MASK]", True, lstrip=True, rstrip=True),
            added(n + 3, "<word>", False, normalized=False, single_word=True), added(n + 4, "hello world", False),
            added(n + 5, "ＡＢＣ", False, normalized=True)]
    out["bytelevel"] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": toks,
        "normalizer": {"type": "NFKC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [n], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [n + 1], "tokens": ["</s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": bpe(vocab, merges, ignore_merges=True),
    }
    # SentencePiece-style BPE as Llama 2 writes it: Prepend + Replace normalizer, no
    # pre-tokenizer, byte fallback, fused unk, decoder with Strip
    alphabet = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-▁\néèöü中文的一")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for c in sorted(alphabet):
        vocab.setdefault(c, len(vocab))
    merges = closed_merges(gemma["model"]["merges"], vocab, 4000, alphabet)
    sp_vocab = dict(vocab)
    out["sentencepiece"] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>", True), added(1, "<s>", True), added(2, "</s>", True),
                         added(len(vocab), "<start_of_turn>", True)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": bpe(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True),
    }
    # Metaspace pre-tokenizer (prepend_scheme "first") after Digits, unk without fusing,
    # normalizers NFKC + Strip + regex Replace, RobertaProcessing, Metaspace decoder
    vocab = {k: v for k, v in sp_vocab.items() if not k.startswith("<0x")}
    vocab = {k: i for i, k in enumerate(vocab)}
    merges = closed_merges(gemma["model"]["merges"], vocab, 4000, alphabet)
    out["metaspace"] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>", True), added(1, "<s>", True), added(2, "</s>", True),
                         added(len(vocab), "<mask>", True, lstrip=True),
                         added(len(vocab) + 1, "[WORD]", False, normalized=True, single_word=True)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Strip", "strip_left": True, "strip_right": True},
            {"type": "Replace", "pattern": {"Regex": "\\s{2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1], "trim_offsets": True,
                           "add_prefix_space": True},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
        "model": bpe(vocab, merges, unk_token="<unk>", fuse_unk=False),
    }
    # Split pre-tokenizers with every delimiter behaviour and invert, no decoder (tokens joined
    # by spaces), no post-processor, Digits grouping
    vocab = {c: i for i, c in enumerate(bl)}
    merges = closed_merges(qwen["model"]["merges"], vocab, 2000)
    out["splits"] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(len(vocab), "<|sep|>", True)],
        "normalizer": {"type": "Replace", "pattern": {"Regex": "[\\p{Zs}\\t]+"}, "content": " "},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "|"}, "behavior": "Removed", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\p{P}+"}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[aeiouAEIOU]+"}, "behavior": "Contiguous", "invert": True},
            {"type": "Digits", "individual_digits": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": None,
        "model": bpe(vocab, merges),
    }
    # decoders working on the fused string: literal Replace with a two-character pattern, a
    # regex Replace, Strip at both ends; a Sequence post-processor adding an end token
    vocab = dict(sp_vocab)
    merges = closed_merges(gemma["model"]["merges"], vocab, 4000, alphabet)
    out["fused"] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>", True), added(1, "<s>", True), added(2, "</s>", True)],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": True},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {"type": "TemplateProcessing",
             "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Replace", "pattern": {"String": "▁▁"}, "content": "\t"},
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "#"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 1}]},
        "model": bpe(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True),
    }
    # word-piece-like affixes: continuing_subword_prefix "##" and end_of_word_suffix "</w>",
    # whitespace removed by an inverted split, accents stripped (NFD + Replace \p{Mn})
    vocab = {"[UNK]": 0}
    letters = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'"
    for c in letters:
        for form in (c, "##" + c, c + "</w>", "##" + c + "</w>"):
            vocab.setdefault(form, len(vocab))
    merges = []
    words = ["the", "and", "ing", "tion", "here", "there", "hello", "world", "token", "izer", "quick", "brown",
             "over", "lazy", "jumps", "fox", "dog", "is", "it", "to", "of", "in", "on", "at", "we", "you"]
    for w in words:
        for i in range(1, len(w)):
            last = i == len(w) - 1
            left = w[:i]
            right = "##" + w[i] + ("</w>" if last else "")
            new = w[:i + 1] + ("</w>" if last else "")
            if left not in vocab:
                continue
            if [left, right] not in merges:
                merges.append([left, right])
                vocab.setdefault(new, len(vocab))
    out["affixes"] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "[UNK]", True)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFD"},
                                                           {"type": "Replace", "pattern": {"Regex": "\\p{Mn}"}, "content": ""}]},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": False},
        "post_processor": {"type": "BertProcessing", "sep": ["[UNK]", 0], "cls": ["[UNK]", 0]},
        "decoder": None,
        "model": bpe(vocab, merges, unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
    }
    return out


def text_of(item):
    return item if isinstance(item, str) else item.decode("utf-8", "replace")


def put_str(rec, key, s):
    if "\x00" in s:
        rec[key + "_hex"] = s.encode("utf-8").hex()
    else:
        rec[key] = s


def expected(tok_path, corpus, sample_ids_seed):
    tok = Tokenizer.from_file(tok_path)
    tok_split = Tokenizer.from_file(tok_path)
    tok_split.encode_special_tokens = True
    vocab = tok.get_vocab(with_added_tokens=True)
    rng = random.Random(sample_ids_seed)
    ids = sorted(vocab.values())
    sample = sorted(set(rng.sample(ids, min(400, len(ids))) + ids[:20] + ids[-40:]))
    meta = {"vocab_size": tok.get_vocab_size(with_added_tokens=True), "strings": len(corpus),
            "tokens": [[i, tok.id_to_token(i), tok.token_to_id(tok.id_to_token(i)) if tok.id_to_token(i) is not None else None]
                       for i in sample]}
    lines = [json.dumps({"meta": meta}, ensure_ascii=False)]
    for k, item in corpus:
        text = text_of(item)
        rec = {"i": k}
        if isinstance(item, bytes):
            rec["hex"] = item.hex()
        else:
            put_str(rec, "text", item)
        e0 = tok.encode(text, add_special_tokens=False).ids
        e1 = tok.encode(text, add_special_tokens=True).ids
        e2 = tok_split.encode(text, add_special_tokens=False).ids
        rec["ids"] = e0
        rec["ids_special"] = e1
        if e2 != e0:
            rec["ids_split"] = e2
        for key, skip in (("dec", False), ("dec_skip", True)):
            try:
                put_str(rec, key, tok.decode(e1, skip_special_tokens=skip))
            except BaseException as e:  # noqa: B036 - a Rust panic is a BaseException
                # the reference's Strip decoder panics on an empty string (index underflow)
                rec[key + "_error"] = "%s: %s" % (type(e).__name__, str(e).split("\n")[0][:200])
        
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


def english_sample(site_dir, limit=300000):
    """English prose for the speed check: comment and docstring lines of the pinned
    transformers package (ASCII, mostly words, each line once)."""
    base = os.path.join(site_dir, "transformers")
    lines, seen = [], set()
    for dp, dn, fn in os.walk(base):
        dn.sort()
        for f in sorted(fn):
            if not f.endswith(".py"):
                continue
            with open(os.path.join(dp, f), encoding="utf-8", errors="replace") as fh:
                for ln in fh:
                    t = ln.strip().lstrip("#").strip()
                    if len(t) < 50 or not t.isascii() or not t[0].isalpha():
                        continue
                    if sum(c.isalpha() or c == " " for c in t) < 0.9 * len(t) or t in seen:
                        continue
                    seen.add(t)
                    lines.append(t)
            if sum(len(x) + 1 for x in lines) > limit:
                return "\n".join(lines)[:limit]
    return "\n".join(lines)[:limit]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared", "tokenizers"))
    args = ap.parse_args()
    corpus = tokenizer_corpus.build(site.getsitepackages()[0])
    corpus = [(i, c.decode("utf-8") if isinstance(c, bytes) and is_utf8(c) else c) for i, c in enumerate(corpus)]
    xz_write(os.path.join(OUT, "english.txt.xz"), english_sample(site.getsitepackages()[0]).encode("ascii"))
    report = []
    real = {}
    for name in ("qwen3", "gemma3"):
        src = os.path.join(args.shared, name)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(src, f), "rb") as fh:
                xz_write(os.path.join(OUT, name, f + ".xz"), fh.read())
        real[name] = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
        data = expected(os.path.join(src, "tokenizer.json"), corpus, 1)
        xz_write(os.path.join(OUT, name + ".jsonl.xz"), data)
        report.append((name, len(corpus), sha256(os.path.join(src, "tokenizer.json"))))
    synth = synth_tokenizers(real["qwen3"], real["gemma3"])
    sub = [c for c in corpus if c[0] % 3 == 0 or c[0] < 400]
    for name, tj in synth.items():
        path = os.path.join(OUT, "synth", name, "tokenizer.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            json.dump(tj, f, ensure_ascii=False, indent=1)
            f.write("\n")
        xz_write(os.path.join(OUT, "synth-" + name + ".jsonl.xz"), expected(path, sub, 2))
        report.append(("synth/" + name, len(sub), sha256(path)))
    with open(os.path.join(OUT, "VERSIONS.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write("# Tokenizer fixtures\n\nGenerated by `tools/reference/gen_tokenizer.py` (corpus: "
                "`tools/reference/tokenizer_corpus.py`) with\n\n```\n")
        f.write("python==%s\ntokenizers==%s\n```\n\n" % (platform.python_version(), tokenizers.__version__))
        f.write("The Unicode table of the C tokenizer (`src/text/tokenizer_unicode_tab.c`) comes from\n"
                "`unicodedata2==16.0.0` through `tools/reference/gen_unicode_tables.py`.\n\n")
        f.write("| tokenizer | strings | tokenizer.json sha256 |\n|---|---|---|\n")
        for name, n, h in report:
            f.write("| %s | %d | %s |\n" % (name, n, h))
        f.write("\nThe real files come from the shared reference folder (`tokenizers/qwen3`, `tokenizers/gemma3`);\n"
                "the synthetic ones are derived from their vocabularies and merges by the generator.\n")
    print("corpus %d strings; wrote %s" % (len(corpus), OUT))


def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


if __name__ == "__main__":
    main()
