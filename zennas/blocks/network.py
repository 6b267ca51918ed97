"""The network shell every family builder returns: blocks in sequence, an optional head, stage taps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FEATURE_STRIDES = (4, 8, 16, 32)


class Network(nn.Module):
    """Blocks applied in order, then `head` (pool + classifier) unless it is None.

    `block_strides[i]` is the cumulative stride of block i's output. With `multi_scale=True`,
    `forward` returns the outputs of the last block at each stride in FEATURE_STRIDES that the
    network reaches (the C2..C5 features a detection neck consumes) instead of the head's output.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        block_strides: Sequence[int],
        head: nn.Module | None,
        *,
        multi_scale: bool = False,
    ):
        super().__init__()
        if len(blocks) != len(block_strides):
            raise ValueError("one cumulative stride per block is required")
        self.blocks = nn.ModuleList(blocks)
        self.block_strides = tuple(block_strides)
        self.head = head
        self.multi_scale = multi_scale
        last_at: dict[int, int] = {}
        for index, stride in enumerate(self.block_strides):
            last_at[stride] = index
        self.feature_indices = tuple(last_at[s] for s in FEATURE_STRIDES if s in last_at)
        self.feature_strides = tuple(s for s in FEATURE_STRIDES if s in last_at)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last block (before pooling): [B, C, H, W]."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the last block at strides 4, 8, 16, 32 (those the network reaches)."""
        taps = set(self.feature_indices)
        outs: list[torch.Tensor] = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in taps:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.multi_scale:
            return self.forward_stages(x)
        x = self.forward_features(x)
        return x if self.head is None else self.head(x)


class ClassifierHead(nn.Module):
    """Global average pool -> flatten -> Linear(C, num_classes, bias)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # [B, C]
        return self.fc(x)  # [B, num_classes]
