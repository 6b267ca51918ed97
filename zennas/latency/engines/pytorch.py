"""PyTorch timing: eager calls and the host clock on the CPU; on the GPU a stream, event pairs and, by
default, one CUDA-graph replay per run.

A replayed graph launches every kernel of the forward pass at once, so the time between two events is
the GPU's own time without the host's per-kernel launch gaps: what a deployed network (TensorRT,
torch.compile "reduce-overhead", a captured graph) costs. `cuda_graph=False` times eager launches.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from zennas.errors import ConfigError
from zennas.latency.engines.base import (
    PRECISIONS,
    Engine,
    Session,
    cuda_math,
    measure_cuda,
    measure_host,
    prepare_model,
)

GRAPH_CAPTURE_WARMUP = 3  # eager runs on the capture stream first: cuDNN autotuning cannot run during capture


class TorchEngine(Engine):
    """PyTorch latency in fp32, fp16 (GPU only) or bf16: CUDA-graph replay on the GPU unless cuda_graph=False."""

    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    # cuda_graph None: graph replay on CUDA, eager on the CPU (resolved in _validate)
    defaults: ClassVar[dict[str, Any]] = {"channels_last": False, "cuda_graph": None, "tf32": False, "threads": None}

    def _validate(self) -> None:
        """fp16, CUDA graphs and TF32 need a GPU; threads is a positive int (CPU only); resolves cuda_graph."""
        graph = self.options["cuda_graph"]
        if graph is not None and not isinstance(graph, bool):
            raise ConfigError(f"torch engine: cuda_graph must be True, False or None (by device), got {graph!r}")
        if graph and self.kind == "cpu":
            raise ConfigError(
                "torch engine: cuda_graph=True needs device='cuda' (CUDA-graph replay); time on the CPU with "
                "cuda_graph=False (eager)"
            )
        self.options["cuda_graph"] = self.kind == "cuda" if graph is None else graph
        if self.kind == "cpu":
            if self.precision == "fp16":
                raise ConfigError(
                    "torch engine: fp16 is GPU-only (CPU half-precision kernels are slow reference paths, not a "
                    "deployment target); use precision='bf16' or 'fp32' on the CPU, or device='cuda'"
                )
            if self.options["tf32"]:
                raise ConfigError("torch engine: tf32=True needs device='cuda'")
        else:
            if self.options["threads"] is not None:
                raise ConfigError("torch engine: threads applies to device='cpu' only")
            if self.options["tf32"] and self.precision != "fp32":
                raise ConfigError("torch engine: tf32=True applies to precision='fp32' only")
            self._require_cuda()
        threads = self.options["threads"]
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"torch engine: threads must be a positive int or None, got {threads!r}")

    @contextlib.contextmanager
    def _session(self, model: nn.Module, x: torch.Tensor) -> Iterator[Session]:
        """CPU: host-timed eager calls; CUDA: pre-allocated input, side stream, event pairs, cudnn.benchmark on."""
        dtype = PRECISIONS[self.precision]
        channels_last = bool(self.options["channels_last"])
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.kind == "cpu":
            with contextlib.ExitStack() as stack:
                threads = self.options["threads"]
                if threads is not None:
                    stack.callback(torch.set_num_threads, torch.get_num_threads())
                    torch.set_num_threads(threads)
                net = prepare_model(model, dtype=dtype, channels_last=channels_last)
                inp = x.to(dtype).contiguous(memory_format=memory_format)  # [B, C, H, W]

                def step() -> None:
                    net(inp)

                options: dict[str, Any] = {"channels_last": channels_last, "threads": torch.get_num_threads()}
                yield Session(step=step, measure=functools.partial(measure_host, step), options=options)
            return

        device = torch.device(self.device)
        tf32 = bool(self.options["tf32"])
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.cuda.device(device))
            stack.enter_context(cuda_math(tf32=tf32, cudnn_benchmark=True))
            stack.callback(torch.cuda.synchronize, device)  # nothing in flight when the settings are restored
            net = prepare_model(model, dtype=dtype, device=device, channels_last=channels_last)
            inp = x.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)  # [B, C, H, W] on the GPU
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))  # weights and input are ready before the first run
            stack.enter_context(torch.cuda.stream(stream))
            if self.options["cuda_graph"]:
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode():  # the mode the timed runs use
                    for _ in range(GRAPH_CAPTURE_WARMUP):
                        net(inp)
                    stream.synchronize()
                    with torch.cuda.graph(graph, stream=stream):
                        net(inp)  # output lives in the graph's private pool; replay overwrites it
                step = graph.replay
            else:

                def step() -> None:
                    net(inp)

            options = {
                "channels_last": channels_last,
                "cuda_graph": bool(self.options["cuda_graph"]),
                "cudnn_benchmark": True,
                "tf32": tf32 if self.precision == "fp32" else None,
            }
            yield Session(
                step=step,
                measure=functools.partial(measure_cuda, step, stream),
                sync=stream.synchronize,
                options=options,
            )
