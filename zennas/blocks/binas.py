"""Torch modules of the BINAS / HardCoRe-NAS family (timm MobileNetV3 blocks).

Widths come from `zennas.counting.binas.unroll`, the analytic twin; this module only wires them:
conv -> BN -> activation, SE after the depthwise activation, no activation after the projection
or the add. `build_binas` honours every BuildOptions switch (bn, residual, use_se, multi_scale).
"""

from __future__ import annotations

import torch
from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.binas import BinasBlock, check_spec, stem_width
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import Network
from zennas.counting.binas import HEAD_WIDTH, STEM_KERNEL, STEM_STRIDE, Layer, unroll


def _activation(relu: bool) -> nn.Module:
    return nn.ReLU(inplace=True) if relu else nn.Hardswish(inplace=True)


def _conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, *, groups: int = 1, bn: bool, act: nn.Module | None
) -> list[nn.Module]:
    """Conv k x k ('same' padding k // 2, no bias) -> BN (if `bn`) -> `act` (if given)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    if act is not None:
        layers.append(act)
    return layers


class SqueezeExcite(nn.Module):
    """timm mobilenetv3 SE: pool -> 1x1 (c -> m, bias) -> ReLU -> 1x1 (m -> c, bias) -> hard-sigmoid -> scale."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        s = self.gate(self.conv_expand(self.act(self.conv_reduce(s))))  # [B, C, 1, 1]
        return x * s  # [B, C, H, W]


class BinasLayer(nn.Module):
    """One repeat of a ds / ir / cn block string, built from its resolved `Layer` record."""

    def __init__(self, layer: Layer, *, bn: bool, residual: bool):
        super().__init__()
        mid, k, s = layer.mid_channels, layer.kernel, layer.stride
        modules: list[nn.Module] = []
        if layer.kind == "cn":
            modules += _conv_bn(layer.in_channels, layer.out_channels, k, s, bn=bn, act=_activation(layer.relu))
        else:
            if layer.kind == "ir":
                modules += _conv_bn(layer.in_channels, mid, 1, bn=bn, act=_activation(layer.relu))
            modules += _conv_bn(mid, mid, k, s, groups=mid, bn=bn, act=_activation(layer.relu))
            if layer.se_channels:
                modules.append(SqueezeExcite(mid, layer.se_channels))
            # Linear bottleneck: no activation after the projection (nor after the add).
            modules += _conv_bn(mid, layer.out_channels, 1, bn=bn, act=None)
        self.body = nn.Sequential(*modules)
        self.shortcut = layer.shortcut and residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)  # [B, C_out, H / s, W / s]
        return y + x if self.shortcut else y


class BinasBlockModule(nn.Sequential):
    """All repeats of one block string, in order."""

    def __init__(self, block: BinasBlock, options: BuildOptions):
        super().__init__(
            *(BinasLayer(layer, bn=options.bn, residual=options.residual) for layer in unroll(block, options.use_se))
        )


class BinasStem(nn.Sequential):
    """Conv 3x3 stride 2 (3 -> width) -> BN -> hard-swish."""

    def __init__(self, width: int, *, bn: bool):
        super().__init__(*_conv_bn(3, width, STEM_KERNEL, STEM_STRIDE, bn=bn, act=nn.Hardswish(inplace=True)))


class BinasHead(nn.Module):
    """timm MobileNetV3 head: global pool -> 1x1 conv to 1280 (bias, no BN) -> hard-swish -> Linear."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv_head = nn.Conv2d(channels, HEAD_WIDTH, 1, bias=True)
        self.act = nn.Hardswish(inplace=True)
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        x = self.act(self.conv_head(x))  # [B, 1280, 1, 1]
        return self.classifier(torch.flatten(x, 1))  # [B, num_classes]


@register_builder("binas")
def build_binas(spec: ArchSpec, options: BuildOptions) -> Network:
    """BINAS network: stem, one module per block string, then the MobileNetV3 head (none if num_classes == 0)."""
    check_spec(spec)
    width = stem_width(spec)
    blocks: list[nn.Module] = [BinasStem(width, bn=options.bn)]
    strides = [STEM_STRIDE]
    for block in spec.blocks:
        assert isinstance(block, BinasBlock)  # guaranteed by check_spec; narrows the type
        blocks.append(BinasBlockModule(block, options))
        strides.append(strides[-1] * block.stride)
    head = BinasHead(spec.blocks[-1].out_channels, options.num_classes) if options.num_classes else None
    return Network(blocks, strides, head, multi_scale=options.multi_scale)
