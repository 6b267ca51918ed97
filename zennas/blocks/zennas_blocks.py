"""Torch modules of the ZenNAS and GENet families, built from the same unit expansion the counter uses.

The unit expansion (`zen_units`, `genet_units`) says which convolutions exist and where the
projections are; the modules below decide how they are wired (BN, ReLU, SE placement, adds),
following REFERENCE 1.1 and 1.2. The tests compare both against independent counts.
"""

from __future__ import annotations

from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.arch.zennas_dialect import ZenConv, ZenRes
from zennas.blocks.common import ResidualUnit, SqueezeExcite, conv_bn
from zennas.blocks.network import ClassifierHead, Network
from zennas.build import BuildOptions, register_builder
from zennas.counting.zennas_count import Conv, Unit, genet_units, se_mid, zen_units
from zennas.errors import ConfigError

ZEN_BN_EPS = 1e-3
GENET_BN_EPS = 1e-5


def _conv(rec: Conv, *, bn: bool, eps: float, relu: bool) -> list[nn.Module]:
    return conv_bn(
        rec.c_in, rec.c_out, rec.kernel, rec.stride, groups=rec.groups, bias=rec.bias, bn=bn, eps=eps, relu=relu
    )


def _unit_module(unit: Unit, *, bn: bool, eps: float, residual: bool) -> ResidualUnit:
    """conv-BN-ReLU ... conv-BN (no ReLU on the last), SE after the ReLU of the k x k conv."""
    layers: list[nn.Module] = []
    last = len(unit.convs) - 1
    # The SE follows the k x k conv: the first of two convs (KXKX), the middle of three.
    se_after = 0 if len(unit.convs) == 2 else 1
    for i, rec in enumerate(unit.convs):
        layers += _conv(rec, bn=bn, eps=eps, relu=i != last)
        if i == se_after:
            for c in unit.se_channels:
                layers.append(SqueezeExcite(c, se_mid(c), bn=bn, eps=eps))
    shortcut = None
    if unit.projection is not None:
        shortcut = nn.Sequential(*_conv(unit.projection, bn=bn, eps=eps, relu=False))
    return ResidualUnit(nn.Sequential(*layers), shortcut, residual=residual)


class ZenSuperBlock(nn.Module):
    """One ZenNAS super-block token: a conv stack (SuperConv) or a chain of residual units (SuperRes*)."""

    def __init__(self, block: ZenConv | ZenRes, in_side: int, options: BuildOptions):
        super().__init__()
        units = zen_units(block, in_side, bool(options.use_se))
        if isinstance(block, ZenConv):
            layers: list[nn.Module] = []
            for rec in units[0].convs:
                layers += _conv(rec, bn=options.bn, eps=ZEN_BN_EPS, relu=True)
            self.layers = nn.Sequential(*layers)
        else:
            self.layers = nn.Sequential(
                *(_unit_module(u, bn=options.bn, eps=ZEN_BN_EPS, residual=options.residual) for u in units)
            )

    def forward(self, x):
        return self.layers(x)


class GenSuperBlock(nn.Module):
    """One GENet token: ConvKX, BN, RELU or a SuperRes* chain of residual units."""

    def __init__(self, block: GenConv | GenBN | GenReLU | GenSuperRes, in_side: int, options: BuildOptions):
        super().__init__()
        if isinstance(block, GenConv):
            rec = Conv(block.in_channels, block.out_channels, block.kernel, block.stride, in_side)
            self.layers = nn.Sequential(*_conv(rec, bn=False, eps=GENET_BN_EPS, relu=False))
        elif isinstance(block, GenBN):
            self.layers = nn.Sequential(nn.BatchNorm2d(block.out_channels) if options.bn else nn.Identity())
        elif isinstance(block, GenReLU):
            self.layers = nn.Sequential(nn.ReLU(inplace=True))
        else:
            self.layers = nn.Sequential(
                *(
                    _unit_module(u, bn=options.bn, eps=GENET_BN_EPS, residual=options.residual)
                    for u in genet_units(block, in_side)
                )
            )

    def forward(self, x):
        return self.layers(x)


def _assemble(spec: ArchSpec, options: BuildOptions, make_block) -> Network:
    # The side matters only for bookkeeping (all convs use 'same' padding); 224 is a placeholder.
    side, stride = 224, 1
    blocks, strides = [], []
    for block in spec.blocks:
        if isinstance(block, GenPool):
            continue  # the trailing pool is replaced by the head's global pooling
        blocks.append(make_block(block, side, options))
        stride *= block.stride
        strides.append(stride)
    head = ClassifierHead(spec.blocks[-1].out_channels, options.num_classes) if options.num_classes else None
    return Network(blocks, strides, head, multi_scale=options.multi_scale)


@register_builder("zennas-v1")
def build_zennas(spec: ArchSpec, options: BuildOptions) -> Network:
    """ZenNAS network: super-blocks, global average pool, Linear head."""
    return _assemble(spec, options, ZenSuperBlock)


@register_builder("genet")
def build_genet(spec: ArchSpec, options: BuildOptions) -> Network:
    """GENet network: tokens in order, global average pool, Linear head."""
    if options.use_se:
        raise ConfigError("GENet networks have no SE modules; drop use_se")
    return _assemble(spec, options, GenSuperBlock)
