"""The BINAS / HardCoRe-NAS search space (REFERENCE.md section 6.1), defined in search_spaces/binas.toml.

Decisions: a depth per searchable stage and, per active block, an expansion, a kernel and an SE
switch (12 configurations per block with the published choices). `sample` draws each stage's depth
uniformly, then each block's configuration uniformly (so it is not uniform over networks: depth-2
stages are as likely as depth-4 ones). `mutate` changes one uniformly chosen decision (a depth, or
one factor of one active block) to a different value; blocks added by a deeper stage get uniform
configurations. The one-hot encoding of BINAS is `encode`/`decode` (see `zennas.arch.binas`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zennas.arch import ArchSpec
from zennas.arch.binas import BinasLayout, StageChoice
from zennas.errors import SearchSpaceError
from zennas.spaces import SearchSpace, check_rng, register_family

_RNG_EXAMPLE = "np.random.default_rng(seed)"  # how a wrong rng's error says to make one


def _int_list(definition: dict[str, Any], key: str, *, odd: bool = False) -> tuple[int, ...]:
    values = definition.get(key)
    if not isinstance(values, list) or not values:
        raise SearchSpaceError(f"binas space definition: {key!r} must be a non-empty list of integers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (odd and value % 2 == 0):
            kind = "odd positive integers" if odd else "positive integers"
            raise SearchSpaceError(f"binas space definition: {key!r} must hold {kind}, got {value!r}")
    if len(set(values)) != len(values):
        raise SearchSpaceError(f"binas space definition: {key!r} has repeated values {values}")
    return tuple(values)


def _number_list(definition: dict[str, Any], key: str, low: float, high: float) -> tuple[float, ...]:
    values = definition.get(key)
    if not isinstance(values, list) or not values:
        raise SearchSpaceError(f"binas space definition: {key!r} must be a non-empty list of numbers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise SearchSpaceError(f"binas space definition: {key!r} values must lie in [{low}, {high}], got {value!r}")
    if len(set(values)) != len(values):
        raise SearchSpaceError(f"binas space definition: {key!r} has repeated values {values}")
    # Integral floats become ints so that configs print as e3, not e3.0.
    return tuple(int(v) if float(v).is_integer() else float(v) for v in values)


def _positive_int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchSpaceError(f"binas space definition: {where}{key} must be a positive integer, got {value!r}")
    return value


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key)
    if not isinstance(value, bool):
        raise SearchSpaceError(f"binas space definition: {where}{key} must be true or false, got {value!r}")
    return value


def layout_from_definition(definition: dict[str, Any]) -> BinasLayout:
    """Validate a `family = "binas"` TOML definition and turn it into a BinasLayout."""
    first = definition.get("first_block")
    if not isinstance(first, dict):
        raise SearchSpaceError("binas space definition: a [first_block] table (kernel, out_channels, relu) is required")
    stages = definition.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise SearchSpaceError("binas space definition: give one or more [[stages]] tables")
    choices = []
    for index, stage in enumerate(stages, start=1):
        where = f"stage {index} "
        stride = stage.get("stride")
        if stride not in (1, 2) or isinstance(stride, bool):
            raise SearchSpaceError(f"binas space definition: {where}stride must be 1 or 2, got {stride!r}")
        choices.append(StageChoice(_positive_int(stage, "out_channels", where), stride, _flag(stage, "relu", where)))
    first_kernel = _positive_int(first, "kernel", "first_block ")
    if first_kernel % 2 == 0:
        raise SearchSpaceError(f"binas space definition: first_block kernel must be odd, got {first_kernel}")
    return BinasLayout(
        stem_width=_positive_int(definition, "stem_width", ""),
        first_kernel=first_kernel,
        first_width=_positive_int(first, "out_channels", "first_block "),
        first_relu=_flag(first, "relu", "first_block "),
        stages=tuple(choices),
        depths=_int_list(definition, "depths"),
        expansions=_number_list(definition, "expansions", 1e-3, 1e3),
        kernels=_int_list(definition, "kernels", odd=True),
        se_ratios=_number_list(definition, "se_ratios", 0.0, 1.0),
        last_width=_positive_int(definition, "last_width", ""),
    )


@register_family("binas")
class BinasSpace(SearchSpace):
    """MobileNetV3-like stages of inverted-residual blocks with searched depth, expansion, kernel and SE."""

    def __init__(self, name: str, definition: dict[str, Any]):
        super().__init__(name, definition)
        if self.dialect != "binas":
            raise SearchSpaceError(f'search space {name!r}: family binas needs dialect = "binas", got {self.dialect!r}')
        self.layout = layout_from_definition(definition)

    # Membership -------------------------------------------------------------------------------

    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else a one-line reason."""
        return self.layout.why_not(arch)

    def size(self) -> int:
        """Number of distinct networks (22,608^5 for the published space)."""
        return self.layout.size()

    def encode(self, arch: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
        """One-hot (alpha, beta) of a member; see BinasLayout.encode."""
        return self.layout.encode(arch)

    def decode(self, alpha: Any, beta: Any) -> ArchSpec:
        """The member described by one-hot alpha and beta."""
        return self.layout.decode(alpha, beta)

    # Randomness -------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """Depth uniform per stage, then each block's configuration uniform."""
        check_rng(rng, _RNG_EXAMPLE)
        layout = self.layout
        depths, configs = [], []
        for _ in layout.stages:
            depth = layout.depths[int(rng.integers(len(layout.depths)))]
            depths.append(depth)
            configs.append(tuple(int(c) for c in rng.integers(len(layout.configs), size=depth)))
        return layout.make(depths, configs)

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """Change one uniformly chosen decision of member `arch` to a different value."""
        check_rng(rng, _RNG_EXAMPLE)
        layout = self.layout
        depths, configs = layout.decisions(arch)  # SearchSpaceError naming the reason for a non-member
        factors = (layout.expansions, layout.kernels, layout.se_ratios)
        # Decisions with an alternative value: (stage,) = its depth; (stage, block, factor) = e, k or SE.
        decisions: list[tuple[int, ...]] = []
        if len(layout.depths) > 1:
            decisions += [(s,) for s in range(len(depths))]
        for s, depth in enumerate(depths):
            for b in range(depth):
                decisions += [(s, b, f) for f, values in enumerate(factors) if len(values) > 1]
        if not decisions:
            raise SearchSpaceError(f"search space {self.name!r} has a single member; there is nothing to mutate")
        decision = decisions[int(rng.integers(len(decisions)))]
        new_depths = list(depths)
        new_configs = [list(c) for c in configs]
        s = decision[0]
        if len(decision) == 1:
            others = [d for d in layout.depths if d != depths[s]]
            depth = others[int(rng.integers(len(others)))]
            extra = [int(c) for c in rng.integers(len(layout.configs), size=max(depth - depths[s], 0))]
            new_configs[s] = (new_configs[s] + extra)[:depth]
            new_depths[s] = depth
        else:
            _, b, f = decision
            index = list(np.unravel_index(new_configs[s][b], [len(v) for v in factors]))
            others = [i for i in range(len(factors[f])) if i != index[f]]
            index[f] = others[int(rng.integers(len(others)))]
            new_configs[s][b] = int(np.ravel_multi_index(index, [len(v) for v in factors]))
        return layout.make(new_depths, new_configs)

    def initial(self) -> tuple[ArchSpec, ...]:
        """Seeds: the smallest network (shallowest, config 0) and a middle one (middle depth/expansion, largest k)."""
        layout = self.layout
        n = len(layout.stages)
        smallest = layout.make([min(layout.depths)] * n, [(0,) * min(layout.depths)] * n)
        depth = sorted(layout.depths)[len(layout.depths) // 2]
        factors = (len(layout.expansions) // 2, len(layout.kernels) - 1, 0)
        config = int(
            np.ravel_multi_index(factors, (len(layout.expansions), len(layout.kernels), len(layout.se_ratios)))
        )
        middle = layout.make([depth] * n, [(config,) * depth] * n)
        return (smallest, middle) if middle != smallest else (smallest,)
