"""Bad values from the command line give one-line errors before any work (issue 13, item 8):
devices, seeds, non-finite budgets, output paths that are folders or cannot be written."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from click.testing import CliRunner

from cli import main
from zennas.device import resolve_device
from zennas.errors import ConfigError, OutputError, ZennasError
from zennas.io import atomic_write_bytes, atomic_write_json, writable_file
from zennas.search.budget import parse_count_budget, parse_latency_budget

CIFAR_NET = "zennet-cifar10-1m"


def one_line_error(result) -> str:
    """The `Error: ...` line of a failed command; fails the test on a traceback or a success."""
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


# --- devices ---------------------------------------------------------------------------------------


def test_resolve_device_accepts_this_machine_and_refuses_the_rest():
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(" cpu ")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    for name in ("tpu", "CPU", "cuda:", "cuda:-1", "cpu:1", "mps:0", "x" * 10_000):
        with pytest.raises(ConfigError, match=r"unknown device|has no index") as info:
            resolve_device(name)
        assert len(str(info.value)) < 200  # a 10,000-character name is not echoed whole
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match=r"does not exist|sees no CUDA GPU"):
        resolve_device("cuda:999")


@pytest.mark.parametrize(
    "args",
    [
        ["score", CIFAR_NET, "-p", "params", "--device", "tpu"],
        ["search", "--space", "zennas-res", "--proxy", "params", "--iterations", "2", "--device", "tpu"],
        ["train", "classification", "--arch", CIFAR_NET, "--data", "nowhere", "--out", "o", "--device", "tpu"],
        ["train", "reid", "--arch", CIFAR_NET, "--data", "nowhere", "--out", "o", "--device", "tpu"],
        ["eval", "o", "--data", "nowhere", "--device", "tpu"],
        ["latency", CIFAR_NET, "--gpu", "V100", "--measure", "--device", "tpu"],
        ["profile", "--space", "zennas-res", "--out", "t.json", "--device", "tpu"],
    ],
)
def test_unknown_device_is_one_line_before_any_work(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(CliRunner().invoke(main, args))
    assert "unknown device 'tpu'" in line
    assert os.listdir(tmp_path) == []  # nothing was started


# --- seeds and budgets -----------------------------------------------------------------------------


def test_negative_seed_is_refused_by_every_command_that_takes_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (
        ["search", "--space", "zennas-res", "--proxy", "params", "--iterations", "2", "--seed", "-5"],
        ["score", CIFAR_NET, "-p", "params", "--seed", "-5"],
        ["train", "classification", "--arch", CIFAR_NET, "--data", "d", "--out", "o", "--seed", "-5"],
        ["latency", "validate", "--table", "cpu-ort-fp32-b1", "--space", "binas", "--seed", "-5"],
    ):
        line = one_line_error(CliRunner().invoke(main, args))
        assert "'--seed': -5 is not in the range" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text", ["1e309ms", "1e308s", "1e400us"])
def test_non_finite_latency_budget_says_so(text):
    # Before: '1e309ms' was reported as "must be positive".
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_latency_budget(text)


def test_non_finite_count_budget_says_so():
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_count_budget("1e400M", "params")
    with pytest.raises(ConfigError, match="must be positive"):
        parse_count_budget("-5M", "params")
    assert parse_count_budget("5.5M", "params") == 5_500_000


def test_search_with_a_huge_budget_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["search", "--budget", "1e309ms", "--gpu", "V100", "--out", str(tmp_path / "o")])
    assert "latency budget '1e309ms' is not a finite number" in one_line_error(result)


# --- output paths ----------------------------------------------------------------------------------


def test_atomic_write_to_a_folder_or_an_unwritable_place_is_an_output_error(tmp_path, monkeypatch):
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_bytes(folder, b"x")
    assert folder.is_dir() and list(folder.iterdir()) == []  # no temporary file left behind
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_json(blocker / "result.json", {"a": 1})  # a file where a folder should be
    assert blocker.read_text() == "mine"

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(OutputError, match="Read-only file system"):
        atomic_write_bytes(tmp_path / "x.bin", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"]  # the temporary file is gone
    assert issubclass(OutputError, ZennasError)


def test_writable_file_refuses_folders_and_file_parents(tmp_path):
    with pytest.raises(OutputError, match="is a folder, not a file"):
        writable_file(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        writable_file(tmp_path / "f" / "x.png")
    assert writable_file(tmp_path / "new" / "x.png") == tmp_path / "new" / "x.png"


def test_export_to_a_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", CIFAR_NET, "--onnx", str(tmp_path)])
    assert "is a folder, not a file" in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_eval_plot_to_a_folder_is_one_line_before_evaluating(tmp_path):
    # The plot path is checked first: no checkpoint or data is needed to see the error.
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--data", "nowhere", "--plot", str(tmp_path)])
    assert "is a folder, not a file" in one_line_error(result)


def test_plots_to_a_folder_are_one_line_before_the_work(tmp_path):
    from conftest import NB201_SAMPLE

    bench = ["bench", "proxies", "--ground-truth", str(NB201_SAMPLE), "--limit", "3", "--no-cache"]
    result = CliRunner().invoke(main, [*bench, "--plot", str(tmp_path)])
    assert "is a folder, not a file" in one_line_error(result)
    validate = ["latency", "validate", "--table", "cpu-ort-fp32-b1", "--space", "binas", "--samples", "3"]
    result = CliRunner().invoke(main, [*validate, "--plot", str(tmp_path), "--log", str(tmp_path / "log.jsonl")])
    assert "is a folder, not a file" in one_line_error(result)
    assert list(tmp_path.iterdir()) == []  # nothing was measured or logged
