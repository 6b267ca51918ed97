"""Object detection on a searched backbone: C3-C5 into an FPN and an FCOS head, COCO data and mAP, ONNX.

The detector is MAE-DET's layout built from torchvision parts: the zennas network's last-block
features at strides 8, 16 and 32 (C3-C5) feed `torchvision.ops.FeaturePyramidNetwork`, which adds
P6 and P7 from P5 (`LastLevelP6P7`), and torchvision's FCOS (one anchor point per location, focal
loss, GIoU box loss, centre-ness) predicts on P3-P7. The head's GroupNorm uses at most 32 groups
of at least 8 channels, so narrow necks still normalise over several channels.

Data are COCO files: `DIR/annotations/instances_*train*.json` and `instances_*val*.json` (or one
`*train*.json` / `*val*.json`), images in `DIR/<split>/`, `DIR/images/<split>/`, `DIR/images/` or
`DIR/`, where <split> is the JSON's name without `instances_` (COCO's own layout). Every entry is
checked before training; a malformed one stops the run with one line naming the file and the
entry. Crowd annotations are left out of training and kept (as ignore regions) for evaluation.

Evaluation is pycocotools' COCOeval ("bbox"); `map` (AP at IoU 0.50:0.95), `map_50` and `map_75`
are fractions in [0, 1], as pycocotools reports them (multiply by 100 for the usual COCO figures).

Exact resume works as in classification: every random draw of epoch E (shuffling, flips, the
transform's choices) follows from (seed, E, rank), and a checkpoint is written after each epoch.

ONNX: `detector.onnx` holds the whole network (normalisation, backbone, FPN, head and the box
decoding at the fixed anchor points) for square RGB input in [0, 1] of side `export_side(resolution)`
(dynamic batch); it outputs `boxes` [B, A, 4] (x1, y1, x2, y2 in input pixels) and `scores`
[B, A, K] = sqrt(sigmoid(class logit) * sigmoid(centre-ness logit)), FCOS's score. The score
threshold, per-level top-k and class-wise NMS run outside the graph (data-dependent shapes do not
export cleanly); `decode_detections` is that step and reproduces torchvision's FCOS detections.
`detector.json` beside it lists the level sizes, the categories and the thresholds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zennas.errors import ConfigError, DependencyError, ExportError
from zennas.export import EXPORTERS, check_onnx, eval_mode, export_onnx
from zennas.io import atomic_write_json, atomic_write_text
from zennas.train.checkpoint import (
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
    save_weights,
)
from zennas.train.classification import ModelEma, lr_at, resolve_architecture
from zennas.train.core import (
    AMP_DTYPES,
    DistInfo,
    EpochHook,
    StepHook,
    config_settings,
    param_groups,
    resume_point,
    run_on_ranks,
    training_run,
)
from zennas.train.data import IMAGENET_MEAN, IMAGENET_STD, torchvision_module
from zennas.train.images import probe_images
from zennas.train.loading import Timed, default_workers, feed, step_info, throughput
from zennas.train.memory import check_memory, training_values

OPTIMIZERS = ("sgd", "adamw")
FPN_STRIDES = (8, 16, 32)  # C3, C4, C5: the backbone taps the FPN consumes
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3..P7, one anchor point per location with side = stride
BOX_TOLERANCE = 1.0  # pixels a box may cross the image border (COCO's float rounding) before it is an error
_RESUME_FREE = ("out", "resume", "overwrite", "device", "workers", "export_onnx", "onnx_exporter")
# What a detection run writes into --out besides a training run's files (--overwrite deletes them first).
DETECTION_RUN = training_run("detection", "detector.onnx", "detector.onnx.data", "detector.json")


@dataclass(frozen=True)
class DetectionConfig:
    """Every setting of a detection run (None = derived: see `train_detection`)."""

    data: str
    out: str
    arch: str | None = None
    run: str | None = None  # a search's --out folder: arch, dialect and resolution from result.json
    dialect: str | None = None
    epochs: int = 12
    batch_size: int = 16
    resolution: int | None = None  # shorter image side; default: the run's, else the images' own (native_side)
    max_size: int | None = None  # longer side cap; default: resolution x 1333 / 800
    # lr default: 2e-3 x sqrt(batch/16) for AdamW (Adam's square-root batch rule), 0.01 x batch/16 for SGD.
    # AdamW is the default because short runs on small sets learn faster with it: in 740 steps on digits
    # pasted on 96-px canvases, input 96 px (benchmarks/bench_train_defaults.py), AdamW 2e-3 reached
    # mAP@0.5 0.90, SGD 0.01 0.75, and AdamW 4e-3 trailed half-way. Warm-up stays 1 epoch (there, the
    # same 37 steps as 5 % of the run).
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.05 for AdamW, 1e-4 for SGD
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    ema_decay: float = 0.9998  # 0 = no EMA
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: str = "bf16"  # CUDA only
    hflip: float = 0.5
    fpn_channels: int = 128
    head_convs: int = 4
    score_thresh: float = 0.05  # COCO evaluation keeps low-confidence detections
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    backbone_weights: str | None = None  # a classification --out folder or its model.safetensors
    skip_bad_boxes: bool = False  # drop (and count) degenerate or out-of-image boxes instead of failing
    eval_every: int = 1  # epochs between evaluations; the last epoch is always evaluated
    seed: int = 0
    device: str | None = None
    workers: int | None = None  # loader processes (None: zennas.train.loading.default_workers)
    resume: bool = False
    overwrite: bool = False  # start afresh in a non-empty out (zennas.io.claim_output_folder)
    export_onnx: bool = True
    onnx_exporter: str = "auto"  # see zennas.export.export_onnx: "auto" (dynamo, else TorchScript), "dynamo", ...

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.run is None):
            raise ConfigError("give exactly one of --arch ARCH or --run DIR (a search's --out folder)")
        if self.onnx_exporter not in EXPORTERS:
            raise ConfigError(f"unknown ONNX exporter {self.onnx_exporter!r}; choose one of {', '.join(EXPORTERS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.amp not in (*AMP_DTYPES, "off"):
            raise ConfigError(f"unknown AMP mode {self.amp!r}; choose bf16, fp16 or off")
        for name in ("epochs", "batch_size", "head_convs", "detections_per_img", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 32:
            raise ConfigError(f"resolution must be at least 32 pixels (the stride of C5), got {self.resolution}")
        if self.max_size is not None and self.resolution is not None and self.max_size < self.resolution:
            raise ConfigError(f"max_size ({self.max_size}) must be at least resolution ({self.resolution})")
        if self.fpn_channels < 8 or self.fpn_channels % 8:
            raise ConfigError(f"fpn_channels must be a positive multiple of 8, got {self.fpn_channels}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0 <= self.score_thresh < 1 and 0 < self.nms_thresh <= 1 and 0 <= self.hflip <= 1):
            raise ConfigError("score_thresh must be in [0, 1), nms_thresh in (0, 1] and hflip in [0, 1]")
        if min(self.grad_clip, self.warmup_epochs, self.min_lr) < 0:
            raise ConfigError("grad_clip, warmup_epochs and min_lr must be >= 0")

    def settings(self) -> dict[str, Any]:
        """The settings that fix the result (JSON-able), as stored in checkpoints."""
        return config_settings(self, _RESUME_FREE)


# ----------------------------------------------------------------------------------------------
# COCO files: read, check every entry, keep what training and COCOeval need


@dataclass
class CocoSplit:
    """One checked COCO split: image files, per-image training targets and the COCOeval ground truth."""

    json_path: Path
    image_dir: Path
    image_ids: list[int]
    files: list[Path]
    boxes: list[np.ndarray]  # per image [N, 4] float32 x1, y1, x2, y2 (crowd annotations left out)
    labels: list[np.ndarray]  # per image [N] int64 contiguous class index
    coco: dict[str, Any]  # the ground truth COCOeval reads (checked entries only)
    category_ids: list[int]  # class index -> COCO category id
    skipped: int = 0  # annotations dropped by skip_bad_boxes

    @property
    def annotations(self) -> int:
        """Annotations kept for evaluation (crowd ones included)."""
        return len(self.coco["annotations"])


class _Where:
    """Builds the one-line error of a bad entry: `FILE: ENTRY: problem`."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, entry: str, problem: str) -> ConfigError:
        return ConfigError(f"{str(self.path)!r}: {entry}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _load_json(path: Path) -> dict[str, Any]:
    where = _Where(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{str(path)!r}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "fix or regenerate the file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {str(path)!r}: {error}") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        wanted = "a COCO file needs 'images', 'annotations' and 'categories' lists"
        raise where.fail("top level", f"no {', '.join(repr(k) for k in missing)}; {wanted}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise where.fail(key, f"must be a list, got {type(data[key]).__name__}")
    return data


def _check_categories(data: dict[str, Any], where: _Where) -> dict[int, str]:
    """category id -> name, in file order."""
    categories: dict[int, str] = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise where.fail(f"categories[{i}]", "needs an integer 'id' and a string 'name'")
        if c["id"] in categories:
            raise where.fail(f"categories[{i}] (id {c['id']})", "duplicate category id")
        categories[c["id"]] = c["name"]
    if not categories:
        raise where.fail("categories", "empty; list the object classes")
    return categories


def _check_images(data: dict[str, Any], where: _Where) -> dict[int, dict[str, Any]]:
    """image id -> {file_name, width, height}, in file order."""
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        entry = f"images[{i}]" + (f" (id {im.get('id')})" if isinstance(im, dict) and "id" in im else "")
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            raise where.fail(entry, "needs an integer 'id'")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise where.fail(entry, "needs a non-empty string 'file_name'")
        if not all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            raise where.fail(entry, f"needs positive integer 'width' and 'height', got {im.get('width')!r}, "
                                    f"{im.get('height')!r}")  # fmt: skip
        if im["id"] in images:
            raise where.fail(entry, "duplicate image id")
        images[im["id"]] = {"file_name": im["file_name"], "width": im["width"], "height": im["height"]}
    if not images:
        raise where.fail("images", "empty; the split needs at least one image")
    return images


def _is_bbox(bbox: Any) -> bool:
    return isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)


def _box_problem(bbox: list[float], width: int, height: int) -> str | None:
    """Why a COCO bbox [x, y, w, h] cannot be trained on (degenerate, outside the image), or None."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {bbox} is degenerate (width and height must be > 0)"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"bbox {bbox} lies outside the {width}x{height} image"
    return None


def _check_annotations(
    data: dict[str, Any], where: _Where, images: dict, categories: dict, skip_bad_boxes: bool
) -> tuple[list[dict[str, Any]], int]:
    """The checked annotations (area and iscrowd filled in as COCOeval expects) and how many were skipped."""
    kept, skipped, seen = [], 0, set()
    for i, a in enumerate(data["annotations"]):
        entry = f"annotations[{i}]" + (f" (id {a.get('id')})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict) or not _is_int(a.get("id")):
            raise where.fail(entry, "needs an integer 'id'")
        if a["id"] in seen:
            raise where.fail(entry, "duplicate annotation id")
        seen.add(a["id"])
        if not _is_int(a.get("image_id")) or a["image_id"] not in images:
            raise where.fail(entry, f"'image_id' {a.get('image_id')!r} is not the id of an entry in 'images'")
        if not _is_int(a.get("category_id")) or a["category_id"] not in categories:
            raise where.fail(entry, f"'category_id' {a.get('category_id')!r} is not in 'categories'")
        if not _is_bbox(a.get("bbox")):
            raise where.fail(entry, f"'bbox' must be 4 finite numbers [x, y, width, height], got {a.get('bbox')!r}")
        image = images[a["image_id"]]
        problem = _box_problem(a["bbox"], image["width"], image["height"])
        if problem is not None and not skip_bad_boxes:
            raise where.fail(f"{entry} of image {a['image_id']} ({image['file_name']!r})",
                             f"{problem}; fix the box or pass --skip-bad-boxes to drop such boxes")  # fmt: skip
        if problem is not None:
            skipped += 1
            continue
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise where.fail(entry, f"'iscrowd' must be 0 or 1, got {crowd!r}")
        area = a.get("area", a["bbox"][2] * a["bbox"][3])
        if not _is_number(area) or area < 0:
            raise where.fail(entry, f"'area' must be a non-negative number, got {area!r}")
        kept.append({"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [float(v) for v in a["bbox"]], "area": float(area), "iscrowd": int(crowd)})  # fmt: skip
    return kept, skipped


def _image_dir(data_dir: Path, json_path: Path, first_file: str) -> Path:
    """The folder holding a split's images: the first candidate in which the first image exists."""
    split = json_path.stem.removeprefix("instances_")
    candidates = [data_dir / split, data_dir / "images" / split, data_dir / "images", data_dir]
    for folder in candidates:
        if (folder / first_file).is_file():
            return folder
    raise _Where(json_path).fail(
        "images[0]", f"file {first_file!r} found in none of {', '.join(repr(str(c)) for c in candidates)}"
    )


def _check_files(json_path: Path, image_dir: Path, images: dict[int, dict[str, Any]]) -> list[Path]:
    """Each image's path; its file must exist, decode fully (zennas.train.images) and be as large as the JSON says."""
    where = _Where(json_path)
    files = [image_dir / im["file_name"] for im in images.values()]
    entries = [f"images[{i}] (id {image_id}, {im['file_name']!r})" for i, (image_id, im) in enumerate(images.items())]
    for path, entry in zip(files, entries, strict=True):
        if not path.is_file():
            raise where.fail(entry, f"image file {str(path)!r} not found")
    probes = probe_images(files)
    bad = [i for i, probe in enumerate(probes) if probe.problem is not None]
    if bad:
        raise where.fail(entries[bad[0]], f"cannot decode image {probes[bad[0]].path!r} ({probes[bad[0]].problem}); "
                                          f"{len(bad)} of {len(files)} images of this split do not decode")  # fmt: skip
    for probe, entry, im in zip(probes, entries, images.values(), strict=True):
        if probe.size != (im["width"], im["height"]):
            width, height = probe.size
            raise where.fail(entry, f"the file is {width}x{height} but the entry says {im['width']}x{im['height']}")
    return files


def read_coco_split(
    data_dir: str | os.PathLike,
    json_path: str | os.PathLike,
    *,
    category_ids: Sequence[int] | None = None,
    skip_bad_boxes: bool = False,
) -> CocoSplit:
    """Read and check one COCO split; `category_ids` (class index order) default to the file's, sorted."""
    data_dir, json_path = Path(data_dir), Path(json_path)
    where = _Where(json_path)
    data = _load_json(json_path)
    categories = _check_categories(data, where)
    if category_ids is None:
        category_ids = sorted(categories)
    unknown = [c for c in categories if c not in category_ids]
    if unknown:
        raise where.fail(f"categories (id {unknown[0]})", "not a category of the training split; "
                                                          "both splits need the same category list")  # fmt: skip
    images = _check_images(data, where)
    annotations, skipped = _check_annotations(data, where, images, categories, skip_bad_boxes)
    image_dir = _image_dir(data_dir, json_path, next(iter(images.values()))["file_name"])
    files = _check_files(json_path, image_dir, images)
    label_of = {c: i for i, c in enumerate(category_ids)}
    per_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    for a in annotations:
        if not a["iscrowd"]:
            per_image[a["image_id"]].append(a)
    boxes, labels = [], []
    for anns in per_image.values():
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)  # [N, 4]
        boxes.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))  # [N, 4] x1, y1, x2, y2
        labels.append(np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64))
    coco = {
        "images": [{"id": i, **im} for i, im in images.items()],
        "annotations": annotations,
        "categories": [{"id": c, "name": categories.get(c, str(c))} for c in category_ids],
    }
    return CocoSplit(json_path, image_dir, list(images), files, boxes, labels, coco, list(category_ids), skipped)


def find_coco_json(data_dir: str | os.PathLike, split: str) -> Path:
    """`DIR/annotations/instances_*SPLIT*.json`, else the one `*SPLIT*.json` there."""
    folder = Path(data_dir) / "annotations"
    if not folder.is_dir():
        raise ConfigError(
            f"{str(folder)!r} not found; a COCO dataset needs annotations/instances_train*.json and "
            "annotations/instances_val*.json beside the image folders"
        )
    for pattern in (f"instances_*{split}*.json", f"*{split}*.json"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ConfigError(f"{str(folder)!r} holds several {split} files ({names}); keep one")
    raise ConfigError(f"{str(folder)!r} holds no {split} annotations (instances_{split}*.json)")


def load_coco_data(data_dir: str | os.PathLike, *, skip_bad_boxes: bool = False) -> tuple[CocoSplit, CocoSplit]:
    """The checked train and val splits of a COCO folder; class indices follow train's sorted category ids."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"dataset folder {str(root)!r} not found; --data must hold annotations/ and the images")
    train = read_coco_split(root, find_coco_json(root, "train"), skip_bad_boxes=skip_bad_boxes)
    val = read_coco_split(root, find_coco_json(root, "val"), category_ids=train.category_ids,
                          skip_bad_boxes=skip_bad_boxes)  # fmt: skip
    if not any(len(b) for b in train.boxes):
        raise ConfigError(f"{str(train.json_path)!r} has no (non-crowd) annotations to train on")
    if val.annotations == 0:
        raise ConfigError(f"{str(val.json_path)!r} has no annotations; COCO mAP is undefined without ground truth")
    return train, val


class CocoDataset(Dataset):
    """(image [3, H, W] float in [0, 1], target {boxes [N, 4] x1y1x2y2, labels [N]}) per image.

    A horizontal flip (probability `hflip`) is drawn from (seed, epoch, index), so the augmentation
    of an epoch is the same whatever the number of workers and after a resume. An item is an index
    (of epoch `epoch`) or an (epoch, index) key, as zennas.train.loading's loaders ask for them.
    """

    def __init__(self, split: CocoSplit, *, hflip: float = 0.0, seed: int = 0):
        self.split, self.hflip, self.seed, self.epoch = split, hflip, seed, 0

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image

        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        path = self.split.files[index]
        try:
            with Image.open(path) as file:
                pixels = np.asarray(file.convert("RGB"))  # [H, W, 3] uint8
        except OSError as error:
            raise ConfigError(f"{str(self.split.json_path)!r}: cannot decode image {str(path)!r} ({error})") from None
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)  # [3, H, W]
        boxes = torch.from_numpy(self.split.boxes[index].copy())  # [N, 4]
        if self.hflip > 0 and np.random.default_rng([self.seed, epoch, index]).random() < self.hflip:
            image = image.flip(-1)
            boxes = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1], image.shape[-1] - boxes[:, 0],
                                 boxes[:, 3]], dim=1)  # fmt: skip
        return image, {"boxes": boxes, "labels": torch.from_numpy(self.split.labels[index])}


def _collate(batch: list) -> tuple[list, list]:
    """Images differ in size: keep lists (FCOS's transform batches them)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


# ----------------------------------------------------------------------------------------------
# The detector


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors" or not path.is_file():
        raise ConfigError(f"backbone weights {str(path)!r} not found; give a training --out folder or a .safetensors")
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"cannot read backbone weights {str(path)!r}: {error}") from None
    body = detector.backbone.body
    load_state_checked(body, {k: v for k, v in state.items() if not k.startswith("head.")}, arch)


# ----------------------------------------------------------------------------------------------
# COCO evaluation


@torch.no_grad()
def predict(detector: nn.Module, split: CocoSplit, device: torch.device, batch_size: int = 8) -> list[dict[str, Any]]:
    """COCO result entries (image_id, category_id, bbox [x, y, w, h] in image pixels, score) for a split."""
    detector.eval()
    loader = DataLoader(CocoDataset(split), batch_size=batch_size, shuffle=False, collate_fn=_collate)
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


# ----------------------------------------------------------------------------------------------
# ONNX: the whole network with box decoding; thresholds, top-k and NMS outside


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


# ----------------------------------------------------------------------------------------------
# The loop


def train_detection(
    config: DetectionConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
) -> dict[str, Any]:
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json and detector.onnx.

    Returns metrics.json's content. `on_step` and `on_epoch` are called on rank 0 only; `on_epoch`
    runs after the epoch's checkpoint is on disk (an exception there interrupts the run at a
    resumable point).
    """
    return run_on_ranks(config.device, lambda dist, device: _train(config, dist, device, on_step, on_epoch))


@dataclass
class _Run:
    """What the loop needs, set up by `_setup`."""

    detector: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scaler: Any
    train: CocoSplit
    val: CocoSplit
    spec: Any
    resolution: int
    max_size: int
    info: dict[str, Any]
    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def optimizer_settings(config: DetectionConfig) -> tuple[float, float]:
    """(peak lr, weight decay): the given ones, else the optimizer's defaults (lr scaled with the batch)."""
    sgd = config.optimizer == "sgd"
    # SGD's lr grows linearly with the batch (Goyal et al. 2017), Adam's with its square root (Malladi et al. 2022).
    scale = config.batch_size / 16 if sgd else math.sqrt(config.batch_size / 16)
    lr = config.lr if config.lr is not None else (0.01 if sgd else 2e-3) * scale
    wd = config.weight_decay if config.weight_decay is not None else (1e-4 if sgd else 0.05)
    return lr, wd


def _optimizer(config: DetectionConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, float]:
    """SGD (momentum 0.9) or AdamW; no weight decay on norms and biases. Returns it and the peak lr."""
    sgd = config.optimizer == "sgd"
    lr, wd = optimizer_settings(config)
    groups = param_groups(model.parameters(), wd)
    return (torch.optim.SGD(groups, lr=lr, momentum=0.9) if sgd else torch.optim.AdamW(groups, lr=lr)), lr


def _detector_values(spec: Any, side: int, use_se: bool | None, channels: int, convs: int) -> int:
    """Floor of the values one side x side image keeps for the backward pass: the backbone's (see
    zennas.train.memory), then on each level P3-P7 the FPN output and the outputs of both head towers."""
    levels = sum((side // stride) ** 2 for stride in LEVEL_STRIDES)
    return training_values(spec, side, side, use_se) + levels * channels * (1 + 2 * convs)


NATIVE_SIDE_CAP = 800  # FCOS's COCO setting: larger images are scaled down to it by default


def native_side(split: CocoSplit) -> int:
    """The default input side of a split: the median shorter side of its images (from the COCO entries),
    at least 32 (the stride of C5) and at most NATIVE_SIDE_CAP."""
    sides = [min(im["width"], im["height"]) for im in split.coco["images"]]
    return int(min(NATIVE_SIDE_CAP, max(32, round(float(np.median(sides))))))


def _setup(config: DetectionConfig, device: torch.device, world: int = 1) -> tuple[_Run, float]:
    spec, _, resolution, use_se = resolve_architecture(config)
    native = config.resolution is None and config.run is None  # a backbone's own resolution says nothing of the data
    if native:
        train, val = load_coco_data(config.data, skip_bad_boxes=config.skip_bad_boxes)
        resolution = native_side(train)
    max_size = config.max_size or round(resolution * 1333 / 800)
    if max_size < resolution:
        raise ConfigError(f"max_size ({max_size}) must be at least the resolution ({resolution})")
    batch = max(1, config.batch_size // world)
    check_memory(_detector_values(spec, resolution, use_se, config.fpn_channels, config.head_convs), batch, device,
                 what=f"one training step of {batch} images of {resolution}x{resolution} (square images)",
                 lower="--resolution or --batch-size",
                 bytes_per_value=2 if device.type == "cuda" and config.amp != "off" else 4)  # fmt: skip
    if not native:  # an impossible --resolution is refused before the data is read
        train, val = load_coco_data(config.data, skip_bad_boxes=config.skip_bad_boxes)
    torch.manual_seed(config.seed)
    detector = build_detector(
        spec, len(train.category_ids), use_se=use_se, fpn_channels=config.fpn_channels, head_convs=config.head_convs,
        min_size=resolution, max_size=max_size, score_thresh=config.score_thresh, nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_img,
    )  # fmt: skip
    if config.backbone_weights is not None:
        load_backbone_weights(detector, config.backbone_weights, spec.canonical)
    detector.to(device)
    ema = ModelEma(detector, config.ema_decay) if config.ema_decay > 0 else None
    optimizer, lr = _optimizer(config, detector)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp == "fp16")
    info = {
        "task": "detection", "arch": spec.canonical, "dialect": spec.dialect, "use_se": use_se,
        "resolution": resolution, "max_size": max_size, "num_classes": len(train.category_ids),
        "categories": train.coco["categories"], "fpn_channels": config.fpn_channels,
        "head_convs": config.head_convs, "settings": config.settings(),
    }  # fmt: skip
    return _Run(detector, ema, optimizer, scaler, train, val, spec, resolution, max_size, info), lr


def _restore(config: DetectionConfig, run: _Run, saved: dict[str, Any] | None) -> None:
    """On --resume (`saved`, the checked checkpoint sidecar) load the last checkpoint into `run`."""
    if saved is None:
        return
    out = Path(config.out)
    state = load_checkpoint(out, model=run.detector, optimizer=run.optimizer, arch=run.spec.canonical,
                            ema=run.ema.module if run.ema else None)  # fmt: skip
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start, run.history = state["epoch"], state["history"]


def _train(config: DetectionConfig, dist: DistInfo, device: torch.device, on_step, on_epoch) -> dict[str, Any]:
    out, main = Path(config.out), dist.rank == 0
    # --out is claimed (and a checkpoint to resume checked) before the data is read: None starts afresh.
    saved = resume_point(out, config.settings(), config.resume, kind=DETECTION_RUN, overwrite=config.overwrite)
    run, lr = _setup(config, device, dist.world)
    _restore(config, run, saved)
    model: nn.Module = run.detector
    dataset = CocoDataset(run.train, hflip=config.hflip, seed=config.seed)
    sampler = None
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        model = DistributedDataParallel(run.detector, device_ids=[device.index] if device.type == "cuda" else None)
        sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                     seed=config.seed, drop_last=True)  # fmt: skip
    batch = max(1, config.batch_size // dist.world)
    generator = torch.Generator()
    workers = config.workers if config.workers is not None else default_workers(device)
    loader = feed(dataset, batch_size=batch, train=True, generator=generator, workers=workers, device=device,
                  seed=config.seed, sampler=sampler, collate_fn=_collate, keyed=True, drop_last=True)  # fmt: skip
    steps = len(loader)
    if steps == 0:
        raise ConfigError(f"the training split has fewer images ({len(dataset)}) than one batch per process; "
                          "lower --batch-size")  # fmt: skip
    total, warmup = config.epochs * steps, round(config.warmup_epochs * steps)
    amp = device.type == "cuda" and config.amp != "off"

    for epoch in range(run.start, config.epochs):
        started = time.monotonic()
        # Everything random in this epoch follows from (seed, epoch, rank): resuming replays it exactly.
        torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + dist.rank)
        generator.manual_seed(config.seed * 100_003 + epoch)
        loader.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        sums = torch.zeros(3, device=device)  # classification, box regression, centre-ness
        timed = Timed(loader, count=lambda b: len(b[0]))
        for step, (images, targets) in enumerate(timed):
            global_step = epoch * steps + step
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(global_step, total=total, warmup=warmup, base=lr, minimum=config.min_lr)
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast("cuda", dtype=AMP_DTYPES[config.amp]) if amp else contextlib.nullcontext():
                losses = model(images, targets)  # classification, bbox_regression, bbox_ctrness (scalars)
            loss = sum(losses.values())
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            if config.grad_clip > 0:
                run.scaler.unscale_(run.optimizer)
                nn.utils.clip_grad_norm_(run.detector.parameters(), config.grad_clip)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            if run.ema is not None:
                run.ema.update(run.detector, global_step)
            sums += torch.stack([v.detach().float() for v in losses.values()])
            if main and on_step is not None:
                on_step(epoch + 1, step + 1, steps, step_info(loss, timed))
        record = _end_epoch(config, run, dist, device, epoch, sums / steps, started, timed)
        if main:
            save_checkpoint(out, epoch=epoch + 1, model=run.detector, optimizer=run.optimizer,
                            ema=run.ema.module if run.ema else None,
                            info={**run.info, "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
                                  "history": run.history})  # fmt: skip
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
            if on_epoch is not None:
                on_epoch(record)
    return _finish(config, run, main, out)


def _end_epoch(
    config: DetectionConfig,
    run: _Run,
    dist: DistInfo,
    device: torch.device,
    epoch: int,
    means: torch.Tensor,
    started: float,
    timed: Timed,
) -> dict[str, Any]:
    """Average the losses over ranks, evaluate when due, append the epoch's record to the history."""
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(means)
        means = means / dist.world
    cls, box, ctr = (float(v) for v in means)
    speed = throughput(timed)  # the training steps only (the sums above waited for the GPU), before evaluation
    if not math.isfinite(cls + box + ctr):
        raise ConfigError(f"the training loss became non-finite in epoch {epoch + 1}; lower --lr or set --grad-clip")
    record: dict[str, Any] = {
        "epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": cls + box + ctr,
        "loss_cls": cls, "loss_box": box, "loss_ctr": ctr,
    }  # fmt: skip
    last = epoch + 1 == config.epochs
    # Every rank evaluates the whole val set (as classification does): exact figures, no gather.
    scores = {"map": None, "map_50": None, "map_75": None}
    if last or (epoch + 1) % config.eval_every == 0:
        weights = run.ema.module if run.ema is not None else run.detector
        scores = coco_map(run.val, predict(weights, run.val, device))
    record.update(scores)
    record["seconds"] = time.monotonic() - started
    record.update(speed)
    run.history.append(record)
    return record


def _finish(config: DetectionConfig, run: _Run, main: bool, out: Path) -> dict[str, Any]:
    """metrics.json, model.safetensors (+ model.json) and detector.onnx on rank 0; returns the metrics."""
    final = run.history[-1]
    weights = run.ema.module if run.ema is not None else run.detector
    evaluated = [r for r in run.history if r["map"] is not None]
    metrics = {
        "map": final["map"], "map_50": final["map_50"], "map_75": final["map_75"],
        "map_units": "fraction in [0, 1] (COCO bbox AP)",
        "reported": "ema" if run.ema is not None else "model",
        "best_map": max(r["map"] for r in evaluated), "epochs": len(run.history), "train_loss": final["train_loss"],
        "params": sum(p.numel() for p in weights.parameters()),
        "backbone_params": sum(p.numel() for p in weights.backbone.body.parameters()),
        "arch": run.spec.canonical, "dialect": run.spec.dialect, "resolution": run.resolution,
        "max_size": run.max_size, "num_classes": len(run.train.category_ids),
        "train_images": len(run.train.files), "val_images": len(run.val.files),
        "val_annotations": run.val.annotations, "skipped_annotations": run.train.skipped + run.val.skipped,
        "seconds": sum(r["seconds"] for r in run.history),
    }  # fmt: skip
    if not main:
        return metrics
    save_weights(out / "model.safetensors", weights, {**run.info, "weights": metrics["reported"],
                                                      "map": metrics["map"], "map_50": metrics["map_50"]})  # fmt: skip
    if config.export_onnx:
        onnx_info = export_detector(
            copy.deepcopy(weights).cpu().float(), out / "detector.onnx", run.resolution, exporter=config.onnx_exporter
        )
        metrics["onnx"] = onnx_info
        atomic_write_json(out / "detector.json", {**run.info, "onnx": onnx_info, "score_thresh": config.score_thresh,
                                                  "nms_thresh": config.nms_thresh,
                                                  "detections_per_img": config.detections_per_img})  # fmt: skip
    atomic_write_json(out / "metrics.json", metrics)
    if config.export_onnx and not metrics["onnx"]["passed"]:
        raise ExportError(
            f"{str(out / 'detector.onnx')!r} disagrees with PyTorch (max relative error "
            f"{metrics['onnx']['max_rel_error']}); weights and metrics are saved in {str(out)!r}"
        )
    return metrics


__all__ = [
    "BackboneFPN",
    "CocoDataset",
    "CocoSplit",
    "DetectionConfig",
    "DetectorGraph",
    "build_detector",
    "coco_map",
    "decode_detections",
    "export_detector",
    "export_side",
    "find_coco_json",
    "load_backbone_weights",
    "load_coco_data",
    "optimizer_settings",
    "predict",
    "read_coco_split",
    "train_detection",
]
