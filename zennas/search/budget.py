"""Search budgets: parse `1ms`, `800us`, `400M`, `5.5M` and check candidates against them.

A latency budget is always milliseconds *per image* at a stated batch size (by default the table's
budget batch: 64 for the V100 TensorRT table, as Zen-NAS states its budgets; 1 for the CPU table;
`latency_batch_size` decides it, the one place that does). The predicted latency of a candidate is
the table's ms per batch at that batch divided by the batch. MACs and parameters are the correct
counts `zennas info` reports (the ZenNAS repository convention on request), layers the dialect's
layer count (REFERENCE 1.4).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from zennas.errors import ConfigError

_TIME_UNITS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_TIME = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|us|µs|s)?\s*(?:/\s*(image|img))?\s*$")
_COUNT_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}
_COUNT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKMGB]?)\s*$")


def parse_latency_budget(text: str) -> float:
    """Milliseconds per image from `1ms`, `0.8 ms/image`, `800us`, `0.001s`; a unit is required."""
    match = _TIME.match(str(text))
    if match is None:
        raise ConfigError(
            f"cannot read latency budget {text!r}: write a number and a unit, e.g. 1ms, 0.8ms/image or 800us"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        raise ConfigError(f"latency budget {text!r} has no unit: write e.g. {text.strip()}ms or {text.strip()}us")
    ms = value * _TIME_UNITS[unit]
    if not math.isfinite(ms):
        raise ConfigError(f"latency budget {text!r} is not a finite number of milliseconds; write e.g. 1ms")
    if ms <= 0:
        raise ConfigError(f"latency budget must be positive, got {text!r}")
    return ms


def parse_count_budget(text: str, what: str) -> int:
    """An integer count from `400M`, `5.5M`, `2e6`, `1G`, `300000` (k, M, G suffixes)."""
    match = _COUNT.match(str(text))
    if match is None:
        raise ConfigError(
            f"cannot read {what} budget {text!r}: write a number with an optional k/M/G suffix, e.g. 400M"
        )
    value = float(match.group(1)) * _COUNT_SUFFIX[match.group(2)]
    if not math.isfinite(value):
        raise ConfigError(f"{what} budget {text!r} is not a finite number; write e.g. 400M")
    if value <= 0:
        raise ConfigError(f"{what} budget must be positive, got {text!r}")
    return round(value)


@dataclass(frozen=True)
class Budgets:
    """Hard constraints of a search; None = unconstrained."""

    latency_ms_per_image: float | None = None
    latency_batch_size: int | None = None  # the batch at which the latency budget holds
    macs: int | None = None
    params: int | None = None
    max_layers: int | None = None
    convention: str = "correct"  # counting convention of macs/params: correct | zennas

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.latency_ms_per_image is not None:
            parts.append(f"latency <= {self.latency_ms_per_image:g} ms/image at batch {self.latency_batch_size}")
        if self.macs is not None:
            parts.append(f"MACs <= {self.macs:,}")
        if self.params is not None:
            parts.append(f"params <= {self.params:,}")
        if self.max_layers is not None:
            parts.append(f"layers <= {self.max_layers}")
        return ", ".join(parts) or "no budget"


def latency_batch_size(table: Any, given: int | None = None) -> int:
    """The batch a latency budget holds at: `given`, else the budget batch of `table` (a LatencyTable)."""
    return given or table.default_batch_size()


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d*)?)\s*h)?\s*(?:(\d+(?:\.\d*)?)\s*m)?\s*(?:(\d+(?:\.\d*)?)\s*s)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `8m`, `1h`, `1h30m`, `2m30s` (a unit is required)."""
    match = _DURATION.match(str(text))
    if match is None or not any(match.groups()):
        raise ConfigError(f"cannot read duration {text!r}: write a number and a unit, e.g. 90s, 8m, 1h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 0 < total < math.inf:
        raise ConfigError(f"duration {text!r} must be positive and finite")
    return total
