"""Object detection on a searched backbone: C3-C5 into an FPN and an FCOS head, COCO data and mAP, ONNX.

The modules: `coco` reads and checks the COCO files (and holds the dataset), `model` builds the
detector, `metrics` computes COCO mAP, `export` writes and checks the ONNX graph, and `task` runs
`zennas train detection` on the one training loop (zennas.train.loop). Each module's docstring
gives its rules; every public name is importable from here.
"""

from zennas.train.detection.coco import (
    BOX_TOLERANCE,
    NATIVE_SIDE_CAP,
    CocoDataset,
    CocoSplit,
    find_coco_json,
    load_coco_data,
    native_side,
    read_coco_split,
)
from zennas.train.detection.export import DetectorGraph, decode_detections, export_detector, export_side
from zennas.train.detection.metrics import coco_map, predict
from zennas.train.detection.model import FPN_STRIDES, LEVEL_STRIDES, BackboneFPN, build_detector, load_backbone_weights
from zennas.train.detection.task import (
    DETECTION_RUN,
    DetectionConfig,
    DetectionTask,
    optimizer_settings,
    train_detection,
)

__all__ = [
    "BOX_TOLERANCE", "DETECTION_RUN", "FPN_STRIDES", "LEVEL_STRIDES", "NATIVE_SIDE_CAP", "BackboneFPN", "CocoDataset",
    "CocoSplit", "DetectionConfig", "DetectionTask", "DetectorGraph", "build_detector", "coco_map",
    "decode_detections", "export_detector", "export_side", "find_coco_json", "load_backbone_weights",
    "load_coco_data", "native_side", "optimizer_settings", "predict", "read_coco_split", "train_detection",
]  # fmt: skip
