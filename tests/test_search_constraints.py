"""zennas search: a preset applies every published constraint, flags override one each, a default depth cap,
and --proxy-option reaches the proxy (issue 14, items 1, 2 and 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from zennas.cli.search import SEARCH_FLAGS
from zennas.counting import count
from zennas.errors import ConfigError
from zennas.latency.predict import predict
from zennas.latency.shipped import open_table, table_for_gpu
from zennas.proxies import score
from zennas.search.constraints import Origin, describe_constraints
from zennas.search.report import read_history
from zennas.spaces import get_space
from zennas.wiring import Problem, check_proxy_options, parse_proxy, resolve_constraints

TINY = ["--proxy", "params", "--population", "8", "--batch", "8", "--no-plots"]


def _search(tmp_path: Path, *args: str) -> tuple[dict, list[dict], str]:
    """(result.json, history, the printed `budgets:` line) of a tiny CLI search."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["search", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("budgets: "))
    return json.loads((out / "result.json").read_text()), read_history(out / "history.jsonl"), line


def _zennas_counts(problem: Problem, arch: str):
    """ZenNAS repository counts (REFERENCE 2.2, without SE), computed here, not read from the history."""
    return count(problem.parse(arch), resolution=problem.resolution, num_classes=problem.num_classes, use_se=False,
                 convention="zennas")  # fmt: skip


def _problem(space: str, preset: str | None = None, **given) -> Problem:
    sp = get_space(space) if preset is None else get_space(space).with_preset(preset)
    c = resolve_constraints(sp, **given)
    problem = Problem(space=space, preset=preset, proxy=parse_proxy("params"), resolution=c.resolution,
                      num_classes=c.num_classes, budgets=c.budgets, origins=c.origin_items())  # fmt: skip
    return problem.with_table(c.table)


# ------------------------------------------------------------------------------------------------
# Item 1: presets apply every published constraint, in the convention of the published scripts
# ------------------------------------------------------------------------------------------------


def test_flops_preset_bounds_every_candidate_in_zennas_flops(tmp_path):
    # Before: this search ran "under no budget" and returned a 635M-MAC network.
    result, history, line = _search(
        tmp_path, "--space", "zennas-idw", "--preset", "imagenet-flops400M", "--iterations", "200", *TINY
    )
    assert line == ("budgets: FLOPs <= 400,000,000 (zennas counts; preset imagenet-flops400M), layers <= 14 "
                    "(preset), resolution 224 (preset), classes 1000 (preset)")  # fmt: skip
    assert result["budgets"] == {"latency_ms_per_image": None, "latency_batch_size": None, "macs": 400_000_000,
                                 "params": None, "max_layers": 14, "convention": "zennas"}  # fmt: skip
    assert (result["resolution"], result["num_classes"]) == (224, 1000)
    assert result["problem"]["origins"]["macs"] == {"source": "preset", "preset": "imagenet-flops400M",
                                                    "replaced": None, "note": ""}  # fmt: skip
    problem = _problem("zennas-idw", "imagenet-flops400M")
    scored = [r for r in history if r["status"] == "scored"]
    assert len(scored) > 20 and result["counts"]["over_macs"] > 0  # the budget binds
    for arch in [r["arch"] for r in scored] + [result["arch"]]:
        cc = _zennas_counts(problem, arch)
        assert cc.flops <= 400e6 and cc.layers <= 14


def test_params_preset_bounds_every_candidate_in_zennas_params(tmp_path):
    # Before: this search ran "under no budget" and returned 1.63M parameters.
    result, history, line = _search(
        tmp_path, "--space", "zennas-res", "--preset", "cifar-params1M", "--iterations", "200", *TINY
    )
    assert line == ("budgets: params <= 1,000,000 (zennas counts; preset cifar-params1M), layers <= 18 (preset), "
                    "resolution 32 (preset), classes 100 (preset)")  # fmt: skip
    assert result["budgets"]["params"] == 1_000_000 and result["budgets"]["max_layers"] == 18
    assert (result["resolution"], result["num_classes"]) == (32, 100)
    problem = _problem("zennas-res", "cifar-params1M")
    scored = [r for r in history if r["status"] == "scored"]
    assert len(scored) > 20 and result["counts"]["over_params"] > 0
    for arch in [r["arch"] for r in scored] + [result["arch"]]:
        cc = _zennas_counts(problem, arch)
        assert cc.convention_params <= 1e6 and cc.layers <= 18


def test_a_flag_overrides_one_preset_constraint_and_says_so(tmp_path):
    result, history, line = _search(
        tmp_path, "--space", "zennas-res", "--preset", "cifar-params1M", "--params-budget", "150k", "--max-layers",
        "10", "--num-classes", "10", "--iterations", "60", *TINY,
    )  # fmt: skip
    assert line == ("budgets: params <= 150,000 (zennas counts; --params-budget, overrides preset's 1,000,000), "
                    "layers <= 10 (--max-layers, overrides preset's 18), resolution 32 (preset cifar-params1M), "
                    "classes 10 (--num-classes, overrides preset's 100)")  # fmt: skip
    assert result["budgets"]["params"] == 150_000 and result["budgets"]["convention"] == "zennas"
    assert result["problem"]["origins"]["params"] == {"source": "given", "preset": "cifar-params1M",
                                                      "replaced": 1e6, "note": ""}  # fmt: skip
    problem = _problem("zennas-res", "cifar-params1M", num_classes=10)
    for arch in [r["arch"] for r in history if r["status"] == "scored"] + [result["arch"]]:
        cc = _zennas_counts(problem, arch)
        assert cc.convention_params <= 150_000 and cc.layers <= 10


def test_a_larger_layer_cap_lifts_the_presets_own():
    problem = _problem("zennas-res", "imagenet-latency12ms", max_layers=40)
    assert problem.search_space.max_layers == 40 and problem.budgets.max_layers == 40
    assert _problem("zennas-res", "imagenet-latency12ms", max_layers=20).search_space.max_layers == 30  # a filter
    with pytest.raises(ConfigError, match="caps networks at 91 layers in its definition"):
        resolve_constraints(get_space("maedet"), max_layers=120)


def test_the_presets_convention_cannot_be_swapped_silently():
    cifar = get_space("zennas-res").with_preset("cifar-params1M")
    with pytest.raises(ConfigError, match="preset cifar-params1M states its params budget in zennas counts, not "
                                          "correct: count it as stated, or give that budget too"):  # fmt: skip
        resolve_constraints(cifar, convention="correct")
    overridden = resolve_constraints(cifar, params=300_000, convention="correct")
    assert overridden.budgets.convention == "correct" and overridden.budgets.params == 300_000
    assert resolve_constraints(get_space("zennas-res"), params=300_000).budgets.convention == "correct"


def test_a_latency_preset_uses_the_v100_table_unless_given_another():
    preset = get_space("zennas-res").with_preset("imagenet-latency05ms")
    c = resolve_constraints(preset)
    assert c.table.name == table_for_gpu("V100").name and c.origins["table"].source == "preset"
    assert (c.budgets.latency_ms_per_image, c.budgets.latency_batch_size, c.budgets.max_layers) == (0.5, 64, 20)
    assert describe_constraints(c, SEARCH_FLAGS) == (
        "latency <= 0.5 ms/image at batch 64 (preset imagenet-latency05ms), layers <= 20 (preset), resolution 224 "
        "(preset), classes 1000 (preset), table v100-trt-fp16 (the V100 table: the GPU the published latency "
        "budget was stated for; --gpu/--table overrides)"
    )
    cpu = resolve_constraints(preset, table=open_table("cpu-ort-fp32-b1"))
    assert cpu.budgets.latency_ms_per_image == 0.5 and "table" not in cpu.origins
    assert describe_constraints(cpu, SEARCH_FLAGS).startswith(
        "latency <= 0.5 ms/image at batch 1 (preset imagenet-latency05ms; stated for V100 FP16 at batch 64; applied "
        "as it is to table cpu-ort-fp32-b1 at batch 1)"
    )
    override = resolve_constraints(preset, latency_ms_per_image=0.6)  # still a V100 budget: the V100 table
    assert override.table.name == "v100-trt-fp16" and override.origins["latency"] == Origin("given", preset.preset, 0.5)


def test_cli_latency_preset_alone_searches_under_its_budget(tmp_path):
    result, history, line = _search(
        tmp_path, "--preset", "imagenet-latency02ms", "--proxy", "zen-analytic", "--iterations", "48",
        "--population", "8", "--batch", "8", "--no-plots",
    )  # fmt: skip
    assert line.startswith("budgets: latency <= 0.2 ms/image at batch 64 (preset imagenet-latency02ms), layers <= 13")
    assert result["table"] == "v100-trt-fp16" and result["budgets"]["latency_ms_per_image"] == 0.2
    v100 = table_for_gpu("V100")
    problem = _problem("zennas-res", "imagenet-latency02ms")
    for arch in [r["arch"] for r in history if r["status"] == "scored"] + [result["arch"]]:
        spec = problem.parse(arch)
        assert predict(spec, v100, resolution=224, num_classes=1000, batch_size=64).latency_ms_per_image <= 0.2
        assert spec.layers <= 13


@pytest.mark.parametrize(
    ("space", "preset"),
    [(s, p) for s in ("zennas-res", "zennas-idw") for p in get_space(s).presets],
)
def test_published_seeds_meet_their_presets_budgets(space, preset):
    problem = _problem(space, preset)
    for seed in problem.search_space.initial():
        metrics, violated = problem.measure(seed)
        assert violated == [], (seed.canonical, metrics)


def test_tinynas_spaces_state_their_budgets_in_tinynas_counts():
    maedet = resolve_constraints(get_space("maedet"))
    b = maedet.budgets
    assert (b.macs, b.max_layers, b.convention) == (18_800_000_000, 91, "tinynas")
    assert maedet.origins["macs"] == Origin("space") and maedet.resolution == 480
    deepmad = resolve_constraints(get_space("deepmad-se"))
    assert deepmad.budgets.params == 29_000_000 and dict(deepmad.unchecked) == {"max_rho": 0.5}
    assert describe_constraints(deepmad).endswith("max_rho 0.5 (space deepmad-se; not checked by the search)")


def test_problem_records_origins_and_round_trips():
    problem = _problem("zennas-res", "cifar-params1M", params=2_000_000)
    data = problem.to_dict()
    assert data["origins"]["params"] == {"source": "given", "preset": "cifar-params1M", "replaced": 1e6, "note": ""}
    assert data["origins"]["layers"]["source"] == "preset"
    assert Problem.from_dict(json.loads(json.dumps(data))) == problem.with_table(None)


# ------------------------------------------------------------------------------------------------
# Item 5: a budget without a layer cap borrows the nearest published preset's cap
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "cap", "preset"),
    [(1.0, 30, "imagenet-latency12ms"), (0.1, 10, "imagenet-latency01ms"), (0.25, 16, "imagenet-latency03ms"),
     (1.2, 30, "imagenet-latency12ms"), (5.0, 30, "imagenet-latency12ms")],
)  # fmt: skip
def test_latency_budget_borrows_the_nearest_published_cap(ms, cap, preset):
    c = resolve_constraints(get_space("zennas-res"), table=table_for_gpu("V100"), latency_ms_per_image=ms)
    assert c.budgets.max_layers == cap
    assert (c.origins["layers"].source, c.origins["layers"].preset) == ("borrowed", preset)


def test_depth_cap_is_printed_and_other_spaces_say_what_they_do(tmp_path):
    result, _, line = _search(tmp_path, "--budget", "1ms", "--gpu", "V100", "--iterations", "16", *TINY)
    assert line == ("budgets: latency <= 1 ms/image at batch 64 (--budget), layers <= 30 (from preset "
                    "imagenet-latency12ms, the nearest published latency budget at or above 1 ms; --max-layers "
                    "overrides), resolution 224 (default), classes 1000 (default)")  # fmt: skip
    assert result["budgets"]["max_layers"] == 30 and result["problem"]["origins"]["layers"]["source"] == "borrowed"
    above = resolve_constraints(get_space("zennas-res"), table=table_for_gpu("V100"), latency_ms_per_image=5.0)
    assert "the largest published latency budget, 1.2 ms, is below 5 ms" in describe_constraints(above)
    idw = resolve_constraints(get_space("zennas-idw"), table=table_for_gpu("V100"), latency_ms_per_image=0.3)
    assert idw.budgets.max_layers == 16 and idw.origins["layers"].preset == "imagenet-flops800M"
    genet = resolve_constraints(get_space("genet"), table=table_for_gpu("V100"), latency_ms_per_image=1.0)
    assert genet.budgets.max_layers is None
    assert "layers: no cap (space genet publishes no preset with a layer cap at 224 px; --max-layers sets one)" in (
        describe_constraints(genet, SEARCH_FLAGS)
    )
    given = resolve_constraints(get_space("zennas-res"), table=table_for_gpu("V100"), latency_ms_per_image=1.0,
                                max_layers=50)  # fmt: skip
    assert given.budgets.max_layers == 50 and given.origins["layers"] == Origin("given")


# ------------------------------------------------------------------------------------------------
# Item 2 (part): --proxy-option reaches the proxy
# ------------------------------------------------------------------------------------------------


def test_proxy_option_reaches_the_proxy(tmp_path):
    result, history, _ = _search(
        tmp_path, "--space", "zennas-res", "--preset", "cifar-params1M", "--proxy", "zen-analytic", "--proxy-option",
        "mode=zennas", "--iterations", "24", "--population", "8", "--batch", "8", "--no-plots",
    )  # fmt: skip
    assert result["problem"]["proxy_options"] == {"mode": "zennas"}
    scored = [r for r in history if r["status"] == "scored"][:6]
    assert scored
    for r in scored:
        options = {"mode": "zennas"}
        want = score(r["arch"], "zen-analytic", resolution=32, num_classes=100, options=options, device="cpu")
        paper = score(r["arch"], "zen-analytic", resolution=32, num_classes=100, device="cpu")
        assert r["score"] == pytest.approx(want["zen-analytic"].mean, rel=1e-12)
        assert r["score"] != pytest.approx(paper["zen-analytic"].mean, rel=1e-6)  # the option changed the score


def test_proxy_option_errors_are_one_line(tmp_path):
    terms = parse_proxy("zen=1,params=0.5")
    assert check_proxy_options(terms, {"mode": "zennas", "gamma": 0.1}) == (("gamma", 0.1), ("mode", "zennas"))
    with pytest.raises(ConfigError, match=r"proxy option 'nope' applies to none of the proxies zen=1,params=0\.5"):
        check_proxy_options(terms, {"nope": 1})
    with pytest.raises(ConfigError, match="option mode='fast' is not allowed; choose one of paper, zennas"):
        check_proxy_options(terms, {"mode": "fast"})
    result = CliRunner().invoke(main, ["search", "--proxy", "params", "--proxy-option", "mode=zennas", "--out",
                                       str(tmp_path / "x")])  # fmt: skip
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code != 0 and len(errors) == 1 and "applies to none of the proxies params" in errors[0]
    assert not (tmp_path / "x").exists()
