"""zennas search: budgets, determinism, resume after SIGKILL, workers, outputs and errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from zennas.counting import count
from zennas.errors import ConfigError
from zennas.latency.predict import predict
from zennas.latency.shipped import open_table, table_for_gpu
from zennas.search.budget import Budgets, parse_count_budget, parse_latency_budget
from zennas.search.evolution import Settings
from zennas.search.report import pareto_front, read_history
from zennas.search.run import search
from zennas.wiring import Problem, parse_proxy

V100 = table_for_gpu("V100")


def res_problem(budget_ms: float = 0.2, proxy: str = "zen-analytic", **changes) -> Problem:
    budgets = Budgets(latency_ms_per_image=budget_ms, latency_batch_size=64, max_layers=changes.pop("max_layers", None))
    settings = {"resolution": 224, "num_classes": 1000, **changes}
    return Problem(space="zennas-res", proxy=parse_proxy(proxy), table=V100.name, budgets=budgets, **settings)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1ms", 1.0),
        ("0.8ms/image", 0.8),
        ("800us", 0.8),
        ("800µs", 0.8),
        ("0.001s", 1.0),
        ("1.2 ms", 1.2),
        ("5e-1ms", 0.5),
    ],
)
def test_latency_budget_units(text, ms):
    assert parse_latency_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1", "has no unit"),
        ("-1ms", "must be positive"),
        ("0ms", "must be positive"),
        ("1 parsec", "cannot read"),
        ("ms", "cannot read"),
        ("1ms/batch", "cannot read"),
    ],
)
def test_latency_budget_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_latency_budget(text)


def test_count_budgets():
    assert parse_count_budget("400M", "FLOPs") == 400_000_000
    assert parse_count_budget("5.5M", "params") == 5_500_000
    assert parse_count_budget("2e6", "params") == 2_000_000
    assert parse_count_budget("1G", "FLOPs") == 10**9
    with pytest.raises(ConfigError, match="must be positive"):
        parse_count_budget("-3M", "FLOPs")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_count_budget("lots", "FLOPs")


def test_proxy_objective_parsing():
    assert [(t.name, t.weight) for t in parse_proxy("zen")] == [("zen", 1.0)]
    assert [(t.name, t.weight) for t in parse_proxy("zen=1, params=0.5")] == [("zen", 1.0), ("params", 0.5)]
    with pytest.raises(ConfigError, match="unknown proxy 'nope'"):
        parse_proxy("nope")
    with pytest.raises(ConfigError, match="names a proxy twice"):
        parse_proxy("zen,zen=2")
    with pytest.raises(ConfigError, match="NAME=WEIGHT"):
        parse_proxy("zen=abc")


def test_measure_matches_independent_counts_and_predictor():
    problem = res_problem(budget_ms=10.0)
    rng = np.random.default_rng(3)
    space = problem.search_space
    checked = 0
    for _ in range(40):
        spec = space.sample(rng)
        metrics, violated = problem.measure(spec)
        if violated == ["table"]:
            continue
        cx = count(spec, resolution=224, num_classes=1000)
        assert (metrics["macs"], metrics["params"], metrics["layers"]) == (cx.macs, cx.params, cx.layers)
        p = predict(spec, V100, resolution=224, num_classes=1000, batch_size=64)
        assert metrics["latency_ms_per_image"] == pytest.approx(p.latency_ms_per_image, rel=1e-12)
        checked += 1
    assert checked >= 20


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    points = [(float(c), float(s), i) for i, (c, s) in enumerate(rng.random((300, 2)).round(2))]
    brute = {
        i for c, s, i in points
        if not any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for c2, s2, _ in points)
    }  # fmt: skip
    # ties in both coordinates keep the first point only; the brute force keeps both
    front = set(pareto_front(points))
    assert front <= brute and {(points[i][0], points[i][1]) for i in front} == {
        (points[i][0], points[i][1]) for i in brute
    }


def _run(tmp_path: Path, name: str, problem: Problem, **settings) -> dict:
    base = {"iterations": 96, "population": 16, "batch": 8, "checkpoint_every": 16}
    return search(problem, Settings(**{**base, **settings}), tmp_path / name, plots=False)


def test_every_scored_candidate_meets_every_budget(tmp_path):
    problem = res_problem(budget_ms=0.15, max_layers=18)
    result = _run(tmp_path, "a", problem, iterations=160)
    history = read_history(tmp_path / "a" / "history.jsonl")
    assert len(history) == 160 and [r["it"] for r in history] == list(range(1, 161))
    scored = [r for r in history if r["status"] == "scored"]
    assert len(scored) > 50
    for r in scored:
        spec = problem.parse(r["arch"])
        assert count(spec, resolution=224, num_classes=1000).layers <= 18
        assert predict(spec, V100, resolution=224, num_classes=1000, batch_size=64).latency_ms_per_image <= 0.15
    over = [r for r in history if r["status"] == "over_latency"]
    assert over and all(r["latency_ms_per_image"] > 0.15 for r in over)
    assert all(r["layers"] > 18 for r in history if r["status"] == "over_layers")
    # the answer is the best score seen, and it is in budget
    assert result["score"] == max([r["score"] for r in scored] + [result["seed_architecture"]["score"]])
    assert result["latency_ms_per_image"] <= 0.15 and result["layers"] <= 18
    assert (tmp_path / "a" / "best.txt").read_text().strip() == result["arch"]
    assert sum(result["counts"].values()) == 161  # 160 children + the scored seed
    hashes = [r["hash"] for r in history if r["status"] != "duplicate"]
    assert len(hashes) == len(set(hashes))  # never the same network twice


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    a = _run(tmp_path, "a", res_problem())
    b = _run(tmp_path, "b", res_problem())
    _run(tmp_path, "c", res_problem(seed=1))
    ha, hb, hc = (read_history(tmp_path / n / "history.jsonl") for n in "abc")
    strip = lambda h: [{k: v for k, v in r.items() if not k.startswith("t_")} for r in h]  # noqa: E731
    assert strip(ha) == strip(hb) and (a["arch"], a["score"]) == (b["arch"], b["score"])
    assert strip(ha) != strip(hc)


@pytest.mark.slow
def test_workers_give_the_serial_result(tmp_path):
    problem = res_problem(proxy="zen", proxy_batch_size=2, resolution=64)
    serial = _run(tmp_path, "serial", problem, iterations=24, batch=6)
    parallel = search(problem, Settings(iterations=24, population=16, batch=6, checkpoint_every=16),
                      tmp_path / "parallel", workers=2, plots=False)  # fmt: skip
    assert parallel["workers"] == 2
    assert (parallel["arch"], parallel["score"]) == (serial["arch"], serial["score"])
    strip = lambda h: [(r["it"], r["status"], r.get("score")) for r in h]  # noqa: E731
    assert strip(read_history(tmp_path / "serial" / "history.jsonl")) == strip(
        read_history(tmp_path / "parallel" / "history.jsonl")
    )


def test_outputs(tmp_path):
    result = search(res_problem(), Settings(iterations=48, population=16, batch=8), tmp_path / "o")
    out = tmp_path / "o"
    for name in ("best.txt", "result.json", "history.jsonl", "population.json", "pareto.csv", "checkpoint.json",
                 "search_trajectory.png", "pareto_front.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert (out / "search_trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "result.json").read_text())
    for key in ("arch", "dialect", "space", "proxy", "score", "latency_ms_per_image", "table", "macs", "params",
                "layers", "budgets", "seed", "iterations", "wall_time_s", "versions"):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["dialect"] == "zennas-v1" and on_disk["table"] == "v100-trt-fp16" and on_disk["iterations"] == 48
    population = json.loads((out / "population.json").read_text())
    assert len(population) <= 16 and population[0]["score"] == result["score"]
    rows = (out / "pareto.csv").read_text().splitlines()
    front = [list(map(float, r.split(",")[:2])) for r in rows[1:]]
    assert rows[0].startswith("score,latency_ms_per_image") and front
    assert all(a[1] < b[1] and a[0] < b[0] for a, b in itertools.pairwise(front))  # cost and score both rise


@pytest.mark.slow
def test_rescore_picks_the_best_mean(tmp_path):
    problem = res_problem(proxy="zen", proxy_batch_size=2, resolution=64)
    result = _run(tmp_path, "r", problem, iterations=16, rescore=3, rescore_repeats=3)
    rescored = result["rescored"]
    assert len(rescored) == 3 and all(len(r["values"]) == 3 for r in rescored)
    assert rescored[0]["mean"] == max(r["mean"] for r in rescored)
    assert result["hash"] == rescored[0]["hash"]
    for r in rescored:  # repeat 0 is the single-draw score the search saw
        assert r["values"][0] == pytest.approx(r["single_draw"], rel=1e-9)


def test_random_strategy_and_nb201_without_table(tmp_path):
    problem = Problem(space="nb201", proxy=parse_proxy("params"), resolution=32, num_classes=10)
    result = _run(tmp_path, "n", problem, iterations=64, strategy="random")
    history = read_history(tmp_path / "n" / "history.jsonl")
    scored = [r for r in history if r["status"] == "scored"]
    assert result["score"] == max([r["score"] for r in scored] + [result["seed_architecture"]["score"]])
    assert result["score"] == result["params"]  # the params proxy is the parameter count
    assert result["latency_ms_per_image"] is None and result["table"] is None


def test_seed_over_budget_fails_fast(tmp_path):
    with pytest.raises(ConfigError, match="seed architecture is over the latency budget"):
        _run(tmp_path, "x", res_problem(budget_ms=0.001))
    with pytest.raises(ConfigError, match="over the layers budget"):
        _run(tmp_path, "y", res_problem(max_layers=2))


def test_resume_refuses_other_settings_and_existing_out(tmp_path):
    _run(tmp_path, "a", res_problem(), iterations=16)
    with pytest.raises(ConfigError, match="already holds a search"):
        _run(tmp_path, "a", res_problem(), iterations=16)
    with pytest.raises(ConfigError, match=r"other settings \(population\); population: 16 then, 8 now;"):
        search(res_problem(), Settings(iterations=32, population=8, batch=8, checkpoint_every=16), tmp_path / "a",
               resume=True, plots=False)  # fmt: skip
    # How long a run goes is not a setting of its result: more iterations continue it (issue 14).
    more = search(res_problem(), Settings(iterations=32, population=16, batch=8, checkpoint_every=16),
                  tmp_path / "a", resume=True, plots=False)  # fmt: skip
    assert more["iterations"] == 32


CLI_ARGS = ["search", "--budget", "0.2ms", "--gpu", "V100", "--proxy", "zen-analytic", "--iterations", "1500",
            "--population", "32", "--batch", "4", "--checkpoint-every", "8", "--no-plots"]  # fmt: skip


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=Path(__file__).parents[1], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_sigkill_and_resume_ends_like_an_uninterrupted_run(tmp_path):
    reference = _cli([*CLI_ARGS, "--out", str(tmp_path / "ref")])
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    out = tmp_path / "killed"
    kills = 0
    for lines_before_kill in (200, 700):
        proc = _cli([*CLI_ARGS, "--out", str(out), *(["--resume"] if kills else [])])
        history = out / "history.jsonl"
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if history.exists() and history.read_bytes().count(b"\n") >= lines_before_kill:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 1, "the run finished before it could be killed; make it longer"
    final = _cli([*CLI_ARGS, "--out", str(out), "--resume"])
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    ref = json.loads((tmp_path / "ref" / "result.json").read_text())
    got = json.loads((out / "result.json").read_text())
    assert (got["arch"], got["score"], got["counts"]) == (ref["arch"], ref["score"], ref["counts"])
    strip = lambda p: [{k: v for k, v in r.items() if not k.startswith("t_")} for r in read_history(p)]  # noqa: E731
    assert strip(out / "history.jsonl") == strip(tmp_path / "ref" / "history.jsonl")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nope"], "unknown search space"),
        (["--proxy", "nope"], "unknown proxy 'nope'"),
        (["--table", "nope.json"], "nope.json"),
        (["--budget", "-1ms", "--gpu", "V100"], "must be positive"),
        (["--budget", "1parsec", "--gpu", "V100"], "cannot read latency budget"),
        (["--budget", "1", "--gpu", "V100"], "has no unit"),
        (["--budget", "1ms"], "needs a latency table"),
        (["--budget", "1ms", "--gpu", "K80"], "no shipped latency table for GPU 'K80'"),
        (["--budget", "1us", "--gpu", "V100", "--proxy", "zen-analytic"], "seed architecture is over the latency"),
        (["--flops-budget", "-5M"], "must be positive"),
        (["--resume"], "--resume needs the --out folder"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["search", *args, "--out", str(tmp_path / "e")] if "--resume" not in args
                                else ["search", *args])  # fmt: skip
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output


def test_cli_search_prints_the_answer(tmp_path):
    out = tmp_path / "c"
    result = CliRunner().invoke(main, ["search", "--budget", "0.1ms", "--gpu", "V100", "--proxy", "zen-analytic",
                                       "--iterations", "64", "--population", "16", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["arch"] in result.output and data["latency_ms_per_image"] <= 0.1
    assert data["budgets"]["latency_ms_per_image"] == 0.1 and data["budgets"]["latency_batch_size"] == 64


@pytest.mark.slow
def test_ray_local_cluster_gives_the_serial_result(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'zennas[ray]'")
    problem = res_problem(proxy="zen", proxy_batch_size=2, resolution=64)
    settings = Settings(iterations=18, population=16, batch=6, checkpoint_every=16)
    serial = search(problem, settings, tmp_path / "serial", plots=False)
    on_ray = search(problem, settings, tmp_path / "ray", ray=True, workers=2, plots=False)  # a real local cluster
    assert on_ray["workers"] == 2
    assert (on_ray["arch"], on_ray["score"], on_ray["counts"]) == (serial["arch"], serial["score"], serial["counts"])


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch):
    from zennas.errors import DependencyError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(DependencyError, match=r"pip install 'zennas\[ray\]'"):
        search(res_problem(), Settings(iterations=8, population=8, batch=4), tmp_path / "r", ray=True, plots=False)


def test_cli_milp_strategy_on_binas(tmp_path):
    out = tmp_path / "m"
    result = CliRunner().invoke(main, ["search", "--space", "binas", "--table", "cpu-ort-fp32-b1", "--budget", "9ms",
                                       "--proxy", "params", "--strategy", "milp", "--iterations", "400",
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    spec = Problem(space="binas", proxy=parse_proxy("params"), resolution=224, num_classes=1000).parse(data["arch"])
    p = predict(spec, open_table("cpu-ort-fp32-b1"), resolution=224, num_classes=1000, batch_size=1)
    assert p.latency_ms_per_image <= 9.0 and data["latency_ms_per_image"] == pytest.approx(p.latency_ms_per_image)
    assert data["score"] == data["params"] == count(spec, resolution=224, num_classes=1000).params
    assert data["proxy_evaluations"] == 400 and data["kendall_tau_heldout"] > 0.9
    assert data["best_sample"]["score"] <= data["score"]  # the solver beats random search at equal cost
    history = read_history(out / "history.jsonl")
    assert len(history) == 400 and history[-1]["status"] == "solution"


def test_cli_milp_needs_a_binas_like_space(tmp_path):
    result = CliRunner().invoke(main, ["search", "--budget", "1ms", "--gpu", "V100", "--strategy", "milp",
                                       "--proxy", "params", "--out", str(tmp_path / "x")])  # fmt: skip
    assert result.exit_code != 0 and "strategy milp needs a space with per-stage depths" in result.output
    assert "Traceback" not in result.output
