"""Untrusted training data: CIFAR pickles read without running code, bad image files found before the first
step (refused, or left out and listed with --skip-bad-images), and steps too big for memory refused up front."""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("torchvision")
pytest.importorskip("sklearn.datasets")

from PIL import Image

from zennas.errors import ConfigError
from zennas.train.classification import LongtailConfig, TrainConfig, train_classification
from zennas.train.data import load_classification_data
from zennas.train.images import probe_images
from zennas.train.memory import check_memory, inference_values, training_values
from zennas.train.reid import ReidConfig, read_market1501, train_reid
from zennas.train.synthetic import write_coco_digits, write_digits_folder, write_market_digits

ARCH = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperConvK1BNRELU(32,64,1,1)"
FAST = dict(epochs=1, batch_size=32, resolution=8, hflip=0.0, lr=0.1, warmup_epochs=0.0, ema_decay=0.0)


def _main():
    from cli import main

    return main


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# ----------------------------------------------------------------------------------------------
# CIFAR batches


def _py2_pickle(obj) -> bytes:
    """`obj` (dicts, lists, str, small ints, uint8 arrays) in the opcodes Python 2's cPickle wrote the CIFAR
    files with at protocol 2: str as SHORT_BINSTRING/BINSTRING, arrays through numpy.core.multiarray._reconstruct."""

    def text(raw: bytes) -> bytes:
        return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw

    def integer(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"M" + struct.pack("<H", n)

    def emit(o) -> bytes:
        if isinstance(o, dict):
            return b"}(" + b"".join(emit(k) + emit(v) for k, v in o.items()) + b"u"
        if isinstance(o, list):
            return b"](" + b"".join(emit(v) for v in o) + b"e"
        if isinstance(o, str):
            return text(o.encode("latin1"))
        if isinstance(o, int):
            return integer(o)
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + text(b"u1") + integer(0) + integer(1) + b"\x87R(" + integer(3) + text(b"|")
                 + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + integer(0) + b"tb")  # fmt: skip
        shape = b"(" + b"".join(integer(n) for n in o.shape) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + text(b"b")
                + b"\x87R(" + integer(1) + shape + dtype + b"\x89" + text(o.tobytes()) + b"tb")  # fmt: skip

    return b"\x80\x02" + emit(obj) + b"."


def _cifar10(root: Path, n: int = 20, seed: int = 0) -> tuple[Path, np.ndarray, list[int]]:
    """A CIFAR-10 python folder in the published (Python 2, protocol 2) format; (root, first batch data, labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {"batch_label": f"{name} of 5", "labels": labels, "data": data,
                 "filenames": [f"img_{i:05d}.png" for i in range(n)]}  # fmt: skip
        (folder / name).write_bytes(_py2_pickle(batch))
        first = first or (data, labels)
    meta = {"num_cases_per_batch": n, "label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_py2_pickle(meta))
    return root, *first


def _cifar100(root: Path, n: int = 30) -> Path:
    """A CIFAR-100 folder written by Python 3 at protocol 2 with bytes keys (what `encoding='bytes'` reads)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), np.uint8)
        batch = {b"filenames": [b"a.png"] * n, b"batch_label": b"x", b"fine_labels": [i % 100 for i in range(n)],
                 b"coarse_labels": [i % 20 for i in range(n)], b"data": data}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = {b"fine_label_names": [b"c%d" % i for i in range(100)], b"coarse_label_names": [b"s"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(names, protocol=2))
    return root


class _CreatesFile:
    """A pickle payload that creates `target` when unpickled (what the crafted batch of the report did)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def _plant(folder: Path, name: str, target: Path, protocol: int) -> None:
    """Replace CIFAR file `name` by a dict that looks like a batch but carries the payload."""
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": _CreatesFile(target)}
    (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))


def test_the_payload_runs_under_plain_pickle(tmp_path):
    # The payload is live: plain unpickling (what torchvision's CIFAR10 class does) creates the file.
    target = tmp_path / "created"
    pickle.loads(pickle.dumps({b"labels": _CreatesFile(target)}, protocol=2))
    assert target.exists()


@pytest.mark.parametrize("name", ["batches.meta", "data_batch_3", "test_batch"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_crafted_cifar_file_is_refused_without_running_it(tmp_path, name, protocol):
    root, _, _ = _cifar10(tmp_path / "evil")
    target = tmp_path / "created"
    _plant(root / "cifar-10-batches-py", name, target, protocol)
    with pytest.raises(ConfigError) as info:
        load_classification_data(root, 8)
    message = str(info.value)
    assert not target.exists()
    assert f"{name}' is not a genuine CIFAR batch: it references io.open" in message and "\n" not in message
    assert "cs.toronto.edu/~kriz/cifar.html" in message and "train/CLASS/*.png" in message


def test_crafted_cifar_is_refused_by_train_and_eval_commands(tmp_path):
    genuine, _, _ = _cifar10(tmp_path / "genuine")
    out = tmp_path / "run"
    args = ["--arch", ARCH, "--epochs", "1", "--batch-size", "32", "--resolution", "8", "--hflip", "0"]
    trained = CliRunner().invoke(_main(), ["train", "classification", "--data", str(genuine), "--out", str(out), *args])
    assert trained.exit_code == 0, trained.output

    evil = Path(shutil.copytree(genuine, tmp_path / "evil"))
    target = tmp_path / "created"
    _plant(evil / "cifar-10-batches-py", "test_batch", target, 2)
    for command in (["train", "classification", "--data", str(evil), "--out", str(tmp_path / "o2"), *args],
                    ["train", "longtail", "--data", str(evil), "--out", str(tmp_path / "o3"), *args],
                    ["eval", str(out), "--data", str(evil)]):  # fmt: skip
        assert "is not a genuine CIFAR batch" in _one_line(CliRunner().invoke(_main(), command))
        assert not target.exists()
    assert not (tmp_path / "o2" / "checkpoint.json").exists()

    evaluated = CliRunner().invoke(_main(), ["eval", str(out), "--data", str(genuine), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["images"] == 20


def test_genuine_python2_cifar10_batches_load_exactly(tmp_path, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("user data went through pickle.load")

    # Nothing on the path may use the unrestricted loaders (torchvision's CIFAR10 calls pickle.load).
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    root, data, labels = _cifar10(tmp_path)
    loaded = load_classification_data(root, 32)
    assert loaded.layout == "cifar10" and loaded.classes == [f"class{i}" for i in range(10)]
    assert len(loaded.train) == 100 and len(loaded.val) == 20
    assert loaded.train.targets[:20] == labels
    # Pixels in CIFAR's order (1,024 red, then green, then blue values), as HWC images.
    assert np.array_equal(loaded.train.data[3], data[3].reshape(3, 32, 32).transpose(1, 2, 0))
    image, label = loaded.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == loaded.val.targets[0]


def test_genuine_cifar100_with_bytes_keys_trains(tmp_path):
    root = _cifar100(tmp_path / "data")
    loaded = load_classification_data(root, 8)
    assert loaded.layout == "cifar100" and len(loaded.classes) == 100 and loaded.classes[7] == "c7"
    assert loaded.train.targets[:3] == [0, 1, 2] and len(loaded.val) == 30
    metrics = train_classification(TrainConfig(data=str(root), out=str(tmp_path / "run"), arch=ARCH, **FAST))
    assert metrics["num_classes"] == 100 and metrics["train_images"] == 30 and metrics["epochs"] == 1


def _rewrite(folder: Path, name: str, change) -> None:
    batch = pickle.loads((folder / name).read_bytes(), encoding="latin1")
    change(batch)
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


BAD_CIFAR = {
    "float pixels": (lambda b: b.update(data=b["data"].astype(np.float32)), "'data' must be a uint8 array [N, 3072]"),
    "wrong width": (lambda b: b.update(data=b["data"][:, :1000]), "got uint8 [20, 1000]"),
    "label too big": (lambda b: b["labels"].__setitem__(4, 10), "label 10 is outside 0..9"),
    "negative label": (lambda b: b["labels"].__setitem__(0, -1), "label -1 is outside 0..9"),
    "labels short": (lambda b: b.update(labels=b["labels"][:5]), "'labels' must be 20 integers"),
    "labels as text": (lambda b: b.update(labels=["cat"] * 20), "'labels' must be 20 integers"),
    "no data": (lambda b: b.pop("data"), "'data' must be a uint8 array"),
}


@pytest.mark.parametrize("case", sorted(BAD_CIFAR))
def test_cifar_contents_are_checked(tmp_path, case):
    root, _, _ = _cifar10(tmp_path)
    change, expected = BAD_CIFAR[case]
    _rewrite(root / "cifar-10-batches-py", "data_batch_2", change)
    with pytest.raises(ConfigError, match="data_batch_2") as info:
        load_classification_data(root, 8)
    assert expected in str(info.value), str(info.value)


def test_cifar_missing_and_malformed_files(tmp_path):
    root, _, _ = _cifar10(tmp_path)
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_4").unlink()
    with pytest.raises(ConfigError, match="data_batch_4' not found"):
        load_classification_data(root, 8)
    (folder / "data_batch_4").write_bytes(b"\x80\x02}q\x01(U\x04data")  # cut short
    with pytest.raises(ConfigError, match=r"cannot read .*data_batch_4' as a CIFAR pickle"):
        load_classification_data(root, 8)
    (folder / "data_batch_4").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ConfigError, match="holds a list, not a CIFAR dict"):
        load_classification_data(root, 8)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": "cat"}, protocol=2))
    with pytest.raises(ConfigError, match="no list of class names under 'label_names'"):
        load_classification_data(root, 8)
    # protocol 2 writes bytes as _codecs.encode(text, 'latin1'); any other codec is refused, not run
    (folder / "batches.meta").write_bytes(
        b"\x80\x02}X\x0b\x00\x00\x00label_names]c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86Ras."
    )
    with pytest.raises(ConfigError, match=r"references _codecs\.encode with 'rot13'"):
        load_classification_data(root, 8)


# ----------------------------------------------------------------------------------------------
# Bad image files


def _noise_image(suffix: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    return buffer.getvalue()


def _make_bad(path: Path, kind: str) -> Path:
    """A bad image file of `kind` at `path` (its suffix is replaced to suit the kind); returns the path."""
    if kind == "truncated png":
        path = path.with_suffix(".png")
        path.write_bytes(_noise_image(".png")[:3000])
    elif kind == "truncated jpeg":
        path = path.with_suffix(".jpg")
        data = _noise_image(".jpg")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "text named .png":
        path = path.with_suffix(".png")
        path.write_text("not an image\n")
    else:
        assert kind == "broken symlink"
        os.symlink(path.parent / "gone.png", path)
    return path


KINDS = ("truncated png", "truncated jpeg", "empty file", "text named .png", "broken symlink")
PROBLEMS = {
    "truncated png": "truncated",
    "truncated jpeg": "truncated",
    "empty file": "cannot identify image file",
    "text named .png": "cannot identify image file",
    "broken symlink": "No such file or directory",
}


def test_probe_decodes_fully_where_verify_does_not(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(_noise_image(".jpg"))
    bad = {kind: _make_bad(tmp_path / f"bad{i}.jpg", kind) for i, kind in enumerate(KINDS)}
    with Image.open(bad["truncated jpeg"]) as file:
        file.verify()  # PIL's verify() passes a truncated JPEG; the probe's full decode does not
    probes = probe_images([good, *bad.values()])
    assert probes[0].size == (64, 64) and probes[0].problem is None
    for probe, (kind, path) in zip(probes[1:], bad.items(), strict=True):
        assert probe.path == str(path) and probe.size is None and PROBLEMS[kind] in probe.problem, (kind, probe)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """200 digits in ImageFolder layout, 5 per class in val/."""
    return write_digits_folder(tmp_path_factory.mktemp("digits"), val_per_class=5, limit=200)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("market")
    write_market_digits(root, train_ids=12, test_ids=6, cameras=3, cameras_per_id=2, distractors=4, junk=2,
                        height=32, width=16)  # fmt: skip
    return root


def _bad_copy(source: Path, tmp_path: Path, task: str, kinds: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """A copy of `source` with one bad file of each kind (train split first); (folder, bad paths)."""
    data = Path(shutil.copytree(source, tmp_path / "data", symlinks=True))
    folders = ([data / "train" / "digit0", data / "val" / "digit1"] if task != "reid"
               else [data / "bounding_box_train", data / "query", data / "bounding_box_test"])  # fmt: skip
    bad = []
    for i, kind in enumerate(kinds):
        name = f"bad{i}.png" if task != "reid" else f"0001_c1s1_99{i:04d}_01.jpg"  # person 1 trains
        if task == "reid" and i % len(folders) == 2:
            name = f"0013_c2s1_99{i:04d}_01.jpg"  # a test person in the gallery
        bad.append(_make_bad(folders[i % len(folders)] / name, kind))
    return data, bad


def _run(task: str, data: Path, out: Path, on_step=None, **kw) -> dict:
    if task == "reid":
        config = ReidConfig(data=str(data), out=str(out), arch=ARCH, epochs=1, p=4, k=2, height=16, width=8,
                            erasing=0.0, eval_every=1, **kw)  # fmt: skip
        return train_reid(config, on_step=on_step)
    cls = LongtailConfig if task == "longtail" else TrainConfig
    return train_classification(cls(data=str(data), out=str(out), arch=ARCH, **FAST, **kw), on_step=on_step)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["classification", "longtail", "reid"])
def test_a_bad_image_is_refused_before_the_first_step(digits, market, tmp_path, task, kind):
    data, (bad,) = _bad_copy(market if task == "reid" else digits, tmp_path, task, (kind,))
    steps = []
    with pytest.raises(ConfigError) as info:
        _run(task, data, tmp_path / "out", on_step=lambda *a: steps.append(a))
    message = str(info.value)
    total = 79 if task == "reid" else 201  # every image of every split, the bad one included
    assert f"1 of {total} images in " in message and f"{bad} (" in message and PROBLEMS[kind] in message, message
    assert "--skip-bad-images" in message and "\n" not in message
    assert steps == [] and not (tmp_path / "out" / "checkpoint.json").exists()


def test_many_bad_images_are_counted_and_the_first_named(digits, tmp_path):
    data, bad = _bad_copy(digits, tmp_path, "classification", KINDS * 3)
    with pytest.raises(ConfigError) as info:
        _run("classification", data, tmp_path / "out")
    message = str(info.value)
    assert (
        message.startswith("15 of 215 images in train/ and val/ cannot be decoded: ") and "; and 10 more; " in message
    )
    named = [p for p in bad if f"{p} (" in message]
    assert len(named) == 5 and all(str(p).split("/")[-3] == "train" for p in named)  # train/ is read first


@pytest.mark.parametrize("task", ["classification", "longtail", "reid"])
def test_skip_bad_images_leaves_them_out_and_lists_them(digits, market, tmp_path, task):
    data, bad = _bad_copy(market if task == "reid" else digits, tmp_path, task, KINDS)
    metrics = _run(task, data, tmp_path / "out", skip_bad_images=True)
    listed = {entry["path"]: entry["problem"] for entry in metrics["skipped_images"]}
    assert set(listed) == {str(p) for p in bad}
    for kind, path in zip(KINDS, bad, strict=True):
        assert PROBLEMS[kind] in listed[str(path)]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped_images"] == metrics["skipped_images"]
    if task == "reid":
        assert metrics["train_images"] == len(read_market1501(market).train)  # the 2 bad ones were extra files
    else:
        assert metrics["train_images"] == 150 and metrics["val_images"] == 50  # the original counts


def test_cli_skip_bad_images_prints_what_it_left_out(digits, market, tmp_path):
    data, bad = _bad_copy(digits, tmp_path / "c", "classification", KINDS)
    args = ["--arch", ARCH, "--epochs", "1", "--batch-size", "32", "--resolution", "8", "--hflip", "0"]
    refused = CliRunner().invoke(_main(), ["train", "classification", "--data", str(data), "--out",
                                           str(tmp_path / "o1"), *args])  # fmt: skip
    assert "5 of 205 images in train/ and val/ cannot be decoded" in _one_line(refused)
    ran = CliRunner().invoke(_main(), ["train", "classification", "--data", str(data), "--out", str(tmp_path / "o2"),
                                       *args, "--skip-bad-images"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "left out 5 image(s) that do not decode" in ran.output and "top-1" in ran.output
    assert all(f"  {p}: " in ran.output for p in bad)

    reid_data, reid_bad = _bad_copy(market, tmp_path / "r", "reid", KINDS[:2])
    reid = ["train", "reid", "--arch", ARCH, "--data", str(reid_data), "--epochs", "1", "-P", "4", "-K", "2",
            "--height", "16", "--width", "8", "--erasing", "0"]  # fmt: skip
    assert "2 of 80 images in " in _one_line(CliRunner().invoke(_main(), [*reid, "--out", str(tmp_path / "r1")]))
    ran = CliRunner().invoke(_main(), [*reid, "--out", str(tmp_path / "r2"), "--skip-bad-images"])
    assert ran.exit_code == 0, ran.output
    assert "left out 2 image(s)" in ran.output and all(f"  {p}: " in ran.output for p in reid_bad)
    for command in (["train", "classification"], ["train", "longtail"], ["train", "reid"]):
        assert "--skip-bad-images" in CliRunner().invoke(_main(), [*command, "--help"]).output


def test_reader_checks_market1501_images(market, tmp_path):
    data, bad = _bad_copy(market, tmp_path, "reid", KINDS)
    with pytest.raises(ConfigError, match="5 of 83 images in bounding_box_train/ and query/ and bounding_box_test/"):
        read_market1501(data)
    read = read_market1501(data, skip_bad_images=True)
    assert [p.path for p in read.bad_images] == [str(p) for p in sorted(bad, key=lambda p: (
        ["bounding_box_train", "query", "bounding_box_test"].index(p.parent.name), p.name))]  # fmt: skip
    assert all(im.path not in {str(p) for p in bad} for im in read.train + read.query + read.gallery)


def test_eval_refuses_a_bad_val_image(digits, tmp_path):
    out = tmp_path / "run"
    train_classification(TrainConfig(data=str(digits), out=str(out), arch=ARCH, **FAST))
    data = Path(shutil.copytree(digits, tmp_path / "data"))
    bad = _make_bad(data / "val" / "digit2" / "bad.png", "truncated png")
    message = _one_line(CliRunner().invoke(_main(), ["eval", str(out), "--data", str(data)]))
    assert f"1 of 51 images in val/ cannot be decoded: {bad} (" in message and message.endswith(
        "replace or delete them"
    )


def test_detection_decodes_every_image_before_training(tmp_path):
    from zennas.train.detection import load_coco_data

    data = write_coco_digits(tmp_path / "coco", train_images=8, val_images=4, canvas=64, digit_size=(16, 24),
                             classes=[0, 4], seed=3)  # fmt: skip
    path = Path(data) / "train" / "000004.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the header (and size) still read fine
    with pytest.raises(ConfigError) as info:
        load_coco_data(data)
    message = str(info.value)
    assert "instances_train.json" in message and "images[3] (id 4, '000004.png')" in message
    assert "cannot decode image" in message and "truncated" in message and "1 of 8 images" in message


# ----------------------------------------------------------------------------------------------
# Memory


def test_floors_are_counted_from_the_block_shapes():
    from zennas.arch import parse

    spec = parse(ARCH)
    # input 3x16x16, then 16x16x16, 32x8x8 and 64x8x8
    assert training_values(spec, 16, 16, None) == 3 * 256 + 16 * 256 + 32 * 64 + 64 * 64
    assert training_values(spec, 16, 32, None) == 3 * 512 + 16 * 512 + 32 * 128 + 64 * 128  # H and W apart
    assert inference_values(spec, 16, 16, None) == 32 * 64 + 64 * 64  # the largest consecutive pair


@pytest.mark.parametrize("name", ["zennet-cifar10-1m", "genet-light", ARCH])
def test_training_floor_is_below_what_autograd_keeps(name):
    from zennas.api import create_model, settings_for
    from zennas.models import resolve_arch

    spec, entry = resolve_arch(name, None)
    resolution, _, use_se = settings_for(spec, entry, 32)
    net = create_model(name, num_classes=10).train()
    storages = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        net(torch.randn(2, 3, resolution, resolution))
    kept = sum(storages.values()) - sum(p.numel() * 4 for p in net.parameters())
    assert 4 * 2 * training_values(spec, resolution, resolution, use_se) < kept


def test_check_memory_refuses_exactly_past_the_limit(monkeypatch):
    from zennas.train import memory

    monkeypatch.setattr(memory, "host_memory", lambda: (2**30, "host RAM"))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpu = torch.device("cpu")
    check_memory(2**28, 1, cpu, what="x", lower="y")  # exactly 1 GiB in fp32 fits
    with pytest.raises(ConfigError) as info:
        check_memory(2**28, 2, cpu, what="one training step of 2 images", lower="--resolution or --batch-size")
    assert str(info.value) == (
        "one training step of 2 images needs at least 2.0 GiB of activations (counted from the architecture), "
        "more than the 1.0 GiB of host RAM; lower --resolution or --batch-size"
    )
    check_memory(2**28, 2, cpu, what="x", lower="y", bytes_per_value=2)  # bf16 halves it
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the host's RAM
    with pytest.raises(ConfigError, match=r"\(x 2 processes on this host\) needs at least 2.0 GiB"):
        check_memory(2**28, 1, cpu, what="x", lower="y")


def _refused_quickly(run) -> str:
    """`run()`'s ConfigError message; it must come within seconds and without allocating the step."""
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    with pytest.raises(ConfigError) as info:
        run()
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: no big allocation
    return str(info.value)


def test_training_beyond_any_memory_is_refused_instantly(digits, market, tmp_path):
    # 16,384 pixels and 4,096 images: about 190 TiB of activations, more than any machine holds.
    huge = TrainConfig(data=str(digits), out=str(tmp_path / "a"), arch=ARCH, resolution=16384, batch_size=4096)
    message = _refused_quickly(lambda: train_classification(huge))
    assert message.startswith("one training step of 4096 images of 16384x16384 needs at least 1")
    assert "GiB of activations (counted from the architecture), more than the " in message
    assert message.endswith("; lower --resolution or --batch-size")
    assert not (tmp_path / "a" / "checkpoint.json").exists()

    message = _refused_quickly(lambda: train_reid(ReidConfig(data=str(market), out=str(tmp_path / "b"), arch=ARCH,
                                                             height=16384, width=8192, p=64, k=64)))  # fmt: skip
    assert message.startswith("one training step of 64 x 64 images of 16384x8192 needs at least ")
    assert "lower --height and --width, or --ids-per-batch or --images-per-id" in message

    from zennas.train.detection import DetectionConfig, train_detection

    message = _refused_quickly(lambda: train_detection(DetectionConfig(
        data=str(tmp_path / "nothing"), out=str(tmp_path / "c"), arch=ARCH,
        resolution=16384, batch_size=4096, export_onnx=False)))  # fmt: skip
    assert message.startswith("one training step of 4096 images of 16384x16384 (square images) needs at least ")

    args = ["--arch", ARCH, "--data", str(digits), "--out", str(tmp_path / "d"), "--resolution", "16384"]
    cli = CliRunner().invoke(_main(), ["train", "classification", *args, "--batch-size", "4096"])
    assert "needs at least" in _one_line(cli)


def test_eval_beyond_any_memory_is_refused_before_building(digits, tmp_path):
    out = tmp_path / "run"
    train_classification(TrainConfig(data=str(digits), out=str(out), arch=ARCH, **FAST))
    message = _one_line(CliRunner().invoke(_main(), ["eval", str(out), "--data", str(digits), "--batch-size",
                                                      "1000000000"]))  # fmt: skip
    assert "evaluating 1000000000 images of 8x8 at once needs at least " in message
    assert message.endswith("lower --batch-size")
