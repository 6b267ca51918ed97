"""Analytic operator lists against the convolutions a real forward pass of the built module runs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from zennas.api import settings_for
from zennas.arch import parse
from zennas.build import BuildOptions, build
from zennas.counting.binas import unroll
from zennas.errors import ConfigError, LatencyError
from zennas.latency.ops import Op, conv_op, network_op_groups, network_ops
from zennas.models import list_models, resolve_arch
from zennas.spaces import get_space

SE_CLASSES = ("SqueezeExcite", "TinySE")


def traced_convs(model: nn.Module, resolution: int) -> Counter:
    """(kind, c_in, c_out, input side, kernel, stride) of every conv a forward runs, outside SE modules."""
    se_convs = {
        id(conv)
        for module in model.modules()
        if type(module).__name__ in SE_CLASSES
        for conv in module.modules()
        if isinstance(conv, nn.Conv2d)
    }
    seen: Counter = Counter()

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        if id(module) in se_convs:
            return
        depthwise = module.groups > 1
        assert not depthwise or module.groups == module.in_channels == module.out_channels
        kind = "dwconv" if depthwise else "conv"
        side = inputs[0].shape[-1]
        seen[(kind, module.in_channels, module.out_channels, side, module.kernel_size[0], module.stride[0])] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return seen


def listed_convs(ops: tuple[Op, ...]) -> Counter:
    return Counter((op.kind, op.c_in, op.c_out, op.side, op.kernel, op.stride) for op in ops if "conv" in op.kind)


def se_modules(model: nn.Module) -> int:
    return sum(type(m).__name__ in SE_CLASSES for m in model.modules())


def check(spec, resolution: int, use_se: bool | None) -> None:
    model = build(spec, BuildOptions(num_classes=0, use_se=use_se))
    ops = network_ops(spec, resolution=resolution, num_classes=0, use_se=use_se)
    assert listed_convs(ops) == traced_convs(model, resolution)
    assert sum(op.kind == "se" for op in ops) == se_modules(model)


# Small resolutions keep the forwards cheap; the lists do not depend on the side beyond the arithmetic.
ZOO = sorted(list_models())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_operator_lists_match_the_built_network(name):
    spec, entry = resolve_arch(name)
    _, _, use_se = settings_for(spec, entry)
    check(spec, 64 if entry.resolution >= 64 else entry.resolution, use_se)


@pytest.mark.parametrize(
    "space", ["zennas-res", "zennas-idw", "genet", pytest.param("maedet", marks=pytest.mark.slow), "binas"]
)
def test_sampled_operator_lists_match_the_built_network(space):
    rng = np.random.default_rng(11)
    sp = get_space(space)
    for _ in range(3):
        check(sp.sample(rng), 64, None)


def test_residual_units_fuse_the_add_into_their_last_conv():
    spec, _ = resolve_arch("SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,2)SuperConvK1BNRELU(16,32,1,1)")
    ops = network_ops(spec, resolution=32, num_classes=10)
    kinds = [(op.kind, op.c_in, op.c_out, op.side, op.kernel, op.stride, op.fused) for op in ops]
    assert kinds == [
        ("conv", 3, 8, 32, 3, 1, 0),  # stem: plain
        ("conv", 8, 8, 32, 3, 2, 0),  # unit 1: k x k stride 2, bottleneck 8
        ("conv", 8, 16, 16, 3, 1, 1),  # ... its last conv carries the add
        ("conv", 8, 16, 32, 1, 2, 0),  # ... and the first unit always projects
        ("conv", 16, 8, 16, 3, 1, 0),  # unit 2: identity shortcut
        ("conv", 8, 16, 16, 3, 1, 1),
        ("conv", 16, 32, 16, 1, 1, 0),  # head conv
        ("head", 32, 10, 16, 1, 1, 0),
    ]


def test_group_convolutions_and_unsupported_dialects_are_errors():
    with pytest.raises(LatencyError, match="group convolution 8->16 k3 with 2 groups"):
        conv_op(8, 16, 14, 3, 1, groups=2)
    spec, _ = resolve_arch("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|none~2|")
    with pytest.raises(ConfigError, match="not available for the 'nb201' dialect"):
        network_ops(spec, resolution=32)


def test_fused_residual_moves_with_the_module():
    # the residual of a fused conv is a buffer: .to(dtype/device) must move it (it stayed on the CPU in FP32)
    import torch

    from zennas.latency.profile import op_module

    module, shape = op_module(Op("conv", 16, 16, 8, 3, 1, 1), 2)
    assert "residual" in dict(module.named_buffers())
    half = module.to(torch.float64)
    assert half.residual.dtype == torch.float64
    assert half(torch.randn(shape, dtype=torch.float64)).shape == (2, 16, 8, 8)


def test_binas_operators_carry_the_activation_the_built_network_applies():
    """Hard-swish and ReLU convs as built (SE's inner ReLU and the head's hard-swish are not conv operators)."""
    rng = np.random.default_rng(5)
    for _ in range(3):
        spec = get_space("binas").sample(rng)
        model = build(spec, BuildOptions(num_classes=0))
        inner = {id(m) for parent in model.modules() if type(parent).__name__ in ("SqueezeExcite", "BinasHead")
                 for m in parent.modules()}  # fmt: skip
        built = Counter(
            type(m).__name__ for m in model.modules() if isinstance(m, nn.ReLU | nn.Hardswish) and id(m) not in inner
        )
        ops = [op for op in network_ops(spec, resolution=64) if "conv" in op.kind]
        acts = Counter(op.act for op in ops)
        assert acts["hswish"] == built["Hardswish"] and acts["relu"] == built["ReLU"]
        # ... and each ds / ir layer's projection is linear (its 1x1 conv is followed by BN alone).
        projections = sum(layer.kind != "cn" for block in spec.blocks for layer in unroll(block, None))
        assert acts["none"] == projections > 0
    # The ZenNAS families keep ReLU everywhere.
    spec = get_space("zennas-res").sample(rng)
    assert {op.act for op in network_ops(spec, resolution=64)} == {"relu"}


# Hand-derived operator groups (kind, c_in, c_out, side, kernel, stride, fused, act), one list per block
# and the head last: what the lowering from zennas.counting.layer_groups must give for each dialect.
HAND_DERIVED = {
    "zennas SE: a unit's SE follows the conv carrying its add; the first unit projects": (
        "SuperConvK3BNRELU(3,8,2,1)SuperResK1K3K1(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)", "zennas-v1", 10, True,
        [
            [("conv", 3, 8, 32, 3, 2, 0, "relu")],
            [
                ("conv", 8, 8, 16, 1, 1, 0, "relu"), ("conv", 8, 8, 16, 3, 2, 0, "relu"),
                ("conv", 8, 16, 8, 1, 1, 1, "relu"), ("se", 8, 2, 8, 1, 1, 0, "relu"),
                ("conv", 8, 16, 16, 1, 2, 0, "relu"),  # projection at the unit's input side
                ("conv", 16, 8, 8, 1, 1, 0, "relu"), ("conv", 8, 8, 8, 3, 1, 0, "relu"),
                ("conv", 8, 16, 8, 1, 1, 1, "relu"), ("se", 8, 2, 8, 1, 1, 0, "relu"),
            ],
            [("conv", 16, 32, 8, 1, 1, 0, "relu")],
            [("head", 32, 10, 8, 1, 1, 0, "relu")],
        ],
    ),
    "genet: BN/RELU/pool tokens are empty groups, K1DWK1 has a depthwise middle conv": (
        "ConvKX(3,8,3,2)BN(8)RELU(8)SuperResK1DWK1(8,16,3,2,2.0,1)ConvKX(16,32,1,1)BN(32)RELU(32)"
        "AdaptiveAvgPool(32,1)", "genet", 10, None,
        [
            [("conv", 3, 8, 32, 3, 2, 0, "relu")], [], [],
            [
                ("conv", 8, 32, 16, 1, 1, 0, "relu"), ("dwconv", 32, 32, 16, 3, 2, 0, "relu"),
                ("conv", 32, 16, 8, 1, 1, 1, "relu"), ("conv", 8, 16, 16, 1, 2, 0, "relu"),
            ],
            [("conv", 16, 32, 8, 1, 1, 0, "relu")], [], [], [],
            [("head", 32, 10, 8, 1, 1, 0, "relu")],
        ],
    ),
    "tinynas: SE in place after the depthwise conv, no add when in != out, projection at the output side": (
        repr([
            {"class": "ConvKXBNRELU", "in": 3, "out": 16, "s": 2, "k": 3},
            {"class": "SuperResK1DWSEK1", "in": 16, "out": 32, "s": 2, "k": 3, "L": 2, "btn": 48},
            {"class": "SuperResK1KX", "in": 32, "out": 48, "s": 2, "k": 5, "L": 1, "btn": 24},
        ]), "tinynas", 0, None,
        [
            [("conv", 3, 16, 32, 3, 2, 0, "relu")],
            [
                ("conv", 16, 48, 16, 1, 1, 0, "relu"), ("dwconv", 48, 48, 16, 3, 2, 0, "relu"),
                ("se", 48, 8, 8, 1, 1, 0, "relu"), ("conv", 48, 32, 8, 1, 1, 0, "relu"),
                ("conv", 32, 48, 8, 1, 1, 0, "relu"), ("dwconv", 48, 48, 8, 3, 1, 0, "relu"),
                ("se", 48, 8, 8, 1, 1, 0, "relu"), ("conv", 48, 32, 8, 1, 1, 1, "relu"),
            ],
            [
                ("conv", 32, 24, 8, 1, 1, 0, "relu"), ("conv", 24, 48, 8, 5, 2, 1, "relu"),
                ("conv", 32, 48, 4, 1, 1, 0, "relu"),
            ],
            [],
        ],
    ),
    "binas: hard-swish stem, linear projections, pooled head conv then the classifier on 1 x 1": (
        "[['ds_r1_k3_s1_e1_c16_nre'], ['ir_r2_k5_s2_e4_c24_se0.25'], ['cn_r1_k1_s1_c64']]", "binas", 10, None,
        [
            [("conv", 3, 32, 32, 3, 2, 0, "hswish")],
            [("dwconv", 32, 32, 16, 3, 1, 0, "relu"), ("conv", 32, 16, 16, 1, 1, 0, "none")],
            [
                ("conv", 16, 64, 16, 1, 1, 0, "hswish"), ("dwconv", 64, 64, 16, 5, 2, 0, "hswish"),
                ("se", 64, 16, 8, 1, 1, 0, "relu"), ("conv", 64, 24, 8, 1, 1, 0, "none"),
                ("conv", 24, 96, 8, 1, 1, 0, "hswish"), ("dwconv", 96, 96, 8, 5, 1, 0, "hswish"),
                ("se", 96, 24, 8, 1, 1, 0, "relu"), ("conv", 96, 24, 8, 1, 1, 1, "none"),
            ],
            [("conv", 24, 64, 8, 1, 1, 0, "hswish")],
            [("head", 64, 1280, 8, 1, 1, 0, "relu"), ("head", 1280, 10, 1, 1, 1, 0, "relu")],
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HAND_DERIVED))
def test_operator_groups_match_hand_derived_lists(case):
    text, dialect, num_classes, use_se, expected = HAND_DERIVED[case]
    groups = network_op_groups(parse(text, dialect), resolution=32, num_classes=num_classes, use_se=use_se)
    assert [[tuple(op) for op in group] for group in groups] == expected
    assert all(type(op) is Op for group in groups for op in group)


def test_an_unchanged_block_keeps_its_operator_tuple():
    """The latency predictor memoises block sums by the identity of a group: equal blocks must share it."""
    spec = parse("SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,2)SuperConvK1BNRELU(16,32,1,1)")
    first = network_op_groups(spec, resolution=32, num_classes=10)
    again = network_op_groups(parse(spec.canonical), resolution=32, num_classes=10)
    assert all(a is b for a, b in zip(first, again, strict=True))
