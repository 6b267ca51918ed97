"""Do default options learn? Detection, ReID and classification runs on small sets, on a CPU.

Detection: `write_coco_digits` sets (sklearn's real digits pasted on noisy canvases, COCO format)
x backbones x candidate optimiser settings; each run trains for about `--steps` steps (epochs =
steps / (train images // batch), rounded), is evaluated once at the end (pycocotools mAP@0.5 of
the reported weights) and times itself. Candidate `defaults` is `DetectionConfig` as it stands
(only data, arch, epochs, batch, `--resolution`, hflip 0 for digits and the CPU given); the others
set optimiser, lr, weight decay and warm-up explicitly (lrs are the figures used, not scaled).
`--prune F` stops a run whose mAP@0.5 at half its epochs is below F x the best half-way figure so
far on the same set and backbone (the half-way evaluation does not change the training).

ReID: `write_market_digits` (64x32 images) and `train_reid` with default options (only data,
arch, epochs, `--reid-size`, hflip 0 and the CPU given) for about `--reid-steps` steps, against
the chance figures the trainer reports; `--reid-candidates` adds alternatives.

Classification: sklearn's digits as ImageFolders (`write_digits_folder`: "digits" all 1,797, 45 per
class in val; "few" 600 of them, 15 per class in val) x small zennas-res backbones, trained by
`train_classification` with default options (only data, arch, `--cls-resolution`, hflip 0 and the
CPU given; epochs, batch, lr and warm-up as TrainConfig has them unless a candidate sets them),
against chance (10 %). The reported figure is the trainer's own: top-1 of the weights it reports.

Prints the tables and appends them to benchmarks/RESULTS.md (date, machine, command).

    python benchmarks/bench_train_defaults.py --sets user --archs res512 --candidates defaults --steps 750
    python benchmarks/bench_train_defaults.py --part reid --reid-steps 1000
    python benchmarks/bench_train_defaults.py --candidates 'defaults,try:optimizer=adamw;lr=3e-3' --no-record
    python benchmarks/bench_train_defaults.py --part classification --cls-candidates 'defaults,e30:epochs=30'
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _record import append_result

from zennas.train.classification import TrainConfig, train_classification
from zennas.train.detection import DetectionConfig, optimizer_settings, train_detection
from zennas.train.reid import ReidConfig, train_reid
from zennas.train.synthetic import write_coco_digits, write_digits_folder, write_market_digits

SETS = {  # name -> write_coco_digits arguments
    "user": dict(train_images=600, val_images=150, canvas=96, digit_size=(22, 34)),  # the report
    "bench": dict(train_images=1200, val_images=200, canvas=96, digit_size=(20, 32)),  # bench_train_detection's
    "few": dict(train_images=300, val_images=100, canvas=96, digit_size=(18, 30)),  # fewer, smaller digits
}
ARCHS = {
    # the backbone: five stride-2 stages, 32 to 512 channels (2.53 M parameters)
    "res512": "SuperConvK3BNRELU(3,32,2,1)SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,128,2,64,1)"
    "SuperResK3K3(128,256,2,128,1)SuperResK3K3(256,512,2,256,1)",
    # bench_train_detection's: 16 to 128 channels (0.26 M parameters)
    "res128": "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)"
    "SuperResK3K3(64,96,2,48,1)SuperResK3K3(96,128,2,64,1)",
}
# name -> DetectionConfig settings; `warmup_share` sets warmup_epochs to that share of the epochs.
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sgd-1e-2": dict(optimizer="sgd", lr=1e-2, weight_decay=1e-4, warmup_epochs=1.0),  # the defaults until now
    "sgd-4e-2": dict(optimizer="sgd", lr=4e-2, weight_decay=1e-4, warmup_epochs=1.0),
    "adamw-2e-4": dict(optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_epochs=1.0),
    "adamw-1e-3": dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=1.0),
    "adamw-2e-3": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=1.0),
    "adamw-4e-3": dict(optimizer="adamw", lr=4e-3, weight_decay=0.05, warmup_epochs=1.0),
    "adamw-2e-3-w5": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_share=0.05),
}
REID_ARCH = (  # bench_train_reid's
    "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)"
)
REID_CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "adam-3.5e-3": dict(optimizer="adam", lr=3.5e-3),
    "adam-1e-2-bench": dict(optimizer="adam", lr=1e-2, warmup_epochs=1.0, erasing=0.0),  # bench_train_reid's
}
CLS_SETS = {"digits": dict(val_per_class=45), "few": dict(val_per_class=15, limit=600)}  # write_digits_folder's
CLS_ARCHS = {
    "res128": REID_ARCH,  # 0.05 M parameters
    "res256": "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,128,2,64,1)"
    "SuperResK3K3(128,256,2,128,1)",  # 0.88 M parameters
}
CLS_CANDIDATES: dict[str, dict[str, Any]] = {"defaults": {}}


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_candidates(text: str, known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`name,name,label:key=value;key=value` -> {label: settings}; a bare name must be in `known`."""
    chosen = {}
    for item in filter(None, text.split(",")):
        if ":" in item:
            label, pairs = item.split(":", 1)
            chosen[label] = {k: _value(v) for k, v in (p.split("=", 1) for p in pairs.split(";") if p)}
        elif item in known:
            chosen[item] = known[item]
        else:
            sys.exit(f"unknown candidate {item!r}; choose from {', '.join(known)} or give LABEL:key=value;...")
    return chosen


def _describe(settings: dict[str, Any], config: DetectionConfig) -> str:
    """The candidate's own settings, or for the defaults what they are now."""
    if settings:
        return ", ".join(f"{k} {v}" for k, v in settings.items())
    lr, weight_decay = optimizer_settings(config)
    return f"defaults: optimizer {config.optimizer}, lr {lr:g}, weight_decay {weight_decay:g}, " \
        f"warmup_epochs {config.warmup_epochs:g}"  # fmt: skip


class _PrunedError(Exception):
    """Raised from on_epoch to stop a clearly losing run."""


def detection(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (set, backbone, candidate) run; returns one row per run."""
    candidates = parse_candidates(args.candidates, CANDIDATES)
    rows = []
    for set_name in args.sets.split(","):
        data = write_coco_digits(work / set_name, per_image=(1, 3), seed=args.seed, **SETS[set_name])
        per_epoch = SETS[set_name]["train_images"] // args.batch_size
        epochs = max(1, round(args.steps / per_epoch))
        for arch_name in args.archs.split(","):
            best_half = 0.0
            for label, settings in candidates.items():
                settings = dict(settings)
                share = settings.pop("warmup_share", None)
                if share is not None:
                    settings["warmup_epochs"] = share * epochs
                half = epochs // 2 if args.prune > 0 and epochs >= 2 else epochs
                config = DetectionConfig(
                    data=str(data), out=str(work / f"run-{set_name}-{arch_name}-{label}"), arch=ARCHS[arch_name],
                    epochs=epochs, batch_size=args.batch_size, resolution=args.resolution or None, hflip=0.0,
                    eval_every=half, seed=args.seed, device="cpu", workers=args.workers, export_onnx=False,
                    **settings,
                )  # fmt: skip
                seen: dict[str, float] = {}

                def on_epoch(r: dict, half=half, epochs=epochs, best=best_half, seen=seen) -> None:
                    if r["map"] is not None and r["epoch"] == half < epochs:
                        seen["half"] = r["map_50"]
                        if r["map_50"] < args.prune * best:
                            raise _PrunedError
                    print(f"  epoch {r['epoch']}: loss {r['train_loss']:.3f}", file=sys.stderr)

                print(f"{set_name} / {arch_name} / {label}: {epochs} epochs x {per_epoch} steps", file=sys.stderr)
                started = time.monotonic()
                try:
                    m = train_detection(config, on_epoch=on_epoch)
                    row = dict(map_50=m["map_50"], map=m["map"], steps=epochs * per_epoch, loss=m["train_loss"])
                except _PrunedError:
                    row = dict(map_50=None, map=None, steps=half * per_epoch, loss=None)
                row.update(set=set_name, arch=arch_name, candidate=label, settings=_describe(settings, config),
                           half=seen.get("half"), seconds=time.monotonic() - started)  # fmt: skip
                best_half = max(best_half, seen.get("half", 0.0))
                rows.append(row)
                print(f"  -> {row}", file=sys.stderr)
    return rows


NATIVE = "DetectionConfig's default (the images' median shorter side)"


def detection_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One line per run, then each candidate's mean mAP@0.5 over the (set, backbone) pairs it finished."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        "| candidate | settings | set | backbone | steps | mAP@0.5 | mAP | mAP@0.5 half-way | final loss | seconds |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        loss = "pruned" if r["map_50"] is None else f"{r['loss']:.3f}"
        scores = f"{fmt(r['map_50'])} | {fmt(r['map'])} | {fmt(r['half'])}"
        lines.append(f"| {r['candidate']} | {r['settings']} | {r['set']} | {r['arch']} | {r['steps']} | {scores} "
                     f"| {loss} | {r['seconds']:.0f} |")  # fmt: skip
    lines += ["", "| candidate | runs finished | mean mAP@0.5 | min mAP@0.5 |", "|---|---|---|---|"]
    for label in dict.fromkeys(r["candidate"] for r in rows):
        done = [r["map_50"] for r in rows if r["candidate"] == label and r["map_50"] is not None]
        if done:
            lines.append(f"| {label} | {len(done)} | {sum(done) / len(done):.3f} | {min(done):.3f} |")
    sets = "; ".join(
        f"{s}: {SETS[s]['train_images']} / {SETS[s]['val_images']} canvases of {SETS[s]['canvas']} px, digits "
        f"{SETS[s]['digit_size'][0]}-{SETS[s]['digit_size'][1]} px"
        for s in args.sets.split(",")
    )
    lines.append(
        f"\nsklearn digits (10 classes), 1-3 per canvas ({sets}); backbones: "
        + "; ".join(f"{a} `{ARCHS[a]}`" for a in args.archs.split(","))
        + f"; input side {args.resolution or NATIVE}, batch {args.batch_size}, "
        "hflip 0, every other option at DetectionConfig's default unless listed; "
        f"evaluated once at the end (EMA weights; half-way too when pruning); {args.threads} torch thread(s), "
        f"{args.workers} loader processes, CPU; seconds = the whole train_detection call (no ONNX export)"
    )
    return "\n".join(lines)


def reid(work: Path, args: argparse.Namespace) -> str:
    """Default (and candidate) ReID runs of about `args.reid_steps` steps on synthetic Market-1501 digits."""
    data = work / "market-digits"
    height, width = (int(v) for v in args.reid_size.split("x"))
    counts = write_market_digits(data, train_ids=300, test_ids=150, height=64, width=32, seed=args.seed)
    lines = [
        "| candidate | settings | steps | rank-1 | rank-5 | mAP | chance rank-1 | chance mAP | final loss | seconds |",
        "|" + "---|" * 10,
    ]
    for label, settings in parse_candidates(args.reid_candidates, REID_CANDIDATES).items():
        arch = CLS_ARCHS[args.reid_arch]
        config = ReidConfig(data=str(data), out=str(work / f"reid-{label}"), arch=arch, height=height, width=width,
                            hflip=0.0, device="cpu", workers=args.workers, seed=args.seed, **settings)  # fmt: skip
        per_epoch = max(1, counts["train_images"] // (config.p * config.k))
        epochs = max(1, round(args.reid_steps / per_epoch))
        config = dataclasses.replace(config, epochs=epochs, eval_every=epochs)
        print(f"reid / {label}: {epochs} epochs x {per_epoch} steps", file=sys.stderr)
        started = time.monotonic()
        m = train_reid(config)
        seconds = time.monotonic() - started
        desc = ", ".join(f"{k} {v}" for k, v in settings.items()) or "(ReidConfig defaults)"
        lines.append(f"| {label} | {desc} | {epochs * per_epoch} | {m['rank1']:.2f} | {m['rank5']:.2f} "
                     f"| {m['map']:.2f} | {m['chance_rank1']:.2f} | {m['chance_map']:.2f} | {m['train_loss']:.3f} "
                     f"| {seconds:.0f} |")  # fmt: skip
    lines.append(
        f"\nwrite_market_digits: {counts['train_ids']} train people ({counts['train_images']} images), "
        f"{counts['test_ids']} test people (images written at 64x32); {height}x{width} input, hflip 0, "
        f"arch {args.reid_arch} `{CLS_ARCHS[args.reid_arch]}`, every other option at ReidConfig's default unless "
        "listed; percentages, "
        f"Market-1501 protocol; {args.threads} torch thread(s), CPU"
    )
    return "\n".join(lines)


def classification(work: Path, args: argparse.Namespace) -> str:
    """Classification runs with default (and candidate) settings on the digit ImageFolders."""
    lines = [
        "| candidate | settings | set | backbone | steps | top-1 | top-5 | final loss | seconds |",
        "|" + "---|" * 9,
    ]
    candidates = parse_candidates(args.cls_candidates, CLS_CANDIDATES)
    for set_name in filter(None, args.cls_sets.split(",")):
        data = write_digits_folder(work / f"digits-{set_name}", seed=args.seed, **CLS_SETS[set_name])
        train_images = len(list((data / "train").rglob("*.png")))
        for arch_name in filter(None, args.cls_archs.split(",")):
            for label, settings in candidates.items():
                config = TrainConfig(data=str(data), out=str(work / f"cls-{set_name}-{arch_name}-{label}"),
                                     arch=CLS_ARCHS[arch_name], resolution=args.cls_resolution, hflip=0.0,
                                     device="cpu", workers=args.workers, seed=args.seed, **settings)  # fmt: skip
                steps = config.epochs * (train_images // config.batch_size or 1)
                print(f"classification / {set_name} / {arch_name} / {label}: {steps} steps", file=sys.stderr)
                started = time.monotonic()
                m = train_classification(config)
                seconds = time.monotonic() - started
                desc = ", ".join(f"{k} {v}" for k, v in settings.items()) or (
                    f"defaults: {config.optimizer}, {config.epochs} epochs, batch {config.batch_size}, "
                    f"warmup_epochs {config.warmup_epochs:g}"
                )
                figures = f"{m['top1']:.1f} | {m['top5']:.1f} | {m['train_loss']:.3f} | {seconds:.0f}"
                lines.append(
                    f"| {label} | {desc} | {set_name} ({train_images} train) | {arch_name} | {steps} | {figures} |"
                )
    lines.append(
        f"\nsklearn digits (8x8, 10 classes) as PNG ImageFolders, upsampled to {args.cls_resolution} px; backbones: "
        + "; ".join(f"{k} `{v}`" for k, v in CLS_ARCHS.items())
        + f"; hflip 0, every other option at TrainConfig's default unless listed; top-1/top-5 in percent of the "
        f"weights the trainer reports (chance 10 %); {args.threads} torch thread(s), CPU"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("detection", "reid", "classification", "all"), default="all")
    parser.add_argument("--sets", default="user,bench,few", help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--archs", default="res512,res128", help=f"comma-separated, of {', '.join(ARCHS)}")
    parser.add_argument("--candidates", default="defaults,sgd-1e-2,adamw-2e-3",
                        help=f"comma-separated, of {', '.join(CANDIDATES)} or LABEL:key=value;key=value")  # fmt: skip
    parser.add_argument("--steps", type=int, default=750, help="detection training steps per run (about)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=96, help="detection input side; 0 = DetectionConfig's")
    parser.add_argument("--prune", type=float, default=0.0, help="stop runs below F x the best half-way mAP@0.5")
    parser.add_argument("--reid-candidates", default="defaults",
                        help=f"comma-separated, of {', '.join(REID_CANDIDATES)} or LABEL:key=value;...")  # fmt: skip
    parser.add_argument("--reid-steps", type=int, default=1000)
    parser.add_argument("--reid-arch", default="res128", choices=("res128", "res256"), help="ReID backbone")
    parser.add_argument("--reid-size", default="64x32", help="ReID input HEIGHTxWIDTH")
    parser.add_argument("--cls-sets", default="digits,few", help=f"comma-separated, of {', '.join(CLS_SETS)}")
    parser.add_argument("--cls-archs", default="res128,res256", help=f"comma-separated, of {', '.join(CLS_ARCHS)}")
    parser.add_argument(
        "--cls-candidates",
        default="defaults",
        help="comma-separated: defaults or LABEL:key=value;key=value (TrainConfig fields)",
    )
    parser.add_argument("--cls-resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--workers", type=int, default=0, help="loader processes (0 keeps the run on one core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the data sets and the runs in this folder")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        if args.part in ("detection", "all"):
            table = detection_table(detection(work, args), args)
            print(table)
            if not args.no_record:
                append_result("bench_train_defaults - detection with default and candidate settings", table)
        if args.part in ("reid", "all"):
            table = reid(work, args)
            print(table)
            if not args.no_record:
                append_result("bench_train_defaults - ReID with default settings", table)
        if args.part in ("classification", "all"):
            table = classification(work, args)
            print(table)
            if not args.no_record:
                append_result("bench_train_defaults - classification with default settings", table)


if __name__ == "__main__":
    main()
