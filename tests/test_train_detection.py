"""`zennas train detection`: learning on pasted real digits, COCO checks, exact resume, ONNX, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("sklearn.datasets")

from zennas.errors import ConfigError
from zennas.train.detection import (
    DetectionConfig,
    build_detector,
    coco_map,
    decode_detections,
    export_detector,
    load_backbone_weights,
    load_coco_data,
    predict,
    train_detection,
)
from zennas.train.synthetic import write_coco_digits

# Five stride-2 stages: C3-C5 at strides 8, 16, 32 (C5 is 2x2 on a 64x64 canvas).
ARCH = (
    "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperResK3K3(16,24,2,16,1)"
    "SuperResK3K3(24,32,2,16,1)SuperResK3K3(32,48,2,24,1)"
)
FAST = dict(resolution=64, fpn_channels=32, head_convs=2, hflip=0.0, optimizer="adamw", lr=3e-3, warmup_epochs=0.5,
            batch_size=8, export_onnx=False)  # fmt: skip


def config(data: Path, out: Path, **kw) -> DetectionConfig:
    return DetectionConfig(data=str(data), out=str(out), arch=ARCH, **{**FAST, **kw})


@pytest.fixture(scope="module")
def sevens(tmp_path_factory) -> Path:
    """160 training and 40 val canvases of 1-3 pasted sevens (category id 8): the learning check's data."""
    return write_coco_digits(tmp_path_factory.mktemp("sevens"), train_images=160, val_images=40, canvas=64,
                             digit_size=(14, 22), classes=[7])  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """16 + 8 canvases with two classes (ids 1 and 5): for plumbing, resume, errors and the CLI."""
    return write_coco_digits(tmp_path_factory.mktemp("tiny"), train_images=16, val_images=8, canvas=64,
                             digit_size=(16, 24), classes=[0, 4], seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def learned(sevens, tmp_path_factory) -> tuple[Path, dict]:
    """A detector trained for 6 epochs on `sevens` (about 15 s on one CPU thread): (out folder, metrics)."""
    out = tmp_path_factory.mktemp("learned") / "run"
    return out, train_detection(config(sevens, out, epochs=6))


def _rebuild(out: Path) -> torch.nn.Module:
    from zennas.models import resolve_arch
    from zennas.train.checkpoint import load_weights

    info = json.loads((out / "model.json").read_text())
    spec, _ = resolve_arch(info["arch"])
    detector = build_detector(
        spec,
        info["num_classes"],
        fpn_channels=info["fpn_channels"],
        head_convs=info["head_convs"],
        min_size=info["resolution"],
        max_size=info["max_size"],
    )
    return load_weights(out / "model.safetensors", detector, spec.canonical).eval()  # fmt: skip


@pytest.mark.slow
def test_learns_pasted_digits_and_writes_metrics(sevens, learned):
    out, metrics = learned
    # An untrained detector on the same val set: its scores sit near the 0.01 prior.
    from zennas.models import resolve_arch

    torch.manual_seed(0)
    _, val = load_coco_data(sevens)
    untrained = build_detector(resolve_arch(ARCH)[0], 1, fpn_channels=32, head_convs=2, min_size=64, max_size=106)
    baseline = coco_map(val, predict(untrained, val, torch.device("cpu")))["map_50"]
    # Measured: 0.985 after 6 epochs (the untrained detector: 0.000); the bounds leave a wide margin.
    assert metrics["map_50"] > 0.8 > 0.1 > baseline
    assert 0 <= metrics["map"] <= metrics["map_50"] <= 1 and metrics["map_75"] <= metrics["map_50"]

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and saved["epochs"] == 6 and saved["num_classes"] == 1 and saved["reported"] == "ema"
    assert saved["train_images"] == 160 and saved["val_images"] == 40 and saved["best_map"] >= saved["map"]
    assert 0 < saved["backbone_params"] < saved["params"]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, 7))
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["categories"] == [{"id": 8, "name": "7"}] and sidecar["arch"] == ARCH

    # The saved weights reproduce the reported mAP exactly in a freshly built detector.
    assert coco_map(val, predict(_rebuild(out), val, torch.device("cpu"))) == {
        k: metrics[k] for k in ("map", "map_50", "map_75")
    }


def test_coco_map_of_the_ground_truth_is_one(tiny):
    _, val = load_coco_data(tiny)
    assert val.category_ids == [1, 5]  # digits 0 and 4: COCO ids need not be contiguous
    truth = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
             for a in val.coco["annotations"]]  # fmt: skip
    assert coco_map(val, truth) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}
    swapped = [{**r, "category_id": 6 - r["category_id"]} for r in truth]
    assert coco_map(val, swapped)["map_50"] < 0.1
    assert coco_map(val, []) == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}


def _break(data: Path, split: str, change) -> None:
    path = data / "annotations" / f"instances_{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


def _set(key: str, index: int, field: str, value):
    def change(coco):
        coco[key][index][field] = value

    return change


BAD_INPUTS = {
    "not json": (lambda p: p.write_text('{"images": [}'), "not valid JSON"),
    "no images": (lambda p: _break(p, "train", lambda c: c.pop("images")), "top level: no 'images'"),
    "no file_name": (lambda p: _break(p, "train", _set("images", 2, "file_name", "")), "images[2] (id 3)"),
    "duplicate image": (lambda p: _break(p, "train", _set("images", 1, "id", 1)), "images[1] (id 1): duplicate"),
    "unknown image": (lambda p: _break(p, "train", _set("annotations", 0, "image_id", 999)), "annotations[0] (id 1)"),
    "unknown class": (lambda p: _break(p, "val", _set("annotations", 1, "category_id", 3)), "annotations[1] (id 2)"),
    "short bbox": (lambda p: _break(p, "train", _set("annotations", 2, "bbox", [1, 2, 3])), "annotations[2] (id 3)"),
    "degenerate": (lambda p: _break(p, "train", _set("annotations", 0, "bbox", [5, 5, 0, 9])), "is degenerate"),
    "outside": (lambda p: _break(p, "val", _set("annotations", 0, "bbox", [50, 50, 20, 9])), "outside the 64x64"),
    "wrong size": (lambda p: _break(p, "val", _set("images", 0, "width", 80)), "the file is 64x64"),
    "missing image": (lambda p: (p / "train" / "000004.png").unlink(), "images[3] (id 4, '000004.png')"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_coco_input_gives_one_line_error_naming_file_and_entry(tiny, tmp_path, case):
    data = Path(shutil.copytree(tiny, tmp_path / "data"))
    damage, expected = BAD_INPUTS[case]
    split = "val" if case in ("unknown class", "outside", "wrong size") else "train"
    damage(data / "annotations" / f"instances_{split}.json" if case == "not json" else data)
    with pytest.raises(ConfigError) as info:
        load_coco_data(data)
    message = str(info.value)
    assert "\n" not in message and f"instances_{split}.json" in message and expected in message, message


def test_skip_bad_boxes_drops_and_counts(tiny, tmp_path):
    data = Path(shutil.copytree(tiny, tmp_path / "data"))
    _break(data, "train", _set("annotations", 0, "bbox", [5, 5, 0, 9]))
    _break(data, "train", _set("annotations", 1, "bbox", [60, 5, 20, 9]))
    before = len(json.loads((tiny / "annotations" / "instances_train.json").read_text())["annotations"])
    train, _ = load_coco_data(data, skip_bad_boxes=True)
    assert train.skipped == 2 and train.annotations == before - 2

    def all_bad(coco):
        for a in coco["annotations"]:
            a["bbox"] = [0, 0, 0, 0]

    _break(data, "train", all_bad)
    with pytest.raises(ConfigError, match="no \\(non-crowd\\) annotations to train on"):
        load_coco_data(data, skip_bad_boxes=True)


class _StopError(Exception):
    """Raised by a hook to interrupt a run."""


def test_resume_after_interruption_equals_uninterrupted_run(tiny, tmp_path):
    settings = dict(epochs=3, batch_size=4, hflip=0.5)  # flips exercise the per-epoch augmentation seeds
    reference = train_detection(config(tiny, tmp_path / "a", **settings))

    def stop(record):
        if record["epoch"] == 1:
            raise _StopError

    with pytest.raises(_StopError):
        train_detection(config(tiny, tmp_path / "b", **settings), on_epoch=stop)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 1
    resumed = train_detection(config(tiny, tmp_path / "b", resume=True, **settings))

    def strip(m):
        return {k: v for k, v in m.items() if k != "seconds"}

    assert strip(resumed) == strip(reference)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="different settings \\(epochs\\)"):
        train_detection(config(tiny, tmp_path / "b", resume=True, **{**settings, "epochs": 4}))
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        train_detection(config(tiny, tmp_path / "b", **settings))


@pytest.mark.slow
def test_onnx_detector_matches_torch_detections(learned, sevens, tmp_path):
    import onnxruntime as ort

    from zennas.train.detection import CocoDataset

    detector = _rebuild(learned[0])
    path = tmp_path / "detector.onnx"
    report = export_detector(detector, path, 64)  # the default exporter (dynamo)
    assert report["passed"] and report["max_rel_error"] < 1e-4, report
    assert report["input_shape"] == ["batch", 3, 64, 64] and report["level_sizes"] == [64, 16, 4, 1, 1]

    # Real val images through onnxruntime, then decode_detections: torchvision's FCOS detections.
    _, val = load_coco_data(sevens)
    images = torch.stack([CocoDataset(val)[i][0] for i in range(6)])  # [6, 3, 64, 64] in [0, 1]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(None, {"images": images.numpy()})
    decoded = decode_detections(torch.from_numpy(boxes), torch.from_numpy(scores), report["level_sizes"], (64, 64))
    with torch.no_grad():
        expected = detector(list(images))
    assert sum(len(e["boxes"]) for e in expected) >= 6  # the trained detector finds the digits
    for got, want in zip(decoded, expected, strict=True):
        assert torch.equal(got["labels"], want["labels"])
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)


def test_backbone_needs_c3_to_c5_and_loads_classification_weights(tmp_path):
    from zennas.api import create_model
    from zennas.models import resolve_arch
    from zennas.train.checkpoint import save_weights

    shallow = "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperResK3K3(16,24,2,16,1)"
    with pytest.raises(ConfigError, match=r"strides 8, 16 and 32 .* reaches 4, 8"):
        build_detector(resolve_arch(shallow)[0], 2)

    torch.manual_seed(1)
    classifier = create_model(ARCH, num_classes=10)
    save_weights(tmp_path / "model.safetensors", classifier, {"arch": ARCH})
    detector = build_detector(resolve_arch(ARCH)[0], 2, fpn_channels=32, head_convs=1)
    load_backbone_weights(detector, tmp_path, ARCH)
    body = detector.backbone.body.state_dict()
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in body.items())
    narrower = build_detector(resolve_arch(ARCH.replace("48", "40"))[0], 2, fpn_channels=32)
    with pytest.raises(ConfigError, match="weights do not match"):
        load_backbone_weights(narrower, tmp_path, ARCH)


def test_synthetic_digits_are_seeded_and_valid(tiny, tmp_path):
    again = write_coco_digits(tmp_path / "again", train_images=16, val_images=8, canvas=64, digit_size=(16, 24),
                              classes=[0, 4], seed=3)  # fmt: skip
    for name in ("instances_train.json", "instances_val.json"):
        assert (again / "annotations" / name).read_text() == (tiny / "annotations" / name).read_text()
    assert (again / "val" / "000001.png").read_bytes() == (tiny / "val" / "000001.png").read_bytes()
    train, val = load_coco_data(again)  # every box passes the reader's checks
    assert train.category_ids == val.category_ids == [1, 5]
    sides = np.concatenate([b[:, 2:] - b[:, :2] for b in train.boxes])  # [N, 2] ink widths and heights
    assert sides.min() > 0 and sides.max() <= 24
    with pytest.raises(ConfigError, match="classes must be digits"):
        write_coco_digits(tmp_path / "bad", classes=[10])


def test_cli_trains_evaluates_and_exports(tiny, tmp_path):
    from cli import main

    out = tmp_path / "run"
    args = ["train", "detection", "--arch", ARCH, "--data", str(tiny), "--out", str(out), "--epochs", "1",
            "--batch-size", "4", "--resolution", "64", "--fpn-channels", "32", "--head-convs", "1",
            "--onnx-exporter", "torchscript"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mAP@0.5" in result.output and "detector.onnx" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"map", "map_50", "map_75", "epochs"} <= metrics.keys() and metrics["onnx"]["passed"]
    assert (out / "detector.onnx").is_file() and json.loads((out / "detector.json").read_text())["num_classes"] == 2

    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "already holds a training checkpoint" in again.output
    bad = CliRunner().invoke(main, ["train", "detection", "--arch", ARCH, "--data", str(tmp_path / "x"),
                                    "--out", str(tmp_path / "o")])  # fmt: skip
    assert bad.exit_code != 0 and bad.output.startswith("Error:") and len(bad.output.strip().splitlines()) == 1
    assert "Traceback" not in bad.output
    both = CliRunner().invoke(main, ["train", "detection", "--data", str(tiny), "--out", str(tmp_path / "o")])
    assert both.exit_code != 0 and "exactly one of --arch" in both.output

    # --run: a search's --out folder gives the architecture and the resolution (result.json).
    search = tmp_path / "search"
    search.mkdir()
    (search / "result.json").write_text(json.dumps({"arch": ARCH, "dialect": "zennas-v1", "resolution": 64}))
    run = CliRunner().invoke(main, ["train", "detection", "--run", str(search), "--data", str(tiny), "--out",
                                    str(tmp_path / "from-run"), "--epochs", "1", "--batch-size", "8",
                                    "--fpn-channels", "16", "--head-convs", "1", "--no-onnx"])  # fmt: skip
    assert run.exit_code == 0, run.output
    from_run = json.loads((tmp_path / "from-run" / "metrics.json").read_text())
    assert from_run["arch"] == ARCH and from_run["resolution"] == 64 and "onnx" not in from_run


def test_cli_help():
    from cli import main

    result = CliRunner().invoke(main, ["train", "detection", "--help"])
    assert result.exit_code == 0 and "--backbone-weights" in result.output and "COCO" in result.output


def test_default_input_side_is_the_images_own(tiny, tmp_path):
    from types import SimpleNamespace

    from zennas.train.detection import NATIVE_SIDE_CAP, native_side

    def split(*sizes):
        return SimpleNamespace(coco={"images": [{"width": w, "height": h} for w, h in sizes]})

    assert native_side(split((96, 96), (120, 80), (640, 480))) == 96  # median of the shorter sides 96, 80, 480
    assert native_side(split((20, 30))) == 32  # C5 needs 32 pixels
    assert native_side(split((4000, 3000))) == NATIVE_SIDE_CAP
    # ARCH alone says 224; the 64-pixel canvases are trained at 64 (not scaled up) unless --resolution says otherwise.
    metrics = train_detection(config(tiny, tmp_path / "run", resolution=None, epochs=1, batch_size=4))
    assert json.loads((tmp_path / "run" / "model.json").read_text())["resolution"] == 64
    assert metrics["epochs"] == 1
