"""Search benchmarks: candidates per second end to end (serial vs workers), and zennas-idw at 400M MACs.

    python benchmarks/bench_search.py throughput [--iterations 96]
    python benchmarks/bench_search.py idw400m [--iterations 600] [--workers 2] [--proxy-batch-size 16]
                                              [--analytic-iterations 20000]
    python benchmarks/bench_search.py milp [--evaluations 300] [--budget-ms 9] [--seeds 3] [--workers 2]
    python benchmarks/bench_search.py race [--time-limit 8m] [--variants funnel,no-funnel] [--repeats 10]
    python benchmarks/bench_search.py mainjob [--time-limit 3m] [--plain-time-limit 20m] [--repeats 3]
                                               [--main-options OPTS]

throughput: the same zennas-res search (V100 table, 1 ms/image at batch 64) run serially and with
2 workers, for a sampled proxy (zen) and a closed form (zen-analytic); candidates/s counts every
iteration (duplicates and over-budget children included) over the search's wall time, and scored
candidates/s only those that reached the proxy. The results of the serial and parallel runs are
compared (they must be equal).

idw400m: zennas-idw with MACs <= 400M and <= 14 layers (REFERENCE 5.3's budget in the counts
`zennas info` reports). (a) evolution with the sampled Zen-Score; (b) evolution with zen-analytic
for many more iterations, its winner then scored with the sampled Zen. Both winners and the published
ZenNet-400M (SE off, as Zen-Score builds it) are scored with the same settings (224 px, batch
`--proxy-batch-size`, seed 0, 1 thread), so the comparison is like for like.

milp: the binas space under a CPU-table latency budget (ms per image at batch 1): the BINAS-style
exact solver (`--strategy milp`: evaluations - 1 samples, fit, solve, score the solution) against
evolution and random sampling, each with the same number of proxy evaluations (evolution and random
count the scored seed, so they get evaluations - 1 children that reach the proxy at most), for
the params proxy (whose optimum the solver can reach exactly) and the sampled Zen-Score.

race: Zen-NAS's CIFAR setting on the 2-core machine, as a user runs it: `zennas search --space
zennas-res --preset cifar-params1M --time-limit 8m --workers 2` (and the same with `--no-funnel`, or
any variant given as extra options), each winner judged by Zen-NAS's own objective, `zennas score
--mode zennas --batch-size 64 --repeats 10` at 32 px and 100 classes, and checked against the
preset's budgets in the repository counts (`zennas info --convention zennas`). The published
ZenNet-CIFAR-1M is judged alongside. A variant is `name=OPTIONS`, e.g. `ratio16=--screen-ratio 16`.

mainjob: the README's main job (`zennas search --budget 1ms --gpu V100 --workers 2`) with a short
time limit, against the same search without the funnel for a long one; both winners judged by the
sampled Zen-Score (paper mode, batch 64, 224 px) over `--repeats` draws.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _record import append_result

from zennas.counting import count
from zennas.latency.shipped import table_for_gpu
from zennas.models import resolve_arch
from zennas.proxies import score
from zennas.search.budget import Budgets
from zennas.search.evolution import Settings
from zennas.search.run import search
from zennas.wiring import Problem, parse_proxy


def throughput(args: argparse.Namespace) -> None:
    table = table_for_gpu("V100")
    rows = []
    for proxy, batch in (("zen", 4), ("zen-analytic", None)):
        problem = Problem(
            space="zennas-res", proxy=parse_proxy(proxy), resolution=224, num_classes=1000, table=table.name,
            budgets=Budgets(latency_ms_per_image=1.0, latency_batch_size=64), proxy_batch_size=batch,
        )  # fmt: skip
        iterations = args.iterations if proxy == "zen" else args.iterations * 50
        settings = Settings(iterations=iterations, population=32, batch=16)
        results = {}
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = search(problem, settings, Path(tmp) / "run", workers=workers, plots=False)
                wall = time.perf_counter() - start
            results[workers] = result
            scored = result["counts"]["scored"]
            rows.append(
                f"| {proxy}{f' (batch {batch})' if batch else ''} | {workers} | {iterations} | {scored} | "
                f"{result['wall_time_s']:.1f} | {wall:.1f} | {iterations / result['wall_time_s']:.1f} | "
                f"{scored / result['wall_time_s']:.2f} |"
            )
            print(rows[-1], flush=True)
        same = (results[1]["arch"], results[1]["score"]) == (results[2]["arch"], results[2]["score"])
        rows.append(f"| {proxy}: serial and 2-worker results identical | {same} | | | | | | |")
        print(rows[-1], flush=True)
    head = (
        "| proxy | workers | iterations | scored | search wall s | incl. start-up s | candidates/s | scored/s |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    table_md = head + "\n" + "\n".join(rows)
    print(table_md)
    append_result("bench_search throughput - zennas-res, V100 table, 1 ms/image at batch 64 (CPU)", table_md)


def zen_of(arch: str, batch: int) -> float:
    spec, _ = resolve_arch(arch, None)  # a zoo name or a zennas-v1 string
    return score(spec, "zen", batch_size=batch, resolution=224, num_classes=1000, seed=0, device="cpu")["zen"].mean


def idw400m(args: argparse.Namespace) -> None:
    budgets = Budgets(macs=400_000_000, max_layers=14)
    lines = []
    reference = resolve_arch("zennet-400m-se", None)[0]
    ref_cx = count(reference, resolution=224, num_classes=1000, use_se=False)
    ref_zen = zen_of("zennet-400m-se", args.proxy_batch_size)
    lines.append(
        f"| published ZenNet-400M (SE off) | - | - | {ref_zen:.3f} | {ref_cx.macs / 1e6:.1f} | {ref_cx.layers} | - |"
    )
    print(lines[-1], flush=True)
    runs = (
        ("zen", args.iterations, args.proxy_batch_size),
        ("zen-analytic", args.analytic_iterations, None),
    )
    for proxy, iterations, batch in runs:
        problem = Problem(
            space="zennas-idw", proxy=parse_proxy(proxy), resolution=224, num_classes=1000, budgets=budgets,
            proxy_batch_size=batch,
        )  # fmt: skip
        settings = Settings(iterations=iterations, population=64, batch=16)
        with tempfile.TemporaryDirectory() as tmp:
            result = search(problem, settings, Path(tmp) / "run", workers=args.workers, plots=False)
        zen = result["score"] if proxy == "zen" else zen_of(result["arch"], args.proxy_batch_size)
        lines.append(
            f"| search, proxy {proxy} | {iterations} | {result['wall_time_s']:.0f} | {zen:.3f} | "
            f"{result['macs'] / 1e6:.1f} | {result['layers']} | `{result['arch']}` |"
        )
        print(lines[-1], flush=True)
    head = (
        f"Zen-Score (sampled; 224 px, batch {args.proxy_batch_size}, seed 0, 1 thread) of each winner and of the "
        f"published ZenNet-400M; budget MACs <= 400M, layers <= 14; {args.workers} worker(s)\n\n"
        "| network | iterations | search s | Zen-Score | MACs (M) | layers | architecture |\n"
        "|---|---|---|---|---|---|---|"
    )
    table_md = head + "\n" + "\n".join(lines)
    print(table_md)
    append_result("bench_search idw400m - zennas-idw, 400M MACs, <= 14 layers, vs published ZenNet-400M", table_md)


def milp_vs_evolution(args: argparse.Namespace) -> None:
    from zennas.search.run import run_milp

    budgets = Budgets(latency_ms_per_image=args.budget_ms, latency_batch_size=1)
    rows = []
    for proxy, batch, seeds in (("params", None, args.seeds), ("zen", 8, 1)):
        for seed in range(seeds):
            problem = Problem(
                space="binas", proxy=parse_proxy(proxy), resolution=224, num_classes=1000, table="cpu-ort-fp32-b1",
                budgets=budgets, proxy_batch_size=batch, seed=seed,
            )  # fmt: skip
            found = {}
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(iterations=args.evaluations, population=64, batch=16)
                found["milp"] = run_milp(problem, settings, Path(tmp) / "milp", workers=args.workers)
                for strategy in ("evolution", "random"):
                    # the seed counts as one evaluation: evaluations - 1 children
                    s = Settings(iterations=args.evaluations - 1, population=64, batch=16, strategy=strategy)
                    found[strategy] = search(problem, s, Path(tmp) / strategy, workers=args.workers, plots=False)
            m, evo = found["milp"], found["evolution"]
            rows.append(
                f"| {proxy} | {seed} | {args.evaluations} | {m['score']:.6g} (tau {m['kendall_tau_heldout']:.3f}, "
                f"{m['wall_time_s']:.0f} s) | {evo['score']:.6g} ({evo['wall_time_s']:.0f} s)"
                f" | {found['random']['score']:.6g} | {m['best_sample']['score']:.6g} |"
            )
            print(rows[-1], flush=True)
    head = (
        f"binas, latency <= {args.budget_ms} ms/image (cpu-ort-fp32-b1, batch 1); every method gets "
        f"{args.evaluations} proxy evaluations; {args.workers} worker(s); zen at batch 8, 224 px\n\n"
        "| proxy | seed | evaluations | MILP score (held-out tau, wall) | evolution score (wall) | random search | "
        "best of the MILP's own samples |\n|---|---|---|---|---|---|---|"
    )
    table_md = head + "\n" + "\n".join(rows)
    print(table_md)
    append_result("bench_search milp - BINAS-style exact solver vs evolution at equal proxy evaluations", table_md)


def _zennas(*args: str) -> str:
    """Run the installed command line (as a user does) and return its stdout; stderr passes through."""
    command = [sys.executable, "-c", "from cli import main; main()", *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"zennas {shlex.join(args)} failed with exit code {done.returncode}")
    return done.stdout


def _judge(arch: str, settings: list[str], repeats: int) -> tuple[float, float]:
    """(mean, std) of the sampled Zen-Score of `arch` over `repeats` seeded draws with `settings`."""
    out = json.loads(_zennas("score", arch, "-p", "zen", "--repeats", str(repeats), "--device", "cpu", *settings,
                             "--json"))  # fmt: skip
    return out["zen"]["mean"], out["zen"]["std"]


def _searched(out: Path, base: list[str], extra: str, time_limit: str) -> dict:
    start = time.perf_counter()
    _zennas("search", *base, "--time-limit", time_limit, "--out", str(out), "--no-plots", *shlex.split(extra))
    result = json.loads((out / "result.json").read_text())
    result["command_s"] = time.perf_counter() - start
    return result


def race(args: argparse.Namespace) -> None:
    base = ["--space", "zennas-res", "--preset", "cifar-params1M", "--workers", str(args.workers)]
    judge = ["--mode", "zennas", "--batch-size", "64", "--resolution", "32", "--num-classes", "100"]
    rows = []
    mean, std = _judge("zennet-cifar10-1m", judge, args.repeats)
    info = json.loads(_zennas("info", "zennet-cifar10-1m", "--convention", "zennas", "--num-classes", "100", "--json"))
    rows.append(f"| published ZenNet-CIFAR-1M | - | {mean:.2f} ± {std:.2f} | {info['convention_params']:,} | "
                f"{info['layers']} | - | - | - |")  # fmt: skip
    print(rows[-1], flush=True)
    for variant in args.variants.split(";"):
        name, _, extra = variant.partition("=")
        extra = extra or {"funnel": "", "no-funnel": "--no-funnel"}[name]
        with tempfile.TemporaryDirectory() as tmp:
            result = _searched(Path(tmp) / "run", base, extra, args.time_limit)
        mean, std = _judge(result["arch"], judge, args.repeats)
        info = json.loads(_zennas("info", result["arch"], "--convention", "zennas", "--num-classes", "100",
                                  "--resolution", "32", "--json"))  # fmt: skip
        within = info["convention_params"] <= 1_000_000 and info["layers"] <= 18
        counts = result["counts"]
        rows.append(
            f"| {name} (`{extra}`) | {result['command_s']:.0f} s | {mean:.2f} ± {std:.2f} | "
            f"{info['convention_params']:,} | {info['layers']} | {'yes' if within else 'NO'} | "
            f"{counts['scored']:,} scored, {counts['screened']:,} screened of {result['iterations']:,} | "
            f"`{result['arch']}` |"
        )
        print(rows[-1], flush=True)
    head = (
        f"`zennas search --space zennas-res --preset cifar-params1M --time-limit {args.time_limit} --workers "
        f"{args.workers}` plus each variant's options; winners judged by `zennas score --mode zennas --batch-size 64 "
        f"--repeats {args.repeats}` (32 px, 100 classes, seed 0); budget: params <= 1M in the repository counts, "
        "layers <= 18. Target: >= 123.0 within the budget.\n\n"
        "| run | wall (whole command) | Zen-Score (zennas mode) | params (repo) | layers | within budget | children | "
        "architecture |\n|---|---|---|---|---|---|---|---|"
    )
    table_md = head + "\n" + "\n".join(rows)
    print(table_md)
    append_result(f"bench_search race - Zen-NAS CIFAR params <= 1M, {args.time_limit} on this machine", table_md)


def mainjob(args: argparse.Namespace) -> None:
    base = ["--budget", "1ms", "--gpu", "V100", "--workers", str(args.workers)]
    judge = ["--batch-size", "64", "--resolution", "224", "--num-classes", "1000"]
    rows = []
    runs = [(f"main job{f' ({args.main_options})' if args.main_options else ''}", args.main_options, args.time_limit)]
    if args.plain_time_limit != "0":
        runs.append(("plain (no funnel)", "--no-funnel", args.plain_time_limit))
    for name, extra, limit in runs:
        with tempfile.TemporaryDirectory() as tmp:
            result = _searched(Path(tmp) / "run", base, extra, limit)
        mean, std = _judge(result["arch"], judge, args.repeats)
        counts = result["counts"]
        rows.append(
            f"| {name} | {limit} | {result['command_s']:.0f} s | {result['score']:.2f} | {mean:.2f} ± {std:.2f} | "
            f"{result['latency_ms_per_image']:.4f} | {result['layers']} | {counts['scored']:,} scored, "
            f"{counts['screened']:,} screened | `{result['arch']}` |"
        )
        print(rows[-1], flush=True)
    head = (
        f"`zennas search --budget 1ms --gpu V100 --workers {args.workers} --time-limit T` (V100 TensorRT table, "
        "ms/image at batch 64), the main job against the same search without the funnel; winners judged by the "
        f"sampled Zen-Score (paper mode, batch 64, 224 px, seed 0, {args.repeats} draws).\n\n"
        "| run | time limit | wall (whole command) | single-draw score in the search | judged Zen-Score | "
        "ms/image | layers | children | architecture |\n|---|---|---|---|---|---|---|---|---|"
    )
    table_md = head + "\n" + "\n".join(rows)
    print(table_md)
    append_result("bench_search mainjob - 1 ms on V100, short funnel search vs long plain search", table_md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--iterations", type=int, default=96)
    i = sub.add_parser("idw400m")
    i.add_argument("--iterations", type=int, default=600)
    i.add_argument("--analytic-iterations", type=int, default=20000)
    i.add_argument("--workers", type=int, default=2)
    i.add_argument("--proxy-batch-size", type=int, default=16)
    m = sub.add_parser("milp")
    m.add_argument("--evaluations", type=int, default=300)
    m.add_argument("--budget-ms", type=float, default=9.0)
    m.add_argument("--seeds", type=int, default=3)
    m.add_argument("--workers", type=int, default=2)
    r = sub.add_parser("race")
    r.add_argument("--time-limit", default="8m")
    r.add_argument("--variants", default="funnel;no-funnel", help="';'-separated NAME or NAME=OPTIONS")
    r.add_argument("--repeats", type=int, default=10)
    r.add_argument("--workers", type=int, default=2)
    j = sub.add_parser("mainjob")
    j.add_argument("--time-limit", default="3m")
    j.add_argument("--plain-time-limit", default="20m", help="0: no plain run")
    j.add_argument("--main-options", default="", help="extra options of the main job's search")
    j.add_argument("--repeats", type=int, default=3)
    j.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    jobs = {"throughput": throughput, "idw400m": idw400m, "milp": milp_vs_evolution, "race": race, "mainjob": mainjob}
    jobs[args.what](args)


if __name__ == "__main__":
    main()
