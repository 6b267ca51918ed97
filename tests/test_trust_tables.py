"""Latency tables are data from outside: the search uses exactly the table it was given, and a
tampered table (impossible numbers, mistyped header, hostile name, hostile nesting) is a one-line
LatencyError, never a traceback, a NaN that passes a budget, or a file written outside its folder."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import zennas.latency.table as table_module
from cli import main
from zennas.errors import ConfigError, LatencyError
from zennas.latency.ops import Op
from zennas.latency.predict import apply_correction, predict
from zennas.latency.shipped import open_table, shipped_tables
from zennas.latency.table import load_table
from zennas.latency.validate import default_log_path
from zennas.search.budget import Budgets
from zennas.search.evolution import Settings, seed_architecture
from zennas.search.run import search
from zennas.wiring import Problem, Scorer, parse_proxy

H100 = "h100-torch-fp16-b64"  # small (1,692 entries), conv + head, batch 64: quick to copy and load


def shipped_json(name: str) -> dict[str, Any]:
    return json.loads(gzip.decompress(shipped_tables()[name].read_bytes()))


def scaled_copy(path: Path, name: str, factor: float, *, header_name: str | None = None) -> Path:
    """The shipped table `name` with every entry (and the correction's intercept) times `factor`."""
    data = shipped_json(name)
    for row in data["entries"]:
        row[-1] *= factor
    if data["header"].get("correction"):
        data["header"]["correction"]["intercept_ms"] *= factor
    if header_name is not None:
        data["header"]["name"] = header_name
    path.write_text(json.dumps(data))
    return path


def one_line_error(result: Any, message: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    return errors[0]


SEARCH = ["search", "--space", "zennas-res", "--proxy", "zen-analytic", "--iterations", "8", "--population", "4",
          "--batch", "4", "--no-plots"]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Item 2: the search uses the table it was given (file or shipped name), everywhere
# ------------------------------------------------------------------------------------------------


def test_search_costs_with_the_given_table_file_not_the_shipped_table_of_its_name(tmp_path):
    x100 = scaled_copy(tmp_path / "x100.json", H100, 100.0)  # header name is still h100-torch-fp16-b64
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*SEARCH, "--table", str(x100), "--budget", "100ms", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    spec = Problem(space="zennas-res", proxy=parse_proxy("zen-analytic"), resolution=224, num_classes=1000).parse(
        data["arch"]
    )
    shipped = predict(spec, open_table(H100), resolution=224, num_classes=1000).latency_ms_per_image
    given = predict(spec, load_table(x100), resolution=224, num_classes=1000).latency_ms_per_image
    assert given == pytest.approx(100 * shipped, rel=1e-12)
    assert data["latency_ms_per_image"] == pytest.approx(given, rel=1e-12)  # was the shipped figure, 1/100 of it
    digest = hashlib.sha256(x100.read_bytes()).hexdigest()
    assert data["table"] == H100 and data["table_file"] == str(x100) and data["table_sha256"] == digest
    assert data["problem"]["table"] == str(x100) and data["problem"]["table_sha256"] == digest
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    assert checkpoint["problem"]["table"] == str(x100) and checkpoint["problem"]["table_sha256"] == digest
    # The seed is 0.0338 ms/image in the shipped table, 3.38 in the copy: a 1 ms budget now refuses it.
    over = CliRunner().invoke(main, [*SEARCH, "--table", str(x100), "--budget", "1ms", "--out", str(tmp_path / "o")])
    one_line_error(over, "seed architecture is over the latency budget (3.37943 > 1)")


def test_a_profile_style_table_named_after_its_file_can_be_searched_by_relative_path(tmp_path, monkeypatch):
    scaled_copy(tmp_path / "mytable.json", H100, 1.0, header_name="mytable")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*SEARCH, "--table", "mytable.json", "--budget", "1ms", "--out", "run"])
    assert result.exit_code == 0, result.output  # was: no shipped latency table named 'mytable'
    data = json.loads((tmp_path / "run" / "result.json").read_text())
    assert data["table"] == "mytable"
    assert data["problem"]["table"] == str(tmp_path / "mytable.json")  # absolute: a resume elsewhere finds it
    spec = Problem(space="zennas-res", proxy=parse_proxy("zen-analytic"), resolution=224, num_classes=1000).parse(
        data["arch"]
    )
    shipped = predict(spec, open_table(H100), resolution=224, num_classes=1000).latency_ms_per_image
    assert data["latency_ms_per_image"] == pytest.approx(shipped, rel=1e-12) and shipped <= 1.0


def test_a_shipped_table_is_recorded_by_name_with_its_digest(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*SEARCH, "--table", H100, "--budget", "1ms", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["problem"]["table"] == H100 and data["table_file"] == str(shipped_tables()[H100].resolve())
    assert data["table_sha256"] == hashlib.sha256(shipped_tables()[H100].read_bytes()).hexdigest()


def _problem(table_path: Path) -> Problem:
    budgets = Budgets(latency_ms_per_image=100.0, latency_batch_size=64)
    base = Problem(space="zennas-res", proxy=parse_proxy("zen-analytic"), resolution=224, num_classes=1000,
                   budgets=budgets)  # fmt: skip
    return base.with_table(load_table(table_path))


def test_resume_against_a_changed_table_file_is_refused(tmp_path):
    table = scaled_copy(tmp_path / "t.json", H100, 100.0)
    settings = Settings(iterations=8, population=4, batch=4, checkpoint_every=4)
    search(_problem(table), settings, tmp_path / "run", plots=False)
    scaled_copy(table, H100, 200.0)  # the same path, other figures
    with pytest.raises(ConfigError, match=r"latency table .*t\.json has changed since the run in"):
        search(_problem(table), settings, tmp_path / "run", resume=True, plots=False)
    # A problem rebuilt from the checkpoint reopens the file by path and refuses the changed content too.
    recorded = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["problem"]
    with pytest.raises(LatencyError, match="has changed since this search was set up"):
        _ = Problem.from_dict(recorded).latency_table


def test_workers_never_need_the_table(tmp_path):
    """A worker gets the problem pickled without its table and scores without ever opening one."""
    table = scaled_copy(tmp_path / "t.json", H100, 100.0)
    problem = _problem(table)
    shipped_to_worker = pickle.loads(pickle.dumps(problem))
    table.unlink()
    assert "latency_table" not in shipped_to_worker.__dict__
    seed = seed_architecture(problem, None)
    assert Scorer(shipped_to_worker)(seed.canonical).score == Scorer(problem)(seed.canonical).score
    assert "latency_table" not in shipped_to_worker.__dict__  # scoring did not try to reopen it


def test_milp_costs_and_reports_with_the_given_table(tmp_path):
    x2 = scaled_copy(tmp_path / "cpu-x2.json", "cpu-ort-fp32-b1", 2.0, header_name="cpu-x2")
    out = tmp_path / "m"
    result = CliRunner().invoke(main, ["search", "--space", "binas", "--table", str(x2), "--budget", "18ms",
                                       "--proxy", "params", "--strategy", "milp", "--iterations", "24",
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output  # was: no shipped latency table named 'cpu-x2'
    data = json.loads((out / "result.json").read_text())
    spec = Problem(space="binas", proxy=parse_proxy("params"), resolution=224, num_classes=1000).parse(data["arch"])
    given = predict(spec, load_table(x2), resolution=224, num_classes=1000).latency_ms_per_image
    shipped = predict(spec, open_table("cpu-ort-fp32-b1"), resolution=224, num_classes=1000).latency_ms_per_image
    assert given == pytest.approx(2 * shipped, rel=1e-12) and given <= 18.0
    assert data["latency_ms_per_image"] == pytest.approx(given, rel=1e-12)
    assert data["table"] == "cpu-x2" and data["table_file"] == str(x2)
    assert data["table_sha256"] == hashlib.sha256(x2.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Items 5 and 8: every field of a table is checked at load
# ------------------------------------------------------------------------------------------------


def small_header(**changes: Any) -> dict[str, Any]:
    header = {
        "name": "small",
        "description": "a small synthetic table",
        "device": {"family": "TEST", "name": "test device"},
        "engine": "torch",
        "engine_options": {"threads": 1},
        "versions": {"torch": "2"},
        "precision": "fp32",
        "batch_sizes": [1],
        "date": "2024-12-01",
        "unit": "ms_per_batch",
        "op_kinds": ["conv", "dwconv"],
        "activations": ["relu"],
        "budget": {"batch_size": 1, "resolution": 32, "meaning": "ms per image at batch 1"},
        "source": {"measured_by": "a test"},
        "correction": {"intercept_ms": 0.25, "slope": 1.5, "fitted_on": 10},
    }
    return {**header, **changes}


def small_entries() -> list[list[Any]]:
    rows = []
    for side in (8, 16):
        for c_in in (8, 16, 32):
            for c_out in (8, 16, 32):
                rows.append(["conv", 1, c_in, c_out, side, 3, 1, 0, "relu", c_in * c_out * side * side * 1e-6])
            rows.append(["dwconv", 1, c_in, c_in, side, 3, 1, 0, "relu", c_in * side * side * 1e-5])
    return rows


def small_table_json() -> dict[str, Any]:
    return {"format": "zennas-latency-table", "version": 2, "header": small_header(),
            "columns": ["kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "act", "ms"],
            "entries": small_entries()}  # fmt: skip


def write_table(path: Path, data: Any, *, text: str | None = None) -> Path:
    body = (text if text is not None else json.dumps(data)).encode()
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


# Ops of the small table, on and between its grid points.
PROBES = [Op("conv", 16, 16, 8, 3, 1, 0), Op("conv", 12, 24, 12, 3, 1, 0), Op("conv", 32, 8, 16, 3, 1, 0),
          Op("dwconv", 24, 24, 10, 3, 1, 0), Op("conv", 40, 40, 20, 3, 1, 0)]  # fmt: skip


def test_the_small_table_is_valid_and_predicts_exactly(tmp_path):
    table = load_table(write_table(tmp_path / "t.json.gz", small_table_json()))
    assert table.op_ms(PROBES[0], 1) == (16 * 16 * 64 * 1e-6, False)
    assert apply_correction(table, 2.0) == 0.25 + 1.5 * 2.0


def _mutate(path: list, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path
        node = data
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()
ROW = ["entries", 3]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # (a) impossible numbers in entries
        ([*ROW, 9], math.inf, "has ms inf"),
        ([*ROW, 9], -0.5, "has ms -0.5"),
        ([*ROW, 9], 0, "has ms 0"),
        ([*ROW, 9], 1e300, "has ms 1e+300"),
        ([*ROW, 9], True, "has ms True"),
        ([*ROW, 9], "0.5", "has ms '0.5'"),
        ([*ROW, 1], 0, "has batch_size 0"),
        ([*ROW, 2], 8.0, "has c_in 8.0"),
        ([*ROW, 3], True, "has c_out True"),
        ([*ROW, 4], -16, "has side -16"),
        ([*ROW, 4], 2**70, "has side 1180591620717411303424"),
        ([*ROW, 5], 0, "has kernel 0"),
        ([*ROW, 6], None, "has stride None"),
        ([*ROW, 7], 2, "has fused 2"),
        ([*ROW, 7], False, "has fused False"),
        ([*ROW, 0], ["conv"], "has kind ['conv']"),
        ([*ROW, 8], "gelu", "has activation 'gelu'"),
        (["entries", 4], ["conv", 1, 8, 8, 8, 3, 1, 0, "relu", 9.0], "repeats the operator of an earlier entry"),
        (["entries"], {"rows": []}, "'entries' must be a list of rows, not an object"),
        # header numbers
        (["header", "batch_sizes"], [1, "64"], "has batch_sizes [1, '64']"),
        (["header", "batch_sizes"], [], "has batch_sizes []"),
        (["header", "batch_sizes"], 1, "has batch_sizes 1"),
        (["header", "budget", "batch_size"], 64, "has budget batch_size 64; it must be one of the table's"),
        (["header", "budget", "batch_size"], True, "has budget batch_size True"),
        (["header", "budget", "resolution"], -224, "has budget resolution -224"),
        (["header", "engine_options", "threads"], -2, "has engine_options threads -2"),
        # (b) corrections that give non-positive or non-finite latencies
        (["header", "correction"], {"intercept_ms": -1000, "slope": -5}, "has correction slope -5"),
        (["header", "correction"], {"intercept_ms": 0.1, "slope": -5}, "has correction slope -5"),
        (["header", "correction"], {"intercept_ms": 0.1, "slope": 0}, "has correction slope 0"),
        (["header", "correction"], {"intercept_ms": 1e308, "slope": 1.0}, "has correction intercept_ms 1e+308"),
        (["header", "correction"], {"intercept_ms": 0.1}, "has correction slope None"),
        (["header", "correction"], {}, "has correction intercept_ms None"),
        (["header", "correction"], [0.1, 1.0], "has correction [0.1, 1.0]; it must be an object"),
        # (c) names that would become paths
        (["header", "name"], "x/../../../ESCAPED", "has name 'x/../../../ESCAPED'; a table name is"),
        (["header", "name"], "..", "has name '..'"),
        (["header", "name"], "", "has name ''"),
        (["header", "name"], "a" * 101, "has name 'aaaa"),
        (["header", "name"], 7, "has name 7"),
        # 8: mistyped or missing header fields, format and version
        (["header"], ["name", "small"], "'header' must be an object, not a list"),
        (["header"], _DELETE, "'header' must be an object, not null"),
        (["header", "device"], "H100", "has device 'H100'; it must be an object"),
        (["header", "device", "family"], ["V100"], "has device family ['V100']; it must be a string"),
        (["header", "op_kinds"], "conv", "has op_kinds 'conv'; it must be a non-empty list"),
        (["header", "op_kinds"], [["conv"]], "has op_kinds [['conv']]"),
        (["header", "op_kinds"], [], "has op_kinds []"),
        (["header", "activations"], "relu", "has activations 'relu'"),
        (["header", "precision"], 16, "has precision 16; it must be a string"),
        (["header", "engine"], None, "has engine None; it must be a string"),
        (["header", "budget"], 64, "has budget 64; it must be an object"),
        (["header", "source"], "me", "has source 'me'; it must be an object"),
        (["header", "unit"], _DELETE, "lacks unit"),
        (["version"], True, "has format version True"),
        (["version"], "2", "has format version '2'"),
        (["version"], 2.0, "has format version 2.0"),
        (["columns"], 5, "has columns 5"),
        (["columns"], "kind", "has columns 'kind'"),
        (["format"], ["zennas-latency-table"], "is not a zennas latency table"),
    ],
)
def test_tampered_tables_are_one_line_latency_errors(tmp_path, path, value, message):
    data = small_table_json()
    _mutate(path, value)(data)
    text = json.dumps(data).replace("Infinity", "1e999")  # 1e999 is valid JSON that Python reads as inf
    for name in ("t.json", "t.json.gz"):
        with pytest.raises(LatencyError, match=None) as caught:
            load_table(write_table(tmp_path / name, None, text=text))
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_hostile_json_is_a_latency_error(tmp_path, monkeypatch):
    deep = "[" * 100_000 + "]" * 100_000
    for name in ("deep.json", "deep.json.gz"):
        with pytest.raises(LatencyError, match="nests JSON too deeply to read"):
            load_table(write_table(tmp_path / name, None, text=deep))
    nested_header = json.dumps(small_table_json()).replace('"torch"', "[" * 100_000 + "]" * 100_000, 1)
    with pytest.raises(LatencyError, match="nests JSON too deeply to read"):
        load_table(write_table(tmp_path / "h.json", None, text=nested_header))
    with pytest.raises(LatencyError, match="is not valid JSON"):
        load_table(write_table(tmp_path / "nan.json", None, text=json.dumps(small_table_json()).replace("0.25", "NaN")))
    torn = gzip.compress(json.dumps(small_table_json()).encode())[:-20]
    (tmp_path / "torn.json.gz").write_bytes(torn)
    with pytest.raises(LatencyError, match="is not readable JSON"):
        load_table(tmp_path / "torn.json.gz")
    monkeypatch.setattr(table_module, "MAX_TABLE_BYTES", 1 << 20)  # 256 MiB in use: the test reads 1 MiB
    (tmp_path / "bomb.json.gz").write_bytes(gzip.compress(b" " * (2 << 20)))  # 2 MiB of blanks in 2 kB
    with pytest.raises(LatencyError, match="inflates to more than 1 MiB"):
        load_table(tmp_path / "bomb.json.gz")


def test_cli_latency_commands_give_one_line_errors_and_write_nothing_outside(tmp_path, monkeypatch):
    data = small_table_json()
    data["header"]["name"] = "x/../../../ESCAPED"
    (tmp_path / "a" / "b").mkdir(parents=True)
    evil = write_table(tmp_path / "evil.json", data)
    monkeypatch.chdir(tmp_path / "a" / "b")
    runner = CliRunner()
    spec = "SuperConvK3BNRELU(3,8,1,1)SuperConvK3BNRELU(8,16,1,1)"
    result = runner.invoke(main, ["latency", "validate", "--table", str(evil), "--space", "zennas-res",
                                  "--samples", "3", "--runs", "1", "--rounds", "1"])  # fmt: skip
    one_line_error(result, "has name 'x/../../../ESCAPED'")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "evil.json"]  # nothing created anywhere
    data["header"]["name"], data["header"]["device"] = "small", "H100"
    one_line_error(runner.invoke(main, ["latency", spec, "--table", str(write_table(evil, data))]), "has device 'H100'")


def test_the_default_validate_log_stays_in_its_folder(tmp_path):
    table = load_table(write_table(tmp_path / "t.json", small_table_json()))
    table.header["name"] = "x/../../../ESCAPED"  # even a name that slipped past the load check
    path = default_log_path(table, "zennas-res", "onnxruntime", "cuda:1", 224, root=tmp_path / "cache")
    assert path.parent == tmp_path / "cache"
    assert path.name == "latency-x_.._.._.._ESCAPED-zennas-res-onnxruntime-cuda_1-r224.jsonl"


def test_profile_refuses_a_table_name_from_out_before_measuring(tmp_path):
    result = CliRunner().invoke(main, ["profile", "--space", "zennas-res", "--engine", "torch", "--samples", "1",
                                       "--limit", "1", "--runs", "1", "--rounds", "1",
                                       "--out", str(tmp_path / "my table.json")])  # fmt: skip
    assert result.exit_code == 2 and "would name the table 'my table'" in result.output, result.output
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_non_finite_latencies_never_pass_a_budget(tmp_path, monkeypatch):
    table = load_table(write_table(tmp_path / "t.json", small_table_json()))
    budgets = Budgets(latency_ms_per_image=1e9, latency_batch_size=1)
    problem = Problem(space="zennas-res", proxy=parse_proxy("zen-analytic"), resolution=16, num_classes=0,
                      budgets=budgets).with_table(table)  # fmt: skip
    spec = problem.parse("SuperConvK3BNRELU(3,8,1,1)SuperConvK3BNRELU(8,16,1,1)")
    assert problem.measure(spec)[1] == []  # 3->8 is 4x below the grid: scaled from it, and finite
    # A correction that slipped past the load check (changed in memory) is refused at prediction.
    for intercept, slope in ((math.nan, 1.0), (-1000.0, -5.0), (math.inf, 1.0)):
        table.header["correction"] = {"intercept_ms": intercept, "slope": slope}
        table.group_memo.clear()
        with pytest.raises(LatencyError, match="not a finite positive time"):
            predict(spec, table, resolution=16)
        metrics, violated = problem.measure(spec)
        assert violated == ["table"] and "not a finite positive time" in metrics["note"]
    # A negative intercept loads (GPU tables over-predict small networks), but never yields a time <= 0.
    data = small_table_json()
    data["header"]["correction"] = {"intercept_ms": -1000.0, "slope": 1.0}
    negative = load_table(write_table(tmp_path / "negative.json", data))
    with pytest.raises(LatencyError, match="not a finite positive time"):
        predict(spec, negative, resolution=16)
    # And the budget comparison itself lets no NaN through.
    import zennas.latency.predict as predict_module

    monkeypatch.setattr(predict_module, "latency_ms_per_batch", lambda *a, **k: math.nan)
    assert problem.measure(spec)[1] == ["latency"]


# ------------------------------------------------------------------------------------------------
# Fuzz: random mutations of a valid table load as a LatencyError or as a table that predicts sanely
# ------------------------------------------------------------------------------------------------

_POOL: list[Any] = [None, True, False, 0, 1, -1, 7, 2**63, -(2**70), 0.0, -0.0, 1e-320, 1e308, -1e308, "", "x",
                    "../../x", "conv", "relu", [], {}, [1], {"a": 1}, "__INF__", "__NAN__", "__DEEP__"]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:4]):  # the first rows stand for all of them
            out += _paths(value, (*prefix, i))
    return out


def _fuzzed(rng: np.random.Generator) -> str:
    data = small_table_json()
    for _ in range(int(rng.integers(1, 4))):
        paths = _paths(data)
        path = paths[int(rng.integers(len(paths)))]
        *parents, last = path
        node = data
        for key in parents:
            node = node[key]
        action = rng.random()
        if action < 0.15:
            del node[last]
        elif action < 0.3 and isinstance(node[last], int | float) and not isinstance(node[last], bool):
            node[last] = node[last] * float(rng.choice([-1, 0, 1e-300, 1e300, 3.5]))
        else:
            node[last] = copy.deepcopy(_POOL[int(rng.integers(len(_POOL)))])
    text = json.dumps(data)
    deep = "[" * 50_000 + "]" * 50_000
    return text.replace('"__INF__"', "1e999").replace('"__NAN__"', "NaN").replace('"__DEEP__"', deep)


def test_fuzzed_tables_load_sanely_or_raise_latency_error(tmp_path):
    rng = np.random.default_rng(20241204)
    loaded = 0
    for n in range(400):
        path = write_table(tmp_path / ("f.json.gz" if n % 4 == 0 else "f.json"), None, text=_fuzzed(rng))
        try:
            table = load_table(path)
        except LatencyError as error:
            assert "\n" not in str(error) and len(str(error)) < 2000
            continue
        loaded += 1
        for op in PROBES:
            for batch in table.batch_sizes:
                try:
                    ms, _ = table.op_ms(op, batch)
                except LatencyError:
                    continue
                assert 0 < ms < math.inf and 0 < apply_correction(table, ms) < math.inf, (n, op, ms)
    assert 0 < loaded < 400  # both outcomes were exercised
