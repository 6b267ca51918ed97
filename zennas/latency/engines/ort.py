"""ONNX Runtime timing: export to ONNX, then IOBinding runs on the CPU or CUDA execution provider.

Two timers. `host` (the default) reads the host clock around each synchronous run: the latency a
deployed network has. `kernels` (CPU) reads onnxruntime's profiler instead and sums, per run, the
kernel times of the graph's nodes, leaving out (a) layout conversions at the graph's boundary (the
NCHWc ReorderInput of a graph input, ReorderOutput of a graph output) and (b) nodes of helper modules
whose parameter names contain AUX_MARKER. It times one operator as it runs inside a network, where
the blocked layout flows from node to node (zennas.latency.profile builds such operator graphs):
timed alone with the host clock, a 1x1 conv at 112 x 112 spends a third of its time converting
layouts that a network never converts.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zennas.errors import ConfigError, DependencyError, TimingError
from zennas.latency.engines.base import Engine, Session, export_copy, measure_host, torch_versions

ORT_GPU_HINT = "pip uninstall onnxruntime && pip install onnxruntime-gpu"
AUX_MARKER = "zennas_aux"  # parameters of helper modules whose nodes the kernels timer leaves out
TIMERS = ("host", "kernels")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _import_ort() -> Any:
    """The onnxruntime module, or DependencyError with the install command."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError("onnxruntime is required for the onnxruntime engine: pip install onnxruntime") from exc
    return onnxruntime


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime latency: CPUExecutionProvider, or CUDAExecutionProvider with IOBinding on the GPU."""

    name = "onnxruntime"
    precisions = ("fp32", "fp16")
    defaults: ClassVar[dict[str, Any]] = {
        "threads": None,  # intra-op threads; None = torch.get_num_threads()
        "opset": 18,
        "exporter": "auto",  # zennas.export exporter: auto (dynamo, TorchScript fallback), dynamo, torchscript
        "cudnn_conv_algo_search": "EXHAUSTIVE",  # like cudnn.benchmark: best algorithm after a slow first run
        "tf32": False,
        "cuda_graph": False,
        "timer": "host",  # host: clock around each run; kernels: profiler kernel sums (module docstring)
    }

    @property
    def times_in_context(self) -> bool:
        """True with the kernels timer (module docstring)."""
        return self.options["timer"] == "kernels"

    def _validate(self) -> None:
        """fp16, TF32 and CUDA graphs need CUDA; the CUDA provider needs the onnxruntime-gpu wheel."""
        ort = _import_ort()
        threads = self.options["threads"]
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"onnxruntime engine: threads must be a positive int or None, got {threads!r}")
        if self.options["timer"] not in TIMERS:
            timer = self.options["timer"]
            raise ConfigError(f"onnxruntime engine: timer must be one of {', '.join(TIMERS)}, got {timer!r}")
        if self.options["timer"] == "kernels" and self.kind != "cpu":
            raise ConfigError("onnxruntime engine: timer='kernels' is implemented for device='cpu' only")
        if self.options["cudnn_conv_algo_search"] not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise ConfigError("onnxruntime engine: cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT")
        if self.kind == "cpu":
            if self.precision == "fp16":
                raise ConfigError(
                    "onnxruntime engine: fp16 is supported on device='cuda' only (the CPU provider runs FP16 "
                    "graphs through slow fallbacks); use precision='fp32' on the CPU"
                )
            for option in ("tf32", "cuda_graph"):
                if self.options[option]:
                    raise ConfigError(f"onnxruntime engine: {option}=True needs device='cuda'")
            return
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DependencyError(
                "onnxruntime engine on CUDA needs the CUDAExecutionProvider, which this onnxruntime build lacks "
                f"(providers: {', '.join(ort.get_available_providers())}): {ORT_GPU_HINT}"
            )
        self._require_cuda()

    def versions(self) -> dict[str, Any]:
        """torch versions plus onnxruntime and onnx."""
        import onnx

        return {**torch_versions(), "onnxruntime": _import_ort().__version__, "onnx": onnx.__version__}

    def _providers(self) -> list[Any]:
        """Execution providers in priority order, with their options."""
        if self.kind == "cpu":
            return ["CPUExecutionProvider"]
        cuda = {
            "device_id": self.index,
            "cudnn_conv_algo_search": self.options["cudnn_conv_algo_search"],
            "use_tf32": int(bool(self.options["tf32"])),
            "enable_cuda_graph": int(bool(self.options["cuda_graph"])),
        }
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]

    @contextlib.contextmanager
    def _session(self, model: nn.Module, x: torch.Tensor) -> Iterator[Session]:
        """Export (static shape) into a temporary folder, open an InferenceSession, bind input/outputs once."""
        ort = _import_ort()
        threads = self.options["threads"] or torch.get_num_threads()
        with tempfile.TemporaryDirectory(prefix="zennas-ort-") as tmp:
            # FP16 graphs are exported from a half model on the GPU (CPU half kernels are incomplete)
            if self.precision == "fp16":
                info = export_copy(model, x, tmp, self.options, dtype=torch.float16, device=self.device)
            else:
                info = export_copy(model, x, tmp, self.options)
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3  # errors only: library code does not write to the terminal
            kernels = self.times_in_context
            if kernels:
                has_aux = _mark_aux_nodes(info.path)
                so.enable_profiling = True
                so.profile_file_prefix = str(Path(tmp) / "profile")
                so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            try:
                sess = ort.InferenceSession(str(info.path), so, providers=self._providers())
            except Exception as exc:
                raise TimingError(f"onnxruntime could not load the exported network: {exc}") from exc
            provider = sess.get_providers()[0]
            if self.kind == "cuda" and provider != "CUDAExecutionProvider":
                raise TimingError(
                    f"onnxruntime fell back to {provider}; the CUDA provider failed to load ({ORT_GPU_HINT})"
                )
            binding, _buffers = self._bind(ort, sess, x)  # `_buffers` keeps the bound OrtValues alive while timing
            runs_done = [0]  # runs since the session opened (the profiler logs every one of them)
            if self.kind == "cpu":

                def step() -> None:
                    sess.run_with_iobinding(binding)
                    runs_done[0] += 1

            else:

                def step() -> None:
                    # run_with_iobinding returns after the CUDA stream finishes; the syncs keep copies out of the timing
                    binding.synchronize_inputs()
                    sess.run_with_iobinding(binding)
                    binding.synchronize_outputs()

            options: dict[str, Any] = {
                "provider": provider,
                "threads": threads,
                "opset": self.options["opset"],
                "graph_optimization": "ORT_ENABLE_ALL",
                "iobinding": True,
            }
            if self.kind == "cuda":
                options.update(
                    cudnn_conv_algo_search=self.options["cudnn_conv_algo_search"],
                    tf32=bool(self.options["tf32"]) if self.precision == "fp32" else None,
                    cuda_graph=bool(self.options["cuda_graph"]),
                    timer="host clock around a synchronised run",
                )
            if not kernels:
                yield Session(step=step, measure=functools.partial(measure_host, step), options=options)
                return
            skip = _boundary_reorders(Path(so.optimized_model_filepath))
            timed: list[int] = []  # indices of the timed runs, in order

            def measure(runs: int) -> list[float]:
                timed.extend(range(runs_done[0], runs_done[0] + runs))
                return measure_host(step, runs)

            def resolve() -> list[float]:
                return _kernel_ms(Path(sess.end_profiling()), timed, skip, has_aux)

            options.update(timer="kernels", excluded="graph-boundary layout reorders and helper (zennas_aux) nodes")
            yield Session(step=step, measure=measure, options=options, resolve=resolve)

    def _bind(self, ort: Any, sess: Any, x: torch.Tensor) -> tuple[Any, list[Any]]:
        """An IOBinding with the input copied once to the device and static outputs pre-allocated there."""
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise TimingError(f"onnxruntime engine times single-input networks; the export has {len(inputs)} inputs")
        np_type = _NUMPY_TYPES.get(inputs[0].type)
        if np_type is None:
            raise TimingError(f"unsupported ONNX input type {inputs[0].type}; expected float or float16")
        device, device_id = ("cpu", 0) if self.kind == "cpu" else ("cuda", self.index)
        binding = sess.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(x.numpy().astype(np_type), device, device_id)  # [B, C, H, W]
        binding.bind_ortvalue_input(inputs[0].name, value)
        buffers = [value]
        for out in sess.get_outputs():
            out_type = _NUMPY_TYPES.get(out.type)
            if out_type is not None and all(isinstance(d, int) for d in out.shape):
                buffer = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out_type, device, device_id)
                binding.bind_ortvalue_output(out.name, buffer)
                buffers.append(buffer)
            else:  # symbolic shape or other type: ORT allocates from its arena on the device
                binding.bind_output(out.name, device, device_id)
        return binding, buffers


def _mark_aux_nodes(path: Path) -> bool:
    """Rename the outputs of helper nodes (those reading a parameter named with AUX_MARKER) to carry it.

    onnxruntime names the nodes it creates (fused, NCHWc) after their output tensors, so the marker in
    the tensor name survives optimisation and the profiler's node names show which nodes are helpers.
    Returns whether the graph has helper nodes; the file is rewritten in place.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    aux_params = {init.name for init in graph.initializer if AUX_MARKER in init.name}
    if not aux_params:
        return False
    renames: dict[str, str] = {}
    for node in graph.node:
        if AUX_MARKER in node.name or aux_params.intersection(node.input):
            node.name = f"{AUX_MARKER}_node_{len(renames)}"
            for i, name in enumerate(node.output):
                renames[name] = node.output[i] = f"{AUX_MARKER}_{len(renames)}"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for value in graph.output:
        if value.name in renames:
            value.name = renames[value.name]
    onnx.save(model, str(path))
    return True


def _boundary_reorders(optimized: Path) -> set[str]:
    """Names of the layout reorders that read a graph input or write a graph output."""
    import onnx

    graph = onnx.load(str(optimized), load_external_data=False).graph
    inputs, outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
    return {
        node.name
        for node in graph.node
        if (node.op_type == "ReorderInput" and inputs.intersection(node.input))
        or (node.op_type == "ReorderOutput" and outputs.intersection(node.output))
    }


def _kernel_ms(profile: Path, timed: list[int], skip: set[str], has_aux: bool) -> list[float]:
    """Per timed run, the summed kernel ms of the nodes not in `skip` and not helper nodes."""
    events = json.loads(profile.read_text(encoding="utf-8"))
    profile.unlink(missing_ok=True)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    sums = np.zeros(len(starts))
    seen_aux = False
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        if node in skip:
            continue
        if AUX_MARKER in node:
            seen_aux = True
            continue
        run = bisect.bisect_right(starts, event["ts"]) - 1
        if run >= 0:
            sums[run] += event["dur"] / 1e3  # us -> ms
    if has_aux and not seen_aux:
        raise TimingError(
            "onnxruntime's profile names none of the helper nodes; the kernels timer cannot separate them "
            "(profile with the torchscript exporter, or use timer='host')"
        )
    if not timed or timed[-1] >= len(starts):
        raise TimingError(f"onnxruntime's profile holds {len(starts)} runs; expected at least {len(timed)} timed runs")
    return [float(sums[i]) for i in timed]
