"""Residual-unit records shared by the ZenNAS and GENet families: the convs, projection and SE of one unit.

A dialect expands its blocks into these records (`zennas.counting.zennas.zen_units`,
`zennas.counting.genet.genet_units`); counts are sums over them, and the torch builders
(`zennas.blocks.zennas`, `zennas.blocks.genet`) wire modules from the same records.
"""

from __future__ import annotations

from typing import NamedTuple

from zennas.counting import LayerRecord, conv_out


class Conv(NamedTuple):
    """A convolution record: sides are the input side and the output side.

    A NamedTuple rather than a frozen dataclass: search-time latency prediction builds thousands of
    these per second, and tuple construction is several times cheaper.
    """

    c_in: int
    c_out: int
    kernel: int
    stride: int
    in_side: int
    groups: int = 1
    bias: bool = False

    @property
    def out_side(self) -> int:
        return conv_out(self.in_side, self.kernel, self.stride)

    @property
    def params(self) -> int:
        return self.c_in * self.c_out * self.kernel**2 // self.groups + (self.c_out if self.bias else 0)

    @property
    def macs(self) -> int:
        return self.c_in * self.c_out * self.kernel**2 // self.groups * self.out_side**2


class Unit(NamedTuple):
    """One residual unit (or a plain conv stack): main-path convs, projection, SE records."""

    convs: tuple[Conv, ...]
    projection: Conv | None = None
    se_channels: tuple[int, ...] = ()  # channels c of every SE(c) in the unit
    se_side: int = 1  # spatial side where the SE's input lives (for the repo FLOPs convention)

    @property
    def out_side(self) -> int:
        return self.convs[-1].out_side


def se_mid(channels: int) -> int:
    """Squeeze width of a ZenNAS SE: max(1, round(c/4))."""
    return max(1, round(channels / 4))


def unit_params(unit: Unit, bn: int = 2) -> int:
    """Learnable parameters of a unit (`bn` = params per BN channel)."""
    total = sum(conv.params + bn * conv.c_out for conv in unit.convs)
    if unit.projection is not None:
        total += unit.projection.params + bn * unit.projection.c_out
    for c in unit.se_channels:
        m = se_mid(c)
        total += c * m + bn * m + m * c + bn * c
    return total


def unit_macs(unit: Unit) -> int:
    """Conv multiply-accumulates of a unit (SE convs act on a 1x1 map)."""
    total = sum(conv.macs for conv in unit.convs)
    if unit.projection is not None:
        total += unit.projection.macs
    return total + sum(2 * c * se_mid(c) for c in unit.se_channels)


def units_peak(units: list[Unit]) -> int:
    """Values (per image) of the largest conv output among `units`: what a forward must hold at once."""
    return max(conv.c_out * conv.out_side**2 for unit in units for conv in unit.convs)


def unit_layers(unit: Unit, index: int = 0, residual: bool = False) -> list[LayerRecord]:
    """The unit's layers as `zennas.blocks.units.unit_module` builds them: convs with BN, SE after the k x k conv.

    `index` is the unit's position in its block; `residual`: the unit adds a shortcut to its last conv.
    """
    se_after = 0 if len(unit.convs) == 2 else 1  # the k x k conv: the first of two convs, the middle of three
    last = len(unit.convs) - 1
    out: list[LayerRecord] = []
    for position, conv in enumerate(unit.convs):
        out.append(LayerRecord("conv", conv.c_in, conv.c_out, conv.kernel, conv.stride, conv.in_side, conv.groups,
                               conv.bias, bn=True, unit=index, residual=residual and position == last))  # fmt: skip
        if position == se_after:
            for c in unit.se_channels:
                m = se_mid(c)
                out += [
                    LayerRecord("conv", c, m, bn=True, role="se", unit=index, pooled=unit.se_side),
                    LayerRecord("conv", m, c, bn=True, role="se", unit=index),
                ]
    if unit.projection is not None:
        p = unit.projection
        out.append(LayerRecord("conv", p.c_in, p.c_out, p.kernel, p.stride, p.in_side, p.groups, p.bias, bn=True,
                               role="shortcut", unit=index))  # fmt: skip
    return out
