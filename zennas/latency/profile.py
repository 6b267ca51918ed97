"""Build a latency table on the user's own device: which operators to measure, how, and resumably.

Which operators (`space_grid`): every operator of `samples` seeded members of a search space at the
table's resolution, with channel widths snapped onto CHANNEL_GRID (both grid neighbours of a width
between two grid values), so the table can interpolate any member of the space between measured
points; widths below the first grid value (e.g. the RGB input) and sides are kept exact. A space's
width set is too large to measure exhaustively (widths in steps of 8 up to 2048 for ZenNAS), which is
why the grid is declared rather than enumerated.

How (`op_module`): each operator becomes a small module timed by an engine as one network: conv ->
BN -> ReLU (BN folds into the conv in inference engines), a residual-fused conv adds a stored
tensor of its output shape before the ReLU, SE is pool -> 1x1 -> ReLU -> 1x1 -> sigmoid -> scale, the
head is pool -> Linear. For an engine that times operators in context (`engine.times_in_context`,
the onnxruntime `kernels` timer) the module also holds helper convs (parameters named AUX_MARKER)
that give the operator the neighbours it has in a network, and whose own time the engine leaves out:
the residual of a fused conv comes from a 1x1 conv of the input (a graph input would be a constant
and the engine would not fuse the add), and SE and the head read the output of a depthwise 1x1 conv
(SE then writes into another), so the layout conversions a network does around them are timed.

Operators are timed in chunks of `chunk`, each chunk in `rounds` interleaved rounds (Engine.time_many):
on a machine whose speed drifts, an entry is then not decided by the moment it happened to be timed.

Resumably (`profile`): each measured chunk is appended to `<out>.partial.jsonl` and flushed to disk
before the next starts; a rerun reads the partial file (a torn last line is ignored) and any existing
table at `<out>` with the same device/engine/precision/batch, and measures only what is missing. The
table is written atomically at the end and the partial file removed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zennas.counting import conv_out
from zennas.errors import ConfigError, LatencyError
from zennas.io import writable_file
from zennas.latency.engines.ort import AUX_MARKER
from zennas.latency.ops import Op, network_ops
from zennas.latency.table import LatencyTable, check_entry, check_header, load_table, save_table

CHANNEL_GRID = (
    8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048,
    2560, 3072, 4096, 5120, 6144, 7168,
)  # fmt: skip


def snap(channels: int) -> tuple[int, ...]:
    """The grid widths around `channels`: itself if on the grid or below it, else both neighbours."""
    if channels <= CHANNEL_GRID[0] or channels in CHANNEL_GRID:
        return (channels,)
    if channels > CHANNEL_GRID[-1]:
        raise LatencyError(f"width {channels} is beyond the profiling grid (max {CHANNEL_GRID[-1]})")
    upper = next(i for i, c in enumerate(CHANNEL_GRID) if c > channels)
    return CHANNEL_GRID[upper - 1], CHANNEL_GRID[upper]


def se_mid(channels: int) -> int:
    """Squeeze width of a profiled SE entry (c / 4; families differ slightly, the look-up is 1-D in c)."""
    return max(1, round(channels / 4))


def grid_points(op: Op) -> set[Op]:
    """The grid operators a table needs to interpolate `op`."""
    if op.kind == "conv":
        return {op._replace(c_in=a, c_out=b) for a in snap(op.c_in) for b in snap(op.c_out)}
    if op.kind == "dwconv":
        return {op._replace(c_in=c, c_out=c) for c in snap(op.c_in)}
    if op.kind == "se":
        return {op._replace(c_in=c, c_out=se_mid(c)) for c in snap(op.c_in)}
    return {op._replace(c_in=c) for c in snap(op.c_in)}  # head: classes stay exact


def space_grid(space: str, *, resolution: int, num_classes: int, samples: int, seed: int = 0) -> list[Op]:
    """Grid operators covering `samples` seeded members of `space` (sorted, deduplicated)."""
    from zennas.spaces import get_space

    sp = get_space(space)
    rng = np.random.default_rng(seed)
    needed: set[Op] = set()
    for _ in range(samples):
        spec = sp.sample(rng)
        for op in network_ops(spec, resolution=resolution, num_classes=num_classes):
            needed |= grid_points(op)
    return sorted(needed)


_ACT_MODULES = {"relu": nn.ReLU, "hswish": nn.Hardswish, "none": nn.Identity}


class _Conv(nn.Module):
    def __init__(self, op: Op):
        super().__init__()
        groups = op.c_in if op.kind == "dwconv" else 1
        self.conv = nn.Conv2d(op.c_in, op.c_out, op.kernel, op.stride, (op.kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(op.c_out)
        if op.act not in _ACT_MODULES:
            raise ConfigError(f"unknown activation {op.act!r} of {op.describe()}; use one of {', '.join(_ACT_MODULES)}")
        self.act = _ACT_MODULES[op.act]()
        # A buffer, so that .to(device/dtype) moves it with the weights (a plain attribute stayed on the CPU)
        self.register_buffer("residual", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))  # [B, C_out, H', W']
        if self.residual is not None:
            y = y + self.residual
        return self.act(y)


class _SE(nn.Module):
    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))  # [B, C, 1, 1]
        return x * w


class _Head(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))  # [B, classes]


def _pointwise(channels: int) -> nn.Conv2d:
    """A depthwise 1x1 conv: the cheapest conv an engine runs in its network layout."""
    return nn.Conv2d(channels, channels, 1, groups=channels, bias=False)


class _InContext(nn.Module):
    """`op` between helper convs (module docstring); the helpers' parameters carry AUX_MARKER."""

    def __init__(self, op: Op):
        super().__init__()
        helpers: dict[str, nn.Module] = {}
        if op.kind in ("conv", "dwconv"):
            self.op = _Conv(op)
            if op.fused:
                helpers["residual"] = nn.Conv2d(op.c_in, op.c_out, 1, op.stride, bias=False)
        else:
            helpers["before"] = _pointwise(op.c_in)
            self.op = _SE(op.c_in, op.c_out) if op.kind == "se" else _Head(op.c_in, op.c_out)
            if op.kind == "se":
                helpers["after"] = _pointwise(op.c_in)
        for role, helper in helpers.items():  # registered under marked names, read back by role
            self.add_module(f"{AUX_MARKER}_{role}", helper)

    def _helper(self, role: str) -> nn.Module | None:
        return self._modules.get(f"{AUX_MARKER}_{role}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after, residual = self._helper("before"), self._helper("after"), self._helper("residual")
        if residual is not None:
            conv = self.op
            return conv.act(conv.bn(conv.conv(x)) + residual(x))  # [B, C_out, H', W']
        y = self.op(before(x) if before is not None else x)
        return after(y) if after is not None else y


def op_module(op: Op, batch_size: int, *, in_context: bool = False) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """(module, input shape) that times `op` as one network; weights seeded, eval mode.

    in_context: build it with the helper convs of the module docstring (for `engine.times_in_context`).
    """
    if op.kind not in ("conv", "dwconv", "se", "head"):
        raise ConfigError(f"unknown operator kind {op.kind!r}")
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if in_context:
            module: nn.Module = _InContext(op)
        elif op.kind in ("conv", "dwconv"):
            module = _Conv(op)
            if op.fused:
                out_side = conv_out(op.side, op.kernel, op.stride)
                module.register_buffer("residual", torch.randn(batch_size, op.c_out, out_side, out_side, generator=g))
        elif op.kind == "se":
            module = _SE(op.c_in, op.c_out)
        else:
            module = _Head(op.c_in, op.c_out)
    return module.eval(), (batch_size, op.c_in, op.side, op.side)


def row_of(op: Op, batch_size: int, ms: float) -> list[Any]:
    """A table row in COLUMNS order."""
    return [op.kind, batch_size, op.c_in, op.c_out, op.side, op.kernel, op.stride, op.fused, op.act, ms]


def _key(row: list[Any]) -> tuple:
    return tuple(row[:-1])


@dataclass
class ProfileResult:
    """What `profile` did."""

    table: LatencyTable
    measured: int
    reused: int
    seconds: float


def table_destination(path: str | os.PathLike) -> LatencyTable | None:
    """The file a table is about to be written to, checked before any measurement: not a folder, in a
    writable folder (OutputError otherwise), and either absent (None) or a zennas latency table, returned
    (profile extends it, `latency validate --save-fit` replaces it). Any other file there is refused,
    never overwritten."""
    path = writable_file(path)
    if not path.exists():
        return None
    try:
        return load_table(path)
    except LatencyError as exc:
        raise ConfigError(
            f"{str(path)!r} exists and is not a zennas latency table, so it is left as it is; choose another file "
            f"name ({exc})"
        ) from None


def _read_partial(path: Path) -> list[list[Any]]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                check_entry(row)
            except (ValueError, RecursionError, LatencyError):
                continue  # a line torn by an interruption (or not a valid row): that entry is measured again
            rows.append(row)
    return rows


def _compatible(header: dict[str, Any], other: dict[str, Any]) -> bool:
    keys = ("engine", "precision", "batch_sizes")
    device_keys = ("family", "name", "model")
    return all(header.get(k) == other.get(k) for k in keys) and all(
        header["device"].get(k) == other["device"].get(k) for k in device_keys
    )


def profile(
    ops: Iterable[Op],
    engine: Any,
    *,
    batch_size: int,
    out: str | os.PathLike,
    header: dict[str, Any],
    runs: int = 20,
    rounds: int = 1,
    chunk: int = 1,
    min_warmup_ms: float = 50.0,
    min_warmup_runs: int = 3,
    progress: Callable[[int, int, float], None] | None = None,
) -> ProfileResult:
    """Measure every operator of `ops` not yet in `out` (or its partial file) and write the table.

    Each entry is the median of `runs * rounds` runs; `chunk` operators at a time share the rounds.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive int, got {chunk!r}")
    check_header(header)  # a bad name or field is refused now, not when the table is saved after hours
    out = Path(out)
    partial = out.with_name(out.name + ".partial.jsonl")
    ops = list(dict.fromkeys(ops))
    known: dict[tuple, list[Any]] = {}
    header = {**header, "source": dict(header.get("source") or {})}
    previous = table_destination(out)  # before any measurement: a folder, a user's file, no write access
    if previous is not None:
        if not _compatible(header, previous.header):
            raise LatencyError(
                f"{out} holds a table for another device/engine/precision/batch ({previous.describe()}); "
                "choose another --out or delete it"
            )
        known.update((_key(r), r) for r in previous.entries)
        # A table extended by several runs (e.g. one per space) keeps every run's provenance.
        earlier = previous.header.get("source") or {}
        provenance = list(earlier.get("runs") or [{k: earlier.get(k) for k in ("command", "space")}])
        this = {k: header["source"].get(k) for k in ("command", "space")}
        header["source"]["runs"] = provenance if this in provenance else [*provenance, this]
        header["op_kinds"] = sorted(set(header["op_kinds"]) | set(previous.header["op_kinds"]))
        acts = [*(header.get("activations") or ["relu"]), *(previous.header.get("activations") or ["relu"])]
        header["activations"] = sorted(set(acts))
    known.update((_key(r), r) for r in _read_partial(partial))
    todo = [op for op in ops if _key(row_of(op, batch_size, 0.0)) not in known]
    reused = len(ops) - len(todo)
    start = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    in_context = engine.times_in_context
    with open(partial, "a", encoding="utf-8") as log:
        for first in range(0, len(todo), chunk):
            batch_ops = todo[first : first + chunk]
            timings = engine.time_many(
                [op_module(op, batch_size, in_context=in_context) for op in batch_ops],
                runs=runs, rounds=rounds, min_warmup_ms=min_warmup_ms, min_warmup_runs=min_warmup_runs,
            )  # fmt: skip
            rows = [row_of(op, batch_size, round(t.ms_per_batch, 6)) for op, t in zip(batch_ops, timings, strict=True)]
            log.write("".join(json.dumps(row) + "\n" for row in rows))
            log.flush()
            os.fsync(log.fileno())  # an interruption after this line loses nothing measured so far
            known.update((_key(row), row) for row in rows)
            if progress is not None:
                progress(first + len(batch_ops), len(todo), time.monotonic() - start)
    header["entries_measured_this_run"] = len(todo)
    table = save_table(out, header, list(known.values()))
    partial.unlink(missing_ok=True)
    return ProfileResult(table, len(todo), reused, time.monotonic() - start)


def table_header(
    *,
    name: str,
    engine: Any,
    batch_size: int,
    resolution: int,
    space: str | None,
    op_kinds: Iterable[str],
    command: str,
    activations: Iterable[str] = ("relu",),
) -> dict[str, Any]:
    """Header of a profiled table: device identity, engine versions, precision, batch, date, provenance."""
    identity = engine.identity()
    device = {k: v for k, v in identity.items() if not isinstance(v, dict | list)}
    if engine.device == "cpu":
        device.setdefault("family", "CPU")
    return {
        "name": name,
        "description": f"{engine.name} {engine.precision} on {device.get('name') or device.get('model', '?')}",
        "device": device,
        "engine": engine.name,
        "engine_options": {k: v for k, v in engine.options.items() if isinstance(v, str | int | float | bool)},
        "versions": engine.versions(),
        "precision": engine.precision,
        "batch_sizes": [batch_size],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "unit": "ms_per_batch",
        "op_kinds": sorted(set(op_kinds)),
        "activations": sorted(set(activations)),
        "budget": {
            "batch_size": batch_size,
            "resolution": resolution,
            "meaning": f"ms per image at batch {batch_size}",
        },
        "source": {"measured_by": "zennas profile", "command": command, "space": space},
        "correction": None,
    }
