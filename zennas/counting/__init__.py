"""Exact analytic complexity (params, MACs, shapes) from an ArchSpec, without building weights.

Every family registers a counter; each is the analytic twin of the family's torch builder and is
tested against the built module (parameter count) and a hook-based MAC count of a real forward.
Conventions (REFERENCE.md section 2.1): params = every learnable element (BN gamma/beta included);
MACs = convolutions and linear layers only, bias MACs not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from zennas._once import Once
from zennas.arch import ArchSpec
from zennas.arch.limits import (
    BLOCKS,
    MAX_FEATURE_ELEMENTS,
    check_num_classes,
    check_resolution,
    check_total_depth,
)
from zennas.errors import ConfigError


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


def linear_head(channels: int, num_classes: int) -> tuple[int, int]:
    """(params, MACs) of global pooling + Linear(channels, num_classes, bias); (0, 0) for no head."""
    return channels * num_classes + num_classes, channels * num_classes


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
        *,
        head_params: int,
        head_macs: int,
        resolution: int,
        num_classes: int,
        use_se: bool,
        layers: int | None = None,
        **fields: object,
    ) -> ModelComplexity:
        """Totals = per-block figures + head; the one place where a network's sums are formed."""
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
_COUNTERS: dict[str, Counter] = {}
CONVENTIONS = ("correct", "zennas", "tinynas")


def register_counter(dialect: str) -> Callable[[Counter], Counter]:
    """Decorator: the analytic counter of one dialect.

    The function is called as fn(spec, resolution=R, num_classes=K, use_se=None|bool, convention=str);
    use_se has the meaning of BuildOptions.use_se, and the result records the effective value.
    A counter raises ConfigError for a convention it does not implement.
    """

    def decorator(fn: Counter) -> Counter:
        if dialect in _COUNTERS:
            raise ValueError(f"a counter for {dialect!r} is already registered")
        _COUNTERS[dialect] = fn
        return fn

    return decorator


def count(
    spec: ArchSpec,
    *,
    resolution: int,
    num_classes: int,
    use_se: bool | None = None,
    convention: str = "correct",
) -> ModelComplexity:
    """Analytic params/MACs/shapes of `spec` at `resolution` with a `num_classes` head (0: none)."""
    _load_builtin_counters()
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown counting convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    check_resolution(resolution)
    check_num_classes(num_classes)
    try:
        counter = _COUNTERS[spec.dialect]
    except KeyError:
        raise ConfigError(f"no analytic counter for dialect {spec.dialect!r}") from None
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


def _import_builtin_counters() -> None:
    from zennas.counting import binas, nb201, tinynas, zennas_count  # noqa: F401


_load_builtin_counters = Once(_import_builtin_counters)
