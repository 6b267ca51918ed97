"""Network -> list of latency-table operators, analytically (no module is built).

A table entry costs one fused operator as an inference engine runs it (REFERENCE 7.2):

* `conv` / `dwconv`: a convolution with its BatchNorm folded in and its activation `act` (relu,
  hswish or none) fused; a regular or a depthwise (groups = channels) conv. `fused = 1` marks the
  last conv of a residual unit: the residual add (and the activation after it) runs in that conv's
  epilogue. A projection shortcut is its own `conv` entry (1 x 1, the block's stride, at the block's
  input side); an avg-pool shortcut is not costed.
* `se`: a squeeze-and-excitation module on a `c_in`-channel map of side `side` (`c_out` = squeeze
  width): global pool, two 1 x 1 convs, gating multiply.
* `head`: global average pool + Linear(`c_in`, `c_out` classes) on a map of side `side`.

Other group convolutions are an error (no engine table covers them). Sides are *input* sides.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from zennas.arch import ArchSpec
from zennas.arch.genet import GenConv, GenSuperRes
from zennas.arch.tinynas import TinyConv, inner_blocks, se_width
from zennas.counting import conv_out
from zennas.counting.binas import HEAD_WIDTH, STEM_KERNEL, STEM_STRIDE, unroll
from zennas.counting.genet import genet_units
from zennas.counting.units import se_mid
from zennas.counting.zennas import zen_units
from zennas.errors import ConfigError, LatencyError

OP_KINDS = ("conv", "dwconv", "se", "head")
ACTIVATIONS = ("relu", "hswish", "none")  # of conv operators; se and head keep "relu"


class Op(NamedTuple):
    """One table operator; see the module docstring for what each kind includes."""

    kind: str
    c_in: int
    c_out: int
    side: int  # input side (square maps)
    kernel: int = 1
    stride: int = 1
    fused: int = 0  # 1: the residual add is fused into this conv
    act: str = "relu"  # activation after the conv (and after the add when fused)

    def describe(self) -> str:
        """Human-readable form used in error messages."""
        if self.kind in ("conv", "dwconv"):
            extra = (" +add" if self.fused else "") + ("" if self.act == "relu" else f" {self.act}")
            return (
                f"{self.kind} {self.c_in}->{self.c_out} k{self.kernel} s{self.stride} @{self.side}x{self.side}{extra}"
            )
        return f"{self.kind} {self.c_in}->{self.c_out} @{self.side}x{self.side}"


def _new_op(fields: tuple) -> Op:
    """An Op from a complete field tuple, without NamedTuple's argument handling (the search hot path)."""
    return tuple.__new__(Op, fields)


def conv_op(
    c_in: int, c_out: int, side: int, kernel: int, stride: int, groups: int = 1, fused: bool = False, act: str = "relu"
) -> Op:
    """A conv operator; groups must be 1 or the channel count (depthwise)."""
    if groups == 1:
        return _new_op(("conv", c_in, c_out, side, kernel, stride, 1 if fused else 0, act))
    if groups == c_in == c_out:
        return Op("dwconv", c_in, c_out, side, kernel, stride, int(fused), act)
    raise LatencyError(
        f"group convolution {c_in}->{c_out} k{kernel} with {groups} groups has no latency-table operator; "
        "only regular (groups=1) and depthwise (groups=channels) convolutions are tabulated"
    )


OpGroups = tuple[tuple[Op, ...], ...]  # one group per block (+ the head): memoised, so a search reuses them
OpLister = Callable[[ArchSpec, int, int, bool | None], OpGroups]
_LISTERS: dict[str, OpLister] = {}


def register_op_lister(dialect: str) -> Callable[[OpLister], OpLister]:
    """Register the operator lister of a dialect (one per dialect)."""

    def decorator(fn: OpLister) -> OpLister:
        if dialect in _LISTERS:
            raise ValueError(f"an operator lister for {dialect!r} is already registered")
        _LISTERS[dialect] = fn
        return fn

    return decorator


def network_ops(spec: ArchSpec, *, resolution: int, num_classes: int = 0, use_se: bool | None = None) -> tuple[Op, ...]:
    """The operators of `spec` at `resolution` (head included when num_classes > 0), in network order."""
    groups = network_op_groups(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    return tuple(op for group in groups for op in group)


def network_op_groups(spec: ArchSpec, *, resolution: int, num_classes: int = 0, use_se: bool | None = None) -> OpGroups:
    """`network_ops` grouped by block (the last group is the head, possibly empty)."""
    lister = _LISTERS.get(spec.dialect)
    if lister is None:
        raise ConfigError(
            f"latency prediction is not available for the {spec.dialect!r} dialect; "
            f"supported: {', '.join(sorted(_LISTERS))}"
        )
    return lister(spec, resolution, num_classes, use_se)


@lru_cache(maxsize=4096)
def head_op(channels: int, side: int, num_classes: int) -> tuple[Op, ...]:
    """The pooling + Linear head, or nothing for a backbone."""
    return (Op("head", channels, num_classes, side),) if num_classes else ()


# ------------------------------------------------------------------------------------------------
# Families. Each block's operators are memoised by (block, side, se): blocks are frozen and hashable,
# and a search re-lists mostly unchanged blocks.
# ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=200_000)
def _zen_block_ops(block, side: int, use_se: bool) -> tuple[tuple[Op, ...], int]:

    ops: list[Op] = []
    units = zen_units(block, side, use_se)
    residual = getattr(block, "kind", None) is not None  # SuperConv blocks are plain stacks
    for unit in units:
        ops.extend(_unit_ops(unit, residual))
    return tuple(ops), units[-1].out_side


@lru_cache(maxsize=200_000)
def _genet_block_ops(block, side: int) -> tuple[tuple[Op, ...], int]:

    if isinstance(block, GenConv):
        op = conv_op(block.in_channels, block.out_channels, side, block.kernel, block.stride)
        return (op,), conv_out(side, block.kernel, block.stride)
    if isinstance(block, GenSuperRes):
        units = genet_units(block, side)
        ops: list[Op] = []
        for unit in units:
            ops.extend(_unit_ops(unit, True))
        return tuple(ops), units[-1].out_side
    return (), side  # BN / ReLU tokens are folded; the final AdaptiveAvgPool is the head's pool


@lru_cache(maxsize=200_000)
def _unit_ops(unit, residual: bool) -> tuple[Op, ...]:
    """Operators of one ZenNAS/GENet unit: its convs (last one fused with the add), SE, projection.

    Memoised: the repeated units of a deep block, and units shared by the blocks of a population,
    are listed once.
    """
    convs = unit.convs
    last = len(convs) - 1
    ops = [
        conv_op(c.c_in, c.c_out, c.in_side, c.kernel, c.stride, c.groups, residual and i == last)
        for i, c in enumerate(convs)
    ]
    if unit.se_channels:
        ops.extend(Op("se", channels, se_mid(channels), unit.se_side) for channels in unit.se_channels)
    if unit.projection is not None:
        p = unit.projection
        ops.append(conv_op(p.c_in, p.c_out, p.in_side, 1, p.stride))
    return tuple(ops)


@register_op_lister("zennas-v1")
def _zennas_ops(spec: ArchSpec, resolution: int, num_classes: int, use_se: bool | None) -> OpGroups:
    groups = []
    side = resolution
    se = bool(use_se)
    for block in spec.blocks:
        block_ops, side = _zen_block_ops(block, side, se)
        groups.append(block_ops)
    return (*groups, head_op(spec.blocks[-1].out_channels, side, num_classes))


@register_op_lister("genet")
def _genet_ops(spec: ArchSpec, resolution: int, num_classes: int, use_se: bool | None) -> OpGroups:
    if use_se:
        raise ConfigError("GENet networks have no SE modules; drop use_se")
    groups = []
    side = resolution
    for block in spec.blocks:
        block_ops, side = _genet_block_ops(block, side)
        groups.append(block_ops)
    return (*groups, head_op(spec.blocks[-1].out_channels, side, num_classes))


@lru_cache(maxsize=200_000)
def _tinynas_block_ops(block, side: int, use_se: bool) -> tuple[tuple[Op, ...], int]:

    if isinstance(block, TinyConv):
        op = conv_op(block.in_channels, block.out_channels, side, block.kernel, block.stride, block.groups)
        return (op,), conv_out(side, block.kernel, block.stride, block.pad)
    ops: list[Op] = []
    for inner in inner_blocks(block):
        c, o, b, k, s, g = (
            inner.in_channels,
            inner.out_channels,
            inner.bottleneck,
            inner.kernel,
            inner.stride,
            inner.groups,
        )
        mid = conv_out(side, k, s)
        if inner.kind in ("ResK1KX", "ResKXKX"):
            # Both stride their second (k x k) conv; ResKXKX's first conv is k x k too.
            first_k = 1 if inner.kind == "ResK1KX" else k
            block_convs = [(c, b, first_k, 1, g, side), (b, o, k, s, g, side)]
        else:
            middle_groups = b if inner.depthwise else g
            block_convs = [(c, b, 1, 1, g, side), (b, b, k, s, middle_groups, side), (b, o, 1, 1, g, mid)]
        last = len(block_convs) - 1
        for index, (ci, co, kk, ss, gg, sd) in enumerate(block_convs):
            ops.append(conv_op(ci, co, sd, kk, ss, gg, inner.residual and index == last))
            if index == 1 and inner.has_se and use_se:
                ops.append(Op("se", b, se_width(b), mid))
        if inner.projection:
            ops.append(conv_op(c, o, mid, 1, 1))  # after the shortcut's avg-pool, at the output side
        side = mid
    return tuple(ops), side


@register_op_lister("tinynas")
def _tinynas_ops(spec: ArchSpec, resolution: int, num_classes: int, use_se: bool | None) -> OpGroups:
    groups = []
    side = resolution
    for block in spec.blocks:
        block_ops, side = _tinynas_block_ops(block, side, use_se is not False)
        groups.append(block_ops)
    return (*groups, head_op(spec.blocks[-1].out_channels, side, num_classes))


@lru_cache(maxsize=200_000)
def _binas_block_ops(block, side: int, use_se: bool | None) -> tuple[tuple[Op, ...], int]:

    # timm MobileNetV3 layers: ReLU or hard-swish after the expansion and depthwise convs (and a `cn`
    # conv); the projection is linear, and nothing follows its residual add.
    ops: list[Op] = []
    for layer in unroll(block, use_se):
        out_side = layer.out_side(side)
        c_in, mid, c_out, k, s = layer.in_channels, layer.mid_channels, layer.out_channels, layer.kernel, layer.stride
        act = "relu" if layer.relu else "hswish"
        if layer.kind == "cn":
            ops.append(conv_op(c_in, c_out, side, k, s, fused=layer.shortcut, act=act))
        else:
            if layer.kind == "ir":
                ops.append(conv_op(c_in, mid, side, 1, 1, act=act))
            ops.append(conv_op(mid, mid, side, k, s, groups=mid, act=act))
            if layer.se_channels:
                ops.append(Op("se", mid, layer.se_channels, out_side))
            ops.append(conv_op(mid, c_out, out_side, 1, 1, fused=layer.shortcut, act="none"))
        side = out_side
    return tuple(ops), side


@register_op_lister("binas")
def _binas_ops(spec: ArchSpec, resolution: int, num_classes: int, use_se: bool | None) -> OpGroups:
    from zennas.arch.binas import stem_width

    width = stem_width(spec)
    groups = [(conv_op(3, width, resolution, STEM_KERNEL, STEM_STRIDE, act="hswish"),)]
    side = conv_out(resolution, STEM_KERNEL, STEM_STRIDE)
    for block in spec.blocks:
        block_ops, side = _binas_block_ops(block, side, use_se)
        groups.append(block_ops)
    head: tuple[Op, ...] = ()
    if num_classes:
        # timm MobileNetV3 head: global pool first, then a biased 1x1 conv to 1280 + act, then the classifier.
        head = (Op("head", spec.blocks[-1].out_channels, HEAD_WIDTH, side), Op("head", HEAD_WIDTH, num_classes, 1))
    return (*groups, head)


def clear_memo() -> None:
    """Forget memoised block operator lists (for benchmarks that time cold calls)."""
    for fn in (_zen_block_ops, _genet_block_ops, _tinynas_block_ops, _binas_block_ops, _unit_ops, head_op):
        fn.cache_clear()
