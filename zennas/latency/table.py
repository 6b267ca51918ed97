"""Latency tables: a versioned JSON format (optionally gzip-compressed, never pickle) and its look-up.

File layout (format "zennas-latency-table", version 2)::

    {"format": "zennas-latency-table", "version": 2,
     "header": {"name", "description", "device": {...}, "engine", "versions": {...}, "precision",
                "batch_sizes": [...], "date", "unit": "ms_per_batch", "op_kinds": [...],
                "activations": [...], "budget": {"batch_size", "resolution", "meaning"},
                "source": {...}, "timing": {"mode", "operators", ...},
                "correction": null | {"intercept_ms", "slope", ...}},
     "columns": ["kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "act", "ms"],
     "entries": [["conv", 32, 64, 64, 56, 3, 1, 0, "relu", 0.11991], ...]}

The header's `timing` says how the entries were timed: `mode` "graph" (one CUDA-graph replay per run,
so the host's launch gaps are gone, as in a deployed network) or "eager" (each kernel launched by the
host), and `operators` "in-context" (between helper neighbours whose own time is left out) or
"alone". Tables written before the field existed are read as what they were (`table_timing`): eager
unless their engine options say cuda_graph, in context when they were timed with the kernels timer.

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

A table is data from outside, so every field is checked at load (`check_header`, `_check_entries`):
a name that can be part of a file name, finite positive entries of integer sizes within
MAX_DIMENSION, positive integer batch sizes, and a correction that keeps every latency finite and
positive. `LatencyTable.sha256` is the digest of the file's bytes, so that a search can pin the
table it ran against.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import io
import json
import math
import os
import re
import reprlib
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zennas.errors import LatencyError
from zennas.io import atomic_write_bytes, parse_json_text
from zennas.latency.ops import ACTIVATIONS, OP_KINDS, Op

FORMAT = "zennas-latency-table"
VERSION = 2
COLUMNS = ("kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "act", "ms")
COLUMNS_V1 = ("kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "ms")
EXTRAPOLATION_LIMIT = 4.0  # how far (as a ratio) outside a grid edge a coordinate may be scaled from it
ONE_D_KINDS = ("dwconv", "se")  # looked up by input width alone
REQUIRED_HEADER = ("name", "device", "engine", "precision", "batch_sizes", "unit", "op_kinds")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a table name becomes part of file names
MAX_DIMENSION = 1 << 20  # batch, channels, side, kernel, stride: far beyond any network, far below overflow
MIN_MS, MAX_MS = 1e-9, 1e9  # an entry between a picosecond and 11 days: sums and scalings stay finite
MAX_SLOPE = 1e6
MAX_TABLE_BYTES = 256 << 20  # uncompressed; the V100 table is about 6 MB
TIMING_MODES = ("graph", "eager")
OPERATOR_TIMINGS = ("in-context", "alone")


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
    """A loaded table: header, entries and a memoised operator look-up.

    `path` is the file it was read from (or written to), `sha256` the digest of that file's bytes,
    and `source` how a search names it: the shipped table name, or the file's absolute path.
    """

    def __init__(
        self, header: dict[str, Any], entries: list[list[Any]], path: Path | None = None, *, sha256: str | None = None
    ):
        check_header(header, path)
        _check_entries(entries, path)
        self.header = header
        self.path = path
        self.sha256 = sha256
        self.source = str(Path(path).resolve()) if path is not None else None
        self.entries = entries
        self._exact: dict[tuple, float] = {}
        # (kind, batch, kernel, stride, fused) -> side -> c_out -> curve over c_in
        self._grid: dict[tuple, dict[int, dict[int, _Curve]]] = defaultdict(lambda: defaultdict(dict))
        for n, row in enumerate(entries):
            kind, batch, c_in, c_out, side, kernel, stride, fused, act, ms = row
            key = (kind, batch, kernel, stride, fused, act)
            if (*key, c_in, c_out, side) in self._exact:  # two figures for one operator: which is right?
                raise LatencyError(
                    f"latency table{' in ' + str(path) if path else ''}: entry {n} {row[:-1]} repeats the operator "
                    "of an earlier entry; keep one measurement per operator"
                )
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
        return budget.get("batch_size") or max(self.batch_sizes)

    def batch_size_or_default(self, batch_size: int | None) -> int:
        """`batch_size` when one is given, else the table's budget batch: one rule for every caller."""
        return self.default_batch_size() if batch_size is None else batch_size

    @property
    def timing(self) -> dict[str, Any]:
        """How the entries were timed (`table_timing`)."""
        return table_timing(self.header)

    @property
    def device_kind(self) -> str:
        """The device kind the table was measured on, cuda or cpu (`table_device_kind`)."""
        return table_device_kind(self.header)

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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 10, 6, 40, 40, 40


def _show(value: Any) -> str:
    """A bounded repr for error messages: a tampered value may be huge or deeply nested."""
    return _REPR.repr(value)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _is_int(value: Any, high: int = MAX_DIMENSION) -> bool:
    """A JSON integer (not a boolean) from 1 to `high`."""
    return type(value) is int and 1 <= value <= high


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a boolean)."""
    return type(value) in (int, float) and math.isfinite(value)


def _bad(where: str, field: str, value: Any, need: str) -> LatencyError:
    return LatencyError(f"latency table{where} has {field} {_show(value)}; it must be {need}: fix or regenerate it")


def check_table_name(name: Any, where: str = "") -> str:
    """`name` when it is a valid table name, else a LatencyError (a table's name becomes part of file names)."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise LatencyError(
            f"latency table{where} has name {_show(name)}; a table name is 1 to 100 letters, digits, '.', '_' "
            "or '-' starting with a letter or digit (it becomes part of file names)"
        )
    return name


def check_header(header: Any, path: Path | None = None) -> None:
    """A LatencyError naming the first header field that is missing, mistyped or out of range."""
    where = f" in {path}" if path else ""
    if not isinstance(header, dict):
        raise LatencyError(f"latency table{where}: 'header' must be an object, not {_json_type(header)}")
    missing = [k for k in REQUIRED_HEADER if k not in header]
    if missing:
        raise LatencyError(f"latency table header{where} lacks {', '.join(missing)}; regenerate the table")
    check_table_name(header["name"], where)
    for key in ("engine", "precision", "unit", "description", "date"):
        if (key in REQUIRED_HEADER or header.get(key) is not None) and not isinstance(header[key], str):
            raise _bad(where, key, header[key], "a string")
    if header["unit"] != "ms_per_batch":
        raise LatencyError(f"latency table{where} has unit {header['unit']!r}; zennas tables store ms_per_batch")
    for key in ("device", "versions", "engine_options", "source", "budget", "correction"):
        if (key == "device" or header.get(key) is not None) and not isinstance(header[key], dict):
            raise _bad(where, key, header[key], "an object")
    for key in ("family", "name"):
        if header["device"].get(key) is not None and not isinstance(header["device"][key], str):
            raise _bad(where, f"device {key}", header["device"][key], "a string")
    engine_options = header.get("engine_options") or {}
    threads = engine_options.get("threads")
    if threads is not None and not _is_int(threads, 4096):
        raise _bad(where, "engine_options threads", threads, "an integer from 1 to 4096")
    for key in ("exporter", "timer"):
        if engine_options.get(key) is not None and not isinstance(engine_options[key], str):
            raise _bad(where, f"engine_options {key}", engine_options[key], "a string")
    _check_vocabulary(header, where)
    _check_timing(header.get("timing"), where)
    batches = header["batch_sizes"]
    if not isinstance(batches, list) or not batches or not all(_is_int(b) for b in batches):
        raise _bad(where, "batch_sizes", batches, f"a non-empty list of integers from 1 to {MAX_DIMENSION}")
    budget = header.get("budget") or {}
    if budget.get("batch_size") is not None and not (_is_int(budget["batch_size"]) and budget["batch_size"] in batches):
        raise _bad(where, "budget batch_size", budget["batch_size"], f"one of the table's batch_sizes {batches}")
    if budget.get("resolution") is not None and not _is_int(budget["resolution"]):
        raise _bad(where, "budget resolution", budget["resolution"], f"an integer from 1 to {MAX_DIMENSION}")
    _check_correction(header.get("correction"), where)


def table_timing(header: dict[str, Any]) -> dict[str, Any]:
    """The header's `timing`, or for a table written before it existed what its engine options imply."""
    timing = header.get("timing")
    if timing is not None:
        return timing
    options = header.get("engine_options") or {}
    return {
        "mode": "graph" if options.get("cuda_graph") else "eager",
        "operators": "in-context" if options.get("timer") == "kernels" else "alone",
    }


_GPU_FAMILY = re.compile(r"(G?[ABHLPTV]\d+[A-Z]*|RTX\w+)")  # zennas.latency.device family names


def table_device_kind(header: dict[str, Any]) -> str:
    """cuda or cpu: the header's device kind, else cuda for a TensorRT table or a GPU family name."""
    device = header.get("device") or {}
    if device.get("kind") in ("cpu", "cuda"):
        return device["kind"]
    family = str(device.get("family") or "")
    gpu = header.get("engine") == "tensorrt" or _GPU_FAMILY.fullmatch(family) is not None
    return "cuda" if gpu else "cpu"


def _check_timing(timing: Any, where: str) -> None:
    """A timing object whose mode and operators are known values."""
    if timing is None:
        return
    if not isinstance(timing, dict):
        raise _bad(where, "timing", timing, "an object")
    if timing.get("mode") not in TIMING_MODES:
        raise _bad(where, "timing mode", timing.get("mode"), f"one of {', '.join(TIMING_MODES)}")
    if timing.get("operators") not in OPERATOR_TIMINGS:
        raise _bad(where, "timing operators", timing.get("operators"), f"one of {', '.join(OPERATOR_TIMINGS)}")


def _check_vocabulary(header: dict[str, Any], where: str) -> None:
    """op_kinds: a non-empty list of known kinds; activations: null or a list of known activations."""
    kinds, acts = header["op_kinds"], header.get("activations")
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise _bad(where, "op_kinds", kinds, f"a non-empty list of operator kinds ({', '.join(OP_KINDS)})")
    unknown = set(kinds) - set(OP_KINDS)
    if unknown:
        raise LatencyError(f"latency table{where} declares unknown operator kinds {sorted(unknown)}")
    if acts is not None and (not isinstance(acts, list) or not all(isinstance(a, str) for a in acts)):
        raise _bad(where, "activations", acts, f"null or a list of activations ({', '.join(ACTIVATIONS)})")
    unknown = set(acts or ()) - set(ACTIVATIONS)
    if unknown:
        raise LatencyError(f"latency table{where} declares unknown activations {sorted(unknown)}")


def _check_correction(correction: Any, where: str) -> None:
    """A correction intercept_ms + slope x sum: finite numbers, the slope positive (latency grows with the sum).

    The intercept may be negative (a table timed operator by operator over-predicts small networks, whose
    launch gaps hide in a whole network); a corrected latency that is not positive is refused where it is
    computed (zennas.latency.predict.apply_correction), never used.
    """
    if correction is None:
        return
    intercept, slope = correction.get("intercept_ms"), correction.get("slope")
    if not (_is_number(intercept) and -MAX_MS <= intercept <= MAX_MS):
        raise _bad(where, "correction intercept_ms", intercept, f"a number from {-MAX_MS:g} to {MAX_MS:g} ms")
    if not (_is_number(slope) and 0 < slope <= MAX_SLOPE):
        raise _bad(where, "correction slope", slope, f"a number above 0 and at most {MAX_SLOPE:g}")


_ENTRY_NEEDS = (
    f"every entry needs a known kind, integer sizes from 1 to {MAX_DIMENSION}, fused 0 or 1, a known activation "
    f"and a positive finite ms from {MIN_MS:g} to {MAX_MS:g}"
)


def _entry_fault(row: list[Any]) -> str:
    """Which field of a refused row is wrong, for the error message."""
    kind, *sizes, fused, act, ms = row
    if kind not in OP_KINDS:
        return f"kind {_show(kind)}"
    for name, value in zip(COLUMNS[1:7], sizes, strict=True):
        if not _is_int(value):
            return f"{name} {_show(value)}"
    if type(fused) is not int or fused not in (0, 1):
        return f"fused {_show(fused)}"
    if act not in ACTIVATIONS:
        return f"activation {_show(act)}"
    return f"ms {_show(ms)}"


def _check_entries(entries: Any, path: Path | None) -> list[list[Any]]:
    where = f" in {path}" if path else ""
    if not isinstance(entries, list):
        raise LatencyError(f"latency table{where}: 'entries' must be a list of rows, not {_json_type(entries)}")
    top = MAX_DIMENSION  # the sizes are checked inline: this loop runs over 90,000 rows of the V100 table
    for n, row in enumerate(entries):
        if type(row) is not list or len(row) != len(COLUMNS):
            raise LatencyError(f"latency table{where}: entry {n} is not a row of {len(COLUMNS)} values ({COLUMNS})")
        kind, batch, c_in, c_out, side, kernel, stride, fused, act, ms = row
        if not (
            kind in OP_KINDS and act in ACTIVATIONS and type(fused) is int and fused in (0, 1)
            and type(batch) is int and 0 < batch <= top and type(c_in) is int and 0 < c_in <= top
            and type(c_out) is int and 0 < c_out <= top and type(side) is int and 0 < side <= top
            and type(kernel) is int and 0 < kernel <= top and type(stride) is int and 0 < stride <= top
            and type(ms) in (int, float) and MIN_MS <= ms <= MAX_MS
        ):  # fmt: skip
            raise LatencyError(f"latency table{where}: entry {n} {_show(row)} has {_entry_fault(row)}; {_ENTRY_NEEDS}")
    return entries


def check_entry(row: Any) -> None:
    """A LatencyError unless `row` is a valid table row (COLUMNS order)."""
    _check_entries([row], None)


def _read_table_bytes(path: Path) -> tuple[bytes, bytes]:
    """(file bytes, JSON bytes) of a table file, gzip decompressed; both bounded by MAX_TABLE_BYTES."""
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise LatencyError(f"latency table {path} is larger than {MAX_TABLE_BYTES >> 20} MiB; it is not a table")
        raw = path.read_bytes()
        if not path.name.endswith(".gz"):
            return raw, raw
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            text = f.read(MAX_TABLE_BYTES + 1)  # bounded: a small file can inflate to gigabytes
    except (OSError, EOFError, zlib.error) as exc:
        raise LatencyError(f"latency table {path} is not readable JSON ({exc}); regenerate it") from None
    if len(text) > MAX_TABLE_BYTES:
        raise LatencyError(f"latency table {path} inflates to more than {MAX_TABLE_BYTES >> 20} MiB; it is not a table")
    return raw, text


def _v1_rows(entries: Any, path: Path) -> Any:
    """Version-1 rows (no `act` column) as version-2 rows: every conv of a version-1 table has a ReLU."""
    if not isinstance(entries, list):
        return entries
    for n, row in enumerate(entries):
        if type(row) is not list or len(row) != len(COLUMNS_V1):
            raise LatencyError(
                f"latency table {path}: entry {n} is not a row of {len(COLUMNS_V1)} values ({COLUMNS_V1})"
            )
    return [[*row[:-1], "relu", row[-1]] for row in entries]


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table file (.json or .json.gz); any defect is a LatencyError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise LatencyError(f"latency table {path} does not exist; list the shipped ones with `zennas tables`")
    raw, text = _read_table_bytes(path)
    data = parse_json_text(text, f"latency table {path}", LatencyError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LatencyError(f"{path} is not a zennas latency table (format {FORMAT!r} expected)")
    version, columns, entries = data.get("version"), data.get("columns"), data.get("entries")
    if type(version) is not int or version not in (1, VERSION):
        raise LatencyError(
            f"latency table {path} has format version {_show(version)}; this zennas reads 1 and {VERSION}"
        )
    expected = COLUMNS if version == VERSION else COLUMNS_V1
    if not isinstance(columns, list) or tuple(columns) != expected:
        raise LatencyError(f"latency table {path} has columns {_show(columns)}; version {version} has {list(expected)}")
    if version == 1:
        entries = _v1_rows(entries, path)
    return LatencyTable(data.get("header"), entries, path, sha256=hashlib.sha256(raw).hexdigest())


def _encode(path: Path, data: Any) -> bytes:
    """JSON bytes of `data`, gzip-compressed when the name ends in .gz (strict: NaN and infinity refused)."""
    if path.suffix == ".gz":
        return gzip.compress(json.dumps(data, separators=(",", ":"), allow_nan=False).encode(), mtime=0)
    return json.dumps(data, indent=1, allow_nan=False).encode()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON (gzip when the name ends in .gz) through a temporary file and an atomic rename."""
    atomic_write_bytes(path, _encode(Path(path), data))


def save_table(path: str | os.PathLike, header: dict[str, Any], entries: list[list[Any]]) -> LatencyTable:
    """Validate and write a table atomically; returns it loaded."""
    path = Path(path)
    check_header(header, path)
    entries = sorted(_check_entries(entries, path), key=lambda row: tuple(row[:-1]))
    table = LatencyTable(header, entries, path)  # every check passes before anything is written
    body = _encode(path, {"format": FORMAT, "version": VERSION, "header": header, "columns": list(COLUMNS),
                          "entries": entries})  # fmt: skip
    atomic_write_bytes(path, body)
    table.sha256 = hashlib.sha256(body).hexdigest()
    return table
