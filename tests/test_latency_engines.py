"""Timing engines: statistics, warm-up, seeded input, untouched caller model, errors; TensorRT logic on a fake module.

Only counts, orderings and bookkeeping are asserted, never wall-clock thresholds.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import types

import pytest
import torch
from torch import nn

from zennas.errors import ConfigError, DependencyError, TimingError
from zennas.latency.engines import ENGINES, Timing, get_engine, random_input, summarize, warm_up
from zennas.latency.engines import trt as trt_mod
from zennas.latency.engines.base import measure_host, timing_flags

SHAPE = (2, 3, 16, 16)  # [B, C, H, W]
FAST = {"runs": 5, "min_warmup_ms": 0.0, "min_warmup_runs": 2}

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_net() -> nn.Module:
    """conv-BN-ReLU, pool, linear: enough to exercise BN in eval mode and a real export."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


class Recorder(nn.Module):
    """Records the inputs its forward saw (in its own list: a deep copy records into the copy's list)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.conv(x)


# --- statistics and loops ---------------------------------------------------------------------------


def test_summarize():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["mean_ms"] == 4.0
    assert stats["p90_ms"] == pytest.approx(7.6)  # linear interpolation between 4 and 10
    assert stats["iqr_ms"] == 2.0
    assert stats["cv"] == pytest.approx(math.sqrt(12.5) / 4.0)
    assert summarize([2.0])["cv"] == 0.0
    with pytest.raises(TimingError):
        summarize([])
    with pytest.raises(TimingError):
        summarize([1.0, float("nan")])


def fake_clock(step_ns: int):
    """A clock advancing `step_ns` per reading."""
    state = {"t": 0}

    def clock() -> int:
        state["t"] += step_ns
        return state["t"]

    return clock


def test_warm_up_needs_both_minimums():
    calls = []
    # 10 ms per clock reading: one reading per run after the start reading
    assert warm_up(lambda: calls.append(1), min_ms=0.0, min_runs=3, clock=fake_clock(10_000_000)) == (3, 30.0)
    assert warm_up(lambda: None, min_ms=45.0, min_runs=1, clock=fake_clock(10_000_000)) == (5, 50.0)
    assert warm_up(lambda: None, min_ms=15.0, min_runs=4, clock=fake_clock(10_000_000)) == (4, 40.0)
    syncs = []
    runs, _ = warm_up(lambda: None, min_ms=0.0, min_runs=2, sync=lambda: syncs.append(1), clock=fake_clock(1))
    assert runs == 2 and len(syncs) == 2
    assert len(calls) == 3


def test_measure_host_samples_each_run():
    samples = measure_host(lambda: None, 4, clock=fake_clock(2_000_000))
    assert samples == [2.0, 2.0, 2.0, 2.0]


def test_timing_flags():
    assert timing_flags(cv=0.01, runs=50, identity={"kind": "cpu"}) == ()
    flags = timing_flags(cv=0.2, runs=10, identity={"clock_event_reasons": ["gpu_idle", "sw_power_cap"], "error": "x"})
    assert flags == ("cv>5%", "throttled", "runs<50", "no-identity")
    assert timing_flags(cv=0.0, runs=60, identity={"clock_event_reasons": ["gpu_idle"]}) == ()


def test_random_input_is_seeded_and_private():
    state = torch.get_rng_state()
    a, b, c = random_input(SHAPE, 0), random_input(SHAPE, 0), random_input(SHAPE, 1)
    assert torch.equal(state, torch.get_rng_state())
    assert a.shape == SHAPE and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- registry and configuration errors --------------------------------------------------------------


def test_registry():
    assert ENGINES == ("torch", "onnxruntime", "tensorrt")
    with pytest.raises(ConfigError, match="torch, onnxruntime, tensorrt"):
        get_engine("tvm")


def test_configuration_errors():
    with pytest.raises(ConfigError, match="fp16 is GPU-only"):
        get_engine("torch", precision="fp16")
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        get_engine("torch", precision="int8")
    with pytest.raises(ConfigError, match="unknown option"):
        get_engine("torch", cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graph=True needs device='cuda'"):
        get_engine("torch", cuda_graph=True)
    with pytest.raises(ConfigError, match="'cpu', 'cuda' or 'cuda:N'"):
        get_engine("torch", device="gpu0")
    with pytest.raises(ConfigError, match="threads"):
        get_engine("torch", threads=0)
    engine = get_engine("torch")
    with pytest.raises(ConfigError, match="four positive ints"):
        engine.time(tiny_net(), (3, 16, 16))
    with pytest.raises(ConfigError, match="runs"):
        engine.time(tiny_net(), SHAPE, runs=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(TimingError, match=r"torch.cuda.is_available\(\) is False"):
        get_engine("torch", device="cuda")


# --- torch engine on the CPU ------------------------------------------------------------------------


def test_torch_cpu_timing():
    t = get_engine("torch").time(tiny_net(), SHAPE, **FAST)
    assert isinstance(t, Timing)
    assert (t.engine, t.device, t.precision, t.batch_size, t.input_shape) == ("torch", "cpu", "fp32", 2, SHAPE)
    assert t.runs == 5 and len(t.samples_ms) == 5
    assert all(math.isfinite(s) and s > 0 for s in t.samples_ms)
    assert 0 < t.min_ms <= t.median_ms <= t.p90_ms <= t.p99_ms
    assert t.ms_per_batch == t.median_ms
    assert t.ms_per_image == pytest.approx(t.median_ms / 2)
    assert t.warmup_runs >= 2
    assert t.identity["kind"] == "cpu" and t.versions["torch"] == torch.__version__
    assert t.options["seed"] == 0 and t.options["threads"] == torch.get_num_threads()
    assert "runs<50" in t.flags
    data = t.to_dict()
    json.dumps(data)
    assert data["ms_per_image"] == t.ms_per_image and data["p90_ms_per_image"] == pytest.approx(t.p90_ms / 2)
    assert data["input_shape"] == list(SHAPE) and len(data["samples_ms"]) == 5


def test_warm_up_minimums_through_engine():
    engine = get_engine("torch")
    t = engine.time(tiny_net(), SHAPE, runs=2, min_warmup_ms=0.0, min_warmup_runs=4)
    assert t.warmup_runs == 4
    t = engine.time(tiny_net(), SHAPE, runs=2, min_warmup_ms=20.0, min_warmup_runs=1)
    assert t.warmup_runs >= 1 and t.warmup_ms >= 20.0


def test_seeded_input_eval_and_inference_mode():
    net = Recorder()
    engine = get_engine("torch")
    engine.time(net, SHAPE, runs=2, min_warmup_ms=0.0, min_warmup_runs=1, seed=7)
    assert net.seen == []  # the engine times a copy, not the caller's module
    seen = []  # a hook function survives deepcopy by reference, so it reports what the copy saw
    handle = net.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), module.training)))
    try:
        for seed in (7, 7, 8):
            engine.time(net, SHAPE, runs=2, min_warmup_ms=0.0, min_warmup_runs=1, seed=seed)
    finally:
        handle.remove()
    assert len(seen) == 9 and not any(training for _, training in seen)
    assert all(torch.equal(x, random_input(SHAPE, 7)) for x, _ in seen[:6])
    assert torch.equal(seen[6][0], random_input(SHAPE, 8))
    assert not torch.equal(seen[6][0], seen[0][0])


def test_inference_mode_inside_timing():
    modes = []

    class Probe(nn.Module):
        def forward(self, x):
            modes.append(torch.is_inference_mode_enabled())
            return x * 2

    get_engine("torch").time(Probe(), SHAPE, runs=2, min_warmup_ms=0.0, min_warmup_runs=1)
    assert modes and all(modes)


@pytest.mark.parametrize("options", [{}, {"precision": "bf16", "channels_last": True}])
def test_caller_model_unchanged(options):
    net = tiny_net().train()
    before = copy.deepcopy(net.state_dict())
    get_engine("torch", **options).time(net, SHAPE, **FAST)
    assert net.training
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert net[0].weight.is_contiguous()  # not switched to channels_last


def test_bf16_cpu_and_threads_restored():
    threads = torch.get_num_threads()
    t = get_engine("torch", precision="bf16", threads=2).time(tiny_net(), SHAPE, **FAST)
    assert t.precision == "bf16" and t.options["threads"] == 2 and t.identity["torch_threads"] == 2
    assert torch.get_num_threads() == threads


def test_identity_failure_keeps_timing_and_flags_it(monkeypatch):
    from zennas.latency.engines import base

    def broken(device):
        raise TimingError("no NVIDIA driver/GPU: NVML failed to initialise")

    monkeypatch.setattr(base, "identify", broken)
    t = get_engine("torch").time(tiny_net(), SHAPE, **FAST)
    assert "no-identity" in t.flags and t.identity["error"].startswith("no NVIDIA driver/GPU")


# --- onnxruntime engine -----------------------------------------------------------------------------


def test_onnxruntime_cpu_timing():
    net = tiny_net().train()
    before = copy.deepcopy(net.state_dict())
    t = get_engine("onnxruntime").time(net, SHAPE, **FAST)
    assert net.training and all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert t.engine == "onnxruntime" and t.options["provider"] == "CPUExecutionProvider"
    assert t.options["threads"] == torch.get_num_threads() and t.options["opset"] == 18
    assert len(t.samples_ms) == 5 and 0 < t.median_ms <= t.p90_ms
    assert "onnxruntime" in t.versions and "onnx" in t.versions
    json.dumps(t.to_dict())


def test_onnxruntime_errors(monkeypatch):
    with pytest.raises(ConfigError, match="fp16 is supported on device='cuda' only"):
        get_engine("onnxruntime", precision="fp16")
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DependencyError, match="pip uninstall onnxruntime && pip install onnxruntime-gpu"):
        get_engine("onnxruntime", device="cuda")


class _OpWithHelper(nn.Module):
    """A cheap depthwise conv next to an expensive helper conv whose parameters carry the AUX marker."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.op = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.zennas_aux_after = nn.Conv2d(32, 32, 5, padding=2, bias=False)  # ~30x the op's MACs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.zennas_aux_after(torch.relu(self.op(x)))


def test_onnxruntime_kernels_timer_leaves_helpers_and_boundary_reorders_out():
    shape = (1, 32, 28, 28)
    settings = {"runs": 5, "rounds": 2, "min_warmup_ms": 0.0, "min_warmup_runs": 2}
    kernels = get_engine("onnxruntime", threads=1, exporter="torchscript", timer="kernels")
    host = get_engine("onnxruntime", threads=1, exporter="torchscript")
    with_helper, alone = kernels.time_many([(_OpWithHelper(), shape), (_OpWithHelper().op, shape)], **settings)
    whole = host.time_many([(_OpWithHelper(), shape)], **settings)[0]
    assert kernels.times_in_context and not host.times_in_context
    assert with_helper.options["timer"] == "kernels" and with_helper.runs == 10 == len(with_helper.samples_ms)
    # The helper is ~30x the op's work: counted, it would dominate; left out, the op is a small part of the whole.
    assert with_helper.median_ms < 0.3 * whole.median_ms
    assert alone.median_ms < 0.3 * whole.median_ms


def test_kernel_profile_parsing(tmp_path):
    from zennas.latency.engines.ort import _kernel_ms

    def node(name, ts, dur, op="Conv"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 90} for t in (0, 100, 200)]
    for base in (0, 100, 200):
        events += [node("ReorderInput", base + 1, 5, "ReorderInput"), node("conv_nchwc", base + 10, 20 + base),
                   node("zennas_aux_3_nchwc", base + 40, 30), node("ReorderOutput", base + 80, 4, "ReorderOutput"),
                   node("ReorderOutput_token_2", base + 85, 3, "ReorderOutput")]  # fmt: skip
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events))
    # Runs 1 and 2 were timed; the boundary reorders and the helper are left out, an inner reorder counts.
    assert _kernel_ms(path, [1, 2], {"ReorderInput", "ReorderOutput"}, True) == pytest.approx([0.123, 0.223])
    path.write_text(json.dumps(events))
    with pytest.raises(TimingError, match="expected at least 4 timed runs"):
        _kernel_ms(path, [0, 1, 2, 3], set(), True)
    path.write_text(json.dumps([e for e in events if "zennas_aux" not in e["name"]]))
    with pytest.raises(TimingError, match="names none of the helper nodes"):
        _kernel_ms(path, [0], set(), True)


def test_time_many_interleaves_rounds():
    from contextlib import contextmanager

    from zennas.latency.engines.base import Session
    from zennas.latency.engines.pytorch import TorchEngine

    order: list[str] = []

    class Logged(TorchEngine):
        @contextmanager
        def _session(self, model, x):
            name = model.name
            yield Session(step=lambda: None, measure=lambda runs: order.extend([name] * runs) or [1.0] * runs)

    models = []
    for name in ("a", "b"):
        m = nn.Identity()
        m.name = name
        models.append((m, SHAPE))
    timings = Logged().time_many(models, runs=2, rounds=3, min_warmup_ms=0.0, min_warmup_runs=0)
    assert order == ["a", "a", "b", "b"] * 3
    assert [t.runs for t in timings] == [6, 6] and all(t.options["rounds"] == 3 for t in timings)
    with pytest.raises(ConfigError, match="rounds must be a positive int"):
        Logged().time_many(models, rounds=0)


def test_kernels_timer_configuration_errors():
    with pytest.raises(ConfigError, match="timer must be one of host, kernels"):
        get_engine("onnxruntime", timer="wall")


# --- tensorrt: import boundary and the GPU-free build logic on a fake module --------------------------


def test_tensorrt_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(DependencyError) as info:
        get_engine("tensorrt", device="cuda")
    assert str(info.value) == (
        "TensorRT is required for the tensorrt engine: pip install tensorrt (needs an NVIDIA GPU and driver)"
    )
    with pytest.raises(ConfigError, match="NVIDIA GPUs only"):
        get_engine("tensorrt", device="cpu")


def fake_tensorrt(major: int) -> types.ModuleType:
    """A tensorrt stand-in: TensorRT 10 has precision flags, 11 (strongly typed only) does not."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = f"{major}.0.1"
    flags = {"TF32": 2} if major >= 11 else {"FP16": 0, "BF16": 1, "TF32": 2, "INT8": 3}
    trt.BuilderFlag = type("BuilderFlag", (), flags)
    trt.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"STRONGLY_TYPED": 1})
    trt.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
    trt.log = []  # every builder call, in order
    trt.behaviour = {"parse_ok": True, "build_ok": True}

    class ILogger:
        Severity = type("Severity", (), {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3})

        def __init__(self):
            pass

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"cache:" + self.data

    class Config:
        def set_memory_pool_limit(self, pool, size):
            trt.log.append(("pool", pool, size))

        def set_flag(self, flag):
            trt.log.append(("set_flag", flag))

        def clear_flag(self, flag):
            trt.log.append(("clear_flag", flag))

        def __setattr__(self, name, value):
            trt.log.append(("attr", name, value))
            object.__setattr__(self, name, value)

        def create_timing_cache(self, data):
            trt.log.append(("create_timing_cache", data))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.log.append(("set_timing_cache", ignore_mismatch))
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

    class Parser:
        def __init__(self, network, logger):
            self.logger = logger
            self.num_errors = 0 if trt.behaviour["parse_ok"] else 2

        def parse_from_file(self, path):
            trt.log.append(("parse", path))
            return trt.behaviour["parse_ok"]

        def get_error(self, i):
            return f"node {i}: unsupported op"

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            trt.log.append(("network_flags", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            if not trt.behaviour["build_ok"]:
                self.logger.log(ILogger.Severity.WARNING, "a warning")
                self.logger.log(ILogger.Severity.ERROR, "out of workspace")
                return None
            return memoryview(b"engine-bytes")

    trt.ILogger, trt.OnnxParser, trt.Builder = ILogger, Parser, Builder
    return trt


def test_strong_typing_detection():
    assert not trt_mod.strongly_typed_only(fake_tensorrt(10))
    assert trt_mod.strongly_typed_only(fake_tensorrt(11))


def test_build_plan_tensorrt_10():
    trt = fake_tensorrt(10)
    plan = trt_mod.build_plan(trt, "fp32")
    assert (plan.strongly_typed, plan.export_dtype, plan.set_flags, plan.clear_flags) == (
        False,
        torch.float32,
        (),
        ("TF32",),
    )
    plan = trt_mod.build_plan(trt, "fp16")  # weak typing: FP32 ONNX + FP16 flag
    assert (plan.strongly_typed, plan.export_dtype, plan.set_flags) == (False, torch.float32, ("FP16",))
    assert trt_mod.build_plan(trt, "bf16").set_flags == ("BF16",)
    assert trt_mod.build_plan(trt, "fp32", tf32=True).clear_flags == ()
    with pytest.raises(ConfigError, match="INT8"):
        trt_mod.build_plan(trt, "int8")


def test_build_plan_tensorrt_11():
    trt = fake_tensorrt(11)
    plan = trt_mod.build_plan(trt, "fp16")  # strongly typed: the ONNX must already be FP16
    assert (plan.strongly_typed, plan.export_dtype, plan.set_flags) == (True, torch.float16, ())
    assert trt_mod.build_plan(trt, "bf16").export_dtype == torch.bfloat16
    assert trt_mod.build_plan(trt, "fp32").export_dtype == torch.float32


@pytest.mark.parametrize("major", [10, 11])
def test_build_serialized_engine(tmp_path, major):
    trt = fake_tensorrt(major)
    cache = tmp_path / "caches" / "trt.cache"
    plan = trt_mod.build_plan(trt, "fp16")
    out = trt_mod.build_serialized_engine(
        trt, tmp_path / "m.onnx", plan, workspace_bytes=2**30, optimization_level=4, timing_cache=cache
    )
    assert out == b"engine-bytes"
    log = trt.log
    assert ("network_flags", 2 if major >= 11 else 0) in log  # 1 << STRONGLY_TYPED on 11
    assert ("parse", str(tmp_path / "m.onnx")) in log
    assert ("pool", "workspace", 2**30) in log and ("attr", "builder_optimization_level", 4) in log
    assert ("clear_flag", 2) in log  # TF32 off for strict numbers
    assert (("set_flag", 0) in log) == (major == 10)
    assert ("create_timing_cache", b"") in log and ("set_timing_cache", False) in log
    assert cache.read_bytes() == b"cache:"
    assert [p.name for p in cache.parent.iterdir()] == ["trt.cache"]  # atomic write left no temp file
    # a second build loads the saved cache
    trt_mod.build_serialized_engine(trt, tmp_path / "m.onnx", plan, workspace_bytes=1, timing_cache=cache)
    assert ("create_timing_cache", b"cache:") in trt.log


def test_build_errors_are_reported(tmp_path):
    trt = fake_tensorrt(10)
    plan = trt_mod.build_plan(trt, "fp32")
    trt.behaviour["parse_ok"] = False
    with pytest.raises(TimingError, match="node 0: unsupported op; node 1: unsupported op"):
        trt_mod.build_serialized_engine(trt, tmp_path / "m.onnx", plan, workspace_bytes=1)
    trt.behaviour.update(parse_ok=True, build_ok=False)
    with pytest.raises(TimingError, match=r"failed to build the engine: out of workspace$"):
        trt_mod.build_serialized_engine(trt, tmp_path / "m.onnx", plan, workspace_bytes=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_tensorrt_engine_config_with_fake_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(11))
    with pytest.raises(ConfigError, match="builder_optimization_level"):
        get_engine("tensorrt", device="cuda", builder_optimization_level=9)
    with pytest.raises(TimingError, match=r"is_available\(\) is False"):  # the plan is fine, the GPU is missing
        get_engine("tensorrt", device="cuda", precision="fp16")


# --- real GPU paths (skipped without CUDA) -----------------------------------------------------------


def _cuda_settings():
    return (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"precision": "fp32"},
        {"precision": "fp16", "channels_last": True},
        {"precision": "bf16"},
        {"precision": "fp32", "cuda_graph": False},
        {"precision": "fp16", "cuda_graph": False},
    ],
)
@pytest.mark.gpu
@requires_cuda
def test_torch_cuda(options):
    settings = _cuda_settings()
    net = tiny_net()
    t = get_engine("torch", device="cuda", **options).time(net, (4, 3, 32, 32), runs=20)
    assert _cuda_settings() == settings  # cudnn.benchmark and TF32 restored
    assert t.device == "cuda:0" and t.runs == 20 and len(t.samples_ms) == 20
    assert 0 < t.min_ms <= t.median_ms <= t.p90_ms
    assert t.options["cudnn_benchmark"] is True and t.options["cuda_graph"] == options.get("cuda_graph", True)
    assert t.options["tf32"] is (False if options["precision"] == "fp32" else None)
    assert next(net.parameters()).device.type == "cpu" and next(net.parameters()).dtype == torch.float32
    assert "family" in t.identity
    json.dumps(t.to_dict())


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_cuda(precision):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider)")
    t = get_engine("onnxruntime", device="cuda", precision=precision).time(tiny_net(), (4, 3, 32, 32), runs=20)
    assert t.options["provider"] == "CUDAExecutionProvider" and t.options["iobinding"] is True
    assert len(t.samples_ms) == 20 and 0 < t.median_ms <= t.p90_ms


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_cuda(tmp_path, precision):
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install tensorrt)")
    cache = tmp_path / "timing.cache"
    engine = get_engine("tensorrt", device="cuda", precision=precision, timing_cache=cache, workspace_mb=512)
    t = engine.time(tiny_net(), (4, 3, 32, 32), runs=20)
    assert cache.exists() and t.versions["tensorrt"]
    assert len(t.samples_ms) == 20 and 0 < t.median_ms <= t.p90_ms
    json.dumps(t.to_dict())
