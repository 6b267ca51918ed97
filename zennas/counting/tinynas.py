"""Analytic counts of the TinyNAS dialect: exact params/MACs/shapes and TinyNAS's own conventions.

The correct count (REFERENCE.md 2.1) follows the layer lists of 1.3 exactly as
`zennas.blocks.tinynas` builds them: bias-free convs, BN (2c params each), projection shortcuts
and SE modules; spatial sides use conv arithmetic (ceil(R/2) for stride 2 with same padding,
which the ceil-mode shortcut pool matches). convention="tinynas" adds TinyNAS's `flops` and
`model_size` figures (1.3), which use float sides R / stride and count BN, activations, pools and adds.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from zennas.arch import ArchSpec
from zennas.arch.tinynas import InnerBlock, TinyConv, TinyRes, inner_blocks, se_width
from zennas.counting import (
    BlockCount,
    LayerRecord,
    ModelComplexity,
    conv_macs,
    conv_out,
    conv_params,
    head_layers,
    linear_head,
    register_counter,
)
from zennas.errors import ConfigError


def _inner_counts(inner: InnerBlock, side: int, use_se: bool) -> tuple[int, int, int, int, int, int]:
    """(params, macs, out side, bn params, se params, se macs) of one inner block at input side `side`."""
    c, o, b, k, s, g = inner.in_channels, inner.out_channels, inner.bottleneck, inner.kernel, inner.stride, inner.groups
    mid = conv_out(side, k, s)  # the strided conv's output side (stride on the k x k conv)
    if inner.kind == "ResK1KXK1":
        convs = [(c, b, 1, g, side), (b, b, k, g, mid), (b, o, 1, g, mid)]
    elif inner.kind == "ResK1KX":
        convs = [(c, b, 1, g, side), (b, o, k, g, mid)]
    elif inner.kind == "ResKXKX":
        convs = [(c, b, k, g, side), (b, o, k, g, mid)]
    else:  # ResK1DWK1 / ResK1DWSEK1: the middle conv is depthwise (groups = btn)
        convs = [(c, b, 1, g, side), (b, b, k, b, mid), (b, o, 1, g, mid)]
    if inner.projection:
        convs.append((c, o, 1, 1, mid))  # after the ceil-mode pool the shortcut side equals `mid`
    params = sum(conv_params(ci, co, kk, gg) for ci, co, kk, gg, _ in convs)
    macs = sum(conv_macs(ci, co, kk, r, gg) for ci, co, kk, gg, r in convs)
    bn = sum(2 * co for _, co, _, _, _ in convs)
    se_params = se_macs = 0
    if inner.has_se and use_se:
        m = se_width(b)
        se_params = b * m + 2 * m + m * b + 2 * b  # two 1x1 convs with their BNs
        se_macs = b * m + m * b  # at 1 x 1 spatial
    return params + bn + se_params, macs + se_macs, mid, bn, se_params, se_macs


def _bits(extras: dict[str, Any], index: int | None, convs: int) -> tuple[tuple[int, int], ...] | None:
    """(nbitsA, nbitsW) per conv of a quantised block (inner block `index`), or None if not quantised."""
    if "nbitsA" not in extras:
        return None
    a, w = extras["nbitsA"], extras["nbitsW"]
    if index is None:
        return ((a, w),)
    return tuple(zip(a[index * convs : (index + 1) * convs], w[index * convs : (index + 1) * convs], strict=True))


def _tn_conv(c_in: int, c_out: int, k: int, g: int, r_out: Fraction, bits: tuple[int, int] | None):
    """TinyNAS ConvKXBN (flops, model_size): the conv term scaled by bit widths, plus 2 per BN output."""
    weights = Fraction(c_in * c_out * k * k, g)
    flop_scale = Fraction(1) if bits is None else Fraction(bits[0] * bits[1], 64)
    size_scale = Fraction(1) if bits is None else Fraction(bits[1], 8)
    return (weights * flop_scale + 2 * c_out) * r_out * r_out, weights * size_scale + 2 * c_out


def _tn_inner(inner: InnerBlock, r: Fraction, bits: tuple[tuple[int, int], ...] | None, use_se: bool):
    """TinyNAS (flops, model_size) of one inner block at float input side `r` (REFERENCE 1.3)."""
    c, o, b, k, s, g = inner.in_channels, inner.out_channels, inner.bottleneck, inner.kernel, inner.stride, inner.groups
    ro = r / s

    def bit(i: int) -> tuple[int, int] | None:
        return None if bits is None else bits[i]

    if inner.kind == "ResK1KXK1":
        convs = [(c, b, 1, g, r), (b, b, k, g, ro), (b, o, 1, g, ro)]
        acts = b * r * r + b * ro * ro + o * ro * ro
    elif inner.kind == "ResK1KX":
        convs = [(c, b, 1, g, r), (b, o, k, g, ro)]
        acts = b * r * r + o * ro * ro
    elif inner.kind == "ResKXKX":
        convs = [(c, b, k, g, r), (b, o, k, g, ro)]
        acts = b * r * r + o * ro * ro
    else:
        convs = [(c, b, 1, g, r), (b, b, k, b, ro), (b, o, 1, g, ro)]
        acts = b * r * r + b * ro * ro + o * ro * ro
    flops, size = Fraction(acts), Fraction(0)
    for i, (ci, co, kk, gg, side) in enumerate(convs):
        f, m = _tn_conv(ci, co, kk, gg, side, bit(i))
        flops, size = flops + f, size + m
    if inner.pooled:
        flops += c * r * r  # one op per input element of the avg-pool
    if inner.projection:
        f, m = _tn_conv(c, o, 1, 1, ro, bit(0))
        flops, size = flops + f + o * ro * ro, size + m  # + the add, counted only with a projection
    if inner.has_se and use_se:
        mid = se_width(b)
        size += b * mid + 2 * mid + mid * b + 2 * b  # TinyNAS counts SE weights but not SE FLOPs
    return flops, size


def _side_error(index: int, block: TinyConv, side: int, resolution: int) -> ConfigError:
    return ConfigError(
        f"resolution {resolution} is too small: block {index} (ConvKXBNRELU k={block.kernel}, p={block.pad}) "
        f"gets a {side}x{side} input and would produce an empty feature map; use a larger resolution"
    )


@register_counter("tinynas")
def count_tinynas(
    spec: ArchSpec,
    *,
    resolution: int,
    num_classes: int,
    use_se: bool | None = None,
    convention: str = "correct",
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
            out_side = conv_out(side, block.kernel, block.stride, block.pad)
            if out_side < 1:
                raise _side_error(index, block, side, resolution)
            c_in, c_out, k, g = block.in_channels, block.out_channels, block.kernel, block.groups
            b_params = conv_params(c_in, c_out, k, g) + 2 * c_out
            b_macs = conv_macs(c_in, c_out, k, out_side, g)
            bn_params += 2 * c_out
            bits = _bits(extras, None, 1)
            f, m = _tn_conv(c_in, c_out, k, g, r / block.stride, None if bits is None else bits[0])
            tn_flops += f + c_out * (r / block.stride) ** 2  # + the activation
            tn_size += m
        elif isinstance(block, TinyRes):
            b_params = b_macs = 0
            out_side = side
            inner_r = r
            for i, inner in enumerate(inner_blocks(block)):
                # The widest map: the first conv's btn channels at the inner block's input side.
                peak = max(peak, inner.bottleneck * out_side**2)
                p, mc, out_side, bn, sp, sm = _inner_counts(inner, out_side, se_on)
                b_params, b_macs = b_params + p, b_macs + mc
                bn_params, se_params, se_macs = bn_params + bn, se_params + sp, se_macs + sm
                f, m = _tn_inner(inner, inner_r, _bits(extras, i, block.convs_per_inner), se_on)
                tn_flops, tn_size = tn_flops + f, tn_size + m
                inner_r /= inner.stride
        else:
            raise ConfigError(f"{type(block).__name__} is not a TinyNAS block; parse the text with dialect 'tinynas'")
        side = out_side
        stride *= block.stride
        r /= block.stride
        counts.append(BlockCount(block.name, b_params, b_macs, block.out_channels, side, stride, peak))
    channels = spec.blocks[-1].out_channels
    head_params, head_macs = linear_head(channels, num_classes)
    has_se = se_on and any(isinstance(b, TinyRes) and b.kind == "SuperResK1DWSEK1" for b in spec.blocks)
    tinynas = convention == "tinynas"
    return ModelComplexity.summed(
        spec,
        counts,
        head_params=head_params,
        head_macs=head_macs,
        resolution=resolution,
        num_classes=num_classes,
        use_se=has_se,
        convention=convention,
        # TinyNAS networks are backbones: its figures never include a classifier head.
        flops=float(tn_flops) if tinynas else None,
        convention_params=float(tn_size) if tinynas else None,
        extra={"bn_params": bn_params, "se_params": se_params, "se_macs": se_macs},
    )


def _inner_layers(inner: InnerBlock, side: int, use_se: bool) -> list[LayerRecord]:
    """One inner block's layers as `zennas.blocks.tinynas.TinyResInner` builds them (every conv with BN)."""
    c, o, b, k, s, g = inner.in_channels, inner.out_channels, inner.bottleneck, inner.kernel, inner.stride, inner.groups
    if inner.kind == "ResK1KXK1":
        shapes = [(c, b, 1, 1, g), (b, b, k, s, g), (b, o, 1, 1, g)]
    elif inner.kind == "ResK1KX":
        shapes = [(c, b, 1, 1, g), (b, o, k, s, g)]
    elif inner.kind == "ResKXKX":
        shapes = [(c, b, k, 1, g), (b, o, k, s, g)]  # the stride sits on the second conv
    else:  # ResK1DWK1 / ResK1DWSEK1: the middle conv is depthwise
        shapes = [(c, b, 1, 1, g), (b, b, k, s, b), (b, o, 1, 1, g)]
    out: list[LayerRecord] = []
    for index, (c_in, c_out, kernel, stride, groups) in enumerate(shapes):
        if index == 2 and inner.has_se and use_se:  # SE after the depthwise conv's activation
            m = se_width(b)
            out += [LayerRecord("conv", b, m, bn=True), LayerRecord("conv", m, b, bn=True)]
        out.append(LayerRecord("conv", c_in, c_out, kernel, stride, side, groups, bn=True))
        side = out[-1].out_side
    if inner.projection:  # after the ceil-mode stride-2 pool the shortcut's side is the output side
        out.append(LayerRecord("conv", c, o, in_side=side, bn=True))
    return out


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer of a TinyNAS network in order (see LayerRecord); sums match `count_tinynas`."""
    se_on = use_se is not False
    side = resolution
    out: list[LayerRecord] = []
    for index, block in enumerate(spec.blocks):
        if isinstance(block, TinyConv):
            conv = LayerRecord(
                "conv", block.in_channels, block.out_channels, block.kernel, block.stride, side, block.groups,
                bn=True, padding=block.pad,
            )  # fmt: skip
            if conv.out_side < 1:
                raise _side_error(index, block, side, resolution)
            out.append(conv)
            side = conv.out_side
        elif isinstance(block, TinyRes):
            for inner in inner_blocks(block):
                inner_layers = _inner_layers(inner, side, se_on)
                out += inner_layers
                side = inner_layers[-1].out_side
        else:
            raise ConfigError(f"{type(block).__name__} is not a TinyNAS block; parse the text with dialect 'tinynas'")
    return out + list(head_layers(spec.blocks[-1].out_channels, num_classes))


__all__ = ["count_tinynas", "layers"]
