"""Person re-identification: Market-1501 data, P x K batches, a BNNeck head, ID + triplet loss, CMC/mAP, re-ranking.

Data (Market-1501, Zheng et al. ICCV 2015): DIR/bounding_box_train, DIR/query and DIR/bounding_box_test
(the gallery), one image per detection, named `PPPP_cCsS_FFFFFF_NN.jpg` (person, camera, sequence,
frame, box), e.g. `0002_c1s1_000451_03.jpg`. The reader needs the `PPPP_cC` prefix, so the
DukeMTMC-reID release (`0001_c2_f0046182.jpg`, same folders) reads too. Person -1 marks junk
detections and 0000 distractors: junk is dropped everywhere (the official evaluation ignores it,
which is the same as removing it), distractors stay in the gallery as images that match no query
and are dropped from training. Files that are not images (the release's Thumbs.db) are ignored.

Protocol: for each query, gallery images of the same person *and* the same camera are removed
from its ranking (they are too easy); the rest is ranked by distance (ties by gallery order). CMC
rank-k is the share of queries with a true match among the first k; AP is the mean of the
precision at each true match (the non-interpolated AP of the usual Python evaluators; the
Market-1501 MATLAB code averages adjacent precisions and gives slightly different values), mAP its
mean over queries. Every query needs a true match from another camera (else an error names it).

Units: rank-k and mAP are percentages (0-100) everywhere (metrics.json, metrics.jsonl, the
returned dicts), like top-1 in classification; `chance_metrics` gives the same figures for a
uniformly random ranking, to judge a result against.

Recipe (Luo et al., "Bag of Tricks and a Strong Baseline", CVPRW 2019): backbone -> global average
pool -> f_t (triplet loss) -> BatchNorm1d with a frozen zero bias (the BNNeck) -> f_i -> linear
classifier without bias (label-smoothed cross-entropy over the training identities). Batches hold
P identities x K images; the triplet loss is batch-hard (Hermans et al. 2017): hardest positive
and hardest negative per anchor, with a margin or the soft margin log(1 + exp(d_ap - d_an)).
Inference embeds with f_i by default; `cosine` L2-normalises embeddings before Euclidean distances.

Re-ranking (Zhong et al., CVPR 2017), see `k_reciprocal_rerank`.

Exact resume: the sampler, the augmentation and everything else random in epoch E follow from
(seed, E, rank), and the checkpoint of each epoch holds the weights, the EMA and the optimizer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from zennas.errors import ConfigError
from zennas.io import atomic_write_json, atomic_write_text
from zennas.train.checkpoint import (
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
    save_weights,
)
from zennas.train.classification import ModelEma, TrainConfig, lr_at, resolve_architecture
from zennas.train.core import (
    AMP_DTYPES,
    EpochHook,
    StepHook,
    config_settings,
    param_groups,
    resume_point,
    run_on_ranks,
    training_run,
)
from zennas.train.data import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, torchvision_module
from zennas.train.images import ImageProbe, screen_images
from zennas.train.loading import Timed, default_workers, feed, step_info, throughput
from zennas.train.memory import check_memory, inference_values, training_values

SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JUNK, DISTRACTOR = -1, 0
_NAME = re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:s\d+)?_.+")
PATTERN_HINT = "PPPP_cCsS_FFFFFF_NN.jpg (person, camera, sequence, frame, box), e.g. 0002_c1s1_000451_03.jpg"
OPTIMIZERS = ("adam", "adamw", "sgd")
METRICS = ("cosine", "euclidean")
NECK_FEATURES = ("after", "before")
_RESUME_FREE = ("out", "resume", "overwrite", "device", "workers", "eval_batch_size")


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


# ----------------------------------------------------------------------------------------------
# Model and losses


class BNNeck(nn.Module):
    """Backbone -> GAP -> f_t -> BatchNorm1d (bias frozen at 0) -> f_i -> Linear without bias -> logits."""

    def __init__(self, backbone: nn.Module, channels: int, num_ids: int):
        super().__init__()
        self.backbone = backbone
        self.bottleneck = nn.BatchNorm1d(channels)
        self.bottleneck.bias.requires_grad_(False)  # a shift would move f_i off the hypersphere it is ranked on
        self.classifier = nn.Linear(channels, num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f_t [B, C], f_i [B, C], logits [B, num_ids])."""
        maps = self.backbone(x)  # [B, C, H, W]
        f_t = torch.flatten(F.adaptive_avg_pool2d(maps, 1), 1)  # [B, C]
        f_i = self.bottleneck(f_t)
        return f_t, f_i, self.classifier(f_i)

    def embed(self, x: torch.Tensor, neck: str = "after") -> torch.Tensor:
        """Inference embedding [B, C]: f_i ("after" the BNNeck) or f_t ("before")."""
        f_t, f_i, _ = self(x)
        return f_i if neck == "after" else f_t


def build_reid_model(spec: Any, use_se: bool | None, num_ids: int, height: int, width: int) -> BNNeck:
    """The backbone of `spec` (no classifier) under a BNNeck head for `num_ids` training identities."""
    from zennas.build import BuildOptions, build

    backbone = build(spec, BuildOptions(num_classes=0, use_se=use_se))
    with torch.no_grad():
        maps = backbone.eval()(torch.zeros(1, 3, height, width))
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise ConfigError(f"the backbone of {spec.canonical[:80]!r} does not return a feature map [B, C, H, W]")
    return BNNeck(backbone.train(), maps.shape[1], num_ids)


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Mean over anchors of [d(a, hardest positive) - d(a, hardest negative) + margin]_+ (soft: softplus).

    features [B, D], labels [B]; distances are Euclidean; `margin=None` is the soft margin.
    """
    squared = features.pow(2).sum(1)  # [B]
    dist = (squared[:, None] + squared[None, :] - 2 * features @ features.T).clamp_min(1e-12).sqrt()  # [B, B]
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)  # never the anchor itself
    d_ap = torch.where(positive, dist, torch.zeros_like(dist)).amax(1)  # [B]
    d_an = torch.where(same, torch.full_like(dist, torch.inf), dist).amin(1)  # [B]
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


# ----------------------------------------------------------------------------------------------
# Evaluation


def distance_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Euclidean distances [M, N] (float64) between the rows of a [M, D] and b [N, D]."""
    a, b = a.double(), b.double()
    squared = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T
    return squared.clamp_min(0).sqrt().cpu().numpy()


def _valid_and_good(q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the gallery: ranked at all (not junk, not same person + same camera), and true matches."""
    same = g_pids == q_pid
    valid = (g_pids != JUNK) & ~(same & (g_cams == q_cam))
    return valid, same & valid


def _no_match(index: int, names: Sequence[str] | None, pid: int) -> ConfigError:
    which = names[index] if names is not None else f"query {index}"
    return ConfigError(f"{which}: person {pid} has no gallery image from another camera, so CMC/mAP are undefined")


def evaluate_ranking(
    dist: np.ndarray,
    q_pids: Sequence[int],
    q_cams: Sequence[int],
    g_pids: Sequence[int],
    g_cams: Sequence[int],
    *,
    max_rank: int = 50,
    query_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """CMC and mAP (percent) of a query x gallery distance matrix under the Market-1501 protocol.

    Returns rank1, rank5, rank10, map (percent), cmc (percent at ranks 1..max_rank) and queries.
    Gallery person -1 is junk (never ranked); same person + same camera is excluded per query.
    """
    dist = np.asarray(dist, dtype=np.float64)
    q_pids, q_cams = np.asarray(q_pids), np.asarray(q_cams)
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    if dist.shape != (len(q_pids), len(g_pids)) or len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise ConfigError(f"distance matrix {dist.shape} does not fit {len(q_pids)} queries x {len(g_pids)} gallery")
    cmc = np.zeros(max_rank)
    aps = []
    for i in range(len(q_pids)):
        valid, good = _valid_and_good(q_pids[i], q_cams[i], g_pids, g_cams)
        order = np.argsort(dist[i], kind="stable")
        hits = good[order][valid[order]]  # [valid gallery], True at true matches, in rank order
        if not hits.any():
            raise _no_match(i, query_names, int(q_pids[i]))
        first = int(np.argmax(hits))
        if first < max_rank:
            cmc[first:] += 1
        positions = np.flatnonzero(hits) + 1  # 1-based ranks of the true matches
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
    cmc = 100 * cmc / len(q_pids)
    at = {k: float(cmc[min(k, max_rank) - 1]) for k in (1, 5, 10)}
    return {"rank1": at[1], "rank5": at[5], "rank10": at[10], "map": 100 * float(np.mean(aps)),
            "cmc": cmc.tolist(), "queries": len(q_pids)}  # fmt: skip


def chance_metrics(
    q_pids: Sequence[int], q_cams: Sequence[int], g_pids: Sequence[int], g_cams: Sequence[int]
) -> dict[str, float]:
    """Expected rank1/rank5/rank10/map (percent) of a uniformly random ranking, exactly.

    With n valid gallery images of which r match: P(a match in the first k) = 1 - C(n-r, k)/C(n, k),
    and E[AP] = (H_n + (r-1)/(n-1) * (n - H_n)) / n (H_n the n-th harmonic number).
    """
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    sums = {"rank1": 0.0, "rank5": 0.0, "rank10": 0.0, "map": 0.0}
    for pid, cam in zip(q_pids, q_cams, strict=True):
        valid, good = _valid_and_good(pid, cam, g_pids, g_cams)
        n, r = int(valid.sum()), int(good.sum())
        for k in (1, 5, 10):
            miss = 1.0  # C(n - r, k) / C(n, k) as a running product
            for j in range(min(k, n)):
                miss *= max(0, n - r - j) / (n - j)
            sums[f"rank{k}"] += 1 - miss
        harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
        sums["map"] += (harmonic + (r - 1) / max(1, n - 1) * (n - harmonic)) / n
    return {key: 100 * value / len(q_pids) for key, value in sums.items()}


def k_reciprocal_rerank(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Zhong et al.'s k-reciprocal re-ranking: the final query x gallery distance [Q, G].

    Over all Q + G images, with d the input distance squared and divided by its row maximum (the
    paper's d is a Mahalanobis, i.e. squared, distance; the scaling follows the authors' code):
    - N(p, k): p and its k nearest neighbours (p first; ties by index).
    - R(p, k) = {g in N(p, k) : p in N(g, k)}, the k-reciprocal neighbours (Eq. 3).
    - R*(p, k1) = R(p, k1) plus R(q, round(k1/2)) for every q in R(p, k1) with
      |R(p, k1) & R(q, k1/2)| >= 2/3 |R(q, k1/2)| (Eq. 4; the authors' code uses a strict >).
    - V_p,g = exp(-d(p, g)) on R*(p, k1), 0 elsewhere (Eq. 7), scaled to sum 1 per row (as the
      authors' code does; then Eq. 10's denominator is 2 - the numerator).
    - Local query expansion: V_p = mean of V_g over g in N(p, k2 - 1), i.e. the k2 nearest (Eq. 11).
    - Jaccard distance d_J(p, g) = 1 - sum_j min(V_p,j, V_g,j) / sum_j max(V_p,j, V_g,j) (Eq. 10).
    - Final distance (1 - lambda) d_J + lambda d (Eq. 12).
    Memory: the (Q + G)^2 distance matrix (float32); the encodings V are sparse.
    """
    from scipy import sparse

    q_g, q_q, g_g = (np.asarray(m, dtype=np.float32) for m in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ConfigError(f"re-ranking needs q_g [Q, G], q_q [Q, Q], g_g [G, G]; got {q_g.shape}, {q_q.shape}, "
                          f"{g_g.shape}")  # fmt: skip
    if k1 < 1 or k2 < 1 or not 0 <= lambda_value <= 1:
        raise ConfigError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    n = nq + ng
    dist = np.block([[q_q, q_g], [q_g.T, g_g]])  # [N, N]
    np.square(dist, out=dist)  # in place: at Market-1501's size this matrix alone is 1.5 GB
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    half = round(k1 / 2)
    width = min(n, max(k1, k2) + 1)
    ranked = np.empty((n, width), dtype=np.int64)
    for start in range(0, n, 1024):  # chunks keep the argsort's index matrix small
        ranked[start : start + 1024] = np.argsort(dist[start : start + 1024], axis=1, kind="stable")[:, :width]

    def neighbours(k: int) -> sparse.csr_matrix:  # N(p, k) as a 0/1 matrix
        cols = ranked[:, : min(n, k + 1)]
        rows = np.repeat(np.arange(n), cols.shape[1])
        return sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols.ravel())), shape=(n, n))

    def reciprocal(k: int) -> sparse.csr_matrix:  # R(p, k): g in N(p, k) and p in N(g, k)
        m = neighbours(k)
        return m.multiply(m.T).tocsr()

    r1, rh = reciprocal(k1), reciprocal(half)
    overlap = (r1 @ rh.T).tocsr()  # [p, q] = |R(p, k1) & R(q, k1/2)|
    candidate = r1.multiply(overlap).tocoo()  # q in R(p, k1), valued by the overlap
    sizes = np.asarray(rh.sum(axis=1)).ravel()
    keep = candidate.data >= 2 / 3 * sizes[candidate.col]
    expand = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32),
                                (candidate.row[keep], candidate.col[keep])), shape=(n, n))  # fmt: skip
    r_star = ((r1 + expand @ rh) > 0).tocoo()
    weights = np.exp(-dist[r_star.row, r_star.col])
    v = sparse.csr_matrix((weights, (r_star.row, r_star.col)), shape=(n, n))
    sums = np.asarray(v.sum(axis=1)).ravel()  # > 0 unless p is not among its own k1 + 1 nearest (duplicates)
    v = sparse.diags(1 / np.where(sums > 0, sums, 1)) @ v
    if k2 > 1:
        cols = ranked[:, : min(n, k2)]
        rows = np.repeat(np.arange(n), cols.shape[1])
        mean = sparse.csr_matrix((np.full(rows.size, 1 / cols.shape[1]), (rows, cols.ravel())), shape=(n, n))
        v = (mean @ v).tocsr()
    v = v.tocsr()
    gallery = v[nq:].tocsc()  # [G, N]
    row_sums = np.asarray(v.sum(axis=1)).ravel()
    jaccard = np.ones((nq, ng), dtype=np.float32)
    for i in range(nq):
        start, stop = v.indptr[i], v.indptr[i + 1]
        cols, vals = v.indices[start:stop], v.data[start:stop]
        sub = gallery[:, cols]  # [G, |V_i|], CSC
        mins = np.minimum(sub.data, np.repeat(vals, np.diff(sub.indptr)))
        intersection = np.bincount(sub.indices, weights=mins, minlength=ng)  # [G]
        union = row_sums[i] + row_sums[nq:] - intersection
        jaccard[i] = 1 - np.divide(intersection, union, out=np.zeros(ng), where=union > 0)
    return (1 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]


@torch.no_grad()
def extract_features(
    model: BNNeck,
    loader: DataLoader,
    device: torch.device,
    neck: str = "after",
    autocast: Callable = contextlib.nullcontext,
    channels_last: bool = False,
) -> torch.Tensor:
    """Embeddings [N, C] (float32, CPU) of every image in `loader`, in its order."""
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            out.append(model.embed(x, neck).float().cpu())
    return torch.cat(out)


def evaluate_reid(
    model: BNNeck,
    query: DataLoader,
    gallery: DataLoader,
    device: torch.device,
    *,
    neck: str = "after",
    metric: str = "cosine",
    rerank: tuple[int, int, float] | None = None,
    autocast: Callable = contextlib.nullcontext,
    channels_last: bool = False,
) -> dict[str, Any]:
    """rank1/5/10 and map (percent) of `model` on query vs gallery, plus rerank_* with (k1, k2, lambda)."""
    qf = extract_features(model, query, device, neck, autocast, channels_last)  # [Q, C]
    gf = extract_features(model, gallery, device, neck, autocast, channels_last)  # [G, C]
    if metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    q_ims, g_ims = query.dataset.images, gallery.dataset.images
    ids = ([im.pid for im in q_ims], [im.camera for im in q_ims], [im.pid for im in g_ims], [im.camera for im in g_ims])
    names = [f"query/{Path(im.path).name}" for im in q_ims]
    q_g = distance_matrix(qf, gf)
    result = evaluate_ranking(q_g, *ids, query_names=names)
    if rerank is not None:
        k1, k2, lam = rerank
        final = k_reciprocal_rerank(q_g, distance_matrix(qf, qf), distance_matrix(gf, gf), k1=k1, k2=k2,
                                    lambda_value=lam)  # fmt: skip
        again = evaluate_ranking(final, *ids, query_names=names)
        result.update({f"rerank_{key}": again[key] for key in ("rank1", "rank5", "rank10", "map")})
    return result


# ----------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class ReidConfig:
    """Every setting of a ReID run (None = derived: see `train_reid`).

    p, k: identities per batch and images per identity (per process under torchrun).
    height, width: input size; 256 x 128 is the usual Market-1501 setting.
    lr: default (P*K)/64 x: for Adam/AdamW 3.5e-3 from scratch and 3.5e-4 (BoT's, for an ImageNet-trained
        backbone) with `pretrained`; 0.05 for SGD. From scratch, 3.5e-4 was measured to learn too slowly
        (bench_train_defaults --part reid: rank-1 31.8 % against 59.8 % at 3.5e-3 after 1,000 steps).
    margin: triplet margin; soft_margin replaces it by log(1 + exp(d_ap - d_an)).
    neck: embed with f_i ("after" the BNNeck) or f_t ("before"); metric: "cosine" ranks
        L2-normalised embeddings, "euclidean" the raw ones.
    eval_every: evaluate every N epochs (the last epoch always); rerank: also report k-reciprocal
        re-ranked figures (k1, k2, lambda_value) at the last epoch.
    pretrained: backbone weights from a classification or ReID run (its --out folder or
        model.safetensors; the classifier and the neck are ignored).
    """

    data: str
    out: str
    arch: str | None = None
    run: str | None = None  # a search's --out folder: arch and dialect from result.json (not its resolution)
    dialect: str | None = None
    epochs: int = 60
    p: int = 16
    k: int = 4
    height: int = 256
    width: int = 128
    lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    margin: float = 0.3
    soft_margin: bool = False
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    hflip: float = 0.5
    pad: int | None = None  # default: 10 pixels at height 256, scaled
    erasing: float = 0.5
    skip_bad_images: bool = False  # leave out (and list) image files that do not decode instead of failing
    neck: str = "after"
    metric: str = "cosine"
    eval_every: int = 10
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    ema_decay: float = 0.0  # 0 = no EMA
    grad_clip: float = 0.0
    amp: str = "bf16"  # CUDA only
    channels_last: bool = True  # NHWC on every device
    pretrained: str | None = None
    eval_batch_size: int = 128
    seed: int = 0
    device: str | None = None
    workers: int | None = None  # loader processes (None: zennas.train.loading.default_workers)
    resume: bool = False
    overwrite: bool = False  # start afresh in a non-empty out (zennas.io.claim_output_folder)

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.run is None):
            raise ConfigError("give exactly one of --arch ARCH or --run DIR (a search's --out folder)")
        for name, allowed in (("optimizer", OPTIMIZERS), ("metric", METRICS), ("neck", NECK_FEATURES),
                              ("amp", (*AMP_DTYPES, "off"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("epochs", "eval_every", "eval_batch_size", "k1", "k2"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.p < 2 or self.k < 2:
            raise ConfigError(f"P x K batches need P >= 2 identities and K >= 2 images each, got {self.p} and {self.k}")
        if min(self.height, self.width) < 8:
            raise ConfigError(f"height and width must be at least 8 pixels, got {self.height} x {self.width}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.lambda_value <= 1:
            raise ConfigError("ema_decay must be in [0, 1) and lambda_value in [0, 1]")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.hflip <= 1 or not 0 <= self.erasing <= 1:
            raise ConfigError("label_smoothing must be in [0, 1), hflip and erasing in [0, 1]")
        if min(self.margin, self.id_weight, self.triplet_weight, self.grad_clip, self.warmup_epochs, self.min_lr,
               self.weight_decay, self.pad or 0) < 0:  # fmt: skip
            raise ConfigError("margin, loss weights, grad_clip, warmup_epochs, min_lr, weight_decay, pad must be >= 0")

    def settings(self) -> dict[str, Any]:
        """The settings that fix the result (JSON-able), as stored in checkpoints."""
        return config_settings(self, _RESUME_FREE)


def train_reid(config: ReidConfig, *, on_step: StepHook | None = None, on_epoch: EpochHook | None = None
               ) -> dict[str, Any]:  # fmt: skip
    """Train, checkpoint every epoch in `config.out`, write metrics.jsonl/metrics.json; return metrics.json's content.

    `on_step` and `on_epoch` run on rank 0 only; `on_epoch` runs after the epoch's checkpoint is on
    disk (an exception there interrupts the run at a resumable point).
    """
    return run_on_ranks(
        config.device, lambda dist, device: _train(config, dist, device, device.type == "cuda", on_step, on_epoch)
    )


def _check_memory(config: ReidConfig, spec: Any, use_se: bool | None, device: torch.device, *, amp: bool) -> None:
    """Refuse a P x K training step or an evaluation batch that cannot fit on `device` (before anything is built)."""
    h, w, batch = config.height, config.width, config.p * config.k
    check_memory(training_values(spec, h, w, use_se), batch, device, bytes_per_value=2 if amp else 4,
                 what=f"one training step of {config.p} x {config.k} images of {h}x{w}",
                 lower="--height and --width, or --ids-per-batch or --images-per-id")  # fmt: skip
    check_memory(inference_values(spec, h, w, use_se), config.eval_batch_size, device, bytes_per_value=2 if amp else 4,
                 what=f"embedding {config.eval_batch_size} images of {h}x{w} at once",
                 lower="--eval-batch-size or --height and --width")  # fmt: skip


def _load_pretrained(model: BNNeck, path: str, arch: str) -> None:
    """Backbone weights from a classification or ReID run; classifier and neck keys are ignored."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        raise ConfigError(f"--pretrained {path!r}: no .safetensors weights there; give a training --out folder")
    try:
        state = load_file(file, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"cannot read --pretrained {str(file)!r}: {error}") from None
    if any(key.startswith("backbone.") for key in state):  # a ReID run's weights: the backbone part
        state = {key.removeprefix("backbone."): v for key, v in state.items() if key.startswith("backbone.")}
    own = model.backbone.state_dict()
    load_state_checked(model.backbone, {key: v for key, v in state.items() if key in own}, arch)


def _train(config: ReidConfig, dist: Any, device: torch.device, cuda: bool, on_step, on_epoch) -> dict[str, Any]:
    out = Path(config.out)
    main = dist.rank == 0
    settings = config.settings()
    # --out is claimed (and a checkpoint to resume checked) before the data is read: None starts afresh.
    saved = resume_point(out, settings, config.resume, kind=training_run("reid"), overwrite=config.overwrite)
    spec, _, _, use_se = resolve_architecture(
        TrainConfig(data=config.data, out=config.out, arch=config.arch, run=config.run, dialect=config.dialect)
    )
    height, width = config.height, config.width
    _check_memory(config, spec, use_se, device, amp=cuda and config.amp != "off")
    data = read_market1501(config.data, skip_bad_images=config.skip_bad_images)
    labels = {pid: i for i, pid in enumerate(data.train_ids)}
    train_set = ReidDataset(data.train, reid_transforms(height, width, train=True, hflip=config.hflip, pad=config.pad,
                            erasing=config.erasing), [labels[im.pid] for im in data.train])  # fmt: skip
    test_transform = reid_transforms(height, width, train=False)
    query_set, gallery_set = ReidDataset(data.query, test_transform), ReidDataset(data.gallery, test_transform)
    sampler = PKSampler(train_set.labels, config.p, config.k, seed=config.seed, rank=dist.rank)

    torch.manual_seed(config.seed)
    model = build_reid_model(spec, use_se, len(data.train_ids), height, width)
    if config.pretrained is not None:
        _load_pretrained(model, config.pretrained, spec.canonical)
    channels_last = config.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None

    batch = config.p * config.k
    adam_lr = 3.5e-4 if config.pretrained is not None else 3.5e-3
    lr = config.lr if config.lr is not None else (0.05 if config.optimizer == "sgd" else adam_lr) * batch / 64
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = param_groups(trainable, config.weight_decay)
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr)  # L2 weight decay, as BoT trains
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    amp = cuda and config.amp != "off"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and config.amp == "fp16")

    def autocast():
        return torch.autocast("cuda", dtype=AMP_DTYPES[config.amp]) if amp else contextlib.nullcontext()

    start, history = 0, []
    if saved is not None:
        info = load_checkpoint(out, model=model, optimizer=optimizer, arch=spec.canonical,
                               ema=ema.module if ema else None)  # fmt: skip
        if info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
        start, history = info["epoch"], info["history"]

    wrapped: nn.Module = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    loader_gen = torch.Generator()
    workers = config.workers if config.workers is not None else default_workers(device)
    train_loader = feed(train_set, batch_size=None, train=True, generator=loader_gen, workers=workers, device=device,
                        seed=config.seed, batch_sampler=sampler)  # fmt: skip

    def eval_loader(dataset: ReidDataset) -> DataLoader:
        return feed(dataset, batch_size=config.eval_batch_size, train=False, generator=loader_gen, workers=workers,
                    device=device, seed=config.seed)  # fmt: skip

    query_loader, gallery_loader = eval_loader(query_set), eval_loader(gallery_set)
    steps = len(sampler)
    total, warmup = config.epochs * steps, round(config.warmup_epochs * steps)
    margin = None if config.soft_margin else config.margin
    chance = chance_metrics([im.pid for im in data.query], [im.camera for im in data.query],
                            [im.pid for im in data.gallery], [im.camera for im in data.gallery])  # fmt: skip
    base_info = {
        "arch": spec.canonical, "dialect": spec.dialect, "use_se": use_se, "height": height, "width": width,
        "num_ids": len(data.train_ids), "train_ids": data.train_ids, "neck": config.neck, "metric": config.metric,
        "task": "reid", "settings": settings, "world_size": dist.world,
    }  # fmt: skip
    for epoch in range(start, config.epochs):
        started = time.monotonic()
        # Everything random in this epoch follows from (seed, epoch, rank): resuming replays it exactly.
        torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + dist.rank)
        loader_gen.manual_seed(config.seed * 100_003 + epoch * 1_009 + dist.rank)
        sampler.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        model.train()
        sums = torch.zeros(3, device=device)  # loss, ID loss, triplet loss
        timed = Timed(train_loader, count=lambda b: len(b[1]))
        for step, (x, y) in enumerate(timed):
            global_step = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step, total=total, warmup=warmup, base=lr, minimum=config.min_lr)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                f_t, _, logits = wrapped(x)  # [B, C], [B, C], [B, num_ids]
                id_loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                triplet = batch_hard_triplet(f_t.float(), y, margin)
                loss = config.id_weight * id_loss + config.triplet_weight * triplet
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, global_step)
            sums += torch.stack([loss.detach(), id_loss.detach(), triplet.detach()])
            if main and on_step is not None:
                on_step(epoch + 1, step + 1, steps, step_info(loss, timed))
        if dist.world > 1:
            import torch.distributed as td

            td.all_reduce(sums)
            sums /= dist.world
        train_loss, id_mean, triplet_mean = (float(v) / steps for v in sums)  # one sync per epoch, not per step
        speed = throughput(timed)  # the training steps only, before evaluation
        if not math.isfinite(train_loss):
            raise ConfigError(f"the training loss became {train_loss} in epoch {epoch + 1}; lower --lr")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                                  "id_loss": id_mean, "triplet_loss": triplet_mean}  # fmt: skip
        last = epoch + 1 == config.epochs
        if last or (epoch + 1) % config.eval_every == 0:
            rerank = (config.k1, config.k2, config.lambda_value) if config.rerank and last else None
            scores = evaluate_reid(ema.module if ema else model, query_loader, gallery_loader, device,
                                   neck=config.neck, metric=config.metric, rerank=rerank, autocast=autocast,
                                   channels_last=channels_last)  # fmt: skip
            record.update({key: value for key, value in scores.items() if key not in ("cmc", "queries")})
        record["seconds"] = time.monotonic() - started
        record.update(speed)
        history.append(record)
        if main:
            save_checkpoint(out, epoch=epoch + 1, model=model, optimizer=optimizer, ema=ema.module if ema else None,
                            info={**base_info, "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                  "history": history})  # fmt: skip
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            if on_epoch is not None:
                on_epoch(record)

    final = history[-1]
    keys = ["rank1", "rank5", "rank10", "map"] + (["rerank_rank1", "rerank_rank5", "rerank_rank10", "rerank_map"]
                                                   if config.rerank else [])  # fmt: skip
    metrics = {
        **{key: final[key] for key in keys},
        "units": "percent",
        **{f"chance_{key}": value for key, value in chance.items()},
        "reported": "ema" if ema is not None else "model",
        "embedding": f"bnneck-{config.neck}",
        "metric": config.metric,
        "epochs": len(history),
        "train_loss": final["train_loss"],
        "params": sum(p.numel() for p in model.parameters()),
        "arch": spec.canonical,
        "dialect": spec.dialect,
        "height": height,
        "width": width,
        **data.summary(),
        "skipped_images": [{"path": p.path, "problem": p.problem} for p in data.bad_images],
        "seconds": sum(r["seconds"] for r in history),
    }
    if config.rerank:
        metrics["rerank"] = {"k1": config.k1, "k2": config.k2, "lambda": config.lambda_value}
    if main:
        weights = ema.module if ema is not None else model
        sidecar = {**base_info, "weights": metrics["reported"], "rank1": metrics["rank1"], "map": metrics["map"]}
        save_weights(out / "model.safetensors", weights, sidecar)
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


__all__ = [
    "BNNeck",
    "PKSampler",
    "ReidConfig",
    "ReidData",
    "ReidDataset",
    "ReidImage",
    "batch_hard_triplet",
    "build_reid_model",
    "chance_metrics",
    "distance_matrix",
    "evaluate_ranking",
    "evaluate_reid",
    "extract_features",
    "k_reciprocal_rerank",
    "parse_market_name",
    "read_market1501",
    "reid_transforms",
    "train_reid",
]
