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

The operators are read off the dialect's layer lowering (`zennas.counting.layer_groups`), one group
per block: a dialect's conv layout is spelled once, in its counting module, and this module knows
only how a layer becomes an operator.
"""

from __future__ import annotations

from typing import NamedTuple

from zennas.arch import ArchSpec
from zennas.counting import LayerRecord, head_layers, layer_groups
from zennas.errors import LatencyError
from zennas.registry import Registry

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


class Lowering(NamedTuple):
    """What a dialect's operators need beyond its layers: the tables' own order conventions."""

    # zennas-v1: a residual unit's SE operator follows the unit's convs (after the one carrying the
    # add) instead of the conv it gates; the order sums are formed in, kept so predictions do not move.
    se_after_unit: bool = False


LOWERINGS: Registry[Lowering] = Registry(
    "operator lowering",
    unknown="latency prediction is not available for the {name!r} dialect; supported: {known}",
    duplicate="an operator lowering for {name!r} is already registered",
)
LOWERINGS.register("zennas-v1", Lowering(se_after_unit=True))
LOWERINGS.register("genet", Lowering())
LOWERINGS.register("tinynas", Lowering())
LOWERINGS.register("binas", Lowering())

OpGroups = tuple[tuple[Op, ...], ...]  # one group per block (+ the head): memoised, so a search reuses them


def network_ops(spec: ArchSpec, *, resolution: int, num_classes: int = 0, use_se: bool | None = None) -> tuple[Op, ...]:
    """The operators of `spec` at `resolution` (head included when num_classes > 0), in network order."""
    groups = network_op_groups(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    return tuple(op for group in groups for op in group)


def network_op_groups(spec: ArchSpec, *, resolution: int, num_classes: int = 0, use_se: bool | None = None) -> OpGroups:
    """`network_ops` grouped as `zennas.counting.layer_groups` groups the layers: by block, the head last."""
    lowering = LOWERINGS.get(spec.dialect)
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    se_after_unit = lowering.se_after_unit
    return tuple(group_ops(records, se_after_unit) for records in groups)


# Operators of a group of layers, keyed by the group's identity: layer_groups memoises a block's
# layers, so an unchanged block brings the same tuple and its operators are not listed again. Each
# entry keeps its records alive, so an id is never reused while its entry exists.
_MEMO: dict[tuple[int, bool], tuple[tuple[LayerRecord, ...], tuple[Op, ...]]] = {}
MEMO_LIMIT = 200_000  # memoised groups before the memo is cleared (bounded memory)


def group_ops(records: tuple[LayerRecord, ...], se_after_unit: bool = False) -> tuple[Op, ...]:
    """The operators of one group of layers (memoised by the group's identity); see `Lowering`."""
    key = (id(records), se_after_unit)
    entry = _MEMO.get(key)
    if entry is None or entry[0] is not records:
        if len(_MEMO) >= MEMO_LIMIT:
            _MEMO.clear()
        entry = _MEMO[key] = (records, _lower(records, se_after_unit))
    return entry[1]


def _lower(records: tuple[LayerRecord, ...], se_after_unit: bool) -> tuple[Op, ...]:
    """Conv layers -> conv/dwconv operators (BN and activation folded, the add fused into the conv that
    carries it), an SE pair -> one `se` operator at its squeeze conv, head layers -> `head` operators."""
    ops: list[Op] = []
    waiting: list[Op] = []  # se_after_unit: SE operators held until their unit's add
    for r in records:
        if r.kind == "bn":  # a BN token folds into the conv before it
            continue
        if r.role == "se":
            if r.pooled:  # the squeeze conv; the excite conv is part of the same operator
                (waiting if se_after_unit else ops).append(Op("se", r.c_in, r.c_out, r.pooled))
        elif r.role == "head":  # the first head layer includes the global pool; later ones act on 1 x 1
            ops.append(Op("head", r.c_in, r.c_out, r.pooled or 1))
        else:
            ops.append(conv_op(r.c_in, r.c_out, r.in_side, r.kernel, r.stride, r.groups, r.residual, r.act))
            if r.residual and waiting:
                ops += waiting
                waiting.clear()
    return (*ops, *waiting)


def clear_memo() -> None:
    """Forget memoised layer groups and their operators (for benchmarks that time cold calls)."""
    from zennas.counting import binas, genet, tinynas, zennas

    _MEMO.clear()
    for fn in (zennas.block_group, genet.block_group, tinynas.block_group, binas.block_group, head_layers):
        fn.cache_clear()
