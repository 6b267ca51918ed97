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

An engine without such a timer (torch, onnxruntime's host timer, TensorRT) times an operator in context
by subtraction (`subtracted_pair`): every operator gets a helper before it (so it reads an input just
written by another kernel, as in a network), and its entry is the median time of the module minus that
of its helpers-only twin, timed in the same rounds. With CUDA-graph replay this also cancels the cost
of launching the graph, which a network pays once rather than per operator. A difference that noise
drives to zero or below is recorded as FLOOR_MS and counted (`ProfileResult.floored`).

Operators are timed in chunks of `chunk`, each chunk in `rounds` interleaved rounds (Engine.time_many):
on a machine whose speed drifts, an entry is then not decided by the moment it happened to be timed.

With `by_member=True`, `space_grid` lists the operators member by member (each member's new operators,
sorted), so a profile cut short by a limit or a deadline covers whole networks rather than the small
widths of every network.

Resumably (`profile`): each measured chunk is appended to `<out>.partial.jsonl` and flushed to disk
before the next starts; a rerun reads the partial file (a torn last line is ignored) and any existing
table at `<out>` with the same device/engine/precision/batch/timing, and measures only what is missing.
The table is written atomically at the end (or when `time_limit_s` has passed, with what was measured:
a rerun extends it) and the partial file removed.
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
from zennas.latency.table import (
    MIN_MS,
    LatencyTable,
    check_entry,
    check_header,
    load_table,
    save_table,
    table_timing,
)

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


def space_grid(
    space: str, *, resolution: int, num_classes: int, samples: int, seed: int = 0, by_member: bool = False
) -> list[Op]:
    """Grid operators covering `samples` seeded members of `space`, deduplicated: sorted, or by member."""
    from zennas.spaces import get_space

    sp = get_space(space)
    rng = np.random.default_rng(seed)
    needed: dict[Op, None] = {}
    for _ in range(samples):
        spec = sp.sample(rng)
        new: set[Op] = set()
        for op in network_ops(spec, resolution=resolution, num_classes=num_classes):
            new |= grid_points(op)
        needed.update(dict.fromkeys(sorted(new - needed.keys())))
    return list(needed) if by_member else sorted(needed)


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
    """`op` between helper convs (module docstring); the helpers' parameters carry AUX_MARKER.

    before_every_op: give convs a helper before them too (timing by subtraction); timed=False: the
    helpers-only twin, which has the same helpers and no operator.
    """

    def __init__(self, op: Op, *, before_every_op: bool = False, timed: bool = True):
        super().__init__()
        self.timed = timed
        helpers: dict[str, nn.Module] = {}
        if op.kind in ("conv", "dwconv"):
            self.op = _Conv(op) if timed else None
            if before_every_op:
                helpers["before"] = _pointwise(op.c_in)
            if op.fused:
                helpers["residual"] = nn.Conv2d(op.c_in, op.c_out, 1, op.stride, bias=False)
        else:
            helpers["before"] = _pointwise(op.c_in)
            if not timed:
                self.op = None
            elif op.kind == "se":
                self.op = _SE(op.c_in, op.c_out)
            else:
                self.op = _Head(op.c_in, op.c_out)
            if op.kind == "se":
                helpers["after"] = _pointwise(op.c_in)
        for role, helper in helpers.items():  # registered under marked names, read back by role
            self.add_module(f"{AUX_MARKER}_{role}", helper)

    def _helper(self, role: str) -> nn.Module | None:
        return self._modules.get(f"{AUX_MARKER}_{role}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after, residual = self._helper("before"), self._helper("after"), self._helper("residual")
        if before is not None:
            x = before(x)
        if not self.timed:
            y = residual(x) if residual is not None else x
        elif residual is not None:
            conv = self.op
            y = conv.act(conv.bn(conv.conv(x)) + residual(x))  # [B, C_out, H', W']
        else:
            y = self.op(x)
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


def subtracted_pair(op: Op, batch_size: int, *, timed: bool = True) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """(module, input shape) for timing `op` in context by subtraction; timed=False: its helpers-only twin."""
    if op.kind not in ("conv", "dwconv", "se", "head"):
        raise ConfigError(f"unknown operator kind {op.kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _InContext(op, before_every_op=True, timed=timed)
    return module.eval(), (batch_size, op.c_in, op.side, op.side)


def _twin_key(op: Op) -> tuple:
    """Operators whose helpers-only twins are the same network share one twin per chunk."""
    residual = (op.c_out, op.stride) if op.kind in ("conv", "dwconv") and op.fused else None
    return op.c_in, op.side, residual, op.kind == "se"


def row_of(op: Op, batch_size: int, ms: float) -> list[Any]:
    """A table row in COLUMNS order."""
    return [op.kind, batch_size, op.c_in, op.c_out, op.side, op.kernel, op.stride, op.fused, op.act, ms]


def _key(row: list[Any]) -> tuple:
    return tuple(row[:-1])


FLOOR_MS = max(1e-6, MIN_MS)  # an in-context difference at or below zero: nothing measurable there


@dataclass
class ProfileResult:
    """What `profile` did; `remaining`: operators left unmeasured when the time limit ended it."""

    table: LatencyTable
    measured: int
    reused: int
    seconds: float
    floored: int = 0
    remaining: int = 0


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
    timing_keys = ("mode", "operators")
    mine, theirs = table_timing(header), table_timing(other)
    return (
        all(header.get(k) == other.get(k) for k in keys)
        and all(header["device"].get(k) == other["device"].get(k) for k in device_keys)
        and all(mine.get(k) == theirs.get(k) for k in timing_keys)
    )


def _measure_chunk(engine: Any, ops: list[Op], batch_size: int, in_context: bool, **timing: Any) -> list[float]:
    """ms per batch of each operator of `ops`, timed together in interleaved rounds.

    In context on an engine that cannot leave helpers out itself, an operator's figure is its module's
    median minus that of its helpers-only twin (one twin per `_twin_key` in the chunk).
    """
    if not in_context or engine.times_in_context:
        models = [op_module(op, batch_size, in_context=in_context) for op in ops]
        return [t.ms_per_batch for t in engine.time_many(models, **timing)]
    twins = {_twin_key(op): op for op in ops}  # key -> one operator whose twin serves them all
    models = [subtracted_pair(op, batch_size) for op in ops]
    models += [subtracted_pair(op, batch_size, timed=False) for op in twins.values()]
    timings = engine.time_many(models, **timing)
    helpers_ms = {key: t.ms_per_batch for key, t in zip(twins, timings[len(ops) :], strict=True)}
    return [t.ms_per_batch - helpers_ms[_twin_key(op)] for op, t in zip(ops, timings[: len(ops)], strict=True)]


def default_in_context(engine: Any) -> bool:
    """Whether `profile` times operators in context by default: with a timer that leaves helpers out
    (onnxruntime kernels) and with the torch engine on CUDA; alone otherwise."""
    return bool(engine.times_in_context) or (engine.name == "torch" and engine.device != "cpu")


def timing_record(engine: Any, *, in_context: bool | None = None) -> dict[str, Any]:
    """The header `timing` of a table profiled with `engine` (in_context None: `default_in_context`)."""
    if in_context is None:
        in_context = default_in_context(engine)
    if engine.times_in_context and not in_context:
        raise ConfigError(
            f"{engine.name} engine: its timer leaves helper operators out, so it times operators in context only; "
            "use another timer to time them alone"
        )
    record: dict[str, Any] = {
        "mode": "graph" if engine.options.get("cuda_graph") else "eager",
        "operators": "in-context" if in_context else "alone",
    }
    if in_context:
        record["helpers"] = (
            "left out by the engine's timer"
            if engine.times_in_context
            else "subtracted: each operator minus its helpers-only twin, timed in the same rounds"
        )
    return record


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
    time_limit_s: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> ProfileResult:
    """Measure every operator of `ops` not yet in `out` (or its partial file) and write the table.

    Each entry is the median of `runs * rounds` runs; `chunk` operators at a time share the rounds.
    Operators are timed in context when the header's timing says so (`timing_record`). After
    `time_limit_s` seconds no new chunk starts and the table is written with what was measured.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive int, got {chunk!r}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ConfigError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
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
                f"{out} holds a table for another device/engine/precision/batch/timing ({previous.describe()}); "
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
    in_context = engine.times_in_context or table_timing(header)["operators"] == "in-context"
    measured = floored = 0
    with open(partial, "a", encoding="utf-8") as log:
        for first in range(0, len(todo), chunk):
            if time_limit_s is not None and time.monotonic() - start > time_limit_s:
                break
            batch_ops = todo[first : first + chunk]
            figures = _measure_chunk(
                engine, batch_ops, batch_size, in_context,
                runs=runs, rounds=rounds, min_warmup_ms=min_warmup_ms, min_warmup_runs=min_warmup_runs,
            )  # fmt: skip
            floored += sum(ms <= FLOOR_MS for ms in figures)
            rows = [
                row_of(op, batch_size, round(max(ms, FLOOR_MS), 6)) for op, ms in zip(batch_ops, figures, strict=True)
            ]
            measured += len(batch_ops)
            log.write("".join(json.dumps(row) + "\n" for row in rows))
            log.flush()
            os.fsync(log.fileno())  # an interruption after this line loses nothing measured so far
            known.update((_key(row), row) for row in rows)
            if progress is not None:
                progress(first + len(batch_ops), len(todo), time.monotonic() - start)
    header["entries_measured_this_run"] = measured
    if in_context and not engine.times_in_context:
        header["entries_floored_this_run"] = floored
    table = save_table(out, header, list(known.values()))
    partial.unlink(missing_ok=True)
    return ProfileResult(table, measured, reused, time.monotonic() - start, floored, len(todo) - measured)


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
    in_context: bool | None = None,
) -> dict[str, Any]:
    """Header of a profiled table: device identity, engine versions, precision, batch, timing, date, provenance.

    in_context: time operators in context (None: `default_in_context(engine)`); recorded in `timing`.
    """
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
        "timing": timing_record(engine, in_context=in_context),
        "correction": None,
    }
