"""Torch helpers below every layer that runs torch: device resolution and strict FP32 math.

Device names from outside (`cpu`, `cuda`, `cuda:1`, `auto`): one check, one resolution. Every entry
point that runs torch on a named device resolves it here, so a misspelt or absent device is one
ZennasError before any work, never torch's RuntimeError from deep inside a forward pass.
`strict_fp32` pins IEEE FP32 for scoring (proxies) and numeric checks (export). Importing this
module does not import torch.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from zennas.errors import ConfigError

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"^(cpu|cuda)(?::(\d{1,4}))?$")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> CUDA when present, else CPU; `cpu`, `cuda` or `cuda:N` checked against this machine."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if device is None or device.strip() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _NAME.match(device.strip())
    if match is None:
        excerpt = device if len(device) <= 40 else device[:40] + "..."
        raise ConfigError(f"unknown device {excerpt!r}: use cpu, cuda, cuda:N or auto (CUDA when present)")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ConfigError(f"device {device!r}: the CPU has no index; use cpu")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested, but torch sees no CUDA GPU on this machine; use cpu")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise ConfigError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), cuda:0..")
    return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")


def _precision_knobs() -> list[object]:
    """Backends whose FP32 math may be lowered (TF32 on CUDA, bf32 on oneDNN), new-style API."""
    import torch

    knobs = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    for name in ("matmul", "conv", "rnn"):
        knob = getattr(torch.backends.mkldnn, name, None)
        if knob is not None:
            knobs.append(knob)
    return [k for k in knobs if hasattr(k, "fp32_precision")]


# The flags strict_fp32 sets are process-wide, while candidates may be scored from several threads at
# once (zennas.proxies.inflight): the first entry saves and sets them, the last exit restores them.
_STRICT_LOCK = threading.Lock()
_strict_depth = 0
_strict_saved: tuple[list[object], list[str], tuple[bool, bool]] | None = None


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """IEEE FP32 (no TF32/bf32) and deterministic cuDNN while scoring; every setting is restored.

    Only the `fp32_precision` API is touched: mixing it with the legacy `allow_tf32` flags inside
    one process makes PyTorch raise, and saving/restoring the new values leaves legacy reads intact.
    Nested and concurrent entries (threads) share one save: the settings are restored when the last
    one exits, so a thread that finishes first cannot switch TF32 back on under another.
    """
    import torch

    global _strict_depth, _strict_saved
    with _STRICT_LOCK:
        if _strict_depth == 0:
            knobs = _precision_knobs()
            cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            _strict_saved = (knobs, [k.fp32_precision for k in knobs], cudnn)
            for knob in knobs:
                knob.fp32_precision = "ieee"
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        _strict_depth += 1
    try:
        yield
    finally:
        with _STRICT_LOCK:
            _strict_depth -= 1
            if _strict_depth == 0 and _strict_saved is not None:
                knobs, saved, cudnn = _strict_saved
                for knob, value in zip(knobs, saved, strict=True):
                    knob.fp32_precision = value
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
                _strict_saved = None
