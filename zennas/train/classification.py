"""Image-classification training: the standard recipe, distillation, exact resume and DDP.

Recipe: SGD (Nesterov, momentum 0.9) or AdamW without weight decay on norms and biases; linear
warm-up then cosine decay, set per step as a pure function of the step (no scheduler state);
label smoothing; mixup/cutmix; an EMA of the weights (both evaluated, the EMA's figures reported);
AMP only on CUDA; channels_last (NHWC) on every device; optional gradient clipping; optional distillation from a
teacher (KL on softened logits plus MSE between pre-pool feature maps, as Zen-NAS trains its nets).

Exact resume: every random draw of epoch E (shuffling, augmentation, mixup) comes from generators
seeded with (seed, E, rank), and the checkpoint written after each epoch holds the weights, the
EMA, the optimizer and the AMP scaler. So a run interrupted after any epoch and resumed with the
same settings ends with the same weights and metrics as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError
from zennas.io import atomic_write_json, atomic_write_text
from zennas.train.checkpoint import SIDECAR, load_checkpoint, load_weights, save_checkpoint, save_weights
from zennas.train.core import (
    AMP_DTYPES,
    DistInfo,
    EpochHook,
    StepHook,
    config_settings,
    param_groups,
    resume_point,
    run_on_ranks,
    training_run,
)
from zennas.train.data import load_classification_data, screen_folder_images
from zennas.train.loading import (
    CACHE_MODES,
    MemoryLoader,
    TensorAugment,
    Timed,
    default_workers,
    feed,
    keep_decoded,
    plan_cache,
    step_info,
    stored_side,
    throughput,
)
from zennas.train.longtail import (
    METHODS,
    PRIOR_SHIFTED,
    STAGE1_SAMPLING,
    BilateralNetwork,
    EpochSampler,
    bbn_alpha,
    class_balanced_weights,
    class_counts,
    flattened_teacher,
    longtail_metrics,
    longtail_subset,
    reset_classifier_,
    sample_weights,
    soft_cross_entropy,
    tau_normalize_,
)
from zennas.train.memory import check_memory, training_values

OPTIMIZERS = ("sgd", "adamw")
# Settings that may differ between an interrupted run and its resumption (they do not change results).
_RESUME_FREE = ("out", "resume", "overwrite", "device", "workers")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a classification run (None = derived: see `train_classification`)."""

    data: str
    out: str
    arch: str | None = None
    run: str | None = None  # a search's --out folder: arch, dialect and resolution from result.json
    dialect: str | None = None
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
        if (self.arch is None) == (self.run is None):
            raise ConfigError("give exactly one of --arch ARCH or --run DIR (a search's --out folder)")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.amp not in (*AMP_DTYPES, "off"):
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

    def settings(self) -> dict[str, Any]:
        """The settings that fix the result (JSON-able), as stored in checkpoints."""
        return config_settings(self, _RESUME_FREE)


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
        if self.method not in METHODS:
            raise ConfigError(f"unknown long-tail method {self.method!r}; choose one of {', '.join(METHODS)}")
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


# ----------------------------------------------------------------------------------------------
# Pieces of the recipe


def lr_at(step: int, *, total: int, warmup: int, base: float, minimum: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from `base` to `minimum` at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * min(1.0, progress)))


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot labels with label smoothing: [B] -> [B, num_classes]."""
    off = smoothing / num_classes
    y = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return y.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, *, mixup: float, cutmix: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (half the batches each when both are on) with the batch reversed as partner."""
    if mixup <= 0 and cutmix <= 0:
        return x, y
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box was clipped at the border
    else:
        x = lam * x + (1 - lam) * x.flip(0)
    return x, lam * y + (1 - lam) * y.flip(0)


class ModelEma:
    """Exponential moving average of a model's weights; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self._pairs: tuple[nn.Module, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]
        self._pairs = None  # type: ignore[assignment]

    def _tensors(self, model: nn.Module):
        """(model, EMA floats, model floats, EMA others, model others), gathered once per model."""
        if self._pairs is None or self._pairs[0] is not model:
            ema, live = self.module.state_dict().values(), model.state_dict().values()
            pairs = list(zip(ema, live, strict=True))
            floats = [(e, v) for e, v in pairs if e.dtype.is_floating_point]
            others = [(e, v) for e, v in pairs if not e.dtype.is_floating_point]
            self._pairs = (model, [e for e, _ in floats], [v for _, v in floats], [e for e, _ in others],
                           [v for _, v in others])  # fmt: skip
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend in `model`; the decay ramps up over the first steps so short runs still track."""
        decay = min(self.decay, (1 + step) / (10 + step))
        _, ema_f, live_f, ema_o, live_o = self._tensors(model)
        torch._foreach_lerp_(ema_f, live_f, 1 - decay)  # ema + (1 - decay) (v - ema)
        for e, v in zip(ema_o, live_o, strict=True):
            e.copy_(v)


class _Student(nn.Module):
    """The network plus the distillation adapter; forward -> (logits [B, K], features [B, C', H, W])."""

    def __init__(self, net: nn.Module, adapter: nn.Module | None):
        super().__init__()
        self.net = net
        self.adapter = adapter

    def forward(self, x: torch.Tensor, *extra: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.adapter is None:
            return self.net(x, *extra), None
        features = self.net.forward_features(x)  # [B, C, H, W]
        return self.net.head(features), self.adapter(features)


def _has_features(net: nn.Module) -> bool:
    return hasattr(net, "forward_features") and getattr(net, "head", None) is not None


# ----------------------------------------------------------------------------------------------
# Architecture, teacher and devices


def resolve_architecture(config: TrainConfig) -> tuple[Any, Any, int, bool | None]:
    """(spec, entry, resolution, use_se) from --arch or --run."""
    from zennas.api import settings_for
    from zennas.models import resolve_arch

    if config.run is not None:
        path = Path(config.run) / "result.json"
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            text, dialect = result["arch"], result.get("dialect")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"--run {config.run!r} holds no readable result.json with an arch ({error})") from None
        spec, entry = resolve_arch(text, config.dialect or dialect)
        resolution = config.resolution or result.get("resolution")
    else:
        spec, entry = resolve_arch(config.arch, config.dialect)
        resolution = config.resolution
    resolution, _, use_se = settings_for(spec, entry, resolution)
    return spec, entry, resolution, use_se


def _build(spec: Any, num_classes: int, use_se: bool | None) -> nn.Module:
    from zennas.build import BuildOptions, build

    return build(spec, BuildOptions(num_classes=num_classes, use_se=use_se))


def load_teacher(teacher: str, weights: str | None, num_classes: int) -> tuple[nn.Module, str]:
    """A frozen teacher from a training --out folder, a model.safetensors (+ .json) or ARCH + weights."""
    from zennas.api import settings_for
    from zennas.models import resolve_arch

    path = Path(teacher)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            text, dialect, use_se = meta["arch"], meta["dialect"], meta.get("use_se")
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(
                f"teacher {teacher!r}: no readable {sidecar.name} next to the weights; give the training --out folder"
            ) from None
        weights, (spec, _) = str(path), resolve_arch(text, dialect)
        head = meta.get("head", "linear")
    else:
        if weights is None:
            raise ConfigError(f"teacher {teacher!r} has no weights; pass --teacher-weights FILE.safetensors")
        spec, entry = resolve_arch(teacher)
        use_se, head = settings_for(spec, entry)[2], "linear"
    net = build_trained(spec, num_classes, use_se, head)
    load_weights(weights, net, spec.canonical)
    if not _has_features(net):
        raise ConfigError(f"teacher {teacher!r} does not expose pre-pool features; distillation needs a zennas network")
    return net.eval().requires_grad_(False), spec.canonical


# ----------------------------------------------------------------------------------------------
# The loop


@torch.no_grad()
def evaluate(
    net: nn.Module, loader: Any, device: torch.device, autocast: Any, channels_last: bool, *,
    predictions: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Top-1/top-5 accuracy (percent) and mean cross-entropy of `net` on `loader`.

    With `predictions`, also the arg-max class and the label of every image (`predicted`, `targets`).
    """
    net.eval()
    correct1 = correct5 = seen = 0
    loss = 0.0
    predicted: list[int] = []
    targets: list[int] = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = net(x).float()  # [B, K]
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # [B, 5]
        hit = top == y[:, None]
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        seen += y.shape[0]
        if predictions:
            predicted += top[:, 0].tolist()
            targets += y.tolist()
    result = {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen, "loss": loss / seen}
    if predictions:
        result.update(predicted=predicted, targets=targets)
    return result


DEFAULT_EPOCHS = 10
# Fewer steps than this left the default recipe far from what it reaches (benchmarks/RESULTS.md,
# bench_train_defaults --part classification: 450 digits, batch 128: 22.7 % top-1 after 30 steps, 99.3 % after 300).
MIN_STEPS = 300


def default_epochs(images: int, batch_size: int) -> int:
    """DEFAULT_EPOCHS, or as many as give MIN_STEPS steps of `batch_size` over `images` training images."""
    steps_per_epoch = max(1, images // batch_size)
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


def train_classification(
    config: TrainConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
) -> dict[str, Any]:
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json; return metrics.json's content.

    `on_step` and `on_epoch` are called on rank 0 only; `on_epoch` runs after the epoch's
    checkpoint is on disk (an exception there interrupts the run at a resumable point).
    """
    return run_on_ranks(
        config.device, lambda dist, device: _train(config, dist, device, device.type == "cuda", on_step, on_epoch)
    )


def build_trained(spec: Any, num_classes: int, use_se: bool | None, head: str = "linear") -> nn.Module:
    """The network a training run produces: the plain classifier, or BBN's bilateral head ("bbn")."""
    net = _build(spec, num_classes, use_se)
    return BilateralNetwork(net, num_classes) if head == "bbn" else net


def _targets(dataset: Any) -> np.ndarray:
    """Labels of an ImageFolder or CIFAR dataset without decoding its images."""
    return np.asarray(dataset.targets, dtype=np.int64)


def _dive_teacher(config: LongtailConfig, out: Path) -> str:
    """DiVE's teacher: the run's --teacher, or a balanced-softmax twin trained (or resumed) in OUT/teacher.

    With --overwrite the twin starts afresh too; otherwise a finished twin is reused, an interrupted
    one resumed from its checkpoint, and a missing one started."""
    if config.teacher is not None:
        return config.teacher
    folder = out / "teacher"
    if config.overwrite or not (folder / "model.safetensors").is_file():
        resume = not config.overwrite and (folder / SIDECAR).is_file()
        twin = dataclasses.replace(config, method="balanced-softmax", out=str(folder), resume=resume, teacher=None)
        train_classification(twin)
    return str(folder)


def _train(config: TrainConfig, dist: DistInfo, device: torch.device, cuda: bool, on_step, on_epoch) -> dict[str, Any]:
    from torch.utils.data import Subset

    from zennas.counting import count

    out = Path(config.out)
    main = dist.rank == 0
    lt = config if isinstance(config, LongtailConfig) else None
    method = lt.method if lt else None
    settings = config.settings()
    kind = training_run("longtail" if lt is not None else "classification")
    saved = resume_point(out, settings, config.resume, kind=kind, overwrite=config.overwrite)  # None: a fresh run
    spec, _, resolution, use_se = resolve_architecture(config)
    batch_per_rank = max(1, config.batch_size // dist.world)
    check_memory(training_values(spec, resolution, resolution, use_se), batch_per_rank, device,
                 what=f"one training step of {batch_per_rank} images of {resolution}x{resolution}",
                 lower="--resolution or --batch-size",
                 bytes_per_value=2 if cuda and config.amp != "off" else 4)  # fmt: skip
    data = load_classification_data(config.data, resolution, hflip=config.hflip)
    skipped = screen_folder_images(data, skip=config.skip_bad_images)  # before the first step, not when drawn
    num_classes = len(data.classes)
    if num_classes < 2:
        raise ConfigError(f"the dataset in {config.data!r} has {num_classes} class; classification needs at least 2")
    train_set, counts = data.train, None
    if lt is not None:
        labels = _targets(data.train)
        if lt.imbalance_factor is not None:
            keep = longtail_subset(labels, lt.imbalance_factor, seed=lt.subset_seed)
            train_set, labels = Subset(data.train, keep.tolist()), labels[keep]
        counts = class_counts(labels, num_classes)  # [C]; an empty class is an error
    if config.epochs is None:  # settings (above) keep None: a resumed run derives the same number again
        config = dataclasses.replace(config, epochs=default_epochs(len(train_set), config.batch_size))
        lt = config if lt is not None else None
    teacher_source = _dive_teacher(lt, out) if method == "dive" else config.teacher

    torch.manual_seed(config.seed)
    head = "bbn" if method == "bbn" else "linear"
    net = build_trained(spec, num_classes, use_se, head)
    if method in ("crt", "tau-norm") and not isinstance(getattr(getattr(net, "head", None), "fc", None), nn.Linear):
        raise ConfigError(f"--method {method} re-trains or re-scales a linear classifier; use a zennas network")
    teacher = adapter = None
    if teacher_source is not None:
        teacher, _ = load_teacher(teacher_source, config.teacher_weights, num_classes)
        if not _has_features(net):
            raise ConfigError("distillation needs a student that exposes pre-pool features (a zennas network)")
        if method != "dive":  # DiVE distils predictions only; Zen-NAS's recipe also mimics features
            with torch.no_grad():
                probe = torch.zeros(1, 3, resolution, resolution)
                c_student = net.eval().forward_features(probe).shape[1]
                c_teacher = teacher.forward_features(probe).shape[1]
            adapter = nn.Conv2d(c_student, c_teacher, 1, bias=False) if c_student != c_teacher else nn.Identity()
        teacher.to(device)
    channels_last = config.channels_last
    memory = torch.channels_last if channels_last else torch.contiguous_format
    student = _Student(net, adapter).to(device, memory_format=memory)
    if teacher is not None:
        teacher.to(memory_format=memory)
    ema = ModelEma(net, config.ema_decay) if config.ema_decay > 0 else None

    lr = config.lr if config.lr is not None else (0.1 if config.optimizer == "sgd" else 1e-3) * config.batch_size / 256
    wd = config.weight_decay if config.weight_decay is not None else (5e-4 if config.optimizer == "sgd" else 0.05)

    def make_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        groups = param_groups(params, wd)
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
        return torch.optim.AdamW(groups, lr=lr)

    stage1_epochs = config.epochs
    total_epochs = stage1_epochs + (lt.stage2_epochs if lt else 0)

    def freeze_for_stage2() -> torch.optim.Optimizer:
        """cRT's second stage: the backbone frozen (BatchNorm statistics too), only the classifier trains."""
        student.requires_grad_(False)
        net.head.fc.requires_grad_(True)
        return make_optimizer(list(net.head.fc.parameters()))

    start, history = 0, []
    in_stage2 = saved is not None and saved["epoch"] > stage1_epochs  # the checkpoint's optimizer is the classifier's
    optimizer = freeze_for_stage2() if in_stage2 else make_optimizer(list(student.parameters()))
    amp = cuda and config.amp != "off"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and config.amp == "fp16")

    def autocast():
        return torch.autocast("cuda", dtype=AMP_DTYPES[config.amp]) if amp else contextlib.nullcontext()

    if saved is not None:
        info = load_checkpoint(out, model=net, optimizer=optimizer, arch=spec.canonical,
                               ema=ema.module if ema else None, extra=adapter)  # fmt: skip
        if info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
        start, history = info["epoch"], info["history"]

    def wrap(module: nn.Module) -> nn.Module:
        if dist.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if cuda else None)

    model = wrap(student)

    # Pixels kept in memory (augmented a batch at a time) when they fit, else files read by workers.
    kept = plan_cache(config.data_cache, [(train_set, stored_side(resolution, train=True)),
                                          (data.val, stored_side(resolution, train=False))], device)  # fmt: skip
    workers = 0 if kept is not None else config.workers if config.workers is not None else default_workers(device)
    if kept is not None:
        train_pixels = keep_decoded(train_set, resolution, train=True, device=kept)
        val_pixels = keep_decoded(data.val, resolution, train=False, device=kept)
    streams = 0  # each training loader draws its own augmentation (BBN has two)

    def loader(sampler: Any) -> Any:
        nonlocal streams
        streams += 1
        if kept is not None:
            return MemoryLoader(train_pixels, TensorAugment(resolution, train=True, hflip=config.hflip),
                                batch_size=batch_per_rank, seed=config.seed * 7 + streams, rank=dist.rank,
                                sampler=sampler)  # fmt: skip
        return feed(train_set, batch_size=batch_per_rank, train=True, generator=loader_gen, workers=workers,
                    device=device, seed=config.seed * 7 + streams, sampler=sampler)  # fmt: skip

    def weighted(mode: str) -> EpochSampler:
        return EpochSampler(sample_weights(labels, num_classes, mode), seed=config.seed, rank=dist.rank,
                            world=dist.world)  # fmt: skip

    loader_gen = torch.Generator()
    if method in STAGE1_SAMPLING:
        train_sampler: Any = weighted(STAGE1_SAMPLING[method])
    elif dist.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        train_sampler = DistributedSampler(train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                           seed=config.seed, drop_last=True)  # fmt: skip
    else:
        train_sampler = None
    train_loader = loader(train_sampler)
    samplers = [train_sampler]
    reversed_loader = stage2_loader = None
    if method == "bbn":
        samplers.append(weighted("reversed"))
        reversed_loader = loader(samplers[-1])
    if lt is not None and lt.stage2_epochs:
        samplers.append(weighted("balanced"))
        stage2_loader = loader(samplers[-1])
    # Every rank evaluates the whole val set: exact figures without the padding DistributedSampler adds.
    if kept is not None:
        val_loader: Any = MemoryLoader(val_pixels, TensorAugment(resolution, train=False), batch_size=batch_per_rank,
                                       seed=0)  # fmt: skip
    else:
        val_loader = feed(data.val, batch_size=batch_per_rank, train=False, generator=torch.Generator(),
                          workers=workers, device=device, seed=0)  # fmt: skip
    loaders = [x for x in (train_loader, reversed_loader, stage2_loader) if x is not None]
    steps = len(train_loader)
    if steps == 0:
        raise ConfigError(
            f"train/ holds fewer images ({len(train_set)}) than one batch per process; lower --batch-size"
        )
    total, warmup = stage1_epochs * steps, round(config.warmup_epochs * steps)
    class_weights = None
    if method == "cb-reweight":
        class_weights = class_balanced_weights(counts, lt.cb_beta).to(device)
    log_prior = None
    if method in PRIOR_SHIFTED:
        tau = lt.la_tau if method == "logit-adjust" else 1.0
        log_prior = tau * torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32)).to(device)  # [C]

    def stage1_loss(logits: torch.Tensor, target: torch.Tensor, features, x: torch.Tensor) -> torch.Tensor:
        if log_prior is not None:  # logit adjustment, balanced softmax and DiVE's label term
            loss = soft_cross_entropy(logits + log_prior, target)
        else:
            loss = soft_cross_entropy(logits, target, class_weights)
        if teacher is None:
            return loss
        with torch.no_grad():
            t_features = teacher.forward_features(x)  # [B, C_teacher, H', W']
            t_logits = teacher.head(t_features).float()
        if method == "dive":  # KL to the teacher's flattened predictions at temperature T (He et al.)
            temp = lt.dive_temperature
            q = flattened_teacher(t_logits, temp, lt.dive_power)
            kl = F.kl_div(F.log_softmax(logits / temp, 1), q, reduction="batchmean") * temp**2
            return (1 - config.kd_alpha) * loss + config.kd_alpha * kl
        temp = config.kd_temperature
        kl = F.kl_div(F.log_softmax(logits / temp, 1), F.softmax(t_logits / temp, 1),
                      reduction="batchmean") * temp**2  # fmt: skip
        side = min(features.shape[-1], t_features.shape[-1])
        mimic = F.mse_loss(F.adaptive_avg_pool2d(features.float(), side),
                           F.adaptive_avg_pool2d(t_features.float(), side))  # fmt: skip
        return (1 - config.kd_alpha) * loss + config.kd_alpha * kl + config.kd_feature_weight * mimic

    base_info = {
        "arch": spec.canonical, "dialect": spec.dialect, "num_classes": num_classes, "resolution": resolution,
        "use_se": use_se, "classes": data.classes, "layout": data.layout, "settings": settings,
        "world_size": dist.world, "head": head,
    }  # fmt: skip
    if lt is not None:
        base_info.update(method=method, train_counts=counts.tolist())
    for epoch in range(start, total_epochs):
        started = time.monotonic()
        stage2 = epoch >= stage1_epochs
        if stage2 and epoch == stage1_epochs:  # cRT: keep the (EMA) backbone, re-train a fresh classifier
            if ema is not None:
                net.load_state_dict(ema.module.state_dict())
            reset_classifier_(net.head.fc, config.seed + 1)
            optimizer = freeze_for_stage2()
            ema = ModelEma(net, config.ema_decay) if ema is not None else None
            model = wrap(student)  # DDP must see which parameters still train
        # Everything random in this epoch follows from (seed, epoch, rank): resuming replays it exactly.
        torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + dist.rank)
        loader_gen.manual_seed(config.seed * 100_003 + epoch)
        for sampler in samplers:
            if sampler is not None:
                sampler.set_epoch(epoch)
        for each in loaders:
            each.set_epoch(epoch)
        mix_rng = np.random.default_rng([config.seed, epoch, dist.rank])
        if stage2:
            student.eval()  # frozen BatchNorm statistics; the linear classifier has no train mode
            batches: Any = stage2_loader
        else:
            student.train()
            batches = zip(train_loader, reversed_loader, strict=True) if reversed_loader else train_loader
        batches = Timed(batches, count=lambda b: len(b[0][1]) if isinstance(b[0], tuple | list) else len(b[1]))
        alpha = bbn_alpha(epoch, stage1_epochs)
        offset = stage1_epochs * steps if stage2 else 0  # stage 2's schedule and EMA count from its own start
        loss_sum = torch.zeros((), device=device)
        for step, batch in enumerate(batches):
            global_step = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = (
                    lr_at(global_step - offset, total=lt.stage2_epochs * steps, warmup=0, base=lr,
                          minimum=config.min_lr) if stage2
                    else lr_at(global_step, total=total, warmup=warmup, base=lr, minimum=config.min_lr)
                )  # fmt: skip
            pairs = batch if reversed_loader is not None and not stage2 else (batch,)
            inputs = []
            for x, y in pairs:  # BBN: the uniform batch, then the reversed-sampler batch
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                inputs.append(mix_batch(x, soft_targets(y, num_classes, config.label_smoothing), mix_rng,
                                        mixup=config.mixup, cutmix=config.cutmix))  # fmt: skip
            (x, target), *rest = inputs
            with autocast():
                if rest:  # BBN: one classifier on both branches, each batch's loss weighted by alpha
                    ((x_r, target_r),) = rest
                    logits = model(x, x_r, alpha)[0].float()
                    loss = alpha * soft_cross_entropy(logits, target) + (1 - alpha) * soft_cross_entropy(
                        logits, target_r
                    )
                else:
                    logits, features = model(x)  # [B, K], [B, C_teacher, H, W] or None
                    logits = logits.float()
                    loss = soft_cross_entropy(logits, target) if stage2 else stage1_loss(logits, target, features, x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(net, global_step - offset)
            loss_sum += loss.detach()
            if main and on_step is not None:
                on_step(epoch + 1, step + 1, steps, step_info(loss, batches, total_epochs))
        train_loss = float(loss_sum) / steps  # checked once per epoch: a per-step check would sync the GPU
        speed = throughput(batches)  # the training steps only, before evaluation and the checkpoint
        if not math.isfinite(train_loss):
            raise ConfigError(f"the training loss became {train_loss} in epoch {epoch + 1}; lower --lr")
        if dist.world > 1:
            import torch.distributed as td

            mean = torch.tensor([train_loss], device=device)
            td.all_reduce(mean)
            train_loss = float(mean) / dist.world
        val = evaluate(net, val_loader, device, autocast, channels_last)
        ema_val = evaluate(ema.module, val_loader, device, autocast, channels_last) if ema else None
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "top1": val["top1"],
            "top5": val["top5"],
            "ema_top1": ema_val["top1"] if ema_val else None,
            "ema_top5": ema_val["top5"] if ema_val else None,
            "seconds": time.monotonic() - started,
            **speed,
        }
        if lt is not None:
            record["stage"] = 2 if stage2 else 1
        history.append(record)
        if main:
            save_checkpoint(out, epoch=epoch + 1, model=net, optimizer=optimizer, ema=ema.module if ema else None,
                            extra=adapter, info={**base_info, "scaler": scaler.state_dict() if scaler.is_enabled()
                                                 else None, "history": history})  # fmt: skip
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            if on_epoch is not None:
                on_epoch(record)

    final = history[-1]
    key = "ema_" if ema is not None else ""
    weights = ema.module if ema is not None else net
    cx = count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    metrics = {
        "top1": final[f"{key}top1"],
        "top5": final[f"{key}top5"],
        "model_top1": final["top1"],
        "model_top5": final["top5"],
        "reported": "ema" if ema is not None else "model",
        "best_top1": max(r[f"{key}top1"] for r in history),
        "epochs": len(history),
        "train_loss": final["train_loss"],
        "params": cx.params,
        "macs": cx.macs,
        "arch": spec.canonical,
        "dialect": spec.dialect,
        "resolution": resolution,
        "num_classes": num_classes,
        "train_images": len(train_set),
        "val_images": len(data.val),
        "skipped_images": [{"path": p.path, "problem": p.problem} for p in skipped],
        "seconds": sum(r["seconds"] for r in history),
    }
    if lt is not None:
        metrics.update(_longtail_report(lt, weights, val_loader, device, autocast, channels_last, counts))
        if head == "bbn":
            metrics["trained_params"] = sum(p.numel() for p in weights.parameters())
    if main:
        sidecar = {**base_info, "weights": metrics["reported"], "top1": metrics["top1"], "top5": metrics["top5"]}
        save_weights(out / "model.safetensors", weights, sidecar)
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _longtail_report(
    lt: LongtailConfig, weights: nn.Module, val_loader: Any, device: torch.device, autocast: Any,
    channels_last: bool, counts: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """top1, top5, many/medium/few, balanced_top1 and per_class of the final weights (tau-normalised for
    tau-norm, in place: those are the weights saved), plus the method's settings."""
    report: dict[str, Any] = {}
    if lt.method == "tau-norm":
        before = evaluate(weights, val_loader, device, autocast, channels_last, predictions=True)
        report["before_tau_norm"] = {
            k: v for k, v in longtail_metrics(before["predicted"], before["targets"], counts,
                                              many=lt.many_threshold, few=lt.few_threshold).items()
            if k != "per_class"
        }  # fmt: skip
        tau_normalize_(weights.head.fc, lt.tau)
    result = evaluate(weights, val_loader, device, autocast, channels_last, predictions=True)
    groups = longtail_metrics(result["predicted"], result["targets"], counts, many=lt.many_threshold,
                              few=lt.few_threshold)  # fmt: skip
    report.update(groups, top5=result["top5"])
    report.update(
        method=lt.method, imbalance_factor=lt.imbalance_factor, train_counts=counts.tolist(),
        imbalance=float(counts.max() / counts.min()),
        shot_thresholds={"many": f"> {lt.many_threshold}", "few": f"< {lt.few_threshold}"},
    )  # fmt: skip
    return report


__all__ = [
    "LongtailConfig", "TrainConfig", "build_trained", "evaluate", "load_teacher", "lr_at", "mix_batch", "soft_targets",
    "train_classification",
]  # fmt: skip
