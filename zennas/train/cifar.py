"""CIFAR-10/100 "python version" folders, read without running code from them.

The published files are pickles: per batch a dict with `data` (uint8 [N, 3072], the 1,024 red,
then green, then blue values of each 32 x 32 image) and `labels` (CIFAR-10) or `fine_labels`
(CIFAR-100), and the class names in `batches.meta` (`label_names`) or `meta` (`fine_label_names`).
They were written by Python 2 at protocol 2, so a real batch references only numpy's array
reconstruction (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`); a copy
re-saved by Python 3 adds the latin-1 `_codecs.encode` (protocol 2's spelling of bytes) or
numpy's `_frombuffer` (protocol 5), and NumPy 2 spells the module `numpy._core`.

Unpickling may call any importable function, so a crafted batch would run code when opened.
`_SafeUnpickler` resolves those few globals only and refuses every other one before anything is
imported or called; the result is then checked (shapes, dtype, label range) like any input.
Keys may be str (Python 2 files read as latin-1) or bytes (files written with bytes keys).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from zennas.errors import ConfigError

SIDE, PIXELS = 32, 3 * 32 * 32
CONVERT_HINT = (
    "use the official python version from https://www.cs.toronto.edu/~kriz/cifar.html, or give the images as "
    "train/CLASS/*.png and val/CLASS/*.png folders"
)


@dataclass(frozen=True)
class CifarLayout:
    """File names and keys of one CIFAR variant."""

    name: str  # "cifar10" or "cifar100"
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str


LAYOUTS = (
    CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", "label_names", "labels"),
    CifarLayout("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels"),
)  # fmt: skip


class _RefusedError(Exception):
    """A pickle referenced something a CIFAR file never does."""


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as protocol 2 uses it for bytes: a str with the latin-1 codec, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _RefusedError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1.x before 1.26 has no numpy._core
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR batch needs (see the module docstring)."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedError("a persistent id")


def _load(path: Path) -> dict[str, Any]:
    """A CIFAR file's dict, keys as str; ConfigError for anything that is not one."""
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found; a CIFAR folder needs every file of its published set")
    try:
        with open(path, "rb") as handle:
            content = _SafeUnpickler(handle, encoding="latin1").load()
    except _RefusedError as refused:
        raise ConfigError(
            f"{str(path)!r} is not a genuine CIFAR batch: it references {refused}, which CIFAR files never do "
            f"(unpickling it could run code), so it was refused unread; {CONVERT_HINT}"
        ) from None
    except Exception as error:  # a malformed pickle can raise nearly any exception type
        raise ConfigError(f"cannot read {str(path)!r} as a CIFAR pickle ({type(error).__name__}: {error}); "
                          f"{CONVERT_HINT}") from None  # fmt: skip
    if not isinstance(content, dict) or not all(isinstance(k, str | bytes) for k in content):
        raise ConfigError(f"{str(path)!r} holds a {type(content).__name__}, not a CIFAR dict; {CONVERT_HINT}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in content.items()}


def _class_names(path: Path, key: str) -> list[str]:
    names = _load(path).get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str | bytes) for n in names):
        raise ConfigError(f"{str(path)!r} has no list of class names under {key!r}; {CONVERT_HINT}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _batch(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] uint8, labels [N] int64) of one batch file, checked."""
    content = _load(path)
    data, labels = content.get("data"), content.get(layout.labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConfigError(f"{str(path)!r}: 'data' must be a uint8 array [N, {PIXELS}], got {got}; {CONVERT_HINT}")
    if isinstance(labels, list) and all(type(v) is int for v in labels):
        labels = np.array(labels, dtype=np.int64)
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise ConfigError(
            f"{str(path)!r}: {layout.labels_key!r} must be {len(data)} integers (one per image); {CONVERT_HINT}"
        )
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        raise ConfigError(f"{str(path)!r}: label {int(labels[outside][0])} is outside 0..{num_classes - 1} "
                          f"(the {num_classes} classes of {layout.meta}); {CONVERT_HINT}")  # fmt: skip
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # [N, 32, 32, 3] (HWC, as PIL reads it)
    return np.ascontiguousarray(images), labels.astype(np.int64)


class CifarImages(Dataset):
    """(transform(PIL image), label) per image of a checked CIFAR split; `targets` and `classes` as in torchvision."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], transform: Any):
        self.data = images  # [N, 32, 32, 3] uint8
        self.targets = labels.tolist()
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def find_cifar(root: Path) -> tuple[Path, CifarLayout] | None:
    """(the CIFAR folder, its layout) if `root` is one or holds one; None otherwise."""
    for layout in LAYOUTS:
        if (root / layout.folder).is_dir():
            return root / layout.folder, layout
        if root.name == layout.folder:
            return root, layout
    return None


def read_cifar(folder: Path, layout: CifarLayout, train_transform: Any, val_transform: Any) -> tuple[
    CifarImages, CifarImages, list[str]
]:  # fmt: skip
    """(train, test, class names) of a CIFAR folder, every file checked."""
    classes = _class_names(folder / layout.meta, layout.names_key)
    splits = []
    for files, transform in ((layout.train, train_transform), (layout.test, val_transform)):
        parts = [_batch(folder / name, layout, len(classes)) for name in files]
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if len(images) == 0:
            raise ConfigError(f"{', '.join(files)} in {str(folder)!r} hold no images; {CONVERT_HINT}")
        splits.append(CifarImages(images, labels, classes, transform))
    return splits[0], splits[1], classes


__all__ = ["LAYOUTS", "CifarImages", "CifarLayout", "find_cifar", "read_cifar"]
