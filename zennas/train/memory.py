"""Memory floors checked before a trainer (or `zennas eval`) builds anything big.

The floor comes from the analytic counting (`zennas.counting`), so it costs no allocation: for the
backward pass autograd keeps at least the input batch and every block's output (the next layer's
input), so one training step needs at least batch x (3 H W + sum over blocks of C H_b W_b) values;
inference needs at least the largest input + output pair of consecutive blocks. Convolutions act on
each spatial axis alone, so a H x W input has block outputs H_b x W_b, with H_b and W_b the sides the
counting gives at resolutions H and W.

A floor above the device's memory (host RAM, the container's cgroup limit, or the CUDA device's
memory) means the run cannot succeed; refusing up front replaces a kernel OOM kill, or a CUDA OOM,
by a one-line error. Real steps need several times the floor (every conv, norm and activation output
and the gradients), so a run that passes may still not fit; one refused certainly does not.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import torch

from zennas.errors import ConfigError

# cgroup v2, then v1: a container's memory limit, lower than the machine's RAM
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
GIB = 2**30


def _block_outputs(spec: Any, height: int, width: int, use_se: bool | None) -> tuple[int, list[int]]:
    """(input values, every block's output values) of one H x W image, from the analytic counting."""
    from zennas.counting import count

    rows = count(spec, resolution=height, num_classes=0, use_se=use_se).blocks
    cols = rows if width == height else count(spec, resolution=width, num_classes=0, use_se=use_se).blocks
    return 3 * height * width, [r.out_channels * r.out_size * c.out_size for r, c in zip(rows, cols, strict=True)]


def training_values(spec: Any, height: int, width: int, use_se: bool | None) -> int:
    """Floor of the activation values one image keeps for the backward pass: its input and every block's output."""
    image, blocks = _block_outputs(spec, height, width, use_se)
    return image + sum(blocks)


def inference_values(spec: Any, height: int, width: int, use_se: bool | None) -> int:
    """Floor of the values alive at once in a forward pass without gradients: the largest consecutive pair."""
    image, blocks = _block_outputs(spec, height, width, use_se)
    chain = [image, *blocks]
    return max(a + b for a, b in itertools.pairwise(chain)) if blocks else image


def host_memory() -> tuple[int, str] | None:
    """(bytes, name) of the host memory a process can use: physical RAM or a lower cgroup limit; None if unknown."""
    try:
        limit, name = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM"
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit() and 0 < int(text) < limit:  # "max" (v2) or a huge number (v1) mean no limit
            limit, name = int(text), "this container's memory limit"
    return limit, name


def device_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes, name) of the memory a step on `device` draws from; None when unknown (then nothing is refused)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return props.total_memory, f"{props.name}'s memory (cuda:{index})"
    return host_memory() if device.type == "cpu" else None


def check_memory(
    values_per_image: int, batch: int, device: torch.device, *, what: str, lower: str, bytes_per_value: int = 4,
) -> None:  # fmt: skip
    """Refuse (ConfigError) when `batch` images of `values_per_image` cannot fit in `device`'s memory.

    On the CPU every local process of a torchrun job (LOCAL_WORLD_SIZE) draws from the same RAM.
    `what` describes the step ("one training step of 128 images of 224x224"); `lower` names what to lower.
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    need = values_per_image * batch * bytes_per_value * processes
    available = device_memory(device)
    if available is None or need <= available[0]:
        return
    limit, name = available
    shared = f" (x {processes} processes on this host)" if processes > 1 else ""
    raise ConfigError(
        f"{what}{shared} needs at least {need / GIB:,.1f} GiB of activations (counted from the architecture), "
        f"more than the {limit / GIB:,.1f} GiB of {name}; lower {lower}"
    )


__all__ = ["check_memory", "device_memory", "host_memory", "inference_values", "training_values"]
