"""Analytic counts of NAS-Bench-201 networks (TinyNetwork skeleton, REFERENCE.md sections 2.5 and 4.3).

Params include BN gamma/beta; MACs are conv + linear multiply-accumulates (bias MACs excluded),
both equal to what the built module has and does. The benchmark's own FLOPs convention (conv MACs
plus the classifier counted as in*out + out) is reported in `extra`, with params in millions,
which is how NAS-Bench-201 / NATS-Bench print their figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from zennas.arch import ArchSpec
from zennas.arch.nb201 import CELLS_PER_STAGE, DIALECT, LAYERS, WIDTH, cell_of
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

# dataset -> (input side, classes) of the benchmark's three training sets
DATASETS = {"cifar10": (32, 10), "cifar100": (32, 100), "ImageNet16-120": (16, 120)}
STAGE_WIDTHS = (WIDTH, 2 * WIDTH, 4 * WIDTH)  # 16, 32, 64
_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


NB201Block = tuple[str, int, int, int, tuple[LayerRecord, ...]]  # (name, channels, output side, stride, layers)


def _blocks(ops: tuple[str, ...], resolution: int, *, bn: bool = True, residual: bool = True) -> Iterator[NB201Block]:
    """Stem, cells and ResNet reductions, then the last activation, with the layers each one builds.

    The one spelling of the TinyNetwork layout: `count_nb201` sums it, `layer_groups` lists it.
    """
    side, stride = resolution, 1
    yield "stem", WIDTH, side, stride, (LayerRecord("conv", 3, WIDTH, 3, 1, side, bn=bn),)
    for stage, channels in enumerate(STAGE_WIDTHS):
        if stage > 0:  # ResNet reduction: two 3x3 convs, then AvgPool 2x2/2 -> 1x1 conv (no BN) as shortcut
            prev = STAGE_WIDTHS[stage - 1]
            first = LayerRecord("conv", prev, channels, 3, 2, side, bn=bn)
            second = LayerRecord("conv", channels, channels, 3, 1, first.out_side, bn=bn, residual=residual)
            shortcut = (LayerRecord("conv", prev, channels, in_side=side // 2, role="shortcut"),) if residual else ()
            side, stride = first.out_side, stride * 2
            yield "reduction", channels, side, stride, (first, second, *shortcut)
        # none, skip and avg-pool have no weights and no MACs
        cell = tuple(LayerRecord("conv", channels, channels, _CONV_KERNEL[op], 1, side, bn=bn) for op in ops
                     if op in _CONV_KERNEL)  # fmt: skip
        for _ in range(CELLS_PER_STAGE):
            yield "cell", channels, side, stride, cell
    last = STAGE_WIDTHS[-1]
    yield "lastact", last, side, stride, (LayerRecord("bn", last, last, in_side=side),) if bn else ()


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

    blocks = [
        BlockCount(name, *totals(records), channels, side, stride)
        for name, channels, side, stride, records in _blocks(cell.ops, resolution, bn=bn, residual=residual)
    ]
    head_params, head_macs = totals(head_layers(STAGE_WIDTHS[-1], num_classes))
    params = sum(b.params for b in blocks) + head_params
    conv_total = sum(b.macs for b in blocks)
    # The benchmark charges the classifier's bias as one FLOP per output.
    nb201_flops = conv_total + head_macs + num_classes
    return ModelComplexity.summed(
        spec,
        blocks,
        (head_params, head_macs),
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
    blocks = list(_blocks(ops, resolution))
    side = blocks[-1][2]
    return (*(records for *_, records in blocks), head_layers(STAGE_WIDTHS[-1], num_classes, side))


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
