"""`zennas score` and `zennas bench proxies`: JSON shape, correlations, cache, degenerate handling, errors, ensemble."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import cli
import zennas.proxies
from zennas.arch.nb201 import from_index, is_degenerate
from zennas.bench import (
    RankEnsemble,
    ScoreCache,
    correlate,
    dataset_settings,
    orient,
    parse_options,
    rank_aggregate,
    select_members,
    split_half,
)
from zennas.proxies import ProxyResult

INDEX_11 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"
# Official indices with made-up accuracies; cell 10 is degenerate (no non-`none` path from input to output).
TINY = [11, 10, 48, 50, 52, 53, 65, 82]


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def write_csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny_csv(tmp_path: Path) -> tuple[Path, list[float], list[str]]:
    """Eight NB201 cells with accuracies that are not monotone in params."""
    archs = [from_index(i).canonical for i in TINY]
    accuracy = [91.5, 72.0, 86.5, 93.1, 93.3, 52.0, 90.2, 88.8]
    rows = [(str(i), a, str(acc)) for i, a, acc in zip(TINY, archs, accuracy, strict=True)]
    return write_csv(tmp_path / "gt.csv", rows, ("index", "arch", "cifar10_test")), accuracy, archs


class CountingScore:
    """Wraps zennas.proxies.score: counts calls, can fail at call `fail_at`, can flag chosen cells degenerate."""

    def __init__(self, fail_at: int | None = None, degenerate: bool = False) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.degenerate = degenerate
        self.real = zennas.proxies.score

    def __call__(self, spec, proxies, **kwargs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt  # the user pressing Ctrl-C in the middle of a run
        results = self.real(spec, proxies, **kwargs)
        if self.degenerate and is_degenerate(spec):
            return {n: ProxyResult(n, None, None, (), r.higher_is_better, True, r.meta) for n, r in results.items()}
        return results


# --- zennas score ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["score"], ["bench"], ["bench", "proxies"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_score_json_of_a_known_cell():
    result = run("score", INDEX_11, "--proxy", "params,flops", "--repeats", "2", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data) == ["params", "flops"]
    assert data["params"]["mean"] == 802426.0 and data["params"]["values"] == [802426.0, 802426.0]
    assert data["params"]["std"] == 0.0 and data["params"]["degenerate"] is False
    assert data["params"]["higher_is_better"] is True
    assert data["flops"]["mean"] == zennas.info(INDEX_11)["macs"] == 113951360
    assert data["flops"]["meta"]["resolution"] == 32 and data["flops"]["meta"]["num_classes"] == 10
    nb201 = json.loads(run("score", INDEX_11, "-p", "flops", "--option", "convention=nb201", "--json").stdout)
    assert nb201["flops"]["meta"]["options"] == {"convention": "nb201"}
    assert nb201["flops"]["mean"] == zennas.info(INDEX_11)["nb201_flops"]


def test_score_table_and_errors():
    table = run("score", INDEX_11, "-p", "params", "--num-classes", "100")
    assert table.exit_code == 0 and "params" in table.output and "808276" in table.output
    for args, message in [
        (["-p", "nope"], "unknown proxy 'nope'"),
        (["-p", "params", "--mode", "zennas"], "apply to none of the proxies params"),
        (["-p", "params", "--option", "novalue"], "is not KEY=VALUE"),
    ]:
        result = CliRunner().invoke(cli.main, ["score", INDEX_11, *args])
        assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_parse_options_reads_types():
    assert parse_options(["a=1", "b=0.5", "c=true", "d=zennas", "e = x=y"]) == {
        "a": 1, "b": 0.5, "c": True, "d": "zennas", "e": "x=y",
    }  # fmt: skip


# --- zennas bench proxies -------------------------------------------------------------------------


def test_bench_matches_scipy(tiny_csv, tmp_path):
    path, accuracy, archs = tiny_csv
    result = run("bench", "proxies", "--ground-truth", str(path), "-p", "params,flops", "--cache", str(tmp_path / "c"),
                 "--json")  # fmt: skip
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    params = [zennas.info(a)["params"] for a in archs]
    macs = [zennas.info(a)["macs"] for a in archs]
    for name, values in (("params", params), ("flops", macs)):
        assert data[name]["n"] == len(TINY)
        assert data[name]["spearman"] == pytest.approx(stats.spearmanr(values, accuracy).statistic, abs=1e-12)
        assert data[name]["kendall"] == pytest.approx(stats.kendalltau(values, accuracy).statistic, abs=1e-12)
    assert data["_settings"]["degenerate"] == "worst" and data["_settings"]["resolution"] == 32


def test_bench_table_states_orientation_and_degenerate_handling(tiny_csv, tmp_path):
    path, _, _ = tiny_csv
    result = run("bench", "proxies", "--ground-truth", str(path), "--no-cache", "--degenerate", "drop")
    assert result.exit_code == 0
    assert "higher score = predicted better" in result.stdout
    assert "left out (drop)" in result.stdout and "spearman" in result.stdout
    assert "scoring" in result.stderr and "scoring" not in result.stdout  # progress on stderr only


def test_bench_any_csv_dialect_and_dataset_inference(tmp_path):
    archs = [from_index(i).canonical for i in TINY]
    rows = [(a, str(50 + k)) for k, a in enumerate(archs)]
    path = write_csv(tmp_path / "gt.tsv", rows, ("genotype", "cifar100_test"), delimiter=";")
    result = run("bench", "proxies", "--ground-truth", str(path), "--arch-column", "genotype", "--acc-column",
                 "cifar100_test", "-p", "params", "--no-cache", "--json")  # fmt: skip
    data = json.loads(result.stdout)
    assert data["_settings"]["num_classes"] == 100 and data["params"]["n"] == len(TINY)
    assert dataset_settings("imagenet16_120_test") == (16, 120, "imagenet16-120")
    assert dataset_settings("cifar10valid_xvalid") == (32, 10, "cifar10")
    assert dataset_settings("top1", "cifar100", num_classes=7) == (32, 7, "cifar100")
    assert dataset_settings("top1") == (None, None, None)


def test_cache_reuse_and_limit_superset(tiny_csv, tmp_path, monkeypatch):
    path, _, _ = tiny_csv
    counter = CountingScore()
    monkeypatch.setattr(zennas.proxies, "score", counter)
    base = ["bench", "proxies", "--ground-truth", str(path), "-p", "params,flops", "--cache", str(tmp_path / "c")]
    first = json.loads(run(*base, "--limit", "4", "--json").stdout)
    assert counter.calls == 8 and first["params"]["computed"] == 4
    full = json.loads(run(*base, "--json").stdout)
    assert counter.calls == 16 and full["params"]["computed"] == 4  # only the 4 new rows
    again = json.loads(run(*base, "--json").stdout)
    assert counter.calls == 16 and again["params"]["computed"] == 0
    assert again["params"]["spearman"] == full["params"]["spearman"]
    # Any setting in the key forces a recomputation; the cache folder keeps itself out of git.
    run(*base, "--seed", "1", "--json")
    assert counter.calls == 32
    assert (tmp_path / "c" / ".gitignore").read_text().strip().endswith("*")


def test_interrupted_run_keeps_finished_results(tiny_csv, tmp_path, monkeypatch):
    path, _, _ = tiny_csv
    counter = CountingScore(fail_at=6)
    monkeypatch.setattr(zennas.proxies, "score", counter)
    base = ["bench", "proxies", "--ground-truth", str(path), "-p", "params", "--cache", str(tmp_path / "c")]
    interrupted = CliRunner().invoke(cli.main, [*base, "--json"])
    assert interrupted.exit_code != 0  # click reports the abort
    counter.fail_at = None
    rerun = json.loads(run(*base, "--json").stdout)
    assert rerun["params"]["computed"] == len(TINY) - 5  # the 5 finished cells were kept


def test_cache_writer_survives_a_crash_mid_write(tmp_path, monkeypatch):
    cache = ScoreCache(tmp_path / "c")
    key = {"arch": "a", "proxy": "p", "seed": 0}
    cache.put("p", key, {"mean": 1.0})

    def crash(src, dst):
        raise KeyboardInterrupt  # killed after writing the temporary file, before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("p", key, {"mean": 2.0})
    with pytest.raises(KeyboardInterrupt):
        cache.put("p", {**key, "seed": 1}, {"mean": 3.0})
    monkeypatch.undo()
    assert cache.get("p", key) == {"mean": 1.0}  # the old entry is intact
    assert cache.get("p", {**key, "seed": 1}) is None  # the interrupted one is simply missing
    assert not list((tmp_path / "c").rglob(".tmp-*"))  # and left no temporary file
    # A torn file (as a non-atomic writer killed mid-write would leave) is a miss, not an error.
    target = next((tmp_path / "c").rglob("*.json"))
    target.write_text('{"format": 1, "key": {"ar')
    assert cache.get("p", key) is None


def test_degenerate_worst_and_drop(tiny_csv, tmp_path, monkeypatch):
    path, accuracy, archs = tiny_csv
    monkeypatch.setattr(zennas.proxies, "score", CountingScore(degenerate=True))
    base = ["bench", "proxies", "--ground-truth", str(path), "-p", "params", "--no-cache", "--json"]
    bad = [is_degenerate(from_index(i)) for i in TINY]
    assert bad == [False, True, *[False] * 6]
    params = np.array([zennas.info(a)["params"] for a in archs], dtype=float)
    worst = json.loads(run(*base).stdout)["params"]
    expected = np.where(bad, params.min() - 1, params)
    assert worst["n"] == 8 and worst["degenerate"] == 1
    assert worst["spearman"] == pytest.approx(stats.spearmanr(expected, accuracy).statistic)
    drop = json.loads(run(*base, "--degenerate", "drop").stdout)["params"]
    keep = ~np.array(bad)
    assert drop["n"] == 7
    assert drop["kendall"] == pytest.approx(stats.kendalltau(params[keep], np.array(accuracy)[keep]).statistic)


def test_correlate_orientation_and_modes():
    acc = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    lower_better = orient([5.0, 4.0, 3.0, 2.0, 1.0], higher_is_better=False)
    assert correlate(lower_better, acc).spearman == pytest.approx(1.0)
    with_nan = np.array([np.nan, 2.0, 3.0, 4.0, 5.0])
    assert correlate(with_nan, acc, "worst").spearman == pytest.approx(1.0)
    assert correlate(with_nan, acc, "drop").n == 4
    assert correlate(np.array([np.nan, 5.0, 3.0, 4.0, 2.0]), acc, "worst").degenerate == 1


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        ([("0", INDEX_11, "91.5")], ["--acc-column", "cifar100"], "no column 'cifar100'; columns are: index, arch"),
        ([("0", INDEX_11, "91.5"), ("1", "|nor_conv_9x9~0|+", "50")], [], "row 3, column 'arch'"),
        ([("0", INDEX_11, "n/a")], [], "row 2, column 'cifar10_test': 'n/a' is not a number"),
    ],
)
def test_bench_errors_name_row_and_column(tmp_path, rows, args, message):
    path = write_csv(tmp_path / "bad.csv", rows, ("index", "arch", "cifar10_test"))
    result = CliRunner().invoke(cli.main, ["bench", "proxies", "--ground-truth", str(path), "--no-cache", *args])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(cli.main, ["bench", "proxies", "--ground-truth", str(tmp_path / "none.csv")])
    assert missing.exit_code == 1 and "cannot read ground-truth CSV" in missing.output


def test_plot_svg_and_png_without_matplotlib(tiny_csv, tmp_path):
    path, _, _ = tiny_csv
    svg = tmp_path / "p.svg"
    assert run("bench", "proxies", "--ground-truth", str(path), "--no-cache", "--plot", str(svg)).exit_code == 0
    assert svg.read_text().startswith("<svg") and svg.read_text().count("<circle") == 2 * len(TINY)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(
            cli.main, ["bench", "proxies", "--ground-truth", str(path), "--no-cache", "--plot", str(tmp_path / "p.png")]
        )
        assert result.exit_code == 1 and "pip install matplotlib" in result.output


# --- the rank-average ensemble --------------------------------------------------------------------


def test_rank_aggregate_beats_its_members_when_noise_is_independent():
    rng = np.random.default_rng(0)
    acc = rng.normal(size=2000)
    a = acc + rng.normal(size=2000)
    b = acc + rng.normal(size=2000)
    useless = rng.normal(size=2000)
    scores = {"a": a, "b": b, "useless": useless}
    rho = {k: stats.spearmanr(v, acc).statistic for k, v in scores.items()}
    combined = stats.spearmanr(rank_aggregate(scores, ["a", "b"]), acc).statistic
    assert combined > max(rho.values()) + 0.05
    selection = split_half(range(2000), seed=0)
    assert 900 < selection.sum() < 1100 and (split_half(range(2000), seed=0) == selection).all()
    sub = {k: v[selection] for k, v in scores.items()}
    assert select_members(sub, acc[selection]) == ["a", "b"]


def test_rank_aggregate_puts_degenerate_last_and_the_ensemble_class_agrees():
    scores = {"x": np.array([3.0, np.nan, 1.0, 2.0]), "y": np.array([1.0, 4.0, 3.0, 2.0])}
    combined = rank_aggregate(scores, ["x", "y"])
    assert combined.tolist() == pytest.approx([(4 + 1) / 8, (1 + 4) / 8, (2 + 3) / 8, (3 + 2) / 8])
    ensemble = RankEnsemble(["x", "y"], scores)
    one_by_one = [ensemble.score({"x": x, "y": y}) for x, y in zip(scores["x"], scores["y"], strict=True)]
    assert one_by_one == pytest.approx((combined - 1 / 8).tolist())  # same order: a constant offset 1 / (2 n)
    assert ensemble.score({"x": 10.0, "y": 10.0}) == 1.0 and ensemble.score({"x": None, "y": 0.0}) == 0.0625


def test_bench_aggregate_option(tmp_path):
    archs = [from_index(i).canonical for i in range(40)]
    rows = [(str(i), a, str(zennas.info(a)["params"] % 97)) for i, a in enumerate(archs)]
    path = write_csv(tmp_path / "gt.csv", rows, ("index", "arch", "cifar10_test"))
    out = run("bench", "proxies", "--ground-truth", str(path), "--no-cache", "--aggregate", "auto", "--json")
    agg = json.loads(out.stdout)["_aggregate"]
    assert agg["members"] == ["flops", "params"]
    assert agg["selection_n"] + agg["held_out"]["ensemble"]["n"] == 40
    text = run("bench", "proxies", "--ground-truth", str(path), "--no-cache", "--aggregate", "params,flops").stdout
    assert "members: params, flops [given" in text and "ensemble" in text


def test_real_data_batch_is_checked(tiny_csv, tmp_path):
    path, _, _ = tiny_csv
    npz = tmp_path / "batch.npz"
    np.savez(npz, images=np.zeros((4, 3, 16, 16), np.float32), labels=np.zeros(4, np.int64))
    base = ["bench", "proxies", "--ground-truth", str(path), "--no-cache", "--data"]
    result = CliRunner().invoke(cli.main, [*base, str(npz)])
    assert result.exit_code == 1 and "are 16 x 16 but the scoring resolution is 32" in result.output
    (tmp_path / "junk.npz").write_text("not an archive")
    result = CliRunner().invoke(cli.main, [*base, str(tmp_path / "junk.npz")])
    assert result.exit_code == 1 and "cannot read --data" in result.output
    ok = run(*base, str(npz), "--resolution", "16", "--json")
    assert json.loads(ok.stdout)["_settings"]["data"].startswith("real batch")
