"""Vision helpers with mlx-optiq's names.

build_vision_sidecar(base=..., quant_dir=...) attaches OptIQ's vision sidecar
(optiq_vision.safetensors) to a quantized language folder, extracted from the
bf16 base it came from; the work is liboptiq's optiq_sidecar_build (the same
as `optiq sidecar`).
"""
import ctypes
import json
import os

from . import _native
from .hub import BASE_FILES, resolve_model

__all__ = ["build_vision_sidecar"]


def build_vision_sidecar(base, quant_dir, force=False, revision=None, token=None):
    """Extract the vision (and audio) towers of the bf16 base (a local folder or a
    Hugging Face repo id, found in or downloaded into the local cache) into
    quant_dir/optiq_vision.safetensors, list them in quant_dir's
    model.safetensors.index.json when it has one, restore the multimodal keys of its
    config.json and copy the image processor files it lacks. An existing sidecar is
    refused unless force. Returns the summary dict: "sidecar", "n_tensors", "bytes",
    "dtype", "base", "index_updated", "config_keys", "copied"."""
    base_dir = resolve_model(base, revision=revision, token=token, allow_patterns=BASE_FILES)
    L = _native.lib()
    summary = ctypes.c_void_p()
    err = _native.Error()
    st = L.optiq_sidecar_build(
        os.fsencode(base_dir), os.fsencode(os.fspath(quant_dir)), 1 if force else 0, ctypes.byref(summary), ctypes.byref(err)
    )
    try:
        _native.raise_for(st, err)
        return json.loads(_native.take_string(summary.value) or "{}")
    finally:
        L.optiq_free(summary)
