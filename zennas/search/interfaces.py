"""What a search receives: a space, a scorer, a cost model, and the problem that holds them.

These are structural types (typing.Protocol): the search names the methods it calls and imports no
implementation. zennas.wiring builds them from user-level settings (a space name, a proxy, a latency
table) for the command line and the Python API; a test can pass any object with the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zennas.arch import ArchSpec
from zennas.search.budget import Budgets


class Space(Protocol):
    """A search space as the search uses it (zennas.spaces.SearchSpace is one)."""

    name: str
    dialect: str

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member."""
        ...

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """A random member one mutation away from `arch`."""
        ...

    def initial(self) -> Sequence[ArchSpec]:
        """Seed architectures to start a search from."""
        ...

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else a one-line reason."""
        ...

    def contains(self, arch: ArchSpec) -> bool:
        """True if `arch` is a member."""
        ...


@dataclass(frozen=True)
class Scored:
    """A proxy evaluation: the objective (None for a degenerate network), per-proxy values, seconds."""

    canonical: str
    score: float | None
    values: dict[str, float | None]
    seconds: float
    note: str = ""


class Scorer(Protocol):
    """The objective of one candidate, given by its canonical text: deterministic for a given seed."""

    def __call__(self, canonical: str) -> Scored:
        """One draw of the objective (repeat 0)."""
        ...

    def repeats(self, canonical: str, repeats: int) -> list[float]:
        """Objective values of `repeats` independent draws (repeat 0 first); [] for a degenerate network."""
        ...


class ScoreMap(Protocol):
    """Scores many candidates at once (this process, worker processes, streams, Ray), in their order."""

    workers: int

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        """The Scored result of each candidate."""
        ...

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        """Scorer.repeats of each candidate."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


class NetworkLatency(Protocol):
    """A latency table's prediction for whole networks at one batch, resolved once, and per block (the MILP).

    Every figure is ms per batch of `batch_size` at `resolution` with `num_classes` outputs.
    """

    name: str  # the table's name, for messages and results
    batch_size: int  # the batch the latency budget holds at
    batch_sizes: Sequence[int]  # the batches the table tabulates
    resolution: int
    num_classes: int
    use_se: bool | None
    correction: Mapping[str, float] | None  # the table's affine correction of the operator sum, if any

    def latency_ms_per_batch(self, spec: ArchSpec) -> float:
        """The table's latency of `spec` (correction applied); LatencyError when the table cannot cost it."""
        ...

    def block_ms(self, spec: ArchSpec) -> tuple[list[float], set[str]]:
        """(ms of each block's operators before the correction, the operator kinds the table does not cost).

        Blocks in network order as zennas.latency.ops groups them: stem, first block, ..., last conv, head.
        """
        ...


class CostModel(Protocol):
    """The cheap figures of a candidate under the budgets: layers, params, MACs, table latency."""

    budgets: Budgets
    latency: NetworkLatency | None  # None: no latency table

    def measure(self, spec: ArchSpec) -> tuple[dict[str, Any], list[str]]:
        """(metrics, violated): figures cheapest first, stopping at the first broken budget."""
        ...


class SearchProblem(Protocol):
    """What a search optimises, with its collaborators (zennas.wiring.Problem is one)."""

    seed: int

    @property
    def search_space(self) -> Space:
        """The space, with its preset applied."""
        ...

    @property
    def cost(self) -> CostModel:
        """The budgets and how a candidate is measured against them."""
        ...

    @property
    def screen(self) -> Callable[[ArchSpec], float] | None:
        """A cheap closed form that ranks children for the objective (the funnel), or None."""
        ...

    @property
    def screen_note(self) -> str:
        """Which closed form screens children, or why none does."""
        ...

    def parse(self, canonical: str) -> ArchSpec:
        """The candidate written as `canonical` in the space's dialect."""
        ...

    def score_map(self, *, workers: int = 1, ray: bool = False, ray_address: str | None = None) -> ScoreMap:
        """Where candidates are scored: this process, `workers` workers, or Ray."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The problem as JSON (space, preset, proxy, resolution, num_classes, budgets, table, seed, ...):
        a checkpoint records it, and a run is resumed only with an equal one."""
        ...

    def table_record(self) -> dict[str, Any]:
        """Which latency table file costs the search: {"table_file": path, "table_sha256": digest} (None: none)."""
        ...

    def versions(self) -> dict[str, str]:
        """The versions of the libraries the scores depend on, for the result."""
        ...
