"""Structured output, tool calls and log-probabilities through `optiq serve`,
driven by the official SDKs (cases registered with test_sdk.py's `case`).

- 50 response_format json_schema requests of varied schemas (nested objects,
  arrays, enums, numbers, required fields, nullable and anyOf values), each
  reply parsed and validated with the `jsonschema` package; 35 on the
  byte-level Qwen3.5 fixture, 15 on the SentencePiece Gemma-4 fixture.
- A tool-call round trip (forced call -> tool result -> answer) for both
  families, non-stream and stream, with the openai and the anthropic SDKs.
- logprobs of /v1/completions equal the log-softmax of `optiq dump`'s logits
  for the same tokens (same numeric path, see LOGPROB_TOL).
"""
import json
import math
import os
import random
import struct
import subprocess
import tempfile

import anthropic
import jsonschema
import openai

# The server decodes one token at a time after a prefill of the prompt,
# `optiq dump` runs the whole sequence in one call: the same arithmetic
# grouped differently, so logits agree to rounding (seen: 5.6e-7), not bit
# for bit. (tests/test_grammar.c checks every step of a generation against
# optiq_dump of the same ids at 1e-4.)
LOGPROB_TOL = 2e-3

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer"},
        "units": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "units"],
}
OAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Local time", "parameters": {"type": "object", "properties": {}}}}]
ANT_TOOLS = [{"name": "get_weather", "description": "Current weather of a city", "input_schema": WEATHER}]


def gen_value_schema(rng, depth):
    kinds = ["string", "integer", "number", "boolean", "enum", "nullable", "anyof", "const"]
    if depth < 2:
        kinds += ["object", "array", "array"]
    k = rng.choice(kinds)
    if k == "string":
        s = {"type": "string", "maxLength": rng.randint(1, 8)}
        if rng.random() < 0.3:
            s["minLength"] = 1
        return s
    if k in ("integer", "number", "boolean"):
        return {"type": k}
    if k == "enum":
        pool = ["red", "green", "blue", "x", "a b", 1, 2, 12, 3.5, True, None]
        return {"enum": rng.sample(pool, rng.randint(1, 4))}
    if k == "nullable":
        return {"type": [rng.choice(["string", "integer", "number"]), "null"], "maxLength": 6}
    if k == "anyof":
        return {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 5},
                          {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}]}
    if k == "const":
        return {"const": rng.choice(["fixed", 7, False])}
    if k == "array":
        lo = rng.randint(0, 2)
        return {"type": "array", "items": gen_value_schema(rng, depth + 1), "minItems": lo,
                "maxItems": lo + rng.randint(0, 2)}
    return gen_object_schema(rng, depth + 1)


def gen_object_schema(rng, depth=0):
    n = rng.randint(1, 4 if depth else 5)
    names = rng.sample(["id", "name", "tags", "score", "items", "meta", "ok", "kind", "size", "note"], n)
    props = {nm: gen_value_schema(rng, depth) for nm in names}
    required = [nm for nm in names if rng.random() < 0.6]
    s = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        s["required"] = required
    return s


def read_logits(path):
    """The "logits" tensor (F32 [n, vocab]) of a safetensors file, as lists."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header["logits"]
        rows, vocab = info["shape"]
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        data = f.read(end - start)
    flat = struct.unpack(f"<{rows * vocab}f", data)
    return [flat[r * vocab:(r + 1) * vocab] for r in range(rows)]


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def register(case, expect, a):
    """Adds the cases; a: the parsed command line of test_sdk.py."""
    q = openai.OpenAI(base_url=a.qwen_tools_url + "/v1", api_key="x", max_retries=0, timeout=300)
    g = openai.OpenAI(base_url=a.gemma_url + "/v1", api_key="x", max_retries=0, timeout=300)
    dense = openai.OpenAI(base_url=a.dense_url + "/v1", api_key="x", max_retries=0, timeout=300)
    families = {"qwen3.5": (q, anthropic.Anthropic(base_url=a.qwen_tools_url, api_key="x", max_retries=0, timeout=300)),
                "gemma-4": (g, anthropic.Anthropic(base_url=a.gemma_url, api_key="x", max_retries=0, timeout=300))}

    @case("json_schema: 50 varied schemas give documents that parse and validate (jsonschema)")
    def _():
        rng = random.Random(20261208)
        bad = []
        for i in range(50):
            schema = gen_object_schema(rng)
            client = dense if i < 35 else g
            r = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"Describe item {i} as JSON."}],
                temperature=0 if i % 2 == 0 else 0.8, seed=i, max_tokens=480,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}})
            c = r.choices[0]
            try:
                doc = json.loads(c.message.content)
                jsonschema.Draft202012Validator(schema).validate(doc)
                if c.finish_reason != "stop":
                    raise ValueError(f"finish_reason {c.finish_reason}")
            except Exception as e:  # noqa: BLE001 - collected, reported together
                bad.append(f"#{i} {type(e).__name__}: {str(e)[:120]} schema={json.dumps(schema)[:200]} "
                           f"doc={c.message.content[:200]!r}")
        expect(not bad, f"{len(bad)} of 50 failed: " + " | ".join(bad[:3]))

    @case("json_object: a JSON object on both vocabularies, stream equals non-stream")
    def _():
        for client in (dense, g):
            kw = dict(model="m", messages=[{"role": "user", "content": "An object please"}], temperature=0,
                      max_tokens=300, response_format={"type": "json_object"})
            r = client.chat.completions.create(**kw)
            doc = json.loads(r.choices[0].message.content)
            expect(isinstance(doc, dict), doc)
            s = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(stream=True, **kw)
                        if ch.choices)
            expect(s == r.choices[0].message.content, (s, r.choices[0].message.content))

    @case("json_schema: a schema the grammar cannot enforce -> BadRequestError naming the keyword")
    def _():
        try:
            dense.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], max_tokens=8,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "p", "schema": {"type": "string", "pattern": "^a+$"}}})
        except openai.BadRequestError as e:
            expect("pattern" in str(e), str(e))
            return
        raise AssertionError("no error")

    for fam, (oc, ac) in families.items():
        def oai_round_trip(oc=oc, fam=fam):
            msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
            r1 = oc.chat.completions.create(model="m", messages=msgs, tools=OAI_TOOLS, temperature=0,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                            max_tokens=400)
            c = r1.choices[0]
            expect(c.finish_reason == "tool_calls", f"{fam}: finish_reason {c.finish_reason}: {c.message}")
            calls = c.message.tool_calls
            expect(calls and calls[0].function.name == "get_weather", calls)
            args = json.loads(calls[0].function.arguments)
            jsonschema.validate(args, WEATHER)
            # the same request streamed: the same call, as tool_calls deltas
            acc = {}
            finish = None
            for ch in oc.chat.completions.create(model="m", messages=msgs, tools=OAI_TOOLS, temperature=0,
                                                 tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                                 max_tokens=400, stream=True):
                if not ch.choices:
                    continue
                d = ch.choices[0].delta
                for tc in d.tool_calls or []:
                    e = acc.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    e["id"] += tc.id or ""
                    e["name"] += (tc.function.name or "") if tc.function else ""
                    e["arguments"] += (tc.function.arguments or "") if tc.function else ""
                finish = ch.choices[0].finish_reason or finish
            expect(finish == "tool_calls", f"stream finish_reason {finish}")
            expect(len(acc) == 1 and acc[0]["name"] == "get_weather" and
                   json.loads(acc[0]["arguments"]) == args, (acc, args))
            # the result goes back through the template; an answer follows
            expect(calls[0].id.startswith("call_"), calls[0].id)
            msgs2 = msgs + [c.message.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temperature": 21}'}]
            r2 = oc.chat.completions.create(model="m", messages=msgs2, tools=OAI_TOOLS, temperature=0, max_tokens=8)
            expect(r2.usage.prompt_tokens > r1.usage.prompt_tokens + 10,
                   f"the tool result did not reach the prompt: {r2.usage.prompt_tokens} vs {r1.usage.prompt_tokens}")
            expect(r2.choices[0].finish_reason in ("stop", "length", "tool_calls"), r2.choices[0].finish_reason)
            expect(r2.usage.completion_tokens > 0, r2.usage)
            s2 = oc.chat.completions.create(model="m", messages=msgs2, tools=OAI_TOOLS, temperature=0, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True})
            last = list(s2)[-1]
            expect(last.usage and last.usage.prompt_tokens == r2.usage.prompt_tokens, last.usage)

        case(f"openai {fam}: forced tool call -> result -> answer (non-stream and stream)")(oai_round_trip)

        def ant_round_trip(ac=ac, fam=fam):
            msgs = [{"role": "user", "content": "What is the weather in Oslo?"}]
            r1 = ac.messages.create(model="m", max_tokens=400, messages=msgs, tools=ANT_TOOLS,
                                    tool_choice={"type": "any"}, extra_body={"temperature": 0})
            expect(r1.stop_reason == "tool_use", f"{fam}: stop_reason {r1.stop_reason}: {r1.content}")
            uses = [b for b in r1.content if b.type == "tool_use"]
            expect(len(uses) == 1 and uses[0].name == "get_weather", r1.content)
            expect(uses[0].id.startswith("toolu_"), uses[0].id)
            jsonschema.validate(uses[0].input, WEATHER)
            with ac.messages.stream(model="m", max_tokens=400, messages=msgs, tools=ANT_TOOLS,
                                    tool_choice={"type": "any"}, extra_body={"temperature": 0}) as s:
                final = s.get_final_message()
            su = [b for b in final.content if b.type == "tool_use"]
            expect(final.stop_reason == "tool_use" and len(su) == 1 and su[0].input == uses[0].input,
                   (final.stop_reason, final.content, uses[0].input))
            msgs2 = msgs + [{"role": "assistant", "content": [b.model_dump() for b in r1.content]},
                            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                          "content": "21 degrees and sunny"}]}]
            r2 = ac.messages.create(model="m", max_tokens=8, messages=msgs2, tools=ANT_TOOLS,
                                    extra_body={"temperature": 0})
            expect(r2.usage.input_tokens > r1.usage.input_tokens + 5, (r2.usage, r1.usage))
            expect(r2.content, r2)
            with ac.messages.stream(model="m", max_tokens=8, messages=msgs2, tools=ANT_TOOLS,
                                    extra_body={"temperature": 0}) as s:
                f2 = s.get_final_message()
            expect(f2.usage.output_tokens == r2.usage.output_tokens, (f2.usage, r2.usage))

        case(f"anthropic {fam}: forced tool_use -> tool_result -> answer (non-stream and stream)")(ant_round_trip)

    @case("tool_choice none: tools not offered (prompt as without tools)")
    def _():
        msgs = [{"role": "user", "content": "hi"}]
        a1 = q.chat.completions.create(model="m", messages=msgs, max_tokens=1, temperature=0)
        a2 = q.chat.completions.create(model="m", messages=msgs, max_tokens=1, temperature=0, tools=OAI_TOOLS,
                                       tool_choice="none")
        a3 = q.chat.completions.create(model="m", messages=msgs, max_tokens=1, temperature=0, tools=OAI_TOOLS)
        expect(a1.usage.prompt_tokens == a2.usage.prompt_tokens < a3.usage.prompt_tokens,
               (a1.usage.prompt_tokens, a2.usage.prompt_tokens, a3.usage.prompt_tokens))

    @case("tool_choice naming an unknown function -> BadRequestError")
    def _():
        try:
            q.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4,
                                      tools=OAI_TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
        except openai.BadRequestError as e:
            expect("nope" in str(e), str(e))
            return
        raise AssertionError("no error")

    @case("logprobs: completions equal the log-softmax of optiq dump's logits (same tokens)")
    def _():
        prompt = "The capital of France is"
        r = dense.completions.create(model="m", prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
        lp = r.choices[0].logprobs
        expect(lp and len(lp.token_logprobs) == r.usage.completion_tokens, lp)
        text = prompt + r.choices[0].text
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "d.safetensors")
            js = subprocess.run([a.optiq, "dump", "--model", a.dense_model, "--prompt", text, "--no-chat-template",
                                 "--fast", "--out", out, "--json"], capture_output=True, text=True, timeout=120,
                                check=True)
            tokens = json.loads(js.stdout)["tokens"]
            rows = read_logits(out)
        n_prompt = r.usage.prompt_tokens
        # The dump re-tokenizes prompt + completion. Greedy decoding picks each
        # row's argmax, so while the dump's next token is that argmax the two
        # runs saw the same tokens (step 0 always does): compare those steps.
        gen_ids = tokens[n_prompt:]
        checked, worst = 0, 0.0
        for k, got in enumerate(lp.token_logprobs):
            ref = log_softmax(rows[n_prompt - 1 + k])
            best = max(range(len(ref)), key=lambda i: ref[i])
            if k > 0 and (k >= len(gen_ids) or gen_ids[k] != best):
                break
            expect(abs(got - ref[best]) <= LOGPROB_TOL, f"step {k}: server {got} vs dump {ref[best]}")
            top = sorted(lp.top_logprobs[k].values(), reverse=True)
            want = sorted(ref, reverse=True)[:len(top)]
            expect(all(abs(x - y) <= LOGPROB_TOL for x, y in zip(top, want)), (top, want))
            worst = max(worst, abs(got - ref[best]))
            checked += 1
        expect(checked >= 1, "no step compared")
        print(f"#    logprobs vs dump: {checked} of {len(lp.token_logprobs)} steps compared, "
              f"largest difference {worst:.2e}", flush=True)

    @case("logprobs: chat top_logprobs, stream entries equal non-stream")
    def _():
        kw = dict(model="m", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0,
                  logprobs=True, top_logprobs=3, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        r = dense.chat.completions.create(**kw)
        content = r.choices[0].logprobs.content
        expect(len(content) == r.usage.completion_tokens, (len(content), r.usage))
        for e in content:
            expect(len(e.top_logprobs) == 3 and e.logprob <= 0, e)
            expect(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob, e)
            # greedy: the chosen token is the most likely one
            expect(abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6, e)
        streamed = []
        for ch in dense.chat.completions.create(stream=True, **kw):
            if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
                streamed += ch.choices[0].logprobs.content
        expect([(e.token, round(e.logprob, 5)) for e in streamed] ==
               [(e.token, round(e.logprob, 5)) for e in content], (streamed, content))

    @case("logprobs: a streamed forced tool call still carries one entry per token")
    def _():
        kw = dict(model="m", messages=[{"role": "user", "content": "Weather?"}], max_tokens=400, temperature=0,
                  tools=OAI_TOOLS, tool_choice="required", logprobs=True)
        r = q.chat.completions.create(**kw)
        n = 0
        for ch in q.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
            if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
                n += len(ch.choices[0].logprobs.content)
        expect(n == r.usage.completion_tokens == len(r.choices[0].logprobs.content),
               (n, r.usage.completion_tokens))
