"""What every trainer shares: torchrun set-up, the run wrapper, resume checks, parameter groups.

The task trainers (classification/long-tail, detection, reid) differ in data, model and loss; how
they resolve the network to train, join a process group, protect the caller's RNG, claim their --out
folder (never overwriting a run or the user's files unasked), check that a resumed run is whole and
has the settings it was started with, and split weight decay is the same, and lives here (their
settings: zennas.train.config).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from zennas.device import resolve_device
from zennas.errors import ConfigError
from zennas.io import RunKind, claim_output_folder, json_field
from zennas.train.checkpoint import FORMAT, SIDECAR, read_sidecar

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


TRAIN_FILES = (SIDECAR, "checkpoint-*.safetensors", "metrics.jsonl", "metrics.json", "model.safetensors", "model.json")
SCALER_KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")


def training_run(task: str, *more_files: str) -> RunKind:
    """The output folder of a `task` training run, as zennas.io.claim_output_folder claims it."""
    return RunKind(f"train-{task}", "a training checkpoint", SIDECAR, (*TRAIN_FILES, *more_files),
                   recognise=lambda out: json_field(out / SIDECAR, "format") == FORMAT)  # fmt: skip


def resume_point(
    out: str | os.PathLike, settings: dict[str, Any], resume: bool, *, kind: RunKind, overwrite: bool = False
) -> dict[str, Any] | None:
    """Claim `out` for a training run of `kind` and return the checkpoint sidecar to resume from, or
    None to start afresh.

    Without `resume`, a folder holding a checkpoint or anything else is refused (unless `overwrite`:
    zennas.io.claim_output_folder). With it, the checkpoint must be whole (sidecar shape, history,
    tensors file) and its settings equal `settings` (one-line error naming the ones that differ).
    Every rank of a torchrun job calls this: the checks read only, the writes are idempotent, and DDP's
    first broadcast comes after every rank has returned from here.
    """
    out = claim_output_folder(out, kind, resume=resume, overwrite=overwrite)
    if not resume:
        return None
    saved = read_sidecar(out)
    where = repr(str(out / SIDECAR))
    stored = saved.get("settings")
    if not isinstance(stored, dict):
        raise ConfigError(f"{where} has no settings; it is not a checkpoint this trainer wrote")
    changed = sorted(k for k in set(settings) | set(stored) if settings.get(k) != stored.get(k))
    if changed:
        raise ConfigError(
            f"cannot resume {str(out)!r} with different settings ({', '.join(changed)}); "
            "rerun with the original settings or choose another --out"
        )
    history, scaler = saved.get("history"), saved.get("scaler")
    if not isinstance(history, list) or len(history) != saved["epoch"] or not all(
        isinstance(r, dict) and r.get("epoch") == i and isinstance(r.get("seconds"), int | float)
        for i, r in enumerate(history, 1)
    ):  # fmt: skip
        raise ConfigError(f"{where}: its history is not one record per epoch up to epoch {saved['epoch']}")
    if scaler is not None and not (isinstance(scaler, dict) and sorted(scaler) == sorted(SCALER_KEYS)
                                   and all(isinstance(v, int | float) for v in scaler.values())):  # fmt: skip
        raise ConfigError(f"{where}: its scaler state is not a GradScaler state ({', '.join(SCALER_KEYS)})")
    if not (out / saved["tensors"]).is_file():
        raise ConfigError(
            f"{where} names {saved['tensors']!r}, which is missing: the run folder is incomplete; "
            "start afresh with --overwrite instead of --resume"
        )
    return saved


def resolve_architecture(source: Any) -> tuple[Any, Any, int, bool | None]:
    """(spec, entry, resolution, use_se) from a config's --arch or --run (and --dialect, --resolution if it has one)."""
    from zennas.api import settings_for
    from zennas.models import resolve_arch

    resolution = getattr(source, "resolution", None)
    if source.run is not None:
        path = Path(source.run) / "result.json"
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            text, dialect = result["arch"], result.get("dialect")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"--run {source.run!r} holds no readable result.json with an arch ({error})") from None
        spec, entry = resolve_arch(text, source.dialect or dialect)
        resolution = resolution or result.get("resolution")
    else:
        spec, entry = resolve_arch(source.arch, source.dialect)
    resolution, _, use_se = settings_for(spec, entry, resolution)
    return spec, entry, resolution, use_se


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights (ndim > 1) only, none on norms and biases."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip


__all__ = [
    "AMP_DTYPES", "TRAIN_FILES", "DistInfo", "EpochHook", "StepHook", "join_distributed", "param_groups",
    "resolve_architecture", "resume_point", "run_on_ranks", "training_run",
]  # fmt: skip
