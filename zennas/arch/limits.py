"""Size limits: the largest architecture and settings zennas parses, counts and builds.

Each limit sits far above every published network and every search space's range (each error
says how far) and far below what exhausts memory or time. Texts are measured before they are
tokenised and depths before anything is expanded, so a refusal is always immediate: a repeat
count of 10^12 is an error message, not 4 GB of blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zennas.errors import ArchSyntaxError, ArchValueError, ConfigError

# Published architecture texts are under 10,000 characters (GENet strings with uuid labels ~700,
# TinyNAS structure files a few KB); 1 MB takes about a second to read in the slowest dialect.
MAX_TEXT_CHARS = 1_000_000
# Pixels of the square input: detection backbones use up to 640 (DAMO-YOLO), classification 224-380.
MAX_RESOLUTION = 16_384
# Classifier outputs: the largest label sets in use (face identities of WebFace42M) have ~2 million.
MAX_CLASSES = 10_000_000
# Weights a build may allocate (8 GB in FP32); the largest published network here has 183 million.
MAX_BUILD_PARAMS = 2_000_000_000
# Values of one feature-map tensor (batch x C x H x W) a forward may allocate: beyond 2^31 - 1
# convolution kernels need 64-bit indexing (or fail), and one such tensor already takes 8 GB.
MAX_FEATURE_ELEMENTS = 2**31 - 1


@dataclass(frozen=True)
class Limit:
    """An upper bound on one kind of number zennas counts and builds, with the reason given in its error."""

    maximum: int
    unit: str  # e.g. "layer": the error reads "the 10,000-layer limit"
    published: str  # what published networks and search spaces use

    def check(self, value: float, what: str, *, position: int | None = None, token: str | None = None) -> None:
        """Raise ArchValueError if `value` exceeds the limit (`what` names the number and its block)."""
        if value > self.maximum:
            raise ArchValueError(self.exceeded(value, what), position=position, token=token)

    def exceeded(self, value: float, what: str) -> str:
        """The message for `value` above the limit: one wording for architecture numbers and settings alike."""
        return (
            f"{what} {_number(value)} exceeds the {self.maximum:,}-{self.unit} limit zennas can count and "
            f"build; {self.published}"
        )


# Depth in the dialect's own layer convention (ZenNAS/GENet sub_layers, TinyNAS conv layers,
# BINAS repeats). Counting expands every layer, so this bounds counting time and memory.
DEPTH = Limit(10_000, "layer", "published networks and search spaces have at most ~200")
# Tokens / block dicts / block strings of one network (GENet's BN and RELU tokens have no depth).
BLOCKS = Limit(10_000, "block", "published networks have at most ~40")
CHANNELS = Limit(65_536, "channel", "published networks have at most 6,704 (the ZenNet heads)")
KERNEL = Limit(15, "pixel kernel", "published networks use kernels of at most 7")
EXPANSION = Limit(64, "times expansion", "published networks expand at most 6 times")
# Settings, not architecture numbers: refused with ConfigError (no text position), in the same words.
_RESOLUTION = Limit(MAX_RESOLUTION, "pixel", "published networks use inputs of at most 640; use a smaller resolution")
_CLASSES = Limit(MAX_CLASSES, "class", "the largest label sets in use have ~2 million classes")


def _number(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_text_size(text: str) -> None:
    """Raise ArchSyntaxError for an architecture text too long to be one network (checked before reading it)."""
    if len(text) > MAX_TEXT_CHARS:
        raise ArchSyntaxError(
            f"architecture text has {len(text):,} characters, more than the {MAX_TEXT_CHARS:,} zennas reads; "
            "published architectures have fewer than 10,000: give one network's string or file"
        )


def check_total_depth(depths: Sequence[int], positions: Sequence[int | None] | None = None, *, what: str) -> None:
    """Raise ArchValueError at the block where the summed depth passes DEPTH (`what`: the dialect's depth unit)."""
    total = 0
    for index, depth in enumerate(depths):
        total += depth
        if total > DEPTH.maximum:
            raise ArchValueError(
                f"the network's {what} add up to more than the {DEPTH.maximum:,}-layer limit zennas can count and "
                f"build (passed at block {index}); {DEPTH.published}",
                position=None if positions is None else positions[index],
            )


def check_resolution(resolution: int) -> None:
    """Raise ConfigError unless `resolution` is a positive integer within MAX_RESOLUTION."""
    _check_setting(resolution, "resolution", _RESOLUTION, low=1, requirement="a positive integer")


def check_num_classes(num_classes: int) -> None:
    """Raise ConfigError unless `num_classes` is a non-negative integer within MAX_CLASSES."""
    _check_setting(
        num_classes, "num_classes", _CLASSES, low=0, requirement="a non-negative integer (0 = backbone only)"
    )


def _check_setting(value: int, what: str, limit: Limit, *, low: int, requirement: str) -> None:
    """Raise ConfigError unless `value` is an int (a bool is not) from `low` up to `limit`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be {requirement}, got {value!r}")
    if value > limit.maximum:
        raise ConfigError(limit.exceeded(value, what))


__all__ = [
    "BLOCKS",
    "CHANNELS",
    "DEPTH",
    "EXPANSION",
    "KERNEL",
    "MAX_BUILD_PARAMS",
    "MAX_CLASSES",
    "MAX_FEATURE_ELEMENTS",
    "MAX_RESOLUTION",
    "MAX_TEXT_CHARS",
    "Limit",
    "check_num_classes",
    "check_resolution",
    "check_text_size",
    "check_total_depth",
]
