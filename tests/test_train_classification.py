"""`zennas train classification`: learning on real digits, metrics files, exact resume, errors, CLI, DDP."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("torchvision")
pytest.importorskip("sklearn.datasets")

from zennas.errors import ConfigError
from zennas.train.checkpoint import load_checkpoint, load_weights, save_checkpoint
from zennas.train.classification import TrainConfig, lr_at, mix_batch, train_classification

ARCH = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperConvK1BNRELU(32,64,1,1)"
OTHER = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
ROOT = Path(__file__).resolve().parents[1]


def write_digits(root: Path, *, val_per_class: int, limit: int | None = None) -> Path:
    """sklearn's 8x8 digits as grey PNGs in ImageFolder layout (a fixed, seeded split)."""
    from zennas.train.synthetic import write_digits_folder

    return write_digits_folder(root, val_per_class=val_per_class, limit=limit)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """All 1,797 digits: 300 for validation, 1,497 for training."""
    return write_digits(tmp_path_factory.mktemp("digits"), val_per_class=30)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """300 digits (about 100 for validation): enough for plumbing tests."""
    return write_digits(tmp_path_factory.mktemp("small"), val_per_class=10, limit=300)


def config(data: Path, out: Path, **kw) -> TrainConfig:
    settings = dict(arch=ARCH, epochs=1, batch_size=32, resolution=16, hflip=0.0, lr=0.2, warmup_epochs=0.5)
    return TrainConfig(data=str(data), out=str(out), **{**settings, **kw})


def test_learns_real_digits_and_writes_metrics(digits, tmp_path):
    out = tmp_path / "run"
    metrics = train_classification(config(digits, out, epochs=3))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for key in ("epoch", "lr", "train_loss", "top1", "top5", "ema_top1", "ema_top5", "seconds"):
        assert key in history[0]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    # Measured: 97-99 % after 3 epochs (chance is 10 %); the bound leaves a wide margin.
    assert metrics["top1"] > 85
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert saved["epochs"] == 3 and saved["top5"] >= saved["top1"] and saved["num_classes"] == 10
    assert saved["params"] > 0 and saved["macs"] > 0 and saved["best_top1"] >= saved["top1"]

    # The final weights reload into a freshly built network and reproduce the reported accuracy.
    from zennas.api import create_model
    from zennas.export import load_safetensors
    from zennas.train.classification import evaluate
    from zennas.train.data import load_classification_data

    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["arch"] == ARCH and sidecar["num_classes"] == 10 and sidecar["resolution"] == 16
    net = load_safetensors(create_model(sidecar["arch"], num_classes=sidecar["num_classes"]), out / "model.safetensors")
    val = load_classification_data(digits, 16).val
    loader = torch.utils.data.DataLoader(val, batch_size=64)  # a plain loader: an independent check
    assert evaluate(net, loader, torch.device("cpu"), torch.no_grad, False)["top1"] == pytest.approx(metrics["top1"])

    # zennas eval: the same top-1 again, a confusion matrix whose diagonal is that top-1, and a PNG
    from cli import main

    result = CliRunner().invoke(main, ["eval", str(out), "--data", str(digits), "--json"])
    assert result.exit_code == 0, result.output
    ev = json.loads(result.output)
    confusion = np.array(ev["confusion_matrix"])
    assert ev["top1"] == pytest.approx(metrics["top1"]) and ev["top5"] == pytest.approx(metrics["top5"])
    assert confusion.sum() == ev["images"] == len(val) and 100 * np.trace(confusion) / confusion.sum() == ev["top1"]
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    other = CliRunner().invoke(main, ["eval", str(out / "nothing"), "--data", str(digits)])
    assert other.exit_code != 0 and "no weights at" in other.output and "Traceback" not in other.output


class _StopError(Exception):
    """Raised by a hook to interrupt a run."""


def test_resume_after_interruption_equals_uninterrupted_run(small, tmp_path):
    # The schedule depends on the total epochs, so the interrupted run is the same 3-epoch command
    # stopped by an exception after epoch 1 (once its checkpoint is on disk), then rerun with resume.
    reference = train_classification(config(small, tmp_path / "a", epochs=3, mixup=0.2, cutmix=1.0))

    def stop(record):
        if record["epoch"] == 1:
            raise _StopError

    with pytest.raises(_StopError):
        train_classification(config(small, tmp_path / "b", epochs=3, mixup=0.2, cutmix=1.0), on_epoch=stop)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 1
    resumed = train_classification(config(small, tmp_path / "b", epochs=3, mixup=0.2, cutmix=1.0, resume=True))

    def strip(m):
        return {k: v for k, v in m.items() if k != "seconds"}

    assert strip(resumed) == strip(reference)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]

    with pytest.raises(ConfigError, match="different settings \\(epochs\\)"):
        train_classification(config(small, tmp_path / "b", epochs=4, mixup=0.2, cutmix=1.0, resume=True))
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        train_classification(config(small, tmp_path / "b", epochs=3, mixup=0.2, cutmix=1.0))


def test_checkpoint_round_trip_without_pickle(tmp_path):
    from zennas.api import create_model

    torch.manual_seed(0)
    net = create_model(ARCH, num_classes=3)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, epoch=2, model=net, optimizer=optimizer, info={"arch": ARCH, "history": []})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2.safetensors", "checkpoint.json"]

    twin = create_model(ARCH, num_classes=3)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=0.5)
    info = load_checkpoint(tmp_path, model=twin, optimizer=twin_opt, arch=ARCH)
    assert info["epoch"] == 2 and info["arch"] == ARCH
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values(), strict=True))
    s1, s2 = optimizer.state_dict(), twin_opt.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for index, entry in s1["state"].items():
        assert all(torch.equal(v, s2["state"][index][k]) for k, v in entry.items())

    save_checkpoint(tmp_path, epoch=3, model=net, optimizer=optimizer, info={"arch": ARCH, "history": []})
    assert not (tmp_path / "checkpoint-2.safetensors").exists()  # the previous epoch's file is dropped

    with pytest.raises(ConfigError) as error:
        load_checkpoint(tmp_path, model=create_model(OTHER, num_classes=3), optimizer=twin_opt, arch=OTHER)
    assert "weights do not match architecture" in str(error.value) and "shape mismatch" in str(error.value)


def test_schedule_and_mixing():
    lrs = [lr_at(s, total=100, warmup=10, base=1.0, minimum=0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])) and lrs[-1] < 0.001
    x = torch.randn(4, 3, 8, 8)
    y = torch.eye(4)
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        mixed, target = mix_batch(x, y, np.random.default_rng(1), mixup=mixup, cutmix=cutmix)
        assert mixed.shape == x.shape and torch.allclose(target.sum(1), torch.ones(4))
    same, target = mix_batch(x, y, np.random.default_rng(1), mixup=0.0, cutmix=0.0)
    assert same is x and target is y


def test_distillation_from_a_trained_teacher(small, tmp_path):
    train_classification(config(small, tmp_path / "teacher", arch=OTHER, ema_decay=0.0))
    metrics = train_classification(config(small, tmp_path / "student", teacher=str(tmp_path / "teacher")))
    assert 0 <= metrics["top1"] <= 100 and np.isfinite(metrics["train_loss"])
    from safetensors.torch import load_file

    tensors = load_file(next((tmp_path / "student").glob("checkpoint-*.safetensors")))
    assert tensors["extra/weight"].shape == (32, 64, 1, 1)  # 1x1 adapter: student 64 -> teacher 32 channels
    with pytest.raises(ConfigError, match="has no weights"):
        train_classification(config(small, tmp_path / "s2", teacher=OTHER))


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_bad_input_gives_one_line_errors(small, tmp_path):
    from cli import main

    runner = CliRunner()

    def run(data, *extra):
        args = ["train", "classification", "--arch", ARCH, "--data", str(data), "--out", str(tmp_path / "o")]
        return _one_line(runner.invoke(main, [*args, "--resolution", "16", *extra]))

    assert "not found" in run(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    assert "unknown dataset format" in run(tmp_path / "flat")

    empty = tmp_path / "empty"
    shutil.copytree(small, empty)
    (empty / "train" / "digit7x").mkdir()
    assert "digit7x" in run(empty)

    unknown = tmp_path / "unknown"
    shutil.copytree(small, unknown)
    shutil.copytree(unknown / "val" / "digit3", unknown / "val" / "cat")
    assert "unknown to train/: cat" in run(unknown)

    from zennas.api import create_model

    with pytest.raises(ConfigError, match="weights do not match architecture") as error:
        net = create_model(ARCH, num_classes=10)
        from safetensors.torch import save_file

        save_file(create_model(OTHER, num_classes=10).state_dict(), tmp_path / "w.safetensors")
        load_weights(tmp_path / "w.safetensors", net, ARCH)
    assert "\n" not in str(error.value)


def test_cli_run_folder_end_to_end(small, tmp_path):
    from cli import main

    search = tmp_path / "search"
    search.mkdir()
    # A search result for 1,000 classes: the head is rebuilt for the dataset's 10.
    result = {"arch": ARCH, "dialect": "zennas-v1", "resolution": 16, "num_classes": 1000}
    (search / "result.json").write_text(json.dumps(result))
    out = tmp_path / "out"
    args = ["train", "classification", "--run", str(search), "--data", str(small), "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--epochs", "1", "--batch-size", "32", "--hflip", "0"])
    assert res.exit_code == 0, res.output
    assert "top-1" in res.output and "epoch 1/1" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 10 and metrics["resolution"] == 16 and metrics["epochs"] == 1
    help_text = CliRunner().invoke(main, ["train", "classification", "--help"]).output
    assert "--resume" in help_text and "--teacher" in help_text


def _write_cifar(root: Path, n: int = 40) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


def test_cifar_layout_is_detected(tmp_path):
    from zennas.train.data import load_classification_data

    data = load_classification_data(_write_cifar(tmp_path), 16)
    assert data.layout == "cifar10" and data.classes[0] == "c0"
    assert len(data.train) == 200 and len(data.val) == 40 and data.train[0][0].shape == (3, 16, 16)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(small, tmp_path):
    out = tmp_path / "ddp"
    # `python -m torch.distributed.run` is torchrun itself, and ships with every torch: no skip needed
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "cli.py"), "train", "classification",
           "--arch", ARCH, "--data", str(small), "--out", str(out), "--epochs", "1", "--batch-size", "32",
           "--resolution", "16", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "checkpoint.json").read_text())["world_size"] == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_a_searched_network_learns_the_digits(digits, tmp_path):
    """The issue's path end to end: `zennas search` (Zen-Score, zennas-res, 50k params) then
    `zennas train classification --run`. Measured: 98.0 % held-out top-1 after 3 epochs at 16 px
    (the benchmark trains a larger searched net at 32 px: benchmarks/bench_train_classification.py)."""
    from cli import main

    runner = CliRunner()
    search = ["search", "--space", "zennas-res", "--preset", "cifar-params1M", "--params-budget", "50k",
              "--flops-budget", "8M", "--convention", "correct", "--max-layers", "8", "--num-classes", "10",
              "--iterations", "60", "--population", "8", "--proxy-batch-size", "4", "--init", OTHER, "--out",
              str(tmp_path / "search"), "--no-plots"]  # fmt: skip
    res = runner.invoke(main, search)
    assert res.exit_code == 0, res.output
    found = json.loads((tmp_path / "search" / "result.json").read_text())
    assert found["arch"] != OTHER and found["params"] <= 50_000  # evolution moved away from the seed
    train = ["train", "classification", "--run", str(tmp_path / "search"), "--data", str(digits), "--out",
             str(tmp_path / "train"), "--epochs", "3", "--batch-size", "32", "--lr", "0.2", "--hflip", "0",
             "--resolution", "16", "--device", "cpu"]  # fmt: skip
    res = runner.invoke(main, train)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["arch"] == found["arch"] and metrics["top1"] >= 90


def test_default_epochs_give_a_small_set_enough_steps(small, tmp_path, monkeypatch):
    from zennas.train import classification as c

    assert (c.DEFAULT_EPOCHS, c.MIN_STEPS) == (10, 300)
    assert c.default_epochs(450, 128) == 100  # 3 steps an epoch
    assert c.default_epochs(1347, 128) == 30  # 10 steps an epoch
    assert c.default_epochs(1_281_167, 256) == 10  # ImageNet: 5,004 steps an epoch
    assert c.default_epochs(10, 128) == 300  # fewer images than a batch: one step an epoch
    # The trainer derives them from the training images (about 200 here: 6 steps of 32), the progress hook
    # hears of them, and the saved settings keep None so that --resume derives the same number.
    monkeypatch.setattr(c, "DEFAULT_EPOCHS", 1)
    monkeypatch.setattr(c, "MIN_STEPS", 12)
    heard = set()

    def on_step(epoch, step, steps, info):
        heard.add((steps, info.epochs))

    metrics = train_classification(config(small, tmp_path / "run", epochs=None, ema_decay=0), on_step=on_step)
    assert heard == {(6, 2)} and metrics["epochs"] == 2
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["settings"]["epochs"] is None
