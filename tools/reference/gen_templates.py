"""Reference renders of chat templates, for tests/test_jinja.c and tests/test_chat.c.

Writes tests/fixtures/templates/:
  <name>/chat_template.jinja or tokenizer_config.json   the template, as a model folder carries it
  <name>/tokenizer_config.json                          the special tokens the template sees
  <name>/config.json                                    {"model_type": ...} (picks the image placeholder)
  <name>/conversations.jsonl                            one conversation a line:
        {"id", "messages", "options", "expected"}   or   {"id", "messages", "options", "error"}
  jinja_cases.jsonl                                     language cases: {"name", "template", "context",
                                                        "expected"} or {..., "error"}
  README.md                                             sources and versions

Every expected string comes from transformers' own renderer,
transformers.utils.chat_template_utils.render_jinja_template (the Jinja2 environment
apply_chat_template uses: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the
tojson / raise_exception / strftime_now / namespace / dict globals), after the message
preparation the C side does (chat.c), step for step:
  1. "content": null becomes ""                      mlx_lm.server.process_message_content
     then other keys whose value is None are dropped   transformers _normalize_chat_messages
  2. {"type": "image_url", "image_url": {"url": u}}   ProcessorMixin._normalize_conversations
     becomes {"type": "image", "url": u}
  3. tool_calls[].function.arguments given as a       mlx_lm.server.process_message_content
     JSON string is parsed into an object
  4. when the template has no image syntax (the word "image" appears nowhere in it), list
     content is flattened to a string: text parts joined, each image part replaced by the
     family's placeholder (config.json model_type: qwen* -> <|vision_start|><|image_pad|>
     <|vision_end|>, gemma3 -> <start_of_image>, gemma4 / llama / mllama -> <|image|>)
  5. variables: the tokenizer's special tokens, then chat_template_kwargs and the other
     options (they win), messages, tools, add_generation_prompt
strftime_now is pinned to a fixed instant (options "now", seconds since the epoch, read as UTC).

Templates from a package: llama-cpp-python==0.3.36 (PyPI sdist) vendors llama.cpp's
models/templates/, which holds Qwen/Qwen3.5-4B's chat template and Meta's Llama 3.2 one; the
sdist is fetched with `pip download` into ~/.cache/optiq-reference/ (outside the tree).

Usage: tools/reference/.venv/bin/python tools/reference/gen_templates.py [--shared ../shared]
"""
import argparse
import copy
import datetime as _dt
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
from importlib import metadata

import jinja2
import transformers.utils.chat_template_utils as ctu
from transformers.processing_utils import ProcessorMixin
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

JINJA_CONTEXT = None
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "templates")
LCP_VERSION = "0.3.36"
LCP_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
NOW = 1773489600  # 2026-03-14 12:00:00 UTC


class FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls.fromtimestamp(NOW, _dt.timezone.utc).replace(tzinfo=None)


ctu.datetime = FixedDatetime  # strftime_now reads the module's datetime.now()

# ---- templates -------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Meta-Llama-3-8B-Instruct's template (the first Llama 3 release)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def lcp_templates():
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "optiq-reference")
    os.makedirs(cache, exist_ok=True)
    sdist = os.path.join(cache, f"llama_cpp_python-{LCP_VERSION}.tar.gz")
    if not os.path.exists(sdist):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                               "-d", cache, f"llama-cpp-python=={LCP_VERSION}"])
    digest = hashlib.sha256(open(sdist, "rb").read()).hexdigest()
    if digest != LCP_SHA256:
        sys.exit(f"{sdist}: sha256 {digest}, expected {LCP_SHA256}")
    want = {
        "Qwen3.5-4B.jinja": "qwen3_5",
        "google-gemma-4-31B-it.jinja": "gemma4_31b",
        "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3_2",
    }
    found = {}
    with tarfile.open(sdist) as tf:
        for m in tf.getmembers():
            base = os.path.basename(m.name)
            if "/vendor/llama.cpp/models/templates/" in m.name and base in want:
                found[want[base]] = (tf.extractfile(m).read().decode("utf-8"),
                                     m.name.split("/", 1)[1])
    return found


def tokens_from_config(cfg):
    """The special tokens the C side reads from tokenizer_config.json (chat.c)."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            out[key] = v
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, dict):
        for k, v in extra.items():
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                out[k] = v
    return out


def template_sets(shared):
    lcp = lcp_templates()
    qwen3_cfg = json.load(open(os.path.join(shared, "tokenizers", "qwen3", "tokenizer_config.json")))
    gemma3_cfg = json.load(open(os.path.join(shared, "tokenizers", "gemma3", "tokenizer_config.json")))
    trim = lambda cfg: {k: v for k, v in cfg.items() if k != "added_tokens_decoder"}
    return [
        dict(name="gemma4", model_type="gemma4", jinja=open(os.path.join(shared, "templates", "gemma4", "chat_template.jinja")).read(),
             tokenizer_config={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
             source="shared/templates/gemma4/chat_template.jinja (special tokens: Gemma's <bos>/<eos>/<pad>/<unk>)"),
        dict(name="gemma4_31b", model_type="gemma4", jinja=lcp["gemma4_31b"][0],
             tokenizer_config={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
             source=f"llama-cpp-python=={LCP_VERSION} sdist: {lcp['gemma4_31b'][1]} (google/gemma-4-31B-it, later revision)"),
        dict(name="gemma3", model_type="gemma3", jinja=None, tokenizer_config=trim(gemma3_cfg),
             source="shared/tokenizers/gemma3/tokenizer_config.json (chat_template; added_tokens_decoder dropped)"),
        dict(name="qwen3", model_type="qwen3", jinja=None, tokenizer_config=trim(qwen3_cfg),
             source="shared/tokenizers/qwen3/tokenizer_config.json (chat_template; added_tokens_decoder dropped)"),
        dict(name="qwen3_5", model_type="qwen3_5", jinja=lcp["qwen3_5"][0],
             tokenizer_config={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
             source=f"llama-cpp-python=={LCP_VERSION} sdist: {lcp['qwen3_5'][1]} (Qwen/Qwen3.5-4B)"),
        dict(name="chatml", model_type="qwen2_vl", jinja=CHATML,
             tokenizer_config={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
             source="ChatML, written from its public text"),
        dict(name="llama3", model_type="llama", jinja=LLAMA3,
             tokenizer_config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
             source="Meta-Llama-3-8B-Instruct's template, written from its public text"),
        dict(name="llama3_2", model_type="llama", jinja=lcp["llama3_2"][0],
             tokenizer_config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
             source=f"llama-cpp-python=={LCP_VERSION} sdist: {lcp['llama3_2'][1]} (meta-llama/Llama-3.2-3B-Instruct)"),
    ]


# ---- the preparation chat.c does (see the module docstring) ----------------------------

PLACEHOLDERS = [("qwen", "<|vision_start|><|image_pad|><|vision_end|>"), ("gemma3", "<start_of_image>"),
                ("gemma4", "<|image|>"), ("mllama", "<|image|>"), ("llama", "<|image|>")]


def placeholder_for(model_type):
    for prefix, ph in PLACEHOLDERS:
        if model_type.startswith(prefix):
            return ph
    return None


def prepare(template, model_type, messages, options):
    messages = copy.deepcopy(messages)
    for m in messages:
        if "content" in m and m["content"] is None:
            m["content"] = ""
    convs, _ = ProcessorMixin._normalize_conversations(None, messages)
    msgs = convs[0]
    for m in msgs:
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except json.JSONDecodeError:
                    pass
    if "image" not in template:
        ph = options.get("image_placeholder") or placeholder_for(model_type)
        for m in msgs:
            if isinstance(m.get("content"), list):
                parts = []
                for p in m["content"]:
                    if p.get("type") == "text":
                        parts.append(p.get("text", ""))
                    elif p.get("type") in ("image", "image_url"):
                        if ph is None:
                            raise ValueError("no image placeholder")
                        parts.append(ph)
                    else:
                        raise ValueError(f"unsupported part type {p.get('type')!r}")
                m["content"] = "".join(parts)
    return msgs


def reference_render(tset, template, messages, options):
    opts = dict(options)
    opts.pop("now", None)
    opts.pop("image_placeholder", None)
    tools = opts.pop("tools", None)
    agp = opts.pop("add_generation_prompt", True)
    kwargs = dict(opts.pop("chat_template_kwargs", {}) or {})
    kwargs = {**opts, **kwargs}
    msgs = prepare(template, tset["model_type"], messages, options)
    variables = {**tokens_from_config(tset["tokenizer_config"]), **kwargs}
    rendered, _ = render_jinja_template(conversations=[msgs], tools=tools, chat_template=template,
                                        add_generation_prompt=agp, **variables)
    return rendered[0]


# ---- conversations ---------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
        "days": {"type": "integer", "description": "Forecast days", "nullable": True}},
        "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search_docs", "description": "Search the documentation — returns snippets.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "description": "Search terms"},
        "filters": {"type": "object", "description": "Optional filters", "properties": {
            "lang": {"type": "string", "description": "Language code"},
            "max_results": {"type": "integer", "description": "Limit"}}, "required": ["lang"]},
        "tags": {"type": "array", "description": "Tags", "items": {"type": "string"}},
        "threshold": {"type": "number", "description": "Score threshold, default 0.5"}},
        "required": ["query"]}}}
CALC = {"type": "function", "function": {
    "name": "calculate", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 2*(3+4)"}},
                   "required": ["expression"]}}}

IMG = lambda i: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,AAAA{i}"}}
IMG_HF = lambda i: {"type": "image", "url": f"https://example.com/{i}.png"}
TXT = lambda t: {"type": "text", "text": t}


def tc(id_, name, args, as_string):
    return {"id": id_, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}


def base_conversations():
    """(id, messages, kinds); kinds says what the conversation needs: 'img', 'tools', 'alt' (alternates)."""
    C = []
    add = lambda id_, msgs, *kinds: C.append((id_, msgs, set(kinds)))
    add("hello", [{"role": "user", "content": "Hello!"}], "alt")
    add("system_hello", [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "What is 2+2?"}], "alt")
    add("multi_turn", [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Name a color."},
                       {"role": "assistant", "content": "Blue."},
                       {"role": "user", "content": "Another one?"}], "alt")
    add("multi_turn_no_system", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                                 {"role": "user", "content": "Tell me a joke."},
                                 {"role": "assistant", "content": "Why did the chicken cross the road?"},
                                 {"role": "user", "content": "Why?"}], "alt")
    add("ends_with_assistant", [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi"}], "alt")
    add("whitespace", [{"role": "system", "content": "  padded system  \n"},
                       {"role": "user", "content": "\n  leading and trailing  \n\n"}], "alt")
    add("unicode", [{"role": "user", "content": "Ünïcödé — 日本語のテキスト, عربي, हिन्दी, emoji 👩‍👩‍👧‍👦 and \"quotes\" 'single'"}], "alt")
    add("special_chars", [{"role": "user", "content": "Braces {{ not a tag }} {% nor this %} {# nor #} and \\ backslash\ttab"}], "alt")
    add("long_multiline", [{"role": "user", "content": "Line one\nLine two\n\nParagraph\n```python\nprint('x')\n```"}], "alt")
    add("text_parts", [{"role": "user", "content": [TXT("First part. "), TXT("Second part.")]}], "alt")
    add("system_parts", [{"role": "system", "content": [TXT("System as parts.")]},
                         {"role": "user", "content": "ok"}], "alt")
    add("image_before_text", [{"role": "user", "content": [IMG(1), TXT("What is in this image?")]}], "img", "alt")
    add("image_after_text", [{"role": "user", "content": [TXT("Describe:"), IMG(1)]}], "img", "alt")
    add("image_between_text", [{"role": "user", "content": [TXT("Compare this"), IMG(1), TXT("with nothing.")]}], "img", "alt")
    add("two_images", [{"role": "user", "content": [IMG(1), IMG(2), TXT("Which is brighter?")]}], "img", "alt")
    add("three_images_spread", [{"role": "user", "content": [TXT("A:"), IMG(1), TXT("B:"), IMG(2), TXT("C:"), IMG(3)]}], "img", "alt")
    add("hf_image_part", [{"role": "user", "content": [IMG_HF(1), TXT("Caption it.")]}], "img", "alt")
    add("image_second_turn", [{"role": "system", "content": "You describe images."},
                              {"role": "user", "content": "I will send an image."},
                              {"role": "assistant", "content": "Sure, send it."},
                              {"role": "user", "content": [IMG(1), TXT("Here it is.")]}], "img", "alt")
    add("images_each_turn", [{"role": "user", "content": [IMG(1), TXT("First?")]},
                             {"role": "assistant", "content": "A cat."},
                             {"role": "user", "content": [TXT("And this one?"), IMG(2)]}], "img", "alt")
    add("image_only", [{"role": "user", "content": [IMG(1)]}], "img", "alt")
    add("reasoning_past", [{"role": "user", "content": "What is 3*7?"},
                           {"role": "assistant", "content": "21", "reasoning_content": "3 times 7 is 21."},
                           {"role": "user", "content": "And 4*6?"}], "alt")
    add("reasoning_last", [{"role": "user", "content": "Think: 2+3?"},
                           {"role": "assistant", "content": "5", "reasoning_content": "Adding 2 and 3 gives 5."}], "alt")
    add("think_tags_in_content", [{"role": "user", "content": "Q1"},
                                  {"role": "assistant", "content": "<think>\nsome reasoning\n</think>\n\nAnswer one."},
                                  {"role": "user", "content": "Q2"}], "alt")
    add("thinking_field", [{"role": "user", "content": "Q"},
                           {"role": "assistant", "content": "A", "thinking": "old-style field"},
                           {"role": "user", "content": "Q again"}], "alt")
    add("tool_call_string_args", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [tc("call_1", "get_weather", {"city": "Paris", "unit": "celsius"}, True)]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 18, \"sky\": \"clear\"}"}], "tools")
    add("tool_call_object_args", [
        {"role": "user", "content": "Weather in Oslo for 3 days?"},
        {"role": "assistant", "content": "", "tool_calls": [tc("call_a", "get_weather", {"city": "Oslo", "days": 3}, False)]},
        {"role": "tool", "tool_call_id": "call_a", "name": "get_weather", "content": "cold"},
        {"role": "assistant", "content": "It will be cold."},
        {"role": "user", "content": "Thanks"}], "tools")
    add("tool_call_with_text", [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Compute 2*(3+4)"},
        {"role": "assistant", "content": "Let me calculate.", "tool_calls": [tc("c1", "calculate", {"expression": "2*(3+4)"}, True)]},
        {"role": "tool", "tool_call_id": "c1", "name": "calculate", "content": "14"}], "tools")
    add("parallel_tool_calls", [
        {"role": "user", "content": "Weather in Rome and Madrid?"},
        {"role": "assistant", "content": None, "tool_calls": [tc("w1", "get_weather", {"city": "Rome"}, True),
                                                              tc("w2", "get_weather", {"city": "Madrid"}, True)]},
        {"role": "tool", "tool_call_id": "w1", "name": "get_weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "w2", "name": "get_weather", "content": "rainy"}], "tools")
    add("nested_args", [
        {"role": "user", "content": "Search docs about tokenizers in English"},
        {"role": "assistant", "content": "", "tool_calls": [tc("s1", "search_docs", {
            "query": "tokenizer \"BPE\"", "filters": {"lang": "en", "max_results": 5}, "tags": ["nlp", "text"],
            "threshold": 0.75}, False)]},
        {"role": "tool", "tool_call_id": "s1", "name": "search_docs", "content": "[{\"title\": \"BPE\", \"score\": 0.9}]"},
        {"role": "user", "content": "Summarize."}], "tools")
    add("tool_result_then_answer", [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [tc("x", "get_weather", {"city": "Lima", "unit": "fahrenheit"}, True)]},
        {"role": "tool", "tool_call_id": "x", "name": "get_weather", "content": "72F"},
        {"role": "assistant", "content": "It is 72F in Lima."}], "tools")
    add("tool_reasoning", [
        {"role": "user", "content": "Weather in Kyoto?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should call the weather tool.",
         "tool_calls": [tc("k", "get_weather", {"city": "Kyoto"}, True)]},
        {"role": "tool", "tool_call_id": "k", "name": "get_weather", "content": "humid"}], "tools")
    add("tools_defined_only", [{"role": "system", "content": "You can use tools."},
                               {"role": "user", "content": "Just chat, no tools needed."}], "alt", "tooldefs")
    add("tools_defined_no_system", [{"role": "user", "content": "Hello there"}], "alt", "tooldefs")
    return C


def variants(tset, rng):
    """(id, messages, options) for one template: each base conversation under several option sets."""
    name = tset["name"]
    out = []
    tools_sets = [None, [WEATHER], [WEATHER, SEARCH, CALC]]
    for cid, msgs, kinds in base_conversations():
        if name == "gemma3" and "alt" not in kinds:
            continue  # the template raises on tool turns; kept to a few error cases below
        opts_list = []
        for agp in (True, False):
            for think in (None, True, False):
                o = {"add_generation_prompt": agp, "now": NOW}
                if think is not None:
                    o["enable_thinking"] = think
                if "tools" in kinds or "tooldefs" in kinds:
                    o["tools"] = rng.choice(tools_sets[1:])
                opts_list.append(o)
        rng.shuffle(opts_list)
        for k, o in enumerate(opts_list[:2]):
            out.append((f"{cid}.{k}", msgs, o))
    if name == "gemma3":
        out.append(("error.not_alternating", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                    {"add_generation_prompt": True, "now": NOW}))
        out.append(("error.tool_turn", base_conversations()[24][1], {"add_generation_prompt": True, "now": NOW}))
    if name == "qwen3_5":
        out.append(("error.no_user", [{"role": "system", "content": "only system"}], {"add_generation_prompt": True, "now": NOW}))
        out.append(("error.system_image", [{"role": "system", "content": [IMG(1)]}, {"role": "user", "content": "x"}],
                    {"add_generation_prompt": True, "now": NOW}))
    if name == "llama3_2":
        out.append(("date_string_kwarg", [{"role": "user", "content": "What day is it?"}],
                    {"add_generation_prompt": True, "now": NOW, "chat_template_kwargs": {"date_string": "01 Jan 2030"}}))
    out.append(("kwargs_override", [{"role": "user", "content": "hi"}],
                {"add_generation_prompt": True, "now": NOW, "chat_template_kwargs": {"enable_thinking": False, "add_vision_id": True}}))
    out.append(("vision_ids", [{"role": "user", "content": [IMG(1), TXT("and"), IMG(2)]}],
                {"add_generation_prompt": True, "now": NOW, "add_vision_id": True}))
    return out


# ---- Jinja language cases --------------------------------------------------------------

def jinja_cases():
    ctx = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi there"},
                        {"role": "assistant", "content": "Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"b": 1, "a": [1, 2.5, None, True]}}}]}],
           "d": {"b": 2, "a": 1, "C": 3, "nested": {"x": [1, {"y": "z"}]}}, "items": [3, 1, 2], "s": "  Hello World  ",
           "u": "héllo wörld ÄÖ", "n": None, "t": True, "f": 1.5, "i": 7, "neg": -3, "empty": [], "es": "",
           "users": [{"name": "bob", "age": 30, "admin": True}, {"name": "Alice", "age": 25, "admin": False},
                     {"name": "carol", "age": 35}], "words": ["b", "A", "c", "a", "B"], "big": 12345678901234,
           "floats": [1.0, 0.1, 1e-05, 1e16, 123456789.125, -0.0, 2.5, 3.5, 1e100, 0.30000000000000004]}
    global JINJA_CONTEXT
    JINJA_CONTEXT = ctx
    C = []
    add = lambda name, tpl, c=None: C.append((name, tpl, c))
    # literals and printing
    add("print_literals", "{{ 1 }}|{{ 1.0 }}|{{ -2.5 }}|{{ 'a' }}|{{ \"b\" }}|{{ true }}|{{ True }}|{{ false }}|{{ none }}|{{ None }}")
    add("print_containers", "{{ [1, 'a', none, true, 1.5] }}|{{ {'k': 'v', 'n': 1} }}|{{ (1, 2) }}|{{ (1,) }}|{{ [] }}|{{ {} }}")
    add("print_floats", "{% for x in floats %}{{ x }} {% endfor %}")
    add("print_repr_strings", "{{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'new\\nline', 'tab\\t', 'back\\\\slash', 'é'] }}")
    add("string_escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\x41\\u00e9\\U0001F600' }}")
    add("string_concat_adjacent", "{{ 'ab' 'cd' \"ef\" }}")
    add("numbers_forms", "{{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1e3 }} {{ 2.5e-3 }} {{ 1_0.5 }}")
    add("undefined_prints_empty", "[{{ nothing }}][{{ d.missing }}][{{ messages[10] }}]")
    add("big_int", "{{ big }} {{ big * 2 }} {{ -big }}")
    # arithmetic
    add("arith", "{{ 1 + 2 }} {{ 7 - 10 }} {{ 3 * 4 }} {{ 3 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}")
    add("arith_float", "{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 / 3 }} {{ 2.0 ** 0.5 }} {{ 10 / 4 }}")
    add("arith_bool", "{{ true + 1 }} {{ true * 3 }} {{ false - 1 }}")
    add("precedence", "{{ 2 + 3 * 4 }} {{ (2 + 3) * 4 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ (1 + 2) ~ (3 + 4) }} {{ 1 ~ 2 * 3 }}")
    add("err_concat_binds_tighter", "{{ 1 + 2 ~ 3 + 4 }}")
    add("tilde_concat", "{{ 'a' ~ 1 ~ none ~ true ~ [1] ~ 1.0 }}")
    add("string_plus", "{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1, 2] + [3] }} {{ [0] * 3 }} {{ 'x' * 0 }}|")
    add("percent_format", "{{ '%s and %s' % ('a', 1) }} {{ '%d%%' % 50 }} {{ '%05.2f' % 3.14159 }} {{ '%r' % 'q' }}")
    # comparisons and logic
    add("compare", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 != '1' }} {{ [1,2] == [1,2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ (1,2) == [1,2] }}")
    add("in_not_in", "{{ 'ell' in 'hello' }} {{ 2 in items }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in items }} {{ 'x' in nothing }}")
    add("and_or_values", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }}|{{ none or [] }} {{ not 0 }} {{ not 'a' }} {{ 1 and 0 or 5 }}")
    add("cond_expr", "{{ 'yes' if t else 'no' }} {{ 'yes' if n else 'no' }} [{{ 'only' if n }}] {{ 1 if false else 2 if true else 3 }}")
    add("not_precedence", "{{ not t == false }} {{ not n is none }} {{ not 1 in items }}")
    # access
    add("attr_item_access", "{{ d.a }} {{ d['b'] }} {{ d.nested.x[1].y }} {{ messages[1].content }} {{ messages[-1]['role'] }} {{ d.nested['x'][0] }}")
    add("dict_method_shadow", "{{ {'items': 5}['items'] }} {{ {'items': 5}.items() | list }} {{ {'get': 1}.get('get') }}")
    add("getitem_attr_fallback", "{{ 'abc'['upper']() }} {{ d['keys']() | list }}")
    add("slicing", "{{ items[1:] }} {{ items[:-1] }} {{ items[::-1] }} {{ items[::2] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ items[5:] }} {{ items[-100:100] }} {{ 'hello'[-3:] }} {{ items[2:0:-1] }}")
    add("slicing_unicode", "{{ u[1:4] }} {{ u[::-1] }} {{ u[-2] }} {{ u|length }}")
    add("negative_index", "{{ items[-1] }} {{ 'abc'[-1] }} {{ messages[-2].role }}")
    # statements
    add("if_elif_else", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x is odd %}odd{% else %}other{% endif %} {% endfor %}")
    add("for_loop_vars", "{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}")
    add("for_prev_next", "{% for x in items %}[{{ loop.previtem }}|{{ x }}|{{ loop.nextitem }}]{% endfor %}{% for x in items %}{{ loop.previtem is defined }}{% endfor %}")
    add("for_else", "{% for x in empty %}{{ x }}{% else %}empty!{% endfor %} {% for x in items %}{{ x }}{% else %}no{% endfor %}")
    add("for_filter", "{% for x in items if x > 1 %}{{ x }}:{{ loop.index }}:{{ loop.length }} {% endfor %}")
    add("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}")
    add("for_dict_keys", "{% for k in d %}{{ k }},{% endfor %}")
    add("for_string", "{% for ch in 'héy' %}[{{ ch }}]{% endfor %}")
    add("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }} {% endfor %}")
    add("loop_cycle", "{% for x in items %}{{ loop.cycle('odd', 'even') }} {% endfor %}")
    add("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}")
    add("set_scoping", "{% set x = 1 %}{% for i in items %}{% set x = i %}{% endfor %}{{ x }} {% if true %}{% set y = 2 %}{% endif %}{{ y }}")
    add("namespace", "{% set ns = namespace(count=0, found=false) %}{% for i in items %}{% set ns.count = ns.count + i %}{% endfor %}{{ ns.count }} {{ ns.found }} {{ ns }}")
    add("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}")
    add("set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 2 %}{{ t }}")
    add("set_block", "{% set block %}  Hello {{ 'x' }}  {% endset %}[{{ block }}] {% set b2 | upper | trim %} ab {% endset %}[{{ b2 }}]")
    add("macro_basic", "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet('X', 'Hi') }} {{ greet(name='Y', greeting='Yo') }}")
    add("macro_recursive", "{% macro fmt(v) %}{% if v is mapping %}{{ '{' }}{% for k, x in v | dictsort %}{{ k }}:{{ fmt(x) }}{% if not loop.last %},{% endif %}{% endfor %}{{ '}' }}{% elif v is sequence and v is not string %}[{% for x in v %}{{ fmt(x) }}{% endfor %}]{% else %}{{ v }}{% endif %}{% endmacro %}{{ fmt(d) }}")
    add("macro_varargs_kwargs", "{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}")
    add("macro_caller", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}")
    add("macro_caller_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(v) each([1, 2]) %}<{{ v }}>{% endcall %}")
    add("macro_sees_toplevel", "{% set g = namespace(v=0) %}{% macro bump() %}{% set g.v = g.v + 1 %}{{ g.v }}{% endmacro %}{{ bump() }}{{ bump() }}{{ g.v }}")
    add("macro_returns_string_trim", "{% macro m() %}  x  {% endmacro %}[{{ m() | trim }}] [{{ m() | length }}]")
    add("filter_block", "{% filter upper %}hello {{ 'world' }}{% endfilter %}")
    add("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]")
    add("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}done")
    add("comments", "a{# comment #}b{#- trimmed -#} c {# multi\nline #}d")
    add("generation_tag", "{% generation %}gen {{ 1 }}{% endgeneration %}")
    # whitespace control (trim_blocks + lstrip_blocks as transformers sets them)
    add("ws_trim_blocks", "{% if true %}\nA\n{% endif %}\nB\n{% for x in [1,2] %}\n  {{ x }}\n{% endfor %}\nC")
    add("ws_lstrip_blocks", "start\n    {% if true %}\n    indented\n    {% endif %}\n  {{ 'var' }}\nend")
    add("ws_minus", "a   {%- if true -%}   b   {%- endif -%}   c {{- ' d ' -}} e\n\n{{ 'f' }}")
    add("ws_plus", "a\n    {%+ if true %}x{% endif +%}\nb")
    add("ws_comment_trim", "a\n  {# c #}\nb\n{#- c -#}\n\nc")
    add("ws_trailing_newline", "text\n")
    add("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\rc")
    add("ws_unicode_space", "x\u00a0{%- if true %}y{% endif %}")
    add("ws_var_no_trim", "{{ 'a' }}\n{{ 'b' }}\n")
    # filters
    add("f_trim_case", "[{{ s | trim }}] {{ s | upper }} {{ s | lower }} {{ 'hello world' | capitalize }} {{ 'hello-world foo(bar) x' | title }} {{ u | upper }} {{ u | title }}")
    add("f_trim_chars", "{{ 'xxhixx' | trim('x') }} [{{ '\u00a0 nbsp \u3000' | trim }}]")
    add("f_default", "{{ nothing | default('dflt') }} {{ n | default('x') }} {{ es | default('empty', true) }} {{ es | d('e2', boolean=true) }} {{ 0 | default(5) }} {{ nothing | default }}|")
    add("f_length", "{{ items | length }} {{ d | length }} {{ 'héllo' | length }} {{ nothing | length }} {{ items | count }}")
    add("f_tojson", "{{ messages[2] | tojson }}|{{ {'a': 'é\"\\n\\u0001<>&\\''} | tojson }}|{{ [1, 1.0, none, true, 'x'] | tojson }}")
    add("f_tojson_opts", "{{ d | tojson(indent=2) }}|{{ d | tojson(sort_keys=true) }}|{{ [] | tojson(indent=2) }}|{{ {'a': []} | tojson(indent=1) }}|{{ d.nested | tojson(separators=(',', ':')) }}")
    add("f_tojson_ascii", "{{ 'é😀' | tojson(ensure_ascii=true) }}")
    add("f_string_int_float", "{{ 5 | string }} {{ [1] | string }} {{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '3.5' | float }} {{ 'n' | float }} {{ 2 | float }} {{ '0x1f' | int(base=16) }} {{ ' 12 ' | int }}")
    add("f_abs_round", "{{ neg | abs }} {{ -2.5 | abs }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 7 | round }} {{ 2.1 | round(method='ceil') }} {{ 2.9 | round(0, 'floor') }} {{ 1234.5678 | round(-2) }}")
    add("f_dictsort", "{{ d | dictsort }} {{ d | dictsort(true) }} {{ {'b': 1, 'a': 2} | dictsort(by='value') }} {{ d | dictsort(reverse=true) }}")
    add("f_items", "{{ d | items | list }} {{ nothing | items | list }}")
    add("f_map", "{{ users | map(attribute='name') | join(', ') }} {{ words | map('upper') | list }} {{ users | map(attribute='admin', default='?') | list }} {{ [[1, 2], [3]] | map('length') | list }} {{ ['a', 'b'] | map('replace', 'a', 'z') | list }}")
    add("f_list_join", "{{ 'abc' | list }} {{ d | list }} {{ items | join }} {{ items | join('-') }} {{ users | join(', ', attribute='name') }}")
    add("f_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}")
    add("f_first_last", "{{ items | first }} {{ items | last }} {{ 'xyz' | first }} {{ 'xyz' | last }} [{{ empty | first }}]")
    add("f_select_reject", "{{ items | select('odd') | list }} {{ items | reject('odd') | list }} {{ [0, 1, '', 'a', none] | select | list }} {{ items | select('gt', 1) | list }} {{ items | select('in', [1, 3]) | list }}")
    add("f_selectattr", "{{ users | selectattr('admin') | map(attribute='name') | list }} {{ users | rejectattr('admin') | map(attribute='name') | list }} {{ users | selectattr('age', 'gt', 28) | map(attribute='name') | list }} {{ users | selectattr('admin', 'defined') | list | length }}")
    add("f_unique_reverse", "{{ words | unique | list }} {{ words | unique(case_sensitive=true) | list }} {{ items | reverse | list }} {{ 'abc' | reverse }}")
    add("f_sort", "{{ items | sort }} {{ words | sort }} {{ words | sort(case_sensitive=true) }} {{ items | sort(reverse=true) }} {{ users | sort(attribute='age') | map(attribute='name') | list }}")
    add("f_sum_min_max", "{{ items | sum }} {{ users | sum(attribute='age') }} {{ items | min }} {{ items | max }} {{ words | min }} {{ words | max(case_sensitive=true) }} {{ users | max(attribute='age') }} {{ [1.5, 2] | sum(start=10) }}")
    add("f_safe_escape", "{{ '<b>' | safe }} {{ '<a href=\"x\">&\\'' | escape }} {{ 5 | safe }}")
    add("f_indent", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent('> ', blank=true) }}")
    add("f_wordcount", "{{ 'Hello, world! This is   a test_case.' | wordcount }} {{ '' | wordcount }}")
    add("f_format", "{{ '%s-%s' | format('a', 2) }}")
    add("f_attr", "{{ users[0] | attr('name') }}")
    # tests
    add("tests_types", "{% for v in [none, true, 1, 1.5, 'a', [1], {'a': 1}, nothing] %}{{ v is none }}{{ v is boolean }}{{ v is number }}{{ v is integer }}{{ v is float }}{{ v is string }}{{ v is mapping }}{{ v is sequence }}{{ v is iterable }}{{ v is defined }} {% endfor %}")
    add("tests_values", "{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ none is sameas none }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 2 is in [1, 2] }} {{ nothing is undefined }} {{ d is not none }} {{ range is callable }}")
    add("test_undefined_attr_chain", "{{ d.missing is defined }} {{ messages[0].nope is defined }} {{ messages[0]['tool_calls'] is defined }}")
    # string methods
    add("str_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ ' x y '.rsplit() }}")
    add("str_methods2", "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'hello world'.title() }} {{ 'it\\'s O\\'neil'.title() }} {{ 'ABC'.lower() }} {{ 'abc'.upper() }} {{ 'a-b-c'.replace('-', '+') }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.count('l') }} {{ ', '.join(['a', 'b']) }}")
    add("str_methods3", "{{ 'a\\nb\\r\\nc'.splitlines() }} {{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ '  '.isspace() }} {{ 'Hello'.capitalize() }} {{ 'x{}y{}'.format(1, 'z') }} {{ '{a}-{0}'.format('p', a='q') }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }}")
    add("str_split_think", "{% set c = '<think>\\nr\\n</think>\\n\\nans' %}{{ c.split('</think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}")
    add("dict_methods", "{{ d.keys() | list }} {{ d.values() | list | length }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {% for k, v in d.items() %}{{ k }}{% endfor %}")
    add("list_methods", "{{ items.index(2) }} {{ [1, 1, 2].count(1) }}")
    # globals
    add("g_range", "{{ range(3) | list }} {{ range(1, 4) | list }} {{ range(10, 0, -3) | list }} {{ range(0) | list }}")
    add("g_dict", "{{ dict(a=1, b=2) }} {{ dict([('x', 1)]) }}")
    add("g_strftime", "{{ strftime_now('%Y-%m-%d %H:%M %A %b') }}")
    # errors (expected: the reference raises)
    add("err_raise_exception", "{{ raise_exception('custom failure message') }}")
    add("err_undefined_attr", "{{ nothing.attr }}")
    add("err_undefined_call", "{{ nothing() }}")
    add("err_str_plus_int", "{{ 'a' + 1 }}")
    add("err_div_zero", "{{ 1 / 0 }}")
    add("err_tojson_undefined", "{{ nothing | tojson }}")
    add("err_unknown_filter", "{{ 1 | nosuchfilter }}")
    add("err_unknown_test", "{{ 1 is nosuchtest }}")
    add("err_unclosed_if", "{% if true %}x")
    add("err_unclosed_var", "{{ 'x' ")
    add("err_bad_token", "{{ 1 $ 2 }}")
    add("err_unknown_tag", "{% frobnicate %}")
    add("err_list_append", "{% set l = [] %}{{ l.append(1) }}")
    add("err_namespace_underscore", "{% set ns = namespace() %}{% set ns._x = 1 %}")
    add("err_set_attr_non_namespace", "{% set d.x = 1 %}")
    add("err_range_too_big", "{{ range(1000000) | length }}")
    add("err_items_non_mapping", "{{ 5 | items | list }}")
    add("err_compare_types", "{{ 1 < 'a' }}")
    add("err_macro_too_many_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}")
    add("err_unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}")
    add("err_slice_step_zero", "{{ items[::0] }}")
    add("err_unclosed_comment", "{# never closed")
    add("err_unclosed_string", "{{ 'abc }}")
    add("err_endfor_mismatch", "{% for x in items %}{% endif %}")
    return C


def render_case(tpl, context):
    try:
        return {"expected": _compile_jinja_template(tpl).render(**context)}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": f"syntax: {e}"}
    except Exception as e:  # noqa: BLE001 - any failure of the reference is the expectation
        return {"error": f"{type(e).__name__}: {e}"}


def dump_line(obj):
    return json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20260314)

    summary = []
    for tset in template_sets(args.shared):
        d = os.path.join(OUT, tset["name"])
        os.makedirs(d, exist_ok=True)
        cfg = dict(tset["tokenizer_config"])
        if tset["jinja"] is not None:
            template = tset["jinja"]
            with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8", newline="") as f:
                f.write(template)
            cfg.pop("chat_template", None)
        else:
            template = cfg["chat_template"]
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)
            f.write("\n")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": tset["model_type"]}, f, indent=2)
            f.write("\n")
        n_ok = n_err = 0
        with open(os.path.join(d, "conversations.jsonl"), "w", encoding="utf-8") as f:
            for cid, msgs, opts in variants(tset, rng):
                rec = {"id": cid, "messages": msgs, "options": opts}
                try:
                    rec["expected"] = reference_render(tset, template, msgs, opts)
                    n_ok += 1
                except Exception as e:  # noqa: BLE001
                    rec["error"] = f"{type(e).__name__}: {e}"
                    n_err += 1
                f.write(dump_line(rec))
        summary.append((tset["name"], n_ok, n_err, tset["source"]))
        print(f"{tset['name']}: {n_ok} rendered, {n_err} reference errors")

    with open(os.path.join(OUT, "jinja_cases.jsonl"), "w", encoding="utf-8") as f:
        cases = jinja_cases()
        f.write(dump_line({"name": "default_context", "context": JINJA_CONTEXT}))
        for name, tpl, context in cases:
            rec = {"name": name, "template": tpl}
            if context is not None:
                rec["context"] = context
            f.write(dump_line({**rec, **render_case(tpl, JINJA_CONTEXT if context is None else context)}))

    pins = "\n".join(f"{p}=={metadata.version(p)}" for p in ("transformers", "jinja2", "markupsafe", "mlx-lm", "mlx-vlm"))
    rows = "\n".join(f"| `{n}/` | {ok} | {err} | {src} |" for n, ok, err, src in summary)
    readme = f"""# Chat template fixtures

Generated by `tools/reference/gen_templates.py` (see its docstring for the exact pipeline);
expected prompts are transformers' own Jinja2 renders. Do not edit by hand: rerun the script.

| folder | conversations rendered | reference errors (expected to fail) | template source |
|---|---|---|---|
{rows}

`jinja_cases.jsonl`: {len(jinja_cases())} language cases (template + expected output or error; the
first line holds the context every case without its own uses), rendered in the same Jinja2
environment.

strftime_now is pinned to {NOW} (2026-03-14 12:00:00 UTC) through the `now` option.

Versions:

```
python=={platform.python_version()}
{pins}
llama-cpp-python=={LCP_VERSION} (sdist sha256 {LCP_SHA256}; templates only)
```
"""
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(readme)


if __name__ == "__main__":
    main()
