"""The ReID network and its losses (Luo et al., "Bag of Tricks and a Strong Baseline", CVPRW 2019).

backbone -> global average pool -> f_t (triplet loss) -> BatchNorm1d with a frozen zero bias (the
BNNeck) -> f_i -> linear classifier without bias (label-smoothed cross-entropy over the training
identities). The triplet loss is batch-hard (Hermans et al. 2017): hardest positive and hardest
negative per anchor, with a margin or the soft margin log(1 + exp(d_ap - d_an)).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError
from zennas.train.checkpoint import load_state_checked, read_tensors, weights_file


class BNNeck(nn.Module):
    """Backbone -> GAP -> f_t -> BatchNorm1d (bias frozen at 0) -> f_i -> Linear without bias -> logits."""

    def __init__(self, backbone: nn.Module, channels: int, num_ids: int):
        super().__init__()
        self.backbone = backbone
        self.bottleneck = nn.BatchNorm1d(channels)
        self.bottleneck.bias.requires_grad_(False)  # a shift would move f_i off the hypersphere it is ranked on
        self.classifier = nn.Linear(channels, num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f_t [B, C], f_i [B, C], logits [B, num_ids])."""
        maps = self.backbone(x)  # [B, C, H, W]
        f_t = torch.flatten(F.adaptive_avg_pool2d(maps, 1), 1)  # [B, C]
        f_i = self.bottleneck(f_t)
        return f_t, f_i, self.classifier(f_i)

    def embed(self, x: torch.Tensor, neck: str = "after") -> torch.Tensor:
        """Inference embedding [B, C]: f_i ("after" the BNNeck) or f_t ("before")."""
        f_t, f_i, _ = self(x)
        return f_i if neck == "after" else f_t


def build_reid_model(spec: Any, use_se: bool | None, num_ids: int, height: int, width: int) -> BNNeck:
    """The backbone of `spec` (no classifier) under a BNNeck head for `num_ids` training identities."""
    from zennas.build import BuildOptions, build

    backbone = build(spec, BuildOptions(num_classes=0, use_se=use_se))
    with torch.no_grad():
        maps = backbone.eval()(torch.zeros(1, 3, height, width))
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise ConfigError(f"the backbone of {spec.canonical[:80]!r} does not return a feature map [B, C, H, W]")
    return BNNeck(backbone.train(), maps.shape[1], num_ids)


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Mean over anchors of [d(a, hardest positive) - d(a, hardest negative) + margin]_+ (soft: softplus).

    features [B, D], labels [B]; distances are Euclidean; `margin=None` is the soft margin.
    """
    squared = features.pow(2).sum(1)  # [B]
    dist = (squared[:, None] + squared[None, :] - 2 * features @ features.T).clamp_min(1e-12).sqrt()  # [B, B]
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)  # never the anchor itself
    d_ap = torch.where(positive, dist, torch.zeros_like(dist)).amax(1)  # [B]
    d_an = torch.where(same, torch.full_like(dist, torch.inf), dist).amin(1)  # [B]
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def load_pretrained(model: BNNeck, path: str, arch: str) -> None:
    """Backbone weights from a classification or ReID run; classifier and neck keys are ignored."""
    file = weights_file(path)
    if file.suffix != ".safetensors" or not file.is_file():
        raise ConfigError(f"--pretrained {path!r}: no .safetensors weights there; give a training --out folder")
    state = read_tensors(file, "--pretrained")
    if any(key.startswith("backbone.") for key in state):  # a ReID run's weights: the backbone part
        state = {key.removeprefix("backbone."): v for key, v in state.items() if key.startswith("backbone.")}
    own = model.backbone.state_dict()
    load_state_checked(model.backbone, {key: v for key, v in state.items() if key in own}, arch)


__all__ = ["BNNeck", "batch_hard_triplet", "build_reid_model", "load_pretrained"]
