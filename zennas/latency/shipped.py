"""Tables shipped with zennas (`latency_tables/`), selection by name or GPU, and the TinyNAS converter."""

from __future__ import annotations

import functools
import re
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from zennas.errors import LatencyError
from zennas.latency.table import LatencyTable, load_table

TABLE_SUFFIXES = (".json.gz", ".json")

# The TinyNAS record: {ConvType,Batch,InC,InH,InW,OutC,Kernel,Stride,ElmtFused} latency (ms per batch).
_TINYNAS_ROW = re.compile(
    r"^\{(Regular|Depthwise),(\d+),(\d+),(\d+),(\d+),(\d+),(\d+),(\d+),([01])\}\s+(-?[0-9.eE+-]+)$"
)


def shipped_dir() -> Path:
    """The installed `latency_tables` folder."""
    return Path(str(resources.files("latency_tables")))


def shipped_tables() -> dict[str, Path]:
    """name -> file of every shipped table."""
    out = {}
    for path in sorted(shipped_dir().iterdir()):
        for suffix in TABLE_SUFFIXES:
            if path.name.endswith(suffix):
                out[path.name[: -len(suffix)]] = path
    return out


def _load_shipped(name: str, path: Path) -> LatencyTable:
    """A shipped table, whose `source` is its name (a search records the name, not the install path).

    Each is parsed and checked once per process (the V100 table takes most of a second) and then shared,
    look-up memo included: treat a shipped table as read-only. A file changed on disk is read again.
    """
    stat = path.stat()
    return _load_shipped_file(name, path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load_shipped_file(name: str, path: Path, mtime_ns: int, size: int) -> LatencyTable:
    table = load_table(path)
    table.source = name
    return table


def open_table(name_or_path: str) -> LatencyTable:
    """A shipped table by name, or a table file by path (its `source` then is the absolute path)."""
    tables = shipped_tables()
    if name_or_path in tables:
        return _load_shipped(name_or_path, tables[name_or_path])
    path = Path(name_or_path)
    if path.suffix in (".json", ".gz") or path.exists():
        return load_table(path)
    raise LatencyError(
        f"no shipped latency table named {name_or_path!r} (shipped: {', '.join(tables) or 'none'}); "
        "give a table file path or list them with `zennas tables`"
    )


def table_for_gpu(gpu: str, *, precision: str | None = None, engine: str | None = None) -> LatencyTable:
    """The shipped table measured on GPU family `gpu` (e.g. V100), optionally of a precision/engine."""
    wanted = gpu.strip().upper()
    tables = [_load_shipped(name, path) for name, path in shipped_tables().items()]  # each file read once
    matches = [
        t
        for t in tables
        if str(t.header["device"].get("family", "")).upper() == wanted
        and (not precision or t.header["precision"] == precision)
        and (not engine or t.header["engine"] == engine)
    ]
    if not matches:
        have = sorted({str(t.header["device"].get("family")) for t in tables})
        extra = "".join(f", {k} {v}" for k, v in (("precision", precision), ("engine", engine)) if v)
        raise LatencyError(
            f"no shipped latency table for GPU {gpu!r}{extra} (shipped devices: {', '.join(have)}); "
            "build one on that GPU with `zennas profile` and pass it with --table"
        )
    # Prefer TensorRT (what deployments run), then graph-replay timing, then the name: deterministic.
    matches.sort(key=lambda t: (t.header["engine"] != "tensorrt", t.timing["mode"] != "graph", t.name))
    return matches[0]


def convert_tinynas_lut(path: str | Path) -> tuple[dict[str, Any], list[list[Any]], int]:
    """(header, entries, dropped) from a TinyNAS `conv_data.out.*` file; rows with latency -1 are dropped."""
    entries: list[list[Any]] = []
    dropped = 0
    seen: set[tuple] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            m = _TINYNAS_ROW.match(line)
            if m is None:
                raise LatencyError(f"{path}:{n}: not a TinyNAS latency record: {line[:80]!r}")
            conv_type, batch, c_in, in_h, in_w, c_out, kernel, stride, fused = (m.group(i) for i in range(1, 10))
            ms = float(m.group(10))
            if ms < 0:
                dropped += 1  # a failed measurement in the source
                continue
            if in_h != in_w:
                raise LatencyError(f"{path}:{n}: non-square input {in_h}x{in_w} is not supported")
            kind = "dwconv" if conv_type == "Depthwise" else "conv"
            row = [kind, int(batch), int(c_in), int(c_out), int(in_h), int(kernel), int(stride), int(fused), "relu", ms]
            key = tuple(row[:-1])
            if key in seen:
                raise LatencyError(f"{path}:{n}: duplicate key {key}")
            seen.add(key)
            entries.append(row)
    header = {
        "name": "v100-trt-fp16",
        "description": (
            "NVIDIA V100, TensorRT, FP16: one entry per convolution with BN folded and ReLU fused; fused=1 rows "
            "include the residual add fused into the conv (TinyNAS ElmtFused). Converted from the TinyNAS table."
        ),
        "device": {"family": "V100", "variant": "not published", "name": "NVIDIA Tesla V100"},
        "engine": "tensorrt",
        "versions": {"tensorrt": "not published", "driver": "not published"},
        "precision": "fp16",
        "batch_sizes": sorted({row[1] for row in entries}),
        "date": date.today().isoformat(),
        "unit": "ms_per_batch",
        "op_kinds": ["conv", "dwconv"],
        "budget": {
            "batch_size": 64,
            "resolution": 224,
            "meaning": "ms per image = latency of one forward of a batch of 64 divided by 64 (Zen-NAS budgets)",
        },
        "source": {
            "project": "alibaba/lightweight-neural-architecture-search (TinyNAS), Apache-2.0",
            "file": "tinynas/latency/op_profiler/V100/conv_data.out.fp16",
            "commit": "8ccaf889fcd06079d268a355c765e9d0af071612",
            "rows_dropped_failed_measurement": dropped,
            "profiling_program": "not published",
        },
        "not_costed": "SE modules, pooling, the classifier head and avg-pool shortcuts (no entries in the source)",
        "correction": None,
    }
    return header, entries, dropped
