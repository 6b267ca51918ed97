"""Exact constrained search over BINAS-style spaces with scipy.optimize.milp (REFERENCE.md 6.2-6.4).

Procedure (`milp_search`):

1. Sample N members with a seeded generator and score each with the caller's `score_fn`.
2. Fit an estimator linear in the BINAS variables (`fit_estimator`): with alpha one-hot over block
   configurations for every block slot (s, j) and beta one-hot over the depths of stage s, the
   features are y[s, j, c] = alpha[s, j, c] * active[s, j] (a block's configuration counts only when
   the stage is deep enough to hold it; active[s, j] = sum over depths d > j of beta[s, d]) and
   beta[s, d] itself: BINAS's A_base + q_a.alpha + q_b.beta + alpha' Q beta with Q's sparsity. Ridge
   least squares on a training split; Kendall tau on the held-out split; then refit on all samples.
3. Express the table latency in the same variables (`block_latency_model`): every block of stage s
   has fixed input width, stride and input side, so its operators and their table cost (the
   NetworkLatency's `block_ms`) depend on (s, j, c) only; stem, first ds block, last 1x1 conv and
   head are a constant.
   The table's affine correction (intercept_ms + slope * sum) folds into the constant and the
   coefficients exactly. MACs and params are linear the same way (`block_complexity_model`).
4. Solve max estimator s.t. latency <= budget (and optional MAC/param budgets) exactly (`solve`):
   binaries alpha, beta, y; one-hot rows; y = alpha AND active by the three standard inequalities
   y <= alpha, y <= active, y >= alpha + active - 1; two valid equalities that tighten the LP
   relaxation and make alpha canonical (sum_c y[s, j, c] = active[s, j]; an inactive slot holds
   configuration 0, as `BinasLayout.encode` writes it). HiGHS branch and bound with a zero gap.
5. Decode alpha/beta with the space, check membership, recompute latency with the table's own
   prediction (it must equal the linear model) and check every budget; score the chosen network
   once more with `score_fn` (N + 1 proxy evaluations in all).

The module imports no torch, proxies or latency code: the proxy arrives as `score_fn(spec) -> float`
(higher is better; negate a lower-is-better proxy) and the table as a NetworkLatency
(zennas.search.interfaces; zennas.wiring.table_latency builds one from a LatencyTable).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array
from scipy.stats import kendalltau

from zennas.arch import ArchSpec
from zennas.arch.binas import BinasLayout
from zennas.counting import count
from zennas.errors import ConfigError, ZennasError
from zennas.models import DIALECT_DEFAULTS
from zennas.search.interfaces import NetworkLatency

AGREEMENT_RTOL = 1e-9  # linear models vs the table's prediction / zennas.counting on the decoded network
SOLVE_ATTEMPTS = 3  # re-solves with a tightened budget row when solver tolerances let a budget slip


# ---------------------------------------------------------------------------------------------
# Variables


def space_layout(space: Any) -> BinasLayout:
    """The BinasLayout of a space with per-stage depths and per-block choices, else ConfigError."""
    layout = getattr(space, "layout", None)
    if (
        not isinstance(layout, BinasLayout)
        or not callable(getattr(space, "encode", None))
        or not callable(getattr(space, "decode", None))
    ):
        name = getattr(space, "name", type(space).__name__)
        family = (getattr(space, "definition", None) or {}).get("family", "?")
        raise ConfigError(
            "strategy milp needs a space with per-stage depths and per-block choices (binas); "
            f"got {name!r} (family {family}); search this space by evolution instead"
        )
    return layout


def _reach(layout: BinasLayout) -> np.ndarray:
    """reach[j, k] = 1 if a stage of depth depths[k] holds block slot j: [max_depth, depths]."""
    slots = np.arange(layout.max_depth)[:, None]  # [max_depth, 1]
    return (np.asarray(layout.depths)[None, :] > slots).astype(np.float64)


def variables(layout: BinasLayout, spec: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
    """(y [stages, max_depth, configs], beta [stages, depths]) of a member: y = alpha * active."""
    alpha, beta = layout.encode(spec)  # [stages * max_depth, configs], [stages, depths]
    n_stages = len(layout.stages)
    alpha = alpha.reshape(n_stages, layout.max_depth, len(layout.configs)).astype(np.float64)
    active = beta.astype(np.float64) @ _reach(layout).T  # [stages, max_depth]
    return alpha * active[:, :, None], beta.astype(np.float64)


def features(layout: BinasLayout, specs: Sequence[ArchSpec]) -> np.ndarray:
    """Feature rows [len(specs), stages*max_depth*configs + stages*depths]: y then beta, flattened."""
    rows = []
    for spec in specs:
        y, beta = variables(layout, spec)
        rows.append(np.concatenate([y.ravel(), beta.ravel()]))
    width = len(layout.stages) * (layout.max_depth * len(layout.configs) + len(layout.depths))
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


@dataclass(frozen=True, eq=False, kw_only=True)
class BlockLinear:
    """f(spec) = constant + sum block[s, j, c] * y[s, j, c] + sum depth[s, k] * beta[s, k]."""

    layout: BinasLayout = field(repr=False)
    constant: float
    block: np.ndarray = field(repr=False)  # [stages, max_depth, configs]: block (s, j) in config c, when active
    depth: np.ndarray = field(repr=False)  # [stages, depths]: stage s has depths[k] blocks

    def predict(self, spec: ArchSpec) -> float:
        """The model's value for member `spec`."""
        y, beta = variables(self.layout, spec)
        return float(self.constant + np.sum(self.block * y) + np.sum(self.depth * beta))

    def predict_many(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """Values [len(specs)] for many members."""
        return self.constant + features(self.layout, specs) @ self.coefficients

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients [features] in the order of `features`."""
        return np.concatenate([self.block.ravel(), self.depth.ravel()])

    def minimum(self) -> float:
        """Smallest value over the space: per stage, the best depth with the cheapest config per slot."""
        cheapest = self.block.min(axis=2)  # [stages, max_depth]
        per_depth = self.depth + cheapest @ _reach(self.layout)  # [stages, depths]
        return float(self.constant + per_depth.min(axis=1).sum())


@dataclass(frozen=True, eq=False, kw_only=True)
class LinearLatency(BlockLinear):
    """Table latency (ms per batch of `batch_size`, correction included) as a BlockLinear model."""

    latency: NetworkLatency = field(repr=False)
    resolution: int
    num_classes: int
    batch_size: int
    use_se: bool | None = None
    fixed_ms: float  # stem + first ds block + last conv + head, before the correction
    corrected: bool  # the table's affine correction is folded into constant and block
    not_costed: tuple[str, ...] = ()  # operator kinds the table does not tabulate (left out, as predict does)

    def table_latency(self, spec: ArchSpec) -> float:
        """The same figure by the table's own prediction for the whole network (the reference path)."""
        return self.latency.latency_ms_per_batch(spec)


@dataclass(frozen=True, eq=False, kw_only=True)
class BilinearEstimator(BlockLinear):
    """Proxy estimator fitted by ridge least squares; Kendall tau on a held-out split."""

    kendall_tau: float | None  # tau-b of the training-split fit on the held-out samples; None without them
    train_samples: int
    heldout_samples: int
    ridge: float
    refit: bool  # coefficients refitted on all samples after the held-out evaluation


@dataclass(frozen=True, eq=False)
class LinearComplexity:
    """MACs and params of members as BlockLinear models (exact integers in float64)."""

    macs: BlockLinear
    params: BlockLinear
    resolution: int
    num_classes: int
    use_se: bool | None = None


# ---------------------------------------------------------------------------------------------
# Cost models


def _reference_networks(layout: BinasLayout) -> list[ArchSpec]:
    """One network per configuration c: every stage at full depth, every block in config c."""
    n_stages, depth = len(layout.stages), layout.max_depth
    return [layout.make([depth] * n_stages, [(c,) * depth] * n_stages) for c in range(len(layout.configs))]


def block_latency_model(space: Any, latency: NetworkLatency) -> LinearLatency:
    """Latency of every (stage, slot, config) block and of the fixed parts, from the table's operators.

    The operators of full-depth reference networks (one per configuration) are costed per block by
    `latency.block_ms`; block 0 is the stem, 1 the first ds block, then stage by stage every slot,
    then the last conv and the head. Resolution, classes and batch are the latency's
    (zennas.wiring.block_latency_model defaults them from a LatencyTable).
    """
    layout = space_layout(space)
    resolution, num_classes = space_settings(space, latency.resolution, latency.num_classes)
    batch, use_se = latency.batch_size, latency.use_se
    if isinstance(batch, bool) or not isinstance(batch, int) or batch not in latency.batch_sizes:
        raise ConfigError(
            f"batch size {batch!r} is not in latency table {latency.name!r} "
            f"(batch {', '.join(map(str, latency.batch_sizes))}); pick one of those"
        )
    n_stages, depth, n_configs = len(layout.stages), layout.max_depth, len(layout.configs)
    block = np.zeros((n_stages, depth, n_configs))  # [stages, max_depth, configs] ms per batch
    skipped: set[str] = set()
    fixed: list[float] = []
    for c, spec in enumerate(_reference_networks(layout)):
        ms, missing = latency.block_ms(spec)  # kinds the table lacks: left out, as its prediction does
        if len(ms) != n_stages * depth + 4:
            raise ZennasError(
                f"the binas operator lister returned {len(ms)} groups for {n_stages * depth + 4} blocks; "
                "this is a zennas bug, please report it"
            )
        skipped.update(missing)
        block[:, :, c] = np.reshape(ms[2:-2], (n_stages, depth))
        fixed.append(ms[0] + ms[1] + ms[-2] + ms[-1])
    if max(fixed) != min(fixed):
        raise ZennasError("the fixed parts of binas networks differ between configurations; this is a zennas bug")
    constant, slope = fixed[0], 1.0
    correction = latency.correction
    if correction:
        # predict: intercept + slope * (fixed + sum of blocks), distributed over the linear terms.
        slope = float(correction["slope"])
        constant = float(correction["intercept_ms"]) + slope * fixed[0]
    return LinearLatency(
        layout=layout,
        constant=constant,
        block=slope * block,
        depth=np.zeros((n_stages, len(layout.depths))),
        latency=latency,
        resolution=resolution,
        num_classes=num_classes,
        batch_size=batch,
        use_se=use_se,
        fixed_ms=fixed[0],
        corrected=bool(correction),
        not_costed=tuple(sorted(skipped)),
    )


def block_complexity_model(
    space: Any, *, resolution: int | None = None, num_classes: int | None = None, use_se: bool | None = None
) -> LinearComplexity:
    """MACs and params per (stage, slot, config) block plus the fixed parts, from zennas.counting."""
    layout = space_layout(space)
    resolution, num_classes = space_settings(space, resolution, num_classes)
    n_stages, depth, n_configs = len(layout.stages), layout.max_depth, len(layout.configs)
    macs = np.zeros((n_stages, depth, n_configs))  # [stages, max_depth, configs]
    params = np.zeros((n_stages, depth, n_configs))  # [stages, max_depth, configs]
    fixed: set[tuple[int, int]] = set()
    for c, spec in enumerate(_reference_networks(layout)):
        cx = count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
        blocks = cx.blocks  # stem, first ds block, stage blocks, last conv
        macs[:, :, c] = np.reshape([b.macs for b in blocks[2:-1]], (n_stages, depth))
        params[:, :, c] = np.reshape([b.params for b in blocks[2:-1]], (n_stages, depth))
        ends = (blocks[0], blocks[1], blocks[-1])
        fixed.add((sum(b.macs for b in ends) + cx.head_macs, sum(b.params for b in ends) + cx.head_params))
    if len(fixed) != 1:
        raise ZennasError("the fixed parts of binas networks differ between configurations; this is a zennas bug")
    fixed_macs, fixed_params = fixed.pop()
    no_depth = np.zeros((n_stages, len(layout.depths)))
    return LinearComplexity(
        macs=BlockLinear(layout=layout, constant=float(fixed_macs), block=macs, depth=no_depth),
        params=BlockLinear(layout=layout, constant=float(fixed_params), block=params, depth=no_depth),
        resolution=resolution,
        num_classes=num_classes,
        use_se=use_se,
    )


def space_settings(space: Any, resolution: int | None, num_classes: int | None) -> tuple[int, int]:
    """(resolution, num_classes), each the given one (checked) or the space dialect's default."""
    default_resolution, default_classes = DIALECT_DEFAULTS.get(getattr(space, "dialect", "binas"), (224, 1000))
    resolution = default_resolution if resolution is None else resolution
    num_classes = default_classes if num_classes is None else num_classes
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be a non-negative integer (0 = backbone only), got {num_classes!r}")
    return resolution, num_classes


# ---------------------------------------------------------------------------------------------
# Estimator


def _ridge_fit(design: np.ndarray, target: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """(weights [features], intercept) minimising mean squared error + ridge * |w|^2 on standardised targets.

    Centring removes the intercept from the penalty. The one-hot features are collinear (each row of
    y sums to a linear function of beta), so the solution is taken in the eigenbasis of the Gram
    matrix with its null directions dropped: the minimum-norm fit, also when ridge is 0. The
    features x features eigenproblem costs far less than a least-squares solve on the samples.
    """
    n = design.shape[0]
    mean_x = design.mean(axis=0)  # [features]
    mean_t = float(target.mean())
    scale = float(target.std()) or 1.0
    centred = design - mean_x  # [samples, features]
    values, vectors = np.linalg.eigh(centred.T @ centred)  # [features], [features, features]
    keep = values > 1e-10 * max(float(values[-1]), 1e-300)
    basis = vectors[:, keep]  # [features, rank]
    projected = basis.T @ (centred.T @ ((target - mean_t) / scale))  # [rank]
    weights = basis @ (projected / (values[keep] + ridge * n)) * scale  # [features]
    return weights, mean_t - float(mean_x @ weights)


def fit_estimator(
    space: Any,
    specs: Sequence[ArchSpec],
    scores: Sequence[float],
    *,
    heldout_fraction: float = 0.2,
    ridge: float = 1e-4,
    seed: int = 0,
    refit: bool = True,
) -> BilinearEstimator:
    """Fit the bilinear BINAS estimator of `scores` on a seeded training split; tau on the rest.

    A `heldout_fraction` of the samples (seeded permutation) is kept out of the fit and ranked by it
    (scipy.stats.kendalltau, tau-b); with `refit` the returned coefficients are then refitted on all
    samples. `ridge` is the penalty per sample on standardised scores (0.4 % shrinkage of a feature
    present in 1 of 36 samples at the default 1e-4).
    """
    layout = space_layout(space)
    specs = list(specs)
    target = np.asarray(scores, dtype=np.float64)  # [samples]
    if target.shape != (len(specs),):
        raise ConfigError(f"got {len(specs)} architectures but {target.size} scores; give one score per architecture")
    if not np.all(np.isfinite(target)):
        bad = int(np.flatnonzero(~np.isfinite(target))[0])
        raise ConfigError(f"score {bad} is {target[bad]}; the estimator needs finite scores ({specs[bad].canonical})")
    if not 0 <= heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction!r}")
    if not ridge >= 0:
        raise ConfigError(f"ridge must be non-negative, got {ridge!r}")
    n_out = round(heldout_fraction * len(specs))
    if len(specs) - n_out < 2 or (heldout_fraction > 0 and n_out < 2):
        raise ConfigError(
            f"{len(specs)} samples with heldout_fraction {heldout_fraction} leave too few to fit and rank; "
            "give more samples (hundreds for the published binas space)"
        )
    design = features(layout, specs)  # [samples, features]
    order = np.random.default_rng(seed).permutation(len(specs))
    heldout, train = order[:n_out], order[n_out:]
    weights, intercept = _ridge_fit(design[train], target[train], ridge)
    tau = None
    if n_out:
        tau = float(kendalltau(design[heldout] @ weights + intercept, target[heldout]).statistic)
        if refit:
            weights, intercept = _ridge_fit(design, target, ridge)
    n_block = len(layout.stages) * layout.max_depth * len(layout.configs)
    return BilinearEstimator(
        layout=layout,
        constant=intercept,
        block=weights[:n_block].reshape(len(layout.stages), layout.max_depth, len(layout.configs)),
        depth=weights[n_block:].reshape(len(layout.stages), len(layout.depths)),
        kendall_tau=tau,
        train_samples=len(train),
        heldout_samples=n_out,
        ridge=ridge,
        refit=refit and n_out > 0,
    )


# ---------------------------------------------------------------------------------------------
# Exact solve


@dataclass(frozen=True)
class MilpSolution:
    """The solver's network and its figures (latency by the table's prediction, counts exact)."""

    spec: ArchSpec
    estimated_score: float
    latency_ms_per_batch: float
    batch_size: int
    macs: int
    params: int
    status: str  # "optimal", or "time limit" (best network found, optimality not proven)
    mip_gap: float | None
    solve_seconds: float
    variables: int
    constraints: int

    @property
    def latency_ms_per_image(self) -> float:
        return self.latency_ms_per_batch / self.batch_size


class _Rows:
    """Sparse constraint rows lo <= A x <= hi, built one row at a time."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, terms: Sequence[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(self.lo)
        for col, val in terms:
            self.rows.append(row)
            self.cols.append(col)
            self.vals.append(val)
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, width: int) -> LinearConstraint:
        matrix = csr_array((self.vals, (self.rows, self.cols)), shape=(len(self.lo), width))
        return LinearConstraint(matrix, np.array(self.lo), np.array(self.hi))


class _Index:
    """Column of each binary: alpha[s, j, c], then beta[s, k], then y[s, j, c]."""

    def __init__(self, layout: BinasLayout):
        self.stages, self.slots = len(layout.stages), layout.max_depth
        self.configs, self.depths = len(layout.configs), len(layout.depths)
        self.n_alpha = self.stages * self.slots * self.configs
        self.n_beta = self.stages * self.depths
        self.width = 2 * self.n_alpha + self.n_beta

    def alpha(self, s: int, j: int, c: int) -> int:
        return (s * self.slots + j) * self.configs + c

    def beta(self, s: int, k: int) -> int:
        return self.n_alpha + s * self.depths + k

    def y(self, s: int, j: int, c: int) -> int:
        return self.n_alpha + self.n_beta + self.alpha(s, j, c)


def _structure(layout: BinasLayout, index: _Index) -> LinearConstraint:
    """One-hot rows, y = alpha AND active, and the two tightening equalities."""
    reach = _reach(layout)
    rows = _Rows()
    for s in range(index.stages):
        rows.add([(index.beta(s, k), 1.0) for k in range(index.depths)], 1, 1)
        for j in range(index.slots):
            active = [(index.beta(s, k), 1.0) for k in range(index.depths) if reach[j, k]]
            minus_active = [(col, -val) for col, val in active]
            rows.add([(index.alpha(s, j, c), 1.0) for c in range(index.configs)], 1, 1)
            for c in range(index.configs):
                a, y = index.alpha(s, j, c), index.y(s, j, c)
                rows.add([(y, 1.0), (a, -1.0)], -np.inf, 0)  # y <= alpha
                rows.add([(y, 1.0), *minus_active], -np.inf, 0)  # y <= active
                rows.add([(a, 1.0), *active, (y, -1.0)], -np.inf, 1)  # y >= alpha + active - 1
            rows.add([*((index.y(s, j, c), 1.0) for c in range(index.configs)), *minus_active], 0, 0)
            rows.add([(index.alpha(s, j, 0), 1.0), *active], 1, np.inf)  # inactive slot -> config 0
    return rows.constraint(index.width)


def _budget_row(model: BlockLinear, index: _Index, limit: float) -> LinearConstraint:
    """model(x) <= limit as one row over the beta and y columns."""
    row = np.zeros(index.width)  # [variables]
    row[index.n_alpha : index.n_alpha + index.n_beta] = model.depth.ravel()
    row[index.n_alpha + index.n_beta :] = model.block.ravel()
    return LinearConstraint(row[None, :], -np.inf, limit - model.constant)


def _figure(value: float) -> str:
    """Counts with thousands separators (4,740,621), other figures with six significant digits."""
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1e4 else f"{value:.6g}"


def _check_budget(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _check_latency_floor(space: Any, latency_model: LinearLatency, budget: float) -> str:
    """ConfigError naming the fastest network's latency if `budget` is below it; else the table's description."""
    where = (
        f"latency table {latency_model.latency.name!r}, batch {latency_model.batch_size}, "
        f"resolution {latency_model.resolution}"
    )
    lowest = latency_model.minimum()
    if budget < lowest:
        raise ConfigError(
            f"latency budget {budget:.6g} ms per batch is infeasible: the fastest network of search space "
            f"{space.name!r} takes {lowest:.6g} ms per batch ({where}); raise the budget to at least that"
        )
    return where


def solve(
    space: Any,
    estimator: BlockLinear,
    latency_model: LinearLatency,
    budget_ms: float,
    *,
    macs_budget: float | None = None,
    params_budget: float | None = None,
    complexity: LinearComplexity | None = None,
    time_limit: float | None = None,
    mip_rel_gap: float = 0.0,
) -> MilpSolution:
    """Maximise `estimator` subject to latency <= budget_ms (ms per batch of the model's batch) exactly.

    Optional MAC and parameter budgets use `complexity` (built at the latency model's resolution and
    classes when omitted). A budget below the smallest achievable value is a ConfigError naming it.
    The network is decoded with the space, checked for membership, and its latency recomputed with
    the table's own prediction; if solver tolerances let a budget slip, the row is tightened by twice
    the excess and the problem re-solved (at most SOLVE_ATTEMPTS times). `time_limit` (seconds)
    applies to each solve; a network found when it runs out has status "time limit".
    """
    layout = space_layout(space)
    for model, what in ((estimator, "estimator"), (latency_model, "latency model")):
        if model.layout != layout:
            raise ConfigError(f"the {what} was built for another space layout than {space.name!r}; rebuild it")
    budget = _check_budget(budget_ms, "latency budget (ms per batch)")
    budgets: dict[str, tuple[BlockLinear, float]] = {"latency": (latency_model, budget)}
    if macs_budget is not None or params_budget is not None:
        if complexity is None:
            complexity = block_complexity_model(
                space,
                resolution=latency_model.resolution,
                num_classes=latency_model.num_classes,
                use_se=latency_model.use_se,
            )
        if macs_budget is not None:
            budgets["MACs"] = (complexity.macs, _check_budget(macs_budget, "MACs budget"))
        if params_budget is not None:
            budgets["params"] = (complexity.params, _check_budget(params_budget, "params budget"))
    floors = {name: model.minimum() for name, (model, _) in budgets.items()}
    where = _check_latency_floor(space, latency_model, budget)
    for name, (_, limit) in budgets.items():
        if name != "latency" and limit < floors[name]:
            raise ConfigError(
                f"{name} budget {_figure(limit)} is infeasible: the smallest network of search space {space.name!r} "
                f"has {_figure(floors[name])} {name}; raise the budget to at least that"
            )

    index = _Index(layout)
    structure = _structure(layout, index)
    objective = np.zeros(index.width)  # [variables]; milp minimises
    objective[index.n_alpha : index.n_alpha + index.n_beta] = -estimator.depth.ravel()
    objective[index.n_alpha + index.n_beta :] = -estimator.block.ravel()
    scale = float(np.abs(objective).max()) or 1.0
    if isinstance(mip_rel_gap, bool) or not isinstance(mip_rel_gap, int | float) or not 0 <= mip_rel_gap < 1:
        raise ConfigError(f"mip_rel_gap must lie in [0, 1) (0 proves optimality), got {mip_rel_gap!r}")
    options: dict[str, Any] = {"mip_rel_gap": mip_rel_gap}
    if time_limit is not None:
        options["time_limit"] = _check_budget(time_limit, "time_limit (seconds)")
    slack = dict.fromkeys(budgets, 0.0)
    seconds = 0.0
    for _ in range(SOLVE_ATTEMPTS):
        rows = [_budget_row(model, index, limit - slack[name]) for name, (model, limit) in budgets.items()]
        start = time.perf_counter()
        result = milp(
            objective / scale,
            integrality=np.ones(index.width),
            bounds=Bounds(0, 1),
            constraints=[structure, *rows],
            options=options,
        )
        seconds += time.perf_counter() - start
        if result.status == 2 and not any(slack.values()):
            figures = ", ".join(f"{name} {_figure(floors[name])}" for name in budgets)
            asked = ", ".join(f"{name} <= {_figure(limit)}" for name, (_, limit) in budgets.items())
            raise ConfigError(
                f"no network of search space {space.name!r} meets {asked} together (latency in ms per batch, "
                f"{where}); each minimised alone: {figures}; relax a budget"
            )
        if result.x is None:
            if result.status == 1:
                raise ConfigError(f"the MILP found no network within time_limit={time_limit} s; raise time_limit")
            raise ZennasError(f"scipy.optimize.milp failed ({result.message}); this is a zennas bug, please report it")
        spec, figures_now = _decode(space, layout, index, np.round(result.x), latency_model, complexity)
        excess = {name: figures_now[name] - limit for name, (_, limit) in budgets.items()}
        if all(value <= 0 for value in excess.values()):
            break
        for name, value in excess.items():
            if value > 0:
                slack[name] += 2 * value + 1e-12 * abs(budgets[name][1])
    else:
        raise ZennasError(
            f"the MILP solution exceeds a budget after {SOLVE_ATTEMPTS} tightened solves ({excess}); "
            "this is a zennas bug, please report it"
        )
    estimated = estimator.predict(spec)
    solver_value = estimator.constant - float(result.fun) * scale
    if abs(estimated - solver_value) > 1e-6 * scale * (index.stages * (index.slots + 1)) + 1e-9 * abs(estimated):
        raise ZennasError(
            f"the MILP objective {solver_value!r} disagrees with the estimator on the decoded network "
            f"({estimated!r}); this is a zennas bug, please report it"
        )
    return MilpSolution(
        spec=spec,
        estimated_score=estimated,
        latency_ms_per_batch=figures_now["latency"],
        batch_size=latency_model.batch_size,
        macs=int(figures_now["MACs"]),
        params=int(figures_now["params"]),
        status="optimal" if result.status == 0 else "time limit",
        mip_gap=None if getattr(result, "mip_gap", None) is None else float(result.mip_gap),
        solve_seconds=seconds,
        variables=index.width,
        constraints=structure.A.shape[0] + len(budgets),
    )


def _decode(
    space: Any,
    layout: BinasLayout,
    index: _Index,
    x: np.ndarray,
    latency_model: LinearLatency,
    complexity: LinearComplexity | None,
) -> tuple[ArchSpec, dict[str, float]]:
    """Network of a rounded solution [variables], checked; its latency (predict) and exact counts."""
    alpha = x[: index.n_alpha].reshape(index.stages * index.slots, index.configs)  # [stages*max_depth, configs]
    beta = x[index.n_alpha : index.n_alpha + index.n_beta].reshape(index.stages, index.depths)  # [stages, depths]
    y = x[index.n_alpha + index.n_beta :].reshape(index.stages, index.slots, index.configs)
    spec = space.decode(alpha, beta)
    if not space.contains(spec):
        raise ZennasError(f"the MILP decoded a non-member ({space.why_not(spec)}); this is a zennas bug")
    alpha_back, beta_back = space.encode(spec)
    y_back, _ = variables(layout, spec)
    if not (np.array_equal(alpha_back, alpha) and np.array_equal(beta_back, beta) and np.array_equal(y_back, y)):
        raise ZennasError("the MILP solution does not re-encode to itself; this is a zennas bug, please report it")
    figures = {"latency": latency_model.table_latency(spec)}
    _agree("latency", latency_model.predict(spec), figures["latency"])
    cx = count(
        spec, resolution=latency_model.resolution, num_classes=latency_model.num_classes, use_se=latency_model.use_se
    )
    figures["MACs"], figures["params"] = float(cx.macs), float(cx.params)
    if complexity is not None:
        _agree("MACs", complexity.macs.predict(spec), figures["MACs"])
        _agree("params", complexity.params.predict(spec), figures["params"])
    return spec, figures


def _agree(what: str, linear: float, reference: float) -> None:
    if abs(linear - reference) > AGREEMENT_RTOL * max(abs(reference), 1e-12):
        raise ZennasError(
            f"the linear {what} model gives {linear!r} but the reference computation {reference!r}; "
            "this is a zennas bug, please report it"
        )


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass(frozen=True)
class MilpSearchResult:
    """What `milp_search` found and what it cost."""

    spec: ArchSpec
    score: float  # score_fn of spec
    estimated_score: float
    latency_ms_per_batch: float
    latency_ms_per_image: float
    batch_size: int
    macs: int
    params: int
    kendall_tau: float | None  # estimator on the held-out samples
    proxy_evaluations: int  # samples + 1 (the chosen network)
    samples: int
    best_sampled_spec: ArchSpec | None  # best sample within the budgets: random search at the same cost
    best_sampled_score: float | None
    solution: MilpSolution = field(repr=False)
    estimator: BilinearEstimator = field(repr=False)
    scoring_seconds: float
    fit_seconds: float
    solve_seconds: float


def _score(score_fn: Callable[[ArchSpec], float], spec: ArchSpec) -> float:
    value = float(score_fn(spec))
    if not math.isfinite(value):
        raise ConfigError(f"score_fn returned {value} for {spec.canonical}; the MILP estimator needs finite scores")
    return value


def milp_search(
    space: Any,
    score_fn: Callable[[ArchSpec], float],
    latency: NetworkLatency,
    budget_ms_per_batch: float,
    samples: int,
    seed: int,
    heldout_fraction: float = 0.2,
    *,
    ridge: float = 1e-4,
    macs_budget: float | None = None,
    params_budget: float | None = None,
    time_limit: float | None = None,
    score_many: Callable[[Sequence[ArchSpec]], Sequence[float]] | None = None,
) -> MilpSearchResult:
    """Sample and score `samples` members, fit the estimator, solve exactly, score the winner (see module doc).

    The budget is in ms per batch at the latency's batch: the figure `latency.latency_ms_per_batch`
    returns (zennas.wiring.milp_search takes a LatencyTable instead). `score_many`, when given, scores
    the whole sample in one call (same values as `score_fn`, e.g. on worker processes).
    """
    space_layout(space)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    latency_model = block_latency_model(space, latency)
    budget = _check_budget(budget_ms_per_batch, "latency budget (ms per batch)")
    _check_latency_floor(space, latency_model, budget)  # fail before spending proxy evaluations
    complexity = None
    if macs_budget is not None or params_budget is not None:
        complexity = block_complexity_model(
            space, resolution=latency_model.resolution, num_classes=latency_model.num_classes,
            use_se=latency_model.use_se,
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    specs = [space.sample(rng) for _ in range(samples)]
    start = time.perf_counter()
    if score_many is not None:  # e.g. worker processes scoring the whole sample at once
        scores = [
            _score(lambda _, value=value: value, spec) for spec, value in zip(specs, score_many(specs), strict=True)
        ]
    else:
        scores = [_score(score_fn, spec) for spec in specs]
    scoring = time.perf_counter() - start
    start = time.perf_counter()
    estimator = fit_estimator(space, specs, scores, heldout_fraction=heldout_fraction, ridge=ridge, seed=seed)
    fitting = time.perf_counter() - start
    solution = solve(
        space,
        estimator,
        latency_model,
        budget,
        macs_budget=macs_budget,
        params_budget=params_budget,
        complexity=complexity,
        time_limit=time_limit,
    )
    start = time.perf_counter()
    final = _score(score_fn, solution.spec)
    scoring += time.perf_counter() - start

    within = latency_model.predict_many(specs) <= budget  # [samples]
    if complexity is not None:
        if macs_budget is not None:
            within &= complexity.macs.predict_many(specs) <= macs_budget
        if params_budget is not None:
            within &= complexity.params.predict_many(specs) <= params_budget
    best = max((i for i in range(samples) if within[i]), key=scores.__getitem__, default=None)
    return MilpSearchResult(
        spec=solution.spec,
        score=final,
        estimated_score=solution.estimated_score,
        latency_ms_per_batch=solution.latency_ms_per_batch,
        latency_ms_per_image=solution.latency_ms_per_image,
        batch_size=solution.batch_size,
        macs=solution.macs,
        params=solution.params,
        kendall_tau=estimator.kendall_tau,
        proxy_evaluations=samples + 1,
        samples=samples,
        best_sampled_spec=None if best is None else specs[best],
        best_sampled_score=None if best is None else scores[best],
        solution=solution,
        estimator=estimator,
        scoring_seconds=scoring,
        fit_seconds=fitting,
        solve_seconds=solution.solve_seconds,
    )
