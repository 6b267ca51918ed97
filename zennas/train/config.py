"""Every setting of a training run, as frozen dataclasses that check themselves (no torch here).

A config is all a run needs to be reproduced: checkpoints store its `settings()` and a resumed run
must match them. The command line is generated from these fields (zennas.cli.fields), so a default
lives here only. None means "derived" (see the task's trainer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from zennas.errors import ConfigError

# The `zennas train longtail --method` names; zennas.train.methods.RECIPES holds one recipe per name.
LONGTAIL_METHODS = (
    "ce", "cb-resample", "sqrt-resample", "cb-reweight", "logit-adjust", "balanced-softmax", "crt", "tau-norm", "bbn",
    "dive",
)  # fmt: skip
AMP_MODES = ("bf16", "fp16", "off")  # CUDA autocast dtypes (zennas.train.core.AMP_DTYPES) or none
CACHE_MODES = ("auto", "memory", "off")  # zennas.train.loading: decoded images kept in memory or read every epoch
OPTIMIZERS = ("sgd", "adamw")
DETECTION_OPTIMIZERS = ("sgd", "adamw")
REID_OPTIMIZERS = ("adam", "adamw", "sgd")
REID_METRICS = ("cosine", "euclidean")
REID_NECKS = ("after", "before")
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")  # zennas.export.EXPORTERS (a test checks they agree)


def config_settings(config: Any, resume_free: tuple[str, ...]) -> dict[str, Any]:
    """A config dataclass's fields that fix the result (all but `resume_free`), as checkpoints store them."""
    free = set(resume_free)
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in free}


@dataclass(frozen=True)
class RunConfig:
    """The settings every training task starts with: its data, its --out folder and the network to train.

    A task's config adds its own fields after these and names in `resume_free` the fields a resumed
    run may change (they do not change results); `settings()` is the rest, as checkpoints store it.
    """

    data: str
    out: str
    arch: str | None = None
    run: str | None = None  # a search's --out folder: arch and dialect (and resolution, where the task has one)
    dialect: str | None = None
    resume_free: ClassVar[tuple[str, ...]] = ("out", "resume", "overwrite", "device", "workers")

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.run is None):
            raise ConfigError("give exactly one of --arch ARCH or --run DIR (a search's --out folder)")

    def settings(self) -> dict[str, Any]:
        """The settings that fix the result (JSON-able), as stored in checkpoints."""
        return config_settings(self, self.resume_free)


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Every setting of a classification run (None = derived: see `train_classification`)."""

    epochs: int | None = None  # default: DEFAULT_EPOCHS, more on a small set so the run has MIN_STEPS steps
    batch_size: int = 128
    resolution: int | None = None
    lr: float | None = None  # default: 0.1 x batch/256 for SGD, 1e-3 x batch/256 for AdamW
    optimizer: str = "sgd"
    weight_decay: float | None = None  # default: 5e-4 for SGD, 0.05 for AdamW
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    ema_decay: float = 0.9998  # 0 = no EMA
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: str = "bf16"  # "bf16", "fp16" or "off"; CUDA only
    channels_last: bool = True  # NHWC; faster on GPUs and, for most networks, on CPUs (bench_train_speed)
    hflip: float = 0.5  # mirror probability: 0 for digits, text, or anything whose mirror image is another class
    data_cache: str = "auto"  # "auto": decoded pixels kept in memory when they fit a quarter of RAM; "memory"; "off"
    skip_bad_images: bool = False  # leave out (and list) image files that do not decode instead of failing
    teacher: str | None = None  # a training --out folder, a weights .safetensors with its .json, or an ARCH
    teacher_weights: str | None = None  # weights for a teacher given as ARCH
    kd_alpha: float = 0.5  # weight of the KL term (1 - kd_alpha on the label loss)
    kd_temperature: float = 4.0
    kd_feature_weight: float = 1.0
    seed: int = 0
    device: str | None = None  # default: cuda if available, else cpu
    workers: int | None = None  # loader processes for files (None: zennas.train.loading.default_workers)
    resume: bool = False
    overwrite: bool = False  # start afresh in a non-empty out (zennas.io.claim_output_folder)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown AMP mode {self.amp!r}; choose bf16, fp16 or off")
        if self.data_cache not in CACHE_MODES:
            raise ConfigError(f"unknown data cache {self.data_cache!r}; choose one of {', '.join(CACHE_MODES)}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {self.workers}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"resolution must be at least 8 pixels, got {self.resolution}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.kd_alpha <= 1 or self.kd_temperature <= 0:
            raise ConfigError("kd_alpha must be in [0, 1] and kd_temperature positive")
        if min(self.mixup, self.cutmix, self.label_smoothing, self.grad_clip, self.warmup_epochs, self.min_lr) < 0:
            raise ConfigError("mixup, cutmix, label_smoothing, grad_clip, warmup_epochs and min_lr must be >= 0")


@dataclass(frozen=True)
class LongtailConfig(TrainConfig):
    """A classification run with a long-tail `method` (see zennas.train.longtail for the definitions).

    imbalance_factor: train on a seeded long-tailed subset of train/ (class i keeps
        n_max * IF^(-i/(C-1)) images; `subset_seed` draws it); None = train/ as it is.
    crt_epochs: classifier re-training epochs of cRT after `epochs` (default: epochs / 10, at least 1).
    tau: tau-normalisation's exponent. la_tau: logit adjustment's tau. cb_beta: Cui et al.'s beta.
    dive_temperature, dive_power: DiVE's softening and flattening; kd_alpha weighs its KL term. Without
        --teacher, DiVE first trains a balanced-softmax teacher of the same architecture in OUT/teacher.
    many_threshold, few_threshold: many-shot classes have more training images than the first,
        few-shot classes fewer than the second (Liu et al.'s 100 and 20 by default).
    """

    method: str = "ce"
    imbalance_factor: float | None = None
    subset_seed: int = 0
    crt_epochs: int | None = None
    tau: float = 1.0
    la_tau: float = 1.0
    cb_beta: float = 0.9999
    dive_temperature: float = 3.0
    dive_power: float = 0.5
    many_threshold: int = 100
    few_threshold: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in LONGTAIL_METHODS:
            raise ConfigError(f"unknown long-tail method {self.method!r}; choose one of {', '.join(LONGTAIL_METHODS)}")
        if self.teacher is not None and self.method != "dive":
            raise ConfigError(f"--teacher is used by --method dive only, not {self.method}")
        if self.imbalance_factor is not None and not 1 <= self.imbalance_factor < math.inf:
            raise ConfigError(f"imbalance factor must be a number >= 1, got {self.imbalance_factor}")
        if self.crt_epochs is not None and self.crt_epochs < 1:
            raise ConfigError(f"crt_epochs must be at least 1, got {self.crt_epochs}")
        if not 0 <= self.cb_beta < 1:
            raise ConfigError(f"cb_beta must lie in [0, 1), got {self.cb_beta}")
        if self.dive_temperature <= 0 or not 0 < self.dive_power <= 1:
            raise ConfigError("dive_temperature must be positive and dive_power in (0, 1]")
        if self.few_threshold > self.many_threshold:
            raise ConfigError(f"few_threshold {self.few_threshold} exceeds many_threshold {self.many_threshold}")

    @property
    def stage2_epochs(self) -> int:
        """Epochs of cRT's classifier re-training (0 for every other method)."""
        if self.method != "crt":
            return 0
        if self.crt_epochs is not None:
            return self.crt_epochs
        if self.epochs is None:
            raise ValueError("stage2_epochs of a config whose epochs are not resolved yet (default_epochs)")
        return max(1, math.ceil(self.epochs / 10))


@dataclass(frozen=True)
class DetectionConfig(RunConfig):
    """Every setting of a detection run (None = derived: see `train_detection`)."""

    epochs: int = 12
    batch_size: int = 16
    resolution: int | None = None  # shorter image side; default: the run's, else the images' own (native_side)
    max_size: int | None = None  # longer side cap; default: resolution x 1333 / 800
    # lr default: 2e-3 x sqrt(batch/16) for AdamW (Adam's square-root batch rule), 0.01 x batch/16 for SGD.
    # AdamW is the default because short runs on small sets learn faster with it: in 740 steps on digits
    # pasted on 96-px canvases, input 96 px (benchmarks/bench_train_defaults.py), AdamW 2e-3 reached
    # mAP@0.5 0.90, SGD 0.01 0.75, and AdamW 4e-3 trailed half-way. Warm-up stays 1 epoch (there, the
    # same 37 steps as 5 % of the run).
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.05 for AdamW, 1e-4 for SGD
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    ema_decay: float = 0.9998  # 0 = no EMA
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: str = "bf16"  # CUDA only
    hflip: float = 0.5
    fpn_channels: int = 128
    head_convs: int = 4
    score_thresh: float = 0.05  # COCO evaluation keeps low-confidence detections
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    backbone_weights: str | None = None  # a classification --out folder or its model.safetensors
    skip_bad_boxes: bool = False  # drop (and count) degenerate or out-of-image boxes instead of failing
    eval_every: int = 1  # epochs between evaluations; the last epoch is always evaluated
    seed: int = 0
    device: str | None = None
    workers: int | None = None  # loader processes (None: zennas.train.loading.default_workers)
    resume: bool = False
    overwrite: bool = False  # start afresh in a non-empty out (zennas.io.claim_output_folder)
    export_onnx: bool = True
    onnx_exporter: str = "auto"  # see zennas.export.export_onnx: "auto" (dynamo, else TorchScript), "dynamo", ...
    resume_free: ClassVar[tuple[str, ...]] = (*RunConfig.resume_free, "export_onnx", "onnx_exporter")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.onnx_exporter not in ONNX_EXPORTERS:
            raise ConfigError(
                f"unknown ONNX exporter {self.onnx_exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}"
            )
        if self.optimizer not in DETECTION_OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(DETECTION_OPTIMIZERS)}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown AMP mode {self.amp!r}; choose bf16, fp16 or off")
        for name in ("epochs", "batch_size", "head_convs", "detections_per_img", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 32:
            raise ConfigError(f"resolution must be at least 32 pixels (the stride of C5), got {self.resolution}")
        if self.max_size is not None and self.resolution is not None and self.max_size < self.resolution:
            raise ConfigError(f"max_size ({self.max_size}) must be at least resolution ({self.resolution})")
        if self.fpn_channels < 8 or self.fpn_channels % 8:
            raise ConfigError(f"fpn_channels must be a positive multiple of 8, got {self.fpn_channels}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0 <= self.score_thresh < 1 and 0 < self.nms_thresh <= 1 and 0 <= self.hflip <= 1):
            raise ConfigError("score_thresh must be in [0, 1), nms_thresh in (0, 1] and hflip in [0, 1]")
        if min(self.grad_clip, self.warmup_epochs, self.min_lr) < 0:
            raise ConfigError("grad_clip, warmup_epochs and min_lr must be >= 0")


@dataclass(frozen=True)
class ReidConfig(RunConfig):
    """Every setting of a ReID run (None = derived: see `train_reid`).

    p, k: identities per batch and images per identity (per process under torchrun).
    height, width: input size; 256 x 128 is the usual Market-1501 setting.
    lr: default (P*K)/64 x: for Adam/AdamW 3.5e-3 from scratch and 3.5e-4 (BoT's, for an ImageNet-trained
        backbone) with `pretrained`; 0.05 for SGD. From scratch, 3.5e-4 was measured to learn too slowly
        (bench_train_defaults --part reid: rank-1 31.8 % against 59.8 % at 3.5e-3 after 1,000 steps).
    margin: triplet margin; soft_margin replaces it by log(1 + exp(d_ap - d_an)).
    neck: embed with f_i ("after" the BNNeck) or f_t ("before"); metric: "cosine" ranks
        L2-normalised embeddings, "euclidean" the raw ones.
    eval_every: evaluate every N epochs (the last epoch always); rerank: also report k-reciprocal
        re-ranked figures (k1, k2, lambda_value) at the last epoch.
    pretrained: backbone weights from a classification or ReID run (its --out folder or
        model.safetensors; the classifier and the neck are ignored).
    """

    epochs: int = 60
    p: int = 16
    k: int = 4
    height: int = 256
    width: int = 128
    lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    margin: float = 0.3
    soft_margin: bool = False
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    hflip: float = 0.5
    pad: int | None = None  # default: 10 pixels at height 256, scaled
    erasing: float = 0.5
    skip_bad_images: bool = False  # leave out (and list) image files that do not decode instead of failing
    neck: str = "after"
    metric: str = "cosine"
    eval_every: int = 10
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    ema_decay: float = 0.0  # 0 = no EMA
    grad_clip: float = 0.0
    amp: str = "bf16"  # CUDA only
    channels_last: bool = True  # NHWC on every device
    pretrained: str | None = None
    eval_batch_size: int = 128
    seed: int = 0
    device: str | None = None
    workers: int | None = None  # loader processes (None: zennas.train.loading.default_workers)
    resume: bool = False
    overwrite: bool = False  # start afresh in a non-empty out (zennas.io.claim_output_folder)
    resume_free: ClassVar[tuple[str, ...]] = (*RunConfig.resume_free, "eval_batch_size")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("optimizer", REID_OPTIMIZERS), ("metric", REID_METRICS), ("neck", REID_NECKS),
                              ("amp", AMP_MODES)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("epochs", "eval_every", "eval_batch_size", "k1", "k2"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.p < 2 or self.k < 2:
            raise ConfigError(f"P x K batches need P >= 2 identities and K >= 2 images each, got {self.p} and {self.k}")
        if min(self.height, self.width) < 8:
            raise ConfigError(f"height and width must be at least 8 pixels, got {self.height} x {self.width}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.lambda_value <= 1:
            raise ConfigError("ema_decay must be in [0, 1) and lambda_value in [0, 1]")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.hflip <= 1 or not 0 <= self.erasing <= 1:
            raise ConfigError("label_smoothing must be in [0, 1), hflip and erasing in [0, 1]")
        if min(self.margin, self.id_weight, self.triplet_weight, self.grad_clip, self.warmup_epochs, self.min_lr,
               self.weight_decay, self.pad or 0) < 0:  # fmt: skip
            raise ConfigError("margin, loss weights, grad_clip, warmup_epochs, min_lr, weight_decay, pad must be >= 0")


__all__ = [
    "AMP_MODES", "CACHE_MODES", "DETECTION_OPTIMIZERS", "LONGTAIL_METHODS", "ONNX_EXPORTERS", "OPTIMIZERS",
    "REID_METRICS", "REID_NECKS", "REID_OPTIMIZERS", "DetectionConfig", "LongtailConfig", "ReidConfig", "RunConfig",
    "TrainConfig", "config_settings",
]  # fmt: skip
