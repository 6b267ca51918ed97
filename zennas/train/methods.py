"""The `zennas train longtail --method` recipes as plug-ins: a sampler, a loss, a teacher, paired batches, a
second stage and a final transform, each chosen by name (definitions in zennas.train.longtail).

A `Recipe` names one plug-in of each kind (None: not used); classification composes them, so the
training loop holds no method names. Plain classification is `PLAIN`, with the Zen-NAS distillation
("kd") when a --teacher is given.

- sampler: stage 1's per-sample weights (`sample_weights` mode: "balanced", "sqrt"); None shuffles
  every image once per epoch.
- loss (LOSSES): the label loss of stage 1, on soft targets.
- teacher (DISTILLERS): a KL term to a frozen teacher's predictions added to the label loss.
- pair (PAIRS): BBN's second batch from the reversed sampler, its bilateral head and alpha.
- stage2 (SECOND_STAGES): cRT's classifier re-training on class-balanced batches.
- finish (FINISHES): tau-normalisation of the classifier before the final figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zennas.train.longtail import (
    METHODS,
    bbn_alpha,
    class_balanced_weights,
    flattened_teacher,
    longtail_metrics,
    reset_classifier_,
    soft_cross_entropy,
    tau_normalize_,
)
from zennas.train.loop import Run, Stage

LabelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [B, C], soft targets [B, C]) -> loss


@dataclass(frozen=True)
class Recipe:
    """One plug-in name of each kind (see the module docstring); None leaves that kind out."""

    sampler: str | None = None
    loss: str = "ce"
    teacher: str | None = None
    pair: str | None = None
    stage2: str | None = None
    finish: str | None = None

    @property
    def head(self) -> str:
        """The classifier the network is built with (zennas.train.classification.build_trained)."""
        return PAIRS[self.pair].head if self.pair is not None else "linear"

    @property
    def needs_linear_classifier(self) -> bool:
        """Whether a plug-in re-trains or re-scales a linear classifier `net.head.fc`."""
        return self.stage2 is not None or self.finish is not None


PLAIN = Recipe()
RECIPES = {
    "ce": PLAIN,
    "cb-resample": Recipe(sampler="balanced"),
    "sqrt-resample": Recipe(sampler="sqrt"),
    "cb-reweight": Recipe(loss="class-balanced"),
    "logit-adjust": Recipe(loss="logit-adjust"),
    "balanced-softmax": Recipe(loss="balanced-softmax"),
    "crt": Recipe(stage2="crt"),
    "tau-norm": Recipe(finish="tau-norm"),
    "bbn": Recipe(pair="bbn"),
    "dive": Recipe(loss="balanced-softmax", teacher="dive"),
}
if tuple(RECIPES) != METHODS:
    raise ImportError("zennas.train.methods.RECIPES must hold every zennas.train.LONGTAIL_METHODS name, in order")


# ----------------------------------------------------------------------------------------------
# Label losses: (config, training counts [C] or None, device) -> LabelLoss


def _log_prior(counts: np.ndarray, tau: float, device: torch.device) -> torch.Tensor:
    """tau * log(n_c / n) [C]: the shift of logit adjustment and balanced softmax."""
    return tau * torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32)).to(device)


def _cross_entropy(config: Any, counts: np.ndarray | None, device: torch.device) -> LabelLoss:
    return lambda logits, target: soft_cross_entropy(logits, target, None)


def _class_balanced(config: Any, counts: np.ndarray | None, device: torch.device) -> LabelLoss:
    weights = class_balanced_weights(counts, config.cb_beta).to(device)  # [C]
    return lambda logits, target: soft_cross_entropy(logits, target, weights)


def _prior_shifted(tau: Callable[[Any], float]) -> Callable[[Any, np.ndarray | None, torch.device], LabelLoss]:
    def make(config: Any, counts: np.ndarray | None, device: torch.device) -> LabelLoss:
        log_prior = _log_prior(counts, tau(config), device)
        return lambda logits, target: soft_cross_entropy(logits + log_prior, target)

    return make


LOSSES = {
    "ce": _cross_entropy,
    "class-balanced": _class_balanced,  # Cui et al.'s re-weighting
    "logit-adjust": _prior_shifted(lambda config: config.la_tau),  # Menon et al.
    "balanced-softmax": _prior_shifted(lambda config: 1.0),  # Ren et al.; DiVE's label term too
}


# ----------------------------------------------------------------------------------------------
# Teachers: (config) -> (label loss, logits, features, teacher features, teacher logits) -> loss


def _zen_nas_kd(config: Any) -> Callable[..., torch.Tensor]:
    """KL on softened logits plus MSE between pre-pool feature maps, as Zen-NAS trains its nets."""
    temp, alpha = config.kd_temperature, config.kd_alpha

    def loss(label_loss, logits, features, t_features, t_logits) -> torch.Tensor:
        kl = F.kl_div(F.log_softmax(logits / temp, 1), F.softmax(t_logits / temp, 1),
                      reduction="batchmean") * temp**2  # fmt: skip
        side = min(features.shape[-1], t_features.shape[-1])
        mimic = F.mse_loss(F.adaptive_avg_pool2d(features.float(), side),
                           F.adaptive_avg_pool2d(t_features.float(), side))  # fmt: skip
        return (1 - alpha) * label_loss + alpha * kl + config.kd_feature_weight * mimic

    return loss


def _dive(config: Any) -> Callable[..., torch.Tensor]:
    """KL to the teacher's flattened predictions at temperature T (He et al.); no feature term."""
    temp, alpha = config.dive_temperature, config.kd_alpha

    def loss(label_loss, logits, features, t_features, t_logits) -> torch.Tensor:
        q = flattened_teacher(t_logits, temp, config.dive_power)
        kl = F.kl_div(F.log_softmax(logits / temp, 1), q, reduction="batchmean") * temp**2
        return (1 - alpha) * label_loss + alpha * kl

    return loss


@dataclass(frozen=True)
class Distiller:
    """A teacher term; `features`: whether the student's feature maps are mimicked (an adapter is built)."""

    make: Callable[[Any], Callable[..., torch.Tensor]]
    features: bool


DISTILLERS = {"kd": Distiller(_zen_nas_kd, features=True), "dive": Distiller(_dive, features=False)}


def distilled(
    label_loss: LabelLoss, teacher: nn.Module, term: Callable[..., torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """(logits, target, features, x) -> the label loss plus the teacher term on the same images."""

    def loss(logits, target, features, x) -> torch.Tensor:
        with torch.no_grad():
            t_features = teacher.forward_features(x)  # [B, C_teacher, H', W']
            t_logits = teacher.head(t_features).float()
        return term(label_loss(logits, target), logits, features, t_features, t_logits)

    return loss


# ----------------------------------------------------------------------------------------------
# Paired batches: BBN


@dataclass(frozen=True)
class Pair:
    """A second training batch per step from `sampler`, fed to the `head` network with weight `alpha`."""

    sampler: str
    head: str
    alpha: Callable[[int, int], float]  # (epoch, stage-1 epochs) -> the first batch's weight

    @staticmethod
    def loss(module: nn.Module, inputs: list, alpha: float) -> torch.Tensor:
        """One classifier on both branches, each batch's loss weighted by alpha (BBN's cumulative learning)."""
        (x, target), (x_r, target_r) = inputs
        logits = module(x, x_r, alpha)[0].float()  # [B, K]
        return alpha * soft_cross_entropy(logits, target) + (1 - alpha) * soft_cross_entropy(logits, target_r)


PAIRS = {"bbn": Pair(sampler="reversed", head="bbn", alpha=bbn_alpha)}


# ----------------------------------------------------------------------------------------------
# Second stages: cRT


def crt_stage(net: nn.Module, student: nn.Module, *, epochs: int, seed: int, **batches: Any) -> Stage:
    """cRT's second stage: the (EMA) backbone kept and frozen, BatchNorm statistics too, and a fresh
    linear classifier trained on class-balanced batches with plain cross-entropy and its own cosine
    schedule (no warm-up). `batches`: Stage's steps, begin, prepare and count."""

    def enter(run: Run) -> None:
        if run.ema is not None:
            net.load_state_dict(run.ema.module.state_dict())
        reset_classifier_(net.head.fc, seed + 1)

    def freeze() -> None:
        student.requires_grad_(False)
        net.head.fc.requires_grad_(True)

    def loss(module: nn.Module, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        ((x, target),) = inputs
        value = soft_cross_entropy(module(x)[0].float(), target)
        return value, value[None]

    return Stage(epochs=epochs, warmup_epochs=0.0, loss=loss, train_mode=False, freeze=freeze, enter=enter,
                 record={"stage": 2}, **batches)  # fmt: skip


@dataclass(frozen=True)
class SecondStage:
    """Epochs after stage 1 on batches from `sampler`; `make(net, student, epochs=, seed=, **batches)` builds it."""

    sampler: str
    make: Callable[..., Stage]


SECOND_STAGES = {"crt": SecondStage(sampler="balanced", make=crt_stage)}


# ----------------------------------------------------------------------------------------------
# Final transforms: tau-norm


def _tau_norm(config: Any, weights: nn.Module, figures: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Record the figures before, then tau-normalise the classifier in place (those are the weights saved)."""
    before = {k: v for k, v in figures().items() if k != "per_class"}
    tau_normalize_(weights.head.fc, config.tau)
    return {"before_tau_norm": before}


FINISHES = {"tau-norm": _tau_norm}


def shot_figures(config: Any, result: dict[str, Any], counts: np.ndarray) -> dict[str, Any]:
    """Long-tail figures of an evaluation with predictions (zennas.train.longtail.longtail_metrics)."""
    return longtail_metrics(result["predicted"], result["targets"], counts, many=config.many_threshold,
                            few=config.few_threshold)  # fmt: skip


__all__ = [
    "DISTILLERS", "FINISHES", "LOSSES", "PAIRS", "PLAIN", "RECIPES", "SECOND_STAGES", "Distiller", "Pair", "Recipe",
    "SecondStage", "crt_stage", "distilled", "shot_figures",
]  # fmt: skip
