"""ArchSpec -> nn.Module, through one registered builder per dialect (registry: zennas.blocks.base)."""

from __future__ import annotations

from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.limits import MAX_BUILD_PARAMS, MAX_RESOLUTION
from zennas.blocks.base import BUILDERS, Builder, BuildOptions, register_builder
from zennas.counting import count
from zennas.errors import ConfigError


def build(spec: ArchSpec, options: BuildOptions | None = None, **kwargs: object) -> nn.Module:
    """Build the torch module of `spec` (options as a BuildOptions or keyword arguments)."""
    if options is None:
        options = BuildOptions(**kwargs)  # type: ignore[arg-type]
    elif kwargs:
        raise ConfigError("pass either a BuildOptions or keyword options, not both")
    builder = BUILDERS.get(spec.dialect)
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


__all__ = ["BUILDERS", "BuildOptions", "Builder", "build", "register_builder"]
