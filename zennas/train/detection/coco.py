"""COCO detection files: read and check every entry, keep what training and COCOeval need; the dataset.

Data are COCO files: `DIR/annotations/instances_*train*.json` and `instances_*val*.json` (or one
`*train*.json` / `*val*.json`), images in `DIR/<split>/`, `DIR/images/<split>/`, `DIR/images/` or
`DIR/`, where <split> is the JSON's name without `instances_` (COCO's own layout). Every entry is
checked before training; a malformed one stops the run with one line naming the file and the
entry. Crowd annotations are left out of training and kept (as ignore regions) for evaluation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zennas.errors import ConfigError
from zennas.train.images import probe_images

BOX_TOLERANCE = 1.0  # pixels a box may cross the image border (COCO's float rounding) before it is an error


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


def collate(batch: list) -> tuple[list, list]:
    """Images differ in size: keep lists (FCOS's transform batches them)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


NATIVE_SIDE_CAP = 800  # FCOS's COCO setting: larger images are scaled down to it by default


def native_side(split: CocoSplit) -> int:
    """The default input side of a split: the median shorter side of its images (from the COCO entries),
    at least 32 (the stride of C5) and at most NATIVE_SIDE_CAP."""
    sides = [min(im["width"], im["height"]) for im in split.coco["images"]]
    return int(min(NATIVE_SIDE_CAP, max(32, round(float(np.median(sides))))))


__all__ = [
    "BOX_TOLERANCE", "NATIVE_SIDE_CAP", "CocoDataset", "CocoSplit", "collate", "find_coco_json", "load_coco_data",
    "native_side", "read_coco_split",
]  # fmt: skip
