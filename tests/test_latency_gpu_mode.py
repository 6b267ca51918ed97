"""GPU timing mode (issue 16): CUDA-graph default, in-context operators by subtraction, timing in the table
header, time limits, `latency --measure` on a table's own device, GPU tables selected by family.

Everything here runs on the CPU except the tests marked `gpu`, which need CUDA and skip without it.
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cli import main
from zennas.arch import get_dialect
from zennas.cli.latency import table_engine
from zennas.errors import ConfigError, LatencyError
from zennas.latency import profile as profile_module
from zennas.latency import shipped
from zennas.latency import validate as validate_module
from zennas.latency.engines import TorchEngine, get_engine
from zennas.latency.engines.ort import AUX_MARKER
from zennas.latency.ops import Op, network_ops
from zennas.latency.predict import predict
from zennas.latency.profile import (
    FLOOR_MS,
    default_in_context,
    grid_points,
    op_module,
    profile,
    space_grid,
    subtracted_pair,
    table_header,
    timing_record,
)
from zennas.latency.shipped import open_table, table_for_gpu
from zennas.latency.table import load_table, save_table, table_device_kind, table_timing
from zennas.latency.validate import validate
from zennas.spaces import get_space

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def header(name: str = "synthetic", kinds=("conv", "dwconv", "se", "head"), **extra) -> dict:
    return {
        "name": name,
        "device": {"family": "TEST", "name": "test device"},
        "engine": "fake",
        "precision": "fp32",
        "batch_sizes": [1],
        "unit": "ms_per_batch",
        "op_kinds": list(kinds),
        "budget": {"batch_size": 1, "resolution": 32},
        **extra,
    }


@pytest.fixture
def fake_cuda(monkeypatch):
    """TorchEngine on device 'cuda' constructible without a GPU (for option resolution only)."""
    monkeypatch.setattr(TorchEngine, "_require_cuda", lambda self: None)


# ------------------------------------------------------------------------------------------------
# Engine defaults and option validation
# ------------------------------------------------------------------------------------------------


def test_torch_engine_times_graphs_on_cuda_and_eagerly_on_the_cpu(fake_cuda):
    assert get_engine("torch").options["cuda_graph"] is False
    assert get_engine("torch", device="cuda", precision="fp16").options["cuda_graph"] is True
    assert get_engine("torch", device="cuda", precision="fp16", cuda_graph=False).options["cuda_graph"] is False


def test_graph_timing_on_the_cpu_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"cuda_graph=True needs device='cuda'.*cuda_graph=False") as error:
        get_engine("torch", cuda_graph=True)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="cuda_graph must be True, False or None"):
        get_engine("torch", cuda_graph="yes")


def test_default_operator_timing_and_its_header_record(fake_cuda):
    gpu = get_engine("torch", device="cuda", precision="fp16")
    cpu = get_engine("torch")
    kernels = get_engine("onnxruntime", timer="kernels")
    assert default_in_context(gpu) and not default_in_context(cpu) and default_in_context(kernels)
    assert not default_in_context(get_engine("onnxruntime", timer="host"))
    record = timing_record(gpu)
    assert record["mode"] == "graph" and record["operators"] == "in-context" and "subtracted" in record["helpers"]
    assert timing_record(cpu) == {"mode": "eager", "operators": "alone"}
    assert timing_record(cpu, in_context=True)["operators"] == "in-context"
    assert "left out" in timing_record(kernels)["helpers"]
    with pytest.raises(ConfigError, match="times operators in context only"):
        timing_record(kernels, in_context=False)
    made = table_header(name="t", engine=cpu, batch_size=1, resolution=32, space="binas", op_kinds=["conv"],
                        command="test", in_context=True)  # fmt: skip
    assert made["timing"]["mode"] == "eager" and made["timing"]["operators"] == "in-context"
    assert made["engine_options"]["cuda_graph"] is False


# ------------------------------------------------------------------------------------------------
# The header field; tables written before it
# ------------------------------------------------------------------------------------------------


def test_tables_without_a_timing_field_read_as_what_they_were():
    h100, cpu, v100 = open_table("h100-torch-fp16-b64"), open_table("cpu-ort-fp32-b1"), open_table("v100-trt-fp16")
    assert "timing" not in h100.header and h100.timing == {"mode": "eager", "operators": "alone"}
    assert cpu.timing == {"mode": "eager", "operators": "in-context"}  # onnxruntime kernels timer
    assert v100.timing["mode"] == "eager"
    assert (h100.device_kind, cpu.device_kind, v100.device_kind) == ("cuda", "cpu", "cuda")
    assert table_device_kind(header()) == "cpu"  # an unknown family on a non-TensorRT engine
    assert table_device_kind({**header(), "device": {"family": "H200"}}) == "cuda"
    assert table_timing({**header(), "engine_options": {"cuda_graph": True}})["mode"] == "graph"


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ("graph", "has timing 'graph'; it must be an object"),
        ({"mode": "replay", "operators": "alone"}, "has timing mode 'replay'; it must be one of graph, eager"),
        ({"mode": "graph"}, "has timing operators None; it must be one of in-context, alone"),
    ],
)
def test_a_bad_timing_field_is_refused(tmp_path, timing, message):
    with pytest.raises(LatencyError, match=message):
        save_table(tmp_path / "t.json", header(timing=timing), [["conv", 1, 8, 8, 8, 3, 1, 0, "relu", 0.1]])
    saved = save_table(tmp_path / "ok.json", header(timing={"mode": "graph", "operators": "in-context"}),
                       [["conv", 1, 8, 8, 8, 3, 1, 0, "relu", 0.1]])  # fmt: skip
    assert load_table(saved.path).timing["mode"] == "graph"


# ------------------------------------------------------------------------------------------------
# In-context operators by subtraction
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [Op("conv", 8, 16, 10, 3, 2, 0), Op("conv", 8, 16, 10, 3, 2, 1, "none"), Op("dwconv", 16, 16, 9, 5, 1, 1),
     Op("se", 32, 8, 7), Op("head", 32, 10, 7)],
)  # fmt: skip
def test_a_subtracted_pair_is_the_operator_between_helpers_and_the_helpers_alone(op):
    module, shape = subtracted_pair(op, 2)
    twin, twin_shape = subtracted_pair(op, 2, timed=False)
    assert shape == twin_shape == (2, op.c_in, op.side, op.side)
    roles = {name.split(".")[0] for name, _ in module.named_parameters() if AUX_MARKER in name}
    expected = {"before"} | ({"residual"} if op.fused else set()) | ({"after"} if op.kind == "se" else set())
    assert roles == {f"{AUX_MARKER}_{role}" for role in expected}
    twin_params = {name: p.shape for name, p in twin.named_parameters()}
    assert twin_params == {name: p.shape for name, p in module.named_parameters() if AUX_MARKER in name}
    twin.load_state_dict(module.state_dict(), strict=False)  # the same helper weights, to compare outputs
    x = torch.randn(shape)
    with torch.no_grad():
        before = getattr(module, f"{AUX_MARKER}_before")(x)
        residual = getattr(module, f"{AUX_MARKER}_residual", None)
        after = getattr(module, f"{AUX_MARKER}_after", None)
        inner = module.op
        if op.fused:
            act = {"none": nn.Identity(), "relu": torch.relu}[op.act]
            reference = act(inner.bn(inner.conv(before)) + residual(before))
            helpers_only = residual(before)
        else:
            reference, helpers_only = inner(before), before
        if after is not None:
            reference, helpers_only = after(reference), after(helpers_only)
        torch.testing.assert_close(module(x), reference)
        torch.testing.assert_close(twin(x), helpers_only)
        if op.kind in ("conv", "dwconv"):  # built before its helpers: the plain module's weights (same seed)
            assert torch.equal(inner.conv.weight, op_module(op, 2)[0].conv.weight)
    # The CPU kernels-timer modules are unchanged: a plain conv gets no helper there.
    kernels_module, _ = op_module(Op("conv", 8, 16, 10, 3, 2, 0), 2, in_context=True)
    assert not [n for n, _ in kernels_module.named_parameters() if AUX_MARKER in n]


def _module_macs(module: nn.Module, side: int) -> int:
    """Conv MACs of a module whose convs all read maps of `side` (the helpers and the operator do)."""
    macs = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out = (side - 1) // m.stride[0] + 1  # "same" padding
            macs += m.in_channels * m.out_channels * m.kernel_size[0] ** 2 // m.groups * out * out
    return macs


class MacEngine:
    """Deterministic engine: a module's time is 1 + its conv MACs x 1e-6 ms (1 ms: a launch cost that cancels)."""

    name, device, precision = "fake", "cpu", "fp32"
    times_in_context = False

    def __init__(self, clock=None):
        self.options: dict = {}
        self.timed: list[int] = []  # modules per time_many call
        self.clock = clock

    def identity(self):
        return {"name": "fake cpu", "family": "CPU"}

    def versions(self):
        return {"fake": "1"}

    def time_many(self, models, *, runs, rounds, **_):
        self.timed.append(len(models))
        if self.clock is not None:
            self.clock.now += 10.0
        return [SimpleNamespace(ms_per_batch=1.0 + _module_macs(m, shape[-1]) * 1e-6) for m, shape in models]


def test_profile_in_context_subtracts_the_helpers_and_shares_twins(tmp_path):
    ops = [Op("conv", 8, 16, 16, 3, 1, 0), Op("conv", 8, 32, 16, 3, 2, 0), Op("conv", 8, 16, 16, 3, 1, 1),
           Op("dwconv", 8, 8, 16, 3, 1, 0), Op("head", 8, 10, 16)]  # fmt: skip
    engine = MacEngine()
    timing = {"mode": "eager", "operators": "in-context"}
    result = profile(ops, engine, batch_size=1, out=tmp_path / "t.json", header=header(timing=timing), chunk=5)
    # Twins: the before-helper at (8 ch, side 16) serves the plain convs, dwconv and head; the fused conv has its own.
    assert engine.timed == [5 + 2] and result.measured == 5 and result.floored == 1  # the head: no convs here
    table = result.table
    for op in ops:
        alone, shape = op_module(op, 1)
        expected = _module_macs(alone, shape[-1]) * 1e-6 if op.kind != "head" else FLOOR_MS
        assert table.op_ms(op, 1)[0] == pytest.approx(max(expected, FLOOR_MS), abs=2e-6), op
    assert table.header["timing"] == timing and table.header["entries_floored_this_run"] == 1
    # A table timed another way is not extended by this one.
    with pytest.raises(LatencyError, match="another device/engine/precision/batch/timing"):
        profile(ops, MacEngine(), batch_size=1, out=tmp_path / "t.json", header=header())


def test_profile_stops_at_its_time_limit_and_a_rerun_extends_the_table(tmp_path, monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(profile_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    ops = [Op("conv", 8, c, 16, 3, 1, 0) for c in (8, 16, 24, 32, 48, 64)]
    out = tmp_path / "t.json"
    first = profile(ops, MacEngine(clock), batch_size=1, out=out, header=header(), chunk=2, time_limit_s=15)
    assert first.measured == 4 and first.remaining == 2 and len(load_table(out).entries) == 4
    assert not (tmp_path / "t.json.partial.jsonl").exists()
    again = profile(ops, MacEngine(clock), batch_size=1, out=out, header=header(), chunk=2)
    assert again.measured == 2 and again.reused == 4 and len(again.table.entries) == 6
    with pytest.raises(ConfigError, match="time_limit_s must be a positive number"):
        profile(ops, MacEngine(), batch_size=1, out=out, header=header(), time_limit_s=0)


def test_a_grid_by_member_lists_whole_networks_first():
    by_member = space_grid("zennas-idw", resolution=64, num_classes=0, samples=4, by_member=True)
    assert sorted(by_member) == space_grid("zennas-idw", resolution=64, num_classes=0, samples=4)
    first = get_space("zennas-idw").sample(np.random.default_rng(0))
    needed = set().union(*(grid_points(op) for op in network_ops(first, resolution=64)))
    assert set(by_member[: len(needed)]) == needed


def test_profile_in_context_with_the_real_torch_engine_on_the_cpu(tmp_path):
    ops = [Op("conv", 8, 16, 16, 3, 1, 0), Op("conv", 8, 16, 16, 3, 1, 1), Op("se", 16, 4, 8)]
    engine = get_engine("torch", threads=1)
    made = table_header(name="t", engine=engine, batch_size=2, resolution=16, space=None, op_kinds=["conv", "se"],
                        command="test", in_context=True)  # fmt: skip
    result = profile(ops, engine, batch_size=2, out=tmp_path / "t.json", header=made, runs=3, min_warmup_ms=0)
    assert result.measured == 3 and all(row[-1] >= FLOOR_MS for row in result.table.entries)
    assert result.table.timing["operators"] == "in-context"


# ------------------------------------------------------------------------------------------------
# Validation time limit
# ------------------------------------------------------------------------------------------------


def test_validate_reports_on_the_networks_measured_within_its_time_limit(monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(validate_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    table = open_table("cpu-ort-fp32-b1")

    class Whole(MacEngine):
        def time_many(self, models, **_):
            clock.now += 10.0
            return [SimpleNamespace(ms_per_batch=float(i + 1), cv=0.0) for i in range(len(models))]

    kwargs = {"samples": 8, "resolution": 224, "num_classes": 1000}
    report = validate("binas", table, Whole(), time_limit_s=15, chunk=3, **kwargs)
    assert report.overall.n == 6 and report.settings["not_measured_in_time"] == 2
    assert report.settings["outside_table"] == 0
    with pytest.raises(LatencyError, match="only 2 of 8 networks were measured within the time limit"):
        validate("binas", table, Whole(), time_limit_s=5, chunk=2, **kwargs)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def test_help_shows_the_timing_options():
    runner = CliRunner()
    for args, options in ((["profile"], ("--timing", "--operators", "--time-limit")),
                          (["latency", "validate"], ("--timing", "--time-limit")),
                          (["latency"], ())):  # fmt: skip
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and all(option in result.output for option in options)
    predict_help = runner.invoke(main, ["latency", "predict", "--help"])
    assert "--timing" in predict_help.output and "cuda for a GPU table" in predict_help.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "torch", "--timing", "graph"], "cuda_graph=True needs device='cuda'"),
        (["--timer", "kernels", "--operators", "alone"], "--timer kernels times operators in context only"),
        (["--engine", "tensorrt", "--timing", "graph"], "--timing graph applies to the torch and onnxruntime"),
    ],
)
def test_profile_timing_errors_are_one_line(tmp_path, args, message):
    base = ["profile", "--space", "binas", "--resolution", "32", "--samples", "1", "--out", str(tmp_path / "t.json")]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code != 0 and "Traceback" not in result.output and not (tmp_path / "t.json").exists()
    assert message in result.output.strip().splitlines()[-1]  # the whole error on its one line


def test_profile_cli_records_the_timing_and_stops_at_its_time_limit(tmp_path):
    out = tmp_path / "tiny.json"
    args = ["profile", "--space", "binas", "--engine", "torch", "--resolution", "32", "--num-classes", "0",
            "--samples", "1", "--limit", "3", "--runs", "2", "--rounds", "1", "--threads", "1",
            "--operators", "in-context", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "eager timing, operators in-context" in result.output
    table = load_table(out)
    assert table.timing["operators"] == "in-context" and table.timing["mode"] == "eager"
    # Another timing cannot extend it.
    other = CliRunner().invoke(main, [*args[:-4], "--operators", "alone", "--out", str(out)])
    assert other.exit_code != 0 and "another device/engine/precision/batch/timing" in other.output


def test_table_engine_follows_the_table_header(fake_cuda):
    h100 = open_table("h100-torch-fp16-b64")  # written before the timing field: eager
    eager = table_engine(h100, None, "cuda")
    assert eager.name == "torch" and eager.precision == "fp16" and eager.options["cuda_graph"] is False
    graph_table = SimpleNamespace(
        header={**h100.header, "timing": {"mode": "graph", "operators": "in-context"}},
        timing={"mode": "graph", "operators": "in-context"},
    )
    assert table_engine(graph_table, None, "cuda").options["cuda_graph"] is True
    assert table_engine(graph_table, None, "cuda", timing="eager").options["cuda_graph"] is False
    on_cpu = table_engine(graph_table, None, "cpu")  # the user's choice: FP32, eager, on this CPU
    assert on_cpu.precision == "fp32" and on_cpu.options["cuda_graph"] is False
    cpu_table = open_table("cpu-ort-fp32-b1")  # its kernels timer is for operators, not whole networks
    ort = table_engine(cpu_table, None, "cpu")
    assert ort.options["threads"] == 1 and ort.options["timer"] == "host"


@no_cuda
def test_measure_with_a_gpu_table_without_cuda_is_one_line():
    result = CliRunner().invoke(main, ["latency", "zennet-0.8ms", "--gpu", "H100", "--measure"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    line = result.output.strip()
    assert "\n" not in line and "is a GPU table (measured on H100)" in line and "--device cpu" in line
    validate_result = CliRunner().invoke(main, ["latency", "validate", "--table", "h100-torch-fp16-b64", "--space",
                                                "zennas-res", "--samples", "3"])  # fmt: skip
    assert validate_result.exit_code != 0 and "is a GPU table" in validate_result.output


def _binas_member(seed: int = 0) -> str:
    return get_dialect("binas").format(get_space("binas").sample(np.random.default_rng(seed)))


def test_measure_with_the_cpu_table_end_to_end():
    arch = _binas_member()
    args = ["latency", arch, "--table", "cpu-ort-fp32-b1", "-r", "224", "--num-classes", "1000", "--measure",
            "--runs", "3"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    measured = data["measured"]
    assert measured["engine"] == "onnxruntime" and measured["device"] == "cpu" and measured["options"]["threads"] == 1
    assert data["ratio"] == pytest.approx(data["latency_ms_per_batch"] / measured["ms_per_batch"])
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    starts = [line.split(":")[0] for line in text.output.splitlines()]
    assert {"predicted", "measured", "predicted/measured"} <= set(starts)


# ------------------------------------------------------------------------------------------------
# Shipped GPU tables by family
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def shipped_h200(tmp_path, monkeypatch):
    """A shipped-tables folder holding the CPU table and an H200 table (the H100 entries relabelled)."""
    folder = tmp_path / "latency_tables"
    folder.mkdir()
    shutil.copy(shipped.shipped_tables()["cpu-ort-fp32-b1"], folder)
    h100 = open_table("h100-torch-fp16-b64")
    device = {**h100.header["device"], "family": "H200", "name": "NVIDIA H200", "variant": ""}
    made = {**h100.header, "name": "h200-torch-fp16-b64", "device": device,
            "timing": {"mode": "graph", "operators": "in-context"}}  # fmt: skip
    save_table(folder / "h200-torch-fp16-b64.json.gz", made, h100.entries)
    monkeypatch.setattr(shipped, "shipped_dir", lambda: folder)
    return folder


def test_gpu_h200_picks_the_table_measured_on_that_family(shipped_h200):
    assert table_for_gpu("h200").name == "h200-torch-fp16-b64"
    with pytest.raises(LatencyError, match=r"no shipped latency table for GPU 'H100' \(shipped devices: CPU, H200\)"):
        table_for_gpu("H100")
    member = get_space("zennas-res").sample(np.random.default_rng(0))
    args = ["latency", member.canonical, "--gpu", "H200", "-r", "224", "--num-classes", "1000", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["table"] == "h200-torch-fp16-b64" and data["table_header"]["device"]["family"] == "H200"
    expected = predict(member, table_for_gpu("H200"), resolution=224, num_classes=1000)
    assert data["latency_ms_per_batch"] == pytest.approx(expected.latency_ms_per_batch)


# ------------------------------------------------------------------------------------------------
# On a GPU (skipped without CUDA)
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
def test_graph_replay_is_the_default_and_times_in_context_modules_on_cuda():
    engine = get_engine("torch", device="cuda", precision="fp16")
    op = Op("conv", 32, 64, 16, 3, 1, 1)
    timings = engine.time_many([subtracted_pair(op, 8), subtracted_pair(op, 8, timed=False)], runs=20, rounds=2)
    assert all(t.options["cuda_graph"] is True and t.runs == 40 for t in timings)
    assert timings[0].median_ms > timings[1].median_ms > 0  # the operator costs something beside its helpers


@pytest.mark.gpu
@requires_cuda
def test_gpu_profile_validate_and_measure_end_to_end(tmp_path):
    out = tmp_path / "gpu.json"
    runner = CliRunner()
    result = runner.invoke(main, ["profile", "--space", "zennas-res", "--device", "cuda", "--precision", "fp16",
                                  "--batch-size", "8", "--resolution", "32", "--num-classes", "10", "--samples", "3",
                                  "--runs", "5", "--rounds", "2", "--time-limit", "120",
                                  "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = load_table(out)
    assert table.header["engine"] == "torch" and table.device_kind == "cuda"
    assert table.timing["mode"] == "graph" and table.timing["operators"] == "in-context"
    validated = runner.invoke(main, ["latency", "validate", "--table", str(out), "--space", "zennas-res",
                                     "--samples", "3", "--num-classes", "10", "--runs", "5", "--rounds", "2",
                                     "--log", str(tmp_path / "v.jsonl"), "--json"])  # fmt: skip
    assert validated.exit_code == 0, validated.output
    assert json.loads(validated.output)["settings"]["cuda_graph"] is True
    member = get_space("zennas-res").sample(np.random.default_rng(0)).canonical
    measured = runner.invoke(main, ["latency", member, "--table", str(out), "-r", "32", "--num-classes", "10",
                                    "--measure", "--runs", "10", "--json"])  # fmt: skip
    assert measured.exit_code == 0, measured.output
    data = json.loads(measured.output)
    assert data["measured"]["device"].startswith("cuda") and data["measured"]["options"]["cuda_graph"] is True
    assert data["measured"]["precision"] == "fp16" and data["ratio"] > 0
