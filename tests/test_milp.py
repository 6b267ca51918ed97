"""zennas.search.milp: linear cost models against predict/counting, estimator fit, exact solve vs brute force."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

from zennas.counting import count
from zennas.errors import ConfigError
from zennas.latency.predict import latency_ms_per_batch
from zennas.latency.shipped import open_table
from zennas.latency.table import LatencyTable
from zennas.search.milp import block_complexity_model, fit_estimator, solve, space_layout
from zennas.spaces import get_space
from zennas.spaces.binas import BinasSpace
from zennas.wiring import block_latency_model, milp_search

# Two stages, depths {1, 3} (a gap, so slot 1 and 2 switch on together), e {3, 6} x k {3, 5}:
# (4 + 4^3)^2 = 4,624 networks, few enough to enumerate.
TINY = {
    "family": "binas",
    "dialect": "binas",
    "stem_width": 16,
    "last_width": 320,
    "depths": [1, 3],
    "expansions": [3, 6],
    "kernels": [3, 5],
    "se_ratios": [0.0],
    "first_block": {"kernel": 3, "out_channels": 16, "relu": True},
    "stages": [
        {"out_channels": 24, "stride": 2, "relu": True},
        {"out_channels": 48, "stride": 2, "relu": False},
    ],
}


@pytest.fixture(scope="module")
def binas():
    return get_space("binas")


@pytest.fixture(scope="module")
def cpu_table():
    return open_table("cpu-ort-fp32-b1")


@pytest.fixture(scope="module")
def tiny():
    return BinasSpace("tiny", TINY)


@pytest.fixture(scope="module")
def tiny_all(tiny, cpu_table):
    """Every network of the tiny space with its predicted latency (ms, batch 1) and exact MACs."""
    layout = tiny.layout
    per_stage = [(depth, configs) for depth in layout.depths for configs in itertools.product(range(4), repeat=depth)]
    nets = [layout.make([a[0], b[0]], [a[1], b[1]]) for a, b in itertools.product(per_stage, repeat=len(layout.stages))]
    latency = np.array(
        [latency_ms_per_batch(s, cpu_table, resolution=224, batch_size=1, num_classes=1000) for s in nets]
    )
    macs = np.array([count(s, resolution=224, num_classes=1000).macs for s in nets])
    return nets, latency, macs


def synthetic_score(layout, seed: int):
    """A score exactly bilinear in (alpha, beta), computed from the layout's decisions, not the encoding."""
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(len(layout.stages), layout.max_depth, len(layout.configs)))
    depth = rng.normal(size=(len(layout.stages), len(layout.depths)))

    def score(spec) -> float:
        depths, configs = layout.decisions(spec)
        total = 3.0
        for s, (d, stage_configs) in enumerate(zip(depths, configs, strict=True)):
            total += depth[s, layout.depths.index(d)]
            total += sum(block[s, j, c] for j, c in enumerate(stage_configs))
        return total

    return score


# ---------------------------------------------------------------------------------------------
# Cost models in the BINAS variables


@pytest.mark.parametrize(
    ("table_name", "resolution", "num_classes", "use_se"),
    [("cpu-ort-fp32-b1", 224, 1000, None), ("v100-trt-fp16", 224, 1000, None), ("v100-trt-fp16", 160, 0, True)],
)
def test_linear_latency_equals_predict(binas, table_name, resolution, num_classes, use_se):
    table = open_table(table_name)
    model = block_latency_model(binas, table, resolution=resolution, num_classes=num_classes, use_se=use_se)
    assert model.batch_size == table.default_batch_size() and model.corrected == bool(table.correction)
    rng = np.random.default_rng(1)
    specs = [binas.sample(rng) for _ in range(200)]
    reference = [
        latency_ms_per_batch(
            s, table, resolution=resolution, batch_size=model.batch_size, num_classes=num_classes, use_se=use_se
        )
        for s in specs
    ]
    np.testing.assert_allclose(model.predict_many(specs), reference, rtol=1e-9)
    assert [model.predict(s) for s in specs[:20]] == pytest.approx(reference[:20], rel=1e-9)
    assert model.minimum() <= min(reference)  # checked against enumeration on the tiny space below
    if use_se is None:  # at 224 the smallest network (config 0, shallowest) is also the fastest
        assert model.minimum() == pytest.approx(model.table_latency(binas.initial()[0]), rel=1e-12)


def test_linear_latency_folds_affine_correction(binas, cpu_table):
    corrected = LatencyTable({**cpu_table.header, "correction": {"intercept_ms": 0.7, "slope": 1.3}}, cpu_table.entries)
    plain = block_latency_model(binas, LatencyTable({**cpu_table.header, "correction": None}, cpu_table.entries))
    model = block_latency_model(binas, corrected)
    assert model.corrected and model.constant == pytest.approx(0.7 + 1.3 * plain.fixed_ms, rel=1e-12)
    rng = np.random.default_rng(2)
    for _ in range(50):
        spec = binas.sample(rng)
        want = latency_ms_per_batch(spec, corrected, resolution=224, batch_size=1, num_classes=1000)
        assert model.predict(spec) == pytest.approx(want, rel=1e-9)
        assert want == pytest.approx(0.7 + 1.3 * plain.predict(spec), rel=1e-12)


@pytest.mark.parametrize(("resolution", "num_classes", "use_se"), [(224, 1000, None), (160, 0, True)])
def test_linear_counts_equal_counting(binas, resolution, num_classes, use_se):
    model = block_complexity_model(binas, resolution=resolution, num_classes=num_classes, use_se=use_se)
    rng = np.random.default_rng(3)
    for _ in range(100):
        spec = binas.sample(rng)
        cx = count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
        assert model.macs.predict(spec) == cx.macs and model.params.predict(spec) == cx.params


# ---------------------------------------------------------------------------------------------
# Estimator and exact solve


def test_exact_bilinear_score_milp_equals_brute_force(tiny, tiny_all, cpu_table):
    nets, latency, _ = tiny_all
    score = synthetic_score(tiny.layout, seed=4)
    truth = np.array([score(s) for s in nets])
    rng = np.random.default_rng(5)
    specs = [tiny.sample(rng) for _ in range(200)]
    estimator = fit_estimator(tiny, specs, [score(s) for s in specs], ridge=1e-10, seed=6)
    assert estimator.kendall_tau > 0.99 and estimator.heldout_samples == 40 and estimator.train_samples == 160
    np.testing.assert_allclose(estimator.predict_many(nets), truth, atol=1e-6)  # exact on unseen networks too
    model = block_latency_model(tiny, cpu_table)
    np.testing.assert_allclose(model.predict_many(nets), latency, rtol=1e-9)
    for quantile in (0.02, 0.3, 0.7, 1.0):
        budget = float(np.quantile(latency, quantile))
        feasible = np.flatnonzero(latency <= budget)
        best = feasible[truth[feasible].argmax()]
        solution = solve(tiny, estimator, model, budget)
        assert solution.status == "optimal" and solution.spec == nets[best]
        assert solution.estimated_score == pytest.approx(truth[best], abs=1e-6)
        assert solution.latency_ms_per_batch == latency[best] <= budget
        assert tiny.contains(solution.spec)


def test_full_space_solution_beats_every_feasible_sample(binas, cpu_table):
    score = synthetic_score(binas.layout, seed=7)
    rng = np.random.default_rng(8)
    specs = [binas.sample(rng) for _ in range(1000)]
    truth = np.array([score(s) for s in specs])
    estimator = fit_estimator(binas, specs, truth, seed=9)
    assert estimator.kendall_tau > 0.99
    model = block_latency_model(binas, cpu_table)
    budget = float(np.median(model.predict_many(specs)))
    solution = solve(binas, estimator, model, budget, macs_budget=300e6)
    assert binas.contains(solution.spec) and solution.status == "optimal"
    assert solution.latency_ms_per_batch <= budget and solution.macs <= 300e6
    assert solution.latency_ms_per_batch == latency_ms_per_batch(
        solution.spec, cpu_table, resolution=224, batch_size=1, num_classes=1000
    )
    assert solution.macs == count(solution.spec, resolution=224, num_classes=1000).macs
    macs = block_complexity_model(binas).macs.predict_many(specs)
    feasible = (model.predict_many(specs) <= budget) & (macs <= 300e6)
    assert feasible.sum() > 50
    assert solution.estimated_score >= estimator.predict_many(specs)[feasible].max()
    assert score(solution.spec) > truth[feasible].max()


def test_milp_search_with_params_proxy(binas, cpu_table):
    from zennas.proxies import score

    def params_proxy(spec) -> float:
        return score(spec, "params")["params"].mean

    # 480 training samples for 255 one-hot features: params is linear in them, so tau is near 1.
    result = milp_search(binas, params_proxy, cpu_table, 9.0, samples=600, seed=0)
    assert result.proxy_evaluations == 601 and result.samples == 600
    assert result.kendall_tau > 0.99
    assert binas.contains(result.spec) and result.latency_ms_per_batch <= 9.0
    assert result.latency_ms_per_image == result.latency_ms_per_batch  # batch 1
    assert result.score == result.params == count(result.spec, resolution=224, num_classes=1000).params
    assert result.best_sampled_score is not None and result.score > result.best_sampled_score
    # The fitted estimator reaches the optimum of the exact params coefficients.
    exact = solve(binas, block_complexity_model(binas).params, block_latency_model(binas, cpu_table), 9.0)
    assert result.score == exact.params == exact.estimated_score
    assert result.estimated_score == pytest.approx(result.score, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Errors


def test_infeasible_latency_budget_names_the_fastest_network(tiny, tiny_all, cpu_table):
    _, latency, _ = tiny_all
    score = synthetic_score(tiny.layout, seed=10)
    rng = np.random.default_rng(11)
    specs = [tiny.sample(rng) for _ in range(60)]
    estimator = fit_estimator(tiny, specs, [score(s) for s in specs])
    model = block_latency_model(tiny, cpu_table)
    assert model.minimum() == pytest.approx(latency.min(), rel=1e-12)  # the separable minimum, by enumeration
    fastest = f"{latency.min():.6g}"
    with pytest.raises(ConfigError, match=rf"takes {re.escape(fastest)} ms per batch") as info:
        solve(tiny, estimator, model, 0.99 * latency.min())
    assert "\n" not in str(info.value) and "raise the budget" in str(info.value)
    calls = []
    with pytest.raises(ConfigError, match="infeasible"):  # before any proxy evaluation
        milp_search(tiny, lambda s: calls.append(s) or 0.0, cpu_table, 0.5 * latency.min(), samples=50, seed=0)
    assert calls == []
    # A budget equal to the fastest network's latency is feasible and returns it.
    assert solve(tiny, estimator, model, float(latency.min())).latency_ms_per_batch == latency.min()


def test_budgets_infeasible_only_together(tiny, tiny_all, cpu_table):
    nets, _, macs = tiny_all
    # A (contrived) negative slope makes larger networks faster: latency and MAC budgets then conflict.
    # Set after construction: a table file with this correction is refused at load (non-positive latencies).
    odd = LatencyTable(cpu_table.header, cpu_table.entries)
    odd.header = {**cpu_table.header, "correction": {"intercept_ms": 100.0, "slope": -1.0}}
    model = block_latency_model(tiny, odd)
    latency = model.predict_many(nets)
    estimator = fit_estimator(tiny, nets[:100], np.arange(100.0), heldout_fraction=0)
    assert estimator.kendall_tau is None
    budget = float(latency.min())
    assert macs[latency <= budget].min() > macs.min()
    with pytest.raises(ConfigError, match=r"together .* each minimised alone: latency .*, MACs"):
        solve(tiny, estimator, model, budget, macs_budget=float(macs.min()))
    with pytest.raises(ConfigError, match=f"MACs budget {macs.min() - 1:,} is infeasible: .* has {macs.min():,} MACs"):
        solve(tiny, estimator, model, budget, macs_budget=float(macs.min()) - 1)


def test_argument_errors(binas, tiny, cpu_table):
    with pytest.raises(ConfigError, match=r"strategy milp needs a space with per-stage depths .*got 'nb201'"):
        space_layout(get_space("nb201"))
    with pytest.raises(ConfigError, match="strategy milp needs"):
        milp_search(get_space("zennas-idw"), lambda s: 0.0, cpu_table, 1.0, samples=10, seed=0)
    specs = [tiny.sample(np.random.default_rng(0)) for _ in range(10)]
    with pytest.raises(ConfigError, match="10 architectures but 9 scores"):
        fit_estimator(tiny, specs, [1.0] * 9)
    with pytest.raises(ConfigError, match="score 3 is nan"):
        fit_estimator(tiny, specs, [1.0, 2.0, 3.0, float("nan")] + [1.0] * 6)
    with pytest.raises(ConfigError, match="too few"):
        fit_estimator(tiny, specs[:5], [1.0] * 5)
    estimator = fit_estimator(tiny, specs, np.arange(10.0))
    with pytest.raises(ConfigError, match="another space layout"):
        solve(binas, estimator, block_latency_model(binas, cpu_table), 10.0)
    with pytest.raises(ConfigError, match=r"latency budget .* must be a positive number"):
        solve(tiny, estimator, block_latency_model(tiny, cpu_table), float("inf"))
    with pytest.raises(ConfigError, match=r"mip_rel_gap must lie in \[0, 1\)"):
        solve(tiny, estimator, block_latency_model(tiny, cpu_table), 10.0, mip_rel_gap=-0.1)
    with pytest.raises(ConfigError, match="batch size 64 is not in latency table"):
        block_latency_model(tiny, cpu_table, batch_size=64)
    with pytest.raises(ConfigError, match="score_fn returned nan"):
        milp_search(tiny, lambda s: float("nan"), cpu_table, 10.0, samples=10, seed=0)


def test_module_imports_no_torch():
    code = "import sys, zennas.search.milp; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
