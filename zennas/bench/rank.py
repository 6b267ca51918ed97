"""Rank correlations with stated orientation and degenerate handling, and the rank-averaging ensemble.

Scores passed here are *oriented*: higher = predicted better (a lower-is-better proxy is negated
first), and NaN marks a degenerate result (a network whose output ignores its input).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from zennas.errors import ConfigError

DEGENERATE_MODES = ("worst", "drop")


@dataclass(frozen=True)
class Correlation:
    """Spearman rho and Kendall tau-b of oriented scores against accuracy over n architectures."""

    spearman: float
    kendall: float
    n: int
    degenerate: int  # how many of the n (worst) or of the dropped (drop) were degenerate

    def to_json(self) -> dict[str, float | int]:
        """A JSON-ready dict."""
        return {"spearman": self.spearman, "kendall": self.kendall, "n": self.n, "degenerate": self.degenerate}


def orient(values: Sequence[float | None], higher_is_better: bool) -> np.ndarray:
    """Scores as floats with higher = better; None (degenerate) becomes NaN."""
    array = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return array if higher_is_better else -array


def handle_degenerate(scores: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, keep-mask): 'worst' ties every NaN below the lowest finite score, 'drop' masks them out."""
    if mode not in DEGENERATE_MODES:
        raise ConfigError(f"degenerate handling must be one of {', '.join(DEGENERATE_MODES)}, got {mode!r}")
    bad = np.isnan(scores)
    if mode == "drop":
        return scores, ~bad
    finite = scores[~bad]
    # Any value below the minimum gives the same ranks; a finite one keeps scipy free of inf arithmetic.
    floor = (finite.min() - 1.0) if finite.size else 0.0
    return np.where(bad, floor, scores), np.ones_like(bad)


def correlate(scores: np.ndarray, accuracy: np.ndarray, degenerate: str = "worst") -> Correlation:
    """Spearman and Kendall tau-b between oriented scores (NaN = degenerate) and accuracy."""
    scores = np.asarray(scores, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    n_degenerate = int(np.isnan(scores).sum())
    filled, keep = handle_degenerate(scores, degenerate)
    x, y = filled[keep], accuracy[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(float("nan"), float("nan"), int(x.size), n_degenerate)
    rho = stats.spearmanr(x, y).statistic
    tau = stats.kendalltau(x, y, variant="b").statistic
    return Correlation(float(rho), float(tau), int(x.size), n_degenerate)


def rank_aggregate(scores: Mapping[str, np.ndarray], members: Sequence[str]) -> np.ndarray:
    """Mean over `members` of each architecture's normalised rank (0..1, higher = better).

    Scores are oriented; NaN (degenerate) is ranked below every finite score of that proxy (all
    NaNs tie), so a network that one member cannot score is not rescued by the others.
    """
    if not members:
        raise ConfigError("an aggregate needs at least one member proxy")
    missing = [m for m in members if m not in scores]
    if missing:
        raise ConfigError(f"aggregate member(s) {', '.join(missing)} were not scored; add them to --proxy")
    n = len(np.asarray(scores[members[0]]))
    total = np.zeros(n)
    for name in members:
        filled, _ = handle_degenerate(np.asarray(scores[name], dtype=float), "worst")
        if filled.shape != (n,):
            raise ConfigError(f"aggregate member {name} has {filled.size} scores, expected {n}")
        # Average ranks for ties; dividing by n keeps the ensemble independent of the population size.
        total += stats.rankdata(filled) / max(n, 1)
    return total / len(members)


def split_half(keys: Sequence[str | int], seed: int = 0) -> np.ndarray:
    """Boolean mask, True = selection half: a fixed hash of (seed, key), so a row's half never depends on the others."""
    return np.array([hashlib.sha256(f"{seed}:{k}".encode()).digest()[0] % 2 == 0 for k in keys], dtype=bool)


def select_members(
    scores: Mapping[str, np.ndarray],
    accuracy: np.ndarray,
    candidates: Sequence[str] | None = None,
    *,
    max_members: int = 4,
) -> list[str]:
    """The subset (size 2..max_members) of candidate proxies whose rank average has the highest Spearman.

    Exhaustive over subsets (a few thousand rank averages at most); ties go to the smaller, then
    alphabetically first subset, so the choice is deterministic.
    """
    names = sorted(candidates if candidates is not None else scores)
    if len(names) < 2:
        raise ConfigError("selecting an aggregate needs at least two scored proxies; add more to --proxy")
    accuracy = np.asarray(accuracy, dtype=float)
    ranks = {name: rank_aggregate(scores, [name]) for name in names}  # per-proxy normalised ranks, once
    best: tuple[float, int, tuple[str, ...]] | None = None
    for size in range(2, min(max_members, len(names)) + 1):
        for subset in itertools.combinations(names, size):
            combined = np.mean([ranks[name] for name in subset], axis=0)
            rho = stats.spearmanr(combined, accuracy).statistic
            if np.isnan(rho):
                continue
            candidate = (-float(rho), size, subset)
            if best is None or candidate < best:
                best = candidate
    if best is None:
        raise ConfigError("no proxy combination has a defined Spearman on the selection half")
    return list(best[2])


class RankEnsemble:
    """The rank-average ensemble for one architecture at a time, calibrated on a reference sample.

    A rank needs a population, so a lone architecture is placed by its empirical percentile in each
    member's reference scores (a fixed random sample of the search space, scored once); the ensemble
    score is the mean percentile. On the reference sample itself it equals `rank_aggregate` minus
    1 / (2 n), so it orders architectures identically.
    """

    def __init__(self, members: Sequence[str], reference: Mapping[str, np.ndarray]) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member proxy")
        self.members = list(members)
        self._sorted: dict[str, np.ndarray] = {}
        self._degenerate: dict[str, int] = {}
        for name in self.members:
            if name not in reference:
                raise ConfigError(f"no reference scores for ensemble member {name}")
            values = np.asarray(reference[name], dtype=float)
            self._sorted[name] = np.sort(values[~np.isnan(values)])
            self._degenerate[name] = int(np.isnan(values).sum())

    def score(self, oriented: Mapping[str, float | None]) -> float:
        """Mean mid-rank percentile (0..1) of one architecture's oriented member scores; None/NaN = degenerate."""
        total = 0.0
        for name in self.members:
            value = oriented[name]
            ref, bad = self._sorted[name], self._degenerate[name]
            if value is None or np.isnan(value):
                below, upto = 0, bad  # tied with the reference's degenerate networks, below all others
            else:
                # Mid-rank, as rankdata's average rank does for ties; degenerate references sit below.
                below = bad + int(np.searchsorted(ref, value, side="left"))
                upto = bad + int(np.searchsorted(ref, value, side="right"))
            total += (below + upto) / 2 / (ref.size + bad)
        return total / len(self.members)
