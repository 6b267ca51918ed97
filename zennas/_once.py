"""Run-once loaders of the built-in registries, safe to call from several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Once:
    """Calls `loader` the first time it is called; other threads wait until that first call has ended.

    Candidates may be scored from several threads (zennas.proxies.inflight), and the first lookups
    in a registry can happen there: a thread must never see a registry half filled. A call from the
    loading thread itself while it loads (a module being imported that looks the registry up)
    returns at once, and a loader that failed is not retried, as before.
    """

    def __init__(self, loader: Callable[[], None]):
        self._loader = loader
        self._lock = threading.RLock()
        self._started = False
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            self._loader()
            self._done = True
