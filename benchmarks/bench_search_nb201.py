"""Search quality on NAS-Bench-201: ground-truth CIFAR-10 accuracy of the cell a proxy picks, versus random choice.

Two parts, both against the 1,000-cell NAS-Bench-201 sample (seed-mean CIFAR-10 test accuracy, `cifar10_test`):

A. Full-space search, as a user runs `zennas search --space nb201 --proxy P --iterations N`: `search()` with
   the evolution strategy and the CLI's defaults (population 64, batch 16, resolution 32, 10 classes, CPU, one
   torch thread; the run's seed is also the proxy's seed) over all 15,625 cells, for N = 100 and 1,000 candidates
   and several seeds. The chosen cell is looked up in the sample by its official index, else through an
   isomorphic sibling (`zennas.arch.nb201.isomorphism_key`); most cells of the space are not in the sample, so
   the ground truth covers only some picks. Random choice = one cell drawn uniformly from the space, whose
   accuracy the sample estimates (mean and std of the 1,000 cells).
B. Sample-restricted selection, with full ground-truth coverage: draw N cells of the sample (N = 100: many
   seeded trials; N = 1,000: the whole sample), pick the best proxy score (ties: the mean over the tied cells,
   i.e. a uniform tie-break in expectation), and compare its accuracy with random choice (a uniformly chosen cell
   of the N) and with the oracle (the best of the N). Scores come through `zennas.bench.bench_proxies` with the
   settings of benchmarks/bench_proxies_nb201.py (seed 0, Gaussian input, default batch, 1 thread), so its score
   cache under .zennas-cache/ is reused.

Usage:
    python benchmarks/bench_search_nb201.py [--quick] [--proxies zen,naswot,...] [--seeds 5,3] [--slow-seeds 3,0]
--seeds gives the number of search seeds for N = 100 and N = 1,000 for the fast proxies (params, flops, synflow:
under 0.1 s a cell); --slow-seeds the same for the others (0.5-1.3 s a cell on one thread of this 2-core VM, so
one N = 1,000 search takes 8-21 minutes). A full run appends its section to benchmarks/RESULTS.md; --quick (a smoke
test, under a minute) never does. Run it under `nice -n 10`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _record import append_result  # benchmarks/_record.py: date, machine, command

from zennas.arch import ArchSpec
from zennas.arch.nb201 import index_of, is_degenerate, isomorphism_key
from zennas.bench import GroundTruth, ScoreCache, bench_proxies, read_ground_truth
from zennas.proxies import get_proxy
from zennas.search.evolution import Settings
from zennas.search.run import search
from zennas.wiring import Problem, parse_proxy

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "nb201_sample_1000.csv"  # attribution in tests/data/NOTICE; --csv takes another
CACHE = ROOT / ".zennas-cache"  # where benchmarks/bench_proxies_nb201.py, run from the repository root, keeps it
MAIN_PROXIES = "zen,naswot,synflow,zico,params,flops,jacov"
FAST = frozenset({"params", "flops", "synflow"})  # analytic or one all-ones image: < 0.1 s a cell on this CPU
CANDIDATES = (100, 1000)
RESOLUTION, CLASSES = 32, 10  # CIFAR-10
POPULATION, BATCH = 64, 16  # the `zennas search` defaults


@dataclass(frozen=True)
class Sample:
    """The ground-truth sample: accuracy per row, official index per row and rows per isomorphism class."""

    accuracy: np.ndarray  # [n] CIFAR-10 test accuracy, %
    index: tuple[int, ...]  # official NB201 index of each row
    row_of_index: dict[int, int]
    rows_of_key: dict[str, list[int]]  # isomorphism key -> rows

    def lookup(self, spec: ArchSpec) -> tuple[str, float | None]:
        """('exact' | 'isomorphic' | 'absent', accuracy): an isomorphic-only hit is its siblings' mean."""
        row = self.row_of_index.get(index_of(spec))
        if row is not None:
            return "exact", float(self.accuracy[row])
        rows = self.rows_of_key.get(isomorphism_key(spec))
        if rows:
            return "isomorphic", float(self.accuracy[rows].mean())
        return "absent", None

    def percentile(self, acc: float) -> float:
        """Share of the sample (a uniform draw of the space) strictly below `acc`, in %."""
        return 100.0 * float(np.mean(self.accuracy < acc))


def load_sample(path: Path) -> tuple[GroundTruth, Sample]:
    """The ground truth (zennas.bench) and its lookup tables; checks the index column against the arch strings."""
    truth = read_ground_truth(path, acc_column="cifar10_test")
    index = tuple(index_of(spec) for spec in truth.archs)
    wrong = [(k, i) for k, i in zip(truth.keys, index, strict=True) if int(k) != i]
    if wrong:
        raise SystemExit(f"{path}: index column disagrees with the arch string for {len(wrong)} rows, e.g. {wrong[0]}")
    rows_of_key: dict[str, list[int]] = defaultdict(list)
    for row, spec in enumerate(truth.archs):
        rows_of_key[isomorphism_key(spec)].append(row)
    sample = Sample(truth.accuracy, index, {i: r for r, i in enumerate(index)}, dict(rows_of_key))
    return truth, sample


# --- A. full-space search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished search and the ground truth of its pick."""

    proxy: str
    candidates: int
    seed: int
    index: int
    arch: str
    found: str  # exact / isomorphic / absent
    accuracy: float | None
    degenerate: bool
    scored: int
    seconds: float


def run_searches(
    proxies: list[str], seeds_for: Callable[[str], tuple[int, int]], sample: Sample, out: Path
) -> list[Run]:
    """Every (proxy, N, seed) search into `out`, serially (one process, one torch thread)."""
    runs = []
    for proxy in proxies:
        for n, count in zip(CANDIDATES, seeds_for(proxy), strict=True):
            for seed in range(count):
                problem = Problem(
                    space="nb201", proxy=parse_proxy(proxy), resolution=RESOLUTION, num_classes=CLASSES, seed=seed
                )
                settings = Settings(iterations=n, population=POPULATION, batch=BATCH, strategy="evolution")
                start = time.perf_counter()
                result = search(problem, settings, out / f"{proxy}-n{n}-seed{seed}", workers=1, plots=False)
                seconds = time.perf_counter() - start
                spec = problem.parse(result["arch"])
                found, acc = sample.lookup(spec)
                run = Run(proxy, n, seed, index_of(spec), result["arch"], found, acc, is_degenerate(spec),
                          result["counts"]["scored"], seconds)  # fmt: skip
                runs.append(run)
                shown = "-" if acc is None else f"{acc:.2f} ({found})"
                print(f"[A] {proxy} N={n} seed {seed}: #{run.index} C10 {shown}, {seconds:.1f} s", file=sys.stderr)
    return runs


def search_table(runs: list[Run], sample: Sample) -> list[str]:
    """Markdown lines of part A: one row per (proxy, N)."""
    acc = sample.accuracy
    lines = [
        "| proxy | N | runs | picks in sample (exact + isomorphic) | C10 of picks in sample: mean | "
        "min-max | beats % of random cells | degenerate picks | distinct picks: #index (C10) x runs | "
        "cells scored/run | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.proxy, r.candidates)].append(r)
    for (proxy, n), group in groups.items():
        known = [r.accuracy for r in group if r.accuracy is not None]
        exact = sum(r.found == "exact" for r in group)
        iso = sum(r.found == "isomorphic" for r in group)
        picks = Counter(r.index for r in group)
        by_index = {r.index: r for r in group}
        distinct = ", ".join(
            f"#{i} ({_acc_text(by_index[i])}) x{c}" if c > 1 else f"#{i} ({_acc_text(by_index[i])})"
            for i, c in picks.most_common()
        )
        mean = f"{np.mean(known):.2f}" if known else "-"
        spread = f"{min(known):.2f}-{max(known):.2f}" if known else "-"
        beats = f"{np.mean([sample.percentile(a) for a in known]):.1f}" if known else "-"
        lines.append(
            f"| {proxy} | {n} | {len(group)} | {exact} + {iso} of {len(group)} | {mean} | {spread} | {beats} | "
            f"{sum(r.degenerate for r in group)} | {distinct} | {np.mean([r.scored for r in group]):.0f} | "
            f"{np.mean([r.seconds for r in group]):.1f} |"
        )
    beats_random = 100.0 * float(np.mean(acc[:, None] < acc[None, :]))  # a random cell against the sample
    lines.append(
        f"| *random choice* (one uniform cell of the space; sample estimate) | 1 | - | - | {acc.mean():.2f} "
        f"(std {acc.std(ddof=1):.2f}) | {acc.min():.2f}-{acc.max():.2f} | {beats_random:.1f} | "
        f"{_degenerate_share(sample):.1f} % of the sample | - | - | - |"
    )
    return lines


def _acc_text(run: Run) -> str:
    if run.accuracy is None:
        return "not in sample"
    return f"{run.accuracy:.2f}" + ("" if run.found == "exact" else " iso")


def _degenerate_share(sample: Sample) -> float:
    from zennas.arch.nb201 import from_index

    return 100.0 * float(np.mean([is_degenerate(from_index(i)) for i in sample.index]))


# --- B. selection within the sample ---------------------------------------------------------------------------


def sample_scores(truth: GroundTruth, proxies: list[str], cache: ScoreCache) -> dict[str, np.ndarray]:
    """Oriented scores (higher = predicted better, NaN = degenerate) of every sample row, from the shared cache."""
    out = {}
    for proxy in proxies:
        # The settings of benchmarks/bench_proxies_nb201.py on CIFAR-10, so its cache entries are hit.
        report = bench_proxies(
            truth, [proxy], batch_size=None, resolution=RESOLUTION, num_classes=CLASSES, seed=0, data=None,
            cache=cache, degenerate="worst",
        )  # fmt: skip
        s = report.scores[proxy]
        print(f"[B] {proxy}: {len(truth)} cells, {s.computed} computed, the rest cached", file=sys.stderr)
        out[proxy] = s.oriented
    return out


def pick_accuracy(scores: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    """(accuracy, % of the N beaten) of the best-scored cell, averaged over cells tied at the best score."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    top = np.flatnonzero(s == s.max())
    picked = acc[top]
    beaten = [100.0 * float(np.mean(acc < a)) for a in picked]
    return float(picked.mean()), float(np.mean(beaten))


def selection_table(
    scores: dict[str, np.ndarray], truth: GroundTruth, sample: Sample, n: int, trials: int, seed: int
) -> list[str]:
    """Markdown lines of part B for N = n: proxy pick vs random choice vs oracle over seeded subsets."""
    acc = truth.accuracy
    total = len(acc)
    rng = np.random.default_rng(seed)
    subsets = [np.arange(total)] if n >= total else [rng.choice(total, size=n, replace=False) for _ in range(trials)]
    oracle = np.array([acc[s].max() for s in subsets])
    rand_mean = np.array([acc[s].mean() for s in subsets])
    rand_std = np.array([acc[s].std(ddof=1) for s in subsets])
    rand_beats = np.mean([100.0 * np.mean(acc[s][:, None] < acc[s][None, :]) for s in subsets])
    whole = len(subsets) == 1
    how = "the whole sample, one selection" if whole else f"{trials} seeded draws of N cells (seed {seed})"
    lines = [
        f"N = {min(n, total)}: {how}" + ("" if whole else ", the same draws for every proxy"),
        "",
        "| choice | C10 of the chosen cell: mean over draws | sd over draws | beats % of the N | below oracle |"
        + (" chosen cell |" if whole else ""),
        "|---|---|---|---|---|" + ("---|" if whole else ""),
    ]
    rows = []
    for proxy, oriented in scores.items():
        picks = [pick_accuracy(oriented[s], acc[s]) for s in subsets]
        values = np.array([p[0] for p in picks])
        beaten = np.mean([p[1] for p in picks])
        extra = ""
        if whole:
            s = np.where(np.isnan(oriented), -np.inf, oriented)
            top = np.flatnonzero(s == s.max())
            extra = " " + ", ".join(f"#{sample.index[i]}" for i in top[:3]) + (" ..." if len(top) > 3 else "")
            extra += f" ({len(top)} tied) |" if len(top) > 1 else " |"
        sd = "-" if whole else f"{values.std(ddof=1):.2f}"
        rows.append((values.mean(), f"| {proxy} | {values.mean():.2f} | {sd} | {beaten:.1f} | "
                                    f"{(oracle - values).mean():.2f} |{extra}"))  # fmt: skip
    lines += [text for _, text in sorted(rows, key=lambda r: -r[0])]
    blank = " - |" if whole else ""
    lines.append(
        f"| *random choice* (a uniformly chosen cell of the N) | {rand_mean.mean():.2f} | "
        f"{rand_std.mean():.2f} (of one pick) | {rand_beats:.1f} | {(oracle - rand_mean).mean():.2f} |{blank}"
    )
    best = f" #{sample.index[int(np.argmax(acc))]} |" if whole else ""
    sd = "-" if whole else f"{oracle.std(ddof=1):.2f}"
    lines.append(f"| *oracle* (best C10 of the N) | {oracle.mean():.2f} | {sd} | 100 | 0 |{best}")
    return [*lines, ""]


# --- driver -----------------------------------------------------------------------------------------------------


def _pair(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 2 or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"give two counts A,B (seeds for N=100 and N=1000), got {text!r}")
    return parts[0], parts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", default=MAIN_PROXIES)
    parser.add_argument("--seeds", type=_pair, default=(5, 3), help="search seeds for N=100,1000 (fast proxies)")
    parser.add_argument("--slow-seeds", type=_pair, default=(3, 0), help="search seeds for N=100,1000 (others)")
    parser.add_argument("--trials", type=int, default=200, help="part B draws of N=100 cells")
    parser.add_argument("--draw-seed", type=int, default=0, help="seed of part B's draws")
    parser.add_argument("--csv", type=Path, default=SAMPLE)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, help="keep the search runs here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke test: params/flops, one seed, 20 draws; no record")
    args = parser.parse_args()
    if args.quick:
        args.proxies, args.seeds, args.slow_seeds, args.trials = "params,flops", (1, 1), (1, 1), 20

    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for proxy in proxies:
        get_proxy(proxy)  # an unknown name fails here, listing the registered proxies
    torch.set_num_threads(1)  # a background job on a shared 2-core machine
    started = time.perf_counter()
    truth, sample = load_sample(args.csv)

    def seeds_for(proxy: str) -> tuple[int, int]:
        return args.seeds if proxy in FAST else args.slow_seeds

    # B first: it is cheap when the cache is warm, and shows early whether the proxies agree with it.
    cache = ScoreCache(args.cache)
    scores = sample_scores(truth, proxies, cache)
    part_b = []
    for n in CANDIDATES:
        part_b += selection_table(scores, truth, sample, n, args.trials, args.draw_seed)
    b_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        runs = run_searches(proxies, seeds_for, sample, args.out or Path(tmp))
    wall = time.perf_counter() - started

    plan = ", ".join(f"{p} {'/'.join(map(str, seeds_for(p)))}" for p in proxies)
    body = "\n".join(
        [
            f"ground truth: {args.csv.name}, `cifar10_test` (seed-mean CIFAR-10 test accuracy, %), "
            f"{len(truth)} cells drawn uniformly from the 15,625; scores at resolution {RESOLUTION}, {CLASSES} "
            "classes, CPU, 1 torch thread; higher = predicted better (lower-is-better proxies negated); "
            f"wall time {wall:.0f} s "
            f"(part B {b_seconds:.0f} s, cache: {cache.hits} reused, {cache.writes} stored).",
            "",
            "### A. Full-space search: `search()` = `zennas search --space nb201 --proxy P --iterations N --seed S`",
            "",
            f"Evolution, population {POPULATION}, batch {BATCH}, seed cell = the space's ResNet-like cell; the "
            "search seed is also the proxy's seed; N = children generated (duplicates count as an iteration, the "
            f"seed cell is scored besides). Search seeds 0.. per proxy (N=100/N=1000): {plan}. The chosen cell is "
            "looked up in the sample by official index (exact) or, failing that, by the NB201 isomorphism key "
            "(`iso`: mean of its sample siblings, trained separately in the benchmark). *Random choice* = one cell "
            "drawn uniformly from the whole space, estimated by the sample's mean and std; 'beats %' = share of the "
            "sample strictly below the pick.",
            "",
            *search_table(runs, sample),
            "",
            "### B. Selection within the sample (every candidate has ground truth)",
            "",
            "The proxy's pick among N sample cells (best score; ties averaged), its CIFAR-10 accuracy against "
            "*random choice* (the accuracy of a uniformly chosen cell of the same N: mean over draws, and the std of "
            "one such pick) and against the *oracle* (the best accuracy among the N). 'beats %' = share of the N "
            "strictly below the pick; 'below oracle' = oracle minus pick, mean over draws. Scores: seed 0, Gaussian "
            "input, default batch, degenerate (NaN) last; the score cache of bench_proxies_nb201.py.",
            "",
            *part_b,
        ]
    )
    title = "bench_search_nb201 - search quality on NAS-Bench-201 (CIFAR-10), proxy pick vs random choice"
    print(f"## {title}\n\n{body}")
    if not args.quick:
        append_result(title, body)


if __name__ == "__main__":
    main()
