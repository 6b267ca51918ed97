"""TinyNAS search spaces (`maedet`, `deepmad-se`), driven by TOML definitions in `search_spaces/`.

A member is a fixed skeleton: a ConvKXBNRELU stem, one super-block of the space's class per entry
of `block_strides`, and optionally a fixed 1x1 ConvKXBNRELU head. Each choice (kernel, depth L,
width, bottleneck) is drawn uniformly from its deduplicated candidate set. A mutation changes one
field of one block in TinyNAS's style (REFERENCE.md 5.5: width scales rounded to multiples of 8,
depth steps, kernels), with the TinyNAS defects fixed: the last super-block is mutable, channel
scales use exact decimal arithmetic, and the RNG is always the injected numpy Generator.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np

from zennas.arch import ArchSpec, parse
from zennas.arch.ir import check_channel_chain
from zennas.arch.tinynas import SUPER_CLASSES, TinyConv, TinyRes
from zennas.errors import ArchSyntaxError, SearchSpaceError
from zennas.spaces import SearchSpace, register_family
from zennas.spaces.common import choice

# Constraint keys a definition may set. Only max_layers and resolution (kernel rule) shape membership;
# the budgets are for the search's cost functions (TinyNAS conventions, count(..., convention="tinynas")).
KNOWN_CONSTRAINTS = frozenset(
    {
        "max_layers",  # TinyNAS layers convention (REFERENCE 1.4)
        "resolution",  # input side; also drives the kernel rule 1.5 * k <= feature side
        "budget_flops",  # TinyNAS flops convention at `resolution`
        "budget_model_size",  # TinyNAS model_size convention
        "budget_latency_ms_per_image",
        "max_rho",  # DeepMAD effectiveness ceiling (max over stages of rho_i, REFERENCE 3.3)
    }
)
ALLOWED_KEYS = frozenset(
    {
        "family",
        "dialect",
        "description",
        "notes",
        "block_class",
        "block_strides",
        "kernels",
        "width_step",
        "min_width",
        "max_width",
        "stem_kernel",
        "stem_stride",
        "stem_min_width",
        "stem_max_width",
        "head_kernel",
        "head_width",
        "max_inner_first",
        "max_inner",
        "width_scales",
        "depth_steps",
        "btn_min_divisor",
        "btn_ratio_range",
        "monotone_widths",
        "constraints",
        "score",
        "seeds",
    }
)
MAX_ATTEMPTS = 1000  # bound of every rejection loop; exhausting it is a SearchSpaceError


def _decimal(value: Any, what: str) -> Fraction:
    """A TOML number as an exact decimal fraction (0.1 is 1/10, not the nearest binary float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"{what} must be a number, got {value!r}")
    return Fraction(str(value))


def _plain_conv(block: object, kernel: int, stride: int) -> bool:
    """Whether `block` is a ConvKXBNRELU of this kernel and stride with default groups, padding and act."""
    return (
        isinstance(block, TinyConv)
        and block.kernel == kernel
        and block.stride == stride
        and block.groups == 1
        and block.padding is None
        and block.act is None
    )


class _Definition:
    """Typed access to a TOML definition with errors naming the space and key."""

    def __init__(self, name: str, definition: dict[str, Any]):
        self.name = name
        self.definition = definition

    def error(self, message: str) -> SearchSpaceError:
        return SearchSpaceError(f"search space {self.name!r}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.definition:
            if default is ...:
                raise self.error(f"the definition needs the key {key!r}")
            return default
        value = self.definition[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.error(f"key {key!r} has the wrong type ({value!r})")
        return value

    def positive(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, int, default)
        if value is not None and value < 1:
            raise self.error(f"{key} must be >= 1, got {value}")
        return value

    def int_list(self, key: str, default: Any = ...) -> tuple[int, ...]:
        values = self.get(key, list, default)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.error(f"{key} must be a non-empty list of integers, got {values!r}")
        return tuple(values)


@register_family("tinynas")
class TinyNASSpace(SearchSpace):
    """A TinyNAS super-block space (REFERENCE 5.5) with a fixed stride skeleton.

    Members: block 0 is ConvKXBNRELU(3 -> stem width, k=stem_kernel, s=stem_stride) with a width in
    [stem_min_width, stem_max_width]; then one `block_class` super-block per `block_strides` entry
    with kernel in `kernels` (and 1.5 * k <= its input side at `resolution`), 1 <= L <= max_inner
    (max_inner_first for the first), width a multiple of width_step in [min_width, max_width] and a
    valid bottleneck (`btn_min_divisor`: round8(out / d) <= btn <= out; `btn_ratio_range`: btn =
    round8(out * r) for a listed ratio r); then the fixed head if the space has one. Widths never
    shrink from the stem through the last super-block when monotone_widths; channels chain; layers
    <= max_layers. No grouped convs, custom paddings or activations.
    """

    budget_convention = "tinynas"  # budget_flops / budget_model_size are TinyNAS's counts (REFERENCE 5.5)

    def __init__(self, name: str, definition: dict[str, Any]):
        super().__init__(name, definition)
        d = _Definition(name, definition)
        unknown = set(definition) - ALLOWED_KEYS
        if unknown:
            raise d.error(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(ALLOWED_KEYS))}")
        if self.dialect != "tinynas":
            raise d.error("family 'tinynas' needs dialect 'tinynas'")
        bad = set(self.constraints) - KNOWN_CONSTRAINTS
        if bad:
            raise d.error(
                f"unknown constraint(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(KNOWN_CONSTRAINTS))}"
            )
        self.block_class: str = d.get("block_class", str)
        if self.block_class not in SUPER_CLASSES:
            raise d.error(f"block_class must be one of {', '.join(SUPER_CLASSES)}, got {self.block_class!r}")
        self.convs_per_inner = SUPER_CLASSES[self.block_class][1]
        self.block_strides = d.int_list("block_strides")
        if any(s not in (1, 2) for s in self.block_strides):
            raise d.error("block_strides entries must be 1 or 2")
        self.kernels = tuple(sorted(set(d.int_list("kernels"))))
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise d.error("kernels must be odd positive integers")
        self.width_step: int = d.positive("width_step", 8)
        self.min_width: int = d.positive("min_width", self.width_step)
        self.max_width: int = d.positive("max_width")
        self.stem_kernel: int = d.positive("stem_kernel", 3)
        self.stem_stride: int = d.positive("stem_stride", 2)
        self.stem_min_width: int = d.positive("stem_min_width", self.width_step)
        self.stem_max_width: int = d.positive("stem_max_width")
        for key in ("min_width", "max_width", "stem_min_width", "stem_max_width"):
            if getattr(self, key) % self.width_step:
                raise d.error(f"{key} must be a multiple of width_step ({self.width_step})")
        if self.min_width > self.max_width or self.stem_min_width > self.stem_max_width:
            raise d.error("a minimum width exceeds its maximum")
        if self.stem_stride not in (1, 2) or self.stem_kernel % 2 == 0:
            raise d.error("stem_stride must be 1 or 2 and stem_kernel odd")
        self.head_width: int | None = d.positive("head_width", None)
        self.head_kernel: int = d.positive("head_kernel", 1)
        self.max_inner_first: int = d.positive("max_inner_first")
        self.max_inner: int = d.positive("max_inner")
        self.width_scales = tuple(_decimal(v, "width_scales entry") for v in d.get("width_scales", list))
        if not self.width_scales or any(s <= 0 for s in self.width_scales):
            raise d.error("width_scales must be a non-empty list of positive numbers")
        self.depth_steps = d.int_list("depth_steps")
        self._scale_pairs = tuple((s.numerator, s.denominator) for s in self.width_scales)
        if 0 in self.depth_steps:
            raise d.error("depth_steps must not contain 0 (a mutation changes L)")
        self.monotone_widths: bool = d.get("monotone_widths", bool, True)
        divisor = d.get("btn_min_divisor", (int, float), None)
        ratio_range = d.get("btn_ratio_range", list, None)
        if (divisor is None) == (ratio_range is None):
            raise d.error("give exactly one of btn_min_divisor (btn in [round8(out/d), out]) or btn_ratio_range")
        self.btn_min_divisor = None if divisor is None else _decimal(divisor, "btn_min_divisor")
        self.btn_ratios: tuple[Fraction, ...] = ()
        if ratio_range is not None:
            if len(ratio_range) != 3:
                raise d.error("btn_ratio_range is [start, stop, step] (stop included)")
            start, stop, step = (_decimal(v, "btn_ratio_range entry") for v in ratio_range)
            if start <= 0 or step <= 0 or stop < start:
                raise d.error("btn_ratio_range needs 0 < start <= stop and step > 0")
            count = int((stop - start) / step) + 1
            self.btn_ratios = tuple(start + i * step for i in range(count))
        max_layers = self.constraints.get("max_layers")
        if max_layers is not None and (
            isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1
        ):
            raise d.error("constraints.max_layers must be a positive integer")
        self.max_layers: int | None = max_layers
        resolution = self.constraints.get("resolution")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise d.error("constraints.resolution must be a positive integer (the kernel rule needs it)")
        self.resolution: int = resolution
        self.score: MappingProxyType = MappingProxyType(dict(d.get("score", dict, {})))

        # Static per-position data: kernels allowed by TinyNAS's rule 1.5 * k <= input side (float sides).
        side = Fraction(resolution, self.stem_stride)
        self._kernels: list[tuple[int, ...]] = []
        for index, stride in enumerate(self.block_strides):
            allowed = tuple(k for k in self.kernels if 3 * k <= 2 * side)
            if not allowed:
                raise d.error(f"no kernel fits super-block {index + 1} (input side {float(side):g}); lower the strides")
            self._kernels.append(allowed)
            side /= stride
        self._max_inner = tuple(
            self.max_inner_first if i == 0 else self.max_inner for i in range(len(self.block_strides))
        )
        self._widths = tuple(range(self.min_width, self.max_width + 1, self.width_step))
        self._stem_widths = tuple(range(self.stem_min_width, self.stem_max_width + 1, self.width_step))
        self._btn_cache: dict[int, tuple[int, ...]] = {}
        self._seeds = self._load_seeds(d)

    # -- small helpers ----------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """Top-level blocks of every member (stem, super-blocks, head)."""
        return 1 + len(self.block_strides) + (self.head_width is not None)

    def round_width(self, x: Fraction) -> int:
        """TinyNAS smart_round with base width_step (half to even on exact ties), at least width_step."""
        return self._round_ratio(x.numerator, x.denominator)

    def _round_ratio(self, numerator: int, denominator: int) -> int:
        """round_width(numerator / denominator) in integer arithmetic (Fractions are too slow here)."""
        q, r = divmod(numerator, denominator * self.width_step)
        twice = 2 * r
        if twice > denominator * self.width_step or (twice == denominator * self.width_step and q % 2):
            q += 1
        return max(self.width_step, q * self.width_step)

    def btn_choices(self, out: int) -> tuple[int, ...]:
        """Sorted bottleneck widths allowed with output width `out`."""
        cached = self._btn_cache.get(out)
        if cached is None:
            if self.btn_min_divisor is not None:
                low = self.round_width(Fraction(out) / self.btn_min_divisor)
                cached = tuple(range(low, out + 1, self.width_step))
            else:
                cached = tuple(sorted({self.round_width(out * r) for r in self.btn_ratios}))
            self._btn_cache[out] = cached
        return cached

    def _scaled(self, value: int, low: int, high: int) -> list[int]:
        """Values reachable from `value` by one width scale, rounded and clipped to [low, high], deduplicated."""
        out = {min(high, max(low, self._round_ratio(value * n, d))) for n, d in self._scale_pairs}
        out.discard(value)
        return sorted(out)

    def _refit_btn(self, block: TinyRes, out: int) -> int:
        """Bottleneck that keeps the block valid at width `out` (clip, or keep the nearest ratio)."""
        if self.btn_min_divisor is not None:
            choices = self.btn_choices(out)
            return min(choices[-1], max(choices[0], block.bottleneck))
        ratio = Fraction(block.bottleneck, block.out_channels)
        nearest = min(self.btn_ratios, key=lambda r: (abs(r - ratio), r))  # ties: the smaller ratio
        return self.round_width(out * nearest)

    # -- membership -------------------------------------------------------------------------------

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else the first reason it is not."""
        if not isinstance(arch, ArchSpec):
            return f"expected an ArchSpec, got {type(arch).__name__}; parse the text with zennas.arch.parse first"
        if arch.dialect != self.dialect:
            return f"it is in dialect {arch.dialect!r} but this space holds {self.dialect!r} architectures"
        blocks = arch.blocks
        if len(blocks) != self.num_blocks:
            head = " and the head" if self.head_width is not None else ""
            return (
                f"it has {len(blocks)} blocks; members have {self.num_blocks} (stem, "
                f"{len(self.block_strides)} {self.block_class} blocks{head})"
            )
        stem = blocks[0]
        if not (_plain_conv(stem, self.stem_kernel, self.stem_stride) and stem.in_channels == 3):
            return (
                f"block 0 must be the stem ConvKXBNRELU with in 3, k {self.stem_kernel}, s {self.stem_stride} "
                "and default groups/padding/act"
            )
        if stem.out_channels not in self._stem_widths:
            return (
                f"stem width {stem.out_channels} is not a multiple of {self.width_step} in "
                f"[{self.stem_min_width}, {self.stem_max_width}]"
            )
        for i, stride in enumerate(self.block_strides):
            index, block = i + 1, blocks[i + 1]
            if not isinstance(block, TinyRes) or block.kind != self.block_class:
                return f"block {index} must be {self.block_class}, got {block.name}"
            if block.stride != stride:
                return f"block {index} must have stride {stride} (the space's fixed skeleton), got {block.stride}"
            if block.groups != 1 or block.act is not None:
                return f"block {index} must use the default groups and activation"
            if block.kernel not in self._kernels[i]:
                return f"block {index}: kernel {block.kernel} is not allowed here (allowed: {self._kernels[i]})"
            if not 1 <= block.num_inner <= self._max_inner[i]:
                return f"block {index}: L = {block.num_inner} is outside [1, {self._max_inner[i]}]"
            if block.out_channels not in self._widths:
                return (
                    f"block {index}: width {block.out_channels} is not a multiple of {self.width_step} in "
                    f"[{self.min_width}, {self.max_width}]"
                )
            choices = self.btn_choices(block.out_channels)
            if block.bottleneck not in choices:
                rule = (
                    f"a multiple of {self.width_step} in [{choices[0]}, {choices[-1]}]"
                    if self.btn_min_divisor is not None
                    else "round8(out * r) for a ratio r of btn_ratio_range"
                )
                return f"block {index}: bottleneck {block.bottleneck} must be {rule}"
        if self.head_width is not None:
            head = blocks[-1]
            if not (_plain_conv(head, self.head_kernel, 1) and head.out_channels == self.head_width):
                return (
                    f"the last block must be the fixed head ConvKXBNRELU(k {self.head_kernel}, s 1, "
                    f"out {self.head_width})"
                )
        try:
            check_channel_chain(blocks, first_in=3)
        except ArchSyntaxError as error:
            return str(error)
        if self.monotone_widths:
            widths = [b.out_channels for b in blocks[: 1 + len(self.block_strides)]]
            for index in range(1, len(widths)):
                if widths[index] < widths[index - 1]:
                    return (
                        f"block {index} narrows the network ({widths[index - 1]} -> {widths[index]}); "
                        "widths never shrink in this space"
                    )
        if self.max_layers is not None and arch.layers > self.max_layers:
            return f"it has {arch.layers} layers, over this space's max_layers {self.max_layers}"
        return None

    # -- sampling ---------------------------------------------------------------------------------

    def _assemble(self, stem: int, blocks: list[tuple[int, int, int, int]]) -> ArchSpec:
        """Member from the stem width and (out, btn, kernel, L) per super-block; channels chained."""
        out: list[TinyConv | TinyRes] = [
            TinyConv(in_channels=3, out_channels=stem, stride=self.stem_stride, kernel=self.stem_kernel)
        ]
        c = stem
        for (width, btn, kernel, depth), stride in zip(blocks, self.block_strides, strict=True):
            out.append(
                TinyRes(
                    in_channels=c,
                    out_channels=width,
                    stride=stride,
                    kind=self.block_class,
                    kernel=kernel,
                    bottleneck=btn,
                    num_inner=depth,
                )
            )
            c = width
        if self.head_width is not None:
            out.append(TinyConv(in_channels=c, out_channels=self.head_width, stride=1, kernel=self.head_kernel))
        return ArchSpec(self.dialect, tuple(out))

    def _sample_widths(self, rng: np.random.Generator) -> list[int]:
        """Super-block widths: uniform over non-decreasing sequences when monotone (stars and bars)."""
        n, values = len(self.block_strides), self._widths
        if not self.monotone_widths:
            return [choice(rng, values) for _ in range(n)]
        # n distinct sorted positions in range(m + n - 1), shifted by their rank, are a uniform multiset.
        picks = np.sort(rng.choice(len(values) + n - 1, size=n, replace=False))
        return [values[int(p) - i] for i, p in enumerate(picks)]

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member: every choice uniform over its candidates, rejected (boundedly) if over budget."""
        for _ in range(MAX_ATTEMPTS):
            stem = choice(rng, self._stem_widths)
            widths = self._sample_widths(rng)
            if self.monotone_widths and stem > widths[0]:
                continue
            blocks = []
            for i, width in enumerate(widths):
                kernel = choice(rng, self._kernels[i])
                depth = int(rng.integers(1, self._max_inner[i] + 1))
                blocks.append((width, choice(rng, self.btn_choices(width)), kernel, depth))
            arch = self._assemble(stem, blocks)
            if self.max_layers is None or arch.layers <= self.max_layers:
                return self._finish(arch, "sample")
        raise SearchSpaceError(
            f"search space {self.name!r}: no member found in {MAX_ATTEMPTS} draws; the layer budget or the "
            "stem/width ranges leave (almost) no members, so loosen them"
        )

    # -- mutation ---------------------------------------------------------------------------------

    def _alternatives(self, arch: ArchSpec, index: int) -> dict[str, list[int]]:
        """Per mutable field of block `index`: the distinct new values one mutation can give it."""
        blocks = arch.blocks
        last_res = len(self.block_strides)  # index of the last super-block
        if index == 0:
            high = self.stem_max_width
            if self.monotone_widths:
                high = min(high, blocks[1].out_channels)
            return {"out": self._scaled(blocks[0].out_channels, self.stem_min_width, high)}
        block = blocks[index]
        assert isinstance(block, TinyRes)  # guaranteed by membership
        low, high = self.min_width, self.max_width
        if self.monotone_widths:
            low = max(low, blocks[index - 1].out_channels)
            if index < last_res:
                high = min(high, blocks[index + 1].out_channels)
        if self.btn_min_divisor is not None:
            choices = self.btn_choices(block.out_channels)
            btn = self._scaled(block.bottleneck, choices[0], choices[-1])
        else:
            btn = [b for b in self.btn_choices(block.out_channels) if b != block.bottleneck]
        max_depth = self._max_inner[index - 1]
        if self.max_layers is not None:
            max_depth = min(max_depth, block.num_inner + (self.max_layers - arch.layers) // self.convs_per_inner)
        depths = {min(max_depth, max(1, block.num_inner + step)) for step in self.depth_steps}
        depths.discard(block.num_inner)
        return {
            "out": self._scaled(block.out_channels, low, high),
            "btn": btn,
            "k": [k for k in self._kernels[index - 1] if k != block.kernel],
            "L": sorted(depths),
        }

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """One TinyNAS-style mutation: a block (stem or super-block, the last included), then a field, then a value.

        Each of the three draws is uniform over the options that change the network; the fixed head
        is never mutated. Input channels are re-chained afterwards.
        """
        self._require_member(arch)
        options: list[tuple[int, dict[str, list[int]]]] = []
        for index in range(1 + len(self.block_strides)):
            fields = {key: values for key, values in self._alternatives(arch, index).items() if values}
            if fields:
                options.append((index, fields))
        if not options:
            raise SearchSpaceError(f"search space {self.name!r}: this member has no neighbour; widen the ranges")
        index, fields = choice(rng, options)
        field = choice(rng, sorted(fields))
        value = choice(rng, fields[field])
        blocks = list(arch.blocks)
        block = blocks[index]
        if index == 0:
            blocks[0] = replace(block, out_channels=value)
        else:
            assert isinstance(block, TinyRes)
            if field == "out":
                blocks[index] = replace(block, out_channels=value, bottleneck=self._refit_btn(block, value))
            elif field == "btn":
                blocks[index] = replace(block, bottleneck=value)
            elif field == "k":
                blocks[index] = replace(block, kernel=value)
            else:
                blocks[index] = replace(block, num_inner=value)
        if field == "out" and index + 1 < len(blocks):
            blocks[index + 1] = replace(blocks[index + 1], in_channels=value)
        return self._finish(arch.replace_blocks(blocks), "mutate")

    # -- seeds ------------------------------------------------------------------------------------

    def _load_seeds(self, d: _Definition) -> dict[str, ArchSpec]:
        table = d.get("seeds", dict)
        seeds: dict[str, ArchSpec] = {}
        for seed_name, entry in table.items():
            text = entry.get("arch") if isinstance(entry, dict) else None
            if not isinstance(text, str):
                raise d.error(f"seed {seed_name!r} needs an 'arch' string")
            try:
                spec = parse(text, self.dialect)
            except ArchSyntaxError as error:
                raise d.error(f"seed {seed_name!r} does not parse: {error}") from None
            reason = self.why_not(spec)
            if reason is not None:
                raise d.error(f"seed {seed_name!r} is not a member: {reason}")
            seeds[seed_name] = spec
        if not seeds:
            raise d.error("no seeds; add at least one [seeds.NAME] table with an 'arch' string")
        return seeds

    @property
    def seeds(self) -> MappingProxyType:
        """The seeds, by their TOML name."""
        return MappingProxyType(self._seeds)

    def initial(self) -> tuple[ArchSpec, ...]:
        """Seed architectures in definition order (TinyNAS starts every population from its seed)."""
        return tuple(self._seeds.values())


__all__ = ["TinyNASSpace"]
