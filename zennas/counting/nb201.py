"""Analytic counts of NAS-Bench-201 networks (TinyNetwork skeleton, REFERENCE.md sections 2.5 and 4.3).

Params include BN gamma/beta; MACs are conv + linear multiply-accumulates (bias MACs excluded),
both equal to what the built module has and does. The benchmark's own FLOPs convention (conv MACs
plus the classifier counted as in*out + out) is reported in `extra`, with params in millions,
which is how NAS-Bench-201 / NATS-Bench print their figures.
"""

from __future__ import annotations

from zennas.arch import ArchSpec
from zennas.arch.nb201 import CELLS_PER_STAGE, DIALECT, LAYERS, WIDTH, cell_of
from zennas.counting import (
    BlockCount,
    LayerGroups,
    LayerRecord,
    ModelComplexity,
    conv_macs,
    conv_out,
    conv_params,
    head_layers,
    linear_head,
    register_counter,
    register_layer_groups,
)
from zennas.errors import ConfigError

# dataset -> (input side, classes) of the benchmark's three training sets
DATASETS = {"cifar10": (32, 10), "cifar100": (32, 100), "ImageNet16-120": (16, 120)}
STAGE_WIDTHS = (WIDTH, 2 * WIDTH, 4 * WIDTH)  # 16, 32, 64
_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def _cell(ops: tuple[str, ...], channels: int, side: int, bn: bool) -> tuple[int, int]:
    """(params, MACs) of one cell at `channels` and spatial side `side` (stride 1, 'same' padding)."""
    params = macs = 0
    for op in ops:
        kernel = _CONV_KERNEL.get(op)
        if kernel is None:  # none, skip and avg-pool have no weights and no MACs
            continue
        params += conv_params(channels, channels, kernel) + (2 * channels if bn else 0)
        macs += conv_macs(channels, channels, kernel, side)
    return params, macs


def _reduction(c_in: int, c_out: int, side: int, bn: bool, residual: bool) -> tuple[int, int, int]:
    """(params, MACs, output side) of a ResNet reduction block: two 3x3 convs + pool/1x1 shortcut."""
    out = conv_out(side, 3, 2)
    params = conv_params(c_in, c_out, 3) + conv_params(c_out, c_out, 3) + (4 * c_out if bn else 0)
    macs = conv_macs(c_in, c_out, 3, out) + conv_macs(c_out, c_out, 3, out)
    if residual:  # AvgPool 2x2/2 then 1x1 conv, no BN on the shortcut
        params += conv_params(c_in, c_out, 1)
        macs += conv_macs(c_in, c_out, 1, side // 2)
    return params, macs, out


@register_counter(DIALECT)
def count_nb201(
    spec: ArchSpec,
    *,
    resolution: int = 32,
    num_classes: int = 10,
    use_se: bool | None = None,
    convention: str = "correct",
    bn: bool = True,
    residual: bool = True,
) -> ModelComplexity:
    """Exact params/MACs of the NB201 network of `spec` (bn/residual mirror BuildOptions)."""
    cell = cell_of(spec)
    if convention != "correct":
        raise ConfigError(
            f"the {DIALECT} counter implements only convention='correct' (got {convention!r}); "
            "the benchmark's FLOPs are in .extra['nb201_flops']"
        )
    if use_se:
        raise ConfigError("NAS-Bench-201 networks have no SE blocks; use use_se=None or False")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be a non-negative integer (0 = backbone only), got {num_classes!r}")
    if residual and resolution % 4:
        # Each reduction adds a stride-2 conv branch to a 2x2-average-pool shortcut; on an odd
        # side the two disagree by one pixel and the sum fails.
        raise ConfigError(f"NB201 networks need a resolution divisible by 4 (e.g. 32 or 16), got {resolution}")

    blocks: list[BlockCount] = []
    side, stride = resolution, 1
    stem_params = conv_params(3, WIDTH, 3) + (2 * WIDTH if bn else 0)
    blocks.append(BlockCount("stem", stem_params, conv_macs(3, WIDTH, 3, side), WIDTH, side, stride))
    for stage, channels in enumerate(STAGE_WIDTHS):
        if stage > 0:
            prev = STAGE_WIDTHS[stage - 1]
            params, macs, side = _reduction(prev, channels, side, bn, residual)
            stride *= 2
            blocks.append(BlockCount("reduction", params, macs, channels, side, stride))
        params, macs = _cell(cell.ops, channels, side, bn)
        blocks.extend(BlockCount("cell", params, macs, channels, side, stride) for _ in range(CELLS_PER_STAGE))
    last = STAGE_WIDTHS[-1]
    blocks.append(BlockCount("lastact", 2 * last if bn else 0, 0, last, side, stride))

    head_params, head_macs = linear_head(last, num_classes)
    params = sum(b.params for b in blocks) + head_params
    conv_total = sum(b.macs for b in blocks)
    # The benchmark charges the classifier's bias as one FLOP per output.
    nb201_flops = conv_total + head_macs + num_classes
    return ModelComplexity.summed(
        spec,
        blocks,
        head_params=head_params,
        head_macs=head_macs,
        resolution=resolution,
        num_classes=num_classes,
        use_se=False,
        layers=LAYERS,
        convention=convention,
        extra={"nb201_flops": nb201_flops, "nb201_flops_M": nb201_flops / 1e6, "nb201_params_M": params / 1e6},
    )


@register_layer_groups(DIALECT)
def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """Stem, cells and reductions as `count_nb201` lists its blocks, then the head (see register_layer_groups)."""
    ops = cell_of(spec).ops
    if use_se:
        raise ConfigError("NAS-Bench-201 networks have no SE blocks; use use_se=None or False")
    side = resolution
    groups: list[tuple[LayerRecord, ...]] = [(LayerRecord("conv", 3, WIDTH, 3, 1, side, bn=True),)]  # the stem
    for stage, channels in enumerate(STAGE_WIDTHS):
        if stage > 0:  # ResNet reduction: two 3x3 convs, then AvgPool 2x2/2 -> 1x1 conv (no BN) as shortcut
            prev = STAGE_WIDTHS[stage - 1]
            first = LayerRecord("conv", prev, channels, 3, 2, side, bn=True)
            second = LayerRecord("conv", channels, channels, 3, 1, first.out_side, bn=True, residual=True)
            groups.append((first, second, LayerRecord("conv", prev, channels, in_side=side // 2, role="shortcut")))
            side = first.out_side
        cell = tuple(LayerRecord("conv", channels, channels, _CONV_KERNEL[op], 1, side, bn=True) for op in ops
                     if op in _CONV_KERNEL)  # fmt: skip
        groups += [cell] * CELLS_PER_STAGE
    last = STAGE_WIDTHS[-1]
    return (*groups, (LayerRecord("bn", last, last, in_side=side),), head_layers(last, num_classes, side))  # lastact


def layers(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> list[LayerRecord]:
    """Every conv/linear layer of the NB201 network in order (see LayerRecord); sums match `count_nb201`."""
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    return [record for group in groups for record in group]


def dataset_complexity(spec: ArchSpec, dataset: str) -> ModelComplexity:
    """Counts at a benchmark dataset's resolution and classes (cifar10, cifar100, ImageNet16-120)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown NAS-Bench-201 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    resolution, num_classes = DATASETS[dataset]
    return count_nb201(spec, resolution=resolution, num_classes=num_classes)
