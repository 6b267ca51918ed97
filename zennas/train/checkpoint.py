"""Checkpoints without pickle: tensors in safetensors, everything else in a JSON sidecar.

A training checkpoint is `checkpoint-EPOCH.safetensors` (keys `model/...`, `ema/...`, `extra/...`,
`optimizer/INDEX/NAME`) plus `checkpoint.json`, which names that file. The sidecar is written
last, so it is the commit point: a run killed between the two writes resumes from the previous
epoch. Final weights go to `model.safetensors` (plain state-dict keys, loadable with
`zennas.export.load_safetensors`) with a `model.json` sidecar (architecture, classes, settings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zennas.errors import ConfigError
from zennas.io import atomic_write_bytes, atomic_write_json, read_json_file

SIDECAR = "checkpoint.json"
FORMAT = "zennas-train-checkpoint/1"


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU; a file that does not read is a ConfigError naming `what`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {error}") from None


def weights_file(path: str | os.PathLike) -> Path:
    """The weights a user names: a .safetensors file as given, or a training --out folder's model.safetensors."""
    path = Path(path)
    return path / "model.safetensors" if path.is_dir() else path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"checkpoint file {str(path)!r} not found; the run folder is incomplete")
    return read_tensors(path, "checkpoint file")


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """`load_state_dict(strict=True)` that fails with one line naming the missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        short = arch if len(arch) <= 80 else arch[:77] + "..."

        def few(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

        parts = [f"{label} {few(items)}" for label, items in
                 (("missing keys", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", shapes))
                 if items]  # fmt: skip
        raise ConfigError(
            f"weights do not match architecture {short}: {', '.join(parts)}; "
            "train or load with the architecture the weights came from"
        )
    module.load_state_dict(state, strict=True)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors keyed `optimizer/INDEX/NAME`, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    # JSON turned tuples (Adam's betas) into lists; `params` is the one list torch expects.
    groups = [{k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in g.items()}
              for g in rest["param_groups"]]  # fmt: skip
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    out: str | os.PathLike,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    ema: nn.Module | None = None,
    extra: nn.Module | None = None,
) -> Path:
    """Write the training state after `epoch` (1-based) atomically; returns the sidecar's path."""
    out = Path(out)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    if extra is not None:
        tensors.update({f"extra/{k}": v for k, v in extra.state_dict().items()})
    opt_tensors, opt_rest = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    name = f"checkpoint-{epoch}.safetensors"
    atomic_write_bytes(out / name, _safetensors_bytes(tensors, {"format": FORMAT, "epoch": str(epoch)}))
    previous = read_sidecar(out) if (out / SIDECAR).is_file() else None
    atomic_write_json(out / SIDECAR, {"format": FORMAT, "epoch": epoch, "tensors": name, "optimizer": opt_rest, **info})
    if previous is not None and previous.get("tensors") not in (None, name):
        (out / previous["tensors"]).unlink(missing_ok=True)
    return out / SIDECAR


def read_sidecar(out: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of the checkpoint in `out`."""
    path = Path(out) / SIDECAR
    if not path.is_file():
        raise ConfigError(f"no checkpoint to resume in {str(Path(out))!r} ({SIDECAR} missing); drop --resume to start")
    data = read_json_file(path, repr(str(path)), ConfigError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{str(path)!r} is not a zennas training checkpoint (format {found!r})")
    problem = _sidecar_problem(data)
    if problem is not None:
        raise ConfigError(f"{str(path)!r} is not a usable training checkpoint: {problem}; it was not written by zennas")
    return data


def _sidecar_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a sidecar's own fields (epoch, tensors file name, optimizer state), or None."""
    epoch, name, optimizer = data.get("epoch"), data.get("tensors"), data.get("optimizer")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return "epoch is not a positive integer"
    # A bare file name in the run folder: a path elsewhere would be read (and later deleted) by save_checkpoint.
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        return "tensors is not the name of a .safetensors file beside it"
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list):
        return "optimizer has no param_groups"
    groups, scalars = optimizer["param_groups"], optimizer.get("scalars")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        return "optimizer param_groups are not groups of parameters"
    if not isinstance(scalars, dict) or not all(k.isdigit() and isinstance(v, dict) for k, v in scalars.items()):
        return "optimizer scalars are not per-parameter objects"
    return None


def load_checkpoint(
    out: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    arch: str,
    ema: nn.Module | None = None,
    extra: nn.Module | None = None,
) -> dict[str, Any]:
    """Restore the state `save_checkpoint` wrote into the given objects; returns the sidecar."""
    info = read_sidecar(out)
    tensors = _read_safetensors(Path(out) / info["tensors"])
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "extra": {}, "optimizer": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition("/")
        if head == "optimizer":
            parts[head][key] = value
        elif head in parts:
            parts[head][rest] = value
    load_state_checked(model, parts["model"], arch)
    if ema is not None:
        load_state_checked(ema, parts["ema"], arch)
    if extra is not None:
        load_state_checked(extra, parts["extra"], "distillation adapter")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(parts["optimizer"], info["optimizer"]))
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise ConfigError(f"optimizer state in {str(out)!r} does not fit this run: {error}") from None
    # torch does not check the shapes of state tensors (momentum, Adam moments); a wrong one fails at the first step.
    for param, state in optimizer.state.items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != param.shape:
                raise ConfigError(
                    f"optimizer state in {str(out)!r} does not fit this run: {name} has shape {tuple(value.shape)} "
                    f"for a parameter of shape {tuple(param.shape)}; resume with the network the run trained"
                )
    return info


def save_weights(path: str | os.PathLike, model: nn.Module, sidecar: dict[str, Any]) -> None:
    """Final weights as a plain state dict in safetensors, plus `<name>.json` describing them."""
    path = Path(path)
    atomic_write_bytes(path, _safetensors_bytes(dict(model.state_dict()), {"format": "zennas-weights/1"}))
    atomic_write_json(path.with_suffix(".json"), sidecar)


def load_weights(path: str | os.PathLike, model: nn.Module, arch: str) -> nn.Module:
    """Load a `save_weights` file (or any plain safetensors state dict) into `model`, strictly."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"weights load only from .safetensors files (no pickle), got {str(path)!r}")
    load_state_checked(model, _read_safetensors(path), arch)
    return model
