"""Torch modules of the TinyNAS family (MAE-DET, DeepMAD, DAMO-YOLO backbones), REFERENCE.md 1.3.

Every conv is bias-free and followed by BatchNorm (eps 1e-5); activations come from the block's
`act`. The shortcut of a stride-2 inner block average-pools with `ceil_mode=True`: identical to
TinyNAS's AvgPool2d(2, 2) on even sides, and on odd sides it matches the conv path's ceil(R/2)
output where TinyNAS would crash on the add.
"""

from __future__ import annotations

import torch
from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.tinynas import InnerBlock, TinyConv, TinyRes, inner_blocks, se_width
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import ClassifierHead, Network
from zennas.errors import ConfigError

BN_EPS = 1e-5


def activation(name: str) -> nn.Module:
    """The module of a TinyNAS activation name (not in place, so hooks see every tensor)."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "swish":
        return nn.SiLU()
    if name == "learkyrelu":  # TinyNAS spelling; F.leaky_relu default slope
        return nn.LeakyReLU(0.01)
    raise ConfigError(f"unknown TinyNAS activation {name!r}")


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, *, groups: int = 1, padding: int | None = None, bn: bool = True
) -> list[nn.Module]:
    """Bias-free conv (same padding unless given), then BN when `bn`."""
    pad = (kernel - 1) // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=groups, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out, eps=BN_EPS))
    return layers


class TinySE(nn.Module):
    """TinyNAS SE: pool -> 1x1 (c->m) + BN -> SiLU -> 1x1 (m->c) + BN -> sigmoid -> scale the input."""

    def __init__(self, channels: int, *, bn: bool = True):
        super().__init__()
        mid = se_width(channels)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            *conv_bn(channels, mid, 1, bn=bn),
            nn.SiLU(),  # fixed in TinyNAS, whatever the block's act
            *conv_bn(mid, channels, 1, bn=bn),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)  # [B, C, H, W] * [B, C, 1, 1]


class ConvKXBNAct(nn.Module):
    """`ConvKXBNRELU`: conv k x k -> BN -> act."""

    def __init__(self, block: TinyConv, options: BuildOptions):
        super().__init__()
        layers = conv_bn(
            block.in_channels,
            block.out_channels,
            block.kernel,
            block.stride,
            groups=block.groups,
            padding=block.pad,
            bn=options.bn,
        )
        self.layers = nn.Sequential(*layers, activation(block.activation))
        # Only a reduced padding can make the output empty; check then, so the error says what to do.
        self.min_side = block.kernel - 2 * block.pad if block.pad < (block.kernel - 1) // 2 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.min_side and min(x.shape[-2:]) < self.min_side:
            raise ConfigError(
                f"ConvKXBNRELU with k={self.layers[0].kernel_size[0]}, p={self.layers[0].padding[0]} needs an "
                f"input side of at least {self.min_side}, got {tuple(x.shape[-2:])}; use a larger resolution"
            )
        return self.layers(x)


class TinyResInner(nn.Module):
    """One TinyNAS residual inner block (ResK1KXK1, ResK1KX, ResKXKX, ResK1DWK1, ResK1DWSEK1).

    body: the main-path convs with BN and act, no act after the last conv; SE after the depthwise
    act of ResK1DWSEK1. shortcut: AvgPool(2, 2) for stride 2, then a 1x1 projection + BN where the
    block has one; None when the block has no residual (depthwise blocks with in != out, or
    residual=False). The block's act follows the add (or the last conv when there is no add).
    """

    def __init__(self, inner: InnerBlock, options: BuildOptions):
        super().__init__()
        c, o, b, k, s, g, bn = (
            inner.in_channels,
            inner.out_channels,
            inner.bottleneck,
            inner.kernel,
            inner.stride,
            inner.groups,
            options.bn,
        )
        act = inner.act
        if inner.kind == "ResK1KXK1":
            layers = [
                *conv_bn(c, b, 1, groups=g, bn=bn),
                activation(act),
                *conv_bn(b, b, k, s, groups=g, bn=bn),
                activation(act),
                *conv_bn(b, o, 1, groups=g, bn=bn),
            ]
        elif inner.kind == "ResK1KX":
            layers = [*conv_bn(c, b, 1, groups=g, bn=bn), activation(act), *conv_bn(b, o, k, s, groups=g, bn=bn)]
        elif inner.kind == "ResKXKX":
            # The stride sits on the second conv.
            layers = [*conv_bn(c, b, k, groups=g, bn=bn), activation(act), *conv_bn(b, o, k, s, groups=g, bn=bn)]
        elif inner.depthwise:
            layers = [
                *conv_bn(c, b, 1, groups=g, bn=bn),
                activation(act),
                *conv_bn(b, b, k, s, groups=b, bn=bn),
                activation(act),
            ]
            if inner.has_se and options.use_se is not False:
                layers.append(TinySE(b, bn=bn))
            layers += conv_bn(b, o, 1, groups=g, bn=bn)
        else:
            raise ConfigError(f"unknown TinyNAS inner block {inner.kind!r}")
        self.body = nn.Sequential(*layers)
        self.residual = options.residual and inner.residual
        self.shortcut: nn.Module | None = None
        if self.residual:
            shortcut: list[nn.Module] = []
            if s == 2:
                shortcut.append(nn.AvgPool2d(2, 2, ceil_mode=True))
            if inner.projection:
                shortcut += conv_bn(c, o, 1, bn=bn)
            self.shortcut = nn.Sequential(*shortcut)  # empty Sequential = identity
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)  # [B, out, ceil(H/s), ceil(W/s)]
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class TinySuperBlock(nn.Module):
    """A TinyNAS super-block: its L inner blocks in sequence."""

    def __init__(self, block: TinyRes, options: BuildOptions):
        super().__init__()
        self.inner = nn.Sequential(*(TinyResInner(inner, options) for inner in inner_blocks(block)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@register_builder("tinynas")
def build_tinynas(spec: ArchSpec, options: BuildOptions) -> Network:
    """TinyNAS backbone; a ClassifierHead only when options.num_classes > 0 (TinyNAS nets are backbones)."""
    modules: list[nn.Module] = []
    strides: list[int] = []
    stride = 1
    for block in spec.blocks:
        if isinstance(block, TinyConv):
            modules.append(ConvKXBNAct(block, options))
        elif isinstance(block, TinyRes):
            modules.append(TinySuperBlock(block, options))
        else:
            raise ConfigError(f"{type(block).__name__} is not a TinyNAS block; parse the text with dialect 'tinynas'")
        stride *= block.stride
        strides.append(stride)
    head = ClassifierHead(spec.blocks[-1].out_channels, options.num_classes) if options.num_classes else None
    return Network(modules, strides, head, multi_scale=options.multi_scale)


__all__ = ["BN_EPS", "ConvKXBNAct", "TinyResInner", "TinySE", "TinySuperBlock", "activation", "build_tinynas"]
