"""OptiqEngine against `optiq generate --json` on the tiny fixtures: text
prompts, messages with images, every image form, streaming, chat, sampling
options, callbacks and errors."""
import base64
import ctypes
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from conftest import (GEMMA_VL, IMAGES, QWEN_TEXT, QWEN_VL, assert_same, cli_generate, run_cli)

IMG0 = os.path.join(IMAGES, "img0.png")
IMG1 = os.path.join(IMAGES, "img1.png")
N = "12"


def test_versions(optiq_mod):
    assert optiq_mod.library_version() == optiq_mod.__version__
    assert run_cli("--version").stdout.strip() == "optiq " + optiq_mod.__version__
    assert optiq_mod.Engine is optiq_mod.OptiqEngine
    from optiq.runtime.engine import OptiqEngine

    assert OptiqEngine is optiq_mod.OptiqEngine


def test_library_is_called_without_the_gil(optiq_mod):
    # ctypes.CDLL (not PyDLL) drops the GIL for the duration of every foreign call
    from optiq import _native

    lib = _native.lib()
    assert type(lib) is ctypes.CDLL and lib._func_flags_ & ctypes._FUNCFLAG_PYTHONAPI == 0


def test_struct_layouts_are_checked(optiq_mod):
    from optiq import _native

    lib = _native.lib()
    assert lib.optiq_struct_size(b"no_such_struct") == 0
    for name, cls in _native.STRUCTS.items():
        assert lib.optiq_struct_size(name.encode()) == ctypes.sizeof(cls), name

    class Short(ctypes.Structure):
        _fields_ = [("n_threads", ctypes.c_int)]

    with pytest.raises(optiq_mod.OptiqError) as e:
        _native.check_layout(lib, "liboptiq.so", {"optiq_engine_params": Short})
    assert "optiq_engine_params" in str(e.value) and "different versions" in str(e.value)


def test_engine_params(optiq_mod):
    with optiq_mod.Engine.load(QWEN_TEXT, context=64, n_threads=1, exact=True) as eng:
        assert eng.context_length == 64
        r = eng.generate("Hello", max_tokens=6)
        assert_same(r, cli_generate(QWEN_TEXT, "Hello", "--max-tokens", "6", "--ctx", "64", "--threads", "1", "--exact"))
        with pytest.raises(optiq_mod.OptiqError) as e:
            eng.generate("word " * 80, max_tokens=2)
        assert e.value.kind == "context"
    with pytest.raises(TypeError):
        optiq_mod.Engine.load(QWEN_TEXT, no_such_param=1)


def test_engine_facts(qwen, gemma, qwen_text):
    assert qwen.model_type == "qwen3_5" and qwen.has_vision and qwen.has_chat_template
    assert gemma.model_type.startswith("gemma4") and gemma.has_vision
    assert not qwen_text.has_vision
    assert qwen.context_length > 0 and qwen.vocab_size > 0


@pytest.mark.parametrize("model", ["qwen", "gemma"])
def test_text_prompt_equals_cli(model, request):
    eng = request.getfixturevalue(model)
    path = QWEN_VL if model == "qwen" else GEMMA_VL
    r = eng.generate("Hello, who are you?", max_tokens=int(N))
    assert_same(r, cli_generate(path, "Hello, who are you?", "--max-tokens", N))
    assert r.generation_tokens == len(r.tokens) and r.prefill_seconds >= 0 and r.decode_seconds >= 0
    assert set(r.timings) == {"prefill_seconds", "decode_seconds", "prefill_tokens_per_second", "decode_tokens_per_second"}


def test_system_and_sampling_equal_cli(qwen):
    r = qwen.generate("Tell me a story", system="You are terse.", max_tokens=16, temperature=0.8, top_p=0.9,
                      top_k=40, min_p=0.05, repetition_penalty=1.1, seed=7)
    ref = cli_generate(QWEN_VL, "Tell me a story", "--system", "You are terse.", "--max-tokens", "16", "--temp", "0.8",
                       "--top-p", "0.9", "--top-k", "40", "--min-p", "0.05", "--repetition-penalty", "1.1", "--seed", "7")
    assert_same(r, ref)
    greedy = qwen.generate("Tell me a story", system="You are terse.", max_tokens=16)
    assert greedy.tokens != r.tokens  # the sampling options reached the sampler
    assert qwen.generate("Tell me a story", system="You are terse.", max_tokens=16, temp=0.8, top_p=0.9, top_k=40,
                         min_p=0.05, repetition_penalty=1.1, seed=7).tokens == r.tokens


def test_stop_and_ignore_eos_equal_cli(gemma):
    free = gemma.generate("Count", max_tokens=24, ignore_eos=True)
    ref = cli_generate(GEMMA_VL, "Count", "--max-tokens", "24", "--ignore-eos")
    assert_same(free, ref)
    # a stop string taken from the middle of the free-running answer
    text = free.raw_text
    assert len(text) > 6
    stop = text[len(text) // 2: len(text) // 2 + 2]
    r = gemma.generate("Count", max_tokens=24, ignore_eos=True, stop=[stop])
    assert_same(r, cli_generate(GEMMA_VL, "Count", "--max-tokens", "24", "--ignore-eos", "--stop", stop))
    assert r.finish_reason == "stop" and stop not in r.raw_text


def test_no_chat_template_equals_cli(qwen):
    r = qwen.generate("plain text prompt", use_chat_template=False, max_tokens=int(N))
    assert_same(r, cli_generate(QWEN_VL, "plain text prompt", "--no-chat-template", "--max-tokens", N))
    ids = qwen.tokenize("plain text prompt")
    assert qwen.generate(ids, max_tokens=int(N)).tokens == r.tokens  # token ids as the prompt


def test_template_kwargs_equal_cli(qwen):
    r = qwen.generate("Hello", enable_thinking=False, max_tokens=int(N))
    ref = cli_generate(QWEN_VL, "Hello", "--chat-template-kwargs", '{"enable_thinking": false}', "--max-tokens", N)
    assert_same(r, ref)
    r2 = qwen.generate("Hello", chat_template_kwargs={"enable_thinking": False}, max_tokens=int(N))
    assert r2.tokens == r.tokens
    with_thinking = qwen.generate("Hello", max_tokens=int(N))
    assert with_thinking.reasoning is not None and r.reasoning is None  # the prompt opened the thinking block


@pytest.mark.parametrize("model", ["qwen", "gemma"])
def test_messages_with_image_equal_cli(model, request):
    eng = request.getfixturevalue(model)
    path = QWEN_VL if model == "qwen" else GEMMA_VL
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMG0}},
                                         {"type": "text", "text": "What is in this image?"}]}]
    r = eng.generate(messages=msgs, max_tokens=int(N))
    ref = cli_generate(path, "What is in this image?", "--image", IMG0, "--max-tokens", N)
    assert_same(r, ref)
    assert r.prompt_tokens > len(eng.tokenize("What is in this image?")) + 8  # the image was expanded
    # the prompt form builds the same turn
    assert_same(eng.generate("What is in this image?", images=[IMG0], max_tokens=int(N)), ref)


def test_two_images_equal_cli(qwen):
    r = qwen.generate("Compare", images=[IMG0, IMG1], max_tokens=int(N))
    assert_same(r, cli_generate(QWEN_VL, "Compare", "--image", IMG0, "--image", IMG1, "--max-tokens", N))
    swapped = qwen.generate("Compare", images=[IMG1, IMG0], max_tokens=int(N))
    assert_same(swapped, cli_generate(QWEN_VL, "Compare", "--image", IMG1, "--image", IMG0, "--max-tokens", N))


def test_gemma_image_budget_equals_cli(gemma):
    r = gemma.generate("Describe", images=[IMG1], image_tokens=70, max_tokens=int(N))
    ref = cli_generate(GEMMA_VL, "Describe", "--image", IMG1, "--image-tokens", "70", "--max-tokens", N)
    assert_same(r, ref)
    assert gemma.image_tokens(IMG1, image_tokens=70) < gemma.image_tokens(IMG1, image_tokens=280)


def test_every_image_form_gives_the_same_tokens(qwen, image_server):
    base = qwen.generate("Describe", images=[IMG0], max_tokens=int(N))
    raw = open(IMG0, "rb").read()
    data_url = "data:image/png;base64," + base64.b64encode(raw).decode()
    forms = {
        "pathlib": pathlib.Path(IMG0),
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "data URL": data_url,
        "file URL": pathlib.Path(IMG0).as_uri(),
        "http URL": image_server + "/img0.png",
    }
    try:
        from PIL import Image

        forms["PIL"] = Image.open(IMG0)
    except ImportError:
        pass
    for name, img in forms.items():
        r = qwen.generate("Describe", images=[img], max_tokens=int(N))
        assert r.tokens == base.tokens and r.prompt_tokens == base.prompt_tokens, name
    # in messages: image_url with a data URL / http URL, "image" parts holding bytes or a PIL image
    for src in (data_url, image_server + "/img0.png"):
        msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": src}},
                                             {"type": "text", "text": "Describe"}]}]
        assert qwen.generate(messages=msgs, max_tokens=int(N)).tokens == base.tokens
    msgs = [{"role": "user", "content": [{"type": "image", "image": raw}, {"type": "text", "text": "Describe"}]}]
    assert qwen.generate(messages=msgs, max_tokens=int(N)).tokens == base.tokens
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}]
    assert qwen.generate(messages=msgs, images=[IMG0], max_tokens=int(N)).tokens == base.tokens


def test_pil_needs_pillow(qwen, monkeypatch):
    import optiq.images as im

    class FakeImage:
        pass

    monkeypatch.setattr(im, "_pil_image_class", lambda: None)
    with pytest.raises(Exception) as e:
        qwen.generate("Describe", images=[FakeImage()], max_tokens=2)
    assert "PIL images need Pillow" in str(e.value)


@pytest.mark.parametrize("model", ["qwen", "gemma"])
def test_stream_pieces_concatenate_to_the_text(model, request):
    eng = request.getfixturevalue(model)
    for kw in ({"prompt": "Hello there"}, {"prompt": "Describe", "images": [IMG0]}):
        full = eng.generate(max_tokens=20, **kw)
        s = eng.stream(max_tokens=20, **kw)
        pieces = list(s)
        assert all(isinstance(p, str) and p for p in pieces)
        assert "".join(pieces) == full.raw_text == s.result.raw_text
        assert s.result.tokens == full.tokens and s.result.text == full.text
    # with the thinking block: the pieces hold it, .text only the answer
    r = eng.generate("Hello there", max_tokens=20)
    assert r.raw_text.endswith(r.text)


def test_stream_closed_early_aborts(qwen):
    s = qwen.stream("Write a long text", max_tokens=200, ignore_eos=True)
    first = next(iter(s))
    assert first
    s.close()
    assert s.result is not None and s.result.finish_reason == "abort" and len(s.result.tokens) < 200
    with qwen.stream("Write a long text", max_tokens=200, ignore_eos=True) as s2:
        for _ in s2:
            break
    assert s2.result.finish_reason == "abort"
    # the engine is usable afterwards
    assert len(qwen.generate("Hi", max_tokens=3, ignore_eos=True).tokens) == 3


def test_stream_errors_raise_from_the_loop_or_at_once(qwen, qwen_text):
    from optiq import OptiqError

    with pytest.raises(OptiqError):  # prompt errors: at the call, before anything runs
        qwen_text.stream("x", images=[IMG0], max_tokens=3)
    # the library decodes images when the generation starts: the loop raises
    s = qwen.stream("x", images=[os.path.join(QWEN_VL, "config.json")], max_tokens=3)
    with pytest.raises(OptiqError):
        list(s)
    assert list(s) == []


def test_chat(qwen):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = qwen.chat(msgs, max_tokens=int(N))
    assert r.tokens == qwen.generate(messages=msgs, max_tokens=int(N)).tokens
    assert r.tokens == qwen.generate("Hi", system="Be brief.", max_tokens=int(N)).tokens
    assert r.message["role"] == "assistant" and r.message["content"] == r.text
    follow = msgs + [r.message, {"role": "user", "content": "More"}]
    assert qwen.chat(follow, max_tokens=4).finish_reason in ("stop", "length")
    assert qwen.chat("Hi", max_tokens=int(N)).tokens == qwen.generate("Hi", max_tokens=int(N)).tokens
    s = qwen.chat(msgs, stream=True, max_tokens=int(N))
    assert "".join(s) == r.raw_text


def test_on_token_callback(qwen):
    seen = []
    r = qwen.generate("Hello", max_tokens=10, ignore_eos=True, on_token=lambda tid, text: seen.append((tid, text)))
    assert [t for t, _ in seen if t >= 0] == r.tokens and "".join(x for _, x in seen) == r.raw_text
    calls = []

    def stop_at_three(tid, text):
        calls.append(tid)
        return len(calls) == 3  # a true value stops

    r = qwen.generate("Hello", max_tokens=10, ignore_eos=True, on_token=stop_at_three)
    assert r.finish_reason == "abort" and len(calls) == 3 and len(r.tokens) <= 3


def test_exception_in_callback_propagates(qwen):
    def boom(tid, text):
        raise KeyError("from the callback")

    with pytest.raises(KeyError):
        qwen.generate("Hello", max_tokens=50, ignore_eos=True, on_token=boom)
    assert len(qwen.generate("Hello", max_tokens=2, ignore_eos=True).tokens) == 2


def test_threads_share_an_engine(qwen):
    want = qwen.generate("Hello", max_tokens=8).tokens
    got = [None] * 4

    def work(i):
        got[i] = qwen.generate("Hello", max_tokens=8).tokens

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want] * 4


def test_tokenize_and_template_equal_cli(qwen, tmp_path):
    ref = json.loads(run_cli("tokenize", "--model", QWEN_VL, "--text", "Hello world", "--json").stdout)
    assert qwen.tokenize("Hello world") == ref["ids"]
    assert qwen.detokenize(ref["ids"]) == "Hello world"
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMG0}}, {"type": "text", "text": "Hi"}]}]
    f = tmp_path / "m.json"
    f.write_text(json.dumps(msgs))
    ref = run_cli("template", "--model", QWEN_VL, "--messages", f, "--enable-thinking", "false", "--json").stdout
    assert qwen.apply_chat_template(msgs, enable_thinking=False) == json.loads(ref)["prompt"]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    t = tmp_path / "tools.json"
    t.write_text(json.dumps(tools))
    ref = run_cli("template", "--model", QWEN_VL, "--messages", f, "--tools", t, "--enable-thinking", "false", "--json")
    with_tools = qwen.apply_chat_template(msgs, enable_thinking=False, tools=tools)
    assert with_tools == json.loads(ref.stdout)["prompt"] and "get_weather" in with_tools


def test_errors_carry_the_library_message(optiq_mod, qwen, qwen_text, tmp_path):
    OptiqError = optiq_mod.OptiqError
    with pytest.raises(OptiqError) as e:
        optiq_mod.Engine.load(str(tmp_path))
    assert "config.json" in str(e.value) and e.value.status != 0
    with pytest.raises(OptiqError) as e:
        optiq_mod.Engine.load("/no/such/folder")
    assert "/no/such/folder" in str(e.value)
    with pytest.raises(OptiqError) as e:
        qwen_text.generate("Describe", images=[IMG0], max_tokens=2)
    assert "text-only" in str(e.value) and e.value.kind == "unsupported"
    with pytest.raises(OptiqError) as e:
        qwen.generate("Describe", images=[os.path.join(QWEN_VL, "config.json")], max_tokens=2)
    assert e.value.status != 0 and str(e.value)
    with pytest.raises(OptiqError) as e:
        qwen.generate("Describe", images=["/nonexistent/image.png"], max_tokens=2)
    assert "/nonexistent/image.png" in str(e.value)
    with pytest.raises(OptiqError):
        qwen.generate("Describe", images=["http://127.0.0.1:9/none.png"], max_tokens=2)
    with pytest.raises(OptiqError):
        qwen.generate("Hi", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(OptiqError):
        qwen.generate("Hi", max_tokens=-1)
    with pytest.raises(OptiqError):
        qwen.generate("Hi", stop=[""])
    with pytest.raises(TypeError):
        qwen.generate("Hi", max_tokenz=3)
    with pytest.raises(OptiqError) as e:
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
        qwen.generate(messages=msgs)
    assert "no source" in str(e.value)
    with pytest.raises(OptiqError) as e:
        qwen.generate(messages=[{"role": "user", "content": "x"}], images=[IMG0])
    assert "more than" in str(e.value)
    with pytest.raises(OptiqError) as e:
        qwen.generate(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}])
    with pytest.raises(OptiqError) as e:  # the template's own error
        qwen.generate(messages=[{"role": "assistant", "content": "x"}, {"role": "system", "content": "late"}])
    assert str(e.value)
    with pytest.raises(OptiqError) as e:  # longer than the context
        qwen.generate("word " * (qwen.context_length + 10), max_tokens=2)
    assert e.value.kind == "context"
    eng = optiq_mod.Engine.load(QWEN_TEXT)
    eng.close()
    with pytest.raises(OptiqError):
        eng.generate("Hi")


def test_ctrl_c_stops_a_generation(tmp_path):
    # in a child process: a SIGINT that escaped would end the test session
    script = tmp_path / "interrupt.py"
    script.write_text(
        "import os, signal, threading, time, optiq\n"
        "eng = optiq.Engine.load(%r, n_threads=1)\n"
        "full = eng.generate('Hi', max_tokens=0, ignore_eos=True)\n"
        "threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    eng.generate('Hi', max_tokens=0, ignore_eos=True)\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "print(len(eng.generate('Hi', max_tokens=3, ignore_eos=True).tokens), len(full.tokens) > 100)\n" % QWEN_TEXT
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["interrupted", "3", "True"] and "Exception ignored" not in r.stderr


def test_logprobs(qwen):
    plain = qwen.generate("Hello", max_tokens=10, ignore_eos=True)
    assert plain.logprobs is None and plain.top_logprobs is None
    r = qwen.generate("Hello", max_tokens=10, ignore_eos=True, top_logprobs=3)
    assert r.tokens == plain.tokens and len(r.logprobs) == len(r.top_logprobs) == len(r.tokens)
    for tok, lp, top in zip(r.tokens, r.logprobs, r.top_logprobs):
        assert len(top) == 3 and lp <= 0
        assert top[0][0] == tok and abs(top[0][1] - lp) < 1e-6  # greedy: the most likely token was taken
        assert top[0][1] >= top[1][1] >= top[2][1]
    only = qwen.generate("Hello", max_tokens=10, ignore_eos=True, logprobs=True)
    assert only.logprobs == r.logprobs and only.top_logprobs is None
    with pytest.raises(Exception):
        qwen.generate("Hello", max_tokens=2, top_logprobs=1000)
