"""COCO evaluation of a detector: pycocotools' COCOeval ("bbox").

`map` (AP at IoU 0.50:0.95), `map_50` and `map_75` are fractions in [0, 1], as pycocotools reports
them (multiply by 100 for the usual COCO figures).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from zennas.errors import DependencyError
from zennas.train.detection.coco import CocoDataset, CocoSplit, collate


@torch.no_grad()
def predict(detector: nn.Module, split: CocoSplit, device: torch.device, batch_size: int = 8) -> list[dict[str, Any]]:
    """COCO result entries (image_id, category_id, bbox [x, y, w, h] in image pixels, score) for a split."""
    detector.eval()
    loader = DataLoader(CocoDataset(split), batch_size=batch_size, shuffle=False, collate_fn=collate)
    results, start = [], 0
    for images, _ in loader:
        outputs = detector([im.to(device) for im in images])  # per image: boxes [D, 4], scores [D], labels [D]
        for offset, out in enumerate(outputs):
            image_id = split.image_ids[start + offset]
            boxes = out["boxes"].float().cpu()  # [D, 4] x1, y1, x2, y2 in the original image
            boxes[:, 2:] -= boxes[:, :2]
            for box, score, label in zip(boxes.tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True):
                results.append({"image_id": image_id, "category_id": split.category_ids[label],
                                "bbox": [round(v, 3) for v in box], "score": round(score, 5)})  # fmt: skip
        start += len(images)
    return results


def coco_map(split: CocoSplit, results: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools' bbox AP: map (IoU 0.50:0.95), map_50, map_75, as fractions in [0, 1]."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DependencyError("COCO evaluation needs pycocotools; install it with `pip install pycocotools`") from None
    if not results:
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        gt = COCO()
        gt.dataset = copy.deepcopy(split.coco)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats  # AP, AP50, AP75, ...; -1 where a figure is undefined
    return {"map": max(0.0, float(stats[0])), "map_50": max(0.0, float(stats[1])), "map_75": max(0.0, float(stats[2]))}


__all__ = ["coco_map", "predict"]
