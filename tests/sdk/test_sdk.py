"""`optiq serve` driven by the official openai and anthropic Python SDKs.

Usage: test_sdk.py --vl-url URL --dense-url URL --optiq PATH --vl-model DIR

URL is a server's root (http://127.0.0.1:PORT). The structured-output, tool
and logprobs cases are in structured.py. Prints "ok   name" or
"FAIL name: why" per case and a closing "N passed, N failed"; exits 1 when a
case failed. Only the standard library besides the two SDKs and jsonschema.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import traceback
import urllib.error
import urllib.request

import anthropic
import openai

import structured

PROMPT = "Hello there"
passed = 0
failed = 0


def case(name):
    """Runs the decorated function once as a test case: an exception fails it."""
    def run(fn):
        global passed, failed
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            why = f"{type(e).__name__}: {e}".replace("\n", " ")
            if not isinstance(e, AssertionError):
                why += " @ " + traceback.extract_tb(e.__traceback__)[-1].line
            print(f"FAIL {name}: {why[:600]}", flush=True)
            failed += 1
        else:
            print(f"ok   {name}", flush=True)
            passed += 1
        return fn
    return run


def expect(cond, why):
    if not cond:
        raise AssertionError(why)


def data_url(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def b64(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def raw_post(url, body):
    """POSTs JSON with urllib (no SDK); returns (status, parsed body)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def full_text(message):
    """reasoning_content + content of an OpenAI chat message (either may be absent)."""
    extra = message.model_extra or {}
    reasoning = getattr(message, "reasoning_content", None) or extra.get("reasoning_content") or ""
    return reasoning + (message.content or "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vl-url", required=True)
    ap.add_argument("--dense-url", required=True)
    ap.add_argument("--optiq", required=True)
    ap.add_argument("--vl-model", required=True)
    ap.add_argument("--image-url", required=True)  # a local server of the fixture's images
    ap.add_argument("--qwen-tools-url", required=True)  # Qwen3.5 fixture with room for the tools prompt
    ap.add_argument("--gemma-url", required=True)
    ap.add_argument("--dense-model", required=True)
    a = ap.parse_args()

    images = os.path.join(a.vl_model, "images")
    oai = openai.OpenAI(base_url=a.vl_url + "/v1", api_key="x", max_retries=0, timeout=120)
    oai_dense = openai.OpenAI(base_url=a.dense_url + "/v1", api_key="x", max_retries=0, timeout=120)
    ant = anthropic.Anthropic(base_url=a.vl_url, api_key="x", max_retries=0, timeout=120)
    model = "qwen35-vl-mixed"
    user = [{"role": "user", "content": PROMPT}]
    state = {}

    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}", flush=True)

    # ---------------- OpenAI ----------------
    @case("openai: chat non-stream greedy (text, finish_reason, usage)")
    def _():
        r = oai.chat.completions.create(model=model, messages=user, temperature=0, max_tokens=16)
        c = r.choices[0]
        text = full_text(c.message)
        state["chat"] = r
        state["chat_text"] = text
        expect(text, "empty text")
        expect(r.object == "chat.completion", r.object)
        expect(c.finish_reason in ("length", "stop"), c.finish_reason)
        u = r.usage
        expect(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16, u)
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, u)
        expect(c.finish_reason != "length" or u.completion_tokens == 16, (c.finish_reason, u))

    @case("openai: non-stream text equals optiq generate --json")
    def _():
        out = subprocess.run([a.optiq, "generate", "--model", a.vl_model, "--prompt", PROMPT,
                              "--max-tokens", "16", "--json"],
                             capture_output=True, text=True, timeout=120, check=True)
        ref = json.loads(out.stdout)
        want = (ref["reasoning"] or "") + ref["text"]  # generate --json splits as the server does
        expect(state["chat_text"] == want, f"{state['chat_text']!r} vs {want!r}")
        content = state["chat"].choices[0].message.content or ""
        expect(content == ref["text"], f"content {content!r} vs {ref['text']!r}")
        expect(state["chat"].usage.prompt_tokens == ref["prompt_tokens"],
               f"prompt_tokens {state['chat'].usage.prompt_tokens} vs {ref['prompt_tokens']}")

    @case("openai: streamed deltas concatenate to the non-stream text; usage in the last chunk")
    def _():
        chunks = list(oai.chat.completions.create(model=model, messages=user, temperature=0,
                                                  max_tokens=16, stream=True,
                                                  stream_options={"include_usage": True}))
        text = ""
        finish = None
        for ch in chunks:
            if ch.choices:
                text += full_text(ch.choices[0].delta)
                finish = ch.choices[0].finish_reason or finish
        expect(text == state["chat_text"], f"{text!r} vs {state['chat_text']!r}")
        expect(finish == state["chat"].choices[0].finish_reason, finish)
        last = chunks[-1]
        expect(last.usage is not None, "no usage in the last chunk")
        expect(last.usage.prompt_tokens == state["chat"].usage.prompt_tokens and
               last.usage.completion_tokens == state["chat"].usage.completion_tokens, last.usage)

    @case("openai: a prompt sharing 256+ tokens with an earlier one reports cached_tokens; reply as a fresh run")
    def _():
        shared = "Background: " + " ".join(f"item {i} is {'red' if i % 3 else 'blue'};" for i in range(40))
        msgs = lambda q: [{"role": "user", "content": shared + " " + q}]
        r1 = oai_dense.chat.completions.create(model="qwen35-dense-mixed", messages=msgs("Which items are blue?"),
                                               temperature=0, max_tokens=8)
        expect(r1.usage.prompt_tokens > 300, r1.usage)
        r2 = oai_dense.chat.completions.create(model="qwen35-dense-mixed", messages=msgs("Which items are red?"),
                                               temperature=0, max_tokens=8)
        d = r2.usage.prompt_tokens_details
        cached = d.cached_tokens if d is not None else 0
        # the shared text spans the first 256-token checkpoint of the Gated DeltaNet states
        expect(256 <= cached < r2.usage.prompt_tokens, r2.usage)
        out = subprocess.run([a.optiq, "generate", "--model", a.dense_model,
                              "--prompt", shared + " Which items are red?", "--max-tokens", "8", "--json"],
                             capture_output=True, text=True, timeout=120, check=True)
        ref = json.loads(out.stdout)
        got = full_text(r2.choices[0].message)
        expect(got == (ref["reasoning"] or "") + ref["text"], f"{got!r} vs {ref!r}")

    @case("openai: image data: URL -> prompt_tokens 53")
    def _():
        r = oai.chat.completions.create(model=model, temperature=0, max_tokens=4, messages=[
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(os.path.join(images, "img0.png"))}},
                {"type": "text", "text": "What is in the picture? Describe it."}]}])
        expect(r.usage.prompt_tokens == 53, r.usage)
        expect(r.usage.completion_tokens > 0, r.usage)

    @case("openai: image as an http URL (local server) -> prompt_tokens 53, same reply as the data: URL")
    def _():
        def ask(url):
            return oai.chat.completions.create(model=model, temperature=0, max_tokens=8, messages=[
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is in the picture? Describe it."}]}])
        r = ask(a.image_url + "/img0.png")
        d = ask(data_url(os.path.join(images, "img0.png")))
        expect(r.usage.prompt_tokens == 53, r.usage)
        expect(r.choices[0].message.content == d.choices[0].message.content,
               (r.choices[0].message.content, d.choices[0].message.content))

    @case("anthropic: image block with a url source (local server) -> input_tokens 53")
    def _():
        r = ant.messages.create(model=model, max_tokens=4, thinking={"type": "disabled"}, messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": a.image_url + "/img0.png"}},
                {"type": "text", "text": "What is in the picture? Describe it."}]}])
        expect(r.usage.input_tokens == 53, r.usage)

    @case("openai: http URL to a private address -> BadRequestError")
    def _():
        try:
            oai.chat.completions.create(model=model, max_tokens=4, messages=[
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}},
                    {"type": "text", "text": "hi"}]}])
            expect(False, "no error")
        except openai.BadRequestError as e:
            expect("private" in str(e), str(e))

    @case("openai: two images -> prompt_tokens 51")
    def _():
        r = oai.chat.completions.create(model=model, temperature=0, max_tokens=4, messages=[
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(os.path.join(images, "img1.png"))}},
                {"type": "image_url", "image_url": {"url": data_url(os.path.join(images, "img2.png"))}},
                {"type": "text", "text": "Compare the two pictures."}]}])
        expect(r.usage.prompt_tokens == 51, r.usage)

    nothink = {"chat_template_kwargs": {"enable_thinking": False}}

    @case("openai: thinking off -> plain content, no reasoning")
    def _():
        r = oai.chat.completions.create(model=model, messages=user, temperature=0, max_tokens=16,
                                        extra_body=nothink)
        m = r.choices[0].message
        extra = m.model_extra or {}
        expect(m.content, f"empty content: {m}")
        expect(not extra.get("reasoning_content"), f"reasoning with thinking off: {extra}")
        state["plain"] = m.content

    @case("openai: thinking on -> reasoning_content field, reasoning + content non-empty")
    def _():
        r = oai.chat.completions.create(model=model, messages=user, temperature=0, max_tokens=16,
                                        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        m = r.choices[0].message
        extra = m.model_extra or {}
        expect("reasoning_content" in extra, f"no reasoning_content field: {m}")
        expect((extra["reasoning_content"] or "") + (m.content or ""), "empty reasoning and content")
        # the prompt ends in an open <think>: the reply starts in reasoning
        expect(extra["reasoning_content"], f"empty reasoning_content: {m}")

    @case("openai: stop string cuts the answer before it (finish_reason stop)")
    def _():
        text = state["plain"]
        # a 2..3 character piece that first occurs after the start of the text
        stop = None
        for k in range(1, len(text) - 1):
            for n in (3, 2):
                piece = text[k:k + n]
                if len(piece) == n and piece.strip() and text.find(piece) == k:
                    stop = piece
                    break
            if stop:
                break
        expect(stop, f"no usable stop string in {text!r}")
        r = oai.chat.completions.create(model=model, messages=user, temperature=0, max_tokens=16,
                                        stop=[stop], extra_body=nothink)
        c = r.choices[0]
        want = text[:text.find(stop)]
        expect(c.finish_reason == "stop", f"finish_reason {c.finish_reason}")
        expect(c.message.content == want, f"{c.message.content!r} vs {want!r} (stop {stop!r})")

    @case("openai: completions endpoint")
    def _():
        r = oai.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                   temperature=0)
        expect(r.object == "text_completion", r.object)
        expect(r.choices[0].text, "empty text")
        expect(r.choices[0].finish_reason in ("length", "stop"), r.choices[0].finish_reason)
        expect(r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, r.usage)
        s = "".join(ch.choices[0].text for ch in oai.completions.create(
            model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)
            if ch.choices)
        expect(s == r.choices[0].text, f"stream {s!r} vs {r.choices[0].text!r}")

    @case("openai: models.list -> one model with the image modality")
    def _():
        models = list(oai.models.list())
        expect(len(models) == 1 and models[0].id == model, models)
        raw = oai.models.with_raw_response.list()
        data = json.loads(raw.text)["data"]
        expect("image" in data[0].get("input_modalities", []), data)

    @case("openai: temperature -1 -> BadRequestError")
    def _():
        try:
            oai.chat.completions.create(model=model, messages=user, temperature=-1, max_tokens=4)
        except openai.BadRequestError as e:
            expect(e.status_code == 400, e.status_code)
            return
        raise AssertionError("no error")

    @case("openai: n=2 -> BadRequestError")
    def _():
        try:
            oai.chat.completions.create(model=model, messages=user, n=2, max_tokens=4)
        except openai.BadRequestError:
            return
        raise AssertionError("no error")

    @case("openai: image to the text-only server -> BadRequestError naming the vision sidecar")
    def _():
        try:
            oai_dense.chat.completions.create(model="qwen35-dense-mixed", max_tokens=4, messages=[
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(os.path.join(images, "img0.png"))}},
                    {"type": "text", "text": "What is in the picture?"}]}])
        except openai.BadRequestError as e:
            expect("vision sidecar" in str(e), str(e))
            return
        raise AssertionError("no error")

    # ---------------- Anthropic ----------------
    system = "You are a helpful assistant."
    amsg = [{"role": "user", "content": PROMPT}]
    off = {"type": "disabled"}
    # this SDK generation has no temperature parameter on messages.create; the
    # server still reads it from the body
    greedy = {"temperature": 0}

    @case("anthropic: messages.create non-stream (system + user)")
    def _():
        r = ant.messages.create(model=model, system=system, messages=amsg, max_tokens=16,
                                thinking=off, extra_body=greedy)
        expect(r.type == "message" and r.role == "assistant", r)
        expect(r.content and r.content[0].type == "text" and r.content[0].text, r.content)
        expect(r.stop_reason in ("max_tokens", "end_turn", "stop_sequence"), r.stop_reason)
        expect(r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 16, r.usage)
        expect(r.stop_reason != "max_tokens" or r.usage.output_tokens == 16, (r.stop_reason, r.usage))
        state["msg_text"] = "".join(b.text for b in r.content if b.type == "text")

    @case("anthropic: messages.stream get_final_message equals the non-stream text")
    def _():
        with ant.messages.stream(model=model, system=system, messages=amsg, max_tokens=16,
                                 thinking=off, extra_body=greedy) as s:
            streamed = "".join(s.text_stream)
            m = s.get_final_message()
        text = "".join(b.text for b in m.content if b.type == "text")
        expect(text == state["msg_text"], f"{text!r} vs {state['msg_text']!r}")
        expect(streamed == text, f"text_stream {streamed!r} vs {text!r}")
        expect(m.stop_reason is not None and m.usage.output_tokens > 0, (m.stop_reason, m.usage))

    @case("anthropic: thinking enabled -> a thinking block")
    def _():
        r = ant.messages.create(model=model, messages=amsg, max_tokens=16, extra_body=greedy,
                                thinking={"type": "enabled", "budget_tokens": 1024})
        expect(r.content and r.content[0].type == "thinking" and r.content[0].thinking, r.content)

    @case("anthropic: base64 image block")
    def _():
        r = ant.messages.create(model=model, max_tokens=4, extra_body=greedy, messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": b64(os.path.join(images, "img0.png"))}},
                {"type": "text", "text": "What is in the picture? Describe it."}]}])
        expect(r.usage.input_tokens == 53, r.usage)
        expect(r.content, r)

    @case("anthropic: messages.count_tokens")
    def _():
        r = ant.messages.count_tokens(model=model, system=system, messages=amsg)
        expect(r.input_tokens > 0, r)

    @case("anthropic: temperature 5 -> BadRequestError")
    def _():
        try:
            ant.messages.create(model=model, messages=amsg, max_tokens=4,
                                extra_body={"temperature": 5})
        except anthropic.BadRequestError as e:
            expect(e.status_code == 400, e.status_code)
            return
        raise AssertionError("no error")

    @case("anthropic: missing max_tokens -> 400 invalid_request_error (raw HTTP)")
    def _():
        # the SDK requires max_tokens client-side, so the request goes out without it
        code, body = raw_post(a.vl_url + "/v1/messages", {"model": model, "messages": amsg})
        expect(code == 400, f"{code} {body}")
        expect(body.get("type") == "error" and body["error"]["type"] == "invalid_request_error", body)

    @case("anthropic: max_tokens null (extra_body) -> BadRequestError")
    def _():
        # through the SDK: its required max_tokens replaced by null on the wire
        try:
            ant.messages.create(model=model, messages=amsg, max_tokens=4,
                                extra_body={"max_tokens": None})
        except anthropic.BadRequestError:
            return
        raise AssertionError("no error")

    # ---------------- structured output, tools, logprobs ----------------
    structured.register(case, expect, a)

    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
