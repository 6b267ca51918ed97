"""Score every architecture of a ground-truth CSV with zero-cost proxies and rank-correlate with accuracy."""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from zennas import __version__
from zennas.arch import ArchSpec, parse
from zennas.bench.cache import ScoreCache
from zennas.bench.rank import (
    Correlation,
    correlate,
    handle_degenerate,
    orient,
    rank_aggregate,
    select_members,
    split_half,
)
from zennas.errors import ConfigError, ProxyError, ZennasError

# (resolution, classes) of the NAS-Bench-201 datasets; ImageNet16-120 images are 16 x 16.
DATASETS: dict[str, tuple[int, int]] = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16-120": (16, 120)}
SPLIT_SEED = 0  # the aggregate's selection/held-out split is fixed: never tuned per run
_SUBSET_SALT = "zennas-bench-subset"  # --limit takes a fixed pseudo-random order of rows

# Proxies whose value cannot depend on the classifier, so their cache entries are shared between
# class counts (CIFAR-10 and CIFAR-100 at the same resolution): Zen never builds the classifier;
# NASWOT reads ReLU codes, all before the final Linear, which is built last (the earlier init is
# the same for any class count) and uses no labels. Checked by scoring cells with 10 and 100
# classes (benchmarks/RESULTS.md). The other proxies see logits or a loss over them.
HEAD_INDEPENDENT: frozenset[str] = frozenset({"zen", "zen-analytic", "naswot"})


@dataclass(frozen=True)
class GroundTruth:
    """Architectures of a CSV with their accuracy, row numbers and split keys."""

    path: str
    archs: tuple[ArchSpec, ...]
    accuracy: np.ndarray
    rows: tuple[int, ...]  # line number of each record in the file (header = line 1)
    keys: tuple[str, ...]  # index column value if there is one, else the architecture hash
    arch_column: str
    acc_column: str

    def __len__(self) -> int:
        return len(self.archs)

    def subset(self, pick: np.ndarray) -> GroundTruth:
        """The rows selected by a boolean mask or by an index array (in that order)."""
        pick = np.flatnonzero(pick) if pick.dtype == bool else pick
        return GroundTruth(
            self.path, tuple(self.archs[i] for i in pick), self.accuracy[pick], tuple(self.rows[i] for i in pick),
            tuple(self.keys[i] for i in pick), self.arch_column, self.acc_column,
        )  # fmt: skip


def read_ground_truth(
    path: str | os.PathLike[str],
    *,
    arch_column: str = "arch",
    acc_column: str = "cifar10_test",
    index_column: str | None = "index",
    dialect: str | None = None,
    limit: int | None = None,
) -> GroundTruth:
    """Read (architecture, accuracy) pairs from a CSV of any delimiter; errors name the row and column."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:  # newline="": the csv module handles quoted line breaks
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read ground-truth CSV {str(path)!r}: {error}") from None
    try:
        # Only real delimiters: architecture strings are full of '|', '~', '(' and ','-free tokens.
        sniffed: Any = csv.Sniffer().sniff(text[:65536], delimiters=",;\t")
    except csv.Error:
        sniffed = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=sniffed)
    columns = reader.fieldnames or []
    for column in (arch_column, acc_column):
        if column not in columns:
            raise ConfigError(
                f"{path}: no column {column!r}; columns are: {', '.join(columns) or '(none: empty file?)'}"
            )
    has_index = index_column is not None and index_column in columns
    archs: list[ArchSpec] = []
    accuracy: list[float] = []
    rows: list[int] = []
    keys: list[str] = []
    try:
        for record in reader:
            line = reader.line_num
            arch_text = record.get(arch_column)
            acc_text = record.get(acc_column)
            if arch_text is None or acc_text is None:
                raise ConfigError(f"{path} row {line}: too few fields (no {arch_column!r} or {acc_column!r} value)")
            try:
                spec = parse(arch_text, dialect)
            except ZennasError as error:
                raise ConfigError(f"{path} row {line}, column {arch_column!r}: {error}") from None
            try:
                value = float(acc_text)
            except ValueError:
                raise ConfigError(f"{path} row {line}, column {acc_column!r}: {acc_text!r} is not a number") from None
            if not math.isfinite(value):
                raise ConfigError(f"{path} row {line}, column {acc_column!r}: accuracy {acc_text!r} is not finite")
            archs.append(spec)
            accuracy.append(value)
            rows.append(line)
            keys.append(record[index_column].strip() if has_index else spec.hash)
    except csv.Error as error:
        raise ConfigError(f"{path} row {reader.line_num}: malformed CSV: {error}") from None
    if not archs:
        raise ConfigError(f"{path}: no data rows")
    truth = GroundTruth(str(path), tuple(archs), np.array(accuracy), tuple(rows), tuple(keys), arch_column, acc_column)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be positive, got {limit}")
        # A fixed hash order (not file order, which may be sorted by accuracy): a larger limit is a
        # superset, and since rows are scored in this order an interrupted run has cached a prefix of it.
        order = sorted(range(len(truth)), key=lambda i: hashlib.sha256(f"{_SUBSET_SALT}:{keys[i]}".encode()).digest())
        truth = truth.subset(np.array(order[:limit]))
    return truth


def dataset_settings(
    acc_column: str, dataset: str | None = None, resolution: int | None = None, num_classes: int | None = None
) -> tuple[int | None, int | None, str | None]:
    """(resolution, classes, dataset) from an explicit preset, else inferred from the accuracy column name.

    Explicit resolution/classes win; None leaves the architecture dialect's defaults.
    """
    if dataset is None:
        lowered = acc_column.lower()
        if "cifar100" in lowered:
            dataset = "cifar100"
        elif "imagenet16" in lowered or "in16" in lowered:
            dataset = "imagenet16-120"
        elif "cifar10" in lowered:
            dataset = "cifar10"
    elif dataset not in DATASETS:
        raise ConfigError(f"unknown dataset preset {dataset!r}; choose one of {', '.join(DATASETS)}")
    preset = DATASETS.get(dataset or "", (None, None))
    return (
        preset[0] if resolution is None else resolution,
        preset[1] if num_classes is None else num_classes,
        dataset,
    )


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """['key=value', ...] -> dict; values read as bool (true/false), int, float, else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"option {pair!r} is not KEY=VALUE, e.g. --option mode=zennas")
        value: Any = raw.strip()
        if value.lower() in ("true", "false"):
            value = value.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(value)
                    break
                except ValueError:
                    continue
        options[key] = value
    return options


def load_data(path: str | os.PathLike[str]) -> tuple[Any, Any, str]:
    """A real batch from an .npz holding `images` [N, 3, R, R] and `labels` [N]: (images, labels, fingerprint)."""
    import torch

    try:
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"cannot read --data {str(path)!r} (an .npz with 'images' and 'labels'): {error}") from None
    if images.ndim != 4 or images.shape[1] != 3 or labels.shape != (images.shape[0],):
        raise ConfigError(f"--data {path}: need images [N, 3, R, R] and labels [N], got {images.shape}, {labels.shape}")
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)), digest


@cache
def _code_version(module_name: str) -> str:
    """Hash of a proxy's source module and of the zennas.proxies helpers it imports (context, shared helpers).

    Results computed by other code are never reused. The registry package itself is left out so
    that registering another proxy does not void every cached score.
    """
    module = sys.modules[module_name]
    files = {module.__file__}
    for value in vars(module).values():
        owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(owner, str) and owner.startswith("zennas.proxies.") and owner in sys.modules:
            files.add(sys.modules[owner].__file__)
    digest = hashlib.sha256()
    for file in sorted(f for f in files if f):
        try:
            digest.update(Path(file).read_bytes())
        except OSError:  # installed without sources: fall back to the package version
            digest.update(__version__.encode())
    return digest.hexdigest()[:16]


@dataclass
class ProxyScores:
    """One proxy's results over the ground-truth rows."""

    name: str
    higher_is_better: bool
    values: list[float | None]  # mean per architecture; None = degenerate
    computed: int = 0  # how many were computed now (the rest came from the cache)
    seconds: list[float] = field(default_factory=list)  # per freshly computed architecture
    inputs: set[str] = field(default_factory=set)  # input sources the proxy reported (meta['input'])

    @property
    def oriented(self) -> np.ndarray:
        """Scores with higher = better, NaN = degenerate."""
        return orient(self.values, self.higher_is_better)

    @property
    def degenerate(self) -> int:
        """Number of degenerate results."""
        return sum(v is None for v in self.values)


@dataclass
class Aggregate:
    """The rank-average ensemble: members chosen on the selection half, judged on the held-out half."""

    members: list[str]
    selected_by: str  # 'auto (selection half)' or 'given'
    selection_n: int
    held_out: dict[str, Correlation]  # every proxy and 'ensemble' on the held-out half


@dataclass
class BenchReport:
    """Correlations of each proxy with the ground truth, and how they were obtained."""

    correlations: dict[str, Correlation]
    scores: dict[str, ProxyScores]
    settings: dict[str, Any]
    aggregate: Aggregate | None = None

    def to_json(self) -> dict[str, Any]:
        """{proxy: {spearman, kendall, n, degenerate}} plus '_settings' (and '_aggregate')."""
        out: dict[str, Any] = {name: c.to_json() for name, c in self.correlations.items()}
        for name, s in self.scores.items():
            out[name]["seconds_per_cell"] = float(np.mean(s.seconds)) if s.seconds else None
            out[name]["computed"] = s.computed
        out["_settings"] = self.settings
        if self.aggregate is not None:
            out["_aggregate"] = {
                "members": self.aggregate.members,
                "selected_by": self.aggregate.selected_by,
                "selection_n": self.aggregate.selection_n,
                "held_out": {name: c.to_json() for name, c in self.aggregate.held_out.items()},
            }
        return out


def bench_proxies(
    truth: GroundTruth,
    proxies: Sequence[str],
    *,
    batch_size: int | None = None,
    resolution: int | None = None,
    num_classes: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    device: str | None = "auto",
    options: Mapping[str, Any] | None = None,
    data: tuple[Any, Any, str] | None = None,
    cache: ScoreCache | None = None,
    degenerate: str = "worst",
    aggregate: str | Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = 1,
) -> BenchReport:
    """Score every architecture with every proxy (cached) and report oriented Spearman/Kendall per proxy."""
    import torch

    from zennas.device import resolve_device
    from zennas.proxies import get_proxy, score

    names = list(dict.fromkeys(p.strip() for p in proxies))
    if not names or any(not n for n in names):
        raise ConfigError("give at least one proxy, e.g. --proxy params,flops")
    chosen = {name: get_proxy(name) for name in names}
    options = dict(options or {})
    known = {key for p in chosen.values() for key in p.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} apply to none of {', '.join(names)}; "
            f"their options: {', '.join(sorted(known)) or 'none'}"
        )
    handle_degenerate(np.zeros(1), degenerate)  # validates the mode before any scoring
    target = resolve_device(device)
    images_labels = None if data is None else (data[0], data[1])
    if data is not None:
        side = data[0].shape[-1]
        if resolution is not None and side != resolution:
            raise ConfigError(f"--data images are {side} x {side} but the scoring resolution is {resolution}")
        for name, p in chosen.items():
            if p.uses_data and (batch_size or p.batch_size) > data[0].shape[0]:
                raise ConfigError(
                    f"--data holds {data[0].shape[0]} images, fewer than the batch of {name} "
                    f"({batch_size or p.batch_size}); pass --batch-size {data[0].shape[0]} or fewer"
                )
    results = {name: ProxyScores(name, p.higher_is_better, []) for name, p in chosen.items()}
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # a bench is a background job: leave the other cores alone
    try:
        for done, (spec, row) in enumerate(zip(truth.archs, truth.rows, strict=True), start=1):
            for name, proxy in chosen.items():
                own = {k: options.get(k, o.default) for k, o in proxy.options.items()}
                fields = {
                    "arch": spec.hash,
                    "dialect": spec.dialect,
                    "proxy": name,
                    "code": _code_version(proxy.fn.__module__),
                    "resolution": resolution,
                    "num_classes": "any" if name in HEAD_INDEPENDENT else num_classes,
                    "batch_size": batch_size or proxy.batch_size,
                    "repeats": repeats,
                    "seed": seed,
                    "device": target.type,
                    "options": own,
                    "data": "gaussian" if data is None else data[2],
                }
                entry = cache.get(name, fields) if cache is not None else None
                if entry is None:
                    try:
                        result = score(
                            spec, [name], batch_size=batch_size, resolution=resolution, num_classes=num_classes,
                            repeats=repeats, seed=seed, device=target, options=own, data=images_labels,
                        )[name]  # fmt: skip
                    except ConfigError as error:
                        raise ConfigError(f"{truth.path} row {row}: {error}") from error
                    except ZennasError as error:
                        raise ProxyError(f"{truth.path} row {row}: {error}") from error
                    entry = {"mean": result.mean, "degenerate": result.degenerate, "meta": result.meta}
                    if cache is not None:
                        cache.put(name, fields, entry)
                    results[name].computed += 1
                    if not result.degenerate:
                        results[name].seconds.append(float(result.meta.get("seconds_per_repeat", 0.0)) * repeats)
                results[name].values.append(None if entry["degenerate"] else float(entry["mean"]))
                results[name].inputs.add(str(entry["meta"].get("input", "not reported")))
            if progress is not None:
                progress(done)
    finally:
        torch.set_num_threads(saved_threads)
    correlations = {name: correlate(s.oriented, truth.accuracy, degenerate) for name, s in results.items()}
    settings = {
        "csv": truth.path,
        "arch_column": truth.arch_column,
        "acc_column": truth.acc_column,
        "n": len(truth),
        "resolution": resolution,
        "num_classes": num_classes,
        "batch_size": batch_size or {name: p.batch_size for name, p in chosen.items()},
        "repeats": repeats,
        "seed": seed,
        "device": str(target),
        "options": options,
        "input": {name: ", ".join(sorted(s.inputs)) for name, s in results.items()},
        "data": "none (each proxy draws its own input)" if data is None else f"real batch {data[2]}",
        "degenerate": degenerate,
        "orientation": "scores negated for lower-is-better proxies: higher = predicted better",
        "lower_is_better": [name for name, p in chosen.items() if not p.higher_is_better],
        "code_version": {name: _code_version(p.fn.__module__) for name, p in chosen.items()},
    }
    report = BenchReport(correlations, results, settings)
    if aggregate is not None:
        report.aggregate = _aggregate(truth, results, aggregate, degenerate)
    return report


def _aggregate(
    truth: GroundTruth, results: Mapping[str, ProxyScores], aggregate: str | Sequence[str], degenerate: str
) -> Aggregate:
    selection = split_half(truth.keys, SPLIT_SEED)
    held = ~selection
    if selection.sum() < 3 or held.sum() < 3:
        raise ConfigError(f"--aggregate needs at least 3 rows in each half; got {selection.sum()} and {held.sum()}")
    oriented = {name: s.oriented for name, s in results.items()}
    if isinstance(aggregate, str) and aggregate == "auto":
        members = select_members({k: v[selection] for k, v in oriented.items()}, truth.accuracy[selection])
        how = "auto (best Spearman of a rank average of 2-4 proxies on the selection half)"
    else:
        members = [m.strip() for m in aggregate.split(",")] if isinstance(aggregate, str) else list(aggregate)
        how = "given"
    held_scores = {k: v[held] for k, v in oriented.items()}
    combined = rank_aggregate(held_scores, members)
    # A network that a member cannot score is degenerate for the ensemble too (same handling as single proxies).
    combined[np.any([np.isnan(held_scores[m]) for m in members], axis=0)] = np.nan
    held_out = {name: correlate(v, truth.accuracy[held], degenerate) for name, v in held_scores.items()}
    held_out["ensemble"] = correlate(combined, truth.accuracy[held], degenerate)
    return Aggregate(members, how, int(selection.sum()), held_out)
