"""How training data reaches the model: images kept in memory, worker defaults, epoch-keyed draws, waits.

Two paths, chosen per run (`plan_cache`):

- **Images in memory.** A dataset whose decoded pixels fit in a quarter of the machine's RAM (digits,
  CIFAR, a small ImageFolder) is decoded once into uint8 tensors [N, 3, H, W] and augmented a whole
  batch at a time with tensor operations (`TensorAugment`: pad-and-crop or random-resized-crop, then a
  mirror), on the GPU when training runs there and the pixels fit in a quarter of its free memory.
  Training images are stored as the evaluation crop's square (the shorter side resized, the centre
  kept): at or below 64 px that is the image itself for square data, and above it the random-resized
  crop draws from the centre square at side resolution / 0.875 rather than from the full image.
  Validation images are stored exactly as the file pipeline's evaluation transform makes them, so
  their figures do not depend on the path.
- **Files read by worker processes** (`feed`): worker count from the cores available
  (`default_workers`), pinned memory on CUDA, persistent workers and a prefetch of 4 batches each.

On both paths every random draw of a sample comes from (seed, epoch, index) or from a generator
seeded with (seed, epoch, rank), never from a worker's state, so a run's numbers do not depend on the
number of workers and a resumed run replays the uninterrupted one even with persistent workers.

`Timed` wraps a loader to report images/s and the share of time the loop waited for its next batch.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, Subset

from zennas.errors import ConfigError
from zennas.train.config import CACHE_MODES
from zennas.train.data import IMAGENET_MEAN, IMAGENET_STD, SMALL_IMAGE, centre_square, torchvision_module

RAM_SHARE = 0.25  # "auto" keeps a dataset in memory when its pixels take at most this share of RAM
GPU_SHARE = 0.25  # ... and on the GPU when they take at most this share of its free memory
PREFETCH = 4  # batches each worker keeps ready
MAX_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: torch.device) -> int:
    """Loader processes when none are asked for: with a GPU doing the arithmetic, up to 8 cores decode;
    on the CPU, half the cores (the other half trains), so none on a single core."""
    cores = available_cores()
    return min(MAX_WORKERS, cores) if device.type == "cuda" else min(MAX_WORKERS // 2, cores // 2)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random draws in one epoch (63 bits)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# ----------------------------------------------------------------------------------------------
# Files read by worker processes


class EpochKeys(Sampler):
    """A sampler's (or batch sampler's) indices as (epoch, index) keys, so that a `Keyed` dataset
    draws each sample's augmentation from (seed, epoch, index): the same in any worker, with any
    number of workers, and after a resume. `set_epoch` before each epoch."""

    def __init__(self, sampler: Iterable):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        for item in self.sampler:
            yield [(self.epoch, int(i)) for i in item] if isinstance(item, list | tuple) else (self.epoch, int(item))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class Keyed(Dataset):
    """`dataset[index]` for a key (epoch, index), with Python's, NumPy's and torch's random state
    seeded from (seed, epoch, index) for the duration of the call."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (images, targets, ...)
        # "dataset": not yet set (unpickling in a worker). Dunders: protocol hooks such as a Subset's
        # __getitems__, which DataLoader would call with (epoch, index) keys in place of indices.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        outer = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        try:
            return self.dataset[index]
        finally:  # in the main process (workers 0), the training loop's own random state is left alone
            random.setstate(outer[0])
            np.random.set_state(outer[1])
            torch.set_rng_state(outer[2])


class EpochLoader(DataLoader):
    """A DataLoader over epoch keys; `set_epoch(epoch)` before iterating an epoch."""

    def set_epoch(self, epoch: int) -> None:
        keys = self.batch_sampler if isinstance(self.batch_sampler, EpochKeys) else self.sampler
        keys.set_epoch(epoch)  # type: ignore[union-attr]


def feed(
    dataset: Dataset,
    *,
    batch_size: int | None,
    train: bool,
    generator: torch.Generator,
    workers: int,
    device: torch.device,
    seed: int,
    sampler: Sampler | None = None,
    batch_sampler: Sampler | None = None,
    collate_fn: Callable | None = None,
    keyed: bool = False,
    drop_last: bool | None = None,
) -> EpochLoader:
    """A loader of `dataset` with epoch-keyed draws, pinned memory on CUDA, persistent workers and prefetch.

    Shuffling (when `train` and no sampler is given) draws from `generator`, which the caller reseeds
    per epoch. `keyed`: the dataset takes (epoch, index) keys itself instead of being wrapped in `Keyed`.
    By default a training loader drops a last partial batch when the set holds at least two batches
    (BatchNorm dislikes a batch of one)."""
    if batch_sampler is not None:
        order: dict[str, Any] = {"batch_sampler": EpochKeys(batch_sampler)}
    else:
        base = sampler if sampler is not None else (
            RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)  # type: ignore[arg-type]
        )  # fmt: skip
        if drop_last is None:
            drop_last = train and len(dataset) >= 2 * batch_size  # type: ignore[arg-type, operator]
        order = {"sampler": EpochKeys(base), "batch_size": batch_size, "drop_last": drop_last}
    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": PREFETCH} if workers > 0 else {}
    return EpochLoader(
        dataset if keyed else Keyed(dataset, seed), num_workers=workers, pin_memory=device.type == "cuda",
        collate_fn=collate_fn, generator=torch.Generator().manual_seed(seed), **order, **extra,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Images in memory


@dataclass
class ImageTensors:
    """A decoded split: uint8 pixels [N, 3, H, W] and int64 labels [N], on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> ImageTensors:
        return ImageTensors(self.images.to(device), self.labels.to(device))


def _sources(dataset: Any) -> tuple[list[Callable[[], Any]], list[int]] | None:
    """Per image, a function returning it as a PIL image (RGB), and the labels; None for a dataset
    type this module cannot read without its transform (it is then streamed)."""
    from PIL import Image

    if isinstance(dataset, Subset):
        inner = _sources(dataset.dataset)
        if inner is None:
            return None
        return [inner[0][i] for i in dataset.indices], [inner[1][i] for i in dataset.indices]
    if hasattr(dataset, "samples") and hasattr(dataset, "loader"):  # torchvision ImageFolder
        return [lambda p=path: dataset.loader(p).convert("RGB") for path, _ in dataset.samples], [
            int(label) for _, label in dataset.samples
        ]
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.ndim == 4 and data.shape[-1] == 3 and data.dtype == np.uint8:  # CIFAR
        return [lambda i=i: Image.fromarray(data[i]) for i in range(len(data))], [int(t) for t in dataset.targets]
    return None


def stored_side(resolution: int, *, train: bool) -> int:
    """Side of the square a split's images are kept at: the crop itself for evaluation and small
    images; for random-resized-crop training, the evaluation resize (resolution / 0.875)."""
    return round(resolution / 0.875) if train and resolution > SMALL_IMAGE else resolution


def decode(dataset: Any, prepare: Callable[[Any], Any], side: int) -> ImageTensors:
    """Every image of `dataset` through the PIL steps `prepare` (ending at side x side), as uint8
    tensors; decoded in a thread pool (PIL's decoders and resizes release the GIL)."""
    sources, labels = _sources(dataset)  # type: ignore[misc]
    pixels = np.empty((len(sources), side, side, 3), dtype=np.uint8)  # [N, H, W, 3]

    def one(i: int) -> None:
        image = np.asarray(prepare(sources[i]()))
        if image.shape != (side, side, 3):
            raise ConfigError(f"image {i} became {image.shape} instead of {side}x{side}x3 when kept in memory")
        pixels[i] = image

    with ThreadPoolExecutor(max(1, min(32, available_cores(), len(sources)))) as pool:
        list(pool.map(one, range(len(sources))))
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]
    return ImageTensors(images, torch.as_tensor(labels, dtype=torch.int64))


def keep_decoded(dataset: Any, resolution: int, *, train: bool, device: torch.device) -> ImageTensors:
    """A split decoded for `MemoryLoader` (see `stored_side`) and moved to `device`."""
    side = stored_side(resolution, train=train)
    prepare = torchvision_module().transforms.Compose(centre_square(resolution, side))
    return decode(dataset, prepare, side).to(device)


def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_cache(mode: str, splits: Sequence[tuple[Any, int]], device: torch.device) -> torch.device | None:
    """Where to keep the splits ((dataset, stored side) pairs) decoded: a device, or None to stream
    the files. "auto" keeps them when they fit in RAM_SHARE of the RAM, "memory" always, "off" never;
    on CUDA they go to the GPU when they fit in GPU_SHARE of its free memory."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"unknown data cache {mode!r}; choose one of {', '.join(CACHE_MODES)}")
    if mode == "off":
        return None
    if any(_sources(dataset) is None for dataset, _ in splits):
        if mode == "memory":
            raise ConfigError(
                "only ImageFolder and CIFAR datasets can be kept in memory; stream this one (cache auto or off)"
            )
        return None
    size = sum(len(dataset) * 3 * side * side for dataset, side in splits)
    if mode == "auto" and size > RAM_SHARE * _total_ram():
        return None
    if device.type == "cuda" and size <= GPU_SHARE * torch.cuda.mem_get_info(device)[0]:
        return device
    return torch.device("cpu")


class TensorAugment:
    """A uint8 batch [B, 3, S, S] to a normalised float batch [B, 3, R, R]: for training, pad-and-crop
    (R <= 64, padding R/8, black fill) or random-resized-crop (scale 0.08-1, ratio 3/4-4/3, bilinear
    with area averaging), then a mirror with probability `hflip`; for evaluation, normalisation only.
    The draws come from a CPU generator, so they are the same on any device."""

    def __init__(self, resolution: int, *, train: bool, hflip: float = 0.5):
        self.resolution, self.train, self.hflip = resolution, train, hflip

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        r = self.resolution
        if self.train:
            x = self._pad_crop(x, g) if r <= SMALL_IMAGE else self._resized_crop(x, g)
            if self.hflip > 0:
                flip = (torch.rand(x.shape[0], generator=g) < self.hflip).to(x.device)  # [B]
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
        return (x.float() / 255 - mean) / std

    def _pad_crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, r = x.shape[0], self.resolution
        pad = max(1, r // 8)
        padded = F.pad(x, (pad, pad, pad, pad))  # [B, 3, S + 2p, S + 2p], zeros as torchvision's fill
        offsets = torch.randint(0, padded.shape[-1] - r + 1, (b, 2), generator=g).to(x.device)  # [B, (y, x)]
        span = torch.arange(r, device=x.device)
        rows = (offsets[:, 0, None] + span)[:, None, :, None]  # [B, 1, R, 1]
        cols = (offsets[:, 1, None] + span)[:, None, None, :]  # [B, 1, 1, R]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        channel = torch.arange(3, device=x.device)[None, :, None, None]
        return padded[batch, channel, rows, cols]  # [B, 3, R, R]

    def _resized_crop(self, x: torch.Tensor, g: torch.Generator, tries: int = 10) -> torch.Tensor:
        from torchvision.ops import roi_align

        b, side = x.shape[0], x.shape[-1]
        area = side * side * (0.08 + 0.92 * torch.rand(b, tries, generator=g, dtype=torch.float64))
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(
            b, tries, generator=g, dtype=torch.float64
        )
        ratio = torch.exp(log_ratio)
        w = torch.round(torch.sqrt(area * ratio))
        h = torch.round(torch.sqrt(area / ratio))
        fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)  # [B, tries]
        first = torch.where(fits.any(1), fits.float().argmax(1), -1)  # the first try that fits, as torchvision
        rows = torch.arange(b)
        w = torch.where(first >= 0, w[rows, first.clamp(min=0)], float(side))  # none fits: the whole square
        h = torch.where(first >= 0, h[rows, first.clamp(min=0)], float(side))
        top = torch.floor(torch.rand(b, generator=g, dtype=torch.float64) * (side - h + 1))
        left = torch.floor(torch.rand(b, generator=g, dtype=torch.float64) * (side - w + 1))
        boxes = torch.stack([rows.double(), left, top, left + w, top + h], 1).float().to(x.device)  # [B, 5]
        out = roi_align(x.float(), boxes, output_size=self.resolution, spatial_scale=1.0, sampling_ratio=-1,
                        aligned=True)  # fmt: skip
        return out.round_().clamp_(0, 255)  # [B, 3, R, R], on the uint8 scale as the file path's crop


class MemoryLoader:
    """Batches (normalised images [B, 3, R, R], labels [B]) of an `ImageTensors` split on its device.

    Training order: `sampler`'s indices when given (reweighting, DDP), else a permutation; the order
    and the augmentation come from a generator seeded with (seed, epoch, rank), set by `set_epoch`.
    """

    def __init__(
        self, data: ImageTensors, augment: TensorAugment, *, batch_size: int, seed: int, rank: int = 0,
        sampler: Sampler | None = None,
    ):  # fmt: skip
        self.data, self.augment, self.batch_size = data, augment, batch_size
        self.seed, self.rank, self.sampler, self.epoch = seed, rank, sampler, 0
        self.drop_last = augment.train and len(data) >= 2 * batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _size(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.data)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1_009 + self.rank)
        if self.sampler is not None:
            order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        elif self.augment.train:
            order = torch.randperm(len(self.data), generator=g)
        else:
            order = torch.arange(len(self.data))
        order = order.to(self.data.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.augment(self.data.images[index], g), self.data.labels[index]


# ----------------------------------------------------------------------------------------------
# Throughput


class Timed:
    """Iterate `batches` while timing the waits for each next batch: `images_per_s` and `data_wait`
    (the share of the time since the first request spent waiting) at any point of the epoch."""

    def __init__(self, batches: Iterable, count: Callable[[Any], int]):
        self.batches, self.count = batches, count
        self.images, self.waited, self.started = 0, 0.0, time.perf_counter()

    def __iter__(self) -> Iterator:
        self.images, self.waited, self.started = 0, 0.0, time.perf_counter()
        iterator = iter(self.batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waited += time.perf_counter() - asked
            self.images += self.count(batch)
            yield batch

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    @property
    def data_wait(self) -> float:
        return self.waited / max(self.seconds, 1e-9)


@dataclass
class StepInfo:
    """What a trainer's `on_step` hook receives besides the position: the step's loss (read lazily:
    reading it waits for the GPU) and the epoch's throughput so far."""

    loss_tensor: torch.Tensor
    images_per_s: float
    data_wait: float
    epochs: int  # the run's epochs, as the trainer resolved them (cRT's classifier epochs included)

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)


def step_info(loss: torch.Tensor, timed: Timed, epochs: int) -> StepInfo:
    return StepInfo(loss.detach(), timed.images_per_s, timed.data_wait, epochs)


def throughput(timed: Timed) -> dict[str, float]:
    """An epoch record's throughput fields."""
    return {"images_per_s": timed.images_per_s, "data_wait": timed.data_wait}


__all__ = [
    "CACHE_MODES", "EpochKeys", "EpochLoader", "ImageTensors", "Keyed", "MemoryLoader", "StepInfo", "TensorAugment",
    "Timed", "available_cores", "decode", "default_workers", "feed", "keep_decoded", "plan_cache", "sample_seed",
    "step_info", "stored_side", "throughput",
]  # fmt: skip
