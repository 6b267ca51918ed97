"""Classification data: an ImageFolder pair (DIR/train, DIR/val) or a CIFAR python-pickle folder.

CIFAR files are pickles (their published format); zennas.train.cifar reads them without running
code from them. Image files are decoded once before training (`screen_folder_images`), so a bad
file is found up front instead of when the loader first draws it.

Class indices always follow train/'s sorted class list, so a val/ folder holding only some of the
classes still gets the right labels; a val/ class unknown to train/ is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from zennas.errors import ConfigError, DependencyError
from zennas.train.cifar import find_cifar, read_cifar
from zennas.train.images import ImageProbe, screen_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at or below this side, pad-and-crop (CIFAR recipe) instead of RandomResizedCrop
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ClassificationData:
    """The two splits, the class names (index order) and the layout they were read from."""

    train: Dataset
    val: Dataset
    classes: list[str]
    layout: str  # "imagefolder", "cifar10" or "cifar100"


def torchvision_module():
    try:
        import torchvision
    except ImportError:
        raise DependencyError("training needs torchvision; install it with `pip install torchvision==0.29.1`") from None
    return torchvision


def build_transforms(resolution: int, *, train: bool, hflip: float = 0.5):
    """torchvision transforms: random crop + flip for training, resize + centre crop for evaluation."""
    t = torchvision_module().transforms
    if train:
        if resolution <= SMALL_IMAGE:
            crop = [t.Resize(resolution), t.RandomCrop(resolution, padding=max(1, resolution // 8))]
        else:
            crop = [t.RandomResizedCrop(resolution)]
        flip = [t.RandomHorizontalFlip(hflip)] if hflip > 0 else []
        steps = [*crop, *flip]
    else:
        steps = centre_square(resolution, resolution)
    return t.Compose([*steps, t.ToTensor(), t.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def centre_square(resolution: int, side: int) -> list:
    """PIL steps to the evaluation crop: the shorter side resized (to side / 0.875 for large images,
    as ImageNet evaluation does), then the centre `side` x `side` kept. Images kept in memory for
    training use the same steps at their stored side."""
    t = torchvision_module().transforms
    shorter = resolution if resolution <= SMALL_IMAGE else round(resolution / 0.875)
    return [t.Resize(max(shorter, side)), t.CenterCrop(side)]


def _class_dirs(split: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith("."))


def load_classification_data(data_dir: str | os.PathLike, resolution: int, *, hflip: float = 0.5) -> ClassificationData:
    """Read DIR/train and DIR/val (ImageFolder layout) or a CIFAR-10/100 python folder, with transforms."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"dataset folder {str(root)!r} not found; --data must hold train/ and val/ class folders")
    tv = torchvision_module()
    cifar = find_cifar(root)
    if cifar is not None:
        # Same layout, no md5 check: a CIFAR-style set (a subset, a relabelling) is welcome too.
        folder, layout = cifar
        train_transform = build_transforms(resolution, train=True, hflip=hflip)
        train, val, classes = read_cifar(folder, layout, train_transform, build_transforms(resolution, train=False))
        return ClassificationData(train, val, classes, layout.name)
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise ConfigError(
            f"unknown dataset format in {str(root)!r}: no {' or '.join(s + '/' for s in missing)} folder; expected "
            "train/ and val/ with one sub-folder per class (ImageFolder), or a cifar-10-batches-py or "
            "cifar-100-python folder"
        )
    classes = _class_dirs(root / "train")
    if not classes:
        raise ConfigError(f"{str(root / 'train')!r} holds no class folders; put each class's images in train/CLASS/")
    val_classes = _class_dirs(root / "val")
    unknown = [c for c in val_classes if c not in classes]
    if unknown:
        raise ConfigError(
            f"val/ has class folders unknown to train/: {', '.join(unknown[:5])}"
            f"{' and more' if len(unknown) > 5 else ''}; val/ classes must be a subset of train/'s"
        )
    mapping = {c: i for i, c in enumerate(classes)}

    class _Folder(tv.datasets.ImageFolder):
        def find_classes(self, directory):  # train/'s mapping for both splits
            return classes, mapping

    try:
        train = _Folder(root / "train", transform=build_transforms(resolution, train=True, hflip=hflip))
    except FileNotFoundError as error:  # torchvision names the empty class folders
        raise ConfigError(
            f"train/ in {str(root)!r}: {' '.join(str(error).split())}; remove the folder or add images"
        ) from None
    val = _Folder(root / "val", transform=build_transforms(resolution, train=False), allow_empty=True)
    if len(val) == 0:
        raise ConfigError(
            f"{str(root / 'val')!r} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) in class folders"
        )
    return ClassificationData(train, val, classes, "imagefolder")


def screen_folder_images(
    data: ClassificationData, *, skip: bool, splits: tuple[str, ...] = ("train", "val"), fix: str | None = None
) -> list[ImageProbe]:
    """Decode every image file of `splits` once; refuse bad ones (ConfigError naming the first ones and
    the count, ending with `fix`), or with `skip` drop them from the splits. Returns the bad files."""
    if data.layout != "imagefolder":
        return []  # CIFAR's pixels were checked when read
    folders = [getattr(data, split) for split in splits]
    paths = [path for folder in folders for path, _ in folder.samples]
    where = " and ".join(f"{split}/" for split in splits)
    bad = screen_images(paths, skip=skip, where=where, **({"fix": fix} if fix else {}))
    gone = {probe.path for probe in bad}
    for split, folder in zip(splits, folders, strict=True):
        folder.samples = folder.imgs = [s for s in folder.samples if s[0] not in gone]
        folder.targets = [label for _, label in folder.samples]
        if not folder.samples:
            raise ConfigError(f"{split}/ holds no image that decodes ({len(bad)} left out); add readable images")
    return bad
