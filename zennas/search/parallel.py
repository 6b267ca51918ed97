"""Where candidates are scored: this process, N local worker processes, or actors on a Ray cluster.

All of them take a list of canonical architecture strings and return their `Scored` results in the
same order; scores do not depend on the worker (zennas.wiring), so a run gives the same result with
any of them. Each map receives `make_scorer`, a picklable callable that builds a Scorer
(zennas.search.interfaces.Scorer): a worker builds its own once, so this module imports neither the
proxies nor torch. Local workers are started with the `spawn` method (a forked copy of a process that
has already run torch's thread pools can deadlock). Several candidates in flight on one GPU, one CUDA
stream each, is zennas.wiring.InFlightMap.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

from zennas.errors import ConfigError, DependencyError
from zennas.search.interfaces import Scored, Scorer

RAY_HINT = "pip install 'zennas[ray]' (or pip install ray)"

MakeScorer = Callable[[], Scorer]  # picklable: sent to every worker, which calls it once

_WORKER_SCORER: Scorer | None = None


class SerialMap:
    """Scores candidates in this process."""

    workers = 1

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        return [self.scorer(c) for c in canonicals]

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        """Objective values of `repeats` draws of each candidate ([] for a degenerate one)."""
        return [self.scorer.repeats(c, repeats) for c in canonicals]

    def close(self) -> None:
        pass


def _init_worker(make_scorer: MakeScorer) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = make_scorer()


def _score_in_worker(canonical: str) -> Scored:
    assert _WORKER_SCORER is not None, "worker used before its initializer ran"
    return _WORKER_SCORER(canonical)


def _repeats_in_worker(args: tuple[str, int]) -> list[float]:
    assert _WORKER_SCORER is not None, "worker used before its initializer ran"
    return _WORKER_SCORER.repeats(*args)


class ProcessMap:
    """Scores candidates in `workers` local processes (spawned once, reused for the whole run)."""

    def __init__(self, make_scorer: MakeScorer, workers: int):
        if workers < 2:
            raise ConfigError(f"ProcessMap needs at least 2 workers, got {workers}; use SerialMap for one")
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(workers, initializer=_init_worker, initargs=(make_scorer,))

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        return self.pool.map(_score_in_worker, list(canonicals), chunksize=1)

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        """Objective values of `repeats` draws of each candidate, the candidates spread over the workers."""
        return self.pool.map(_repeats_in_worker, [(c, repeats) for c in canonicals], chunksize=1)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise DependencyError(f"scoring on Ray needs Ray, which is not installed: {RAY_HINT}") from exc
    return ray


class RayMap:
    """Scores candidates on Ray actors, one per worker; each batch is spread round-robin over the actors.

    `address` None starts a local cluster (`ray.init()`); otherwise it connects to that address
    ("auto" for a running cluster, or "ray://host:10001"). `workers` None = one actor per CPU the
    cluster reports (per GPU with `gpus_per_actor`).
    """

    def __init__(self, make_scorer: MakeScorer, *, address: str | None = None, workers: int | None = None,
                 gpus_per_actor: float = 0.0):  # fmt: skip
        ray = _import_ray()
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and workers is not None:
                kwargs["num_cpus"] = workers
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:  # connection refused, bad address, ...
                raise ConfigError(f"could not start or reach the Ray cluster at {address or 'local'}: {exc}") from exc
        if workers is None:
            resources = ray.cluster_resources()
            workers = int(resources.get("GPU", 0) // gpus_per_actor) if gpus_per_actor else int(resources.get("CPU", 1))
        self.workers = max(1, workers)
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_actor)(_RayScorer)
        self.actors = [actor.remote(make_scorer) for _ in range(self.workers)]

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        futures = [self.actors[i % self.workers].score.remote(c) for i, c in enumerate(canonicals)]
        return list(self.ray.get(futures))

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        futures = [self.actors[i % self.workers].repeats.remote(c, repeats) for i, c in enumerate(canonicals)]
        return list(self.ray.get(futures))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started_here:
            self.ray.shutdown()


class _RayScorer:
    """A Ray actor holding one Scorer."""

    def __init__(self, make_scorer: MakeScorer):
        self.scorer = make_scorer()

    def score(self, canonical: str) -> Scored:
        return self.scorer(canonical)

    def repeats(self, canonical: str, repeats: int) -> list[float]:
        return self.scorer.repeats(canonical, repeats)
