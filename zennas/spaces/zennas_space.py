"""ZenNAS (`zennas-res`, `zennas-idw`) and GENet (`genet`) search spaces, driven by TOML definitions.

REFERENCE.md 1.1, 1.2, 1.4 and 5.2. Unlike ZenNAS, a mutation picks the block uniformly and then
the new type, width, bottleneck and depth each uniformly and independently from deduplicated
candidate sets (ZenNAS flattens aliased per-type lists, which over-weights early types; 5.2).
Every result is checked for membership; a draw that cannot produce a member is an error. A child
may equal its parent (e.g. the multiplier 1 drawn for a stem); searches deduplicate by `arch.hash`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Self, TypeVar

import numpy as np

from zennas.arch import ArchSpec, parse
from zennas.arch.genet import KERNELS as GENET_KERNELS
from zennas.arch.genet import SUPER_KINDS as GENET_KINDS
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.arch.ir import check_channel_chain, rechain
from zennas.arch.limits import CHANNELS
from zennas.arch.zennas_dialect import (
    IDW_EXPANSIONS,
    RES_KERNELS,
    ZenConv,
    ZenRes,
    smart_round,
    split_deep_blocks,
    validate_block,
)
from zennas.errors import ArchSyntaxError, ChannelMismatchError, SearchSpaceError
from zennas.spaces import SearchSpace, register_family

T = TypeVar("T")

# Constraint keys a definition may set. Only `max_layers` is part of membership; the others describe
# the published search settings (REFERENCE 5.3) for cost functions and are never evaluated here.
KNOWN_CONSTRAINTS = frozenset(
    {
        "max_layers",  # ZenNAS "layers" = sum of sub_layers (REFERENCE 1.4); GENet: convs counted likewise
        "resolution",  # input side in pixels
        "num_classes",
        "budget_flops",  # ZenNAS repository get_FLOPs convention, without SE (REFERENCE 2.2)
        "budget_model_size",  # ZenNAS repository get_model_size convention (REFERENCE 2.2)
        "budget_latency_ms_per_image",  # the scripts pass seconds (1e-4 s = 0.1 ms)
    }
)


@lru_cache(maxsize=65536)
def width_choices(width: int, multipliers: tuple[float, ...], base: int, low: int, high: int | None) -> tuple[int, ...]:
    """Deduplicated, sorted widths reachable from `width`: smart_round(width * m, base) clamped to [low, high].

    high=None (a space without max_width) still stops at the widest network zennas parses and counts.
    """
    if high is None:
        high = CHANNELS.maximum // base * base
    out = set()
    for multiplier in multipliers:
        candidate = max(low, smart_round(width * multiplier, base))
        out.add(min(high, candidate))
    return tuple(sorted(out))


def depth_choices(depth: int, step: int, low: int = 1, high: int | None = None) -> tuple[int, ...]:
    """Depths depth-step .. depth+step that lie in [low, high]."""
    return tuple(d for d in range(depth - step, depth + step + 1) if d >= low and (high is None or d <= high))


def _choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element of `options`, uniformly."""
    if not options:
        raise SearchSpaceError("internal error: empty candidate set; please report this with the architecture")
    return options[int(rng.integers(len(options)))]


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys replaced, `constraints` merged key by key; a value of None removes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key == "constraints" and value is not None:
            merged = dict(out.get("constraints", {}))
            for c_key, c_value in value.items():
                if c_value is None:
                    merged.pop(c_key, None)
                else:
                    merged[c_key] = c_value
            out["constraints"] = merged
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _TomlSpace(SearchSpace):
    """Shared machinery: key validation, presets, option overrides and seeds from the TOML definition."""

    allowed_keys: frozenset[str] = frozenset()
    max_attempts = 1000  # bound of every rejection loop (sample); exhausting it is a SearchSpaceError

    def __init__(
        self,
        name: str,
        definition: dict[str, Any],
        *,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ):
        self.base_name = name
        self.preset = preset
        self._raw = definition
        self._overrides = dict(overrides or {})
        effective = copy.deepcopy(definition)
        if preset is not None:
            presets = definition.get("presets", {})
            if preset not in presets:
                raise SearchSpaceError(
                    f"unknown preset {preset!r} for search space {name!r}; "
                    f"choose one of: {', '.join(presets) or '(none defined)'}"
                )
            effective = _merge(effective, presets[preset])
        effective = _merge(effective, self._overrides)
        super().__init__(name if preset is None else f"{name}:{preset}", effective)
        unknown = set(effective) - self.allowed_keys
        if unknown:
            raise SearchSpaceError(
                f"search space {self.name!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(self.allowed_keys))}"
            )
        bad = set(self.constraints) - KNOWN_CONSTRAINTS
        if bad:
            raise SearchSpaceError(
                f"search space {self.name!r}: unknown constraint(s) {', '.join(sorted(bad))}; "
                f"allowed: {', '.join(sorted(KNOWN_CONSTRAINTS))}"
            )
        max_layers = self.constraints.get("max_layers")
        if max_layers is not None and (not isinstance(max_layers, int) or max_layers < 1):
            raise SearchSpaceError(f"search space {self.name!r}: max_layers must be a positive integer")
        self.max_layers: int | None = max_layers

    # -- options -------------------------------------------------------------------------------

    @property
    def presets(self) -> tuple[str, ...]:
        """Names of the presets (published search settings) this space defines."""
        return tuple(self._raw.get("presets", {}))

    def with_preset(self, preset: str | None) -> Self:
        """This space with a named preset applied (None: the plain definition); overrides are kept."""
        return type(self)(self.base_name, self._raw, preset=preset, overrides=self._overrides)

    def with_options(self, **changes: Any) -> Self:
        """A copy with top-level keys replaced (None removes one) and `constraints={...}` merged."""
        # Overrides keep their None values: they mean "remove" when applied to the definition.
        merged = dict(self._overrides)
        for key, value in changes.items():
            if key == "constraints" and value is not None:
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
        return type(self)(self.base_name, self._raw, preset=self.preset, overrides=merged)

    # -- definition helpers -----------------------------------------------------------------------

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.definition:
            if default is ...:
                raise SearchSpaceError(f"search space {self.name!r}: the definition needs the key {key!r}")
            return default
        value = self.definition[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SearchSpaceError(f"search space {self.name!r}: key {key!r} has the wrong type ({value!r})")
        return value

    def _positive_int(self, key: str, default: Any = ...) -> Any:
        value = self._get(key, int, default)
        if value is not None and value < 1:
            raise SearchSpaceError(f"search space {self.name!r}: {key} must be >= 1, got {value}")
        return value

    def _multipliers(self) -> tuple[float, ...]:
        values = self._get("width_multipliers", list)
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
            raise SearchSpaceError(f"search space {self.name!r}: width_multipliers must be positive numbers")
        return tuple(float(v) for v in values)

    def _load_seeds(self) -> dict[str, ArchSpec]:
        """Parse the seeds named by `use_seeds` (default: all); each must be a member of this space."""
        table = self._get("seeds", dict)
        wanted = self._get("use_seeds", list, list(table))
        seeds: dict[str, ArchSpec] = {}
        for seed_name in wanted:
            if seed_name not in table:
                raise SearchSpaceError(
                    f"search space {self.name!r}: use_seeds names {seed_name!r}, which is not under [seeds]; "
                    f"defined: {', '.join(table)}"
                )
            entry = table[seed_name]
            text, wants_rechain = entry.get("arch"), entry.get("rechain", False)
            if not isinstance(text, str):
                raise SearchSpaceError(f"search space {self.name!r}: seed {seed_name!r} needs an 'arch' string")
            try:
                spec = parse(text, self.dialect)
                if wants_rechain:
                    # Repair must be explicit *and* needed: a stale flag would hide a changed string.
                    raise SearchSpaceError(
                        f"search space {self.name!r}: seed {seed_name!r} sets rechain = true but is already "
                        "channel-continuous; remove the flag"
                    )
            except ChannelMismatchError as error:
                if not wants_rechain:
                    raise SearchSpaceError(
                        f"search space {self.name!r}: seed {seed_name!r} is not channel-continuous ({error}); "
                        "fix the string or set rechain = true with a note saying why"
                    ) from None
                spec = parse(text, self.dialect, rechain=True)
            except ArchSyntaxError as error:
                raise SearchSpaceError(
                    f"search space {self.name!r}: seed {seed_name!r} does not parse: {error}"
                ) from None
            reason = self.why_not(spec)
            if reason is not None:
                raise SearchSpaceError(f"search space {self.name!r}: seed {seed_name!r} is not a member: {reason}")
            seeds[seed_name] = spec
        if not seeds:
            raise SearchSpaceError(f"search space {self.name!r}: no seeds; list at least one in use_seeds")
        return seeds

    @property
    def seeds(self) -> Mapping[str, ArchSpec]:
        """The seeds in use, by their TOML name."""
        return MappingProxyType(self._seeds)

    def initial(self) -> tuple[ArchSpec, ...]:
        """Seed architectures in definition order (published start strings / published networks)."""
        return tuple(self._seeds.values())

    def _require_member(self, arch: ArchSpec) -> None:
        reason = self.why_not(arch)
        if reason is not None:
            raise SearchSpaceError(
                f"cannot mutate: the architecture is not in search space {self.name!r}: {reason}; "
                "start from space.initial() or space.sample(rng)"
            )


# ----------------------------------------------------------------------------------------------
# ZenNAS: XXBL (ResNet-like) and IDW_fixfc (MobileNet-like)
# ----------------------------------------------------------------------------------------------


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
class ZenNASSpace(_TomlSpace):
    """ZenNAS super-block spaces: stem SuperConvK3BNRELU, residual super-blocks, 1x1 SuperConvK1BNRELU head.

    Members satisfy: first block SuperConvK3BNRELU(3,c,s,1) with s in `stem_strides`; last block
    SuperConvK1BNRELU(c,h,1,1) (h == `head_width` when the head is fixed); every block between is an
    allowed residual type with 1 <= n < `split_threshold` (deeper blocks are split, REFERENCE 1.4);
    every width and bottleneck is a multiple of `width_base` within [min_width, max_width]; channels
    chain from 3; total sub_layers <= max_layers when set.
    """

    family = "zennas"
    budget_convention = "zennas"  # the presets' budgets are ZenNAS repository counts, without SE (REFERENCE 2.2)
    allowed_keys = frozenset(
        {
            "family",
            "dialect",
            "description",
            "notes",
            "block_types",
            "width_multipliers",
            "width_base",
            "min_width",
            "max_width",
            "depth_step",
            "split_threshold",
            "stem_strides",
            "head_width",
            "seeds",
            "use_seeds",
            "constraints",
            "presets",
        }
    )

    def __init__(
        self,
        name: str,
        definition: dict[str, Any],
        *,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ):
        super().__init__(name, definition, preset=preset, overrides=overrides)
        if self.dialect != "zennas-v1":
            raise SearchSpaceError(f"search space {self.name!r}: family 'zennas' needs dialect 'zennas-v1'")
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
        self._seeds = self._load_seeds()

    # -- membership -------------------------------------------------------------------------------

    def _width_problem(self, value: int, what: str) -> str | None:
        if value % self.width_base:
            return f"{what} {value} is not a multiple of {self.width_base}"
        if value < self.min_width:
            return f"{what} {value} is below this space's min_width {self.min_width}"
        if value > CHANNELS.maximum:
            return f"{what} {value} exceeds the {CHANNELS.maximum:,}-channel limit zennas can count and build"
        if self.max_width is not None and value > self.max_width:
            return (
                f"{what} {value} exceeds this space's max_width {self.max_width} (the released XXBL bound; the "
                "released latency ZenNets exceed it, idstcv/ZenNAS#5); use space.with_options(max_width=None) "
                "to lift it"
            )
        return None

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else the first reason it is not."""
        if not isinstance(arch, ArchSpec):
            return f"expected an ArchSpec, got {type(arch).__name__}; parse the string with zennas.arch.parse first"
        if arch.dialect != self.dialect:
            return f"it is in dialect {arch.dialect!r} but this space holds {self.dialect!r} architectures"
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
            problem = self._width_problem(block.out_channels, f"block {index} ({block.name}): out channels")
            if problem is None and isinstance(block, ZenRes):
                problem = self._width_problem(block.bottleneck, f"block {index} ({block.name}): bottleneck")
            if problem is not None:
                return problem
        try:
            check_channel_chain(blocks)
        except ChannelMismatchError as error:
            return str(error)
        if self.max_layers is not None and arch.layers > self.max_layers:
            return f"it has {arch.layers} layers (sum of sub_layers) but max_layers is {self.max_layers}"
        return None

    # -- mutation ---------------------------------------------------------------------------------

    def mutable_indices(self, arch: ArchSpec) -> tuple[int, ...]:
        """Block indices a mutation may pick: all, except a fixed head."""
        last = len(arch.blocks) - 1
        return tuple(range(last if self.head_width is not None else last + 1))

    def _widths(self, width: int) -> tuple[int, ...]:
        return width_choices(width, self.width_multipliers, self.width_base, self.min_width, self.max_width)

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """Pick a mutable block uniformly and redraw it (`mutate_block`); may equal `arch`, as in ZenNAS."""
        self._require_member(arch)
        return self._mutate_at(arch, _choice(rng, self.mutable_indices(arch)), rng)

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
            blocks[index] = replace(old, out_channels=_choice(rng, self._widths(old.out_channels)))
        else:
            assert isinstance(old, ZenRes)  # guaranteed by membership
            # Depths that keep the network within max_layers: filtering the candidate set before the
            # uniform draw equals rejection sampling of the depth alone (the other draws are independent).
            room = None if self.max_layers is None else self.max_layers - (arch.layers - old.sub_layers)
            kind, kernel, expansion = ZEN_RES_TYPES[_choice(rng, self.block_types)]
            out_channels = _choice(rng, self._widths(old.out_channels))
            bottleneck = _choice(rng, self._widths(old.bottleneck))
            sub_layers = _choice(rng, depth_choices(old.sub_layers, self.depth_step, 1, room))
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
        seed = _choice(rng, self.initial())
        skeleton = seed.blocks
        if self.max_layers is not None and len(skeleton) > self.max_layers:
            raise SearchSpaceError(
                f"cannot sample from search space {self.name!r}: the seed has {len(skeleton)} blocks but "
                f"max_layers is {self.max_layers}; raise max_layers"
            )
        for _ in range(self.max_attempts):
            blocks: list[ZenConv | ZenRes] = []
            for index, block in enumerate(skeleton):
                if isinstance(block, ZenConv):
                    fixed = index == len(skeleton) - 1 and self.head_width is not None
                    width = block.out_channels if fixed else _choice(rng, self._widths(block.out_channels))
                    blocks.append(replace(block, out_channels=width))
                else:
                    assert isinstance(block, ZenRes)
                    kind, kernel, expansion = ZEN_RES_TYPES[_choice(rng, self.block_types)]
                    blocks.append(
                        ZenRes(
                            in_channels=block.in_channels,
                            out_channels=_choice(rng, self._widths(block.out_channels)),
                            stride=block.stride,
                            kind=kind,
                            kernel=kernel,
                            bottleneck=_choice(rng, self._widths(block.bottleneck)),
                            sub_layers=int(rng.integers(1, self.max_sub_layers + 1)),
                            expansion=expansion,
                        )
                    )
            candidate = self._normalise(blocks)
            if self.max_layers is None or candidate.layers <= self.max_layers:
                return self._finish(candidate, "sample")
        raise SearchSpaceError(
            f"sample() found no member of {self.name!r} within max_layers={self.max_layers} in "
            f"{self.max_attempts} attempts; raise max_layers"
        )


# ----------------------------------------------------------------------------------------------
# GENet
# ----------------------------------------------------------------------------------------------


@register_family("genet")
class GENetSpace(_TomlSpace):
    """GENet spaces: ConvKX stem+BN+RELU, super-blocks in stage order, 1x1 ConvKX+BN+RELU head, AdaptiveAvgPool.

    The kind of a super-block is never mutated (it encodes GENet's design: full convs early, bottlenecks
    in the middle, depthwise late), so kinds must appear in `kinds` order. Kernel, width, expansion (from
    the kind's set) and depth are redrawn uniformly and independently.
    """

    family = "genet"
    allowed_keys = frozenset(
        {
            "family",
            "dialect",
            "description",
            "notes",
            "kinds",
            "expansions",
            "kernels",
            "stem_kernel",
            "stem_stride",
            "width_multipliers",
            "width_base",
            "width_multiple",
            "min_width",
            "max_width",
            "depth_step",
            "max_sub_layers",
            "seeds",
            "use_seeds",
            "constraints",
            "presets",
        }
    )

    def __init__(
        self,
        name: str,
        definition: dict[str, Any],
        *,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ):
        super().__init__(name, definition, preset=preset, overrides=overrides)
        if self.dialect != "genet":
            raise SearchSpaceError(f"search space {self.name!r}: family 'genet' needs dialect 'genet'")
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
        self._seeds = self._load_seeds()

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

    def _width_problem(self, value: int, what: str) -> str | None:
        if value % self.width_multiple:
            return f"{what} {value} is not a multiple of {self.width_multiple}"
        if value < self.min_width:
            return f"{what} {value} is below this space's min_width {self.min_width}"
        if value > CHANNELS.maximum:
            return f"{what} {value} exceeds the {CHANNELS.maximum:,}-channel limit zennas can count and build"
        if self.max_width is not None and value > self.max_width:
            return f"{what} {value} exceeds this space's max_width {self.max_width}"
        return None

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else the first reason it is not."""
        if not isinstance(arch, ArchSpec):
            return f"expected an ArchSpec, got {type(arch).__name__}; parse the string with zennas.arch.parse first"
        if arch.dialect != self.dialect:
            return f"it is in dialect {arch.dialect!r} but this space holds {self.dialect!r} architectures"
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
            problem = self._width_problem(block.out_channels, f"token {index} ({block.name}): out channels")
            if problem is not None:
                return problem
        try:
            check_channel_chain(blocks)
        except ChannelMismatchError as error:
            return str(error)
        if self.max_layers is not None and arch.layers > self.max_layers:
            return f"it has {arch.layers} layers (convs + sum of sub_layers) but max_layers is {self.max_layers}"
        return None

    # -- mutation ---------------------------------------------------------------------------------

    def mutable_indices(self, arch: ArchSpec) -> tuple[int, ...]:
        """Token indices a mutation may pick: the stem conv, every super-block and the head conv."""
        return (0, *range(3, len(arch.blocks) - 4), len(arch.blocks) - 4)

    def _widths(self, width: int) -> tuple[int, ...]:
        return width_choices(width, self.width_multipliers, self.width_base, self.min_width, self.max_width)

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """Pick a mutable token uniformly and redraw it (`mutate_block`); may equal `arch`, as in ZenNAS."""
        self._require_member(arch)
        return self._mutate_at(arch, _choice(rng, self.mutable_indices(arch)), rng)

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
            stem = replace(stem, out_channels=_choice(rng, self._widths(stem.out_channels)))
        elif index == len(blocks) - 4:
            head = replace(head, out_channels=_choice(rng, self._widths(head.out_channels)))
        else:
            old = supers[index - 3]
            assert isinstance(old, GenSuperRes)
            room = None if self.max_layers is None else self.max_layers - (arch.layers - old.sub_layers)
            high = self.max_sub_layers if room is None else min(room, self.max_sub_layers)
            supers[index - 3] = replace(
                old,
                kernel=_choice(rng, self.kernels),
                out_channels=_choice(rng, self._widths(old.out_channels)),
                expansion=_choice(rng, self.expansions[old.kind]),
                sub_layers=_choice(rng, depth_choices(old.sub_layers, self.depth_step, 1, high)),
            )
        return self._finish(self._assemble(stem, supers, head), "mutate")

    # -- sampling ---------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member on a seed's skeleton: per super-block uniform kernel/expansion, width one multiplier
        away from the seed, depth uniform in 1..max_sub_layers (redrawn while over max_layers).
        """
        seed = _choice(rng, self.initial())
        stem, head = seed.blocks[0], seed.blocks[-4]
        skeleton = seed.blocks[3:-4]
        assert isinstance(stem, GenConv) and isinstance(head, GenConv)
        minimum = 2 + len(skeleton)
        if self.max_layers is not None and minimum > self.max_layers:
            raise SearchSpaceError(
                f"cannot sample from search space {self.name!r}: the seed needs at least {minimum} layers but "
                f"max_layers is {self.max_layers}; raise max_layers"
            )
        for _ in range(self.max_attempts):
            new_stem = replace(stem, out_channels=_choice(rng, self._widths(stem.out_channels)))
            supers = []
            for block in skeleton:
                assert isinstance(block, GenSuperRes)
                supers.append(
                    replace(
                        block,
                        kernel=_choice(rng, self.kernels),
                        out_channels=_choice(rng, self._widths(block.out_channels)),
                        expansion=_choice(rng, self.expansions[block.kind]),
                        sub_layers=int(rng.integers(1, self.max_sub_layers + 1)),
                    )
                )
            new_head = replace(head, out_channels=_choice(rng, self._widths(head.out_channels)))
            candidate = self._assemble(new_stem, supers, new_head)
            if self.max_layers is None or candidate.layers <= self.max_layers:
                return self._finish(candidate, "sample")
        raise SearchSpaceError(
            f"sample() found no member of {self.name!r} within max_layers={self.max_layers} in "
            f"{self.max_attempts} attempts; raise max_layers"
        )


__all__ = [
    "KNOWN_CONSTRAINTS",
    "ZEN_RES_TYPES",
    "GENetSpace",
    "ZenNASSpace",
    "depth_choices",
    "smart_round",
    "width_choices",
]
