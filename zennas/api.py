"""The library functions the CLI calls: resolve an ARCH argument, describe it, build it.

Resolution and default settings live in zennas.models (below every layer that needs them);
`settings_for` is re-exported here for the callers that import it from this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zennas.arch import ArchSpec
from zennas.counting import count
from zennas.models import resolve_spec, settings_for

if TYPE_CHECKING:
    from torch import nn


def info(
    arch: str | ArchSpec,
    *,
    resolution: int | None = None,
    num_classes: int | None = None,
    use_se: bool | None = None,
    convention: str = "correct",
    dialect: str | None = None,
    rechain: bool = False,
) -> dict[str, Any]:
    """Everything `zennas info` reports about an architecture, computed analytically (no weights)."""
    spec, entry = resolve_spec(arch, dialect, rechain=rechain)
    resolution, num_classes, use_se = settings_for(spec, entry, resolution, num_classes, use_se)
    cx = count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    out: dict[str, Any] = {
        "name": entry.name if entry else None,
        "dialect": spec.dialect,
        "canonical": spec.canonical,
        "hash": spec.hash,
        "resolution": resolution,
        "num_classes": num_classes,
        "use_se": cx.use_se,
        "params": cx.params,
        "macs": cx.macs,
        "layers": cx.layers,
        "head_params": cx.head_params,
        "head_macs": cx.head_macs,
        "stages": [
            {"stride": s.stride, "shape": [s.channels, s.size, s.size], "last_block": s.last_block} for s in cx.stages
        ],
        "blocks": [
            {"name": b.name, "params": b.params, "macs": b.macs, "shape": [b.out_channels, b.out_size, b.out_size]}
            for b in cx.blocks
        ],
        "convention": convention,
    }
    if cx.extra:
        out.update(cx.extra)
    if convention != "correct":
        # Compatibility conventions describe search budgets, which ZenNAS always checked without SE.
        cc = count(spec, resolution=resolution, num_classes=num_classes, use_se=False, convention=convention)
        out["flops"] = int(cc.flops) if cc.flops is not None and float(cc.flops).is_integer() else cc.flops
        out["convention_params"] = cc.convention_params
        out["convention_note"] = f"{convention} convention, computed without SE"
    if entry is not None:
        out["published"] = {k: v for k, v in entry.published.items() if k in ("params", "flops", "top1")}
        out["source_name"] = entry.source_name
    return out


def create_model(
    arch: str | ArchSpec,
    *,
    num_classes: int | None = None,
    use_se: bool | None = None,
    bn: bool = True,
    residual: bool = True,
    multi_scale: bool = False,
    dialect: str | None = None,
) -> nn.Module:
    """Build a registered model by name, or any architecture string/file/ArchSpec, as a torch module."""
    from zennas.build import BuildOptions, build

    spec, entry = resolve_spec(arch, dialect)
    _, num_classes, use_se = settings_for(spec, entry, None, num_classes, use_se)
    options = BuildOptions(num_classes=num_classes, use_se=use_se, bn=bn, residual=residual, multi_scale=multi_scale)
    return build(spec, options)


__all__ = ["create_model", "info", "settings_for"]
