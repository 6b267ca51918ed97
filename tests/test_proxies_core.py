"""The proxy registry and `score`: options, seeds, strict FP32, errors that name the network."""

from __future__ import annotations

import pytest
import torch

from zennas.errors import ConfigError, DegenerateNetworkError, ProxyError
from zennas.proxies import PROXIES, Option, get_proxy, list_proxies, register_proxy, repeat_seed, score

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture
def probe():
    """A throw-away proxy that records what it saw; removed from the registry afterwards."""
    seen: list[dict] = []

    def fn(ctx):
        x = ctx.images(4)
        model = ctx.build(init="normal")
        seen.append(
            {
                "tf32": (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision),
                "option": ctx.option("knob"),
                "x": x.clone(),
                "w": next(model.parameters()).detach().clone(),
            }
        )
        if ctx.option("knob") == "fail":
            raise RuntimeError("boom")
        if ctx.option("knob") == "degenerate":
            raise DegenerateNetworkError("output ignores the input")
        if ctx.option("knob") == "nan":
            return float("nan")
        return float(x.sum())

    register_proxy(
        "_probe",
        description="test",
        source="test",
        batch_size=4,
        options={"knob": Option("ok", ("ok", "fail", "degenerate", "nan"))},
    )(fn)
    yield seen
    PROXIES.unregister("_probe")


def test_registry_lists_documented_proxies():
    assert {"params", "flops"} <= set(list_proxies())
    for name in list_proxies():
        proxy = get_proxy(name)
        assert proxy.description and proxy.source
    with pytest.raises(ConfigError, match="unknown proxy 'nope'"):
        get_proxy("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_proxy("params", description="x", source="x")(lambda ctx: 0.0)


def test_repeats_are_seeded_independent_and_reproducible(probe):
    first = score(CELL, "_probe", repeats=3, seed=5)["_probe"]
    again = score(CELL, "_probe", repeats=3, seed=5)["_probe"]
    other = score(CELL, "_probe", repeats=3, seed=6)["_probe"]
    assert first.values == again.values and len(set(first.values)) == 3
    assert other.values != first.values
    assert first.mean == pytest.approx(sum(first.values) / 3) and first.std > 0
    # Weights are seeded too: the same seed builds the same network.
    torch.testing.assert_close(probe[0]["w"], probe[3]["w"])
    assert repeat_seed(5, "_probe", 0) != repeat_seed(5, "zen", 0)


def test_scoring_is_strict_fp32_and_restores_global_state(probe):
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    rng_before = torch.get_rng_state()
    try:
        score(CELL, "_probe")
        assert probe[-1]["tf32"] == ("ieee", "ieee")  # TF32 off while scoring
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == (
            "tf32",
            "tf32",
        )  # restored afterwards
        assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def test_options_are_validated(probe):
    assert score(CELL, "_probe", options={"knob": "ok"})["_probe"].meta["options"] == {"knob": "ok"}
    with pytest.raises(ConfigError, match="knob='loud' is not allowed"):
        score(CELL, "_probe", options={"knob": "loud"})
    with pytest.raises(ConfigError, match="apply to none of the proxies"):
        score(CELL, "params", options={"knob": "ok"})
    with pytest.raises(ConfigError, match="repeats must be a positive integer"):
        score(CELL, "params", repeats=0)
    with pytest.raises(ConfigError, match="at least one proxy"):
        score(CELL, "")


def test_failures_are_errors_naming_the_network(probe):
    with pytest.raises(ProxyError, match=r"proxy _probe failed on nb201 architecture [0-9a-f]{16} .*boom"):
        score(CELL, "_probe", options={"knob": "fail"})
    with pytest.raises(ProxyError, match="non-finite value"):
        score(CELL, "_probe", options={"knob": "nan"})


def test_degenerate_networks_are_flagged_not_scored(probe):
    result = score(CELL, "_probe", options={"knob": "degenerate"})["_probe"]
    assert result.degenerate and result.mean is None and result.values == ()
    assert "output ignores the input" in result.meta["reason"]


def test_analytic_proxies_are_exact_and_repeat_free():
    result = score(CELL, "params,flops", repeats=4, options={"convention": "nb201"})
    assert result["params"].mean == 802_426 and result["params"].std == 0.0
    assert result["flops"].mean == 113_951_370  # official NB201 FLOPs of index 11 on CIFAR-10 (113.95137 M)
    assert len(result["params"].values) == 4
    imagenet16 = score(CELL, "params", resolution=16, num_classes=120)["params"]
    assert imagenet16.mean == 809_576  # official 0.809576 M
