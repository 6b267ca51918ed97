"""What the TOML-driven spaces of ZenNAS and GENet share: definition handling, presets, seeds, membership, draws.

REFERENCE.md 1.1, 1.2, 1.4 and 5.2. The family classes (`zennas.spaces.zennas`,
`zennas.spaces.genet`) subclass `TomlSpace`; randomness is always an injected numpy Generator.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Self, TypeVar

import numpy as np

from zennas.arch import ArchSpec, parse
from zennas.arch.ir import check_channel_chain
from zennas.arch.limits import CHANNELS
from zennas.arch.zennas import smart_round
from zennas.errors import ArchSyntaxError, ChannelMismatchError, SearchSpaceError
from zennas.spaces import SearchSpace

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


# Top-level keys of every ZenNAS and GENet definition; each family adds its own to `allowed_keys`.
SHARED_KEYS = frozenset(
    {
        "family",
        "dialect",
        "description",
        "notes",
        "width_multipliers",
        "width_base",
        "min_width",
        "max_width",
        "depth_step",
        "seeds",
        "use_seeds",
        "constraints",
        "presets",
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


def choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element of `options`, uniformly."""
    if not options:
        raise SearchSpaceError("internal error: empty candidate set; please report this with the architecture")
    return options[int(rng.integers(len(options)))]


def merge_definition(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
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


class TomlSpace(SearchSpace):
    """Shared machinery: key validation, presets, option overrides and seeds from the TOML definition.

    A family names itself and its dialect, lists its keys and reads them in `_read_family_keys`;
    the seeds are loaded after that, since membership needs every setting.
    """

    family: str = ""
    family_dialect: str = ""  # the one dialect the family's spaces hold
    allowed_keys: frozenset[str] = SHARED_KEYS
    max_attempts = 1000  # bound of every rejection loop (sample); exhausting it is a SearchSpaceError
    max_width_hint = ""  # appended to the reason a width exceeds max_width
    layers_meaning = "sum of sub_layers"  # what the family's `arch.layers` counts, for the max_layers reason

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
            effective = merge_definition(effective, presets[preset])
        effective = merge_definition(effective, self._overrides)
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
        if self.dialect != self.family_dialect:
            raise SearchSpaceError(
                f"search space {self.name!r}: family {self.family!r} needs dialect {self.family_dialect!r}"
            )
        self._read_family_keys()
        self._seeds = self._load_seeds()

    @abstractmethod
    def _read_family_keys(self) -> None:
        """Read and check the family's own keys of `self.definition` into attributes."""

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

    # -- membership ----------------------------------------------------------------------------

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else the first reason it is not."""
        if not isinstance(arch, ArchSpec):
            return f"expected an ArchSpec, got {type(arch).__name__}; parse the string with zennas.arch.parse first"
        if arch.dialect != self.dialect:
            return f"it is in dialect {arch.dialect!r} but this space holds {self.dialect!r} architectures"
        problem = self._layout_problem(arch)
        return problem if problem is not None else self._chain_problem(arch)

    @abstractmethod
    def _layout_problem(self, arch: ArchSpec) -> str | None:
        """Why `arch`, of this space's dialect, breaks the family's layout or widths; None if it does not."""

    def _width_problem(self, value: int, what: str, multiple: int) -> str | None:
        """None if `value` is an allowed width (a multiple of `multiple` within the bounds), else why not."""
        if value % multiple:
            return f"{what} {value} is not a multiple of {multiple}"
        if value < self.min_width:
            return f"{what} {value} is below this space's min_width {self.min_width}"
        if value > CHANNELS.maximum:
            return f"{what} {value} exceeds the {CHANNELS.maximum:,}-channel limit zennas can count and build"
        if self.max_width is not None and value > self.max_width:
            return f"{what} {value} exceeds this space's max_width {self.max_width}{self.max_width_hint}"
        return None

    def _chain_problem(self, arch: ArchSpec) -> str | None:
        """None if `arch`'s channels chain and it is within max_layers, else why not: membership's last checks."""
        try:
            check_channel_chain(arch.blocks)
        except ChannelMismatchError as error:
            return str(error)
        if self.max_layers is not None and arch.layers > self.max_layers:
            return f"it has {arch.layers} layers ({self.layers_meaning}) but max_layers is {self.max_layers}"
        return None

    # -- mutation and sampling -----------------------------------------------------------------

    def _widths(self, width: int) -> tuple[int, ...]:
        return width_choices(width, self.width_multipliers, self.width_base, self.min_width, self.max_width)

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """Pick a mutable index uniformly and redraw it (`mutate_block`); may equal `arch`, as in ZenNAS."""
        self._require_member(arch)
        return self._mutate_at(arch, choice(rng, self.mutable_indices(arch)), rng)

    def _sample_within_layers(self, draw: Callable[[], ArchSpec]) -> ArchSpec:
        """The first of at most max_attempts draws within max_layers (rejection sampling), checked for membership."""
        for _ in range(self.max_attempts):
            candidate = draw()
            if self.max_layers is None or candidate.layers <= self.max_layers:
                return self._finish(candidate, "sample")
        raise SearchSpaceError(
            f"sample() found no member of {self.name!r} within max_layers={self.max_layers} in "
            f"{self.max_attempts} attempts; raise max_layers"
        )


__all__ = [
    "KNOWN_CONSTRAINTS",
    "SHARED_KEYS",
    "TomlSpace",
    "choice",
    "depth_choices",
    "merge_definition",
    "width_choices",
]
