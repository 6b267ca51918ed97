"""GENet search space (`genet`), driven by its TOML definition.

REFERENCE.md 1.2 and 5.2: the ZenNAS mutation rules (`zennas.spaces.common`) over GENet's
ConvKX / SuperRes* tokens. Every result is checked for membership.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from zennas.arch import ArchSpec
from zennas.arch.genet import KERNELS as GENET_KERNELS
from zennas.arch.genet import SUPER_KINDS as GENET_KINDS
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.arch.ir import BlockSpec, rechain
from zennas.errors import SearchSpaceError
from zennas.spaces import register_family
from zennas.spaces.common import SHARED_KEYS, TomlSpace, choice, depth_choices


@register_family("genet")
class GENetSpace(TomlSpace):
    """GENet spaces: ConvKX stem+BN+RELU, super-blocks in stage order, 1x1 ConvKX+BN+RELU head, AdaptiveAvgPool.

    The kind of a super-block is never mutated (it encodes GENet's design: full convs early, bottlenecks
    in the middle, depthwise late), so kinds must appear in `kinds` order. Kernel, width, expansion (from
    the kind's set) and depth are redrawn uniformly and independently.
    """

    family = "genet"
    family_dialect = "genet"
    layers_meaning = "convs + sum of sub_layers"
    allowed_keys = SHARED_KEYS | {
        "kinds",
        "expansions",
        "kernels",
        "stem_kernel",
        "stem_stride",
        "width_multiple",
        "max_sub_layers",
    }

    def _read_family_keys(self) -> None:
        """Kinds in stage order, expansions per kind, kernels, the stem, widths and depths."""
        self.kinds: tuple[str, ...] = tuple(self._get("kinds", list))
        if not self.kinds or not set(self.kinds) <= set(GENET_KINDS):
            raise SearchSpaceError(
                f"search space {self.name!r}: kinds must be GENet super-block kinds ({', '.join(GENET_KINDS)})"
            )
        table = self._get("expansions", dict)
        if set(table) != set(self.kinds):
            raise SearchSpaceError(f"search space {self.name!r}: [expansions] needs exactly one list per kind")
        self.expansions: dict[str, tuple[float, ...]] = {
            kind: tuple(dict.fromkeys(float(e) for e in table[kind])) for kind in self.kinds
        }
        for kind, values in self.expansions.items():
            fixed = kind in ("K1KX", "K1DW")  # the dialect only accepts expansion 1.0 for these
            if not values or any(e <= 0 or (fixed and e != 1.0) for e in values):
                raise SearchSpaceError(f"search space {self.name!r}: bad expansions for {kind}: {list(values)}")
        self.kernels: tuple[int, ...] = tuple(dict.fromkeys(self._get("kernels", list)))
        if not self.kernels or not set(self.kernels) <= set(GENET_KERNELS):
            raise SearchSpaceError(
                f"search space {self.name!r}: kernels must be a non-empty subset of {list(GENET_KERNELS)}"
            )
        self.stem_kernel: int = self._positive_int("stem_kernel", 3)
        self.stem_stride: int = self._positive_int("stem_stride", 2)
        self.width_multipliers = self._multipliers()
        self.width_base: int = self._positive_int("width_base", 8)
        self.width_multiple: int = self._positive_int("width_multiple", 1)
        self.min_width: int = self._positive_int("min_width", self.width_base)
        self.max_width: int | None = self._positive_int("max_width", None)
        self.depth_step: int = self._positive_int("depth_step", 2)
        self.max_sub_layers: int = self._positive_int("max_sub_layers")

    # -- structure --------------------------------------------------------------------------------

    @staticmethod
    def _assemble(stem: GenConv, supers: Sequence[GenSuperRes], head: GenConv) -> ArchSpec:
        """Whole GENet text from its convolutions: BN/RELU/pool follow their conv's width; inputs re-chained."""
        stem = replace(stem, in_channels=3)
        chained = rechain(tuple(supers), first_in=stem.out_channels)
        head = replace(head, in_channels=chained[-1].out_channels)
        c, h = stem.out_channels, head.out_channels
        blocks = (
            stem,
            GenBN(in_channels=c, out_channels=c, stride=1),
            GenReLU(in_channels=c, out_channels=c, stride=1),
            *chained,
            head,
            GenBN(in_channels=h, out_channels=h, stride=1),
            GenReLU(in_channels=h, out_channels=h, stride=1),
            GenPool(in_channels=h, out_channels=h, stride=1, output_size=1),
        )
        return ArchSpec("genet", blocks)

    def _layout_problem(self, arch: ArchSpec) -> str | None:
        """Why `arch`, a GENet architecture, breaks this space's layout, kinds or widths; None if it does not."""
        blocks = arch.blocks
        layout = "ConvKX BN RELU, super-blocks, ConvKX(c,h,1,1) BN RELU AdaptiveAvgPool"
        if len(blocks) < 8:
            return f"it has {len(blocks)} tokens; a member is {layout}"
        stem, head, supers = blocks[0], blocks[-4], blocks[3:-4]
        expected = (GenConv, GenBN, GenReLU)
        if not all(isinstance(b, t) for b, t in zip(blocks[:3], expected, strict=True)):
            return f"it must start with ConvKX BN RELU (the stem); layout: {layout}"
        if not all(isinstance(b, t) for b, t in zip(blocks[-4:], (*expected, GenPool), strict=True)):
            return f"it must end with ConvKX BN RELU AdaptiveAvgPool (the head); layout: {layout}"
        assert isinstance(stem, GenConv) and isinstance(head, GenConv)
        if stem.kernel != self.stem_kernel or stem.stride != self.stem_stride:
            return f"the stem must be ConvKX(3,c,{self.stem_kernel},{self.stem_stride}), got {stem.args()}"
        if head.kernel != 1 or head.stride != 1:
            return f"the head must be ConvKX(c,h,1,1), got {head.args()}"
        for index, block in enumerate(blocks):
            if isinstance(block, GenBN | GenReLU | GenPool) and block.in_channels != block.out_channels:
                return f"token {index} ({block.name}) must keep its channel count"
        stage = 0
        for offset, block in enumerate(supers):
            index = offset + 3
            if not isinstance(block, GenSuperRes):
                return f"token {index} ({block.name}) must be a super-block ({', '.join(self.kinds)})"
            if block.kind not in self.kinds:
                return f"token {index}: SuperRes{block.kind} is not allowed here; allowed: {', '.join(self.kinds)}"
            order = self.kinds.index(block.kind)
            if order < stage:
                return (
                    f"token {index}: SuperRes{block.kind} after SuperRes{self.kinds[stage]}; kinds must follow the "
                    f"stage order {' -> '.join(self.kinds)}"
                )
            stage = order
            if block.kernel not in self.kernels:
                return f"token {index}: kernel {block.kernel} not in {list(self.kernels)}"
            if block.stride not in (1, 2):
                return f"token {index}: stride must be 1 or 2, got {block.stride}"
            if block.expansion not in self.expansions[block.kind]:
                return (
                    f"token {index}: expansion {block.expansion} of SuperRes{block.kind} not in "
                    f"{list(self.expansions[block.kind])}"
                )
            if not 1 <= block.sub_layers <= self.max_sub_layers:
                return f"token {index}: sub_layers {block.sub_layers} outside 1..{self.max_sub_layers}"
        if not supers:
            return f"it has no super-blocks; layout: {layout}"
        for index, block in enumerate(blocks):
            what = f"token {index} ({block.name}): out channels"
            problem = self._width_problem(block.out_channels, what, self.width_multiple)
            if problem is not None:
                return problem
        return None

    # -- mutation ---------------------------------------------------------------------------------

    def mutable_indices(self, arch: ArchSpec) -> tuple[int, ...]:
        """Token indices a mutation may pick: the stem conv, every super-block and the head conv."""
        return (0, *range(3, len(arch.blocks) - 4), len(arch.blocks) - 4)

    def mutate_block(self, arch: ArchSpec, index: int, rng: np.random.Generator) -> ArchSpec:
        """Redraw token `index`: convs change width; super-blocks kernel, width, expansion and depth."""
        self._require_member(arch)
        if index not in self.mutable_indices(arch):
            raise SearchSpaceError(
                f"token {index} cannot be mutated (BN, RELU and the pool follow their conv); "
                f"choose one of {list(self.mutable_indices(arch))}"
            )
        return self._mutate_at(arch, index, rng)

    def _mutate_at(self, arch: ArchSpec, index: int, rng: np.random.Generator) -> ArchSpec:
        blocks = arch.blocks
        stem, head = blocks[0], blocks[-4]
        supers = list(blocks[3:-4])
        assert isinstance(stem, GenConv) and isinstance(head, GenConv)
        if index == 0:
            stem = replace(stem, out_channels=choice(rng, self._widths(stem.out_channels)))
        elif index == len(blocks) - 4:
            head = replace(head, out_channels=choice(rng, self._widths(head.out_channels)))
        else:
            old = supers[index - 3]
            assert isinstance(old, GenSuperRes)
            room = None if self.max_layers is None else self.max_layers - (arch.layers - old.sub_layers)
            high = self.max_sub_layers if room is None else min(room, self.max_sub_layers)
            supers[index - 3] = replace(
                old,
                kernel=choice(rng, self.kernels),
                out_channels=choice(rng, self._widths(old.out_channels)),
                expansion=choice(rng, self.expansions[old.kind]),
                sub_layers=choice(rng, depth_choices(old.sub_layers, self.depth_step, 1, high)),
            )
        return self._finish(self._assemble(stem, supers, head), "mutate")

    # -- sampling ---------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member on a seed's skeleton: per super-block uniform kernel/expansion, width one multiplier
        away from the seed, depth uniform in 1..max_sub_layers (redrawn while over max_layers).
        """
        seed = choice(rng, self.initial())
        stem, head = seed.blocks[0], seed.blocks[-4]
        skeleton = seed.blocks[3:-4]
        assert isinstance(stem, GenConv) and isinstance(head, GenConv)
        minimum = 2 + len(skeleton)
        if self.max_layers is not None and minimum > self.max_layers:
            raise SearchSpaceError(
                f"cannot sample from search space {self.name!r}: the seed needs at least {minimum} layers but "
                f"max_layers is {self.max_layers}; raise max_layers"
            )
        return self._sample_within_layers(lambda: self._draw(stem, skeleton, head, rng))

    def _draw(self, stem: GenConv, skeleton: Sequence[BlockSpec], head: GenConv, rng: np.random.Generator) -> ArchSpec:
        """One draw on a seed's skeleton (stem, super-blocks, head), not yet checked against max_layers."""
        new_stem = replace(stem, out_channels=choice(rng, self._widths(stem.out_channels)))
        supers = []
        for block in skeleton:
            assert isinstance(block, GenSuperRes)
            supers.append(
                replace(
                    block,
                    kernel=choice(rng, self.kernels),
                    out_channels=choice(rng, self._widths(block.out_channels)),
                    expansion=choice(rng, self.expansions[block.kind]),
                    sub_layers=int(rng.integers(1, self.max_sub_layers + 1)),
                )
            )
        new_head = replace(head, out_channels=choice(rng, self._widths(head.out_channels)))
        return self._assemble(new_stem, supers, new_head)


__all__ = ["GENetSpace"]
