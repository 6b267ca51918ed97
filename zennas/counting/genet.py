"""Analytic counts of the GENet dialect (REFERENCE 2.1): every token, its residual units expanded.

GENet super-blocks expand into the same residual-unit records as ZenNAS (`zennas.counting.units`);
only the correct convention applies.
"""

from __future__ import annotations

from functools import lru_cache

from zennas.arch import ArchSpec
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.counting import (
    BlockCount,
    LayerGroups,
    LayerRecord,
    ModelComplexity,
    chained,
    head_layers,
    register_counter,
    register_layer_groups,
    totals,
)
from zennas.counting.units import Conv, Unit, unit_layers, unit_macs, unit_params, units_peak
from zennas.errors import ConfigError


def genet_units(block: GenSuperRes, side: int) -> list[Unit]:
    """Expand a GENet super-block into its residual units at input side `side`."""
    units: list[Unit] = []
    e, k, out = block.inner_channels, block.kernel, block.out_channels
    for i in range(block.sub_layers):
        c, s = (block.in_channels, block.stride) if i == 0 else (out, 1)
        if block.kind == "KXKX":
            c1 = Conv(c, e, k, s, side)
            convs = (c1, Conv(e, out, k, 1, c1.out_side))
        elif block.kind == "K1KX":
            convs = (Conv(c, e, 1, 1, side), Conv(e, out, k, s, side))
        elif block.kind == "K1DW":
            convs = (Conv(c, e, 1, 1, side), Conv(e, e, k, s, side, groups=e))
        else:
            groups = e if block.kind == "K1DWK1" else 1
            c2 = Conv(e, e, k, s, side, groups=groups)
            convs = (Conv(c, e, 1, 1, side), c2, Conv(e, out, 1, 1, c2.out_side))
        c_last = convs[-1].c_out
        projection = None if (s == 1 and c == c_last) else Conv(c, c_last, 1, s, side)
        units.append(Unit(convs, projection))
        side = convs[-1].out_side
    return units


@register_counter("genet")
def count_genet(
    spec: ArchSpec, *, resolution: int, num_classes: int, use_se: bool | None, convention: str
) -> ModelComplexity:
    """Exact counts of a GENet network (the trailing AdaptiveAvgPool becomes the global pool)."""
    if convention != "correct":
        raise ConfigError(f"convention {convention!r} does not apply to genet; use 'correct'")
    if use_se:
        raise ConfigError("GENet networks have no SE modules; drop use_se")
    side, stride = resolution, 1
    blocks: list[BlockCount] = []
    for block in spec.blocks:
        peak = 0
        if isinstance(block, GenConv):
            conv = Conv(block.in_channels, block.out_channels, block.kernel, block.stride, side)
            params, macs, side = conv.params, conv.macs, conv.out_side
        elif isinstance(block, GenBN):
            params, macs = 2 * block.out_channels, 0
        elif isinstance(block, GenReLU | GenPool):
            params, macs = 0, 0
        else:
            units = genet_units(block, side)
            params = sum(unit_params(u) for u in units)
            macs = sum(unit_macs(u) for u in units)
            side, peak = units[-1].out_side, units_peak(units)
        stride *= block.stride
        blocks.append(BlockCount(block.name, params, macs, block.out_channels, side, stride, peak))
    head = totals(head_layers(spec.blocks[-1].out_channels, num_classes))
    return ModelComplexity.summed(spec, blocks, head, resolution=resolution, num_classes=num_classes, use_se=False)


@lru_cache(maxsize=200_000)
def block_group(block: object, side: int) -> tuple[tuple[LayerRecord, ...], int]:
    """(layers, output side) of one token at input side `side`; RELU and the final pool have none."""
    if isinstance(block, GenConv):
        conv = LayerRecord("conv", block.in_channels, block.out_channels, block.kernel, block.stride, side)
        return (conv,), conv.out_side
    if isinstance(block, GenBN):
        return (LayerRecord("bn", block.out_channels, block.out_channels, in_side=side),), side
    if isinstance(block, GenSuperRes):
        units = genet_units(block, side)
        records = tuple(record for index, unit in enumerate(units) for record in unit_layers(unit, index, True))
        return records, units[-1].out_side
    return (), side  # RELU, and the AdaptiveAvgPool that is the head's global pool


@register_layer_groups("genet")
def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """The layers of every token, then the head (see zennas.counting.register_layer_groups)."""
    if use_se:
        raise ConfigError("GENet networks have no SE modules; drop use_se")
    groups, side = chained(spec.blocks, resolution, block_group)
    return (*groups, head_layers(spec.blocks[-1].out_channels, num_classes, side))


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer (and BN token) of a GENet network in order; sums match `count_genet`."""
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    return [record for group in groups for record in group]
