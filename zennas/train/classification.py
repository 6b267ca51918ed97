"""Image-classification training: the standard recipe, distillation and the long-tail methods, as a task
of the one training loop (zennas.train.loop: schedule, AMP, EMA, DDP, checkpoints, exact resume).

Recipe: SGD (Nesterov, momentum 0.9) or AdamW without weight decay on norms and biases; linear
warm-up then cosine decay, set per step as a pure function of the step (no scheduler state);
label smoothing; mixup/cutmix; an EMA of the weights (both evaluated, the EMA's figures reported);
AMP only on CUDA; channels_last (NHWC) on every device; optional gradient clipping; optional distillation from a
teacher (KL on softened logits plus MSE between pre-pool feature maps, as Zen-NAS trains its nets).
The long-tail methods are plug-ins of this task (zennas.train.methods): a sampler, a loss, a teacher,
BBN's paired batches, cRT's second stage and tau-norm's final transform.

Exact resume: every random draw of epoch E (shuffling, augmentation, mixup) comes from generators
seeded with (seed, E, rank), and the checkpoint written after each epoch holds the weights, the
EMA, the optimizer and the AMP scaler. So a run interrupted after any epoch and resumed with the
same settings ends with the same weights and metrics as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError
from zennas.train.checkpoint import SIDECAR, load_weights, weights_file
from zennas.train.config import LongtailConfig, TrainConfig
from zennas.train.core import DistInfo, EpochHook, StepHook, param_groups, resolve_architecture, training_run
from zennas.train.data import load_classification_data, screen_folder_images
from zennas.train.loading import (
    MemoryLoader,
    TensorAugment,
    default_workers,
    feed,
    keep_decoded,
    plan_cache,
    stored_side,
)
from zennas.train.longtail import (
    BilateralNetwork,
    EpochSampler,
    class_counts,
    longtail_subset,
    sample_weights,
)
from zennas.train.loop import Model, ModelEma, Run, Stage, Task, lr_at, to_device, train_task
from zennas.train.memory import check_memory, training_values
from zennas.train.methods import (
    DISTILLERS,
    FINISHES,
    LOSSES,
    PAIRS,
    PLAIN,
    RECIPES,
    SECOND_STAGES,
    distilled,
    shot_figures,
)

# ----------------------------------------------------------------------------------------------
# Pieces of the recipe


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


def _build(spec: Any, num_classes: int, use_se: bool | None) -> nn.Module:
    from zennas.build import BuildOptions, build

    return build(spec, BuildOptions(num_classes=num_classes, use_se=use_se))


def load_teacher(teacher: str, weights: str | None, num_classes: int) -> tuple[nn.Module, str]:
    """A frozen teacher from a training --out folder, a model.safetensors (+ .json) or ARCH + weights."""
    from zennas.api import settings_for
    from zennas.models import resolve_arch

    path = weights_file(teacher)
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
# Evaluation and the default length


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


# ----------------------------------------------------------------------------------------------
# The task


def train_classification(
    config: TrainConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
) -> dict[str, Any]:
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json; return metrics.json's content.

    `on_step` and `on_epoch` are called on rank 0 only; `on_epoch` runs after the epoch's
    checkpoint is on disk (an exception there interrupts the run at a resumable point).
    """
    return train_task(ClassificationTask(config), on_step=on_step, on_epoch=on_epoch)


class ClassificationTask(Task):
    """An image-folder or CIFAR classifier, plain or with a long-tail method's plug-ins (`Recipe`)."""

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.lt = config if isinstance(config, LongtailConfig) else None
        self.recipe = RECIPES[self.lt.method] if self.lt is not None else PLAIN
        self.kind = training_run("longtail" if self.lt is not None else "classification")
        self.channels_last = config.channels_last
        sgd = config.optimizer == "sgd"
        self.lr = config.lr if config.lr is not None else (0.1 if sgd else 1e-3) * config.batch_size / 256
        self.weight_decay = config.weight_decay if config.weight_decay is not None else (5e-4 if sgd else 0.05)

    # Data

    def prepare(self, dist: DistInfo, device: torch.device) -> None:
        from torch.utils.data import Subset

        config, self.dist, self.device = self.config, dist, device
        self.spec, _, resolution, self.use_se = resolve_architecture(config)
        self.resolution, batch = resolution, max(1, config.batch_size // dist.world)
        check_memory(training_values(self.spec, resolution, resolution, self.use_se), batch, device,
                     what=f"one training step of {batch} images of {resolution}x{resolution}",
                     lower="--resolution or --batch-size",
                     bytes_per_value=2 if device.type == "cuda" and config.amp != "off" else 4)  # fmt: skip
        data = self.data = load_classification_data(config.data, resolution, hflip=config.hflip)
        self.skipped = screen_folder_images(data, skip=config.skip_bad_images)  # before the first step, not when drawn
        self.num_classes = len(data.classes)
        if self.num_classes < 2:
            raise ConfigError(
                f"the dataset in {config.data!r} has {self.num_classes} class; classification needs at least 2"
            )
        self.train_set, self.counts, self.labels = data.train, None, None
        if self.lt is not None:
            labels = _targets(data.train)
            if self.lt.imbalance_factor is not None:
                keep = longtail_subset(labels, self.lt.imbalance_factor, seed=self.lt.subset_seed)
                self.train_set, labels = Subset(data.train, keep.tolist()), labels[keep]
            self.counts, self.labels = class_counts(labels, self.num_classes), labels  # [C]; an empty class: error
        if config.epochs is None:  # settings keep None: a resumed run derives the same number again
            self.config = config = dataclasses.replace(
                config, epochs=default_epochs(len(self.train_set), config.batch_size)
            )
            self.lt = config if self.lt is not None else None
        self.teacher_source = (
            _dive_teacher(self.lt, Path(config.out)) if self.recipe.teacher == "dive" else config.teacher
        )
        self._loaders(batch)

    def _loaders(self, batch: int) -> None:
        """Pixels kept in memory (augmented a batch at a time) when they fit, else files read by workers."""
        config, data, device, resolution = self.config, self.data, self.device, self.resolution
        kept = plan_cache(config.data_cache, [(self.train_set, stored_side(resolution, train=True)),
                                              (data.val, stored_side(resolution, train=False))], device)  # fmt: skip
        workers = 0 if kept is not None else config.workers if config.workers is not None else default_workers(device)
        if kept is not None:
            train_pixels = keep_decoded(self.train_set, resolution, train=True, device=kept)
            val_pixels = keep_decoded(data.val, resolution, train=False, device=kept)
        self.loader_gen = torch.Generator()
        self.samplers: list[Any] = []
        self.loaders: list[Any] = []

        def loader(sampler: Any) -> Any:  # each training loader draws its own augmentation (BBN has two)
            self.samplers.append(sampler)
            seed = config.seed * 7 + len(self.samplers)
            if kept is not None:
                made = MemoryLoader(train_pixels, TensorAugment(resolution, train=True, hflip=config.hflip),
                                    batch_size=batch, seed=seed, rank=self.dist.rank, sampler=sampler)  # fmt: skip
            else:
                made = feed(self.train_set, batch_size=batch, train=True, generator=self.loader_gen, workers=workers,
                            device=device, seed=seed, sampler=sampler)  # fmt: skip
            self.loaders.append(made)
            return made

        recipe = self.recipe
        self.train_loader = loader(self._weighted(recipe.sampler) if recipe.sampler else self._shuffled())
        self.pair_loader = loader(self._weighted(PAIRS[recipe.pair].sampler)) if recipe.pair else None
        self.stage2_loader = loader(self._weighted(SECOND_STAGES[recipe.stage2].sampler)) if recipe.stage2 else None
        # Every rank evaluates the whole val set: exact figures without the padding DistributedSampler adds.
        if kept is not None:
            self.val_loader: Any = MemoryLoader(val_pixels, TensorAugment(resolution, train=False), batch_size=batch,
                                                seed=0)  # fmt: skip
        else:
            self.val_loader = feed(data.val, batch_size=batch, train=False, generator=torch.Generator(),
                                   workers=workers, device=device, seed=0)  # fmt: skip
        self.steps = len(self.train_loader)
        if self.steps == 0:
            raise ConfigError(
                f"train/ holds fewer images ({len(self.train_set)}) than one batch per process; lower --batch-size"
            )

    def _weighted(self, mode: str) -> EpochSampler:
        return EpochSampler(sample_weights(self.labels, self.num_classes, mode), seed=self.config.seed,
                            rank=self.dist.rank, world=self.dist.world)  # fmt: skip

    def _shuffled(self) -> Any:
        """Every image once per epoch: the loader's own shuffle, or this rank's share under torchrun."""
        if self.dist.world == 1:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(self.train_set, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                  seed=self.config.seed, drop_last=True)  # fmt: skip

    # Model

    def build(self) -> Model:
        config, recipe, device = self.config, self.recipe, self.device
        net = build_trained(self.spec, self.num_classes, self.use_se, recipe.head)
        if recipe.needs_linear_classifier and not isinstance(getattr(getattr(net, "head", None), "fc", None),
                                                             nn.Linear):  # fmt: skip
            raise ConfigError(
                f"--method {config.method} re-trains or re-scales a linear classifier; use a zennas network"
            )
        teacher = adapter = None
        distiller = DISTILLERS[recipe.teacher or "kd"]
        if self.teacher_source is not None:
            teacher, _ = load_teacher(self.teacher_source, config.teacher_weights, self.num_classes)
            if not _has_features(net):
                raise ConfigError("distillation needs a student that exposes pre-pool features (a zennas network)")
            if distiller.features:  # Zen-NAS's recipe also mimics features; DiVE distils predictions only
                with torch.no_grad():
                    probe = torch.zeros(1, 3, self.resolution, self.resolution)
                    c_student = net.eval().forward_features(probe).shape[1]
                    c_teacher = teacher.forward_features(probe).shape[1]
                adapter = nn.Conv2d(c_student, c_teacher, 1, bias=False) if c_student != c_teacher else nn.Identity()
            teacher.to(device)
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.student = _Student(net, adapter).to(device, memory_format=memory)
        if teacher is not None:
            teacher.to(memory_format=memory)
        label_loss = LOSSES[recipe.loss](config, self.counts, device)
        if teacher is not None:
            self.stage1_loss = distilled(label_loss, teacher, distiller.make(config))
        else:
            self.stage1_loss = lambda logits, target, features, x: label_loss(logits, target)
        return Model(weights=net, module=self.student, extra=adapter)

    def optimizer(self, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, float]:
        groups = param_groups(params, self.weight_decay)
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9, nesterov=True), self.lr
        return torch.optim.AdamW(groups, lr=self.lr), self.lr

    @property
    def arch(self) -> str:
        return self.spec.canonical

    # Stages

    def stages(self) -> list[Stage]:
        config, recipe = self.config, self.recipe
        shared = {"steps": self.steps, "count": _images, "prepare": self._inputs}
        stage = Stage(epochs=config.epochs, warmup_epochs=config.warmup_epochs, begin=self._begin, loss=self._loss,
                      record={"stage": 1} if self.lt is not None else {}, **shared)  # fmt: skip
        stages = [stage]
        if recipe.stage2 is not None:
            make = SECOND_STAGES[recipe.stage2].make
            stages.append(make(self.student.net, self.student, epochs=self.lt.stage2_epochs, seed=config.seed,
                               begin=self._begin2, **shared))  # fmt: skip
        return stages

    def _set_epoch(self, epoch: int) -> None:
        config = self.config
        self.loader_gen.manual_seed(config.seed * 100_003 + epoch)
        for sampler in self.samplers:
            if sampler is not None:
                sampler.set_epoch(epoch)
        for each in self.loaders:
            each.set_epoch(epoch)
        self.mix_rng = np.random.default_rng([config.seed, epoch, self.dist.rank])
        self.alpha = PAIRS[self.recipe.pair].alpha(epoch, config.epochs) if self.recipe.pair else None

    def _begin(self, epoch: int) -> Any:
        self._set_epoch(epoch)
        if self.pair_loader is not None:
            return zip(self.train_loader, self.pair_loader, strict=True)
        return self.train_loader

    def _begin2(self, epoch: int) -> Any:
        self._set_epoch(epoch)
        return self.stage2_loader

    def _inputs(self, batch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each (images, labels) of a step (BBN: the uniform batch, then the reversed-sampler batch) on the
        device, with soft targets [B, K], mixed."""
        config, inputs = self.config, []
        for x, y in batch if isinstance(batch[0], tuple | list) else (batch,):
            x, y = to_device(x, self.device, self.channels_last), y.to(self.device, non_blocking=True)
            inputs.append(mix_batch(x, soft_targets(y, self.num_classes, config.label_smoothing), self.mix_rng,
                                    mixup=config.mixup, cutmix=config.cutmix))  # fmt: skip
        return inputs

    def _loss(self, module: nn.Module, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recipe.pair is not None:
            loss = PAIRS[self.recipe.pair].loss(module, inputs, self.alpha)
        else:
            ((x, target),) = inputs
            logits, features = module(x)  # [B, K], [B, C_teacher, H, W] or None
            loss = self.stage1_loss(logits.float(), target, features, x)
        return loss, loss[None]

    # Records and results

    def info(self, run: Run) -> dict[str, Any]:
        spec, data = self.spec, self.data
        info = {
            "arch": spec.canonical, "dialect": spec.dialect, "num_classes": self.num_classes,
            "resolution": self.resolution, "use_se": self.use_se, "classes": data.classes, "layout": data.layout,
            "settings": self.settings, "world_size": run.dist.world, "head": self.recipe.head,
        }  # fmt: skip
        if self.lt is not None:
            info.update(method=self.lt.method, train_counts=self.counts.tolist())
        return info

    def loss_fields(self, sums: torch.Tensor, steps: int, run: Run) -> dict[str, float]:
        train_loss = float(sums[0]) / steps
        if run.dist.world > 1:
            train_loss = float(run.all_reduce_(torch.tensor([train_loss], device=run.device))) / run.dist.world
        return {"train_loss": train_loss}

    def evaluate(self, run: Run, epoch: int, last: bool) -> dict[str, Any]:
        val = evaluate(run.model.weights, self.val_loader, run.device, run.autocast, self.channels_last)
        ema = (
            evaluate(run.ema.module, self.val_loader, run.device, run.autocast, self.channels_last) if run.ema else None
        )
        return {"val_loss": val["loss"], "top1": val["top1"], "top5": val["top5"],
                "ema_top1": ema["top1"] if ema else None, "ema_top5": ema["top5"] if ema else None}  # fmt: skip

    def metrics(self, run: Run) -> dict[str, Any]:
        from zennas.counting import count

        history, spec, weights = run.history, self.spec, run.reported
        final, key = history[-1], "ema_" if run.ema is not None else ""
        cx = count(spec, resolution=self.resolution, num_classes=self.num_classes, use_se=self.use_se)
        metrics = {
            "top1": final[f"{key}top1"], "top5": final[f"{key}top5"], "model_top1": final["top1"],
            "model_top5": final["top5"], "reported": run.reported_name,
            "best_top1": max(r[f"{key}top1"] for r in history), "epochs": len(history),
            "train_loss": final["train_loss"], "params": cx.params, "macs": cx.macs, "arch": spec.canonical,
            "dialect": spec.dialect, "resolution": self.resolution, "num_classes": self.num_classes,
            "train_images": len(self.train_set), "val_images": len(self.data.val),
            "skipped_images": [{"path": p.path, "problem": p.problem} for p in self.skipped],
            "seconds": sum(r["seconds"] for r in history),
        }  # fmt: skip
        if self.lt is not None:
            metrics.update(self._longtail_report(weights, run))
            if self.recipe.head == "bbn":
                metrics["trained_params"] = sum(p.numel() for p in weights.parameters())
        return metrics

    def _longtail_report(self, weights: nn.Module, run: Run) -> dict[str, Any]:
        """top1, top5, many/medium/few, balanced_top1 and per_class of the final weights (after the recipe's
        final transform, in place: those are the weights saved), plus the method's settings."""
        lt, counts = self.lt, self.counts

        def predictions() -> dict[str, Any]:
            return evaluate(weights, self.val_loader, run.device, run.autocast, self.channels_last, predictions=True)

        finish = self.recipe.finish
        report = FINISHES[finish](lt, weights, lambda: shot_figures(lt, predictions(), counts)) if finish else {}
        result = predictions()
        report.update(shot_figures(lt, result, counts), top5=result["top5"])
        report.update(
            method=lt.method, imbalance_factor=lt.imbalance_factor, train_counts=counts.tolist(),
            imbalance=float(counts.max() / counts.min()),
            shot_thresholds={"many": f"> {lt.many_threshold}", "few": f"< {lt.few_threshold}"},
        )  # fmt: skip
        return report

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"top1": metrics["top1"], "top5": metrics["top5"]}


def _images(batch: Any) -> int:
    """Images in a step's batch (BBN's pair: the first batch's)."""
    return len(batch[0][1]) if isinstance(batch[0], tuple | list) else len(batch[1])


__all__ = [
    "ClassificationTask", "LongtailConfig", "ModelEma", "TrainConfig", "build_trained", "evaluate", "load_teacher",
    "lr_at", "mix_batch", "soft_targets", "train_classification",
]  # fmt: skip
