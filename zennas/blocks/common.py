"""Small building pieces shared by the ZenNAS and GENet block families."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    bias: bool = False,
    bn: bool = True,
    eps: float = 1e-5,
    relu: bool = False,
) -> list[nn.Module]:
    """Conv k x k with 'same' padding, then BN (if `bn`) and ReLU (if `relu`), as a layer list."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=bias)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(c_out, eps=eps))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class ResidualUnit(nn.Module):
    """`relu(body(x) + shortcut(x))`; shortcut None = identity; residual=False drops the add, keeps the ReLU."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, *, residual: bool = True):
        super().__init__()
        self.body = body
        self.residual = residual
        # Without residual links the projection would be dead weight, so it is not built at all.
        self.shortcut = shortcut if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return torch.relu(y)


class SqueezeExcite(nn.Module):
    """ZenNAS SE: pool -> 1x1 (c->m) -> BN -> ReLU -> 1x1 (m->c) -> BN -> sigmoid -> scale the input."""

    def __init__(self, channels: int, mid: int, *, bn: bool = True, eps: float = 1e-3):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)]
        layers += conv_bn(channels, mid, 1, bn=bn, eps=eps, relu=True)
        layers += conv_bn(mid, channels, 1, bn=bn, eps=eps)
        layers.append(nn.Sigmoid())
        self.gate = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)  # [B, C, H, W] * [B, C, 1, 1]
