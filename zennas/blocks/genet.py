"""Torch modules of the GENet family, built from the same unit expansion the counter uses.

The unit expansion (`genet_units`) says which convolutions exist and where the projections are;
`zennas.blocks.units` wires them (REFERENCE 1.2). The tests compare both against independent counts.
"""

from __future__ import annotations

from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import Network
from zennas.blocks.units import assemble, conv_layers, unit_module
from zennas.counting.genet import genet_units
from zennas.counting.units import Conv
from zennas.errors import ConfigError

GENET_BN_EPS = 1e-5


class GenSuperBlock(nn.Module):
    """One GENet token: ConvKX, BN, RELU or a SuperRes* chain of residual units."""

    def __init__(self, block: GenConv | GenBN | GenReLU | GenSuperRes, in_side: int, options: BuildOptions):
        super().__init__()
        if isinstance(block, GenConv):
            rec = Conv(block.in_channels, block.out_channels, block.kernel, block.stride, in_side)
            self.layers = nn.Sequential(*conv_layers(rec, bn=False, eps=GENET_BN_EPS, relu=False))
        elif isinstance(block, GenBN):
            self.layers = nn.Sequential(nn.BatchNorm2d(block.out_channels) if options.bn else nn.Identity())
        elif isinstance(block, GenReLU):
            self.layers = nn.Sequential(nn.ReLU(inplace=True))
        else:
            self.layers = nn.Sequential(
                *(
                    unit_module(u, bn=options.bn, eps=GENET_BN_EPS, residual=options.residual)
                    for u in genet_units(block, in_side)
                )
            )

    def forward(self, x):
        return self.layers(x)


@register_builder("genet")
def build_genet(spec: ArchSpec, options: BuildOptions) -> Network:
    """GENet network: tokens in order, global average pool, Linear head."""
    if options.use_se:
        raise ConfigError("GENet networks have no SE modules; drop use_se")
    return assemble(spec, options, GenSuperBlock, skip=(GenPool,))  # the head pools globally instead
