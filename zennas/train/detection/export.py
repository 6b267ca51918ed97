"""ONNX export of a detector: the whole network with box decoding; thresholds, top-k and NMS outside.

`detector.onnx` holds the whole network (normalisation, backbone, FPN, head and the box decoding at
the fixed anchor points) for square RGB input in [0, 1] of side `export_side(resolution)` (dynamic
batch); it outputs `boxes` [B, A, 4] (x1, y1, x2, y2 in input pixels) and `scores` [B, A, K] =
sqrt(sigmoid(class logit) * sigmoid(centre-ness logit)), FCOS's score. The score threshold, per-level
top-k and class-wise NMS run outside the graph (data-dependent shapes do not export cleanly);
`decode_detections` is that step and reproduces torchvision's FCOS detections.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zennas.export import check_onnx, eval_mode, export_onnx
from zennas.train.data import torchvision_module


def export_side(resolution: int) -> int:
    """Side of the exported square input: `resolution` rounded up to a multiple of 32 (FCOS pads to it)."""
    return -(-resolution // 32) * 32


class DetectorGraph(nn.Module):
    """The exported graph: RGB [B, 3, S, S] in [0, 1] -> boxes [B, A, 4] (input pixels), scores [B, A, K]."""

    def __init__(self, detector: nn.Module, side: int):
        super().__init__()
        self.backbone, self.head, self.box_coder = detector.backbone, detector.head, detector.box_coder
        device = next(detector.parameters()).device
        self.register_buffer("mean", torch.tensor(detector.transform.image_mean, device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(detector.transform.image_std, device=device).view(1, 3, 1, 1))
        image_list = torchvision_module().models.detection.image_list.ImageList
        with torch.no_grad(), eval_mode(self.backbone):
            x = torch.zeros(1, 3, side, side, device=device)
            features = list(self.backbone(x).values())  # P3..P7
            anchors = detector.anchor_generator(image_list(x, [(side, side)]), features)[0]  # [A, 4]
        self.register_buffer("anchors", anchors)
        self.level_sizes = [f.shape[-2] * f.shape[-1] for f in features]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std  # [B, 3, S, S]
        out = self.head(list(self.backbone(x).values()))  # cls [B, A, K], regression [B, A, 4], ctr [B, A, 1]
        boxes = self.box_coder.decode(out["bbox_regression"], self.anchors)  # [B, A, 4]
        # FCOS's score sqrt(sigmoid(cls) * sigmoid(ctr)), in log space: onnxruntime's Sigmoid is exact only to about
        # 1e-7 absolute for very negative logits, an error the square root of a tiny product magnifies (2.7e-4 seen).
        scores = torch.exp(-0.5 * (F.softplus(-out["cls_logits"]) + F.softplus(-out["bbox_ctrness"])))  # [B, A, K]
        return boxes, scores


def decode_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    level_sizes: Sequence[int],
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    topk_candidates: int = 1000,
) -> list[dict[str, torch.Tensor]]:
    """The exported graph's outputs -> per-image boxes/scores/labels, as torchvision's FCOS post-processes.

    boxes [B, A, 4], scores [B, A, K]; per level: scores above `score_thresh`, the best
    `topk_candidates`, boxes clipped to `image_size` (H, W); then class-wise NMS over all levels.
    """
    box_ops = torchvision_module().ops.boxes
    results = []
    for image_boxes, image_scores in zip(boxes, scores, strict=True):  # [A, 4], [A, K]
        kept_boxes, kept_scores, kept_labels = [], [], []
        for level_boxes, level_scores in zip(image_boxes.split(list(level_sizes)),
                                             image_scores.split(list(level_sizes)), strict=True):  # fmt: skip
            flat = level_scores.flatten()  # [A_l * K]
            index = torch.where(flat > score_thresh)[0]
            top, order = flat[index].topk(min(topk_candidates, index.numel()))
            index = index[order]
            num_classes = level_scores.shape[-1]
            kept_boxes.append(box_ops.clip_boxes_to_image(level_boxes[index // num_classes], image_size))
            kept_scores.append(top)
            kept_labels.append(index % num_classes)
        b, s, la = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
        keep = box_ops.batched_nms(b, s, la, nms_thresh)[:detections_per_img]
        results.append({"boxes": b[keep], "scores": s[keep], "labels": la[keep]})
    return results


def _worst_errors(outputs: Sequence[Any]) -> dict[str, float | str]:
    """The largest relative error of each output over the checked batch sizes (nan wins, stored as a string)."""
    worst: dict[str, float] = {}
    for o in outputs:
        previous = worst.get(o.name, 0.0)
        worst[o.name] = o.max_rel_error if math.isnan(o.max_rel_error) or o.max_rel_error > previous else previous
    return {name: value if math.isfinite(value) else str(value) for name, value in worst.items()}


def export_detector(
    detector: nn.Module, path: str | os.PathLike, resolution: int, *, exporter: str = "auto"
) -> dict[str, Any]:
    """Write the detector to ONNX (dynamic batch), check it with onnxruntime; returns what was written and checked.

    The check compares onnxruntime with PyTorch on a seeded random batch (batch 1 and 3): the max
    relative error of each output must stay within `zennas.export.REL_TOLERANCE`.
    """
    side = export_side(resolution)
    graph = DetectorGraph(detector, side).eval()
    shape = (1, 3, side, side)
    info = export_onnx(graph, path, input_shape=shape, dynamic_batch=True, output_names=("boxes", "scores"),
                       input_name="images", name="detector", exporter=exporter)  # fmt: skip
    report = check_onnx(path, graph, input_shape=shape)
    checked = report.to_json()  # non-finite errors as strings (JSON holds no nan)
    return {
        "path": str(path), "exporter": info.exporter, "opset": info.opset, "input_shape": ["batch", 3, side, side],
        "outputs": {"boxes": ["batch", sum(graph.level_sizes), 4],
                    "scores": ["batch", sum(graph.level_sizes), detector.head.classification_head.num_classes]},
        "level_sizes": graph.level_sizes, "max_rel_error": checked["max_rel_error"], "passed": report.passed,
        "rel_tolerance": report.rel_tolerance,
        "rel_errors": _worst_errors(report.outputs),
        "notes": list(info.notes),
    }  # fmt: skip


__all__ = ["DetectorGraph", "decode_detections", "export_detector", "export_side"]
