"""Write tests/fixtures/json/: a JSON document with the cases of Python's json.dumps
formatting that matter for config files (nesting, empty containers, escapes, non-ASCII,
astral characters, floats), and what json.dumps(obj, indent=2) gives for it. The C side
(json_print_python) must reproduce the second file byte for byte from the first.

Usage: tools/reference/.venv/bin/python tools/reference/gen_json.py
"""
import json
import os

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "json")

doc = {
    "model_type": "qwen3_5",
    "architectures": ["Qwen3_5ForConditionalGeneration"],
    "image_token_id": 248056,
    "negative": -3,
    "big": 9007199254740991,
    "rms_norm_eps": 1e-06,
    "initializer_range": 0.02,
    "third": 1 / 3,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "small_fixed": 0.0001,
    "mantissa": 1.5e-05,
    "flags": [True, False, None],
    "empty_list": [],
    "empty_obj": {},
    "nested": {"deeper": {"list": [1, [2, [3, {}]], {"a": "b"}]}},
    "text": "quote \" backslash \\ slash / newline \n tab \t cr \r bs \b ff \f esc \u001b del \u007f",
    "unicode": "caf\u00e9 \u4e2d\u6587 \U0001F600 \u2028",
    "mrope_section": [11, 11, 10],
}

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "sample.json"), "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False)
with open(os.path.join(OUT, "sample.indent2.json"), "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
print("wrote", OUT)
