"""What builders share, below every block family: the build switches and the builder registry.

`zennas.build` looks builders up here and imports the family modules only by name (through the
registry), so the families can import this module without importing `zennas.build` back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zennas.arch import ArchSpec
from zennas.arch.limits import check_num_classes
from zennas.registry import Registry, family_modules

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BuildOptions:
    """Switches every builder honours.

    num_classes: classifier outputs, 0 = backbone only (no pooling/classifier).
    use_se: None = the family's default (ZenNAS: off; TinyNAS SE blocks and BINAS `se0.25` blocks:
        on); True = SE where the family places it; False = no SE anywhere (plain nets for proxies).
    bn: False drops every BatchNorm (plain networks for proxies).
    residual: False removes every shortcut/add (the inner layers stay chained).
    multi_scale: forward returns the stage features at strides 4, 8, 16, 32.
    """

    num_classes: int = 1000
    use_se: bool | None = None
    bn: bool = True
    residual: bool = True
    multi_scale: bool = False

    def __post_init__(self) -> None:
        check_num_classes(self.num_classes)


Builder = Callable[[ArchSpec, BuildOptions], "nn.Module"]
BUILDERS: Registry[Builder] = Registry(
    "builder",
    family_modules("zennas.blocks"),
    unknown="no builder for dialect {name!r}",
    duplicate="a builder for {name!r} is already registered",
)


def register_builder(dialect: str) -> Callable[[Builder], Builder]:
    """Decorator: the torch builder of one dialect, called as fn(spec, options)."""
    return BUILDERS.register(dialect)
