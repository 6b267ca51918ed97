"""Long-tailed recognition tools: imbalanced subsets, re-sampling, re-weighting, adjusted losses, metrics.

Definitions (each from its paper; the trainer composes them into the `--method` recipes):
- Long-tailed subset: class i keeps n_i = floor(n_max * IF^(-i/(C-1))) images (exponential profile,
  Cui et al. CVPR 2019 / Cao et al. NeurIPS 2019), drawn with a seeded generator; IF = n_max / n_min.
- Class-balanced re-sampling: every class equally likely (per-sample weight 1/n_c). Square-root
  re-sampling: class probability proportional to sqrt(n_c) (per-sample weight n_c^-1/2) (Mahajan et
  al. 2018; Kang et al. ICLR 2020). BBN's reversed sampler: class probability proportional to 1/n_c.
- Class-balanced re-weighting (Cui et al. CVPR 2019): w_c proportional to (1 - beta) / (1 - beta^n_c)
  (the inverse effective number), scaled so the weights sum to C.
- Logit adjustment (Menon et al. ICLR 2021): cross-entropy of logits + tau * log(prior); predictions
  use the raw logits. Balanced softmax (Ren et al. NeurIPS 2020): cross-entropy of logits + log n_c,
  the same loss with tau = 1 up to a constant shift (which softmax ignores).
- tau-normalisation (Kang et al. ICLR 2020): classifier rows w_c / ||w_c||^tau, bias dropped.
- BBN cumulative learning (Zhou et al. CVPR 2020): alpha = 1 - (epoch / epochs)^2 weights the
  conventional branch; inference uses alpha = 0.5.
- DiVE (He et al. ICCV 2021): the teacher's softened predictions softmax(z / T) are flattened further
  by a power p < 1 and renormalised, and distilled with T^2 * KL.
- Shot groups (Liu et al. CVPR 2019): many-shot classes have > 100 training images, few-shot < 20,
  medium the rest; the thresholds are arguments, since small datasets need smaller ones.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError
from zennas.train import LONGTAIL_METHODS


def longtail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Images per class of the exponential profile: n_i = floor(n_max * IF^(-i/(C-1)))."""
    if imbalance_factor < 1 or not math.isfinite(imbalance_factor):
        raise ConfigError(f"imbalance factor must be a finite number >= 1, got {imbalance_factor}")
    if num_classes < 2:
        raise ConfigError(f"a long-tailed subset needs at least 2 classes, got {num_classes}")
    return [max(1, int(n_max * imbalance_factor ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def longtail_subset(labels: Sequence[int], imbalance_factor: float, *, seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset of a (roughly balanced) labelled set; class i keeps n_i images.

    n_max is the smallest class size of the full set (so every class can supply its quota); the
    kept images of each class are a seeded uniform draw. Returns sorted indices.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2 or classes[0] != 0 or classes[-1] != len(classes) - 1:
        raise ConfigError("labels must be 0..C-1 with at least 2 classes")
    per_class = [np.flatnonzero(labels == c) for c in classes]
    n_max = min(len(p) for p in per_class)
    rng = np.random.default_rng(seed)
    quotas = longtail_counts(n_max, len(classes), imbalance_factor)
    keep = [rng.choice(p, size=n, replace=False) for p, n in zip(per_class, quotas, strict=True)]
    return np.sort(np.concatenate(keep))


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Images per class; a class without images is an error (its weight would be infinite)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)  # [C]
    if (counts == 0).any():
        missing = ", ".join(map(str, np.flatnonzero(counts == 0)))
        raise ConfigError(f"classes {missing} have no training images; every class needs at least one")
    return counts


def sample_weights(labels: Sequence[int], num_classes: int, mode: str) -> np.ndarray:
    """Per-sample weights for a WeightedRandomSampler: `balanced` (1/n_c), `sqrt` (n_c^-1/2), `reversed` (1/n_c^2).

    Class c is then drawn with probability proportional to n_c * weight: 1 (balanced), sqrt(n_c),
    or 1/n_c (BBN's reversed sampler).
    """
    counts = class_counts(labels, num_classes).astype(np.float64)
    power = {"balanced": 1.0, "sqrt": 0.5, "reversed": 2.0}.get(mode)
    if power is None:
        raise ConfigError(f"unknown sampling mode {mode!r}; choose balanced, sqrt or reversed")
    return counts[np.asarray(labels)] ** -power


def class_balanced_weights(counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Cui et al.'s weights (1 - beta) / (1 - beta^n_c), scaled to sum to the number of classes."""
    if not 0 <= beta < 1:
        raise ConfigError(f"beta must lie in [0, 1), got {beta}")
    n = np.asarray(counts, dtype=np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, n))  # beta = 0: all ones
    return torch.tensor(weights / weights.sum() * len(n), dtype=torch.float32)


def adjusted_logits(logits: torch.Tensor, counts: Sequence[int], tau: float = 1.0) -> torch.Tensor:
    """logits + tau * log(prior) [N, C]: the training logits of logit adjustment / balanced softmax."""
    prior = torch.as_tensor(np.asarray(counts, dtype=np.float64) / np.sum(counts), dtype=logits.dtype)
    return logits + tau * torch.log(prior).to(logits.device)


def logit_adjusted_loss(logits: torch.Tensor, target: torch.Tensor, counts: Sequence[int], tau: float = 1.0,
                        label_smoothing: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Menon et al.'s logit-adjusted cross-entropy (tau = 1 is Ren et al.'s balanced softmax)."""
    return F.cross_entropy(adjusted_logits(logits, counts, tau), target, label_smoothing=label_smoothing)


def tau_normalize_(linear: nn.Linear, tau: float) -> None:
    """Kang et al.'s tau-normalisation in place: rows w_c / ||w_c||^tau, bias set to zero."""
    with torch.no_grad():
        norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [C, 1]
        linear.weight.div_(norms.pow(tau))
        if linear.bias is not None:
            linear.bias.zero_()


def bbn_alpha(epoch: int, epochs: int) -> float:
    """BBN's cumulative-learning weight of the conventional branch at `epoch` (0-based) of `epochs`."""
    return 1.0 - (epoch / epochs) ** 2


def flattened_teacher(teacher_logits: torch.Tensor, temperature: float = 3.0, power: float = 0.5) -> torch.Tensor:
    """DiVE's virtual-example distribution [N, C]: softmax(z / T) ** power, renormalised."""
    if temperature <= 0 or not 0 < power <= 1:
        raise ConfigError(f"DiVE needs temperature > 0 and 0 < power <= 1, got {temperature}, {power}")
    p = F.softmax(teacher_logits / temperature, dim=1).pow(power)
    return p / p.sum(dim=1, keepdim=True)


def dive_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              counts: Sequence[int], *, alpha: float = 0.5, temperature: float = 3.0,
              power: float = 0.5) -> torch.Tensor:  # fmt: skip
    """(1 - alpha) * balanced-softmax CE + alpha * T^2 * KL(flattened teacher || student at T)."""
    q = flattened_teacher(teacher_logits, temperature, power)
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_p, q, reduction="batchmean")
    return (1 - alpha) * logit_adjusted_loss(student_logits, target, counts) + alpha * temperature**2 * kl


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> dict[str, np.ndarray]:
    """Class indices per group: many (> many images), few (< few), medium (the rest)."""
    counts = np.asarray(train_counts)
    if few > many:
        raise ConfigError(f"few-shot threshold {few} exceeds the many-shot threshold {many}")
    return {
        "many": np.flatnonzero(counts > many),
        "medium": np.flatnonzero((counts <= many) & (counts >= few)),
        "few": np.flatnonzero(counts < few),
    }


def longtail_metrics(predictions: Sequence[int], targets: Sequence[int], train_counts: Sequence[int], *,
                     many: int = 100, few: int = 20) -> dict[str, object]:  # fmt: skip
    """top1, balanced_top1 (mean per-class accuracy), many/medium/few (mean per-class accuracy of the
    group, None for an empty group) and per_class, all in percent."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    num_classes = len(train_counts)
    per_class = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = targets == c
        if mask.any():
            per_class[c] = 100.0 * float(np.mean(predictions[mask] == c))
    out: dict[str, object] = {
        "top1": 100.0 * float(np.mean(predictions == targets)),
        "balanced_top1": float(np.nanmean(per_class)),
        "per_class": [None if np.isnan(v) else float(v) for v in per_class],
    }
    for name, classes in shot_groups(train_counts, many, few).items():
        values = per_class[classes]
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if len(values) else None
    return out


# ----------------------------------------------------------------------------------------------
# The `zennas train longtail --method` recipes

METHODS = LONGTAIL_METHODS  # each a recipe of plug-ins: zennas.train.methods.RECIPES


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None):
    """mean_i sum_c -w_c t_ic log softmax(z_i)_c for soft targets t [N, C] (w = 1 without weights).

    With one-hot targets this is (weighted) cross-entropy averaged over the batch, Cui et al.'s form
    of class-balanced re-weighting (not normalised by the sum of the weights).
    """
    log_p = F.log_softmax(logits, dim=1)  # [N, C]
    if class_weights is not None:
        target = target * class_weights.to(target.device)
    return -(target * log_p).sum(dim=1).mean()


class EpochSampler(torch.utils.data.Sampler):
    """Weighted sampling with replacement, redrawn each epoch from (seed, epoch); this rank's share.

    `num_samples` draws (default: the dataset's size, so an epoch keeps its length) are made on
    every rank with the same generator and split rank::world, so DDP ranks see disjoint slices and
    a resumed run draws exactly what the uninterrupted one drew.
    """

    def __init__(
        self, weights: np.ndarray, *, seed: int, rank: int = 0, world: int = 1, num_samples: int | None = None
    ):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        total = len(self.weights) if num_samples is None else num_samples
        self.per_rank = total // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1_009 + 7)
        drawn = torch.multinomial(self.weights, self.per_rank * self.world, replacement=True, generator=g)
        return iter(drawn[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


class BilateralNetwork(nn.Module):
    """BBN (Zhou et al. CVPR 2020) on a zennas Network: shared blocks, then two copies of the last block.

    The conventional branch is the network's own last block; the re-balancing branch a fresh copy
    of it (re-initialised). Each branch is pooled; the classifier sees [alpha f_c, (1 - alpha) f_r]
    (one linear layer on the concatenation is W_c alpha f_c + W_r (1 - alpha) f_r). Training feeds
    the uniform batch to the conventional branch and the reversed-sampler batch to the re-balancing
    one; inference feeds the same images to both with alpha = 0.5.
    """

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        blocks = list(net.blocks)
        if len(blocks) < 2 or not isinstance(getattr(net.head, "fc", None), nn.Linear):
            raise ConfigError("BBN needs a zennas network with at least 2 blocks and a linear classifier")
        self.shared = nn.Sequential(*blocks[:-1])
        self.conventional = blocks[-1]
        self.rebalancing = copy.deepcopy(blocks[-1])
        for module in self.rebalancing.modules():
            if module is not self.rebalancing and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.fc = nn.Linear(2 * net.head.fc.in_features, num_classes)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # [B, C]

    def forward(self, x: torch.Tensor, x_reversed: torch.Tensor | None = None, alpha: float = 0.5) -> torch.Tensor:
        """Logits [B, K]; with `x_reversed` (training) the two batches share one pass of the shared blocks."""
        if x_reversed is None:
            h = self.shared(x)
            h_c = h_r = h
        else:
            # one pass over both batches: BatchNorm sees them together, as BBN's shared backbone does
            h_c, h_r = self.shared(torch.cat([x, x_reversed])).split([x.shape[0], x_reversed.shape[0]])
        f_c = self._pool(self.conventional(h_c))  # [B, C]
        f_r = self._pool(self.rebalancing(h_r))  # [B, C]
        return self.fc(torch.cat([alpha * f_c, (1 - alpha) * f_r], dim=1))


def reset_classifier_(linear: nn.Linear, seed: int) -> None:
    """Re-initialise a classifier deterministically (cRT's second stage starts from a fresh one)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear.reset_parameters()
