"""The search's time limit and its closed-form funnel (issue 14, items 2 and 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from zennas.errors import ConfigError
from zennas.proxies import score
from zennas.search import evolution
from zennas.search.budget import Budgets, parse_duration
from zennas.search.evolution import Settings
from zennas.search.report import read_history
from zennas.search.run import search
from zennas.wiring import Problem, parse_proxy

CIFAR_START = (
    "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,1,8,1)SuperResK3K3(16,32,2,16,1)"
    "SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)"
)
TIMINGS = ("t_check_s", "t_score_s")


def cifar_problem(proxy: str = "zen", space: str = "zennas-res", **changes) -> Problem:
    """A small, fast CIFAR search: sampled Zen at batch 2 on 16 px, under 300k parameters and 18 layers."""
    budgets = Budgets(params=300_000, max_layers=18)
    fields = {"resolution": 16, "num_classes": 10, "proxy_batch_size": 2, **changes}
    return Problem(space=space, proxy=parse_proxy(proxy), budgets=budgets, **fields)


def settings(**changes) -> Settings:
    return Settings(
        **{"iterations": 64, "population": 8, "batch": 4, "screen_ratio": 4, "init": CIFAR_START, **changes}
    )


def records(out: Path) -> list[dict]:
    """The history without its timings (which differ between runs)."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_history(out / "history.jsonl")]


def run(tmp_path: Path, name: str, problem: Problem, s: Settings, **options) -> dict:
    return search(problem, s, tmp_path / name, plots=False, **options)


def test_parse_duration():
    assert [parse_duration(t) for t in ("90s", "8m", "1h", "1h30m", "2m30s", "0.5m")] == [
        90, 480, 3600, 5400, 150, 30
    ]  # fmt: skip
    for text in ("8", "0s", "soon", "m", "-1m"):
        with pytest.raises(ConfigError, match="duration"):
            parse_duration(text)


def test_a_search_needs_iterations_or_a_time_limit():
    with pytest.raises(ConfigError, match="needs a bound"):
        Settings(iterations=None).validate()
    with pytest.raises(ConfigError, match="time limit must be a positive"):
        Settings(time_limit_s=float("nan")).validate()


def test_funnel_scores_only_the_best_screened_children(tmp_path):
    problem = cifar_problem()
    result = run(tmp_path, "f", problem, settings())
    history = read_history(tmp_path / "f" / "history.jsonl")
    assert result["funnel"]["active"] and result["funnel"]["screen_ratio"] == 4
    counts = result["counts"]
    assert counts["screened"] > 0 and sum(counts.values()) == result["iterations"] + 1 == 65
    assert result["funnel"]["screened"] == counts["screened"]
    # Batches of 4 x 4 children: in each, only the (up to) 4 best by the closed form are scored, and every
    # screened child's closed form is below that of every scored one.
    for start in range(1, 65, 16):
        batch = [r for r in history if start <= r["it"] < start + 16]
        scored = [r for r in batch if r["status"] in ("scored", "degenerate")]
        screened = [r for r in batch if r["status"] == "screened"]
        assert len(scored) <= 4 and (len(scored) == 4 or not screened)
        if scored and screened:
            assert max(r["screen"] for r in screened) <= min(r["screen"] for r in scored)
    # The closed form only ranks: every score in the history and the population is the sampled Zen-Score.
    for r in [r for r in history if r["status"] == "scored"][:3]:
        sampled = score(problem.parse(r["arch"]), ["zen"], batch_size=2, resolution=16, num_classes=10)["zen"]
        assert r["score"] == sampled.values[0] != r["screen"]
    population = json.loads((tmp_path / "f" / "population.json").read_text())
    scored_hashes = {r["hash"] for r in history if r["status"] == "scored"}
    assert all(m["hash"] in scored_hashes for m in population if m["iteration"] > 0)  # never a screened child
    assert all(m["arch"] == result["seed_architecture"]["arch"] for m in population if m["iteration"] == 0)
    assert result["score"] == max(m["score"] for m in population)


def test_without_the_funnel_every_child_is_scored(tmp_path):
    result = run(tmp_path, "n", cifar_problem(), settings(funnel=False))
    assert result["counts"]["screened"] == 0 and not result["funnel"]["active"]
    assert result["funnel"]["note"] == "off (--no-funnel)"
    assert all(r["status"] != "screened" for r in read_history(tmp_path / "n" / "history.jsonl"))


@pytest.mark.parametrize(
    ("problem", "why"),
    [
        (cifar_problem(proxy="params"), "no closed form screens the objective params"),
        (cifar_problem(proxy="zen=1,params=0.001"), "no closed form screens the objective"),
        (cifar_problem(proxy_options=(("residual", "kept"),)), "residual=kept"),
    ],
)
def test_where_no_closed_form_covers_the_objective_the_search_says_so_and_scores_every_child(tmp_path, problem, why):
    assert problem.screen is None and why in problem.screen_note
    result = run(tmp_path, "x", problem, settings(iterations=16))
    assert result["counts"]["screened"] == 0 and not result["funnel"]["active"] and why in result["funnel"]["note"]


def test_nb201_has_no_closed_form():
    problem = Problem(space="nb201", proxy=parse_proxy("zen"), resolution=32, num_classes=10)
    assert problem.screen is None and "nb201" in problem.screen_note


def test_the_screen_is_the_expectation_of_the_objective_with_its_options():
    problem = cifar_problem(proxy_options=(("mode", "zennas"),))
    spec = problem.parse(CIFAR_START)
    expected = score(spec, ["zen-analytic"], batch_size=2, resolution=16, num_classes=10, options={"mode": "zennas"})
    assert problem.screen(spec) == expected["zen-analytic"].mean
    assert "mode zennas, batch 2" in problem.screen_note


class FakeClock:
    """time.monotonic for the evolution module: each call advances 1 s, so a limit is reached predictably."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_time_limit_stops_at_a_batch_boundary_and_resume_continues_it_exactly(tmp_path, monkeypatch):
    problem = cifar_problem()
    whole = run(tmp_path, "whole", problem, settings(iterations=96))
    monkeypatch.setattr(evolution.time, "monotonic", FakeClock())
    first = run(tmp_path, "cut", problem, settings(iterations=None, time_limit_s=6.0))
    assert first["stopped"]["reason"] == "time limit" and first["stopped"]["limit_s"] == 6.0
    assert 0 < first["iterations"] < 96 and first["iterations"] % 16 == 0  # a whole number of 4 x 4 batches
    assert (tmp_path / "cut" / "best.txt").read_text().strip() == first["arch"]  # every output, as a normal end
    # The same command again: nothing more to do, the same answer.
    again = run(tmp_path, "cut", problem, settings(iterations=None, time_limit_s=6.0), resume=True)
    assert again["iterations"] == first["iterations"] and again["arch"] == first["arch"]
    # More time: it goes on from where it stopped.
    longer = run(tmp_path, "cut", problem, settings(iterations=None, time_limit_s=12.0), resume=True)
    assert longer["iterations"] > first["iterations"]
    # Then a bound on iterations instead of time: it ends exactly as the uninterrupted run.
    monkeypatch.undo()
    final = run(tmp_path, "cut", problem, settings(iterations=96), resume=True)
    assert final["stopped"] is None and final["iterations"] == 96
    assert records(tmp_path / "cut") == records(tmp_path / "whole")
    assert (final["arch"], final["score"]) == (whole["arch"], whole["score"])


def test_resume_may_change_only_how_long_a_run_goes(tmp_path):
    problem = cifar_problem()
    run(tmp_path, "r", problem, settings(iterations=16))
    with pytest.raises(ConfigError, match=r"other settings \(screen_ratio\)"):
        run(tmp_path, "r", problem, settings(iterations=32, screen_ratio=2), resume=True)
    with pytest.raises(ConfigError, match="has made 16 iterations already"):
        run(tmp_path, "r", problem, settings(iterations=8), resume=True)
    assert run(tmp_path, "r", problem, settings(iterations=32, checkpoint_every=7), resume=True)["iterations"] == 32


def test_cli_time_limit_and_funnel_lines(tmp_path):
    args = ["search", "--space", "zennas-res", "--params-budget", "300k", "--max-layers", "18", "--resolution", "16",
            "--num-classes", "10", "--proxy-batch-size", "2", "--population", "8", "--batch", "4", "--init",
            CIFAR_START, "--no-plots"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--time-limit", "0.001s", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "funnel: zen-analytic (mode paper, batch 2) screens children" in result.output
    # The final re-scoring of the seed alone would pass a 1 ms limit: the run stops before any batch and
    # still writes every output, the seed its answer.
    assert "stopped: time limit after 0 iterations" in result.output
    saved = json.loads((tmp_path / "t" / "result.json").read_text())
    assert saved["stopped"]["limit_s"] == 0.001 and saved["settings"]["iterations"] is None
    result = CliRunner().invoke(main, [*args, "--iterations", "32", "--no-funnel", "--out", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    assert "funnel:" not in result.output and json.loads((tmp_path / "n" / "result.json").read_text())["funnel"][
        "note"
    ] == "off (--no-funnel)"  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--time-limit", "8", "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "cannot read duration '8'" in result.output


def test_the_last_batch_before_the_limit_scores_only_what_the_time_left_affords(tmp_path):
    run_ = evolution.Evolution(cifar_problem(), settings(batch=8, time_limit_s=100.0), tmp_path / "a")
    assert run_._affordable(0.0) is None  # nothing scored yet: no rate to predict with
    run_._scored_s, run_._scored_n, run_._scored_macs = 30.0, 3, 3_000_000  # 10 us a MAC, one worker
    assert run_._affordable(60.0) == 40.0 and run_._affordable(120.0) == 0.0
    unscreened = evolution.Evolution(cifar_problem(), settings(batch=8, time_limit_s=100.0, funnel=False), tmp_path)
    unscreened._scored_s, unscreened._scored_n, unscreened._scored_macs = 30.0, 3, 3_000_000
    assert unscreened._affordable(60.0) is None  # without the funnel a batch is never cut
    # In a batch: the children best by the closed form are scored while their predicted time fits.
    rng = evolution.np.random.default_rng(0)
    spec = run_.problem.parse(CIFAR_START)
    seed = evolution.Member(spec.canonical, spec.hash, 1.0, 0, {"macs": 1, "params": 1, "layers": 1})

    def batch(affordable):
        state = evolution.State(0, evolution.np.random.default_rng(0).bit_generator.state, [seed], {spec.hash}, 0,
                                dict.fromkeys(evolution.COUNTS, 0), 0.0, seed)  # fmt: skip
        lines, to_score, pending = run_._make_batch(state, evolution.np.random.default_rng(0), affordable)
        return lines, to_score, pending

    lines, everything, ranked = batch(None)
    assert len(everything) == 8
    by_screen = sorted(ranked, key=lambda p: -p[2]["screen"])
    cost = [p[2]["macs"] * 1e-5 for p in by_screen]  # predicted seconds, best first
    lines, cut, _ = batch(cost[0] + cost[1] + 1e-9)
    assert sorted(cut) == sorted(p[1].canonical for p in by_screen[:2])
    assert sum(r["status"] == "screened" for r in lines) == len(ranked) - 2 + sum(
        r["status"] == "screened" for r in batch(None)[0]
    )  # fmt: skip
    assert len(batch(0.0)[1]) == 1  # still before the limit: at least one child
    del rng


def test_rescoring_takes_at_most_a_quarter_of_the_time_limit(tmp_path):
    run_ = evolution.Evolution(cifar_problem(), settings(rescore=8, rescore_repeats=4, time_limit_s=100.0), tmp_path)
    run_._scored_s, run_._scored_n = 2.0, 1  # 2 s a score, one worker: 8 members x 4 draws would take 64 s
    assert run_._rescore_count() == 3 and run_._rescore_seconds(3) == 24.0 <= 25.0
    assert run_._out_of_time(100.0 - 24.0) and not run_._out_of_time(100.0 - 25.0)
    untimed = evolution.Evolution(cifar_problem(), settings(rescore=8), tmp_path)
    untimed._scored_s, untimed._scored_n = 2.0, 1
    assert untimed._rescore_count() == 8


def test_the_funnel_re_scores_its_best_by_default(tmp_path):
    args = ["search", "--space", "zennas-res", "--params-budget", "300k", "--max-layers", "18", "--resolution", "16",
            "--num-classes", "10", "--proxy-batch-size", "2", "--population", "8", "--batch", "4", "--init",
            CIFAR_START, "--no-plots", "--iterations", "64", "--screen-ratio", "4"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    assert "the best 8 re-scored with 4 draws at the end" in result.output
    saved = json.loads((tmp_path / "f" / "result.json").read_text())
    assert saved["settings"]["rescore"] == 8 and saved["rescored"] and saved["hash"] == saved["rescored"][0]["hash"]
    assert all(len(r["values"]) == 4 for r in saved["rescored"])
    plain = CliRunner().invoke(main, [*args, "--no-funnel", "--out", str(tmp_path / "n")])
    assert json.loads((tmp_path / "n" / "result.json").read_text())["settings"]["rescore"] == 0, plain.output


def test_a_cpu_search_scores_zen_at_batch_4_unless_told():
    from zennas.proxies import get_proxy
    from zennas.wiring import CPU_ZEN_BATCH, search_problem

    assert CPU_ZEN_BATCH == 4 and get_proxy("zen").batch_size == 64  # the proxy's own default stays the paper's
    batch = {
        (proxy, device, given): search_problem(proxy=proxy, device=device, proxy_batch_size=given)[0].proxy_batch_size
        for proxy, device, given in [("zen", "cpu", None), ("zen", "cpu", 16), ("zen=1,naswot=0.5", "cpu", None),
                                     ("naswot", "cpu", None), ("zen", "cuda", None)]
    }  # fmt: skip
    assert batch == {
        ("zen", "cpu", None): 4, ("zen", "cpu", 16): 16, ("zen=1,naswot=0.5", "cpu", None): None,
        ("naswot", "cpu", None): None, ("zen", "cuda", None): None,
    }  # fmt: skip
    problem = search_problem(proxy="zen", device="cpu")[0]
    assert "batch 4" in problem.screen_note  # the closed form screens at the batch that is scored


def test_a_resumed_search_keeps_the_batch_its_run_started_with(tmp_path):
    from zennas.wiring import search_problem

    def batch(stored, **given):
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        if stored != "none":
            (folder / "checkpoint.json").write_text(json.dumps({"problem": {"proxy_batch_size": stored}}))
        return search_problem(proxy="zen", device="cpu", resuming=folder, **given)[0].proxy_batch_size

    assert batch(None) is None  # a run from before the CPU default scored at the proxy's own batch
    assert batch(16) == 16 and batch(None, proxy_batch_size=8) == 8  # a given batch is checked by the resume
    assert batch("none") == 4 and batch("bad") == 4 and batch(-3) == 4  # no run, or no usable batch in it
