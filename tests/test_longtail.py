"""Long-tail primitives against their definitions, computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError
from zennas.train.longtail import (
    adjusted_logits,
    bbn_alpha,
    class_balanced_weights,
    dive_loss,
    flattened_teacher,
    logit_adjusted_loss,
    longtail_counts,
    longtail_metrics,
    longtail_subset,
    sample_weights,
    shot_groups,
    tau_normalize_,
)


def test_longtail_profile_cifar10_lt():
    # CIFAR-10-LT with IF 100 (Cao et al.): 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50
    assert longtail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert longtail_counts(500, 100, 1) == [500] * 100
    with pytest.raises(ConfigError, match="imbalance factor"):
        longtail_counts(100, 10, 0.5)


def test_longtail_subset_counts_and_determinism():
    labels = np.repeat(np.arange(10), 180)
    idx = longtail_subset(labels, 50, seed=3)
    counts = np.bincount(labels[idx], minlength=10)
    expected = [int(180 * 50 ** (-i / 9)) for i in range(10)]
    assert counts.tolist() == expected and expected[0] == 180 and expected[-1] == 3  # floor(180 / 50)
    assert np.array_equal(idx, longtail_subset(labels, 50, seed=3))
    assert not np.array_equal(idx, longtail_subset(labels, 50, seed=4))
    assert len(np.unique(idx)) == len(idx)


@pytest.mark.parametrize(("mode", "class_share"), [("balanced", lambda n: np.ones_like(n)), ("sqrt", np.sqrt),
                                                   ("reversed", lambda n: 1.0 / n)])  # fmt: skip
def test_sampling_modes_give_the_intended_class_probabilities(mode, class_share):
    counts = np.array([400, 100, 25, 4])
    labels = np.repeat(np.arange(4), counts)
    w = sample_weights(labels, 4, mode)
    per_class = np.array([w[labels == c].sum() for c in range(4)])
    target = class_share(counts.astype(float))
    np.testing.assert_allclose(per_class / per_class.sum(), target / target.sum(), rtol=1e-12)


def test_class_balanced_weights_match_effective_numbers():
    counts = [1000, 100, 10]
    beta = 0.999
    effective = [(1 - beta**n) / (1 - beta) for n in counts]  # Cui et al.'s E_n
    inverse = np.array([1 / e for e in effective])
    np.testing.assert_allclose(class_balanced_weights(counts, beta).numpy(), inverse / inverse.sum() * 3, rtol=1e-6)
    # beta -> 0: no re-weighting; beta -> 1: inverse frequency
    np.testing.assert_allclose(class_balanced_weights(counts, 0.0).numpy(), [1, 1, 1])
    inv = np.array([1 / n for n in counts])
    np.testing.assert_allclose(class_balanced_weights(counts, 1 - 1e-9).numpy(), inv / inv.sum() * 3, rtol=1e-3)


def test_logit_adjustment_and_balanced_softmax():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    counts = [500, 100, 20, 4]
    prior = np.array(counts) / sum(counts)
    manual = F.cross_entropy(logits + torch.tensor(np.log(prior), dtype=torch.float32), target)
    assert logit_adjusted_loss(logits, target, counts).item() == pytest.approx(manual.item(), rel=1e-6)
    # balanced softmax uses log n_c: a constant shift of log prior, which softmax ignores
    bs = F.cross_entropy(logits + torch.log(torch.tensor(counts, dtype=torch.float32)), target)
    assert logit_adjusted_loss(logits, target, counts).item() == pytest.approx(bs.item(), rel=1e-6)
    assert torch.equal(adjusted_logits(logits, counts, tau=0.0), logits)


def test_tau_normalisation():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    norms = linear.weight.detach().norm(dim=1).clone()
    tau_normalize_(linear, 0.5)
    np.testing.assert_allclose(linear.weight.norm(dim=1).detach().numpy(), norms.pow(0.5).numpy(), rtol=1e-5)
    assert torch.count_nonzero(linear.bias) == 0
    tau_normalize_(linear, 1.0)
    np.testing.assert_allclose(linear.weight.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)


def test_bbn_cumulative_learning():
    assert [bbn_alpha(t, 10) for t in (0, 5, 10)] == [1.0, 0.75, 0.0]


def test_dive_teacher_is_flatter_and_loss_composes():
    torch.manual_seed(0)
    z = torch.randn(5, 6) * 4
    q = flattened_teacher(z, 3.0, 0.5)
    p = F.softmax(z / 3.0, dim=1)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0, rtol=1e-6)
    entropy = lambda d: -(d * d.log()).sum(1)  # noqa: E731
    assert bool((entropy(q) > entropy(p)).all())
    s, y, counts = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 4, 5]), [60, 40, 20, 10, 5, 2]
    y = y[:5]
    kl = F.kl_div(F.log_softmax(s / 3.0, dim=1), q, reduction="batchmean")
    expected = 0.5 * logit_adjusted_loss(s, y, counts) + 0.5 * 9 * kl
    assert dive_loss(s, z, y, counts).item() == pytest.approx(expected.item(), rel=1e-6)


def test_shot_groups_and_metrics():
    counts = [150, 120, 60, 30, 10, 5]
    groups = shot_groups(counts)
    assert [g.tolist() for g in groups.values()] == [[0, 1], [2, 3], [4, 5]]
    targets = np.repeat(np.arange(6), 10)
    predictions = targets.copy()
    predictions[targets == 5] = 0  # class 5 always wrong
    predictions[np.flatnonzero(targets == 4)[:5]] = 1  # class 4 half wrong
    m = longtail_metrics(predictions, targets, counts)
    assert m["top1"] == pytest.approx(100 * 45 / 60)
    assert m["many"] == 100.0 and m["medium"] == 100.0 and m["few"] == pytest.approx(25.0)
    assert m["balanced_top1"] == pytest.approx((4 * 100 + 50 + 0) / 6)
    assert m["per_class"][4] == 50.0
    assert math.isclose(m["balanced_top1"], float(np.mean([v for v in m["per_class"]])))
