"""Exact analytic complexity (params, MACs, shapes) from an ArchSpec, without building weights.

Every family registers a counter; each is the analytic twin of the family's torch builder and is
tested against the built module (parameter count) and a hook-based MAC count of a real forward.
Conventions (REFERENCE.md section 2.1): params = every learnable element (BN gamma/beta included);
MACs = convolutions and linear layers only, bias MACs not counted.
Every dialect module also lowers a spec to its weight layers, `layers(spec, resolution)` -> a list of
`LayerRecord`, whose sums are the counter's params and MACs (tests/test_counting_layers.py). The same
records grouped by block (`layer_groups`) are what latency operators, the closed-form Zen-Score and the
entropy proxies read: a dialect's conv layout is written once, in its counting module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from zennas.arch import ArchSpec
from zennas.arch.limits import (
    BLOCKS,
    MAX_FEATURE_ELEMENTS,
    check_num_classes,
    check_resolution,
    check_total_depth,
)
from zennas.errors import ConfigError
from zennas.registry import Registry, family_modules


def conv_out(size: int, kernel: int, stride: int, padding: int | None = None) -> int:
    """Output side of a convolution (default 'same' padding (k-1)//2)."""
    if padding is None:
        padding = (kernel - 1) // 2
    return (size + 2 * padding - kernel) // stride + 1


def conv_params(c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    """Weights (+ bias) of a k x k convolution."""
    return c_in * c_out * kernel * kernel // groups + (c_out if bias else 0)


def conv_macs(c_in: int, c_out: int, kernel: int, out_size: int, groups: int = 1) -> int:
    """Multiply-accumulates of a k x k convolution on an out_size x out_size output."""
    return c_in * c_out * kernel * kernel // groups * out_size * out_size


class LayerRecord(NamedTuple):
    """One weight layer of a network as its builder makes it: the lowering every dialect provides.

    `counting.<dialect>.layers(spec, resolution, num_classes=..., use_se=...)` lists these in
    network order (a block's main path, then its SE, then its shortcut); the sums of `params` and
    `macs` over the list are the dialect counter's `params` and `macs`. kind 'conv' is a convolution
    (SE convs act on the pooled 1 x 1 map), 'linear' the classifier, 'bn' a BatchNorm that follows no
    conv of its own (GENet's BN token, NAS-Bench-201's last activation). `role`, `unit`, `residual`,
    `act` and `pooled` say where a layer sits in its block, for the readers that need more than counts.
    """

    kind: str  # 'conv', 'linear' or 'bn'
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    in_side: int = 1  # input side of the square map; 1 for linear layers and SE convs
    groups: int = 1
    bias: bool = False
    bn: bool = False  # a BatchNorm (gamma, beta) on this layer's output
    padding: int | None = None  # None: 'same' padding (k - 1) // 2
    role: str = "main"  # 'main' path, 'se' (squeeze-excitation conv), 'shortcut' (projection), 'head' (after the pool)
    unit: int = 0  # residual unit within its block: ZenNAS/GENet unit, TinyNAS inner block, BINAS repeat
    residual: bool = False  # the unit's shortcut is added to this layer's output (after its BN)
    act: str = "relu"  # activation after the layer (after the add when `residual`) as latency operators cost it
    pooled: int = 0  # side of the map globally pooled into this layer (SE squeeze conv, first head layer); 0: none

    @property
    def out_side(self) -> int:
        """Output side of the map."""
        if self.kind != "conv":
            return self.in_side
        return conv_out(self.in_side, self.kernel, self.stride, self.padding)

    @property
    def params(self) -> int:
        """Learnable elements: weights, bias and BN gamma/beta."""
        if self.kind == "bn":
            return 2 * self.c_out
        weights = conv_params(self.c_in, self.c_out, self.kernel, self.groups, self.bias)
        return weights + (2 * self.c_out if self.bn else 0)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the conv or linear layer (bias and BN not counted)."""
        if self.kind == "bn":
            return 0
        return conv_macs(self.c_in, self.c_out, self.kernel, self.out_side, self.groups)


def totals(records: Iterable[LayerRecord]) -> tuple[int, int]:
    """(params, MACs) of `records`: a counter's figures are these sums over the dialect's lowering."""
    params = macs = 0
    for record in records:
        params, macs = params + record.params, macs + record.macs
    return params, macs


@lru_cache(maxsize=4096)
def head_layers(channels: int, num_classes: int, side: int = 0) -> tuple[LayerRecord, ...]:
    """The Linear(channels, num_classes, bias) after global pooling of a `side` map; none when num_classes == 0."""
    if not num_classes:
        return ()
    return (LayerRecord("linear", channels, num_classes, bias=True, role="head", pooled=side),)


LayerGroups = tuple[tuple[LayerRecord, ...], ...]
LayerGrouper = Callable[..., LayerGroups]
LAYER_GROUPS: Registry[LayerGrouper] = Registry(
    "layer lowering",
    family_modules("zennas.counting"),
    unknown="no layer lowering for dialect {name!r}",
    duplicate="a layer lowering for {name!r} is already registered",
)


def register_layer_groups(dialect: str) -> Callable[[LayerGrouper], LayerGrouper]:
    """Decorator: a dialect's `layer_groups(spec, resolution, *, num_classes=0, use_se=None)`.

    It returns one tuple of records per entry of the dialect counter's `ModelComplexity.blocks` (the
    blocks, and a stem the spec does not list), then the head (empty for a backbone); `layers` is its
    concatenation. A block's tuple is memoised by (block, input side, SE): a search re-lists mostly
    unchanged blocks, and an unchanged block keeps its tuple, identity included.
    """
    return LAYER_GROUPS.register(dialect)


def layer_groups(spec: ArchSpec, resolution: int, *, num_classes: int = 0, use_se: bool | None = None) -> LayerGroups:
    """`spec`'s layers grouped by block, then the head (see register_layer_groups)."""
    return LAYER_GROUPS.get(spec.dialect)(spec, resolution, num_classes=num_classes, use_se=use_se)


BlockGrouper = Callable[[Any, int], tuple[tuple[LayerRecord, ...], int]]  # (block, input side) -> (layers, output side)


def chained(blocks: Iterable[Any], side: int, group_of: BlockGrouper) -> tuple[list[tuple[LayerRecord, ...]], int]:
    """Each block's layers at the side the block before it leaves, and the side the last one leaves."""
    groups = []
    for block in blocks:
        records, side = group_of(block, side)
        groups.append(records)
    return groups, side


@dataclass(frozen=True)
class BlockCount:
    """Analytic figures of one block."""

    name: str
    params: int
    macs: int
    out_channels: int
    out_size: int
    stride: int  # cumulative stride of the block's output w.r.t. the input image
    peak: int = 0  # values (per image) of the block's largest inner feature map; 0: none beyond its output


@dataclass(frozen=True)
class StageShape:
    """Output of a stage: the last block at one cumulative stride."""

    stride: int
    channels: int
    size: int
    last_block: int


@dataclass(frozen=True)
class ModelComplexity:
    """Exact analytic figures of a whole network."""

    dialect: str
    params: int
    macs: int
    layers: int
    resolution: int
    num_classes: int
    use_se: bool
    blocks: tuple[BlockCount, ...]
    head_params: int
    head_macs: int
    convention: str = "correct"
    flops: float | None = None  # set for compatibility conventions (e.g. ZenNAS get_FLOPs)
    convention_params: float | None = None  # params in that convention
    extra: dict = field(default_factory=dict)

    @classmethod
    def summed(
        cls,
        spec: ArchSpec,
        blocks: list[BlockCount] | tuple[BlockCount, ...],
        head: tuple[int, int],
        *,
        resolution: int,
        num_classes: int,
        use_se: bool,
        layers: int | None = None,
        **fields: object,
    ) -> ModelComplexity:
        """Totals = per-block figures + the head's (params, MACs); the one place where a network's sums are formed."""
        head_params, head_macs = head
        return cls(
            dialect=spec.dialect,
            params=sum(b.params for b in blocks) + head_params,
            macs=sum(b.macs for b in blocks) + head_macs,
            layers=spec.layers if layers is None else layers,
            resolution=resolution,
            num_classes=num_classes,
            use_se=use_se,
            blocks=tuple(blocks),
            head_params=head_params,
            head_macs=head_macs,
            **fields,  # type: ignore[arg-type]
        )

    @property
    def stages(self) -> tuple[StageShape, ...]:
        """One entry per cumulative stride: the last block's output shape at that stride."""
        return stages_of(self.blocks)


def stages_of(blocks: tuple[BlockCount, ...]) -> tuple[StageShape, ...]:
    """Group blocks by cumulative stride; a stage ends at the last block of each stride."""
    stages: list[StageShape] = []
    for index, block in enumerate(blocks):
        stage = StageShape(block.stride, block.out_channels, block.out_size, index)
        if stages and stages[-1].stride == block.stride:
            stages[-1] = stage
        else:
            stages.append(stage)
    return tuple(stages)


Counter = Callable[..., ModelComplexity]
COUNTERS: Registry[Counter] = Registry(
    "counter",
    family_modules("zennas.counting"),
    unknown="no analytic counter for dialect {name!r}",
    duplicate="a counter for {name!r} is already registered",
)
CONVENTIONS = ("correct", "zennas", "tinynas")


def register_counter(dialect: str) -> Callable[[Counter], Counter]:
    """Decorator: the analytic counter of one dialect.

    The function is called as fn(spec, resolution=R, num_classes=K, use_se=None|bool, convention=str);
    use_se has the meaning of BuildOptions.use_se, and the result records the effective value.
    A counter raises ConfigError for a convention it does not implement.
    """
    return COUNTERS.register(dialect)


def count(
    spec: ArchSpec,
    *,
    resolution: int,
    num_classes: int,
    use_se: bool | None = None,
    convention: str = "correct",
) -> ModelComplexity:
    """Analytic params/MACs/shapes of `spec` at `resolution` with a `num_classes` head (0: none)."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown counting convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    check_resolution(resolution)
    check_num_classes(num_classes)
    counter = COUNTERS.get(spec.dialect)
    # Parsed specs are within these limits already; this guards specs built in code before the
    # counter expands every layer (depth, not width, decides how long counting takes).
    BLOCKS.check(len(spec.blocks), "block count")
    check_total_depth([block.depth for block in spec.blocks], what="layers")
    return counter(spec, resolution=resolution, num_classes=num_classes, use_se=use_se, convention=convention)


def check_forward_size(cx: ModelComplexity, batch_size: int) -> None:
    """Raise ConfigError if a forward of `batch_size` images would allocate a feature map too large to run.

    Counted from the input and every block's output and widest inner map (C x H x W per image);
    called before any tensor exists, so an impossible batch or resolution is refused instead of
    exhausting memory.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    largest, where = 3 * cx.resolution**2, "the input"
    for block in cx.blocks:
        size = block.out_channels * block.out_size**2
        if size > largest:
            largest, where = size, f"the output of {block.name}"
        if block.peak > largest:
            largest, where = block.peak, f"a feature map inside {block.name}"
    if batch_size * largest > MAX_FEATURE_ELEMENTS:
        raise ConfigError(
            f"at resolution {cx.resolution} and batch {batch_size}, {where} holds {batch_size * largest:,} values, "
            f"more than the {MAX_FEATURE_ELEMENTS:,} one tensor may hold (convolution kernels index with 32 bits, "
            "and it would take 8 GB or more); use a smaller batch size or resolution"
        )
