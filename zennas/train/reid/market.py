"""Market-1501 folders: the reader and its checks, the datasets and transforms, and P x K batches.

Data (Market-1501, Zheng et al. ICCV 2015): DIR/bounding_box_train, DIR/query and DIR/bounding_box_test
(the gallery), one image per detection, named `PPPP_cCsS_FFFFFF_NN.jpg` (person, camera, sequence,
frame, box), e.g. `0002_c1s1_000451_03.jpg`. The reader needs the `PPPP_cC` prefix, so the
DukeMTMC-reID release (`0001_c2_f0046182.jpg`, same folders) reads too. Person -1 marks junk
detections and 0000 distractors: junk is dropped everywhere (the official evaluation ignores it,
which is the same as removing it), distractors stay in the gallery as images that match no query
and are dropped from training. Files that are not images (the release's Thumbs.db) are ignored.
Every query needs a true match from another camera (else an error names it).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from zennas.errors import ConfigError
from zennas.train.data import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, torchvision_module
from zennas.train.images import ImageProbe, screen_images

SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JUNK, DISTRACTOR = -1, 0
_NAME = re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:s\d+)?_.+")
PATTERN_HINT = "PPPP_cCsS_FFFFFF_NN.jpg (person, camera, sequence, frame, box), e.g. 0002_c1s1_000451_03.jpg"


# ----------------------------------------------------------------------------------------------
# Market-1501 folders


@dataclass(frozen=True)
class ReidImage:
    """One detection: its file, person id (0 = distractor) and camera."""

    path: str
    pid: int
    camera: int


@dataclass
class ReidData:
    """The three splits; `train_ids[label]` is the person id behind training label `label`."""

    train: list[ReidImage]
    query: list[ReidImage]
    gallery: list[ReidImage]
    train_ids: list[int]
    skipped: dict[str, int]  # junk / distractor images dropped, per split
    bad_images: list[ImageProbe] = field(default_factory=list)  # files that do not decode, left out on request

    def summary(self) -> dict[str, int]:
        """Counts for metrics.json."""
        return {
            "train_ids": len(self.train_ids),
            "train_images": len(self.train),
            "query_images": len(self.query),
            "gallery_images": len(self.gallery),
            "gallery_distractors": sum(im.pid == DISTRACTOR for im in self.gallery),
            "junk_dropped": sum(self.skipped.values()),
        }


def parse_market_name(name: str) -> tuple[int, int]:
    """(person id, camera) from a Market-1501 file name; ConfigError naming the file otherwise."""
    match = _NAME.fullmatch(Path(name).stem)
    if match is None:
        raise ConfigError(f"file name {name!r} does not follow the Market-1501 pattern {PATTERN_HINT}")
    return int(match["pid"]), int(match["cam"])


def _read_split(root: Path, split: str) -> list[ReidImage]:
    folder = root / SPLITS[split]
    images = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        linked = entry.is_symlink()  # a broken link to an image is a bad image, not a file to ignore
        if entry.name.startswith(".") or not (entry.is_file() or linked) or \
                Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:  # fmt: skip
            continue  # Thumbs.db, notes, hidden files, folders
        match = _NAME.fullmatch(Path(entry.name).stem)
        if match is None:
            raise ConfigError(
                f"{SPLITS[split]}/{entry.name} in {str(root)!r} does not follow the Market-1501 pattern {PATTERN_HINT}"
            )
        images.append(ReidImage(entry.path, int(match["pid"]), int(match["cam"])))
    if not images:
        raise ConfigError(f"{str(folder)!r} holds no images named like {PATTERN_HINT}")
    return images


def read_market1501(data_dir: str | os.PathLike, *, skip_bad_images: bool = False) -> ReidData:
    """Read and check a Market-1501-layout folder (see the module docstring for the rules).

    Every image is decoded once first: one that does not is an error naming it, or with
    `skip_bad_images` it is left out (listed in `bad_images`) before the protocol checks.
    """
    root = Path(data_dir)
    layout = ", ".join(f"{name}/" for name in SPLITS.values())
    if not root.is_dir():
        raise ConfigError(f"dataset folder {str(root)!r} not found; --data must hold {layout} (Market-1501 layout)")
    missing = [name for name in SPLITS.values() if not (root / name).is_dir()]
    if missing:
        raise ConfigError(
            f"{str(root)!r} has no {' or '.join(m + '/' for m in missing)} folder; a Market-1501 layout holds {layout}"
        )
    splits = {split: _read_split(root, split) for split in SPLITS}
    where = " and ".join(f"{name}/" for name in SPLITS.values())
    bad = screen_images([im.path for ims in splits.values() for im in ims], skip=skip_bad_images, where=where)
    gone = {probe.path for probe in bad}
    splits = {split: [im for im in ims if im.path not in gone] for split, ims in splits.items()}
    for split, ims in splits.items():
        if not ims:
            raise ConfigError(f"{SPLITS[split]}/ holds no image that decodes ({len(bad)} left out); add images")
    skipped = {"train": 0, "gallery": 0}
    train = [im for im in splits["train"] if im.pid > 0]
    skipped["train"] = len(splits["train"]) - len(train)
    gallery = [im for im in splits["gallery"] if im.pid != JUNK]
    skipped["gallery"] = len(splits["gallery"]) - len(gallery)
    for im in splits["query"]:
        if im.pid <= 0:
            kind = "junk (-1)" if im.pid == JUNK else "a distractor (0000)"
            raise ConfigError(f"query/{Path(im.path).name} is {kind}; every query image needs a person id")
    train_ids = sorted({im.pid for im in train})
    if len(train_ids) < 2:
        raise ConfigError(f"{SPLITS['train']}/ holds {len(train_ids)} person id(s); training needs at least 2")
    by_pid: dict[int, set[int]] = {}
    for im in gallery:
        by_pid.setdefault(im.pid, set()).add(im.camera)
    for im in splits["query"]:
        cameras = by_pid.get(im.pid)
        name = f"query/{Path(im.path).name}"
        if cameras is None:
            raise ConfigError(
                f"{name}: person {im.pid:04d} is absent from {SPLITS['gallery']}/; every query person needs "
                "gallery images (Market-1501 protocol)"
            )
        if cameras == {im.camera}:
            raise ConfigError(
                f"{name}: person {im.pid:04d} appears in {SPLITS['gallery']}/ only under camera {im.camera}, "
                "which the protocol excludes; add gallery images from another camera"
            )
    return ReidData(train, splits["query"], gallery, train_ids, skipped, bad)


class ReidDataset(Dataset):
    """Images with a label each: the training label (0..N-1) for train, the person id otherwise."""

    def __init__(self, images: Sequence[ReidImage], transform: Callable, labels: Sequence[int] | None = None):
        self.images = list(images)
        self.transform = transform
        self.labels = [im.pid for im in self.images] if labels is None else list(labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.images[index]
        try:
            with Image.open(image.path) as f:
                pixels = f.convert("RGB")
        except OSError as error:
            raise ConfigError(f"cannot read image {image.path!r}: {error}") from None
        return self.transform(pixels), self.labels[index]


def reid_transforms(height: int, width: int, *, train: bool, hflip: float = 0.5, pad: int | None = None,
                    erasing: float = 0.5):  # fmt: skip
    """Resize to H x W; for training also flip, pad-and-crop and random erasing (the BoT recipe)."""
    t = torchvision_module().transforms
    steps = [t.Resize((height, width))]
    if train:
        pad = round(10 * height / 256) if pad is None else pad  # BoT pads 10 pixels at 256 x 128
        if hflip > 0:
            steps.append(t.RandomHorizontalFlip(hflip))
        if pad > 0:
            steps += [t.Pad(pad), t.RandomCrop((height, width))]
    steps += [t.ToTensor(), t.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and erasing > 0:
        steps.append(t.RandomErasing(p=erasing, value=0))  # 0 after Normalize = the ImageNet mean colour
    return t.Compose(steps)


# ----------------------------------------------------------------------------------------------
# P x K batches


class PKSampler(Sampler[list[int]]):
    """Batches of P distinct identities x K images each (a batch sampler for DataLoader).

    Identities come from successive random permutations, so each is drawn once before any is drawn
    again; an identity's K images are drawn without replacement (with, if it has fewer than K).
    An epoch has `len(labels) // (P * K)` batches (at least 1), and its draws follow only from
    (seed, epoch, rank): call `set_epoch` before iterating.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, *, seed: int = 0, rank: int = 0):
        labels = np.asarray(labels, dtype=np.int64)
        ids = np.unique(labels)
        if p < 2 or k < 2:
            raise ConfigError(f"P x K batches need P >= 2 identities and K >= 2 images each, got P={p}, K={k}")
        if len(ids) < p:
            raise ConfigError(
                f"P={p} identities per batch, but the training set has only {len(ids)}; lower --ids-per-batch"
            )
        self.by_id = [np.flatnonzero(labels == i) for i in ids]
        self.p, self.k, self.seed, self.rank, self.epoch = p, k, seed, rank, 0
        self.batches = max(1, len(labels) // (p * k))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        order: deque[int] = deque()
        for _ in range(self.batches):
            chosen = [order.popleft() for _ in range(min(self.p, len(order)))]
            if len(chosen) < self.p:
                perm = rng.permutation(len(self.by_id))
                repeat = np.isin(perm, chosen)  # already in this batch: moved to the back of the new cycle
                order = deque(int(i) for i in np.concatenate([perm[~repeat], perm[repeat]]))
                chosen += [order.popleft() for _ in range(self.p - len(chosen))]
            batch: list[int] = []
            for i in chosen:
                members = self.by_id[i]
                batch += [int(j) for j in rng.choice(members, size=self.k, replace=len(members) < self.k)]
            yield batch


__all__ = [
    "DISTRACTOR", "JUNK", "PATTERN_HINT", "SPLITS", "PKSampler", "ReidData", "ReidDataset", "ReidImage",
    "parse_market_name", "read_market1501", "reid_transforms",
]  # fmt: skip
