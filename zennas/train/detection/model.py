"""The detector: a zennas backbone's C3-C5 into an FPN (P3-P7) and torchvision's FCOS head.

The detector is MAE-DET's layout built from torchvision parts: the zennas network's last-block
features at strides 8, 16 and 32 (C3-C5) feed `torchvision.ops.FeaturePyramidNetwork`, which adds
P6 and P7 from P5 (`LastLevelP6P7`), and torchvision's FCOS (one anchor point per location, focal
loss, GIoU box loss, centre-ness) predicts on P3-P7. The head's GroupNorm uses at most 32 groups
of at least 8 channels, so narrow necks still normalise over several channels.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from zennas.errors import ConfigError
from zennas.train.checkpoint import load_state_checked, read_tensors, weights_file
from zennas.train.data import IMAGENET_MEAN, IMAGENET_STD, torchvision_module
from zennas.train.memory import training_values

FPN_STRIDES = (8, 16, 32)  # C3, C4, C5: the backbone taps the FPN consumes
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3..P7, one anchor point per location with side = stride


class BackboneFPN(nn.Module):
    """A zennas Network's C3-C5 through torchvision's FPN with P6/P7: image [B, 3, H, W] -> OrderedDict P3..P7."""

    def __init__(self, net: nn.Module, in_channels: Sequence[int], channels: int):
        super().__init__()
        ops = torchvision_module().ops
        self.body = net
        self.taps = tuple(net.feature_strides.index(s) for s in FPN_STRIDES)  # positions in forward_stages()
        self.fpn = ops.FeaturePyramidNetwork(
            list(in_channels), channels, extra_blocks=ops.feature_pyramid_network.LastLevelP6P7(channels, channels)
        )
        self.out_channels = channels  # FCOS reads this

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stages = self.body.forward_stages(x)  # [B, C_i, H / s_i, W / s_i] for s_i in 4, 8, 16, 32
        c = OrderedDict((f"c{s.bit_length() - 1}", stages[i]) for s, i in zip(FPN_STRIDES, self.taps, strict=True))
        return self.fpn(c)  # p3..p5 [B, channels, H / s, W / s], then p6, p7


def _norm_groups(channels: int) -> int:
    """GroupNorm groups: the most up to 32 that leave at least 8 channels per group (32 for 256 channels)."""
    return max(g for g in range(1, 33) if channels % g == 0 and channels // g >= 8)


def _backbone(spec: Any, use_se: bool | None) -> tuple[nn.Module, list[int]]:
    """The multi-scale zennas network and its C3-C5 channels (from a probe in eval mode: no BN update)."""
    from zennas.build import BuildOptions, build

    net = build(spec, BuildOptions(num_classes=0, use_se=use_se, multi_scale=True))
    missing = [s for s in FPN_STRIDES if s not in getattr(net, "feature_strides", ())]
    if missing:
        reached = getattr(net, "feature_strides", ())
        raise ConfigError(
            f"detection needs a backbone with features at strides 8, 16 and 32 (C3-C5); this architecture reaches "
            f"{', '.join(map(str, reached)) or 'none of them'}; add stride-2 stages"
        )
    net.eval()
    with torch.no_grad():
        stages = net.forward_stages(torch.zeros(1, 3, 64, 64))
    net.train()
    return net, [stages[net.feature_strides.index(s)].shape[1] for s in FPN_STRIDES]


def _fcos_head(channels: int, num_classes: int, convs: int) -> nn.Module:
    """torchvision's FCOSHead (its forward and loss) with towers whose GroupNorm fits `channels`.

    FCOSHead's constructor fixes GroupNorm(32, channels), which fails unless 32 divides the width;
    its two sub-heads take a norm_layer, so the head is assembled from them here.
    """
    detection = torchvision_module().models.detection
    norm = partial(nn.GroupNorm, _norm_groups(channels))
    head = detection.fcos.FCOSHead.__new__(detection.fcos.FCOSHead)
    nn.Module.__init__(head)
    head.box_coder = detection._utils.BoxLinearCoder(normalize_by_size=True)
    head.classification_head = detection.fcos.FCOSClassificationHead(channels, 1, num_classes, convs, norm_layer=norm)
    head.regression_head = detection.fcos.FCOSRegressionHead(channels, 1, convs, norm_layer=norm)
    return head


def build_detector(
    spec: Any,
    num_classes: int,
    *,
    use_se: bool | None = None,
    fpn_channels: int = 128,
    head_convs: int = 4,
    min_size: int = 800,
    max_size: int = 1333,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> nn.Module:
    """torchvision FCOS on the zennas backbone `spec` + FPN (P3-P7), for `num_classes` object classes."""
    detection = torchvision_module().models.detection
    net, in_channels = _backbone(spec, use_se)
    backbone = BackboneFPN(net, in_channels, fpn_channels)
    head = _fcos_head(fpn_channels, num_classes, head_convs)
    anchors = detection.anchor_utils.AnchorGenerator(tuple((s,) for s in LEVEL_STRIDES), ((1.0,),) * len(LEVEL_STRIDES))
    return detection.FCOS(
        backbone, num_classes, min_size=min_size, max_size=max_size, image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD), anchor_generator=anchors, head=head, score_thresh=score_thresh,
        nms_thresh=nms_thresh, detections_per_img=detections_per_img,
    )  # fmt: skip


def load_backbone_weights(detector: nn.Module, path: str | os.PathLike, arch: str) -> None:
    """Initialise the backbone from classification weights (a training --out folder or model.safetensors)."""
    path = weights_file(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise ConfigError(f"backbone weights {str(path)!r} not found; give a training --out folder or a .safetensors")
    state = read_tensors(path, "backbone weights")
    body = detector.backbone.body
    load_state_checked(body, {k: v for k, v in state.items() if not k.startswith("head.")}, arch)


def detector_values(spec: Any, side: int, use_se: bool | None, channels: int, convs: int) -> int:
    """Floor of the values one side x side image keeps for the backward pass: the backbone's (see
    zennas.train.memory), then on each level P3-P7 the FPN output and the outputs of both head towers."""
    levels = sum((side // stride) ** 2 for stride in LEVEL_STRIDES)
    return training_values(spec, side, side, use_se) + levels * channels * (1 + 2 * convs)


__all__ = ["FPN_STRIDES", "LEVEL_STRIDES", "BackboneFPN", "build_detector", "detector_values", "load_backbone_weights"]
