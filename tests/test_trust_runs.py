"""Runs never damage what is in --out (issue 13, items 6 and 7, and --out paths of item 8).

A search or training run claims its output folder (zennas.io.claim_output_folder): the user's files
are refused and left byte-identical unless --overwrite, a run of the same kind needs --resume, and
--resume needs a checkpoint. A checkpoint or history that does not fit is refused with one line
before anything in the folder changes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from zennas.errors import ConfigError, OutputError
from zennas.io import RUN_MARKER
from zennas.latency.shipped import table_for_gpu
from zennas.search.constraints import resolve_constraints
from zennas.search.evolution import Settings
from zennas.search.report import read_history
from zennas.search.run import search
from zennas.spaces import get_space
from zennas.wiring import Problem, parse_proxy

V100 = table_for_gpu("V100")
SETTINGS = Settings(iterations=24, population=8, batch=4, checkpoint_every=8)
SEARCH_ARGS = ["search", "--budget", "0.2ms", "--gpu", "V100", "--proxy", "zen-analytic", "--iterations", "24",
               "--population", "8", "--batch", "4", "--checkpoint-every", "8", "--no-plots"]  # fmt: skip
USER_FILES = {"result.json": b'{"mine": true}\n', "best.txt": b"my network\n", "pareto.csv": b"a,b\n1,2\n",
              "notes.txt": b"keep me\n"}  # fmt: skip


def problem() -> Problem:
    """The Problem `zennas search` builds from SEARCH_ARGS: its budgets (with the borrowed layer cap) and origins."""
    c = resolve_constraints(get_space("zennas-res"), table=V100, latency_ms_per_image=0.2)
    return Problem(space="zennas-res", proxy=parse_proxy("zen-analytic"), budgets=c.budgets, resolution=224,
                   num_classes=1000, origins=c.origin_items()).with_table(V100)  # fmt: skip


def run_search(out: Path, **kw) -> dict:
    return search(problem(), SETTINGS, out, plots=False, **kw)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder): equal snapshots, an unchanged folder."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def user_folder(path: Path) -> Path:
    path.mkdir()
    for name, data in USER_FILES.items():
        (path / name).write_bytes(data)
    return path


def one_line_error(result) -> str:
    """The `Error: ...` line of a failed command; fails the test on a traceback or a success."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory) -> Path:
    """A finished 24-iteration search folder; tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("search") / "run"
    run_search(out)
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


# --- item 7: the user's files in --out --------------------------------------------------------------


def test_search_refuses_user_files_and_leaves_them_byte_identical(tmp_path):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds files that are not a search .*--overwrite"):
        run_search(out)
    line = one_line_error(CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out)]))
    assert "best.txt, notes.txt, pareto.csv, result.json" in line
    with pytest.raises(ConfigError, match="no search run to continue"):
        run_search(out, resume=True)
    assert snapshot(out) == before  # not even a marker was added


def test_search_overwrite_replaces_the_runs_files_and_keeps_the_others(tmp_path):
    out = user_folder(tmp_path / "mine")
    result = CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["iterations"] == 24
    assert (out / "best.txt").read_text().strip() == json.loads((out / "result.json").read_text())["arch"]
    assert (out / "pareto.csv").read_text().startswith("score,")
    assert (out / "notes.txt").read_bytes() == USER_FILES["notes.txt"]
    assert json.loads((out / RUN_MARKER).read_text())["kind"] == "search"
    # The folder is now a search: refused without --resume, continued (here: re-reported) with it.
    assert "already holds a search: add --resume" in one_line_error(
        CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out)])
    )
    again = CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output


def test_overwrite_of_a_search_starts_afresh_and_resume_continues_the_new_run(finished_search, tmp_path):
    out = copy_of(finished_search, tmp_path)
    (out / "notes.txt").write_bytes(b"keep me\n")
    reference = json.loads((finished_search / "result.json").read_text())
    other = Settings(iterations=16, population=6, batch=4, checkpoint_every=8)
    with pytest.raises(ConfigError, match="other settings"):  # the old run is not continued with new settings
        search(problem(), other, out, resume=True, plots=False)
    result = search(problem(), other, out, overwrite=True, plots=False)
    assert result["iterations"] == 16 and len(read_history(out / "history.jsonl")) == 16
    assert (out / "notes.txt").read_bytes() == b"keep me\n"
    resumed = search(problem(), other, out, resume=True, plots=False)
    assert (resumed["arch"], resumed["score"]) == (result["arch"], result["score"])
    assert reference["iterations"] == 24  # the copy's source is untouched
    with pytest.raises(ConfigError, match="give one of them"):
        run_search(out, resume=True, overwrite=True)


def test_a_folder_of_another_run_kind_is_refused(tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    (out / RUN_MARKER).write_text(json.dumps({"format": "zennas-run", "version": 1, "kind": "train-reid"}))
    (out / "metrics.json").write_text("{}")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds a zennas train-reid run .*not a search run"):
        run_search(out)
    with pytest.raises(ConfigError, match="no search run to continue"):
        run_search(out, resume=True)
    assert snapshot(out) == before


def test_a_search_folder_from_before_the_marker_is_still_recognised(finished_search, tmp_path):
    out = copy_of(finished_search, tmp_path)
    (out / RUN_MARKER).unlink()
    with pytest.raises(ConfigError, match="already holds a search"):
        run_search(out)
    assert run_search(out, resume=True)["arch"] == json.loads((finished_search / "result.json").read_text())["arch"]


def test_resume_without_a_checkpoint_is_an_error_and_keeps_the_history(finished_search, tmp_path):
    out = copy_of(finished_search, tmp_path)
    (out / "checkpoint.json").unlink()
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds no checkpoint\.json to continue from .*--overwrite"):
        run_search(out, resume=True)
    assert "holds no checkpoint.json" in one_line_error(
        CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out), "--resume"])
    )
    assert snapshot(out) == before
    with pytest.raises(ConfigError, match="does not exist, so there is no run to continue"):
        run_search(tmp_path / "never", resume=True)
    assert not (tmp_path / "never").exists()


def test_milp_refuses_user_files_before_any_scoring(tmp_path):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    args = ["search", "--space", "binas", "--table", "cpu-ort-fp32-b1", "--budget", "9ms", "--proxy", "params",
            "--strategy", "milp", "--iterations", "400", "--out", str(out)]  # fmt: skip
    assert "holds files that are not a MILP search" in one_line_error(CliRunner().invoke(main, args))
    assert snapshot(out) == before


# --- item 6: a checkpoint or history that does not fit -----------------------------------------------


def _edit_checkpoint(change):
    def edit(out: Path) -> None:
        data = json.loads((out / "checkpoint.json").read_text())
        change(data)
        (out / "checkpoint.json").write_text(json.dumps(data))

    return edit


def _cut_history(out: Path) -> None:
    path = out / "history.jsonl"
    path.write_bytes(path.read_bytes()[:100])


def _garble_history(out: Path) -> None:
    path = out / "history.jsonl"
    data = bytearray(path.read_bytes())
    data[:4] = b"\x00\x00\x00\x00"  # NUL bytes, as the old truncate padded a short history with
    path.write_bytes(bytes(data))


DAMAGE = {
    "short history": (_cut_history, "holds 100 bytes but the checkpoint covers"),
    "deleted history": (lambda out: (out / "history.jsonl").unlink(), "No such file or directory"),
    "garbled history": (_garble_history, "history.jsonl' line 1 is not valid JSON"),
    "history of other iterations": (
        lambda out: (out / "history.jsonl").write_bytes(
            (out / "history.jsonl").read_bytes().replace(b'"it": 1,', b'"it": 9,', 1)),
        "line 1 is iteration 9",
    ),
    "missing key": (_edit_checkpoint(lambda d: d.pop("population")), r"population is missing"),
    "wrong type": (_edit_checkpoint(lambda d: d.update(history_bytes="12")), "history_bytes is not a byte count"),
    "member of the wrong shape": (
        _edit_checkpoint(lambda d: d["population"][0].update(score="high")), r"population\[0\] has a field"),
    "foreign rng": (
        _edit_checkpoint(lambda d: d.update(rng={"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}})),
        "rng is not a numpy PCG64 generator state",
    ),
    "counts that do not add up": (
        _edit_checkpoint(lambda d: d["counts"].update(scored=d["counts"]["scored"] + 1)), "counts add up to"),
    "not an object": (lambda out: (out / "checkpoint.json").write_text("[1, 2]"), "is not a zennas search checkpoint"),
    "unknown architecture": (
        _edit_checkpoint(lambda d: d["seed_member"].update(arch="NoSuchBlock(1,2)")),
        "seed_member's architecture does not parse",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_refused_with_one_line_and_left_unchanged(finished_search, tmp_path, case):
    damage, message = DAMAGE[case]
    out = copy_of(finished_search, tmp_path)
    damage(out)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=message) as error:
        run_search(out, resume=True)
    assert "\n" not in str(error.value)
    assert snapshot(out) == before


def test_a_damaged_run_through_the_cli_is_one_line(finished_search, tmp_path):
    out = copy_of(finished_search, tmp_path)
    _cut_history(out)
    before = snapshot(out)
    assert "it was cut short" in one_line_error(CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(out), "--resume"]))
    assert snapshot(out) == before and b"\x00" not in (out / "history.jsonl").read_bytes()


class _StopError(Exception):
    """Raised from the progress hook: the run stops with history written past its last checkpoint."""


def test_history_past_the_checkpoint_is_dropped_and_the_run_ends_as_an_uninterrupted_one(finished_search, tmp_path):
    out = tmp_path / "stopped"

    def stop(state) -> None:
        if state.iteration == 12:  # the checkpoint covers iteration 8; the history holds 12
            raise _StopError

    with pytest.raises(_StopError):
        run_search(out, progress=stop)
    assert len(read_history(out / "history.jsonl")) == 12
    assert json.loads((out / "checkpoint.json").read_text())["iteration"] == 8
    resumed = run_search(out, resume=True)
    reference = json.loads((finished_search / "result.json").read_text())
    assert (resumed["arch"], resumed["score"], resumed["counts"]) == (
        reference["arch"], reference["score"], reference["counts"])  # fmt: skip

    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("t_")} for r in read_history(path)]

    assert strip(out / "history.jsonl") == strip(finished_search / "history.jsonl")


def test_read_history_gives_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the search history"):
        read_history(tmp_path / "none.jsonl")
    (tmp_path / "h.jsonl").write_bytes(b'{"it": 1, "status": "duplicate"}\n\x00\x00\n')
    with pytest.raises(ConfigError, match="line 2 is not valid JSON"):
        read_history(tmp_path / "h.jsonl")
    (tmp_path / "h.jsonl").write_text('{"it": 1, "status": "scored"}\n')  # a scored record without its score
    with pytest.raises(ConfigError, match="line 1 is not a zennas search history record"):
        read_history(tmp_path / "h.jsonl")


# --- item 8: --out that is a file or cannot be written ----------------------------------------------


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A path where no folder can be made: under a read-only folder, or (as root, whom permissions do
    not stop) under /sys, which refuses new entries."""
    if os.geteuid() != 0:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        yield parent / "out"
        parent.chmod(0o755)
        return
    path = Path("/sys/zennas-test-out")
    try:
        path.mkdir()
    except OSError:
        yield path
        return
    path.rmdir()
    pytest.skip("no unwritable place on this machine")


def test_out_that_is_a_file_is_one_line_everywhere(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"mine")
    assert "is a file, not a folder" in one_line_error(CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(blocker)]))
    for task in ("classification", "longtail", "reid", "detection"):
        args = ["train", task, "--arch", "zennet-cifar10-1m", "--data", "nowhere", "--out", str(blocker)]
        result = CliRunner().invoke(main, [*args, "--device", "cpu"])
        assert result.exit_code == 2 and "Directory" in result.output and "is a file" in result.output  # click's check
        with pytest.raises(OutputError, match="is a file, not a folder"):  # the library's own check
            from zennas.train.classification import TrainConfig, train_classification

            train_classification(TrainConfig(data="nowhere", out=str(blocker), arch="zennet-cifar10-1m", device="cpu"))
    assert blocker.read_bytes() == b"mine"


def test_out_that_cannot_be_created_is_one_line(unwritable):
    with pytest.raises(OutputError, match="cannot create output folder"):
        run_search(unwritable)
    assert "cannot create output folder" in one_line_error(
        CliRunner().invoke(main, [*SEARCH_ARGS, "--out", str(unwritable)])
    )
    args = ["train", "classification", "--arch", "zennet-cifar10-1m", "--data", "nowhere", "--out", str(unwritable)]
    assert "cannot create output folder" in one_line_error(CliRunner().invoke(main, [*args, "--device", "cpu"]))
    profile = ["profile", "--space", "zennas-res", "--engine", "torch", "--samples", "3", "--limit", "1", "--out",
               str(unwritable / "table.json")]  # fmt: skip
    assert "cannot write" in one_line_error(CliRunner().invoke(main, profile))


def test_profile_and_save_fit_refuse_a_users_file_before_measuring(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_bytes(b'{"my": "data"}\n')
    profile = ["profile", "--space", "zennas-res", "--engine", "torch", "--samples", "3", "--limit", "1", "--runs",
               "1", "--rounds", "1"]  # fmt: skip
    line = one_line_error(CliRunner().invoke(main, [*profile, "--out", str(mine)]))
    assert "exists and is not a zennas latency table, so it is left as it is" in line
    assert "is a folder, not a file" in one_line_error(CliRunner().invoke(main, [*profile, "--out", str(tmp_path)]))
    validate = ["latency", "validate", "--table", "cpu-ort-fp32-b1", "--space", "zennas-res", "--samples", "3",
                "--fit", "--save-fit", str(mine), "--log", str(tmp_path / "log.jsonl")]  # fmt: skip
    assert "is not a zennas latency table" in one_line_error(CliRunner().invoke(main, validate))
    assert mine.read_bytes() == b'{"my": "data"}\n' and not (tmp_path / "log.jsonl").exists()  # nothing measured


# --- training: the same rules, and checkpoints that do not fit ---------------------------------------

TRAIN_ARCH = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
OTHER_ARCH = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,48,1,1)"
TRAIN_USER_FILES = {"metrics.json": b'{"mine": 1}\n', "model.json": b'{"mine": 2}\n', "notes.txt": b"keep me\n"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    pytest.importorskip("torchvision")
    pytest.importorskip("sklearn.datasets")
    from zennas.train.synthetic import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("digits"), val_per_class=4, limit=120)


def train_config(data: Path, out: Path, **kw):
    from zennas.train.classification import TrainConfig

    settings = dict(arch=TRAIN_ARCH, epochs=1, batch_size=32, resolution=8, hflip=0.0, lr=0.1, warmup_epochs=0.0,
                    device="cpu")  # fmt: skip
    return TrainConfig(data=str(data), out=str(out), **{**settings, **kw})


@pytest.fixture(scope="module")
def finished_training(digits, tmp_path_factory) -> Path:
    from zennas.train.classification import train_classification

    out = tmp_path_factory.mktemp("train") / "run"
    train_classification(train_config(digits, out))
    return out


def test_training_refuses_user_files_and_overwrite_replaces_them(digits, tmp_path):
    from zennas.train.classification import train_classification

    out = tmp_path / "mine"
    out.mkdir()
    for name, data in TRAIN_USER_FILES.items():
        (out / name).write_bytes(data)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds files that are not a training checkpoint .*--overwrite"):
        train_classification(train_config(digits, out))
    with pytest.raises(ConfigError, match="no train-classification run to continue"):
        train_classification(train_config(digits, out, resume=True))
    assert snapshot(out) == before
    metrics = train_classification(train_config(digits, out, overwrite=True))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "model.json").read_text())["arch"] == TRAIN_ARCH
    assert (out / "notes.txt").read_bytes() == b"keep me\n"
    with pytest.raises(ConfigError, match="already holds a training checkpoint: add --resume"):
        train_classification(train_config(digits, out))


def test_train_resume_without_a_checkpoint_is_an_error(digits, finished_training, tmp_path):
    from zennas.train.classification import train_classification

    with pytest.raises(ConfigError, match="does not exist, so there is no run to continue"):
        train_classification(train_config(digits, tmp_path / "new", resume=True))
    out = copy_of(finished_training, tmp_path)
    (out / "checkpoint.json").unlink()
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds no checkpoint\.json to continue from"):
        train_classification(train_config(digits, out, resume=True))
    assert snapshot(out) == before


def _edit_sidecar(change):
    def edit(out: Path) -> None:
        data = json.loads((out / "checkpoint.json").read_text())
        change(data)
        (out / "checkpoint.json").write_text(json.dumps(data))

    return edit


def _swap_tensors(change):
    """Rewrite the checkpoint's tensors file with `change(tensors)` applied."""

    def edit(out: Path) -> None:
        from safetensors.torch import load_file, save_file

        name = json.loads((out / "checkpoint.json").read_text())["tensors"]
        tensors = load_file(out / name)
        change(tensors)
        save_file(tensors, out / name)

    return edit


def _momentum_of_wrong_shape(tensors: dict) -> None:
    key = next(k for k in tensors if k.startswith("optimizer/") and k.endswith("momentum_buffer") and
               tensors[k].ndim == 4)  # fmt: skip
    tensors[key] = torch.zeros(1, 2, 3, 3)


def _weights_of_wrong_shape(tensors: dict) -> None:
    key = next(k for k in tensors if k.startswith("model/") and tensors[k].ndim == 4)
    tensors[key] = torch.zeros(3, 3, 1, 1)


TRAIN_DAMAGE = {
    "sidecar without history": (_edit_sidecar(lambda d: d.pop("history")), "history is not one record per epoch"),
    "sidecar epoch of the wrong type": (_edit_sidecar(lambda d: d.update(epoch="1")), "epoch is not a positive"),
    "tensors outside the folder": (
        _edit_sidecar(lambda d: d.update(tensors="../checkpoint-1.safetensors")), "tensors is not the name"),
    "optimizer of the wrong shape": (_edit_sidecar(lambda d: d.update(optimizer=[])), "optimizer has no param_groups"),
    "bad scaler": (_edit_sidecar(lambda d: d.update(scaler={"scale": 1})), "scaler state is not a GradScaler state"),
    "missing tensors file": (
        lambda out: (out / "checkpoint-1.safetensors").unlink(), "checkpoint-1.safetensors', which is missing"),
    "weights of the wrong shape": (_swap_tensors(_weights_of_wrong_shape), "weights do not match architecture"),
    "optimizer state of the wrong shape": (
        _swap_tensors(_momentum_of_wrong_shape), "momentum_buffer has shape \\(1, 2, 3, 3\\)"),
    "not json": (lambda out: (out / "checkpoint.json").write_bytes(b"\x00\x00"), "is not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("case", TRAIN_DAMAGE)
def test_a_damaged_training_checkpoint_is_refused_with_one_line(digits, finished_training, tmp_path, case):
    from zennas.train.classification import train_classification

    damage, message = TRAIN_DAMAGE[case]
    out = copy_of(finished_training, tmp_path)
    damage(out)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=message) as error:
        train_classification(train_config(digits, out, resume=True))
    assert "\n" not in str(error.value)
    assert snapshot(out) == before


def test_a_training_checkpoint_of_another_network_is_refused(digits, finished_training, tmp_path):
    """The settings check names the architecture; the same net under another name would reach the tensors."""
    from zennas.train.classification import train_classification

    out = copy_of(finished_training, tmp_path)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"different settings \(arch\)"):
        train_classification(train_config(digits, out, arch=OTHER_ARCH, resume=True))
    assert snapshot(out) == before


def test_reid_and_detection_claim_out_before_reading_data(tmp_path):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    for task in ("reid", "detection"):
        args = ["train", task, "--arch", "zennet-cifar10-1m", "--data", str(tmp_path / "nowhere"), "--out", str(out)]
        line = one_line_error(CliRunner().invoke(main, [*args, "--device", "cpu"]))
        assert f"not a train-{task}" in line or "not a training checkpoint" in line, line
        help_text = CliRunner().invoke(main, ["train", task, "--help"]).output
        assert "--overwrite" in help_text
    assert snapshot(out) == before
    assert "--overwrite" in CliRunner().invoke(main, ["search", "--help"]).output
    assert "--overwrite" in CliRunner().invoke(main, ["train", "classification", "--help"]).output


def test_legacy_training_folder_is_recognised_and_marker_is_the_runs_kind(digits, finished_training, tmp_path):
    from zennas.train.classification import train_classification

    assert json.loads((finished_training / RUN_MARKER).read_text())["kind"] == "train-classification"
    out = copy_of(finished_training, tmp_path)
    (out / RUN_MARKER).unlink()
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        train_classification(train_config(digits, out))
    metrics = train_classification(train_config(digits, out, resume=True))  # a finished run: re-reported
    assert metrics["epochs"] == 1 and not (out / RUN_MARKER).exists()
    assert np.isfinite(metrics["top1"])
