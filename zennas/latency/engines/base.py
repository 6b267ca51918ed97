"""What every timing engine shares: the Timing record, warm-up and measurement loops, statistics, flags.

Methodology (REFERENCE 7.3): seeded random input pre-allocated once; warm-up until both a minimum time and a
minimum count are reached; then `runs` timed iterations, each timed on its own (host clock around a
synchronous call, or a CUDA event pair with one synchronisation at the end); the median is the headline.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from zennas.errors import ConfigError, TimingError, ZennasError
from zennas.latency.device import THROTTLE_REASONS, canonical_gpu_name, identify, parse_device

if TYPE_CHECKING:
    from zennas.export import ExportInfo

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CV_FLAG_THRESHOLD = 0.05  # REFERENCE 7.3: flag a coefficient of variation above ~5 %
RECOMMENDED_MIN_RUNS = 50

Clock = Callable[[], int]  # nanoseconds


@dataclass(frozen=True)
class Timing:
    """One latency measurement: statistics over per-run samples plus everything needed to reproduce it.

    All `*_ms` figures are milliseconds for one forward pass of the whole batch; `ms_per_image` divides by it.
    """

    engine: str
    device: str
    precision: str
    batch_size: int
    input_shape: tuple[int, int, int, int]
    runs: int
    warmup_runs: int
    warmup_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    cv: float  # std / mean over the timed runs
    samples_ms: tuple[float, ...]
    identity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def ms_per_batch(self) -> float:
        """Median milliseconds for one forward pass of the batch."""
        return self.median_ms

    @property
    def ms_per_image(self) -> float:
        """Median milliseconds per batch divided by the batch size."""
        return self.median_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, with ms_per_batch, ms_per_image and p90_ms_per_image added."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["samples_ms"] = list(self.samples_ms)
        data["flags"] = list(self.flags)
        data["ms_per_batch"] = self.ms_per_batch
        data["ms_per_image"] = self.ms_per_image
        data["p90_ms_per_image"] = self.p90_ms / self.batch_size
        return json.loads(json.dumps(data, default=str))  # tuples -> lists, anything exotic -> str


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, IQR, mean, min and CV (sample std / mean) of per-run times in ms."""
    if len(samples_ms) == 0:
        raise TimingError("no timed runs to summarise")
    x = np.asarray(samples_ms, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise TimingError(f"invalid per-run times (non-finite or negative): {x.tolist()[:5]}...")
    p25, median, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {
        "median_ms": float(median),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "iqr_ms": float(p75 - p25),
        "mean_ms": mean,
        "min_ms": float(x.min()),
        "cv": std / mean if mean > 0 else 0.0,
    }


def timing_flags(*, cv: float, runs: int, identity: Mapping[str, Any]) -> tuple[str, ...]:
    """Warnings attached to a timing: noisy (CV > 5 %), throttled GPU, too few runs, unknown device."""
    flags = []
    if cv > CV_FLAG_THRESHOLD:
        flags.append("cv>5%")
    if set(identity.get("clock_event_reasons") or ()) & THROTTLE_REASONS:
        flags.append("throttled")
    if runs < RECOMMENDED_MIN_RUNS:
        flags.append(f"runs<{RECOMMENDED_MIN_RUNS}")
    if "error" in identity:
        flags.append("no-identity")
    return tuple(flags)


def warm_up(
    step: Callable[[], object],
    *,
    min_ms: float,
    min_runs: int,
    sync: Callable[[], None] | None = None,
    clock: Clock = time.perf_counter_ns,
) -> tuple[int, float]:
    """Run `step` until at least `min_runs` runs AND `min_ms` milliseconds have passed; (runs, elapsed ms).

    Each run is synchronised so the elapsed time is real device time, not queued launches. The loop is
    bounded by the clock: it ends as soon as both minimums hold.
    """
    start = clock()
    runs, elapsed_ms = 0, 0.0
    while runs < min_runs or elapsed_ms < min_ms:
        step()
        if sync is not None:
            sync()
        runs += 1
        elapsed_ms = (clock() - start) / 1e6
    return runs, elapsed_ms


def measure_host(
    step: Callable[[], object],
    runs: int,
    *,
    sync: Callable[[], None] | None = None,
    clock: Clock = time.perf_counter_ns,
) -> list[float]:
    """Per-run milliseconds of a synchronous `step` (or one followed by `sync`), read from the host clock."""
    samples = []
    for _ in range(runs):
        t0 = clock()
        step()
        if sync is not None:
            sync()
        samples.append((clock() - t0) / 1e6)
    return samples


def measure_cuda(step: Callable[[], object], stream: torch.cuda.Stream, runs: int) -> list[float]:
    """Per-run milliseconds of `step` launched on `stream`: an event pair per run, one synchronisation at the end.

    Events are created before the loop; the time between a pair is device time on the stream, so a
    launch-bound network (tiny net, batch 1, no CUDA graph) shows its launch gaps here as well.
    """
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for start, end in zip(starts, ends, strict=True):
        start.record(stream)
        step()
        end.record(stream)
    stream.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]


def random_input(input_shape: Sequence[int], seed: int) -> torch.Tensor:
    """N(0, 1) FP32 CPU tensor of `input_shape` from a generator seeded with `seed` (the global RNG is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(input_shape), generator=generator)  # [B, C, H, W]


def prepare_model(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> nn.Module:
    """An eval-mode deep copy of `model` in `dtype` on `device`: `.to()` acts in place, the caller keeps theirs."""
    net = copy.deepcopy(model).eval()
    net = net.to(device=device, dtype=dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def export_copy(
    model: nn.Module,
    x: torch.Tensor,
    folder: str | os.PathLike,
    options: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ExportInfo:
    """Export a `prepare_model` copy to `folder`/model.onnx at the static shape of `x` [B, C, H, W].

    The ONNX engines' way in: `options` gives the opset and the exporter; the copy is dropped on return,
    so only the caller's model stays in memory while the session is built.
    """
    from zennas.export import export_onnx

    net = prepare_model(model, dtype=dtype, device=device)
    return export_onnx(
        net,
        Path(folder) / "model.onnx",
        input_shape=tuple(x.shape),
        opset=options["opset"],
        exporter=options["exporter"],
    )


@contextlib.contextmanager
def cuda_math(*, tf32: bool, cudnn_benchmark: bool = True) -> Iterator[None]:
    """TF32 on/off for FP32 matmul/conv and cudnn.benchmark while timing; every setting is restored after.

    Uses only torch's `fp32_precision` API: mixing it with the legacy `allow_tf32` flags in one process makes
    PyTorch raise (same reasoning as zennas.proxies.context.strict_fp32, which also pins determinism and so
    cannot be reused for timing).
    """
    knobs = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    knobs = [k for k in knobs if hasattr(k, "fp32_precision")]
    saved = [k.fp32_precision for k in knobs]
    saved_benchmark = torch.backends.cudnn.benchmark
    for knob in knobs:
        knob.fp32_precision = "tf32" if tf32 else "ieee"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        for knob, value in zip(knobs, saved, strict=True):
            knob.fp32_precision = value
        torch.backends.cudnn.benchmark = saved_benchmark


@dataclass
class Session:
    """A ready-to-run network: `step` runs one forward pass; `measure(runs)` returns per-run ms.

    `resolve`, when set, is called once after every measurement of the session and returns the per-run
    ms of all timed runs in order, replacing what `measure` returned (engines whose timer is read after
    the fact, e.g. onnxruntime's profiler).
    """

    step: Callable[[], object]
    measure: Callable[[int], list[float]]
    sync: Callable[[], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the settings actually used (recorded in Timing)
    resolve: Callable[[], list[float]] | None = None


def torch_versions() -> dict[str, Any]:
    """Python, torch, its CUDA runtime and cuDNN versions."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """A [B, C, H, W] shape of positive ints, or ConfigError."""
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(
            f"input_shape must be four positive ints (batch, channels, height, width), got {input_shape!r}"
        )
    return shape  # type: ignore[return-value]


class Engine(ABC):
    """A way to time a network: subclasses build a Session; `time` warms up, measures and summarises."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    defaults: ClassVar[dict[str, Any]] = {}  # option name -> default

    @property
    def times_in_context(self) -> bool:
        """Whether the engine leaves helper (AUX_MARKER) nodes and graph-boundary layout changes out of a time."""
        return False

    def __init__(self, *, device: str = "cpu", precision: str = "fp32", **options: Any):
        kind, index = parse_device(device)
        self.kind, self.index = kind, index
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        if precision not in self.precisions:
            raise ConfigError(
                f"{self.name} engine: unknown precision {precision!r}; use one of {', '.join(self.precisions)}"
            )
        self.precision = precision
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(f"{self.name} engine: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
        self.options: dict[str, Any] = {**self.defaults, **options}
        self._validate()

    @abstractmethod
    def _validate(self) -> None:
        """Engine-specific checks of device/precision/options (and dependencies) at construction."""

    def _require_cuda(self) -> None:
        """TimingError unless torch sees CUDA device `self.index`."""
        if not torch.cuda.is_available():
            raise TimingError(
                f"{self.name} engine: device {self.device!r} requested but torch.cuda.is_available() is False "
                f"(no NVIDIA GPU/driver, or a CPU-only torch build)"
            )
        if self.index is not None and self.index >= torch.cuda.device_count():
            raise TimingError(
                f"{self.name} engine: {self.device} requested but torch sees {torch.cuda.device_count()} GPU(s)"
            )

    @abstractmethod
    def _session(self, model: nn.Module, x: torch.Tensor) -> contextlib.AbstractContextManager[Session]:
        """A context manager yielding a Session for `model` on input `x` [B, C, H, W] (FP32, CPU)."""

    def versions(self) -> dict[str, Any]:
        """Versions of the software this engine's numbers depend on."""
        return torch_versions()

    def identity(self) -> dict[str, Any]:
        """Identity of the device (read right after the timed runs, so the clock state is theirs); never raises."""
        try:
            return identify(self.device)
        except ZennasError as exc:  # e.g. NVML unusable in a container: keep the timing, flag it
            fallback: dict[str, Any] = {"kind": self.kind, "index": self.index, "error": str(exc)}
            if self.kind == "cuda" and torch.cuda.is_available():
                raw = torch.cuda.get_device_name(self.index)
                fallback["name"] = raw
                fallback["family"], fallback["variant"] = canonical_gpu_name(raw)
            return fallback

    def time(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int, int],
        *,
        runs: int = 50,
        min_warmup_ms: float = 200.0,
        min_warmup_runs: int = 10,
        seed: int = 0,
    ) -> Timing:
        """Median/p90/... latency of one forward pass of `model` on a seeded random batch of `input_shape`.

        The model is copied and timed in eval mode under torch.inference_mode; the caller's model is unchanged.
        """
        return self.time_many(
            [(model, input_shape)], runs=runs, min_warmup_ms=min_warmup_ms, min_warmup_runs=min_warmup_runs, seed=seed
        )[0]

    def time_many(
        self,
        models: Sequence[tuple[nn.Module, tuple[int, int, int, int]]],
        *,
        runs: int = 50,
        rounds: int = 1,
        min_warmup_ms: float = 200.0,
        min_warmup_runs: int = 10,
        seed: int = 0,
    ) -> list[Timing]:
        """`time` for several (model, input shape) pairs, measured in interleaved rounds.

        Every model gets a session and its warm-up first; then each round times `runs` runs of every model
        in turn, so each Timing's `rounds * runs` samples are spread over the whole measurement. A machine
        whose speed drifts over seconds (a shared VM, a GPU changing clocks) then moves all models alike
        instead of skewing whichever one was timed during a slow spell.
        """
        shapes = [_check_input_shape(shape) for _, shape in models]
        for name, value in (("runs", runs), ("rounds", rounds)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if min_warmup_runs < 0 or not math.isfinite(min_warmup_ms) or min_warmup_ms < 0:
            raise ConfigError(
                f"min_warmup_ms and min_warmup_runs must be finite and >= 0, got {min_warmup_ms!r}, {min_warmup_runs!r}"
            )
        with contextlib.ExitStack() as stack:
            sessions, warmups = [], []
            for (model, _), shape in zip(models, shapes, strict=True):
                x = random_input(shape, seed)  # [B, C, H, W] FP32 on the CPU; engines move/cast it once
                # inference_mode covers the runs only: exporters (torch.export) must not trace under it
                session = stack.enter_context(self._session(model, x))
                with torch.inference_mode():
                    warmups.append(
                        warm_up(session.step, min_ms=min_warmup_ms, min_runs=min_warmup_runs, sync=session.sync)
                    )
                sessions.append(session)
            samples: list[list[float]] = [[] for _ in sessions]
            with torch.inference_mode():
                for _ in range(rounds):
                    for session, collected in zip(sessions, samples, strict=True):
                        collected.extend(session.measure(runs))
            identity = self.identity()  # inside the sessions: clocks/throttling/threads as they were while timing
            for i, session in enumerate(sessions):
                if session.resolve is not None:
                    samples[i] = session.resolve()
        versions = self.versions()
        timings = []
        for session, shape, (warmup_runs, warmup_ms), collected in zip(sessions, shapes, warmups, samples, strict=True):
            stats = summarize(collected)
            timings.append(
                Timing(
                    engine=self.name,
                    device=self.device,
                    precision=self.precision,
                    batch_size=shape[0],
                    input_shape=shape,
                    runs=len(collected),
                    warmup_runs=warmup_runs,
                    warmup_ms=warmup_ms,
                    samples_ms=tuple(collected),
                    identity=identity,
                    versions=versions,
                    options={**session.options, "seed": seed, "rounds": rounds},
                    flags=timing_flags(cv=stats["cv"], runs=len(collected), identity=identity),
                    **stats,
                )
            )
        return timings
