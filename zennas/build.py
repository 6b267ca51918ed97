"""ArchSpec -> nn.Module, through one registered builder per dialect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from zennas._once import Once
from zennas.arch import ArchSpec
from zennas.arch.limits import MAX_BUILD_PARAMS, MAX_RESOLUTION, check_num_classes
from zennas.counting import count
from zennas.errors import ConfigError


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


Builder = Callable[[ArchSpec, BuildOptions], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_builder(dialect: str) -> Callable[[Builder], Builder]:
    """Decorator: the torch builder of one dialect, called as fn(spec, options)."""

    def decorator(fn: Builder) -> Builder:
        if dialect in _BUILDERS:
            raise ValueError(f"a builder for {dialect!r} is already registered")
        _BUILDERS[dialect] = fn
        return fn

    return decorator


def build(spec: ArchSpec, options: BuildOptions | None = None, **kwargs: object) -> nn.Module:
    """Build the torch module of `spec` (options as a BuildOptions or keyword arguments)."""
    _load_builtin_builders()
    if options is None:
        options = BuildOptions(**kwargs)  # type: ignore[arg-type]
    elif kwargs:
        raise ConfigError("pass either a BuildOptions or keyword options, not both")
    try:
        builder = _BUILDERS[spec.dialect]
    except KeyError:
        raise ConfigError(f"no builder for dialect {spec.dialect!r}") from None
    _check_buildable(spec, options)
    return builder(spec, options)


def _check_buildable(spec: ArchSpec, options: BuildOptions) -> None:
    """Refuse, before allocating, a network whose weights alone exceed MAX_BUILD_PARAMS."""
    # Weights do not depend on the input side; the largest side counts every network that some
    # supported resolution can run (a smaller one may empty the feature map of an unpadded chain).
    # The counter refuses what the builder would (SE on a family without SE) in the same words.
    params = count(spec, resolution=MAX_RESOLUTION, num_classes=options.num_classes, use_se=options.use_se).params
    if params > MAX_BUILD_PARAMS:
        raise ConfigError(
            f"the network has {params:,} parameters, more than the {MAX_BUILD_PARAMS:,} zennas builds (8 GB of FP32 "
            "weights; published networks have at most 183 million); use narrower or fewer blocks"
        )


def _import_builtin_builders() -> None:
    from zennas.blocks import binas, nb201, tinynas, zennas_blocks  # noqa: F401


_load_builtin_builders = Once(_import_builtin_builders)
