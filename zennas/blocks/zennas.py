"""Torch modules of the ZenNAS family, built from the same unit expansion the counter uses.

The unit expansion (`zen_units`) says which convolutions exist and where the projections are;
`zennas.blocks.units` wires them (REFERENCE 1.1). The tests compare both against independent counts.
"""

from __future__ import annotations

from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.zennas import ZenConv, ZenRes
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import Network
from zennas.blocks.units import assemble, conv_layers, unit_module
from zennas.counting.zennas import zen_units

ZEN_BN_EPS = 1e-3


class ZenSuperBlock(nn.Module):
    """One ZenNAS super-block token: a conv stack (SuperConv) or a chain of residual units (SuperRes*)."""

    def __init__(self, block: ZenConv | ZenRes, in_side: int, options: BuildOptions):
        super().__init__()
        units = zen_units(block, in_side, bool(options.use_se))
        if isinstance(block, ZenConv):
            layers: list[nn.Module] = []
            for rec in units[0].convs:
                layers += conv_layers(rec, bn=options.bn, eps=ZEN_BN_EPS, relu=True)
            self.layers = nn.Sequential(*layers)
        else:
            self.layers = nn.Sequential(
                *(unit_module(u, bn=options.bn, eps=ZEN_BN_EPS, residual=options.residual) for u in units)
            )

    def forward(self, x):
        return self.layers(x)


@register_builder("zennas-v1")
def build_zennas(spec: ArchSpec, options: BuildOptions) -> Network:
    """ZenNAS network: super-blocks, global average pool, Linear head."""
    return assemble(spec, options, ZenSuperBlock)
