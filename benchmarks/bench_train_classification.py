"""Learning checks of `zennas train` on real images bundled with scikit-learn (REFERENCE 9; issue 6 item 4).

Part `searched`: search a zennas-res network (Zen-Score, CIFAR preset at 32 px, 0.2M params and 40M
MACs by default), then train it with `zennas train classification --run` on sklearn's 8x8 digits
upsampled to 32x32x3 (1,497 training / 300 held-out images); target: top-1 >= 97 % in a few CPU
minutes (measured: 98.0 % after 8 epochs, 26 s search + 183 s training on 2 threads).

Part `longtail`: every `zennas train longtail --method` on a long-tailed subset of the digits
(imbalance factor 100 by default: 144 training images of digit 0 down to 1 of digit 9; the
held-out split stays balanced, 30 per class) with the fixed small network of the tests at 16 px,
over several seeds. Prints and records mean (and min-max) top-1, balanced, many/medium/few-shot
accuracy per method.

    python benchmarks/bench_train_classification.py --part searched
    python benchmarks/bench_train_classification.py --part longtail --seeds 0,1,2 --imbalance-factor 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _record import append_result  # noqa: E402

from zennas.train import LONGTAIL_METHODS  # noqa: E402
from zennas.train.classification import LongtailConfig, train_classification  # noqa: E402
from zennas.train.synthetic import write_digits_folder  # noqa: E402

SMALL_ARCH = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperConvK1BNRELU(32,64,1,1)"


def searched(work: Path, args: argparse.Namespace) -> None:
    data = write_digits_folder(work / "digits", val_per_class=30)
    search = [sys.executable, str(ROOT / "cli.py"), "search", "--space", "zennas-res", "--preset", "cifar-params1M",
              "--params-budget", args.params_budget, "--flops-budget", args.flops_budget, "--convention", "correct",
              "--max-layers", "12", "--num-classes", "10", "--iterations", str(args.iterations), "--population", "16",
              "--proxy-batch-size", "4", "--out", str(work / "search"), "--no-plots"]  # fmt: skip
    started = time.monotonic()
    subprocess.run(search, check=True, cwd=ROOT)
    search_s = time.monotonic() - started
    result = json.loads((work / "search" / "result.json").read_text())
    train = [sys.executable, str(ROOT / "cli.py"), "train", "classification", "--run", str(work / "search"),
             "--data", str(data), "--out", str(work / "train"), "--epochs", str(args.epochs), "--batch-size", "64",
             "--lr", "0.2", "--hflip", "0", "--device", "cpu"]  # fmt: skip
    started = time.monotonic()
    subprocess.run(train, check=True, cwd=ROOT)
    train_s = time.monotonic() - started
    m = json.loads((work / "train" / "metrics.json").read_text())
    table = "\n".join([
        "| searched arch (zen, cifar-params1M preset) | params | MACs (32 px) | search | training | epochs | "
        "held-out top-1 |",
        "|---|---|---|---|---|---|---|",
        f"| `{result['arch']}` | {m['params']:,} | {m['macs']:,} | {search_s:.0f} s ({args.iterations} iterations) "
        f"| {train_s:.0f} s | {m['epochs']} | {m['top1']:.2f} % ({m['reported']} weights) |",
    ])  # fmt: skip
    print(table)
    append_result("zennas train classification: a searched zennas-res net on sklearn digits at 32 px", table)


def _spread(values: list[float]) -> str:
    """mean (min-max) of a figure over seeds."""
    v = np.array(values, dtype=float)
    return f"{v.mean():.1f} ({v.min():.1f}-{v.max():.1f})"


def longtail(work: Path, args: argparse.Namespace) -> None:
    data = write_digits_folder(work / "digits", val_per_class=30)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",") if args.methods else list(LONGTAIL_METHODS)
    rows, counts = [], None
    for method in methods:
        runs = []
        started = time.monotonic()
        for seed in seeds:
            out = work / f"{method}-{seed}"
            shutil.rmtree(out, ignore_errors=True)
            config = LongtailConfig(data=str(data), out=str(out), arch=SMALL_ARCH, epochs=args.epochs, batch_size=32,
                                    resolution=16, hflip=0.0, lr=0.2, warmup_epochs=0.5, method=method,
                                    imbalance_factor=args.imbalance_factor, seed=seed)  # fmt: skip
            runs.append(train_classification(config))
            counts = runs[-1]["train_counts"]
        seconds = (time.monotonic() - started) / len(seeds)

        cells = " | ".join(
            _spread([r[key] for r in runs]) for key in ("top1", "balanced_top1", "many", "medium", "few")
        )
        rows.append(f"| {method} | {cells} | {seconds:.0f} s |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"Training counts per class (IF {args.imbalance_factor:g}): {counts}; held-out: 30 per class. "
        f"Shot groups: many > 100, few < 20 training images. {args.epochs} epochs, seeds {args.seeds}; "
        "mean (min-max) in percent.",
        "",
        "| method | top-1 | balanced top-1 | many | medium | few | time per run |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    print(table)
    append_result(f"zennas train longtail: all methods on long-tailed sklearn digits (IF {args.imbalance_factor:g})",
                  table)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["searched", "longtail"], required=True)
    parser.add_argument("--epochs", type=int, help="default: 8 (searched), 15 (longtail)")
    parser.add_argument("--iterations", type=int, default=1000, help="search iterations (searched)")
    parser.add_argument("--params-budget", default="0.2M")
    parser.add_argument("--flops-budget", default="40M")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", help="comma-separated (default: all)")
    parser.add_argument("--imbalance-factor", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.epochs = args.epochs or (8 if args.part == "searched" else 15)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        (searched if args.part == "searched" else longtail)(Path(tmp), args)


if __name__ == "__main__":
    main()
