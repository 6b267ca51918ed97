"""One registry type for every kind of named plug-in: dialects, builders, counters, spaces, proxies, models.

A registry maps names to entries in registration order. The modules that fill it are named, not
imported, here: `modules` is imported on the first lookup, so a registry's home module never imports
the plug-ins that import it back (the circle a registry filled by imports at the top would make).
This module imports nothing from zennas but `errors`, so every layer may hold a registry.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from zennas.errors import ConfigError

T = TypeVar("T")
# Every dialect family, one module of that name in each of zennas.arch, counting, blocks and spaces:
# adding a dialect adds its name here, and each layer's registry then imports <package>.<name>.
FAMILIES = ("binas", "genet", "nb201", "tinynas", "zennas")


def family_modules(package: str) -> tuple[str, ...]:
    """The dialect-family modules of `package` (e.g. "zennas.counting"): what its registries import."""
    return tuple(f"{package}.{family}" for family in FAMILIES)


_NO_ENTRY = object()  # register(name) without an entry: the decorator form


class Once:
    """Calls `loader` the first time it is called; other threads wait until that first call has ended.

    Candidates may be scored from several threads (zennas.proxies.inflight), and the first lookups
    in a registry can happen there: a thread must never see a registry half filled. A call from the
    loading thread itself while it loads (a module being imported that looks the registry up)
    returns at once, and a loader that failed is not retried.
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


class Registry(Generic[T]):
    """Named entries of one kind, filled by `register` (a decorator) from the modules in `modules`.

    The first lookup imports `modules`, then calls `loader` (for entries read from data files), once.
    `kind` names the entries in messages. `unknown` and `duplicate` are the messages of a failed
    lookup and of a second registration, formatted with {kind}, {name} and {known} (the registered
    names, sorted, comma-separated); a failed lookup raises `error`, a duplicate ValueError (a bug
    in zennas or a plug-in, not bad input).
    """

    def __init__(
        self,
        kind: str,
        modules: tuple[str, ...] = (),
        *,
        loader: Callable[[], None] | None = None,
        error: type[Exception] = ConfigError,
        unknown: str = "unknown {kind} {name!r}; choose one of: {known}",
        duplicate: str = "{kind} {name!r} is already registered",
    ):
        self.kind = kind
        self.modules = modules
        self.error = error
        self.unknown = unknown
        self.duplicate = duplicate
        self._loader = loader
        self._entries: dict[str, T] = {}
        self.load = Once(self._fill)

    def _fill(self) -> None:
        for module in self.modules:
            importlib.import_module(module)  # each module registers its entries when imported
        if self._loader is not None:
            self._loader()

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: object = _NO_ENTRY) -> object:
        """Add `entry` as `name` and return it; without `entry`, a decorator that adds what it decorates."""
        if entry is _NO_ENTRY:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(self.duplicate.format(kind=self.kind, name=name, known=self._known()))
        self._entries[name] = entry  # type: ignore[assignment]
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (a test's temporary entry); an unknown name is the lookup error."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """The entry registered as `name`; `error` with the one-line `unknown` message if there is none."""
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(self.unknown.format(kind=self.kind, name=name, known=self._known())) from None

    def find(self, name: str) -> T | None:
        """The entry registered as `name`, or None."""
        self.load()
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        self.load()
        return list(self._entries.items())

    def __iter__(self) -> Iterator[str]:
        """Names in registration order."""
        self.load()
        return iter(list(self._entries))

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def _known(self) -> str:
        return ", ".join(sorted(self._entries))

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}: {len(self._entries)} entries>"
