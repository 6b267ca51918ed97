"""Detection learning check: FCOS on a zennas backbone learns pasted real digits to mAP@0.5 >= 0.8 on a CPU.

Data: `write_coco_digits` pastes scikit-learn's real 8x8 hand-written digits (all ten classes,
scaled to 20-32 px, 1-3 per canvas, never overlapping) on 96x96 noisy canvases with their ink's
tight boxes, in COCO format; the val canvases use digit images the training canvases never saw.
The detector (C3-C5 -> FPN P3-P7 -> FCOS head) trains from scratch with AdamW on one CPU thread
and is evaluated with pycocotools; the final weights are exported to ONNX and checked with
onnxruntime. A learning check on synthetic data, not a COCO benchmark.

Prints a table and appends it to benchmarks/RESULTS.md (date, machine, command, figures).
Usage: python benchmarks/bench_train_detection.py [--epochs 16] [--train-images 1200] [--threads 1] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _record import append_result

from zennas.train.detection import DetectionConfig, train_detection
from zennas.train.synthetic import write_coco_digits

# Five stride-2 stages (C3-C5 at strides 8, 16, 32), 16 to 128 channels: about 0.26 M backbone parameters.
ARCH = (
    "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)"
    "SuperResK3K3(64,96,2,48,1)SuperResK3K3(96,128,2,64,1)"
)
TARGET_MAP_50 = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--train-images", type=int, default=1200)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--canvas", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the dataset and the run (weights, metrics, detector.onnx) in this folder")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.out is not None:
            tmp = args.out
        started = time.monotonic()
        data = write_coco_digits(Path(tmp) / "digits", train_images=args.train_images, val_images=args.val_images,
                                 canvas=args.canvas, digit_size=(20, 32), per_image=(1, 3), seed=args.seed)  # fmt: skip
        data_s = time.monotonic() - started
        config = DetectionConfig(
            data=str(data), out=str(Path(tmp) / "run"), arch=ARCH, epochs=args.epochs, batch_size=16,
            resolution=args.canvas, optimizer="adamw", lr=2e-3, warmup_epochs=0.5, hflip=0.0, fpn_channels=64,
            head_convs=2, eval_every=4, seed=args.seed, device="cpu",
        )  # fmt: skip

        def on_epoch(r: dict) -> None:
            scores = f"  mAP {r['map']:.3f}  mAP@0.5 {r['map_50']:.3f}" if r["map"] is not None else ""
            print(f"epoch {r['epoch']}: loss {r['train_loss']:.4f}{scores}  ({r['seconds']:.0f} s)", file=sys.stderr)

        m = train_detection(config, on_epoch=on_epoch)

    onnx = m["onnx"]
    error = onnx["max_rel_error"]  # a string when not finite (JSON has no nan)
    error = f"{error:.1e}" if isinstance(error, float) else error
    verdict = "met" if m["map_50"] >= TARGET_MAP_50 else "NOT met"
    lines = [
        "| backbone params | detector params | train / val images | epochs | mAP | mAP@0.5 | mAP@0.75 "
        "| train + eval s | ONNX max rel. error | target mAP@0.5 >= 0.8 |",
        "|" + "---|" * 10,
        f"| {m['backbone_params']:,} | {m['params']:,} | {m['train_images']} / {m['val_images']} | {m['epochs']} "
        f"| {m['map']:.3f} | {m['map_50']:.3f} | {m['map_75']:.3f} | {m['seconds']:.0f} "
        f"| {error} ({onnx['exporter']}) | {verdict} |",
        f"\nsklearn digits (10 classes) pasted at 20-32 px on {args.canvas}x{args.canvas} canvases, 1-3 per canvas "
        f"({m['val_annotations']} val boxes); FCOS, FPN 64 channels, 2-conv head towers, AdamW lr 2e-3, batch 16, "
        f"EMA weights reported, {args.threads} torch thread(s) on the CPU; data written in {data_s:.0f} s; "
        f"whole run {time.monotonic() - started:.0f} s (with the ONNX export and check)",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        append_result("bench_train_detection", table)


if __name__ == "__main__":
    main()
