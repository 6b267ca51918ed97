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

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError


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
