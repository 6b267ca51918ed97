"""`search()`: the library entry point behind `zennas search` (evolution or random sampling)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from zennas.search.evolution import Evolution, Settings, State
from zennas.search.problem import Problem
from zennas.search.report import write_outputs

STRATEGIES = ("evolution", "random", "milp")


def search(
    problem: Problem,
    settings: Settings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    workers: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a search into `out` and return the content of its result.json."""
    from zennas.search.parallel import make_map

    run = Evolution(problem, settings, out)
    run.check_resumable(resume)
    scorer_map = make_map(problem, workers=workers, ray=ray, ray_address=ray_address)
    try:
        run.map = scorer_map
        state: State = run.run(resume=resume, progress=progress)
    finally:
        scorer_map.close()
    result = write_outputs(run, state, plots=plots)
    result["workers"] = scorer_map.workers
    return result
