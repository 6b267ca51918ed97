"""Torch modules of the residual-unit records (`zennas.counting.units`) shared by ZenNAS and GENet.

The unit expansion says which convolutions exist and where the projections are; the modules here
decide how they are wired (BN, ReLU, SE placement, adds), following REFERENCE 1.1 and 1.2.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.ir import BlockSpec
from zennas.blocks.base import BuildOptions
from zennas.blocks.common import ResidualUnit, SqueezeExcite, conv_bn
from zennas.blocks.network import ClassifierHead, Network
from zennas.counting.units import Conv, Unit, se_mid

BlockMaker = Callable[[BlockSpec, int, BuildOptions], nn.Module]  # (block, input side, options) -> module


def conv_layers(rec: Conv, *, bn: bool, eps: float, relu: bool) -> list[nn.Module]:
    """The conv of a record, then BN (if `bn`) and ReLU (if `relu`), as a layer list."""
    return conv_bn(
        rec.c_in, rec.c_out, rec.kernel, rec.stride, groups=rec.groups, bias=rec.bias, bn=bn, eps=eps, relu=relu
    )


def unit_module(unit: Unit, *, bn: bool, eps: float, residual: bool) -> ResidualUnit:
    """conv-BN-ReLU ... conv-BN (no ReLU on the last), SE after the ReLU of the k x k conv."""
    layers: list[nn.Module] = []
    last = len(unit.convs) - 1
    # The SE follows the k x k conv: the first of two convs (KXKX), the middle of three.
    se_after = 0 if len(unit.convs) == 2 else 1
    for i, rec in enumerate(unit.convs):
        layers += conv_layers(rec, bn=bn, eps=eps, relu=i != last)
        if i == se_after:
            for c in unit.se_channels:
                layers.append(SqueezeExcite(c, se_mid(c), bn=bn, eps=eps))
    shortcut = None
    if unit.projection is not None:
        shortcut = nn.Sequential(*conv_layers(unit.projection, bn=bn, eps=eps, relu=False))
    return ResidualUnit(nn.Sequential(*layers), shortcut, residual=residual)


def assemble(spec: ArchSpec, options: BuildOptions, make_block: BlockMaker, *, skip: tuple[type, ...] = ()) -> Network:
    """The network of `spec`: one module per block (blocks of a `skip` type left out), then the head."""
    # The side matters only for bookkeeping (all convs use 'same' padding); 224 is a placeholder.
    side, stride = 224, 1
    blocks, strides = [], []
    for block in spec.blocks:
        if isinstance(block, skip):
            continue
        blocks.append(make_block(block, side, options))
        stride *= block.stride
        strides.append(stride)
    head = ClassifierHead(spec.blocks[-1].out_channels, options.num_classes) if options.num_classes else None
    return Network(blocks, strides, head, multi_scale=options.multi_scale)
