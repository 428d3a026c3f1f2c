"""OptiqEngine: a loaded model folder and generation from Python.

A thin layer over liboptiq's public API (include/optiq.h): the model, the
tokenizer, the chat template, the vision front-end, sampling and the decode
loop all run in the library. Python only turns its arguments into the C
structures and the results back into Python objects.

    from optiq.runtime.engine import OptiqEngine
    eng = OptiqEngine.load("path/to/model-folder")       # or a Hugging Face repo id
    r = eng.generate("What is in this image?", images=["cat.jpg"], max_tokens=128)
    print(r.text)

Prompts become token ids exactly as `optiq generate` makes them: a text
prompt is one user message (its images first, then the text; an optional
system message before it) rendered by the folder's chat template
(optiq_engine_render_prompt), or, without a template or with
use_chat_template=False, the text encoded with the tokenizer's special
tokens. So greedy output here equals `optiq generate` for the same inputs.

Threads: every call into the library releases the GIL (ctypes). One engine
runs one generation at a time (a lock serializes them; the library's engine
is shared, its sessions are not). stream() runs the generation on a worker
thread and hands its text pieces over through a queue, so the consumer's code
never runs inside the library's callback; closing the stream (close(), a
with block, or the stream being garbage collected after a break) aborts the
generation at its next token. Ctrl-C during generate() stops the generation
and raises KeyboardInterrupt once the library has returned (_InterruptAsStop).
"""
import copy
import ctypes
import json
import os
import queue
import signal
import threading

from .. import _native
from .._native import c_int32_p
from ..errors import OptiqError
from ..hub import resolve_model
from ..images import ImageArray

__all__ = ["OptiqEngine", "GenerationResult", "GenerationStream"]


class GenerationResult:
    """The outcome of one generation.

    text           the answer: the generated text outside the thinking block (all of it
                   when the model opened none), cut before a stop string
    reasoning      the thinking block's text (markers left out), or None
    raw_text       every generated character, thinking block included (what stream() yields)
    tokens         generated token ids (a stopping end-of-sequence token is not included)
    finish_reason  "stop" (end of sequence or a stop string), "length" (max_tokens or
                   the context is full) or "abort"
    prompt_tokens  prompt length after image placeholders were expanded
    cached_tokens  of those, restored from the engine's prefix cache instead of computed
    prefill_seconds, decode_seconds, prompt_tps, generation_tps   timings
    logprobs       with generate(logprobs=True): each generated token's log-probability
                   (log-softmax of the model's logits, before sampling filters), else None
    top_logprobs   with top_logprobs=k as well: per token, the k most likely (id, logprob)
                   pairs of its step, most likely first; else None
    """

    __slots__ = (
        "text",
        "reasoning",
        "raw_text",
        "tokens",
        "finish_reason",
        "prompt_tokens",
        "cached_tokens",
        "prefill_seconds",
        "decode_seconds",
        "logprobs",
        "top_logprobs",
    )

    def __init__(self, text, reasoning, raw_text, tokens, finish_reason, prompt_tokens, prefill_seconds, decode_seconds,
                 cached_tokens=0, logprobs=None, top_logprobs=None):
        self.text = text
        self.reasoning = reasoning
        self.raw_text = raw_text
        self.tokens = tokens
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.prefill_seconds = prefill_seconds
        self.decode_seconds = decode_seconds
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs

    @property
    def generation_tokens(self):
        return len(self.tokens)

    @property
    def prompt_tps(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def generation_tps(self):
        return len(self.tokens) / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def timings(self):
        """The same keys as `optiq generate --json`'s "timings"."""
        return {
            "prefill_seconds": self.prefill_seconds,
            "decode_seconds": self.decode_seconds,
            "prefill_tokens_per_second": self.prompt_tps,
            "decode_tokens_per_second": self.generation_tps,
        }

    @property
    def message(self):
        """The reply as an OpenAI-style assistant message."""
        m = {"role": "assistant", "content": self.text}
        if self.reasoning is not None:
            m["reasoning_content"] = self.reasoning
        return m

    def __str__(self):
        return self.text

    def __repr__(self):
        return "GenerationResult(text=%r, finish_reason=%r, tokens=%d)" % (self.text, self.finish_reason, len(self.tokens))


_END = object()


class GenerationStream:
    """An iterator over the text pieces of a generation running on a worker thread.
    The pieces concatenate to ``result.raw_text``; ``result`` is set once the
    iteration has ended. ``close()`` (or leaving a ``with`` block, or garbage
    collection) aborts a generation still running."""

    def __init__(self, run):
        self._q = queue.Queue()
        self._cancel = threading.Event()
        self._error = None
        self._done = False
        self.result = None
        self._thread = threading.Thread(target=self._work, args=(run,), name="optiq-stream", daemon=True)
        self._thread.start()

    def _work(self, run):
        try:
            self.result = run(self._q.put, self._cancel)
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            self._q.put(_END)

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._q.get()
        if item is _END:
            self._finish()
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            raise StopIteration
        return item

    def _finish(self):
        self._done = True
        self._thread.join()

    def close(self):
        """Stop the generation (at its next token) and wait for the worker."""
        if self._done:
            return
        self._cancel.set()
        while self._q.get() is not _END:
            pass
        self._finish()
        self._error = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _InterruptAsStop:
    """Ctrl-C during a generation on the main thread: Python's default SIGINT handler
    raises KeyboardInterrupt wherever the main thread next runs Python code, which
    is the first line of the per-token callback, before any try block there can
    catch it (ctypes would then print it and carry on). While the generation runs,
    SIGINT only records a KeyboardInterrupt in failure, which the callbacks turn
    into a stop and generate() raises afterwards. A handler the program installed
    itself is left alone, and so are other threads (signals reach the main thread
    only)."""

    def __init__(self, failure):
        self.failure = failure
        self.prev = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self.prev = signal.signal(signal.SIGINT, self._record)
            except ValueError:  # not the main interpreter
                self.prev = None
        return self

    def _record(self, signum, frame):
        self.failure.append(KeyboardInterrupt())

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)


def _is_token_list(x):
    return isinstance(x, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def _split_images(messages):
    """A JSON-ready copy of messages and {image index: object} for image parts
    whose source is not a string (bytes, PIL images, paths as os.PathLike): those
    parts become bare {"type": "image"} parts, their objects supplied separately."""
    out = copy.copy(list(messages))
    aside = {}
    k = 0
    for mi, m in enumerate(out):
        if not isinstance(m, dict):
            raise OptiqError("messages[%d]: expected a dict, got %s" % (mi, type(m).__name__), status=3)
        content = m.get("content")
        if not isinstance(content, (list, tuple)):
            continue
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") in ("image", "image_url"):
                if p.get("type") == "image_url":
                    src = p.get("image_url")
                    src = src.get("url") if isinstance(src, dict) else src
                else:
                    src = p.get("image", p.get("url"))
                if src is not None and not isinstance(src, str):
                    aside[k] = src
                    p = {"type": "image"}
                k += 1
            parts.append(p)
        m = dict(m)
        m["content"] = parts
        out[mi] = m
    return out, aside


class OptiqEngine:
    """A loaded model folder (language model, tokenizer, chat template, vision
    front-end when the folder has the sidecar). Create it with ``load``; free it
    with ``close()`` or a ``with`` block (garbage collection frees it too)."""

    def __init__(self, handle, path):
        self._h = ctypes.c_void_p(handle)
        self._lock = threading.Lock()
        self.path = path
        L = _native.lib()
        self._tok = L.optiq_engine_tokenizer(self._h)
        self.model_type = (L.optiq_engine_model_type(self._h) or b"").decode()
        self.vocab_size = int(L.optiq_engine_vocab_size(self._h))
        self.context_length = int(L.optiq_engine_context(self._h))
        self.has_vision = bool(L.optiq_engine_has_vision(self._h))
        self.has_thinking = bool(L.optiq_engine_has_thinking(self._h))
        self.has_chat_template = bool(L.optiq_engine_chat_template(self._h))

    # ---- loading ----

    @classmethod
    def load(cls, path_or_repo_id, *, revision=None, token=None, **engine_params):
        """Load a model folder: a local path, or a Hugging Face repo id ("org/name")
        found in the local Hugging Face cache or downloaded into it (optiq.hub;
        revision: a branch, tag or commit, token: instead of HF_TOKEN).
        engine_params are fields of the C optiq_engine_params, defaults from
        optiq_engine_default(): n_threads (0: physical cores), context (0: the model's
        maximum), prefill_chunk (0: 512), exact (True: f32 activations in every product),
        prefix_cache_mb, prefix_block, vision_cache_mb (include/optiq.h)."""
        L = _native.lib()
        params = L.optiq_engine_default()
        known = [f[0] for f in _native.EngineParams._fields_]
        for k, v in engine_params.items():
            if k not in known:
                raise TypeError("unexpected engine parameter %r (known: %s)" % (k, ", ".join(known)))
            setattr(params, k, int(v))
        path = resolve_model(path_or_repo_id, revision=revision, token=token)
        h = ctypes.c_void_p()
        err = _native.Error()
        _native.raise_for(L.optiq_engine_load(os.fsencode(path), ctypes.byref(params), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h.value, path)

    def close(self):
        with self._lock:
            if self._h:
                _native.lib().optiq_engine_free(self._h)
                self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_h", None):
                _native.lib().optiq_engine_free(self._h)
                self._h = None
        except Exception:
            pass

    def _handle(self):
        if not self._h:
            raise OptiqError("the engine is closed", status=3)
        return self._h

    def __repr__(self):
        return "OptiqEngine(%r, model_type=%r)" % (self.path, self.model_type)

    # ---- tokens and templates ----

    def tokenize(self, text, add_special_tokens=True):
        """Token ids of text (add_special_tokens: the tokenizer's post-processor tokens)."""
        self._handle()
        L = _native.lib()
        b = text.encode("utf-8")
        ids = c_int32_p()
        n = ctypes.c_size_t()
        err = _native.Error()
        flags = _native.ENCODE_ADD_SPECIAL if add_special_tokens else 0
        _native.raise_for(L.optiq_tokenizer_encode(self._tok, b, len(b), flags, ctypes.byref(ids), ctypes.byref(n), ctypes.byref(err)), err)
        try:
            return ids[: n.value] if n.value else []
        finally:
            L.optiq_free(ids)

    def detokenize(self, ids, skip_special_tokens=False):
        """The text of token ids."""
        self._handle()
        L = _native.lib()
        arr = (ctypes.c_int32 * len(ids))(*ids)
        text = ctypes.c_void_p()
        n = ctypes.c_size_t()
        err = _native.Error()
        flags = _native.DECODE_SKIP_SPECIAL if skip_special_tokens else 0
        _native.raise_for(L.optiq_tokenizer_decode(self._tok, arr, len(ids), flags, ctypes.byref(text), ctypes.byref(n), ctypes.byref(err)), err)
        try:
            return _native.take_string(text.value, n.value) or ""
        finally:
            L.optiq_free(text)

    def _render(self, messages, enable_thinking=None, chat_template_kwargs=None, tools=None, add_generation_prompt=True):
        """(ids, text, image sources or None per image part) for messages."""
        L = _native.lib()
        opts = {"add_generation_prompt": bool(add_generation_prompt)}
        if enable_thinking is not None:
            opts["enable_thinking"] = bool(enable_thinking)
        if chat_template_kwargs:
            if not isinstance(chat_template_kwargs, dict):
                raise OptiqError("chat_template_kwargs: expected a dict", status=3)
            opts["chat_template_kwargs"] = chat_template_kwargs
        if tools:
            opts["tools"] = list(tools)
        try:
            mj = json.dumps(messages, ensure_ascii=False).encode("utf-8")
            oj = json.dumps(opts, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise OptiqError("messages: cannot be written as JSON: %s" % e, status=3) from None
        p = _native.Prompt()
        err = _native.Error()
        _native.raise_for(L.optiq_engine_render_prompt(self._handle(), mj, len(mj), oj, ctypes.byref(p), ctypes.byref(err)), err)
        try:
            ids = p.ids[: p.n_ids]
            text = _native.take_string(p.text)
            sources = [(p.images[i].decode("utf-8") if p.images[i] is not None else None) for i in range(p.n_images)]
        finally:
            L.optiq_prompt_free(ctypes.byref(p))
        return ids, text, sources

    def apply_chat_template(self, messages, *, add_generation_prompt=True, enable_thinking=None, chat_template_kwargs=None, tools=None):
        """The prompt text the folder's chat template renders for messages (the
        defaults `optiq generate` uses: the generation prompt opened, thinking on
        when the model has thinking markers and no images are given)."""
        msgs, _ = _split_images(messages)
        return self._render(msgs, enable_thinking, chat_template_kwargs, tools, add_generation_prompt)[1]

    def image_tokens(self, image, image_tokens=None):
        """How many prompt tokens an image becomes in this model (without running the tower)."""
        L = _native.lib()
        arr = ImageArray([image], image_tokens)
        n = ctypes.c_int64()
        err = _native.Error()
        _native.raise_for(L.optiq_engine_image_tokens(self._handle(), arr.pointer(), ctypes.byref(n), ctypes.byref(err)), err)
        return n.value

    def _prepare(self, prompt, images, messages, system, use_chat_template, enable_thinking, chat_template_kwargs, tools):
        """(prompt ids, images in order) as `optiq generate` would build them."""
        images = list(images) if images is not None else []
        if (prompt is None) == (messages is None):
            raise OptiqError("give either prompt or messages", status=3)
        if messages is None:
            if _is_token_list(prompt):
                if system is not None:
                    raise OptiqError("system: not used with a prompt given as token ids", status=3)
                return list(prompt), images
            if not isinstance(prompt, str):
                raise OptiqError("prompt: expected a str or a list of token ids, got %s" % type(prompt).__name__, status=3)
            if not use_chat_template or not self.has_chat_template:
                if system is not None:
                    raise OptiqError("system: needs the chat template (the folder has none, or use_chat_template=False)", status=3)
                return self.tokenize(prompt, add_special_tokens=True), images
            messages = []
            if system is not None:
                messages.append({"role": "system", "content": system})
            if images:
                # images first, then the text: how mlx-vlm (and optiq generate) build a user turn
                content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
            else:
                content = prompt
            messages.append({"role": "user", "content": content})
        elif system is not None:
            raise OptiqError("system: put the system message in messages", status=3)
        if isinstance(messages, str):
            raise OptiqError("messages: expected a list of message dicts (use prompt= for text)", status=3)
        msgs, aside = _split_images(messages)
        ids, _, sources = self._render(msgs, enable_thinking, chat_template_kwargs, tools)
        given = iter(images)
        resolved = []
        for i, src in enumerate(sources):
            if src is not None:
                resolved.append(src)
            elif i in aside:
                resolved.append(aside[i])
            else:
                nxt = next(given, None)
                if nxt is None:
                    raise OptiqError(
                        "image %d of the messages has no source and images= has no image left for it" % (i + 1), status=3
                    )
                resolved.append(nxt)
        left = sum(1 for _ in given)
        if left:
            raise OptiqError("images=: %d image(s) more than the messages' image parts without a source" % left, status=3)
        return ids, resolved

    # ---- generation ----

    def _run(self, ids, images, opts, on_piece=None, cancel=None):
        L = _native.lib()
        if not ids:
            raise OptiqError("the prompt encodes to no tokens", status=3)
        arr = ImageArray(images, opts["image_tokens"])
        gp = L.optiq_generate_default()
        s = gp.sampling
        s.temperature = float(opts["temperature"])
        s.top_p = float(opts["top_p"])
        s.top_k = int(opts["top_k"])
        s.min_p = float(opts["min_p"])
        s.repetition_penalty = float(opts["repetition_penalty"])
        s.presence_penalty = float(opts["presence_penalty"])
        s.frequency_penalty = float(opts["frequency_penalty"])
        s.penalty_context = int(opts["penalty_context"])
        s.seed = int(opts["seed"])
        max_tokens = opts["max_tokens"]
        if max_tokens is None:
            max_tokens = 0
        if not isinstance(max_tokens, int) or max_tokens < 0 or max_tokens > (1 << 30):
            raise OptiqError("max_tokens: expected an integer in [0, 2^30] (0 or None: no limit), got %r" % (max_tokens,), status=3)
        gp.max_tokens = max_tokens
        stop = opts["stop"]
        if isinstance(stop, str):
            stop = [stop]
        stop = [x.encode("utf-8") for x in (stop or [])]
        if any(not x for x in stop):
            raise OptiqError("stop: empty stop string", status=3)
        stop_arr = (ctypes.c_char_p * len(stop))(*stop) if stop else None
        if stop_arr is not None:
            gp.stop = stop_arr
            gp.n_stop = len(stop)
        gp.ignore_eos = 1 if opts["ignore_eos"] else 0
        top = opts["top_logprobs"] or 0
        if not isinstance(top, int) or top < 0:
            raise OptiqError("top_logprobs: expected a non-negative integer, got %r" % (top,), status=3)
        if opts["logprobs"] or top:
            gp.logprobs = 1
            gp.top_logprobs = top
        if arr.count:
            gp.images = arr.pointer()
            gp.n_images = arr.count
        failure = []
        user_cb = opts.get("on_token")

        def on_token(_user, tid, text, n):
            try:
                if cancel is not None and cancel.is_set():
                    return 1
                piece = ctypes.string_at(text, n).decode("utf-8", "replace") if n else ""
                if on_piece is not None and piece:
                    on_piece(piece)
                if user_cb is not None and user_cb(tid, piece):
                    return 1
                return 0
            except BaseException as e:  # KeyboardInterrupt included: abort, re-raised below
                failure.append(e)
                return 1

        def should_stop(_user):
            try:
                return 1 if failure or (cancel is not None and cancel.is_set()) else 0
            except BaseException as e:
                failure.append(e)
                return 1

        tok_cb = _native.TOKEN_FN(on_token)
        stop_cb = _native.STOP_FN(should_stop)
        gp.on_token = tok_cb
        gp.should_stop = stop_cb
        ids_arr = (ctypes.c_int32 * len(ids))(*ids)
        g = _native.Generation()
        err = _native.Error()
        with self._lock, _InterruptAsStop(failure):
            h = self._handle()
            sess = ctypes.c_void_p()
            _native.raise_for(L.optiq_session_new(h, ctypes.byref(sess), ctypes.byref(err)), err)
            try:
                st = L.optiq_generate(sess, ids_arr, len(ids), ctypes.byref(gp), ctypes.byref(g), ctypes.byref(err))
            finally:
                L.optiq_session_free(sess)
        try:
            if failure:
                raise failure[0]
            _native.raise_for(st, err)
            raw = _native.take_string(g.text, g.text_len) or ""
            answer = _native.take_string(g.answer)
            n = g.n_tokens
            lps = tops = None
            if g.logprobs:
                lps = g.logprobs[:n] if n else []
                if g.n_top > 0 and g.top_ids:
                    k = g.n_top
                    ids_all, lp_all = g.top_ids[: n * k], g.top_logprobs[: n * k]
                    tops = [list(zip(ids_all[i * k:(i + 1) * k], lp_all[i * k:(i + 1) * k])) for i in range(n)]
            return GenerationResult(
                text=answer if answer is not None else raw,
                reasoning=_native.take_string(g.reasoning),
                raw_text=raw,
                logprobs=lps,
                top_logprobs=tops,
                tokens=g.tokens[: g.n_tokens] if g.n_tokens else [],
                finish_reason=(g.finish_reason or b"").decode(),
                prompt_tokens=int(g.prompt_tokens),
                cached_tokens=int(g.cached_tokens),
                prefill_seconds=float(g.prefill_seconds),
                decode_seconds=float(g.decode_seconds),
            )
        finally:
            L.optiq_generation_free(ctypes.byref(g))

    def _options(self, kw):
        opts = {
            "max_tokens": 256,
            "temperature": 0.0,
            "top_p": 0.0,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 0.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "penalty_context": 0,
            "seed": 0,
            "stop": None,
            "ignore_eos": False,
            "image_tokens": None,
            "logprobs": False,
            "top_logprobs": 0,
            "on_token": None,
        }
        if "temp" in kw:  # mlx-lm's name
            kw.setdefault("temperature", kw.pop("temp"))
        for k, v in kw.items():
            if k not in opts:
                raise TypeError("unexpected keyword argument %r" % k)
            opts[k] = v
        return opts

    def generate(self, prompt=None, images=None, *, messages=None, system=None, use_chat_template=True,
                 enable_thinking=None, chat_template_kwargs=None, tools=None, **sampling):
        """Generate a reply and return a GenerationResult.

        prompt      the user's text (or a list of token ids, used as is); or give messages=
        images      images of the prompt: paths, http(s) / data: URLs, bytes, PIL images
        messages    an OpenAI-style message list (content a str or a list of "text" and
                    "image_url" / "image" parts); images= fills image parts that carry no source
        system      a system message placed before the prompt
        use_chat_template   False: the prompt text is encoded as is (special tokens added), as
                    `optiq generate --no-chat-template`; it must then hold one image placeholder
                    per image
        enable_thinking / chat_template_kwargs / tools   template variables (default: thinking on
                    when the model has thinking markers and no images are given)
        max_tokens (256; 0 or None: until a stop condition), temperature (0: greedy; alias temp),
        top_p, top_k, min_p, repetition_penalty, presence_penalty, frequency_penalty,
        penalty_context, seed, stop (a str or a list), ignore_eos, logprobs, top_logprobs
        (0..20; implies logprobs), image_tokens (Gemma-4: soft
        tokens per image), on_token (called as on_token(id, text) on the generating thread;
        a true return value stops)
        """
        opts = self._options(sampling)
        ids, imgs = self._prepare(prompt, images, messages, system, use_chat_template, enable_thinking, chat_template_kwargs, tools)
        return self._run(ids, imgs, opts)

    def stream(self, prompt=None, images=None, *, messages=None, system=None, use_chat_template=True,
               enable_thinking=None, chat_template_kwargs=None, tools=None, **sampling):
        """Like generate(), but returns a GenerationStream that yields the text pieces as
        they are generated (whole UTF-8 characters; they concatenate to result.raw_text).
        Prompt errors raise here, before anything runs; generation errors raise from the loop."""
        opts = self._options(sampling)
        ids, imgs = self._prepare(prompt, images, messages, system, use_chat_template, enable_thinking, chat_template_kwargs, tools)
        return GenerationStream(lambda put, cancel: self._run(ids, imgs, opts, on_piece=put, cancel=cancel))

    def chat(self, messages, *, stream=False, images=None, enable_thinking=None, chat_template_kwargs=None, tools=None, **sampling):
        """One assistant turn for an OpenAI-style conversation (a str is one user message).
        Returns a GenerationResult (its .message is the assistant message to append),
        or with stream=True a GenerationStream."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        fn = self.stream if stream else self.generate
        return fn(messages=messages, images=images, enable_thinking=enable_thinking,
                  chat_template_kwargs=chat_template_kwargs, tools=tools, **sampling)


Engine = OptiqEngine
