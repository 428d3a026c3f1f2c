"""ctypes declarations of liboptiq's public C API (include/optiq.h) and where
the library and the ``optiq`` command are found.

Only what the binding calls is declared. Every structure here mirrors its C
definition field by field, in order; keep them in step with include/optiq.h.
Loading checks each one's size against the library's (optiq_struct_size), so
a library whose structures changed is refused instead of misread.

Finding the library, first match wins:
  1. ``OPTIQ_LIB``: a path to liboptiq.so (development: point at a build folder);
  2. ``optiq/_lib/liboptiq.so`` inside the installed package (``pip install ./python``
     builds and bundles it).
The command (for ``python -m optiq``): ``OPTIQ_CLI``, then the bundled
``optiq/_lib/optiq``, then ``optiq`` beside ``OPTIQ_LIB``, then ``optiq`` on PATH.

The library is a plain CDLL, so ctypes releases the GIL for the whole of every
call into it (generation included); Python callbacks take the GIL back only
while they run.
"""
import ctypes
import os
import shutil
import threading

from .errors import OptiqError

_HERE = os.path.dirname(os.path.abspath(__file__))
_BUNDLED = os.path.join(_HERE, "_lib")

c_int32_p = ctypes.POINTER(ctypes.c_int32)


class Error(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("message", ctypes.c_char * 512)]


class EngineParams(ctypes.Structure):
    _fields_ = [
        ("n_threads", ctypes.c_int),
        ("context", ctypes.c_int64),
        ("prefill_chunk", ctypes.c_int64),
        ("exact", ctypes.c_int),
        ("prefix_cache_mb", ctypes.c_int64),
        ("prefix_block", ctypes.c_int64),
        ("vision_cache_mb", ctypes.c_int64),
    ]


class Image(ctypes.Structure):
    _fields_ = [
        ("source", ctypes.c_char_p),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("max_soft_tokens", ctypes.c_int),
    ]


class Sampling(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_float),
        ("top_p", ctypes.c_float),
        ("top_k", ctypes.c_int),
        ("min_p", ctypes.c_float),
        ("repetition_penalty", ctypes.c_float),
        ("presence_penalty", ctypes.c_float),
        ("frequency_penalty", ctypes.c_float),
        ("penalty_context", ctypes.c_int),
        ("seed", ctypes.c_uint64),
    ]


TOKEN_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_size_t)
STOP_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
DONE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class GenerateParams(ctypes.Structure):
    _fields_ = [
        ("sampling", Sampling),
        ("max_tokens", ctypes.c_int),
        ("stop", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop", ctypes.c_size_t),
        ("ignore_eos", ctypes.c_int),
        ("on_token", TOKEN_FN),
        ("user", ctypes.c_void_p),
        ("should_stop", STOP_FN),
        ("on_done", DONE_FN),
        ("images", ctypes.POINTER(Image)),
        ("n_images", ctypes.c_size_t),
        ("process_logits", ctypes.c_void_p),  # int (*)(void *, float *, int64_t): not used here
        ("on_sampled", ctypes.c_void_p),  # void (*)(void *, int32_t, const optiq_token_logprobs *): not used here
        ("logprobs", ctypes.c_int),
        ("top_logprobs", ctypes.c_int),
    ]


class Generation(ctypes.Structure):
    _fields_ = [
        ("tokens", c_int32_p),
        ("n_tokens", ctypes.c_size_t),
        ("text", ctypes.c_void_p),
        ("text_len", ctypes.c_size_t),
        ("reasoning", ctypes.c_void_p),
        ("answer", ctypes.c_void_p),
        ("finish_reason", ctypes.c_char_p),
        ("prompt_tokens", ctypes.c_int64),
        ("cached_tokens", ctypes.c_int64),
        ("logprobs", ctypes.POINTER(ctypes.c_float)),
        ("top_ids", c_int32_p),
        ("top_logprobs", ctypes.POINTER(ctypes.c_float)),
        ("n_top", ctypes.c_int),
        ("prefill_seconds", ctypes.c_double),
        ("decode_seconds", ctypes.c_double),
    ]


class Prompt(ctypes.Structure):
    _fields_ = [
        ("ids", c_int32_p),
        ("n_ids", ctypes.c_size_t),
        ("text", ctypes.c_void_p),
        ("images", ctypes.POINTER(ctypes.c_char_p)),
        ("n_images", ctypes.c_size_t),
    ]


# The structures above, by their C names: checked against the library's own
# sizeof (optiq_struct_size) when it is loaded.
STRUCTS = {
    "optiq_error": Error,
    "optiq_engine_params": EngineParams,
    "optiq_image": Image,
    "optiq_sampling": Sampling,
    "optiq_generate_params": GenerateParams,
    "optiq_generation": Generation,
    "optiq_prompt": Prompt,
}

ENCODE_ADD_SPECIAL = 1
DECODE_SKIP_SPECIAL = 1

_P = ctypes.c_void_p
_ERR = ctypes.POINTER(Error)
_SIGNATURES = {
    "optiq_version": (ctypes.c_char_p, []),
    "optiq_struct_size": (ctypes.c_size_t, [ctypes.c_char_p]),
    "optiq_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "optiq_free": (None, [_P]),
    "optiq_engine_default": (EngineParams, []),
    "optiq_engine_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(EngineParams), ctypes.POINTER(_P), _ERR]),
    "optiq_engine_free": (None, [_P]),
    "optiq_engine_tokenizer": (_P, [_P]),
    "optiq_engine_chat_template": (_P, [_P]),
    "optiq_engine_model_type": (ctypes.c_char_p, [_P]),
    "optiq_engine_vocab_size": (ctypes.c_int64, [_P]),
    "optiq_engine_context": (ctypes.c_int64, [_P]),
    "optiq_engine_has_vision": (ctypes.c_int, [_P]),
    "optiq_engine_has_thinking": (ctypes.c_int, [_P]),
    "optiq_engine_image_tokens": (ctypes.c_int, [_P, ctypes.POINTER(Image), ctypes.POINTER(ctypes.c_int64), _ERR]),
    "optiq_engine_render_prompt": (
        ctypes.c_int,
        [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.POINTER(Prompt), _ERR],
    ),
    "optiq_prompt_free": (None, [ctypes.POINTER(Prompt)]),
    "optiq_tokenizer_encode": (
        ctypes.c_int,
        [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.POINTER(c_int32_p), ctypes.POINTER(ctypes.c_size_t), _ERR],
    ),
    "optiq_tokenizer_decode": (
        ctypes.c_int,
        [_P, c_int32_p, ctypes.c_size_t, ctypes.c_uint, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_size_t), _ERR],
    ),
    "optiq_session_new": (ctypes.c_int, [_P, ctypes.POINTER(_P), _ERR]),
    "optiq_session_free": (None, [_P]),
    "optiq_sampling_default": (Sampling, []),
    "optiq_generate_default": (GenerateParams, []),
    "optiq_generate": (
        ctypes.c_int,
        [_P, c_int32_p, ctypes.c_size_t, ctypes.POINTER(GenerateParams), ctypes.POINTER(Generation), _ERR],
    ),
    "optiq_generation_free": (None, [ctypes.POINTER(Generation)]),
    "optiq_sidecar_build": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_P), _ERR]),
}

_lib = None
_lib_lock = threading.Lock()


def library_path():
    """The liboptiq.so this process uses (see the module comment for the order)."""
    env = os.environ.get("OPTIQ_LIB")
    if env:
        if not os.path.isfile(env):
            raise OptiqError("OPTIQ_LIB=%s: no such file (expected the path of liboptiq.so)" % env)
        return env
    bundled = os.path.join(_BUNDLED, "liboptiq.so")
    if os.path.isfile(bundled):
        return bundled
    raise OptiqError(
        "liboptiq.so not found: install the package with `pip install ./python` from the optiq source "
        "tree (it builds and bundles the library), or set OPTIQ_LIB to a built build/liboptiq.so"
    )


def cli_path():
    """The `optiq` command that `python -m optiq` runs."""
    env = os.environ.get("OPTIQ_CLI")
    if env:
        if not os.access(env, os.X_OK):
            raise OptiqError("OPTIQ_CLI=%s: not an executable file" % env)
        return env
    candidates = [os.path.join(_BUNDLED, "optiq")]
    if os.environ.get("OPTIQ_LIB"):
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(os.environ["OPTIQ_LIB"])), "optiq"))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which("optiq")
    # the console script this package installs is a Python wrapper around this module: skip it
    if found and not _is_python_script(found):
        return found
    raise OptiqError(
        "the optiq command was not found: install the package with `pip install ./python`, or set OPTIQ_CLI "
        "(or OPTIQ_LIB, with the optiq binary beside it)"
    )


def _is_python_script(path):
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]


def lib():
    """The loaded library, its functions declared (loaded once per process)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            path = library_path()
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:
                raise OptiqError("cannot load %s: %s" % (path, e)) from None
            for name, (restype, argtypes) in _SIGNATURES.items():
                try:
                    fn = getattr(handle, name)
                except AttributeError:
                    raise OptiqError("%s lacks %s: it is older than this package (rebuild it)" % (path, name)) from None
                fn.restype = restype
                fn.argtypes = argtypes
            check_layout(handle, path, STRUCTS)
            _lib = handle
        return _lib


def check_layout(handle, path, structs):
    """Refuse a library whose structures differ in size from these declarations."""
    for cname, cls in structs.items():
        size = handle.optiq_struct_size(cname.encode())
        if size != ctypes.sizeof(cls):
            raise OptiqError(
                "%s: struct %s is %d bytes there and %d bytes in this package: the library and the "
                "package come from different versions (reinstall with `pip install ./python`)"
                % (path, cname, size, ctypes.sizeof(cls))
            )


def raise_for(status, err):
    """Raise OptiqError with the library's message when status is not OPTIQ_OK."""
    if status != 0:
        msg = err.message.decode("utf-8", "replace") or lib().optiq_status_name(status).decode()
        raise OptiqError(msg, status=status)


def take_string(ptr, n=None):
    """A str from library memory (not freed here); None for NULL."""
    if not ptr:
        return None
    raw = ctypes.string_at(ptr, n) if n is not None else ctypes.string_at(ptr)
    return raw.decode("utf-8", "replace")
