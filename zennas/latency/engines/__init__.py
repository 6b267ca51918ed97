"""Timing engines behind one interface: `get_engine(name, device=..., precision=..., **options).time(model, shape)`.

Engines: "torch" (PyTorch eager, optional CUDA graph), "onnxruntime" (CPU or CUDA provider with IOBinding),
"tensorrt" (TensorRT 10/11, GPU only). Each returns a `Timing` with median/p90 per batch, ms per image, the
device identity, software versions, the options used and warning flags.
"""

from __future__ import annotations

from typing import Any

from zennas.errors import ConfigError
from zennas.latency.engines.base import PRECISIONS, Engine, Timing, random_input, summarize, warm_up
from zennas.latency.engines.ort import OnnxRuntimeEngine
from zennas.latency.engines.pytorch import TorchEngine
from zennas.latency.engines.trt import TensorRTEngine

_ENGINES: dict[str, type[Engine]] = {cls.name: cls for cls in (TorchEngine, OnnxRuntimeEngine, TensorRTEngine)}
ENGINES: tuple[str, ...] = tuple(_ENGINES)


def get_engine(name: str, **kwargs: Any) -> Engine:
    """An engine by name ("torch", "onnxruntime", "tensorrt"); kwargs are device, precision and engine options."""
    try:
        cls = _ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown timing engine {name!r}; available: {', '.join(ENGINES)}") from None
    return cls(**kwargs)


__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Engine",
    "OnnxRuntimeEngine",
    "TensorRTEngine",
    "Timing",
    "TorchEngine",
    "get_engine",
    "random_input",
    "summarize",
    "warm_up",
]
