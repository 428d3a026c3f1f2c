"""Runtime: the engine (optiq.runtime.engine.OptiqEngine)."""
from .engine import GenerationResult, GenerationStream, OptiqEngine

__all__ = ["OptiqEngine", "GenerationResult", "GenerationStream"]
