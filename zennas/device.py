"""Device names from outside (`cpu`, `cuda`, `cuda:1`, `auto`): one check, one resolution.

Every entry point that runs torch on a named device resolves it here, so a misspelt or absent device
is one ZennasError before any work, never torch's RuntimeError from deep inside a forward pass.
"""

from __future__ import annotations

import re
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
