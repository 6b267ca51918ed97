"""Where candidates are scored: this process, N local worker processes, N candidates in flight on one
GPU, or actors on a Ray cluster.

All of them take a list of canonical architecture strings and return their `Scored` results in the
same order; scores do not depend on the worker (problem.py), so a run gives the same result with
any of them. Local workers are started with the `spawn` method (a forked copy of a process that has
already run torch's thread pools can deadlock) and each builds its own Scorer once. On CUDA,
`--workers N` keeps N candidates in flight in this process, each on its own stream
(zennas.proxies.inflight): one GPU context, whose kernels can overlap, instead of N.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

from zennas.errors import ConfigError, DependencyError
from zennas.search.evolution import SerialMap
from zennas.search.problem import Problem, Scored, Scorer

RAY_HINT = "pip install 'zennas[ray]' (or pip install ray)"

_WORKER_SCORER: Scorer | None = None


def _init_worker(problem: Problem) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = Scorer(problem)


def _score_in_worker(canonical: str) -> Scored:
    assert _WORKER_SCORER is not None, "worker used before its initializer ran"
    return _WORKER_SCORER(canonical)


def _repeats_in_worker(args: tuple[str, int]) -> list[float]:
    assert _WORKER_SCORER is not None, "worker used before its initializer ran"
    return _WORKER_SCORER.repeats(*args)


class ProcessMap:
    """Scores candidates in `workers` local processes (spawned once, reused for the whole run)."""

    def __init__(self, problem: Problem, workers: int):
        if workers < 2:
            raise ConfigError(f"ProcessMap needs at least 2 workers, got {workers}; use SerialMap for one")
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(workers, initializer=_init_worker, initargs=(problem,))

    def __call__(self, canonicals: Sequence[str]) -> list[Scored]:
        return self.pool.map(_score_in_worker, list(canonicals), chunksize=1)

    def repeats(self, canonicals: Sequence[str], repeats: int) -> list[list[float]]:
        """Objective values of `repeats` draws of each candidate, the candidates spread over the workers."""
        return self.pool.map(_repeats_in_worker, [(c, repeats) for c in canonicals], chunksize=1)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


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


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise DependencyError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from exc
    return ray


class RayMap:
    """Scores candidates on Ray actors, one per worker; each batch is spread round-robin over the actors.

    `address` None starts a local cluster (`ray.init()`); otherwise it connects to that address
    ("auto" for a running cluster, or "ray://host:10001"). `workers` None = one actor per CPU the
    cluster reports (per GPU with `gpus_per_actor`).
    """

    def __init__(self, problem: Problem, *, address: str | None = None, workers: int | None = None,
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
        self.actors = [actor.remote(problem) for _ in range(self.workers)]

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

    def __init__(self, problem: Problem):
        self.scorer = Scorer(problem)

    def score(self, canonical: str) -> Scored:
        return self.scorer(canonical)

    def repeats(self, canonical: str, repeats: int) -> list[float]:
        return self.scorer.repeats(canonical, repeats)


def make_map(problem: Problem, *, workers: int = 1, ray: bool = False, ray_address: str | None = None) -> Any:
    """The scorer map for a run: serial, local processes, or Ray."""
    if ray:
        gpus = 1.0 if problem.device.startswith("cuda") else 0.0  # one actor per GPU when scoring on CUDA
        return RayMap(problem, address=ray_address, workers=workers if workers > 1 else None, gpus_per_actor=gpus)
    if workers > 1 and problem.device.startswith("cuda"):
        return InFlightMap(problem, workers)  # one process, N streams on one GPU; --ray spreads over GPUs
    if workers > 1:
        return ProcessMap(problem, workers)
    return SerialMap(problem)
