"""Analytic counts of the BINAS dialect (timm MobileNetV3 rules), without building weights.

Each block string is unrolled into one `Layer` per repeat (channels, expanded width, SE width,
shortcut); the torch builder in `zennas.blocks.binas` builds exactly these records, and the tests
compare both with a built module's parameters, hook-counted MACs and torchvision's MobileNetV3.

Rules (timm `_efficientnet_blocks`, `mobilenetv3.py`; torchvision's mobilenet_v3_large agrees):
- widths round with timm `make_divisible(v, 8)`: nearest multiple of 8, at least 8, bumped by 8
  when rounding lost more than 10 %; `ir` expands to make_divisible(in * e);
- SE: 1x1 conv (c -> make_divisible(c * ratio)) with bias, ReLU, 1x1 conv back with bias,
  hard-sigmoid gate; c is the expanded width in `ir` and the input width in `ds` (timm's
  mobilenetv3 uses se_from_exp=True, so the ratio is not divided by the expansion);
- identity shortcut in `ds`/`ir` iff stride 1 and in == out; `cn` never has one;
- stem conv 3x3 stride 2 (3 -> stem width) + BN; head: global pool, 1x1 conv to 1280 WITH bias
  (no BN), hard-swish, Linear(1280, classes). Params include BN gamma/beta; MACs count conv and
  linear multiplies only (SE convs on a 1x1 map).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from zennas.arch import ArchSpec
from zennas.arch.binas import BinasBlock, BinasConv, BinasDS, BinasIR, check_spec, stem_width
from zennas.counting import (
    BlockCount,
    LayerGroups,
    LayerRecord,
    ModelComplexity,
    chained,
    conv_out,
    register_counter,
    register_layer_groups,
    totals,
)
from zennas.errors import ConfigError

STEM_KERNEL = 3
STEM_STRIDE = 2
HEAD_WIDTH = 1280  # timm MobileNetV3 num_features, BINAS and HardCoRe-NAS alike
DEFAULT_SE_RATIO = 0.25  # what use_se=True puts on an ir block whose string has no se


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm `make_divisible`: nearest multiple of `divisor` (>= min_value), never below 90 % of `value`."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Layer:
    """One physical block (one repeat of a block string) with every width resolved."""

    kind: str  # 'ds', 'ir' or 'cn'
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    mid_channels: int  # ir: expanded width; ds/cn: in_channels (the depthwise width of ds)
    se_channels: int  # squeeze width, 0 = no SE
    relu: bool
    shortcut: bool  # identity add (before the `residual` build switch)

    def out_side(self, in_side: int) -> int:
        """Output side: only the k x k conv strides (timm pads k // 2 for odd k)."""
        return conv_out(in_side, self.kernel, self.stride)


def effective_se_ratio(block: BinasBlock, use_se: bool | None) -> float:
    """SE ratio a block gets under BuildOptions.use_se (None: as written; False: none; True: ir blocks on)."""
    written = float(getattr(block, "se_ratio", 0.0))
    if use_se is False:
        return 0.0
    if use_se is True and isinstance(block, BinasIR):
        return written or DEFAULT_SE_RATIO
    return written


def unroll(block: BinasBlock, use_se: bool | None = None) -> tuple[Layer, ...]:
    """One Layer per repeat: the first takes the block's input and stride, the rest are stride 1."""
    ratio = effective_se_ratio(block, use_se)
    layers: list[Layer] = []
    c_in, stride = block.in_channels, block.stride
    for _ in range(block.repeats):
        c_out = block.out_channels
        mid = make_divisible(c_in * block.expansion) if isinstance(block, BinasIR) else c_in
        se = make_divisible(mid * ratio) if ratio and not isinstance(block, BinasConv) else 0
        shortcut = isinstance(block, BinasDS | BinasIR) and stride == 1 and c_in == c_out
        layers.append(Layer(block.kind, c_in, c_out, block.kernel, stride, mid, se, block.relu, shortcut))
        c_in, stride = c_out, 1
    return tuple(layers)


def _peak(layers: tuple[Layer, ...], side: int) -> int:
    """Values (per image) of the widest map these repeats hold: a repeat's expanded (or depthwise) input."""
    peak = 0
    for layer in layers:
        peak = max(peak, layer.mid_channels * side**2)
        side = layer.out_side(side)
    return peak


@register_counter("binas")
def count_binas(
    spec: ArchSpec, *, resolution: int, num_classes: int, use_se: bool | None, convention: str
) -> ModelComplexity:
    """Exact counts of a BINAS network; `blocks[0]` is the stem, then one entry per block string."""
    if convention != "correct":
        raise ConfigError(f"convention {convention!r} does not apply to binas; use 'correct'")
    if use_se is not None and not isinstance(use_se, bool):
        raise ConfigError(f"use_se must be None, True or False, got {use_se!r}")
    check_spec(spec)
    width = stem_width(spec)
    stem = _stem_group(width, resolution)
    side, stride = stem[0].out_side, STEM_STRIDE
    counts = [BlockCount("stem", *totals(stem), width, side, stride)]
    any_se = False
    for block in spec.blocks:
        assert isinstance(block, BinasBlock)  # guaranteed by check_spec; narrows the type
        layers = unroll(block, use_se)
        peak = _peak(layers, side)
        records, side = block_group(block, side, use_se)
        any_se = any_se or any(layer.se_channels > 0 for layer in layers)
        stride *= block.stride
        counts.append(BlockCount(block.name, *totals(records), block.out_channels, side, stride, peak))
    head = totals(_head_group(spec.blocks[-1].out_channels, num_classes, side))
    return ModelComplexity.summed(spec, counts, head, resolution=resolution, num_classes=num_classes, use_se=any_se)


def block_layers(layer: Layer, side: int, index: int = 0) -> list[LayerRecord]:
    """One repeat's layers as `zennas.blocks.binas` builds them: convs with BN; SE convs with bias, no BN.

    timm's MobileNetV3 activations: ReLU or hard-swish after the expansion and depthwise convs (and a
    `cn` conv); the projection is linear, and nothing follows its residual add. `index`: the repeat.
    """
    c_in, mid, c_out, k, s = layer.in_channels, layer.mid_channels, layer.out_channels, layer.kernel, layer.stride
    act = "relu" if layer.relu else "hswish"
    if layer.kind == "cn":
        return [LayerRecord("conv", c_in, c_out, k, s, side, bn=True, unit=index, residual=layer.shortcut, act=act)]
    out = []
    if layer.kind == "ir":  # expansion
        out.append(LayerRecord("conv", c_in, mid, 1, 1, side, bn=True, unit=index, act=act))
    depthwise = LayerRecord("conv", mid, mid, k, s, side, mid, bn=True, unit=index, act=act)
    out.append(depthwise)
    if layer.se_channels:
        se = layer.se_channels
        out += [
            LayerRecord("conv", mid, se, bias=True, role="se", unit=index, pooled=depthwise.out_side),
            LayerRecord("conv", se, mid, bias=True, role="se", unit=index),
        ]
    projection = LayerRecord("conv", mid, c_out, 1, 1, depthwise.out_side, bn=True, unit=index,
                             residual=layer.shortcut, act="none")  # fmt: skip
    return [*out, projection]


@lru_cache(maxsize=200_000)
def block_group(block: BinasBlock, side: int, use_se: bool | None) -> tuple[tuple[LayerRecord, ...], int]:
    """(layers, output side) of one block string (every repeat) at input side `side`."""
    records: list[LayerRecord] = []
    for index, layer in enumerate(unroll(block, use_se)):
        records += block_layers(layer, side, index)
        side = layer.out_side(side)
    return tuple(records), side


@lru_cache(maxsize=4096)
def _stem_group(width: int, resolution: int) -> tuple[LayerRecord, ...]:
    """Conv 3x3 stride 2 (3 -> width) + BN + hard-swish."""
    return (LayerRecord("conv", 3, width, STEM_KERNEL, STEM_STRIDE, resolution, bn=True, act="hswish"),)


@lru_cache(maxsize=4096)
def _head_group(channels: int, num_classes: int, side: int) -> tuple[LayerRecord, ...]:
    """Global pool, 1x1 conv with bias (no BN) to HEAD_WIDTH + hard-swish, Linear; none for a backbone."""
    if not num_classes:
        return ()
    return (
        LayerRecord("conv", channels, HEAD_WIDTH, bias=True, role="head", act="hswish", pooled=side),
        LayerRecord("linear", HEAD_WIDTH, num_classes, bias=True, role="head"),
    )


@register_layer_groups("binas")
def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """The stem, the layers of every block string, then the head (see zennas.counting.register_layer_groups)."""
    stem = _stem_group(stem_width(spec), resolution)
    groups, side = chained(spec.blocks, stem[0].out_side, lambda block, side: block_group(block, side, use_se))
    return (stem, *groups, _head_group(spec.blocks[-1].out_channels, num_classes, side))


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer of a BINAS network in order (see LayerRecord); sums match `count_binas`."""
    check_spec(spec)
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    return [record for group in groups for record in group]
