"""optiq: Python binding of liboptiq, the C engine for MLX / OptIQ-format quantized
vision-language models (Qwen3.5 / Qwen3.6, Gemma-4) on Linux CPUs.

    import optiq
    eng = optiq.Engine.load("path/or/org-name")
    print(eng.generate("Hello", max_tokens=32).text)

Everything runs in liboptiq.so (loaded with ctypes; see optiq._native for where
it is found); this package only converts arguments and results.
"""
from .errors import OptiqError
from .runtime.engine import GenerationResult, GenerationStream, OptiqEngine
from .vlm import build_vision_sidecar

Engine = OptiqEngine
__version__ = "0.1.0"


def library_version():
    """The version string of the loaded liboptiq.so."""
    from . import _native

    return _native.lib().optiq_version().decode()


__all__ = [
    "Engine",
    "OptiqEngine",
    "GenerationResult",
    "GenerationStream",
    "OptiqError",
    "build_vision_sidecar",
    "library_version",
    "__version__",
]
