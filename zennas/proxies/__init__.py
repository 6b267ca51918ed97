"""Zero-cost proxies: a registry and one `score` entry point.

Every proxy is a function `fn(ctx: ProxyContext) -> float` registered with its procedure, source,
direction and options. `score` resolves the architecture, runs each requested proxy `repeats`
times with its own seeded generator per repeat, in strict FP32 (TF32 off, restored afterwards),
and returns mean/std/values with metadata. A failure is a ProxyError naming the architecture,
never a sentinel value; a network whose output ignores its input is flagged `degenerate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zennas.arch import ArchSpec
from zennas.counting import check_forward_size, count
from zennas.device import resolve_device, strict_fp32
from zennas.errors import ConfigError, DegenerateNetworkError, ProxyError, ZennasError
from zennas.models import resolve_spec, settings_for
from zennas.proxies.context import ProxyContext
from zennas.registry import Registry

ProxyFn = Callable[[ProxyContext], float]


@dataclass(frozen=True)
class Option:
    """A proxy option: its default and the allowed values (None = any value of the default's type)."""

    default: Any
    allowed: tuple[Any, ...] | None = None
    help: str = ""


@dataclass(frozen=True)
class Proxy:
    """A registered proxy and its documentation."""

    name: str
    fn: ProxyFn
    description: str  # the procedure, in one paragraph
    source: str  # where the definition comes from
    higher_is_better: bool = True
    batch_size: int = 64  # default batch size of its input
    options: Mapping[str, Option] = field(default_factory=dict)
    uses_data: bool = True  # False for analytic proxies (params, flops, closed forms): repeats are identical


@dataclass(frozen=True)
class ProxyResult:
    """Scores of one proxy on one architecture: per-repeat values and their mean and std."""

    proxy: str
    mean: float | None
    std: float | None
    values: tuple[float, ...]
    higher_is_better: bool
    degenerate: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "mean": self.mean,
            "std": self.std,
            "values": list(self.values),
            "higher_is_better": self.higher_is_better,
            "degenerate": self.degenerate,
            "meta": self.meta,
        }


PROXIES: Registry[Proxy] = Registry(
    "proxy",
    ("zennas.proxies.classic", "zennas.proxies.counts", "zennas.proxies.entropy", "zennas.proxies.zen"),
    unknown="unknown {kind} {name!r}; choose from: {known}",
)


def register_proxy(
    name: str,
    *,
    description: str,
    source: str,
    higher_is_better: bool = True,
    batch_size: int = 64,
    options: Mapping[str, Option] | None = None,
    uses_data: bool = True,
) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator registering `fn(ctx) -> float` as proxy `name`; duplicate names are an error."""

    def decorator(fn: ProxyFn) -> ProxyFn:
        PROXIES.register(
            name, Proxy(name, fn, description, source, higher_is_better, batch_size, dict(options or {}), uses_data)
        )
        return fn

    return decorator


def get_proxy(name: str) -> Proxy:
    """Look up a registered proxy."""
    return PROXIES.get(name)


def list_proxies() -> list[str]:
    """Names of all registered proxies."""
    return PROXIES.names()


def repeat_seed(seed: int, proxy: str, repeat: int) -> int:
    """Independent, reproducible 63-bit seed for one repeat of one proxy."""
    digest = hashlib.sha256(f"{seed}:{proxy}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _resolve_options(proxies: Sequence[Proxy], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    known = {key for p in proxies for key in p.options}
    unknown = sorted(set(options) - known)
    if unknown:
        names = ", ".join(p.name for p in proxies)
        raise ConfigError(
            f"option(s) {', '.join(unknown)} apply to none of the proxies {names}; "
            f"their options: {', '.join(sorted(known)) or 'none'}"
        )
    resolved: dict[str, dict[str, Any]] = {}
    for proxy in proxies:
        values = {}
        for key, option in proxy.options.items():
            value = options.get(key, option.default)
            if option.allowed is not None and value not in option.allowed:
                raise ConfigError(
                    f"proxy {proxy.name}: option {key}={value!r} is not allowed; choose one of "
                    f"{', '.join(map(str, option.allowed))}"
                )
            values[key] = value
        resolved[proxy.name] = values
    return resolved


def score(
    arch: str | ArchSpec,
    proxies: str | Sequence[str],
    *,
    batch_size: int | None = None,
    resolution: int | None = None,
    num_classes: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    options: Mapping[str, Any] | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    dialect: str | None = None,
) -> dict[str, ProxyResult]:
    """Score `arch` with each proxy (comma-separated string or list); see the module docstring."""
    names = [n.strip() for n in proxies.split(",")] if isinstance(proxies, str) else list(proxies)
    if not names or any(not n for n in names):
        raise ConfigError("give at least one proxy name, e.g. --proxy zen,naswot")
    chosen = [get_proxy(n) for n in names]
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    per_proxy_options = _resolve_options(chosen, options or {})
    spec, entry = resolve_spec(arch, dialect)
    resolution, num_classes, _ = settings_for(spec, entry, resolution, num_classes, None)
    forward_batches = {batch_size or p.batch_size for p in chosen if p.uses_data}
    if forward_batches:  # refuse an input or feature map too large to allocate before building anything
        check_forward_size(count(spec, resolution=resolution, num_classes=num_classes), max(forward_batches))
    target = resolve_device(device)
    results: dict[str, ProxyResult] = {}
    # Analytic proxies do no floating-point tensor work, so they skip the precision guard.
    guard = strict_fp32() if any(p.uses_data for p in chosen) else contextlib.nullcontext()
    with guard:
        for proxy in chosen:
            results[proxy.name] = _score_one(
                proxy, spec, resolution, num_classes, batch_size or proxy.batch_size, repeats, seed, target,
                per_proxy_options[proxy.name], data,
            )  # fmt: skip
    return results


def _score_one(
    proxy: Proxy,
    spec: ArchSpec,
    resolution: int,
    num_classes: int,
    batch_size: int,
    repeats: int,
    seed: int,
    device: torch.device,
    options: dict[str, Any],
    data: tuple[torch.Tensor, torch.Tensor] | None,
) -> ProxyResult:
    values: list[float] = []
    meta: dict[str, Any] = {}
    seconds: list[float] = []
    runs = repeats if proxy.uses_data else 1
    for repeat in range(runs):
        generator = torch.Generator().manual_seed(repeat_seed(seed, proxy.name, repeat))
        ctx = ProxyContext(spec, resolution, num_classes, batch_size, device, generator, options, data)
        start = time.perf_counter()
        try:
            value = float(proxy.fn(ctx))
        except DegenerateNetworkError as error:
            meta.update(ctx.meta, reason=str(error))
            return ProxyResult(proxy.name, None, None, (), proxy.higher_is_better, True, _meta(meta, locals()))
        except ZennasError as error:
            if isinstance(error, ConfigError):
                raise  # bad options or settings: the message already says what to change
            raise ProxyError(f"proxy {proxy.name} failed on {_describe(spec)}: {error}") from error
        except Exception as error:  # any failure becomes an error that names the network
            raise ProxyError(
                f"proxy {proxy.name} failed on {_describe(spec)}: {type(error).__name__}: {error}"
            ) from error
        seconds.append(time.perf_counter() - start)
        if not math.isfinite(value):
            raise ProxyError(f"proxy {proxy.name} gave a non-finite value ({value}) on {_describe(spec)}")
        values.append(value)
        meta.update(ctx.meta)
    if not proxy.uses_data:
        values = values * repeats  # an analytic proxy has no randomness: every repeat is the same
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    meta["seconds_per_repeat"] = statistics.fmean(seconds)
    return ProxyResult(proxy.name, mean, std, tuple(values), proxy.higher_is_better, False, _meta(meta, locals()))


def _meta(meta: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    """Scoring settings recorded with every result."""
    return {
        "batch_size": scope["batch_size"],
        "resolution": scope["resolution"],
        "num_classes": scope["num_classes"],
        "repeats": scope["repeats"],
        "seed": scope["seed"],
        "device": str(scope["device"]),
        "precision": "fp32 (TF32 off)",
        "options": dict(scope["options"]),
        **meta,
    }


def _describe(spec: ArchSpec) -> str:
    text = spec.canonical
    return f"{spec.dialect} architecture {spec.hash} ({text[:80]}{'...' if len(text) > 80 else ''})"


__all__ = [
    "PROXIES",
    "Option",
    "Proxy",
    "ProxyContext",
    "ProxyResult",
    "get_proxy",
    "list_proxies",
    "register_proxy",
    "score",
]
