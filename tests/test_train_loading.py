"""zennas.train.loading: images kept in memory, tensor augmentation, epoch-keyed draws, worker defaults, waits.

Independent references: torchvision's file pipeline (build_transforms) for the kept evaluation images and
the crop windows, torchvision's RandomResizedCrop.get_params for the crop-box distribution, and a loader
with no workers for one with several.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

pytest.importorskip("torchvision")

from zennas.errors import ConfigError
from zennas.train import loading
from zennas.train.classification import ModelEma, TrainConfig, train_classification
from zennas.train.data import IMAGENET_MEAN, IMAGENET_STD, load_classification_data
from zennas.train.loading import (
    MemoryLoader,
    TensorAugment,
    Timed,
    default_workers,
    feed,
    keep_decoded,
    plan_cache,
    step_info,
)

ARCH = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of non-square RGB PNGs in two classes (so resizing and cropping both matter)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(20, 50)), int(rng.integers(20, 50))
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def _normalised(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x.float() / 255 - mean) / std


@pytest.mark.parametrize("resolution", [16, 80])
def test_kept_evaluation_images_equal_the_file_pipeline(folder, resolution):
    data = load_classification_data(folder, resolution)
    kept = keep_decoded(data.val, resolution, train=False, device=torch.device("cpu"))
    loader = MemoryLoader(kept, TensorAugment(resolution, train=False), batch_size=5, seed=0)
    batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert len(loader) == len(batches) == 3 and x.shape == (len(data.val), 3, resolution, resolution)
    reference = torch.stack([data.val[i][0] for i in range(len(data.val))])  # torchvision, from the files
    torch.testing.assert_close(x, reference, atol=1e-5, rtol=0)
    assert y.tolist() == data.val.targets


def test_pad_and_crop_is_a_window_of_the_padded_image_and_flips_at_its_rate():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    out = TensorAugment(16, train=True, hflip=0.0)(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))  # padding 16 // 8, black
    windows = [_normalised(padded[:, :, i : i + 16, j : j + 16]) for i in range(5) for j in range(5)]
    offsets = set()
    for b in range(64):
        hits = [k for k, w in enumerate(windows) if torch.allclose(out[b], w[b], atol=1e-6)]
        assert hits, f"image {b} is no window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets are drawn, not fixed

    flipped = TensorAugment(16, train=True, hflip=0.3)
    big = torch.randint(0, 256, (4000, 3, 16, 16), dtype=torch.uint8, generator=g)
    twice = (
        flipped(big, torch.Generator().manual_seed(2)),
        TensorAugment(16, train=True, hflip=0.0)(big, torch.Generator().manual_seed(2)),
    )
    mirrored = (twice[0] != twice[1]).flatten(1).any(1).float().mean().item()
    assert abs(mirrored - 0.3) < 0.03  # same crops (same draws first), mirrored at the asked rate


def test_resized_crop_boxes_follow_torchvision(monkeypatch):
    """The boxes roi_align receives have torchvision's constraints and its area and aspect distribution."""
    import torchvision
    from torchvision.transforms import RandomResizedCrop

    seen = {}

    def capture(x, boxes, **kw):
        seen["boxes"] = boxes.clone()
        return torch.zeros(x.shape[0], 3, 8, 8)

    monkeypatch.setattr(torchvision.ops, "roi_align", capture)
    side, n = 91, 4000
    TensorAugment(80, train=True, hflip=0.0)(
        torch.zeros(n, 3, side, side, dtype=torch.uint8), torch.Generator().manual_seed(0)
    )
    _, left, top, right, bottom = seen["boxes"].double().unbind(1)
    w, h = right - left, bottom - top
    assert (left >= 0).all() and (top >= 0).all() and (right <= side).all() and (bottom <= side).all()
    assert ((w == w.round()) & (h == h.round()) & (left == left.round())).all()  # whole pixels, as torchvision
    torch.manual_seed(0)
    image = torch.zeros(3, side, side)
    ref = torch.tensor([RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]).double()
    ref_area, area = (ref[:, 2] * ref[:, 3]).mean() / side**2, (w * h).mean() / side**2
    ref_aspect, aspect = torch.log(ref[:, 3] / ref[:, 2]).std(), torch.log(w / h).std()
    assert abs(area - ref_area) < 0.02 and abs(aspect - ref_aspect) < 0.02, (area, ref_area, aspect, ref_aspect)


def test_resized_crop_of_the_whole_image_is_the_image():
    from torchvision.ops import roi_align

    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8).float()
    boxes = torch.tensor([[0, 0, 0, 12, 12], [1, 0, 0, 12, 12]], dtype=torch.float32)
    torch.testing.assert_close(roi_align(x, boxes, output_size=12, sampling_ratio=-1, aligned=True), x)


class Noisy(Dataset):
    """Each item draws from torch's, NumPy's and Python's random state (as augmentations do)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        return torch.rand(2), np.random.rand(), random.random(), index


def _epochs(loader, epochs):
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append([b for b in loader])
    return out


def _same(a, b) -> bool:
    return all(torch.equal(torch.as_tensor(p), torch.as_tensor(q)) for x, y in zip(a, b, strict=True)
               for u, v in zip(x, y, strict=True) for p, q in zip(u, v, strict=True))  # fmt: skip


def test_draws_depend_on_seed_epoch_and_index_not_on_workers():
    def make(workers: int, generator: torch.Generator):
        return feed(Noisy(), batch_size=4, train=True, generator=generator, workers=workers,
                    device=torch.device("cpu"), seed=3)  # fmt: skip

    def run(workers: int, epochs):
        g = torch.Generator()
        loader = make(workers, g)
        result = []
        for epoch in epochs:  # a trainer reseeds the shuffling generator per epoch
            g.manual_seed(100 + epoch)
            result += _epochs(loader, [epoch])
        return result

    alone = run(0, [0, 1, 2])
    assert _same(alone, run(2, [0, 1, 2]))  # persistent workers keep no state between epochs
    assert _same(alone[2:], run(2, [2]))  # a run resumed at epoch 2 draws what the whole run drew
    assert not torch.equal(alone[0][0][0], alone[1][0][0])  # a new epoch draws anew
    assert len(alone[0]) == 2  # 10 items, batch 4: the last partial batch is dropped in training


def test_keyed_draws_leave_the_loops_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    loader = feed(Noisy(), batch_size=4, train=False, generator=torch.Generator(), workers=0,
                  device=torch.device("cpu"), seed=0)  # fmt: skip
    list(loader)
    assert torch.equal(torch.rand(3), expected)


def test_worker_defaults(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for cores, on_cuda, on_cpu in ((1, 1, 0), (2, 2, 1), (16, 8, 4), (64, 8, 4)):
        monkeypatch.setattr(loading, "available_cores", lambda c=cores: c)
        assert (default_workers(cuda), default_workers(cpu)) == (on_cuda, on_cpu)


def test_cache_plan(folder, monkeypatch):
    data = load_classification_data(folder, 16)
    splits = [(data.train, 16), (data.val, 16)]
    cpu = torch.device("cpu")
    assert plan_cache("auto", splits, cpu) == cpu and plan_cache("off", splits, cpu) is None
    size = (len(data.train) + len(data.val)) * 3 * 16 * 16
    monkeypatch.setattr(loading, "_total_ram", lambda: 4 * size - 4)  # a quarter of it is just too small
    assert plan_cache("auto", splits, cpu) is None and plan_cache("memory", splits, cpu) == cpu
    with pytest.raises(ConfigError, match="only ImageFolder and CIFAR"):
        plan_cache("memory", [(Noisy(), 16)], cpu)
    with pytest.raises(ConfigError, match="unknown data cache 'disk'"):
        plan_cache("disk", splits, cpu)
    with pytest.raises(ConfigError, match="unknown data cache"):
        TrainConfig(data=".", out="o", arch=ARCH, data_cache="disk")


def test_timed_counts_images_and_the_share_spent_waiting(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(loading.time, "perf_counter", lambda: clock["now"])

    def slow_batches():
        for _ in range(4):
            clock["now"] += 3.0  # the loader takes 3 s per batch
            yield torch.zeros(8, 1), torch.zeros(8)

    timed = Timed(slow_batches(), count=lambda b: len(b[1]))
    for _ in timed:
        clock["now"] += 1.0  # the step takes 1 s
    assert timed.images == 32 and timed.seconds == 16.0
    assert timed.images_per_s == 2.0 and timed.data_wait == 0.75
    info = step_info(torch.tensor(2.5), timed, 3)
    assert info.loss == 2.5 and info.images_per_s == 2.0 and info.data_wait == 0.75


def test_ema_update_is_the_moving_average():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(net, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].num_batches_tracked += 7
    ema.update(net, step=1000)  # past the ramp: decay 0.9
    live = net.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.9 * before[key] + 0.1 * live[key])
        else:
            assert torch.equal(value, live[key])


@pytest.mark.parametrize("cache", ["memory", "off"])
def test_both_paths_train_and_report_throughput(folder, tmp_path, cache):
    steps = []
    config = TrainConfig(data=str(folder), out=str(tmp_path / cache), arch=ARCH, epochs=1, batch_size=8,
                         resolution=16, data_cache=cache, workers=0)  # fmt: skip
    metrics = train_classification(config, on_step=lambda *a: steps.append(a))
    assert [s[1] for s in steps] == [1, 2, 3] and all(s[2] == 3 for s in steps)  # 24 images, batch 8
    assert all(s[3].images_per_s > 0 and 0 <= s[3].data_wait <= 1 and np.isfinite(s[3].loss) for s in steps)
    history = [json.loads(line) for line in (tmp_path / cache / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["images_per_s"] > 0 and 0 <= history[0]["data_wait"] <= 1
    assert metrics["train_images"] == 24 and metrics["val_images"] == 12
