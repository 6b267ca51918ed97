"""Analytic counts of the TinyNAS dialect: exact params/MACs/shapes and TinyNAS's own conventions.

The correct count (REFERENCE.md 2.1) follows the layer lists of 1.3 exactly as
`zennas.blocks.tinynas` builds them: bias-free convs, BN (2c params each), projection shortcuts
and SE modules; spatial sides use conv arithmetic (ceil(R/2) for stride 2 with same padding,
which the ceil-mode shortcut pool matches). convention="tinynas" adds TinyNAS's `flops` and
`model_size` figures (1.3), which use float sides R / stride and count BN, activations, pools and adds.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Any

from zennas.arch import ArchSpec
from zennas.arch.tinynas import InnerBlock, TinyConv, TinyRes, inner_blocks, se_width
from zennas.counting import (
    BlockCount,
    LayerGroups,
    LayerRecord,
    ModelComplexity,
    head_layers,
    register_counter,
    register_layer_groups,
    totals,
)
from zennas.errors import ConfigError


def _inner_counts(records: list[LayerRecord]) -> tuple[int, int, int, int, int]:
    """(params, macs, bn params, se params, se macs) of one inner block's layers."""
    se_params, se_macs = totals(r for r in records if r.role == "se")
    bn = sum(2 * r.c_out for r in records if r.role != "se")  # the SE's own BNs count as SE params
    return *totals(records), bn, se_params, se_macs


def _bits(extras: dict[str, Any], index: int | None, convs: int) -> tuple[tuple[int, int], ...] | None:
    """(nbitsA, nbitsW) per conv of a quantised block (inner block `index`), or None if not quantised."""
    if "nbitsA" not in extras:
        return None
    a, w = extras["nbitsA"], extras["nbitsW"]
    if index is None:
        return ((a, w),)
    return tuple(zip(a[index * convs : (index + 1) * convs], w[index * convs : (index + 1) * convs], strict=True))


def _tn_conv(conv: LayerRecord, r_out: Fraction, bits: tuple[int, int] | None):
    """TinyNAS ConvKXBN (flops, model_size): the conv term scaled by bit widths, plus 2 per BN output."""
    weights = Fraction(conv.c_in * conv.c_out * conv.kernel * conv.kernel, conv.groups)
    flop_scale = Fraction(1) if bits is None else Fraction(bits[0] * bits[1], 64)
    size_scale = Fraction(1) if bits is None else Fraction(bits[1], 8)
    return (weights * flop_scale + 2 * conv.c_out) * r_out * r_out, weights * size_scale + 2 * conv.c_out


def _tn_inner(inner: InnerBlock, records: list[LayerRecord], r: Fraction, bits: tuple[tuple[int, int], ...] | None):
    """TinyNAS (flops, model_size) of one inner block's layers at float input side `r` (REFERENCE 1.3).

    Each main conv costs its weights (scaled by bit widths) and 2 per BN output at its float output
    side, plus one op per activation output; sides divide by the stride as floats, not conv arithmetic.
    """
    c, o = inner.in_channels, inner.out_channels
    flops, size = Fraction(0), Fraction(0)
    side = r
    for i, conv in enumerate(rec for rec in records if rec.role == "main"):
        side = side / conv.stride
        f, m = _tn_conv(conv, side, None if bits is None else bits[i])
        flops, size = flops + f + conv.c_out * side * side, size + m
    if inner.pooled:
        flops += c * r * r  # one op per input element of the avg-pool
    if inner.projection:  # the shortcut's 1x1 conv, the last record
        f, m = _tn_conv(records[-1], side, None if bits is None else bits[0])
        flops, size = flops + f + o * side * side, size + m  # + the add, counted only with a projection
    size += sum(rec.params for rec in records if rec.role == "se")  # TinyNAS counts SE weights but not SE FLOPs
    return flops, size


def _side_error(index: int, block: TinyConv, side: int, resolution: int) -> ConfigError:
    return ConfigError(
        f"resolution {resolution} is too small: block {index} (ConvKXBNRELU k={block.kernel}, p={block.pad}) "
        f"gets a {side}x{side} input and would produce an empty feature map; use a larger resolution"
    )


@register_counter("tinynas")
def count_tinynas(
    spec: ArchSpec, *, resolution: int, num_classes: int, use_se: bool | None = None, convention: str = "correct"
) -> ModelComplexity:
    """Exact params/MACs/shapes of a TinyNAS network; convention="tinynas" adds TinyNAS flops/model_size."""
    if convention not in ("correct", "tinynas"):
        raise ConfigError(
            f"the {convention!r} counting convention does not apply to TinyNAS networks; "
            "use 'correct' or 'tinynas' (TinyNAS flops/model_size)"
        )
    se_on = use_se is not False
    extras_of = spec.source if spec.source is not None else ((),) * len(spec.blocks)
    side, stride = resolution, 1
    r = Fraction(resolution)  # TinyNAS float side
    counts: list[BlockCount] = []
    bn_params = se_params = se_macs = 0
    tn_flops, tn_size = Fraction(0), Fraction(0)
    for index, block in enumerate(spec.blocks):
        extras = dict(extras_of[index])
        peak = 0
        if isinstance(block, TinyConv):
            (conv,), out_side = block_group(block, side, se_on)
            if out_side < 1:
                raise _side_error(index, block, side, resolution)
            b_params, b_macs = conv.params, conv.macs
            bn_params += 2 * conv.c_out
            bits = _bits(extras, None, 1)
            f, m = _tn_conv(conv, r / block.stride, None if bits is None else bits[0])
            tn_flops += f + conv.c_out * (r / block.stride) ** 2  # + the activation
            tn_size += m
        elif isinstance(block, TinyRes):
            b_params = b_macs = 0
            out_side = side
            inner_r = r
            for i, inner in enumerate(inner_blocks(block)):
                # The widest map: the first conv's btn channels at the inner block's input side.
                peak = max(peak, inner.bottleneck * out_side**2)
                records = inner_layers(inner, out_side, se_on, i)
                p, mc, bn, sp, sm = _inner_counts(records)
                out_side = records[-1].out_side
                b_params, b_macs = b_params + p, b_macs + mc
                bn_params, se_params, se_macs = bn_params + bn, se_params + sp, se_macs + sm
                f, m = _tn_inner(inner, records, inner_r, _bits(extras, i, block.convs_per_inner))
                tn_flops, tn_size = tn_flops + f, tn_size + m
                inner_r /= inner.stride
        else:
            raise ConfigError(f"{type(block).__name__} is not a TinyNAS block; parse the text with dialect 'tinynas'")
        side = out_side
        stride *= block.stride
        r /= block.stride
        counts.append(BlockCount(block.name, b_params, b_macs, block.out_channels, side, stride, peak))
    head = totals(head_layers(spec.blocks[-1].out_channels, num_classes))
    has_se = se_on and any(isinstance(b, TinyRes) and b.kind == "SuperResK1DWSEK1" for b in spec.blocks)
    tinynas = convention == "tinynas"
    return ModelComplexity.summed(
        spec,
        counts,
        head,
        resolution=resolution,
        num_classes=num_classes,
        use_se=has_se,
        convention=convention,
        # TinyNAS networks are backbones: its figures never include a classifier head.
        flops=float(tn_flops) if tinynas else None,
        convention_params=float(tn_size) if tinynas else None,
        extra={"bn_params": bn_params, "se_params": se_params, "se_macs": se_macs},
    )


def inner_layers(inner: InnerBlock, side: int, use_se: bool, index: int = 0) -> list[LayerRecord]:
    """One inner block's layers as `zennas.blocks.tinynas.TinyResInner` builds them (every conv with BN).

    The one spelling of the TinyNAS inner-block layout: counts, latency operators and the entropy
    proxies all read it. `index` is the inner block's position in its super-block.
    """
    c, o, b, k, s, g = inner.in_channels, inner.out_channels, inner.bottleneck, inner.kernel, inner.stride, inner.groups
    if inner.kind == "ResK1KXK1":
        shapes = [(c, b, 1, 1, g), (b, b, k, s, g), (b, o, 1, 1, g)]
    elif inner.kind == "ResK1KX":
        shapes = [(c, b, 1, 1, g), (b, o, k, s, g)]
    elif inner.kind == "ResKXKX":
        shapes = [(c, b, k, 1, g), (b, o, k, s, g)]  # the stride sits on the second conv
    elif inner.depthwise:  # ResK1DWK1 / ResK1DWSEK1: the middle conv is depthwise
        shapes = [(c, b, 1, 1, g), (b, b, k, s, b), (b, o, 1, 1, g)]
    else:
        raise ConfigError(f"unknown TinyNAS inner block {inner.kind!r}")
    out: list[LayerRecord] = []
    last = len(shapes) - 1
    for position, (c_in, c_out, kernel, stride, groups) in enumerate(shapes):
        if position == 2 and inner.has_se and use_se:  # SE after the depthwise conv's activation
            m = se_width(b)
            out += [
                LayerRecord("conv", b, m, bn=True, role="se", unit=index, pooled=side),
                LayerRecord("conv", m, b, bn=True, role="se", unit=index),
            ]
        out.append(LayerRecord("conv", c_in, c_out, kernel, stride, side, groups, bn=True, unit=index,
                               residual=inner.residual and position == last))  # fmt: skip
        side = out[-1].out_side
    if inner.projection:  # after the ceil-mode stride-2 pool the shortcut's side is the output side
        out.append(LayerRecord("conv", c, o, in_side=side, bn=True, role="shortcut", unit=index))
    return out


def conv_layer(block: TinyConv, side: int) -> LayerRecord:
    """The layer of a ConvKXBNRELU block (its own padding, with BN) at input side `side`."""
    return LayerRecord(
        "conv", block.in_channels, block.out_channels, block.kernel, block.stride, side, block.groups,
        bn=True, padding=block.pad,
    )  # fmt: skip


@lru_cache(maxsize=200_000)
def block_group(block: TinyConv | TinyRes, side: int, use_se: bool) -> tuple[tuple[LayerRecord, ...], int]:
    """(layers, output side) of one block at input side `side` (a stem/plain conv, or every inner block)."""
    if isinstance(block, TinyConv):
        conv = conv_layer(block, side)
        return (conv,), conv.out_side
    records: list[LayerRecord] = []
    for index, inner in enumerate(inner_blocks(block)):
        records += inner_layers(inner, side, use_se, index)
        side = records[-1].out_side
    return tuple(records), side


@register_layer_groups("tinynas")
def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """The layers of every block, then the head (see zennas.counting.register_layer_groups)."""
    se_on = use_se is not False
    side = resolution
    groups = []
    for index, block in enumerate(spec.blocks):
        if not isinstance(block, TinyConv | TinyRes):
            raise ConfigError(f"{type(block).__name__} is not a TinyNAS block; parse the text with dialect 'tinynas'")
        records, out_side = block_group(block, side, se_on)
        if out_side < 1 and isinstance(block, TinyConv):  # only a reduced padding can empty a map
            raise _side_error(index, block, side, resolution)
        groups.append(records)
        side = out_side
    return (*groups, head_layers(spec.blocks[-1].out_channels, num_classes, side))


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer of a TinyNAS network in order (see LayerRecord); sums match `count_tinynas`."""
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    return [record for group in groups for record in group]


__all__ = ["block_group", "conv_layer", "count_tinynas", "inner_layers", "layer_groups", "layers"]
