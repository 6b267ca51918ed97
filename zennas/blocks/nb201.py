"""NAS-Bench-201 modules: the 4-node cell, its ops and the TinyNetwork skeleton (REFERENCE.md 4.2-4.3).

Network blocks, in order: stem, 5 cells (16 ch), reduction, 5 cells (32 ch), reduction, 5 cells
(64 ch), last activation (BN + ReLU); then the classifier head. BatchNorm layers use the torch
defaults (affine, running statistics), as the benchmark's networks do.
"""

from __future__ import annotations

import torch
from torch import nn

from zennas.arch import ArchSpec
from zennas.arch.nb201 import CELLS_PER_STAGE, DIALECT, EDGES, NUM_NODES, WIDTH, cell_of
from zennas.blocks.base import BuildOptions, register_builder
from zennas.blocks.network import ClassifierHead, Network
from zennas.counting.nb201 import STAGE_WIDTHS
from zennas.errors import ConfigError


def _bn(channels: int, bn: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if bn else []


class Zero(nn.Module):
    """The `none` op: zeros of the input's shape, still attached to the graph like the benchmark's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int, *, bn: bool = True) -> nn.Module:
    """One cell edge at `channels` channels, stride 1."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        # Border averages divide by the pixels inside the image only, as in the benchmark.
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        k = 1 if op == "nor_conv_1x1" else 3
        # Not in-place: a node feeds several edges and must reach each of them unchanged.
        layers = [nn.ReLU(inplace=False), nn.Conv2d(channels, channels, k, 1, (k - 1) // 2, bias=False)]
        return nn.Sequential(*layers, *_bn(channels, bn))
    raise ConfigError(f"unknown NB201 operation {op!r}")


class NB201CellModule(nn.Module):
    """Node j = sum over i < j of op_{j<-i}(node i); the output is node 3."""

    def __init__(self, ops: tuple[str, ...], channels: int, *, bn: bool = True):
        super().__init__()
        self.ops = ops
        self.edges = nn.ModuleList(make_op(op, channels, bn=bn) for op in ops)  # string order
        # (source node, edge index) pairs feeding nodes 1..3
        self.node_inputs = tuple(
            tuple((src, e) for e, (dst, src) in enumerate(EDGES) if dst == node) for node in range(1, NUM_NODES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]  # each [B, C, H, W]
        for inputs in self.node_inputs:
            (src, e), rest = inputs[0], inputs[1:]
            total = self.edges[e](nodes[src])  # [B, C, H, W]
            for src, e in rest:
                total = total + self.edges[e](nodes[src])
            nodes.append(total)
        return nodes[-1]


class ReductionBlock(nn.Module):
    """ResNet basic block with stride 2; shortcut AvgPool 2x2 -> 1x1 conv (no BN); no ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, *, bn: bool = True, residual: bool = True):
        super().__init__()
        self.branch = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
            *_bn(c_out, bn),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            *_bn(c_out, bn),
        )
        # Without residual links the projection would be dead weight, so it is not built at all.
        self.shortcut = (
            nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)) if residual else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)  # [B, C_out, H/2, W/2]
        return y if self.shortcut is None else y + self.shortcut(x)


@register_builder(DIALECT)
def build_nb201(spec: ArchSpec, options: BuildOptions) -> Network:
    """The TinyNetwork (C=16, N=5) of an nb201 cell; SE is not part of this space."""
    ops = cell_of(spec).ops
    if options.use_se:
        raise ConfigError("NAS-Bench-201 networks have no SE blocks; build with use_se=None or False")
    bn, residual = options.bn, options.residual
    blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, WIDTH, 3, 1, 1, bias=False), *_bn(WIDTH, bn))]
    strides = [1]
    for stage, channels in enumerate(STAGE_WIDTHS):
        if stage > 0:
            blocks.append(ReductionBlock(STAGE_WIDTHS[stage - 1], channels, bn=bn, residual=residual))
            strides.append(strides[-1] * 2)
        for _ in range(CELLS_PER_STAGE):
            blocks.append(NB201CellModule(ops, channels, bn=bn))
            strides.append(strides[-1])
    last = STAGE_WIDTHS[-1]
    blocks.append(nn.Sequential(*_bn(last, bn), nn.ReLU(inplace=False)))  # the benchmark's "lastact"
    strides.append(strides[-1])
    head = ClassifierHead(last, options.num_classes) if options.num_classes else None
    return Network(blocks, strides, head, multi_scale=options.multi_scale)
