"""`zennas train detection` as a task of the one training loop (zennas.train.loop): the settings, the data
and loader, the FCOS losses, COCO mAP per epoch, the final metrics and the ONNX export.

Exact resume works as in classification: every random draw of epoch E (shuffling, flips, the
transform's choices) follows from (seed, E, rank), and a checkpoint is written after each epoch.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zennas.errors import ConfigError, ExportError
from zennas.io import atomic_write_json
from zennas.train.config import DetectionConfig
from zennas.train.core import DistInfo, EpochHook, StepHook, param_groups, resolve_architecture, training_run
from zennas.train.detection.coco import CocoDataset, collate, load_coco_data, native_side
from zennas.train.detection.export import export_detector
from zennas.train.detection.metrics import coco_map, predict
from zennas.train.detection.model import build_detector, detector_values, load_backbone_weights
from zennas.train.loading import default_workers, feed
from zennas.train.loop import Model, Run, Stage, Task, train_task
from zennas.train.memory import check_memory

# What a detection run writes into --out besides a training run's files (--overwrite deletes them first).
DETECTION_RUN = training_run("detection", "detector.onnx", "detector.onnx.data", "detector.json")


def train_detection(
    config: DetectionConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
) -> dict[str, Any]:
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json and detector.onnx.

    Returns metrics.json's content. `on_step` and `on_epoch` are called on rank 0 only; `on_epoch`
    runs after the epoch's checkpoint is on disk (an exception there interrupts the run at a
    resumable point).
    """
    return train_task(DetectionTask(config), on_step=on_step, on_epoch=on_epoch)


def optimizer_settings(config: DetectionConfig) -> tuple[float, float]:
    """(peak lr, weight decay): the given ones, else the optimizer's defaults (lr scaled with the batch)."""
    sgd = config.optimizer == "sgd"
    # SGD's lr grows linearly with the batch (Goyal et al. 2017), Adam's with its square root (Malladi et al. 2022).
    scale = config.batch_size / 16 if sgd else math.sqrt(config.batch_size / 16)
    lr = config.lr if config.lr is not None else (0.01 if sgd else 2e-3) * scale
    wd = config.weight_decay if config.weight_decay is not None else (1e-4 if sgd else 0.05)
    return lr, wd


class DetectionTask(Task):
    """FCOS on a zennas backbone, trained on a COCO folder and evaluated with COCO mAP."""

    kind = DETECTION_RUN
    loss_names = ("loss_cls", "loss_box", "loss_ctr")
    unstable_hint = "lower --lr or set --grad-clip"

    def __init__(self, config: DetectionConfig):
        super().__init__(config)
        self.lr, self.weight_decay = optimizer_settings(config)

    def prepare(self, dist: DistInfo, device: torch.device) -> None:
        config, self.dist, self.device = self.config, dist, device
        self.spec, _, resolution, self.use_se = resolve_architecture(config)
        native = (
            config.resolution is None and config.run is None
        )  # a backbone's own resolution says nothing of the data
        if native:
            self.train, self.val = load_coco_data(config.data, skip_bad_boxes=config.skip_bad_boxes)
            resolution = native_side(self.train)
        max_size = config.max_size or round(resolution * 1333 / 800)
        if max_size < resolution:
            raise ConfigError(f"max_size ({max_size}) must be at least the resolution ({resolution})")
        batch = max(1, config.batch_size // dist.world)
        values = detector_values(self.spec, resolution, self.use_se, config.fpn_channels, config.head_convs)
        check_memory(values, batch, device,
                     what=f"one training step of {batch} images of {resolution}x{resolution} (square images)",
                     lower="--resolution or --batch-size",
                     bytes_per_value=2 if device.type == "cuda" and config.amp != "off" else 4)  # fmt: skip
        if not native:  # an impossible --resolution is refused before the data is read
            self.train, self.val = load_coco_data(config.data, skip_bad_boxes=config.skip_bad_boxes)
        self.resolution, self.max_size = resolution, max_size
        dataset = CocoDataset(self.train, hflip=config.hflip, seed=config.seed)
        self.sampler = None
        if dist.world > 1:
            from torch.utils.data.distributed import DistributedSampler

            self.sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                              seed=config.seed, drop_last=True)  # fmt: skip
        self.generator = torch.Generator()
        workers = config.workers if config.workers is not None else default_workers(device)
        self.loader = feed(dataset, batch_size=batch, train=True, generator=self.generator, workers=workers,
                           device=device, seed=config.seed, sampler=self.sampler, collate_fn=collate, keyed=True,
                           drop_last=True)  # fmt: skip
        self.steps = len(self.loader)
        if self.steps == 0:
            raise ConfigError(f"the training split has fewer images ({len(dataset)}) than one batch per process; "
                              "lower --batch-size")  # fmt: skip

    def build(self) -> Model:
        config = self.config
        detector = build_detector(
            self.spec, len(self.train.category_ids), use_se=self.use_se, fpn_channels=config.fpn_channels,
            head_convs=config.head_convs, min_size=self.resolution, max_size=self.max_size,
            score_thresh=config.score_thresh, nms_thresh=config.nms_thresh,
            detections_per_img=config.detections_per_img,
        )  # fmt: skip
        if config.backbone_weights is not None:
            load_backbone_weights(detector, config.backbone_weights, self.spec.canonical)
        detector.to(self.device)
        return Model(weights=detector, module=detector)

    def optimizer(self, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, float]:
        """SGD (momentum 0.9) or AdamW; no weight decay on norms and biases."""
        groups = param_groups(params, self.weight_decay)
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9), self.lr
        return torch.optim.AdamW(groups, lr=self.lr), self.lr

    @property
    def arch(self) -> str:
        return self.spec.canonical

    def stages(self) -> list[Stage]:
        return [Stage(epochs=self.config.epochs, steps=self.steps, warmup_epochs=self.config.warmup_epochs,
                      begin=self._begin, prepare=self._inputs, loss=_fcos_loss, count=lambda b: len(b[0]))]  # fmt: skip

    def _begin(self, epoch: int) -> Any:
        self.generator.manual_seed(self.config.seed * 100_003 + epoch)
        self.loader.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return self.loader

    def _inputs(self, batch: Any) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        images, targets = batch
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        return images, targets

    def info(self, run: Run) -> dict[str, Any]:
        config, spec = self.config, self.spec
        return {
            "task": "detection", "arch": spec.canonical, "dialect": spec.dialect, "use_se": self.use_se,
            "resolution": self.resolution, "max_size": self.max_size, "num_classes": len(self.train.category_ids),
            "categories": self.train.coco["categories"], "fpn_channels": config.fpn_channels,
            "head_convs": config.head_convs, "settings": self.settings,
        }  # fmt: skip

    def loss_fields(self, sums: torch.Tensor, steps: int, run: Run) -> dict[str, float]:
        means = sums / steps
        if run.dist.world > 1:
            means = run.all_reduce_(means) / run.dist.world
        cls, box, ctr = (float(v) for v in means)
        return {"train_loss": cls + box + ctr, "loss_cls": cls, "loss_box": box, "loss_ctr": ctr}

    def evaluate(self, run: Run, epoch: int, last: bool) -> dict[str, Any]:
        """COCO mAP of the reported weights when due. Every rank evaluates the whole val set (as
        classification does): exact figures, no gather."""
        if last or (epoch + 1) % self.config.eval_every == 0:
            return coco_map(self.val, predict(run.reported, self.val, run.device))
        return {"map": None, "map_50": None, "map_75": None}

    def metrics(self, run: Run) -> dict[str, Any]:
        final, weights = run.history[-1], run.reported
        evaluated = [r for r in run.history if r["map"] is not None]
        return {
            "map": final["map"], "map_50": final["map_50"], "map_75": final["map_75"],
            "map_units": "fraction in [0, 1] (COCO bbox AP)", "reported": run.reported_name,
            "best_map": max(r["map"] for r in evaluated), "epochs": len(run.history), "train_loss": final["train_loss"],
            "params": sum(p.numel() for p in weights.parameters()),
            "backbone_params": sum(p.numel() for p in weights.backbone.body.parameters()),
            "arch": self.spec.canonical, "dialect": self.spec.dialect, "resolution": self.resolution,
            "max_size": self.max_size, "num_classes": len(self.train.category_ids),
            "train_images": len(self.train.files), "val_images": len(self.val.files),
            "val_annotations": self.val.annotations, "skipped_annotations": self.train.skipped + self.val.skipped,
            "seconds": sum(r["seconds"] for r in run.history),
        }  # fmt: skip

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"map": metrics["map"], "map_50": metrics["map_50"]}

    def export(self, run: Run, metrics: dict[str, Any], out: Path) -> Exception | None:
        """detector.onnx (checked against PyTorch) and detector.json; a disagreement is an ExportError."""
        config = self.config
        if not config.export_onnx:
            return None
        path = out / "detector.onnx"
        onnx_info = export_detector(copy.deepcopy(run.reported).cpu().float(), path, self.resolution,
                                    exporter=config.onnx_exporter)  # fmt: skip
        metrics["onnx"] = onnx_info
        atomic_write_json(out / "detector.json", {**self.info(run), "onnx": onnx_info,
                                                  "score_thresh": config.score_thresh,
                                                  "nms_thresh": config.nms_thresh,
                                                  "detections_per_img": config.detections_per_img})  # fmt: skip
        if onnx_info["passed"]:
            return None
        return ExportError(
            f"{str(path)!r} disagrees with PyTorch (max relative error {onnx_info['max_rel_error']}); "
            f"weights and metrics are saved in {str(out)!r}"
        )


def _fcos_loss(module: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS's losses: their sum, and [classification, box regression, centre-ness]."""
    losses = module(*inputs)  # classification, bbox_regression, bbox_ctrness (scalars)
    return sum(losses.values()), torch.stack([v.detach().float() for v in losses.values()])


__all__ = ["DETECTION_RUN", "DetectionConfig", "DetectionTask", "optimizer_settings", "train_detection"]
