"""How good is a table? Measure random members of a space end to end and compare with the prediction.

For N seeded members: predicted ms per batch (the table's additive sum, and its correction when it
has one) against the engine's median of the whole network (built with residuals, eval mode).
Reported: share within +-10 % and +-5 %, MAPE and Spearman of predicted vs measured.

`fit=True` splits the members into two fixed halves (by index parity after a seeded shuffle), fits
an affine correction measured = intercept_ms + slope * sum on the first half by least squares on
relative error, and reports before/after figures on the other half only.

Networks are measured a chunk at a time (at most `chunk` networks and `chunk_params` parameters,
so that the open sessions fit in memory) in `rounds` interleaved rounds of `runs` runs each
(Engine.time_many), and each measurement is the median of its `rounds * runs` runs: on a machine
whose speed drifts over seconds, the drift then moves the networks of a chunk alike. The longer a
chunk's rounds span, the more of the drift averages out (on the shared 2-vCPU VM of
benchmarks/RESULTS.md, repeat measurements of the same 60 networks agreed within +-10 % for 70-75 %
of them in chunks of 8, and for more in one chunk of 60).

Every measured chunk is appended to a JSON-lines log as soon as it is measured; a rerun with the
same log reuses it, so an interruption loses at most the chunk in progress. With `time_limit_s`, no
new chunk starts after that many seconds and the report covers the networks measured so far.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from scipy import stats
from torch import nn

from zennas.arch import ArchSpec
from zennas.build import BuildOptions, build
from zennas.errors import ConfigError, LatencyError
from zennas.io import atomic_write_text
from zennas.latency.predict import LatencyPrediction, predict
from zennas.latency.table import LatencyTable

LOG_DIR = ".zennas-cache"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")  # characters kept out of a log's file name


@dataclass(frozen=True)
class Accuracy:
    """Agreement of predictions with measurements."""

    n: int
    within_10pct: float
    within_5pct: float
    mape: float
    spearman: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> Accuracy:
    """Share within +-10 % / +-5 % of the measurement, MAPE (%), Spearman rho."""
    rel = np.abs(predicted - measured) / measured
    rho = float(stats.spearmanr(predicted, measured).statistic) if len(measured) > 2 else float("nan")
    return Accuracy(
        len(measured), float(np.mean(rel <= 0.10)), float(np.mean(rel <= 0.05)), float(100 * rel.mean()), rho
    )


def fit_correction(sums: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(intercept_ms, slope) minimising the squared relative error of intercept + slope * sum."""
    design = np.stack([1.0 / measured, sums / measured], axis=1)  # [n, 2]
    (intercept, slope), *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
    return float(intercept), float(slope)


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices of n validated networks: alternate members of a permutation seeded seed + 1."""
    order = np.random.default_rng(seed + 1).permutation(n)
    return order[::2], order[1::2]


@dataclass
class ValidationReport:
    """Per-network figures and the summary."""

    archs: list[str]
    table_sum_ms: np.ndarray
    predicted_ms: np.ndarray  # with the table's own correction, if any
    measured_ms: np.ndarray
    overall: Accuracy
    settings: dict[str, Any]
    fit: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.overall.to_dict(), "settings": self.settings}
        if self.fit is not None:
            out["fit"] = self.fit
        out["networks"] = [
            {"arch": a, "table_sum_ms": float(s), "predicted_ms": float(p), "measured_ms": float(m)}
            for a, s, p, m in zip(self.archs, self.table_sum_ms, self.predicted_ms, self.measured_ms, strict=True)
        ]
        return out


def default_log_path(
    table: LatencyTable, space: str, engine: str, device: str, resolution: int, root: str | os.PathLike = LOG_DIR
) -> Path:
    """`root`/latency-<table>-<space>-<engine>-<device>-r<resolution>.jsonl: the log `validate` resumes from.

    Each part is reduced to letters, digits, '.', '_' and '-' (device cuda:1 -> cuda_1), so the file
    name holds no path separator and the log cannot land outside `root`, whatever a table's header says.
    """
    parts = (table.name, space, engine, device, f"r{resolution}")
    name = "-".join(_UNSAFE.sub("_", str(part)) for part in parts)
    return Path(root) / f"latency-{name}.jsonl"


def _read_log(path: Path) -> dict[str, float]:
    known: dict[str, float] = {}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    ms = float(rec["measured_ms"])
                except (ValueError, KeyError, TypeError, RecursionError):
                    continue  # a torn last line: that network is measured again
                if isinstance(rec.get("arch"), str) and 0 < ms < float("inf"):  # else measured again, as a torn line
                    known[rec["arch"]] = ms
    return known


def _sample_inside(
    space: Any, table: LatencyTable, *, samples: int, seed: int, resolution: int, num_classes: int, batch: int
) -> tuple[list[ArchSpec], list[LatencyPrediction], list[dict[str, str]]]:
    """(members, their predictions, members outside the table) of `samples` seeded draws from `space`.

    A member the table cannot cost is reported with its reason, not guessed; fewer than 3 inside it
    leave nothing to correlate.
    """
    rng = np.random.default_rng(seed)
    specs, preds, outside = [], [], []
    for _ in range(samples):
        spec = space.sample(rng)
        try:
            preds.append(predict(spec, table, resolution=resolution, num_classes=num_classes, batch_size=batch))
        except LatencyError as error:
            outside.append({"arch": spec.canonical, "reason": str(error)})
            continue
        specs.append(spec)
    if len(specs) < 3:
        raise ConfigError(
            f"only {len(specs)} of {samples} sampled networks lie inside table {table.name!r}; profile the space "
            "with more --samples or validate another space"
        )
    return specs, preds, outside


_Built = tuple[str, nn.Module, int]  # (canonical arch, network, parameters)


def _built(key: str, spec: ArchSpec, num_classes: int) -> _Built:
    """The network of `spec`, built when its chunk is packed (so only a chunk's networks are in memory)."""
    model = build(spec, BuildOptions(num_classes=num_classes))
    return key, model, sum(p.numel() for p in model.parameters())


def _next_chunk(
    first: _Built, pending: Iterator[_Built], shape: tuple[int, int, int, int], chunk: int, chunk_params: int
) -> tuple[list[str], list[tuple[nn.Module, tuple[int, int, int, int]]], _Built | None]:
    """(keys, (model, shape) pairs, the network that opens the next chunk) of one chunk starting at `first`.

    A chunk holds at most `chunk` networks and `chunk_params` parameters, and at least one network.
    """
    keys, models, params, carried = [], [], 0, first
    while carried is not None:
        key, model, size = carried
        if models and (len(models) == chunk or params + size > chunk_params):
            break
        keys.append(key)
        models.append((model, shape))
        params += size
        carried = next(pending, None)
    return keys, models, carried


def _measure(
    engine: Any,
    pending: Iterator[_Built],
    known: dict[str, float],
    log: IO[str] | None,
    *,
    shape: tuple[int, int, int, int],
    runs: int,
    rounds: int,
    chunk: int,
    chunk_params: int,
    out_of_time: Callable[[], bool],
    count: Callable[[int], None],
) -> None:
    """Time the `pending` networks a chunk at a time into `known`, each chunk appended to `log` at once.

    No chunk starts once `out_of_time()`; `count(n)` follows every chunk of n networks.
    """
    carried = next(pending, None)  # the network that opens the next chunk
    while carried is not None:
        if out_of_time():
            break
        keys, models, carried = _next_chunk(carried, pending, shape, chunk, chunk_params)
        timings = engine.time_many(models, runs=runs, rounds=rounds)
        del models
        lines = []
        for key, timing in zip(keys, timings, strict=True):
            known[key] = timing.ms_per_batch
            lines.append(json.dumps({"arch": key, "measured_ms": timing.ms_per_batch, "cv": timing.cv}) + "\n")
        if log is not None:
            log.write("".join(lines))
            log.flush()
            os.fsync(log.fileno())
        count(len(keys))


def _measured_only(
    specs: list[ArchSpec], preds: list[LatencyPrediction], known: dict[str, float], time_limit_s: float | None
) -> tuple[list[ArchSpec], list[LatencyPrediction], int]:
    """(members, predictions, count left out): the members measured, when the time limit ended the measurements."""
    unmeasured = sum(spec.canonical not in known for spec in specs)
    if unmeasured:
        kept = [i for i, spec in enumerate(specs) if spec.canonical in known]
        if len(kept) < 3:
            raise LatencyError(
                f"only {len(kept)} of {len(specs)} networks were measured within the time limit of {time_limit_s} s; "
                "give it more time or rerun with the same log to measure the rest"
            )
        specs, preds = [specs[i] for i in kept], [preds[i] for i in kept]
    return specs, preds, unmeasured


def _held_out_fit(sums: np.ndarray, measured: np.ndarray, seed: int) -> dict[str, Any]:
    """The affine correction fitted on one half of the networks, judged before and after on the other."""
    fit_idx, held = split_halves(len(sums), seed)
    intercept, slope = fit_correction(sums[fit_idx], measured[fit_idx])
    corrected = intercept + slope * sums[held]
    return {
        "intercept_ms": intercept,
        "slope": slope,
        "fitted_on": len(fit_idx),
        "held_out_before": accuracy(sums[held], measured[held]).to_dict(),
        "held_out_after": accuracy(corrected, measured[held]).to_dict(),
    }


def validate(
    space: str,
    table: LatencyTable,
    engine: Any,
    *,
    samples: int,
    resolution: int,
    num_classes: int,
    batch_size: int | None = None,
    seed: int = 0,
    runs: int = 20,
    rounds: int = 1,
    chunk: int = 64,
    chunk_params: int = 250_000_000,
    fit: bool = False,
    log: str | os.PathLike | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Predict and measure `samples` seeded members of `space`; see the module docstring."""
    from zennas.spaces import get_space

    start = time.monotonic()
    if samples < 3:
        raise ConfigError(f"--samples must be at least 3 for a rank correlation, got {samples}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ConfigError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
    batch = table.batch_size_or_default(batch_size)
    specs, preds, outside = _sample_inside(
        get_space(space), table, samples=samples, seed=seed, resolution=resolution, num_classes=num_classes,
        batch=batch,
    )  # fmt: skip
    log_path = Path(log) if log is not None else None
    known = _read_log(log_path) if log_path else {}
    if chunk < 1 or chunk_params < 1:
        raise ConfigError(f"chunk and chunk_params must be positive, got {chunk} and {chunk_params}")
    todo = list(dict.fromkeys(spec.canonical for spec in specs if spec.canonical not in known))
    by_key = {spec.canonical: spec for spec in specs}
    done = len(specs) - len(todo)

    def count(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(specs))

    with open(log_path, "a", encoding="utf-8") if log_path else contextlib.nullcontext() as handle:
        count(0)  # the networks the log already holds
        _measure(
            engine, (_built(key, by_key[key], num_classes) for key in todo), known, handle,
            shape=(batch, 3, resolution, resolution), runs=runs, rounds=rounds, chunk=chunk,
            chunk_params=chunk_params, count=count,
            out_of_time=lambda: time_limit_s is not None and time.monotonic() - start > time_limit_s,
        )  # fmt: skip
    specs, preds, unmeasured = _measured_only(specs, preds, known, time_limit_s)
    sums = np.array([p.table_sum_ms_per_batch for p in preds])
    predicted = np.array([p.latency_ms_per_batch for p in preds])
    measured_arr = np.array([known[spec.canonical] for spec in specs])
    settings = {
        "space": space,
        "table": table.name,
        "engine": engine.name,
        "device": engine.device,
        "precision": engine.precision,
        "samples": samples,
        "outside_table": len(outside),
        "not_measured_in_time": unmeasured,
        "seed": seed,
        "batch_size": batch,
        "resolution": resolution,
        "num_classes": num_classes,
        "runs": runs,
        "rounds": rounds,
        "chunk": chunk,
        "chunk_params": chunk_params,
        "cuda_graph": bool((getattr(engine, "options", None) or {}).get("cuda_graph")),
    }
    report = ValidationReport(
        [s.canonical for s in specs], sums, predicted, measured_arr, accuracy(predicted, measured_arr), settings,
        extra={"outside_table": outside},
    )  # fmt: skip
    if fit:
        report.fit = _held_out_fit(sums, measured_arr, seed)
    return report


def write_scatter_svg(path: str | os.PathLike, report: ValidationReport) -> None:
    """Predicted vs measured (log-log) with the y = x line and +-10 % band, as a dependency-free SVG."""
    size, margin = 420, 50
    x, y = np.log10(report.measured_ms), np.log10(report.predicted_ms)
    lo, hi = float(min(x.min(), y.min())) - 0.05, float(max(x.max(), y.max())) + 0.05

    def px(v: float) -> float:
        return margin + (v - lo) / (hi - lo) * (size - 2 * margin)

    def py(v: float) -> float:
        return size - px(v)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-family="sans-serif" '
        'font-size="11">',
        f'<line x1="{px(lo)}" y1="{py(lo)}" x2="{px(hi)}" y2="{py(hi)}" stroke="#888"/>',
    ]
    for factor in (1.1, 1 / 1.1):
        d = np.log10(factor)
        parts.append(
            f'<line x1="{px(lo)}" y1="{py(lo + d)}" x2="{px(hi)}" y2="{py(hi + d)}" stroke="#ccc" '
            'stroke-dasharray="4 3"/>'
        )
    parts += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="#1f77b4"/>' for a, b in zip(x, y, strict=True)]
    st, acc = report.settings, report.overall
    title = (
        f"{st['space']} / {st['table']} / {st['engine']}: within10 {acc.within_10pct:.0%}, "
        f"MAPE {acc.mape:.1f}%, rho {acc.spearman:.3f}"
    )
    parts += [
        f'<text x="{margin}" y="20">{html.escape(title)}</text>',
        f'<text x="{size / 2 - 60}" y="{size - 12}">measured ms/batch (log)</text>',
        f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})">predicted ms/batch (log)</text>',
        "</svg>",
    ]
    atomic_write_text(path, "\n".join(parts))
