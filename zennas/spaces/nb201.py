"""The NAS-Bench-201 cell space: 6 edges x 5 ops = 15,625 cells, small enough to enumerate.

The TOML definition may restrict `ops` to a subset of the five operations (then the space holds
len(ops)**6 cells) and lists `initial` seed cells. Randomness comes from an injected
`numpy.random.Generator`; iteration follows the benchmark's official index order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from zennas.arch import ArchSpec
from zennas.arch.nb201 import DIALECT, EDGES, OPS, NB201Cell, all_cells, from_ops, parse_ops
from zennas.errors import ArchSyntaxError, SearchSpaceError
from zennas.spaces import SearchSpace, check_rng, register_family

_RNG_EXAMPLE = "e.g. numpy.random.default_rng(0)"  # how a wrong rng's error says to make one


@register_family("nb201")
class NB201Space(SearchSpace):
    """Every NB201 cell whose six edge ops are in `ops` (default: all five, 15,625 cells)."""

    def __init__(self, name: str, definition: dict[str, Any]):
        super().__init__(name, definition)
        if self.dialect != DIALECT:
            raise SearchSpaceError(f"search space {name!r}: family 'nb201' needs dialect = {DIALECT!r}")
        chosen = definition.get("ops", list(OPS))
        unknown = [op for op in chosen if op not in OPS]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise SearchSpaceError(
                f"search space {name!r}: `ops` must list distinct operations out of {', '.join(OPS)}, got {chosen!r}"
            )
        # Kept in the official op order so that a seed gives the same draws however the TOML orders them.
        self.ops: tuple[str, ...] = tuple(op for op in OPS if op in chosen)
        self._initial: list[ArchSpec] = []
        for text in definition.get("initial", []):
            try:
                arch = from_ops(parse_ops(text))
            except ArchSyntaxError as error:
                raise SearchSpaceError(f"search space {name!r}: initial cell {text!r} is invalid: {error}") from None
            reason = self.why_not(arch)
            if reason is not None:
                raise SearchSpaceError(f"search space {name!r}: initial cell {text!r} is not a member: {reason}")
            self._initial.append(arch)

    def __len__(self) -> int:
        return len(self.ops) ** len(EDGES)

    def __iter__(self) -> Iterator[ArchSpec]:
        """Members in official NAS-Bench-201 index order."""
        full = len(self.ops) == len(OPS)
        return (arch for arch in all_cells() if full or self.contains(arch))

    def enumerate(self) -> Iterator[ArchSpec]:
        """Members in official NAS-Bench-201 index order (same as iterating the space)."""
        return iter(self)

    def why_not(self, arch: ArchSpec) -> str | None:
        if arch.dialect != DIALECT:
            return f"it is a {arch.dialect!r} architecture, this space holds {DIALECT!r} cells"
        if len(arch.blocks) != 1 or not isinstance(arch.blocks[0], NB201Cell):
            return f"an {DIALECT!r} architecture is exactly one NB201Cell, got {len(arch.blocks)} block(s)"
        for position, op in enumerate(arch.blocks[0].ops):
            if op not in self.ops:
                return f"edge {position} uses {op!r}, this space allows only {', '.join(self.ops)}"
        return None

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A member drawn uniformly: each edge's op uniform and independent."""
        check_rng(rng, _RNG_EXAMPLE)
        picks = rng.integers(0, len(self.ops), size=len(EDGES))
        return from_ops(self.ops[int(i)] for i in picks)

    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """`arch` with one uniformly chosen edge set to a uniformly chosen different op."""
        check_rng(rng, _RNG_EXAMPLE)
        self.check(arch)
        if len(self.ops) < 2:
            raise SearchSpaceError(f"search space {self.name!r} allows a single op, so no cell can be mutated")
        ops = list(arch.blocks[0].ops)
        edge = int(rng.integers(0, len(EDGES)))
        others = [op for op in self.ops if op != ops[edge]]
        ops[edge] = others[int(rng.integers(0, len(others)))]
        return from_ops(ops)

    def initial(self) -> tuple[ArchSpec, ...]:
        return tuple(self._initial)
