"""Latency tables: a versioned JSON format (optionally gzip-compressed, never pickle) and its look-up.

File layout (format "zennas-latency-table", version 2)::

    {"format": "zennas-latency-table", "version": 2,
     "header": {"name", "description", "device": {...}, "engine", "versions": {...}, "precision",
                "batch_sizes": [...], "date", "unit": "ms_per_batch", "op_kinds": [...],
                "activations": [...], "budget": {"batch_size", "resolution", "meaning"},
                "source": {...}, "correction": null | {"intercept_ms", "slope", ...}},
     "columns": ["kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "act", "ms"],
     "entries": [["conv", 32, 64, 64, 56, 3, 1, 0, "relu", 0.11991], ...]}

Version 1 files (no `act` column) are read as tables whose every conv has a ReLU. A table costs a conv
whose activation it did not measure (header `activations`, default ["relu"]) as the ReLU conv of the
same shape: the published TinyNAS V100 table, for one, timed conv + BN + ReLU only.

An entry is the median time of one operator (zennas.latency.ops.Op) for a whole batch, in
milliseconds. Look-up (documented in `LatencyTable.op_ms`): an exact key first; otherwise piecewise
linear interpolation between the neighbouring grid points -- in input channels at each tabulated
output width, then in output width (depthwise convs and SE: in width alone), then in pixel count
between the two tabulated sides -- so a
prediction always lies between the entries around it (monotone between grid points). A coordinate
outside the grid but within a factor EXTRAPOLATION_LIMIT of its edge is scaled proportionally from
the edge (and counted as extrapolated); farther out is a LatencyError naming the operator.
Batch sizes are never interpolated or scaled: small operators batch far from linearly.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zennas.errors import LatencyError
from zennas.io import atomic_write_bytes
from zennas.latency.ops import ACTIVATIONS, OP_KINDS, Op

FORMAT = "zennas-latency-table"
VERSION = 2
COLUMNS = ("kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "act", "ms")
COLUMNS_V1 = ("kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "ms")
EXTRAPOLATION_LIMIT = 4.0  # how far (as a ratio) outside a grid edge a coordinate may be scaled from it
ONE_D_KINDS = ("dwconv", "se")  # looked up by input width alone
REQUIRED_HEADER = ("name", "device", "engine", "precision", "batch_sizes", "unit", "op_kinds")


@dataclass
class _Curve:
    """ms as a function of c_in at one (group, side, c_out): sorted c_in and their ms."""

    c_in: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)


def _interp(xs: list[int] | list[float], ys: list[float], x: float) -> tuple[float, bool] | None:
    """Piecewise-linear y(x); proportional scaling from the edge within the limit; None if farther."""
    if x < xs[0]:
        if x * EXTRAPOLATION_LIMIT < xs[0]:
            return None
        return ys[0] * x / xs[0], True
    if x > xs[-1]:
        if x > xs[-1] * EXTRAPOLATION_LIMIT:
            return None
        return ys[-1] * x / xs[-1], True
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return ys[i], False
    x0, x1 = xs[i - 1], xs[i]
    t = (x - x0) / (x1 - x0)
    return ys[i - 1] + t * (ys[i] - ys[i - 1]), False


class LatencyTable:
    """A loaded table: header, entries and a memoised operator look-up."""

    def __init__(self, header: dict[str, Any], entries: list[list[Any]], path: Path | None = None):
        _check_header(header, path)
        self.header = header
        self.path = path
        self.entries = entries
        self._exact: dict[tuple, float] = {}
        # (kind, batch, kernel, stride, fused) -> side -> c_out -> curve over c_in
        self._grid: dict[tuple, dict[int, dict[int, _Curve]]] = defaultdict(lambda: defaultdict(dict))
        for row in entries:
            kind, batch, c_in, c_out, side, kernel, stride, fused, act, ms = row
            key = (kind, batch, kernel, stride, fused, act)
            self._exact[(*key, c_in, c_out, side)] = ms
            curve = self._grid[key][side].setdefault(c_out, _Curve())
            curve.c_in.append(c_in)
            curve.ms.append(ms)
        self._sides: dict[tuple, list[int]] = {}
        self._c_outs: dict[tuple, list[int]] = {}
        for key, by_side in self._grid.items():
            self._sides[key] = sorted(by_side)
            for side, by_out in by_side.items():
                self._c_outs[(*key, side)] = sorted(by_out)
                for curve in by_out.values():
                    order = sorted(range(len(curve.c_in)), key=curve.c_in.__getitem__)
                    curve.c_in = [curve.c_in[i] for i in order]
                    curve.ms = [curve.ms[i] for i in order]
        self._memo: dict[tuple[Op, int], tuple[float, bool]] = {}
        # zennas.latency.predict memoises per-block sums here:
        # (id(block operators), batch) -> (block operators, ms, extrapolated, {kind: not costed})
        self.group_memo: dict[tuple[int, int], tuple] = {}
        self._op_kinds = tuple(header["op_kinds"])
        self._activations = frozenset(header.get("activations") or ("relu",))

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.header["name"]

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.header["batch_sizes"])

    @property
    def op_kinds(self) -> tuple[str, ...]:
        return self._op_kinds

    @property
    def correction(self) -> dict[str, Any] | None:
        return self.header.get("correction")

    def default_batch_size(self) -> int:
        """The batch a budget refers to (header budget), else the only or largest tabulated batch."""
        budget = self.header.get("budget") or {}
        return int(budget.get("batch_size") or max(self.batch_sizes))

    def describe(self) -> str:
        """One line: name, device, engine, precision, batches."""
        device = self.header["device"].get("family") or self.header["device"].get("name", "?")
        batches = "/".join(str(b) for b in self.batch_sizes)
        return f"{self.name}: {device}, {self.header['engine']} {self.header['precision']}, batch {batches}"

    # -- look-up ----------------------------------------------------------------------------------
    def op_ms(self, op: Op, batch_size: int) -> tuple[float, bool]:
        """(ms per batch, extrapolated?) of one operator; LatencyError when the table cannot cover it."""
        hit = self._memo.get((op, batch_size))
        if hit is not None:
            return hit
        result = self._lookup(op, batch_size)
        self._memo[(op, batch_size)] = result
        return result

    def _lookup(self, op: Op, batch_size: int) -> tuple[float, bool]:
        if batch_size not in self.header["batch_sizes"]:
            raise LatencyError(
                f"table {self.name!r} has no batch size {batch_size}; it was measured at batch "
                f"{', '.join(map(str, self.batch_sizes))} (batch sizes are never scaled): pick one of those "
                "or profile a table at this batch with `zennas profile --batch-size`"
            )
        act = op.act if op.act in self._activations else "relu"  # see the module docstring
        key = (op.kind, batch_size, op.kernel, op.stride, op.fused, act)
        if op.kind == "dwconv" and op.fused and key not in self._sides:
            key = (op.kind, batch_size, op.kernel, op.stride, 0, act)  # tables without fused depthwise rows
        exact = self._exact.get((*key, op.c_in, op.c_out, op.side))
        if exact is not None:
            return exact, False
        sides = self._sides.get(key)
        if sides is None:
            raise self._outside(op, batch_size, f"no {op.kind} entries with kernel {op.kernel}, stride {op.stride}")
        # Interpolate in pixel count between the two tabulated sides around op.side.
        pixels = op.side * op.side
        i = bisect.bisect_left(sides, op.side)
        if i < len(sides) and sides[i] == op.side:
            neighbours = [sides[i]]
        elif 0 < i < len(sides):
            neighbours = [sides[i - 1], sides[i]]
        else:
            edge = sides[0] if i == 0 else sides[-1]
            ratio = op.side / edge
            if not 1 / EXTRAPOLATION_LIMIT <= ratio <= EXTRAPOLATION_LIMIT:
                raise self._outside(op, batch_size, f"side {op.side} (tabulated {sides[0]}..{sides[-1]})")
            value, _ = self._at_side(op, key, edge, batch_size)
            return value * ratio * ratio, True
        values, extrapolated = [], False
        for side in neighbours:
            value, flag = self._at_side(op, key, side, batch_size)
            values.append(value)
            extrapolated |= flag
        if len(values) == 1:
            return values[0], extrapolated
        p0, p1 = neighbours[0] ** 2, neighbours[1] ** 2
        return values[0] + (pixels - p0) / (p1 - p0) * (values[1] - values[0]), extrapolated

    def _at_side(self, op: Op, key: tuple, side: int, batch_size: int) -> tuple[float, bool]:
        """ms at one tabulated side: linear in c_in at each neighbouring c_out, then linear in c_out."""
        c_outs = self._c_outs[(*key, side)]
        by_out = self._grid[key][side]
        if op.kind in ONE_D_KINDS:  # depthwise (c_in = c_out) and SE (c_out = squeeze width): 1-D in c_in
            points = sorted(
                (c_in, ms) for curve in by_out.values() for c_in, ms in zip(curve.c_in, curve.ms, strict=True)
            )
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            hit = _interp(xs, ys, op.c_in)
            if hit is None:
                raise self._outside(op, batch_size, f"width {op.c_in} at side {side} (tabulated {xs[0]}..{xs[-1]})")
            return hit
        i = bisect.bisect_left(c_outs, op.c_out)
        if i < len(c_outs) and c_outs[i] == op.c_out:
            neighbours = [op.c_out]
        elif 0 < i < len(c_outs):
            neighbours = [c_outs[i - 1], c_outs[i]]
        else:
            edge = c_outs[0] if i == 0 else c_outs[-1]
            ratio = op.c_out / edge
            if not 1 / EXTRAPOLATION_LIMIT <= ratio <= EXTRAPOLATION_LIMIT:
                raise self._outside(
                    op, batch_size, f"output width {op.c_out} at side {side} (tabulated {c_outs[0]}..{c_outs[-1]})"
                )
            value, _ = self._along_c_in(op, by_out[edge], edge, side, batch_size)
            return value * ratio, True
        values, extrapolated = [], False
        for c_out in neighbours:
            value, flag = self._along_c_in(op, by_out[c_out], c_out, side, batch_size)
            values.append(value)
            extrapolated |= flag
        if len(values) == 1:
            return values[0], extrapolated
        t = (op.c_out - neighbours[0]) / (neighbours[1] - neighbours[0])
        return values[0] + t * (values[1] - values[0]), extrapolated

    def _along_c_in(self, op: Op, curve: _Curve, c_out: int, side: int, batch_size: int) -> tuple[float, bool]:
        hit = _interp(curve.c_in, curve.ms, op.c_in)
        if hit is None:
            raise self._outside(
                op,
                batch_size,
                f"input width {op.c_in} for output width {c_out} at side {side} "
                f"(tabulated {curve.c_in[0]}..{curve.c_in[-1]})",
            )
        return hit

    def _outside(self, op: Op, batch_size: int, what: str) -> LatencyError:
        return LatencyError(
            f"{op.describe()} at batch {batch_size} is outside latency table {self.name!r}: {what}; "
            "profile a table that covers it (`zennas profile`) or choose an architecture inside the table's grid"
        )


def _check_header(header: dict[str, Any], path: Path | None) -> None:
    where = f" in {path}" if path else ""
    missing = [k for k in REQUIRED_HEADER if k not in header]
    if missing:
        raise LatencyError(f"latency table header{where} lacks {', '.join(missing)}; regenerate the table")
    unknown = set(header["op_kinds"]) - set(OP_KINDS)
    if unknown:
        raise LatencyError(f"latency table{where} declares unknown operator kinds {sorted(unknown)}")
    unknown = set(header.get("activations") or ()) - set(ACTIVATIONS)
    if unknown:
        raise LatencyError(f"latency table{where} declares unknown activations {sorted(unknown)}")
    if header["unit"] != "ms_per_batch":
        raise LatencyError(f"latency table{where} has unit {header['unit']!r}; zennas tables store ms_per_batch")


def _check_entries(entries: Any, path: Path | None) -> list[list[Any]]:
    where = f" in {path}" if path else ""
    if not isinstance(entries, list):
        raise LatencyError(f"latency table{where}: 'entries' must be a list of rows")
    for n, row in enumerate(entries):
        if not isinstance(row, list) or len(row) != len(COLUMNS):
            raise LatencyError(f"latency table{where}: entry {n} is not a row of {len(COLUMNS)} values ({COLUMNS})")
        ms = row[-1]
        if row[0] not in OP_KINDS or row[-2] not in ACTIVATIONS or not isinstance(ms, int | float) or not ms > 0:
            raise LatencyError(
                f"latency table{where}: entry {n} {row!r} needs a known kind, a known activation and a positive ms"
            )
    return entries


def _open_text(path: Path, mode: str):
    return gzip.open(path, mode + "t", encoding="utf-8") if path.suffix == ".gz" else open(path, mode, encoding="utf-8")


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table file (.json or .json.gz); any defect is a LatencyError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise LatencyError(f"latency table {path} does not exist; list the shipped ones with `zennas tables`")
    try:
        with _open_text(path, "r") as f:
            data = json.load(f)
    except (OSError, EOFError, ValueError) as exc:
        raise LatencyError(f"latency table {path} is not readable JSON ({exc}); regenerate it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LatencyError(f"{path} is not a zennas latency table (format {FORMAT!r} expected)")
    version, columns, entries = data.get("version"), tuple(data.get("columns", ())), data.get("entries")
    if version not in (1, VERSION):
        raise LatencyError(f"latency table {path} has format version {version}; this zennas reads 1 and {VERSION}")
    expected = COLUMNS if version == VERSION else COLUMNS_V1
    if columns != expected:
        raise LatencyError(f"latency table {path} has columns {list(columns)}; version {version} has {list(expected)}")
    if version == 1 and isinstance(entries, list):  # every conv of a version-1 table has a ReLU
        entries = [[*row[:-1], "relu", row[-1]] if isinstance(row, list) and row else row for row in entries]
    return LatencyTable(data["header"], _check_entries(entries, path), path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON (gzip when the name ends in .gz) through a temporary file and an atomic rename."""
    if Path(path).suffix == ".gz":
        body = gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)
    else:
        body = json.dumps(data, indent=1).encode()
    atomic_write_bytes(path, body)


def save_table(path: str | os.PathLike, header: dict[str, Any], entries: list[list[Any]]) -> LatencyTable:
    """Validate and write a table atomically; returns it loaded."""
    path = Path(path)
    _check_header(header, path)
    entries = sorted(_check_entries(entries, path), key=lambda row: tuple(row[:-1]))
    data = {"format": FORMAT, "version": VERSION, "header": header, "columns": list(COLUMNS), "entries": entries}
    write_json_atomic(path, data)
    return LatencyTable(header, entries, path)
