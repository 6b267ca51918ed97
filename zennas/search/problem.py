"""What a search optimises and under which constraints, in a picklable form a worker can rebuild.

`Problem` names the space, the proxy (one registered proxy or a weighted sum), the scoring
settings, the latency table and the budgets. `Problem.measure` computes the cheap figures of a
candidate in the cheapest-first order (layers, then params and MACs by analytic counting, then the
table's latency) and stops at the first budget it breaks; `Scorer` runs the proxy, which is the only
expensive step and the only one sent to workers.

Scores are deterministic: every candidate is scored with generators seeded from the run's seed
(zennas.proxies.repeat_seed), in strict FP32 with a fixed number of torch threads, so the score of a
network does not depend on which worker scored it or when.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from zennas.arch import ArchSpec, parse
from zennas.errors import ConfigError, LatencyError
from zennas.search.budget import Budgets
from zennas.search.constraints import Origin

_TERM = re.compile(r"^\s*([A-Za-z][\w.-]*)\s*(?:=\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))?\s*$")


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
    from zennas.proxies import get_proxy

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


def _is_shipped(table: str) -> bool:
    from zennas.latency.shipped import shipped_tables

    return table in shipped_tables()


def check_proxy_options(terms: tuple[ProxyTerm, ...], options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """`options` as Problem.proxy_options: every key an option of a proxy of the objective, every value allowed."""
    from zennas.proxies import get_proxy

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


@dataclass(frozen=True)
class Problem:
    """A search's objective, scoring settings, table and budgets (plain data: picklable, JSON-able)."""

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
        """Pickle the settings only: a worker reloads the space itself. Workers never cost latency
        (`measure` runs in the main process), and a table reopened from `table` must match `table_sha256`."""
        return {k: v for k, v in self.__dict__.items() if k not in ("search_space", "latency_table", "_screen")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["proxy"] = describe_proxy(self.proxy)
        out["proxy_options"] = dict(self.proxy_options)
        out["origins"] = {name: origin.to_dict() for name, origin in self.origins}
        out["table_sha256"] = self.table_digest
        return out

    def with_table(self, table: Any) -> Problem:
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

    @property
    def table_digest(self) -> str | None:
        """sha256 of the table file this problem uses: the pinned one, else that of the file as opened."""
        if self.table is None:
            return None
        return self.table_sha256 or self.latency_table.sha256

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        fields = dict(data)
        fields["proxy"] = parse_proxy(fields["proxy"])
        fields["budgets"] = Budgets(**fields["budgets"])
        fields["proxy_options"] = tuple(sorted(fields.get("proxy_options", {}).items()))
        fields["origins"] = tuple(sorted((k, Origin(**v)) for k, v in fields.get("origins", {}).items()))
        return cls(**fields)

    def with_budgets(self, **changes: Any) -> Problem:
        return replace(self, budgets=replace(self.budgets, **changes))

    @cached_property
    def search_space(self) -> Any:
        from zennas.spaces import get_space

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
    def latency_table(self) -> Any:
        """The LatencyTable given to `with_table`, else `table` opened (and checked against `table_sha256`)."""
        if self.table is None:
            return None
        from zennas.latency.shipped import open_table

        table = open_table(self.table)
        if self.table_sha256 is not None and table.sha256 != self.table_sha256:
            raise LatencyError(
                f"latency table {self.table} has changed since this search was set up (sha256 {self.table_sha256[:16]}"
                f"... then, {table.sha256[:16]}... now); restore the table it used or start a new search"
            )
        return table

    @cached_property
    def _screen(self) -> tuple[Callable[[ArchSpec], float] | None, str]:
        """(the closed form that screens children for the objective, or None; a line saying which or why none).

        Only a sampled Zen-Score objective has one: zen-analytic, the expectation of the same score
        (same mode, gamma, batch size and resolution) over the random weights and inputs, for the
        dialects it covers. It ranks children (Kendall tau 0.99 with sampled Zen); it never scores them.
        """
        from zennas.proxies import get_proxy
        from zennas.proxies.zen import ANALYTIC_DIALECTS, expected_zen

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

    def measure(self, spec: ArchSpec) -> tuple[dict[str, Any], list[str]]:
        """Cheap figures of `spec`, cheapest first, stopping at the first broken budget: (metrics, violated).

        `violated` holds one of layers, params, macs, latency, or table (an operator the latency
        table cannot cost: such a candidate is dropped, never guessed).
        """
        from zennas.counting import count

        b = self.budgets
        cx = count(spec, resolution=self.resolution, num_classes=self.num_classes, use_se=self.use_se)
        metrics: dict[str, Any] = {"layers": cx.layers, "macs": cx.macs, "params": cx.params}
        if b.max_layers is not None and cx.layers > b.max_layers:
            return metrics, ["layers"]
        if b.convention != "correct":  # ZenNAS searched against its repository counts, without SE; TinyNAS with its SE
            use_se = False if b.convention == "zennas" else self.use_se
            cc = count(
                spec, resolution=self.resolution, num_classes=self.num_classes, use_se=use_se, convention=b.convention
            )
            metrics["budget_macs"], metrics["budget_params"] = cc.flops, cc.convention_params
        budget_params = metrics.get("budget_params", cx.params)
        budget_macs = metrics.get("budget_macs", cx.macs)
        if b.params is not None and budget_params > b.params:
            return metrics, ["params"]
        if b.macs is not None and budget_macs > b.macs:
            return metrics, ["macs"]
        table = self.latency_table
        if table is not None:
            from zennas.latency.predict import latency_ms_per_batch

            batch = b.latency_batch_size or table.default_batch_size()
            try:
                ms = latency_ms_per_batch(
                    spec, table, resolution=self.resolution, batch_size=batch, num_classes=self.num_classes,
                    use_se=self.use_se,
                )  # fmt: skip
            except LatencyError as error:  # an operator far outside the table: cannot be costed, so not feasible
                metrics["note"] = str(error)
                return metrics, ["table"]
            metrics["latency_ms_per_image"] = ms / batch
            # `not <=`: a NaN latency must break the budget (`NaN > budget` is False); predict refuses NaN too.
            if b.latency_ms_per_image is not None and not ms / batch <= b.latency_ms_per_image:
                return metrics, ["latency"]
        return metrics, []


@dataclass(frozen=True)
class Scored:
    """A proxy evaluation: the objective (None for a degenerate network), per-proxy values, seconds."""

    canonical: str
    score: float | None
    values: dict[str, float | None]
    seconds: float
    note: str = ""


class Scorer:
    """Callable `canonical -> Scored` for one Problem; built once per worker process."""

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
