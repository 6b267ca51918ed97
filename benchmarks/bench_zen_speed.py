"""Zen-Score speed: where one score's time goes, and scores per second with candidates in flight.

Phases (per model in --models; medians of alternated repeats after a warm-up, every phase timed
after a device synchronisation):
  build     plain_skeleton: the plain network's modules on the device, PyTorch's default init skipped
  init      init_plain_: N(0, 1) weights drawn where the network lives, BN reset
  inputs    x and eps drawn on the scoring device
  forwards  the two train-mode `forward_features` calls (x, then x + gamma * eps), no grad
  read      the L1 sum and every BN's mean variance read back as one tensor, as zen_score does
  score()   zennas.proxies.score end to end (resolve, checks, all of the above)
Outside the forwards = score() - forwards; ratio = score() / forwards (target <= 1.2). SE is off, as
Zen builds every net.

Throughput (--throughput N): N members of the zennas-idw preset imagenet-flops400M (<= 400M FLOPs in
the ZenNAS convention, <= 14 layers), taken from a feasible mutation walk from the preset's seed
(what a search scores), are scored at batch 64 and 224 px with
`zennas.proxies.inflight.score_many(..., in_flight=k)` for each k of --in-flight after a warm-up on
other members; prints scores/s per k and whether every k gave bit-identical scores.

Prints the tables and appends them to benchmarks/RESULTS.md (date, machine, command, figures).
Usage:
  python benchmarks/bench_zen_speed.py --threads 1 --models zennet-cifar10-1m,zennet-400m-se --batch-size 64
  python benchmarks/bench_zen_speed.py --device cuda --models zennet-400m-se --batch-size 64 --throughput 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _record import append_result

from zennas.counting import count
from zennas.device import resolve_device, strict_fp32
from zennas.models import get_model_entry
from zennas.proxies import score
from zennas.proxies.inflight import score_many
from zennas.proxies.zen import batch_norms, init_plain_, plain_skeleton
from zennas.spaces import get_space

# (model, batch size, resolution): CIFAR nets at the search batch, ImageNet nets at batch 16.
MODELS = (
    ("zennet-cifar10-0.5m", 64, 32),
    ("zennet-cifar10-1m", 64, 32),
    ("zennet-cifar10-2m", 64, 32),
    ("zennet-cifar100-1m", 64, 32),
    ("zennet-400m-se", 16, 224),
    ("zennet-600m-se", 16, 224),
)


def _clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure(name: str, batch: int, resolution: int, repeats: int, mode: str, device: torch.device) -> dict:
    """Median seconds of each phase of one model's score (see the module docstring)."""
    spec = get_model_entry(name).spec()
    shape = (batch, 3, resolution, resolution)

    def phases(seed: int) -> dict[str, float]:
        generator = torch.Generator(device=device).manual_seed(seed)
        t0 = _clock(device)
        model = plain_skeleton(spec, device)
        t1 = _clock(device)
        init_plain_(model, generator)
        t2 = _clock(device)
        x = torch.randn(shape, generator=generator, device=device)  # [B, 3, R, R]
        eps = torch.randn(shape, generator=generator, device=device)  # [B, 3, R, R]
        t3 = _clock(device)
        with torch.inference_mode():
            f_x = model.forward_features(x)  # [B, C, H, W]
            f_xp = model.forward_features(x + 1e-2 * eps)  # [B, C, H, W]
            t4 = _clock(device)
            torch.stack([(f_x - f_xp).abs_().sum(), *[bn.running_var.mean() for bn in batch_norms(model)]]).cpu()
        t5 = _clock(device)
        return {"build": t1 - t0, "init": t2 - t1, "inputs": t3 - t2, "forwards": t4 - t3, "read": t5 - t4}

    def end_to_end(seed: int) -> float:
        start = _clock(device)
        score(spec, "zen", batch_size=batch, resolution=resolution, seed=seed, device=device, options={"mode": mode})
        return _clock(device) - start

    runs, full = [], []
    with strict_fp32():  # the phases run under the flags score() sets (no TF32, deterministic cuDNN)
        phases(repeats)  # warm-up on another seed: allocator, kernels, lazy imports
        end_to_end(repeats)
        for seed in range(repeats):
            full.append(end_to_end(seed))
            runs.append(phases(seed))
    row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    row.update(name=name, batch=batch, resolution=resolution, score=statistics.median(full))
    row["outside"] = row["score"] - row["forwards"]
    row["ratio"] = row["score"] / row["forwards"]
    return row


def idw400m_members(n: int, seed: int) -> list:
    """`n` distinct members of zennas-idw/imagenet-flops400M from a feasible mutation walk from its seed."""
    space = get_space("zennas-idw").with_preset("imagenet-flops400M")
    limits = space.constraints

    def feasible(spec: object) -> bool:
        cx = count(spec, resolution=224, num_classes=1000, use_se=False, convention="zennas")
        return cx.flops <= limits["budget_flops"] and cx.layers <= limits["max_layers"]

    rng = np.random.default_rng(seed)
    walk, members = [space.initial()[0]], {}
    for _ in range(200 * n + 1000):  # bounded: a walk of this preset keeps ~85 % of its children
        child = space.mutate(walk[int(rng.integers(len(walk)))], rng)
        if feasible(child):
            walk.append(child)
            if len(walk) > 4 * n:  # past the burn-in near the small seed, as a running search is
                members.setdefault(child.hash, child)
        if len(members) == n:
            return list(members.values())
    raise RuntimeError(f"the walk found only {len(members)} distinct members; ask for fewer")


def throughput(args: argparse.Namespace, device: torch.device) -> str:
    """Scores/s of `score_many` for each in-flight count, and whether the scores matched across counts."""
    members = idw400m_members(args.throughput + args.warmup, seed=args.seed)
    warm, timed = members[: args.warmup], members[args.warmup :]
    settings = {"batch_size": 64, "resolution": 224, "num_classes": 1000, "seed": 0, "options": {"mode": args.mode}}
    params = statistics.median(count(m, resolution=224, num_classes=0, use_se=False).params for m in timed)
    macs = statistics.median(count(m, resolution=224, num_classes=0, use_se=False).macs for m in timed)
    lines = ["| in flight | scores/s | ms per score | seconds |", "|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    reference, identical = None, True
    for k in [int(v) for v in args.in_flight.split(",")]:
        score_many(warm, "zen", in_flight=k, device=device, **settings)
        start = _clock(device)
        results = score_many(timed, "zen", in_flight=k, device=device, **settings)
        seconds = _clock(device) - start
        values = [r["zen"].values for r in results]
        reference = values if reference is None else reference
        identical = identical and values == reference
        lines.append(f"| {k} | {len(timed) / seconds:.1f} | {seconds * 1e3 / len(timed):.1f} | {seconds:.2f} |")
        print(lines[-1], flush=True)
    lines.append(
        f"\n{len(timed)} members of zennas-idw/imagenet-flops400M (median {params / 1e6:.2f}M params, "
        f"{macs / 1e6:.0f}M MACs without head), walk seed {args.seed}; zen mode {args.mode}, batch 64, 224 px, "
        f"device {device}, strict FP32; warm-up on {len(warm)} other members per count; scores "
        f"{'bit-identical' if identical else 'DIFFERENT'} across in-flight counts"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("paper", "zennas"), default="paper")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--models", default=",".join(m for m, _, _ in MODELS), help="comma-separated subset, or none")
    parser.add_argument("--batch-size", type=int, help="batch of every model in the phase table (default: per model)")
    parser.add_argument("--throughput", type=int, default=0, help="members of the 400M preset to score (0: skip)")
    parser.add_argument("--in-flight", default="1,2,4,8", help="in-flight counts of the throughput run")
    parser.add_argument("--warmup", type=int, default=8, help="other members scored first at each count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the members' mutation walk")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    chosen = set(args.models.split(","))
    tables = []
    rows = [measure(m, args.batch_size or b, r, args.repeats, args.mode, device) for m, b, r in MODELS if m in chosen]
    if rows:
        keys = ("build", "init", "inputs", "forwards", "read", "score", "outside")
        lines = [
            "| model | batch | px | build ms | init ms | inputs ms | 2 forwards ms | read ms | score() ms "
            "| outside forwards ms | ratio |",
            "|" + "---|" * 11,
        ]
        for r in rows:
            figures = " | ".join(f"{r[k] * 1e3:.1f}" for k in keys)
            lines.append(f"| {r['name']} | {r['batch']} | {r['resolution']} | {figures} | {r['ratio']:.3f} |")
        lines.append(
            f"\nmode {args.mode}, medians of {args.repeats} alternated repeats after warm-up, "
            f"{args.threads} torch thread(s), strict FP32 on {device}; target ratio <= 1.2"
        )
        tables.append("\n".join(lines))
        print(tables[-1], flush=True)
    if args.throughput:
        tables.append(throughput(args, device))
        print(tables[-1].split("\n\n")[-1])
    if tables and not args.no_record:
        append_result("bench_zen_speed", "\n\n".join(tables))


if __name__ == "__main__":
    main()
