"""Zen-Score overhead: end-to-end `score(..., "zen")` time per candidate over its two bare forward passes.

End to end = what `score` does per candidate: resolve, build, N(0, 1) init, draw inputs, forward x and
x' in train mode, read the BN statistics. Bare = the two `forward_features` calls alone on the same
network already built, same batch and resolution, train mode, `torch.no_grad()`. The two are timed
alternately (so both see the same machine load) after warm-up, and the ratio of their medians is
reported; the target is <= 1.2. SE is off for every net, as Zen builds them.

Prints a table and appends it to benchmarks/RESULTS.md (date, machine, command, figures).
Usage: python benchmarks/bench_zen_speed.py [--repeats 5] [--mode paper] [--threads 1] [--models a,b]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _record import append_result

from zennas.models import get_model_entry
from zennas.proxies import score
from zennas.proxies.zen import plain_network

# (model, batch size, resolution): CIFAR nets at the search batch, ImageNet nets at batch 16.
MODELS = (
    ("zennet-cifar10-0.5m", 64, 32),
    ("zennet-cifar10-1m", 64, 32),
    ("zennet-cifar10-2m", 64, 32),
    ("zennet-cifar100-1m", 64, 32),
    ("zennet-400m-se", 16, 224),
    ("zennet-600m-se", 16, 224),
)


def measure(name: str, batch: int, resolution: int, repeats: int, mode: str) -> dict:
    """Median end-to-end and bare times of one model."""
    spec = get_model_entry(name).spec()
    generator = torch.Generator().manual_seed(0)
    model = plain_network(spec, generator, torch.device("cpu"))
    x = torch.randn(batch, 3, resolution, resolution, generator=generator)  # [B, 3, R, R]
    x_perturbed = x + 1e-2 * torch.randn(x.shape, generator=generator)  # [B, 3, R, R]

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.forward_features(x)
            model.forward_features(x_perturbed)
        return time.perf_counter() - start

    def end_to_end(seed: int) -> float:
        start = time.perf_counter()
        score(name, "zen", batch_size=batch, resolution=resolution, seed=seed, options={"mode": mode})
        return time.perf_counter() - start

    def build_only(seed: int) -> float:
        start = time.perf_counter()
        plain_network(spec, torch.Generator().manual_seed(seed), torch.device("cpu"))
        return time.perf_counter() - start

    bare()  # warm-up: allocator, kernels, lazy imports
    end_to_end(-1)
    bare_s, full_s, build_s = [], [], []
    for seed in range(repeats):
        full_s.append(end_to_end(seed))
        bare_s.append(bare())
        build_s.append(build_only(seed))
    full, plain = statistics.median(full_s), statistics.median(bare_s)
    return {
        "name": name,
        "batch": batch,
        "resolution": resolution,
        "full": full,
        "bare": plain,
        "build": statistics.median(build_s),
        "ratio": full / plain,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("paper", "zennas"), default="paper")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--models", default=",".join(m for m, _, _ in MODELS), help="comma-separated subset")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = set(args.models.split(","))
    rows = [measure(m, b, r, args.repeats, args.mode) for m, b, r in MODELS if m in chosen]
    header = "| model | batch | resolution | score() ms | build + init ms (inside score) | 2 bare forwards ms | ratio |"
    lines = [header, "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['resolution']} | {r['full'] * 1e3:.1f} | {r['build'] * 1e3:.1f} "
            f"| {r['bare'] * 1e3:.1f} | {r['ratio']:.3f} |"
        )
    lines.append(
        f"\nmode {args.mode}, medians of {args.repeats} alternated repeats after warm-up, "
        f"{args.threads} torch thread(s), FP32 on the CPU; target ratio <= 1.2"
    )
    table = "\n".join(lines)
    print(table)
    if args.no_record:
        return
    append_result("bench_zen_speed", table)


if __name__ == "__main__":
    main()
