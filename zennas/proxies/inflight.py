"""Several candidates in flight on one device: a pool of threads, each scoring on its own CUDA stream.

Why threads with streams rather than processes: one process holds one CUDA context, so kernels of
different candidates may run side by side on one GPU (processes only time-slice it unless MPS runs),
and one candidate's host work (building its modules, launching kernels) overlaps another's device
work. Why the scores cannot depend on the number in flight: every candidate draws only from its
own generators, seeded by zennas.proxies.repeat_seed; the scoring flags (strict_fp32: no TF32,
deterministic cuDNN, no autotuning) are set once for the whole pool; each candidate's kernels run in
order on its own stream and touch only its own tensors; what is shared (the global RNG of PyTorch's
default init, the zen-analytic memo) is taken in turns. On the CPU the same pool runs the candidates
in threads, which is how the tests check that 1, 2 or 4 in flight give identical scores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from zennas.device import resolve_device, strict_fp32
from zennas.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class InFlight:
    """Runs `fn(item)` for up to `count` items at once on `device`, one CUDA stream per thread.

    `count` 1 runs every item in the calling thread, on its current stream. Results come back in the
    order of the items; the first exception is raised. Use as a context manager, or call `close`.
    """

    def __init__(self, count: int, device: str | torch.device = "cpu"):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"the number of candidates in flight must be a positive integer, got {count!r}")
        self.count = count
        self.device = resolve_device(device)
        self._local = threading.local()
        self._pool = None
        if count > 1:
            self._pool = ThreadPoolExecutor(count, thread_name_prefix="zennas-inflight", initializer=self._bind)

    def _bind(self) -> None:
        """Thread initializer: the stream this thread's candidates run on (none on the CPU)."""
        self._local.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _run(self, fn: Callable[[T], R], item: T) -> R:
        stream = self._local.stream
        if stream is None:
            return fn(item)
        with torch.cuda.stream(stream):
            return fn(item)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """[fn(item) for item in items], up to `count` at once, in strict FP32 throughout."""
        items = list(items)
        # Entered here, before any thread starts, so no thread can see the flags half set or restored.
        with strict_fp32():
            if self._pool is None or len(items) < 2:
                return [fn(item) for item in items]
            return list(self._pool.map(lambda item: self._run(fn, item), items))

    def close(self) -> None:
        """Stop the threads (after the work already given to them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> InFlight:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_many(
    archs: Sequence[Any], proxies: str | Sequence[str], *, in_flight: int = 1, device: str | torch.device = "auto",
    **settings: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """zennas.proxies.score of each architecture, `in_flight` at a time on `device`; the results do not
    depend on `in_flight` (see the module docstring). `settings` are score's keyword arguments."""
    from zennas.proxies import score

    target = resolve_device(device)
    with InFlight(in_flight, target) as pool:
        return pool.map(lambda arch: score(arch, proxies, device=target, **settings), archs)
