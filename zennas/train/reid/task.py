"""`zennas train reid` as a task of the one training loop (zennas.train.loop): the settings, P x K batches,
ID + triplet loss, CMC/mAP per evaluation, the final metrics.

Recipe (Luo et al., "Bag of Tricks and a Strong Baseline", CVPRW 2019): the BNNeck network of
zennas.train.reid.model, batches of P identities x K images, label-smoothed ID loss plus batch-hard
triplet loss; flips, pad-and-crop and random erasing.

Exact resume: the sampler, the augmentation and everything else random in epoch E follow from
(seed, E, rank), and the checkpoint of each epoch holds the weights, the EMA and the optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zennas.train.config import REID_METRICS as METRICS
from zennas.train.config import REID_NECKS as NECK_FEATURES
from zennas.train.config import REID_OPTIMIZERS as OPTIMIZERS
from zennas.train.config import ReidConfig
from zennas.train.core import DistInfo, EpochHook, StepHook, param_groups, resolve_architecture, training_run
from zennas.train.loading import default_workers, feed
from zennas.train.loop import Model, Run, Stage, Task, to_device, train_task
from zennas.train.memory import check_memory, inference_values, training_values
from zennas.train.reid.market import PKSampler, ReidDataset, read_market1501, reid_transforms
from zennas.train.reid.metrics import chance_metrics, evaluate_reid
from zennas.train.reid.model import batch_hard_triplet, build_reid_model, load_pretrained


def train_reid(config: ReidConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
               ) -> dict[str, Any]:  # fmt: skip
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json; return metrics.json's content.

    `on_step` and `on_epoch` run on rank 0 only; `on_epoch` runs after the epoch's checkpoint is on
    disk (an exception there interrupts the run at a resumable point).
    """
    return train_task(ReidTask(config), on_step=on_step, on_epoch=on_epoch)


def _check_memory(config: ReidConfig, spec: Any, use_se: bool | None, device: torch.device, *, amp: bool) -> None:
    """Refuse a P x K training step or an evaluation batch that cannot fit on `device` (before anything is built)."""
    h, w, batch = config.height, config.width, config.p * config.k
    check_memory(training_values(spec, h, w, use_se), batch, device, bytes_per_value=2 if amp else 4,
                 what=f"one training step of {config.p} x {config.k} images of {h}x{w}",
                 lower="--height and --width, or --ids-per-batch or --images-per-id")  # fmt: skip
    check_memory(inference_values(spec, h, w, use_se), config.eval_batch_size, device, bytes_per_value=2 if amp else 4,
                 what=f"embedding {config.eval_batch_size} images of {h}x{w} at once",
                 lower="--eval-batch-size or --height and --width")  # fmt: skip


class ReidTask(Task):
    """A BNNeck network on a searched backbone, trained on a Market-1501 folder, ranked by CMC/mAP."""

    kind = training_run("reid")
    loss_names = ("loss", "id_loss", "triplet_loss")

    def __init__(self, config: ReidConfig):
        super().__init__(config)
        self.channels_last = config.channels_last
        adam_lr = 3.5e-4 if config.pretrained is not None else 3.5e-3
        sgd_or_adam = 0.05 if config.optimizer == "sgd" else adam_lr
        self.lr = config.lr if config.lr is not None else sgd_or_adam * config.p * config.k / 64

    def prepare(self, dist: DistInfo, device: torch.device) -> None:
        config, self.dist, self.device = self.config, dist, device
        self.spec, _, _, self.use_se = resolve_architecture(config)
        height, width = config.height, config.width
        _check_memory(config, self.spec, self.use_se, device, amp=device.type == "cuda" and config.amp != "off")
        data = self.data = read_market1501(config.data, skip_bad_images=config.skip_bad_images)
        labels = {pid: i for i, pid in enumerate(data.train_ids)}
        train_set = ReidDataset(data.train, reid_transforms(height, width, train=True, hflip=config.hflip,
                                                            pad=config.pad, erasing=config.erasing),
                                [labels[im.pid] for im in data.train])  # fmt: skip
        test_transform = reid_transforms(height, width, train=False)
        self.sampler = PKSampler(train_set.labels, config.p, config.k, seed=config.seed, rank=dist.rank)
        self.loader_gen = torch.Generator()
        workers = config.workers if config.workers is not None else default_workers(device)
        self.train_loader = feed(train_set, batch_size=None, train=True, generator=self.loader_gen, workers=workers,
                                 device=device, seed=config.seed, batch_sampler=self.sampler)  # fmt: skip
        self.query_loader, self.gallery_loader = (
            feed(ReidDataset(images, test_transform), batch_size=config.eval_batch_size, train=False,
                 generator=self.loader_gen, workers=workers, device=device, seed=config.seed)
            for images in (data.query, data.gallery)
        )  # fmt: skip
        self.chance = chance_metrics([im.pid for im in data.query], [im.camera for im in data.query],
                                     [im.pid for im in data.gallery], [im.camera for im in data.gallery])  # fmt: skip

    def build(self) -> Model:
        config = self.config
        model = build_reid_model(self.spec, self.use_se, len(self.data.train_ids), config.height, config.width)
        if config.pretrained is not None:
            load_pretrained(model, config.pretrained, self.spec.canonical)
        model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return Model(weights=model, module=model)

    def optimizer(self, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, float]:
        groups = param_groups(params, self.config.weight_decay)
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9, nesterov=True), self.lr
        if self.config.optimizer == "adam":
            return torch.optim.Adam(groups, lr=self.lr), self.lr  # L2 weight decay, as BoT trains
        return torch.optim.AdamW(groups, lr=self.lr), self.lr

    @property
    def arch(self) -> str:
        return self.spec.canonical

    def stages(self) -> list[Stage]:
        config = self.config
        return [Stage(epochs=config.epochs, steps=len(self.sampler), warmup_epochs=config.warmup_epochs,
                      begin=self._begin, prepare=self._inputs, loss=self._loss, count=lambda b: len(b[1]))]  # fmt: skip

    def _begin(self, epoch: int) -> Any:
        self.loader_gen.manual_seed(self.config.seed * 100_003 + epoch * 1_009 + self.dist.rank)
        self.sampler.set_epoch(epoch)
        self.train_loader.set_epoch(epoch)
        return self.train_loader

    def _inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return to_device(x, self.device, self.channels_last), y.to(self.device, non_blocking=True)

    def _loss(self, module: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        config, (x, y) = self.config, inputs
        f_t, _, logits = module(x)  # [B, C], [B, C], [B, num_ids]
        id_loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        triplet = batch_hard_triplet(f_t.float(), y, None if config.soft_margin else config.margin)
        loss = config.id_weight * id_loss + config.triplet_weight * triplet
        return loss, torch.stack([loss.detach(), id_loss.detach(), triplet.detach()])

    def info(self, run: Run) -> dict[str, Any]:
        config, spec = self.config, self.spec
        return {
            "arch": spec.canonical, "dialect": spec.dialect, "use_se": self.use_se, "height": config.height,
            "width": config.width, "num_ids": len(self.data.train_ids), "train_ids": self.data.train_ids,
            "neck": config.neck, "metric": config.metric, "task": "reid", "settings": self.settings,
            "world_size": run.dist.world,
        }  # fmt: skip

    def loss_fields(self, sums: torch.Tensor, steps: int, run: Run) -> dict[str, float]:
        if run.dist.world > 1:
            sums = run.all_reduce_(sums) / run.dist.world
        train_loss, id_mean, triplet_mean = (float(v) / steps for v in sums)
        return {"train_loss": train_loss, "id_loss": id_mean, "triplet_loss": triplet_mean}

    def evaluate(self, run: Run, epoch: int, last: bool) -> dict[str, Any]:
        config = self.config
        if not (last or (epoch + 1) % config.eval_every == 0):
            return {}
        rerank = (config.k1, config.k2, config.lambda_value) if config.rerank and last else None
        scores = evaluate_reid(run.reported, self.query_loader, self.gallery_loader, run.device, neck=config.neck,
                               metric=config.metric, rerank=rerank, autocast=run.autocast,
                               channels_last=self.channels_last)  # fmt: skip
        return {key: value for key, value in scores.items() if key not in ("cmc", "queries")}

    def metrics(self, run: Run) -> dict[str, Any]:
        config, final = self.config, run.history[-1]
        keys = ["rank1", "rank5", "rank10", "map"]
        if config.rerank:
            keys += ["rerank_rank1", "rerank_rank5", "rerank_rank10", "rerank_map"]
        metrics = {
            **{key: final[key] for key in keys}, "units": "percent",
            **{f"chance_{key}": value for key, value in self.chance.items()}, "reported": run.reported_name,
            "embedding": f"bnneck-{config.neck}", "metric": config.metric, "epochs": len(run.history),
            "train_loss": final["train_loss"], "params": sum(p.numel() for p in run.model.weights.parameters()),
            "arch": self.spec.canonical, "dialect": self.spec.dialect, "height": config.height, "width": config.width,
            **self.data.summary(),
            "skipped_images": [{"path": p.path, "problem": p.problem} for p in self.data.bad_images],
            "seconds": sum(r["seconds"] for r in run.history),
        }  # fmt: skip
        if config.rerank:
            metrics["rerank"] = {"k1": config.k1, "k2": config.k2, "lambda": config.lambda_value}
        return metrics

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"rank1": metrics["rank1"], "map": metrics["map"]}


__all__ = ["METRICS", "NECK_FEATURES", "OPTIMIZERS", "ReidConfig", "ReidTask", "train_reid"]
