"""One training loop for every task: schedule, AMP, channels_last, EMA, DDP, checkpoints and resume, hooks.

The loop owns what every run does the same way: claiming --out and checking a checkpoint to resume,
the learning rate (linear warm-up then cosine, set per step as a pure function of the step, so there
is no scheduler state to save), autocast and the GradScaler (AMP only on CUDA), gradient clipping, an
EMA of the weights, DistributedDataParallel under torchrun, the per-epoch checkpoint and
metrics.jsonl, the non-finite-loss check, the `on_step`/`on_epoch` hooks with their throughput, and
the final weights and metrics.json.

A `Task` (classification, detection, ReID) supplies the rest: the data, the model, the optimizer, the
loss of a batch, the evaluation, the epoch record's fields, the final metrics and any export. Its
training is one or more `Stage`s, each a span of epochs with its own schedule, optimizer, batches and
loss (cRT's classifier re-training is a second stage of classification).

Exact resume: every random draw of epoch E follows from (seed, E, rank): the loop reseeds torch's
global generator at the start of each epoch, and the task reseeds its loaders in `Stage.begin`. The
checkpoint written after each epoch holds the weights, the EMA, the optimizer and the AMP scaler, so a
run interrupted after any epoch and resumed with the same settings ends with the same weights and
metrics as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zennas.errors import ConfigError
from zennas.io import RunKind, atomic_write_json, atomic_write_text
from zennas.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from zennas.train.core import AMP_DTYPES, DistInfo, EpochHook, StepHook, resume_point, run_on_ranks
from zennas.train.loading import Timed, step_info, throughput


def lr_at(step: int, *, total: int, warmup: int, base: float, minimum: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from `base` to `minimum` at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * min(1.0, progress)))


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


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch of images [B, 3, H, W] on `device`, NHWC in memory when `channels_last`."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ----------------------------------------------------------------------------------------------
# What a task hands the loop


@dataclass
class Model:
    """A task's network. `weights`: checkpointed, averaged by the EMA and saved as model.safetensors;
    `module`: what a step runs forward (the weights plus any adapter; DDP wraps it); `extra`: a module
    checkpointed besides the weights (the distillation adapter) or None."""

    weights: nn.Module
    module: nn.Module
    extra: nn.Module | None = None


@dataclass
class Stage:
    """A span of epochs with its own schedule (warm-up, then cosine to min_lr at the stage's end),
    optimizer, batches and loss.

    begin(epoch): the epoch's batches (the task sets its samplers' and loaders' epoch there).
    prepare(batch): the step's inputs on the device, outside autocast.
    loss(module, inputs): (loss, terms) under autocast; terms [len(Task.loss_names)] are summed over
        the epoch for `Task.loss_fields`.
    count(batch): images in a batch, for the throughput.
    train_mode: False keeps the modules in eval mode (frozen BatchNorm statistics).
    freeze(): sets requires_grad before the stage's optimizer is made over the parameters that train.
    enter(run): runs when the loop reaches the stage from the one before (not on a resume inside it).
    record: fields appended to each of its epochs' records.
    """

    epochs: int
    steps: int
    warmup_epochs: float
    begin: Callable[[int], Iterable]
    prepare: Callable[[Any], Any]
    loss: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]
    count: Callable[[Any], int]
    train_mode: bool = True
    freeze: Callable[[], None] | None = None
    enter: Callable[[Run], None] | None = None
    record: dict[str, Any] = field(default_factory=dict)


class Task:
    """What a training task supplies to `train`; the methods are called in this order.

    `config` carries out, resume, overwrite, seed, device, amp, ema_decay, grad_clip and min_lr.
    """

    kind: RunKind  # the --out folder zennas.io.claim_output_folder claims
    loss_names: tuple[str, ...] = ("loss",)
    channels_last: bool = False
    unstable_hint: str = "lower --lr"  # what the non-finite-loss error advises

    def __init__(self, config: Any):
        self.config = config
        self.settings = config.settings()  # before anything is derived: a resumed run derives it again

    def prepare(self, dist: DistInfo, device: torch.device) -> None:
        """Architecture, memory checks and data, before any model is built (--out is claimed already)."""
        raise NotImplementedError

    def build(self) -> Model:
        """The network on the device, built after torch.manual_seed(config.seed)."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        """The stages, in order."""
        raise NotImplementedError

    def optimizer(self, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, float]:
        """An optimizer over `params` and its peak learning rate."""
        raise NotImplementedError

    @property
    def arch(self) -> str:
        """The canonical architecture the checkpoint's weights are checked against."""
        raise NotImplementedError

    def info(self, run: Run) -> dict[str, Any]:
        """What checkpoint.json and model.json say about the run besides the history."""
        raise NotImplementedError

    def loss_fields(self, sums: torch.Tensor, steps: int, run: Run) -> dict[str, float]:
        """The epoch record's loss fields (`train_loss` first) from the summed terms, averaged over ranks."""
        raise NotImplementedError

    def evaluate(self, run: Run, epoch: int, last: bool) -> dict[str, Any]:
        """The epoch record's evaluation fields after epoch `epoch` (0-based)."""
        return {}

    def metrics(self, run: Run) -> dict[str, Any]:
        """metrics.json's content (on every rank); may change the reported weights in place (tau-norm)."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The figures model.json repeats from the metrics."""
        return {}

    def export(self, run: Run, metrics: dict[str, Any], out: Path) -> Exception | None:
        """Rank 0, after model.safetensors: write exports (adding to `metrics`); an error to raise once
        metrics.json is written, or None."""
        return None


@dataclass
class Run:
    """The loop's state, as the task's callbacks see it."""

    dist: DistInfo
    device: torch.device
    model: Model
    ema: ModelEma | None
    autocast: Callable[[], Any]
    optimizer: Any = None
    lr: float = 0.0
    wrapped: nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reported(self) -> nn.Module:
        """The weights a run reports and saves: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model.weights

    @property
    def reported_name(self) -> str:
        return "ema" if self.ema is not None else "model"

    def all_reduce_(self, values: torch.Tensor) -> torch.Tensor:
        """Sum `values` over the ranks in place (nothing on one process)."""
        if self.dist.world > 1:
            import torch.distributed as td

            td.all_reduce(values)
        return values


# ----------------------------------------------------------------------------------------------
# The loop


def train_task(task: Task, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None) -> dict[str, Any]:
    """Train `task` on this process's ranks; returns metrics.json's content.

    `on_step` and `on_epoch` are called on rank 0 only; `on_epoch` runs after the epoch's
    checkpoint is on disk (an exception there interrupts the run at a resumable point).
    """
    return run_on_ranks(task.config.device, lambda dist, device: train(task, dist, device, on_step, on_epoch))


def _wrap(module: nn.Module, dist: DistInfo, device: torch.device) -> nn.Module:
    if dist.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _stage_of(stages: list[Stage], epoch: int) -> int:
    """The index of the stage that epoch `epoch` (0-based) belongs to."""
    end = 0
    for index, stage in enumerate(stages):
        end += stage.epochs
        if epoch < end:
            return index
    return len(stages) - 1


def _enter(run: Run, task: Task, stage: Stage, *, transition: bool) -> None:
    """Make `stage` the current one: its trainable parameters, optimizer, (on a transition) a fresh EMA, DDP."""
    if transition and stage.enter is not None:
        stage.enter(run)
    if stage.freeze is not None:
        stage.freeze()
    run.optimizer, run.lr = task.optimizer([p for p in run.model.module.parameters() if p.requires_grad])
    if transition:
        if run.ema is not None:
            run.ema = ModelEma(run.model.weights, task.config.ema_decay)
        run.wrapped = _wrap(run.model.module, run.dist, run.device)  # DDP must see which parameters train


def train(task: Task, dist: DistInfo, device: torch.device, on_step: StepHook | None, on_epoch: EpochHook | None
          ) -> dict[str, Any]:  # fmt: skip
    """The loop (see the module docstring) on one rank; returns metrics.json's content."""
    config = task.config
    out, main, cuda = Path(config.out), dist.rank == 0, device.type == "cuda"
    # --out is claimed (and a checkpoint to resume checked) before the data is read: None starts afresh.
    saved = resume_point(out, task.settings, config.resume, kind=task.kind, overwrite=config.overwrite)
    task.prepare(dist, device)
    torch.manual_seed(config.seed)
    model = task.build()
    amp = cuda and config.amp != "off"

    def autocast():
        return torch.autocast("cuda", dtype=AMP_DTYPES[config.amp]) if amp else contextlib.nullcontext()

    run = Run(
        dist, device, model, ModelEma(model.weights, config.ema_decay) if config.ema_decay > 0 else None, autocast
    )
    stages = task.stages()
    current = _stage_of(stages, saved["epoch"] - 1) if saved is not None else 0  # the checkpoint's optimizer's
    _enter(run, task, stages[current], transition=False)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and config.amp == "fp16")
    start = 0
    if saved is not None:
        state = load_checkpoint(out, model=model.weights, optimizer=run.optimizer, arch=task.arch,
                                ema=run.ema.module if run.ema else None, extra=model.extra)  # fmt: skip
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, run.history = state["epoch"], state["history"]
    run.wrapped = _wrap(model.module, dist, device)
    info = task.info(run)
    total = sum(stage.epochs for stage in stages)
    first = sum(stage.epochs for stage in stages[:current])  # the current stage's first epoch
    for epoch in range(start, total):
        started = time.monotonic()
        if epoch == first + stages[current].epochs:
            first, current = epoch, current + 1
            _enter(run, task, stages[current], transition=True)
        record, speed = _epoch(task, run, stages[current], scaler, epoch, first, total, on_step if main else None)
        record.update(seconds=time.monotonic() - started, **speed, **stages[current].record)
        run.history.append(record)
        if main:
            save_checkpoint(out, epoch=epoch + 1, model=model.weights, optimizer=run.optimizer,
                            ema=run.ema.module if run.ema else None, extra=model.extra,
                            info={**info, "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                  "history": run.history})  # fmt: skip
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
            if on_epoch is not None:
                on_epoch(record)
    return _finish(task, run, info, out) if main else task.metrics(run)


def _epoch(task: Task, run: Run, stage: Stage, scaler: Any, epoch: int, first: int, total: int,
           on_step: StepHook | None) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """Train one epoch of `stage`: its record up to the evaluation's fields, and the throughput of its steps."""
    config, steps = task.config, stage.steps
    # Everything random in this epoch follows from (seed, epoch, rank): resuming replays it exactly.
    torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + run.dist.rank)
    batches = Timed(stage.begin(epoch), count=stage.count)
    run.model.module.train(stage.train_mode)
    trainable = [p for p in run.model.module.parameters() if p.requires_grad]
    schedule = {"total": stage.epochs * steps, "warmup": round(stage.warmup_epochs * steps), "base": run.lr,
                "minimum": config.min_lr}  # fmt: skip
    sums = torch.zeros(len(task.loss_names), device=run.device)
    for step, batch in enumerate(batches):
        local = (epoch - first) * steps + step  # the schedule and the EMA count from the stage's start
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(local, **schedule)
        inputs = stage.prepare(batch)
        with run.autocast():
            loss, terms = stage.loss(run.wrapped, inputs)
        run.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        scaler.step(run.optimizer)
        scaler.update()
        if run.ema is not None:
            run.ema.update(run.model.weights, local)
        sums += terms.detach()
        if on_step is not None:
            on_step(epoch + 1, step + 1, steps, step_info(loss, batches, total))
    losses = task.loss_fields(sums, steps, run)  # one sync per epoch: a per-step check would wait for the GPU
    speed = throughput(batches)  # the training steps only, before evaluation and the checkpoint
    if not math.isfinite(losses["train_loss"]):
        raise ConfigError(f"the training loss became {losses['train_loss']} in epoch {epoch + 1}; {task.unstable_hint}")
    record = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], **losses}
    return {**record, **task.evaluate(run, epoch, epoch + 1 == total)}, speed


def _finish(task: Task, run: Run, info: dict[str, Any], out: Path) -> dict[str, Any]:
    """Rank 0: metrics, model.safetensors (+ model.json), the task's exports and metrics.json."""
    metrics = task.metrics(run)
    sidecar = {**info, "weights": run.reported_name, **task.summary(metrics)}
    save_weights(out / "model.safetensors", run.reported, sidecar)
    problem = task.export(run, metrics, out)
    atomic_write_json(out / "metrics.json", metrics)
    if problem is not None:
        raise problem
    return metrics


__all__ = ["Model", "ModelEma", "Run", "Stage", "Task", "lr_at", "to_device", "train", "train_task"]
