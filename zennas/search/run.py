"""`search()`: the library entry point behind `zennas search` (evolution or random sampling), and `run_milp()`.

Both receive a SearchProblem (zennas.search.interfaces; zennas.wiring.Problem builds one from a
space name, a proxy and a latency table) and write into a run folder.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from zennas.errors import ConfigError, ProxyError
from zennas.io import RunKind, atomic_write_json, atomic_write_text, claim_output_folder, json_field
from zennas.search import milp
from zennas.search.evolution import Evolution, Progress, Settings, State
from zennas.search.interfaces import SearchProblem
from zennas.search.report import write_outputs

STRATEGIES = ("evolution", "random", "milp")
# A MILP run writes in one go and cannot be resumed; folders from before zennas-run.json are known by result.json.
MILP_RUN = RunKind(
    "search-milp", "a MILP search", None, ("history.jsonl", "best.txt", "result.json"),
    recognise=lambda out: json_field(out / "result.json", "strategy") == "milp",
)  # fmt: skip


def search(
    problem: SearchProblem,
    settings: Settings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
    progress: Progress | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a search into `out` and return the content of its result.json.

    `overwrite` starts afresh in a folder that holds other files (zennas.io.claim_output_folder)."""
    run = Evolution(
        problem, settings, out,
        make_scorer_map=lambda: problem.score_map(workers=workers, ray=ray, ray_address=ray_address),
    )  # fmt: skip
    try:
        state: State = run.run(resume=resume, overwrite=overwrite, progress=progress)
    finally:
        if run.map is not None:
            run.map.close()
    result = write_outputs(run, state, plots=plots)
    result["workers"] = run.map.workers if run.map is not None else workers  # None: a finished run, re-reported
    return result


def run_milp(
    problem: SearchProblem, settings: Settings, out: str | os.PathLike, *, workers: int = 1, ray: bool = False,
    ray_address: str | None = None, overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """BINAS-style exact search (zennas.search.milp) with `settings.iterations` proxy evaluations.

    iterations - 1 seeded samples are scored (on the scorer map: serial, processes or Ray), a
    bilinear estimator is fitted, the latency/MACs/params-constrained problem is solved exactly by
    HiGHS, and the solution is scored: the same number of proxy evaluations as an evolution run of
    `iterations`. Writes best.txt, result.json and history.jsonl (every sample, then the solution)
    into `out`, claimed as a search folder is (`overwrite` as in `search`; a MILP run has no resume).
    """
    cost = problem.cost
    b, latency = cost.budgets, cost.latency
    space = problem.search_space
    # Not a per-block/per-stage space: a clear error before any work (and before a layer cap it would not take).
    milp.space_layout(space)
    if latency is None or b.latency_ms_per_image is None:
        raise ConfigError(
            "the MILP strategy needs a latency budget and a latency table, e.g. 10 ms per image on cpu-ort-fp32-b1"
        )
    if b.max_layers is not None or b.convention != "correct":
        raise ConfigError(
            "the MILP strategy takes latency, FLOPs and params budgets only, in correct counts (no layer cap, no "
            "other counting convention)"
        )
    if settings.iterations < 2:
        raise ConfigError("the MILP strategy needs at least 2 iterations (samples to fit, plus the solution)")
    out = claim_output_folder(out, MILP_RUN, overwrite=overwrite)
    scorer_map = problem.score_map(workers=workers, ray=ray, ray_address=ray_address)
    records: list[dict[str, Any]] = []

    def score_many(specs: Any) -> list[float]:
        values = []
        for spec, scored in zip(specs, scorer_map([s.canonical for s in specs]), strict=True):
            if scored.score is None:
                raise ProxyError(f"the proxy cannot score sampled network {spec.canonical} ({scored.note})")
            records.append({"it": len(records) + 1, "status": "scored", "hash": spec.hash, "arch": spec.canonical,
                            "score": scored.score, "t_score_s": round(scored.seconds, 6)})  # fmt: skip
            values.append(scored.score)
        return values

    batch = latency.batch_size
    start = time.monotonic()
    try:
        found = milp.milp_search(
            space, lambda spec: score_many([spec])[0], latency, b.latency_ms_per_image * batch,
            settings.iterations - 1, problem.seed, macs_budget=b.macs, params_budget=b.params, score_many=score_many,
        )  # fmt: skip
    finally:
        scorer_map.close()
    wall = time.monotonic() - start
    records[-1]["status"] = "solution"
    spec = found.spec
    metrics, violated = cost.measure(spec)
    if violated:
        raise AssertionError(f"internal error: the MILP solution breaks the {violated[0]} budget; please report it")
    record = problem.to_dict()
    result: dict[str, Any] = {
        "arch": spec.canonical, "dialect": space.dialect, "hash": spec.hash, "space": record["space"],
        "preset": record["preset"], "proxy": record["proxy"], "strategy": "milp", "score": found.score,
        "estimated_score": found.estimated_score, "kendall_tau_heldout": found.kendall_tau,
        "latency_ms_per_image": metrics["latency_ms_per_image"], "latency_batch_size": batch,
        "table": latency.name, **problem.table_record(), "macs": metrics["macs"],
        "params": metrics["params"],
        "layers": metrics["layers"], "resolution": record["resolution"], "num_classes": record["num_classes"],
        "budgets": b.to_dict(), "seed": problem.seed, "iterations": found.proxy_evaluations,
        "proxy_evaluations": found.proxy_evaluations, "wall_time_s": wall,
        "scoring_seconds": found.scoring_seconds, "fit_seconds": found.fit_seconds,
        "solve_seconds": found.solve_seconds, "solver_status": found.solution.status,
        "best_sample": None if found.best_sampled_spec is None else {
            "arch": found.best_sampled_spec.canonical, "score": found.best_sampled_score},
        "settings": settings.to_dict(), "problem": record, "versions": problem.versions(),
        "workers": scorer_map.workers,
    }  # fmt: skip
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out / "best.txt", spec.canonical + "\n")
    atomic_write_json(out / "result.json", result)
    return result
