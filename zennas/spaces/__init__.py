"""Search spaces: membership, uniform sampling and mutation over architectures of one dialect.

Definitions (choices, seeds, constraints) are TOML files in the top-level `search_spaces/`
package; the classes here hold the logic of each family. Randomness is always injected as a
`numpy.random.Generator`; no global RNG is used. This package never imports torch.
"""

from __future__ import annotations

import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from zennas.arch import ArchSpec
from zennas.errors import ConfigError, SearchSpaceError
from zennas.registry import Registry, family_modules


class SearchSpace(ABC):
    """One search space; subclasses implement the family's rules from a TOML definition."""

    # The counting convention (zennas.counting) of the budget_flops / budget_model_size constraints the
    # definition and its presets state: the one the published searches of the family used.
    budget_convention: str = "correct"

    def __init__(self, name: str, definition: dict[str, Any]):
        self.name = name
        self.definition = definition
        self.description: str = definition.get("description", "")
        self.dialect: str = definition["dialect"]
        self.constraints: dict[str, Any] = dict(definition.get("constraints", {}))

    @abstractmethod
    def why_not(self, arch: ArchSpec) -> str | None:
        """None if `arch` is a member, else a one-line reason."""

    def contains(self, arch: ArchSpec) -> bool:
        """True if `arch` is a member of this space."""
        return self.why_not(arch) is None

    def check(self, arch: ArchSpec) -> None:
        """Raise SearchSpaceError naming the reason if `arch` is not a member."""
        reason = self.why_not(arch)
        if reason is not None:
            raise SearchSpaceError(f"architecture is not in search space {self.name!r}: {reason}")

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """A random member."""

    @abstractmethod
    def mutate(self, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """A random member one mutation away from `arch` (which must be a member)."""

    @abstractmethod
    def initial(self) -> tuple[ArchSpec, ...]:
        """Seed architectures (members) to start a search from."""

    def _require_member(self, arch: ArchSpec) -> None:
        """Raise SearchSpaceError unless `arch`, about to be mutated, is a member."""
        reason = self.why_not(arch)
        if reason is not None:
            raise SearchSpaceError(
                f"cannot mutate: the architecture is not in search space {self.name!r}: {reason}; "
                "start from space.initial() or space.sample(rng)"
            )

    def _finish(self, child: ArchSpec, action: str) -> ArchSpec:
        """Return `child` if it is a member; otherwise a sampler/mutator produced a non-member: a bug."""
        reason = self.why_not(child)
        if reason is not None:
            raise SearchSpaceError(
                f"{action} in search space {self.name!r} produced a non-member ({reason}); "
                f"this is a zennas bug, please report it with {child.canonical!r}"
            )
        return child

    def __repr__(self) -> str:
        return f"<SearchSpace {self.name} ({self.dialect})>"


def check_rng(rng: object, example: str) -> None:
    """Raise ConfigError unless `rng` is a numpy Generator; `example` shows how to make one."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator ({example}), got {type(rng).__name__}")


SpaceFactory = Callable[[str, dict[str, Any]], SearchSpace]
FAMILIES: Registry[SpaceFactory] = Registry(
    "search-space family",
    family_modules("zennas.spaces"),
    error=SearchSpaceError,
)


def register_family(family: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator: the class implementing the `family = "..."` named in space TOML files."""
    return FAMILIES.register(family)


def _definitions() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in resources.files("search_spaces").iterdir():
        if entry.name.endswith(".toml"):
            with entry.open("rb") as handle:
                out[entry.name[: -len(".toml")]] = tomllib.load(handle)
    return out


def list_spaces() -> list[str]:
    """Names of the shipped search spaces."""
    return sorted(_definitions())


def get_space(name: str) -> SearchSpace:
    """Build the named search space from its definition in `search_spaces/`."""
    definitions = _definitions()
    if name not in definitions:
        raise SearchSpaceError(f"unknown search space {name!r}; choose one of: {', '.join(sorted(definitions))}")
    definition = definitions[name]
    family = definition.get("family")
    factory = FAMILIES.find(family)
    if factory is None:
        raise SearchSpaceError(f"search space {name!r} names unknown family {family!r}")
    return factory(name, definition)
