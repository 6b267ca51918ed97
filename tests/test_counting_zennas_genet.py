"""Exact counts of ZenNAS and GENet networks against independent figures and the built modules."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import hook_macs, param_count
from torch import nn

from zennas.arch import ArchSpec, parse
from zennas.arch.genet import GenSuperRes
from zennas.arch.zennas import ZenConv, ZenRes, smart_round
from zennas.blocks.common import ResidualUnit, SqueezeExcite
from zennas.build import BuildOptions, build
from zennas.counting import count
from zennas.errors import ConfigError

# REFERENCE.md 1.1.7: per-token golden values (R = input side of the token).
TOKEN_GOLDEN = [
    # token, R, params, MACs, repo FLOPs, repo params, params with SE
    ("SuperResK3K3(32,64,2,32,1)", 112, 30_080, 93_126_656, 88_660_992, 29_856, 30_672),
    ("SuperResK1K5K1(168,320,1,120,1)", 14, 912_320, 178_187_520, 178_469_760, 910_560, 927_320),
    ("SuperResIDWE4K7(64,96,2,96,5)", 28, 936_864, 194_632_704, 195_653_472, 928_032, 1_683_744),
    ("SuperResIDWE1K7(16,40,2,40,1)", 112, 10_600, 37_381_120, 37_036_160, 10_280, 12_400),
]

# REFERENCE.md 2.3: repository get_model_size (no SE) and, for the v1 zoo, repository get_FLOPs.
REPO_PARAMS = {
    "zennet_cifar10_model_size05M_res32": 494_217,
    "zennet_cifar10_model_size1M_res32": 985_105,
    "zennet_cifar10_model_size2M_res32": 1_969_001,
    "zennet_cifar100_model_size05M_res32": 540_297,
    "zennet_cifar100_model_size1M_res32": 1_031_185,
    "zennet_cifar100_model_size2M_res32": 2_015_081,
    "zennet_imagenet1k_flops400M_SE_res224": 5_673_833,
    "zennet_imagenet1k_flops600M_SE_res224": 7_088_025,
    "zennet_imagenet1k_flops900M_SE_res224": 13_249_321,
    "zennet_imagenet1k_latency01ms_res224": 30_050_273,
    "zennet_imagenet1k_latency02ms_res224": 49_651_521,
    "zennet_imagenet1k_latency03ms_res224": 85_333_321,
    "zennet_imagenet1k_latency05ms_res224": 118_113_153,
    "zennet_imagenet1k_latency08ms_res224": 182_399_457,
    "zennet_imagenet1k_latency12ms_res224": 180_473_441,
}
# The v1 zoo reuses some names of the current zoo (latency03/05/08ms_res224), so it has its own table.
V1_REPO_PARAMS = {
    "zennet_imagenet1k_flops400M_SE_res192": 7_565_281,
    "zennet_imagenet1k_flops600M_SE_res256": 7_932_169,
    "zennet_imagenet1k_latency01ms_res192": 34_475_105,
    "zennet_imagenet1k_latency02ms_res192": 44_593_145,
    "zennet_imagenet1k_latency03ms_res224": 86_491_449,
    "zennet_imagenet1k_latency05ms_res224": 148_231_793,
    "zennet_imagenet1k_latency08ms_res224": 105_005_785,
}
V1_REPO_FLOPS = {
    "zennet_imagenet1k_flops400M_SE_res192": 435_510_880,
    "zennet_imagenet1k_flops600M_SE_res256": 664_342_272,
    "zennet_imagenet1k_latency01ms_res192": 1_793_525_136,
    "zennet_imagenet1k_latency02ms_res192": 2_971_915_512,
    "zennet_imagenet1k_latency03ms_res224": 5_111_739_896,
    "zennet_imagenet1k_latency05ms_res224": 8_173_830_724,
    "zennet_imagenet1k_latency08ms_res224": 9_393_139_308,
}


def _single(token: str) -> ArchSpec:
    """A one-token spec (channel chaining from the image is irrelevant for per-token figures)."""
    tokens = parse(f"SuperConvK1BNRELU(3,{token.split('(')[1].split(',')[0]},1,1){token}").blocks
    return ArchSpec("zennas-v1", tokens[1:])


@pytest.mark.parametrize(("token", "side", "params", "macs", "flops", "repo_params", "se_params"), TOKEN_GOLDEN)
def test_per_token_golden_values(token, side, params, macs, flops, repo_params, se_params):
    spec = _single(token)
    plain = count(spec, resolution=side, num_classes=0, use_se=False)
    assert (plain.params, plain.macs) == (params, macs)
    repo = count(spec, resolution=side, num_classes=0, use_se=False, convention="zennas")
    assert (repo.flops, repo.convention_params) == (flops, repo_params)
    assert count(spec, resolution=side, num_classes=0, use_se=True).params == se_params


def test_zoo_params_and_macs_equal_the_independent_count(zoo):
    for entry in zoo:
        golden = entry["computed_for_this_report"]
        spec = parse(entry["arch_string"])
        cx = count(spec, resolution=entry["resolution"], num_classes=entry["num_classes"], use_se=entry["use_se"])
        assert cx.params == golden["learnable_params_incl_BN_affine"], entry["name"]
        assert cx.macs == golden["conv_linear_MACs"], entry["name"]
        if "learnable_params_without_SE" in golden:
            plain = count(spec, resolution=entry["resolution"], num_classes=entry["num_classes"], use_se=False)
            assert plain.params == golden["learnable_params_without_SE"], entry["name"]


def test_zennas_convention_reproduces_the_repository_figures(zoo):
    for entry in zoo:
        if entry["family"] != "ZenNet":
            continue
        spec = parse(entry["arch_string"])
        repo = count(spec, resolution=entry["resolution"], num_classes=entry["num_classes"], convention="zennas")
        expected = entry["computed_for_this_report"].get("repo_get_FLOPs_convention_without_SE")
        if entry["status"].startswith("superseded"):
            expected = V1_REPO_FLOPS[entry["name"]]
        assert repo.flops == expected, entry["name"]
        table = V1_REPO_PARAMS if entry["status"].startswith("superseded") else REPO_PARAMS
        assert repo.convention_params == table[entry["name"]], entry["name"]


def test_the_400m_model_sits_on_its_budget(zoo):
    spec = parse(next(e for e in zoo if e["name"] == "zennet_imagenet1k_flops400M_SE_res224")["arch_string"])
    flops = count(spec, resolution=224, num_classes=1000, convention="zennas").flops
    assert flops <= 400e6 and flops > 399.9e6


def test_smart_round_is_half_to_even():
    assert smart_round(20, 8) == 16  # 2.5 -> 2
    assert smart_round(28, 8) == 32  # 3.5 -> 4
    assert smart_round(3, 8) == 8  # never below base
    assert smart_round(300) == 288  # base 32 above 256: 9.375 -> 9
    assert smart_round(200) == 192  # base 16 above 128: 12.5 -> 12 (half to even), not 13


def test_conventions_are_checked():
    spec = parse("SuperConvK3BNRELU(3,8,2,1)")
    with pytest.raises(ConfigError, match="unknown counting convention"):
        count(spec, resolution=32, num_classes=10, convention="bogus")
    with pytest.raises(ConfigError, match="resolution must be a positive integer"):
        count(spec, resolution=0, num_classes=10)
    with pytest.raises(ConfigError, match="num_classes must be a non-negative integer"):
        count(spec, resolution=32, num_classes=-1)
    genet = parse("ConvKX(3,8,3,2)BN(8)RELU(8)", "genet")
    with pytest.raises(ConfigError, match="does not apply to genet"):
        count(genet, resolution=32, num_classes=10, convention="zennas")


def _zen_tokens():
    for k, s, n in itertools.product((1, 3, 5, 7), (1, 2), (1, 2)):
        yield f"SuperConvK{k}BNRELU(16,24,{s},{n})"
    for k, s, n in itertools.product((3, 5, 7), (1, 2), (1, 2)):
        yield f"SuperResK{k}K{k}(16,24,{s},8,{n})"
        yield f"SuperResK1K{k}K1(16,24,{s},8,{n})"
    for e, k, s in itertools.product((1, 2, 4, 6), (3, 5, 7), (1, 2)):
        yield f"SuperResIDWE{e}K{k}(16,24,{s},16,2)"  # b != out: later units project
        yield f"SuperResIDWE{e}K{k}(16,24,{s},24,1)"


def _check_built_equals_analytic(spec: ArchSpec, side: int, num_classes: int, use_se: bool) -> None:
    cx = count(spec, resolution=side, num_classes=num_classes, use_se=use_se)
    net = build(spec, BuildOptions(num_classes=num_classes, use_se=use_se))
    assert param_count(net) == cx.params
    assert hook_macs(net, (1, spec.blocks[0].in_channels, side, side)) == cx.macs


@pytest.mark.parametrize("token", list(_zen_tokens()))
@pytest.mark.parametrize("use_se", [False, True])
def test_every_zennas_block_built_equals_analytic(token, use_se):
    _check_built_equals_analytic(_single(token), 15, 0, use_se)  # odd side exercises the output arithmetic


@pytest.mark.parametrize(
    "token",
    [
        f"SuperRes{kind}(16,24,{k},{s},{e},{n})"
        for kind, e in (("KXKX", 1.0), ("K1KXK1", 0.25), ("K1DWK1", 3.0), ("K1KX", 1.0), ("K1DW", 1.0))
        for k, s, n in itertools.product((3, 5), (1, 2), (1, 2))
    ]
    + ["SuperResK1DW(24,24,3,1,1.0,2)"],
)
def test_every_genet_block_built_equals_analytic(token):
    block = parse(f"ConvKX(3,{token.split('(')[1].split(',')[0]},3,1){token}", "genet").blocks[1]
    assert isinstance(block, GenSuperRes)
    _check_built_equals_analytic(ArchSpec("genet", (block,)), 13, 0, False)


def test_whole_zoo_built_equals_golden(zoo):
    """Every built zoo model holds exactly the golden number of parameters; models up to 1 GMAC
    also run a real forward at their own resolution whose hook-counted MACs equal the golden MACs.

    The eight larger models are built on the meta device only (no memory, no forward): their MACs
    equal the golden figure analytically (test_zoo_params_and_macs_equal_the_independent_count) and
    every block type they use is checked against a real forward in the parametrised tests above.
    """
    forwarded = 0
    for entry in zoo:
        spec = parse(entry["arch_string"])
        golden = entry["computed_for_this_report"]
        with torch.device("meta"):  # skip weight initialisation: shapes are all we need
            net = build(spec, BuildOptions(num_classes=entry["num_classes"], use_se=entry["use_se"]))
        assert param_count(net) == golden["learnable_params_incl_BN_affine"], entry["name"]
        if golden["conv_linear_MACs"] > 1e9:
            continue
        net = net.to_empty(device="cpu")  # real CPU tensors for a real forward
        with torch.no_grad():  # uninitialised memory can hold denormals, which make CPU convs crawl
            for tensor in itertools.chain(net.parameters(), net.buffers()):
                tensor.zero_()
        r = entry["resolution"]
        assert hook_macs(net, (1, 3, r, r)) == golden["conv_linear_MACs"], entry["name"]
        forwarded += 1
    assert forwarded == 12


def _layer_types(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.children()]


def test_zennas_unit_layout_bn_eps_and_projection_bias():
    spec = parse("SuperConvK3BNRELU(3,16,2,1)SuperResK1K3K1(16,32,2,8,1)SuperConvK1BNRELU(32,64,1,1)")
    net = build(spec, num_classes=10, use_se=True)
    unit_a, unit_b = net.blocks[1].layers
    assert isinstance(unit_a, ResidualUnit)
    # 1x1-BN-ReLU, kxk-BN-ReLU, SE (after the k x k), 1x1-BN; ReLU after the add lives in the unit.
    assert _layer_types(unit_a.body) == [
        "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "SqueezeExcite", "Conv2d", "BatchNorm2d",
    ]  # fmt: skip
    assert unit_a.body[3].stride == (2, 2)  # stride on the k x k conv
    assert unit_a.shortcut[0].bias is not None  # first unit: biased 1x1 projection + BN
    assert unit_b.shortcut is None  # later unit, same shape: identity
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    se = unit_a.body[6]
    assert isinstance(se, SqueezeExcite) and se.gate[1].out_channels == 2  # m = round(8/4)


def test_first_unit_projects_even_without_a_shape_change():
    spec = parse("SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,16,1,8,2)")
    first, second = build(spec, num_classes=0).blocks[1].layers
    assert first.shortcut is not None and second.shortcut is None


def test_genet_uses_default_bn_eps_and_unbiased_projection():
    spec = parse("ConvKX(3,8,3,2)BN(8)RELU(8)SuperResKXKX(8,16,3,2,1.0,1)", "genet")
    net = build(spec, num_classes=10)
    assert all(m.eps == 1e-5 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    unit = net.blocks[3].layers[0]
    assert unit.shortcut[0].bias is None


def test_switches_remove_bn_residuals_and_se():
    spec = parse("SuperConvK3BNRELU(3,16,2,1)SuperResIDWE2K3(16,32,2,24,2)SuperConvK1BNRELU(32,64,1,1)")
    plain = build(spec, BuildOptions(num_classes=10, use_se=False, bn=False, residual=False))
    kinds = {type(m) for m in plain.modules()}
    assert nn.BatchNorm2d not in kinds and SqueezeExcite not in kinds
    assert all(u.shortcut is None and not u.residual for u in plain.blocks[1].layers)
    # Without residuals each unit is relu(body(x)): check numerically.
    unit = plain.blocks[1].layers[0]
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(unit(x), torch.relu(unit.body(x)))
    # The plain network still counts exactly what it holds: all convs, no BN, no projections.
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)


def test_multi_scale_outputs_at_strides_4_to_32():
    net = build(parse(next_zennet := "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperResK3K3(16,24,2,8,1)"
                      "SuperResK3K3(24,32,2,8,1)SuperResK3K3(32,40,2,8,1)SuperConvK1BNRELU(40,64,1,1)"),
                BuildOptions(num_classes=0, multi_scale=True))  # fmt: skip
    outs = net(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 16, 16), (1, 24, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
    cx = count(parse(next_zennet), resolution=64, num_classes=0)
    assert [(s.stride, s.channels, s.size) for s in cx.stages][1:] == [
        (4, 16, 16),
        (8, 24, 8),
        (16, 32, 4),
        (32, 64, 2),
    ]


def test_backbone_only_has_no_head():
    spec = parse("SuperConvK3BNRELU(3,8,2,1)SuperConvK1BNRELU(8,16,1,1)")
    net = build(spec, num_classes=0)
    assert net.head is None and tuple(net(torch.zeros(1, 3, 32, 32)).shape) == (1, 16, 16, 16)
    assert count(spec, resolution=32, num_classes=0).head_params == 0
    with pytest.raises(ConfigError, match="num_classes must be a non-negative integer"):
        BuildOptions(num_classes=-2)


def test_block_specs_are_the_ones_parsed():
    spec = parse("SuperConvK3BNRELU(3,8,2,1)SuperResK5K5(8,16,2,8,1)")
    assert isinstance(spec.blocks[0], ZenConv) and isinstance(spec.blocks[1], ZenRes)
