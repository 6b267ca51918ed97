"""MAE-DET entropy, DeepMAD score and rho on TinyNAS structures (REFERENCE 3.2, 3.3)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zennas.arch import ArchSpec, parse
from zennas.errors import ConfigError
from zennas.proxies import get_proxy, score
from zennas.proxies.entropy import (
    STAGE_WEIGHTS,
    closed_form_block_terms,
    conv_chain,
    deepmad_depth_penalty,
    deepmad_depths,
    deepmad_rho,
    deepmad_score,
    deepmad_stage_terms,
    forward_block_terms,
    stage_entropies,
)

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
# The golden values of REFERENCE 3.2/3.3, at their printed precision.
GOLDEN_BLOCKS = (1.6479, 6.9904, 8.7232, 9.7630, 9.9657, 10.8027)
GOLDEN_H = (5.1137, 14.1835, 23.5998, 44.0216, 55.5174)
GOLDEN_Q224 = (21.2627, 117.4450, 224.0110, 452.8554, 551.5548)
GOLDEN_RHO = (0.03704, 0.05325, 0.04907, 0.04323, 0.04019)


def seed_of(space: str, name: str) -> ArchSpec:
    """A seed structure from a search-space TOML."""
    with open(SPACES / f"{space}.toml", "rb") as handle:
        return parse(tomllib.load(handle)["seeds"][name]["arch"], "tinynas")


R50 = seed_of("maedet", "r50")


def structure(*blocks: dict) -> ArchSpec:
    """A TinyNAS structure from block dicts."""
    return parse(repr({"space_arch": "CnnNet", "best_structures": [list(blocks)]}), "tinynas")


def conv(c_in: int, c_out: int, s: int = 1, k: int = 3) -> dict:
    return {"class": "ConvKXBNRELU", "in": c_in, "out": c_out, "s": s, "k": k}


def res(kind: str, c_in: int, c_out: int, s: int, btn: int, L: int = 1, k: int = 3) -> dict:  # noqa: N803
    return {"class": kind, "in": c_in, "out": c_out, "s": s, "k": k, "L": L, "btn": btn}


def mean_of(arch: ArchSpec, proxy: str, **kwargs) -> float:
    return score(arch, proxy, **kwargs)[proxy].mean


# ---------------------------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------------------------


def test_entropy_closed_form_golden():
    assert [round(t, 4) for t in closed_form_block_terms(R50)] == list(GOLDEN_BLOCKS)
    h = stage_entropies(R50, closed_form_block_terms(R50))
    assert [round(x, 4) for x in h] == list(GOLDEN_H)
    assert round(mean_of(R50, "entropy"), 3) == 400.726  # detection weights are the default
    assert round(mean_of(R50, "entropy", options={"weights": "classification"}), 3) == 55.517
    # Resolution-free, and repeats of the closed form are identical.
    result = score(R50, "entropy", resolution=480, repeats=3)["entropy"]
    assert result.values == (pytest.approx(400.726, abs=5e-4),) * 3 and result.std == 0.0
    assert result.meta["stage_entropies"] == pytest.approx(h)


@pytest.mark.parametrize("preset", sorted(STAGE_WEIGHTS))
def test_entropy_weight_presets(preset):
    h = stage_entropies(R50, closed_form_block_terms(R50))
    expected = {
        "detection": h[2] + h[3] + 6 * h[4],
        "classification": h[4],
        "damo-yolo": h[2] + h[3] + 16 * h[4],
        "deepmad": h[0] + h[1] + h[2] + h[3] + 8 * h[4],
    }[preset]
    assert mean_of(R50, "entropy", options={"weights": preset}) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="option weights='fpn' is not allowed"):
        score(R50, "entropy", options={"weights": "fpn"})


def test_deepmad_golden():
    assert [round(q, 4) for q in deepmad_stage_terms(R50, 224)] == list(GOLDEN_Q224)
    assert round(mean_of(R50, "deepmad", resolution=224, options={"penalty": False}), 3) == 5228.012
    assert round(mean_of(R50, "deepmad", resolution=224), 3) == 5218.012  # penalty on by default
    assert round(mean_of(R50, "deepmad", resolution=480, options={"penalty": False}), 3) == 5910.708
    assert round(mean_of(R50, "deepmad", resolution=480), 3) == 5900.708
    assert deepmad_depths(R50) == (1, 1, 1) and deepmad_depth_penalty(R50) == 10.0
    assert deepmad_score(R50, 480) == pytest.approx(5900.708, abs=5e-4)
    # No SE block: the compatibility flag changes nothing.
    assert mean_of(R50, "deepmad", options={"tinynas_compat": True}) == mean_of(R50, "deepmad")


def test_deepmad_rho_golden():
    assert [round(r, 5) for r in deepmad_rho(R50)] == list(GOLDEN_RHO)
    result = score(R50, "deepmad-rho", resolution=480)["deepmad-rho"]
    assert round(result.mean, 5) == 0.05325 and result.higher_is_better is False
    assert result.meta["stage_rho"] == pytest.approx(deepmad_rho(R50))
    assert mean_of(R50, "deepmad-rho", resolution=64) == result.mean  # resolution-free


def test_registration():
    entropy, deepmad, rho = get_proxy("entropy"), get_proxy("deepmad"), get_proxy("deepmad-rho")
    assert entropy.batch_size == 32 and entropy.uses_data
    assert entropy.options["version"].default == "closed" and entropy.options["weights"].default == "detection"
    assert not deepmad.uses_data and deepmad.options["weights"].default == "deepmad"
    assert deepmad.options["penalty"].default is True and deepmad.options["tinynas_compat"].default is False
    assert not rho.uses_data and not rho.higher_is_better
    for proxy in (entropy, deepmad, rho):
        assert "REFERENCE 3." in proxy.source


# ---------------------------------------------------------------------------------------------
# Forward version
# ---------------------------------------------------------------------------------------------


def expected_forward_terms(arch: ArchSpec, resolution: int) -> list[float]:
    """ln sigma_b the forward version should measure: the closed form with zero padding accounted for.

    Propagates the per-position output variance through the chain (N(0,1) weights, channels alike):
    each conv sums its in-bounds taps, times c_in/g; the map is then normalised to mean 1, as the
    forward version divides by the scalar std. This is the padding effect of REFERENCE 3.2, compounded.
    """
    variance = torch.ones(1, 1, resolution, resolution, dtype=torch.float64)
    terms = []
    for unit in conv_chain(arch):
        term = 0.0
        for c in unit:
            taps = torch.ones(1, 1, c.kernel, c.kernel, dtype=torch.float64)
            variance = F.conv2d(variance, taps, stride=c.stride, padding=c.padding) * (c.in_channels // c.groups)
            mean = variance.mean().item()
            term += 0.5 * math.log(mean)
            variance /= mean
        terms.append(term)
    return terms


def test_padding_correction_matches_reference_numbers():
    # One k x k conv on a 15 x 15 map: variance factor ((kR - (k^2 - 1)/4) / (kR))^2 (REFERENCE 3.2).
    for k, factor, delta in ((3, 0.913, -0.045), (5, 0.846, -0.083)):
        arch = structure(conv(3, 8, 1, k))
        correction = expected_forward_terms(arch, 15)[0] - closed_form_block_terms(arch)[0]
        assert math.exp(2 * correction) == pytest.approx(((k * 15 - (k * k - 1) / 4) / (k * 15)) ** 2, rel=1e-12)
        assert round(math.exp(2 * correction), 3) == factor and round(correction, 3) == delta


def test_forward_measures_the_padding_effect_on_a_wide_conv():
    # 1x1 to 64 channels (no padding effect), then a 5x5 conv on a 15 x 15 map: 64 * 25 * 256 weights,
    # so the measured variance is precise and the -0.083 of REFERENCE 3.2 shows directly.
    arch = structure(conv(3, 64, 1, 1), conv(64, 256, 1, 5))
    forward = forward_block_terms(arch, 15, 8, torch.Generator().manual_seed(0))
    closed = closed_form_block_terms(arch)
    assert forward[1] - closed[1] == pytest.approx(-0.083, abs=0.01)


# Runs to average per structure: one run's per-block noise (std over seeds, measured at R = 32, B = 4) is
# about 0.025 for R50 (wide convs) and up to 0.09 for the small depthwise net; averaged, 4 sigma < 0.09.
@pytest.mark.parametrize(("arch_name", "runs"), [("r50", 4), ("dw-se", 16)])
def test_forward_agrees_with_closed_form_within_the_padding_effect(arch_name, runs):
    arch = R50 if arch_name == "r50" else SMALL_SE
    resolution = 32
    closed = closed_form_block_terms(arch)
    expected = expected_forward_terms(arch, resolution)
    runs_terms = [forward_block_terms(arch, resolution, 4, torch.Generator().manual_seed(s)) for s in range(runs)]
    measured = [sum(col) / runs for col in zip(*runs_terms, strict=True)]
    # Each block agrees with the padding-corrected closed form up to weight/input sampling noise ...
    for m, e in zip(measured, expected, strict=True):
        assert m == pytest.approx(e, abs=0.09)
    # ... and the correction is real: on the last 2 x 2 and 1 x 1 maps it is -0.4, well beyond that noise.
    assert expected[-1] - closed[-1] < -0.35 and measured[-1] < closed[-1] - 0.2
    assert all(e <= c + 1e-12 for e, c in zip(expected, closed, strict=True))


def test_forward_score_through_the_registry():
    resolution = 32
    closed_h = stage_entropies(R50, closed_form_block_terms(R50))
    expected_h = stage_entropies(R50, expected_forward_terms(R50, resolution))
    weights = STAGE_WEIGHTS["detection"]
    correction = sum(w * (e - c) for w, e, c in zip(weights, expected_h, closed_h, strict=True))
    assert correction < -3.0  # the padding effect at R = 32 is large enough to test
    result = score(
        R50, "entropy", resolution=resolution, batch_size=4, repeats=4, seed=1, options={"version": "forward"}
    )["entropy"]
    # One repeat's noise on S is about 0.4 (measured over 40 seeds); the mean of 4 is within 0.8 (4 sigma).
    assert result.mean == pytest.approx(400.726 + correction, abs=0.8)
    assert result.meta["input"] == "gaussian N(0,1)" and result.meta["batch_size"] == 4
    assert len(set(result.values)) == 4 and result.std > 0  # fresh weights and input per repeat


def test_forward_is_deterministic_for_a_seed():
    def run(seed: int) -> tuple[float, ...]:
        options = {"version": "forward", "weights": "deepmad"}
        return score(SMALL_SE, "entropy", resolution=32, batch_size=2, repeats=2, seed=seed, options=options)[
            "entropy"
        ].values

    first = run(5)
    assert run(5) == first
    assert run(6) != first


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

THREE_STAGES = structure(
    conv(3, 16, 2), res("SuperResK1KXK1", 16, 32, 2, 16), res("SuperResK1KXK1", 32, 64, 2, 32, L=2)
)


@pytest.mark.parametrize(
    ("proxy", "options"),
    [("entropy", {}), ("entropy", {"version": "forward"}), ("deepmad", {})],
)
def test_stage_count_must_match_weights(proxy, options):
    with pytest.raises(ConfigError, match=r"the network has 3 stage\(s\).*weights have 5 entries"):
        score(THREE_STAGES, proxy, resolution=32, batch_size=2, options=options)


def test_rho_has_no_weights_and_takes_any_stage_count():
    assert len(deepmad_rho(THREE_STAGES)) == 3


@pytest.mark.parametrize(
    "text",
    [
        "SuperConvK3BNRELU(3,16,2,1)SuperResK1K3K1(16,32,2,8,1)SuperConvK1BNRELU(32,64,1,1)",  # zennas-v1
    ],
)
@pytest.mark.parametrize("proxy", ["entropy", "deepmad", "deepmad-rho"])
def test_other_dialects_are_refused(text, proxy):
    arch = parse(text)
    assert arch.dialect != "tinynas"
    with pytest.raises(ConfigError, match=f"proxy {proxy} needs a TinyNAS structure.*got dialect 'zennas-v1'"):
        score(arch, proxy, resolution=32)
    with pytest.raises(ConfigError, match="needs a TinyNAS structure"):
        deepmad_rho(arch)


def test_deepmad_side_zero_is_an_error():
    with pytest.raises(ConfigError, match="stage 5 ends with feature side 0 at resolution 16"):
        score(R50, "deepmad", resolution=16)


# ---------------------------------------------------------------------------------------------
# DeepMAD details: SE side defect and depth penalty
# ---------------------------------------------------------------------------------------------


def dw_skeleton(kind: str) -> ArchSpec:
    """Stem + four depthwise super-blocks, all stride 2: five stages at sides 32, 16, 8, 4, 2 for R = 64."""
    return structure(
        conv(3, 16, 2),
        res(kind, 16, 24, 2, 48),
        res(kind, 24, 32, 2, 64),
        res(kind, 32, 48, 2, 96, k=5),
        res(kind, 48, 64, 2, 128),
    )


SMALL_SE = dw_skeleton("SuperResK1DWSEK1")


def test_tinynas_compat_only_moves_se_structures_by_the_lost_side_terms():
    ln = math.log
    # Block terms by hand: stem 1/2 ln(3 * 9); depthwise blocks 1/2 [ln c_in + ln k^2 + ln btn].
    blocks = [
        0.5 * ln(27),
        0.5 * (ln(16) + ln(9) + ln(48)),
        0.5 * (ln(24) + ln(9) + ln(64)),
        0.5 * (ln(32) + ln(25) + ln(96)),
        0.5 * (ln(48) + ln(9) + ln(128)),
    ]
    assert closed_form_block_terms(SMALL_SE) == pytest.approx(blocks, rel=1e-12)
    cumulative = [sum(blocks[: i + 1]) for i in range(5)]
    sides, channels, weights = (32, 16, 8, 4, 2), (16, 24, 32, 48, 64), STAGE_WEIGHTS["deepmad"]
    correct = sum(w * (ln(c) + 2 * ln(r)) * t for w, c, r, t in zip(weights, channels, sides, cumulative, strict=True))
    # TinyNAS reports side 1 after the first SE block: stages 2..5 lose their 2 ln r_i factor.
    lost = sum(weights[i] * 2 * ln(sides[i]) * cumulative[i] for i in range(1, 5))
    options = {"penalty": False}
    assert mean_of(SMALL_SE, "deepmad", resolution=64, options=options) == pytest.approx(correct, rel=1e-12)
    compat = mean_of(SMALL_SE, "deepmad", resolution=64, options={**options, "tinynas_compat": True})
    assert compat == pytest.approx(correct - lost, rel=1e-12)
    assert compat < correct and lost == pytest.approx(367.45, abs=0.01)
    # The same skeleton without SE is not affected.
    plain = dw_skeleton("SuperResK1DWK1")
    compat_plain = mean_of(plain, "deepmad", resolution=64, options={"tinynas_compat": True})
    assert compat_plain == mean_of(plain, "deepmad", resolution=64)
    # The published SE seed keeps its stem stage (side 112) and loses the rest.
    deepmad_se = seed_of("deepmad-se", "deepmad-29m-224")
    q, q_compat = deepmad_stage_terms(deepmad_se, 224), deepmad_stage_terms(deepmad_se, 224, tinynas_compat=True)
    assert q_compat[0] == q[0] and all(a < b for a, b in zip(q_compat[1:], q[1:], strict=True))


def skeleton(kind: str, depths: tuple[int, ...], first: dict | None = None) -> ArchSpec:
    """Stem, an optional extra plain conv, then super-blocks of `kind` with the given L (all stride 2)."""
    blocks, c = [conv(3, 16, 2)], 16
    if first is not None:
        blocks.append(first)
    for depth in depths:
        blocks.append(res(kind, c, c + 16, 2, c, L=depth))
        c += 16
    return structure(*blocks)


@pytest.mark.parametrize(
    ("kind", "expected_depths"),
    [
        ("SuperResK1KXK1", (3, 4)),  # ResNet-like: the first entry dropped twice
        ("SuperResKXKX", (2, 3, 4)),  # once
        ("SuperResK1KX", (1, 2, 3, 4)),  # never
        ("SuperResK1DWK1", (1, 2, 3, 4)),
        ("SuperResK1DWSEK1", (1, 2, 3, 4)),
    ],
)
def test_depth_penalty_rule(kind, expected_depths):
    arch = skeleton(kind, (1, 2, 3, 4))
    assert deepmad_depths(arch) == expected_depths
    mean = sum(expected_depths) / len(expected_depths)
    std = math.sqrt(sum((d - mean) ** 2 for d in expected_depths) / len(expected_depths))  # population std
    assert deepmad_depth_penalty(arch) == pytest.approx(10 * math.exp(std), rel=1e-12)
    with_penalty = mean_of(arch, "deepmad", resolution=64)
    without = mean_of(arch, "deepmad", resolution=64, options={"penalty": False})
    assert without - with_penalty == pytest.approx(10 * math.exp(std), rel=1e-12)


def test_depth_penalty_looks_at_block_one_only():
    # A plain conv at index 1 means nothing is dropped, whatever the super-block class.
    arch = skeleton("SuperResK1KXK1", (1, 2, 3), first=conv(16, 16, 1))
    assert deepmad_depths(arch) == (1, 2, 3)
    # No super-block at all: no spread, penalty 10 * e^0.
    plain = structure(conv(3, 8, 2), conv(8, 8, 2), conv(8, 8, 2), conv(8, 8, 2), conv(8, 8, 2))
    assert deepmad_depths(plain) == () and deepmad_depth_penalty(plain) == 10.0


# ---------------------------------------------------------------------------------------------
# The plain conv chain
# ---------------------------------------------------------------------------------------------


def test_conv_chain_follows_each_inner_class():
    arch = structure(
        conv(3, 16, 2),
        res("SuperResKXKX", 16, 32, 2, 24, L=2, k=5),
        res("SuperResK1KX", 32, 48, 2, 40),
        res("SuperResK1DWSEK1", 48, 64, 2, 96),
    )
    units = conv_chain(arch)
    assert len(units) == 5  # stem, two KXKX inner blocks, K1KX, K1DWSEK1
    kxkx = units[1]
    assert [(c.in_channels, c.out_channels, c.kernel, c.stride) for c in kxkx] == [(16, 24, 5, 1), (24, 32, 5, 2)]
    assert [(c.in_channels, c.stride) for c in units[2]] == [(32, 1), (24, 1)]  # the second inner block: (out, out, 1)
    assert [(c.kernel, c.stride) for c in units[3]] == [(1, 1), (3, 2)]
    dw = units[4]
    assert [(c.in_channels, c.out_channels, c.kernel, c.stride, c.groups) for c in dw] == [
        (48, 96, 1, 1, 1),
        (96, 96, 3, 2, 96),  # depthwise: groups = channels, so its term is 1/2 ln k^2
        (96, 64, 1, 1, 1),
    ]
    # Conv-layer counts agree with the TinyNAS layers convention used by rho.
    assert sum(len(u) for u in units) == arch.layers
    assert closed_form_block_terms(arch)[4] == pytest.approx(0.5 * (math.log(48) + math.log(9) + math.log(96)))
