"""zen-analytic vs sampled Zen-Score: rank agreement (Kendall tau-b) and speed-up on random architectures.

For each space, architectures come from `sample()` followed by 0..--max-mutations `mutate()` steps
(numpy generator, fixed --seed), deduplicated by hash. The sampled Zen is the mean of --repeats
`score(..., "zen")` repeats; its time is the median time of ONE repeat (what a search pays per
candidate). zen-analytic is timed through `score()` too: "cold" is its first call on the
architecture (memo filled only by the architectures before it), "child" a call on a one-mutation
child of the architecture just scored (the next candidate of a search), "warm" a second call.
zennas-res uses its `cifar-params1M` preset (CIFAR skeleton, stem stride 1); zennas-idw is an
ImageNet space (total stride 32), so at resolution 32 its last stages run at 2x2 and 1x1.

Prints a table and appends it to benchmarks/RESULTS.md (date, machine, command, figures).
Usage: python benchmarks/bench_zen_analytic.py [--n 200] [--batch-size 32] [--repeats 3] [--mode paper]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _record import append_result
from scipy.stats import kendalltau

from zennas.arch import ArchSpec
from zennas.proxies import score
from zennas.proxies.zen import clear_memo
from zennas.spaces import SearchSpace, get_space

SPACES = {"zennas-res": "cifar-params1M", "zennas-idw": None}  # space -> preset


def architectures(space: SearchSpace, n: int, seed: int, max_mutations: int) -> list[ArchSpec]:
    """`n` distinct members: sample() then a random number of mutate() steps."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    while len(out) < n:
        arch = space.sample(rng)
        for _ in range(int(rng.integers(0, max_mutations + 1))):
            arch = space.mutate(arch, rng)
        if arch.hash not in seen:
            seen.add(arch.hash)
            out.append(arch)
    return out


def run_space(name: str, preset: str | None, args: argparse.Namespace) -> dict:
    """Score every architecture both ways; return the figures of one table row."""
    space = get_space(name) if preset is None else get_space(name).with_preset(preset)
    clear_memo()  # "cold" starts from an empty memo for each space
    settings = {"resolution": args.resolution, "batch_size": args.batch_size, "options": {"mode": args.mode}}
    child_rng = np.random.default_rng(args.seed + 1)
    sampled, analytic, sampled_s, cold_s, warm_s, child_s, own_s = [], [], [], [], [], [], []
    for index, arch in enumerate(architectures(space, args.n, args.seed, args.max_mutations)):
        start = time.perf_counter()
        first = score(arch, "zen-analytic", **settings)["zen-analytic"]
        cold_s.append(time.perf_counter() - start)
        own_s.append(first.meta["seconds_per_repeat"])  # the proxy function alone, without the registry
        start = time.perf_counter()
        score(arch, "zen-analytic", **settings)
        warm_s.append(time.perf_counter() - start)
        child = space.mutate(arch, child_rng)  # what a search scores next: one mutation of a scored parent
        start = time.perf_counter()
        score(child, "zen-analytic", **settings)
        child_s.append(time.perf_counter() - start)
        result = score(arch, "zen", repeats=args.repeats, seed=args.seed + index, **settings)["zen"]
        sampled_s.append(result.meta["seconds_per_repeat"])  # mean over its repeats: build + init + 2 forwards
        sampled.append(result.mean)
        analytic.append(first.mean)
    tau = kendalltau(sampled, analytic).statistic
    error = np.asarray(analytic) - np.asarray(sampled)
    one = statistics.median(sampled_s)
    return {
        "space": name + (f" ({preset})" if preset else ""),
        "n": len(sampled),
        "tau": tau,
        "bias": float(error.mean()),
        "mae": float(np.abs(error).mean()),
        "range": float(np.ptp(sampled)),
        "sampled_ms": one * 1e3,
        "cold_us": statistics.median(cold_s) * 1e6,
        "warm_us": statistics.median(warm_s) * 1e6,
        "own_us": statistics.median(own_s) * 1e6,
        "child_us": statistics.median(child_s) * 1e6,
        "speedup_cold": one / statistics.median(cold_s),
        "speedup_child": one / statistics.median(child_s),
        "speedup_estimate": one * args.repeats / statistics.median(cold_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="architectures per space")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="sampled repeats averaged per architecture")
    parser.add_argument("--mode", choices=("paper", "zennas"), default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-mutations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = [run_space(name, preset, args) for name, preset in SPACES.items()]
    header = (
        "| space | archs | Kendall tau | bias | MAE | sampled range | sampled ms / repeat | analytic us: cold "
        "| cold, proxy fn only | child | warm | speed-up vs 1 repeat: cold | child "
        "| vs the sampled estimate (all repeats): cold |"
    )
    lines = [header, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['space']} | {r['n']} | {r['tau']:.3f} | {r['bias']:+.2f} | {r['mae']:.2f} | {r['range']:.1f} "
            f"| {r['sampled_ms']:.1f} | {r['cold_us']:.0f} | {r['own_us']:.0f} | {r['child_us']:.0f} "
            f"| {r['warm_us']:.0f} "
            f"| {r['speedup_cold']:,.0f}x | {r['speedup_child']:,.0f}x | {r['speedup_estimate']:,.0f}x |"
        )
    lines.append(
        f"\nsettings: mode {args.mode}, resolution {args.resolution}, batch {args.batch_size}, sampled Zen = mean of "
        f"{args.repeats} repeats, seed {args.seed}, <= {args.max_mutations} mutations after sample(), "
        f"{args.threads} torch thread(s); analytic timed through score() (registry overhead included): cold = first "
        "call on a new architecture, child = a one-mutation child of the architecture just scored (a search's "
        "next candidate), warm = the same architecture again; "
        f"total wall time {time.perf_counter() - start:.0f} s"
    )
    table = "\n".join(lines)
    print(table)
    if args.no_record:
        return
    append_result("bench_zen_analytic", table)


if __name__ == "__main__":
    main()
