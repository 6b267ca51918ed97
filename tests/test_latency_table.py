"""Latency tables: the V100 conversion, interpolation against analytic MAC counts, prediction, profiling, validation."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import V100_LUT_SAMPLE
from torch import nn

from cli import main
from zennas.build import BuildOptions, build
from zennas.counting import count
from zennas.errors import LatencyError
from zennas.latency import predict as predict_module
from zennas.latency.ops import Op, network_ops
from zennas.latency.predict import latency_ms_per_batch, predict
from zennas.latency.profile import CHANNEL_GRID, grid_points, op_module, profile, snap, space_grid
from zennas.latency.shipped import convert_tinynas_lut, open_table, shipped_tables, table_for_gpu
from zennas.latency.table import LatencyTable, load_table, save_table
from zennas.latency.validate import accuracy, fit_correction, validate
from zennas.models import resolve_arch

# ------------------------------------------------------------------------------------------------
# The shipped V100 table
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v100() -> LatencyTable:
    return open_table("v100-trt-fp16")


def test_shipped_v100_table_is_the_published_file_minus_failed_rows(v100):
    # REFERENCE 7.2: the published file has 90,850 rows, 1,091 of them failed measurements at -1.
    assert len(v100.entries) == 90850 - 1091
    assert v100.header["source"]["rows_dropped_failed_measurement"] == 1091
    assert v100.batch_sizes == [1, 32, 64, 128] and v100.header["precision"] == "fp16"
    assert "Apache-2.0" in v100.header["source"]["project"]
    assert {row[0] for row in v100.entries} == {"conv", "dwconv"}
    # Every 40th published record (and a quarter of the failed ones, tests/data/NOTICE): each measured
    # record is in the shipped table with its value unchanged, and no failed one is.
    _, sample, dropped = convert_tinynas_lut(V100_LUT_SAMPLE)
    assert len(sample) + dropped == 2538 and dropped == 294
    shipped = {tuple(row[:-1]): row[-1] for row in v100.entries}
    assert all(shipped.get(tuple(row[:-1])) == row[-1] for row in sample)
    failed = [line.split() for line in V100_LUT_SAMPLE.read_text().splitlines() if line.endswith(" -1")]
    for record, _ in failed:
        conv_type, batch, c_in, side, _, c_out, kernel, stride, fused = record.strip("{}").split(",")
        kind = "dwconv" if conv_type == "Depthwise" else "conv"
        key = (kind, int(batch), int(c_in), int(c_out), int(side), int(kernel), int(stride), int(fused), "relu")
        assert key not in shipped


@pytest.mark.parametrize(
    ("op", "batch", "ms"),
    [  # the records quoted in REFERENCE 7.2
        (Op("conv", 64, 64, 56, 3, 1, 0), 32, 0.11991),
        (Op("conv", 64, 64, 56, 3, 1, 1), 32, 0.132608),
        (Op("dwconv", 256, 256, 14, 5, 1, 0), 1, 0.0243712),
        (Op("conv", 64, 64, 56, 3, 1, 0), 1, 0.0169),
        (Op("conv", 64, 64, 56, 3, 1, 0), 64, 0.2031),
        (Op("conv", 64, 64, 56, 3, 1, 0), 128, 0.3810),
    ],
)
def test_v100_exact_entries(v100, op, batch, ms):
    value, extrapolated = v100.op_ms(op, batch)
    assert value == pytest.approx(ms, rel=2e-3) and not extrapolated


def test_gpu_selection_and_listing():
    assert "v100-trt-fp16" in shipped_tables()
    assert table_for_gpu("v100").name == "v100-trt-fp16"
    with pytest.raises(LatencyError, match="no shipped latency table for GPU 'T4'"):
        table_for_gpu("T4")
    with pytest.raises(LatencyError, match="no shipped latency table for GPU 'V100', precision int8"):
        table_for_gpu("V100", precision="int8")


def test_published_latency_zennets_rank_in_budget_order(v100):
    # The six current latency ZenNets were searched for 0.1 ... 1.2 ms/image (V100 FP16, batch 64, PyTorch):
    # the TensorRT table must order them the same way.
    names = ["zennet-0.1ms", "zennet-0.2ms", "zennet-0.3ms", "zennet-0.5ms", "zennet-0.8ms", "zennet-1.2ms"]
    predicted = []
    for name in names:
        spec, _ = resolve_arch(name)
        predicted.append(predict(spec, v100, resolution=224, num_classes=1000).latency_ms_per_image)
    assert predicted == sorted(predicted)
    assert 0.03 < predicted[0] < 0.1 < predicted[-1] < 1.2  # TensorRT is faster than the eager budget


# ------------------------------------------------------------------------------------------------
# Interpolation against a table whose entries are analytic: ms = MACs x 1e-6
# ------------------------------------------------------------------------------------------------


def macs_ms(op: Op) -> float:
    out = op.side // op.stride
    if op.kind == "dwconv":
        return op.c_in * op.kernel**2 * out * out * 1e-6
    return op.c_in * op.c_out * op.kernel**2 * out * out * 1e-6


def header(name: str = "synthetic", kinds=("conv", "dwconv"), batches=(1,)) -> dict:
    return {
        "name": name,
        "device": {"family": "TEST", "name": "test device"},
        "engine": "torch",
        "precision": "fp32",
        "batch_sizes": list(batches),
        "unit": "ms_per_batch",
        "op_kinds": list(kinds),
        "budget": {"batch_size": batches[0], "resolution": 64},
    }


@pytest.fixture(scope="module")
def mac_table(tmp_path_factory) -> LatencyTable:
    grid = [c for c in CHANNEL_GRID if c <= 2048]
    rows = []
    for side in (2, 4, 8, 16, 32, 64):
        for k in (1, 3, 5, 7):
            for s in (1, 2):
                for fused in (0, 1):
                    for c_in in [3, *grid]:
                        for c_out in grid:
                            op = Op("conv", c_in, c_out, side, k, s, fused)
                            rows.append(["conv", 1, c_in, c_out, side, k, s, fused, "relu", macs_ms(op)])
                    for c in grid:
                        op = Op("dwconv", c, c, side, k, s, fused)
                        rows.append(["dwconv", 1, c, c, side, k, s, fused, "relu", macs_ms(op)])
    return save_table(tmp_path_factory.mktemp("t") / "macs.json.gz", header(), rows)


@pytest.mark.parametrize(
    "op",
    [
        Op("conv", 72, 200, 16, 3, 1, 0),  # both widths between grid points
        Op("conv", 3, 40, 64, 3, 2, 0),
        Op("conv", 600, 1100, 8, 1, 1, 1),
        Op("dwconv", 344, 344, 32, 5, 2, 0),
        Op("conv", 72, 200, 12, 3, 1, 0),  # side between two tabulated sides: linear in pixels
        Op("conv", 72, 200, 24, 7, 2, 1),
    ],
)
def test_interpolation_is_exact_for_latency_proportional_to_macs(mac_table, op):
    value, extrapolated = mac_table.op_ms(op, 1)
    assert value == pytest.approx(macs_ms(op), rel=1e-9) and not extrapolated


@pytest.mark.parametrize("name", ["zennet-0.8ms", "genet-normal", "zennet-cifar10-1m", "zennet-v1-400m-se"])
def test_prediction_of_a_network_equals_its_analytic_macs(mac_table, name):
    spec, _ = resolve_arch(name)
    p = predict(spec, mac_table, resolution=64, num_classes=0, use_se=False)
    macs = count(spec, resolution=64, num_classes=0, use_se=False).macs
    assert p.latency_ms_per_batch == pytest.approx(macs * 1e-6, rel=1e-9)
    # Widths beyond the synthetic grid (2048) are scaled proportionally: still exact, but flagged.
    wide = sum(max(op.c_in, op.c_out) > 2048 for op in network_ops(spec, resolution=64, use_se=False))
    assert p.extrapolated_operators == wide and p.latency_ms_per_image == p.latency_ms_per_batch


def test_the_search_call_equals_the_report_and_survives_memo_clearing(mac_table, monkeypatch):
    from zennas.spaces import get_space

    monkeypatch.setattr(predict_module, "GROUP_MEMO_LIMIT", 5)  # forces clears between candidates
    rng = np.random.default_rng(2)
    space = get_space("zennas-idw")
    for _ in range(10):
        spec = space.sample(rng)
        fast = latency_ms_per_batch(spec, mac_table, resolution=64, batch_size=1)
        assert fast == predict(spec, mac_table, resolution=64).latency_ms_per_batch
        assert len(mac_table.group_memo) <= 5 + len(spec.blocks) + 1


def test_interpolation_stays_between_the_surrounding_entries(v100):
    # Sweep an input width across the grid: every prediction lies within its neighbours' range and the
    # sweep is monotone wherever the tabulated points are.
    c_ins = list(range(64, 513, 8))
    values = [v100.op_ms(Op("conv", c, 256, 28, 3, 1, 0), 64)[0] for c in c_ins]
    lower = [v100.op_ms(Op("conv", c, 256, 26, 3, 1, 0), 64)[0] for c in c_ins]
    upper = [v100.op_ms(Op("conv", c, 256, 32, 3, 1, 0), 64)[0] for c in c_ins]
    for v, lo, hi in zip(values, lower, upper, strict=True):
        assert min(lo, hi) - 1e-12 <= v <= max(lo, hi) + 1e-12


def test_extrapolation_is_flagged_and_far_outside_is_an_error(mac_table):
    near = Op("conv", 64, 4000, 16, 1, 1, 0)  # < 4x beyond the widest output
    value, extrapolated = mac_table.op_ms(near, 1)
    assert extrapolated and value == pytest.approx(macs_ms(near), rel=1e-9)  # proportional scaling
    with pytest.raises(LatencyError, match=r"conv 64->9000 k1 s1 @16x16 at batch 1 is outside latency table"):
        mac_table.op_ms(Op("conv", 64, 9000, 16, 1, 1, 0), 1)
    with pytest.raises(LatencyError, match="side 300"):
        mac_table.op_ms(Op("conv", 64, 64, 300, 1, 1, 0), 1)
    with pytest.raises(LatencyError, match="has no batch size 8; it was measured at batch 1"):
        mac_table.op_ms(Op("conv", 64, 64, 16, 1, 1, 0), 8)


def test_operator_kinds_the_table_lacks_are_reported_not_costed(mac_table):
    spec, _ = resolve_arch("zennet-v1-400m-se")
    p = predict(spec, mac_table, resolution=64, num_classes=1000, use_se=True)
    assert p.not_costed == {
        "se": sum(op.kind == "se" for op in network_ops(spec, resolution=64, use_se=True)),
        "head": 1,
    }


# ------------------------------------------------------------------------------------------------
# File format
# ------------------------------------------------------------------------------------------------


def test_round_trip_plain_and_gzip(tmp_path):
    rows = [["conv", 1, 8, 16, 32, 3, 1, 0, "relu", 0.5], ["dwconv", 1, 16, 16, 32, 3, 1, 0, "hswish", 0.25]]
    for name in ("t.json", "t.json.gz"):
        saved = save_table(tmp_path / name, header(), rows)
        loaded = load_table(tmp_path / name)
        assert loaded.entries == saved.entries and loaded.header == saved.header
    assert gzip.decompress((tmp_path / "t.json.gz").read_bytes())[:1] == b"{"


def test_version_1_files_read_as_relu_tables_and_unmeasured_activations_cost_as_relu(tmp_path):
    v1 = {"format": "zennas-latency-table", "version": 1, "header": header(),
          "columns": ["kind", "batch_size", "c_in", "c_out", "side", "kernel", "stride", "fused", "ms"],
          "entries": [["conv", 1, 8, 16, 32, 3, 1, 0, 0.5]]}  # fmt: skip
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    table = load_table(tmp_path / "v1.json")
    assert table.entries == [["conv", 1, 8, 16, 32, 3, 1, 0, "relu", 0.5]]
    # This table measured ReLU convs only: a hard-swish or linear conv of the same shape costs the same.
    for act in ("relu", "hswish", "none"):
        assert table.op_ms(Op("conv", 8, 16, 32, 3, 1, 0, act), 1) == (0.5, False)
    # A table that measured hard-swish keeps the two apart, and one with no ReLU rows does not invent them.
    rows = [["conv", 1, 8, 16, 32, 3, 1, 0, "relu", 0.5], ["conv", 1, 8, 16, 32, 3, 1, 0, "hswish", 0.7]]
    both = save_table(tmp_path / "both.json", {**header(), "activations": ["hswish", "relu"]}, rows)
    assert both.op_ms(Op("conv", 8, 16, 32, 3, 1, 0, "hswish"), 1)[0] == 0.7
    assert both.op_ms(Op("conv", 8, 16, 32, 3, 1, 0, "relu"), 1)[0] == 0.5
    with pytest.raises(LatencyError, match="hswish"):
        both.op_ms(Op("conv", 8, 16, 32, 3, 2, 0, "hswish"), 1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="pickle"), "is not a zennas latency table"),
        (lambda d: d.update(version=99), "has format version 99"),
        (lambda d: d.update(columns=["a"]), "has columns"),
        (lambda d: d["entries"].append(["conv", 1, 8, 16, 32, 3, 1, 0, "relu", -1]), "known activation and a positive"),
        (lambda d: d["entries"].append(["conv", 1, 8, 16, 32, 3, 1, 0, "gelu", 1.0]), "known activation and a"),
        (lambda d: d["entries"].append(["conv", 1]), "is not a row of 10 values"),
        (lambda d: d["header"].update(activations=["gelu"]), "declares unknown activations"),
        (lambda d: d["header"].pop("engine"), "lacks engine"),
        (lambda d: d["header"].update(unit="s_per_image"), "has unit 's_per_image'"),
    ],
)
def test_malformed_tables_are_one_line_errors(tmp_path, mutate, message):
    save_table(tmp_path / "t.json", header(), [["conv", 1, 8, 16, 32, 3, 1, 0, "relu", 0.5]])
    data = json.loads((tmp_path / "t.json").read_text())
    mutate(data)
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(LatencyError, match=message):
        load_table(tmp_path / "t.json")


def test_unreadable_files(tmp_path):
    with pytest.raises(LatencyError, match="does not exist"):
        load_table(tmp_path / "missing.json")
    (tmp_path / "torn.json.gz").write_bytes(gzip.compress(b'{"format": "zennas-lat')[:-4])
    with pytest.raises(LatencyError, match="is not readable JSON"):
        load_table(tmp_path / "torn.json.gz")


# ------------------------------------------------------------------------------------------------
# Profiling: grid, modules, resume
# ------------------------------------------------------------------------------------------------


def test_snap_and_grid_points():
    assert snap(3) == (3,) and snap(64) == (64,) and snap(72) == (64, 96)
    assert grid_points(Op("conv", 72, 200, 14, 3, 1, 0)) == {
        Op("conv", a, b, 14, 3, 1, 0) for a in (64, 96) for b in (192, 256)
    }
    assert grid_points(Op("dwconv", 72, 72, 14, 3, 1, 0)) == {Op("dwconv", c, c, 14, 3, 1, 0) for c in (64, 96)}


def test_a_space_grid_covers_every_sampled_member_without_extrapolation(mac_table):
    ops = space_grid("zennas-idw", resolution=64, num_classes=0, samples=20, seed=3)
    assert all(op.c_in in CHANNEL_GRID or op.c_in < 8 for op in ops)
    # Every operator of those members lies inside the grid the space produced.
    from zennas.spaces import get_space

    rng = np.random.default_rng(3)
    for _ in range(20):
        for op in network_ops(get_space("zennas-idw").sample(rng), resolution=64):
            assert grid_points(op) <= set(ops)


@pytest.mark.parametrize(
    "op", [Op("conv", 8, 16, 10, 3, 2, 1), Op("dwconv", 16, 16, 9, 5, 1, 0), Op("se", 32, 8, 7), Op("head", 32, 10, 7)]
)
def test_op_modules_have_the_operator_shapes(op):
    import torch

    module, shape = op_module(op, 2)
    assert shape == (2, op.c_in, op.side, op.side)
    with torch.no_grad():
        y = module(torch.zeros(shape))
    if "conv" in op.kind:
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        assert (
            len(convs) == 1 and convs[0].kernel_size == (op.kernel, op.kernel) and convs[0].stride == (op.stride,) * 2
        )
        assert y.shape[1] == op.c_out and (module.residual is not None) == bool(op.fused)
    elif op.kind == "se":
        assert y.shape == shape
    else:
        assert y.shape == (2, op.c_out)


@pytest.mark.parametrize(
    "op",
    [Op("conv", 8, 16, 10, 3, 2, 1, "none"), Op("conv", 8, 16, 10, 3, 1, 0, "hswish"), Op("dwconv", 16, 16, 9, 5, 2, 0),
     Op("se", 32, 8, 7), Op("head", 32, 10, 7)],
)  # fmt: skip
def test_in_context_modules_compute_the_operator_between_marked_helpers(op):
    import torch

    from zennas.latency.engines.ort import AUX_MARKER

    module, shape = op_module(op, 2, in_context=True)
    plain, _ = op_module(op, 2)
    helpers = {name.split(".")[0] for name, _ in module.named_parameters() if AUX_MARKER in name}
    expected = {"conv": {"residual"} if op.fused else set(), "se": {"before", "after"}, "head": {"before"}}
    assert helpers == {f"{AUX_MARKER}_{role}" for role in expected.get(op.kind, set())}
    x = torch.randn(shape)
    with torch.no_grad():
        y = module(x)
        # The operator itself has the plain module's weights (same seed): recompute it around the helpers.
        inner = module.op
        if op.fused:
            act = {"none": torch.nn.Identity(), "relu": torch.relu}[op.act]
            reference = act(inner.bn(inner.conv(x)) + getattr(module, f"{AUX_MARKER}_residual")(x))
        elif op.kind == "se":
            before = getattr(module, f"{AUX_MARKER}_before")(x)
            reference = getattr(module, f"{AUX_MARKER}_after")(inner(before))
        elif op.kind == "head":
            reference = inner(getattr(module, f"{AUX_MARKER}_before")(x))
        else:
            reference = plain(x)
            assert torch.equal(inner.conv.weight, plain.conv.weight) and isinstance(inner.act, type(plain.act))
    torch.testing.assert_close(y, reference)
    assert y.shape == plain(x).shape


class FakeEngine:
    """Deterministic engine: ms = conv MACs x 1e-6 of the module (+ 0 for others); counts calls."""

    name, device, precision = "fake", "cpu", "fp32"
    times_in_context = False

    def __init__(self, stop_after: int | None = None):
        self.options: dict = {}
        self.calls = 0
        self.stop_after = stop_after
        self.chunks: list[int] = []  # models per time_many call

    def identity(self):
        return {"name": "fake cpu", "family": "CPU"}

    def versions(self):
        return {"fake": "1"}

    def time(self, module, shape, **_):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        macs = 0
        side = shape[-1]
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                out = side // m.stride[0]
                macs += m.in_channels * m.out_channels * m.kernel_size[0] ** 2 // m.groups * out * out
        return SimpleNamespace(ms_per_batch=max(macs * 1e-6, 1e-4), cv=0.0)

    def time_many(self, models, *, runs, rounds, **_):
        assert isinstance(runs, int) and isinstance(rounds, int)  # (an extension once passed its provenance as runs)
        self.chunks.append(len(models))
        return [self.time(module, shape) for module, shape in models]


def test_profile_resumes_after_an_interruption_without_remeasuring(tmp_path):
    ops = space_grid("binas", resolution=32, num_classes=0, samples=3)
    out = tmp_path / "cpu.json.gz"
    first = FakeEngine(stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        profile(ops, first, batch_size=1, out=out, header=header("cpu"))
    partial = tmp_path / "cpu.json.gz.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 7 and not out.exists()
    with open(partial, "a") as f:
        f.write('["conv", 1, 8')  # a line torn by the interruption
    second = FakeEngine()
    result = profile(ops, second, batch_size=1, out=out, header=header("cpu"))
    assert second.calls == len(ops) - 7 and result.reused == 7 and result.measured == len(ops) - 7
    assert not partial.exists() and len(load_table(out).entries) == len(ops)
    third = FakeEngine()
    assert profile(ops, third, batch_size=1, out=out, header=header("cpu")).measured == 0 and third.calls == 0
    # Extending the table with another space's operators keeps both runs' provenance and operator kinds.
    more = [Op("se", 32, 8, 7), Op("head", 32, 10, 7)]
    extended = profile(more, FakeEngine(), batch_size=1, out=out, header={**header("cpu", kinds=("se", "head")),
                       "source": {"command": "second", "space": "other"}})  # fmt: skip
    assert set(extended.table.op_kinds) == {"conv", "dwconv", "se", "head"}
    assert [r["command"] for r in extended.table.header["source"]["runs"]] == [None, "second"]
    other = {**header("cpu"), "precision": "fp16"}
    with pytest.raises(LatencyError, match="holds a table for another device/engine/precision/batch"):
        profile(ops, third, batch_size=1, out=out, header=other)


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def test_accuracy_figures():
    measured = np.array([1.0, 2.0, 4.0, 8.0])
    a = accuracy(np.array([1.04, 2.3, 4.0, 7.0]), measured)
    assert a.within_10pct == 0.5 and a.within_5pct == 0.5 and a.spearman == 1.0
    assert a.mape == pytest.approx(100 * (0.04 + 0.15 + 0 + 0.125) / 4)


def test_fit_recovers_an_affine_relation():
    sums = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    intercept, slope = fit_correction(sums, 0.7 + 1.3 * sums)
    assert intercept == pytest.approx(0.7) and slope == pytest.approx(1.3)


class MacEngine(FakeEngine):
    """Whole networks: ms = 2 + 1.5 x the MAC-table sum, so a fit must find (2, 1.5)."""

    def time(self, model, shape, **_):
        self.calls += 1
        return SimpleNamespace(ms_per_batch=2.0 + 1.5 * self.expected[self.calls - 1], cv=0.0)


def test_validate_reports_and_fits_on_a_held_out_half(mac_table, tmp_path):
    from zennas.spaces import get_space

    rng = np.random.default_rng(0)
    specs = [get_space("zennas-idw").sample(rng) for _ in range(8)]
    engine = MacEngine()
    engine.expected = [predict(s, mac_table, resolution=64, num_classes=0).latency_ms_per_batch for s in specs]
    log = tmp_path / "log.jsonl"
    report = validate("zennas-idw", mac_table, engine, samples=8, resolution=64, num_classes=0, fit=True, log=log)
    assert report.overall.spearman == pytest.approx(1.0) and report.overall.within_10pct < 1
    assert report.fit["slope"] == pytest.approx(1.5) and report.fit["intercept_ms"] == pytest.approx(2.0)
    assert report.fit["held_out_after"]["within_5pct"] == 1.0 and report.fit["held_out_after"]["n"] == 4
    # The log makes a rerun free.
    again = MacEngine()
    validate("zennas-idw", mac_table, again, samples=8, resolution=64, num_classes=0, log=log)
    assert again.calls == 0
    # Chunks of 3 (and a parameter cap that splits them further) measure every network once, in order.
    chunked = MacEngine()
    chunked.expected = engine.expected
    sizes = [sum(p.numel() for p in build(s, BuildOptions(num_classes=0)).parameters()) for s in specs]
    split = validate("zennas-idw", mac_table, chunked, samples=8, resolution=64, num_classes=0, fit=True, chunk=3,
                     chunk_params=max(sizes) + 1)  # fmt: skip
    assert chunked.calls == 8 and np.array_equal(split.measured_ms, report.measured_ms)
    assert sum(chunked.chunks) == 8 and max(chunked.chunks) <= 3 and len(chunked.chunks) >= 3
    first = 0
    for n in chunked.chunks:  # no chunk exceeds the cap, and none could have taken the next network
        assert sum(sizes[first : first + n]) <= max(sizes) + 1
        if first + n < 8 and n < 3:
            assert sum(sizes[first : first + n + 1]) > max(sizes) + 1
        first += n


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["tables"], ["latency"], ["latency", "validate"], ["profile"]])
def test_help(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_cli_tables_and_latency_json():
    runner = CliRunner()
    listing = runner.invoke(main, ["tables"])
    assert listing.exit_code == 0 and "v100-trt-fp16" in listing.output and "batch of 64" in listing.output
    result = runner.invoke(main, ["latency", "zennet-0.8ms", "--gpu", "V100", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["table"] == "v100-trt-fp16" and data["batch_size"] == 64
    assert data["latency_ms_per_image"] == pytest.approx(data["latency_ms_per_batch"] / 64)
    spec, _ = resolve_arch("zennet-0.8ms")
    expected = predict(spec, open_table("v100-trt-fp16"), resolution=224, num_classes=1000)
    assert data["latency_ms_per_batch"] == pytest.approx(expected.latency_ms_per_batch)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["latency", "zennet-0.8ms"], "give exactly one of --table"),
        (["latency", "zennet-0.8ms", "--gpu", "T4"], "no shipped latency table for GPU 'T4'"),
        (["latency", "zennet-0.8ms", "--table", "nope"], "no shipped latency table named 'nope'"),
        (["latency", "zennet-0.8ms", "--gpu", "V100", "-b", "8"], "has no batch size 8"),
        (["latency", "zennet-0.8ms", "--table", "v100-trt-fp16", "--precision", "fp32"], "was measured in fp16"),
    ],
)
def test_cli_latency_errors_are_one_line(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_profile_then_predict_and_measure(tmp_path):
    out = tmp_path / "tiny.json"
    runner = CliRunner()
    args = ["profile", "--space", "binas", "--engine", "torch", "--resolution", "32", "--num-classes", "0",
            "--samples", "2", "--runs", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    table = load_table(out)
    assert table.header["engine"] == "torch" and table.header["device"]["family"] == "CPU"
    rerun = runner.invoke(main, args)
    assert "0 measured now" in rerun.output
    # A member the grid was drawn from lies inside the table; --measure times it end to end.
    from zennas.arch import get_dialect
    from zennas.spaces import get_space

    spec = get_space("binas").sample(np.random.default_rng(0))
    arch = get_dialect("binas").format(spec)
    result = runner.invoke(main, ["latency", arch, "--table", str(out), "-r", "32", "--num-classes", "0",
                                  "--measure", "--runs", "3", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # Without --engine the measurement uses the table's engine and its thread count (1, not the default 2).
    assert data["extrapolated_operators"] == 0 and data["measured"]["engine"] == "torch"
    assert data["measured"]["options"]["threads"] == table.header["engine_options"]["threads"] == 1
    assert data["relative_error"] == pytest.approx(
        (data["latency_ms_per_batch"] - data["measured"]["ms_per_batch"]) / data["measured"]["ms_per_batch"]
    )
