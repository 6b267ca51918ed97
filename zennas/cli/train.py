"""`zennas train classification|longtail|detection|reid` and `zennas eval`.

Every train option is generated from a field of the task's config dataclass (zennas.cli.fields):
the config holds the defaults, this module only says how each field reads on the command line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import click

from zennas.cli.common import echo_json, one_line_errors, progress
from zennas.cli.fields import Flag, config_options
from zennas.cli.options import DEVICE, NON_NEGATIVE, OVERWRITE_HELP, POSITIVE, SEED, json_option
from zennas.train.config import (
    AMP_MODES,
    CACHE_MODES,
    DETECTION_OPTIMIZERS,
    LONGTAIL_METHODS,
    ONNX_EXPORTERS,
    OPTIMIZERS,
    REID_METRICS,
    REID_NECKS,
    REID_OPTIMIZERS,
    DetectionConfig,
    LongtailConfig,
    ReidConfig,
    TrainConfig,
)  # fmt: skip

HFLIP_HELP = ("Mirror probability. Mirroring suits natural photos (objects, scenes, people); use 0 for digits, "
              "text, signs and anything whose mirror image is another class.")  # fmt: skip
CHANNELS_LAST_HELP = ("Keep activations in NHWC memory layout, on the GPU and on the CPU. On a 2-core CPU a training "
                      "step took 0.55-0.98x the NCHW time for four zoo networks but 1.09-1.29x for an 8-GMAC one "
                      "(benchmarks/bench_train_speed.py --layouts): turn it off if epochs get slower.")  # fmt: skip
WORKERS_HELP = ("Loader processes reading files (default: up to 8 of the cores on CUDA, half of them on the CPU; "
                "none when the images are kept in memory). The numbers do not depend on it.")  # fmt: skip
UNIT = click.FloatRange(0, 1)
UNIT_OPEN_TOP = click.FloatRange(0, 1, max_open=True)
NON_NEGATIVE_FLOAT = click.FloatRange(min=0)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)

# What the fields of that name mean in every task's config.
SHARED = {
    "arch": Flag(
        "Architecture (the backbone, for detection and ReID): a registered name, a string or a file (or use --run)."
    ),
    "run": Flag("A search's --out folder (uses result.json).", click.Path(file_okay=False)),
    "out": Flag("Folder for checkpoints and metrics.", click.Path(file_okay=False)),
    "dialect": Flag("Parse --arch in this dialect instead of detecting it."),
    "epochs": Flag(type=POSITIVE),
    "batch_size": Flag("Global batch.", POSITIVE),
    "warmup_epochs": Flag(type=NON_NEGATIVE_FLOAT),
    "min_lr": Flag("Learning rate at the end of the cosine schedule.", NON_NEGATIVE_FLOAT),
    "ema_decay": Flag("0 = no EMA.", UNIT_OPEN_TOP),
    "grad_clip": Flag("Largest gradient norm; 0 = off.", NON_NEGATIVE_FLOAT),
    "amp": Flag("CUDA only.", click.Choice(AMP_MODES)),
    "hflip": Flag(HFLIP_HELP, UNIT),
    "channels_last": Flag(CHANNELS_LAST_HELP),
    "skip_bad_images": Flag("Leave out image files that do not decode (listed) instead of refusing to start."),
    "eval_every": Flag("Evaluate every N epochs (and after the last).", POSITIVE),
    "seed": Flag(type=SEED),
    "device": Flag("cpu, cuda or cuda:N (default: cuda if available).", DEVICE),
    "workers": Flag(WORKERS_HELP, NON_NEGATIVE),
    "resume": Flag("Continue from the last checkpoint in --out."),
    "overwrite": Flag(OVERWRITE_HELP),
}

CLASSIFICATION = {
    "data": Flag("Folder with train/ and val/ class folders, or CIFAR.", click.Path()),
    "epochs": Flag("Default: 10, or more on a small set so that the run has at least 300 steps.", POSITIVE),
    "resolution": Flag("Input side (default: the run's or model's).", click.IntRange(min=8)),
    "lr": Flag("Peak learning rate (default: 0.1 x batch/256 SGD, 1e-3 x batch/256 AdamW).", POSITIVE_FLOAT),
    "optimizer": Flag(type=click.Choice(OPTIMIZERS)),
    "weight_decay": Flag("Default: 5e-4 (SGD), 0.05 (AdamW).", NON_NEGATIVE_FLOAT),
    "label_smoothing": Flag(type=UNIT),
    "mixup": Flag("Beta alpha; 0 = off.", NON_NEGATIVE_FLOAT),
    "cutmix": Flag("Beta alpha; 0 = off.", NON_NEGATIVE_FLOAT),
    "data_cache": Flag(
        "Keep the decoded images in memory (on the GPU when training there) and augment them a batch "
        "at a time: auto = when they fit in a quarter of the RAM; off = read the files every epoch.",
        click.Choice(CACHE_MODES),
    ),
    "teacher": Flag("Distil from a training --out folder, a model.safetensors, or ARCH."),
    "teacher_weights": Flag("Weights of a teacher given as ARCH.", click.Path(dir_okay=False)),
    "kd_alpha": Flag("Weight of the distillation (KL) term.", UNIT),
    "kd_temperature": Flag(type=POSITIVE_FLOAT),
    "kd_feature_weight": Flag(type=NON_NEGATIVE_FLOAT),
}

LONGTAIL = {
    **CLASSIFICATION,
    "method": Flag("Recipe.", click.Choice(LONGTAIL_METHODS)),
    "imbalance_factor": Flag("Train on a long-tailed subset (n_max/n_min).", click.FloatRange(min=1)),
    "subset_seed": Flag("Seed of the long-tailed subset.", SEED),
    "crt_epochs": Flag("cRT classifier epochs (default: epochs/10).", POSITIVE),
    "tau": Flag("tau-normalisation exponent.", NON_NEGATIVE_FLOAT),
    "la_tau": Flag("Logit adjustment's tau.", NON_NEGATIVE_FLOAT),
    "cb_beta": Flag("Class-balanced loss's beta.", UNIT_OPEN_TOP),
    "dive_temperature": Flag(type=POSITIVE_FLOAT),
    "dive_power": Flag(type=click.FloatRange(0, 1, min_open=True)),
    "many_threshold": Flag("Many-shot: > N.", NON_NEGATIVE),
    "few_threshold": Flag("Few-shot: < N.", NON_NEGATIVE),
}

DETECTION = {
    "data": Flag("COCO folder: annotations/instances_{train,val}*.json.", click.Path()),
    "resolution": Flag(
        "Shorter image side (default: the --run's search resolution, else the training images' median "
        "shorter side, at most 800: images are not scaled up).",
        click.IntRange(min=32),
    ),
    "max_size": Flag("Longer side cap (default: resolution x 1333/800).", click.IntRange(min=32)),
    "lr": Flag("Peak learning rate (default: 2e-3 x sqrt(batch/16) AdamW, 0.01 x batch/16 SGD).", POSITIVE_FLOAT),
    "optimizer": Flag(type=click.Choice(DETECTION_OPTIMIZERS)),
    "weight_decay": Flag("Default: 0.05 (AdamW), 1e-4 (SGD).", NON_NEGATIVE_FLOAT),
    "fpn_channels": Flag("Multiple of 8.", click.IntRange(min=8)),
    "head_convs": Flag("Convs per head tower.", POSITIVE),
    "score_thresh": Flag(type=UNIT_OPEN_TOP),
    "nms_thresh": Flag(type=click.FloatRange(0, 1, min_open=True)),
    "detections_per_img": Flag(type=POSITIVE),
    "backbone_weights": Flag("Start from a classification --out folder's weights.", click.Path()),
    "skip_bad_boxes": Flag("Drop (and count) degenerate or out-of-image boxes."),
    "export_onnx": Flag("Write OUT/detector.onnx.", decls=("--onnx/--no-onnx",)),
    "onnx_exporter": Flag(type=click.Choice(ONNX_EXPORTERS)),
}

REID = {
    "data": Flag("Market-1501 layout: bounding_box_train/, query/, bounding_box_test/.", click.Path()),
    "p": Flag("P: identities per batch (per process).", click.IntRange(min=2), ("--ids-per-batch", "-P")),
    "k": Flag("K: images per identity in a batch.", click.IntRange(min=2), ("--images-per-id", "-K")),
    "height": Flag("Input height.", click.IntRange(min=8)),
    "width": Flag("Input width.", click.IntRange(min=8)),
    "lr": Flag(
        "Peak learning rate (default: (P*K)/64 x 3.5e-3 for Adam from scratch, 3.5e-4 with --pretrained, "
        "0.05 for SGD).",
        POSITIVE_FLOAT,
    ),
    "optimizer": Flag(type=click.Choice(REID_OPTIMIZERS)),
    "weight_decay": Flag(type=NON_NEGATIVE_FLOAT),
    "label_smoothing": Flag(type=UNIT_OPEN_TOP),
    "margin": Flag("Triplet margin.", NON_NEGATIVE_FLOAT),
    "soft_margin": Flag("Triplet loss log(1 + exp(d_ap - d_an)) instead of a margin."),
    "id_weight": Flag(type=NON_NEGATIVE_FLOAT),
    "triplet_weight": Flag(type=NON_NEGATIVE_FLOAT),
    "pad": Flag("Pad-and-crop pixels (default: 10 at height 256, scaled).", NON_NEGATIVE),
    "erasing": Flag("Random-erasing probability.", UNIT),
    "neck": Flag("Embed with the BNNeck's output (after) or its input (before).", click.Choice(REID_NECKS)),
    "metric": Flag(type=click.Choice(REID_METRICS)),
    "rerank": Flag("Also report k-reciprocal re-ranked figures (last epoch)."),
    "k1": Flag("Re-ranking k1.", POSITIVE),
    "k2": Flag("Re-ranking k2.", POSITIVE),
    "lambda_value": Flag("Re-ranking weight of the original distance.", UNIT, ("--lambda",)),
    "pretrained": Flag("Backbone weights: a training --out folder or .safetensors.", click.Path()),
    "eval_batch_size": Flag(type=POSITIVE),
}


@click.group("train")
def train_group() -> None:
    """Train a network found by a search (or any architecture) on a dataset."""


def _echo_skipped(out: str, metrics: dict, shown: int = 20) -> None:
    """List the image files a --skip-bad-images run left out (all of them are in OUT/metrics.json)."""
    skipped = metrics.get("skipped_images") or []
    if skipped:
        click.echo(f"left out {len(skipped)} image(s) that do not decode (all listed in {out}/metrics.json):", err=True)
        for image in skipped[:shown]:
            click.echo(f"  {image['path']}: {image['problem']}", err=True)
        if len(skipped) > shown:
            click.echo(f"  and {len(skipped) - shown} more", err=True)


def _train_with_progress(train, config, describe: Callable[[dict], str]) -> dict:
    """Run `train(config, on_step=..., on_epoch=...)` with a progress bar per epoch and, after each
    epoch, a line `epoch N<describe(record)>`; returns the trainer's metrics."""
    bar = contextlib.ExitStack()

    seen: dict[str, Any] = {}

    def speed() -> str:
        info = seen.get("info")
        return "" if info is None else f"{info.images_per_s:,.0f} img/s, {info.data_wait:.0%} waiting for data"

    def on_step(epoch: int, step: int, steps: int, info: Any) -> None:
        seen["info"] = info
        if step == 1:  # one progress bar per epoch
            bar.close()
            bar.advance = bar.enter_context(progress(steps, f"epoch {epoch}/{info.epochs}", speed))
        bar.advance(step)
        if step == steps:
            bar.close()

    def on_epoch(r: dict) -> None:
        rate = (f", {r['images_per_s']:,.0f} img/s, {r['data_wait']:.0%} waiting for data"
                if "images_per_s" in r else "")  # fmt: skip
        click.echo(f"epoch {r['epoch']}{describe(r)}  ({r['seconds']:.0f} s{rate})", err=True)

    with bar:
        return train(config, on_step=on_step, on_epoch=on_epoch)


def _classification_epoch(r: dict) -> str:
    ema = f"  ema top-1 {r['ema_top1']:.2f}" if r["ema_top1"] is not None else ""
    stage = " (classifier re-training)" if r.get("stage") == 2 else ""
    return f"{stage}: loss {r['train_loss']:.4f}  top-1 {r['top1']:.2f}{ema}"


@train_group.command("classification")
@config_options(TrainConfig, CLASSIFICATION, SHARED)
@one_line_errors
def train_classification_command(**options) -> None:
    """Train ARCH on an image-classification dataset; checkpoints and metrics go to --out."""
    from zennas.train.classification import train_classification

    config = TrainConfig(**options)
    started = time.monotonic()
    metrics = _train_with_progress(train_classification, config, _classification_epoch)
    _echo_skipped(config.out, metrics)
    click.echo(
        f"{config.out}: top-1 {metrics['top1']:.2f} %  top-5 {metrics['top5']:.2f} % ({metrics['reported']} weights) "
        f"after {metrics['epochs']} epochs in {time.monotonic() - started:.0f} s"
    )


@train_group.command("longtail")
@config_options(LongtailConfig, LONGTAIL, SHARED)
@one_line_errors
def train_longtail_command(**options) -> None:
    """Train ARCH on long-tailed data with a re-balancing METHOD; reports many/medium/few-shot accuracy."""
    from zennas.train.classification import train_classification

    config = LongtailConfig(**options)
    started = time.monotonic()
    m = _train_with_progress(train_classification, config, _classification_epoch)
    _echo_skipped(config.out, m)

    def group(name: str) -> str:
        return "n/a" if m[name] is None else f"{m[name]:.2f}"

    click.echo(
        f"{config.out}: {m['method']}: top-1 {m['top1']:.2f} %  balanced {m['balanced_top1']:.2f} %  many "
        f"{group('many')}  medium {group('medium')}  few {group('few')} (imbalance {m['imbalance']:.0f}) after "
        f"{m['epochs']} epochs in {time.monotonic() - started:.0f} s"
    )


@train_group.command("detection")
@config_options(DetectionConfig, DETECTION, SHARED)
@one_line_errors
def train_detection_command(**options) -> None:
    """Train an FCOS detector (FPN on C3-C5) on a COCO dataset; COCO mAP and detector.onnx go to --out."""
    from zennas.train.detection import train_detection

    config = DetectionConfig(**options)
    started = time.monotonic()

    def describe(r: dict) -> str:
        scores = f"  mAP {r['map']:.3f}  mAP@0.5 {r['map_50']:.3f}" if r["map"] is not None else ""
        return f": loss {r['train_loss']:.4f}{scores}"

    m = _train_with_progress(train_detection, config, describe)
    onnx = f"; {m['onnx']['path']} (max rel. error {m['onnx']['max_rel_error']:.1e})" if "onnx" in m else ""
    click.echo(
        f"{config.out}: mAP {m['map']:.3f}  mAP@0.5 {m['map_50']:.3f}  mAP@0.75 {m['map_75']:.3f} ({m['reported']} "
        f"weights) after {m['epochs']} epochs in {time.monotonic() - started:.0f} s{onnx}"
    )


@train_group.command("reid")
@config_options(ReidConfig, REID, SHARED)
@one_line_errors
def train_reid_command(**options) -> None:
    """Train a ReID embedding (BNNeck, ID + triplet loss, P x K batches) on a Market-1501-layout folder.

    Reports CMC rank-1/5/10 and mAP in percent (Market-1501 protocol) in --out/metrics.json.
    """
    from zennas.train.reid import train_reid

    config = ReidConfig(**options)
    started = time.monotonic()

    def describe(r: dict) -> str:
        scores = f"  rank-1 {r['rank1']:.2f}  mAP {r['map']:.2f}" if "rank1" in r else ""
        return f": loss {r['train_loss']:.4f}{scores}"

    m = _train_with_progress(train_reid, config, describe)
    _echo_skipped(config.out, m)
    rerank = f"; re-ranked rank-1 {m['rerank_rank1']:.2f} %  mAP {m['rerank_map']:.2f} %" if config.rerank else ""
    click.echo(
        f"{config.out}: rank-1 {m['rank1']:.2f} %  rank-5 {m['rank5']:.2f} %  mAP {m['map']:.2f} % "
        f"(random ranking: {m['chance_rank1']:.2f} % / {m['chance_map']:.2f} %){rerank} after {m['epochs']} epochs "
        f"in {time.monotonic() - started:.0f} s"
    )


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Folder with val/ class folders (or CIFAR).")
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option(
    "--plot", "plot_path", help="Confusion-matrix PNG (default: confusion_matrix.png in the checkpoint folder)."
)
@json_option()
@one_line_errors
def eval_command(checkpoint, data, batch_size, device, plot_path, as_json) -> None:
    """Accuracy of trained weights (a training --out folder or its model.safetensors) on val/."""
    from pathlib import Path

    from zennas.train.evaluate import evaluate_checkpoint

    if plot_path is None:
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        plot_path = folder / "confusion_matrix.png"
    result = evaluate_checkpoint(checkpoint, data, batch_size=batch_size, device=device, plot=plot_path)
    if as_json:
        return echo_json(result)
    click.echo(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['images']} images; "
               f"confusion matrix: {result['plot']}")  # fmt: skip
