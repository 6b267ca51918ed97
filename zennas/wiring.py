"""Builds a search's collaborators from user-level settings, for the command line and the Python API.

`Problem` names the space (and preset), the proxy (one registered proxy or a weighted sum), the
scoring settings, the latency table and the budgets, as plain data: picklable, and JSON-able for a
checkpoint. From it this module builds what zennas.search receives (zennas.search.interfaces): the
space (zennas.spaces), the cost model (analytic counts and the table's latency at the latency batch,
resolved once, by zennas.search.budget.latency_batch_size), the closed form that screens children,
the scorer (zennas.proxies) and the map that scores many candidates (this process, worker
processes, CUDA streams or Ray). zennas.search itself imports none of proxies, latency, spaces or
torch; only this module and the CLI above it know them all.

Scores are deterministic: every candidate is scored with generators seeded from the run's seed
(zennas.proxies.repeat_seed), in strict FP32 with a fixed number of torch threads, so the score of a
network does not depend on which worker scored it or when.
"""

from __future__ import annotations

import math
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from zennas.arch import ArchSpec, parse
from zennas.errors import ConfigError, LatencyError
from zennas.io import json_field
from zennas.latency import predict
from zennas.latency.ops import network_op_groups
from zennas.latency.shipped import open_table, shipped_tables, table_for_gpu
from zennas.latency.table import LatencyTable
from zennas.proxies import get_proxy
from zennas.proxies.zen import ANALYTIC_DIALECTS, expected_zen
from zennas.search import constraints, milp
from zennas.search.budget import Budgets, latency_batch_size
from zennas.search.constraints import Constraints, Origin
from zennas.search.cost import BudgetCost
from zennas.search.interfaces import Scored, ScoreMap
from zennas.search.parallel import ProcessMap, RayMap, SerialMap
from zennas.search.run import run_milp, search
from zennas.spaces import get_space

_TERM = re.compile(r"^\s*([A-Za-z][\w.-]*)\s*(?:=\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))?\s*$")


# ---------------------------------------------------------------------------------------------
# The objective


@dataclass(frozen=True)
class ProxyTerm:
    """One proxy of the objective and its weight."""

    name: str
    weight: float = 1.0


def parse_proxy(text: str) -> tuple[ProxyTerm, ...]:
    """`zen` or a weighted sum `zen=1,naswot=0.5`; every name must be a registered proxy.

    The objective is sum(weight x value) with lower-is-better proxies negated, on the proxies' raw
    scales: choose weights that put the terms on comparable scales.
    """
    terms = []
    for part in str(text).split(","):
        match = _TERM.match(part)
        if match is None:
            raise ConfigError(
                f"cannot read proxy {part.strip()!r} in {text!r}: write NAME or NAME=WEIGHT, e.g. zen=1,naswot=0.5"
            )
        name, weight = match.group(1), float(match.group(2)) if match.group(2) else 1.0
        get_proxy(name)  # unknown name: ConfigError listing the registered proxies
        if not math.isfinite(weight) or weight == 0:
            raise ConfigError(f"proxy weight of {name} must be a finite non-zero number, got {match.group(2)}")
        terms.append(ProxyTerm(name, weight))
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise ConfigError(f"proxy {text!r} names a proxy twice")
    return tuple(terms)


def check_proxy_options(terms: tuple[ProxyTerm, ...], options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """`options` as Problem.proxy_options: every key an option of a proxy of the objective, every value allowed."""
    proxies = [get_proxy(t.name) for t in terms]
    for key, value in options.items():
        owners = [p for p in proxies if key in p.options]
        if not owners:
            known = sorted({k for p in proxies for k in p.options})
            raise ConfigError(
                f"proxy option {key!r} applies to none of the proxies {describe_proxy(terms)}; "
                f"their options: {', '.join(known) or 'none'}"
            )
        for proxy in owners:
            allowed = proxy.options[key].allowed
            if allowed is not None and value not in allowed:
                raise ConfigError(
                    f"proxy {proxy.name}: option {key}={value!r} is not allowed; choose one of "
                    f"{', '.join(map(str, allowed))}"
                )
    return tuple(sorted(options.items()))


def describe_proxy(terms: tuple[ProxyTerm, ...]) -> str:
    """The canonical spelling of an objective: `zen` or `zen=1,naswot=0.5`."""
    if len(terms) == 1 and terms[0].weight == 1.0:
        return terms[0].name
    return ",".join(f"{t.name}={t.weight:g}" for t in terms)


# ---------------------------------------------------------------------------------------------
# The latency table as the search sees it


@dataclass(frozen=True, eq=False)
class TableLatency:
    """A LatencyTable's prediction at one batch, resolution and head (zennas.search.interfaces.NetworkLatency)."""

    table: LatencyTable = field(repr=False)
    batch_size: int
    resolution: int
    num_classes: int
    use_se: bool | None = None

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def batch_sizes(self) -> list[int]:
        return self.table.batch_sizes

    @property
    def correction(self) -> dict[str, Any] | None:
        return self.table.correction

    def latency_ms_per_batch(self, spec: ArchSpec) -> float:
        """zennas.latency.predict.latency_ms_per_batch of `spec` at this batch, resolution and head."""
        return predict.latency_ms_per_batch(
            spec, self.table, resolution=self.resolution, batch_size=self.batch_size, num_classes=self.num_classes,
            use_se=self.use_se,
        )  # fmt: skip

    def block_ms(self, spec: ArchSpec) -> tuple[list[float], set[str]]:
        """(uncorrected ms of each operator group of zennas.latency.ops, the kinds the table does not cost)."""
        groups = network_op_groups(spec, resolution=self.resolution, num_classes=self.num_classes, use_se=self.use_se)
        ms, missing = [], set()
        for group in groups:
            total, _, skipped = predict.group_ms(self.table, group, self.batch_size)  # left out, as predict does
            ms.append(total)
            missing.update(skipped)
        return ms, missing


def table_latency(
    table: LatencyTable, *, resolution: int, num_classes: int, use_se: bool | None = None,
    batch_size: int | None = None,
) -> TableLatency:  # fmt: skip
    """`table` at the latency batch (`batch_size`, else the table's budget batch), resolution and head."""
    return TableLatency(table, latency_batch_size(table, batch_size), resolution, num_classes, use_se)


def block_latency_model(
    space: Any, table: LatencyTable, *, resolution: int | None = None, num_classes: int | None = None,
    batch_size: int | None = None, use_se: bool | None = None,
) -> milp.LinearLatency:  # fmt: skip
    """zennas.search.milp.block_latency_model of `table` (resolution and classes default to the dialect's)."""
    milp.space_layout(space)
    resolution, num_classes = milp.space_settings(space, resolution, num_classes)
    latency = table_latency(table, resolution=resolution, num_classes=num_classes, use_se=use_se, batch_size=batch_size)
    return milp.block_latency_model(space, latency)


def milp_search(
    space: Any, score_fn: Callable[[ArchSpec], float], table: LatencyTable, budget_ms_per_batch: float, samples: int,
    seed: int, heldout_fraction: float = 0.2, *, resolution: int | None = None, num_classes: int | None = None,
    batch_size: int | None = None, use_se: bool | None = None, **options: Any,
) -> milp.MilpSearchResult:  # fmt: skip
    """zennas.search.milp.milp_search costed by `table` (options: ridge, macs_budget, params_budget, ...)."""
    milp.space_layout(space)
    resolution, num_classes = milp.space_settings(space, resolution, num_classes)
    latency = table_latency(table, resolution=resolution, num_classes=num_classes, use_se=use_se, batch_size=batch_size)
    return milp.milp_search(space, score_fn, latency, budget_ms_per_batch, samples, seed, heldout_fraction, **options)


# ---------------------------------------------------------------------------------------------
# The problem


def _is_shipped(table: str) -> bool:
    return table in shipped_tables()


@dataclass(frozen=True)
class Problem:
    """A search's objective, scoring settings, table and budgets (plain data: picklable, JSON-able).

    It is the zennas.search.interfaces.SearchProblem the search receives: the space, the cost model,
    the screen and the scorer are built from these settings when first used.
    """

    space: str
    proxy: tuple[ProxyTerm, ...]
    resolution: int
    num_classes: int
    budgets: Budgets = field(default_factory=Budgets)
    preset: str | None = None
    table: str | None = None  # shipped table name, or a table file (kept as an absolute path)
    table_sha256: str | None = None  # digest of that table's file; None: whatever the file holds when opened
    proxy_batch_size: int | None = None  # None: the proxy's own default
    proxy_options: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    threads: int = 1  # torch threads per scorer
    use_se: bool | None = None
    device: str = "cpu"  # where proxies run: cpu, cuda, cuda:1 (scores are reproducible per device kind)
    origins: tuple[tuple[str, Origin], ...] = ()  # where each constraint came from (search.constraints)

    def __post_init__(self) -> None:
        if self.table is not None and not _is_shipped(self.table):
            # A relative path would name another file when a run is resumed from another folder.
            object.__setattr__(self, "table", str(Path(self.table).resolve()))

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only: a worker rebuilds what it needs. Workers never cost latency (the cost
        model runs in the main process), and a table reopened from `table` must match `table_sha256`."""
        return {k: v for k, v in self.__dict__.items() if k not in _BUILT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["proxy"] = describe_proxy(self.proxy)
        out["proxy_options"] = dict(self.proxy_options)
        out["origins"] = {name: origin.to_dict() for name, origin in self.origins}
        out["table_sha256"] = self.table_digest
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        fields = dict(data)
        fields["proxy"] = parse_proxy(fields["proxy"])
        fields["budgets"] = Budgets(**fields["budgets"])
        fields["proxy_options"] = tuple(sorted(fields.get("proxy_options", {}).items()))
        fields["origins"] = tuple(sorted((k, Origin(**v)) for k, v in fields.get("origins", {}).items()))
        return cls(**fields)

    def with_table(self, table: LatencyTable | None) -> Problem:
        """This problem costed by `table`, a LatencyTable already loaded (None: no table).

        The table object itself is used from then on (never reopened by name), and its source (shipped
        name or absolute path) and file digest are recorded, so a resumed run can refuse a changed file.
        """
        if table is None:
            return replace(self, table=None, table_sha256=None)
        if table.source is None or table.sha256 is None:
            raise ConfigError(f"latency table {table.name!r} was not read from a file; save it with save_table first")
        problem = replace(self, table=table.source, table_sha256=table.sha256)
        problem.__dict__["latency_table"] = table  # the cached_property's slot
        return problem

    def with_budgets(self, **changes: Any) -> Problem:
        """This problem under other budgets, costed by the same table object."""
        problem = replace(self, budgets=replace(self.budgets, **changes))
        if "latency_table" in self.__dict__:
            problem.__dict__["latency_table"] = self.__dict__["latency_table"]
        return problem

    @property
    def table_digest(self) -> str | None:
        """sha256 of the table file this problem uses: the pinned one, else that of the file as opened."""
        if self.table is None:
            return None
        return self.table_sha256 or self.latency_table.sha256

    def table_record(self) -> dict[str, Any]:
        """Which latency table a search used: its file (absolute) and the sha256 of the file's bytes."""
        table = self.latency_table
        if table is None:
            return {"table_file": None, "table_sha256": None}
        return {"table_file": str(table.path.resolve()), "table_sha256": self.table_digest}

    @cached_property
    def search_space(self) -> Any:
        """The space named `space` with `preset` applied, its layer cap lifted to a larger budget's."""
        sp = get_space(self.space)
        if self.preset:
            if not hasattr(sp, "with_preset"):
                raise ConfigError(f"space {self.space!r} has no presets")
            sp = sp.with_preset(self.preset)
        cap, own = self.budgets.max_layers, getattr(sp, "max_layers", None)
        if cap is not None and own is not None and cap > own and hasattr(sp, "with_options"):
            # A preset's cap is part of membership (mutations keep within it): a larger budget lifts it.
            sp = sp.with_options(constraints={"max_layers": cap})
        return sp

    @cached_property
    def latency_table(self) -> LatencyTable | None:
        """The LatencyTable given to `with_table`, else `table` opened (and checked against `table_sha256`)."""
        if self.table is None:
            return None
        table = open_table(self.table)
        if self.table_sha256 is not None and table.sha256 != self.table_sha256:
            raise LatencyError(
                f"latency table {self.table} has changed since this search was set up (sha256 {self.table_sha256[:16]}"
                f"... then, {table.sha256[:16]}... now); restore the table it used or start a new search"
            )
        return table

    @cached_property
    def cost(self) -> BudgetCost:
        """The cost model: analytic counts, and the table's latency at the latency batch (resolved here, once)."""
        table, latency = self.latency_table, None
        if table is not None:
            latency = table_latency(table, resolution=self.resolution, num_classes=self.num_classes,
                                    use_se=self.use_se, batch_size=self.budgets.latency_batch_size)  # fmt: skip
        return BudgetCost(self.budgets, self.resolution, self.num_classes, self.use_se, latency)

    def measure(self, spec: ArchSpec) -> tuple[dict[str, Any], list[str]]:
        """The cost model's figures of `spec` (zennas.search.cost.BudgetCost.measure)."""
        return self.cost.measure(spec)

    @cached_property
    def _screen(self) -> tuple[Callable[[ArchSpec], float] | None, str]:
        """(the closed form that screens children for the objective, or None; a line saying which or why none).

        Only a sampled Zen-Score objective has one: zen-analytic, the expectation of the same score
        (same mode, gamma, batch size and resolution) over the random weights and inputs, for the
        dialects it covers. It ranks children (Kendall tau 0.99 with sampled Zen); it never scores them.
        """
        objective = describe_proxy(self.proxy)
        if len(self.proxy) != 1 or self.proxy[0].name != "zen" or self.proxy[0].weight <= 0:
            return None, f"no closed form screens the objective {objective} (the funnel serves the sampled zen alone)"
        zen = get_proxy("zen")
        options = {name: option.default for name, option in zen.options.items()} | dict(self.proxy_options)
        if options["residual"] != "removed":
            return None, "no closed form covers zen with residual=kept; every child is scored"
        dialect = self.search_space.dialect
        if dialect not in ANALYTIC_DIALECTS:
            return None, f"no closed form covers the {dialect} networks of space {self.space}; every child is scored"
        batch, gamma, mode = self.proxy_batch_size or zen.batch_size, float(options["gamma"]), options["mode"]

        def screen(spec: ArchSpec) -> float:
            return expected_zen(spec, resolution=self.resolution, batch_size=batch, gamma=gamma, mode=mode).score

        return screen, f"zen-analytic (mode {mode}, batch {batch}) screens children; zen scores the best of them"

    @property
    def screen(self) -> Callable[[ArchSpec], float] | None:
        """The objective's closed-form screen (see `_screen`), or None."""
        return self._screen[0]

    @property
    def screen_note(self) -> str:
        """Which closed form screens children, or why none does."""
        return self._screen[1]

    def parse(self, canonical: str) -> ArchSpec:
        """The candidate written as `canonical` in the space's dialect."""
        return parse(canonical, self.search_space.dialect)

    def score_map(self, *, workers: int = 1, ray: bool = False, ray_address: str | None = None) -> ScoreMap:
        """Where this problem's candidates are scored (`make_map`)."""
        return make_map(self, workers=workers, ray=ray, ray_address=ray_address)

    def versions(self) -> dict[str, str]:
        """zennas, Python, torch, numpy and scipy versions."""
        import numpy
        import scipy
        import torch

        import zennas

        return {"zennas": zennas.__version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__, "scipy": scipy.__version__}  # fmt: skip


# What a Problem builds from its settings: never pickled (a worker rebuilds what it uses).
_BUILT = ("search_space", "latency_table", "cost", "_screen")


# ---------------------------------------------------------------------------------------------
# Scoring


class Scorer:
    """Callable `canonical -> Scored` for one Problem (zennas.search.interfaces.Scorer); one per worker."""

    def __init__(self, problem: Problem):
        import torch

        self.problem = problem
        torch.set_num_threads(problem.threads)

    def _results(self, canonical: str, repeats: int) -> dict[str, Any]:
        """zennas.proxies.score of every proxy of the objective, with the problem's settings."""
        from zennas.proxies import score

        p = self.problem
        return score(
            p.parse(canonical), [t.name for t in p.proxy], batch_size=p.proxy_batch_size, resolution=p.resolution,
            num_classes=p.num_classes, seed=p.seed, device=p.device, options=dict(p.proxy_options), repeats=repeats,
        )  # fmt: skip

    def _objective(self, results: dict[str, Any], repeat: int) -> float:
        """sum(weight x value) of one repeat, lower-is-better proxies negated."""
        total = 0.0
        for term in self.problem.proxy:
            r = results[term.name]
            total += term.weight * (r.values[repeat] if r.higher_is_better else -r.values[repeat])
        return total

    def __call__(self, canonical: str) -> Scored:
        start = time.perf_counter()
        results = self._results(canonical, 1)
        seconds = time.perf_counter() - start
        values = {name: r.mean for name, r in results.items()}
        if any(r.degenerate for r in results.values()):
            reasons = "; ".join(str(r.meta.get("reason", "")) for r in results.values() if r.degenerate)
            return Scored(canonical, None, values, seconds, f"degenerate: {reasons}")
        return Scored(canonical, self._objective(results, 0), values, seconds)

    def repeats(self, canonical: str, repeats: int) -> list[float]:
        """Objective values of `repeats` independent draws (repeat 0 is the single-draw score); [] if degenerate."""
        results = self._results(canonical, repeats)
        if any(r.degenerate for r in results.values()):
            return []
        return [self._objective(results, i) for i in range(repeats)]


class InFlightMap:
    """Scores up to `workers` candidates at once in this process on the problem's device, one CUDA
    stream each (zennas.proxies.inflight.InFlight); the scores equal SerialMap's."""

    def __init__(self, problem: Problem, workers: int):
        from zennas.proxies.inflight import InFlight

        self.workers = workers
        self.scorer = Scorer(problem)
        self.pool = InFlight(workers, problem.device)

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        return self.pool.map(self.scorer, canonicals)

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        return self.pool.map(lambda c: self.scorer.repeats(c, repeats), canonicals)

    def close(self) -> None:
        self.pool.close()


def make_map(problem: Problem, *, workers: int = 1, ray: bool = False, ray_address: str | None = None) -> ScoreMap:
    """The scorer map for a run: serial, local processes, candidates in flight on one GPU, or Ray."""
    make_scorer = partial(Scorer, problem)  # picklable: each worker builds its own Scorer
    if ray:
        gpus = 1.0 if problem.device.startswith("cuda") else 0.0  # one actor per GPU when scoring on CUDA
        return RayMap(make_scorer, address=ray_address, workers=workers if workers > 1 else None, gpus_per_actor=gpus)
    if workers > 1 and problem.device.startswith("cuda"):
        return InFlightMap(problem, workers)  # one process, N streams on one GPU; Ray spreads over GPUs
    if workers > 1:
        return ProcessMap(make_scorer, workers)
    return SerialMap(make_scorer())


# ---------------------------------------------------------------------------------------------
# From user-level settings


def resolve_constraints(space: Any, **given: Any) -> Constraints:
    """zennas.search.constraints.resolve_constraints, a published latency budget costed by the shipped table."""
    return constraints.resolve_constraints(space, table_for_gpu=table_for_gpu, **given)


# A CPU search scores Zen at batch 4, not Zen's own 64: the value barely moves with the batch (the main
# job's winner: 280.35 at batch 4, 280.48 judged at 64) while a score costs a fraction, so 3 minutes of
# `--budget 1ms --gpu V100 --workers 2` scored 64 children instead of 14 and found a network judged 280.0
# instead of 170.7 (benchmarks/RESULTS.md, bench_search mainjob). A GPU keeps the proxy's own batch.
CPU_ZEN_BATCH = 4


def search_problem(
    space: str = "zennas-res", *, preset: str | None = None, proxy: str = "zen",
    proxy_options: Mapping[str, Any] | None = None, table: LatencyTable | None = None,
    latency_ms_per_image: float | None = None, latency_batch_size: int | None = None, macs: int | None = None,
    params: int | None = None, max_layers: int | None = None, convention: str | None = None,
    resolution: int | None = None, num_classes: int | None = None, proxy_batch_size: int | None = None,
    seed: int = 0, threads: int = 1, device: str = "cpu", resuming: str | Path | None = None,
) -> tuple[Problem, Constraints]:  # fmt: skip
    """(the Problem of a search, its Constraints): the preset's constraints unless a given value overrides one.

    `table` is a LatencyTable already opened (zennas.latency.shipped.open_table or table_for_gpu); the
    problem costs with that object. Without one, a latency budget the space or its preset states is
    costed by the shipped table of the GPU it was stated for (zennas.search.constraints).
    `resuming`: the folder of a run to continue; without a given `proxy_batch_size` it keeps the run's own
    (a run started before CPU_ZEN_BATCH scored Zen at the proxy's batch and goes on doing so).
    """
    sp = get_space(space)
    if preset is not None:
        if not hasattr(sp, "with_preset"):
            raise ConfigError(f"space {space!r} has no presets")
        sp = sp.with_preset(preset)
    c = resolve_constraints(
        sp, table=table, latency_ms_per_image=latency_ms_per_image, latency_batch_size=latency_batch_size, macs=macs,
        params=params, max_layers=max_layers, convention=convention, resolution=resolution, num_classes=num_classes,
    )  # fmt: skip
    terms = parse_proxy(proxy)
    stored = json_field(Path(resuming) / "checkpoint.json", "problem") if resuming is not None else None
    kept = stored.get("proxy_batch_size", 0) if isinstance(stored, dict) else 0  # 0: no run, or no batch in it
    if proxy_batch_size is None and (kept is None or (type(kept) is int and kept > 0)):
        proxy_batch_size = kept
    elif proxy_batch_size is None and device == "cpu" and all(term.name == "zen" for term in terms):
        proxy_batch_size = CPU_ZEN_BATCH
    # with_table: the search uses the loaded table itself, never one reopened by its header name.
    problem = Problem(
        space=space, preset=preset, proxy=terms, resolution=c.resolution, num_classes=c.num_classes,
        budgets=c.budgets, proxy_batch_size=proxy_batch_size,
        proxy_options=check_proxy_options(terms, proxy_options or {}), seed=seed, threads=threads, device=device,
        origins=c.origin_items(),
    ).with_table(c.table)  # fmt: skip
    return problem, c


__all__ = [
    "InFlightMap", "Problem", "ProxyTerm", "Scorer", "TableLatency", "block_latency_model", "check_proxy_options",
    "describe_proxy", "make_map", "milp_search", "parse_proxy", "resolve_constraints", "run_milp", "search",
    "search_problem", "table_latency",
]  # fmt: skip
