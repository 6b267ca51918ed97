"""Throughput of table-based latency prediction for zennas-res networks (target: >= 10,000 archs/s).

Times `zennas.latency.predict.latency_ms_per_batch`, the per-candidate call of a search.

Three regimes, each over distinct architectures (no result is reused across calls):
* search: one-mutation children of a population of 256 (what evolution predicts; memos hit unchanged blocks),
  fresh, and again after 4n earlier children (a long search: more of the children's blocks were seen before);
* random: independent samples of the space (block memos warm from earlier samples only);
* cold: every memo (block operator lists and table look-ups) cleared before each call.
Prints a table and appends it to benchmarks/RESULTS.md.
Usage: python benchmarks/bench_latency_predict.py [--table v100-trt-fp16] [--n 20000] [--resolution 224]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _record import append_result

from zennas.errors import LatencyError
from zennas.latency.ops import clear_memo
from zennas.latency.predict import latency_ms_per_batch
from zennas.latency.shipped import open_table
from zennas.spaces import get_space


def rate(specs, table, resolution: int, batch: int, cold: bool) -> tuple[float, int]:
    """(architectures per second, how many fell outside the table) over `specs`."""
    outside = 0
    start = time.perf_counter()
    for spec in specs:
        if cold:
            clear_memo()
            table._memo.clear()
            table.group_memo.clear()
        try:
            latency_ms_per_batch(spec, table, resolution=resolution, num_classes=1000, batch_size=batch)
        except LatencyError:
            outside += 1
    return len(specs) / (time.perf_counter() - start), outside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="v100-trt-fp16")
    parser.add_argument("--space", default="zennas-res")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    table = open_table(args.table)
    space = get_space(args.space)
    rng = np.random.default_rng(0)
    # Evolution predicts children of a population: one mutation of a random member each.
    population = [space.sample(rng) for _ in range(256)]
    chain = [space.mutate(population[i], rng) for i in rng.integers(0, len(population), args.n)]
    # A long search: the same regime after 4n earlier children have warmed the block memos.
    later = [space.mutate(population[i], rng) for i in rng.integers(0, len(population), 5 * args.n)]
    randoms = [space.sample(rng) for _ in range(args.n)]
    warm = [space.sample(rng) for _ in range(200)]
    rate(warm, table, args.resolution, args.batch_size, cold=False)  # imports, first look-ups
    rows = []
    regimes = [
        ("search (children of a population of 256)", chain, False),
        ("search, after 4n earlier children", later, False),
        ("random samples", randoms, False),
        ("cold (memos cleared)", randoms[:2000], True),
    ]
    for label, specs, cold in regimes:
        if specs is later:
            rate(later[: 4 * args.n], table, args.resolution, args.batch_size, cold=False)  # the earlier children
            specs = later[4 * args.n :]
        per_s, outside = rate(specs, table, args.resolution, args.batch_size, cold)
        rows.append((label, len(specs), per_s, outside))
    lines = [
        f"table `{args.table}`, space `{args.space}`, resolution {args.resolution}, batch {args.batch_size}",
        "",
        "| regime | architectures | archs/s | outside table |",
        "|---|---|---|---|",
        *(f"| {label} | {n} | {per_s:,.0f} | {outside} |" for label, n, per_s, outside in rows),
    ]
    text = "\n".join(lines)
    print(text)
    append_result("bench_latency_predict - table-based latency prediction throughput", text)


if __name__ == "__main__":
    main()
