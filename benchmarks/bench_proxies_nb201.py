"""Rank correlation of zero-cost proxies on the 1,000-cell NAS-Bench-201 sample, next to the published figures.

Scores through `zennas.bench.bench_proxies` (so the score cache is shared with `zennas bench proxies`),
prints a Markdown section and, with --append, appends it to benchmarks/RESULTS.md.

Usage:
    python benchmarks/bench_proxies_nb201.py --proxy params,flops,zen=1000,naswot=300/200/200 [--append]
A proxy may carry a row limit, one for all datasets (`=N`) or one per dataset (`=N1/N2/N3` in --datasets
order; 0 = not scored there); rows follow the fixed pseudo-random order of `--limit`, so a smaller
subset is part of a larger one.
Run it under `nice -n 10`: it uses one torch thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _record import append_result  # benchmarks/_record.py: date, machine, command

from zennas.bench import (
    DEFAULT_CACHE_DIR,
    ScoreCache,
    bench_proxies,
    correlate,
    dataset_settings,
    load_data,
    rank_aggregate,
    read_ground_truth,
    select_members,
    split_half,
)
from zennas.bench.runner import SPLIT_SEED

# The 1,000-cell NAS-Bench-201 sample the tests carry (attribution in tests/data/NOTICE); --csv takes another.
SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "nb201_sample_1000.csv"
COLUMNS = {
    "cifar10": "cifar10_test",
    "cifar100": "cifar100_test",
    "imagenet16-120": "imagenet16_120_test",
    "cifar10-valid": "cifar10valid_xvalid",
}
# Published Spearman rho (C10, C100, IN16): NAS-Bench-Suite-Zero, 1,000 random cells, NASLib single-seed
# accuracy (REFERENCE 4.7). ZiCo's own paper is all cells, seed-mean test accuracy.
SUITE_ZERO = {
    "naswot": (0.77, 0.80, 0.77),
    "jacov": (0.75, 0.71, 0.71),
    "synflow": (0.73, 0.76, 0.75),
    "params": (0.72, 0.73, 0.69),
    "flops": (0.69, 0.71, 0.67),
    "grad_norm": (0.58, 0.63, 0.57),
    "snip": (0.58, 0.63, 0.57),
    "zen": (0.35, 0.35, 0.39),
}
# Other published rho (C10, C100, IN16) with their source; all over the 15,625 cells (REFERENCE 4.7, 4.8).
OTHER = {
    "zico": ("ZiCo paper", (0.80, 0.81, 0.79)),
    "params": ("REFERENCE 4.8 exact", (0.753, 0.728, 0.691)),
    "flops": ("REFERENCE 4.8 exact", (0.753, 0.728, 0.691)),
    "synflow": ("Abdelfattah abs rho", (0.737, 0.763, 0.751)),
    "jacov": ("Abdelfattah abs rho", (0.731, 0.704, 0.701)),
    "grad_norm": ("Abdelfattah abs rho", (0.594, 0.637, 0.578)),
    "snip": ("Abdelfattah abs rho", (0.596, 0.637, 0.578)),
    "zen": ("ZiCo Table 1", (0.38, 0.36, 0.40)),
    "naswot": ("NASWOT paper tau (batch 128 real)", (0.574, 0.611, 0.549)),
    "ntk": ("TE-NAS tau of -kappa", (None, 0.42, None)),
}
PUBLISHED_INDEX = {"cifar10": 0, "cifar10-valid": 0, "cifar100": 1, "imagenet16-120": 2}


def _parse_proxies(text: str, n_datasets: int) -> dict[str, list[int | None]]:
    """'zen=1000,naswot=300/200/200,params' -> {proxy: [limit per dataset]}."""
    out: dict[str, list[int | None]] = {}
    for item in text.split(","):
        name, _, limits = item.strip().partition("=")
        if not limits:
            out[name] = [None] * n_datasets
            continue
        parts = [int(p) for p in limits.split("/")]
        out[name] = parts * n_datasets if len(parts) == 1 else parts
        if len(out[name]) != n_datasets:
            raise SystemExit(f"{item}: give one limit or {n_datasets} (one per dataset)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="params,flops")
    parser.add_argument("--datasets", default="cifar10,cifar100,imagenet16-120")
    parser.add_argument("--csv", default=str(SAMPLE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--degenerate", default="worst", choices=("worst", "drop"))
    parser.add_argument("--data", help="real batch .npz (images [N,3,R,R], labels [N]); CIFAR resolution only")
    parser.add_argument("--cache", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--aggregate", default="auto", help="'auto', a member list, or 'none'")
    parser.add_argument("--candidates", help="proxies the aggregate may use (default: all scored)")
    parser.add_argument("--title", default="", help="extra words for the section title")
    parser.add_argument("--append", action="store_true", help="append the section to RESULTS.md")
    args = parser.parse_args()

    datasets = args.datasets.split(",")
    plan = _parse_proxies(args.proxy, len(datasets))
    cache = ScoreCache(args.cache)
    data = load_data(args.data) if args.data else None
    lines: list[str] = []
    members: list[str] | None = None if args.aggregate == "auto" else args.aggregate.split(",")
    for d, dataset in enumerate(datasets):
        column = COLUMNS[dataset]
        resolution, classes, _ = dataset_settings(column, dataset.removesuffix("-valid"))
        scores, rows = {}, {}
        for name, limits in plan.items():
            if limits[d] == 0:
                continue  # not scored on this dataset
            truth = read_ground_truth(args.csv, acc_column=column, limit=limits[d])
            print(f"[{dataset}] {name}: {len(truth)} cells", file=sys.stderr, flush=True)
            report = bench_proxies(
                truth, [name], batch_size=args.batch_size, resolution=resolution, num_classes=classes,
                seed=args.seed, data=data, cache=cache, degenerate=args.degenerate,
            )  # fmt: skip
            c = report.correlations[name]
            s = report.scores[name]
            scores[name] = (truth, s.oriented)
            seconds = f"{np.mean(s.seconds):.3g}" if s.seconds else "cached"
            published = SUITE_ZERO.get(name, (None,) * 3)[PUBLISHED_INDEX[dataset]]
            source, values = OTHER.get(name, ("", (None,) * 3))
            other = values[PUBLISHED_INDEX[dataset]]
            other_text = "-" if other is None else f"{other:.3g} ({source})"
            batch = "-" if s.inputs <= {"none (analytic)"} else report.settings["batch_size"][name]
            rows[name] = (
                f"| {name} | {c.n} | {c.spearman:.3f} | {c.kendall:.3f} | {c.degenerate} | "
                f"{'-' if published is None else f'{published:.2f}'} | {other_text} | "
                f"{', '.join(sorted(s.inputs))}; batch {batch} | {seconds} |"
            )
        lines += [
            f"### {dataset} (`{column}`, resolution {resolution}, {classes} classes)",
            "",
            "| proxy | n | rho | tau-b | degenerate | Suite-Zero rho | other published | input | s/cell |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows.values(),
            "",
        ]
        pool = {k: v for k, v in scores.items() if not args.candidates or k in args.candidates.split(",")}
        if args.aggregate != "none" and len(pool) >= 2:
            # Members are chosen once, on the first dataset (CIFAR-10), and kept for the others.
            section, members = _aggregate_lines(pool, members, args.degenerate, dataset)
            lines += section
    title = f"bench_proxies_nb201{' - ' + args.title if args.title else ''}"
    settings = (
        f"ground truth: {Path(args.csv).name} (seed-mean test accuracy; C100/IN16 x-test), rows in the fixed "
        f"pseudo-random `--limit` order; seed {args.seed}; degenerate networks: "
        + ("ranked below all others (worst)" if args.degenerate == "worst" else "left out (drop)")
        + "; scores oriented so that higher = predicted better (lower-is-better proxies negated); input: "
        + (f"real batch {args.data}" if args.data else "each proxy draws its own (Gaussian unless stated)")
        + "; run under nice -n 10"
    )
    body = "\n".join([settings, "", *lines])
    print(f"## {title}\n\n{body}")
    if args.append:
        append_result(title, body)


def _aggregate_lines(
    scores: dict, members: list[str] | None, degenerate: str, dataset: str
) -> tuple[list[str], list[str]]:
    """Rank-average ensemble on the held-out half of the rows every proxy scored: (Markdown lines, members)."""
    # Limits are nested subsets: the smallest holds the rows every proxy has scored.
    common = min(scores, key=lambda name: len(scores[name][0]))
    truth = scores[common][0]
    keys = set(truth.keys)
    aligned = {}
    for name, (t, oriented) in scores.items():
        where = {k: i for i, k in enumerate(t.keys)}
        aligned[name] = np.array([oriented[where[k]] for k in truth.keys]) if keys <= set(where) else None
    aligned = {k: v for k, v in aligned.items() if v is not None}
    selection = split_half(truth.keys, SPLIT_SEED)
    held = ~selection
    how = "given"
    if members is None:
        members = select_members({k: v[selection] for k, v in aligned.items()}, truth.accuracy[selection])
        how = f"chosen on the {dataset} selection half (n = {selection.sum()}) by best Spearman of 2-4 members"
    held_scores = {k: v[held] for k, v in aligned.items()}
    combined = rank_aggregate(held_scores, members)
    combined[np.any([np.isnan(held_scores[m]) for m in members], axis=0)] = np.nan
    table = {name: correlate(v, truth.accuracy[held], degenerate) for name, v in held_scores.items()}
    table["ensemble"] = correlate(combined, truth.accuracy[held], degenerate)
    out = [
        f"Aggregate (rank average of {', '.join(members)}; {how}; split seed {SPLIT_SEED} by index), "
        f"held-out half n = {held.sum()}:",
        "",
        "| held-out | Spearman | Kendall tau-b |",
        "|---|---|---|",
    ]
    for name, c in sorted(table.items(), key=lambda item: -item[1].spearman):
        out.append(f"| {'**ensemble**' if name == 'ensemble' else name} | {c.spearman:.3f} | {c.kendall:.3f} |")
    return [*out, ""], members


if __name__ == "__main__":
    main()
