"""ZenNAS search spaces (`zennas-res`, `zennas-idw`), driven by TOML definitions.

REFERENCE.md 1.1, 1.4 and 5.2. Unlike ZenNAS, a mutation picks the block uniformly and then
the new type, width, bottleneck and depth each uniformly and independently from deduplicated
candidate sets (ZenNAS flattens aliased per-type lists, which over-weights early types; 5.2).
Every result is checked for membership; a draw that cannot produce a member is an error. A child
may equal its parent (e.g. the multiplier 1 drawn for a stem); searches deduplicate by `arch.hash`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from zennas.arch import ArchSpec
from zennas.arch.ir import rechain
from zennas.arch.zennas import (
    IDW_EXPANSIONS,
    RES_KERNELS,
    ZenConv,
    ZenRes,
    smart_round,
    split_deep_blocks,
    validate_block,
)
from zennas.errors import ArchSyntaxError, SearchSpaceError
from zennas.spaces import register_family
from zennas.spaces.common import KNOWN_CONSTRAINTS, SHARED_KEYS, TomlSpace, choice, depth_choices, width_choices


def _zen_res_types() -> dict[str, tuple[str, int, int]]:
    """Every residual super-block name of the zennas-v1 dialect -> (kind, kernel, expansion)."""
    out: dict[str, tuple[str, int, int]] = {}
    for kernel in RES_KERNELS:
        for kind, expansions in (("KXKX", (0,)), ("K1KXK1", (0,)), ("IDW", IDW_EXPANSIONS)):
            for expansion in expansions:
                probe = ZenRes(
                    in_channels=8,
                    out_channels=8,
                    stride=1,
                    kind=kind,
                    kernel=kernel,
                    bottleneck=8,
                    sub_layers=1,
                    expansion=expansion,
                )
                out[probe.name] = (kind, kernel, expansion)
    return out


ZEN_RES_TYPES = _zen_res_types()


def _plain_numbers_ok(block: ZenConv | ZenRes) -> bool:
    """Fast path of `validate_block` (membership runs on every draw): positive ints, stride 1 or 2."""
    values = [block.in_channels, block.out_channels, block.sub_layers]
    if isinstance(block, ZenRes):
        values.append(block.bottleneck)
    return block.stride in (1, 2) and all(type(v) is int and v >= 1 for v in values)


@register_family("zennas")
class ZenNASSpace(TomlSpace):
    """ZenNAS super-block spaces: stem SuperConvK3BNRELU, residual super-blocks, 1x1 SuperConvK1BNRELU head.

    Members satisfy: first block SuperConvK3BNRELU(3,c,s,1) with s in `stem_strides`; last block
    SuperConvK1BNRELU(c,h,1,1) (h == `head_width` when the head is fixed); every block between is an
    allowed residual type with 1 <= n < `split_threshold` (deeper blocks are split, REFERENCE 1.4);
    every width and bottleneck is a multiple of `width_base` within [min_width, max_width]; channels
    chain from 3; total sub_layers <= max_layers when set.
    """

    family = "zennas"
    family_dialect = "zennas-v1"
    budget_convention = "zennas"  # the presets' budgets are ZenNAS repository counts, without SE (REFERENCE 2.2)
    allowed_keys = SHARED_KEYS | {"block_types", "split_threshold", "stem_strides", "head_width"}
    max_width_hint = (
        " (the released XXBL bound; the released latency ZenNets exceed it, idstcv/ZenNAS#5); "
        "use space.with_options(max_width=None) to lift it"
    )

    def _read_family_keys(self) -> None:
        """Block types, widths, depths and the stem and head rules."""
        types = self._get("block_types", list)
        unknown = [t for t in types if t not in ZEN_RES_TYPES]
        if unknown or not types:
            raise SearchSpaceError(
                f"search space {self.name!r}: unknown block type(s) {unknown}; choose from {', '.join(ZEN_RES_TYPES)}"
            )
        # Deduplicated in definition order: a repeated name must not double its probability.
        self.block_types: tuple[str, ...] = tuple(dict.fromkeys(types))
        self.width_multipliers = self._multipliers()
        self.width_base: int = self._positive_int("width_base", 8)
        self.min_width: int = self._positive_int("min_width", self.width_base)
        self.max_width: int | None = self._positive_int("max_width", None)
        for key in ("min_width", "max_width"):
            value = getattr(self, key)
            if value is not None and value % self.width_base:
                raise SearchSpaceError(f"search space {self.name!r}: {key} must be a multiple of width_base")
        if self.max_width is not None and self.max_width < self.min_width:
            raise SearchSpaceError(f"search space {self.name!r}: max_width is below min_width")
        self.depth_step: int = self._positive_int("depth_step", 2)
        self.split_threshold: int = self._positive_int("split_threshold", 6)
        if self.split_threshold < 2:
            raise SearchSpaceError(f"search space {self.name!r}: split_threshold must be >= 2")
        self.max_sub_layers = self.split_threshold - 1
        self.stem_strides: tuple[int, ...] = tuple(self._get("stem_strides", list, [1, 2]))
        if not self.stem_strides or not set(self.stem_strides) <= {1, 2}:
            raise SearchSpaceError(f"search space {self.name!r}: stem_strides must be a non-empty subset of [1, 2]")
        self.head_width: int | None = self._positive_int("head_width", None)

    # -- membership -------------------------------------------------------------------------------

    def _layout_problem(self, arch: ArchSpec) -> str | None:
        """Why `arch`, a ZenNAS architecture, breaks this space's layout, types or widths; None if it does not."""
        blocks = arch.blocks
        if len(blocks) < 3:
            return f"it has {len(blocks)} blocks; a member needs a stem, at least one residual super-block and a head"
        stem, head = blocks[0], blocks[-1]
        if not (isinstance(stem, ZenConv) and stem.kernel == 3 and stem.sub_layers == 1):
            return f"block 0 must be the stem SuperConvK3BNRELU(3,c,s,1), got {stem.name}"
        if stem.stride not in self.stem_strides:
            return f"stem stride {stem.stride} is not allowed here (allowed: {', '.join(map(str, self.stem_strides))})"
        if not (isinstance(head, ZenConv) and head.kernel == 1 and head.stride == 1 and head.sub_layers == 1):
            return f"the last block must be the head SuperConvK1BNRELU(c,h,1,1), got {head.name}{head.args()}"
        if self.head_width is not None and head.out_channels != self.head_width:
            return (
                f"the head has {head.out_channels} output channels but this space fixes it at {self.head_width} "
                "(IDW_fixfc never changes the head)"
            )
        base = self.width_base
        for index, block in enumerate(blocks):
            if not _plain_numbers_ok(block):
                try:  # the dialect's own check words the reason
                    validate_block(block)
                except ArchSyntaxError as error:
                    return f"block {index}: {error}"
            if 0 < index < len(blocks) - 1:
                if not isinstance(block, ZenRes) or block.name not in self.block_types:
                    return (
                        f"block {index} ({block.name}) is not an allowed super-block here; "
                        f"allowed: {', '.join(self.block_types)}"
                    )
                if block.sub_layers > self.max_sub_layers:
                    return (
                        f"block {index} ({block.name}) has sub_layers {block.sub_layers} > {self.max_sub_layers}; "
                        f"split it with split_deep_blocks(arch, {self.split_threshold})"
                    )
            problem = self._width_problem(block.out_channels, f"block {index} ({block.name}): out channels", base)
            if problem is None and isinstance(block, ZenRes):
                problem = self._width_problem(block.bottleneck, f"block {index} ({block.name}): bottleneck", base)
            if problem is not None:
                return problem
        return None

    # -- mutation ---------------------------------------------------------------------------------

    def mutable_indices(self, arch: ArchSpec) -> tuple[int, ...]:
        """Block indices a mutation may pick: all, except a fixed head."""
        last = len(arch.blocks) - 1
        return tuple(range(last if self.head_width is not None else last + 1))

    def mutate_block(self, arch: ArchSpec, index: int, rng: np.random.Generator) -> ArchSpec:
        """Redraw block `index` (type, out, bottleneck, depth: uniform, independent); then rechain and split."""
        self._require_member(arch)
        if index not in self.mutable_indices(arch):
            fixed = " (the head is fixed in this space)" if index == len(arch.blocks) - 1 else ""
            raise SearchSpaceError(
                f"block index {index} cannot be mutated{fixed}; choose one of {list(self.mutable_indices(arch))}"
            )
        return self._mutate_at(arch, index, rng)

    def _mutate_at(self, arch: ArchSpec, index: int, rng: np.random.Generator) -> ArchSpec:
        blocks = list(arch.blocks)
        old = blocks[index]
        if isinstance(old, ZenConv):
            # Stem and head: only `out` changes (kernel, stride, input and n=1 kept; REFERENCE 5.2).
            blocks[index] = replace(old, out_channels=choice(rng, self._widths(old.out_channels)))
        else:
            assert isinstance(old, ZenRes)  # guaranteed by membership
            # Depths that keep the network within max_layers: filtering the candidate set before the
            # uniform draw equals rejection sampling of the depth alone (the other draws are independent).
            room = None if self.max_layers is None else self.max_layers - (arch.layers - old.sub_layers)
            kind, kernel, expansion = ZEN_RES_TYPES[choice(rng, self.block_types)]
            out_channels = choice(rng, self._widths(old.out_channels))
            bottleneck = choice(rng, self._widths(old.bottleneck))
            sub_layers = choice(rng, depth_choices(old.sub_layers, self.depth_step, 1, room))
            blocks[index] = ZenRes(
                in_channels=old.in_channels,
                out_channels=out_channels,
                stride=old.stride,
                kind=kind,
                kernel=kernel,
                bottleneck=bottleneck,
                sub_layers=sub_layers,
                expansion=expansion,
            )
        return self._finish(self._normalise(blocks), "mutate")

    def _normalise(self, blocks: Sequence[ZenConv | ZenRes]) -> ArchSpec:
        """Re-chain `in` channels after width changes, then split blocks with n >= split_threshold."""
        spec = ArchSpec(self.dialect, rechain(tuple(blocks)))
        return split_deep_blocks(spec, self.split_threshold)

    # -- sampling ---------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member on a seed's skeleton: per block a uniform type, width/bottleneck one multiplier
        away from the seed, depth uniform in 1..split_threshold-1 (rejected and redrawn while over max_layers).
        """
        seed = choice(rng, self.initial())
        skeleton = seed.blocks
        if self.max_layers is not None and len(skeleton) > self.max_layers:
            raise SearchSpaceError(
                f"cannot sample from search space {self.name!r}: the seed has {len(skeleton)} blocks but "
                f"max_layers is {self.max_layers}; raise max_layers"
            )
        return self._sample_within_layers(lambda: self._draw(skeleton, rng))

    def _draw(self, skeleton: Sequence[ZenConv | ZenRes], rng: np.random.Generator) -> ArchSpec:
        """One draw on a seed's skeleton, re-chained and split, not yet checked against max_layers."""
        blocks: list[ZenConv | ZenRes] = []
        for index, block in enumerate(skeleton):
            if isinstance(block, ZenConv):
                fixed = index == len(skeleton) - 1 and self.head_width is not None
                width = block.out_channels if fixed else choice(rng, self._widths(block.out_channels))
                blocks.append(replace(block, out_channels=width))
            else:
                assert isinstance(block, ZenRes)
                kind, kernel, expansion = ZEN_RES_TYPES[choice(rng, self.block_types)]
                blocks.append(
                    ZenRes(
                        in_channels=block.in_channels,
                        out_channels=choice(rng, self._widths(block.out_channels)),
                        stride=block.stride,
                        kind=kind,
                        kernel=kernel,
                        bottleneck=choice(rng, self._widths(block.bottleneck)),
                        sub_layers=int(rng.integers(1, self.max_sub_layers + 1)),
                        expansion=expansion,
                    )
                )
        return self._normalise(blocks)


__all__ = ["KNOWN_CONSTRAINTS", "ZEN_RES_TYPES", "ZenNASSpace", "depth_choices", "smart_round", "width_choices"]
