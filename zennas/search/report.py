"""What a finished search leaves in its folder: best.txt, result.json, population.json, pareto.csv, plots.

All files are written atomically and are regenerated from checkpoint.json and history.jsonl, so a
resumed run writes exactly what an uninterrupted one would (apart from timings).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from zennas.errors import ConfigError
from zennas.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from zennas.search.evolution import Evolution, State, best_member, history_record


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The history records (every iteration: scored, duplicate, over a budget, degenerate); a missing,
    unreadable or malformed file is a ConfigError naming it (and the line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the search history {str(path)!r} ({exc.strerror or exc})") from None
    return [history_record(line, f"{str(path)!r} line {n}") for n, line in enumerate(data.splitlines(), 1)
            if line.strip()]  # fmt: skip


def pareto_front(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices of the points (cost, score, index) no other point beats in both (lower cost, higher score)."""
    front, best = [], -np.inf
    for _cost, score, index in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append(index)
            best = score
    return front


def write_outputs(run: Evolution, state: State, *, plots: bool = True) -> dict[str, Any]:
    """Write every output file of a finished run and return result.json's content."""
    problem, out = run.problem, run.out
    record, cost = problem.to_dict(), problem.cost
    space = problem.search_space
    best = best_member(state)
    spec = problem.parse(best.arch)
    history = read_history(run.history_path)
    scored = [r for r in history if r["status"] == "scored"]
    seed = state.seed_member
    latency = cost.latency
    cost_key = "latency_ms_per_image" if latency is not None else "macs"
    result: dict[str, Any] = {
        "arch": best.arch,
        "dialect": space.dialect,
        "hash": best.hash,
        "space": record["space"],
        "preset": record["preset"],
        "proxy": record["proxy"],
        "score": best.score,
        "proxy_values": best.values,
        "latency_ms_per_image": best.metrics.get("latency_ms_per_image"),
        "latency_batch_size": latency.batch_size if latency is not None else None,
        "table": latency.name if latency is not None else None,
        **problem.table_record(),
        "macs": best.metrics["macs"],
        "params": best.metrics["params"],
        "layers": best.metrics["layers"],
        "resolution": record["resolution"],
        "num_classes": record["num_classes"],
        "budgets": cost.budgets.to_dict(),
        "seed": problem.seed,
        "iterations": state.iteration,
        "found_at_iteration": best.iteration,
        "wall_time_s": state.wall_time_s,
        "counts": state.counts,
        "stopped": state.stopped,
        "funnel": {
            "active": run.screen is not None,
            "note": problem.screen_note if run.settings.funnel else "off (--no-funnel)",
            "screen_ratio": run.settings.screen_ratio if run.screen is not None else None,
            "screened": state.counts["screened"],
            "scored": state.counts["scored"],  # the seed included
        },
        "rescored": state.rescored,
        "seed_architecture": {"arch": seed.arch, "score": seed.score, **seed.metrics},
        "settings": run.settings.to_dict(),
        "problem": record,
        "versions": problem.versions(),
    }
    if spec.canonical != best.arch:
        raise AssertionError("internal error: the best architecture does not round-trip; please report it")
    atomic_write_text(out / "best.txt", best.arch + "\n")
    atomic_write_json(out / "result.json", result)
    population = sorted(state.population, key=lambda m: (-m.score, m.iteration))
    atomic_write_json(out / "population.json", [m.to_dict() for m in population])
    points = [(r[cost_key], r["score"], i) for i, r in enumerate(scored) if r.get(cost_key) is not None]
    front = [scored[i] for i in pareto_front(points)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["score", "latency_ms_per_image", "macs", "params", "layers", "iteration", "arch"])
    for r in front:
        writer.writerow([r["score"], r.get("latency_ms_per_image", ""), r["macs"], r["params"], r["layers"], r["it"],
                         r["arch"]])  # fmt: skip
    atomic_write_text(out / "pareto.csv", buffer.getvalue())
    if plots:
        _plot(
            out,
            scored,
            front,
            cost_key,
            cost.budgets.latency_ms_per_image if latency is not None else cost.budgets.macs,
        )
    return result


def _plot(out: Path, scored: list[dict], front: list[dict], cost_key: str, budget: float | None) -> None:
    """search_trajectory.png (every score and the running best) and pareto_front.png (score vs cost)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    its = np.array([r["it"] for r in scored])
    scores = np.array([r["score"] for r in scored])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    if len(scores):
        ax.scatter(its, scores, s=4, alpha=0.4, label="scored candidate")
        ax.plot(its, np.maximum.accumulate(scores), color="C3", label="best so far")
    ax.set_xlabel("iteration")
    ax.set_ylabel("proxy score")
    ax.set_title("search trajectory")
    ax.legend(loc="lower right")
    _save_png(fig, out / "search_trajectory.png")
    label = "predicted latency (ms/image)" if cost_key == "latency_ms_per_image" else "MACs"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.scatter([r[cost_key] for r in scored], scores, s=4, alpha=0.4, label="scored candidate")
    ax.plot(
        [r[cost_key] for r in front], [r["score"] for r in front], color="C3", marker="o", ms=3, label="Pareto front"
    )
    if budget is not None:
        ax.axvline(budget, color="k", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(label)
    ax.set_ylabel("proxy score")
    ax.set_title("Pareto front")
    ax.legend(loc="lower right")
    _save_png(fig, out / "pareto_front.png")


def _save_png(fig: Any, path: Path) -> None:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
