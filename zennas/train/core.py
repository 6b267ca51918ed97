"""What every trainer shares: torchrun set-up, the run wrapper, resume checks, settings, parameter groups.

The task trainers (classification/long-tail, detection, reid) differ in data, model and loss; how
they join a process group, protect the caller's RNG, refuse to overwrite a run, check that a
resumed run has the settings it was started with, and split weight decay is the same, and lives here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from zennas.device import resolve_device
from zennas.errors import ConfigError
from zennas.train.checkpoint import SIDECAR, read_sidecar

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
StepHook = Callable[[int, int, int, float], None]  # (epoch, step, steps, loss)
EpochHook = Callable[[dict[str, Any]], None]
T = TypeVar("T")


@dataclass
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    created: bool = False


def join_distributed(device_name: str | None) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    dist = DistInfo(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                    int(os.environ.get("LOCAL_RANK", "0")))  # fmt: skip
    device = resolve_device(device_name)  # None: CUDA when present
    if device.type == "cuda" and dist.world > 1 and device.index is None:
        device = torch.device("cuda", dist.local_rank)
    if dist.world > 1:
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
            dist.created = True
    return dist, device


def run_on_ranks(device_name: str | None, body: Callable[[DistInfo, torch.device], T]) -> T:
    """`body(dist, device)` inside the torchrun group (left again if this call joined it), with the
    caller's global RNG restored afterwards."""
    dist, device = join_distributed(device_name)
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            return body(dist, device)
    finally:
        if dist.created:
            import torch.distributed as td

            td.destroy_process_group()


def config_settings(config: Any, resume_free: Iterable[str]) -> dict[str, Any]:
    """A config dataclass's fields that fix the result (all but `resume_free`), as checkpoints store them."""
    free = set(resume_free)
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in free}


def resume_point(out: str | os.PathLike, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The checkpoint sidecar to resume from, or None to start afresh.

    A folder holding a checkpoint is refused without `resume`; with it, the stored settings must
    equal `settings` (one-line error naming the ones that differ).
    """
    out = Path(out)
    if not (out / SIDECAR).is_file():
        return None
    if not resume:
        raise ConfigError(f"{str(out)!r} already holds a training checkpoint; pass --resume or choose another --out")
    saved = read_sidecar(out)
    stored = saved.get("settings", {})
    changed = sorted(k for k in set(settings) | set(stored) if settings.get(k) != stored.get(k))
    if changed:
        raise ConfigError(
            f"cannot resume {str(out)!r} with different settings ({', '.join(changed)}); "
            "rerun with the original settings or choose another --out"
        )
    return saved


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights (ndim > 1) only, none on norms and biases."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip


__all__ = [
    "AMP_DTYPES", "DistInfo", "EpochHook", "StepHook", "config_settings", "join_distributed", "param_groups",
    "resume_point", "run_on_ranks",
]  # fmt: skip
