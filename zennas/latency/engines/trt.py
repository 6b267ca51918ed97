"""TensorRT timing (TensorRT 10 and 11): ONNX -> serialized engine -> name-based I/O, CUDA-event timing.

TensorRT 11 is strongly typed only (REFERENCE 7.4): precision builder flags are gone and an FP16 engine
needs an ONNX graph that already carries FP16 tensors, so the model is exported after `.half()`. On
TensorRT 10 the classic weak-typing path is used: an FP32 ONNX graph plus `BuilderFlag.FP16`.
The build/plan helpers take the `tensorrt` module as an argument so they can be tested without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from zennas.errors import ConfigError, DependencyError, TimingError
from zennas.io import atomic_write_bytes
from zennas.latency.engines.base import Engine, Session, export_copy, measure_cuda, torch_versions

TRT_INSTALL_HINT = "TensorRT is required for the tensorrt engine: pip install tensorrt (needs an NVIDIA GPU and driver)"
_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
}


def import_tensorrt() -> Any:
    """The tensorrt module, or DependencyError with the install command."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(TRT_INSTALL_HINT) from exc
    return tensorrt


def strongly_typed_only(trt: Any) -> bool:
    """True for TensorRT 11+ (no precision builder flags), probed by `hasattr(trt.BuilderFlag, "FP16")`."""
    return not hasattr(trt.BuilderFlag, "FP16")


@dataclass(frozen=True)
class BuildPlan:
    """How to get an engine of the requested precision out of this TensorRT: export dtype and builder flags."""

    precision: str
    strongly_typed: bool  # network created STRONGLY_TYPED; tensor types come from the ONNX graph
    export_dtype: torch.dtype  # dtype of the model when it is exported to ONNX
    set_flags: tuple[str, ...] = ()  # BuilderFlag names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag names to clear (TF32 for strict FP32)


def build_plan(trt: Any, precision: str, *, tf32: bool = False) -> BuildPlan:
    """The BuildPlan for `precision` on this TensorRT module (10: weak typing + flags; 11: typed ONNX)."""
    typed_only = strongly_typed_only(trt)
    flags = trt.BuilderFlag
    # FP32 builds may use TF32 on Ampere+ by default; clear it unless asked, so FP32 means IEEE FP32
    clear = () if tf32 or not hasattr(flags, "TF32") else ("TF32",)
    if tf32 and not hasattr(flags, "TF32"):
        raise ConfigError(f"tensorrt {trt.__version__}: this build has no TF32 builder flag; use tf32=False")
    if precision == "fp32":
        return BuildPlan("fp32", typed_only, torch.float32, clear_flags=clear)
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        if typed_only:
            return BuildPlan(precision, True, dtype, clear_flags=clear)
        flag = precision.upper()
        if not hasattr(flags, flag):
            raise ConfigError(f"tensorrt {trt.__version__} has no BuilderFlag.{flag}; use fp32 or fp16")
        return BuildPlan(precision, False, torch.float32, set_flags=(flag,), clear_flags=clear)
    raise ConfigError(
        f"tensorrt engine: unsupported precision {precision!r}; use fp32, fp16 or bf16 "
        "(INT8 needs calibration or Q/DQ nodes, which zennas does not produce)"
    )


def _network_flags(trt: Any, plan: BuildPlan) -> int:
    """create_network flags: explicit batch is implicit in 10/11; STRONGLY_TYPED where the plan asks and it exists."""
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if plan.strongly_typed and creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        return 1 << int(creation.STRONGLY_TYPED)
    return 0


def _logger(trt: Any) -> Any:
    """A TensorRT logger that collects messages instead of printing them."""

    class CollectingLogger(trt.ILogger):
        """Keeps (severity, message) pairs; build errors quote them."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            """Record one message."""
            self.messages.append((severity, msg))

    return CollectingLogger()


def _errors(trt: Any, logger: Any) -> str:
    """The logger's error messages, joined on one line."""
    bad = {trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR}
    return "; ".join(msg for severity, msg in logger.messages if severity in bad)


def build_serialized_engine(
    trt: Any,
    onnx_path: str | Path,
    plan: BuildPlan,
    *,
    workspace_bytes: int,
    optimization_level: int = 3,
    timing_cache: str | Path | None = None,
    logger: Any = None,
) -> bytes:
    """Parse `onnx_path` and build a serialized engine; a timing cache is loaded if present and saved atomically."""
    logger = logger if logger is not None else _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TimingError(f"TensorRT could not parse the ONNX export: {errors or _errors(trt, logger) or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = int(optimization_level)
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    cache = None
    if timing_cache is not None:
        cache_path = Path(timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a cache from another GPU/TRT is an error
            raise TimingError(f"TensorRT rejected the timing cache {cache_path} (another GPU or TensorRT version?)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TimingError(f"TensorRT failed to build the engine: {_errors(trt, logger) or 'no details'}")
    if cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTEngine(Engine):
    """TensorRT latency of the exported network: static shapes, CUDA-event timing of execute_async_v3."""

    name = "tensorrt"
    precisions = ("fp32", "fp16", "bf16")
    defaults: ClassVar[dict[str, Any]] = {
        "workspace_mb": 4096,
        "builder_optimization_level": 3,  # REFERENCE 7.3: pin it; builds are nondeterministic
        "timing_cache": None,  # path: loaded if present, saved after the build
        "opset": 18,
        "exporter": "auto",  # zennas.export exporter: auto (dynamo, TorchScript fallback), dynamo, torchscript
        "tf32": False,
    }

    def _validate(self) -> None:
        """GPU only; TensorRT importable; options in range; the precision strategy exists for this TensorRT."""
        if self.kind != "cuda":
            raise ConfigError("tensorrt engine runs on NVIDIA GPUs only: use device='cuda' (or 'cuda:N')")
        level = self.options["builder_optimization_level"]
        if not isinstance(level, int) or not 0 <= level <= 5:
            raise ConfigError(f"tensorrt engine: builder_optimization_level must be an int 0..5, got {level!r}")
        if not isinstance(self.options["workspace_mb"], int) or self.options["workspace_mb"] < 1:
            raise ConfigError("tensorrt engine: workspace_mb must be a positive int")
        if self.options["tf32"] and self.precision != "fp32":
            raise ConfigError("tensorrt engine: tf32=True applies to precision='fp32' only")
        self._trt = import_tensorrt()
        self._plan = build_plan(self._trt, self.precision, tf32=bool(self.options["tf32"]))
        self._require_cuda()

    def versions(self) -> dict[str, Any]:
        """torch versions plus TensorRT and onnx."""
        import onnx

        return {**torch_versions(), "tensorrt": self._trt.__version__, "onnx": onnx.__version__}

    @contextlib.contextmanager
    def _session(self, model: nn.Module, x: torch.Tensor) -> Iterator[Session]:
        """Export, build, deserialize; bind pre-allocated torch buffers by tensor name; run on a side stream."""
        trt, plan = self._trt, self._plan
        device = torch.device(self.device)
        with torch.cuda.device(device):
            logger = _logger(trt)
            with tempfile.TemporaryDirectory(prefix="zennas-trt-") as tmp:
                on_gpu = plan.export_dtype != torch.float32  # half/bf16 export runs on the GPU
                info = export_copy(
                    model, x, tmp, self.options, dtype=plan.export_dtype, device=device if on_gpu else "cpu"
                )
                serialized = build_serialized_engine(
                    trt,
                    info.path,
                    plan,
                    workspace_bytes=self.options["workspace_mb"] * 2**20,
                    optimization_level=self.options["builder_optimization_level"],
                    timing_cache=self.options["timing_cache"],
                    logger=logger,
                )
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(serialized)
            if engine is None:
                raise TimingError(f"TensorRT could not deserialize the engine it built: {_errors(trt, logger)}")
            context = engine.create_execution_context()
            buffers = self._bind(trt, engine, context, x, device)  # keeps the tensors alive while timing
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))  # buffers are filled before the first run

            def step() -> None:
                if not context.execute_async_v3(stream.cuda_stream):
                    raise TimingError(f"TensorRT execute_async_v3 failed: {_errors(trt, logger)}")

            options = {
                "builder_optimization_level": self.options["builder_optimization_level"],
                "workspace_mb": self.options["workspace_mb"],
                "timing_cache": None if self.options["timing_cache"] is None else str(self.options["timing_cache"]),
                "opset": self.options["opset"],
                "strongly_typed": plan.strongly_typed,
                "export_dtype": str(plan.export_dtype).removeprefix("torch."),
                "builder_flags": list(plan.set_flags),
                "tf32": bool(self.options["tf32"]) if self.precision == "fp32" else None,
                "io_tensors": sorted(buffers),
            }
            try:
                yield Session(
                    step=step,
                    measure=functools.partial(measure_cuda, step, stream),
                    sync=stream.synchronize,
                    options=options,
                )
            finally:
                torch.cuda.synchronize(device)

    def _bind(
        self, trt: Any, engine: Any, context: Any, x: torch.Tensor, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """A device buffer per I/O tensor (by name), the input filled from `x`; addresses set on the context."""
        buffers: dict[str, torch.Tensor] = {}
        inputs = 0
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = _TORCH_DTYPES.get(getattr(engine.get_tensor_dtype(name), "name", ""))
            if dtype is None:
                raise TimingError(f"TensorRT tensor {name!r} has unsupported dtype {engine.get_tensor_dtype(name)}")
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TimingError(f"TensorRT tensor {name!r} has a dynamic shape {shape}; the export must be static")
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs += 1
                if shape != tuple(x.shape):
                    raise TimingError(f"TensorRT input {name!r} has shape {shape}, expected {tuple(x.shape)}")
                buffers[name] = x.to(device=device, dtype=dtype).contiguous()  # [B, C, H, W]
            else:
                buffers[name] = torch.empty(shape, dtype=dtype, device=device)
            context.set_tensor_address(name, buffers[name].data_ptr())
        if inputs != 1:
            raise TimingError(f"tensorrt engine times single-input networks; the engine has {inputs} inputs")
        return buffers
