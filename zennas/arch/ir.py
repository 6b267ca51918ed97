"""Typed, frozen intermediate representation shared by every architecture dialect.

A dialect parses text into an :class:`ArchSpec` (a tuple of :class:`BlockSpec` subclasses) and
prints it back. Equality and hashing ignore import-only side data (labels, unknown keys) so that
two spellings of the same network compare equal and share one canonical string and hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from zennas.errors import ArchValueError, ChannelMismatchError


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """One block (token) of a network; families subclass it with their own fields."""

    in_channels: int
    out_channels: int
    stride: int

    @property
    def name(self) -> str:
        """Token name as written in the block's dialect."""
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """Layers this block adds to its dialect's layer budget."""
        return 1


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: its dialect and blocks; `source` keeps import-only data for re-emission."""

    dialect: str
    blocks: tuple[BlockSpec, ...]
    source: Any = field(default=None, compare=False, hash=False, repr=False)

    def to_string(self) -> str:
        """Text in the spec's own dialect, re-emitting imported labels and extras."""
        from zennas.arch import get_dialect

        return get_dialect(self.dialect).format(self, canonical=False)

    @cached_property
    def canonical(self) -> str:
        """Label-free normalised text: equal for equal networks."""
        from zennas.arch import get_dialect

        return get_dialect(self.dialect).format(self, canonical=True)

    @cached_property
    def hash(self) -> str:
        """Stable 16-hex-digit identity of the network (dialect + canonical text)."""
        digest = hashlib.sha256(f"{self.dialect}\n{self.canonical}".encode())
        return digest.hexdigest()[:16]

    @property
    def layers(self) -> int:
        """Depth in the dialect's own layer convention (ZenNAS: sum of sub_layers)."""
        return sum(block.depth for block in self.blocks)

    def replace_blocks(self, blocks: tuple[BlockSpec, ...] | list[BlockSpec]) -> ArchSpec:
        """Same dialect, new blocks, no imported side data."""
        return ArchSpec(self.dialect, tuple(blocks))


def check_positive(value: int, what: str, *, position: int | None = None, token: str | None = None) -> None:
    """Raise ArchValueError unless `value` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchValueError(f"{what} must be a positive integer, got {value!r}", position=position, token=token)


def check_choice(
    value: Any, allowed: tuple, what: str, *, position: int | None = None, token: str | None = None
) -> None:
    """Raise ArchValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ArchValueError(
            f"{what} must be one of {', '.join(map(str, allowed))}, got {value!r}", position=position, token=token
        )


def check_channel_chain(
    blocks: tuple[BlockSpec, ...], positions: tuple[int, ...] | None = None, *, first_in: int | None = 3
) -> None:
    """Raise ChannelMismatchError where a block's input differs from the previous block's output."""
    expected = first_in
    for index, block in enumerate(blocks):
        if expected is not None and block.in_channels != expected:
            where = "the image" if index == 0 else f"block {index - 1} ({blocks[index - 1].name})"
            raise ChannelMismatchError(
                f"block {index} ({block.name}) takes {block.in_channels} input channels but {where} gives "
                f"{expected}; make them equal (or pass rechain=True / --rechain to repair a legacy string)",
                position=None if positions is None else positions[index],
                token=block.name,
            )
        expected = block.out_channels


def rechain(blocks: tuple[BlockSpec, ...] | list[BlockSpec], first_in: int = 3) -> tuple[BlockSpec, ...]:
    """Explicit legacy repair: set every block's input channels to the previous block's output."""
    from dataclasses import replace

    out: list[BlockSpec] = []
    expected = first_in
    for block in blocks:
        out.append(block if block.in_channels == expected else replace(block, in_channels=expected))
        expected = block.out_channels
    return tuple(out)
