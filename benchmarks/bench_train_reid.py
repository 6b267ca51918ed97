"""ReID learning check: `train_reid` on a synthetic Market-1501-format set of real digit images, against chance.

A protocol and learning check, NOT a ReID benchmark: the people are sklearn's 1,797 hand-written
digit images (REFERENCE 9), each seen by 3 of 6 simulated cameras (own colours, brightness, blur,
noise) in 2 jittered views per camera (`zennas.train.synthetic.write_market_digits`); train and test
people are disjoint; the gallery also holds distractors (person 0000) and junk (-1). Reported, all in
percent under the Market-1501 protocol: the exact expectation of a uniformly random ranking, the
same network untrained (what the architecture alone gives), the trained network, and the trained
network with k-reciprocal re-ranking. The untrained network ranks below chance: its embedding is
dominated by the camera's look, so a query's nearest valid gallery images are other people seen by
the same camera (the protocol only removes same-person same-camera images).

Usage: python benchmarks/bench_train_reid.py [--train-ids 300] [--test-ids 150] [--epochs 30] [--no-record]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _record import append_result

from zennas.train.reid import ReidConfig, ReidDataset, build_reid_model, evaluate_reid, read_market1501, train_reid
from zennas.train.reid import reid_transforms as transforms
from zennas.train.synthetic import write_market_digits

KEYS = ("rank1", "rank5", "rank10", "map")
ARCH = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)"


def untrained(config: ReidConfig, rerank: tuple[int, int, float]) -> dict:
    """The figures of the same network at its seeded initialisation (BN in eval mode: running stats 0/1)."""
    from torch.utils.data import DataLoader

    from zennas.models import resolve_arch

    data = read_market1501(config.data)
    spec, _ = resolve_arch(config.arch)
    torch.manual_seed(config.seed)
    model = build_reid_model(spec, None, len(data.train_ids), config.height, config.width)
    test = transforms(config.height, config.width, train=False)
    query = DataLoader(ReidDataset(data.query, test), batch_size=128)
    gallery = DataLoader(ReidDataset(data.gallery, test), batch_size=128)
    return evaluate_reid(model, query, gallery, torch.device("cpu"), rerank=rerank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-ids", type=int, default=300)
    parser.add_argument("--test-ids", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--arch", default=ARCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rerank = (20, 6, 0.3)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "market-digits"
        counts = write_market_digits(data, train_ids=args.train_ids, test_ids=args.test_ids, height=64, width=32,
                                     seed=args.seed)  # fmt: skip
        config = ReidConfig(data=str(data), out=str(Path(tmp) / "run"), arch=args.arch, epochs=args.epochs, p=16,
                            k=4, height=args.height, width=args.width, lr=1e-2, warmup_epochs=1, erasing=0.0,
                            eval_every=args.epochs, rerank=True, seed=args.seed)  # fmt: skip
        before = untrained(config, rerank)
        started = time.monotonic()
        m = train_reid(config)
        wall = time.monotonic() - started

    def row(name: str, r1, r5, r10, mp) -> str:
        return f"| {name} | {r1:.2f} | {r5:.2f} | {r10:.2f} | {mp:.2f} |"

    lines = [
        "| ranking (percent, Market-1501 protocol) | rank-1 | rank-5 | rank-10 | mAP |",
        "|---|---|---|---|---|",
        row("random ranking (exact expectation)", *(m[f"chance_{k}"] for k in KEYS)),
        row("untrained network", *(before[k] for k in KEYS)),
        row("untrained + re-ranking", *(before[f"rerank_{k}"] for k in KEYS)),
        row(f"trained, {m['epochs']} epochs", *(m[k] for k in KEYS)),
        row("trained + re-ranking (k1 20, k2 6, lambda 0.3)", *(m[f"rerank_{k}"] for k in KEYS)),
    ]
    lines.append(
        f"\nprotocol check on synthetic digits, not a benchmark: {counts['train_ids']} train people "
        f"({m['train_images']} images), {counts['test_ids']} test people: {m['query_images']} queries, "
        f"{m['gallery_images']} gallery images ({m['gallery_distractors']} distractors; {m['junk_dropped']} junk "
        f"dropped); {args.height}x{args.width} input, P16 x K4, Adam lr 1e-2, no random erasing, arch "
        f"{args.arch} ({m['params']:,} params); training + final evaluation {wall:.0f} s on "
        f"{args.threads} thread(s). The untrained network is below chance: its nearest valid gallery images are "
        "other people under the query's camera (the camera's look dominates an untrained embedding)"
    )
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        append_result("bench_train_reid - ReID learning check on synthetic Market-1501-format digits", table)


if __name__ == "__main__":
    main()
