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
from zennas.arch.tinynas import InnerBlock, TinyConv, TinyRes, inner_blocks
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import ClassifierHead, Network
from zennas.counting import LayerRecord
from zennas.counting.tinynas import conv_layer, inner_layers
from zennas.errors import ConfigError

BN_EPS = 1e-5
# The input side the counting records are asked for: modules do not depend on it (only the records' sides do).
LAYOUT_SIDE = 1


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


def record_conv_bn(record: LayerRecord, *, bn: bool) -> list[nn.Module]:
    """The conv of a counting record, then its BN unless `bn` is False: the layout comes from counting."""
    return conv_bn(
        record.c_in,
        record.c_out,
        record.kernel,
        record.stride,
        groups=record.groups,
        padding=record.padding,
        bn=bn and record.bn,
    )


class TinySE(nn.Module):
    """TinyNAS SE: pool -> 1x1 (c->m) + BN -> SiLU -> 1x1 (m->c) + BN -> sigmoid -> scale the input.

    Built from its two counting records, the squeeze (c -> m) and the excite (m -> c) conv.
    """

    def __init__(self, squeeze: LayerRecord, excite: LayerRecord, *, bn: bool = True):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            *record_conv_bn(squeeze, bn=bn),
            nn.SiLU(),  # fixed in TinyNAS, whatever the block's act
            *record_conv_bn(excite, bn=bn),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)  # [B, C, H, W] * [B, C, 1, 1]


class ConvKXBNAct(nn.Module):
    """`ConvKXBNRELU`: conv k x k -> BN -> act."""

    def __init__(self, block: TinyConv, options: BuildOptions):
        super().__init__()
        conv = conv_layer(block, LAYOUT_SIDE)
        self.layers = nn.Sequential(*record_conv_bn(conv, bn=options.bn), activation(block.activation))
        # Only a reduced padding can make the output empty; check then, so the error says what to do.
        self.min_side = block.kernel - 2 * block.pad if block.pad < (block.kernel - 1) // 2 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.min_side and min(x.shape[-2:]) < self.min_side:
            raise ConfigError(
                f"ConvKXBNRELU with k={self.layers[0].kernel_size[0]}, p={self.layers[0].padding[0]} needs an "
                f"input side of at least {self.min_side}, got {tuple(x.shape[-2:])}; use a larger resolution"
            )
        return self.layers(x)


def inner_body(records: list[LayerRecord], act: str, *, bn: bool) -> list[nn.Module]:
    """The main path of an inner block from its counting records: conv-BN-act ... conv-BN, SE where it stands.

    No act follows the last conv (the block's act follows the add); an SE's two records make one TinySE.
    """
    main = [record for record in records if record.role == "main"]
    layers: list[nn.Module] = []
    pending = iter(records)
    for record in pending:
        if record.role == "se":  # the squeeze conv; its excite conv is the next record
            layers.append(TinySE(record, next(pending), bn=bn))
        elif record.role == "main":
            layers += record_conv_bn(record, bn=bn)
            if record is not main[-1]:  # the block's act comes after the add instead
                layers.append(activation(act))
    return layers


class TinyResInner(nn.Module):
    """One TinyNAS residual inner block (ResK1KXK1, ResK1KX, ResKXKX, ResK1DWK1, ResK1DWSEK1).

    Its convs are the records of `zennas.counting.tinynas.inner_layers`, the one spelling of the layout.
    body: the main-path convs with BN and act, no act after the last conv; SE after the depthwise
    act of ResK1DWSEK1. shortcut: AvgPool(2, 2) for stride 2, then a 1x1 projection + BN where the
    block has one; None when the block has no residual (depthwise blocks with in != out, or
    residual=False). The block's act follows the add (or the last conv when there is no add).
    """

    def __init__(self, inner: InnerBlock, options: BuildOptions):
        super().__init__()
        records = inner_layers(inner, LAYOUT_SIDE, options.use_se is not False)
        self.body = nn.Sequential(*inner_body(records, inner.act, bn=options.bn))
        self.residual = options.residual and inner.residual
        self.shortcut: nn.Module | None = None
        if self.residual:
            shortcut: list[nn.Module] = []
            if inner.pooled:
                shortcut.append(nn.AvgPool2d(2, 2, ceil_mode=True))
            for record in records:
                if record.role == "shortcut":  # the projection
                    shortcut += record_conv_bn(record, bn=options.bn)
            self.shortcut = nn.Sequential(*shortcut)  # empty Sequential = identity
        self.act = activation(inner.act)

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
