"""Offline synthetic datasets built from real images that ship inside packages (REFERENCE.md 9).

They exist so that the trainers can be checked end to end without a download: the images are
real (scikit-learn's 1,797 hand-written 8x8 digits), the layout is the real on-disk format each
trainer reads, and everything is seeded. They are learning checks, not benchmarks.

- `write_coco_digits`: digits pasted on noisy canvases, boxes and labels known, in COCO format.
- `write_market_digits`: each digit image a person, seen by simulated cameras, in Market-1501 layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zennas.errors import ConfigError, DependencyError
from zennas.io import atomic_write_json

VAL_FRACTION = 0.2  # share of the 1,797 digits kept for the val split (no digit image is in both)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: images [N, 8, 8] in 0..16 (float), labels [N]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DependencyError(
            "synthetic datasets use scikit-learn's bundled digits; install it with `pip install scikit-learn`"
        ) from None
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Detection: digits on canvases, COCO format


def _paste_digit(
    canvas: np.ndarray, digit: np.ndarray, x: int, y: int, side: int, colour: np.ndarray
) -> tuple[float, float, float, float] | None:
    """Alpha-blend an 8x8 digit scaled to side x side at (x, y); return its ink's tight box (x, y, w, h)."""
    from PIL import Image

    patch = Image.fromarray(digit * (255 / 16)).resize((side, side), Image.Resampling.BILINEAR)
    alpha = np.clip(np.asarray(patch, dtype=np.float32) / 255, 0, 1)  # [side, side]
    region = canvas[y : y + side, x : x + side]  # [side, side, 3], a view
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
    rows, cols = np.nonzero(alpha > 0.25)  # the ink, not the blank margin of the 8x8 cell
    if rows.size == 0:
        return None
    x0, y0 = x + int(cols.min()), y + int(rows.min())
    return float(x0), float(y0), float(x + int(cols.max()) + 1 - x0), float(y + int(rows.max()) + 1 - y0)


def _place(rng: np.random.Generator, canvas: int, sides: list[int], tries: int = 50) -> list[tuple[int, int, int]]:
    """Non-overlapping squares (x, y, side) for as many of `sides` as fit within `tries` draws each."""
    placed: list[tuple[int, int, int]] = []
    for side in sides:
        for _ in range(tries):
            x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
            if all(x + side <= px or px + ps <= x or y + side <= py or py + ps <= y for px, py, ps in placed):
                placed.append((x, y, side))
                break
    return placed


def _digit_canvas(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    *,
    canvas: int,
    per_image: tuple[int, int],
    sides: tuple[int, int],
) -> tuple[np.ndarray, list[tuple[int, tuple[float, float, float, float]]]]:
    """One RGB canvas [canvas, canvas, 3] uint8 and its (label, box) list."""
    background = rng.uniform(0, 90, size=3).astype(np.float32)
    image = background + rng.normal(0, 12, size=(canvas, canvas, 3)).astype(np.float32)  # [H, W, 3]
    count = int(rng.integers(per_image[0], per_image[1] + 1))
    spots = _place(rng, canvas, [int(s) for s in rng.integers(sides[0], sides[1] + 1, size=count)])
    objects = []
    for x, y, side in spots:
        index = int(rng.choice(pool))
        colour = rng.uniform(150, 255, size=3).astype(np.float32)
        box = _paste_digit(image, images[index], x, y, side, colour)
        if box is not None:
            objects.append((int(labels[index]), box))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def write_coco_digits(
    root: str | os.PathLike,
    *,
    train_images: int = 200,
    val_images: int = 50,
    canvas: int = 64,
    per_image: tuple[int, int] = (1, 3),
    digit_size: tuple[int, int] = (16, 28),
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a COCO-format detection set of sklearn digits pasted on canvases; returns `root`.

    Layout: `root/annotations/instances_{train,val}.json` and the PNGs in `root/{train,val}/`.
    Each canvas (canvas x canvas RGB, dark noisy background) holds `per_image` (min, max) digits,
    each scaled to a side drawn from `digit_size` (pixels, inclusive), never overlapping; a box is
    the tight box of the digit's ink. Category ids are digit + 1 (COCO ids start at 1), names the
    digit. `classes` restricts the digits used (default all ten). The train and val canvases draw
    from disjoint sets of the 1,797 digit images, so val measures generalisation to unseen digits.
    """
    kept = sorted(set(range(10) if classes is None else classes))
    if not kept or not set(kept) <= set(range(10)):
        raise ConfigError(f"classes must be digits 0..9, got {list(classes or [])!r}")
    if not 1 <= per_image[0] <= per_image[1] or not 4 <= digit_size[0] <= digit_size[1] <= canvas:
        raise ConfigError(
            f"need 1 <= per_image[0] <= per_image[1] and 4 <= digit_size[0] <= digit_size[1] <= canvas ({canvas}), "
            f"got per_image={per_image}, digit_size={digit_size}"
        )
    if min(train_images, val_images) < 1:
        raise ConfigError(f"train_images and val_images must be at least 1, got {train_images} and {val_images}")
    images, labels = _load_digits()
    order = np.random.default_rng([seed, 0]).permutation(len(images))
    order = order[np.isin(labels[order], kept)]
    cut = round(len(order) * (1 - VAL_FRACTION))
    root = Path(root)
    categories = [{"id": d + 1, "name": str(d)} for d in kept]
    for split, count, pool, stream in (("train", train_images, order[:cut], 1), ("val", val_images, order[cut:], 2)):
        rng = np.random.default_rng([seed, stream])
        (root / split).mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id in range(1, count + 1):
            pixels, objects = _digit_canvas(rng, images, labels, pool, canvas=canvas, per_image=per_image,
                                            sides=digit_size)  # fmt: skip
            name = f"{image_id:06d}.png"
            _save_png(root / split / name, pixels)
            entries.append({"id": image_id, "file_name": name, "width": canvas, "height": canvas})
            for label, box in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                    "bbox": list(box), "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        atomic_write_json(
            root / "annotations" / f"instances_{split}.json",
            {"images": entries, "annotations": annotations, "categories": categories},
            indent=None,
        )
    return root


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels, "RGB").save(path)


__all__ = ["write_coco_digits"]


# ----------------------------------------------------------------------------------------------
# Re-identification: digits as people, in Market-1501 layout


def _camera_styles(rng: np.random.Generator, cameras: int) -> list[dict[str, Any]]:
    """Per camera: background and ink colours, brightness, blur and noise (the 'camera' look)."""
    styles = []
    for _ in range(cameras):
        background = rng.uniform(20, 110, size=3).astype(np.float32)
        ink = rng.uniform(150, 255, size=3).astype(np.float32)
        styles.append({"background": background, "ink": ink, "gain": float(rng.uniform(0.75, 1.15)),
                       "blur": float(rng.choice([0.0, 0.6, 1.0])), "noise": float(rng.uniform(4, 14))})  # fmt: skip
    return styles


def _reid_view(rng: np.random.Generator, digit: np.ndarray, style: dict[str, Any], height: int, width: int
               ) -> np.ndarray:  # fmt: skip
    """One detection [height, width, 3] uint8: the digit stretched to a tall box, jittered, in the camera's look."""
    from PIL import Image, ImageFilter

    box_w = max(4, round(width * rng.uniform(0.7, 0.95)))
    box_h = max(4, round(height * rng.uniform(0.7, 0.95)))
    patch = Image.fromarray(digit * (255 / 16)).resize((box_w, box_h), Image.Resampling.BILINEAR)
    patch = patch.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
    alpha = np.clip(np.asarray(patch, dtype=np.float32) / 255, 0, 1)[..., None]  # [box_h, box_w, 1]
    x = int(rng.integers(0, width - box_w + 1))
    y = int(rng.integers(0, height - box_h + 1))
    image = np.broadcast_to(style["background"], (height, width, 3)).copy()  # [H, W, 3]
    region = image[y : y + box_h, x : x + box_w]
    region[:] = region * (1 - alpha) + style["ink"] * alpha
    image *= style["gain"] * rng.uniform(0.9, 1.1)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
    if style["blur"] > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(style["blur"]))
    pixels = np.asarray(pil, dtype=np.float32) + rng.normal(0, style["noise"], size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_market_digits(
    root: str | os.PathLike,
    *,
    train_ids: int = 100,
    test_ids: int = 50,
    cameras: int = 6,
    cameras_per_id: int = 3,
    images_per_camera: int = 2,
    distractors: int = 20,
    junk: int = 10,
    height: int = 64,
    width: int = 32,
    seed: int = 0,
) -> dict[str, int]:
    """Write a Market-1501-layout ReID set whose people are sklearn digit images; returns the counts.

    Identity = one of the 1,797 digit images (so people of the same digit class look alike: a
    fine-grained task); each is seen by `cameras_per_id` of `cameras` simulated cameras, with
    `images_per_camera` views each. A camera has its own background and ink colours, brightness,
    blur and noise; a view adds a random box size, position, rotation and brightness. Train and
    test people are disjoint (as in Market-1501). Query: one view per camera per test person; the
    gallery holds the other views, `distractors` views of further digits as person 0000 and
    `junk` views (person -1, digits cut off at the border). Files are JPEGs named like
    `0002_c1s1_000451_01.jpg`. A protocol and learning check, not a benchmark.
    """
    if not 2 <= cameras_per_id <= cameras <= 9:
        raise ConfigError(f"need 2 <= cameras_per_id <= cameras <= 9, got {cameras_per_id} and {cameras}")
    if images_per_camera < 2:
        raise ConfigError(f"images_per_camera must be at least 2 (one becomes a query), got {images_per_camera}")
    if min(train_ids, test_ids) < 1 or min(distractors, junk) < 0 or min(height, width) < 8:
        raise ConfigError("need train_ids, test_ids >= 1, distractors, junk >= 0 and height, width >= 8")
    images, _ = _load_digits()
    people = train_ids + test_ids + distractors
    if people > len(images):
        raise ConfigError(f"train_ids + test_ids + distractors = {people} exceeds the {len(images)} digit images")
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(len(images))
    styles = _camera_styles(rng, cameras)
    root = Path(root)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    frame = 0

    def save(folder: str, pid: int, camera: int, pixels: np.ndarray) -> None:
        nonlocal frame
        frame += 1
        name = f"{'-1' if pid < 0 else f'{pid:04d}'}_c{camera + 1}s1_{frame:06d}_01.jpg"
        _save_jpeg(root / folder / name, pixels)

    for person in range(train_ids + test_ids):
        pid = person + 1
        digit = images[order[person]]
        for camera in sorted(rng.choice(cameras, size=cameras_per_id, replace=False)):
            for view in range(images_per_camera):
                pixels = _reid_view(rng, digit, styles[camera], height, width)
                if person < train_ids:
                    save("bounding_box_train", pid, camera, pixels)
                else:
                    save("query" if view == 0 else "bounding_box_test", pid, camera, pixels)
    for index in order[train_ids + test_ids : people]:
        camera = int(rng.integers(cameras))
        save("bounding_box_test", 0, camera, _reid_view(rng, images[index], styles[camera], height, width))
    for _ in range(junk):
        camera = int(rng.integers(cameras))
        pixels = _reid_view(rng, images[order[int(rng.integers(people))]], styles[camera], height, width)
        save("bounding_box_test", -1, camera, np.roll(pixels, (height * 2) // 3, axis=0))  # a bad detection
    query = test_ids * cameras_per_id
    return {"train_ids": train_ids, "train_images": train_ids * cameras_per_id * images_per_camera,
            "test_ids": test_ids, "query_images": query,
            "gallery_images": query * (images_per_camera - 1) + distractors + junk}  # fmt: skip


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels, "RGB").save(path, quality=92)


__all__ += ["write_market_digits"]


# ----------------------------------------------------------------------------------------------
# Classification: the digits as an ImageFolder pair (the long-tail checks subsample train/)


def write_digits_folder(
    root: str | os.PathLike, *, val_per_class: int = 30, limit: int | None = None, seed: int = 0
) -> Path:
    """The 1,797 digits (or the first `limit` of a seeded shuffle) as 8x8 grey PNGs in ImageFolder
    layout: `val_per_class` of each digit in val/, the rest in train/; returns `root`. The loader
    upsamples them to --resolution."""
    from PIL import Image

    images, labels = _load_digits()
    pixels = (images * 255 / 16).astype(np.uint8)  # [N, 8, 8], 0..16 -> 0..255
    root = Path(root)
    seen: dict[int, int] = {}
    for i in np.random.default_rng(seed).permutation(len(pixels))[:limit]:
        label = int(labels[i])
        seen[label] = seen.get(label, 0) + 1
        folder = root / ("val" if seen[label] <= val_per_class else "train") / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i], "L").save(folder / f"{i}.png")
    return root
