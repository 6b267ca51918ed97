"""Analytic counts of the ZenNAS (`zennas-v1`) dialect, in two conventions.

Each block is expanded into a list of layer records (conv, BN, projection, SE) at known spatial
sides; the correct count (REFERENCE 2.1) and the ZenNAS repository's get_FLOPs/get_model_size
convention (REFERENCE 2.2, for reproducing published budgets) are both sums over those records.
"""

from __future__ import annotations

from functools import lru_cache

from zennas.arch import ArchSpec
from zennas.arch.zennas import ZenConv, ZenRes, smart_round
from zennas.counting import (
    BlockCount,
    LayerGroups,
    LayerRecord,
    ModelComplexity,
    chained,
    conv_out,
    head_layers,
    register_counter,
    register_layer_groups,
    totals,
)
from zennas.counting.units import Conv, Unit, se_mid, unit_layers, unit_macs, unit_params, units_peak
from zennas.errors import ConfigError


def zen_units(block: ZenConv | ZenRes, side: int, use_se: bool) -> list[Unit]:
    """Expand a ZenNAS super-block into its residual units at input side `side`."""
    units: list[Unit] = []
    if isinstance(block, ZenConv):
        c, convs = block.in_channels, []
        for i in range(block.sub_layers):
            conv = Conv(c, block.out_channels, block.kernel, block.stride if i == 0 else 1, side)
            convs.append(conv)
            c, side = block.out_channels, conv.out_side
        # A SuperConv is one plain stack (no residual, never SE).
        return [Unit(tuple(convs))]
    k, b, out = block.kernel, block.bottleneck, block.out_channels
    repeated: list[Unit] = []
    for i in range(block.sub_layers):
        if i >= 2:  # sub-layers after the second see the same input (out channels, stride 1, same side)
            units.extend(repeated)
            continue
        first = i == 0
        start = len(units)
        c, s = (block.in_channels, block.stride) if first else (out, 1)
        if block.kind == "KXKX":
            pairs = [(c, b, out, s)]
        elif block.kind == "K1KXK1":
            pairs = [(c, b, out, s), (out, b, out, 1)]
        else:
            pairs = [(c, b, b, s), (b, out, out, 1)]  # IDW: A ends at b, B at out
        for j, (c_in, width, c_out, stride) in enumerate(pairs):
            unit_first = first and j == 0
            mid = conv_out(side, k, stride)  # side after the strided conv (sides computed once: a search hot path)
            if block.kind == "KXKX":
                convs = (Conv(c_in, width, k, stride, side), Conv(width, c_out, k, 1, mid))
                se, se_side = width, mid
            elif block.kind == "K1KXK1":
                convs = (
                    Conv(c_in, width, 1, 1, side),
                    Conv(width, width, k, stride, side),
                    Conv(width, c_out, 1, 1, mid),
                )
                se, se_side = width, mid
            else:
                # IDW: expanded width from the unit's output width (A: b, B: out) times E.
                d = smart_round((b if j == 0 else out) * block.expansion, 8)
                convs = (Conv(c_in, d, 1, 1, side), Conv(d, d, k, stride, side, groups=d), Conv(d, c_out, 1, 1, mid))
                se, se_side = d, mid
            # The first unit of a super-block always projects (biased 1x1 + BN), later ones only on a change.
            projection = None
            if unit_first or stride > 1 or c_in != c_out:
                projection = Conv(c_in, c_out, 1, stride, side, bias=True)
            units.append(Unit(convs, projection, (se,) if use_se else (), se_side))
            side = mid
        if i == 1:
            repeated = units[start:]
    return units


def unit_repo_flops(unit: Unit) -> float:
    """ZenNAS get_FLOPs of a unit: convs + 1 per BN output element + the buggy projection term."""
    flops = 0.0
    for conv in unit.convs:
        flops += conv.c_in * conv.c_out * conv.kernel**2 * conv.in_side**2 / conv.stride**2 / conv.groups
        flops += conv.c_out * conv.out_side**2
    if unit.projection is not None:
        p = unit.projection
        # Bug reproduced on purpose: the output side is divided by the stride a second time.
        side = unit.out_side / p.stride
        flops += p.c_in * p.c_out * side**2 + p.c_out * side**2
    for c in unit.se_channels:
        m = se_mid(c)
        flops += c * m + m * c + c + c * unit.se_side**2
    return flops


def unit_repo_params(unit: Unit) -> int:
    """ZenNAS get_model_size of a unit: BN counts c, the projection's BN is not counted."""
    total = sum(conv.params + conv.c_out for conv in unit.convs)
    if unit.projection is not None:
        total += unit.projection.c_in * unit.projection.c_out + unit.projection.c_out
    for c in unit.se_channels:
        m = se_mid(c)
        total += c * m + 2 * m + m * c + 2 * c
    return total


def _se_flag(use_se: bool | None) -> bool:
    return bool(use_se)


@lru_cache(maxsize=200_000)
def _block_counts(block: ZenConv | ZenRes, side: int, se: bool) -> tuple[int, int, float, int, int, int]:
    """(params, MACs, repo FLOPs, repo params, output side, peak) of one super-block at input side `side`.

    Memoised: blocks are frozen and hashable, and a search counts mostly unchanged blocks.
    """
    units = zen_units(block, side, se)
    return (
        sum(unit_params(u) for u in units),
        sum(unit_macs(u) for u in units),
        sum(unit_repo_flops(u) for u in units),
        sum(unit_repo_params(u) for u in units),
        units[-1].out_side,
        units_peak(units),
    )


@register_counter("zennas-v1")
def count_zennas(
    spec: ArchSpec, *, resolution: int, num_classes: int, use_se: bool | None, convention: str
) -> ModelComplexity:
    """Exact counts of a ZenNAS network (body + global pool + Linear head)."""
    if convention not in ("correct", "zennas"):
        raise ConfigError(f"convention {convention!r} does not apply to zennas-v1; use 'correct' or 'zennas'")
    se = _se_flag(use_se)
    side, stride = resolution, 1
    blocks: list[BlockCount] = []
    repo_flops, repo_params = 0.0, 0
    for block in spec.blocks:
        params, macs, flops, conv_params, side, peak = _block_counts(block, side, se)
        repo_flops += flops
        repo_params += conv_params
        stride *= block.stride
        blocks.append(BlockCount(block.name, params, macs, block.out_channels, side, stride, peak))
    c_last = spec.blocks[-1].out_channels
    if num_classes:
        repo_flops += c_last * num_classes
        repo_params += c_last * num_classes + 1  # the repo counts the bias vector as one parameter
    return ModelComplexity.summed(
        spec,
        blocks,
        totals(head_layers(c_last, num_classes)),
        resolution=resolution,
        num_classes=num_classes,
        use_se=se,
        convention=convention,
        flops=repo_flops if convention == "zennas" else None,
        convention_params=repo_params if convention == "zennas" else None,
    )


@lru_cache(maxsize=200_000)
def block_group(block: ZenConv | ZenRes, side: int, se: bool) -> tuple[tuple[LayerRecord, ...], int]:
    """(layers, output side) of one super-block at input side `side`; a SuperConv is a plain stack."""
    units = zen_units(block, side, se)
    residual = isinstance(block, ZenRes)
    records = tuple(record for index, unit in enumerate(units) for record in unit_layers(unit, index, residual))
    return records, units[-1].out_side


@register_layer_groups("zennas-v1")
def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """The layers of every super-block, then the head (see zennas.counting.register_layer_groups)."""
    se = _se_flag(use_se)
    groups, side = chained(spec.blocks, resolution, lambda block, side: block_group(block, side, se))
    return (*groups, head_layers(spec.blocks[-1].out_channels, num_classes, side))


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer of a ZenNAS network in order (see LayerRecord); sums match `count_zennas`."""
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    return [record for group in groups for record in group]
