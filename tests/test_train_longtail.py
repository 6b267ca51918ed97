"""`zennas train longtail`: every method end to end on long-tailed real digits, learning, resume, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("torchvision")
pytest.importorskip("sklearn.datasets")

from test_train_classification import ARCH, ROOT, write_digits

from zennas.errors import ConfigError
from zennas.train import LONGTAIL_METHODS
from zennas.train.classification import LongtailConfig, train_classification
from zennas.train.longtail import longtail_counts, shot_groups


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """All 1,797 digits: 30 per class for validation (balanced), the rest for training."""
    return write_digits(tmp_path_factory.mktemp("lt-digits"), val_per_class=30)


def config(data: Path, out: Path, **kw) -> LongtailConfig:
    settings = dict(arch=ARCH, epochs=1, batch_size=32, resolution=16, hflip=0.0, lr=0.2, warmup_epochs=0.5,
                    imbalance_factor=20.0)  # fmt: skip
    return LongtailConfig(data=str(data), out=str(out), **{**settings, **kw})


def _smallest_train_class(data: Path) -> int:
    return min(len(list(d.iterdir())) for d in (data / "train").iterdir())


@pytest.mark.parametrize("method", LONGTAIL_METHODS)
def test_every_method_trains_and_reports_shot_groups(digits, tmp_path, method):
    out = tmp_path / method
    m = train_classification(config(digits, out, method=method, crt_epochs=1, many_threshold=50, few_threshold=20))
    # The long-tailed subset follows the exponential profile from the smallest class of train/.
    assert m["train_counts"] == longtail_counts(_smallest_train_class(digits), 10, 20.0)
    assert m["train_images"] == sum(m["train_counts"]) and m["method"] == method
    assert m["epochs"] == (2 if method == "crt" else 1)
    # The group figures follow from the per-class accuracies and the training counts (computed here).
    per_class = np.array(m["per_class"], dtype=float)
    assert m["balanced_top1"] == pytest.approx(per_class.mean())
    assert m["top1"] == pytest.approx(per_class.mean())  # val/ is balanced: 30 images per class
    for name, classes in shot_groups(m["train_counts"], many=50, few=20).items():
        assert len(classes) > 0 and m[name] == pytest.approx(per_class[classes].mean())
    assert json.loads((out / "metrics.json").read_text()) == m

    # zennas eval rebuilds the saved network (BBN's bilateral head too) and finds the same top-1.
    from cli import main

    result = CliRunner().invoke(main, ["eval", str(out), "--data", str(digits), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["top1"] == pytest.approx(m["top1"])
    if method == "tau-norm":  # tau = 1: unit-norm classifier rows, no bias; the pre-normalisation figures kept
        from safetensors.torch import load_file

        weights = load_file(out / "model.safetensors")
        assert torch.allclose(weights["head.fc.weight"].norm(dim=1), torch.ones(10), atol=1e-5)
        assert not weights["head.fc.bias"].any() and "balanced_top1" in m["before_tau_norm"]
    if method == "dive":  # without --teacher, a balanced-softmax teacher is trained first
        teacher = json.loads((out / "teacher" / "metrics.json").read_text())
        assert teacher["method"] == "balanced-softmax"
    if method == "bbn":
        assert m["trained_params"] > m["params"]  # the re-balancing branch and the wider classifier


@pytest.mark.slow
def test_a_longtail_method_beats_cross_entropy(digits, tmp_path):
    """Imbalance 100 (144 images for digit 0 down to 1 for digit 9): class-balanced re-sampling lifts
    the balanced and the few-shot accuracy far above plain cross-entropy. Measured (10 epochs, seeds
    0/1): CE balanced 30.3/42.3 %, few-shot 0.6/8.9 %; cb-resample 80.7/80.7 % and 71.1/68.9 %.
    The full table over all methods and 3 seeds is benchmarks/bench_train_longtail.py."""
    results = {}
    for method in ("ce", "cb-resample"):
        results[method] = train_classification(
            config(digits, tmp_path / method, method=method, epochs=10, imbalance_factor=100.0)
        )
    ce, cb = results["ce"], results["cb-resample"]
    assert ce["train_counts"] == [144, 86, 51, 31, 18, 11, 6, 4, 2, 1]
    assert cb["balanced_top1"] > ce["balanced_top1"] + 20
    assert cb["few"] > ce["few"] + 30


class _StopError(Exception):
    pass


@pytest.mark.parametrize(("method", "stop_after"), [("crt", 2), ("crt", 3), ("bbn", 1)])
def test_resume_equals_uninterrupted_run(digits, tmp_path, method, stop_after):
    """cRT interrupted at the stage boundary or inside classifier re-training, BBN mid-way."""
    settings = dict(method=method, epochs=2, crt_epochs=2)
    reference = train_classification(config(digits, tmp_path / "a", **settings))

    def stop(record):
        if record["epoch"] == stop_after:
            raise _StopError

    with pytest.raises(_StopError):
        train_classification(config(digits, tmp_path / "b", **settings), on_epoch=stop)
    resumed = train_classification(config(digits, tmp_path / "b", resume=True, **settings))

    def strip(m):
        return {k: v for k, v in m.items() if k != "seconds"}

    assert strip(resumed) == strip(reference)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    stages = [json.loads(line).get("stage") for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert stages == ([1, 1, 2, 2] if method == "crt" else [1, 1])


def test_crt_retrains_only_the_classifier(digits, tmp_path):
    from safetensors.torch import load_file

    train_classification(config(digits, tmp_path / "run", method="crt", epochs=1, crt_epochs=1, ema_decay=0.0))
    stage2 = load_file(tmp_path / "run" / "model.safetensors")
    # Stage 1 alone (the same command with the run stopped after epoch 1) gives the backbone.
    with pytest.raises(_StopError):
        train_classification(config(digits, tmp_path / "s1", method="crt", epochs=1, crt_epochs=1, ema_decay=0.0),
                             on_epoch=lambda r: (_ for _ in ()).throw(_StopError()))  # fmt: skip
    stage1 = {k[len("model/") :]: v for k, v in load_file(next((tmp_path / "s1").glob("checkpoint-*"))).items()
              if k.startswith("model/")}  # fmt: skip
    changed = sorted(k for k in stage2 if not torch.equal(stage2[k], stage1[k]))
    assert changed == ["head.fc.bias", "head.fc.weight"]


def test_cli_end_to_end_and_errors(digits, tmp_path):
    from cli import main

    runner = CliRunner()
    base = ["train", "longtail", "--arch", ARCH, "--data", str(digits), "--resolution", "16", "--batch-size", "32"]
    res = runner.invoke(main, [*base, "--out", str(tmp_path / "o"), "--method", "logit-adjust", "--la-tau", "1.5",
                               "--imbalance-factor", "50", "--epochs", "1", "--hflip", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    # the realised imbalance: 144 images down to int(144 / 50) = 2
    assert "logit-adjust: top-1" in res.output and "few" in res.output and "(imbalance 72)" in res.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert {"top1", "many", "medium", "few", "balanced_top1", "per_class"} <= metrics.keys()

    def one_line(*extra):
        result = runner.invoke(main, [*base, "--out", str(tmp_path / "e"), *extra])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        return lines[0]

    assert "--teacher is used by --method dive only" in one_line("--method", "ce", "--teacher", str(tmp_path / "o"))
    assert "few_threshold 50 exceeds many_threshold 10" in one_line("--few-threshold", "50", "--many-threshold", "10")
    bad = runner.invoke(main, [*base, "--out", str(tmp_path / "e"), "--method", "focal"])
    assert bad.exit_code == 2 and "'focal' is not one of" in bad.output
    with pytest.raises(ConfigError, match="imbalance factor must be"):
        config(digits, tmp_path / "x", imbalance_factor=0.5)


@pytest.mark.slow
def test_torchrun_two_processes_resampling_and_crt(digits, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "cli.py"), "train", "longtail", "--method", "crt", "--imbalance-factor", "20",
           "--arch", ARCH, "--data", str(digits), "--out", str(out), "--epochs", "1", "--crt-epochs", "1",
           "--batch-size", "32", "--resolution", "16", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "checkpoint.json").read_text())["world_size"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["method"] == "crt"
