"""Throughput of the torch-free path a search runs per candidate: parse -> canonical/hash -> exact count.

Prints a table and appends it to benchmarks/RESULTS.md (date, machine, command, figures).
Usage: python benchmarks/bench_counting.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources

from _record import append_result

from zennas.arch import parse
from zennas.counting import count


def _median_us(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    zoo = json.loads(resources.files("zennas").joinpath("data/zoo.json").read_text())
    rows = []
    for entry in zoo:
        text, r, k, se = entry["arch_string"], entry["resolution"], entry["num_classes"], entry["use_se"]
        spec = parse(text)
        parse_us = _median_us(lambda text=text: parse(text), args.repeats)
        hash_us = _median_us(lambda spec=spec: spec.hash, args.repeats)
        count_us = _median_us(
            lambda spec=spec, r=r, k=k, se=se: count(spec, resolution=r, num_classes=k, use_se=se), args.repeats
        )
        rows.append((entry["name"][:44], len(spec.blocks), parse_us, hash_us, count_us))
    header = f"| {'model':<44} | blocks | parse us | hash us | count us |"
    lines = [header, "|" + "---|" * 5]
    for name, blocks, p, h, c in rows:
        lines.append(f"| {name:<44} | {blocks:>6} | {p:>8.1f} | {h:>7.1f} | {c:>8.1f} |")
    total = statistics.median(p + h + c for _, _, p, h, c in rows)
    lines.append(f"\nmedian parse+hash+count per architecture: {total:.1f} us ({1e6 / total:,.0f} candidates/s/core)")
    table = "\n".join(lines)
    print(table)
    append_result("bench_counting", table)


if __name__ == "__main__":
    main()
